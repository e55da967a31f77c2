/* `vigil test`: runs *_spec.lua files, each in a fresh sandboxed VM on a virtual clock. */
#pragma once

/* Runs the specs under the given paths (files or directories). Returns the exit status. */
int vg_spec_main(int npaths, char **paths);
