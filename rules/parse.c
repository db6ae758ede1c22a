/*
 * parse.c - one rule file: YAML document -> validated struct pfs_shot.
 *
 * libyaml's document API gives a node tree where every node keeps its start
 * mark, so every message can point at the exact line and column. The schema
 * of the file (shot, match, frames, protect, ops) is checked here by hand, but
 * op parameters are never: they are checked against the op descriptor's
 * table (engine/op.h), so an op added to the registry is accepted by the rule
 * files with no change to this file.
 *
 * Scalars are typed the way YAML's core schema does for plain scalars only:
 * a quoted "0.35" is text, not a number, so a stray pair of quotes is caught
 * instead of guessed at. Validation keeps going after an error so one run
 * reports every problem of the file.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "engine/colour.h"
#include "rules/internal.h"

struct pctx {
    struct rules_loader *L;
    const char *path;
    yaml_document_t *doc;
    int errors;
};

static void perr_mark(struct pctx *P, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perr(struct pctx *P, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void pwarn(struct pctx *P, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void pvdiag(struct pctx *P, enum pfs_diag_severity sev, int line, int col,
                   const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (sev == PFS_DIAG_ERROR)
        P->errors++;
    rules_diag(P->L, sev, P->path, line, col, "%s", msg);
}

static void perr_mark(struct pctx *P, yaml_mark_t m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pvdiag(P, PFS_DIAG_ERROR, (int)m.line + 1, (int)m.column + 1, fmt, ap);
    va_end(ap);
}

static void perr(struct pctx *P, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pvdiag(P, PFS_DIAG_ERROR, (int)n->start_mark.line + 1, (int)n->start_mark.column + 1,
           fmt, ap);
    va_end(ap);
}

static void pwarn(struct pctx *P, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pvdiag(P, PFS_DIAG_WARNING, (int)n->start_mark.line + 1,
           (int)n->start_mark.column + 1, fmt, ap);
    va_end(ap);
}

static void pdiag_at(struct pctx *P, enum pfs_diag_severity sev, int line, int col,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void pdiag_at(struct pctx *P, enum pfs_diag_severity sev, int line, int col,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pvdiag(P, sev, line, col, fmt, ap);
    va_end(ap);
}

static void *palloc(struct pctx *P, size_t size)
{
    void *p = rules_arena_alloc(P->L->arena, size);
    if (!p)
        P->L->oom = true;
    return p;
}

/* ---- scalars -------------------------------------------------------------- */

static yaml_node_t *node_at(struct pctx *P, int idx)
{
    return yaml_document_get_node(P->doc, idx);
}

static const char *stext(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static bool is_null(const yaml_node_t *n)
{
    if (!is_plain(n))
        return false;
    const char *s = stext(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

/* Decimal only: strtod alone would also take "0x1p3", "inf" and "nan". */
static bool number_syntax(const char *s)
{
    if (*s == '+' || *s == '-')
        s++;
    int digits = 0;
    while (isdigit((unsigned char)*s))
        s++, digits++;
    if (*s == '.') {
        s++;
        while (isdigit((unsigned char)*s))
            s++, digits++;
    }
    if (!digits)
        return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!isdigit((unsigned char)*s))
            return false;
        while (isdigit((unsigned char)*s))
            s++;
    }
    return *s == '\0';
}

static bool scalar_number(const yaml_node_t *n, double *out)
{
    if (!is_plain(n) || !number_syntax(stext(n)))
        return false;
    errno = 0;
    double v = strtod(stext(n), NULL);
    if (errno == ERANGE && isinf(v))
        return false;
    *out = v == 0 ? 0 : v; /* no -0: it would print, and hash, differently */
    return true;
}

static bool int_text(const char *s, int *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p)
        return false;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno || v < -2147483647L || v > 2147483647L)
        return false;
    *out = (int)v;
    return true;
}

static bool scalar_int(const yaml_node_t *n, int *out)
{
    return is_plain(n) && int_text(stext(n), out);
}

static bool scalar_bool(const yaml_node_t *n, bool *out)
{
    if (!is_plain(n))
        return false;
    const char *s = stext(n);
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return *out = true, true;
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return *out = false, true;
    return false;
}

/* What was written, for "got ..." in messages. */
static const char *describe(struct pctx *P, const yaml_node_t *n, char *buf, size_t size)
{
    switch (n->type) {
    case YAML_SEQUENCE_NODE: {
        int len = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (len == 0)
            return "an empty list";
        bool numbers = true;
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             it < n->data.sequence.items.top; it++) {
            double d;
            if (!scalar_number(node_at(P, *it), &d))
                numbers = false;
        }
        if (numbers)
            snprintf(buf, size, "a list of %d number%s", len, len == 1 ? "" : "s");
        else
            snprintf(buf, size, "a list");
        return buf;
    }
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SCALAR_NODE: {
        if (is_null(n))
            return "nothing";
        double d;
        bool b;
        if (scalar_number(n, &d) || scalar_bool(n, &b))
            snprintf(buf, size, "%.60s", stext(n));
        else
            snprintf(buf, size, "\"%.60s\"%s", stext(n), strlen(stext(n)) > 60 ? "..." : "");
        return buf;
    }
    default:
        return "nothing";
    }
}

/* ---- mappings ------------------------------------------------------------- */

#define PAIRS(n) ((int)((n)->data.mapping.pairs.top - (n)->data.mapping.pairs.start))
#define PAIR(n, i) (&(n)->data.mapping.pairs.start[i])
#define ITEMS(n) ((int)((n)->data.sequence.items.top - (n)->data.sequence.items.start))
#define ITEM(P, n, i) node_at((P), (n)->data.sequence.items.start[i])

/* Reports key i of map when it is not a scalar or repeats an earlier key, and
 * tells the caller to skip it. Keyframe mappings compare keys as numbers so
 * that 1001 and 01001 are the same frame. */
static bool key_ok(struct pctx *P, const yaml_node_t *map, int i, const char *what)
{
    yaml_node_t *k = node_at(P, PAIR(map, i)->key);
    if (k->type != YAML_SCALAR_NODE) {
        perr(P, k, "%s: keys must be plain names, got %s", what,
             k->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping");
        return false;
    }
    for (int j = 0; j < i; j++) {
        yaml_node_t *o = node_at(P, PAIR(map, j)->key);
        if (o->type == YAML_SCALAR_NODE && !strcmp(stext(o), stext(k))) {
            perr(P, k, "duplicate key \"%s\" (first at line %d); each key may appear once",
                 stext(k), (int)o->start_mark.line + 1);
            return false;
        }
    }
    return true;
}

/* ---- file-level values ---------------------------------------------------- */

/* "1001-1120", "1001 - 1120" or one frame number. Quotes are allowed here:
 * a range is text either way, nothing is guessed. */
static bool parse_range(struct pctx *P, const yaml_node_t *n, const char *what, int *first,
                        int *last)
{
    char buf[128];
    if (n->type == YAML_SCALAR_NODE && int_text(stext(n), first)) {
        *last = *first;
    } else {
        bool ok = false;
        if (n->type == YAML_SCALAR_NODE && strlen(stext(n)) < 64) {
            char a[64], b[64];
            const char *s = stext(n);
            const char *dash = strchr(s + (*s == '-' ? 1 : 0), '-');
            if (dash) {
                size_t la = (size_t)(dash - s);
                memcpy(a, s, la);
                a[la] = '\0';
                snprintf(b, sizeof b, "%s", dash + 1);
                char *pa = a, *pb = b;
                while (*pa == ' ')
                    pa++;
                while (la && a[la - 1] == ' ')
                    a[--la] = '\0';
                while (*pb == ' ')
                    pb++;
                ok = int_text(pa, first) && int_text(pb, last);
            }
        }
        if (!ok) {
            perr(P, n, "%s must be a frame range like 1001-1120 or one frame number, got %s",
                 what, describe(P, n, buf, sizeof buf));
            return false;
        }
    }
    if (*first < 0) {
        perr(P, n, "%s: frame numbers cannot be negative", what);
        return false;
    }
    if (*first > *last) {
        perr(P, n, "%s: the range %d-%d ends before it starts; write %d-%d", what, *first,
             *last, *last, *first);
        return false;
    }
    return true;
}

static const char *scalar_string(struct pctx *P, const yaml_node_t *n)
{
    return rules_arena_strndup(P->L->arena, stext(n), n->data.scalar.length);
}

static void add_glob(struct pctx *P, struct pfs_shot *s, const yaml_node_t *n, int slot)
{
    char buf[128];
    if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        perr(P, n, "each glob in \"match\" must be text like \"A001/A001C003.*.exr\", got %s",
             describe(P, n, buf, sizeof buf));
        return;
    }
    const char *g = stext(n);
    if (g[0] == '/') {
        perr(P, n, "glob \"%s\" starts with '/': globs are relative to the dailies root, "
                   "write \"%s\"", g, g + strspn(g, "/"));
        return;
    }
    if (!strcmp(g, "..") || !strncmp(g, "../", 3) || strstr(g, "/../") ||
        (strlen(g) >= 3 && !strcmp(g + strlen(g) - 3, "/.."))) {
        perr(P, n, "glob \"%s\" leaves the dailies root with \"..\"", g);
        return;
    }
    struct rules_glob *rg = &s->globs[slot];
    rg->pat = scalar_string(P, n);
    rg->line = (int)n->start_mark.line + 1;
    rg->col = (int)n->start_mark.column + 1;
    if (rg->pat)
        s->nglobs = slot + 1 > s->nglobs ? slot + 1 : s->nglobs;
}

