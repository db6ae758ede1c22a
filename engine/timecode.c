/*
 * timecode.c - SMPTE timecode arithmetic for clip frames; see timecode.h.
 *
 * Parsing and the drop-frame arithmetic are libavutil's (av_timecode_*),
 * the reference every FFmpeg-based tool agrees with; only the EXR packing
 * is ours, because FFmpeg's SMPTE binary form orders the fields differently.
 */
#include "timecode.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>

#include <libavutil/timecode.h>

int pfs_timecode_parse(const char *text, int rate_num, int rate_den,
                       struct pfs_timecode *out, pfs_error *err)
{
    AVRational rate = {rate_num, rate_den};
    AVTimecode tc;
    unsigned hh, mm, ss, ff;
    char sep, end;
    /* Checked here first: libavutil accepts out-of-range fields, and logs
     * its complaints to stderr. */
    bool valid = rate_num > 0 && rate_den > 0 &&
                 sscanf(text, "%2u:%2u:%2u%c%2u%c", &hh, &mm, &ss, &sep, &ff, &end) == 5 &&
                 (sep == ':' || sep == ';' || sep == '.') && hh < 24 && mm < 60 && ss < 60 &&
                 ff < (unsigned)((rate_num + rate_den - 1) / rate_den);
    if (!valid || av_timecode_init_from_string(&tc, rate, text, NULL) < 0)
        return pfs_error_set(err, EINVAL,
                             "timecode \"%s\" at %d/%d frames per second is not a valid "
                             "HH:MM:SS:FF timecode for that rate",
                             text, rate_num, rate_den);
    out->start = tc.start;
    out->fps = (int)tc.fps;
    out->drop = (tc.flags & AV_TIMECODE_FLAG_DROPFRAME) != 0;
    return 0;
}

static uint32_t bcd(int v, int shift)
{
    return (uint32_t)((v / 10) << 4 | (v % 10)) << shift;
}

void pfs_timecode_at(const struct pfs_timecode *tc, int64_t offset, char text[16],
                     uint32_t *exr_time_and_flags)
{
    int64_t fps = tc->fps;
    /* A day has 144 ten-minute blocks; drop-frame blocks are 9 x fps/15
     * frames short. */
    int64_t day = 144 * (fps * 600 - (tc->drop ? 9 * (fps / 15) : 0));
    int64_t n = (tc->start + offset) % day;
    if (n < 0)
        n += day;
    /* Drop-frame skips frame numbers, not frames: the counter is adjusted
     * the way libavutil's own timecode strings are. */
    if (tc->drop)
        n = av_timecode_adjust_ntsc_framenum2((int)n, (int)fps);
    int ff = (int)(n % fps), ss = (int)(n / fps % 60), mm = (int)(n / (fps * 60) % 60),
        hh = (int)(n / (fps * 3600));
    /* Each field is below 100: the text always fits its 12 bytes. */
    snprintf(text, 16, "%02u:%02u:%02u%c%02u", (unsigned)hh % 100u, (unsigned)mm % 100u,
             (unsigned)ss % 100u, tc->drop ? ';' : ':', (unsigned)ff % 100u);
    bool pair = fps > 30;
    int field_frame = pair ? ff / 2 : ff;
    uint32_t packed = bcd(field_frame, 0) | bcd(ss, 8) | bcd(mm, 16) | bcd(hh, 24);
    if (tc->drop)
        packed |= 1u << 6;
    if (pair && (ff & 1))
        packed |= 1u << 15;
    *exr_time_and_flags = packed;
}
