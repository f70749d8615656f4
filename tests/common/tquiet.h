/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tquiet - a log sink that drops every message, for tests that provoke
 * the library's errors on purpose: they install it (log_set_sink(tquiet,
 * NULL)) unless V is set in the environment, so that a run is readable
 * and V=1 still shows what the library said.
 */
#ifndef TV_TESTS_TQUIET_H
#define TV_TESTS_TQUIET_H

#include "util/log.h"

static inline void tquiet(enum log_level lvl, const char *msg, void *ctx)
{
	(void) lvl;
	(void) msg;
	(void) ctx;
}

#endif
