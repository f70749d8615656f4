/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sm.c - the space map.  Contract and on-disk keys in sm.h.
 *
 * In memory:
 *   - every metadata chunk, with two counts per node: cur (this
 *     transaction) and com (the committed one), and a dirty bit per node
 *     whose cur has not yet been written into the tree;
 *   - a table of the data blocks touched in this transaction, each with its
 *     committed count (old) and current count (now).
 *
 * Rules:
 *   1. A node or block is allocatable only if both its committed and its
 *      current count are zero (nothing freed is reused before commit).
 *   2. The tree is changed only by sm_flush (commit), so during a
 *      transaction it holds the committed counts; sm_flush changes it in
 *      rounds until nothing is dirty.  During sm_flush no chunk is acquired
 *      in the middle of a tree operation: ensure_spare() tops up free nodes
 *      before each one, because finding a free block reads the tree.
 *   3. Chunks whose nodes are all free are released at the start of
 *      sm_flush (keeping SPARE free nodes), never in its loop, so the loop
 *      cannot alternate between acquiring and releasing.
 */
#include "pdata/sm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/btree.h"
#include "pdata/tm.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"
#include "util/u64map.h"

/* Free nodes kept ready before each tree operation inside sm_flush: a
 * generous bound on what one insert or remove can allocate. */
#define SPARE_NODES 64u
#define FREED_MAX (1u << 20)

struct mchunk {
	uint64_t block;
	uint32_t *cur;
	uint32_t *com;
	uint64_t *dirty; /* bitmap: cur not yet written to the tree */
	uint32_t used_cur; /* nodes with cur > 0 */
	uint32_t busy;	   /* nodes with cur > 0 or com > 0 */
	bool touched;	   /* cur changed in this transaction */
	bool record_in_tree;
	bool record_dirty;
};

struct dentry {
	uint64_t block;
	uint32_t old; /* committed count */
	uint32_t now; /* current count */
	bool dirty;   /* now not yet written to the tree */
};

struct sm {
	struct tm *tm;
	struct btree_info info;
	struct tm_ref root;
	uint64_t first_block;
	uint64_t nr_blocks;
	uint32_t npc; /* nodes per chunk */
	uint64_t reserve;
	bool reserve_mode;
	bool in_flush;

	/* metadata chunks */
	struct mchunk **chunks;
	size_t nr_chunks, cap_chunks;
	struct u64map chunk_idx; /* block -> index in chunks */
	size_t m_hint;
	uint64_t m_used; /* nodes with cur > 0 */
	uint64_t m_free; /* allocatable nodes in chunks */
	uint64_t *touched; /* blocks of touched chunks */
	size_t nr_touched, cap_touched;

	/* data blocks touched in this transaction */
	struct dentry *d;
	size_t nr_d, cap_d;
	struct u64map d_idx; /* block -> index in d */
	uint64_t d_used;     /* blocks with a current count > 0 */
	uint64_t d_pending;  /* committed > 0, current == 0 */
	uint64_t d_hint;

	uint64_t *freed;
	size_t nr_freed, cap_freed;
};

static void key_of(uint8_t k[8], uint64_t v)
{
	put_be64(k, v);
}

/* ---- chunks ---- */

static struct mchunk *chunk_find(const struct sm *sm, uint64_t block)
{
	uint64_t *v = u64map_find(&sm->chunk_idx, block);

	return v ? sm->chunks[*v] : NULL;
}

static struct mchunk *chunk_of_node(const struct sm *sm, uint64_t node,
				    uint32_t *index)
{
	struct mchunk *c = chunk_find(sm, node / sm->npc);

	if (c)
		*index = (uint32_t)(node % sm->npc);
	return c;
}

static void chunk_free(struct mchunk *c)
{
	if (!c)
		return;
	free(c->cur);
	free(c->com);
	free(c->dirty);
	free(c);
}

