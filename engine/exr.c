/*
 * exr.c - source EXRs in, corrected EXRs out, through OpenEXRCore's C API.
 *
 * A probe keeps no file descriptor and no OpenEXR context: the engine holds
 * probes of thousands of frames. What it keeps instead is the source header
 * itself, as bytes, rewritten into a minimal single-part scanline header
 * (layout attributes that would contradict the output - tiles, type, name,
 * version, chunkCount, multiView - are removed; everything else is kept
 * byte for byte). OpenEXRCore 3.1 has no detached attribute list, so to
 * build an output header the kept bytes are parsed again from memory by a
 * read context (no I/O, a few microseconds) and exr_copy_unset_attributes()
 * moves them into the write context after the layout we own has been set.
 *
 * Output size is known before any pixel: the header is written through
 * exr_write_header() into a counting sink; an uncompressed, one scanline per
 * chunk file then has an offset table of 8 bytes per line and, per line, an
 * 8-byte chunk leader plus width * bytes per pixel. pfs_exr_encode() builds
 * the same header the same way, so the two cannot disagree, and checks the
 * final length against the formula anyway.
 *
 * Library messages never reach stderr: each context gets an error handler
 * that copies the first message into the per-call I/O state (the context's
 * user data), so concurrent decodes of different files share nothing.
 */
#include "exr.h"
#include "exr_rgba.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openexr.h>

/* Indices of the kept channels in the interleaved RGBA image. */
enum { CH_R, CH_G, CH_B, CH_A, CH_COUNT };
static const char *const channel_names[CH_COUNT] = {"R", "G", "B", "A"};

struct pfs_exr_source {
    char *path;
    struct pfs_exr_layout layout;
    uint8_t p_linear[CH_COUNT]; /* perceptual hint of each kept channel */
    int long_names;             /* a kept attribute needs the long-name flag */
    uint8_t *header;            /* rewritten source header, see header_rewrite */
    size_t header_len;
    int via_rgba;               /* pixels need pfs_exr_decode_rgba (DWA on 3.1) */
    int synthetic;              /* made by pfs_exr_source_new: no file to decode */
};

/* Per-call state handed to OpenEXRCore as user data: the source file or the
 * in-memory header to read, the sink to write, and the first library message. */
struct exr_io {
    const char *path;
    int fd;                /* read from this file when >= 0 ... */
    const uint8_t *mem;    /* ... else from these bytes */
    size_t mem_len;
    uint8_t *out;          /* write sink; NULL to count only */
    size_t out_cap;
    int out_fixed;         /* out_cap is the promised size: never grow */
    uint64_t extent;       /* one past the highest byte written */
    char msg[512];
};

static void io_init(struct exr_io *io, const char *path)
{
    memset(io, 0, sizeof *io);
    io->path = path;
    io->fd = -1;
}

static const char *io_msg(const struct exr_io *io, exr_result_t rv)
{
    return io->msg[0] ? io->msg : exr_get_default_error_message(rv);
}

static void on_exr_error(exr_const_context_t ctxt, exr_result_t code, const char *msg)
{
    void *ud = NULL;
    if (exr_get_user_data(ctxt, &ud) != EXR_ERR_SUCCESS || !ud)
        return;
    struct exr_io *io = ud;
    /* The first message is the cause; later ones are consequences. */
    if (!io->msg[0])
        snprintf(io->msg, sizeof io->msg, "%s",
                 msg ? msg : exr_get_default_error_message(code));
}

static int64_t io_read(exr_const_context_t ctxt, void *ud, void *buffer, uint64_t sz,
                       uint64_t offset, exr_stream_error_func_ptr_t error_cb)
{
    struct exr_io *io = ud;
    if (io->fd < 0) {
        if (offset >= io->mem_len)
            return 0;
        uint64_t n = io->mem_len - offset < sz ? io->mem_len - offset : sz;
        memcpy(buffer, io->mem + offset, n);
        return (int64_t)n;
    }
    uint64_t done = 0;
    while (done < sz) {
        ssize_t n = pread(io->fd, (uint8_t *)buffer + done, sz - done, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            char buf[128];
            error_cb(ctxt, EXR_ERR_READ_IO, "read of %llu bytes at offset %llu failed: %s",
                     (unsigned long long)sz, (unsigned long long)offset,
                     strerror_r(errno, buf, sizeof buf));
            return -1;
        }
        if (n == 0)
            break;
        done += (uint64_t)n;
    }
    return (int64_t)done;
}

