/*
 * reframe.c - push-in, pan and small rotation of the whole frame, resampled
 * in linear light with a windowed-sinc filter.
 *
 * The output has the source's data window and display window. Each output
 * pixel centre p is mapped back to the source position
 *
 *     q = c + offset + R(-rotate) (p - c) / scale
 *
 * (display coordinates, y down; c is the display-window centre; pixel (x, y)
 * of the data window is centred at origin + (x + 0.5, y + 0.5)), and the
 * source is sampled there with a separable kernel: per axis ntaps weights
 * from filter_weight() around q, stretched by 1/scale when scale < 1 so that a
 * pull-out does not alias, each axis normalised to sum to 1. Taps outside the
 * data window follow the border rule; NaN and Inf source values read as 0, so
 * they never spread (see docs/reframe.md for the reasons). With antiring > 0
 * each output value that falls outside the [min, max] of the source pixels
 * under the kernel's main lobe (the 2x2 around q when pushing in) is pulled
 * towards that range by the antiring strength, which takes the filter's
 * ringing out next to hot highlights.
 *
 * prepare() turns the parameters into uniforms (the 2x2 map, the filter's
 * support, an identity flag). run_cpu is the reference and test oracle:
 * direct 2-D evaluation per output pixel, geometry, weights and sums in
 * double. run_cl (cl/reframe.cl) computes the same sums in float. Without
 * rotation it runs two separable passes whose per-column and per-row taps
 * and weights come from the same C functions as the reference (axis_taps,
 * border_index). With rotation every pixel has its own sub-pixel phase, so
 * the kernel works in 2-D and interpolates its weights from a table of
 * REFRAME_PHASES phases that the host fills with phase_weights(); positions
 * reach it split into an exact integer and a small float fraction. An
 * identity reframe copies pixels bit for bit in both paths.
 *
 * Every weight, on both paths, comes from filter_weight(): the device never
 * evaluates a filter. A learned filter is a new `filter` choice whose
 * weights per phase replace that function; nothing else changes.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl/cl.h"
#include "engine/op.h"

static const char *const border_names[] = {"black", "clamp", "mirror", NULL};
static const char *const filter_names[] = {"lanczos3", "lanczos4", NULL};

/* The default anti-ringing strength, chosen on the quality bench
 * (docs/reframe.md, Anti-ringing). */
#define REFRAME_ANTIRING_DEFAULT 1

static const struct pfs_param_desc reframe_params[] = {
    {.name = "scale", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0.25, .max = 8,
     .def = {1}, .keyframable = true,
     .help = "push-in factor about the frame centre (1.1 = 10 % closer; below 1 pulls out)"},
    {.name = "offset", .type = PFS_PARAM_VEC, .ncomp = 2, .min = -1e5, .max = 1e5,
     .def = {0, 0}, .keyframable = true, .unit = "px",
     .help = "source point shown at the frame centre, as [dx, dy] source pixels from the "
             "display-window centre (y down)"},
    {.name = "rotate", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = -45, .max = 45,
     .def = {0}, .keyframable = true, .unit = "deg",
     .help = "rotation about the frame centre; positive turns the picture counter-clockwise "
             "on screen"},
    {.name = "border", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = border_names,
     .def = {0},
     .help = "what areas beyond the picture's edge show: black, clamp (edge pixels "
             "stretched) or mirror"},
    {.name = "filter", .type = PFS_PARAM_ENUM, .ncomp = 1, .choices = filter_names,
     .def = {0}, .help = "resampling filter (lanczos3, or the sharper, wider lanczos4)"},
    {.name = "antiring", .type = PFS_PARAM_NUMBER, .ncomp = 1, .min = 0, .max = 1,
     .def = {REFRAME_ANTIRING_DEFAULT},
     .help = "anti-ringing strength: 1 clamps each output value to the range of the source "
             "pixels nearest the sample (no dark halos around highlights), 0 is plain "
             "Lanczos"},
};