static void parse_match(struct pctx *P, struct pfs_shot *s, const yaml_node_t *n)
{
    char buf[128];
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        s->globs = palloc(P, sizeof *s->globs);
        if (s->globs)
            add_glob(P, s, n, 0);
        return;
    }
    if (n->type != YAML_SEQUENCE_NODE || ITEMS(n) == 0) {
        perr(P, n, "\"match\" must be a glob or a list of globs relative to the dailies root, "
                   "like [\"A001/A001C003.*.exr\"], got %s", describe(P, n, buf, sizeof buf));
        return;
    }
    s->globs = palloc(P, (size_t)ITEMS(n) * sizeof *s->globs);
    if (!s->globs)
        return;
    /* Compact the array: a bad glob leaves no hole. */
    int slot = 0;
    for (int i = 0; i < ITEMS(n); i++) {
        int before = s->nglobs;
        add_glob(P, s, ITEM(P, n, i), slot);
        if (s->nglobs > before)
            slot++;
    }
}

static bool number_list(struct pctx *P, const yaml_node_t *n, int count, double *out)
{
    if (n->type != YAML_SEQUENCE_NODE || ITEMS(n) != count)
        return false;
    for (int i = 0; i < count; i++)
        if (!scalar_number(ITEM(P, n, i), &out[i]))
            return false;
    return true;
}

/* ---- source: how a camera clip becomes frames ------------------------------ */

struct colour_key {
    const char *name;
    int (*parse)(const char *);
    const char *(*name_of)(int);
    int count;
    size_t offset;
};

static const char *matrix_name(int v) { return pfs_matrix_name((enum pfs_matrix)v); }
static const char *range_name(int v) { return pfs_range_name((enum pfs_range)v); }
static const char *transfer_name(int v) { return pfs_transfer_name((enum pfs_transfer)v); }
static const char *primaries_name(int v) { return pfs_primaries_name((enum pfs_primaries)v); }

static const struct colour_key colour_keys[] = {
    {"matrix", pfs_matrix_parse, matrix_name, PFS_MATRIX_COUNT,
     offsetof(struct pfs_clip_source, matrix)},
    {"range", pfs_range_parse, range_name, PFS_RANGE_COUNT,
     offsetof(struct pfs_clip_source, range)},
    {"transfer", pfs_transfer_parse, transfer_name, PFS_TRANSFER_COUNT,
     offsetof(struct pfs_clip_source, transfer)},
    {"primaries", pfs_primaries_parse, primaries_name, PFS_PRIMARIES_COUNT,
     offsetof(struct pfs_clip_source, primaries)},
};

static void parse_colour(struct pctx *P, struct pfs_clip_source *src, const yaml_node_t *n)
{
    char buf[128];
    if (n->type != YAML_MAPPING_NODE) {
        perr(P, n, "source: \"colour\" is a mapping like {transfer: logc3, primaries: awg3}, "
                   "got %s", describe(P, n, buf, sizeof buf));
        return;
    }
    for (int i = 0; i < PAIRS(n); i++) {
        if (!key_ok(P, n, i, "colour"))
            continue;
        yaml_node_t *key = node_at(P, PAIR(n, i)->key);
        yaml_node_t *val = node_at(P, PAIR(n, i)->value);
        const struct colour_key *ck = NULL;
        for (size_t k = 0; k < sizeof colour_keys / sizeof *colour_keys; k++)
            if (!strcmp(stext(key), colour_keys[k].name))
                ck = &colour_keys[k];
        if (!ck) {
            perr(P, key, "colour: unknown key \"%s\"; it takes matrix, range, transfer and "
                         "primaries", stext(key));
            continue;
        }
        int v = val->type == YAML_SCALAR_NODE ? ck->parse(stext(val)) : -1;
        if (v < 0) {
            char names[256] = "";
            size_t used = 0;
            for (int k = 0; k < ck->count && used < sizeof names; k++)
                used += (size_t)snprintf(names + used, sizeof names - used, "%s%s",
                                         k ? ", " : "", ck->name_of(k));
            perr(P, val, "colour: %s %s is not one platefs knows; use one of: %s", ck->name,
                 describe(P, val, buf, sizeof buf), names);
            continue;
        }
        *(int *)((char *)src + ck->offset) = v;
    }
}

static void parse_source(struct pctx *P, struct pfs_shot *s, const yaml_node_t *n)
{
    char buf[128];
    s->has_source = true;
    if (n->type != YAML_MAPPING_NODE) {
        perr(P, n, "\"source\" is a mapping like {first_frame: 1001, colour: {transfer: "
                   "logc3}}, got %s", describe(P, n, buf, sizeof buf));
        return;
    }
    for (int i = 0; i < PAIRS(n); i++) {
        if (!key_ok(P, n, i, "source"))
            continue;
        yaml_node_t *key = node_at(P, PAIR(n, i)->key);
        yaml_node_t *val = node_at(P, PAIR(n, i)->value);
        const char *name = stext(key);
        if (!strcmp(name, "first_frame")) {
            int f;
            if (val->type == YAML_SCALAR_NODE && !strcmp(stext(val), "timecode"))
                s->source.first_from_timecode = true;
            else if (scalar_int(val, &f) && f >= 0)
                s->source.first_frame = f;
            else
                perr(P, val, "source: \"first_frame\" is the number of the clip's first "
                             "frame (like 1001) or \"timecode\" to number frames from the "
                             "clip's start timecode, got %s", describe(P, val, buf, sizeof buf));
        } else if (!strcmp(name, "colour") || !strcmp(name, "color")) {
            parse_colour(P, &s->source, val);
        } else {
            perr(P, key, "source: unknown key \"%s\"; it takes first_frame and colour", name);
        }
    }
}

/* ---- op parameters -------------------------------------------------------- */

struct opctx {
    const struct pfs_op_desc *desc;
    struct rules_op *op;
};

static const char *unit_words(const char *unit)
{
    if (!strcmp(unit, "K"))
        return "kelvin";
    if (!strcmp(unit, "px"))
        return "pixels";
    return unit;
}

