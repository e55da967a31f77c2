/* `vigil run`: the daemon's start-up and shutdown order. */
#pragma once

#include <stdbool.h>

#include "core/config.h"

/* Runs until SIGINT/SIGTERM. `hello` prints what to try next (make run). Returns the exit
 * status. */
int vg_daemon_run(vg_config_t *cfg, bool hello);
