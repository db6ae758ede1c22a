/*
 * clip.c - camera clips through libavformat/libavcodec: the packet index,
 * exact seeks and the decoder pool (see clip.h for the contract).
 *
 * Identity of a packet. Packets are named by their position in decode order
 * (the order the demuxer returns them) and recognised by their presentation
 * timestamp: a demuxer re-read after a seek gives the same pts for the same
 * packet, while dts is missing for some (Matroska's first packets) and byte
 * positions are not kept by every container. A packet without pts takes its
 * dts, both when indexing and when decoding, which is exact only when
 * pictures are not reordered; a clip whose reordered packets carry no pts
 * is refused rather than guessed at. Two packets with the same pts would
 * make the picture a decoder returns ambiguous, so such a clip is refused
 * too: deterministic, and no camera writes one.
 *
 * Damage. A truncated file ends in a partial packet that the demuxer flags
 * corrupt, then a read error. The index stops before the partial packet, so
 * it holds a prefix of decode order: every frame it lists references only
 * packets inside it and decodes exactly as in the intact file. Decoding
 * never feeds packets beyond the index; there the decoder is drained.
 * Damage inside the indexed part (a file changed in place) shows as a
 * packet whose pts is not the indexed one, a packet the decoder rejects, or
 * a picture it flags corrupt. A rejected packet or corrupt picture taints
 * every picture after it in decode order within the run, because those may
 * be predicted from it without being flagged themselves. A continued run
 * may carry damage from before the wanted frame's keyframe, so a tainted
 * frame is retried once from its keyframe; only damage between the
 * keyframe and the frame fails it with EIO.
 *
 * Positioning. A seek goes to the start keyframe's dts (its pts when the
 * container gives none; Matroska's cues are in pts anyway) with
 * AVSEEK_FLAG_BACKWARD, so the demuxer lands on or before it, and the
 * packets up to the keyframe are read and dropped undecoded. A demuxer that
 * lands after it, or somewhere the index does not know, is sent back to the
 * first packet: always correct, only slower.
 *
 * Continuing. A decoder whose run began at or before frame j's start
 * keyframe, has been fed that keyframe and has not yet output a picture at
 * or after j's pts outputs j exactly as a fresh run would, so it continues
 * instead of seeking. `seeks` counts runs started, whether or not the
 * demuxer had to move: reading N consecutive frames costs one.
 *
 * Opening. avformat_find_stream_info decodes pictures to learn what a
 * header does not say (36 ms on the sample clip); the index needs it for
 * the picture's format, but a decoder needs only the codec, which mov, mxf
 * and mkv headers name, so decoders call it only when the header does not
 * (opening then costs about a millisecond). That makes opening a
 * decoder cheaper than taking an idle one of the same clip away from where
 * it stands: see claim_locked.
 *
 * Threads. Inter-coded video (H.264, HEVC) decodes with frame threads:
 * sequential reading, which the pool funnels through one decoder per clip,
 * took 1.5 instead of 2.0 ms per frame of the sample clip with 2 threads on
 * the 2-core test machine, and the output is bit-exact whatever the count.
 * The count stops at 4: each frame thread delays output by one packet,
 * which every seek pays, and the engine already decodes on one render
 * thread per core. Intra-only codecs (ProRes, DNxHR) use slice threads
 * instead: frame threads would only add that delay to their one-packet
 * seeks (it doubled ProRes random access).
 *
 * Pool. One mutex guards which decoders exist and which are busy; decoding
 * happens outside it, on a claimed decoder whose media state only its
 * holder touches. A busy decoder publishes a promise (where it will at
 * least stand when done), so that a request it will reach without a new
 * keyframe waits for it rather than opening a second decoder that would
 * decode the same pictures again.
 */
#include "clip.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/cpu.h>
#include <libavutil/pixdesc.h>
#include <xxhash.h>

#include "util/log.h"

/* --- the index ----------------------------------------------------------- */

enum { PKT_KEY = 1, PKT_DISCARD = 2, PKT_FLAGS = PKT_KEY | PKT_DISCARD };

/* One video packet; the index keeps them in decode order. */
struct clip_packet {
    int64_t pts;
    int64_t dts;   /* AV_NOPTS_VALUE when the container gives none */
    uint8_t flags; /* PKT_* */
};

struct pfs_clip_index {
    char *path;
    struct pfs_clip_info info;
    int stream; /* the video stream's index in the container */
    struct clip_packet *packets;
    uint32_t npackets;
    /* Derived from packets when built or loaded (index_derive): */
    uint32_t *by_pts; /* every packet's position, by pts */
    uint32_t *frames; /* frame i's packet position */
    uint32_t *keys;   /* keyframe positions, ascending */
    uint32_t nkeys;
};

bool pfs_clip_name(const char *name)
{
    static const char *const exts[] = {"mov", "mp4", "m4v", "mxf", "mkv",
                                       "avi", "mts", "m2ts", "webm"};
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        return false;
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (strcasecmp(dot + 1, exts[i]) == 0)
            return true;
    return false;
}

const struct pfs_clip_info *pfs_clip_index_info(const struct pfs_clip_index *idx)
{
    return &idx->info;
}

static int64_t frame_pts(const struct pfs_clip_index *idx, int64_t i)
{
    return idx->packets[idx->frames[i]].pts;
}

int64_t pfs_clip_frame_pts(const struct pfs_clip_index *idx, int64_t i)
{
    return i >= 0 && i < idx->info.nframes ? frame_pts(idx, i) : AV_NOPTS_VALUE;
}

void pfs_clip_index_free(struct pfs_clip_index *idx)
{
    if (!idx)
        return;
    free(idx->path);
    free(idx->packets);
    free(idx->by_pts);
    free(idx->frames);
    free(idx->keys);
    free(idx);
}

static struct pfs_clip_index *index_new(const char *path)
{
    struct pfs_clip_index *idx = calloc(1, sizeof *idx);
    if (idx && !(idx->path = strdup(path))) {
        free(idx);
        idx = NULL;
    }
    return idx;
}

/* The timestamp a packet is known by (see the file comment). */
static int64_t packet_pts(const AVPacket *pkt)
{
    return pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
}

/* Position of the packet with this pts, or -1. */
static int64_t position_of(const struct pfs_clip_index *idx, int64_t pts)
{
    uint32_t lo = 0, hi = idx->npackets;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (idx->packets[idx->by_pts[mid]].pts < pts)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < idx->npackets && idx->packets[idx->by_pts[lo]].pts == pts)
        return idx->by_pts[lo];
    return -1;
}

