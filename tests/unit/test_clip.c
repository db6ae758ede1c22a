/*
 * test_clip.c - engine/clip: packet index, stored form, exact decoding and
 * the decoder pool.
 *
 * The references are FFmpeg's own command line tools, run on the same file:
 * ffprobe counts the frames and lists their timestamps, and `ffmpeg -f
 * rawvideo` in the clip's native pixel format gives the pictures. Decoding is
 * bit-exact, so pictures are compared byte for byte (through a 64-bit hash
 * of the packed planes, which keeps a 289-frame 720p clip out of memory).
 * ProRes, DNxHR, 10-bit H.265, open-GOP, variable-rate, edit-listed,
 * truncated and damaged clips are made from the repository's clips with
 * ffmpeg in a temporary directory. Timings are printed, never asserted.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libavutil/frame.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>
#include <xxhash.h>

#include "check.h"
#include "testutil.h"
#include "engine/clip.h"

static char tmpdir[256];
static char sample[1024], dog[1024], walk[1024];

static FILE *popen_f(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static FILE *popen_f(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    REQUIRE(f);
    return f;
}

static char *tmp_path(const char *name)
{
    static char bufs[8][1024];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, 1024, "%s/%s", tmpdir, name);
    return p;
}

static struct pfs_clip_index *build(const char *path)
{
    struct pfs_clip_index *idx = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_clip_index_build(path, &idx, &err);
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    REQUIRE(rc == 0 && idx);
    return idx;
}

static struct pfs_clip_decoders *pool_new(int max_open)
{
    struct pfs_clip_decoders *d = NULL;
    REQUIRE(pfs_clip_decoders_new(max_open, &d, NULL) == 0);
    return d;
}

static int64_t nframes(const struct pfs_clip_index *idx)
{
    return pfs_clip_index_info(idx)->nframes;
}

/* --- references ---------------------------------------------------------- */

/* ffprobe's decode of the clip: the frame count (-count_frames) and the
 * presentation timestamps of the frames in output order, in one pass. */
static int64_t *probe_frames(const char *path, int64_t *count, int64_t *npts)
{
    FILE *f = popen_f("ffprobe -v error -select_streams v:0 -count_frames -show_entries "
                      "stream=nb_read_frames:frame=pts,best_effort_timestamp -of csv '%s'",
                      path);
    size_t cap = 256;
    int64_t *pts = malloc(cap * sizeof *pts);
    char line[256];
    *count = -1;
    *npts = 0;
    while (fgets(line, sizeof line, f)) {
        long long v; /* pts, else best_effort_timestamp */
        if (sscanf(line, "stream,%lld", &v) == 1) {
            *count = v;
        } else if (sscanf(line, "frame,%lld", &v) == 1 || sscanf(line, "frame,N/A,%lld", &v) == 1) {
            if ((size_t)*npts == cap)
                pts = realloc(pts, (cap *= 2) * sizeof *pts);
            pts[(*npts)++] = v;
        }
    }
    pclose(f);
    return pts;
}

static uint64_t picture_hash(const AVFrame *pic)
{
    int size = av_image_get_buffer_size(pic->format, pic->width, pic->height, 1);
    REQUIRE(size > 0);
    uint8_t *buf = malloc((size_t)size);
    REQUIRE(av_image_copy_to_buffer(buf, size, (const uint8_t *const *)pic->data, pic->linesize,
                                    pic->format, pic->width, pic->height, 1) == size);
    uint64_t h = XXH3_64bits(buf, (size_t)size);
    free(buf);
    return h;
}

/* ffmpeg's own decode of the clip's pictures, one hash per frame. */
static uint64_t *reference_hashes(const char *path, const struct pfs_clip_info *in, int64_t *n)
{
    size_t size = (size_t)av_image_get_buffer_size(av_get_pix_fmt(in->pix_fmt), in->width,
                                                   in->height, 1);
    FILE *f = popen_f("ffmpeg -v error -i '%s' -map 0:v:0 -fps_mode passthrough -f rawvideo "
                      "-pix_fmt %s - 2>/dev/null",
                      path, in->pix_fmt);
    uint8_t *buf = malloc(size);
    size_t cap = 256;
    uint64_t *h = malloc(cap * sizeof *h);
    *n = 0;
    while (fread(buf, 1, size, f) == size) {
        if ((size_t)*n == cap)
            h = realloc(h, (cap *= 2) * sizeof *h);
        h[(*n)++] = XXH3_64bits(buf, size);
    }
    pclose(f);
    free(buf);
    return h;
}

