/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * clock - CLOCK_MONOTONIC in nanoseconds.  (A function, not an inline:
 * tm.c cannot include <time.h>, whose struct tm clashes with ours.)
 */
#ifndef TV_UTIL_CLOCK_H
#define TV_UTIL_CLOCK_H

#include <stdint.h>

uint64_t clock_mono_ns(void);

#endif
