/* Operator commands against a running daemon's HTTP API, like amtool: `vigil alerts`,
 * `vigil incidents`, `vigil incident ID`, `vigil ack|resolve|close ID`. Table output for
 * people, `--json` for scripts. */
#pragma once

/* Runs one of the commands above (argv[0] is the command). Returns the exit status: 0, 1 when
 * the daemon answered with an error or could not be reached, 2 for bad usage. */
int vg_ctl_main(int argc, char **argv);

/* True when `name` is one of these commands. */
int vg_ctl_is_command(const char *name);
