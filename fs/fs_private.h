/*
 * fs_private.h - state shared by the parts of fs/ (callbacks, rule watcher).
 */
#ifndef PFS_FS_PRIVATE_H
#define PFS_FS_PRIVATE_H

#include <pthread.h>
#include <stdbool.h>

#include "fs.h"

struct fuse_session;
struct pfs_inode_table;

struct pfs_fs {
    struct pfs_fs_opts opts;
    struct pfs_engine *engine;
    struct fuse_session *se;
    struct pfs_inode_table *inodes;

    /* rule watcher (watch.c) */
    pthread_t watch_thread;
    bool watching;
    int inotify_fd;
    int stop_fd; /* eventfd that ends the watcher */
};

/* Drops the kernel's cached pages and attributes of every file it knows, so
 * the next read of a frame sees the rules now in force. Never call it from
 * inside a FUSE callback (the kernel may be waiting on that callback). */
void pfs_fs_invalidate_files(struct pfs_fs *fs);

int pfs_fs_watch_start(struct pfs_fs *fs, pfs_error *err);
void pfs_fs_watch_stop(struct pfs_fs *fs);

#endif
