/* vigil: command-line entry point (placeholder until the CLI lands). */
#include <stdio.h>

#include "vigil/version.h"

int main(void)
{
  printf("vigil %s\n", VIGIL_VERSION);
  return 0;
}
