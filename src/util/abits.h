/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * abits - a set of integers as a two-level bitmap that readers test
 * without a lock.
 *
 * abits_test may run on any thread at any time; abits_set, abits_clear
 * and abits_free are serialised by the caller (one writer at a time).  A
 * reader sees a bit set before it began, or set meanwhile, or not: the
 * caller orders what matters (pool.c holds meta_lock to write; the I/O
 * path reads under a volume's lock, which writers take to wait for it).
 *
 * Pages of ABITS_PAGE_BITS bits are allocated when a bit in them is first
 * set and live until abits_free, so memory follows the numbers in use,
 * not the bound.  Growing the top level (a bit past it) publishes a new
 * array; the old ones stay until abits_free (a reader may hold one).
 * abits_test is O(1): two loads and a bit test.
 */
#ifndef TV_UTIL_ABITS_H
#define TV_UTIL_ABITS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define ABITS_PAGE_WORDS 512u /* 4 KiB */
#define ABITS_PAGE_BITS	 (64u * ABITS_PAGE_WORDS)

struct abits_top {
	struct abits_top *prev; /* the one it replaced (freed at the end) */
	uint64_t n;		/* pages */
	_Atomic(_Atomic uint64_t *) page[];
};

struct abits {
	_Atomic(struct abits_top *) top; /* NULL: empty */
};

void abits_init(struct abits *a);
/* -ENOMEM (the set is unchanged) when a page or the top cannot grow. */
int abits_set(struct abits *a, uint64_t i);
void abits_clear(struct abits *a, uint64_t i);
static inline bool abits_test(const struct abits *a, uint64_t i)
{
	struct abits_top *t = atomic_load_explicit(&((struct abits *) a)->top,
						   memory_order_acquire);
	_Atomic uint64_t *p;

	if (!t || i / ABITS_PAGE_BITS >= t->n)
		return false;
	p = atomic_load_explicit(&t->page[i / ABITS_PAGE_BITS],
				 memory_order_acquire);
	return p && (atomic_load_explicit(&p[i % ABITS_PAGE_BITS / 64],
					  memory_order_relaxed) >>
		     (i % 64)) &
			1;
}
void abits_free(struct abits *a);

#endif