static int decode_hash(struct pfs_clip_decoders *d, const struct pfs_clip_index *idx, int64_t i,
                       uint64_t *hash, pfs_error *err)
{
    AVFrame *pic = NULL;
    int rc = pfs_clip_decode(d, idx, i, &pic, err);
    if (rc == 0) {
        const struct pfs_clip_info *in = pfs_clip_index_info(idx);
        CHECK(pic->width == in->width && pic->height == in->height);
        CHECK(strcmp(av_get_pix_fmt_name(pic->format), in->pix_fmt) == 0);
        CHECK(pic->pts == pfs_clip_frame_pts(idx, i));
        *hash = picture_hash(pic);
    }
    av_frame_free(&pic);
    return rc;
}

/* Every frame in order through a fresh pool; *ms receives ms per frame. */
static uint64_t *linear_hashes(const struct pfs_clip_index *idx, double *ms)
{
    struct pfs_clip_decoders *d = pool_new(0);
    int64_t n = nframes(idx);
    uint64_t *h = calloc((size_t)n, sizeof *h);
    double t0 = now_ms();
    for (int64_t i = 0; i < n; i++) {
        pfs_error err;
        int rc = decode_hash(d, idx, i, &h[i], &err);
        CHECKF(rc == 0, "frame %" PRId64 ": %s", i, err.msg);
    }
    if (ms)
        *ms = (now_ms() - t0) / (double)n;
    struct pfs_clip_decoder_stats st;
    pfs_clip_decoder_stats(d, &st);
    CHECKF(st.seeks == 1 && st.opens == 1 && st.decodes == (uint64_t)n,
           "seeks %" PRIu64 " opens %" PRIu64 " decodes %" PRIu64, st.seeks, st.opens,
           st.decodes);
    pfs_clip_decoders_free(d);
    return h;
}

/* Frames in a shuffled order (seeks both ways) through a pool of max_open. */
static void check_shuffled(const struct pfs_clip_index *idx, const uint64_t *expect, int count,
                           int max_open, unsigned seed, double *times)
{
    struct pfs_clip_decoders *d = pool_new(max_open);
    int64_t n = nframes(idx);
    srand(seed);
    for (int k = 0; k < count; k++) {
        int64_t i = rand() % n;
        uint64_t h = 0;
        pfs_error err;
        double t0 = now_ms();
        int rc = decode_hash(d, idx, i, &h, &err);
        if (times)
            times[k] = now_ms() - t0;
        CHECKF(rc == 0 && h == expect[i], "frame %" PRId64 " (rc %d) %s", i, rc,
               rc ? err.msg : "differs from its linear decode");
    }
    pfs_clip_decoders_free(d);
}

/* --- one clip against the references ------------------------------------ */

struct expect {
    const char *codec, *pix_fmt, *timecode;
    int width, height, rate_num, rate_den;
    bool variable_rate;
};

/* Index, timestamps and every picture of the clip against ffprobe and
 * ffmpeg; returns the per-frame hashes of a linear decode. */
static uint64_t *check_clip(const char *path, const struct expect *e,
                            struct pfs_clip_index **out)
{
    struct pfs_clip_index *idx = build(path);
    const struct pfs_clip_info *in = pfs_clip_index_info(idx);
    const char *name = strrchr(path, '/') + 1;
    int64_t counted, npts;
    int64_t *pts = probe_frames(path, &counted, &npts);
    CHECKF(in->nframes == counted, "%s: %" PRId64 " frames, ffprobe counts %" PRId64, name,
           in->nframes, counted);
    CHECKF(strcmp(in->codec, e->codec) == 0, "%s: codec %s", name, in->codec);
    CHECKF(strcmp(in->pix_fmt, e->pix_fmt) == 0, "%s: pix_fmt %s", name, in->pix_fmt);
    CHECKF(strcmp(in->timecode, e->timecode) == 0, "%s: timecode '%s'", name, in->timecode);
    CHECKF(in->width == e->width && in->height == e->height, "%s: %dx%d", name, in->width,
           in->height);
    CHECKF(in->rate_num == e->rate_num && in->rate_den == e->rate_den, "%s: rate %d/%d", name,
           in->rate_num, in->rate_den);
    CHECKF(in->variable_rate == e->variable_rate, "%s: variable_rate %d", name,
           in->variable_rate);

    CHECKF(npts == in->nframes, "%s: ffprobe lists %" PRId64 " frames", name, npts);
    for (int64_t i = 0; i < npts && i < in->nframes; i++)
        CHECKF(pfs_clip_frame_pts(idx, i) == pts[i],
               "%s: frame %" PRId64 " pts %" PRId64 ", ffprobe %" PRId64, name, i,
               pfs_clip_frame_pts(idx, i), pts[i]);
    free(pts);