static int64_t io_size(exr_const_context_t ctxt, void *ud)
{
    struct exr_io *io = ud;
    if (io->fd < 0)
        return -1; /* an in-memory header has no chunks to validate against */
    struct stat st;
    return fstat(io->fd, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* pwrite semantics: OpenEXRCore writes the offset table last, backwards. */
static int64_t io_write(exr_const_context_t ctxt, void *ud, const void *buffer, uint64_t sz,
                        uint64_t offset, exr_stream_error_func_ptr_t error_cb)
{
    struct exr_io *io = ud;
    uint64_t end = offset + sz;
    if (io->out) {
        if (end > io->out_cap) {
            if (io->out_fixed) {
                error_cb(ctxt, EXR_ERR_WRITE_IO,
                         "write of %llu bytes at %llu beyond the predicted size %zu",
                         (unsigned long long)sz, (unsigned long long)offset, io->out_cap);
                return -1;
            }
            size_t cap = io->out_cap;
            while (cap < end)
                cap *= 2;
            uint8_t *p = realloc(io->out, cap);
            if (!p) {
                error_cb(ctxt, EXR_ERR_OUT_OF_MEMORY, "out of memory for the header");
                return -1;
            }
            io->out = p;
            io->out_cap = cap;
        }
        memcpy(io->out + offset, buffer, sz);
    }
    if (end > io->extent)
        io->extent = end;
    return (int64_t)sz;
}

static exr_context_initializer_t io_initializer(struct exr_io *io)
{
    exr_context_initializer_t init = EXR_DEFAULT_CONTEXT_INITIALIZER;
    init.error_handler_fn = on_exr_error;
    init.user_data = io;
    init.read_fn = io_read;
    init.size_fn = io_size;
    init.write_fn = io_write;
    return init;
}

static int open_source(struct exr_io *io, exr_context_t *ctxt, pfs_error *err)
{
    io->fd = open(io->path, O_RDONLY | O_CLOEXEC);
    if (io->fd < 0) {
        int e = errno;
        char buf[128];
        return pfs_error_set(err, e == ENOENT ? ENOENT : EIO, "%s: cannot open: %s", io->path,
                             strerror_r(e, buf, sizeof buf));
    }
    exr_context_initializer_t init = io_initializer(io);
    exr_result_t rv = exr_start_read(ctxt, io->path, &init);
    if (rv != EXR_ERR_SUCCESS) {
        int code = rv == EXR_ERR_READ_IO || rv == EXR_ERR_FILE_ACCESS ? EIO : EINVAL;
        pfs_error_set(err, code, "%s: not a readable OpenEXR file: %s", io->path,
                      io_msg(io, rv));
        exr_finish(ctxt);
        close(io->fd);
        io->fd = -1;
        return code;
    }
    return 0;
}

static void close_source(struct exr_io *io, exr_context_t *ctxt)
{
    exr_finish(ctxt);
    if (io->fd >= 0)
        close(io->fd);
    io->fd = -1;
}

static struct pfs_rect rect_from_box(exr_attr_box2i_t b)
{
    return (struct pfs_rect){b.min.x, b.min.y, b.max.x, b.max.y};
}

/* Checks that the file is something we can correct and fills the layout.
 * ptypes receives the source pixel type of R, G, B, A (-1 when absent);
 * *via_rgba is set when only the RGBA interface can decode the pixels. */
static int check_part(exr_const_context_t ctxt, const char *path, struct pfs_exr_layout *lay,
                      int ptypes[CH_COUNT], uint8_t p_linear[CH_COUNT], int *via_rgba,
                      pfs_error *err)
{
    *via_rgba = 0;
    int nparts = 0;
    exr_result_t rv = exr_get_count(ctxt, &nparts);
    if (rv != EXR_ERR_SUCCESS || nparts != 1)
        return pfs_error_set(err, EINVAL, "%s: multi-part file (%d parts) is not supported",
                             path, nparts);
    exr_storage_t storage;
    rv = exr_get_storage(ctxt, 0, &storage);
    if (rv != EXR_ERR_SUCCESS)
        return pfs_error_set(err, EINVAL, "%s: unknown storage type", path);
    if (storage == EXR_STORAGE_DEEP_SCANLINE || storage == EXR_STORAGE_DEEP_TILED)
        return pfs_error_set(err, EINVAL, "%s: deep image data is not supported", path);
    if (storage != EXR_STORAGE_SCANLINE && storage != EXR_STORAGE_TILED)
        return pfs_error_set(err, EINVAL, "%s: unknown storage type %d", path, (int)storage);

    exr_compression_t comp = EXR_COMPRESSION_NONE;
    rv = exr_get_compression(ctxt, 0, &comp);
    if (rv == EXR_ERR_SUCCESS &&
        (comp == EXR_COMPRESSION_DWAA || comp == EXR_COMPRESSION_DWAB)) {
        /* OpenEXRCore before 3.2 has no DWA decoder ("not yet implemented
         * in C"): such files are decoded through the library's RGBA
         * interface instead (exr_rgba.c). */
        int maj = 0, min = 0, patch = 0;
        exr_get_library_version(&maj, &min, &patch, NULL);
        if (maj < 3 || (maj == 3 && min < 2))
            *via_rgba = 1;
    }

    const exr_attr_chlist_t *chl = NULL;
    rv = exr_get_channels(ctxt, 0, &chl);
    if (rv != EXR_ERR_SUCCESS || !chl)
        return pfs_error_set(err, EINVAL, "%s: no channel list", path);
    for (int c = 0; c < CH_COUNT; c++)
        ptypes[c] = -1;
    for (int i = 0; i < chl->num_channels; i++) {
        const exr_attr_chlist_entry_t *e = &chl->entries[i];
        for (int c = 0; c < CH_COUNT; c++) {
            if (strcmp(e->name.str, channel_names[c]) != 0)
                continue;
            if (e->x_sampling != 1 || e->y_sampling != 1)
                return pfs_error_set(err, EINVAL,
                                     "%s: channel %s is subsampled (%d x %d), which is not "
                                     "supported",
                                     path, channel_names[c], e->x_sampling, e->y_sampling);
            ptypes[c] = (int)e->pixel_type;
            p_linear[c] = e->p_linear;
        }
    }
    if (ptypes[CH_R] < 0 || ptypes[CH_G] < 0 || ptypes[CH_B] < 0) {
        char names[256] = "";
        size_t used = 0;
        for (int i = 0; i < chl->num_channels && used + 1 < sizeof names; i++) {
            int n = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                             chl->entries[i].name.str);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        if (used >= sizeof names)
            strcpy(names + sizeof names - 4, "...");
        return pfs_error_set(err, EINVAL,
                             "%s: no R, G and B channels (has %s); luminance-only and "
                             "luminance/chroma files are not supported",
                             path, chl->num_channels ? names : "none");
    }

    exr_attr_box2i_t dw, disp;
    if (exr_get_data_window(ctxt, 0, &dw) != EXR_ERR_SUCCESS ||
        exr_get_display_window(ctxt, 0, &disp) != EXR_ERR_SUCCESS)
        return pfs_error_set(err, EINVAL, "%s: missing data or display window", path);
    if (dw.max.x < dw.min.x || dw.max.y < dw.min.y)
        return pfs_error_set(err, EINVAL, "%s: empty data window", path);
    lay->data = rect_from_box(dw);
    lay->display = rect_from_box(disp);
    lay->has_alpha = ptypes[CH_A] >= 0;
    lay->out_type = PFS_EXR_HALF;
    for (int c = 0; c < CH_COUNT; c++)
        if (ptypes[c] == EXR_PIXEL_FLOAT || ptypes[c] == EXR_PIXEL_UINT)
            lay->out_type = PFS_EXR_FLOAT;
    return 0;
}

/* --- the kept header ----------------------------------------------------- */

static const char *const dropped_attrs[] = {
    "tiles", "chunkCount", "type", "name", "version", "multiView",
};

static int attr_dropped(const char *name)
{
    for (size_t i = 0; i < sizeof dropped_attrs / sizeof *dropped_attrs; i++)
        if (strcmp(name, dropped_attrs[i]) == 0)
            return 1;
    return 0;
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* The file's header bytes, read on demand (headers are small; previews can
 * make them tens of kilobytes). */
struct header_reader {
    int fd;
    uint8_t *buf;
    size_t len, cap;
    int eof;
};

static int reader_need(struct header_reader *r, size_t n)
{
    while (r->len < n && !r->eof) {
        if (r->cap - r->len < 65536) {
            size_t cap = r->cap ? r->cap * 2 : 65536;
            uint8_t *p = realloc(r->buf, cap);
            if (!p)
                return ENOMEM;
            r->buf = p;
            r->cap = cap;
        }
        ssize_t got = pread(r->fd, r->buf + r->len, r->cap - r->len, (off_t)r->len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return EIO;
        if (got == 0)
            r->eof = 1;
        r->len += (size_t)got;
    }
    return r->len >= n ? 0 : EINVAL;
}

/* Finds the NUL-terminated header string (at most 255 characters) at *pos;
 * *at receives its offset, since the buffer may move on the next read. */
static int reader_string(struct header_reader *r, size_t *pos, size_t *at)
{
    for (size_t i = 0; i < 256; i++) {
        int rc = reader_need(r, *pos + i + 1);
        if (rc)
            return rc;
        if (r->buf[*pos + i] == '\0') {
            *at = *pos;
            *pos += i + 1;
            return 0;
        }
    }
    return EINVAL;
}

static int blob_append(uint8_t **blob, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n)
            c *= 2;
        uint8_t *q = realloc(*blob, c);
        if (!q)
            return ENOMEM;
        *blob = q;
        *cap = c;
    }
    memcpy(*blob + *len, p, n);
    *len += n;
    return 0;
}

/*
 * Copies the header of the (already validated) file at fd into src->header,
 * as a single-part scanline header: magic, version 2 (long-name flag kept),
 * every attribute but the dropped ones, the terminating NUL. A multiView
 * file's default view is its first listed one; it is recorded as the
 * standard `view` attribute so that dropping multiView loses nothing true.
 */
static int header_rewrite(int fd, struct pfs_exr_source *src, pfs_error *err)
{
    struct header_reader r = {.fd = fd};
    uint8_t *blob = NULL;
    size_t len = 0, cap = 0;
    size_t view_off = 0; /* first multiView entry, in r.buf */
    uint32_t view_len = 0;
    int have_view = 0;
    int rc = reader_need(&r, 8);
    if (rc == 0) {
        uint8_t head[8];
        memcpy(head, r.buf, 4);
        put_le32(head + 4, 2u | (get_le32(r.buf + 4) & 0x400u));
        rc = blob_append(&blob, &len, &cap, head, sizeof head);
    }
    size_t pos = 8;
    while (rc == 0) {
        size_t start = pos, name_at, type_at;
        rc = reader_string(&r, &pos, &name_at);
        if (rc || r.buf[name_at] == '\0')
            break;
        rc = reader_string(&r, &pos, &type_at);
        if (rc == 0)
            rc = reader_need(&r, pos + 4);
        if (rc)
            break;
        uint32_t size = get_le32(r.buf + pos);
        if (size > INT32_MAX) {
            rc = EINVAL;
            break;
        }
        pos += 4;
        rc = reader_need(&r, pos + size);
        if (rc)
            break;
        const char *name = (const char *)r.buf + name_at;
        const char *type = (const char *)r.buf + type_at;
        if (strcmp(name, "multiView") == 0 && size >= 4) {
            uint32_t n = get_le32(r.buf + pos);
            if (n > 0 && n <= size - 4) {
                view_off = pos + 4;
                view_len = n;
            }
        }
        if (strcmp(name, "view") == 0)
            have_view = 1;
        if (!attr_dropped(name)) {
            if (strlen(name) > 31 || strlen(type) > 31)
                src->long_names = 1;
            rc = blob_append(&blob, &len, &cap, r.buf + start, pos + size - start);
        }
        pos += size;
    }
    if (rc == 0 && view_len && !have_view) {
        uint8_t lenb[4];
        put_le32(lenb, view_len);
        rc = blob_append(&blob, &len, &cap, "view\0string", 12);
        if (rc == 0)
            rc = blob_append(&blob, &len, &cap, lenb, 4);
        if (rc == 0)
            rc = blob_append(&blob, &len, &cap, r.buf + view_off, view_len);
    }
    if (rc == 0)
        rc = blob_append(&blob, &len, &cap, "", 1);
    free(r.buf);
    if (rc) {
        free(blob);
        return pfs_error_set(err, rc, "%s: cannot copy the header: %s", src->path,
                             rc == EINVAL ? "malformed attribute"
                             : rc == ENOMEM ? "out of memory" : "read error");
    }
    src->header = blob;
    src->header_len = len;
    return 0;
}

/* --- probe ---------------------------------------------------------------- */

int pfs_exr_probe(const char *path, struct pfs_exr_source **out, pfs_error *err)
{
    *out = NULL;
    struct pfs_exr_source *src = calloc(1, sizeof *src);
    if (!src || !(src->path = strdup(path))) {
        free(src);
        return pfs_error_set(err, ENOMEM, "%s: out of memory", path);
    }
    struct exr_io io;
    io_init(&io, src->path);
    exr_context_t ctxt = NULL;
    int rc = open_source(&io, &ctxt, err);
    if (rc) {
        pfs_exr_source_free(src);
        return rc;
    }
    int ptypes[CH_COUNT];
    rc = check_part(ctxt, path, &src->layout, ptypes, src->p_linear, &src->via_rgba, err);
    if (rc == 0)
        rc = header_rewrite(io.fd, src, err);
    close_source(&io, &ctxt);
    if (rc) {
        pfs_exr_source_free(src);
        return rc;
    }
    *out = src;
    return 0;
}

/*
 * A video frame's header is written by OpenEXRCore itself into memory: for a
 * single-part scanline file, exr_write_header() emits exactly what
 * header_rewrite() keeps of a probed file (magic, version, attributes, the
 * terminating NUL), so the encoder cannot tell the two kinds apart.
 */
int pfs_exr_source_new(const char *name, const struct pfs_exr_video_header *h,
                       struct pfs_exr_source **out, pfs_error *err)
{
    *out = NULL;
    if (h->width < 1 || h->height < 1)
        return pfs_error_set(err, EINVAL, "%s: picture of %d x %d pixels", name, h->width,
                             h->height);
    struct pfs_exr_source *src = calloc(1, sizeof *src);
    if (!src || !(src->path = strdup(name))) {
        free(src);
        return pfs_error_set(err, ENOMEM, "%s: out of memory", name);
    }
    src->synthetic = 1;
    src->layout.data = (struct pfs_rect){0, 0, h->width - 1, h->height - 1};
    src->layout.display = src->layout.data;
    src->layout.out_type = PFS_EXR_HALF;

    struct exr_io io;
    io_init(&io, src->path);
    io.out_cap = 1024;
    io.out = malloc(io.out_cap);
    exr_context_initializer_t init = io_initializer(&io);
    exr_context_t ctx = NULL;
    const char *step = "start";
    exr_result_t rv = io.out ? exr_start_write(&ctx, "platefs-video.exr",
                                               EXR_WRITE_FILE_DIRECTLY, &init)
                             : EXR_ERR_OUT_OF_MEMORY;
    int part = 0;
    if (rv == EXR_ERR_SUCCESS) {
        step = "add part";
        rv = exr_add_part(ctx, NULL, EXR_STORAGE_SCANLINE, &part);
    }
    if (rv == EXR_ERR_SUCCESS) {
        step = "required attributes";
        exr_attr_box2i_t win;
        win.min.x = 0;
        win.min.y = 0;
        win.max.x = h->width - 1;
        win.max.y = h->height - 1;
        exr_attr_v2f_t swc = {{{0.f, 0.f}}};
        rv = exr_initialize_required_attr(ctx, part, &win, &win, h->pixel_aspect, &swc, 1.f,
                                          EXR_LINEORDER_INCREASING_Y, EXR_COMPRESSION_NONE);
    }
    for (int c = 0; c < CH_A && rv == EXR_ERR_SUCCESS; c++) {
        step = "channels";
        rv = exr_add_channel(ctx, part, channel_names[c], EXR_PIXEL_HALF,
                             EXR_PERCEPTUALLY_LOGARITHMIC, 1, 1);
    }
    if (rv == EXR_ERR_SUCCESS) {
        step = "chromaticities";
        const float *c = h->chromaticities;
        exr_attr_chromaticities_t chroma = {c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]};
        rv = exr_attr_set_chromaticities(ctx, part, "chromaticities", &chroma);
    }
    if (rv == EXR_ERR_SUCCESS && h->has_timecode) {
        step = "timeCode";
        exr_attr_timecode_t tc = {.time_and_flags = h->time_and_flags, .user_data = 0};
        rv = exr_attr_set_timecode(ctx, part, "timeCode", &tc);
    }
    if (rv == EXR_ERR_SUCCESS && h->fps_num > 0 && h->fps_den > 0) {
        step = "framesPerSecond";
        exr_attr_rational_t fps = {h->fps_num, (uint32_t)h->fps_den};
        rv = exr_attr_set_rational(ctx, part, "framesPerSecond", &fps);
    }
    if (rv == EXR_ERR_SUCCESS) {
        step = "header";
        rv = exr_write_header(ctx);
    }
    if (rv != EXR_ERR_SUCCESS) {
        int code = rv == EXR_ERR_OUT_OF_MEMORY ? ENOMEM : EINVAL;
        pfs_error_set(err, code, "%s: cannot build the frame header (%s): %s", name, step,
                      io_msg(&io, rv));
        exr_finish(&ctx);
        free(io.out);
        pfs_exr_source_free(src);
        return code;
    }
    size_t header_len = (size_t)io.extent;
    /* No chunks follow: finishing now would only report them missing. */
    exr_finish(&ctx);
    src->header = io.out;
    src->header_len = header_len;
    *out = src;
    return 0;
}

