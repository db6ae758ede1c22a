/* image.c - allocation of pfs_image pixel storage; see image.h. */
#include "image.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

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
