/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The space map's chunk vector (src/pdata/sm-chunks.c) against a trivial
 * model: a plain array of (block, busy) kept sorted.  After every insert,
 * remove and change of a chunk's busy count, the vector must hold the
 * model's chunks in order, its room and roomy bits must be what the busy
 * counts say (and zero past the end), every search (position of a block,
 * next and previous chunk with room, next roomy chunk) must give the
 * model's answer from every starting point, and the hint must stay on its
 * chunk.  Fixed cases first (word boundaries of the bitmaps, growth of the
 * capacity, one-node chunks), then random runs: seeded by TV_SEED.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm-chunks.h"
#include "tcheck.h"

#define MAX_CHUNKS 300

struct model {
	uint32_t npc;
	struct mchunk *c[MAX_CHUNKS]; /* sorted by block */
	size_t n;
	struct cvec v;
};

static bool bit(const uint64_t *w, size_t i)
{
	return (w[i / 64] >> (i % 64)) & 1;
}

/* The model's answers. */
static size_t m_pos(const struct model *m, uint64_t block)
{
	size_t i = 0;

	while (i < m->n && m->c[i]->block < block)
		i++;
	return i;
}

static size_t m_next(const struct model *m, size_t from, bool roomy)
{
	for (size_t i = from; i < m->n; i++) {
		uint32_t busy = m->c[i]->busy;

		if (roomy ? m->npc - busy >= HOT_ROOM(m->npc) : busy < m->npc)
			return i;
	}
	return m->n;
}

static size_t m_prev(const struct model *m, size_t from)
{
	if (!m->n)
		return 0; /* as sm_cvec_room_prev says for an empty vector */
	if (from >= m->n)
		from = m->n - 1;
	for (size_t i = from + 1; i-- > 0;)
		if (m->c[i]->busy < m->npc)
			return i;
	return m->n;
}

/* Everything the vector says agrees with the model. */
static void verify(const struct model *m)
{
	const struct cvec *v = &m->v;

	CHECK_EQ(v->n, m->n);
	CHECK(v->n <= v->cap);
	for (size_t i = 0; i < m->n; i++) {
		uint32_t busy = m->c[i]->busy;

		CHECK(v->v[i] == m->c[i]);
		CHECK_EQ(bit(v->room, i), busy < m->npc);
		CHECK_EQ(bit(v->roomy, i), m->npc - busy >= HOT_ROOM(m->npc));
	}
	/* bits past the end are zero (an insert shifts them in) */
	for (size_t i = m->n; i < v->cap; i++) {
		CHECK(!bit(v->room, i));
		CHECK(!bit(v->roomy, i));
	}
	/* every start on small vectors, a sample (word edges too) on big */
	for (size_t f = 0; f <= m->n + 2;
	     f += m->n <= 130 || f % 64 == 63 || f % 64 == 0 ? 1 : 13) {
		CHECK_EQ(sm_cvec_room_next(v, f), m_next(m, f, false));
		CHECK_EQ(sm_cvec_next(v, v->roomy, f), m_next(m, f, true));
		CHECK_EQ(sm_cvec_room_prev(v, f), m_prev(m, f));
	}
	for (size_t i = 0; i < m->n; i++) {
		uint64_t b = m->c[i]->block;

		/* blocks are unique and sorted: b + 1 goes after chunk i, b - 1
		 * before it unless it is chunk i - 1's */
		CHECK_EQ(sm_cvec_pos(v, b), i);
		CHECK_EQ(sm_cvec_pos(v, b + 1), i + 1);
		if (b)
			CHECK_EQ(sm_cvec_pos(v, b - 1),
				 i && m->c[i - 1]->block == b - 1 ? i - 1 : i);
	}
	if (m->n)
		CHECK_EQ(sm_cvec_pos(v, m->c[m->n / 2]->block),
			 m_pos(m, m->c[m->n / 2]->block));
	CHECK_EQ(sm_cvec_pos(v, 0), m_pos(m, 0));
	CHECK_EQ(sm_cvec_pos(v, UINT64_MAX), m->n);
	if (m->n)
		CHECK(v->hint < m->n);
#ifndef NDEBUG
	sm_cvec_room_check(v, m->npc);
#endif
}

static struct mchunk *new_chunk(uint64_t block, uint32_t busy)
{
	struct mchunk *c = calloc(1, sizeof(*c));

	CHECK(c != NULL);
	c->block = block;
	c->busy = busy;
	return c;
}

static bool has_block(const struct model *m, uint64_t block)
{
	size_t i = m_pos(m, block);

	return i < m->n && m->c[i]->block == block;
}

static void insert(struct model *m, uint64_t block, uint32_t busy)
{
	struct mchunk *c = new_chunk(block, busy);
	const struct mchunk *hc = m->n ? m->v.v[m->v.hint] : NULL;
	size_t i = m_pos(m, block);

	CHECK(m->n < MAX_CHUNKS);
	CHECK_OK(sm_cvec_insert(&m->v, c, m->npc));
	CHECK_EQ(c->pos, i);
	memmove(m->c + i + 1, m->c + i, (m->n - i) * sizeof(*m->c));
	m->c[i] = c;
	m->n++;
	if (hc)
		CHECK(m->v.v[m->v.hint] == hc); /* rule 3 */
	verify(m);
}