/* Indices into the value array, in table order. */
enum { P_SCALE, P_OFFSET, P_ROTATE, P_BORDER, P_FILTER, P_ANTIRING, P_COUNT };
_Static_assert(sizeof reframe_params / sizeof reframe_params[0] == P_COUNT,
               "reframe: parameter enum out of step with the table");

/* Border rules and filters: keep in step with cl/reframe.cl. */
enum { BORDER_BLACK, BORDER_CLAMP, BORDER_MIRROR };
enum { FILTER_LANCZOS3, FILTER_LANCZOS4, FILTER_COUNT };
_Static_assert(sizeof filter_names / sizeof filter_names[0] == FILTER_COUNT + 1,
               "reframe: filter enum out of step with its names");

/* Half-width of each filter's support at scale >= 1, in source pixels. */
static const double filter_radius[FILTER_COUNT] = {3, 4};

/* Taps per axis at most: lanczos4 at the smallest scale, 2 * 4 / 0.25.
 * The CL kernel's private arrays have the same size (REFRAME_MAX_TAPS). */
#define REFRAME_MAX_TAPS 32

/* Sub-pixel phases of the rotated path's weight table. Linear interpolation
 * between phases 1/4096 px apart is off by at most max|w''| / (8 * 4096^2),
 * about 3e-8 for Lanczos-3: below float rounding of the weights. */
#define REFRAME_PHASES 4096

struct reframe_uniforms {
    int identity; /* scale 1, offset 0, rotate 0: copy the pixels */
    int rotated;  /* rotate != 0: the direct 2-D path on the device */
    int border, filter;
    int half;      /* taps per axis either side of the sample: ceil(radius) */
    int ntaps;     /* taps per axis: 2 * half */
    double fs;     /* filter scale, min(scale, 1): weights are w(t * fs) */
    double radius; /* support half-width in source pixels, filter radius / fs */
    double lobe;   /* main lobe half-width in source pixels, 1 / fs */
    double antiring; /* 0..1: how far values beyond the lobe's range are pulled in */
    double cx, cy; /* display-window centre, display coordinates */
    double qx, qy; /* the source point shown at the centre: c + offset */
    double m[2][2]; /* output offset from c -> source offset from q: R(-rotate) / scale */
};

/* ---- the filter ---------------------------------------------------------- */

/* Lanczos: sinc(t) sinc(t / a) for |t| < a. At integer t the weight is
 * exactly 1 or 0 (sin(pi n) in floating point is ~1e-16, not 0), so integer
 * positions give exact copies. */
static double lanczos(double t, double a)
{
    if (t == 0)
        return 1;
    if (fabs(t) >= a)
        return 0;
    if (t == nearbyint(t))
        return 0;
    double x = M_PI * t;
    return a * sin(x) * sin(x / a) / (x * x);
}

/* The weight of a tap t source pixels from the sample position (already
 * multiplied by the filter scale). The one place a filter is defined. */
static double filter_weight(int filter, double t)
{
    switch (filter) {
    case FILTER_LANCZOS4:
        return lanczos(t, 4);
    default:
        return lanczos(t, 3);
    }
}

/*
 * The weights of one axis for a sample at phase f in [0, 1] past a pixel
 * centre i: taps i + 1 - half .. i + half, which hold every pixel within the
 * support (i + f - radius, i + f + radius) for any phase (those beyond it
 * weigh 0). Normalised to sum to 1, so a flat field stays flat.
 */
static void phase_weights(const struct reframe_uniforms *u, double f, double w[])
{
    double sum = 0;
    for (int k = 0; k < u->ntaps; k++) {
        w[k] = filter_weight(u->filter, (k + 1 - u->half - f) * u->fs);
        sum += w[k];
    }
    for (int k = 0; k < u->ntaps; k++)
        w[k] /= sum;
}

