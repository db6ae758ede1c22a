/*
 * exr_rgba.h - the second decoder, private to the EXR module.
 *
 * OpenEXRCore 3.1 (Debian 12) cannot decompress DWAA/DWAB, the lossy
 * compression many dailies pipelines write. The same OpenEXR release's
 * RGBA interface (ImfCRgbaFile.h, the C binding of the C++ library) can, so
 * those files are decoded through it. It delivers half RGBA: float channels
 * of a DWA file are rounded to half (DWA is lossy to begin with).
 */
#ifndef PFS_EXR_RGBA_H
#define PFS_EXR_RGBA_H

#include "exr.h"

/* Decodes path, whose header was validated as layout, into img (allocated
 * here). EIO naming the file on any library error. */
int pfs_exr_decode_rgba(const char *path, const struct pfs_exr_layout *layout,
                        struct pfs_image *img, pfs_error *err);

#endif