    int64_t nref;
    uint64_t *ref = reference_hashes(path, in, &nref);
    double ms;
    uint64_t *h = linear_hashes(idx, &ms);
    CHECKF(nref == in->nframes, "%s: ffmpeg decoded %" PRId64 " frames", name, nref);
    int64_t bad = 0;
    for (int64_t i = 0; i < nref && i < in->nframes; i++)
        bad += h[i] != ref[i];
    CHECKF(bad == 0, "%s: %" PRId64 " pictures differ from ffmpeg's", name, bad);
    fprintf(stderr, "  %-26s %4" PRId64 " frames %-7s %-12s %5.2f ms/frame sequential\n", name,
            in->nframes, in->codec, in->pix_fmt, ms);
    free(ref);
    *out = idx;
    return h;
}

/* --- tests --------------------------------------------------------------- */

static void test_names(void)
{
    const char *yes[] = {"A.mov", "a.MOV", "b.mp4", "c.m4v", "d.MXF", "e.mkv", "f.avi",
                         "g.mts", "h.M2TS", "i.webm", "x.y.mov"};
    const char *no[] = {"a.exr", "mov", "a.mov.txt", "a.", ".mov", "a.mp", "a.mp44", ""};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        CHECKF(pfs_clip_name(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        CHECKF(!pfs_clip_name(no[i]), "%s", no[i]);
}

static uint64_t *sample_hashes; /* the sample clip's pictures, linear decode */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_sample(void)
{
    double t0 = now_ms();
    struct pfs_clip_index *idx = build(sample);
    double build_ms = now_ms() - t0;
    pfs_clip_index_free(idx);

    const struct expect e = {"h264", "yuv420p", "", 1280, 720, 24, 1, false};
    sample_hashes = check_clip(sample, &e, &idx);
    const struct pfs_clip_info *in = pfs_clip_index_info(idx);
    struct stat st;
    REQUIRE(stat(sample, &st) == 0);
    CHECK(in->src_size == st.st_size && in->src_mtime.tv_sec == st.st_mtim.tv_sec &&
          in->src_mtime.tv_nsec == st.st_mtim.tv_nsec);
    CHECK(in->tb_num == 1 && in->tb_den == 12288 && in->sar_num == 1 && in->sar_den == 1);

    uint8_t *blob = NULL;
    size_t len = 0;
    REQUIRE(pfs_clip_index_save(idx, &blob, &len, NULL) == 0);
    fprintf(stderr, "  index build %.1f ms, blob %zu bytes (%.1f per frame)\n", build_ms, len,
            (double)len / (double)in->nframes);
    free(blob);

    /* Random access on a clip with one keyframe: every seek decodes from
     * frame 0; the pool keeps earlier decoders to continue from. */
    enum { RANDOM = 50 };
    double times[RANDOM];
    check_shuffled(idx, sample_hashes, RANDOM, 0, 7, times);
    qsort(times, RANDOM, sizeof *times, cmp_double);
    fprintf(stderr, "  random access over %d frames: median %.1f ms, worst %.1f ms\n", RANDOM,
            (times[RANDOM / 2 - 1] + times[RANDOM / 2]) / 2, times[RANDOM - 1]);
    check_shuffled(idx, sample_hashes, 8, 1, 11, NULL);
    pfs_clip_index_free(idx);
}

static void test_dog(void)
{
    const struct expect e = {"h264", "yuv420p", "00:00:00:00", 1280, 720, 30000, 1001, false};
    struct pfs_clip_index *idx;
    uint64_t *h = check_clip(dog, &e, &idx);
    check_shuffled(idx, h, 8, 1, 3, NULL);
    free(h);
    pfs_clip_index_free(idx);
}

static void test_walk(void)
{
    const struct expect e = {"h264", "yuvj420p", "", 640, 480, 30, 1, false};
    struct pfs_clip_index *idx;
    uint64_t *h = check_clip(walk, &e, &idx);
    CHECK(pfs_clip_index_info(idx)->range == 2); /* AVCOL_RANGE_JPEG */
    check_shuffled(idx, h, 20, 2, 5, NULL);
    free(h);
    pfs_clip_index_free(idx);
}

/* A 48-frame clip made from the sample by ffmpeg with these filters and
 * encoder options; false (with a message) when ffmpeg cannot make it. */
static bool derive(const char *out, const char *filters, const char *args)
{
    if (run("ffmpeg -v error -y -i '%s' -frames:v 48 -an -vf '%s' %s '%s'", sample, filters, args,
            out) == 0)
        return true;
    fprintf(stderr, "  cannot make %s with ffmpeg -vf %s %s\n", out, filters, args);
    check_failures++;
    return false;
}

static const char *const small = "scale=640:360";

static void check_derived(const char *name, const char *filters, const char *args,
                          const struct expect *e)
{
    const char *path = tmp_path(name);
    if (!derive(path, filters, args))
        return;
    struct pfs_clip_index *idx;
    uint64_t *h = check_clip(path, e, &idx);
    check_shuffled(idx, h, 24, 1, 9, NULL);
    free(h);
    pfs_clip_index_free(idx);
}

static void test_prores_dnxhr(void)
{
    /* prores_ks is slow: a quarter of the pixels. */
    const struct expect prores = {"prores", "yuv422p10le", "01:02:03:04", 320, 180, 24, 1, false};
    check_derived("prores.mov", "scale=320:180",
                  "-c:v prores_ks -profile:v 3 -timecode 01:02:03:04", &prores);
    const struct expect dnx = {"dnxhd", "yuv422p", "00:00:00:00", 640, 360, 24, 1, false};
    check_derived("dnxhr.mxf", small, "-c:v dnxhd -profile:v dnxhr_hq -pix_fmt yuv422p", &dnx);
}

static void test_hevc10(void)
{
    if (run("ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libx265") != 0) {
        fprintf(stderr, "  libx265 not available: 10-bit H.265 skipped\n");
        return;
    }
    const struct expect e = {"hevc", "yuv420p10le", "", 640, 360, 24, 1, false};
    check_derived("hevc10.mp4", small,
                  "-c:v libx265 -pix_fmt yuv420p10le -x265-params log-level=error:keyint=16",
                  &e);
}

/* Reading N consecutive frames costs one decoder and one seek, across GOPs
 * too. */
static void check_sequential(const struct pfs_clip_index *idx, int64_t from, int64_t count)
{
    struct pfs_clip_decoders *d = pool_new(0);
    for (int64_t i = from; i < from + count; i++) {
        AVFrame *pic = NULL;
        CHECK(pfs_clip_decode(d, idx, i, &pic, NULL) == 0);
        av_frame_free(&pic);
    }
    struct pfs_clip_decoder_stats st;
    pfs_clip_decoder_stats(d, &st);
    CHECKF(st.seeks == 1 && st.opens == 1 && st.decodes == (uint64_t)count,
           "seeks %" PRIu64 " opens %" PRIu64 " decodes %" PRIu64, st.seeks, st.opens,
           st.decodes);
    CHECK(st.pictures >= (uint64_t)count);
    pfs_clip_decoders_free(d);
}

static void test_open_gop(void)
{
    const char *path = tmp_path("opengop.mkv");
    if (!derive(path, small,
                "-c:v libx264 -x264-params open_gop=1:keyint=12:bframes=3:log-level=error"))
        return;
    /* Open GOPs: a keyframe after the first followed in decode order by a
     * picture shown before it (a leading picture). */
    FILE *f = popen_f("ffprobe -v error -select_streams v:0 -show_entries packet=pts,flags "
                      "-of csv=p=0 '%s'",
                      path);
    long long pts, key_pts = -1;
    char flags[16];
    int keys = 0, leading = 0;
    while (fscanf(f, "%lld,%15s", &pts, flags) == 2) {
        if (flags[0] == 'K' && keys++ > 0)
            key_pts = pts;
        else if (key_pts >= 0 && pts < key_pts)
            leading++;
        else
            key_pts = -1;
    }
    pclose(f);
    CHECKF(keys >= 4 && leading > 0, "%d keyframes, %d leading pictures", keys, leading);

    const struct expect e = {"h264", "yuv420p", "", 640, 360, 24, 1, false};
    struct pfs_clip_index *idx;
    uint64_t *h = check_clip(path, &e, &idx);
    check_shuffled(idx, h, 48, 1, 21, NULL);
    check_shuffled(idx, h, 48, 3, 22, NULL);
    check_sequential(idx, 5, 40);
    free(h);
    pfs_clip_index_free(idx);
}

static void test_vfr(void)
{
    /* Every third frame 10 ms late; the encoder keeps the filter's time base. */
    const char *path = tmp_path("vfr.mp4");
    if (!derive(path, "scale=640:360,setpts=N/24/TB+if(mod(N\\,3)\\,0\\,0.01/TB)",
                "-fps_mode passthrough -enc_time_base -1 -video_track_timescale 24000 "
                "-c:v libx264 -x264-params log-level=error"))
        return;
    struct pfs_clip_index *idx = build(path);
    const struct pfs_clip_info *in = pfs_clip_index_info(idx);
    CHECK(in->variable_rate);
    const struct expect e = {"h264", "yuv420p", "", 640, 360, in->rate_num, in->rate_den, true};
    pfs_clip_index_free(idx);
    uint64_t *h = check_clip(path, &e, &idx);
    check_shuffled(idx, h, 16, 1, 4, NULL);
    free(h);
    pfs_clip_index_free(idx);
}

/* An edit list that starts mid-GOP: the packets before it feed the decoder
 * but are not frames. */
static void test_edit_list(void)
{
    const char *path = tmp_path("trimmed.mp4");
    REQUIRE(run("ffmpeg -v error -y -ss 2 -i '%s' -c copy -an '%s'", sample, path) == 0);
    const struct expect e = {"h264", "yuv420p", "", 1280, 720, 24, 1, false};
    struct pfs_clip_index *idx;
    uint64_t *h = check_clip(path, &e, &idx);
    CHECKF(nframes(idx) < 247 - 24, "%" PRId64 " frames", nframes(idx));
    CHECK(pfs_clip_frame_pts(idx, 0) >= 0);
    uint8_t *blob = NULL;
    size_t len = 0;
    REQUIRE(pfs_clip_index_save(idx, &blob, &len, NULL) == 0);
    size_t packets = (len - 200) / 17; /* header and checksum, 17 bytes a packet */
    CHECKF(packets > (size_t)nframes(idx), "%zu packets for %" PRId64 " frames", packets,
           nframes(idx));
    free(blob);
    check_shuffled(idx, h, 4, 1, 2, NULL);
    free(h);
    pfs_clip_index_free(idx);
}

static void test_sequential(void)
{
    struct pfs_clip_index *idx = build(sample);
    check_sequential(idx, 100, 48);
    pfs_clip_index_free(idx);
    const char *prores = tmp_path("prores.mov");
    if (access(prores, R_OK) == 0) {
        idx = build(prores);
        check_sequential(idx, 0, 48);
        pfs_clip_index_free(idx);
    }
}

struct waiter {
    struct pfs_clip_decoders *d;
    const struct pfs_clip_index *idx;
    int64_t frame;
    uint64_t hash;
    int rc;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    w->rc = decode_hash(w->d, w->idx, w->frame, &w->hash, NULL);
    return NULL;
}

/* A request for the frame after the one a busy decoder is on waits for it
 * and continues from it instead of opening a second decoder. */
static void test_waits_for_busy(void)
{
    struct pfs_clip_index *idx = build(sample);
    struct pfs_clip_decoders *d = pool_new(0);
    struct waiter a = {d, idx, 200, 0, -1}, b = {d, idx, 201, 0, -1};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, waiter_main, &a);
    usleep(100000); /* a is decoding from frame 0, some 200 pictures */
    pthread_create(&tb, NULL, waiter_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.rc == 0 && a.hash == sample_hashes[200]);
    CHECK(b.rc == 0 && b.hash == sample_hashes[201]);
    struct pfs_clip_decoder_stats st;
    pfs_clip_decoder_stats(d, &st);
    CHECKF(st.opens == 1 && st.seeks == 1, "opens %" PRIu64 " seeks %" PRIu64, st.opens,
           st.seeks);
    pfs_clip_decoders_free(d);
    pfs_clip_index_free(idx);
}

static void test_save_load(void)
{
    const char *clips[] = {sample, dog, walk, tmp_path("opengop.mkv")};
    for (size_t c = 0; c < sizeof clips / sizeof *clips; c++) {
        if (access(clips[c], R_OK) != 0)
            continue;
        struct pfs_clip_index *idx = build(clips[c]), *back = NULL;
        uint8_t *blob = NULL, *again = NULL;
        size_t len = 0, len2 = 0;
        REQUIRE(pfs_clip_index_save(idx, &blob, &len, NULL) == 0);
        pfs_error err;
        REQUIRE(pfs_clip_index_load(clips[c], blob, len, &back, &err) == 0);
        const struct pfs_clip_info *a = pfs_clip_index_info(idx), *b = pfs_clip_index_info(back);
        CHECK(memcmp(a, b, sizeof *a) == 0); /* both calloc'd: padding too */
        for (int64_t i = 0; i < a->nframes; i++)
            CHECK(pfs_clip_frame_pts(idx, i) == pfs_clip_frame_pts(back, i));
        REQUIRE(pfs_clip_index_save(back, &again, &len2, NULL) == 0);
        CHECK(len == len2 && memcmp(blob, again, len) == 0);
        CHECK(len <= 300 + 20 * (size_t)a->nframes);
        /* A loaded index decodes like a built one. */
        struct pfs_clip_decoders *d = pool_new(1);
        uint64_t h0 = 0, h1 = 0;
        CHECK(decode_hash(d, idx, a->nframes / 2, &h0, NULL) == 0);
        CHECK(decode_hash(d, back, a->nframes / 2, &h1, NULL) == 0);
        CHECK(h0 == h1);
        pfs_clip_decoders_free(d);
        free(again);
        free(blob);
        pfs_clip_index_free(back);
        pfs_clip_index_free(idx);
    }
}

static void reseal(uint8_t *blob, size_t len)
{
    uint64_t h = XXH3_64bits(blob, len - 8);
    for (int i = 0; i < 8; i++)
        blob[len - 8 + (size_t)i] = (uint8_t)(h >> (8 * i));
}

static int load_rc(const uint8_t *blob, size_t len)
{
    struct pfs_clip_index *idx = NULL;
    pfs_error err;
    int rc = pfs_clip_index_load(sample, blob, len, &idx, &err);
    pfs_clip_index_free(idx);
    CHECK(rc != 0 || idx);
    return rc;
}

static void test_damaged_blob(void)
{
    struct pfs_clip_index *idx = build(sample);
    uint8_t *blob = NULL;
    size_t len = 0;
    REQUIRE(pfs_clip_index_save(idx, &blob, &len, NULL) == 0);
    size_t packets_at = len - 8 - 17 * (size_t)nframes(idx); /* no discarded packets */
    pfs_clip_index_free(idx);
    uint8_t *copy = malloc(len);

    for (size_t n = 0; n < len; n += n < 256 ? 1 : 97)
        CHECKF(load_rc(blob, n) == EINVAL, "truncated to %zu bytes", n);
    srand(1);
    for (int k = 0; k < 2000; k++) {
        memcpy(copy, blob, len);
        size_t at = k < 300 ? (size_t)k : (size_t)rand() % len;
        copy[at] ^= (uint8_t)(1 + rand() % 255);
        CHECKF(load_rc(copy, len) == EINVAL, "byte %zu flipped", at);
    }
    /* Damage the checksum cannot see: fields out of range, resealed. */
    const size_t flags_at = packets_at + 16;
    const struct {
        size_t at, size;
        uint32_t value;
    } fields[] = {{8, 4, 2} /* version */, {12, 4, 0xffffffffu} /* stream */,
                  {16, 4, 0} /* width */, {flags_at, 1, 0x80} /* a packet's flags */};
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
        memcpy(copy, blob, len);
        for (size_t i = 0; i < fields[f].size; i++)
            copy[fields[f].at + i] = (uint8_t)(fields[f].value >> (8 * i));
        reseal(copy, len);
        CHECKF(load_rc(copy, len) == EINVAL, "field at %zu", fields[f].at);
    }
    /* Every packet marked discarded: no frames. */
    memcpy(copy, blob, len);
    for (size_t at = flags_at; at < len - 8; at += 17)
        copy[at] = 2;
    reseal(copy, len);
    CHECK(load_rc(copy, len) == EINVAL);
    /* Random bytes, sealed: parsed or refused, never a crash. */
    for (int k = 0; k < 200; k++) {
        memcpy(copy, blob, len);
        for (int j = 0; j < 8; j++)
            copy[(size_t)rand() % (len - 8)] = (uint8_t)rand();
        memcpy(copy, "PFSCLIP", 8);
        copy[8] = 1, copy[9] = copy[10] = copy[11] = 0;
        reseal(copy, len);
        int rc = load_rc(copy, len);
        CHECK(rc == 0 || rc == EINVAL);
    }
    free(copy);
    free(blob);
}

