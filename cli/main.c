/*
 * main.c - the `platefs` command: one binary, one subcommand per job.
 *
 *   platefs mount DAILIES MOUNTPOINT [options]   serve the corrected mirror
 *   platefs check RULES --dailies DIR            validate rule files
 *   platefs render DAILIES PATH -o OUT [options] render one frame to a file
 *   platefs prewarm DAILIES [PATH...] [options]  render frames into the cache
 *   platefs cache stats|clear [--cache DIR]      what the cache holds; empty it
 *   platefs cache merge SRC... [--cache DIR]     bring in frames rendered elsewhere
 *   platefs devices                              list OpenCL devices
 *
 * This file only parses arguments and wires the modules together: rules,
 * cache, OpenCL device, engine, file system, in that order, and tears them
 * down in reverse. Every error reaches the user once, here, naming the file
 * and what is wrong.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <libavutil/log.h>

#include "cache/cache.h"
#include "cl/cl.h"
#include "engine/engine.h"
#include "engine/op.h"
#include "fs/fs.h"
#include "rules/rules.h"
#include "util/log.h"

#define DEFAULT_CACHE_SIZE (8ull << 30)

struct common_opts {
    const char *rules_dir;
    const char *cache_dir;
    uint64_t cache_size; /* 0: an existing store keeps its budget */
    const char *device; /* "reference": the C reference path, no OpenCL */
    int threads;
    int readahead;
};

/* ---- helpers ----------------------------------------------------------- */

static void usage(FILE *out)
{
    fputs("usage:\n"
          "  platefs mount DAILIES MOUNTPOINT [--rules DIR] [--cache DIR] [--cache-size SIZE]\n"
          "                [--device SPEC] [--threads N] [--readahead N] [-f] [-o allow_other]\n"
          "                [--log-level error|warn|info|debug] [--syslog] [-d]\n"
          "  platefs check RULES --dailies DIR\n"
          "  platefs render DAILIES PATH -o OUT.exr [--rules DIR] [--device SPEC] [--timing]\n"
          "  platefs prewarm DAILIES [PATH...] [--rules DIR] [--cache DIR] [--cache-size SIZE]\n"
          "                [--device SPEC] [--shard I/N] [--threads N]\n"
          "  platefs cache stats|clear [--cache DIR]\n"
          "  platefs cache merge SRC_CACHE... [--cache DIR] [--cache-size SIZE]\n"
          "  platefs devices\n"
          "  platefs ops\n"
          "  platefs version\n"
          "\n"
          "SPEC: auto (a GPU if present, else the CPU), gpu, cpu, P:D (platform:device\n"
          "from `platefs devices`), a device name substring, or reference (the plain C\n"
          "implementation of every op, no OpenCL). SIZE: bytes with K, M, G or T.\n",
          out);
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v <= 0)
        return -1;
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; end++; break;
    case 'm': case 'M': v *= 1024.0 * 1024; end++; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': v *= 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    if (*end)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static char *default_cache_dir(void)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char *dir = NULL;
    int n;
    if (xdg && xdg[0])
        n = asprintf(&dir, "%s/platefs", xdg);
    else
        n = asprintf(&dir, "%s/.cache/platefs", home && home[0] ? home : "/var/cache");
    return n < 0 ? NULL : dir;
}

static void report_to_stderr(void *ud, enum pfs_diag_severity sev, const char *file, int line,
                             int col, const char *msg)
{
    const char *what = sev == PFS_DIAG_ERROR ? "error" : "warning";
    if (line > 0)
        fprintf(stderr, "%s:%d:%d: %s: %s\n", file, line, col, what, msg);
    else
        fprintf(stderr, "%s: %s: %s\n", file, what, msg);
}

