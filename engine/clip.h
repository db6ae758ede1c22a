/*
 * clip.h - camera clips (MOV, MP4, MXF, MKV, ...) read through FFmpeg.
 *
 * A clip's picture is described by a packet index, built once by demuxing
 * every packet of its first video stream without decoding: its frames in
 * presentation order with their timestamps, which packets start a decode
 * (keyframes), and the stream's picture and colour metadata. Frame i of a
 * clip is the i-th video packet in presentation order; packets the container
 * marks as discarded (edit lists) feed the decoder but are not frames. The
 * count is never duration x rate. Audio, timecode and data streams are
 * ignored. The index serialises to a versioned, byte-order-fixed blob that
 * the engine keeps in the cache store, so a later listing of the clip opens
 * no media.
 *
 * Decoding frame i is exact: the decoder starts at the last keyframe in
 * decode order whose presentation time is not after frame i's, feeds packets
 * in decode order and returns the picture whose timestamp is frame i's. So
 * frame i read after a seek equals frame i decoded from the start, open GOPs
 * included (the leading pictures of a later keyframe are decoded from the
 * GOP before it).
 *
 * A decoder pool keeps decoders open per clip, each positioned where it
 * stopped: reading i, i+1, i+2 costs one decode each, not a seek. A request
 * that an open decoder will reach without a new keyframe (it is busy on an
 * earlier frame of the same GOP run) waits for that decoder instead of
 * opening another. The pool is bounded by a number of open decoders; idle
 * ones are closed least recently used first.
 *
 * Damage: a clip whose container cannot be opened fails the index build
 * (EINVAL, naming the clip and why); a truncated clip indexes the packets
 * that can be read. A frame whose packets are missing or whose picture the
 * decoder reports corrupt fails with EIO naming the clip and the frame;
 * every other frame still decodes.
 *
 * Thread-safe: any thread may decode any clip.
 */
#ifndef PFS_CLIP_H
#define PFS_CLIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "util/error.h"

struct AVFrame;
struct pfs_clip_index;
struct pfs_clip_decoders;

/* File names platefs treats as clips: .mov .mp4 .m4v .mxf .mkv .avi .mts
 * .m2ts .webm (any case). Decided by name alone: listing opens nothing. */
bool pfs_clip_name(const char *name);

struct pfs_clip_info {
    int width, height;     /* decoded picture size */
    int sar_num, sar_den;  /* sample (pixel) aspect ratio; 1:1 when unknown */
    int rate_num, rate_den; /* nominal frame rate (r_frame_rate, else avg_frame_rate) */
    int tb_num, tb_den;    /* time base of the frame timestamps */
    int64_t nframes;
    bool variable_rate;    /* frame durations differ */
    /* As the stream declares them: FFmpeg's AVColorSpace, AVColorRange,
     * AVColorPrimaries, AVColorTransferCharacteristic, AVChromaLocation. */
    int matrix, range, primaries, transfer, chroma_location;
    char codec[32];        /* FFmpeg decoder name: "h264", "prores", ... */
    char pix_fmt[32];      /* "yuv420p10le" */
    char timecode[32];     /* start timecode "HH:MM:SS:FF" (";" before FF when
                            * drop-frame); "" when the clip carries none */
    /* The source this index describes, as fstat saw it when building. */
    int64_t src_size;
    struct timespec src_mtime;
};

/* Demuxes path once and builds its index. EINVAL: not a clip FFmpeg can
 * read, or no decodable video stream (message names the file and why). */
int pfs_clip_index_build(const char *path, struct pfs_clip_index **out, pfs_error *err);

/* Serialised form for the cache store (malloc'd into *blob). */
int pfs_clip_index_save(const struct pfs_clip_index *idx, uint8_t **blob, size_t *len,
                        pfs_error *err);
/* Parses a blob made by pfs_clip_index_save. EINVAL for a blob of another
 * format version or a damaged one: the caller rebuilds. path is the clip the
 * index belongs to (used by decoding and messages). */
int pfs_clip_index_load(const char *path, const void *blob, size_t len,
                        struct pfs_clip_index **out, pfs_error *err);
void pfs_clip_index_free(struct pfs_clip_index *idx);

const struct pfs_clip_info *pfs_clip_index_info(const struct pfs_clip_index *idx);
/* Presentation timestamp of frame i, in the info's time base. */
int64_t pfs_clip_frame_pts(const struct pfs_clip_index *idx, int64_t i);

/* max_open: decoders kept open across all clips (0: 8). */
int pfs_clip_decoders_new(int max_open, struct pfs_clip_decoders **out, pfs_error *err);
/* Closes every decoder; no decode may be running. */
void pfs_clip_decoders_free(struct pfs_clip_decoders *d);

/* Decodes frame i (0-based) of idx's clip. *out receives a new reference
 * (free with av_frame_free). The clip is identified by path, size and mtime
 * from the index, so a decoder opened on an older version of the file is
 * never reused. EIO for a frame that cannot be decoded, ERANGE for i outside
 * the clip. */
int pfs_clip_decode(struct pfs_clip_decoders *d, const struct pfs_clip_index *idx, int64_t i,
                    struct AVFrame **out, pfs_error *err);

struct pfs_clip_decoder_stats {
    uint64_t decodes;   /* frames returned */
    uint64_t seeks;     /* decoders (re)positioned at a keyframe */
    uint64_t opens;     /* decoders opened */
    uint64_t pictures;  /* pictures decoded, the discarded ones included */
};
void pfs_clip_decoder_stats(struct pfs_clip_decoders *d, struct pfs_clip_decoder_stats *out);

#endif
