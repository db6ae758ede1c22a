/*
 * optest.h - what the op unit tests share: float bit views, pixel access,
 * the special float values an identity op must carry bit for bit, and a
 * seeded random HDR plate for comparing an op's OpenCL path with its C
 * reference.
 */
#ifndef PFS_OPTEST_H
#define PFS_OPTEST_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl/cl.h"
#include "engine/image.h"
#include "tests/unit/check.h"

static inline uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float *px(const struct pfs_image *img, int x, int y)
{
    return img->px + ((size_t)y * (size_t)img->width + (size_t)x) * 4;
}

static inline void fill(struct pfs_image *img, float r, float g, float b, float a)
{
    for (size_t i = 0; i < pfs_image_floats(img); i += 4) {
        img->px[i] = r;
        img->px[i + 1] = g;
        img->px[i + 2] = b;
        img->px[i + 3] = a;
    }
}

static const uint32_t special_bits[] = {
    0x7fc12345u, /* quiet NaN with a payload */
    0xffc00001u, /* negative NaN */
    0x7f800000u, /* +Inf */
    0xff800000u, /* -Inf */
    0x80000000u, /* -0 */
    0x00000001u, /* smallest subnormal */
    0x7f7fffffu, /* FLT_MAX */
};

/* Uniform in [0, 1), from rand() so a test's srand() makes it repeatable. */
static inline double frand(void)
{
    return (double)rand() / ((double)RAND_MAX + 1.0);
}

/* HDR plate: zeros, negatives (noise below black), mid-tones, and highlights
 * up to 64, plus a sprinkling of NaN and Inf; alpha in 0..1 but for one NaN. */
static inline void random_plate(struct pfs_image *img)
{
    for (size_t i = 0; i < pfs_image_floats(img); i++) {
        double u = frand(), v;
        if (i % 4 == 3)
            v = frand();
        else if (u < 0.1)
            v = 0;
        else if (u < 0.2)
            v = -frand();
        else if (u < 0.75)
            v = frand();
        else
            v = exp2(6 * frand());
        img->px[i] = (float)v;
    }
    img->px[4 * 1000 + 1] = NAN;
    img->px[4 * 2000 + 0] = INFINITY;
    img->px[4 * 3000 + 2] = -INFINITY;
    img->px[4 * 5000 + 3] = NAN;
}

/* The OpenCL device the op tests run on (PoCL's CPU device without a GPU),
 * its name and the op's tolerance printed; NULL, with a failed check, when
 * there is none. */
static inline struct pfs_cl *open_test_device(double tolerance)
{
    struct pfs_cl *cl = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_cl_open(NULL, &cl, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc)
        return NULL;
    fprintf(stderr, "  OpenCL device: %s; tolerance %g relative to max(1, |ref|)\n",
            pfs_cl_device_name(cl), tolerance);
    return cl;
}

/* How an op's OpenCL output differs from its C reference. */
struct cl_diff {
    double max_err;     /* per channel, relative to max(1, |reference|) */
    size_t bad_special; /* NaN where the reference has none, or Inf changed */
};

/* Compares every channel (alpha too unless skip_alpha) and prints one line
 * naming the case and the worst pixel. */
static inline struct cl_diff compare_to_reference(const struct pfs_image *ref,
                                                  const struct pfs_image *got, bool skip_alpha,
                                                  const char *name)
{
    struct cl_diff d = {0};
    size_t at = 0, n = pfs_image_floats(ref);
    for (size_t i = 0; i < n; i++) {
        float r = ref->px[i], g = got->px[i];
        if (skip_alpha && i % 4 == 3)
            continue;
        if (isnan(r) || isinf(r)) {
            d.bad_special += !(isnan(r) ? isnan(g) : g == r);
            continue;
        }
        double e = fabs((double)g - (double)r) / fmax(1.0, fabs((double)r));
        if (!(e <= d.max_err)) {
            d.max_err = e;
            at = i;
        }
    }
    size_t w = (size_t)ref->width;
    fprintf(stderr, "  %-40s max rel error %.3g (pixel %zu,%zu ch %zu: ref %.9g cl %.9g)\n", name,
            d.max_err, at / 4 % w, at / 4 / w, at % 4, ref->px[at], got->px[at]);
    return d;
}

#endif