/* The packet a decode of the frame at position pos (with pts) starts at: the
 * last keyframe not after it in decode order whose pts is not after its pts
 * (so an open GOP's leading pictures start in the GOP before), else the
 * first packet. */
static uint32_t start_key(const struct pfs_clip_index *idx, uint32_t pos, int64_t pts)
{
    uint32_t lo = 0, hi = idx->nkeys; /* first key after pos */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (idx->keys[mid] <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    while (lo > 0 && idx->packets[idx->keys[lo - 1]].pts > pts)
        lo--;
    return lo > 0 ? idx->keys[lo - 1] : 0;
}

static int by_pts_cmp(const void *a, const void *b, void *arg)
{
    const struct clip_packet *p = arg;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (p[x].pts != p[y].pts)
        return p[x].pts < p[y].pts ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Frame durations differ by more than the rounding of the time base (a
 * Matroska clip at 24 fps in milliseconds alternates 41 and 42). */
static bool rate_varies(const struct pfs_clip_index *idx)
{
    if (idx->info.nframes < 3)
        return false;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t i = 1; i < idx->info.nframes; i++) {
        int64_t d = frame_pts(idx, i) - frame_pts(idx, i - 1);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    return hi - lo > 1;
}

/* Everything that follows from the packets: the frame order, the keyframe
 * list, the frame count and rate variation. Also the checks a loaded blob
 * must pass as much as a fresh build, so both end here. */
static int index_derive(struct pfs_clip_index *idx, pfs_error *err)
{
    const char *path = idx->path;
    uint32_t n = idx->npackets;
    if (n == 0)
        return pfs_error_set(err, EINVAL, "%s: the clip has no video frames", path);
    idx->by_pts = malloc(n * sizeof *idx->by_pts);
    idx->frames = malloc(n * sizeof *idx->frames);
    idx->keys = malloc(n * sizeof *idx->keys);
    if (!idx->by_pts || !idx->frames || !idx->keys)
        return pfs_error_set(err, ENOMEM, "%s: out of memory for the clip index", path);
    for (uint32_t i = 0; i < n; i++)
        idx->by_pts[i] = i;
    qsort_r(idx->by_pts, n, sizeof *idx->by_pts, by_pts_cmp, idx->packets);

    uint32_t nframes = 0;
    idx->nkeys = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct clip_packet *p = &idx->packets[idx->by_pts[i]];
        if (i > 0 && idx->packets[idx->by_pts[i - 1]].pts == p->pts)
            return pfs_error_set(err, EINVAL,
                                 "%s: two video packets carry the same presentation time "
                                 "(%" PRId64 "), so their pictures cannot be told apart",
                                 path, p->pts);
        if (!(p->flags & PKT_DISCARD))
            idx->frames[nframes++] = idx->by_pts[i];
        if (idx->packets[i].flags & PKT_KEY)
            idx->keys[idx->nkeys++] = i;
    }
    if (nframes == 0)
        return pfs_error_set(err, EINVAL,
                             "%s: the clip has no video frames (its edit list hides them all)",
                             path);
    idx->info.nframes = nframes;
    idx->info.variable_rate = rate_varies(idx);
    return 0;
}

/* --- building ------------------------------------------------------------ */

/* The system's errno behind an FFmpeg error (ENOENT, EACCES, ...), EINVAL
 * for FFmpeg's own (the data is not what it should be). */
static int av_errno(int averr)
{
    int e = AVUNERROR(averr);
    return e > 0 && e < 4096 ? e : EINVAL;
}

static const char *av_why(int averr, char buf[AV_ERROR_MAX_STRING_SIZE])
{
    return av_make_error_string(buf, AV_ERROR_MAX_STRING_SIZE, averr);
}

static int open_container(const char *path, AVFormatContext **fmt, pfs_error *err)
{
    char why[AV_ERROR_MAX_STRING_SIZE];
    int r = avformat_open_input(fmt, path, NULL, NULL);
    if (r < 0)
        return pfs_error_set(err, av_errno(r), "%s: not a clip FFmpeg can open: %s", path,
                             av_why(r, why));
    return 0;
}

/* Reads the start of the streams for what the header does not say. */
static int probe_streams(const char *path, AVFormatContext *fmt, pfs_error *err)
{
    char why[AV_ERROR_MAX_STRING_SIZE];
    int r = avformat_find_stream_info(fmt, NULL);
    if (r < 0)
        return pfs_error_set(err, av_errno(r), "%s: FFmpeg cannot read the clip's streams: %s",
                             path, av_why(r, why));
    return 0;
}

static bool is_picture_stream(const AVStream *st)
{
    return st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
           !(st->disposition & AV_DISPOSITION_ATTACHED_PIC);
}

/* FFmpeg's choice of video stream, unless it is a cover picture: then the
 * first real one. */
static int pick_video_stream(AVFormatContext *fmt)
{
    int best = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (best >= 0 && is_picture_stream(fmt->streams[best]))
        return best;
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        if (is_picture_stream(fmt->streams[i]))
            return (int)i;
    return -1;
}

/* Only the picture stream is read: the demuxer skips the others' data. */
static void discard_other_streams(AVFormatContext *fmt, int stream)
{
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        fmt->streams[i]->discard = (int)i == stream ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
}

/* The video stream's own tag, else another stream's (a QuickTime tmcd
 * track), else the container's. */
static void find_timecode(const AVFormatContext *fmt, int stream, char *out, size_t size)
{
    const AVDictionaryEntry *tc = av_dict_get(fmt->streams[stream]->metadata, "timecode", NULL, 0);
    for (unsigned i = 0; !tc && i < fmt->nb_streams; i++)
        tc = av_dict_get(fmt->streams[i]->metadata, "timecode", NULL, 0);
    if (!tc)
        tc = av_dict_get(fmt->metadata, "timecode", NULL, 0);
    snprintf(out, size, "%s", tc ? tc->value : "");
}

static int describe_stream(const AVFormatContext *fmt, int stream, const char *path,
                           struct pfs_clip_info *info, pfs_error *err)
{
    const AVStream *st = fmt->streams[stream];
    const AVCodecParameters *par = st->codecpar;
    const AVCodec *dec = avcodec_find_decoder(par->codec_id);
    if (!dec)
        return pfs_error_set(err, EINVAL, "%s: FFmpeg has no decoder for its video codec (%s)",
                             path, avcodec_get_name(par->codec_id));
    const char *pix = av_get_pix_fmt_name(par->format);
    if (par->width <= 0 || par->height <= 0 || !pix)
        return pfs_error_set(err, EINVAL,
                             "%s: FFmpeg cannot tell the picture size or pixel format of its "
                             "%s video",
                             path, dec->name);
    info->width = par->width;
    info->height = par->height;
    AVRational sar = par->sample_aspect_ratio.num > 0 ? par->sample_aspect_ratio
                                                      : st->sample_aspect_ratio;
    if (sar.num <= 0 || sar.den <= 0)
        sar = (AVRational){1, 1};
    info->sar_num = sar.num;
    info->sar_den = sar.den;
    AVRational rate = st->r_frame_rate.num > 0 ? st->r_frame_rate : st->avg_frame_rate;
    if (rate.num <= 0 || rate.den <= 0)
        rate = (AVRational){0, 1};
    info->rate_num = rate.num;
    info->rate_den = rate.den;
    info->tb_num = st->time_base.num;
    info->tb_den = st->time_base.den;
    info->matrix = par->color_space;
    info->range = par->color_range;
    info->primaries = par->color_primaries;
    info->transfer = par->color_trc;
    info->chroma_location = par->chroma_location;
    snprintf(info->codec, sizeof info->codec, "%s", dec->name);
    snprintf(info->pix_fmt, sizeof info->pix_fmt, "%s", pix);
    find_timecode(fmt, stream, info->timecode, sizeof info->timecode);
    return 0;
}

static int append_packet(struct pfs_clip_index *idx, uint32_t *cap, struct clip_packet p)
{
    if (idx->npackets == *cap) {
        if (*cap >= UINT32_MAX / 2)
            return ENOMEM;
        uint32_t c = *cap ? *cap * 2 : 1024;
        struct clip_packet *q = realloc(idx->packets, c * sizeof *q);
        if (!q)
            return ENOMEM;
        idx->packets = q;
        *cap = c;
    }
    idx->packets[idx->npackets++] = p;
    return 0;
}

/* A demuxer may ask to be called again; a file never needs many. */
enum { READ_RETRIES = 16 };

static int read_packet(AVFormatContext *fmt, AVPacket *pkt)
{
    int r, tries = 0;
    do
        r = av_read_frame(fmt, pkt);
    while (r == AVERROR(EAGAIN) && ++tries < READ_RETRIES);
    return r;
}

static struct clip_packet index_entry(const AVPacket *pkt)
{
    return (struct clip_packet){
        .pts = packet_pts(pkt),
        .dts = pkt->dts,
        .flags = (pkt->flags & AV_PKT_FLAG_KEY ? PKT_KEY : 0) |
                 (pkt->flags & AV_PKT_FLAG_DISCARD ? PKT_DISCARD : 0),
    };
}

/* Reads every packet of the stream into idx->packets. A read error or a
 * packet the demuxer flags corrupt ends the index there (see the file
 * comment on damage): *stop receives that error, 0 at a clean end. */
static int read_packets(AVFormatContext *fmt, struct pfs_clip_index *idx, int *stop,
                        pfs_error *err)
{
    const char *path = idx->path;
    const AVCodecParameters *par = fmt->streams[idx->stream]->codecpar;
    const AVCodecDescriptor *desc = avcodec_descriptor_get(par->codec_id);
    bool dts_is_pts = par->video_delay == 0 || (desc && (desc->props & AV_CODEC_PROP_INTRA_ONLY));
    AVPacket *pkt = av_packet_alloc();
    if (!pkt)
        return pfs_error_set(err, ENOMEM, "%s: out of memory", path);
    uint32_t cap = 0;
    int r = 0, rc = 0;
    while (rc == 0 && (r = read_packet(fmt, pkt)) >= 0) {
        if (pkt->stream_index != idx->stream) {
            av_packet_unref(pkt);
            continue;
        }
        if (pkt->flags & AV_PKT_FLAG_CORRUPT) {
            r = AVERROR_INVALIDDATA;
            break;
        }
        if (pkt->pts == AV_NOPTS_VALUE && (!dts_is_pts || pkt->dts == AV_NOPTS_VALUE))
            rc = pfs_error_set(err, EINVAL,
                               "%s: its video packets carry no presentation timestamps, so "
                               "its frames cannot be put in order",
                               path);
        else if (append_packet(idx, &cap, index_entry(pkt)))
            rc = pfs_error_set(err, ENOMEM, "%s: out of memory for the clip index", path);
        av_packet_unref(pkt);
    }
    av_packet_free(&pkt);
    *stop = r == AVERROR_EOF ? 0 : r;
    return rc;
}

/*
 * A truncated clip loses the packets at the end of decode order, and with
 * reordered pictures some of those are shown before pictures that were
 * read: numbering the read ones in presentation order would then give
 * them the numbers of lost ones. A lost picture's pts is at least its dts,
 * which is above every dts read; so the frames shown no later than the
 * last dts read are all there, and those shown later are kept as packets
 * (they may be references) but are not frames.
 */
static void drop_unordered_tail(struct pfs_clip_index *idx)
{
    int64_t last_dts = AV_NOPTS_VALUE;
    for (uint32_t i = 0; i < idx->npackets; i++) {
        int64_t dts = idx->packets[i].dts;
        if (dts != AV_NOPTS_VALUE && (last_dts == AV_NOPTS_VALUE || dts > last_dts))
            last_dts = dts;
    }
    if (last_dts == AV_NOPTS_VALUE)
        return;
    for (uint32_t i = 0; i < idx->npackets; i++)
        if (idx->packets[i].pts > last_dts)
            idx->packets[i].flags |= PKT_DISCARD;
}

int pfs_clip_index_build(const char *path, struct pfs_clip_index **out, pfs_error *err)
{
    *out = NULL;
    /* The identity is taken before reading: if the file changes meanwhile,
     * the index never matches it again and is rebuilt. */
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        char buf[128];
        return pfs_error_set(err, e, "%s: %s", path, strerror_r(e, buf, sizeof buf));
    }
    struct pfs_clip_index *idx = index_new(path);
    if (!idx)
        return pfs_error_set(err, ENOMEM, "%s: out of memory", path);
    idx->info.src_size = st.st_size;
    idx->info.src_mtime = st.st_mtim;

    AVFormatContext *fmt = NULL;
    int rc = open_container(path, &fmt, err);
    if (rc == 0)
        rc = probe_streams(path, fmt, err);
    if (rc == 0) {
        idx->stream = pick_video_stream(fmt);
        if (idx->stream < 0)
            rc = pfs_error_set(err, EINVAL, "%s: the clip has no video stream", path);
    }
    if (rc == 0)
        rc = describe_stream(fmt, idx->stream, path, &idx->info, err);
    int stop = 0;
    if (rc == 0) {
        discard_other_streams(fmt, idx->stream);
        rc = read_packets(fmt, idx, &stop, err);
    }
    if (rc == 0 && stop)
        drop_unordered_tail(idx);
    if (rc == 0)
        rc = index_derive(idx, err);
    avformat_close_input(&fmt);
    if (rc) {
        pfs_clip_index_free(idx);
        return rc;
    }
    if (stop) {
        char why[AV_ERROR_MAX_STRING_SIZE];
        pfs_log(PFS_LOG_WARN,
                "%s: the clip is truncated or damaged (%s); indexed the %" PRId64
                " frames before that point",
                path, av_why(stop, why), idx->info.nframes);
    }
    *out = idx;
    return 0;
}