/* which: "" or " (component 2 of 3)", " (point 4, y)". */
static void range_error(struct pctx *P, const struct opctx *O,
                        const struct pfs_param_desc *pd, const yaml_node_t *n, double v,
                        const char *which, const char *at)
{
    char vs[32], lo[32], hi[32];
    rules_format_number(v, vs);
    snprintf(lo, sizeof lo, "%g", pd->min);
    snprintf(hi, sizeof hi, "%g", pd->max);
    perr(P, n, "%s: %s%s: %s%s%s%s is out of range %s..%s", O->desc->name, pd->name, at, vs,
         pd->unit ? " " : "", pd->unit ? pd->unit : "", which, lo, hi);
}

/* A list of points [[x, y], ...] into key->pts (arena). */
static bool parse_points(struct pctx *P, const struct opctx *O,
                         const struct pfs_param_desc *pd, const yaml_node_t *n,
                         const char *at, bool in_key, struct rules_key *key)
{
    char buf[128];
    const char *name = O->desc->name;
    const char *in = pd->unit ? " in " : "", *unit = pd->unit ? unit_words(pd->unit) : "";
    int least = pd->ncomp > 1 ? pd->ncomp : 1;
    /* [812, 0, 840, 540]: points written without their own brackets. */
    bool flat = n->type == YAML_SEQUENCE_NODE && ITEMS(n) > 0;
    for (int i = 0; flat && i < ITEMS(n); i++)
        if (ITEM(P, n, i)->type != YAML_SCALAR_NODE)
            flat = false;
    if (n->type != YAML_SEQUENCE_NODE || flat) {
        perr(P, n, "%s: \"%s\"%s must be a list of points [[x, y], ...]%s%s%s, got %s%s", name,
             pd->name, at, in, unit,
             pd->keyframable && !in_key ? " or keyframes {frame: [[x, y], ...]}" : "",
             describe(P, n, buf, sizeof buf),
             flat ? "; write each point as its own [x, y], like [[812, 0], [840, 540]]" : "");
        return false;
    }
    int npts = ITEMS(n);
    bool ok = true;
    if (npts < least) {
        perr(P, n, "%s: \"%s\"%s needs at least %d point%s, got %d", name, pd->name, at, least,
             least == 1 ? "" : "s", npts);
        ok = false;
    } else if (npts > PFS_PARAM_MAX_POINTS) {
        perr(P, n, "%s: \"%s\"%s has %d points; a list of points holds at most %d", name,
             pd->name, at, npts, PFS_PARAM_MAX_POINTS);
        ok = false;
    }
    double (*pts)[2] = NULL;
    if (ok) {
        pts = palloc(P, (size_t)npts * sizeof *pts);
        if (!pts)
            return false;
    }
    for (int i = 0; i < npts; i++) {
        const yaml_node_t *item = ITEM(P, n, i);
        double xy[2];
        if (!number_list(P, item, 2, xy)) {
            perr(P, item, "%s: \"%s\"%s: point %d must be [x, y]%s%s, got %s", name, pd->name,
                 at, i + 1, in, unit, describe(P, item, buf, sizeof buf));
            ok = false;
            continue;
        }
        for (int c = 0; c < 2; c++) {
            if (xy[c] < pd->min || xy[c] > pd->max) {
                char which[48];
                snprintf(which, sizeof which, " (point %d, %s)", i + 1, c ? "y" : "x");
                range_error(P, O, pd, ITEM(P, item, c), xy[c], which, at);
                ok = false;
            }
        }
        if (ok) {
            pts[i][0] = xy[0];
            pts[i][1] = xy[1];
        }
    }
    if (!ok)
        return false;
    key->pts = pts;
    key->npts = npts;
    key->v[0] = npts;
    return true;
}

/* One value of a parameter (a constant, or the value of one keyframe). */
static bool parse_value(struct pctx *P, const struct opctx *O,
                        const struct pfs_param_desc *pd, const yaml_node_t *n, int frame,
                        bool in_key, struct rules_key *key)
{
    char buf[128], at[48] = "";
    double *out = key->v;
    const char *name = O->desc->name;
    if (in_key)
        snprintf(at, sizeof at, " at frame %d", frame);
    const char *orkeys = pd->keyframable && !in_key ? " or keyframes {frame: value}" : "";

    switch (pd->type) {
    case PFS_PARAM_NUMBER: {
        if (!scalar_number(n, &out[0])) {
            char what[64] = "a number";
            if (pd->unit)
                snprintf(what, sizeof what, "a number of %s", unit_words(pd->unit));
            perr(P, n, "%s: \"%s\"%s must be %s%s, got %s", name, pd->name, at, what, orkeys,
                 describe(P, n, buf, sizeof buf));
            return false;
        }
        if (out[0] < pd->min || out[0] > pd->max) {
            range_error(P, O, pd, n, out[0], "", at);
            return false;
        }
        return true;
    }
    case PFS_PARAM_VEC: {
        if (!number_list(P, n, pd->ncomp, out)) {
            /* A help text that starts with the components' names is the best
             * description of the list: "[x0, y0, x1, y1]". */
            char form[64];
            if (pd->help && pd->help[0] == '[')
                snprintf(form, sizeof form, "%s", pd->help);
            else
                snprintf(form, sizeof form, "[a, b%s]",
                         pd->ncomp == 2 ? "" : pd->ncomp == 3 ? ", c" : ", c, d");
            perr(P, n, "%s: \"%s\"%s must be a list of %d numbers %s%s%s%s, got %s", name,
                 pd->name, at, pd->ncomp, form, pd->unit ? " in " : "",
                 pd->unit ? unit_words(pd->unit) : "",
                 pd->keyframable && !in_key ? " or keyframes {frame: [...]}" : "",
                 describe(P, n, buf, sizeof buf));
            return false;
        }
        bool ok = true;
        for (int c = 0; c < pd->ncomp; c++) {
            if (out[c] < pd->min || out[c] > pd->max) {
                char which[48];
                snprintf(which, sizeof which, " (component %d of %d)", c + 1, pd->ncomp);
                range_error(P, O, pd, ITEM(P, n, c), out[c], which, at);
                ok = false;
            }
        }
        return ok;
    }
    case PFS_PARAM_ENUM: {
        if (n->type == YAML_SCALAR_NODE && pd->choices) {
            for (int i = 0; pd->choices[i]; i++) {
                if (!strcmp(stext(n), pd->choices[i])) {
                    out[0] = i;
                    return true;
                }
            }
        }
        char list[512] = "";
        size_t len = 0;
        for (int i = 0; pd->choices && pd->choices[i] && len < sizeof list; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                    pd->choices[i]);
        perr(P, n, "%s: \"%s\" must be one of %s; got %s", name, pd->name, list,
             describe(P, n, buf, sizeof buf));
        return false;
    }
    case PFS_PARAM_BOOL: {
        bool b;
        if (!scalar_bool(n, &b)) {
            perr(P, n, "%s: \"%s\" must be true or false, got %s", name, pd->name,
                 describe(P, n, buf, sizeof buf));
            return false;
        }
        out[0] = b;
        return true;
    }
    case PFS_PARAM_POINTS:
        return parse_points(P, O, pd, n, at, in_key, key);
    }
    return false;
}

static int key_cmp(const void *a, const void *b)
{
    const struct rules_key *x = a, *y = b;
    return (x->frame > y->frame) - (x->frame < y->frame);
}

/* One keyframe as written: its frame, where the frame is written, its value. */
struct keysrc {
    int frame;
    const yaml_node_t *at;
    const yaml_node_t *val;
};

static const char *last_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* Marks the parameter written at key; false (reported) when it already was. */
static bool claim_param(struct pctx *P, const struct opctx *O, int idx, const yaml_node_t *key)
{
    const struct pfs_param_desc *pd = &O->desc->params[idx];
    struct rules_param *rp = &O->op->params[idx];
    if (rp->set) {
        perr(P, key, "%s: \"%s\" is set twice (first at line %d)", O->desc->name, pd->name,
             rp->line);
        return false;
    }
    rp->set = true;
    rp->line = (int)key->start_mark.line + 1;
    rp->col = (int)key->start_mark.column + 1;
    return true;
}

