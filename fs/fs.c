/*
 * fs.c - the FUSE low-level callbacks and the mount's lifetime; see fs.h.
 *
 * Shape borrowed from libfuse's passthrough_hp: an inode table owned by the
 * file system, callbacks that translate a request into a call on the inode
 * table, the source tree or the engine, and replies sent when the work is
 * done. Reads of frames are handed to the engine with the request as the
 * callback's context; the worker returns at once and the reply leaves from
 * the render thread (or straight away on a cache hit).
 *
 * Attributes come from lstat of the source with the write bits cleared; a
 * frame's size is the engine's promise (exact, computed from headers).
 */
#define FUSE_USE_VERSION 314
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "engine/engine.h"
#include "fs_private.h"
#include "inode.h"
#include "util/log.h"

/* Attributes and entries may be cached by the kernel for this long; rule
 * changes invalidate explicitly, so this only bounds how long a change in
 * the source tree takes to show. */
#define ATTR_TIMEOUT 1.0

struct open_file {
    int fd;                  /* passthrough: the source, read-only */
    struct pfs_frame *frame; /* frame: the engine's description at open */
};

static struct pfs_fs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* relpath of a child: "" + name at the root, else "dir/name". */
static bool child_path(const char *parent, const char *name, char *out, size_t size)
{
    int n = parent[0] ? snprintf(out, size, "%s/%s", parent, name)
                      : snprintf(out, size, "%s", name);
    return n >= 0 && (size_t)n < size;
}

static bool source_path(const struct pfs_fs *fs, const char *relpath, char *out, size_t size)
{
    int n = relpath[0] ? snprintf(out, size, "%s/%s", fs->opts.dailies_root, relpath)
                       : snprintf(out, size, "%s", fs->opts.dailies_root);
    return n >= 0 && (size_t)n < size;
}

/* What the mirror shows at relpath: the source's lstat with the write bits
 * cleared, a frame's exact size, and for a clip's frames directory and
 * frames the clip's times and owner. */
static int mirror_stat(struct pfs_fs *fs, const char *relpath, struct stat *st)
{
    enum pfs_entry kind;
    int rc = pfs_engine_lookup(fs->engine, relpath, &kind, st);
    if (rc)
        return rc;
    st->st_mode &= ~(mode_t)0222;
    if (kind == PFS_ENTRY_CLIP_DIR) {
        st->st_mode = S_IFDIR | (st->st_mode & 0555) | ((st->st_mode & 0444) >> 2);
        st->st_nlink = 2;
        st->st_size = 0;
        st->st_blocks = 0;
        return 0;
    }
    if (!S_ISREG(st->st_mode) || !relpath[0])
        return 0;
    bool is_frame = false;
    uint64_t size = 0;
    pfs_engine_stat(fs->engine, relpath, st, &is_frame, &size);
    if (is_frame) {
        st->st_size = (off_t)size;
        st->st_blocks = (blkcnt_t)((size + 511) / 512);
        st->st_nlink = 1;
    } else if (kind == PFS_ENTRY_CLIP_FRAME) {
        return ENOENT; /* no frame of the clip has this name */
    }
    return 0;
}