/* --- the stored form ----------------------------------------------------- */

/*
 * Little-endian, fixed layout:
 *   "PFSCLIP\0", u32 version, i32 stream,
 *   i32 width height sar_num sar_den rate_num rate_den tb_num tb_den,
 *   i32 matrix range primaries transfer chroma_location,
 *   char codec[32] pix_fmt[32] timecode[32] (NUL-padded),
 *   i64 src_size mtime_sec mtime_nsec, u32 npackets,
 *   npackets x {i64 pts, i64 dts, u8 flags},
 *   u64 XXH3-64 of every byte before it.
 * Derived facts (frame order, frame count, rate variation) are recomputed
 * on load, so a blob cannot contradict its own packets.
 */
static const char blob_magic[8] = "PFSCLIP";
enum {
    BLOB_VERSION = 1,
    BLOB_HEAD = 8 + 4 + 4 + 8 * 4 + 5 * 4 + 3 * 32 + 3 * 8 + 4,
    BLOB_PACKET = 8 + 8 + 1,
    BLOB_TAIL = 8,
};

struct writer {
    uint8_t *p;
};

static void put_u32(struct writer *w, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *w->p++ = (uint8_t)(v >> (8 * i));
}

static void put_u64(struct writer *w, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *w->p++ = (uint8_t)(v >> (8 * i));
}

