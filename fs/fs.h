/*
 * fs.h - the mounted mirror: paths and FUSE, nothing else.
 *
 * Every directory and file of the dailies appears at the same relative path,
 * read-only (every write-type call answers EROFS; the mount itself is `ro`).
 * Files the engine says are frames are served from the engine with the
 * size it promises; all other files are served from the source, byte for
 * byte. The FUSE callbacks stay thin: they translate a request into a call
 * on the inode table or the engine and send the reply, asynchronously for
 * frames being rendered, so a slow render never holds a worker that
 * getattr or readdir of another file needs.
 *
 * When rules_dir is given, rule files are watched (inotify): after an edit
 * the whole set is reloaded; a good set replaces the old one and every open
 * frame's cached pages are invalidated in the kernel, a broken one is
 * logged with file:line:column and the last good set stays in force.
 */
#ifndef PFS_FS_H
#define PFS_FS_H

#include <stdbool.h>

#include "util/error.h"

struct pfs_engine;

struct pfs_fs_opts {
    const char *dailies_root; /* absolute */
    const char *mountpoint;
    const char *rules_dir;    /* NULL: no rules are watched */
    bool allow_other;
    bool fuse_debug;
    int max_threads;          /* FUSE workers; 0: libfuse default */
    /* Called once the mount is up (a background start reports success to
     * its parent and detaches from the terminal here); may be NULL. */
    void (*on_ready)(void *ud);
    void *ready_ud;
};

/*
 * Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and so in every
 * thread it starts afterwards (render threads, OpenCL driver threads). Call
 * it before opening the engine: the signals that end a mount must reach a
 * FUSE thread, which pfs_fs_run unblocks them for; a signal taken by any
 * other thread would set the exit flag and wake nobody.
 */
void pfs_fs_block_signals(void);

/*
 * Mounts, calls opts->on_ready once the mount is up, and serves until unmounted (fusermount3 -u) or SIGINT/SIGTERM/SIGHUP, then
 * unmounts cleanly. Returns 0 after a clean unmount.
 */
int pfs_fs_run(const struct pfs_fs_opts *opts, struct pfs_engine *engine, pfs_error *err);

#endif
