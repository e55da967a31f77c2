/* Shared helpers for the C unit tests. */
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>

char *test_read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return NULL;
  }
  char *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, cap);
      if (nb == NULL) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, 4096, f);
    n += r;
    if (r == 0) {
      break;
    }
  }
  fclose(f);
  buf[n] = '\0';
  if (len) {
    *len = n;
  }
  return buf;
}