static void put_bytes(struct writer *w, const void *b, size_t n)
{
    memcpy(w->p, b, n);
    w->p += n;
}

static void put_string(struct writer *w, const char *s, size_t field)
{
    size_t n = strnlen(s, field - 1);
    put_bytes(w, s, n);
    memset(w->p, 0, field - n);
    w->p += field - n;
}

int pfs_clip_index_save(const struct pfs_clip_index *idx, uint8_t **blob, size_t *len,
                        pfs_error *err)
{
    const struct pfs_clip_info *in = &idx->info;
    size_t n = BLOB_HEAD + (size_t)idx->npackets * BLOB_PACKET + BLOB_TAIL;
    uint8_t *b = malloc(n);
    if (!b)
        return pfs_error_set(err, ENOMEM, "%s: out of memory for the clip index", idx->path);
    struct writer w = {b};
    put_bytes(&w, blob_magic, sizeof blob_magic);
    put_u32(&w, BLOB_VERSION);
    put_u32(&w, (uint32_t)idx->stream);
    const int ints[] = {in->width,    in->height,   in->sar_num,   in->sar_den,
                        in->rate_num, in->rate_den, in->tb_num,    in->tb_den,
                        in->matrix,   in->range,    in->primaries, in->transfer,
                        in->chroma_location};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        put_u32(&w, (uint32_t)ints[i]);
    put_string(&w, in->codec, sizeof in->codec);
    put_string(&w, in->pix_fmt, sizeof in->pix_fmt);
    put_string(&w, in->timecode, sizeof in->timecode);
    put_u64(&w, (uint64_t)in->src_size);
    put_u64(&w, (uint64_t)in->src_mtime.tv_sec);
    put_u64(&w, (uint64_t)in->src_mtime.tv_nsec);
    put_u32(&w, idx->npackets);
    for (uint32_t i = 0; i < idx->npackets; i++) {
        put_u64(&w, (uint64_t)idx->packets[i].pts);
        put_u64(&w, (uint64_t)idx->packets[i].dts);
        *w.p++ = idx->packets[i].flags;
    }
    put_u64(&w, XXH3_64bits(b, (size_t)(w.p - b)));
    *blob = b;
    *len = n;
    return 0;
}

struct reader {
    const uint8_t *p;
};

static uint32_t get_u32(struct reader *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)*r->p++ << (8 * i);
    return v;
}

static uint64_t get_u64(struct reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)*r->p++ << (8 * i);
    return v;
}

static int get_i32(struct reader *r)
{
    return (int)(int32_t)get_u32(r);
}

/* False unless the field holds a NUL-terminated string. */
static bool get_string(struct reader *r, char *s, size_t field)
{
    memcpy(s, r->p, field);
    r->p += field;
    return memchr(s, '\0', field) != NULL;
}

/* The header fields after the version; false when one is out of range. */
static bool get_head(struct reader *r, struct pfs_clip_index *idx)
{
    struct pfs_clip_info *in = &idx->info;
    idx->stream = get_i32(r);
    int *const ints[] = {&in->width,    &in->height,   &in->sar_num,   &in->sar_den,
                         &in->rate_num, &in->rate_den, &in->tb_num,    &in->tb_den,
                         &in->matrix,   &in->range,    &in->primaries, &in->transfer,
                         &in->chroma_location};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        *ints[i] = get_i32(r);
    bool strings = get_string(r, in->codec, sizeof in->codec);
    strings &= get_string(r, in->pix_fmt, sizeof in->pix_fmt);
    strings &= get_string(r, in->timecode, sizeof in->timecode);
    in->src_size = (int64_t)get_u64(r);
    in->src_mtime.tv_sec = (time_t)get_u64(r);
    in->src_mtime.tv_nsec = (long)get_u64(r);
    idx->npackets = get_u32(r);
    return strings && idx->stream >= 0 && in->width > 0 && in->height > 0 && in->sar_num > 0 &&
           in->sar_den > 0 && in->rate_num >= 0 && in->rate_den > 0 && in->tb_num > 0 &&
           in->tb_den > 0 && in->src_size >= 0 && in->src_mtime.tv_nsec >= 0 &&
           in->src_mtime.tv_nsec < 1000000000L;
}