static int load_rules(const char *rules_dir, const char *dailies, struct pfs_ruleset **out)
{
    *out = NULL;
    if (!rules_dir)
        return 0;
    struct pfs_rules_opts ropts = {.rules_dir = rules_dir,
                                   .dailies_root = dailies,
                                   .report = report_to_stderr};
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_rules_load(&ropts, out, &err);
    if (rc) {
        if (err.msg[0])
            fprintf(stderr, "platefs: %s\n", err.msg);
        fprintf(stderr, "platefs: the rules in %s are not valid; nothing was mounted\n",
                rules_dir);
    }
    return rc;
}

/* Everything below fs/: rules, cache, device, engine. */
struct stack {
    struct pfs_ruleset *rules;
    struct pfs_cache *cache;
    struct pfs_cl *cl;
    struct pfs_engine *engine;
    char *cache_dir;
};

static void stack_close(struct stack *s)
{
    pfs_engine_close(s->engine);
    if (s->cl)
        pfs_cl_close(s->cl);
    if (s->cache)
        pfs_cache_close(s->cache);
    if (s->rules)
        pfs_ruleset_unref(s->rules);
    free(s->cache_dir);
    memset(s, 0, sizeof *s);
}

static int stack_open(struct stack *s, const char *dailies, const struct common_opts *o,
                      bool with_cache)
{
    memset(s, 0, sizeof *s);
    pfs_error err;
    pfs_error_clear(&err);
    if (load_rules(o->rules_dir, dailies, &s->rules))
        return 1;

    s->cache_dir = o->cache_dir ? strdup(o->cache_dir) : default_cache_dir();
    if (!s->cache_dir) {
        fprintf(stderr, "platefs: out of memory\n");
        stack_close(s);
        return 1;
    }
    if (with_cache) {
        /* Without --cache-size the store keeps the budget it was given
         * before (a mount must not shrink a farm's cache by default). */
        struct pfs_cache_opts copts = {.dir = s->cache_dir,
                                       .budget_bytes = o->cache_size,
                                       .default_budget_bytes = DEFAULT_CACHE_SIZE};
        if (pfs_cache_open(&copts, &s->cache, &err)) {
            fprintf(stderr, "platefs: %s\n", err.msg);
            stack_close(s);
            return 1;
        }
    }
    if (!o->device || strcmp(o->device, "reference") != 0) {
        char *kernels = NULL;
        if (asprintf(&kernels, "%s/kernels", s->cache_dir) < 0)
            kernels = NULL;
        struct pfs_cl_opts clopts = {.device = o->device, .binary_cache_dir = kernels};
        int rc = pfs_cl_open(&clopts, &s->cl, &err);
        free(kernels);
        if (rc) {
            fprintf(stderr, "platefs: %s\n", err.msg);
            stack_close(s);
            return 1;
        }
        pfs_log(PFS_LOG_INFO, "OpenCL device: %s", pfs_cl_device_name(s->cl));
    }
    struct pfs_engine_opts eopts = {.dailies_root = dailies,
                                    .cache = s->cache,
                                    .cl = s->cl,
                                    .render_threads = o->threads,
                                    .readahead = o->readahead};
    if (pfs_engine_open(&eopts, s->rules, &s->engine, &err)) {
        fprintf(stderr, "platefs: %s\n", err.msg);
        stack_close(s);
        return 1;
    }
    return 0;
}

static char *real_dir(const char *path, const char *what)
{
    char *r = realpath(path, NULL);
    struct stat st;
    if (!r || stat(r, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "platefs: %s %s: %s\n", what, path,
                r ? "not a directory" : strerror(errno));
        free(r);
        return NULL;
    }
    return r;
}

enum {
    OPT_RULES = 1000, OPT_CACHE, OPT_CACHE_SIZE, OPT_DEVICE, OPT_THREADS, OPT_READAHEAD,
    OPT_LOG_LEVEL, OPT_SYSLOG, OPT_DAILIES, OPT_TIMING, OPT_SHARD,
};

