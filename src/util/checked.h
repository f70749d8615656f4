/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Overflow-checked size arithmetic: each returns true on overflow. */
#ifndef TV_UTIL_CHECKED_H
#define TV_UTIL_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
	return __builtin_add_overflow(a, b, out);
}

static inline bool mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
	return __builtin_mul_overflow(a, b, out);
}

static inline bool mul_overflow_size(size_t a, size_t b, size_t *out)
{
	return __builtin_mul_overflow(a, b, out);
}

/* true when [off, off + len) does not fit below limit */
static inline bool range_outside(uint64_t off, uint64_t len, uint64_t limit)
{
	uint64_t end;

	return add_overflow_u64(off, len, &end) || end > limit;
}

#define ARRAY_SIZE(a)	   (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)	   ((a) < (b) ? (a) : (b))
#define MAX(a, b)	   ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) -1) / (d))

#endif