/* The frames of the keyframes mapping v ({frame: ...}, `form` in messages),
 * in file order, into src (PAIRS(v) of room): a frame that is not a whole
 * number or is keyed twice is reported and left out. Returns how many. */
static int collect_frames(struct pctx *P, const char *opname, const char *pname,
                          const char *form, const yaml_node_t *v, struct keysrc *src)
{
    char buf[128];
    int n = 0;
    for (int i = 0; i < PAIRS(v); i++) {
        yaml_node_t *k = node_at(P, PAIR(v, i)->key);
        int frame;
        if (!scalar_int(k, &frame)) {
            perr(P, k, "%s: \"%s\": keyframes are %s with whole frame numbers, got %s as a "
                       "frame", opname, pname, form, describe(P, k, buf, sizeof buf));
            continue;
        }
        bool dup = false;
        for (int j = 0; j < n && !dup; j++) {
            if (src[j].frame == frame) {
                perr(P, k, "%s: \"%s\": frame %d is keyed twice (first at line %d)", opname,
                     pname, frame, (int)src[j].at->start_mark.line + 1);
                dup = true;
            }
        }
        if (!dup)
            src[n++] = (struct keysrc){frame, k, node_at(P, PAIR(v, i)->value)};
    }
    return n;
}

/* A keyframed parameter from its keys (file order, distinct frames). The
 * keys of a list of points all have the first key's number of points. */
static void set_keys(struct pctx *P, const struct opctx *O, int idx, const struct keysrc *src,
                     int n)
{
    const struct pfs_param_desc *pd = &O->desc->params[idx];
    struct rules_param *rp = &O->op->params[idx];
    rp->keys = palloc(P, (size_t)(n ? n : 1) * sizeof *rp->keys);
    if (!rp->keys)
        return;
    rp->keyed = true;
    const struct rules_key *ref = NULL;
    for (int i = 0; i < n; i++) {
        struct rules_key *rk = &rp->keys[rp->nkeys++];
        rk->frame = src[i].frame;
        rk->line = (int)src[i].at->start_mark.line + 1;
        rk->col = (int)src[i].at->start_mark.column + 1;
        if (!parse_value(P, O, pd, src[i].val, rk->frame, true, rk) ||
            pd->type != PFS_PARAM_POINTS)
            continue;
        if (!ref)
            ref = rk;
        else if (rk->npts != ref->npts)
            pdiag_at(P, PFS_DIAG_ERROR, rk->line, rk->col,
                     "%s: %s: the key at frame %d has %d point%s but the one at frame %d has "
                     "%d; keyframes of a %s need the same number of points",
                     O->desc->name, pd->name, rk->frame, rk->npts, rk->npts == 1 ? "" : "s",
                     ref->frame, ref->npts, last_name(pd->name));
    }
    qsort(rp->keys, (size_t)rp->nkeys, sizeof *rp->keys, key_cmp);
}

static void set_param(struct pctx *P, const struct opctx *O, int idx, const yaml_node_t *key,
                      const yaml_node_t *v)
{
    const struct pfs_param_desc *pd = &O->desc->params[idx];
    struct rules_param *rp = &O->op->params[idx];
    const char *name = O->desc->name;

    if (!claim_param(P, O, idx, key))
        return;
    if (v->type != YAML_MAPPING_NODE) {
        rp->keys = palloc(P, sizeof *rp->keys);
        if (!rp->keys)
            return;
        rp->nkeys = 1;
        rp->keys[0].line = (int)v->start_mark.line + 1;
        rp->keys[0].col = (int)v->start_mark.column + 1;
        parse_value(P, O, pd, v, 0, false, &rp->keys[0]);
        return;
    }
    if (!pd->keyframable) {
        perr(P, v, "%s: \"%s\" cannot be keyframed; give one value for the whole shot", name,
             pd->name);
        return;
    }
    if (PAIRS(v) == 0) {
        perr(P, v, "%s: \"%s\": keyframes {frame: value} need at least one frame", name,
             pd->name);
        return;
    }
    struct keysrc *src = malloc((size_t)PAIRS(v) * sizeof *src);
    if (!src) {
        P->L->oom = true;
        return;
    }
    int n = collect_frames(P, name, pd->name, "{frame: value}", v, src);
    set_keys(P, O, idx, src, n);
    free(src);
}

static bool has_group(const struct pfs_op_desc *d, const char *prefix)
{
    size_t n = strlen(prefix);
    for (int i = 0; i < d->nparams; i++)
        if (!strncmp(d->params[i].name, prefix, n) && d->params[i].name[n] == '.')
            return true;
    return false;
}

static void list_params(const struct pfs_op_desc *d, const char *prefix, char *out,
                        size_t size)
{
    size_t len = 0, n = prefix ? strlen(prefix) : 0;
    out[0] = '\0';
    for (int i = 0; i < d->nparams && len < size; i++) {
        const char *pn = d->params[i].name;
        if (prefix && (strncmp(pn, prefix, n) || pn[n] != '.'))
            continue;
        len += (size_t)snprintf(out + len, size - len, "%s%s", len ? ", " : "", pn);
    }
}

static void unknown_param(struct pctx *P, const struct opctx *O, const yaml_node_t *key,
                          const char *full)
{
    const struct pfs_op_desc *d = O->desc;
    int best = -1, bestd = 1 << 30;
    for (int i = 0; i < d->nparams; i++) {
        int dist = rules_edit_distance(full, d->params[i].name);
        const char *dot = strrchr(d->params[i].name, '.');
        if (dot) {
            int dl = rules_edit_distance(full, dot + 1);
            dist = dl < dist ? dl : dist;
        }
        if (dist < bestd)
            bestd = dist, best = i;
    }
    char hint[160] = "";
    int limit = ((int)strlen(full) + 1) / 2 > 2 ? ((int)strlen(full) + 1) / 2 : 2;
    if (best >= 0 && bestd <= limit)
        snprintf(hint, sizeof hint, "; did you mean \"%s\"?", d->params[best].name);
    char list[768];
    list_params(d, NULL, list, sizeof list);
    perr(P, key, "%s: unknown parameter \"%s\"%s %s takes: %s", d->name, full,
         hint[0] ? hint : ";", d->name, list);
}

/* Whether a group's mapping is keyframes {frame: {member: value}} rather
 * than its members: a frame number among its keys says so. */
static bool keyed_group(struct pctx *P, const yaml_node_t *v)
{
    for (int i = 0; i < PAIRS(v); i++) {
        int frame;
        if (scalar_int(node_at(P, PAIR(v, i)->key), &frame))
            return true;
    }
    return false;
}

/* The members a key of a group gives ("polygon", "center, size"), in table
 * order. */
static void member_names(const struct pfs_op_desc *d, const char *group,
                         const unsigned char *gives, char *out, size_t size)
{
    size_t len = 0, skip = strlen(group) + 1;
    out[0] = '\0';
    for (int p = 0; p < d->nparams && len < size; p++)
        if (gives[p])
            len += (size_t)snprintf(out + len, size - len, "%s%s", len ? ", " : "",
                                    d->params[p].name + skip);
}

/* The member `name` of one key's mapping m, or NULL. */
static const yaml_node_t *member_value(struct pctx *P, const yaml_node_t *m, const char *name)
{
    for (int i = 0; i < PAIRS(m); i++) {
        const yaml_node_t *k = node_at(P, PAIR(m, i)->key);
        if (k->type == YAML_SCALAR_NODE && !strcmp(stext(k), name))
            return node_at(P, PAIR(m, i)->value);
    }
    return NULL;
}

/*
 * A keyed group: {1001: {polygon: A}, 1040: {polygon: B}} under `shape`
 * means exactly shape: {polygon: {1001: A, 1040: B}}. Every key gives the
 * same members (a shape keeps its kind), each of them keyframable; each
 * member is then keyframed as if written on its own, so values, points,
 * hashes and messages are those of the member form.
 */