static const struct option long_opts[] = {
    {"rules", required_argument, NULL, OPT_RULES},
    {"cache", required_argument, NULL, OPT_CACHE},
    {"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"readahead", required_argument, NULL, OPT_READAHEAD},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"syslog", no_argument, NULL, OPT_SYSLOG},
    {"dailies", required_argument, NULL, OPT_DAILIES},
    {"timing", no_argument, NULL, OPT_TIMING},
    {"shard", required_argument, NULL, OPT_SHARD},
    {"output", required_argument, NULL, 'o'},
    {"foreground", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct parsed {
    struct common_opts common;
    int log_level;
    bool use_syslog;
    bool foreground;
    bool fuse_debug;
    bool allow_other;
    bool timing;
    const char *dailies;
    const char *output;
    unsigned shard_index, shard_count;
    int npos;
    char **pos;
};

/* `-o a,b,c` of mount, as fstab and mount(8) pass them. The mirror is
 * always read-only with kernel permission checks, so those are accepted and
 * change nothing; anything else is refused rather than ignored. */
static int parse_mount_options(const char *list, struct parsed *p)
{
    char *copy = strdup(list);
    if (!copy)
        return -1;
    int rc = 0;
    char *save = NULL;
    for (char *opt = strtok_r(copy, ",", &save); opt && rc == 0;
         opt = strtok_r(NULL, ",", &save)) {
        if (strcmp(opt, "allow_other") == 0)
            p->allow_other = true;
        else if (strcmp(opt, "ro") != 0 && strcmp(opt, "default_permissions") != 0 &&
                 strcmp(opt, "nodev") != 0 && strcmp(opt, "nosuid") != 0) {
            fprintf(stderr, "platefs: -o %s: unsupported mount option (platefs takes "
                            "allow_other; the mirror is always read-only)\n", opt);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

static int parse_args(int argc, char **argv, struct parsed *p)
{
    memset(p, 0, sizeof *p);
    p->common.readahead = -1;
    p->log_level = PFS_LOG_INFO;
    p->shard_count = 1;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "o:fdh", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_RULES: p->common.rules_dir = optarg; break;
        case OPT_CACHE: p->common.cache_dir = optarg; break;
        case OPT_CACHE_SIZE:
            if (parse_size(optarg, &p->common.cache_size)) {
                fprintf(stderr, "platefs: --cache-size %s: expected bytes such as 8G or 500M\n",
                        optarg);
                return -1;
            }
            break;
        case OPT_DEVICE: p->common.device = optarg; break;
        case OPT_THREADS: p->common.threads = atoi(optarg); break;
        case OPT_READAHEAD: p->common.readahead = atoi(optarg); break;
        case OPT_LOG_LEVEL:
            p->log_level = pfs_log_level_parse(optarg);
            if (p->log_level < 0) {
                fprintf(stderr, "platefs: --log-level %s: expected error, warn, info or debug\n",
                        optarg);
                return -1;
            }
            break;
        case OPT_SYSLOG: p->use_syslog = true; break;
        case OPT_DAILIES: p->dailies = optarg; break;
        case OPT_TIMING: p->timing = true; break;
        case OPT_SHARD:
            if (sscanf(optarg, "%u/%u", &p->shard_index, &p->shard_count) != 2 ||
                p->shard_count == 0 || p->shard_index >= p->shard_count) {
                fprintf(stderr, "platefs: --shard %s: expected I/N with 0 <= I < N\n", optarg);
                return -1;
            }
            break;
        case 'o':
            /* -o is the output file for render, mount options for mount. */
            if (strcmp(argv[0], "mount") != 0)
                p->output = optarg;
            else if (parse_mount_options(optarg, p))
                return -1;
            break;
        case 'f': p->foreground = true; break;
        case 'd': p->fuse_debug = true; p->foreground = true; break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    p->npos = argc - optind;
    p->pos = argv + optind;
    return 0;
}

/* ---- mount ------------------------------------------------------------- */

static int ready_pipe = -1;

/* In a background start: tell the waiting parent the mount is up, then
 * leave the terminal. */
static void mount_ready(void *ud)
{
    if (ready_pipe < 0)
        return;
    char ok = 0;
    if (write(ready_pipe, &ok, 1) != 1)
        pfs_log(PFS_LOG_WARN, "could not tell the starting process that the mount is up");
    close(ready_pipe);
    ready_pipe = -1;
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
}

static int cmd_mount(struct parsed *p)
{
    if (p->npos != 2) {
        usage(stderr);
        return 2;
    }
    char *dailies = real_dir(p->pos[0], "dailies");
    char *mountpoint = dailies ? real_dir(p->pos[1], "mount point") : NULL;
    if (!mountpoint) {
        free(dailies);
        return 1;
    }

    /* Fork before any thread or OpenCL driver exists; the parent waits until
     * the child has mounted (exit 0) or failed (exit 1, errors already on
     * the terminal). */
    if (!p->foreground) {
        int fds[2];
        if (pipe(fds) != 0) {
            perror("platefs: pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("platefs: fork");
            return 1;
        }
        if (pid > 0) {
            close(fds[1]);
            free(dailies);
            free(mountpoint);
            char byte;
            ssize_t n;
            do
                n = read(fds[0], &byte, 1);
            while (n < 0 && errno == EINTR);
            if (n == 1)
                return 0;
            int status;
            waitpid(pid, &status, 0);
            return 1;
        }
        close(fds[0]);
        ready_pipe = fds[1];
        setsid();
        if (!p->use_syslog)
            p->use_syslog = true; /* stderr goes away once the mount is up */
    }
    pfs_log_setup((enum pfs_log_level)p->log_level, p->use_syslog);

    pfs_fs_block_signals();
    struct stack s;
    if (stack_open(&s, dailies, &p->common, true)) {
        free(dailies);
        free(mountpoint);
        return 1;
    }
    struct pfs_fs_opts fopts = {.dailies_root = dailies,
                                .mountpoint = mountpoint,
                                .rules_dir = p->common.rules_dir,
                                .allow_other = p->allow_other,
                                .fuse_debug = p->fuse_debug,
                                .on_ready = mount_ready};
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_fs_run(&fopts, s.engine, &err);
    if (rc)
        fprintf(stderr, "platefs: %s\n", err.msg);
    stack_close(&s);
    free(dailies);
    free(mountpoint);
    return rc ? 1 : 0;
}

/* FFmpeg's own complaints (a decoder meeting a damaged packet) carry no
 * clip name; platefs logs its own line naming the clip and frame, so
 * FFmpeg's go to the debug level of the same log, never to a bare stderr. */
static void ffmpeg_log(void *avcl, int level, const char *fmt, va_list vl)
{
    if (level > AV_LOG_WARNING || !pfs_log_enabled(PFS_LOG_DEBUG))
        return;
    char line[1024];
    int prefix = 1;
    av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &prefix);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (n)
        pfs_log(PFS_LOG_DEBUG, "ffmpeg: %s", line);
}

/* ---- render, prewarm ----------------------------------------------------- */

static int open_frame(struct stack *s, const char *dailies, const char *relpath,
                      struct pfs_frame **f)
{
    struct stat st;
    enum pfs_entry kind;
    int rc = pfs_engine_lookup(s->engine, relpath, &kind, &st);
    if (rc != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "platefs: %s/%s: %s\n", dailies, relpath,
                rc ? strerror(rc) : "not a file");
        return 1;
    }
    pfs_error err;
    pfs_error_clear(&err);
    pfs_engine_frame_open(s->engine, relpath, &st, f, &err);
    if (!*f) {
        fprintf(stderr, "platefs: %s: no rule applies to this file\n", relpath);
        return 1;
    }
    return 0;
}

/* The stack for a command that renders without a mount (render, prewarm):
 * logs on stderr, no readahead. Returns the dailies' real path (the caller
 * frees it) or NULL after printing why. */
static char *open_offline(struct parsed *p, bool with_cache, struct stack *s)
{
    pfs_log_setup((enum pfs_log_level)p->log_level, false);
    char *dailies = real_dir(p->pos[0], "dailies");
    if (!dailies)
        return NULL;
    p->common.readahead = 0;
    if (stack_open(s, dailies, &p->common, with_cache)) {
        free(dailies);
        return NULL;
    }
    return dailies;
}

static int cmd_render(struct parsed *p)
{
    if (p->npos != 2 || !p->output) {
        usage(stderr);
        return 2;
    }
    struct stack s;
    char *dailies = open_offline(p, false, &s);
    if (!dailies)
        return 1;
    struct pfs_frame *f = NULL;
    int rc = open_frame(&s, dailies, p->pos[1], &f);
    uint8_t *buf = NULL;
    size_t len = 0;
    double timing[3];
    pfs_error err;
    pfs_error_clear(&err);
    if (rc == 0 && pfs_engine_render(s.engine, f, &buf, &len, timing, &err)) {
        fprintf(stderr, "platefs: %s\n", err.msg);
        rc = 1;
    }
    if (rc == 0) {
        FILE *out = fopen(p->output, "wb");
        if (!out || fwrite(buf, 1, len, out) != len || fclose(out) != 0) {
            fprintf(stderr, "platefs: %s: %s\n", p->output, strerror(errno));
            rc = 1;
        }
        if (rc == 0 && p->timing)
            printf("decode_ms %.3f\nops_ms %.3f\nencode_ms %.3f\nbytes %zu\ndevice %s\n",
                   timing[0], timing[1], timing[2], len,
                   s.cl ? pfs_cl_device_name(s.cl) : "reference");
    }
    free(buf);
    pfs_frame_release(f);
    stack_close(&s);
    free(dailies);
    return rc;
}

/* prewarm: the frames to render are listed first (walking the tree or
 * taking the paths given), then --threads workers render and store them;
 * the engine is thread-safe and the cache takes concurrent puts. */
struct prewarm {
    struct stack *s;
    struct parsed *p;
    const char *dailies;
    char **paths;
    size_t npaths, cap, next;
    unsigned long frames, rendered, failed;
    pthread_mutex_t lock;
};

/* shard_key decides the shard: the path itself, or for a clip's frames
 * the clip and a run of frames, so that a shard decodes runs of a clip
 * rather than seeking all over it. */
static void prewarm_add_keyed(struct prewarm *w, const char *relpath, const char *shard_key)
{
    if (w->p->shard_count > 1 &&
        XXH3_64bits(shard_key, strlen(shard_key)) % w->p->shard_count != w->p->shard_index)
        return;
    if (w->npaths == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        char **grown = realloc(w->paths, cap * sizeof *grown);
        if (!grown)
            return;
        w->paths = grown;
        w->cap = cap;
    }
    char *copy = strdup(relpath);
    if (copy)
        w->paths[w->npaths++] = copy;
}

#define PREWARM_CLIP_RUN 100

struct clip_frames {
    struct prewarm *w;
    const char *clip;
    long index;
};

static void prewarm_add_clip_frame(void *ud, const char *name)
{
    struct clip_frames *cf = ud;
    char *rel = NULL, *key = NULL;
    if (asprintf(&rel, "%s%s/%s", cf->clip, PFS_CLIP_DIR_SUFFIX, name) >= 0 &&
        asprintf(&key, "%s#%ld", cf->clip, cf->index / PREWARM_CLIP_RUN) >= 0)
        prewarm_add_keyed(cf->w, rel, key);
    cf->index++;
    free(rel);
    free(key);
}

/* A file to prewarm: a clip stands for all its frames. */
static void prewarm_add(struct prewarm *w, const char *relpath)
{
    const char *base = strrchr(relpath, '/');
    enum pfs_entry kind;
    struct stat st;
    if (!pfs_engine_is_clip(base ? base + 1 : relpath) ||
        pfs_engine_lookup(w->s->engine, relpath, &kind, &st) != 0 || !S_ISREG(st.st_mode)) {
        prewarm_add_keyed(w, relpath, relpath);
        return;
    }
    struct clip_frames cf = {.w = w, .clip = relpath};
    pfs_error err;
    pfs_error_clear(&err);
    if (pfs_engine_clip_list(w->s->engine, relpath, &st, prewarm_add_clip_frame, &cf, &err)) {
        fprintf(stderr, "platefs: %s\n", err.msg);
        w->failed++;
    }
}

static void prewarm_walk(struct prewarm *w, const char *rel)
{
    char *path = NULL;
    if (asprintf(&path, "%s%s%s", w->dailies, rel[0] ? "/" : "", rel) < 0)
        return;
    struct dirent **names = NULL;
    int n = scandir(path, &names, NULL, alphasort);
    free(path);
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] != '.') {
            char *child = NULL;
            if (asprintf(&child, "%s%s%s", rel, rel[0] ? "/" : "", name) >= 0) {
                if (names[i]->d_type == DT_DIR)
                    prewarm_walk(w, child);
                else
                    prewarm_add(w, child);
            }
            free(child);
        }
        free(names[i]);
    }
    free(names);
}

static void prewarm_one(struct prewarm *w, const char *relpath)
{
    struct stat st;
    enum pfs_entry kind;
    struct pfs_frame *f = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    if (pfs_engine_lookup(w->s->engine, relpath, &kind, &st) == 0 && S_ISREG(st.st_mode))
        pfs_engine_frame_open(w->s->engine, relpath, &st, &f, &err);
    if (!f)
        return; /* not a frame: nothing to render */
    bool rendered = false;
    int rc = pfs_engine_warm(w->s->engine, f, &rendered, &err);
    pfs_frame_release(f);
    pthread_mutex_lock(&w->lock);
    w->frames++;
    if (rc) {
        fprintf(stderr, "\nplatefs: %s\n", err.msg);
        w->failed++;
    } else if (rendered) {
        w->rendered++;
    }
    fprintf(stderr, "\rprewarm: %lu frames, %lu rendered, %lu already cached, %lu failed",
            w->frames, w->rendered, w->frames - w->rendered - w->failed, w->failed);
    pthread_mutex_unlock(&w->lock);
}

static void *prewarm_worker(void *arg)
{
    struct prewarm *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        size_t i = w->next++;
        pthread_mutex_unlock(&w->lock);
        if (i >= w->npaths)
            return NULL;
        prewarm_one(w, w->paths[i]);
    }
}

static int cmd_prewarm(struct parsed *p)
{
    if (p->npos < 1) {
        usage(stderr);
        return 2;
    }
    struct stack s;
    char *dailies = open_offline(p, true, &s);
    if (!dailies)
        return 1;
    if (!s.cache) {
        fprintf(stderr, "platefs: prewarm needs a cache\n");
        stack_close(&s);
        free(dailies);
        return 1;
    }
    struct prewarm w = {.s = &s, .p = p, .dailies = dailies,
                        .lock = PTHREAD_MUTEX_INITIALIZER};
    if (p->npos == 1) {
        prewarm_walk(&w, "");
    } else {
        for (int i = 1; i < p->npos; i++)
            prewarm_add(&w, p->pos[i]);
    }
    int nthreads = p->common.threads > 0 ? p->common.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads < 1)
        nthreads = 1;
    pthread_t *threads = calloc((size_t)nthreads, sizeof *threads);
    int started = 0;
    while (threads && started < nthreads &&
           pthread_create(&threads[started], NULL, prewarm_worker, &w) == 0)
        started++;
    if (started == 0)
        prewarm_worker(&w);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    fputc('\n', stderr);
    for (size_t i = 0; i < w.npaths; i++)
        free(w.paths[i]);
    free(w.paths);
    stack_close(&s);
    free(dailies);
    return w.failed ? 1 : 0;
}

