/* See errbuf.h. */
#include "engine/errbuf.h"

#include <stdarg.h>
#include <stdio.h>

void vg_errf(char *err, size_t errlen, const char *fmt, ...)
{
  if (err == NULL || errlen == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}