static void set_group_keys(struct pctx *P, const struct opctx *O, const char *group,
                           const yaml_node_t *key, const yaml_node_t *v)
{
    const struct pfs_op_desc *d = O->desc;
    int np = d->nparams, n = PAIRS(v);
    char buf[128], list[512];
    list_params(d, group, list, sizeof list);
    struct keysrc *src = malloc((size_t)n * sizeof *src);
    struct keysrc *ms = malloc((size_t)n * sizeof *ms);
    unsigned char *gives = calloc((size_t)n * (size_t)(np ? np : 1), 1);
    if (!src || !ms || !gives) {
        P->L->oom = true;
        goto out;
    }
    int errors = P->errors;
    int nf = collect_frames(P, d->name, group, "{frame: {parameter: value}}", v, src);
    for (int f = 0; f < nf; f++) {
        const yaml_node_t *m = src[f].val;
        if (m->type != YAML_MAPPING_NODE) {
            perr(P, m, "%s: \"%s\" at frame %d must be a mapping of its parameters (%s), got "
                       "%s", d->name, group, src[f].frame, list, describe(P, m, buf, sizeof buf));
            continue;
        }
        if (PAIRS(m) == 0) {
            perr(P, m, "%s: \"%s\" at frame %d gives none of its parameters (%s)", d->name,
                 group, src[f].frame, list);
            continue;
        }
        for (int i = 0; i < PAIRS(m); i++) {
            if (!key_ok(P, m, i, d->name))
                continue;
            const yaml_node_t *mk = node_at(P, PAIR(m, i)->key);
            const yaml_node_t *mv = node_at(P, PAIR(m, i)->value);
            char full[256];
            if (snprintf(full, sizeof full, "%s.%s", group, stext(mk)) >= (int)sizeof full) {
                perr(P, mk, "%s: parameter name too long", d->name);
                continue;
            }
            int idx = pfs_op_param_index(d, full);
            if (idx < 0 && has_group(d, full)) {
                perr(P, mk, "%s: keyframes of \"%s\" hold its own parameters (%s); key the "
                            "parameters of the group \"%s\" one by one instead",
                     d->name, group, list, full);
                continue;
            }
            if (idx < 0) {
                unknown_param(P, O, mk, full);
                continue;
            }
            if (!d->params[idx].keyframable) {
                perr(P, mv, "%s: \"%s\" cannot be keyframed; give one value for the whole "
                            "shot", d->name, full);
                continue;
            }
            gives[(size_t)f * (size_t)np + (size_t)idx] = 1;
        }
    }
    if (P->errors != errors)
        goto out;
    for (int f = 1; f < nf; f++) {
        if (!memcmp(gives + (size_t)f * (size_t)np, gives, (size_t)np))
            continue;
        char these[256], first[256];
        member_names(d, group, gives + (size_t)f * (size_t)np, these, sizeof these);
        member_names(d, group, gives, first, sizeof first);
        perr(P, src[f].at, "%s: %s: the key at frame %d gives %s but the one at frame %d gives "
                           "%s; a %s keeps its kind across keys",
             d->name, group, src[f].frame, these, src[0].frame, first, last_name(group));
    }
    if (P->errors != errors)
        goto out;
    for (int p = 0; p < np; p++) {
        if (!nf || !gives[p] || !claim_param(P, O, p, key))
            continue;
        const char *member = d->params[p].name + strlen(group) + 1;
        for (int f = 0; f < nf; f++)
            ms[f] = (struct keysrc){src[f].frame, src[f].at,
                                    member_value(P, src[f].val, member)};
        set_keys(P, O, p, ms, nf);
    }
out:
    free(src);
    free(ms);
    free(gives);
}

/* Nested mappings name parameters by dotted path; a mapping under a name that
 * is itself a parameter is that parameter's keyframes instead, and a mapping
 * of frames under a group is the group keyed as a whole. */
static void walk_params(struct pctx *P, const struct opctx *O, const char *prefix,
                        const yaml_node_t *key, const yaml_node_t *v)
{
    char full[256], buf[128], list[512];
    if (snprintf(full, sizeof full, "%s%s%s", prefix ? prefix : "", prefix ? "." : "",
                 stext(key)) >= (int)sizeof full) {
        perr(P, key, "%s: parameter name too long", O->desc->name);
        return;
    }
    int idx = pfs_op_param_index(O->desc, full);
    if (idx >= 0) {
        set_param(P, O, idx, key, v);
        return;
    }
    if (!has_group(O->desc, full)) {
        unknown_param(P, O, key, full);
        return;
    }
    if (v->type != YAML_MAPPING_NODE) {
        list_params(O->desc, full, list, sizeof list);
        perr(P, v, "%s: \"%s\" is a group of parameters (%s); write %s: {...: value}, got %s",
             O->desc->name, full, list, stext(key), describe(P, v, buf, sizeof buf));
        return;
    }
    if (keyed_group(P, v)) {
        set_group_keys(P, O, full, key, v);
        return;
    }
    for (int i = 0; i < PAIRS(v); i++) {
        if (!key_ok(P, v, i, O->desc->name))
            continue;
        walk_params(P, O, full, node_at(P, PAIR(v, i)->key), node_at(P, PAIR(v, i)->value));
    }
}

/* ---- protect: regions no local op may touch ------------------------------- */

/* A region's shape is a parameter like an op's, so it is keyframed, checked
 * and reported by the same code. */
const struct pfs_param_desc rules_protect_params[2] = {
    {.name = "rect", .type = PFS_PARAM_VEC, .ncomp = 4, .min = -1e6, .max = 1e6,
     .keyframable = true, .unit = "px", .help = "[x0, y0, x1, y1]"},
    {.name = "ellipse", .type = PFS_PARAM_VEC, .ncomp = 4, .min = -1e6, .max = 1e6,
     .keyframable = true, .unit = "px", .help = "[cx, cy, rx, ry]"},
};
static const struct pfs_op_desc protect_desc = {
    .name = "protect",
    .params = rules_protect_params,
    .nparams = 2,
};

static void check_protect_keys(struct pctx *P, const struct rules_protect *r)
{
    for (int k = 0; k < r->box.nkeys; k++) {
        const struct rules_key *key = &r->box.keys[k];
        const double *a = key->v;
        char at[48] = "";
        if (r->box.keyed)
            snprintf(at, sizeof at, " at frame %d", key->frame);
        if (r->shape == PFS_PROTECT_RECT && (a[2] < a[0] || a[3] < a[1]))
            pdiag_at(P, PFS_DIAG_ERROR, key->line, key->col,
                   "protect: rect [x0, y0, x1, y1]%s needs x0 <= x1 and y0 <= y1 (top-left "
                   "corner first)", at);
        else if (r->shape == PFS_PROTECT_ELLIPSE && (a[2] <= 0 || a[3] <= 0))
            pdiag_at(P, PFS_DIAG_ERROR, key->line, key->col,
                   "protect: ellipse [cx, cy, rx, ry]%s needs radii above 0", at);
    }
}