void pfs_exr_source_free(struct pfs_exr_source *src)
{
    if (!src)
        return;
    free(src->path);
    free(src->header);
    free(src);
}

const struct pfs_exr_layout *pfs_exr_source_layout(const struct pfs_exr_source *src)
{
    return &src->layout;
}

/* --- decode --------------------------------------------------------------- */

static int layout_same(struct pfs_rect a, struct pfs_rect b)
{
    return a.x0 == b.x0 && a.y0 == b.y0 && a.x1 == b.x1 && a.y1 == b.y1;
}

/* Points the pipeline's R, G, B, A straight into the interleaved image at
 * pixel (x, y) of the data window; every other channel is skipped. */
static void decode_targets(exr_decode_pipeline_t *dec, const struct pfs_image *img, int x,
                           int y)
{
    float *base = img->px + ((size_t)y * (size_t)img->width + (size_t)x) * 4u;
    for (int i = 0; i < dec->channel_count; i++) {
        exr_coding_channel_info_t *ch = &dec->channels[i];
        ch->decode_to_ptr = NULL;
        for (int c = 0; c < CH_COUNT; c++) {
            if (strcmp(ch->channel_name, channel_names[c]) != 0)
                continue;
            ch->decode_to_ptr = (uint8_t *)(base + c);
            ch->user_pixel_stride = 4 * (int32_t)sizeof(float);
            ch->user_line_stride = img->width * 4 * (int32_t)sizeof(float);
            ch->user_data_type = EXR_PIXEL_FLOAT;
            ch->user_bytes_per_element = sizeof(float);
        }
    }
}

