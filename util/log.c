/*
 * log.c - the process-wide log sink. stderr lines carry a timestamp and the
 * level; syslog lines carry the level as priority. A mutex keeps lines whole
 * when render threads and FUSE workers log at once.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static enum pfs_log_level max_level = PFS_LOG_INFO;
static bool to_syslog;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void pfs_log_setup(enum pfs_log_level level, bool use_syslog)
{
    max_level = level;
    to_syslog = use_syslog;
    if (use_syslog)
        openlog("platefs", LOG_PID, LOG_DAEMON);
}

int pfs_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return PFS_LOG_WARN;
    return -1;
}

bool pfs_log_enabled(enum pfs_log_level level)
{
    return level <= max_level;
}

void pfs_log(enum pfs_log_level level, const char *fmt, ...)
{
    if (level > max_level)
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);

    if (to_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        syslog(prio[level], "%s", line);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "platefs %s.%03ld %-5s %s\n", stamp, ts.tv_nsec / 1000000,
            level_names[level], line);
    pthread_mutex_unlock(&log_lock);
}