static void test_errors(void)
{
    struct pfs_clip_index *idx = NULL;
    pfs_error err;
    CHECK(pfs_clip_index_build(tmp_path("missing.mov"), &idx, &err) == ENOENT && !idx);
    CHECK(strstr(err.msg, "missing.mov"));

    const char *text = tmp_path("notes.mov");
    REQUIRE(run("echo 'not a movie' > '%s'", text) == 0);
    CHECK(pfs_clip_index_build(text, &idx, &err) == EINVAL && !idx);
    CHECK(strstr(err.msg, "notes.mov"));

    const char *audio = tmp_path("audio.mp4");
    REQUIRE(run("ffmpeg -v error -y -f lavfi -i sine=d=0.5 -c:a aac '%s'", audio) == 0);
    CHECK(pfs_clip_index_build(audio, &idx, &err) == EINVAL && !idx);
    CHECKF(strstr(err.msg, "audio.mp4") && strstr(err.msg, "no video"), "%s", err.msg);

    idx = build(walk);
    struct pfs_clip_decoders *d = pool_new(0);
    AVFrame *pic = NULL;
    CHECK(pfs_clip_decode(d, idx, -1, &pic, &err) == ERANGE && !pic);
    CHECK(pfs_clip_decode(d, idx, nframes(idx), &pic, &err) == ERANGE && !pic);
    CHECK(strstr(err.msg, "walk_fullrange.mkv") && strstr(err.msg, "89"));
    CHECK(pfs_clip_frame_pts(idx, nframes(idx)) == INT64_MIN);

    /* A decoder is never opened on another version of the file. */
    const char *copy = tmp_path("walk.mkv");
    REQUIRE(run("cp '%s' '%s'", walk, copy) == 0);
    struct pfs_clip_index *old = build(copy);
    REQUIRE(run("printf x >> '%s'", copy) == 0);
    CHECK(pfs_clip_decode(d, old, 0, &pic, &err) == EIO && !pic);
    CHECKF(strstr(err.msg, "walk.mkv") && strstr(err.msg, "changed"), "%s", err.msg);
    pfs_clip_index_free(old);
    pfs_clip_decoders_free(d);
    pfs_clip_index_free(idx);
}

