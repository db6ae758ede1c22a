/*
 * colour.c - decoded video pictures to scene-linear RGBA; see colour.h.
 *
 * The maths, per pixel, in double precision:
 *
 *   1. Range. An n-bit code value becomes a normalised one. Limited range
 *      (ITU-R BT.601-7, BT.709-6 and BT.2020-2, "narrow"): Y' = (Y - 16k) /
 *      219k and C = (C - 128k) / 224k with k = 2^(n-8); R'G'B' planes of a
 *      limited-range RGB picture use the Y' formula. Full range (ITU-T
 *      H.273, VideoFullRangeFlag = 1): Y' = Y / (2^n - 1) and C = (C -
 *      2^(n-1)) / (2^n - 1). Values beyond the nominal range are kept.
 *
 *   2. Chroma upsampling, bilinear, on the normalised chroma. Chroma sample
 *      j of a plane subsampled by s lies at luma position j s + p (s - 1),
 *      where p is 0 for co-sited, 1/2 for centred and 1 for bottom siting
 *      (AVChromaLocation, i.e. H.273 chroma_sample_loc_type). Luma pixel x
 *      takes the two chroma samples around u = (x - p (s - 1)) / s,
 *      weighted by the fraction of u; taps beyond the picture are clamped
 *      to the edge. Unspecified siting is "left": co-sited horizontally and
 *      centred vertically, the MPEG-2 / H.264 / HEVC default for 4:2:0,
 *      and co-sited for 4:2:2 and 4:1:1 as BT.601, SMPTE 274M, ProRes and
 *      DNxHD sample it.
 *
 *   3. Matrix (BT.601-7 2.5, BT.709-6 3.2, BT.2020-2 table 4, SMPTE 240M,
 *      FCC 47 CFR 73.682): with luma coefficients Kr, Kb and Kg = 1 - Kr -
 *      Kb, R' = Y' + 2 (1 - Kr) Cr, B' = Y' + 2 (1 - Kb) Cb and G' = Y' -
 *      (2 Kb (1 - Kb) Cb + 2 Kr (1 - Kr) Cr) / Kg. RGB pictures skip it.
 *
 *   4. Transfer, per channel, R'G'B' (code) to linear light. The curves and
 *      their inverses are written out below from their standards. Outside
 *      [0, 1] every curve continues its own formula above 1, and below 0
 *      the display curves (rec709, bt1886, srgb, gamma22/28, linear) are
 *      odd-symmetric, f(-v) = -f(v): the xvYCC extension of IEC 61966-2-4
 *      and of scRGB; near 0 that is the straight toe carried on through
 *      zero. The log curves (logc3, slog3) already end in a straight toe
 *      below their black point, which is continued to any negative value.
 *      Sub-blacks stay negative and super-whites above 1: nothing clips.
 *
 * Two published curves have pieces that do not quite meet as printed, and
 * a curve with a jump has no exact inverse, so round trips would fail
 * inside the jump. IEC 61966-2-1 sRGB switches at 0.04045 / 0.0031308, where
 * its straight line and power curve are 2.9e-8 apart; the pieces actually
 * cross at L = 0.003130668442500549 (found by bisection; the printed
 * thresholds approximate it), so that point is used. ARRI LogC3 (EI 800, "ALEXA
 * LogC Curve - Usage in VFX", 2017) gives f = 0.092809, six decimals of the
 * value that makes the straight toe meet the log piece at the cut,
 * c log10(a cut + b) + d - e cut = 0.09280874982789486, used here (2.5e-7 of
 * a code value lower). BT.709's OETF uses the unrounded constants of
 * BT.2020-2 (alpha = 1.09929682680944, beta = 0.018053968510807), for which
 * the two pieces meet in value and slope; BT.709's printed 1.099 / 0.018
 * leave a jump of 2.5e-4. S-Log3 (Sony, "Technical Summary for
 * S-Gamut3.Cine/S-Log3 and S-Gamut3/S-Log3") is continuous as published.
 *
 * Speed: pow() or exp() per channel costs about 20 ns, 60 ms for a
 * 1280x720 picture, so each curve is tabulated once per process every
 * 2^-13 of a code value and interpolated linearly in double precision
 * (struct grid): over [-0.5, 2) for the log curves, over |code| < 2 for the
 * odd ones. Other codes are evaluated exactly, and so are pure powers below
 * 1/8, which makes dark bt1886 / gamma22 / gamma28 pictures slower. The
 * interpolation error, h^2 f'' / 8, stays below 1e-6 of the value: at most
 * 7e-7 for sRGB just above its cut, 3e-7 for the log curves, 6e-7 for the
 * 2.8 power at 1/8 (the unit test measures it). What is left is about 140
 * instructions per pixel, chroma and matrix included.
 *
 * Pixel formats: planar Y'CbCr, planar GBR and grey of 8 to 16 bits in
 * native byte order are read directly. Anything else that libswscale reads
 * (NV12, P010, packed RGB, YUYV, big-endian, ...) is first repacked by it,
 * with point sampling and bit-exact arithmetic, into the nearest planar
 * format of the same subsampling and at least the same depth: a lossless
 * reshuffle of the same samples (the unit test checks this bit for bit
 * for the common ones). Raw sensor (Bayer), palette, float and DCI X'Y'Z'
 * pictures are refused: none is described by the four characteristics.
 */
#include "colour.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libavutil/frame.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

/* ---- names ---------------------------------------------------------- */

