/*
 * image.h - the pixels every op works on: scene-linear float RGBA.
 *
 * An image covers the source's data window, which may differ from (and lie
 * partly outside) the display window. Pixels are interleaved RGBA, rows top
 * to bottom, no padding: px[((y * width) + x) * 4 + c]. Sources without
 * alpha decode with A = 1.
 */
#ifndef PFS_IMAGE_H
#define PFS_IMAGE_H

#include <stddef.h>

struct pfs_rect {
    int x0, y0, x1, y1; /* inclusive corners, as EXR windows are */
};

struct pfs_image {
    int width, height;       /* of the data window */
    int origin_x, origin_y;  /* data window min corner, display coordinates */
    struct pfs_rect display; /* display window */
    float *px;               /* width * height * 4 floats, owned */
};

/* Allocates px for the given size; returns 0 or ENOMEM. */
int pfs_image_alloc(struct pfs_image *img, int width, int height);
void pfs_image_free(struct pfs_image *img);
/* dst (unallocated or freed) becomes a copy of src; 0 or ENOMEM. */
int pfs_image_copy(struct pfs_image *dst, const struct pfs_image *src);

static inline size_t pfs_image_floats(const struct pfs_image *img)
{
    return (size_t)img->width * (size_t)img->height * 4u;
}

#endif