/*
 * The taps of one axis inside the filter's main lobe, for a sample at phase
 * f: those less than lobe (1 / fs) source pixels from the sample, where the
 * weight is positive, as the tap indices lobe[0] .. lobe[1] (contiguous,
 * never empty: the tap at -f is always in). At scale >= 1 these are the two
 * pixels either side of the sample (one at f = 0). cl/reframe.cl's
 * reframe_lobe makes the same test in float.
 */
static void lobe_taps(const struct reframe_uniforms *u, double f, int lobe[2])
{
    lobe[0] = u->ntaps;
    lobe[1] = -1;
    for (int k = 0; k < u->ntaps; k++)
        if (fabs((double)(k + 1 - u->half) - f) < u->lobe) {
            if (k < lobe[0])
                lobe[0] = k;
            lobe[1] = k;
        }
}

/* The taps of one axis around position s (source pixel coordinates: pixel
 * i is centred at i): the weights of source pixels first .. first + ntaps -
 * 1, and which of them lie in the main lobe. Returns first. */
static int axis_taps(const struct reframe_uniforms *u, double s, double w[], int lobe[2])
{
    double i = floor(s);
    phase_weights(u, s - i, w); /* s - floor(s) is exact */
    lobe_taps(u, s - i, lobe);
    return (int)i + 1 - u->half;
}

/* Index of source pixel i along an axis of n pixels under the border rule,
 * or -1 when it reads as black. mirror reflects about the data window's
 * edge, repeating the edge pixel (... 2 1 0 | 0 1 2 ...), periodically. */
static int border_index(long i, int n, int border)
{
    if (i >= 0 && i < n)
        return (int)i;
    switch (border) {
    case BORDER_CLAMP:
        return i < 0 ? 0 : n - 1;
    case BORDER_MIRROR: {
        long period = 2L * n, m = i % period;
        if (m < 0)
            m += period;
        return (int)(m < n ? m : period - 1 - m);
    }
    default:
        return -1;
    }
}

/* The position in the source's data window, in source pixel coordinates, of
 * output pixel (x, y) of an image whose data window starts at origin. */
static void source_position(const struct reframe_uniforms *u, int origin_x, int origin_y, int x,
                            int y, double *sx, double *sy)
{
    double px = origin_x + x + 0.5 - u->cx, py = origin_y + y + 0.5 - u->cy;
    *sx = u->qx + u->m[0][0] * px + u->m[0][1] * py - origin_x - 0.5;
    *sy = u->qy + u->m[1][0] * px + u->m[1][1] * py - origin_y - 0.5;
}

/* ---- descriptor callbacks ------------------------------------------------ */

static void reframe_advise(const pfs_pvec *vals, char *msg, size_t size)
{
    double s = vals[P_SCALE][0];
    if (size)
        msg[0] = '\0';
    if (s > 1.2)
        snprintf(msg, size,
                 "reframe: a push-in of %g (%.0f %%) is past the ~20 %% where reframes "
                 "visibly soften; consider a reshoot or a learned upscale",
                 s, (s - 1) * 100);
}