static bool req_path(fuse_req_t req, fuse_ino_t ino, char *buf)
{
    return pfs_inode_path(fs_of(req)->inodes, ino, buf, PATH_MAX);
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
    /* Let the kernel keep several reads of one file in flight: they join
     * the same render, and the readahead of a cached frame is served in
     * parallel. */
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct pfs_fs *fs = fs_of(req);
    char dir[PATH_MAX], rel[PATH_MAX];
    if (!req_path(req, parent, dir)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (!child_path(dir, name, rel, sizeof rel)) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    struct fuse_entry_param e = {0};
    int rc = mirror_stat(fs, rel, &e.attr);
    if (rc) {
        fuse_reply_err(req, rc);
        return;
    }
    struct pfs_inode *inode = pfs_inode_lookup(fs->inodes, rel, S_ISREG(e.attr.st_mode));
    if (!inode) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    e.ino = inode->ino;
    e.attr.st_ino = inode->ino;
    e.attr_timeout = ATTR_TIMEOUT;
    e.entry_timeout = ATTR_TIMEOUT;
    if (fuse_reply_entry(req, &e) == -ENOENT)
        pfs_inode_forget(fs->inodes, inode->ino, 1); /* interrupted: undo the count */
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    pfs_inode_forget(fs_of(req)->inodes, ino, nlookup);
    fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        pfs_inode_forget(fs_of(req)->inodes, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    char rel[PATH_MAX];
    if (!req_path(req, ino, rel)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    int rc = mirror_stat(fs_of(req), rel, &st);
    if (rc) {
        fuse_reply_err(req, rc);
        return;
    }
    st.st_ino = ino;
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void fs_readlink(fuse_req_t req, fuse_ino_t ino)
{
    char rel[PATH_MAX], path[PATH_MAX], target[PATH_MAX];
    if (!req_path(req, ino, rel) || !source_path(fs_of(req), rel, path, sizeof path)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    target[n] = '\0';
    fuse_reply_readlink(req, target);
}

/*
 * A directory is read whole at opendir into a list of names and types, so
 * that entries the mirror adds (a clip's "<clip>.frames" beside it, a
 * clip's frames) and entries of the source share one offset scheme: the
 * position in the list. Listing never stats, probes or renders; listing a
 * clip's frames needs its index (built once, then kept in the cache store).
 */
struct dir_entry {
    char *name;
    unsigned char type; /* DT_* */
    ino_t ino;          /* the source's, or a made-up one for added entries */
};

struct open_dir {
    struct dir_entry *v;
    size_t n, cap;
    bool oom;
};

/* Readers skip entries whose inode number is 0: added entries get a
 * number of their own, stable across listings (inode numbers in listings
 * are only hints; lookups give the real ones). */
static ino_t made_up_ino(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (ino_t)(h | 1u << 31);
}

static void dir_add(struct open_dir *d, const char *name, unsigned char type, ino_t ino)
{
    if (d->oom)
        return;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        struct dir_entry *v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            d->oom = true;
            return;
        }
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n].name = strdup(name);
    d->v[d->n].type = type;
    d->v[d->n].ino = ino ? ino : made_up_ino(name);
    if (!d->v[d->n].name)
        d->oom = true;
    else
        d->n++;
}

static void dir_free(struct open_dir *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].name);
    free(d->v);
    free(d);
}

static void add_clip_frame(void *ud, const char *name)
{
    dir_add(ud, name, DT_REG, 0);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The source folder's entries, and beside each clip its frames directory
 * unless the folder already has an entry of that name. */
static int read_source_dir(const char *path, struct open_dir *d)
{
    DIR *dp = opendir(path);
    if (!dp)
        return errno;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(dp)))
        dir_add(d, de->d_name, de->d_type, de->d_ino);
    int rc = errno;
    closedir(dp);
    if (rc)
        return rc;
    size_t real = d->n;
    char **names = malloc((real ? real : 1) * sizeof *names);
    if (!names)
        return ENOMEM;
    for (size_t i = 0; i < real; i++)
        names[i] = d->v[i].name;
    qsort(names, real, sizeof *names, name_cmp);
    for (size_t i = 0; i < real && !d->oom; i++) {
        unsigned char t = d->v[i].type;
        if ((t != DT_REG && t != DT_UNKNOWN) || !pfs_engine_is_clip(d->v[i].name))
            continue;
        char vname[NAME_MAX + 1];
        int n = snprintf(vname, sizeof vname, "%s%s", d->v[i].name, PFS_CLIP_DIR_SUFFIX);
        const char *key = vname;
        if (n > 0 && (size_t)n < sizeof vname &&
            !bsearch(&key, names, real, sizeof *names, name_cmp))
            dir_add(d, vname, DT_DIR, 0);
    }
    free(names);
    return 0;
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct pfs_fs *fs = fs_of(req);
    char rel[PATH_MAX], path[PATH_MAX];
    if (!req_path(req, ino, rel) || !source_path(fs, rel, path, sizeof path)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct open_dir *d = calloc(1, sizeof *d);
    if (!d) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    enum pfs_entry kind;
    struct stat st;
    int rc = pfs_engine_lookup(fs->engine, rel, &kind, &st);
    if (rc == 0 && kind == PFS_ENTRY_SOURCE) {
        rc = read_source_dir(path, d);
    } else if (rc == 0 && kind == PFS_ENTRY_CLIP_DIR) {
        size_t len = strlen(rel) - strlen(PFS_CLIP_DIR_SUFFIX);
        rel[len] = '\0';
        dir_add(d, ".", DT_DIR, 0);
        dir_add(d, "..", DT_DIR, 0);
        pfs_error err;
        pfs_error_clear(&err);
        rc = pfs_engine_clip_list(fs->engine, rel, &st, add_clip_frame, d, &err);
    } else if (rc == 0) {
        rc = ENOTDIR;
    }
    if (rc == 0 && d->oom)
        rc = ENOMEM;
    if (rc) {
        dir_free(d);
        fuse_reply_err(req, rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)d;
    fi->cache_readdir = 0;
    fuse_reply_open(req, fi);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
                       struct fuse_file_info *fi)
{
    struct open_dir *d = (struct open_dir *)(uintptr_t)fi->fh;
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    for (size_t i = offset < 0 ? 0 : (size_t)offset; i < d->n; i++) {
        struct stat st = {.st_ino = d->v[i].ino,
                          .st_mode = (mode_t)(DTTOIF(d->v[i].type))};
        size_t n = fuse_add_direntry(req, buf + used, size - used, d->v[i].name, &st,
                                     (off_t)(i + 1));
        if (n > size - used)
            break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    dir_free((struct open_dir *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct pfs_fs *fs = fs_of(req);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_APPEND))) {
        fuse_reply_err(req, EROFS);
        return;
    }
    char rel[PATH_MAX], path[PATH_MAX];
    if (!req_path(req, ino, rel) || !source_path(fs, rel, path, sizeof path)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct open_file *of = calloc(1, sizeof *of);
    if (!of) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    of->fd = -1;
    struct stat st;
    enum pfs_entry kind;
    int rc = pfs_engine_lookup(fs->engine, rel, &kind, &st);
    if (rc) {
        free(of);
        fuse_reply_err(req, rc);
        return;
    }
    pfs_error err;
    pfs_error_clear(&err);
    if (kind == PFS_ENTRY_CLIP_DIR) {
        free(of);
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (S_ISREG(st.st_mode))
        pfs_engine_frame_open(fs->engine, rel, &st, &of->frame, &err);
    if (!of->frame && kind == PFS_ENTRY_CLIP_FRAME) {
        free(of);
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (!of->frame) {
        of->fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (of->fd < 0) {
            rc = errno;
            free(of);
            fuse_reply_err(req, rc);
            return;
        }
    }
    fi->fh = (uint64_t)(uintptr_t)of;
    /* Pages stay valid across opens: rule changes invalidate them
     * explicitly, source changes through mtime/size (auto_inval_data). */
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) == -ENOENT) {
        if (of->fd >= 0)
            close(of->fd);
        pfs_frame_release(of->frame);
        free(of);
    }
}

static void reply_frame_bytes(void *ud, const void *data, size_t len, int err)
{
    fuse_req_t req = ud;
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, data, len);
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
    if (of->frame) {
        pfs_engine_read(fs_of(req)->engine, of->frame, (uint64_t)off, size, reply_frame_bytes,
                        req);
        return;
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(of->fd, buf + got, size - got, off + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int rc = errno;
            free(buf);
            fuse_reply_err(req, rc);
            return;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    fuse_reply_buf(req, buf, got);
    free(buf);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
    if (of->fd >= 0)
        close(of->fd);
    pfs_frame_release(of->frame);
    free(of);
    fuse_reply_err(req, 0);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs sv;
    if (statvfs(fs_of(req)->opts.dailies_root, &sv) != 0) {
        fuse_reply_err(req, errno);
        return;
    }
    fuse_reply_statfs(req, &sv);
}

/* The mirror is read-only: every call that would change it says so. */
static void deny_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                         struct fuse_file_info *fi)
{
    fuse_reply_err(req, EROFS);
}
static void deny_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                       dev_t rdev)
{
    fuse_reply_err(req, EROFS);
}
static void deny_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    fuse_reply_err(req, EROFS);
}
static void deny_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fuse_reply_err(req, EROFS);
}
static void deny_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    fuse_reply_err(req, EROFS);
}
static void deny_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                        fuse_ino_t newparent, const char *newname, unsigned int flags)
{
    fuse_reply_err(req, EROFS);
}
static void deny_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    fuse_reply_err(req, EROFS);
}
static void deny_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    fuse_reply_err(req, EROFS);
}
static void deny_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        struct fuse_file_info *fi)
{
    fuse_reply_err(req, EROFS);
}
static void deny_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                          size_t size, int flags)
{
    fuse_reply_err(req, EROFS);
}
static void deny_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    fuse_reply_err(req, EROFS);
}
static void deny_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                           struct fuse_file_info *fi)
{
    fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops fs_ops = {
    .init = fs_init,
    .lookup = fs_lookup,
    .forget = fs_forget,
    .forget_multi = fs_forget_multi,
    .getattr = fs_getattr,
    .readlink = fs_readlink,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .releasedir = fs_releasedir,
    .open = fs_open,
    .read = fs_read,
    .release = fs_release,
    .statfs = fs_statfs,
    .setattr = deny_setattr,
    .mknod = deny_mknod,
    .mkdir = deny_mkdir,
    .unlink = deny_unlink,
    .rmdir = deny_unlink,
    .symlink = deny_symlink,
    .rename = deny_rename,
    .link = deny_link,
    .write = deny_write,
    .create = deny_create,
    .setxattr = deny_setxattr,
    .removexattr = deny_removexattr,
    .fallocate = deny_fallocate,
};

static void invalidate_one(void *ud, uint64_t ino)
{
    struct pfs_fs *fs = ud;
    /* -ENOENT only means the kernel had already dropped it. */
    int rc = fuse_lowlevel_notify_inval_inode(fs->se, (fuse_ino_t)ino, 0, 0);
    if (rc && rc != -ENOENT)
        pfs_log(PFS_LOG_DEBUG, "invalidating inode %llu: %s", (unsigned long long)ino,
                strerror(-rc));
}

/* The kernel reads ahead only 128 KiB on a FUSE mount unless told more; a
 * frame is read whole, so ask for 8 MiB through the mount's backing device
 * in sysfs. Needs root; without it reads still work, in smaller requests. */
static void raise_readahead(const char *mountpoint)
{
    /* The device number comes from mountinfo: a stat of the mount point
     * would be a request to this very file system, whose loop is not
     * running yet. */
    FILE *mi = fopen("/proc/self/mountinfo", "r");
    if (!mi)
        return;
    char line[PATH_MAX + 512], dev[64] = "", point[PATH_MAX];
    while (fgets(line, sizeof line, mi)) {
        char d[64];
        if (sscanf(line, "%*d %*d %63s %*s %4095s", d, point) == 2 &&
            strcmp(point, mountpoint) == 0)
            snprintf(dev, sizeof dev, "%s", d); /* the last mount there wins */
    }
    fclose(mi);
    if (!dev[0])
        return;
    char path[128];
    snprintf(path, sizeof path, "/sys/class/bdi/%s/read_ahead_kb", dev);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "8192\n") < 0 || fclose(f) != 0) {
        pfs_log(PFS_LOG_DEBUG, "%s: cannot raise the readahead: %s", path, strerror(errno));
        return;
    }
    pfs_log(PFS_LOG_DEBUG, "%s: readahead 8 MiB", path);
}

