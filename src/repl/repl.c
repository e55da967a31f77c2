/* Placeholder until the REPL lands. */
#include "repl/repl.h"

#include <stdio.h>

int vg_repl_standalone(const vg_config_t *cfg, bool load_policies)
{
  (void)cfg;
  (void)load_policies;
  fprintf(stderr, "vigil repl: not built yet\n");
  return 1;
}

int vg_repl_attach(const char *path)
{
  (void)path;
  return 1;
}

vg_repl_server_t *vg_repl_server_start(vg_runtime_t *rt, const char *path)
{
  (void)rt;
  (void)path;
  return NULL;
}

void vg_repl_server_stop(vg_repl_server_t *srv)
{
  (void)srv;
}
