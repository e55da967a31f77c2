/* The engines' one way of reporting why something failed: a message into the caller's buffer
 * (the `char *err, size_t errlen` pair of their constructors and parsers). */
#pragma once

#include <stddef.h>

/* printf into err[errlen]; nothing when err is NULL or errlen is 0. */
void vg_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
