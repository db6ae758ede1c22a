/*
 * error.h - the one error type of platefs.
 *
 * Every fallible function returns an int: 0 on success, otherwise a positive
 * errno value (EIO, EINVAL, ENOENT, ENOSPC, ENODEV, ...). When the caller
 * passes a pfs_error, the same code is stored in it with a sentence that names
 * the file and what is wrong, ready to be logged once at a boundary.
 * err may always be NULL.
 */
#ifndef PFS_ERROR_H
#define PFS_ERROR_H

#include <stdarg.h>

typedef struct pfs_error {
    int code;        /* 0 or a positive errno value */
    char msg[1024];  /* "path: what is wrong", no trailing newline */
} pfs_error;

/* Sets err (if not NULL) and returns code, so callers can write
 * `return pfs_error_set(err, EIO, "%s: truncated", path);` */
int pfs_error_set(pfs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int pfs_error_vset(pfs_error *err, int code, const char *fmt, va_list ap);

/* Prefixes the existing message with more context ("while X: <old>"). */
int pfs_error_prefix(pfs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void pfs_error_clear(pfs_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

#endif