/* ---- check, cache, devices ---------------------------------------------- */

static int cmd_check(struct parsed *p)
{
    if (p->npos != 1 || !p->dailies) {
        usage(stderr);
        return 2;
    }
    return pfs_rules_check(p->pos[0], p->dailies, stdout);
}

/* `cache clear`: empties the store; a store too damaged to open is
 * removed instead (its frames are renders, never sources). */
static int cache_clear(const char *dir)
{
    struct pfs_cache_opts copts = {.dir = dir, .default_budget_bytes = DEFAULT_CACHE_SIZE};
    struct pfs_cache *c = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_cache_open(&copts, &c, &err);
    if (rc == 0) {
        rc = pfs_cache_clear(c, &err);
        pfs_cache_close(c);
    } else if (rc == EIO || rc == EINVAL) {
        fprintf(stderr, "platefs: %s\nplatefs: removing the damaged store\n", err.msg);
        rc = pfs_cache_destroy(dir, &err);
    }
    if (rc) {
        fprintf(stderr, "platefs: %s\n", err.msg);
        return 1;
    }
    printf("cache %s cleared\n", dir);
    return 0;
}

/* `cache merge SRC...`: brings frames rendered elsewhere (farm machines'
 * caches) into this one. */
static int cache_merge(const char *dir, uint64_t budget, char **srcs, int nsrcs)
{
    struct pfs_cache_opts copts = {.dir = dir, .budget_bytes = budget,
                                   .default_budget_bytes = DEFAULT_CACHE_SIZE};
    struct pfs_cache *c = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    if (pfs_cache_open(&copts, &c, &err)) {
        fprintf(stderr, "platefs: %s\n", err.msg);
        return 1;
    }
    int status = 0;
    for (int i = 0; i < nsrcs; i++) {
        struct pfs_cache_opts sopts = {.dir = srcs[i], .read_only = true};
        struct pfs_cache *src = NULL;
        uint64_t copied = 0, present = 0;
        int rc = pfs_cache_open(&sopts, &src, &err);
        if (rc == 0)
            rc = pfs_cache_merge(c, src, &copied, &present, &err);
        if (src)
            pfs_cache_close(src);
        if (rc) {
            fprintf(stderr, "platefs: %s\n", err.msg);
            status = 1;
            continue;
        }
        printf("%s: %llu frames copied, %llu already present\n", srcs[i],
               (unsigned long long)copied, (unsigned long long)present);
    }
    pfs_cache_close(c);
    return status;
}