/*
 * OpenEXRCore 3.1 picks a specialised unpacker from the pointers it sees.
 * Its two 4-channel half-to-float interleaved unpackers write the channels
 * in the opposite order (A,B,G,R lands as R,G,B,A reversed: checked on
 * 3.1.5), so with four channels the choice is made while the pointers form
 * neither a forward nor a reverse interleave, which selects the generic
 * unpacker; the real pointers are set afterwards. Three channels take the
 * fast path, which is correct.
 */
static exr_result_t choose_unpack(exr_context_t ctxt, exr_decode_pipeline_t *dec,
                                  const struct pfs_image *img)
{
    decode_targets(dec, img, 0, 0);
    int filled = 0;
    exr_coding_channel_info_t *first = NULL, *second = NULL;
    for (int i = 0; i < dec->channel_count; i++) {
        if (!dec->channels[i].decode_to_ptr)
            continue;
        filled++;
        if (!first)
            first = &dec->channels[i];
        else if (!second)
            second = &dec->channels[i];
    }
    if (filled == 4) {
        uint8_t *p = first->decode_to_ptr;
        first->decode_to_ptr = second->decode_to_ptr;
        second->decode_to_ptr = p;
    }
    return exr_decoding_choose_default_routines(ctxt, 0, dec);
}