static int get_packets(struct reader *r, struct pfs_clip_index *idx)
{
    idx->packets = malloc((idx->npackets ? idx->npackets : 1) * sizeof *idx->packets);
    if (!idx->packets)
        return ENOMEM;
    for (uint32_t i = 0; i < idx->npackets; i++) {
        struct clip_packet *p = &idx->packets[i];
        p->pts = (int64_t)get_u64(r);
        p->dts = (int64_t)get_u64(r);
        p->flags = *r->p++;
        if (p->pts == AV_NOPTS_VALUE || (p->flags & ~PKT_FLAGS))
            return EINVAL;
    }
    return 0;
}

int pfs_clip_index_load(const char *path, const void *blob, size_t len,
                        struct pfs_clip_index **out, pfs_error *err)
{
    *out = NULL;
    const uint8_t *b = blob;
    if (len < BLOB_HEAD + BLOB_TAIL || memcmp(b, blob_magic, sizeof blob_magic) != 0)
        return pfs_error_set(err, EINVAL, "%s: the stored data is not a clip index", path);
    struct reader r = {b + sizeof blob_magic};
    uint32_t version = get_u32(&r);
    if (version != BLOB_VERSION)
        return pfs_error_set(err, EINVAL,
                             "%s: the stored clip index has format version %" PRIu32
                             ", this platefs reads version %d",
                             path, version, BLOB_VERSION);
    struct reader tail = {b + len - BLOB_TAIL};
    if (get_u64(&tail) != XXH3_64bits(b, len - BLOB_TAIL))
        return pfs_error_set(err, EINVAL, "%s: the stored clip index is damaged", path);

    struct pfs_clip_index *idx = index_new(path);
    if (!idx)
        return pfs_error_set(err, ENOMEM, "%s: out of memory", path);
    int rc = 0;
    if (!get_head(&r, idx) ||
        len != BLOB_HEAD + (size_t)idx->npackets * BLOB_PACKET + BLOB_TAIL)
        rc = pfs_error_set(err, EINVAL, "%s: the stored clip index is damaged", path);
    if (rc == 0 && (rc = get_packets(&r, idx)))
        pfs_error_set(err, rc, "%s: the stored clip index is %s", path,
                      rc == ENOMEM ? "too large for memory" : "damaged");
    if (rc == 0)
        rc = index_derive(idx, err);
    if (rc) {
        pfs_clip_index_free(idx);
        return rc;
    }
    *out = idx;
    return 0;
}

/* --- decoders ------------------------------------------------------------ */

enum { MAX_CODEC_THREADS = 4 }; /* see the file comment on threads */

/* Where a decoder stands in its clip's decode order. */
struct run {
    int64_t start;    /* keyframe this run of continuous decoding began at; -1: none */
    int64_t next;     /* position of the next packet to feed */
    int64_t last_pts; /* pts of the last picture received; INT64_MIN: none yet */
};

static const struct run no_run = {-1, 0, INT64_MIN};

/* One request: frame i, its packet and the keyframe a decode of it starts at. */
struct want {
    int64_t frame;
    uint32_t pos;
    int64_t pts;
    uint32_t key;
};

#define HELD_MAX 16

struct decoder {
    struct decoder *next_in_pool;
    /* Pool state, under the pool's lock. */
    char *path; /* with size and mtime, the clip version it reads */
    int64_t size;
    struct timespec mtime;
    bool busy;
    uint64_t used;      /* LRU tick of its last release */
    struct run promise; /* while busy: where it will at least stand when done */
    /* Media state: the holder's alone while busy, the pool's while idle. */
    struct run run;
    AVFormatContext *fmt;
    AVCodecContext *codec;
    AVPacket *pkt;
    bool have_pkt;  /* pkt holds the packet at run.next, read but not fed */
    AVFrame *pic;
    /* Pictures received ahead of the one returned (see confirm_clean), in
     * output order; the next request takes them before the codec's. */
    AVFrame *held[HELD_MAX];
    int nheld;
    int64_t damage; /* first position in this run reported damaged; -1: none */
    bool ended;     /* the demuxer ran out before the index did */
};

struct pfs_clip_decoders {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a decoder was released or closed */
    int max_open;
    int open;               /* decoders in the list, opened or being opened */
    struct decoder *list;
    uint64_t tick;
    struct pfs_clip_decoder_stats stats;
};

static bool same_clip(const struct decoder *d, const struct pfs_clip_index *idx)
{
    return d->size == idx->info.src_size && d->mtime.tv_sec == idx->info.src_mtime.tv_sec &&
           d->mtime.tv_nsec == idx->info.src_mtime.tv_nsec && strcmp(d->path, idx->path) == 0;
}

static bool can_continue(const struct run *r, const struct want *w)
{
    return r->start >= 0 && r->start <= w->key && w->key <= r->next && w->pts > r->last_pts;
}

static void drop_held(struct decoder *d)
{
    while (d->nheld > 0)
        av_frame_free(&d->held[--d->nheld]);
}

static void decoder_free(struct decoder *d)
{
    drop_held(d);
    avcodec_free_context(&d->codec);
    avformat_close_input(&d->fmt);
    av_packet_free(&d->pkt);
    av_frame_free(&d->pic);
    free(d->path);
    free(d);
}

static bool has_indexed_stream(const AVFormatContext *fmt, const struct pfs_clip_index *idx)
{
    if ((unsigned)idx->stream >= fmt->nb_streams)
        return false;
    const AVCodec *dec = avcodec_find_decoder(fmt->streams[idx->stream]->codecpar->codec_id);
    return dec && strcmp(dec->name, idx->info.codec) == 0;
}

static void choose_threads(AVCodecContext *codec, const AVCodec *dec)
{
    const AVCodecDescriptor *desc = avcodec_descriptor_get(dec->id);
    bool intra = desc && (desc->props & AV_CODEC_PROP_INTRA_ONLY);
    int cpus = av_cpu_count();
    codec->thread_type = intra ? FF_THREAD_SLICE : FF_THREAD_FRAME;
    codec->thread_count = cpus < MAX_CODEC_THREADS ? cpus : MAX_CODEC_THREADS;
}