static void parse_protect(struct pctx *P, struct pfs_shot *s, const yaml_node_t *n)
{
    char buf[128];
    if (n->type != YAML_SEQUENCE_NODE) {
        perr(P, n, "\"protect\" must be a list of regions like - rect: [x0, y0, x1, y1], "
                   "got %s", describe(P, n, buf, sizeof buf));
        return;
    }
    s->protect = palloc(P, (size_t)(ITEMS(n) + 1) * sizeof *s->protect);
    if (!s->protect)
        return;
    for (int i = 0; i < ITEMS(n); i++) {
        yaml_node_t *item = ITEM(P, n, i);
        if (item->type != YAML_MAPPING_NODE) {
            perr(P, item, "each protect region is a mapping like rect: [x0, y0, x1, y1] or "
                          "ellipse: [cx, cy, rx, ry], got %s",
                 describe(P, item, buf, sizeof buf));
            continue;
        }
        struct rules_protect r = {.shape = -1,
                                  .line = (int)item->start_mark.line + 1,
                                  .col = (int)item->start_mark.column + 1};
        struct rules_param shapes[2] = {{0}};
        struct rules_op op = {.desc = &protect_desc, .params = shapes};
        struct opctx O = {.desc = &protect_desc, .op = &op};
        int errors = P->errors;
        for (int k = 0; k < PAIRS(item); k++) {
            if (!key_ok(P, item, k, "protect"))
                continue;
            yaml_node_t *key = node_at(P, PAIR(item, k)->key);
            yaml_node_t *val = node_at(P, PAIR(item, k)->value);
            const char *name = stext(key);
            int idx = pfs_op_param_index(&protect_desc, name);
            if (idx >= 0) {
                if (r.shape != -1) {
                    perr(P, key, "a protect region has one shape; put the %s in its own "
                                 "list item", name);
                    continue;
                }
                r.shape = idx == 0 ? PFS_PROTECT_RECT : PFS_PROTECT_ELLIPSE;
                set_param(P, &O, idx, key, val);
            } else if (!strcmp(name, "frames")) {
                r.ranged = parse_range(P, val, "protect: \"frames\"", &r.first, &r.last);
            } else {
                perr(P, key, "protect: unknown key \"%s\"; a region takes rect, ellipse and "
                             "frames", name);
            }
        }
        if (r.shape == -1 && P->errors == errors)
            perr(P, item, "protect: this region has no shape; add rect: [x0, y0, x1, y1] or "
                          "ellipse: [cx, cy, rx, ry]");
        if (P->errors != errors)
            continue;
        r.box = shapes[r.shape == PFS_PROTECT_RECT ? 0 : 1];
        check_protect_keys(P, &r);
        if (P->errors == errors)
            s->protect[s->nprotect++] = r;
    }
}

static const struct pfs_op_desc *find_op(struct rules_loader *L, const char *name)
{
    for (int i = 0; L->registry[i]; i++)
        if (!strcmp(L->registry[i]->name, name))
            return L->registry[i];
    return NULL;
}

static void unknown_op(struct pctx *P, const yaml_node_t *v)
{
    char list[768] = "", hint[160] = "";
    size_t len = 0;
    int bestd = 1 << 30;
    const char *best = NULL;
    for (int i = 0; P->L->registry[i] && len < sizeof list; i++) {
        const char *n = P->L->registry[i]->name;
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", n);
        int d = rules_edit_distance(stext(v), n);
        if (d < bestd)
            bestd = d, best = n;
    }
    int limit = ((int)strlen(stext(v)) + 1) / 2 > 2 ? ((int)strlen(stext(v)) + 1) / 2 : 2;
    if (best && bestd <= limit)
        snprintf(hint, sizeof hint, "; did you mean \"%s\"?", best);
    perr(P, v, "unknown op \"%s\"%s known ops: %s", stext(v), hint[0] ? hint : ";", list);
}

static int int_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The op's own cross-parameter checks and warnings, at every frame where any
 * parameter is keyed: between keys values move linearly, so checking the
 * keys is what a coordinator can act on. An op with frames: of its own is
 * checked only there: at the keys inside its range and at both ends of it.
 * One warning per op is enough. */
static void run_validate(struct pctx *P, const struct rules_op *op, const yaml_node_t *item)
{
    const struct pfs_op_desc *d = op->desc;
    int nframes = 2;
    bool keyed = false;
    for (int i = 0; i < d->nparams; i++)
        if (op->params[i].keyed) {
            nframes += op->params[i].nkeys;
            keyed = true;
        }
    int nvals = rules_op_nvals(op);
    int *frames = malloc((size_t)nframes * sizeof *frames);
    pfs_pvec *vals = malloc((size_t)(nvals ? nvals : 1) * sizeof *vals);
    if (!frames || !vals) {
        free(frames);
        free(vals);
        P->L->oom = true;
        return;
    }
    int n = 0;
    for (int i = 0; i < d->nparams; i++)
        if (op->params[i].keyed)
            for (int k = 0; k < op->params[i].nkeys; k++)
                if (rules_op_in_force(op, op->params[i].keys[k].frame))
                    frames[n++] = op->params[i].keys[k].frame;
    if (keyed && op->ranged) {
        frames[n++] = op->first;
        frames[n++] = op->last;
    }
    qsort(frames, (size_t)n, sizeof *frames, int_cmp);
    int uniq = 0;
    for (int i = 0; i < n; i++)
        if (!uniq || frames[uniq - 1] != frames[i])
            frames[uniq++] = frames[i];
    bool warned = false;
    for (int f = 0; f < (uniq ? uniq : 1); f++) {
        int frame = uniq ? frames[f] : op->ranged ? op->first : 0;
        char at[32] = "";
        if (uniq)
            snprintf(at, sizeof at, " (at frame %d)", frame);
        rules_op_fill(op, frame, vals);
        pfs_error e = {0};
        if (d->validate && d->validate(vals, &e)) {
            perr(P, item, "%s: %s%s", d->name, e.msg[0] ? e.msg : "invalid parameters", at);
            break;
        }
        char advice[512] = "";
        if (d->advise && !warned)
            d->advise(vals, advice, sizeof advice);
        if (advice[0]) {
            pwarn(P, item, "%s%s", advice, at);
            warned = true;
        }
    }
    free(frames);
    free(vals);
}

/* Parses one item of ops:; returns its descriptor when the op is known
 * (whether or not its parameters were valid), for the checks on the list. */
static const struct pfs_op_desc *parse_op(struct pctx *P, struct pfs_shot *s,
                                          const yaml_node_t *item)
{
    char buf[128], what[160];
    if (item->type != YAML_MAPPING_NODE) {
        perr(P, item, "each op is a mapping that starts with op: <name>, got %s",
             describe(P, item, buf, sizeof buf));
        return NULL;
    }
    int errors = P->errors;
    const yaml_node_t *opname = NULL;
    for (int i = 0; i < PAIRS(item); i++) {
        yaml_node_t *k = node_at(P, PAIR(item, i)->key);
        if (k->type == YAML_SCALAR_NODE && !strcmp(stext(k), "op")) {
            opname = node_at(P, PAIR(item, i)->value);
            break;
        }
    }
    if (!opname) {
        /* Still catch duplicate keys so the report is complete. */
        for (int i = 0; i < PAIRS(item); i++)
            key_ok(P, item, i, "op");
        perr(P, item, "this op has no \"op:\" key naming the operation");
        return NULL;
    }
    if (opname->type != YAML_SCALAR_NODE || is_null(opname)) {
        perr(P, opname, "\"op\" must name an operation, got %s",
             describe(P, opname, buf, sizeof buf));
        return NULL;
    }
    const struct pfs_op_desc *d = find_op(P->L, stext(opname));
    if (!d) {
        unknown_op(P, opname);
        return NULL;
    }
    struct rules_op *op = &s->ops[s->nops];
    op->desc = d;
    op->line = (int)item->start_mark.line + 1;
    op->col = (int)item->start_mark.column + 1;
    op->ranged = false;
    op->params = palloc(P, (size_t)(d->nparams ? d->nparams : 1) * sizeof *op->params);
    if (!op->params)
        return d;
    struct opctx O = {.desc = d, .op = op};
    for (int i = 0; i < PAIRS(item); i++) {
        if (!key_ok(P, item, i, d->name))
            continue;
        yaml_node_t *k = node_at(P, PAIR(item, i)->key);
        yaml_node_t *v = node_at(P, PAIR(item, i)->value);
        if (!strcmp(stext(k), "op"))
            continue;
        if (!strcmp(stext(k), "frames")) {
            /* The op's own range, checked like the shot's. */
            snprintf(what, sizeof what, "%s: \"frames\"", d->name);
            op->ranged = parse_range(P, v, what, &op->first, &op->last);
            op->frames_line = (int)v->start_mark.line + 1;
            op->frames_col = (int)v->start_mark.column + 1;
            continue;
        }
        walk_params(P, &O, NULL, k, v);
    }
    for (int i = 0; i < d->nparams; i++) {
        struct rules_param *rp = &op->params[i];
        if (rp->set)
            continue;
        const struct pfs_param_desc *pd = &d->params[i];
        if (pd->required) {
            perr(P, item, "%s: missing required parameter \"%s\" (%s)", d->name, pd->name,
                 pd->help ? pd->help : "no default");
            continue;
        }
        rp->keys = palloc(P, sizeof *rp->keys);
        if (!rp->keys)
            return d;
        rp->nkeys = 1;
        /* A list of points not written has none (npts 0). */
        if (pd->type != PFS_PARAM_POINTS)
            memcpy(rp->keys[0].v, pd->def, sizeof pd->def);
    }
    if (P->errors != errors)
        return d;
    for (int i = 0; i < d->nparams; i++)
        if (!op->params[i].keys)
            return d; /* out of memory on the way */
    if (d->validate || d->advise)
        run_validate(P, op, item);
    if (P->errors == errors)
        s->nops++;
    return d;
}

