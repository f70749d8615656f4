/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sm-chunks.c - the chunk vector and its room bitmaps (contract and rules
 * in sm-chunks.h).  Knows nothing of the space map around it: only a
 * chunk's block and busy count.
 */
#include "pdata/sm-chunks.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* First position in v whose block is >= block. */
size_t sm_cvec_pos(const struct cvec *v, uint64_t block)
{
	size_t lo = 0, hi = v->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v->v[mid]->block < block)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void bit_set(uint64_t *w, size_t pos, bool on)
{
	uint64_t bit = 1ull << (pos % 64);

	if (on)
		w[pos / 64] |= bit;
	else
		w[pos / 64] &= ~bit;
}

void sm_cvec_room_set(struct cvec *v, size_t pos, uint32_t busy, uint32_t npc)
{
	bit_set(v->room, pos, has_room(busy, npc));
	bit_set(v->roomy, pos, is_roomy(busy, npc));
}

/* Recompute every room bit (at open). */
void sm_cvec_room_rebuild(struct cvec *v, uint32_t npc)
{
	for (size_t i = 0; i < v->n; i++)
		sm_cvec_room_set(v, i, v->v[i]->busy, npc);
}

/*
 * Shift the bits of positions pos..n-1 (n: the count before) up by one
 * and set bit pos, or down by one over pos: a word at a time, without
 * reading the chunks (which would be a cache miss each).
 */
static void bits_insert(uint64_t *w, size_t n, size_t pos, bool room)
{
	size_t k = pos / 64;
	unsigned int b = pos % 64;
	uint64_t low = w[k] & ((1ull << b) - 1);

	/* cap > n, so word n / 64 exists */
	for (size_t i = n / 64; i > k; i--)
		w[i] = (w[i] << 1) | (w[i - 1] >> 63);
	w[k] =
	    low | ((w[k] & ~((1ull << b) - 1)) << 1) | ((uint64_t) room << b);
}

static void bits_remove(uint64_t *w, size_t n, size_t pos)
{
	size_t k = pos / 64, last = (n - 1) / 64;
	unsigned int b = pos % 64;
	uint64_t lowmask = (1ull << b) - 1;

	w[k] = (w[k] & lowmask) | ((w[k] >> 1) & ~lowmask);
	for (size_t i = k; i < last; i++) {
		w[i] |= w[i + 1] << 63;
		w[i + 1] >>= 1;
	}
}

/* First position >= from with its bit set in bits (room or roomy), or
 * v->n. */
size_t sm_cvec_next(const struct cvec *v, const uint64_t *bits, size_t from)
{
	size_t w = from / 64;
	uint64_t m;

	if (from >= v->n)
		return v->n;
	m = bits[w] & (~0ull << (from % 64));
	for (;;) {
		if (m) {
			size_t pos = w * 64 + (size_t) __builtin_ctzll(m);

			return pos < v->n ? pos : v->n;
		}
		if (++w * 64 >= v->n)
			return v->n;
		m = bits[w];
	}
}

size_t sm_cvec_room_next(const struct cvec *v, size_t from)
{
	return sm_cvec_next(v, v->room, from);
}

/* Last position <= from with room, or v->n when none. */
size_t sm_cvec_room_prev(const struct cvec *v, size_t from)
{
	size_t w;
	uint64_t m;

	if (!v->n)
		return 0;
	if (from >= v->n)
		from = v->n - 1;
	w = from / 64;
	m = v->room[w] & (~0ull >> (63 - from % 64));
	for (;;) {
		if (m)
			return w * 64 + 63 - (size_t) __builtin_clzll(m);
		if (!w--)
			return v->n;
		m = v->room[w];
	}
}

/* O(n) memmove, but chunks come and go rarely (and mostly at the end). */
int sm_cvec_insert(struct cvec *v, struct mchunk *c, uint32_t npc)
{
	size_t pos;

	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		struct mchunk **nv = realloc(v->v, cap * sizeof(*nv));
		uint64_t *nr;

		if (!nv)
			return -ENOMEM;
		v->v = nv;
		nr = realloc(v->room, cap / 64 * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		memset(nr + v->cap / 64, 0, (cap - v->cap) / 64 * sizeof(*nr));
		v->room = nr;
		nr = realloc(v->roomy, cap / 64 * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		memset(nr + v->cap / 64, 0, (cap - v->cap) / 64 * sizeof(*nr));
		v->roomy = nr;
		v->cap = cap;
	}
	pos = sm_cvec_pos(v, c->block);
	memmove(v->v + pos + 1, v->v + pos, (v->n - pos) * sizeof(*v->v));
	v->v[pos] = c;
	c->pos = (uint32_t) pos;
	if (v->n && pos <= v->hint)
		v->hint++; /* keep it on the same chunk */
	bits_insert(v->room, v->n, pos, has_room(c->busy, npc));
	bits_insert(v->roomy, v->n, pos, is_roomy(c->busy, npc));
	v->n++;
	return 0;
}

void sm_cvec_remove(struct cvec *v, const struct mchunk *c)
{
	size_t pos = sm_cvec_pos(v, c->block);

	assert(pos < v->n && v->v[pos] == c);
	memmove(v->v + pos, v->v + pos + 1, (v->n - pos - 1) * sizeof(*v->v));
	bits_remove(v->room, v->n, pos);
	bits_remove(v->roomy, v->n, pos);
	v->n--;
	if (pos < v->hint)
		v->hint--;
	if (v->hint >= v->n)
		v->hint = v->n ? v->n - 1 : 0;
}

void sm_cvec_free(struct cvec *v)
{
	free(v->v);
	free(v->room);
	free(v->roomy);
}

#ifndef NDEBUG
void sm_cvec_room_check(const struct cvec *v, uint32_t npc)
{
	if (v->n > 4096)
		return;
	for (size_t i = 0; i < v->n; i++) {
		assert(!!(v->room[i / 64] & (1ull << (i % 64))) ==
		       has_room(v->v[i]->busy, npc));
		assert(!!(v->roomy[i / 64] & (1ull << (i % 64))) ==
		       is_roomy(v->v[i]->busy, npc));
	}
}
#endif