static int decoder_open(struct decoder *d, const struct pfs_clip_index *idx, pfs_error *err)
{
    const char *path = idx->path;
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        char buf[128];
        return pfs_error_set(err, e == ENOENT ? ENOENT : EIO, "%s: %s", path,
                             strerror_r(e, buf, sizeof buf));
    }
    if (st.st_size != d->size || st.st_mtim.tv_sec != d->mtime.tv_sec ||
        st.st_mtim.tv_nsec != d->mtime.tv_nsec)
        return pfs_error_set(err, EIO, "%s: the clip has changed since it was indexed", path);
    int rc = open_container(path, &d->fmt, err);
    /* avformat_find_stream_info decodes pictures (36 ms on the sample clip);
     * a decoder needs it only when the header does not name the codec. */
    if (rc == 0 && !has_indexed_stream(d->fmt, idx))
        rc = probe_streams(path, d->fmt, err);
    if (rc) { /* it was readable when indexed: what fails now is I/O */
        rc = rc == ENOENT || rc == ENOMEM ? rc : EIO;
        if (err)
            err->code = rc;
        return rc;
    }
    if (!has_indexed_stream(d->fmt, idx))
        return pfs_error_set(err, EIO, "%s: the clip no longer has the indexed %s video", path,
                             idx->info.codec);
    const AVCodecParameters *par = d->fmt->streams[idx->stream]->codecpar;
    const AVCodec *dec = avcodec_find_decoder(par->codec_id);
    discard_other_streams(d->fmt, idx->stream);
    d->codec = avcodec_alloc_context3(dec);
    d->pkt = av_packet_alloc();
    d->pic = av_frame_alloc();
    if (!d->codec || !d->pkt || !d->pic || avcodec_parameters_to_context(d->codec, par) < 0)
        return pfs_error_set(err, ENOMEM, "%s: out of memory for a decoder", path);
    d->codec->pkt_timebase = d->fmt->streams[idx->stream]->time_base;
    choose_threads(d->codec, dec);
    char why[AV_ERROR_MAX_STRING_SIZE];
    int r = avcodec_open2(d->codec, dec, NULL);
    if (r < 0)
        return pfs_error_set(err, r == AVERROR(ENOMEM) ? ENOMEM : EIO,
                             "%s: cannot start the %s decoder: %s", path, dec->name,
                             av_why(r, why));
    return 0;
}

/* Reads the next packet of the video stream into d->pkt. */
static int read_video(struct decoder *d, int stream)
{
    int r;
    av_packet_unref(d->pkt);
    while ((r = read_packet(d->fmt, d->pkt)) >= 0 && d->pkt->stream_index != stream)
        av_packet_unref(d->pkt);
    d->have_pkt = r >= 0;
    return r;
}

/* Seeks the demuxer to (or before) the packet at pos and reads the first
 * video packet there; *at receives its position, -1 if the index does not
 * know it. */
static int seek_near(struct decoder *d, const struct pfs_clip_index *idx, uint32_t pos,
                     int64_t *at)
{
    const struct clip_packet *p = &idx->packets[pos];
    int64_t ts = p->dts != AV_NOPTS_VALUE ? p->dts : p->pts;
    int r = av_seek_frame(d->fmt, idx->stream, ts, AVSEEK_FLAG_BACKWARD);
    if (r >= 0)
        r = read_video(d, idx->stream);
    *at = r >= 0 ? position_of(idx, packet_pts(d->pkt)) : -1;
    return r;
}

static int frame_error(const struct pfs_clip_index *idx, const struct want *w, pfs_error *err,
                       const char *why)
{
    return pfs_error_set(err, EIO, "%s: frame %" PRId64 " cannot be decoded: %s", idx->path,
                         w->frame, why);
}

static const char *const why_missing =
    "the file no longer holds the data its index describes (truncated or changed)";
static const char *const why_damaged =
    "the decoder reports it, or a frame it is predicted from, as damaged";

/* Starts a run at the frame's start keyframe: the demuxer is left with the
 * keyframe's packet read and not yet fed. */
static int position(struct decoder *d, const struct pfs_clip_index *idx, const struct want *w,
                    pfs_error *err)
{
    int64_t at;
    int r = seek_near(d, idx, w->key, &at);
    if (r < 0 || at < 0 || at > w->key)
        r = seek_near(d, idx, 0, &at);
    if (r < 0 || at < 0 || at > w->key)
        return frame_error(idx, w, err, "FFmpeg cannot find the keyframe its decoding starts from");
    while (at < w->key) {
        if (read_video(d, idx->stream) < 0 || packet_pts(d->pkt) != idx->packets[++at].pts)
            return frame_error(idx, w, err, why_missing);
    }
    avcodec_flush_buffers(d->codec);
    drop_held(d);
    d->run = (struct run){w->key, w->key, INT64_MIN};
    d->damage = -1;
    d->ended = false;
    return 0;
}

/* The decoder reported an error after the packet at pos was fed: the error
 * is that packet's or, with frame threads, one up to thread_count - 1
 * packets before it, whose error surfaces when its thread's result is
 * collected. */
static void note_failed_packet(struct decoder *d, int64_t pos)
{
    if (d->codec->active_thread_type == FF_THREAD_FRAME)
        pos -= d->codec->thread_count - 1;
    pos = pos > d->run.start ? pos : d->run.start;
    if (d->damage < 0 || pos < d->damage)
        d->damage = pos;
}

/* Feeds the packet at run.next, or the end of stream when the index (or the
 * file) has no more. */
static int feed(struct decoder *d, const struct pfs_clip_index *idx)
{
    if (d->run.next >= idx->npackets || (!d->have_pkt && read_video(d, idx->stream) < 0)) {
        d->ended = d->run.next < idx->npackets;
        d->have_pkt = false;
        avcodec_send_packet(d->codec, NULL);
        return 0;
    }
    d->have_pkt = false;
    if (packet_pts(d->pkt) != idx->packets[d->run.next].pts)
        return AVERROR_INVALIDDATA;
    if (d->pkt->pts == AV_NOPTS_VALUE)
        d->pkt->pts = d->pkt->dts; /* as indexed: frames are matched by pts */
    if (avcodec_send_packet(d->codec, d->pkt) < 0 || (d->pkt->flags & AV_PKT_FLAG_CORRUPT))
        note_failed_packet(d, d->run.next);
    av_packet_unref(d->pkt);
    d->run.next++;
    return 0;
}

static int64_t picture_pts(const AVFrame *pic)
{
    return pic->pts != AV_NOPTS_VALUE ? pic->pts : pic->best_effort_timestamp;
}

static bool picture_damaged(const AVFrame *pic)
{
    return (pic->flags & AV_FRAME_FLAG_CORRUPT) || pic->decode_error_flags;
}

/* A damaged picture before the wanted one taints what follows it, unless it
 * is shown before the run's keyframe: a leading picture of an open GOP that
 * this run could not decode, and no later picture references. */