/* The frame of idx with this pts, or -1. */
static int64_t frame_at(const struct pfs_clip_index *idx, int64_t pts)
{
    for (int64_t i = 0; i < nframes(idx); i++)
        if (pfs_clip_frame_pts(idx, i) == pts)
            return i;
    return -1;
}

/* Frame i of a damaged clip either is exactly the intact clip's frame with
 * its pts, or fails with EIO naming the frame. */
static void check_outcome(struct pfs_clip_decoders *d, const struct pfs_clip_index *idx,
                          int64_t i, const struct pfs_clip_index *intact, const uint64_t *expect,
                          bool fails)
{
    uint64_t h = 0;
    pfs_error err;
    int rc = decode_hash(d, idx, i, &h, &err);
    if (fails) {
        char name[32];
        snprintf(name, sizeof name, "frame %" PRId64 " ", i);
        CHECKF(rc == EIO && strstr(err.msg, name), "frame %" PRId64 ": rc %d %s", i, rc,
               rc ? err.msg : "decoded");
        return;
    }
    int64_t j = frame_at(intact, pfs_clip_frame_pts(idx, i));
    CHECKF(rc == 0 && j >= 0 && h == expect[j], "frame %" PRId64 ": rc %d %s", i, rc,
           rc ? err.msg : "differs from the intact clip's");
}