static bool reads_neighbours(const struct pfs_op_desc *d)
{
    return d->reads_before > 0 || d->reads_after > 0;
}

static void parse_ops(struct pctx *P, struct pfs_shot *s, const yaml_node_t *n)
{
    char buf[128];
    if (n->type != YAML_SEQUENCE_NODE) {
        perr(P, n, "\"ops\" must be a list of operations like - op: relight, got %s",
             describe(P, n, buf, sizeof buf));
        return;
    }
    if (ITEMS(n) == 0) {
        pwarn(P, n, "\"ops\" is empty: the matched frames pass through unchanged");
        return;
    }
    if (ITEMS(n) > PFS_MAX_OPS) {
        perr(P, n, "a shot has at most %d ops, this one lists %d", PFS_MAX_OPS, (int)ITEMS(n));
        return;
    }
    s->ops = palloc(P, (size_t)ITEMS(n) * sizeof *s->ops);
    if (!s->ops)
        return;
    /* Every item whose op is known takes part in the ordering check, valid
     * parameters or not, so one run reports that too. */
    const struct pfs_op_desc *descs[PFS_MAX_OPS];
    const yaml_node_t *items[PFS_MAX_OPS];
    for (int i = 0; i < ITEMS(n); i++) {
        items[i] = ITEM(P, n, i);
        descs[i] = parse_op(P, s, items[i]);
    }
    /*
     * Ops that read neighbouring frames fill from the plates as shot (the
     * engine hands them the decoded neighbours, not what earlier ops made
     * of them), so they lead the chain: after a grade, say, they would
     * paste ungraded pixels into a graded frame.
     */
    for (int i = 0; i < ITEMS(n); i++) {
        if (!descs[i] || !reads_neighbours(descs[i]))
            continue;
        for (int j = 0; j < i; j++) {
            if (descs[j] && !reads_neighbours(descs[j])) {
                perr(P, items[i], "%s reads neighbouring frames, so it must come before %s "
                                  "(line %d) in ops: it fills holes from the plates as shot",
                     descs[i]->name, descs[j]->name, (int)items[j]->start_mark.line + 1);
                break;
            }
        }
    }
}

/* ---- protected regions against local ops ----------------------------------- */

/* Whether the box {x0, y0, x1, y1} (pixel edges) reaches inside a region. */
static bool region_overlaps(const struct pfs_protect_region *r, const double box[4])
{
    if (box[2] <= r->x0 || box[0] >= r->x1 || box[3] <= r->y0 || box[1] >= r->y1)
        return false;
    if (r->shape == PFS_PROTECT_RECT)
        return true;
    /* The box's point nearest the ellipse's centre, in radii. */
    double cx = 0.5 * (r->x0 + r->x1), cy = 0.5 * (r->y0 + r->y1);
    double rx = 0.5 * (r->x1 - r->x0), ry = 0.5 * (r->y1 - r->y0);
    double px = cx < box[0] ? box[0] : cx > box[2] ? box[2] : cx;
    double py = cy < box[1] ? box[1] : cy > box[3] ? box[3] : cy;
    double dx = (px - cx) / rx, dy = (py - cy) / ry;
    return dx * dx + dy * dy < 1.0;
}

static void span_keys(const struct rules_param *p, int *lo, int *hi, bool *any)
{
    if (!p->keyed)
        return;
    for (int k = 0; k < p->nkeys; k++) {
        if (!*any || p->keys[k].frame < *lo)
            *lo = p->keys[k].frame;
        if (!*any || p->keys[k].frame > *hi)
            *hi = p->keys[k].frame;
        *any = true;
    }
}

struct frame_runs {
    int n;          /* runs found */
    int first[3], last[3];
    int count;      /* frames in all runs */
};

static void runs_add(struct frame_runs *r, int frame)
{
    if (r->n && r->n <= 3 && r->last[r->n - 1] == frame - 1) {
        r->last[r->n - 1] = frame;
    } else {
        if (r->n < 3) {
            r->first[r->n] = frame;
            r->last[r->n] = frame;
        }
        r->n++;
    }
    r->count++;
}

static void runs_text(const struct frame_runs *r, bool framed, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    if (!framed) {
        snprintf(out, size, "in every frame");
        return;
    }
    len += (size_t)snprintf(out, size, "at frame%s ", r->count == 1 ? "" : "s");
    for (int i = 0; i < r->n && i < 3 && len < size; i++) {
        if (r->first[i] == r->last[i])
            len += (size_t)snprintf(out + len, size - len, "%s%d", i ? ", " : "", r->first[i]);
        else
            len += (size_t)snprintf(out + len, size - len, "%s%d-%d", i ? ", " : "",
                                    r->first[i], r->last[i]);
    }
    if (r->n > 3 && len < size)
        snprintf(out + len, size - len, " and %d more run%s", r->n - 3, r->n == 4 ? "" : "s");
}

/*
 * Ops that move or synthesise pixels (PFS_OP_LOCAL_SYNTH) may not change a
 * protected region's pixels in any frame. Shapes and regions move linearly
 * between keys and are held outside them, so every frame from the first key
 * to the last (within the shot's range and the op's own) is checked, and
 * nothing else needs to be. Colour ops and whole-frame geometry are allowed
 * (docs/rules.md).
 */