void pfs_fs_invalidate_files(struct pfs_fs *fs)
{
    pfs_inode_each_file(fs->inodes, invalidate_one, fs);
}

static void exit_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

void pfs_fs_block_signals(void)
{
    sigset_t set;
    exit_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int pfs_fs_run(const struct pfs_fs_opts *opts, struct pfs_engine *engine, pfs_error *err)
{
    struct pfs_fs fs = {.opts = *opts, .engine = engine};
    fs.inodes = pfs_inode_table_new();
    if (!fs.inodes)
        return pfs_error_set(err, ENOMEM, "out of memory");

    char options[PATH_MAX + 128];
    snprintf(options, sizeof options, "ro,default_permissions,fsname=platefs,subtype=platefs%s",
             opts->allow_other ? ",allow_other" : "");
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    int rc = 0;
    if (fuse_opt_add_arg(&args, "platefs") || fuse_opt_add_arg(&args, "-o") ||
        fuse_opt_add_arg(&args, options) ||
        (opts->fuse_debug && fuse_opt_add_arg(&args, "-d"))) {
        rc = pfs_error_set(err, ENOMEM, "out of memory");
        goto out_args;
    }
    fs.se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, &fs);
    if (!fs.se) {
        rc = pfs_error_set(err, EINVAL, "cannot create the FUSE session (see above)");
        goto out_args;
    }
    /* libfuse installs its handlers only over the default disposition, and
     * libraries loaded before the mount (LLVM inside PoCL) replace it with
     * crash handlers that re-raise: put the default back so that SIGTERM
     * unmounts instead of killing the process with the mount left behind. */
    sigset_t exits;
    exit_signals(&exits);
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&exits, sig) == 1)
            signal(sig, SIG_DFL);
    if (fuse_set_signal_handlers(fs.se) != 0) {
        rc = pfs_error_set(err, EIO, "cannot install signal handlers");
        goto out_session;
    }
    if (fuse_session_mount(fs.se, opts->mountpoint) != 0) {
        rc = pfs_error_set(err, EIO,
                           "%s: cannot mount (is /dev/fuse available, the directory empty "
                           "and not already mounted? allow_other needs user_allow_other "
                           "in /etc/fuse.conf for non-root users)",
                           opts->mountpoint);
        goto out_signals;
    }
    if (opts->rules_dir && (rc = pfs_fs_watch_start(&fs, err)) != 0)
        goto out_unmount;

    raise_readahead(opts->mountpoint);
    pfs_log(PFS_LOG_INFO, "mounted %s at %s", opts->dailies_root, opts->mountpoint);
    if (opts->on_ready)
        opts->on_ready(opts->ready_ud);

    /* From here on this thread and the FUSE workers it starts take the
     * signals that end the mount; see pfs_fs_block_signals. */
    pthread_sigmask(SIG_UNBLOCK, &exits, NULL);
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (opts->max_threads > 0)
        fuse_loop_cfg_set_max_threads(cfg, (unsigned)opts->max_threads);
    int loop = fuse_session_loop_mt(fs.se, cfg);
    fuse_loop_cfg_destroy(cfg);
    if (loop < 0)
        rc = pfs_error_set(err, -loop, "FUSE loop ended with an error: %s", strerror(-loop));
    pfs_fs_watch_stop(&fs);
    pfs_log(PFS_LOG_INFO, "unmounting %s", opts->mountpoint);

out_unmount:
    fuse_session_unmount(fs.se);
out_signals:
    fuse_remove_signal_handlers(fs.se);
out_session:
    fuse_session_destroy(fs.se);
out_args:
    fuse_opt_free_args(&args);
    pfs_inode_table_free(fs.inodes);
    return rc;
}