static int decode_chunks(exr_context_t ctxt, struct exr_io *io, const struct pfs_exr_source *src,
                         struct pfs_image *img, pfs_error *err)
{
    const struct pfs_rect dw = src->layout.data;
    exr_storage_t storage;
    exr_get_storage(ctxt, 0, &storage);
    int tiled = storage == EXR_STORAGE_TILED;
    uint32_t tw = 0, th = 0;
    int32_t nchunks = 0, lines = 1, ntx = 1;
    if (tiled) {
        if (exr_get_tile_descriptor(ctxt, 0, &tw, &th, NULL, NULL) != EXR_ERR_SUCCESS ||
            tw == 0 || th == 0)
            return pfs_error_set(err, EIO, "%s: bad tile description", src->path);
        ntx = (int32_t)(((uint32_t)img->width + tw - 1) / tw);
        nchunks = ntx * (int32_t)(((uint32_t)img->height + th - 1) / th);
    } else {
        if (exr_get_scanlines_per_chunk(ctxt, 0, &lines) != EXR_ERR_SUCCESS || lines < 1)
            return pfs_error_set(err, EIO, "%s: bad scanlines per chunk", src->path);
        nchunks = (int32_t)(((int64_t)img->height + lines - 1) / lines);
    }

    exr_decode_pipeline_t dec = EXR_DECODE_PIPELINE_INITIALIZER;
    int started = 0, rc = 0;
    for (int32_t i = 0; i < nchunks && rc == 0; i++) {
        exr_chunk_info_t ci;
        int tx = 0, ty = 0, x = 0, y0;
        exr_result_t rv;
        if (tiled) {
            tx = i % ntx;
            ty = i / ntx;
            x = tx * (int)tw;
            y0 = ty * (int)th;
            rv = exr_read_tile_chunk_info(ctxt, 0, tx, ty, 0, 0, &ci);
        } else {
            y0 = i * lines;
            rv = exr_read_scanline_chunk_info(ctxt, 0, dw.y0 + y0, &ci);
        }
        if (rv == EXR_ERR_SUCCESS) {
            /* Never trust the library's chunk geometry to fit our buffer. */
            if (ci.width < 0 || ci.height < 0 || x + ci.width > img->width ||
                y0 + ci.height > img->height) {
                rv = EXR_ERR_CORRUPT_CHUNK;
                if (!io->msg[0])
                    snprintf(io->msg, sizeof io->msg, "chunk %dx%d outside the data window",
                             ci.width, ci.height);
            }
        }
        if (rv == EXR_ERR_SUCCESS) {
            rv = started ? exr_decoding_update(ctxt, 0, &ci, &dec)
                         : exr_decoding_initialize(ctxt, 0, &ci, &dec);
            if (rv == EXR_ERR_SUCCESS) {
                if (!started)
                    rv = choose_unpack(ctxt, &dec, img);
                decode_targets(&dec, img, x, y0);
                started = 1;
            }
        }
        if (rv == EXR_ERR_SUCCESS)
            rv = exr_decoding_run(ctxt, 0, &dec);
        if (rv != EXR_ERR_SUCCESS) {
            int last = y0 + (tiled ? (int)th : lines) - 1;
            if (last >= img->height)
                last = img->height - 1;
            int code = rv == EXR_ERR_OUT_OF_MEMORY ? ENOMEM : EIO;
            if (tiled)
                rc = pfs_error_set(err, code, "%s: chunk %d (tile %d,%d, scanlines %d-%d): %s",
                                   src->path, i, tx, ty, dw.y0 + y0, dw.y0 + last,
                                   io_msg(io, rv));
            else
                rc = pfs_error_set(err, code, "%s: chunk %d (scanlines %d-%d): %s", src->path,
                                   i, dw.y0 + y0, dw.y0 + last, io_msg(io, rv));
        }
    }
    if (started)
        exr_decoding_destroy(ctxt, &dec);
    return rc;
}