static int reframe_prepare(const pfs_pvec *vals, const struct pfs_op_frame *in,
                           void *uniforms, pfs_error *err)
{
    struct reframe_uniforms *u = uniforms;
    memset(u, 0, sizeof *u);
    if (!in || !in->frame)
        return pfs_error_set(err, EINVAL, "reframe: no frame");
    double scale = vals[P_SCALE][0], rotate = vals[P_ROTATE][0];
    double ox = vals[P_OFFSET][0], oy = vals[P_OFFSET][1];
    int border = (int)vals[P_BORDER][0], filter = (int)vals[P_FILTER][0];
    double antiring = vals[P_ANTIRING][0];
    if (!(scale >= 0.25 && scale <= 8))
        return pfs_error_set(err, EINVAL, "reframe: scale %g outside 0.25..8", scale);
    if (!(rotate >= -45 && rotate <= 45))
        return pfs_error_set(err, EINVAL, "reframe: rotate %g deg outside -45..45", rotate);
    if (!(fabs(ox) <= 1e5 && fabs(oy) <= 1e5))
        return pfs_error_set(err, EINVAL, "reframe: offset [%g, %g] outside +-1e5 px", ox, oy);
    if (border < BORDER_BLACK || border > BORDER_MIRROR)
        return pfs_error_set(err, EINVAL, "reframe: border index %d out of range", border);
    if (filter < 0 || filter >= FILTER_COUNT)
        return pfs_error_set(err, EINVAL, "reframe: filter index %d out of range", filter);
    if (!(antiring >= 0 && antiring <= 1))
        return pfs_error_set(err, EINVAL, "reframe: antiring %g outside 0..1", antiring);

    const struct pfs_rect *d = &in->frame->display;
    u->cx = 0.5 * ((double)d->x0 + (double)d->x1 + 1);
    u->cy = 0.5 * ((double)d->y0 + (double)d->y1 + 1);
    u->qx = u->cx + ox;
    u->qy = u->cy + oy;
    u->border = border;
    u->filter = filter;
    u->antiring = antiring;
    u->identity = scale == 1 && ox == 0 && oy == 0 && rotate == 0;
    u->rotated = rotate != 0;

    /* Exactly 1 and 0 without rotation, so an integer pan is an exact shift. */
    double c = 1, s = 0;
    if (u->rotated) {
        c = cos(rotate * M_PI / 180);
        s = sin(rotate * M_PI / 180);
    }
    /* Positive rotate turns the picture counter-clockwise on screen (y down):
     * forward (source -> output) is (x, y) -> (x c + y s, -x s + y c); this is
     * its inverse, divided by the scale. */
    u->m[0][0] = c / scale;
    u->m[0][1] = -s / scale;
    u->m[1][0] = s / scale;
    u->m[1][1] = c / scale;

    /* A pull-out stretches the kernel by 1/scale so it low-passes to the
     * output's Nyquist; a push-in keeps it at source-pixel size. */
    u->fs = scale < 1 ? scale : 1;
    u->radius = filter_radius[filter] / u->fs;
    u->lobe = 1 / u->fs;
    u->half = (int)ceil(u->radius);
    if (u->half > REFRAME_MAX_TAPS / 2) /* only by rounding: radius <= 4 / 0.25 */
        u->half = REFRAME_MAX_TAPS / 2;
    u->ntaps = 2 * u->half;
    return 0;
}

/* The output has the source's data window. */
static int check_sizes(int sw, int sh, int dw, int dh, pfs_error *err)
{
    if (sw != dw || sh != dh)
        return pfs_error_set(err, EINVAL, "reframe: source %dx%d, destination %dx%d", sw, sh,
                             dw, dh);
    return 0;
}

/*
 * Anti-ringing of one output value v: beyond [lo, hi], the range of the
 * source pixels under the main lobe, it moves that fraction of the way to
 * the range; inside, it stays exactly as it is (so exact shifts stay exact).
 * At strength 1 the result is exactly lo or hi. reframe_antiring in
 * cl/reframe.cl is the same in float.
 */
static double antiring_value(double v, double lo, double hi, double a)
{
    if (v < lo)
        return (1 - a) * v + a * lo;
    if (v > hi)
        return (1 - a) * v + a * hi;
    return v;
}

