/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Logging. The layer that detects an error logs it once, with context;
 * callers pass the errno up without logging again.
 *
 * Messages go to stderr by default; a program may install its own sink
 * (syslog, a test's capture buffer). Thread-safe: one write per message.
 */
#ifndef TV_UTIL_LOG_H
#define TV_UTIL_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

typedef void (*log_sink_fn)(enum log_level lvl, const char *msg, void *ctx);

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* Install a sink; NULL restores stderr. */
void log_set_sink(log_sink_fn fn, void *ctx);

void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
