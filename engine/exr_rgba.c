/*
 * exr_rgba.c - DWA decoding through OpenEXR's RGBA interface; see exr_rgba.h.
 */
#include "exr_rgba.h"

#include <ImfCRgbaFile.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ImfErrorMessage() is one buffer per process: keep the call and the read
 * of its message together. */
static pthread_mutex_t imf_error_lock = PTHREAD_MUTEX_INITIALIZER;

int pfs_exr_decode_rgba(const char *path, const struct pfs_exr_layout *layout,
                        struct pfs_image *img, pfs_error *err)
{
    memset(img, 0, sizeof *img);
    const struct pfs_rect dw = layout->data;
    int width = dw.x1 - dw.x0 + 1, height = dw.y1 - dw.y0 + 1;
    int rc = pfs_image_alloc(img, width, height);
    if (rc)
        return pfs_error_set(err, rc, "%s: cannot allocate %d x %d pixels", path, width, height);
    ImfRgba *rgba = malloc((size_t)width * (size_t)height * sizeof *rgba);
    if (!rgba) {
        pfs_image_free(img);
        return pfs_error_set(err, ENOMEM, "%s: cannot allocate %d x %d pixels", path, width,
                             height);
    }

    pthread_mutex_lock(&imf_error_lock);
    ImfInputFile *in = ImfOpenInputFile(path);
    int xmin = 0, ymin = 0, xmax = -1, ymax = -1;
    if (in)
        ImfHeaderDataWindow(ImfInputHeader(in), &xmin, &ymin, &xmax, &ymax);
    if (!in) {
        rc = pfs_error_set(err, EIO, "%s: %s", path, ImfErrorMessage());
    } else if (xmin != dw.x0 || ymin != dw.y0 || xmax != dw.x1 || ymax != dw.y1) {
        rc = pfs_error_set(err, EIO, "%s: file changed since it was probed", path);
    } else {
        /* The library addresses the buffer in data-window coordinates:
         * base + x + y * width for x, y inside the window. Compute the
         * base in integers so no pointer ever leaves the buffer. */
        uintptr_t base = (uintptr_t)rgba - ((uintptr_t)(intptr_t)dw.x0 +
                                            (uintptr_t)(intptr_t)dw.y0 * (uintptr_t)width) *
                                               sizeof *rgba;
        if (!ImfInputSetFrameBuffer(in, (ImfRgba *)base, 1, (size_t)width) ||
            !ImfInputReadPixels(in, dw.y0, dw.y1))
            rc = pfs_error_set(err, EIO, "%s: %s", path, ImfErrorMessage());
    }
    if (in && !ImfCloseInputFile(in) && rc == 0)
        rc = pfs_error_set(err, EIO, "%s: %s", path, ImfErrorMessage());
    pthread_mutex_unlock(&imf_error_lock);

    if (rc == 0) {
        img->origin_x = dw.x0;
        img->origin_y = dw.y0;
        img->display = layout->display;
        size_t n = (size_t)width * (size_t)height;
        for (size_t i = 0; i < n; i++) {
            img->px[i * 4 + 0] = ImfHalfToFloat(rgba[i].r);
            img->px[i * 4 + 1] = ImfHalfToFloat(rgba[i].g);
            img->px[i * 4 + 2] = ImfHalfToFloat(rgba[i].b);
            img->px[i * 4 + 3] = layout->has_alpha ? ImfHalfToFloat(rgba[i].a) : 1.0f;
        }
    } else {
        pfs_image_free(img);
    }
    free(rgba);
    return rc;
}
