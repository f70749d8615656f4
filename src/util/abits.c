/* SPDX-License-Identifier: GPL-2.0-or-later */
/* abits.c - contract in abits.h. */
#include "util/abits.h"

#include <errno.h>
#include <stdlib.h>

void abits_init(struct abits *a)
{
	atomic_init(&a->top, NULL);
}

/* The top level with room for page k (a new one published if needed). */
static struct abits_top *top_for(struct abits *a, uint64_t k)
{
	struct abits_top *t =
	    atomic_load_explicit(&a->top, memory_order_relaxed);
	struct abits_top *nt;
	uint64_t n;

	if (t && k < t->n)
		return t;
	n = t ? t->n : 16;
	while (n <= k)
		n *= 2;
	nt = calloc(1, sizeof(*nt) + n * sizeof(nt->page[0]));
	if (!nt)
		return NULL;
	nt->prev = t;
	nt->n = n;
	for (uint64_t i = 0; t && i < t->n; i++)
		atomic_init(
		    &nt->page[i],
		    atomic_load_explicit(&t->page[i], memory_order_relaxed));
	atomic_store_explicit(&a->top, nt, memory_order_release);
	return nt;
}

int abits_set(struct abits *a, uint64_t i)
{
	uint64_t k = i / ABITS_PAGE_BITS;
	struct abits_top *t = top_for(a, k);
	_Atomic uint64_t *p;

	if (!t)
		return -ENOMEM;
	p = atomic_load_explicit(&t->page[k], memory_order_relaxed);
	if (!p) {
		p = calloc(ABITS_PAGE_WORDS, sizeof(*p));
		if (!p)
			return -ENOMEM;
		atomic_store_explicit(&t->page[k], p, memory_order_release);
	}
	atomic_fetch_or_explicit(&p[i % ABITS_PAGE_BITS / 64], 1ull << (i % 64),
				 memory_order_release);
	return 0;
}

void abits_clear(struct abits *a, uint64_t i)
{
	struct abits_top *t =
	    atomic_load_explicit(&a->top, memory_order_relaxed);
	_Atomic uint64_t *p;

	if (!t || i / ABITS_PAGE_BITS >= t->n)
		return;
	p = atomic_load_explicit(&t->page[i / ABITS_PAGE_BITS],
				 memory_order_relaxed);
	if (p)
		atomic_fetch_and_explicit(&p[i % ABITS_PAGE_BITS / 64],
					  ~(1ull << (i % 64)),
					  memory_order_release);
}

void abits_free(struct abits *a)
{
	struct abits_top *t =
	    atomic_load_explicit(&a->top, memory_order_relaxed);

	if (t)
		for (uint64_t i = 0; i < t->n; i++)
			free((void *) atomic_load_explicit(
			    &t->page[i], memory_order_relaxed));
	while (t) {
		struct abits_top *prev = t->prev;

		free(t);
		t = prev;
	}
	atomic_init(&a->top, NULL);
}
