/* error.c - formatting for pfs_error; see error.h. */
#include "error.h"

#include <stdio.h>
#include <string.h>

int pfs_error_vset(pfs_error *err, int code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

int pfs_error_set(pfs_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pfs_error_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int pfs_error_prefix(pfs_error *err, const char *fmt, ...)
{
    if (!err)
        return 0;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return err->code;
}
