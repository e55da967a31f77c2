/* Shared helpers for the C unit tests (cmocka). */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka needs the headers above first. */
#include <cmocka.h>

/* Reads a whole file into a NUL-terminated buffer (caller frees), or NULL. */
char *test_read_file(const char *path, size_t *len);