static const char *const matrix_names[PFS_MATRIX_COUNT] = {
    [PFS_MATRIX_BT709] = "bt709",         [PFS_MATRIX_BT601] = "bt601",
    [PFS_MATRIX_BT2020] = "bt2020",       [PFS_MATRIX_SMPTE240M] = "smpte240m",
    [PFS_MATRIX_FCC] = "fcc",             [PFS_MATRIX_RGB] = "rgb",
};
static const char *const range_names[PFS_RANGE_COUNT] = {
    [PFS_RANGE_LIMITED] = "limited", [PFS_RANGE_FULL] = "full",
};
static const char *const transfer_names[PFS_TRANSFER_COUNT] = {
    [PFS_TRANSFER_REC709] = "rec709",   [PFS_TRANSFER_BT1886] = "bt1886",
    [PFS_TRANSFER_SRGB] = "srgb",       [PFS_TRANSFER_LINEAR] = "linear",
    [PFS_TRANSFER_GAMMA22] = "gamma22", [PFS_TRANSFER_GAMMA28] = "gamma28",
    [PFS_TRANSFER_LOGC3] = "logc3",     [PFS_TRANSFER_SLOG3] = "slog3",
};
static const char *const primaries_names[PFS_PRIMARIES_COUNT] = {
    [PFS_PRIMARIES_BT709] = "bt709",         [PFS_PRIMARIES_BT601_625] = "bt601-625",
    [PFS_PRIMARIES_BT601_525] = "bt601-525", [PFS_PRIMARIES_BT2020] = "bt2020",
    [PFS_PRIMARIES_P3D65] = "p3d65",         [PFS_PRIMARIES_P3DCI] = "p3dci",
    [PFS_PRIMARIES_AWG3] = "awg3",           [PFS_PRIMARIES_SGAMUT3] = "sgamut3",
    [PFS_PRIMARIES_SGAMUT3_CINE] = "sgamut3cine",
};

static const char *name_of(const char *const *names, int count, int v)
{
    return v >= 0 && v < count ? names[v] : "invalid";
}