/* A truncated clip indexes the packets before the cut: its frames decode
 * as in the intact clip. The same clip damaged in place after indexing
 * (zeroed from the same byte, size and mtime kept) keeps every frame in its
 * index: those the truncated clip has still decode, the others fail with
 * EIO. */
static void test_truncated(void)
{
    const char *fast = tmp_path("faststart.mp4"), *cut = tmp_path("truncated.mp4");
    REQUIRE(run("ffmpeg -v error -y -i '%s' -c copy -movflags +faststart '%s'", sample, fast) ==
            0);
    struct stat st;
    REQUIRE(stat(fast, &st) == 0);
    off_t at = st.st_size * 6 / 10;
    REQUIRE(run("head -c %lld '%s' > '%s'", (long long)at, fast, cut) == 0);

    struct pfs_clip_index *intact = build(fast);
    uint64_t *expect = linear_hashes(intact, NULL);
    struct pfs_clip_index *trunc = build(cut);
    int64_t n = nframes(trunc);
    CHECKF(n > 100 && n < nframes(intact), "%" PRId64 " frames indexed", n);
    struct pfs_clip_decoders *d = pool_new(0);
    for (int64_t i = 0; i < n; i++)
        check_outcome(d, trunc, i, intact, expect, false);
    srand(5);
    for (int k = 0; k < 4; k++)
        check_outcome(d, trunc, rand() % n, intact, expect, false);
    AVFrame *pic = NULL;
    CHECK(pfs_clip_decode(d, trunc, n, &pic, NULL) == ERANGE);
    pfs_clip_decoders_free(d);

    const char *dmg = tmp_path("damaged.mp4");
    REQUIRE(run("cp '%s' '%s'", fast, dmg) == 0);
    struct pfs_clip_index *idx = build(dmg);
    int fd = open(dmg, O_WRONLY);
    REQUIRE(fd >= 0);
    size_t len = (size_t)(st.st_size - at);
    uint8_t *zero = calloc(1, len);
    REQUIRE(pwrite(fd, zero, len, at) == (ssize_t)len);
    free(zero);
    struct timespec times[2] = {{0, UTIME_OMIT}, pfs_clip_index_info(idx)->src_mtime};
    REQUIRE(futimens(fd, times) == 0);
    close(fd);
    CHECK(nframes(idx) == nframes(intact));
    d = pool_new(0);
    int64_t lost = 0;
    for (int64_t i = 0; i < nframes(idx); i++) {
        if (frame_at(trunc, pfs_clip_frame_pts(idx, i)) >= 0)
            check_outcome(d, idx, i, intact, expect, false);
        else
            lost++;
    }
    /* Each failure decodes from frame 0 up to the damage: a sample of them. */
    int64_t checked = 0;
    for (int64_t i = nframes(idx) - 1; i >= 0; i -= lost / 4 + 1) {
        if (frame_at(trunc, pfs_clip_frame_pts(idx, i)) < 0) {
            check_outcome(d, idx, i, intact, expect, true);
            checked++;
        }
    }
    CHECK(lost > 0 && checked > 0);
    fprintf(stderr, "  cut at 60%%: %" PRId64 " of %" PRId64 " frames indexed and intact; "
                    "zeroed there: the other %" PRId64 " fail (%" PRId64 " checked)\n",
            n, nframes(intact), lost, checked);
    pfs_clip_decoders_free(d);
    pfs_clip_index_free(idx);
    pfs_clip_index_free(trunc);
    pfs_clip_index_free(intact);
    free(expect);
}