int pfs_exr_decode(const struct pfs_exr_source *src, struct pfs_image *img, pfs_error *err)
{
    memset(img, 0, sizeof *img);
    if (src->synthetic)
        return pfs_error_set(err, EINVAL, "%s: has no EXR pixels to decode", src->path);
    if (src->via_rgba)
        return pfs_exr_decode_rgba(src->path, &src->layout, img, err);
    struct exr_io io;
    io_init(&io, src->path);
    exr_context_t ctxt = NULL;
    int rc = open_source(&io, &ctxt, err);
    if (rc)
        return rc == EINVAL ? EIO : rc; /* it was an EXR at probe time */

    struct pfs_exr_layout now;
    int ptypes[CH_COUNT];
    uint8_t p_linear[CH_COUNT];
    pfs_error why;
    int via_rgba;
    rc = check_part(ctxt, src->path, &now, ptypes, p_linear, &via_rgba, &why);
    if (rc || !layout_same(now.data, src->layout.data) || now.has_alpha != src->layout.has_alpha)
        rc = pfs_error_set(err, EIO, "%s: file changed since it was probed%s%s", src->path,
                           rc ? ": " : "", rc ? why.msg : "");
    const struct pfs_rect dw = src->layout.data;
    if (rc == 0) {
        rc = pfs_image_alloc(img, dw.x1 - dw.x0 + 1, dw.y1 - dw.y0 + 1);
        if (rc)
            pfs_error_set(err, rc, "%s: cannot allocate %d x %d pixels", src->path,
                          dw.x1 - dw.x0 + 1, dw.y1 - dw.y0 + 1);
    }
    if (rc == 0) {
        img->origin_x = dw.x0;
        img->origin_y = dw.y0;
        img->display = src->layout.display;
        if (!src->layout.has_alpha) {
            size_t n = (size_t)img->width * (size_t)img->height;
            for (size_t i = 0; i < n; i++)
                img->px[i * 4 + 3] = 1.0f;
        }
        rc = decode_chunks(ctxt, &io, src, img, err);
    }
    close_source(&io, &ctxt);
    if (rc)
        pfs_image_free(img);
    return rc;
}

