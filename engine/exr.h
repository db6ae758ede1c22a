/*
 * exr.h - reading source EXRs and writing the virtual, corrected EXRs.
 *
 * Decoding uses OpenEXRCore: scanline and tiled files (for mipmapped or
 * ripmapped files, level 0), half, float and uint channels, every
 * compression the library supports, any data window. R, G, B (and A when
 * present) become scene-linear float RGBA; other channels (Z, ids, extra
 * layers and views) are dropped from the corrected frame, documented in
 * docs/exr.md. A file without R, G and B (luminance-only, luminance/chroma),
 * a deep file or a multi-part file is refused with EINVAL naming the file.
 *
 * Encoding writes one single-part scanline file, uncompressed, one scanline
 * per chunk, INCREASING_Y, with R, G, B (and A) in the source's pixel type
 * (half stays half, float stays float, uint becomes float). Its exact size
 * follows from the header alone, so pfs_exr_output_size() answers `stat`
 * before any pixel exists and equals the length pfs_exr_encode() produces.
 * Every attribute of the source header is kept (chromaticities, timecode,
 * framesPerSecond, owner, ...) except those that describe the layout
 * (channels, compression, dataWindow, lineOrder, tiles, chunkCount, type,
 * name, version); the given extra attributes are added as strings.
 */
#ifndef PFS_EXR_H
#define PFS_EXR_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "util/error.h"

struct pfs_exr_source; /* a probed source file: its header, not its pixels */

enum pfs_exr_pixel { PFS_EXR_HALF, PFS_EXR_FLOAT };

struct pfs_exr_layout {
    struct pfs_rect data;    /* data window */
    struct pfs_rect display; /* display window */
    int has_alpha;
    enum pfs_exr_pixel out_type; /* pixel type of the corrected frame */
};

/* A string attribute added to the corrected frame ("platefs/ops", ...). */
struct pfs_exr_attr {
    const char *name;
    const char *value;
};

/* Reads and validates the header of path (no pixels). EINVAL for files that
 * are not EXR or not supported (message names the file and why), EIO for
 * unreadable ones. */
int pfs_exr_probe(const char *path, struct pfs_exr_source **out, pfs_error *err);
void pfs_exr_source_free(struct pfs_exr_source *src);
const struct pfs_exr_layout *pfs_exr_source_layout(const struct pfs_exr_source *src);

/* The header of a frame that has no EXR behind it (a decoded video
 * picture): a full-frame data window, R, G, B in half, and these standard
 * attributes. */
struct pfs_exr_video_header {
    int width, height;
    float pixel_aspect;         /* pixelAspectRatio */
    float chromaticities[8];    /* red, green, blue, white CIE xy */
    int has_timecode;
    uint32_t time_and_flags;    /* timeCode, SMPTE 12M packed as OpenEXR does */
    int fps_num, fps_den;       /* framesPerSecond; 0/0 to leave it out */
};

/* A source made from h instead of a file; name is used in messages only.
 * It encodes like any probed source; pfs_exr_decode refuses it (its pixels
 * come from elsewhere). */
int pfs_exr_source_new(const char *name, const struct pfs_exr_video_header *h,
                       struct pfs_exr_source **out, pfs_error *err);

/* Decodes the pixels into img (allocated here; free with pfs_image_free).
 * A corrupt or truncated file gives EIO naming the file and the chunk. */
int pfs_exr_decode(const struct pfs_exr_source *src, struct pfs_image *img,
                   pfs_error *err);

/* Exact byte size of the corrected frame for this source and these extra
 * attributes; no pixels are touched. */
int pfs_exr_output_size(const struct pfs_exr_source *src, const struct pfs_exr_attr *attrs,
                        int nattrs, uint64_t *size, pfs_error *err);

/* Encodes img (which must have the source's data window) into a malloc'd
 * buffer of exactly pfs_exr_output_size() bytes. */
int pfs_exr_encode(const struct pfs_exr_source *src, const struct pfs_exr_attr *attrs,
                   int nattrs, const struct pfs_image *img, uint8_t **out, size_t *len,
                   pfs_error *err);

#endif