static void check_protected(struct pctx *P, const struct pfs_shot *s)
{
    if (!s->nprotect)
        return;
    for (int i = 0; i < s->nops; i++) {
        const struct rules_op *op = &s->ops[i];
        const struct pfs_op_desc *d = op->desc;
        if (d->kind != PFS_OP_LOCAL_SYNTH)
            continue;
        int lo = 0, hi = 0;
        bool any = false;
        for (int p = 0; p < d->nparams; p++)
            span_keys(&op->params[p], &lo, &hi, &any);
        for (int r = 0; r < s->nprotect; r++) {
            const struct rules_protect *rp = &s->protect[r];
            span_keys(&rp->box, &lo, &hi, &any);
            if (rp->ranged) {
                int a = rp->first, b = rp->last;
                if (!any || a < lo)
                    lo = a;
                if (!any || b > hi)
                    hi = b;
                any = true;
            }
        }
        if (s->ranged || op->ranged) {
            /* Only the shot's frames are ever rendered, and the op runs only
             * in its own. */
            int a = s->ranged ? s->first : INT_MIN, b = s->ranged ? s->last : INT_MAX;
            if (op->ranged) {
                a = op->first > a ? op->first : a;
                b = op->last < b ? op->last : b;
            }
            if (a > b)
                continue; /* never in force */
            if (!any) {
                lo = a;
                hi = b;
            } else {
                lo = lo < a ? a : lo > b ? b : lo;
                hi = hi > b ? b : hi < a ? a : hi;
            }
            any = true;
        }
        if (hi - lo > 1000000)
            hi = lo + 1000000;
        int nvals = rules_op_nvals(op);
        pfs_pvec *vals = malloc((size_t)(nvals ? nvals : 1) * sizeof *vals);
        struct frame_runs *runs = calloc((size_t)s->nprotect, sizeof *runs);
        if (!vals || !runs) {
            free(vals);
            free(runs);
            P->L->oom = true;
            return;
        }
        for (int f = lo; f <= hi; f++) {
            rules_op_fill(op, f, vals);
            double box[4] = {-INFINITY, -INFINITY, INFINITY, INFINITY};
            if (d->extent && !d->extent(vals, box))
                box[0] = box[1] = -INFINITY, box[2] = box[3] = INFINITY;
            for (int r = 0; r < s->nprotect; r++) {
                struct pfs_protect_region reg;
                const struct rules_protect *rp = &s->protect[r];
                if (rp->ranged && (f < rp->first || f > rp->last))
                    continue;
                rules_protect_region_at(rp, f, &reg);
                if (region_overlaps(&reg, box))
                    runs_add(&runs[r], f);
            }
        }
        for (int r = 0; r < s->nprotect; r++) {
            if (!runs[r].count)
                continue;
            char when[160];
            runs_text(&runs[r], any, when, sizeof when);
            pdiag_at(P, PFS_DIAG_ERROR, op->line, op->col,
                     "%s %s pixels inside the protected region at line %d %s; protected "
                     "regions (performances) may be touched only by colour ops and "
                     "whole-frame geometry: move or shrink the %s, or narrow the region's "
                     "frames",
                     d->name, d->extent ? "would move or synthesise" : "moves or synthesises",
                     s->protect[r].line, when, d->extent ? "shape" : "op's frames");
        }
        free(vals);
        free(runs);
    }
}

/* An op whose own frames: miss the shot's never runs: most likely a typo. */
static void check_op_frames(struct pctx *P, const struct pfs_shot *s)
{
    if (!s->ranged)
        return;
    for (int i = 0; i < s->nops; i++) {
        const struct rules_op *op = &s->ops[i];
        if (op->ranged && (op->last < s->first || op->first > s->last))
            pdiag_at(P, PFS_DIAG_WARNING, op->frames_line, op->frames_col,
                     "%s: its frames %d-%d lie outside the shot's frames %d-%d, so it never "
                     "runs", op->desc->name, op->first, op->last, s->first, s->last);
    }
}

/* ---- the file ------------------------------------------------------------- */

static const char *const top_keys[] = {"shot", "match", "frames", "protect", "ops",
                                        "source", NULL};

static void parse_root(struct pctx *P, struct pfs_shot *s, const yaml_node_t *root)
{
    char buf[128];
    if (root->type != YAML_MAPPING_NODE) {
        perr(P, root, "a rule file is a mapping of keys (shot, match, frames, protect, ops, "
                      "source), "
                      "got %s", describe(P, root, buf, sizeof buf));
        return;
    }
    const yaml_node_t *seen[6] = {0};
    s->source = *pfs_clip_source_default();
    for (int i = 0; i < PAIRS(root); i++) {
        if (!key_ok(P, root, i, "rule file"))
            continue;
        yaml_node_t *k = node_at(P, PAIR(root, i)->key);
        yaml_node_t *v = node_at(P, PAIR(root, i)->value);
        int which = -1;
        for (int j = 0; top_keys[j]; j++)
            if (!strcmp(stext(k), top_keys[j]))
                which = j;
        if (which < 0) {
            const char *best = NULL;
            int bestd = 1 << 30;
            for (int j = 0; top_keys[j]; j++) {
                int d = rules_edit_distance(stext(k), top_keys[j]);
                if (d < bestd)
                    bestd = d, best = top_keys[j];
            }
            if (bestd <= 2)
                perr(P, k, "unknown key \"%s\"; did you mean \"%s\"? A rule file takes: "
                           "shot, match, frames, protect, ops, source", stext(k), best);
            else
                perr(P, k, "unknown key \"%s\"; a rule file takes: shot, match, frames, "
                           "protect, ops, source (op parameters go inside an item of ops)",
                 stext(k));
            continue;
        }
        seen[which] = v;
        switch (which) {
        case 0:
            if (v->type != YAML_SCALAR_NODE || is_null(v)) {
                perr(P, v, "\"shot\" must be the shot name, like A012C003, got %s",
                     describe(P, v, buf, sizeof buf));
                break;
            }
            s->name = scalar_string(P, v);
            s->name_line = (int)v->start_mark.line + 1;
            s->name_col = (int)v->start_mark.column + 1;
            break;
        case 1:
            parse_match(P, s, v);
            break;
        case 2:
            s->ranged = parse_range(P, v, "\"frames\"", &s->first, &s->last);
            break;
        case 3:
            parse_protect(P, s, v);
            break;
        case 4:
            parse_ops(P, s, v);
            break;
        case 5:
            parse_source(P, s, v);
            break;
        }
    }
    static const char *const missing[] = {
        "missing \"shot\": name the shot, like shot: A012C003",
        "missing \"match\": give the files this rule applies to, like "
        "match: [\"A012/A012C003.*.exr\"]",
        NULL,
        NULL,
        "missing \"ops\": list the operations, like ops: [{op: relight, exposure: 0.3}]",
    };
    /* A rule may only say how a clip is read: ops are then optional. */
    for (int j = 0; j < 5; j++)
        if (missing[j] && !seen[j] && !(j == 4 && seen[5]))
            perr(P, root, "%s", missing[j]);
    if (P->errors == 0) {
        check_op_frames(P, s);
        check_protected(P, s);
    }
}

static void syntax_error(struct pctx *P, const yaml_parser_t *ps)
{
    const char *problem = ps->problem ? ps->problem : "malformed YAML";
    if (ps->context)
        perr_mark(P, ps->problem_mark, "YAML syntax error: %s %s (line %d)", problem,
                  ps->context, (int)ps->context_mark.line + 1);
    else
        perr_mark(P, ps->problem_mark, "YAML syntax error: %s", problem);
}

struct pfs_shot *rules_parse_file(struct rules_loader *L, const char *path, const char *file)
{
    struct pctx P = {.L = L, .path = path};
    FILE *f = fopen(path, "rb");
    if (!f) {
        rules_diag(L, PFS_DIAG_ERROR, path, 0, 0, "cannot open the rule file: %s",
                   strerror(errno));
        return NULL;
    }
    yaml_parser_t ps;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&ps)) {
        fclose(f);
        L->oom = true;
        return NULL;
    }
    yaml_parser_set_input_file(&ps, f);
    struct pfs_shot *s = NULL;
    if (!yaml_parser_load(&ps, &doc)) {
        syntax_error(&P, &ps);
        goto out;
    }
    P.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        rules_diag(L, PFS_DIAG_ERROR, path, 0, 0,
                   "the rule file is empty; it needs at least shot, match and ops");
        P.errors++;
    } else {
        s = palloc(&P, sizeof *s);
        if (s) {
            s->file = rules_arena_strndup(L->arena, file, strlen(file));
            s->path = rules_arena_strndup(L->arena, path, strlen(path));
            parse_root(&P, s, root);
        }
    }
    yaml_document_delete(&doc);

    /* A second document would be silently ignored; say so instead. */
    if (root) {
        yaml_document_t more;
        if (!yaml_parser_load(&ps, &more)) {
            syntax_error(&P, &ps);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&more);
            if (r2)
                perr_mark(&P, more.start_mark,
                          "a rule file holds one YAML document; put each shot in its own "
                          "file");
            yaml_document_delete(&more);
        }
    }
out:
    yaml_parser_delete(&ps);
    fclose(f);
    if (P.errors || L->oom || !s || !s->name || !s->file || !s->path)
        return NULL;
    return s;
}