static int reframe_run_cpu(const void *uniforms, const struct pfs_op_io *io, pfs_error *err)
{
    const struct reframe_uniforms *u = uniforms;
    if (io->nsrc < 1)
        return pfs_error_set(err, EINVAL, "reframe: no source frame");
    const struct pfs_image *src = io->src[0];
    struct pfs_image *dst = io->dst;
    int rc = check_sizes(src->width, src->height, dst->width, dst->height, err);
    if (rc)
        return rc;
    if (u->identity) {
        memcpy(dst->px, src->px, pfs_image_floats(src) * sizeof(float));
        return 0;
    }

    const int w = src->width, h = src->height;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double sx, sy, wx[REFRAME_MAX_TAPS], wy[REFRAME_MAX_TAPS];
            int lx[2], ly[2];
            source_position(u, src->origin_x, src->origin_y, x, y, &sx, &sy);
            int fx = axis_taps(u, sx, wx, lx), fy = axis_taps(u, sy, wy, ly);
            double acc[4] = {0, 0, 0, 0};
            for (int j = 0; j < u->ntaps; j++) {
                int iy = border_index((long)fy + j, h, u->border);
                if (iy < 0)
                    continue; /* black: reads as 0, its weight still counted */
                for (int i = 0; i < u->ntaps; i++) {
                    int ix = border_index((long)fx + i, w, u->border);
                    if (ix < 0)
                        continue;
                    const float *v = src->px + ((size_t)iy * (size_t)w + (size_t)ix) * 4u;
                    double wt = wx[i] * wy[j];
                    for (int c = 0; c < 4; c++)
                        if (isfinite(v[c])) /* NaN and Inf read as 0 */
                            acc[c] += wt * v[c];
                }
            }
            if (u->antiring > 0) {
                /* The range of the source pixels under the main lobe, read
                 * as the filter reads them (black border and non-finite
                 * values as 0). */
                double lo[4] = {INFINITY, INFINITY, INFINITY, INFINITY};
                double hi[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
                for (int j = ly[0]; j <= ly[1]; j++) {
                    int iy = border_index((long)fy + j, h, u->border);
                    for (int i = lx[0]; i <= lx[1]; i++) {
                        int ix = border_index((long)fx + i, w, u->border);
                        const float *v = iy < 0 || ix < 0 ? NULL
                                         : src->px + ((size_t)iy * (size_t)w + (size_t)ix) * 4u;
                        for (int c = 0; c < 4; c++) {
                            double vc = v && isfinite(v[c]) ? v[c] : 0;
                            lo[c] = fmin(lo[c], vc);
                            hi[c] = fmax(hi[c], vc);
                        }
                    }
                }
                for (int c = 0; c < 4; c++)
                    acc[c] = antiring_value(acc[c], lo[c], hi[c], u->antiring);
            }
            float *out = dst->px + ((size_t)y * (size_t)w + (size_t)x) * 4u;
            for (int c = 0; c < 4; c++)
                out[c] = (float)acc[c];
        }
    }
    return 0;
}

/* ---- OpenCL -------------------------------------------------------------- */

/*
 * Without rotation each axis maps on its own: output column (or row) n
 * reads around s = q + step (origin + n + 0.5 - centre) - origin - 0.5, as
 * in source_position. For each n: the ntaps source indices under the border
 * rule (-1: black) and the weights in float, from the same axis_taps and
 * border_index as the reference, and the first and last tap of the main
 * lobe (lobe[2n], lobe[2n + 1]) for anti-ringing.
 */
static void axis_table(const struct reframe_uniforms *u, int len, int srclen, int origin,
                       double centre, double q, double step, int *idx, float *wt, int *lobe)
{
    for (int n = 0; n < len; n++) {
        double p = origin + n + 0.5 - centre;
        double s = q + step * p - origin - 0.5;
        double w[REFRAME_MAX_TAPS];
        int first = axis_taps(u, s, w, lobe + 2 * (size_t)n);
        for (int k = 0; k < u->ntaps; k++) {
            idx[(size_t)n * (size_t)u->ntaps + (size_t)k] =
                border_index((long)first + k, srclen, u->border);
            wt[(size_t)n * (size_t)u->ntaps + (size_t)k] = (float)w[k];
        }
    }
}

/*
 * Without rotation: pass 1 filters the source rows the output needs along
 * x into an intermediate (output width x those rows), pass 2 filters that
 * along y. Each output column's taps and weights are computed once here,
 * not per pixel. Anti-ringing needs the source pixels under the main lobe,
 * not pass 1's filtered rows, so pass 2 also reads the source: the lobe's
 * columns through the x tables, its rows through the y tables.
 */
