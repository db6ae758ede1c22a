/*
 * dailies.c - checking a rule set against the dailies it will be mounted on.
 *
 * The tree is walked once into a sorted list of relative paths (hidden
 * entries skipped, symlinked directories not followed so a loop cannot hang
 * the check), then every path is offered to every shot. That is files x globs
 * fnmatch calls: 10,000 frames and a handful of shots take milliseconds.
 *
 * Two things are errors: a glob that matches no file (a typo the coordinator
 * would otherwise only notice as an uncorrected plate), and a frame claimed
 * by two rule files (the result would depend on load order). A conflict is
 * reported once per pair of files, with the first path and a count, not once
 * per frame.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/clip.h"
#include "rules/internal.h"

struct paths {
    char **v;
    size_t n, cap;
    bool oom;
};

static void add_path(struct paths *ps, const char *rel)
{
    if (ps->oom)
        return;
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 1024;
        char **nv = realloc(ps->v, cap * sizeof *nv);
        if (!nv) {
            ps->oom = true;
            return;
        }
        ps->v = nv;
        ps->cap = cap;
    }
    char *p = strdup(rel);
    if (!p) {
        ps->oom = true;
        return;
    }
    ps->v[ps->n++] = p;
}

/* rel is the directory's path relative to the root ("" for the root); it has
 * room for PATH_MAX bytes. Returns 0 or an errno for the root itself. */
static int walk(int fd, char *rel, size_t rlen, struct paths *ps, int depth)
{
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return e;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && !ps->oom) {
        if (e->d_name[0] == '.')
            continue;
        size_t nlen = strlen(e->d_name);
        if (rlen + nlen + 2 >= 4096)
            continue;
        bool is_dir = e->d_type == DT_DIR, is_file = e->d_type == DT_REG;
        if (e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, 0) != 0)
                continue;
            is_file = S_ISREG(st.st_mode);
            /* Only a real directory is entered: a symlinked one could loop. */
            is_dir = e->d_type == DT_UNKNOWN && S_ISDIR(st.st_mode);
            if (is_dir) {
                struct stat lst;
                is_dir = fstatat(dirfd(d), e->d_name, &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
                         S_ISDIR(lst.st_mode);
            }
        }
        if (rlen)
            rel[rlen] = '/';
        memcpy(rel + rlen + (rlen ? 1 : 0), e->d_name, nlen + 1);
        size_t sub = rlen + (rlen ? 1 : 0) + nlen;
        if (is_file) {
            add_path(ps, rel);
        } else if (is_dir && depth < 64) {
            int sfd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sfd >= 0)
                walk(sfd, rel, sub, ps, depth + 1);
        }
        rel[rlen] = '\0';
    }
    closedir(d);
    return 0;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct conflict {
    int first, second; /* shot indexes */
    const struct rules_glob *glob; /* the second shot's glob that matched */
    const char *path;
    int count;
};

/* An op's reference frame (relight's match) must be a frame of the shot's
 * EXR sequence; it may lie outside the `frames:` range. A clip's frame count
 * is only known from its index, so for clips the engine checks at render. */
static void check_references(struct rules_loader *L, const struct pfs_shot *s)
{
    if (!s->seq_any)
        return;
    for (int i = 0; i < s->nops; i++) {
        const struct rules_op *op = &s->ops[i];
        const struct pfs_op_desc *d = op->desc;
        if (!d->reference)
            continue;
        pfs_pvec *vals = rules_op_values(op, op->ranged ? op->first : s->seq_min);
        if (!vals) {
            L->oom = true;
            return;
        }
        int ref = d->reference(vals);
        free(vals);
        if (ref >= 0 && (ref < s->seq_min || ref > s->seq_max))
            rules_diag(L, PFS_DIAG_ERROR, s->path, op->line, op->col,
                       "%s: reference frame %d is not a frame of this shot's files (they are "
                       "numbered %d-%d)", d->name, ref, s->seq_min, s->seq_max);
    }
}

void rules_check_dailies(struct rules_loader *L, const char *root,
                         struct pfs_shot *const *shots, int nshots)
{
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct paths ps = {0};
    char rel[4096] = "";
    int rc = fd < 0 ? errno : walk(fd, rel, 0, &ps, 0);
    if (rc) {
        rules_diag(L, PFS_DIAG_ERROR, root, 0, 0, "cannot read the dailies: %s", strerror(rc));
        return;
    }
    if (ps.oom) {
        L->oom = true;
        goto out;
    }
    qsort(ps.v, ps.n, sizeof *ps.v, str_cmp);

