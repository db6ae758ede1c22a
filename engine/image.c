/* image.c - allocation of pfs_image pixel storage; see image.h. */
#include "image.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int pfs_image_alloc(struct pfs_image *img, int width, int height)
{
    if (width <= 0 || height <= 0 ||
        (size_t)width > SIZE_MAX / 16u / (size_t)height)
        return EINVAL;
    img->width = width;
    img->height = height;
    img->px = malloc((size_t)width * (size_t)height * 4u * sizeof(float));
    return img->px ? 0 : ENOMEM;
}

void pfs_image_free(struct pfs_image *img)
{
    free(img->px);
    img->px = NULL;
}

int pfs_image_copy(struct pfs_image *dst, const struct pfs_image *src)
{
    *dst = *src;
    dst->px = NULL;
    int rc = pfs_image_alloc(dst, src->width, src->height);
    if (rc == 0)
        memcpy(dst->px, src->px, pfs_image_floats(src) * sizeof(float));
    return rc;
}