static int cmd_cache(struct parsed *p)
{
    const char *what = p->npos >= 1 ? p->pos[0] : "";
    bool clear = strcmp(what, "clear") == 0, merge = strcmp(what, "merge") == 0;
    if ((merge && p->npos < 2) || (!merge && p->npos != 1) ||
        (!clear && !merge && strcmp(what, "stats") != 0)) {
        usage(stderr);
        return 2;
    }
    char *dir = p->common.cache_dir ? strdup(p->common.cache_dir) : default_cache_dir();
    if (clear || merge) {
        int rc = clear ? cache_clear(dir)
                       : cache_merge(dir, p->common.cache_size,
                                     p->pos + 1, p->npos - 1);
        free(dir);
        return rc;
    }
    struct pfs_cache_opts copts = {.dir = dir, .read_only = true};
    struct pfs_cache *c = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    struct pfs_cache_stats st;
    int rc = pfs_cache_open(&copts, &c, &err);
    if (rc == 0)
        rc = pfs_cache_stats(c, &st, &err);
    if (rc) {
        fprintf(stderr, "platefs: %s\n", err.msg);
        if (c)
            pfs_cache_close(c);
        free(dir);
        return 1;
    }
    printf("cache      %s\n"
           "entries    %llu\n"
           "bytes      %llu\n"
           "file       %llu\n"
           "budget     %llu\n"
           "hits       %llu\n"
           "misses     %llu\n"
           "renders    %llu\n"
           "evictions  %llu\n",
           dir, (unsigned long long)st.entries, (unsigned long long)st.value_bytes,
           (unsigned long long)st.file_bytes, (unsigned long long)st.budget_bytes,
           (unsigned long long)st.counters[PFS_CACHE_HITS],
           (unsigned long long)st.counters[PFS_CACHE_MISSES],
           (unsigned long long)st.counters[PFS_CACHE_RENDERS],
           (unsigned long long)st.counters[PFS_CACHE_EVICTIONS]);
    pfs_cache_close(c);
    free(dir);
    return 0;
}