static int run_separable(struct pfs_cl *cl, const struct reframe_uniforms *u,
                         const struct pfs_cl_image *src, struct pfs_cl_image *dst,
                         pfs_error *err)
{
    const int w = src->width, h = src->height, nt = u->ntaps;
    int rc = 0;
    size_t nx = (size_t)w * (size_t)nt, ny = (size_t)h * (size_t)nt;
    int *xidx = malloc(nx * sizeof *xidx), *yidx = malloc(ny * sizeof *yidx);
    float *xw = malloc(nx * sizeof *xw), *yw = malloc(ny * sizeof *yw);
    int *xlobe = malloc(2 * (size_t)w * sizeof *xlobe);
    int *ylobe = malloc(2 * (size_t)h * sizeof *ylobe);
    cl_mem bxidx = NULL, bxw = NULL, byidx = NULL, byw = NULL, bxlobe = NULL, bylobe = NULL;
    struct pfs_cl_image tmp = {0};
    if (!xidx || !yidx || !xw || !yw || !xlobe || !ylobe) {
        rc = pfs_error_set(err, ENOMEM, "reframe: no memory for the tap tables");
        goto out;
    }
    axis_table(u, w, w, src->origin_x, u->cx, u->qx, u->m[0][0], xidx, xw, xlobe);
    axis_table(u, h, h, src->origin_y, u->cy, u->qy, u->m[1][1], yidx, yw, ylobe);

    /* Only the source rows some output row reads go through pass 1. */
    int row0 = h, row1 = -1;
    for (size_t i = 0; i < ny; i++) {
        if (yidx[i] < 0)
            continue;
        row0 = yidx[i] < row0 ? yidx[i] : row0;
        row1 = yidx[i] > row1 ? yidx[i] : row1;
    }
    if (row1 < row0) /* nothing of the picture in view: pass 2 reads no row */
        row0 = row1 = 0;
    for (size_t i = 0; i < ny; i++)
        if (yidx[i] >= 0)
            yidx[i] -= row0;
    int nrows = row1 - row0 + 1;

    struct pfs_image like = {.width = w, .height = nrows};
    rc = pfs_cl_image_create(cl, &like, &tmp, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, xidx, nx * sizeof *xidx, &bxidx, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, xw, nx * sizeof *xw, &bxw, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, yidx, ny * sizeof *yidx, &byidx, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, yw, ny * sizeof *yw, &byw, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, xlobe, 2 * (size_t)w * sizeof *xlobe, &bxlobe, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, ylobe, 2 * (size_t)h * sizeof *ylobe, &bylobe, err);
    if (rc)
        goto out;

    cl_int width = w, first_row = row0, ntaps = nt;
    cl_float antiring = (cl_float)u->antiring;
    const struct pfs_cl_arg rows[] = {
        PFS_CL_ARG(src->buf), PFS_CL_ARG(tmp.buf), PFS_CL_ARG(width), PFS_CL_ARG(first_row),
        PFS_CL_ARG(ntaps),    PFS_CL_ARG(bxidx),   PFS_CL_ARG(bxw),
    };
    const struct pfs_cl_arg cols[] = {
        PFS_CL_ARG(tmp.buf),  PFS_CL_ARG(dst->buf),  PFS_CL_ARG(width),  PFS_CL_ARG(ntaps),
        PFS_CL_ARG(byidx),    PFS_CL_ARG(byw),       PFS_CL_ARG(antiring), PFS_CL_ARG(src->buf),
        PFS_CL_ARG(first_row), PFS_CL_ARG(bxidx),    PFS_CL_ARG(bxlobe), PFS_CL_ARG(bylobe),
    };
    rc = pfs_cl_run_2d(cl, "reframe_rows", rows, (int)(sizeof rows / sizeof rows[0]), w, nrows,
                       err);
    if (rc == 0)
        rc = pfs_cl_run_2d(cl, "reframe_cols", cols, (int)(sizeof cols / sizeof cols[0]), w, h,
                           err);

out:
    /* Released buffers live on until the queued kernels that use them end. */
    if (bxidx)
        clReleaseMemObject(bxidx);
    if (bxw)
        clReleaseMemObject(bxw);
    if (byidx)
        clReleaseMemObject(byidx);
    if (byw)
        clReleaseMemObject(byw);
    if (bxlobe)
        clReleaseMemObject(bxlobe);
    if (bylobe)
        clReleaseMemObject(bylobe);
    pfs_cl_image_release(&tmp);
    free(xidx);
    free(yidx);
    free(xw);
    free(yw);
    free(xlobe);
    free(ylobe);
    return rc;
}