/* --- encode --------------------------------------------------------------- */

static int channel_count(const struct pfs_exr_source *src)
{
    return src->layout.has_alpha ? 4 : 3;
}

static uint64_t line_bytes(const struct pfs_exr_source *src)
{
    uint64_t width = (uint64_t)((int64_t)src->layout.data.x1 - src->layout.data.x0 + 1);
    uint64_t bpc = src->layout.out_type == PFS_EXR_HALF ? 2 : 4;
    return width * (uint64_t)channel_count(src) * bpc;
}

static uint64_t line_count(const struct pfs_exr_source *src)
{
    return (uint64_t)((int64_t)src->layout.data.y1 - src->layout.data.y0 + 1);
}

/* Bytes after the header: the offset table, then per scanline its y, its
 * size and its pixels. */
static uint64_t body_size(const struct pfs_exr_source *src)
{
    return line_count(src) * (8u + 8u + line_bytes(src));
}

/*
 * Creates the write context for src's corrected frame and writes its header
 * through io's sink. The order matters: everything the output owns (layout,
 * channels, added attributes) is set first, so that copying the source's
 * attributes afterwards only fills what is still unset.
 */
static int write_header(const struct pfs_exr_source *src, const struct pfs_exr_attr *attrs,
                        int nattrs, struct exr_io *io, exr_context_t *wctx, pfs_error *err)
{
    struct exr_io rio;
    io_init(&rio, src->path);
    rio.mem = src->header;
    rio.mem_len = src->header_len;
    exr_context_initializer_t rinit = io_initializer(&rio);
    exr_context_t rctx = NULL;
    exr_result_t rv = exr_start_read(&rctx, src->path, &rinit);
    if (rv != EXR_ERR_SUCCESS) {
        pfs_error_set(err, EINVAL, "%s: cannot parse the kept header: %s", src->path,
                      io_msg(&rio, rv));
        exr_finish(&rctx);
        return EINVAL;
    }

    exr_context_initializer_t winit = io_initializer(io);
    const char *step = "start";
    /* The name is only informational with a custom write_fn; still, never
     * hand a writer the source's path. */
    rv = exr_start_write(wctx, "platefs-output.exr", EXR_WRITE_FILE_DIRECTLY, &winit);
    int long_names = src->long_names;
    for (int i = 0; i < nattrs; i++)
        if (strlen(attrs[i].name) > 31)
            long_names = 1;
    if (rv == EXR_ERR_SUCCESS && long_names) {
        step = "long names";
        rv = exr_set_longname_support(*wctx, 1);
    }
    int part = 0;
    if (rv == EXR_ERR_SUCCESS) {
        step = "add part";
        rv = exr_add_part(*wctx, NULL, EXR_STORAGE_SCANLINE, &part);
    }
    if (rv == EXR_ERR_SUCCESS) {
        step = "required attributes";
        exr_attr_box2i_t disp, dw;
        exr_attr_v2f_t swc;
        float par, sww;
        rv = exr_get_display_window(rctx, 0, &disp);
        if (rv == EXR_ERR_SUCCESS)
            rv = exr_get_data_window(rctx, 0, &dw);
        if (rv == EXR_ERR_SUCCESS)
            rv = exr_get_pixel_aspect_ratio(rctx, 0, &par);
        if (rv == EXR_ERR_SUCCESS)
            rv = exr_get_screen_window_center(rctx, 0, &swc);
        if (rv == EXR_ERR_SUCCESS)
            rv = exr_get_screen_window_width(rctx, 0, &sww);
        if (rv == EXR_ERR_SUCCESS)
            rv = exr_initialize_required_attr(*wctx, part, &disp, &dw, par, &swc, sww,
                                              EXR_LINEORDER_INCREASING_Y,
                                              EXR_COMPRESSION_NONE);
    }
    exr_pixel_type_t ptype = src->layout.out_type == PFS_EXR_HALF ? EXR_PIXEL_HALF
                                                                  : EXR_PIXEL_FLOAT;
    for (int c = 0; c < channel_count(src) && rv == EXR_ERR_SUCCESS; c++) {
        step = "channels";
        rv = exr_add_channel(*wctx, part, channel_names[c], ptype,
                             (exr_perceptual_treatment_t)src->p_linear[c], 1, 1);
    }
    for (int i = 0; i < nattrs && rv == EXR_ERR_SUCCESS; i++) {
        step = attrs[i].name;
        rv = exr_attr_set_string(*wctx, part, attrs[i].name, attrs[i].value);
    }
    if (rv == EXR_ERR_SUCCESS) {
        step = "source attributes";
        rv = exr_copy_unset_attributes(*wctx, part, rctx, 0);
    }
    if (rv == EXR_ERR_SUCCESS) {
        step = "header";
        rv = exr_write_header(*wctx);
    }
    exr_finish(&rctx);
    if (rv != EXR_ERR_SUCCESS) {
        int code = rv == EXR_ERR_OUT_OF_MEMORY ? ENOMEM : EINVAL;
        pfs_error_set(err, code, "%s: cannot build the output header (%s): %s", src->path,
                      step, io_msg(io, rv));
        exr_finish(wctx);
        return code;
    }
    return 0;
}