static int chunk_add(struct sm *sm, uint64_t block, struct mchunk **out)
{
	struct mchunk *c = calloc(1, sizeof(*c));
	int r = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->block = block;
	c->cur = calloc(sm->npc, sizeof(uint32_t));
	c->com = calloc(sm->npc, sizeof(uint32_t));
	c->dirty = calloc(DIV_ROUND_UP(sm->npc, 64), sizeof(uint64_t));
	if (!c->cur || !c->com || !c->dirty)
		goto fail;
	if (sm->nr_chunks == sm->cap_chunks) {
		size_t cap = sm->cap_chunks ? sm->cap_chunks * 2 : 16;
		struct mchunk **v = realloc(sm->chunks, cap * sizeof(*v));
		if (!v)
			goto fail;
		sm->chunks = v;
		sm->cap_chunks = cap;
	}
	r = u64map_put(&sm->chunk_idx, block, sm->nr_chunks);
	if (r < 0)
		goto fail;
	sm->chunks[sm->nr_chunks++] = c;
	sm->m_free += sm->npc;
	*out = c;
	return 0;
fail:
	chunk_free(c);
	return r;
}

/* Remove c from the index (swap with the last); c stays allocated. */
static void chunk_unlink(struct sm *sm, struct mchunk *c)
{
	uint64_t i = *u64map_find(&sm->chunk_idx, c->block);
	struct mchunk *last = sm->chunks[sm->nr_chunks - 1];

	sm->chunks[i] = last;
	u64map_put(&sm->chunk_idx, last->block, i); /* exists: no alloc */
	u64map_del(&sm->chunk_idx, c->block);
	sm->nr_chunks--;
	sm->m_free -= sm->npc - c->busy;
	if (sm->m_hint >= sm->nr_chunks)
		sm->m_hint = 0;
}