static int cmd_devices(void)
{
    pfs_error err;
    pfs_error_clear(&err);
    if (pfs_cl_list_devices(stdout, &err)) {
        fprintf(stderr, "platefs: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* `ops`: every operation a rule file may name, with its parameters, as a
 * coordinator writing rules needs them: type, range and unit, default,
 * keyframable or not, and one sentence each. Read from the descriptors, so
 * it is always what the parser accepts. */
static int cmd_ops(void)
{
    static const char *const types[] = {"number", "vector", "choice", "switch", "points"};
    for (int i = 0; pfs_op_registry[i]; i++) {
        const struct pfs_op_desc *d = pfs_op_registry[i];
        printf("%s%s\n  %s\n", i ? "\n" : "", d->name, d->summary);
        if (d->reads_before || d->reads_after)
            printf("  reads neighbouring frames: comes before other ops in ops:\n");
        for (int k = 0; k < d->nparams; k++) {
            const struct pfs_param_desc *p = &d->params[k];
            const char *unit = p->unit ? p->unit : "";
            printf("  %-20s %s", p->name, types[p->type]);
            switch (p->type) {
            case PFS_PARAM_NUMBER:
                printf(" %g..%g%s%s, default %g", p->min, p->max, *unit ? " " : "", unit,
                       p->def[0]);
                break;
            case PFS_PARAM_VEC:
                printf(" of %d in %g..%g%s%s, default [", p->ncomp, p->min, p->max,
                       *unit ? " " : "", unit);
                for (int c = 0; c < p->ncomp; c++)
                    printf("%s%g", c ? ", " : "", p->def[c]);
                printf("]");
                break;
            case PFS_PARAM_ENUM:
                printf(" (");
                for (int c = 0; p->choices[c]; c++)
                    printf("%s%s", c ? "|" : "", p->choices[c]);
                printf("), default %s", p->choices[(int)p->def[0]]);
                break;
            case PFS_PARAM_BOOL:
                printf(", default %s", p->def[0] ? "true" : "false");
                break;
            case PFS_PARAM_POINTS:
                printf(", %d to %d [x, y]%s%s", p->ncomp, PFS_PARAM_MAX_POINTS,
                       *unit ? " " : "", unit);
                break;
            }
            printf("%s%s\n      %s\n", p->required ? ", required" : "",
                   p->keyframable ? ", keyframable" : "", p->help ? p->help : "");
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("platefs %s\n", PFS_VERSION);
        return 0;
    }
    struct parsed p;
    if (parse_args(argc - 1, argv + 1, &p)) {
        usage(stderr);
        return 2;
    }
    pfs_log_setup((enum pfs_log_level)p.log_level, p.use_syslog);
    av_log_set_callback(ffmpeg_log);
    if (strcmp(cmd, "mount") == 0)
        return cmd_mount(&p);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(&p);
    if (strcmp(cmd, "render") == 0)
        return cmd_render(&p);
    if (strcmp(cmd, "prewarm") == 0)
        return cmd_prewarm(&p);
    if (strcmp(cmd, "cache") == 0)
        return cmd_cache(&p);
    if (strcmp(cmd, "devices") == 0)
        return cmd_devices();
    if (strcmp(cmd, "ops") == 0)
        return cmd_ops();
    fprintf(stderr, "platefs: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