struct job {
    struct pfs_clip_decoders *d;
    const struct pfs_clip_index *clips[2];
    const uint64_t *expect[2];
    unsigned seed;
    int decoded, bad;
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    unsigned seed = j->seed;
    for (int k = 0; k < 24; k++) {
        int c = rand_r(&seed) % 2;
        int64_t i = rand_r(&seed) % nframes(j->clips[c]);
        /* Runs of consecutive frames, as readers make them. */
        for (int64_t f = i; f < i + 3 && f < nframes(j->clips[c]); f++) {
            uint64_t h = 0;
            if (decode_hash(j->d, j->clips[c], f, &h, NULL) != 0 || h != j->expect[c][f])
                j->bad++;
            else
                j->decoded++;
        }
    }
    return NULL;
}

static void test_threads(void)
{
    struct pfs_clip_index *a = build(tmp_path("opengop.mkv")), *b = build(walk);
    uint64_t *ha = linear_hashes(a, NULL), *hb = linear_hashes(b, NULL);
    struct pfs_clip_decoders *d = pool_new(3);
    enum { N = 4 };
    struct job jobs[N];
    pthread_t t[N];
    for (int k = 0; k < N; k++) {
        jobs[k] = (struct job){d, {a, b}, {ha, hb}, (unsigned)k + 1, 0, 0};
        pthread_create(&t[k], NULL, job_main, &jobs[k]);
    }
    uint64_t decoded = 0;
    for (int k = 0; k < N; k++) {
        pthread_join(t[k], NULL);
        CHECKF(jobs[k].bad == 0, "thread %d: %d frames differ", k, jobs[k].bad);
        decoded += (uint64_t)jobs[k].decoded;
    }
    struct pfs_clip_decoder_stats st;
    pfs_clip_decoder_stats(d, &st);
    CHECK(st.decodes == decoded);
    fprintf(stderr, "  4 threads, 2 clips, 3 decoders: %" PRIu64 " frames, %" PRIu64
                    " seeks, %" PRIu64 " opens\n",
            st.decodes, st.seeks, st.opens);
    pfs_clip_decoders_free(d);
    free(ha);
    free(hb);
    pfs_clip_index_free(a);
    pfs_clip_index_free(b);
}