static int touch(struct sm *sm, struct mchunk *c)
{
	if (c->touched)
		return 0;
	if (sm->nr_touched == sm->cap_touched) {
		size_t cap = sm->cap_touched ? sm->cap_touched * 2 : 64;
		uint64_t *v = realloc(sm->touched, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		sm->touched = v;
		sm->cap_touched = cap;
	}
	sm->touched[sm->nr_touched++] = c->block;
	c->touched = true;
	return 0;
}

/* Set the current count of node i of chunk c, keeping every counter. */
static int set_meta(struct sm *sm, struct mchunk *c, uint32_t i, uint32_t v)
{
	uint32_t was = c->cur[i];
	bool busy_before = was || c->com[i];
	bool busy_after = v || c->com[i];
	int r = touch(sm, c);

	if (r < 0)
		return r;
	c->cur[i] = v;
	if (!was && v) {
		c->used_cur++;
		sm->m_used++;
	} else if (was && !v) {
		c->used_cur--;
		sm->m_used--;
	}
	if (!busy_before && busy_after) {
		c->busy++;
		sm->m_free--;
	} else if (busy_before && !busy_after) {
		c->busy--;
		sm->m_free++;
	}
	c->dirty[i / 64] |= 1ull << (i % 64);
	return 0;
}

/* ---- data blocks ---- */

static void d_account(struct sm *sm, const struct dentry *e, int sign)
{
	uint64_t used = e->now > 0;
	uint64_t pending = e->old > 0 && e->now == 0;

	if (sign > 0) {
		sm->d_used += used;
		sm->d_pending += pending;
	} else {
		sm->d_used -= used;
		sm->d_pending -= pending;
	}
}

static int tree_count(struct sm *sm, uint64_t key, uint32_t *count)
{
	uint8_t k[8], v[4];
	int r;

	key_of(k, key);
	r = btree_lookup(&sm->info, &sm->root, k, v);
	if (r == -ENOENT) {
		*count = 0;
		return 0;
	}
	if (r < 0)
		return r;
	*count = get_le32(v);
	return 0;
}

static int d_get(struct sm *sm, uint64_t block, bool create,
		 struct dentry **out)
{
	uint64_t *idx = u64map_find(&sm->d_idx, block);
	struct dentry *e;
	uint32_t count;
	int r;

	if (idx) {
		*out = &sm->d[*idx];
		return 0;
	}
	if (!create) {
		*out = NULL;
		return 0;
	}
	r = tree_count(sm, block, &count);
	if (r < 0)
		return r;
	if (sm->nr_d == sm->cap_d) {
		size_t cap = sm->cap_d ? sm->cap_d * 2 : 256;
		struct dentry *v = realloc(sm->d, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		sm->d = v;
		sm->cap_d = cap;
	}
	r = u64map_put(&sm->d_idx, block, sm->nr_d);
	if (r < 0)
		return r;
	e = &sm->d[sm->nr_d++];
	e->block = block;
	e->old = e->now = count;
	e->dirty = false;
	*out = e;
	return 0;
}

static void d_set(struct sm *sm, struct dentry *e, uint32_t now)
{
	d_account(sm, e, -1);
	e->now = now;
	e->dirty = true;
	d_account(sm, e, +1);
}

static int check_block(const struct sm *sm, uint64_t block)
{
	if (block < sm->first_block || block >= sm->nr_blocks) {
		log_error("space map: reference to block %" PRIu64
			  " outside the pool (%" PRIu64 "..%" PRIu64 ")",
			  block, sm->first_block, sm->nr_blocks - 1);
		return -EUCLEAN;
	}
	return 0;
}

static uint64_t allocatable(const struct sm *sm)
{
	uint64_t range = sm->nr_blocks - sm->first_block;
	uint64_t busy = sm->d_used + sm->d_pending;

	return busy >= range ? 0 : range - busy;
}

/*
 * Find a free block in [lo, hi): not in the tree, not touched now.
 * *found is set only if one was found; errors are the tree's (an I/O error
 * may well be -ENOSPC, so "none here" is not an error code).
 */
static int scan_range(struct sm *sm, uint64_t lo, uint64_t hi, bool *ok,
		      uint64_t *found)
{
	struct btree_cursor c;
	uint8_t k[8];
	uint64_t cand = lo;
	int r;

	*ok = false;
	key_of(k, lo);
	r = btree_cursor_seek(&sm->info, &sm->root, k, &c);
	while (r == 0 && cand < hi) {
		uint64_t key = UINT64_MAX;
		uint64_t *idx;

		while (c.valid) {
			key = get_be64(btree_cursor_key(&c));
			if (key >= SM_KEY_META || key >= cand)
				break;
			r = btree_cursor_next(&c);
			if (r < 0)
				goto out;
		}
		if (c.valid && key == cand) {
			cand++;
			continue;
		}
		idx = u64map_find(&sm->d_idx, cand);
		if (idx && (sm->d[*idx].now || sm->d[*idx].old)) {
			cand++;
			continue;
		}
		*found = cand;
		*ok = true;
		goto out;
	}
out:
	btree_cursor_close(&c);
	return r;
}

enum alloc_kind { ALLOC_DATA, ALLOC_META };

static int find_free_block(struct sm *sm, enum alloc_kind kind,
			   uint64_t *block)
{
	uint64_t limit = 0, avail = allocatable(sm);
	uint64_t hint = sm->d_hint;
	bool ok;
	int r;

	if (!sm->reserve_mode && !sm->in_flush)
		limit = kind == ALLOC_DATA ? 2 * sm->reserve : sm->reserve;
	if (avail <= limit)
		return -ENOSPC;
	if (hint < sm->first_block || hint >= sm->nr_blocks)
		hint = sm->first_block;
	r = scan_range(sm, hint, sm->nr_blocks, &ok, block);
	if (r == 0 && !ok && hint > sm->first_block)
		r = scan_range(sm, sm->first_block, hint, &ok, block);
	if (r < 0)
		return r;
	if (!ok) {
		log_error("space map: %" PRIu64
			  " blocks counted free but none found",
			  avail);
		return -EUCLEAN;
	}
	sm->d_hint = *block + 1;
	return 0;
}

static int acquire_chunk(struct sm *sm)
{
	struct dentry *e;
	struct mchunk *c;
	uint64_t block;
	int r;

	r = find_free_block(sm, ALLOC_META, &block);
	if (r < 0)
		return r;
	r = d_get(sm, block, true, &e);
	if (r < 0)
		return r;
	r = chunk_add(sm, block, &c);
	if (r < 0)
		return r;
	d_set(sm, e, 1);
	c->record_dirty = true;
	return touch(sm, c);
}

static int ensure_spare(struct sm *sm)
{
	while (sm->m_free < SPARE_NODES) {
		int r = acquire_chunk(sm);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- public: data blocks ---- */

int sm_alloc_block(struct sm *sm, uint64_t *block)
{
	struct dentry *e;
	uint64_t b;
	int r = find_free_block(sm, ALLOC_DATA, &b);

	if (r < 0)
		return r;
	r = d_get(sm, b, true, &e);
	if (r < 0)
		return r;
	d_set(sm, e, 1);
	*block = b;
	return 0;
}

int sm_inc_block(struct sm *sm, uint64_t block)
{
	struct dentry *e;
	int r = check_block(sm, block);

	if (r < 0)
		return r;
	if (chunk_find(sm, block)) {
		log_error("space map: data reference to metadata block %" PRIu64,
			  block);
		return -EUCLEAN;
	}
	r = d_get(sm, block, true, &e);
	if (r < 0)
		return r;
	if (e->now == 0) {
		log_error("space map: reference to free block %" PRIu64, block);
		return -EUCLEAN;
	}
	if (e->now == SM_COUNT_MAX)
		return -EOVERFLOW;
	d_set(sm, e, e->now + 1);
	return 0;
}

int sm_dec_block(struct sm *sm, uint64_t block, uint32_t *new_count)
{
	struct dentry *e;
	int r = check_block(sm, block);

	if (r < 0)
		return r;
	if (chunk_find(sm, block)) {
		log_error("space map: data reference to metadata block %" PRIu64,
			  block);
		return -EUCLEAN;
	}
	r = d_get(sm, block, true, &e);
	if (r < 0)
		return r;
	if (e->now == 0) {
		log_error("space map: block %" PRIu64
			  " released more often than referenced",
			  block);
		return -EUCLEAN;
	}
	d_set(sm, e, e->now - 1);
	if (new_count)
		*new_count = e->now;
	return 0;
}

int sm_block_count(struct sm *sm, uint64_t block, uint32_t *count)
{
	struct dentry *e;
	int r = check_block(sm, block);

	if (r < 0)
		return r;
	r = d_get(sm, block, false, &e);
	if (r < 0)
		return r;
	if (e) {
		*count = e->now;
		return 0;
	}
	return tree_count(sm, block, count);
}

/* ---- public: metadata nodes ---- */

int sm_alloc_node(struct sm *sm, uint64_t *node)
{
	int r;

	if (!sm->m_free) {
		if (sm->in_flush) {
			log_error("space map: spare metadata nodes exhausted "
				  "during commit");
			return -ENOSPC;
		}
		r = acquire_chunk(sm);
		if (r < 0)
			return r;
	}
	for (size_t k = 0; k < sm->nr_chunks; k++) {
		size_t ci = (sm->m_hint + k) % sm->nr_chunks;
		struct mchunk *c = sm->chunks[ci];

		if (c->busy == sm->npc)
			continue;
		for (uint32_t i = 0; i < sm->npc; i++) {
			if (c->cur[i] || c->com[i])
				continue;
			r = set_meta(sm, c, i, 1);
			if (r < 0)
				return r;
			sm->m_hint = ci;
			*node = c->block * sm->npc + i;
			return 0;
		}
	}
	log_error("space map: %" PRIu64 " metadata nodes counted free but "
		  "none found", sm->m_free);
	return -EUCLEAN;
}

static int node_lookup(struct sm *sm, uint64_t node, struct mchunk **c,
		       uint32_t *i)
{
	*c = chunk_of_node(sm, node, i);
	if (!*c || !(*c)->cur[*i]) {
		log_error("space map: reference to metadata node %" PRIu64
			  ", which is not allocated",
			  node);
		return -EUCLEAN;
	}
	return 0;
}

int sm_inc_node(struct sm *sm, uint64_t node)
{
	struct mchunk *c;
	uint32_t i;
	int r = node_lookup(sm, node, &c, &i);

	if (r < 0)
		return r;
	if (c->cur[i] == SM_COUNT_MAX)
		return -EOVERFLOW;
	return set_meta(sm, c, i, c->cur[i] + 1);
}

int sm_dec_node(struct sm *sm, uint64_t node, uint32_t *new_count)
{
	struct mchunk *c;
	uint32_t i;
	int r = node_lookup(sm, node, &c, &i);

	if (r < 0)
		return r;
	r = set_meta(sm, c, i, c->cur[i] - 1);
	if (r < 0)
		return r;
	if (new_count)
		*new_count = c->cur[i];
	return 0;
}

int sm_node_count(struct sm *sm, uint64_t node, uint32_t *count)
{
	uint32_t i;
	struct mchunk *c = chunk_of_node(sm, node, &i);

	*count = c ? c->cur[i] : 0;
	return 0;
}

/* ---- commit ---- */

static int tree_set(struct sm *sm, uint64_t key, uint32_t count)
{
	uint8_t k[8], v[4];
	int r;

	r = ensure_spare(sm);
	if (r < 0)
		return r;
	key_of(k, key);
	if (!count) {
		r = btree_remove(&sm->info, &sm->root, k, NULL);
		return r == -ENOENT ? 0 : r;
	}
	put_le32(v, count);
	return btree_put(&sm->info, &sm->root, k, v, NULL);
}

/* Write chunk c's dirty node counts into the tree. */
static int flush_chunk(struct sm *sm, struct mchunk *c, bool *progress)
{
	for (uint32_t i = 0; i < sm->npc; i++) {
		uint64_t bit = 1ull << (i % 64);
		int r;

		if (!(c->dirty[i / 64] & bit))
			continue;
		/* Clear first: the tree change may touch this node again. */
		c->dirty[i / 64] &= ~bit;
		r = tree_set(sm, SM_KEY_META | (c->block * sm->npc + i),
			     c->cur[i]);
		if (r < 0)
			return r;
		*progress = true;
	}
	return 0;
}

/* Release chunks with no node in use, keeping SPARE_NODES free ones. */
static int release_empty_chunks(struct sm *sm)
{
	size_t i = 0;

	while (i < sm->nr_chunks) {
		struct mchunk *c = sm->chunks[i];
		struct dentry *e;
		bool progress = false;
		int r;

		if (c->used_cur ||
		    sm->m_free - (sm->npc - c->busy) < SPARE_NODES) {
			i++;
			continue;
		}
		/* Out of the allocator first, so the tree changes below
		 * cannot put nodes into it. */
		chunk_unlink(sm, c);
		r = flush_chunk(sm, c, &progress);
		if (r == 0 && c->record_in_tree)
			r = tree_set(sm, SM_KEY_CHUNK | c->block, 0);
		if (r == 0)
			r = d_get(sm, c->block, true, &e);
		if (r == 0) {
			if (e->now != 1) {
				log_error("space map: metadata block %" PRIu64
					  " has count %u",
					  c->block, e->now);
				r = -EUCLEAN;
			} else {
				d_set(sm, e, 0);
			}
		}
		chunk_free(c);
		if (r < 0)
			return r;
		/* the chunk that was last now sits at i: look at it next */
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int flush_round(struct sm *sm, bool *progress)
{
	uint64_t *blocks = NULL;
	size_t n = 0;
	int r = 0;

	/* data counts, in key order */
	for (size_t i = 0; i < sm->nr_d; i++)
		if (sm->d[i].dirty)
			n++;
	if (n) {
		size_t k = 0;

		blocks = malloc(n * sizeof(*blocks));
		if (!blocks)
			return -ENOMEM;
		for (size_t i = 0; i < sm->nr_d; i++)
			if (sm->d[i].dirty)
				blocks[k++] = sm->d[i].block;
		qsort(blocks, n, sizeof(*blocks), cmp_u64);
		for (k = 0; k < n; k++) {
			struct dentry *e = &sm->d[*u64map_find(&sm->d_idx,
							       blocks[k])];
			uint32_t now = e->now;

			e->dirty = false;
			r = tree_set(sm, e->block, now);
			if (r < 0)
				goto out;
			*progress = true;
		}
	}

	/* chunk records, then node counts */
	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = chunk_find(sm, sm->touched[t]);

		if (!c || !c->record_dirty)
			continue;
		c->record_dirty = false;
		r = ensure_spare(sm);
		if (r == 0) {
			uint8_t k[8], v[4] = { 0 };
			key_of(k, SM_KEY_CHUNK | c->block);
			r = btree_put(&sm->info, &sm->root, k, v, NULL);
		}
		if (r < 0)
			goto out;
		c->record_in_tree = true;
		*progress = true;
	}
	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = chunk_find(sm, sm->touched[t]);

		if (!c)
			continue;
		r = flush_chunk(sm, c, progress);
		if (r < 0)
			goto out;
	}
out:
	free(blocks);
	return r;
}

int sm_flush(struct sm *sm, struct tm_ref *root)
{
	bool progress;
	int r;

	sm->in_flush = true;
	r = release_empty_chunks(sm);
	if (r < 0)
		goto out;
	do {
		progress = false;
		r = flush_round(sm, &progress);
		if (r < 0)
			goto out;
	} while (progress);
	*root = sm->root;
out:
	sm->in_flush = false;
	return r;
}

void sm_committed(struct sm *sm)
{
	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = chunk_find(sm, sm->touched[t]);

		if (!c)
			continue;
		memcpy(c->com, c->cur, sm->npc * sizeof(uint32_t));
		sm->m_free += c->busy - c->used_cur;
		c->busy = c->used_cur;
		c->touched = false;
	}
	sm->nr_touched = 0;
	for (size_t i = 0; i < sm->nr_d; i++) {
		struct dentry *e = &sm->d[i];

		/* next-fit restarts at the lowest block freed, so space is
		 * reused early and the pool stays compact */
		if (e->old && !e->now && e->block < sm->d_hint)
			sm->d_hint = e->block;
		if (e->old && !e->now && sm->nr_freed < FREED_MAX) {
			if (sm->nr_freed == sm->cap_freed) {
				size_t cap = sm->cap_freed ? sm->cap_freed * 2
							   : 256;
				uint64_t *v = realloc(sm->freed,
						      cap * sizeof(*v));
				if (!v)
					continue; /* only a discard hint */
				sm->freed = v;
				sm->cap_freed = cap;
			}
			sm->freed[sm->nr_freed++] = e->block;
		}
	}
	sm->nr_d = 0;
	u64map_clear(&sm->d_idx);
	sm->d_pending = 0;
}

/* ---- open / misc ---- */

static int load(struct sm *sm)
{
	struct btree_cursor c;
	uint8_t k[8];
	int r;

	/* chunk records */
	key_of(k, SM_KEY_CHUNK);
	r = btree_cursor_seek(&sm->info, &sm->root, k, &c);
	while (r == 0 && c.valid) {
		uint64_t block = get_be64(btree_cursor_key(&c)) &
				 ~SM_KEY_SPACE_MASK;
		struct mchunk *ch;

		r = check_block(sm, block);
		if (r < 0)
			break;
		/* A damaged tree could repeat a key; trusting it would put
		 * live nodes on the free list. */
		if (chunk_find(sm, block)) {
			log_error("space map: metadata chunk %" PRIu64
				  " recorded twice",
				  block);
			r = -EUCLEAN;
			break;
		}
		r = chunk_add(sm, block, &ch);
		if (r < 0)
			break;
		ch->record_in_tree = true;
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	if (r < 0)
		return r;

	/* node counts */
	key_of(k, SM_KEY_META);
	r = btree_cursor_seek(&sm->info, &sm->root, k, &c);
	while (r == 0 && c.valid) {
		uint64_t key = get_be64(btree_cursor_key(&c));
		uint32_t count = get_le32(btree_cursor_value(&c));
		uint64_t node = key & ~SM_KEY_SPACE_MASK;
		struct mchunk *ch;
		uint32_t i;

		if ((key & SM_KEY_SPACE_MASK) != SM_KEY_META)
			break;
		ch = chunk_of_node(sm, node, &i);
		if (ch && ch->cur[i]) {
			log_error("space map: node %" PRIu64 " counted twice",
				  node);
			r = -EUCLEAN;
			break;
		}
		if (!ch || !count) {
			log_error("space map: node %" PRIu64 " count %u %s",
				  node, count,
				  ch ? "(zero counts are not stored)"
				     : "lies outside every metadata chunk");
			r = -EUCLEAN;
			break;
		}
		ch->cur[i] = ch->com[i] = count;
		ch->used_cur++;
		ch->busy++;
		sm->m_used++;
		sm->m_free--;
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	return r;
}

/*
 * The reserve: 4 MiB worth of blocks (room for ~1000 metadata nodes, far
 * more than any commit of a bounded transaction needs), at least 2, but no
 * more than 1/16 of a small pool.
 */
static uint64_t reserve_floor(uint32_t bs)
{
	/* twice the spare nodes a commit keeps ready, in whole chunks */
	return MAX(2, DIV_ROUND_UP(2ull * SPARE_NODES, bs / PD_NODE_SIZE));
}

static uint64_t reserve_for(uint64_t range, uint32_t bs)
{
	uint64_t r = DIV_ROUND_UP(4ull << 20, bs);

	r = MIN(r, range / 16);
	return MAX(r, reserve_floor(bs));
}

uint64_t sm_min_blocks(uint32_t bs)
{
	return 4 * reserve_floor(bs);
}

int sm_open(struct tm *tm, const struct tm_ref *root, uint64_t data_used,
	    struct sm **out)
{
	struct sm *sm = calloc(1, sizeof(*sm));
	uint32_t bs = tm_block_size(tm);
	int r;

	if (!sm)
		return -ENOMEM;
	sm->tm = tm;
	sm->info.tm = tm;
	sm->info.tag = SM_TREE_TAG;
	sm->info.key_size = 8;
	sm->info.value.size = 4;
	sm->root = *root;
	sm->first_block = tm_first_block(tm);
	sm->nr_blocks = tm_nr_blocks(tm);
	sm->npc = bs / PD_NODE_SIZE;
	sm->reserve = reserve_for(sm->nr_blocks - sm->first_block, bs);
	sm->d_used = data_used;
	sm->d_hint = sm->first_block;
	u64map_init(&sm->chunk_idx);
	u64map_init(&sm->d_idx);
	r = load(sm);
	if (r < 0) {
		sm_destroy(sm);
		return r;
	}
	if (sm->nr_chunks > sm->d_used) {
		log_error("space map: %zu metadata chunks but only %" PRIu64
			  " blocks in use",
			  sm->nr_chunks, sm->d_used);
		sm_destroy(sm);
		return -EUCLEAN;
	}
	*out = sm;
	return 0;
}

void sm_destroy(struct sm *sm)
{
	if (!sm)
		return;
	for (size_t i = 0; i < sm->nr_chunks; i++)
		chunk_free(sm->chunks[i]);
	free(sm->chunks);
	free(sm->touched);
	free(sm->d);
	free(sm->freed);
	u64map_free(&sm->chunk_idx);
	u64map_free(&sm->d_idx);
	free(sm);
}

void sm_set_reserve_mode(struct sm *sm, bool on)
{
	sm->reserve_mode = on;
}

int sm_grow(struct sm *sm, uint64_t nr_blocks)
{
	if (nr_blocks < sm->nr_blocks)
		return -EINVAL;
	sm->nr_blocks = nr_blocks;
	sm->reserve = reserve_for(nr_blocks - sm->first_block,
				  tm_block_size(sm->tm));
	return 0;
}

void sm_get_stats(const struct sm *sm, struct sm_stats *st)
{
	st->nr_blocks = sm->nr_blocks - sm->first_block;
	st->data_used = sm->d_used;
	st->meta_chunks = sm->nr_chunks;
	st->meta_nodes = sm->m_used;
	st->pending_free = sm->d_pending;
	st->allocatable = allocatable(sm);
	st->reserve = sm->reserve;
}

size_t sm_take_freed(struct sm *sm, uint64_t *out, size_t max)
{
	size_t n = MIN(max, sm->nr_freed);

	if (!n)
		return 0;
	memcpy(out, sm->freed + sm->nr_freed - n, n * sizeof(*out));
	sm->nr_freed -= n;
	return n;
}

const struct btree_info *sm_tree_info(struct sm *sm)
{
	return &sm->info;
}

struct tm_ref sm_root(const struct sm *sm)
{
	return sm->root;
}
