/* SPDX-License-Identifier: GPL-2.0-or-later */
/* log.c - the log sink and its default (stderr); contract in log.h. */
#include "util/log.h"

#include "util/escape.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level cur_level = LOG_LVL_WARN;
static log_sink_fn sink;
static void *sink_ctx;

void log_set_level(enum log_level lvl)
{
	cur_level = lvl;
}

enum log_level log_get_level(void)
{
	return cur_level;
}

void log_set_sink(log_sink_fn fn, void *ctx)
{
	sink = fn;
	sink_ctx = ctx;
}

static const char *const level_names[] = {
    [LOG_LVL_ERROR] = "error",
    [LOG_LVL_WARN] = "warning",
    [LOG_LVL_INFO] = "info",
    [LOG_LVL_DEBUG] = "debug",
};

/*
 * A message is one line.  Callers escape what came from outside (names,
 * identities) where they format it; control bytes that slip through all
 * the same (a newline would let a client forge a log line) are escaped
 * here, in the one place every message passes.
 */
void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char raw[1024], buf[4 * sizeof(raw)]; /* "\xNN" per byte at most */
	va_list ap;
	int n;

	if (lvl > cur_level)
		return;
	va_start(ap, fmt);
	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	esc_controls(buf, sizeof(buf), raw);
	if (sink) {
		sink(lvl, buf, sink_ctx);
		return;
	}
	{
		char line[sizeof(buf) + 64];
		int len = snprintf(line, sizeof(line), "thinvol: %s: %s\n",
				   level_names[lvl], buf);
		if (len > (int) sizeof(line) - 1)
			len = (int) sizeof(line) - 1;
		if (len > 0 && write(STDERR_FILENO, line, (size_t) len) < 0) {
			/* nowhere left to report it */
		}
	}
}