static void note_damage_of(struct decoder *d, const struct pfs_clip_index *idx,
                           const AVFrame *pic)
{
    int64_t pts = picture_pts(pic);
    if (!picture_damaged(pic) || pts < idx->packets[d->run.start].pts)
        return;
    int64_t pos = position_of(idx, pts);
    if (pos >= 0 && (d->damage < 0 || pos < d->damage))
        d->damage = pos;
}

/* Damage met in this run, at or before the wanted frame's packet. */
static bool tainted(const struct decoder *d, const struct want *w)
{
    return d->damage >= 0 && d->damage <= w->pos;
}

/* What one request did, added to the pool's stats when it ends. */
struct tally {
    uint64_t seeks, pictures, opens;
};

/* The codec's next picture into pic, feeding packets as it needs them. 0,
 * AVERROR_EOF when the run is drained, or AVERROR_INVALIDDATA when a packet
 * is not the indexed one. */
static int receive_picture(struct decoder *d, const struct pfs_clip_index *idx, AVFrame *pic,
                           struct tally *t)
{
    for (;;) {
        int r = avcodec_receive_frame(d->codec, pic);
        if (r == AVERROR(EAGAIN)) {
            if (feed(d, idx) < 0)
                return AVERROR_INVALIDDATA;
            continue;
        }
        if (r == AVERROR_EOF)
            return r;
        if (r < 0) { /* a packet's decode error, surfacing late */
            note_failed_packet(d, d->run.next - 1);
            continue;
        }
        t->pictures++;
        if (picture_pts(pic) == AV_NOPTS_VALUE) {
            av_frame_unref(pic);
            continue;
        }
        return 0;
    }
}

/* The next picture in output order into d->pic: a held one, else the
 * codec's. */
static int next_picture(struct decoder *d, const struct pfs_clip_index *idx, struct tally *t)
{
    if (d->nheld == 0)
        return receive_picture(d, idx, d->pic, t);
    av_frame_move_ref(d->pic, d->held[0]);
    av_frame_free(&d->held[0]);
    memmove(d->held, d->held + 1, (size_t)--d->nheld * sizeof *d->held);
    return 0;
}

/*
 * The wanted picture came out clean, but a picture it is predicted from may
 * still be flagged: with reordering, a reference decoded before it can be
 * shown after it (a B-frame's forward reference). Every picture decoded
 * from the wanted one's keyframe up to it is shown no later than the
 * highest pts among those packets, so the pictures up to that pts are
 * received now, checked, and held for the requests that follow.
 */
static void confirm_clean(struct decoder *d, const struct pfs_clip_index *idx,
                          const struct want *w, struct tally *t)
{
    int64_t last = w->pts;
    for (uint32_t i = w->key; i <= w->pos; i++)
        if (!(idx->packets[i].flags & PKT_DISCARD) && idx->packets[i].pts > last)
            last = idx->packets[i].pts;
    int64_t seen = d->nheld ? picture_pts(d->held[d->nheld - 1]) : w->pts;
    for (int i = 0; i < d->nheld; i++)
        note_damage_of(d, idx, d->held[i]);
    while (seen < last && d->nheld < HELD_MAX) {
        AVFrame *ahead = av_frame_alloc();
        if (!ahead)
            break;
        int r = receive_picture(d, idx, ahead, t);
        if (r < 0) {
            av_frame_free(&ahead);
            break;
        }
        note_damage_of(d, idx, ahead);
        seen = picture_pts(ahead);
        d->held[d->nheld++] = ahead;
    }
}

/* Feeds packets and receives pictures until the wanted one comes out. */
static int decode_until(struct decoder *d, const struct pfs_clip_index *idx, const struct want *w,
                        AVFrame *out, struct tally *t, pfs_error *err)
{
    for (;;) {
        int r = next_picture(d, idx, t);
        if (r == AVERROR_INVALIDDATA)
            return frame_error(idx, w, err, why_missing);
        if (r == AVERROR_EOF)
            break;
        int64_t pts = picture_pts(d->pic);
        d->run.last_pts = pts;
        if (pts == w->pts && !picture_damaged(d->pic) && !tainted(d, w)) {
            av_frame_move_ref(out, d->pic);
            confirm_clean(d, idx, w, t);
            if (!tainted(d, w))
                return 0;
            av_frame_unref(out);
            return frame_error(idx, w, err, why_damaged);
        }
        if (pts == w->pts) {
            av_frame_unref(d->pic);
            return frame_error(idx, w, err, why_damaged);
        }
        if (pts > w->pts) {
            av_frame_unref(d->pic);
            break;
        }
        note_damage_of(d, idx, d->pic);
        av_frame_unref(d->pic);
    }
    drop_held(d);
    d->run.start = -1; /* drained or lost: the next request seeks */
    return frame_error(idx, w, err,
                       d->ended       ? why_missing
                       : tainted(d, w) ? why_damaged
                                       : "the decoder gave no picture for it");
}

/* Continues where the decoder stands if that is exact, else starts a run at
 * the frame's keyframe. A continued run that fails is retried once from the
 * keyframe, since the damage it met may lie before it. */
static int decode_on(struct decoder *d, const struct pfs_clip_index *idx, const struct want *w,
                     AVFrame *out, struct tally *t, pfs_error *err)
{
    bool fresh = !can_continue(&d->run, w);
    for (;;) {
        if (fresh) {
            int rc = position(d, idx, w, err);
            if (rc)
                return rc;
            t->seeks++;
        }
        int rc = decode_until(d, idx, w, out, t, err);
        if (rc != EIO || fresh)
            return rc;
        fresh = true;
    }
}

/* --- the pool ------------------------------------------------------------ */

int pfs_clip_decoders_new(int max_open, struct pfs_clip_decoders **out, pfs_error *err)
{
    struct pfs_clip_decoders *d = calloc(1, sizeof *d);
    if (!d)
        return pfs_error_set(err, ENOMEM, "clip decoders: out of memory");
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->changed, NULL);
    d->max_open = max_open > 0 ? max_open : 8;
    *out = d;
    return 0;
}