int main(void)
{
    const char *root = getenv("PFS_SOURCE_DIR");
    root = root ? root : ".";
    snprintf(sample, sizeof sample, "%s/samples/dailies/A002/A002C007.mp4", root);
    snprintf(dog, sizeof dog, "%s/tests/data/video/dog_2997_audio_tmcd.mp4", root);
    snprintf(walk, sizeof walk, "%s/tests/data/video/walk_fullrange.mkv", root);
    REQUIRE(access(sample, R_OK) == 0 && access(dog, R_OK) == 0 && access(walk, R_OK) == 0);
    REQUIRE(run("command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null") == 0);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pfs-test-clip-XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    /* The damaged clips make FFmpeg's decoders complain at length; the
     * library leaves FFmpeg's logging to the program, and this one wants
     * only its own lines. */
    av_log_set_level(AV_LOG_QUIET);

    RUN(test_names);
    RUN(test_sample);
    RUN(test_dog);
    RUN(test_walk);
    RUN(test_prores_dnxhr);
    RUN(test_hevc10);
    RUN(test_open_gop);
    RUN(test_vfr);
    RUN(test_edit_list);
    RUN(test_sequential);
    RUN(test_waits_for_busy);
    RUN(test_save_load);
    RUN(test_damaged_blob);
    RUN(test_errors);
    RUN(test_truncated);
    RUN(test_threads);

    free(sample_hashes);
    if (!check_failures)
        run("rm -rf '%s'", tmpdir);
    else
        fprintf(stderr, "kept %s for inspection\n", tmpdir);
    return CHECK_DONE();
}