static void remove_at(struct model *m, size_t i)
{
	struct mchunk *c = m->c[i];
	const struct mchunk *hc = m->v.v[m->v.hint];

	sm_cvec_remove(&m->v, c);
	memmove(m->c + i, m->c + i + 1, (m->n - i - 1) * sizeof(*m->c));
	m->n--;
	if (hc != c)
		CHECK(m->v.v[m->v.hint] == hc); /* rule 3 */
	free(c);
	verify(m);
}

static void set_busy(struct model *m, size_t i, uint32_t busy)
{
	m->c[i]->busy = busy;
	sm_cvec_room_set(&m->v, sm_cvec_pos(&m->v, m->c[i]->block), busy,
			 m->npc);
	verify(m);
}

static void init(struct model *m, uint32_t npc)
{
	memset(m, 0, sizeof(*m));
	m->npc = npc;
}

static void fini(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->c[i]);
	sm_cvec_free(&m->v);
}

/* Bits move across words: 130 chunks (capacity 64 -> 128 -> 256),
 * inserted at the front so that every insert shifts every bit, with a
 * pattern that differs in each word; then removed from the front. */
static void word_boundaries(uint32_t npc)
{
	struct model m;

	init(&m, npc);
	verify(&m);
	for (uint64_t k = 0; k < 130; k++) {
		uint64_t block = 1000 - k;

		insert(&m, block,
		       (uint32_t) (block % 3 == 0   ? npc
				   : block % 3 == 1 ? 0
						    : npc / 2));
	}
	/* every chunk full: no room anywhere; then one at each edge */
	for (size_t i = 0; i < m.n; i++)
		set_busy(&m, i, npc);
	CHECK_EQ(sm_cvec_room_next(&m.v, 0), m.n);
	CHECK_EQ(sm_cvec_room_prev(&m.v, m.n), m.n);
	set_busy(&m, 63, npc - 1);
	CHECK_EQ(sm_cvec_room_next(&m.v, 0), 63);
	CHECK_EQ(sm_cvec_room_prev(&m.v, m.n), 63);
	set_busy(&m, 64, 0);
	CHECK_EQ(sm_cvec_room_next(&m.v, 64), 64);
	CHECK_EQ(sm_cvec_room_prev(&m.v, 63), 63);
	set_busy(&m, m.n - 1, 0);
	CHECK_EQ(sm_cvec_room_prev(&m.v, m.n + 5), m.n - 1);
	/* removing the chunk at a word's end pulls the next word's bit in */
	remove_at(&m, 63);
	CHECK(bit(m.v.room, 63));
	while (m.n)
		remove_at(&m, 0);
	CHECK_EQ(sm_cvec_room_prev(&m.v, 0), 0);
	CHECK_EQ(sm_cvec_room_next(&m.v, 0), 0);
	fini(&m);
}

/* At open, busy counts are set directly and the bits rebuilt. */
static void rebuild(void)
{
	struct model m;

	init(&m, 16);
	for (uint64_t b = 0; b < 100; b++)
		insert(&m, 2 * b + 1, 16);
	for (size_t i = 0; i < m.n; i++)
		m.c[i]->busy = (uint32_t) (i % 17);
	sm_cvec_room_rebuild(&m.v, m.npc);
	verify(&m);
	fini(&m);
}

/* The hint follows its chunk, and is clamped when the last goes. */
static void hint(void)
{
	struct model m;

	init(&m, 8);
	for (uint64_t b = 10; b < 20; b++)
		insert(&m, b, 0);
	m.v.hint = 5; /* block 15 */
	insert(&m, 3, 0);
	CHECK_EQ(m.v.v[m.v.hint]->block, 15);
	insert(&m, 25, 0);
	CHECK_EQ(m.v.v[m.v.hint]->block, 15);
	remove_at(&m, m_pos(&m, 12));
	CHECK_EQ(m.v.v[m.v.hint]->block, 15);
	remove_at(&m, 0);
	CHECK_EQ(m.v.v[m.v.hint]->block, 15);
	m.v.hint = m.n - 1;
	remove_at(&m, m.n - 1);
	CHECK_EQ(m.v.hint, m.n - 1);
	fini(&m);
}

static void random_run(struct trng *rng, uint32_t npc, unsigned int ops)
{
	struct model m;

	init(&m, npc);
	for (unsigned int op = 0; op < ops; op++) {
		unsigned int what = (unsigned int) trng_below(rng, 10);

		if (m.n && what < 3) {
			remove_at(&m, trng_below(rng, m.n));
		} else if (m.n && what < 6) {
			set_busy(&m, trng_below(rng, m.n),
				 (uint32_t) trng_below(rng, npc + 1));
		} else if (m.n && what < 7) {
			m.v.hint = trng_below(rng, m.n);
		} else if (m.n < MAX_CHUNKS) {
			uint64_t block;

			do {
				block = trng_below(rng, 4 * MAX_CHUNKS);
			} while (has_block(&m, block));
			insert(&m, block, (uint32_t) trng_below(rng, npc + 1));
		}
	}
	fini(&m);
}

int main(void)
{
	static const uint32_t npcs[] = {1, 2, 8, 16, 64, 256};
	uint64_t seed = tseed("test-chunks");
	struct trng rng;

	for (size_t i = 0; i < sizeof(npcs) / sizeof(npcs[0]); i++)
		word_boundaries(npcs[i]);
	rebuild();
	hint();
	trng_init(&rng, seed);
	for (size_t i = 0; i < sizeof(npcs) / sizeof(npcs[0]); i++)
		random_run(&rng, npcs[i], 2000);
	printf("test-chunks: ok\n");
	return 0;
}
