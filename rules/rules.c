/*
 * rules.c - the rule set: loading a directory, its lifetime, and what the
 * engine asks of it at run time (match, resolve, protect, hash).
 *
 * Loading reads every rule file (parse.c), checks the set against the dailies
 * (dailies.c) and only then publishes it; any error and the whole set is
 * thrown away, so a broken file is never half-applied. A published set is
 * never written again: render threads read it without locks, and a running
 * mount swaps in a new set while old renders still hold a reference.
 *
 * pfs_rules_match runs on every getattr, so it allocates nothing and touches
 * no file: it walks the shots' globs with fnmatch, which is cheap next to a
 * FUSE round trip.
 *
 * Canonical texts are what the cache keys and provenance are made of: they
 * list every parameter (defaults included) in table order with numbers in the
 * shortest form that reads back exactly, so writing a default explicitly,
 * reordering keys or editing comments never changes a hash, and any change of
 * value always does.
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "engine/clip.h"
#include "engine/colour.h"
#include "rules/internal.h"
#include "util/log.h"

/* ---- arena ---------------------------------------------------------------- */

struct rules_arena_block {
    struct rules_arena_block *next;
    size_t used, size;
    max_align_t data[];
};

void *rules_arena_alloc(struct rules_arena *a, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    struct rules_arena_block *b = a->head;
    if (!b || b->size - b->used < size) {
        size_t cap = size > 16384 ? size : 16384;
        b = calloc(1, sizeof *b + cap);
        if (!b)
            return NULL;
        b->size = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    return p;
}

char *rules_arena_strndup(struct rules_arena *a, const char *s, size_t n)
{
    char *p = rules_arena_alloc(a, n + 1);
    if (p)
        memcpy(p, s, n);
    return p;
}

void rules_arena_free(struct rules_arena *a)
{
    while (a->head) {
        struct rules_arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/* ---- small shared helpers ------------------------------------------------- */

void rules_diag(struct rules_loader *L, enum pfs_diag_severity sev, const char *file,
                int line, int col, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (sev == PFS_DIAG_ERROR)
        L->nerrors++;
    else
        L->nwarnings++;
    if (L->opts->report) {
        L->opts->report(L->opts->report_ud, sev, file, line, col, msg);
        return;
    }
    enum pfs_log_level lvl = sev == PFS_DIAG_ERROR ? PFS_LOG_ERROR : PFS_LOG_WARN;
    if (line > 0)
        pfs_log(lvl, "%s:%d:%d: %s", file, line, col, msg);
    else
        pfs_log(lvl, "%s: %s", file, msg);
}

void rules_format_number(double v, char buf[32])
{
    if (v == 0)
        v = 0; /* -0 */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

int rules_edit_distance(const char *a, const char *b)
{
    enum { MAX = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MAX || lb >= MAX)
        return MAX;
    int row[MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            if (up + 1 < best)
                best = up + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Where frame falls among a parameter's keys: between keys[*a] and keys[*b]
 * at t (0 < t < 1), or on / held at keys[*a] (*b == *a, t 0). */
static void key_span(const struct rules_param *p, int frame, int *a, int *b, double *t)
{
    const struct rules_key *k = p->keys;
    int n = p->nkeys;
    *t = 0;
    if (!p->keyed || n == 1 || frame <= k[0].frame) {
        *a = *b = 0;
        return;
    }
    if (frame >= k[n - 1].frame) {
        *a = *b = n - 1;
        return;
    }
    int i = 1;
    while (k[i].frame < frame)
        i++;
    if (k[i].frame == frame) {
        *a = *b = i;
        return;
    }
    *a = i - 1;
    *b = i;
    *t = (double)(frame - k[i - 1].frame) / (double)(k[i].frame - k[i - 1].frame);
}

void rules_param_at(const struct rules_param *p, const struct pfs_param_desc *pd, int frame,
                    double out[PFS_PARAM_MAX_COMP])
{
    memset(out, 0, PFS_PARAM_MAX_COMP * sizeof *out);
    if (pd->type == PFS_PARAM_POINTS) {
        out[0] = p->keys[0].npts;
        return;
    }
    int ia, ib;
    double t;
    key_span(p, frame, &ia, &ib, &t);
    const struct rules_key *a = &p->keys[ia], *b = &p->keys[ib];
    int ncomp = pd->type == PFS_PARAM_VEC ? pd->ncomp : 1;
    if (ia == ib) {
        memcpy(out, a->v, (size_t)ncomp * sizeof *out);
        return;
    }
    for (int c = 0; c < ncomp; c++) {
        /* ENUM and BOOL hold their earlier key; they are never keyframable in
         * a table, but a choice index must never be blended. */
        if (pd->type == PFS_PARAM_ENUM || pd->type == PFS_PARAM_BOOL)
            out[c] = a->v[c];
        else
            out[c] = a->v[c] + (b->v[c] - a->v[c]) * t;
    }
}

void rules_points_at(const struct rules_param *p, int frame, double (*out)[2])
{
    int ia, ib;
    double t;
    key_span(p, frame, &ia, &ib, &t);
    const struct rules_key *a = &p->keys[ia], *b = &p->keys[ib];
    for (int i = 0; i < a->npts; i++)
        for (int c = 0; c < 2; c++)
            out[i][c] = ia == ib ? a->pts[i][c]
                                 : a->pts[i][c] + (b->pts[i][c] - a->pts[i][c]) * t;
}

bool rules_op_in_force(const struct rules_op *op, int frame)
{
    return !op->ranged || (frame >= op->first && frame <= op->last);
}

/* Entries a POINTS parameter's points take: two [x, y] per pfs_pvec. */
static int point_entries(int npts)
{
    return (npts * 2 + PFS_PARAM_MAX_COMP - 1) / PFS_PARAM_MAX_COMP;
}

int rules_op_nvals(const struct rules_op *op)
{
    const struct pfs_op_desc *d = op->desc;
    int n = d->nparams;
    for (int p = 0; p < d->nparams; p++)
        if (d->params[p].type == PFS_PARAM_POINTS)
            n += point_entries(op->params[p].keys[0].npts);
    return n;
}

pfs_pvec *rules_op_values(const struct rules_op *op, int frame)
{
    int n = rules_op_nvals(op);
    pfs_pvec *vals = malloc((size_t)(n ? n : 1) * sizeof *vals);
    if (vals)
        rules_op_fill(op, frame, vals);
    return vals;
}

void rules_op_fill(const struct rules_op *op, int frame, pfs_pvec *vals)
{
    const struct pfs_op_desc *d = op->desc;
    /* Zeroed: an odd point count leaves half an entry of padding. */
    memset(vals, 0, (size_t)rules_op_nvals(op) * sizeof *vals);
    int next = d->nparams;
    for (int p = 0; p < d->nparams; p++) {
        const struct rules_param *rp = &op->params[p];
        rules_param_at(rp, &d->params[p], frame, vals[p]);
        if (d->params[p].type != PFS_PARAM_POINTS)
            continue;
        /* {count, first}; the block from vals[first] on is plain doubles. */
        vals[p][1] = next;
        rules_points_at(rp, frame, (double (*)[2])(void *)vals[next]);
        next += point_entries(rp->keys[0].npts);
    }
}

/* ---- text buffer for the canonical forms ---------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 512;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* A value as canonical texts write it; pts (npts of them) for POINTS. */
static void sb_value(struct sbuf *b, const struct pfs_param_desc *pd, const double *v,
                     int npts, const double (*pts)[2])
{
    char num[32], num2[32];
    switch (pd->type) {
    case PFS_PARAM_NUMBER:
        rules_format_number(v[0], num);
        sb_printf(b, "%s", num);
        break;
    case PFS_PARAM_VEC:
        for (int c = 0; c < pd->ncomp; c++) {
            rules_format_number(v[c], num);
            sb_printf(b, "%s%s", c ? "," : "", num);
        }
        break;
    case PFS_PARAM_ENUM:
        sb_printf(b, "%s", pd->choices[(int)v[0]]);
        break;
    case PFS_PARAM_BOOL:
        sb_printf(b, "%s", v[0] != 0 ? "true" : "false");
        break;
    case PFS_PARAM_POINTS:
        sb_printf(b, "[");
        for (int i = 0; i < npts; i++) {
            rules_format_number(pts[i][0], num);
            rules_format_number(pts[i][1], num2);
            sb_printf(b, "%s[%s,%s]", i ? "," : "", num, num2);
        }
        sb_printf(b, "]");
        break;
    }
}

static void sb_key(struct sbuf *b, const struct pfs_param_desc *pd, const struct rules_key *k)
{
    sb_value(b, pd, k->v, k->npts, (const double (*)[2])k->pts);
}

static void hash_hex(const void *data, size_t len, char out[33])
{
    XXH128_hash_t h = XXH3_128bits(data, len);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
}

/* Strings carry their length so no name or glob can imitate a separator. */
static bool shot_hash(struct pfs_shot *s)
{
    struct sbuf b = {0};
    sb_printf(&b, "platefs-shot 1\nshot %zu:%s\n", strlen(s->name), s->name);
    for (int i = 0; i < s->nglobs; i++)
        sb_printf(&b, "match %zu:%s\n", strlen(s->globs[i].pat), s->globs[i].pat);
    if (s->ranged)
        sb_printf(&b, "frames %d-%d\n", s->first, s->last);
    else
        sb_printf(&b, "frames all\n");
    for (int i = 0; i < s->nprotect; i++) {
        const struct rules_protect *r = &s->protect[i];
        const struct pfs_param_desc *pd = &rules_protect_params[r->shape == PFS_PROTECT_RECT ? 0 : 1];
        sb_printf(&b, "protect %s", pd->name);
        if (!r->box.keyed) {
            sb_printf(&b, " ");
            sb_key(&b, pd, &r->box.keys[0]);
        } else {
            for (int k = 0; k < r->box.nkeys; k++) {
                sb_printf(&b, " %d:", r->box.keys[k].frame);
                sb_key(&b, pd, &r->box.keys[k]);
            }
        }
        if (r->ranged)
            sb_printf(&b, " frames %d-%d\n", r->first, r->last);
        else
            sb_printf(&b, " frames all\n");
    }
    if (s->has_source) {
        const struct pfs_clip_source *src = &s->source;
        if (src->first_from_timecode)
            sb_printf(&b, "source first_frame timecode");
        else
            sb_printf(&b, "source first_frame %d", src->first_frame);
        if (src->matrix >= 0)
            sb_printf(&b, " matrix %s", pfs_matrix_name((enum pfs_matrix)src->matrix));
        if (src->range >= 0)
            sb_printf(&b, " range %s", pfs_range_name((enum pfs_range)src->range));
        if (src->transfer >= 0)
            sb_printf(&b, " transfer %s", pfs_transfer_name((enum pfs_transfer)src->transfer));
        if (src->primaries >= 0)
            sb_printf(&b, " primaries %s",
                      pfs_primaries_name((enum pfs_primaries)src->primaries));
        sb_printf(&b, "\n");
    }
    for (int i = 0; i < s->nops; i++) {
        const struct rules_op *op = &s->ops[i];
        /* On the op's own line: no parameter name can imitate it. Without
         * frames: the line is what it always was, so hashes of existing rule
         * files do not change. */
        if (op->ranged)
            sb_printf(&b, "op %s frames %d-%d\n", op->desc->name, op->first, op->last);
        else
            sb_printf(&b, "op %s\n", op->desc->name);
        for (int p = 0; p < op->desc->nparams; p++) {
            const struct rules_param *rp = &op->params[p];
            const struct pfs_param_desc *pd = &op->desc->params[p];
            sb_printf(&b, " %s", pd->name);
            if (!rp->keyed) {
                sb_printf(&b, " ");
                sb_key(&b, pd, &rp->keys[0]);
            } else {
                for (int k = 0; k < rp->nkeys; k++) {
                    sb_printf(&b, " %d:", rp->keys[k].frame);
                    sb_key(&b, pd, &rp->keys[k]);
                }
            }
            sb_printf(&b, "\n");
        }
    }
    bool ok = !b.oom;
    if (ok)
        hash_hex(b.p, b.len, s->hash);
    free(b.p);
    return ok;
}

/* ---- loading -------------------------------------------------------------- */

static bool rule_file_name(const char *n)
{
    if (n[0] == '.')
        return false; /* hidden, and editor leftovers: .#x.yaml, .x.yaml.swp */
    size_t len = strlen(n);
    if (len && n[len - 1] == '~')
        return false;
    return (len > 5 && !strcasecmp(n + len - 5, ".yaml")) ||
           (len > 4 && !strcasecmp(n + len - 4, ".yml"));
}

static int select_rule_file(const struct dirent *d)
{
    return rule_file_name(d->d_name);
}

/* Byte order, not the locale's collation: the same set loads in the same
 * order on every machine. */
static int name_cmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static char *join(const char *dir, const char *name)
{
    size_t ld = strlen(dir);
    bool slash = ld && dir[ld - 1] == '/';
    char *p = malloc(ld + strlen(name) + 2);
    if (p)
        sprintf(p, "%s%s%s", dir, slash ? "" : "/", name);
    return p;
}

static void free_ruleset(struct pfs_ruleset *rs)
{
    if (!rs)
        return;
    rules_arena_free(&rs->arena);
    free(rs->shots);
    free(rs);
}

int pfs_rules_load(const struct pfs_rules_opts *opts, struct pfs_ruleset **out,
                   pfs_error *err)
{
    *out = NULL;
    struct pfs_rules_opts defaults = {0};
    if (!opts)
        opts = &defaults;
    if (!opts->rules_dir)
        return pfs_error_set(err, EINVAL, "no rules directory given");

    struct dirent **names = NULL;
    int nnames = scandir(opts->rules_dir, &names, select_rule_file, name_cmp);
    if (nnames < 0) {
        int e = errno;
        return pfs_error_set(err, e, "%s: cannot read the rules directory: %s",
                             opts->rules_dir, strerror(e));
    }

    struct pfs_ruleset *rs = calloc(1, sizeof *rs);
    if (rs)
        rs->shots = calloc((size_t)nnames + 1, sizeof *rs->shots);
    if (!rs || !rs->shots) {
        for (int i = 0; i < nnames; i++)
            free(names[i]);
        free(names);
        free_ruleset(rs);
        return pfs_error_set(err, ENOMEM, "%s: out of memory", opts->rules_dir);
    }
    atomic_init(&rs->refs, 1);

    struct rules_loader L = {
        .opts = opts,
        .registry = opts->ops ? opts->ops : pfs_op_registry,
        .arena = &rs->arena,
    };
    int nfiles = 0;
    for (int i = 0; i < nnames; i++) {
        char *path = join(opts->rules_dir, names[i]->d_name);
        struct stat st;
        if (!path) {
            L.oom = true;
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            nfiles++;
            struct pfs_shot *s = rules_parse_file(&L, path, names[i]->d_name);
            if (s)
                rs->shots[rs->nshots++] = s;
        }
        free(path);
        free(names[i]);
    }
    free(names);

    /* Shot names end up in provenance and in `platefs check`; two files
     * claiming the same name would make both ambiguous. */
    for (int i = 0; i < rs->nshots; i++) {
        for (int j = 0; j < i; j++) {
            if (!strcmp(rs->shots[i]->name, rs->shots[j]->name)) {
                rules_diag(&L, PFS_DIAG_ERROR, rs->shots[i]->path, rs->shots[i]->name_line,
                           rs->shots[i]->name_col,
                           "shot \"%s\" is already defined in %s; each shot has one rule file",
                           rs->shots[i]->name, rs->shots[j]->file);
                break;
            }
        }
    }
    if (nfiles == 0)
        rules_diag(&L, PFS_DIAG_WARNING, opts->rules_dir, 0, 0,
                   "no rule files (*.yaml, *.yml) here: every file passes through unchanged");

    if (opts->dailies_root && !L.oom)
        rules_check_dailies(&L, opts->dailies_root, rs->shots, rs->nshots);

    for (int i = 0; i < rs->nshots && !L.oom; i++)
        if (!shot_hash(rs->shots[i]))
            L.oom = true;

    if (L.oom) {
        free_ruleset(rs);
        return pfs_error_set(err, ENOMEM, "%s: out of memory while loading the rules",
                             opts->rules_dir);
    }
    if (L.nerrors) {
        free_ruleset(rs);
        return pfs_error_set(err, EINVAL, "%s: %d error%s in the rule files; no rules loaded",
                             opts->rules_dir, L.nerrors, L.nerrors == 1 ? "" : "s");
    }
    *out = rs;
    return 0;
}

struct pfs_ruleset *pfs_ruleset_ref(struct pfs_ruleset *rs)
{
    if (rs)
        atomic_fetch_add_explicit(&rs->refs, 1, memory_order_relaxed);
    return rs;
}

void pfs_ruleset_unref(struct pfs_ruleset *rs)
{
    /* acq_rel: the thread that frees must see every other holder's reads done. */
    if (rs && atomic_fetch_sub_explicit(&rs->refs, 1, memory_order_acq_rel) == 1)
        free_ruleset(rs);
}

int pfs_ruleset_shot_count(const struct pfs_ruleset *rs)
{
    return rs ? rs->nshots : 0;
}

const struct pfs_shot *pfs_ruleset_shot(const struct pfs_ruleset *rs, int i)
{
    return rs && i >= 0 && i < rs->nshots ? rs->shots[i] : NULL;
}

/* ---- matching ------------------------------------------------------------- */

/* The run of digits that numbers an EXR frame path: the last one before
 * ".exr" (any case) in the file name. */
static bool frame_digits(const char *relpath, const char **start, const char **end)
{
    const char *base = strrchr(relpath, '/');
    base = base ? base + 1 : relpath;
    size_t len = strlen(base);
    if (len < 4 || strcasecmp(base + len - 4, ".exr"))
        return false;
    const char *e = base + len - 4;
    while (e > base && (e[-1] < '0' || e[-1] > '9'))
        e--;
    if (e == base)
        return false;
    const char *s = e;
    while (s > base && s[-1] >= '0' && s[-1] <= '9')
        s--;
    *start = s;
    *end = e;
    return true;
}

bool rules_frame_of(const char *relpath, int *frame)
{
    const char *start, *end;
    if (!frame_digits(relpath, &start, &end))
        return false;
    /* Skip leading zeros so a 0001042 frame still fits; more than nine
     * significant digits is not a frame number anyone uses. */
    while (start < end - 1 && *start == '0')
        start++;
    if (end - start > 9)
        return false;
    int f = 0;
    for (const char *p = start; p < end; p++)
        f = f * 10 + (*p - '0');
    *frame = f;
    return true;
}

bool pfs_rules_frame_path(const char *relpath, int frame, char *out, size_t size)
{
    const char *start, *end;
    if (frame < 0 || !frame_digits(relpath, &start, &end))
        return false;
    int n = snprintf(out, size, "%.*s%0*d%s", (int)(start - relpath), relpath,
                     (int)(end - start), frame, end);
    return n > 0 && (size_t)n < size;
}

const struct rules_glob *rules_shot_claims(const struct pfs_shot *s, const char *relpath,
                                           int frame)
{
    if (s->ranged && (frame < s->first || frame > s->last))
        return NULL;
    for (int g = 0; g < s->nglobs; g++)
        if (fnmatch(s->globs[g].pat, relpath, FNM_PATHNAME) == 0)
            return &s->globs[g];
    return NULL;
}

const struct pfs_shot *pfs_rules_match(const struct pfs_ruleset *rs, const char *relpath,
                                       int *frame)
{
    int f;
    if (!rs || !relpath || !rules_frame_of(relpath, &f))
        return NULL;
    for (int i = 0; i < rs->nshots; i++) {
        if (rules_shot_claims(rs->shots[i], relpath, f)) {
            if (frame)
                *frame = f;
            return rs->shots[i];
        }
    }
    return NULL;
}

const struct pfs_shot *pfs_rules_match_clip(const struct pfs_ruleset *rs,
                                            const char *clip_relpath)
{
    if (!rs || !clip_relpath)
        return NULL;
    const char *base = strrchr(clip_relpath, '/');
    if (!pfs_clip_name(base ? base + 1 : clip_relpath))
        return NULL;
    for (int i = 0; i < rs->nshots; i++)
        for (int g = 0; g < rs->shots[i]->nglobs; g++)
            if (fnmatch(rs->shots[i]->globs[g].pat, clip_relpath, FNM_PATHNAME) == 0)
                return rs->shots[i];
    return NULL;
}

const struct pfs_clip_source *pfs_clip_source_default(void)
{
    static const struct pfs_clip_source def = {
        .first_frame = PFS_CLIP_FIRST_FRAME,
        .matrix = -1,
        .range = -1,
        .transfer = -1,
        .primaries = -1,
    };
    return &def;
}

const struct pfs_clip_source *pfs_shot_source(const struct pfs_shot *shot)
{
    return shot->has_source ? &shot->source : pfs_clip_source_default();
}

bool pfs_shot_has_frame(const struct pfs_shot *shot, int frame)
{
    return !shot->ranged || (frame >= shot->first && frame <= shot->last);
}

const char *pfs_shot_name(const struct pfs_shot *shot)
{
    return shot->name;
}

const char *pfs_shot_file(const struct pfs_shot *shot)
{
    return shot->file;
}

const char *pfs_shot_hash(const struct pfs_shot *shot)
{
    return shot->hash;
}

/* ---- resolving ------------------------------------------------------------ */

void pfs_frame_ops_free(struct pfs_frame_ops *fo)
{
    if (!fo)
        return;
    if (fo->ops)
        for (int i = 0; i < fo->nops; i++) {
            free(fo->ops[i].vals);
            free(fo->ops[i].text);
        }
    free(fo->ops);
    free(fo->canonical);
    free(fo);
}

/* The canonical line of one resolved op into b (every parameter) and its
 * header text (defaults left out) into t. */
static void op_lines(const struct pfs_resolved_op *ro, struct sbuf *b, struct sbuf *t)
{
    const struct pfs_op_desc *d = ro->desc;
    sb_printf(b, "%s", d->name);
    sb_printf(t, "%s", d->name);
    for (int p = 0; p < d->nparams; p++) {
        const struct pfs_param_desc *pd = &d->params[p];
        const double (*xy)[2] = NULL;
        int npts = pd->type == PFS_PARAM_POINTS ? pfs_op_points(ro->vals, p, &xy) : 0;
        sb_printf(b, " %s=", pd->name);
        sb_value(b, pd, ro->vals[p], npts, xy);
        bool is_default = true;
        if (pd->type == PFS_PARAM_POINTS) {
            is_default = npts == 0; /* the default is no points */
        } else {
            int ncomp = pd->type == PFS_PARAM_VEC ? pd->ncomp : 1;
            for (int c = 0; c < ncomp; c++)
                if (ro->vals[p][c] != pd->def[c])
                    is_default = false;
        }
        if (!is_default) {
            sb_printf(t, " %s=", pd->name);
            sb_value(t, pd, ro->vals[p], npts, xy);
        }
    }
}

/* all: every op, in force or not; otherwise only those in force. The
 * canonical text and hash cover the ops in force either way. */
static int resolve(const struct pfs_shot *shot, int frame, bool all,
                   struct pfs_frame_ops **out, pfs_error *err)
{
    *out = NULL;
    struct pfs_frame_ops *fo = calloc(1, sizeof *fo);
    if (!fo)
        return pfs_error_set(err, ENOMEM, "shot %s: out of memory", shot->name);
    fo->ops = calloc((size_t)shot->nops + 1, sizeof *fo->ops);
    if (!fo->ops)
        goto oom;
    struct sbuf b = {0};
    bool first_line = true;
    for (int i = 0; i < shot->nops; i++) {
        const struct rules_op *op = &shot->ops[i];
        bool in_range = rules_op_in_force(op, frame);
        if (!in_range && !all)
            continue;
        struct pfs_resolved_op *ro = &fo->ops[fo->nops++];
        ro->desc = op->desc;
        ro->index = i;
        ro->in_range = in_range;
        ro->vals = rules_op_values(op, frame);
        if (!ro->vals)
            goto oom_text;
        struct sbuf t = {0}, discard = {0};
        struct sbuf *line = in_range ? &b : &discard;
        if (in_range && !first_line)
            sb_printf(&b, "\n");
        op_lines(ro, line, &t);
        free(discard.p);
        if (in_range)
            first_line = false;
        if (t.oom || discard.oom) {
            free(t.p);
            goto oom_text;
        }
        ro->text = t.p;
    }
    /* No ops still has a (empty) canonical text, so the cache key is defined. */
    sb_printf(&b, "%s", "");
    if (b.oom)
        goto oom_text;
    fo->canonical = b.p;
    hash_hex(b.p, b.len, fo->hash);
    *out = fo;
    return 0;
oom_text:
    free(b.p);
oom:
    pfs_frame_ops_free(fo);
    return pfs_error_set(err, ENOMEM, "shot %s: out of memory", shot->name);
}

int pfs_shot_resolve(const struct pfs_shot *shot, int frame, struct pfs_frame_ops **out,
                     pfs_error *err)
{
    return resolve(shot, frame, false, out, err);
}

int pfs_shot_resolve_all(const struct pfs_shot *shot, int frame, struct pfs_frame_ops **out,
                         pfs_error *err)
{
    return resolve(shot, frame, true, out, err);
}

void rules_protect_region_at(const struct rules_protect *r, int frame,
                             struct pfs_protect_region *out)
{
    double a[PFS_PARAM_MAX_COMP];
    rules_param_at(&r->box, &rules_protect_params[r->shape == PFS_PROTECT_RECT ? 0 : 1], frame,
                   a);
    out->shape = r->shape;
    if (r->shape == PFS_PROTECT_RECT) {
        out->x0 = a[0], out->y0 = a[1];
        out->x1 = a[2], out->y1 = a[3];
    } else {
        out->x0 = a[0] - a[2], out->y0 = a[1] - a[3];
        out->x1 = a[0] + a[2], out->y1 = a[1] + a[3];
    }
}

int pfs_shot_protect_at(const struct pfs_shot *shot, int frame,
                        struct pfs_protect_region *out, int max)
{
    int n = 0;
    for (int i = 0; i < shot->nprotect; i++) {
        const struct rules_protect *r = &shot->protect[i];
        if (r->ranged && (frame < r->first || frame > r->last))
            continue;
        if (n < max && out)
            rules_protect_region_at(r, frame, &out[n]);
        n++;
    }
    return n;
}

/* ---- platefs check -------------------------------------------------------- */

struct check_out {
    FILE *out;
};

static void check_report(void *ud, enum pfs_diag_severity sev, const char *file, int line,
                         int col, const char *msg)
{
    struct check_out *c = ud;
    const char *what = sev == PFS_DIAG_ERROR ? "error" : "warning";
    if (line > 0)
        fprintf(c->out, "%s:%d:%d: %s: %s\n", file, line, col, what, msg);
    else
        fprintf(c->out, "%s: %s: %s\n", file, what, msg);
}

int pfs_rules_check(const char *rules_dir, const char *dailies_root, FILE *out)
{
    struct check_out c = {.out = out};
    struct pfs_rules_opts opts = {
        .rules_dir = rules_dir,
        .dailies_root = dailies_root,
        .report = check_report,
        .report_ud = &c,
    };
    struct pfs_ruleset *rs;
    pfs_error err = {0};
    int rc = pfs_rules_load(&opts, &rs, &err);
    if (rc) {
        fprintf(out, "%s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < rs->nshots; i++) {
        const struct pfs_shot *s = rs->shots[i];
        if (s->checked && s->nclips && s->nfiles == s->nclips)
            fprintf(out, "%s: shot %s: %d clip%s\n", s->path, s->name, s->nclips,
                    s->nclips == 1 ? "" : "s");
        else if (s->checked && s->nfiles && s->nclips)
            fprintf(out, "%s: shot %s: %d clip%s, %d file%s, frames %d-%d\n", s->path,
                    s->name, s->nclips, s->nclips == 1 ? "" : "s", s->nfiles - s->nclips,
                    s->nfiles - s->nclips == 1 ? "" : "s", s->frame_min, s->frame_max);
        else if (s->checked && s->nfiles)
            fprintf(out, "%s: shot %s: %d file%s, frames %d-%d\n", s->path, s->name,
                    s->nfiles, s->nfiles == 1 ? "" : "s", s->frame_min, s->frame_max);
        else if (s->checked)
            fprintf(out, "%s: shot %s: 0 files\n", s->path, s->name);
        else if (s->ranged)
            fprintf(out, "%s: shot %s: frames %d-%d (not checked against the dailies)\n",
                    s->path, s->name, s->first, s->last);
        else
            fprintf(out, "%s: shot %s: all frames (not checked against the dailies)\n",
                    s->path, s->name);
        for (int g = 0; g < s->nglobs; g++) {
            const struct rules_glob *rg = &s->globs[g];
            if (s->checked && rg->nclips)
                fprintf(out, "    %s: %d clip%s, %d frame%s\n", rg->pat, rg->nclips,
                        rg->nclips == 1 ? "" : "s", rg->nframes, rg->nframes == 1 ? "" : "s");
            else if (s->checked)
                fprintf(out, "    %s: %d frame%s\n", rg->pat, rg->nframes,
                        rg->nframes == 1 ? "" : "s");
            else
                fprintf(out, "    %s\n", s->globs[g].pat);
        }
    }
    fprintf(out, "%d shot%s, rules are valid\n", rs->nshots, rs->nshots == 1 ? "" : "s");
    pfs_ruleset_unref(rs);
    return 0;
}