/* d as an exact integer part and a float fraction in [0, 1]. */
static void split(double d, cl_int *i, cl_float *f)
{
    double fl = floor(d);
    *i = (cl_int)fl;
    *f = (cl_float)(d - fl);
}

/*
 * With rotation the phase differs per pixel and per axis, so the kernel
 * interpolates each axis's weights from a table of phase_weights() at
 * REFRAME_PHASES + 1 phases 0 .. 1 (a table, not the filter's formula, so
 * any filter runs on the device unchanged, and sinpi, which dominated the
 * kernel's time on PoCL, is gone). The source position is affine in
 * (x, y): a per-column part plus a per-row part, each computed here in
 * double and split into an integer and a fraction, so the kernel adds
 * integers exactly and fractions below 2 in float (~1e-7 px) instead of
 * forming thousands of pixels in float (~1e-4 px). The kernel finds the main
 * lobe's taps for anti-ringing from the same float phase (reframe_lobe): at
 * a pull-out a sample within ~1e-7 px of the lobe's edge could take in a
 * zero-weight tap there that the reference leaves out (docs/reframe.md).
 */
static int run_rotated(struct pfs_cl *cl, const struct reframe_uniforms *u,
                       const struct pfs_cl_image *src, struct pfs_cl_image *dst,
                       pfs_error *err)
{
    const int w = src->width, h = src->height;
    int rc = 0;
    size_t ntable = (size_t)(REFRAME_PHASES + 1) * (size_t)u->ntaps;
    cl_int2 *coli = malloc((size_t)w * sizeof *coli), *rowi = malloc((size_t)h * sizeof *rowi);
    cl_float2 *colf = malloc((size_t)w * sizeof *colf),
              *rowf = malloc((size_t)h * sizeof *rowf);
    cl_float *table = malloc(ntable * sizeof *table);
    cl_mem bcoli = NULL, bcolf = NULL, browi = NULL, browf = NULL, btable = NULL;
    if (!coli || !rowi || !colf || !rowf || !table) {
        rc = pfs_error_set(err, ENOMEM, "reframe: no memory for the position tables");
        goto out;
    }
    for (int p = 0; p <= REFRAME_PHASES; p++) {
        double wt[REFRAME_MAX_TAPS];
        phase_weights(u, (double)p / REFRAME_PHASES, wt);
        for (int k = 0; k < u->ntaps; k++)
            table[(size_t)p * (size_t)u->ntaps + (size_t)k] = (cl_float)wt[k];
    }
    /* sx = qx - origin_x - 0.5 + m00 px + m01 py, sy likewise. */
    for (int x = 0; x < w; x++) {
        double px = src->origin_x + x + 0.5 - u->cx;
        split(u->m[0][0] * px, &coli[x].s[0], &colf[x].s[0]);
        split(u->m[1][0] * px, &coli[x].s[1], &colf[x].s[1]);
    }
    for (int y = 0; y < h; y++) {
        double py = src->origin_y + y + 0.5 - u->cy;
        split(u->qx - src->origin_x - 0.5 + u->m[0][1] * py, &rowi[y].s[0], &rowf[y].s[0]);
        split(u->qy - src->origin_y - 0.5 + u->m[1][1] * py, &rowi[y].s[1], &rowf[y].s[1]);
    }
    rc = pfs_cl_buffer_from(cl, coli, (size_t)w * sizeof *coli, &bcoli, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, colf, (size_t)w * sizeof *colf, &bcolf, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, rowi, (size_t)h * sizeof *rowi, &browi, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, rowf, (size_t)h * sizeof *rowf, &browf, err);
    if (rc == 0)
        rc = pfs_cl_buffer_from(cl, table, ntable * sizeof *table, &btable, err);
    if (rc)
        goto out;

    cl_int width = w, height = h, ntaps = u->ntaps, half = u->half, border = u->border;
    cl_int phases = REFRAME_PHASES;
    cl_float lobe = (cl_float)u->lobe, antiring = (cl_float)u->antiring;
    const struct pfs_cl_arg args[] = {
        PFS_CL_ARG(src->buf), PFS_CL_ARG(dst->buf), PFS_CL_ARG(width), PFS_CL_ARG(height),
        PFS_CL_ARG(ntaps),    PFS_CL_ARG(half),     PFS_CL_ARG(border), PFS_CL_ARG(phases),
        PFS_CL_ARG(btable),   PFS_CL_ARG(bcoli),    PFS_CL_ARG(bcolf), PFS_CL_ARG(browi),
        PFS_CL_ARG(browf),    PFS_CL_ARG(lobe),     PFS_CL_ARG(antiring),
    };
    rc = pfs_cl_run_2d(cl, "reframe_rotated", args, (int)(sizeof args / sizeof args[0]), w, h,
                       err);

out:
    if (bcoli)
        clReleaseMemObject(bcoli);
    if (bcolf)
        clReleaseMemObject(bcolf);
    if (browi)
        clReleaseMemObject(browi);
    if (browf)
        clReleaseMemObject(browf);
    if (btable)
        clReleaseMemObject(btable);
    free(table);
    free(coli);
    free(rowi);
    free(colf);
    free(rowf);
    return rc;
}

