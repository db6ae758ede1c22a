/*
 * log.h - levelled logging to stderr or syslog.
 *
 * One process-wide sink, set up once by the command line front end before any
 * thread starts; pfs_log itself is thread-safe (one line per call, never
 * interleaved).
 */
#ifndef PFS_LOG_H
#define PFS_LOG_H

#include <stdbool.h>

enum pfs_log_level {
    PFS_LOG_ERROR = 0,
    PFS_LOG_WARN = 1,
    PFS_LOG_INFO = 2,
    PFS_LOG_DEBUG = 3,
};

void pfs_log_setup(enum pfs_log_level max_level, bool use_syslog);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int pfs_log_level_parse(const char *name);
bool pfs_log_enabled(enum pfs_log_level level);
void pfs_log(enum pfs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
