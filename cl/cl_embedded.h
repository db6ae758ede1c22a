/*
 * cl_embedded.h - the kernel sources compiled into the binary (private to
 * cl/). The table is generated at build time by cl/embed_cl.cmake from every
 * .cl file of cl/, sorted by file name; each text starts with a #line directive
 * naming its file and is NUL-terminated (len excludes the NUL).
 */
#ifndef PFS_CL_EMBEDDED_H
#define PFS_CL_EMBEDDED_H

#include <stddef.h>

struct pfs_cl_source {
    const char *name; /* "relight.cl" */
    const char *text;
    size_t len;
};

extern const struct pfs_cl_source pfs_cl_sources[];
extern const size_t pfs_cl_nsources;

#endif