void pfs_clip_decoders_free(struct pfs_clip_decoders *d)
{
    if (!d)
        return;
    while (d->list) {
        struct decoder *next = d->list->next_in_pool;
        decoder_free(d->list);
        d->list = next;
    }
    pthread_cond_destroy(&d->changed);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

void pfs_clip_decoder_stats(struct pfs_clip_decoders *d, struct pfs_clip_decoder_stats *out)
{
    pthread_mutex_lock(&d->lock);
    *out = d->stats;
    pthread_mutex_unlock(&d->lock);
}

/* The idle decoder of the clip that continues to w, the one nearest it. */
static struct decoder *idle_continuing(struct pfs_clip_decoders *pool,
                                       const struct pfs_clip_index *idx, const struct want *w)
{
    struct decoder *best = NULL;
    for (struct decoder *d = pool->list; d; d = d->next_in_pool)
        if (!d->busy && same_clip(d, idx) && can_continue(&d->run, w) &&
            (!best || d->run.last_pts > best->run.last_pts))
            best = d;
    return best;
}

static bool busy_continuing(const struct pfs_clip_decoders *pool,
                            const struct pfs_clip_index *idx, const struct want *w)
{
    for (const struct decoder *d = pool->list; d; d = d->next_in_pool)
        if (d->busy && same_clip(d, idx) && can_continue(&d->promise, w))
            return true;
    return false;
}

/* The least recently used idle decoder, of this clip only or of any. */
static struct decoder *idle_lru(struct pfs_clip_decoders *pool, const struct pfs_clip_index *idx)
{
    struct decoder *best = NULL;
    for (struct decoder *d = pool->list; d; d = d->next_in_pool)
        if (!d->busy && (!idx || same_clip(d, idx)) && (!best || d->used < best->used))
            best = d;
    return best;
}

static void unlink_decoder(struct pfs_clip_decoders *pool, struct decoder *d)
{
    struct decoder **p = &pool->list;
    while (*p != d)
        p = &(*p)->next_in_pool;
    *p = d->next_in_pool;
}

/* A decoder not yet opened, in the pool and busy, so that requests it will
 * serve wait for it; NULL when out of memory. */
static struct decoder *add_decoder(struct pfs_clip_decoders *pool,
                                   const struct pfs_clip_index *idx)
{
    struct decoder *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(idx->path))) {
        free(d);
        return NULL;
    }
    d->size = idx->info.src_size;
    d->mtime = idx->info.src_mtime;
    d->run = no_run;
    d->next_in_pool = pool->list;
    pool->list = d;
    pool->open++;
    return d;
}

/*
 * Claims a decoder for w, in order of preference: (a) an idle one of the clip
 * that continues to it; (b) wait for a busy one that will; (c) a new one,
 * within the limit; (d) an idle one of the clip, which seeks; (e) a new one
 * in place of the least recently used idle one of any clip; (f) wait.
 * Opening (c) before seeking an idle decoder (d) costs about a millisecond
 * and keeps that decoder where it stands: two readers of one clip served in
 * turn would otherwise take it from each other, each turn a seek. The
 * decoder closed in (e) is returned in *evicted, to be closed unlocked.
 */
static struct decoder *claim_locked(struct pfs_clip_decoders *pool,
                                    const struct pfs_clip_index *idx, const struct want *w,
                                    struct decoder **evicted)
{
    *evicted = NULL;
    for (;;) {
        struct decoder *d = idle_continuing(pool, idx, w);
        if (d)
            return d;
        if (busy_continuing(pool, idx, w)) {
            pthread_cond_wait(&pool->changed, &pool->lock);
            continue;
        }
        if (pool->open < pool->max_open)
            return add_decoder(pool, idx);
        if ((d = idle_lru(pool, idx)))
            return d;
        if ((*evicted = idle_lru(pool, NULL))) {
            unlink_decoder(pool, *evicted);
            pool->open--;
            return add_decoder(pool, idx);
        }
        pthread_cond_wait(&pool->changed, &pool->lock);
    }
}

/* Where d will at least stand once it has served w. */
static struct run promise_of(const struct decoder *d, const struct want *w)
{
    if (can_continue(&d->run, w))
        return (struct run){d->run.start, d->run.next, w->pts};
    return (struct run){w->key, w->key, w->pts};
}

static struct decoder *claim(struct pfs_clip_decoders *pool, const struct pfs_clip_index *idx,
                             const struct want *w)
{
    struct decoder *evicted;
    pthread_mutex_lock(&pool->lock);
    struct decoder *d = claim_locked(pool, idx, w, &evicted);
    if (d) {
        d->busy = true;
        d->promise = promise_of(d, w);
    }
    pthread_mutex_unlock(&pool->lock);
    if (evicted)
        decoder_free(evicted);
    return d;
}

/* Returns the decoder to the pool after it decoded a frame; closes it after
 * a failure, so that the next request starts clean. */
static void release(struct pfs_clip_decoders *pool, struct decoder *d, bool decoded,
                    const struct tally *t)
{
    pthread_mutex_lock(&pool->lock);
    pool->stats.decodes += decoded;
    pool->stats.opens += t->opens;
    pool->stats.seeks += t->seeks;
    pool->stats.pictures += t->pictures;
    if (decoded) {
        d->busy = false;
        d->used = ++pool->tick;
    } else {
        unlink_decoder(pool, d);
        pool->open--;
    }
    pthread_cond_broadcast(&pool->changed);
    pthread_mutex_unlock(&pool->lock);
    if (!decoded)
        decoder_free(d);
}

int pfs_clip_decode(struct pfs_clip_decoders *d, const struct pfs_clip_index *idx, int64_t i,
                    struct AVFrame **out, pfs_error *err)
{
    *out = NULL;
    if (i < 0 || i >= idx->info.nframes)
        return pfs_error_set(err, ERANGE,
                             "%s: frame %" PRId64 " is outside the clip (it has %" PRId64
                             " frames)",
                             idx->path, i, idx->info.nframes);
    struct want w = {.frame = i, .pos = idx->frames[i], .pts = frame_pts(idx, i)};
    w.key = start_key(idx, w.pos, w.pts);
    AVFrame *pic = av_frame_alloc();
    struct decoder *dec = pic ? claim(d, idx, &w) : NULL;
    if (!dec) {
        av_frame_free(&pic);
        return pfs_error_set(err, ENOMEM, "%s: out of memory for a decoder", idx->path);
    }
    pfs_error local;
    pfs_error_clear(&local);
    struct tally t = {0};
    int rc = 0;
    if (!dec->codec && (rc = decoder_open(dec, idx, &local)) == 0)
        t.opens++;
    if (rc == 0)
        rc = decode_on(dec, idx, &w, pic, &t, &local);
    release(d, dec, rc == 0, &t);
    if (rc) {
        /* Not logged here: the caller logs what failed, once. */
        av_frame_free(&pic);
        if (err)
            *err = local;
        return rc;
    }
    *out = pic;
    return 0;
}