static int reframe_run_cl(struct pfs_cl *cl, const void *uniforms,
                          const struct pfs_op_cl_io *io, pfs_error *err)
{
    const struct reframe_uniforms *u = uniforms;
    if (io->nsrc < 1)
        return pfs_error_set(err, EINVAL, "reframe: no source frame");
    const struct pfs_cl_image *src = io->src[0];
    struct pfs_cl_image *dst = io->dst;
    int rc = check_sizes(src->width, src->height, dst->width, dst->height, err);
    if (rc)
        return rc;
    if (u->identity) {
        size_t bytes = (size_t)src->width * (size_t)src->height * 4u * sizeof(cl_float);
        cl_int st = clEnqueueCopyBuffer(pfs_cl_queue(cl), src->buf, dst->buf, 0, 0, bytes, 0,
                                        NULL, NULL);
        return st == CL_SUCCESS ? 0
                                : pfs_error_set(err, EIO, "reframe: clEnqueueCopyBuffer: %s",
                                                pfs_cl_status_name(st));
    }
    return u->rotated ? run_rotated(cl, u, src, dst, err) : run_separable(cl, u, src, dst, err);
}

const struct pfs_op_desc pfs_op_reframe = {
    .name = "reframe",
    .summary = "push-in, pan and small rotation about the frame centre, Lanczos-resampled "
               "in linear light at the source resolution",
    .params = reframe_params,
    .nparams = sizeof reframe_params / sizeof reframe_params[0],
    .kind = PFS_OP_GEOMETRY,
    .uniforms_size = sizeof(struct reframe_uniforms),
    .advise = reframe_advise,
    .prepare = reframe_prepare,
    .run_cpu = reframe_run_cpu,
    .run_cl = reframe_run_cl,
    /* Measured worst case 7e-6 on PoCL (docs/reframe.md); a fifth of a
     * half-float ulp leaves room for GPUs. */
    .cl_tolerance = 1e-4,
};
