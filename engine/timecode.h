/*
 * timecode.h - SMPTE timecode of clip frames.
 *
 * A clip carries the timecode of its first frame; frame i of the clip has
 * that timecode plus i frames, counted at the timecode's nominal rate (24
 * for 23.976, 30 for 29.97, drop-frame when the start timecode says so with
 * ';'). The frame's timecode goes into the EXR `timeCode` attribute, packed
 * as OpenEXR (and SMPTE ST 12-1) packs it; above 30 frames per second the
 * frame field holds frame pairs and the field bit marks the second frame of
 * a pair, as ST 12-1 does for 50 and 60.
 */
#ifndef PFS_TIMECODE_H
#define PFS_TIMECODE_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct pfs_timecode {
    int64_t start; /* frames from 00:00:00:00 to the start, drop-frame aware */
    int fps;       /* nominal frames per second */
    bool drop;     /* drop-frame counting */
};

/* Parses "HH:MM:SS:FF" (or ';' / '.' before FF for drop-frame) at the clip's
 * rate. EINVAL names the text and what is wrong. */
int pfs_timecode_parse(const char *text, int rate_num, int rate_den,
                       struct pfs_timecode *out, pfs_error *err);

/* Timecode offset frames after the start: text "HH:MM:SS:FF" and the EXR
 * packed form. Wraps at 24 hours, as timecode does. */
void pfs_timecode_at(const struct pfs_timecode *tc, int64_t offset, char text[16],
                     uint32_t *exr_time_and_flags);

#endif
