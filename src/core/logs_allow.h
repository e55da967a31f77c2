/* Which files policies may tail: the config's logs.allow lists path prefixes, and a path is
 * resolved with realpath when it is used, so ".." and symlinks cannot lead out of a prefix. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct vg_runtime vg_runtime_t;

/* True when `path` resolves to a place under one of the prefixes of logs.allow; else false
 * with "EDENIED: ..." (or "ENOENT: ..." when its directory does not exist) in err. No
 * config, or no prefix, allows nothing. */
bool vg_logs_path_allowed(vg_runtime_t *rt, const char *path, char *err, size_t errlen);

/* Same check; on success writes to `out` the path to follow: the file's real path when it
 * exists, else the real path of its directory plus its name (the file is waited for). Open
 * it with O_NOFOLLOW: its last component is no symlink now, and one put there later (or a
 * later-created file that is a symlink) must not lead out of the prefix. */
bool vg_logs_path_resolve(
    vg_runtime_t *rt, const char *path, char *out, size_t outlen, char *err, size_t errlen);