    struct conflict *cf = NULL;
    int ncf = 0, cfcap = 0;
    for (int i = 0; i < nshots; i++) {
        shots[i]->checked = true;
        shots[i]->nfiles = 0;
        shots[i]->frame_min = 0;
        shots[i]->frame_max = 0;
        shots[i]->nclips = 0;
        shots[i]->seq_any = false;
    }
    for (size_t f = 0; f < ps.n; f++) {
        const char *path = ps.v[f];
        int frame = 0;
        bool is_frame = rules_frame_of(path, &frame);
        const char *base = strrchr(path, '/');
        /* A clip is claimed whole: which of its frames a range covers is
         * only known from its index, which checking never builds. */
        bool is_clip = !is_frame && pfs_clip_name(base ? base + 1 : path);
        int owner = -1;
        for (int i = 0; i < nshots; i++) {
            struct pfs_shot *s = shots[i];
            const struct rules_glob *claim = NULL;
            bool in_range = is_frame && (!s->ranged || (frame >= s->first && frame <= s->last));
            for (int g = 0; g < s->nglobs; g++) {
                if (fnmatch(s->globs[g].pat, path, FNM_PATHNAME) != 0)
                    continue;
                s->globs[g].nfiles++;
                if (is_frame) {
                    if (!s->seq_any || frame < s->seq_min)
                        s->seq_min = frame;
                    if (!s->seq_any || frame > s->seq_max)
                        s->seq_max = frame;
                    s->seq_any = true;
                }
                if (is_clip)
                    s->globs[g].nclips++;
                else if (in_range)
                    s->globs[g].nframes++;
                if ((in_range || is_clip) && !claim)
                    claim = &s->globs[g];
            }
            if (!claim)
                continue;
            if (is_clip) {
                s->nclips++;
            } else {
                bool first = s->nfiles == s->nclips;
                if (first || frame < s->frame_min)
                    s->frame_min = frame;
                if (first || frame > s->frame_max)
                    s->frame_max = frame;
            }
            s->nfiles++;
            if (owner < 0) {
                owner = i;
                continue;
            }
            int c = 0;
            while (c < ncf && !(cf[c].first == owner && cf[c].second == i))
                c++;
            if (c == ncf) {
                if (ncf == cfcap) {
                    int cap = cfcap ? cfcap * 2 : 8;
                    struct conflict *n = realloc(cf, (size_t)cap * sizeof *n);
                    if (!n) {
                        L->oom = true;
                        goto done;
                    }
                    cf = n;
                    cfcap = cap;
                }
                cf[ncf++] = (struct conflict){owner, i, claim, path, 0};
            }
            cf[c].count++;
        }
    }

    for (int c = 0; c < ncf; c++) {
        const struct pfs_shot *a = shots[cf[c].first], *b = shots[cf[c].second];
        char more[64] = "";
        if (cf[c].count > 1)
            snprintf(more, sizeof more, " (and %d more frame%s)", cf[c].count - 1,
                     cf[c].count == 2 ? "" : "s");
        rules_diag(L, PFS_DIAG_ERROR, b->path, cf[c].glob->line, cf[c].glob->col,
                   "%s is matched by both %s (shot %s) and %s (shot %s)%s; a frame or a "
                   "clip can belong to one rule file only: narrow a glob or the frames: "
                   "range",
                   cf[c].path, a->file, a->name, b->file, b->name, more);
    }
    for (int i = 0; i < nshots; i++) {
        struct pfs_shot *s = shots[i];
        for (int g = 0; g < s->nglobs; g++) {
            const struct rules_glob *rg = &s->globs[g];
            if (rg->nfiles == 0)
                rules_diag(L, PFS_DIAG_ERROR, s->path, rg->line, rg->col,
                           "\"%s\" matches no file in %s; check the folder and the clip "
                           "name (globs are relative to the dailies root)", rg->pat, root);
            else if (rg->nclips)
                continue;
            else if (rg->nframes == 0 && s->ranged)
                rules_diag(L, PFS_DIAG_WARNING, s->path, rg->line, rg->col,
                           "\"%s\" matches %d file%s but no .exr frame in %d-%d; only "
                           ".exr frames are corrected", rg->pat, rg->nfiles,
                           rg->nfiles == 1 ? "" : "s", s->first, s->last);
            else if (rg->nframes == 0)
                rules_diag(L, PFS_DIAG_WARNING, s->path, rg->line, rg->col,
                           "\"%s\" matches %d file%s but no numbered .exr frame; only "
                           ".exr frames are corrected", rg->pat, rg->nfiles,
                           rg->nfiles == 1 ? "" : "s");
        }
    }
    for (int i = 0; i < nshots; i++)
        check_references(L, shots[i]);
done:
    free(cf);
out:
    for (size_t i = 0; i < ps.n; i++)
        free(ps.v[i]);
    free(ps.v);
}
