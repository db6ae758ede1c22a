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
    char prefix[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (n < 0)
        return err->code;
    /* Assemble "prefix: old" by hand: both halves may be long and the whole
     * is cut to fit, keeping the prefix. */
    size_t plen = strlen(prefix), olen = strlen(err->msg), cap = sizeof err->msg - 1;
    if (plen + 2 > cap)
        plen = cap - 2;
    if (plen + 2 + olen > cap)
        olen = cap - plen - 2;
    memmove(err->msg + plen + 2, err->msg, olen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen] = ':';
    err->msg[plen + 1] = ' ';
    err->msg[plen + 2 + olen] = '\0';
    return err->code;
}
