/*
 * colour.h - decoded video pictures to scene-linear RGBA.
 *
 * A video picture is Y'CbCr (or R'G'B') code values. Turning it into the
 * scene-linear float RGB every op works on takes four facts about the
 * encoding: the matrix (Y'CbCr -> R'G'B'), the range (limited "video" or
 * full), the transfer function (R'G'B' -> linear light) and the primaries
 * (what linear R, G and B mean). A stream declares them in its metadata;
 * camera log encodings usually are not declared, so a rule file may name
 * them (docs/clips.md).
 *
 * The conversion (pfs_colour_to_linear): code values are normalised by the
 * range (limited: Y' 16..235, C 16..240 scaled by 2^(bits-8); full: 0..2^bits-1),
 * chroma is upsampled bilinearly honouring the chroma siting, the matrix gives
 * R'G'B', and the inverse transfer gives linear light. Nothing is clipped:
 * super-whites and sub-blacks stay above 1 and below 0 in R'G'B' and map
 * through the transfer's natural extension. Primaries are not converted;
 * they are carried as the EXR chromaticities attribute.
 *
 * Depends on libavutil only (pixel format descriptors, AVFrame).
 */
#ifndef PFS_COLOUR_H
#define PFS_COLOUR_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/image.h"
#include "util/error.h"

struct AVFrame;

enum pfs_matrix {
    PFS_MATRIX_BT709,
    PFS_MATRIX_BT601,    /* BT.470BG, SMPTE 170M */
    PFS_MATRIX_BT2020,   /* non-constant luminance */
    PFS_MATRIX_SMPTE240M,
    PFS_MATRIX_FCC,
    PFS_MATRIX_RGB,      /* the planes already are G, B, R */
    PFS_MATRIX_COUNT
};

enum pfs_range { PFS_RANGE_LIMITED, PFS_RANGE_FULL, PFS_RANGE_COUNT };

enum pfs_transfer {
    PFS_TRANSFER_REC709,  /* inverse BT.709 OETF (also BT.601, BT.2020): scene light */
    PFS_TRANSFER_BT1886,  /* BT.1886 EOTF, pure 2.4 power: display light */
    PFS_TRANSFER_SRGB,    /* IEC 61966-2-1 */
    PFS_TRANSFER_LINEAR,
    PFS_TRANSFER_GAMMA22,
    PFS_TRANSFER_GAMMA28,
    PFS_TRANSFER_LOGC3,   /* ARRI LogC3, EI 800 */
    PFS_TRANSFER_SLOG3,   /* Sony S-Log3 */
    PFS_TRANSFER_COUNT
};

enum pfs_primaries {
    PFS_PRIMARIES_BT709,
    PFS_PRIMARIES_BT601_625, /* BT.470BG */
    PFS_PRIMARIES_BT601_525, /* SMPTE 170M / 240M */
    PFS_PRIMARIES_BT2020,
    PFS_PRIMARIES_P3D65,
    PFS_PRIMARIES_P3DCI,
    PFS_PRIMARIES_AWG3,      /* ARRI Wide Gamut 3 */
    PFS_PRIMARIES_SGAMUT3,
    PFS_PRIMARIES_SGAMUT3_CINE,
    PFS_PRIMARIES_COUNT
};

struct pfs_colour {
    enum pfs_matrix matrix;
    enum pfs_range range;
    enum pfs_transfer transfer;
    enum pfs_primaries primaries;
};

/* Names as rule files and messages write them: matrix "bt709" "bt601"
 * "bt2020" "smpte240m" "fcc" "rgb"; range "limited" "full"; transfer
 * "rec709" "bt1886" "srgb" "linear" "gamma22" "gamma28" "logc3" "slog3";
 * primaries "bt709" "bt601-625" "bt601-525" "bt2020" "p3d65" "p3dci" "awg3"
 * "sgamut3" "sgamut3cine". Parsers return -1 for an unknown name. */
const char *pfs_matrix_name(enum pfs_matrix m);
const char *pfs_range_name(enum pfs_range r);
const char *pfs_transfer_name(enum pfs_transfer t);
const char *pfs_primaries_name(enum pfs_primaries p);
int pfs_matrix_parse(const char *name);
int pfs_range_parse(const char *name);
int pfs_transfer_parse(const char *name);
int pfs_primaries_parse(const char *name);

/*
 * The colour a stream declares, from FFmpeg's enum values (AVColorSpace,
 * AVColorRange, AVColorPrimaries, AVColorTransferCharacteristic) and the
 * pixel format name (RGB formats have no matrix; "yuvj" formats are full
 * range). Unspecified fields take the documented defaults: range limited
 * (full for yuvj and RGB formats), matrix BT.709 for pictures 1280 wide or
 * more and BT.601 below, transfer rec709, primaries following the matrix.
 * ENOTSUP, with a message naming the characteristic, for encodings this
 * module cannot linearise (PQ, HLG, log curves FFmpeg names): a rule must
 * then name the transfer.
 */
int pfs_colour_from_stream(int matrix, int range, int primaries, int transfer,
                           const char *pix_fmt, int width, struct pfs_colour *out,
                           pfs_error *err);

/* CIE xy of red, green, blue and white: the EXR chromaticities attribute. */
void pfs_primaries_chromaticities(enum pfs_primaries p, float xy[8]);

/* The transfer function and its inverse on one value (normalised code value
 * <-> linear light), extended beyond [0, 1] as the conversion uses them. */
double pfs_transfer_to_linear(enum pfs_transfer t, double code);
double pfs_transfer_from_linear(enum pfs_transfer t, double linear);

/*
 * Converts a decoded picture to scene-linear RGBA (A = 1) in img, allocated
 * here at the picture's size with origin (0, 0) and a display window equal
 * to the picture. Planar Y'CbCr of 8 to 16 bits with any chroma
 * subsampling, planar RGB (GBR) and grey are converted directly; any other
 * pixel format is first repacked losslessly by libswscale. EINVAL names a
 * pixel format that cannot be converted.
 */
int pfs_colour_to_linear(const struct AVFrame *frame, const struct pfs_colour *c,
                         struct pfs_image *img, pfs_error *err);

#endif
