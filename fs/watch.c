/*
 * watch.c - reload the rules when their files change under a live mount.
 *
 * An inotify watch on the rules directory wakes a thread; it waits until
 * the directory has been quiet for a moment (editors write a file in several
 * steps: truncate, write, rename), then loads the whole set again. A good
 * set replaces the engine's and the kernel's cached pages of every file are
 * dropped; a broken one is reported (file:line:column, through the log) and
 * the last good set stays in force. The set is reloaded whole, never file by
 * file, because validity is a property of the set (a frame claimed by two
 * files is an error of neither file alone).
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "engine/engine.h"
#include "fs_private.h"
#include "rules/rules.h"
#include "util/log.h"

#define QUIET_MS 150

static void drain(int fd)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static void reload(struct pfs_fs *fs)
{
    struct pfs_rules_opts ropts = {.rules_dir = fs->opts.rules_dir,
                                   .dailies_root = fs->opts.dailies_root};
    struct pfs_ruleset *rs = NULL;
    pfs_error err;
    pfs_error_clear(&err);
    int rc = pfs_rules_load(&ropts, &rs, &err);
    if (rc) {
        pfs_log(PFS_LOG_ERROR, "rules in %s not reloaded%s%s; the last good rules stay in force",
                fs->opts.rules_dir, err.msg[0] ? ": " : "", err.msg);
        return;
    }
    pfs_engine_set_rules(fs->engine, rs);
    pfs_log(PFS_LOG_INFO, "rules reloaded from %s: %d shot(s)", fs->opts.rules_dir,
            pfs_ruleset_shot_count(rs));
    pfs_ruleset_unref(rs);
    pfs_fs_invalidate_files(fs);
}

static void *watch_thread(void *arg)
{
    struct pfs_fs *fs = arg;
    struct pollfd fds[2] = {{.fd = fs->stop_fd, .events = POLLIN},
                            {.fd = fs->inotify_fd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            pfs_log(PFS_LOG_ERROR, "rule watcher stopped: %s", strerror(errno));
            return NULL;
        }
        if (fds[0].revents)
            return NULL;
        /* Wait for the burst of events of one save to end. */
        do {
            drain(fs->inotify_fd);
        } while (poll(&fds[1], 1, QUIET_MS) > 0 && !(fds[1].revents & ~POLLIN));
        reload(fs);
    }
}

int pfs_fs_watch_start(struct pfs_fs *fs, pfs_error *err)
{
    fs->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fs->inotify_fd < 0)
        return pfs_error_set(err, errno, "inotify: %s", strerror(errno));
    if (inotify_add_watch(fs->inotify_fd, fs->opts.rules_dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                              IN_DELETE | IN_ATTRIB) < 0) {
        int rc = errno;
        close(fs->inotify_fd);
        return pfs_error_set(err, rc, "%s: cannot watch for rule changes: %s",
                             fs->opts.rules_dir, strerror(rc));
    }
    fs->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (fs->stop_fd < 0) {
        int rc = errno;
        close(fs->inotify_fd);
        return pfs_error_set(err, rc, "eventfd: %s", strerror(rc));
    }
    int rc = pthread_create(&fs->watch_thread, NULL, watch_thread, fs);
    if (rc) {
        close(fs->inotify_fd);
        close(fs->stop_fd);
        return pfs_error_set(err, rc, "cannot start the rule watcher: %s", strerror(rc));
    }
    fs->watching = true;
    return 0;
}

void pfs_fs_watch_stop(struct pfs_fs *fs)
{
    if (!fs->watching)
        return;
    uint64_t one = 1;
    if (write(fs->stop_fd, &one, sizeof one) != sizeof one)
        pfs_log(PFS_LOG_WARN, "cannot signal the rule watcher: %s", strerror(errno));
    pthread_join(fs->watch_thread, NULL);
    close(fs->inotify_fd);
    close(fs->stop_fd);
    fs->watching = false;
}