/* Rule files are written by people: "LogC3" means logc3. */
static int parse_name(const char *const *names, int count, const char *name)
{
    for (int i = 0; name && i < count; i++)
        if (strcasecmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *pfs_matrix_name(enum pfs_matrix m)
{
    return name_of(matrix_names, PFS_MATRIX_COUNT, (int)m);
}
const char *pfs_range_name(enum pfs_range r)
{
    return name_of(range_names, PFS_RANGE_COUNT, (int)r);
}
const char *pfs_transfer_name(enum pfs_transfer t)
{
    return name_of(transfer_names, PFS_TRANSFER_COUNT, (int)t);
}
const char *pfs_primaries_name(enum pfs_primaries p)
{
    return name_of(primaries_names, PFS_PRIMARIES_COUNT, (int)p);
}
int pfs_matrix_parse(const char *name)
{
    return parse_name(matrix_names, PFS_MATRIX_COUNT, name);
}
int pfs_range_parse(const char *name)
{
    return parse_name(range_names, PFS_RANGE_COUNT, name);
}
int pfs_transfer_parse(const char *name)
{
    return parse_name(transfer_names, PFS_TRANSFER_COUNT, name);
}
int pfs_primaries_parse(const char *name)
{
    return parse_name(primaries_names, PFS_PRIMARIES_COUNT, name);
}

/* ---- what a stream declares ------------------------------------------ */

static const char *or_number(const char *name, int v, char *buf, size_t len)
{
    if (name)
        return name;
    snprintf(buf, len, "%d", v);
    return buf;
}

static int refuse(pfs_error *err, const char *what, const char *name, const char *why,
                  const char *key)
{
    return pfs_error_set(err, ENOTSUP,
                         "the clip declares %s %s (%s), which platefs cannot turn into "
                         "scene-linear light; if you know how the clip was really "
                         "encoded, name it in the rule file: source: colour: {%s: ...}",
                         what, name, why, key);
}

int pfs_colour_from_stream(int matrix, int range, int primaries, int transfer,
                           const char *pix_fmt, int width, struct pfs_colour *out,
                           pfs_error *err)
{
    char num[16];
    const AVPixFmtDescriptor *d = pix_fmt ? av_pix_fmt_desc_get(av_get_pix_fmt(pix_fmt)) : NULL;
    bool rgb_fmt = d && (d->flags & AV_PIX_FMT_FLAG_RGB);
    bool jpeg_fmt = pix_fmt && strncmp(pix_fmt, "yuvj", 4) == 0;
    struct pfs_colour c;

    /* Matrix. An RGB pixel format has none whatever the stream says. */
    const char *mname = or_number(av_color_space_name(matrix), matrix, num, sizeof num);
    if (rgb_fmt) {
        c.matrix = PFS_MATRIX_RGB;
    } else {
        switch (matrix) {
        case AVCOL_SPC_RGB: c.matrix = PFS_MATRIX_RGB; break;
        case AVCOL_SPC_BT709: c.matrix = PFS_MATRIX_BT709; break;
        case AVCOL_SPC_FCC: c.matrix = PFS_MATRIX_FCC; break;
        case AVCOL_SPC_BT470BG:
        case AVCOL_SPC_SMPTE170M: c.matrix = PFS_MATRIX_BT601; break;
        case AVCOL_SPC_SMPTE240M: c.matrix = PFS_MATRIX_SMPTE240M; break;
        case AVCOL_SPC_BT2020_NCL: c.matrix = PFS_MATRIX_BT2020; break;
        case AVCOL_SPC_UNSPECIFIED:
        case AVCOL_SPC_RESERVED:
            /* HD and larger is BT.709 (SMPTE 274M/296M), SD is BT.601. */
            c.matrix = width >= 1280 ? PFS_MATRIX_BT709 : PFS_MATRIX_BT601;
            break;
        case AVCOL_SPC_YCGCO:
            return refuse(err, "matrix", mname, "YCgCo, a lossless-coding transform", "matrix");
        case AVCOL_SPC_BT2020_CL:
            return refuse(err, "matrix", mname,
                          "BT.2020 constant luminance, which mixes the transfer into the matrix",
                          "matrix");
        default:
            return refuse(err, "matrix", mname, "not a Y'CbCr matrix platefs knows", "matrix");
        }
    }

    switch (range) {
    case AVCOL_RANGE_MPEG: c.range = PFS_RANGE_LIMITED; break;
    case AVCOL_RANGE_JPEG: c.range = PFS_RANGE_FULL; break;
    default: c.range = rgb_fmt || jpeg_fmt ? PFS_RANGE_FULL : PFS_RANGE_LIMITED; break;
    }

    const char *tname = or_number(av_color_transfer_name(transfer), transfer, num, sizeof num);
    switch (transfer) {
    case AVCOL_TRC_BT709:
    case AVCOL_TRC_SMPTE170M:
    case AVCOL_TRC_BT2020_10:
    case AVCOL_TRC_BT2020_12:
    case AVCOL_TRC_IEC61966_2_4: /* xvYCC: the BT.709 curve, odd-symmetric as ours */
    case AVCOL_TRC_UNSPECIFIED:
    case AVCOL_TRC_RESERVED0:
    case AVCOL_TRC_RESERVED:
        c.transfer = PFS_TRANSFER_REC709;
        break;
    case AVCOL_TRC_GAMMA22: c.transfer = PFS_TRANSFER_GAMMA22; break;
    case AVCOL_TRC_GAMMA28: c.transfer = PFS_TRANSFER_GAMMA28; break;
    case AVCOL_TRC_LINEAR: c.transfer = PFS_TRANSFER_LINEAR; break;
    case AVCOL_TRC_IEC61966_2_1: c.transfer = PFS_TRANSFER_SRGB; break;
    case AVCOL_TRC_SMPTE2084:
        return refuse(err, "transfer", tname, "PQ, an HDR display encoding", "transfer");
    case AVCOL_TRC_ARIB_STD_B67:
        return refuse(err, "transfer", tname, "HLG, an HDR broadcast encoding", "transfer");
    case AVCOL_TRC_LOG:
    case AVCOL_TRC_LOG_SQRT:
        return refuse(err, "transfer", tname, "a generic log curve, not a camera's", "transfer");
    default:
        return refuse(err, "transfer", tname, "a curve platefs has no formula for", "transfer");
    }

    const char *pname = or_number(av_color_primaries_name(primaries), primaries, num, sizeof num);
    switch (primaries) {
    case AVCOL_PRI_BT709: c.primaries = PFS_PRIMARIES_BT709; break;
    case AVCOL_PRI_BT470BG: c.primaries = PFS_PRIMARIES_BT601_625; break;
    case AVCOL_PRI_SMPTE170M:
    case AVCOL_PRI_SMPTE240M: c.primaries = PFS_PRIMARIES_BT601_525; break;
    case AVCOL_PRI_BT2020: c.primaries = PFS_PRIMARIES_BT2020; break;
    case AVCOL_PRI_SMPTE431: c.primaries = PFS_PRIMARIES_P3DCI; break;
    case AVCOL_PRI_SMPTE432: c.primaries = PFS_PRIMARIES_P3D65; break;
    case AVCOL_PRI_UNSPECIFIED:
    case AVCOL_PRI_RESERVED0:
    case AVCOL_PRI_RESERVED:
        /* Follow the matrix: the declared one tells 625-line (BT.470BG)
         * from 525-line (SMPTE 170M) systems; a BT.601 matrix that was
         * itself a default says nothing, and the picture height that
         * would is not passed here, so 525-line (SMPTE 170M) is assumed.
         * Primaries only label the EXR; the pixels do not depend on them. */
        switch (matrix) {
        case AVCOL_SPC_BT470BG: c.primaries = PFS_PRIMARIES_BT601_625; break;
        case AVCOL_SPC_BT2020_NCL: c.primaries = PFS_PRIMARIES_BT2020; break;
        case AVCOL_SPC_SMPTE170M:
        case AVCOL_SPC_SMPTE240M:
        case AVCOL_SPC_FCC: c.primaries = PFS_PRIMARIES_BT601_525; break;
        case AVCOL_SPC_BT709: c.primaries = PFS_PRIMARIES_BT709; break;
        default:
            c.primaries = c.matrix == PFS_MATRIX_BT601 ? PFS_PRIMARIES_BT601_525
                                                       : PFS_PRIMARIES_BT709;
            break;
        }
        break;
    default:
        return pfs_error_set(err, ENOTSUP,
                             "the clip declares primaries %s, which platefs has no name for "
                             "and cannot label the EXR with; name the primaries in the rule "
                             "file: source: colour: {primaries: ...}",
                             pname);
    }

    *out = c;
    return 0;
}

/* ---- primaries ------------------------------------------------------ */

void pfs_primaries_chromaticities(enum pfs_primaries p, float xy[8])
{
    /* red x y, green x y, blue x y, white x y */
    static const float table[PFS_PRIMARIES_COUNT][8] = {
        /* ITU-R BT.709-6 table 1.3/1.4, D65 */
        [PFS_PRIMARIES_BT709] = {0.640f, 0.330f, 0.300f, 0.600f, 0.150f, 0.060f, 0.3127f, 0.3290f},
        /* ITU-R BT.601-7 625-line (BT.470-6 System B, G), D65 */
        [PFS_PRIMARIES_BT601_625] = {0.640f, 0.330f, 0.290f, 0.600f, 0.150f, 0.060f, 0.3127f,
                                     0.3290f},
        /* ITU-R BT.601-7 525-line, SMPTE 170M (and 240M), D65 */
        [PFS_PRIMARIES_BT601_525] = {0.630f, 0.340f, 0.310f, 0.595f, 0.155f, 0.070f, 0.3127f,
                                     0.3290f},
        /* ITU-R BT.2020-2 table 3, D65 */
        [PFS_PRIMARIES_BT2020] = {0.708f, 0.292f, 0.170f, 0.797f, 0.131f, 0.046f, 0.3127f,
                                  0.3290f},
        /* SMPTE EG 432-1 (Display P3), D65 */
        [PFS_PRIMARIES_P3D65] = {0.680f, 0.320f, 0.265f, 0.690f, 0.150f, 0.060f, 0.3127f,
                                 0.3290f},
        /* SMPTE RP 431-2, DCI white */
        [PFS_PRIMARIES_P3DCI] = {0.680f, 0.320f, 0.265f, 0.690f, 0.150f, 0.060f, 0.314f, 0.351f},
        /* ARRI Wide Gamut 3 (ALEXA LogC white paper), D65 */
        [PFS_PRIMARIES_AWG3] = {0.6840f, 0.3130f, 0.2210f, 0.8480f, 0.0861f, -0.1020f, 0.3127f,
                                0.3290f},
        /* Sony S-Gamut3 (S-Log3 technical summary), D65 */
        [PFS_PRIMARIES_SGAMUT3] = {0.730f, 0.280f, 0.140f, 0.855f, 0.100f, -0.050f, 0.3127f,
                                   0.3290f},
        /* Sony S-Gamut3.Cine, D65 */
        [PFS_PRIMARIES_SGAMUT3_CINE] = {0.766f, 0.275f, 0.225f, 0.800f, 0.089f, -0.087f, 0.3127f,
                                        0.3290f},
    };
    memcpy(xy, table[(unsigned)p < PFS_PRIMARIES_COUNT ? p : PFS_PRIMARIES_BT709], sizeof table[0]);
}

/* ---- transfer functions --------------------------------------------- */

/* BT.709 / BT.2020 OETF, unrounded (see the top of the file). */
#define BT709_ALPHA 1.09929682680944
#define BT709_BETA 0.018053968510807
/* IEC 61966-2-1: where the straight line and the power curve cross. */
#define SRGB_LIN_CUT 0.003130668442500549
#define SRGB_CODE_CUT (12.92 * SRGB_LIN_CUT)
/* ARRI LogC3, EI 800; F is derived (see the top of the file). */
#define LOGC_CUT 0.010591
#define LOGC_A 5.555556
#define LOGC_B 0.052272
#define LOGC_C 0.247190
#define LOGC_D 0.385537
#define LOGC_E 5.367655
#define LOGC_F 0.09280874982789486
/* Sony S-Log3, on the 10-bit full-scale code 0..1023. */
#define SLOG3_CODE_CUT 171.2102946929
#define SLOG3_LIN_CUT 0.01125

double pfs_transfer_to_linear(enum pfs_transfer t, double code)
{
    double a = fabs(code), l;
    switch (t) {
    case PFS_TRANSFER_REC709:
        l = a < 4.5 * BT709_BETA ? a / 4.5
                                 : pow((a + (BT709_ALPHA - 1.0)) / BT709_ALPHA, 1.0 / 0.45);
        return copysign(l, code);
    case PFS_TRANSFER_BT1886: return copysign(pow(a, 2.4), code);
    case PFS_TRANSFER_SRGB:
        l = a < SRGB_CODE_CUT ? a / 12.92 : pow((a + 0.055) / 1.055, 2.4);
        return copysign(l, code);
    case PFS_TRANSFER_LINEAR: return code;
    case PFS_TRANSFER_GAMMA22: return copysign(pow(a, 2.2), code);
    case PFS_TRANSFER_GAMMA28: return copysign(pow(a, 2.8), code);
    case PFS_TRANSFER_LOGC3:
        return code > LOGC_E * LOGC_CUT + LOGC_F
                   ? (pow(10.0, (code - LOGC_D) / LOGC_C) - LOGC_B) / LOGC_A
                   : (code - LOGC_F) / LOGC_E;
    case PFS_TRANSFER_SLOG3:
        return code >= SLOG3_CODE_CUT / 1023.0
                   ? pow(10.0, (code * 1023.0 - 420.0) / 261.5) * (0.18 + 0.01) - 0.01
                   : (code * 1023.0 - 95.0) * SLOG3_LIN_CUT / (SLOG3_CODE_CUT - 95.0);
    case PFS_TRANSFER_COUNT: break;
    }
    return NAN;
}

double pfs_transfer_from_linear(enum pfs_transfer t, double linear)
{
    double a = fabs(linear), v;
    switch (t) {
    case PFS_TRANSFER_REC709:
        v = a < BT709_BETA ? 4.5 * a : BT709_ALPHA * pow(a, 0.45) - (BT709_ALPHA - 1.0);
        return copysign(v, linear);
    case PFS_TRANSFER_BT1886: return copysign(pow(a, 1.0 / 2.4), linear);
    case PFS_TRANSFER_SRGB:
        v = a < SRGB_LIN_CUT ? 12.92 * a : 1.055 * pow(a, 1.0 / 2.4) - 0.055;
        return copysign(v, linear);
    case PFS_TRANSFER_LINEAR: return linear;
    case PFS_TRANSFER_GAMMA22: return copysign(pow(a, 1.0 / 2.2), linear);
    case PFS_TRANSFER_GAMMA28: return copysign(pow(a, 1.0 / 2.8), linear);
    case PFS_TRANSFER_LOGC3:
        return linear > LOGC_CUT ? LOGC_C * log10(LOGC_A * linear + LOGC_B) + LOGC_D
                                 : LOGC_E * linear + LOGC_F;
    case PFS_TRANSFER_SLOG3:
        return linear >= SLOG3_LIN_CUT
                   ? (420.0 + log10((linear + 0.01) / (0.18 + 0.01)) * 261.5) / 1023.0
                   : (linear * (SLOG3_CODE_CUT - 95.0) / SLOG3_LIN_CUT + 95.0) / 1023.0;
    case PFS_TRANSFER_COUNT: break;
    }
    return NAN;
}

/* ---- the tabulated curves ------------------------------------------- */

/* Each curve is tabulated every h code values from a knot, the code where
 * its formula changes, so that no interval straddles a change of slope
 * (S-Log3's toe meets its log piece with a 27 % change, which would cost
 * 3e-5 inside an interval); the sRGB spacing divides its cut 331 times
 * for the same reason. Odd curves are tabulated for |code| only. A pure
 * power has no straight toe and its relative curvature grows without
 * bound towards black, so its table starts at 1/8 and below that it is
 * evaluated exactly. */
struct grid {
    bool odd;
    double lo, knot, h; /* the table covers [lo, TABLE_HI) */
};

#define TABLE_HI 2.0

static const struct grid grids[PFS_TRANSFER_COUNT] = {
    [PFS_TRANSFER_REC709] = {true, 0.0, 0.0, 0x1p-13},
    [PFS_TRANSFER_BT1886] = {true, 0.125, 0.125, 0x1p-13},
    [PFS_TRANSFER_SRGB] = {true, 0.0, 0.0, SRGB_CODE_CUT / 331.0},
    [PFS_TRANSFER_LINEAR] = {true, 0.0, 0.0, 0x1p-13},
    [PFS_TRANSFER_GAMMA22] = {true, 0.125, 0.125, 0x1p-13},
    [PFS_TRANSFER_GAMMA28] = {true, 0.125, 0.125, 0x1p-13},
    [PFS_TRANSFER_LOGC3] = {false, -0.5, LOGC_E * LOGC_CUT + LOGC_F, 0x1p-13},
    [PFS_TRANSFER_SLOG3] = {false, -0.5, SLOG3_CODE_CUT / 1023.0, 0x1p-13},
};

struct lut {
    enum pfs_transfer t;
    uint64_t abs_mask;    /* clears the sign bit for odd curves */
    uint64_t sign_mask;   /* the sign bit for odd curves, else 0 */
    double lo, inv_h;     /* code of point 0, 1 / spacing */
    double mid, half;     /* middle and half width of the accepted x, in intervals */
    double v[][2];        /* value at each point, and the step to the next */
};

static uint64_t double_bits(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static double bits_double(uint64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static struct lut *lut_build(enum pfs_transfer t)
{
    const struct grid *g = &grids[t];
    /* Points are counted from the knot, so that it is one exactly. */
    int below = (int)ceil((g->knot - g->lo) / g->h - 1e-9);
    int n = below + (int)ceil((TABLE_HI - g->knot) / g->h);
    struct lut *l = malloc(sizeof *l + (size_t)n * sizeof l->v[0]);
    if (!l)
        return NULL;
    l->t = t;
    l->sign_mask = g->odd ? UINT64_C(1) << 63 : 0;
    l->abs_mask = ~l->sign_mask;
    l->lo = g->knot - below * g->h;
    l->inv_h = 1.0 / g->h;
    /* Accepts x in [0, n), and a hair below 0 so that a code equal to lo
     * (0 for most odd curves: black) is not taken for an outsider. */
    l->mid = (n - 1e-6) / 2.0;
    l->half = (n + 1e-6) / 2.0;
    double prev = pfs_transfer_to_linear(t, l->lo);
    for (int i = 0; i < n; i++) {
        double next = pfs_transfer_to_linear(t, g->knot + (i + 1 - below) * g->h);
        l->v[i][0] = prev;
        l->v[i][1] = next - prev;
        prev = next;
    }
    return l;
}

/* Built on first use and kept for the life of the process; threads that
 * race build one each and all but the first free theirs. */
static _Atomic(struct lut *) luts[PFS_TRANSFER_COUNT];

static const struct lut *lut_get(enum pfs_transfer t)
{
    struct lut *l = atomic_load_explicit(&luts[t], memory_order_acquire);
    if (l)
        return l;
    struct lut *built = lut_build(t);
    if (!built)
        return NULL;
    if (atomic_compare_exchange_strong_explicit(&luts[t], &l, built, memory_order_acq_rel,
                                                memory_order_acquire))
        return built;
    free(built);
    return l;
}

static inline double lut_eval(const struct lut *l, double code)
{
    uint64_t cb = double_bits(code);
    double x = (bits_double(cb & l->abs_mask) - l->lo) * l->inv_h;
    /* One test for both ends; false for NaN too. */
    if (__builtin_expect(!(fabs(x - l->mid) < l->half), 0))
        return pfs_transfer_to_linear(l->t, code);
    int i = (int)x;
    double r = l->v[i][0] + (x - i) * l->v[i][1];
    /* Odd curves: r was looked up for |code| and is not negative. */
    return bits_double(double_bits(r) | (cb & l->sign_mask));
}

/* ---- pixel formats -------------------------------------------------- */

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define NATIVE_BE AV_PIX_FMT_FLAG_BE
#else
#define NATIVE_BE 0
#endif

enum fmt_class { CLASS_GREY, CLASS_YUV, CLASS_RGB };

static enum fmt_class fmt_class(const AVPixFmtDescriptor *d)
{
    if (d->flags & AV_PIX_FMT_FLAG_RGB)
        return CLASS_RGB;
    return d->nb_components < 3 ? CLASS_GREY : CLASS_YUV;
}

static int fmt_depth(const AVPixFmtDescriptor *d)
{
    int depth = 0;
    for (int i = 0; i < d->nb_components && i < 3; i++)
        depth = d->comp[i].depth > depth ? d->comp[i].depth : depth;
    return depth;
}

/* Read directly: every colour component alone in its own plane, one 8-bit
 * or one native 16-bit word per sample, no shifts, 8 to 16 bits. */
static bool fmt_direct(const AVPixFmtDescriptor *d)
{
    if (d->flags & (AV_PIX_FMT_FLAG_PAL | AV_PIX_FMT_FLAG_BITSTREAM | AV_PIX_FMT_FLAG_HWACCEL |
                    AV_PIX_FMT_FLAG_BAYER | AV_PIX_FMT_FLAG_FLOAT))
        return false;
    int n = fmt_class(d) == CLASS_GREY ? 1 : 3;
    if (n == 1 ? d->nb_components != 1 : !(d->flags & AV_PIX_FMT_FLAG_PLANAR))
        return false;
    int depth = d->comp[0].depth, bytes = depth > 8 ? 2 : 1;
    if (depth < 8 || depth > 16 || (bytes == 2 && (d->flags & AV_PIX_FMT_FLAG_BE) != NATIVE_BE))
        return false;
    for (int i = 0; i < n; i++) {
        const AVComponentDescriptor *c = &d->comp[i];
        if (c->depth != depth || c->step != bytes || c->offset || c->shift)
            return false;
        for (int j = 0; j < i; j++)
            if (d->comp[j].plane == c->plane)
                return false;
    }
    if (d->log2_chroma_w > 2 || d->log2_chroma_h > 2)
        return false;
    return fmt_class(d) != CLASS_RGB || (d->log2_chroma_w == 0 && d->log2_chroma_h == 0);
}

/* The planar format libswscale repacks d into: same class and subsampling,
 * the least depth not below d's, no alpha; never a "yuvj" format, which
 * would make libswscale expand the range. */
static enum AVPixelFormat repack_target(const AVPixFmtDescriptor *d)
{
    enum AVPixelFormat best = AV_PIX_FMT_NONE;
    int best_depth = 99, depth = fmt_depth(d);
    for (const AVPixFmtDescriptor *c = av_pix_fmt_desc_next(NULL); c;
         c = av_pix_fmt_desc_next(c)) {
        if (!fmt_direct(c) || fmt_class(c) != fmt_class(d) || (c->flags & AV_PIX_FMT_FLAG_ALPHA) ||
            c->log2_chroma_w != d->log2_chroma_w || c->log2_chroma_h != d->log2_chroma_h ||
            strncmp(c->name, "yuvj", 4) == 0)
            continue;
        int cd = c->comp[0].depth;
        if (cd >= depth && cd < best_depth) {
            best = av_pix_fmt_desc_get_id(c);
            best_depth = cd;
        }
    }
    return best;
}

static int repack(const AVFrame *in, const AVPixFmtDescriptor *d, AVFrame **out, pfs_error *err)
{
    enum AVPixelFormat target = repack_target(d);
    if (target == AV_PIX_FMT_NONE || !sws_isSupportedInput(in->format) ||
        !sws_isSupportedOutput(target))
        return pfs_error_set(err, EINVAL,
                             "pixel format %s has no lossless planar equivalent that "
                             "platefs can read", d->name);
    AVFrame *f = av_frame_alloc();
    if (!f)
        return pfs_error_set(err, ENOMEM, "out of memory repacking a %s picture", d->name);
    f->format = target;
    f->width = in->width;
    f->height = in->height;
    f->chroma_location = in->chroma_location;
    struct SwsContext *sws = NULL;
    int rc = av_frame_get_buffer(f, 0);
    if (rc == 0) {
        sws = sws_getContext(in->width, in->height, in->format, in->width, in->height, target,
                             SWS_POINT | SWS_ACCURATE_RND | SWS_BITEXACT, NULL, NULL, NULL);
        rc = sws ? sws_scale(sws, (const uint8_t *const *)in->data, in->linesize, 0, in->height,
                             f->data, f->linesize)
                 : -1;
        rc = rc == in->height ? 0 : -1;
    }
    sws_freeContext(sws);
    if (rc) {
        av_frame_free(&f);
        return pfs_error_set(err, EINVAL, "libswscale could not repack a %dx%d %s picture as %s",
                             in->width, in->height, d->name, av_get_pix_fmt_name(target));
    }
    *out = f;
    return 0;
}

/* ---- the conversion ------------------------------------------------- */

/* Luma coefficients Kr, Kb of each Y'CbCr matrix. */
static const double matrix_k[PFS_MATRIX_COUNT][2] = {
    [PFS_MATRIX_BT709] = {0.2126, 0.0722},  [PFS_MATRIX_BT601] = {0.299, 0.114},
    [PFS_MATRIX_BT2020] = {0.2627, 0.0593}, [PFS_MATRIX_SMPTE240M] = {0.212, 0.087},
    [PFS_MATRIX_FCC] = {0.30, 0.11},
};

/* One plane: where its samples are, and value = (code - off) * scale. */
struct plane {
    const uint8_t *data;
    int linesize;
    int bytes; /* per sample: 1, or 2 in native byte order */
    double off, scale;
};

static void load_row(const struct plane *p, int row, int n, double *out)
{
    const uint8_t *src = p->data + (ptrdiff_t)row * p->linesize;
    if (p->bytes == 1) {
        for (int i = 0; i < n; i++)
            out[i] = (src[i] - p->off) * p->scale;
    } else {
        const uint16_t *s16 = (const uint16_t *)src;
        for (int i = 0; i < n; i++)
            out[i] = (s16[i] - p->off) * p->scale;
    }
}

/* The normalised rows of a chroma plane, two kept: consecutive output
 * rows read the same pair, and the pair's rows differ in parity. */
struct row_cache {
    struct plane p;
    int width, height;
    int tag[2];
    double *row[2];
};

static const double *cached_row(struct row_cache *c, int k)
{
    k = k < 0 ? 0 : k >= c->height ? c->height - 1 : k; /* clamp at the edges */
    if (c->tag[k & 1] != k) {
        load_row(&c->p, k, c->width, c->row[k & 1]);
        c->tag[k & 1] = k;
    }
    return c->row[k & 1];
}

/* Siting as a fraction of the subsampling step: 0 co-sited (left, top),
 * 1/2 centred, 1 bottom. */
static void siting(enum AVChromaLocation loc, double *ph, double *pv)
{
    switch (loc) {
    case AVCHROMA_LOC_CENTER: *ph = 0.5; *pv = 0.5; break;
    case AVCHROMA_LOC_TOPLEFT: *ph = 0.0; *pv = 0.0; break;
    case AVCHROMA_LOC_TOP: *ph = 0.5; *pv = 0.0; break;
    case AVCHROMA_LOC_BOTTOMLEFT: *ph = 0.0; *pv = 1.0; break;
    case AVCHROMA_LOC_BOTTOM: *ph = 0.5; *pv = 1.0; break;
    default: *ph = 0.0; *pv = 0.5; break; /* left, and the unspecified default */
    }
}

/* Pixel i of an axis subsampled by 2^log2_sub and sited at p reads chroma
 * samples j and j + 1, j = floor(u), weight u - j for the second, where
 * u = (i - p (s - 1)) / s. The pattern repeats every s pixels, so only
 * the offset of j from i / s and the weight of each phase are kept. */
static void phases(int log2_sub, double p, int off[4], double wt[4])
{
    int s = 1 << log2_sub;
    for (int k = 0; k < s; k++) {
        double u = (k - p * (s - 1)) / s, j = floor(u);
        off[k] = (int)j;
        wt[k] = u - j;
    }
}

static int convert(const AVFrame *frame, const AVPixFmtDescriptor *d, const struct pfs_colour *c,
                   const struct lut *lut, struct pfs_image *img, pfs_error *err)
{
    int w = frame->width, h = frame->height;
    enum fmt_class cls = fmt_class(d);
    int depth = d->comp[0].depth, bytes = depth > 8 ? 2 : 1;
    double k = ldexp(1.0, depth - 8), max = ldexp(1.0, depth) - 1.0;
    double yoff, yscale, coff, cscale;
    if (c->range == PFS_RANGE_LIMITED) {
        yoff = 16.0 * k, yscale = 1.0 / (219.0 * k);
        coff = 128.0 * k, cscale = 1.0 / (224.0 * k);
    } else {
        yoff = 0.0, yscale = 1.0 / max;
        coff = ldexp(1.0, depth - 1), cscale = 1.0 / max;
    }

    /* Three roles: plane A is Y' (or G', or grey), planes B and C are Cb
     * and Cr (or B' and R'). An RGB pixel format is G, B, R whatever the
     * matrix says; so are the planes of a Y'CbCr format under matrix rgb.
     * R'G'B' = (ka A, A, ka A) + M (B, C), applied to B and C at chroma
     * resolution, before the horizontal interpolation, which is linear. */
    bool rgb = cls == CLASS_RGB || c->matrix == PFS_MATRIX_RGB;
    int ia = cls == CLASS_RGB ? 1 : 0, ib = cls == CLASS_RGB ? 2 : 1, ic = cls == CLASS_RGB ? 0 : 2;
    if (rgb)
        coff = yoff, cscale = yscale;
    double ka = 1.0, m[3][2] = {{0.0, 1.0}, {0.0, 0.0}, {1.0, 0.0}};
    if (rgb) {
        ka = 0.0;
    } else {
        double kr = matrix_k[c->matrix][0], kb = matrix_k[c->matrix][1], kg = 1.0 - kr - kb;
        m[0][0] = 0.0, m[0][1] = 2.0 * (1.0 - kr);
        m[1][0] = -2.0 * kb * (1.0 - kb) / kg, m[1][1] = -2.0 * kr * (1.0 - kr) / kg;
        m[2][0] = 2.0 * (1.0 - kb), m[2][1] = 0.0;
    }
    const uint8_t *adata = frame->data[d->comp[ia].plane];
    int alinesize = frame->linesize[d->comp[ia].plane];

    int sw = d->log2_chroma_w, sh = d->log2_chroma_h;
    int cw = AV_CEIL_RSHIFT(w, sw), ch = AV_CEIL_RSHIFT(h, sh);
    double ph, pv;
    siting(frame->chroma_location, &ph, &pv);
    int hoff[4], voff[4];
    double hwt[4], vwt[4];
    phases(sw, ph, hoff, hwt);
    phases(sh, pv, voff, vwt);

    /* Scratch: four cached chroma rows, and the three matrixed chroma
     * rows with one sample of edge padding on each side. */
    size_t pad = (size_t)cw + 2u;
    double *buf = malloc((4u * (size_t)cw + 3u * pad) * sizeof *buf);
    if (!buf)
        return pfs_error_set(err, ENOMEM, "out of memory converting a %dx%d picture", w, h);
    struct row_cache cb = {{0}, cw, ch, {-1, -1}, {buf, buf + cw}};
    struct row_cache cr = {{0}, cw, ch, {-1, -1}, {buf + 2 * cw, buf + 3 * cw}};
    double *dr = buf + 4 * cw + 1, *dg = dr + pad, *db = dg + pad;
    if (cls != CLASS_GREY) {
        const AVComponentDescriptor *cbd = &d->comp[ib], *crd = &d->comp[ic];
        cb.p = (struct plane){frame->data[cbd->plane], frame->linesize[cbd->plane], bytes, coff,
                              cscale};
        cr.p = (struct plane){frame->data[crd->plane], frame->linesize[crd->plane], bytes, coff,
                              cscale};
    }

    for (int y = 0; y < h; y++) {
        float *out = img->px + (size_t)y * (size_t)w * 4u;
        const uint8_t *a8 = adata + (ptrdiff_t)y * alinesize;
        const uint16_t *a16 = (const uint16_t *)a8;
        if (cls == CLASS_GREY) {
            for (int x = 0; x < w; x++) {
                double a = ((bytes == 1 ? a8[x] : a16[x]) - yoff) * yscale;
                float v = (float)lut_eval(lut, a);
                out[4 * x + 0] = out[4 * x + 1] = out[4 * x + 2] = v;
                out[4 * x + 3] = 1.0f;
            }
            continue;
        }

        /* Vertical interpolation and matrix, on the chroma grid. */
        int ky = (y >> sh) + voff[y & ((1 << sh) - 1)];
        double fv = vwt[y & ((1 << sh) - 1)];
        const double *b0 = cached_row(&cb, ky), *b1 = cached_row(&cb, ky + 1);
        const double *c0 = cached_row(&cr, ky), *c1 = cached_row(&cr, ky + 1);
        for (int j = 0; j < cw; j++) {
            double b = b0[j] + fv * (b1[j] - b0[j]);
            double cc = c0[j] + fv * (c1[j] - c0[j]);
            dr[j] = m[0][0] * b + m[0][1] * cc;
            dg[j] = m[1][0] * b + m[1][1] * cc;
            db[j] = m[2][0] * b + m[2][1] * cc;
        }
        dr[-1] = dr[0], dg[-1] = dg[0], db[-1] = db[0];
        dr[cw] = dr[cw - 1], dg[cw] = dg[cw - 1], db[cw] = db[cw - 1];

        /* Horizontal interpolation at luma resolution, then the curve. */
        int hmask = (1 << sw) - 1;
        for (int x = 0; x < w; x++) {
            double a = ((bytes == 1 ? a8[x] : a16[x]) - yoff) * yscale;
            int j = (x >> sw) + hoff[x & hmask];
            double f = hwt[x & hmask];
            double r = ka * a + dr[j] + f * (dr[j + 1] - dr[j]);
            double g = a + dg[j] + f * (dg[j + 1] - dg[j]);
            double b = ka * a + db[j] + f * (db[j + 1] - db[j]);
            out[4 * x + 0] = (float)lut_eval(lut, r);
            out[4 * x + 1] = (float)lut_eval(lut, g);
            out[4 * x + 2] = (float)lut_eval(lut, b);
            out[4 * x + 3] = 1.0f;
        }
    }
    free(buf);
    return 0;
}

int pfs_colour_to_linear(const struct AVFrame *frame, const struct pfs_colour *c,
                         struct pfs_image *img, pfs_error *err)
{
    if ((unsigned)c->matrix >= PFS_MATRIX_COUNT || (unsigned)c->range >= PFS_RANGE_COUNT ||
        (unsigned)c->transfer >= PFS_TRANSFER_COUNT ||
        (unsigned)c->primaries >= PFS_PRIMARIES_COUNT)
        return pfs_error_set(err, EINVAL, "invalid colour description (matrix %d, range %d, "
                             "transfer %d, primaries %d)", (int)c->matrix, (int)c->range,
                             (int)c->transfer, (int)c->primaries);
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(frame->format);
    if (!d)
        return pfs_error_set(err, EINVAL, "decoded picture has no pixel format (%d)",
                             frame->format);
    if (frame->width <= 0 || frame->height <= 0)
        return pfs_error_set(err, EINVAL, "decoded %s picture has no size (%dx%d)", d->name,
                             frame->width, frame->height);
    if (d->flags & (AV_PIX_FMT_FLAG_HWACCEL | AV_PIX_FMT_FLAG_BAYER | AV_PIX_FMT_FLAG_FLOAT |
                    AV_PIX_FMT_FLAG_PAL) ||
        strncmp(d->name, "xyz", 3) == 0)
        return pfs_error_set(err, EINVAL,
                             "pixel format %s is not a video picture platefs can convert "
                             "(it reads Y'CbCr, RGB and grey; not %s)", d->name,
                             d->flags & AV_PIX_FMT_FLAG_HWACCEL ? "hardware frames"
                             : d->flags & AV_PIX_FMT_FLAG_BAYER ? "raw sensor data"
                             : d->flags & AV_PIX_FMT_FLAG_FLOAT ? "floating-point pictures"
                             : d->flags & AV_PIX_FMT_FLAG_PAL   ? "palette pictures"
                                                                : "DCI X'Y'Z' pictures");

    const struct lut *lut = lut_get(c->transfer);
    if (!lut)
        return pfs_error_set(err, ENOMEM, "out of memory tabulating the %s curve",
                             pfs_transfer_name(c->transfer));

    AVFrame *packed = NULL;
    const AVFrame *src = frame;
    if (!fmt_direct(d)) {
        int rc = repack(frame, d, &packed, err);
        if (rc)
            return rc;
        src = packed;
        d = av_pix_fmt_desc_get(packed->format);
    }

    struct pfs_image out = {0};
    int rc = pfs_image_alloc(&out, src->width, src->height);
    if (rc) {
        av_frame_free(&packed);
        return pfs_error_set(err, rc, "cannot allocate a %dx%d picture", src->width,
                             src->height);
    }
    out.origin_x = out.origin_y = 0;
    out.display = (struct pfs_rect){0, 0, src->width - 1, src->height - 1};
    rc = convert(src, d, c, lut, &out, err);
    av_frame_free(&packed);
    if (rc) {
        pfs_image_free(&out);
        return rc;
    }
    *img = out;
    return 0;
}