int pfs_exr_output_size(const struct pfs_exr_source *src, const struct pfs_exr_attr *attrs,
                        int nattrs, uint64_t *size, pfs_error *err)
{
    struct exr_io io;
    io_init(&io, src->path);
    exr_context_t wctx = NULL;
    int rc = write_header(src, attrs, nattrs, &io, &wctx, err);
    if (rc)
        return rc;
    *size = io.extent + body_size(src);
    /* No chunks follow: finishing now would only report them missing. */
    exr_finish(&wctx);
    return 0;
}

static void encode_sources(exr_encode_pipeline_t *enc, const struct pfs_image *img, int y)
{
    const float *row = img->px + (size_t)y * (size_t)img->width * 4u;
    for (int i = 0; i < enc->channel_count; i++) {
        exr_coding_channel_info_t *ch = &enc->channels[i];
        for (int c = 0; c < CH_COUNT; c++) {
            if (strcmp(ch->channel_name, channel_names[c]) != 0)
                continue;
            ch->encode_from_ptr = (const uint8_t *)(row + c);
            ch->user_pixel_stride = 4 * (int32_t)sizeof(float);
            ch->user_line_stride = img->width * 4 * (int32_t)sizeof(float);
            ch->user_data_type = EXR_PIXEL_FLOAT;
            ch->user_bytes_per_element = sizeof(float);
        }
    }
}

int pfs_exr_encode(const struct pfs_exr_source *src, const struct pfs_exr_attr *attrs,
                   int nattrs, const struct pfs_image *img, uint8_t **out, size_t *len,
                   pfs_error *err)
{
    *out = NULL;
    *len = 0;
    const struct pfs_rect dw = src->layout.data;
    if (!img->px || img->width != dw.x1 - dw.x0 + 1 || img->height != dw.y1 - dw.y0 + 1)
        return pfs_error_set(err, EINVAL,
                             "%s: image is %d x %d but the data window is %d x %d", src->path,
                             img->width, img->height, dw.x1 - dw.x0 + 1, dw.y1 - dw.y0 + 1);

    struct exr_io io;
    io_init(&io, src->path);
    io.out_cap = 4096;
    io.out = malloc(io.out_cap);
    if (!io.out)
        return pfs_error_set(err, ENOMEM, "%s: out of memory", src->path);
    exr_context_t wctx = NULL;
    int rc = write_header(src, attrs, nattrs, &io, &wctx, err);
    if (rc) {
        free(io.out);
        return rc;
    }
    uint64_t total = io.extent + body_size(src);
    if (total > SIZE_MAX) {
        rc = pfs_error_set(err, ENOMEM, "%s: output of %llu bytes is too large", src->path,
                           (unsigned long long)total);
    } else {
        uint8_t *p = realloc(io.out, (size_t)total);
        if (!p)
            rc = pfs_error_set(err, ENOMEM, "%s: cannot allocate %llu bytes", src->path,
                               (unsigned long long)total);
        else {
            io.out = p;
            io.out_cap = (size_t)total;
            io.out_fixed = 1;
        }
    }

    exr_encode_pipeline_t enc = EXR_ENCODE_PIPELINE_INITIALIZER;
    int started = 0;
    for (int y = 0; y < img->height && rc == 0; y++) {
        exr_chunk_info_t ci;
        exr_result_t rv = exr_write_scanline_chunk_info(wctx, 0, dw.y0 + y, &ci);
        if (rv == EXR_ERR_SUCCESS) {
            rv = started ? exr_encoding_update(wctx, 0, &ci, &enc)
                         : exr_encoding_initialize(wctx, 0, &ci, &enc);
            if (rv == EXR_ERR_SUCCESS) {
                encode_sources(&enc, img, y);
                if (!started)
                    rv = exr_encoding_choose_default_routines(wctx, 0, &enc);
                started = 1;
            }
        }
        if (rv == EXR_ERR_SUCCESS)
            rv = exr_encoding_run(wctx, 0, &enc);
        if (rv != EXR_ERR_SUCCESS)
            rc = pfs_error_set(err, rv == EXR_ERR_OUT_OF_MEMORY ? ENOMEM : EIO,
                               "%s: encoding scanline %d: %s", src->path, dw.y0 + y,
                               io_msg(&io, rv));
    }
    if (started)
        exr_encoding_destroy(wctx, &enc);
    exr_result_t rv = exr_finish(&wctx); /* writes the offset table */
    if (rc == 0 && rv != EXR_ERR_SUCCESS)
        rc = pfs_error_set(err, EIO, "%s: finishing the output: %s", src->path,
                           io_msg(&io, rv));
    if (rc == 0 && io.extent != total)
        rc = pfs_error_set(err, EIO, "%s: wrote %llu bytes, the header promised %llu",
                           src->path, (unsigned long long)io.extent,
                           (unsigned long long)total);
    if (rc) {
        free(io.out);
        return rc;
    }
    *out = io.out;
    *len = (size_t)total;
    return 0;
}
