/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sm-place.c - placement: where the space map puts new data blocks, new
 * metadata chunks and new metadata nodes (sm_alloc_block, sm_alloc_node).
 * Other rules are at the top of sm.c.
 *
 * Why placement matters (rule 4 of sm.c): every node a transaction copies
 * changes two counts in the sm tree (the copy's, 0 -> 1, the original's,
 * 1 -> 0), each in the leaf that covers its node number; every sm leaf
 * changed is copied in turn, which changes counts again, until sm_flush
 * converges.  So the cost of a commit is the number of distinct sm leaves
 * these counts fall in, and placement decides it:
 *
 *   1. The sm tree's own nodes (all allocated in sm_flush) live in chunks
 *      of their own, the "sm chunks", which sit together below the top of
 *      the pool and are filled first-fit from the top (or next to the
 *      original).
 *   2. A copy goes next to its original (within NEAR_NODES), so both
 *      counts fall in one leaf, unless the original was written by the
 *      previous transaction (a root or an upper level, copied by every
 *      change): those, and new nodes, go to the "hot chunks" (up to
 *      HOT_MAX a transaction, then next-fit in block order).
 *   3. A transaction fills the hot chunk with the most free nodes, so its
 *      hot nodes share one or two chunks, and so do their originals (the
 *      previous transaction's hot nodes): their counts fall in a leaf or
 *      two.  Those originals are freed at once (every change copies them
 *      again), so HOT_CHUNKS chunks take turns, and no chunk is acquired
 *      or released for them in steady state: hot chunks are never
 *      released while hot.  Next-fit would not do: over the single free
 *      nodes a big pool is riddled with, it spreads them over a leaf each.
 *   4. Many nodes placed hot live long (new leaves; upper nodes the next
 *      paths do not touch), so hot chunks do not empty: a chunk becomes
 *      hot only with HOT_ROOM free nodes, the fullest such chunk first (at
 *      open too), and one is acquired for it only when no chunk has that
 *      room.
 *   5. When the ordinary chunks hold more free nodes than the spare, a hot
 *      chunk's room and 1/32 of the nodes in use (hot_fill), next-fit
 *      places these nodes, filling the holes.  So the metadata is at most
 *      1/32 bigger than the live nodes and the spare need, whatever the
 *      nodes' lifetimes.
 *   6. Placement lives in memory only, not in the format: at open, the
 *      chunks that hold sm tree nodes (those load() reads) are sm chunks,
 *      and the fullest roomy ordinary chunks are hot (sm_hot_offer).
 *
 * Data blocks go next-fit (a commit moves the position back to the lowest
 * block it freed, so space is reused early), where no block of the
 * secured set is (rule 7) while there is such a place.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm-internal.h"
#include "pdata/tm.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"
#include "util/u64map.h"

/*
 * Find a free block in [lo, hi): not in the tree, not touched now, and
 * with skip_res not in the secured set (rule 7).  *found is set only if
 * one was found; errors are the tree's (an I/O error may well be -ENOSPC,
 * so "none here" is not an error code).
 */

int sm_scan_range(struct sm *sm, uint64_t lo, uint64_t hi, bool skip_res,
		  bool *ok, uint64_t *found)
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
		if ((idx && (sm->d[*idx].now || sm->d[*idx].old)) ||
		    (skip_res && sm_res_has(sm, cand))) {
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

static bool can_allocate(const struct sm *sm, enum alloc_kind kind)
{
	uint64_t limit = 0;

	if (!sm->reserve_mode && !sm->in_flush)
		limit = kind == ALLOC_DATA ? 2 * sm->reserve : sm->reserve;
	return sm_allocatable(sm) > limit;
}

/* A free block, next-fit; data goes where no block of the secured set is
 * (rule 7) while there is such a place, a chunk anywhere (a secured
 * block is one the chunk need not reserve). */
static int find_free_block(struct sm *sm, enum alloc_kind kind, uint64_t *block)
{
	bool skip = kind == ALLOC_DATA && sm->nr_res;
	uint64_t avail = sm_allocatable(sm);
	uint64_t hint = sm->d_hint;
	bool ok;
	int r;

	if (!can_allocate(sm, kind))
		return -ENOSPC;
	if (hint < sm->first_block || hint >= sm->nr_blocks)
		hint = sm->first_block;
	r = sm_scan_range(sm, hint, sm->nr_blocks, skip, &ok, block);
	if (r == 0 && !ok && hint > sm->first_block)
		r = sm_scan_range(sm, sm->first_block, hint, skip, &ok, block);
	if (r < 0)
		return r;
	if (!ok && skip && sm_res_pop(sm, block)) {
		/* every free block is secured: data takes one */
		return 0;
	}
	if (!ok) {
		log_error("space map: %" PRIu64
			  " blocks counted free but none found",
			  avail);
		return -EUCLEAN;
	}
	sm->d_hint = *block + 1;
	return 0;
}

/* How far below the sm chunks find_sm_block looks. */
#define SM_BLOCK_PROBES 64

/*
 * A free block for an sm chunk (rule 4): just below the lowest sm chunk,
 * or at the top of the pool for the first; if the blocks there are taken,
 * wherever find_free_block finds one.  O(SM_BLOCK_PROBES log n).
 */
static int find_sm_block(struct sm *sm, uint64_t *block)
{
	uint64_t cand = sm->schunks.n ? sm->schunks.v[0]->block : sm->nr_blocks;

	if (!can_allocate(sm, ALLOC_META))
		return -ENOSPC;
	for (int i = 0; i < SM_BLOCK_PROBES && cand > sm->first_block; i++) {
		uint8_t k[8], found[8];
		uint64_t *idx;
		int r;

		cand--;
		key_of(k, cand);
		r = btree_lookup_le(&sm->info, &sm->root, k, found, NULL);
		if (r < 0 && r != -ENOENT)
			return r;
		if (r == 0 && get_be64(found) == cand)
			continue; /* counted in the tree */
		idx = u64map_find(&sm->d_idx, cand);
		if (idx && (sm->d[*idx].now || sm->d[*idx].old))
			continue; /* taken or freed in this transaction */
		*block = cand;
		return 0;
	}
	return find_free_block(sm, ALLOC_META, block);
}

static void hot_drop(struct sm *sm, uint64_t block);

/* Make c an sm chunk (rule 4). */
int sm_chunk_set_sm(struct sm *sm, struct mchunk *c)
{
	int r;

	if (c->for_sm)
		return 0;
	r = sm_cvec_insert(&sm->schunks, c, sm->npc);
	if (r < 0)
		return r;
	sm_cvec_remove(&sm->uchunks, c);
	c->for_sm = true;
	hot_drop(sm, c->block);
	sm->s_free += sm->npc - c->busy;
	sm_chunk_freed(sm, c);
	return 0;
}

/*
 * A new chunk (an sm chunk: for_sm), allocated in the pool file first
 * (rule 7).  When the filesystem refuses, a block of the secured set if
 * need (the transaction cannot do without it), else -ENOSPC with
 * *refused set, before anything changed: only then may the caller place
 * its nodes elsewhere.  Any other error (an I/O error may well be
 * -ENOSPC too) is the transaction's and must reach the caller.
 */
static int acquire_chunk(struct sm *sm, bool for_sm, bool need, bool *refused,
			 struct mchunk **out)
{
	struct dentry *e;
	struct mchunk *c;
	uint64_t block;
	int r;

	*refused = false;
	r = for_sm ? find_sm_block(sm, &block)
		   : find_free_block(sm, ALLOC_META, &block);
	if (r < 0)
		return r;
	if (sm_res_has(sm, block)) {
		sm_res_del(sm, block); /* reserved already */
	} else if (sm_reserve_block(sm, block) < 0) {
		if (!need || !sm_res_pop(sm, &block)) {
			*refused = true;
			return -ENOSPC;
		}
	}
	r = sm_d_get(sm, block, true, &e);
	if (r < 0)
		return r;
	r = sm_chunk_add(sm, block, &c);
	if (r < 0)
		return r;
	sm_d_set(sm, e, 1);
	c->record_dirty = true;
	sm_win_note(sm, SM_KEY_CHUNK | block);
	if (sm->in_flush)
		sm->flush_acquired++;
	if (for_sm) {
		r = sm_chunk_set_sm(sm, c);
		if (r < 0)
			return r;
	}
	if (out)
		*out = c;
	return sm_touch(sm, c);
}

/*
 * One more sm chunk with free nodes: a new block next to the others, else
 * (the pool is full, or the filesystem and the chunk is not needed: rule
 * 7) the emptiest other chunk that has room (O(chunks), on a full pool
 * only).  need: the commit's spare nodes are short, not only those of the
 * sm chunks.  -ENOSPC with *no_room set when there was no room (decided
 * without I/O); any other error is the transaction's.
 */
static int grow_sm_chunks(struct sm *sm, bool need, bool *no_room)
{
	struct mchunk *best = NULL;

	*no_room = false;
	/* decided before any I/O: a read error may well be -ENOSPC */
	if (can_allocate(sm, ALLOC_META)) {
		bool refused;
		int r = acquire_chunk(sm, true, need, &refused, NULL);

		if (!refused || need) {
			*no_room = refused;
			return r;
		}
	}
	for (size_t i = 0; i < sm->uchunks.n; i++) {
		struct mchunk *c = sm->uchunks.v[i];

		if (!best || c->busy < best->busy)
			best = c;
	}
	if (!best || best->busy == sm->npc) {
		*no_room = true;
		return -ENOSPC;
	}
	return sm_chunk_set_sm(sm, best);
}

/*
 * Before each change of the sm tree in sm_flush (rule 2): SPARE_NODES
 * free nodes, and SM_SPARE_NODES of them in sm chunks, where the sm
 * tree's nodes go (rule 4).  Only the first is needed to commit: on a full
 * pool the sm tree's nodes may go to other chunks.
 */
int sm_ensure_spare(struct sm *sm)
{
	while (sm->m_free < SPARE_NODES || sm->s_free < SM_SPARE_NODES) {
		bool no_room;
		int r;

		if (sm->m_free >= SPARE_NODES && !can_allocate(sm, ALLOC_META))
			return 0;
		r = grow_sm_chunks(sm, sm->m_free < SPARE_NODES, &no_room);
		if (r < 0 && no_room && sm->m_free >= SPARE_NODES)
			return 0; /* only the sm chunks' share was short */
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- public: data blocks ---- */

int sm_alloc_block(struct sm *sm, uint64_t *block)
{
	const struct tm_hooks *h = tm_hooks(sm->tm);
	struct dentry *e;
	uint64_t b;
	int r = find_free_block(sm, ALLOC_DATA, &b);

	if (r < 0)
		return r;
	r = sm_d_get(sm, b, true, &e);
	if (r < 0)
		return r;
	sm_d_set(sm, e, 1);
	if (h->data)
		h->data(h->ctx, b);
	*block = b;
	return 0;
}

/* ---- public: metadata nodes ---- */

/* Take a free node of chunk c (which has one). */
static int take_node(struct sm *sm, struct mchunk *c, uint64_t *node)
{
	for (uint32_t i = 0; i < sm->npc; i++) {
		int r;

		if (c->cur[i] || c->com[i])
			continue;
		r = sm_set_meta(sm, c, i, 1);
		if (r < 0)
			return r;
		*node = c->block * sm->npc + i;
		return 0;
	}
	return -EUCLEAN; /* busy said otherwise */
}

/* Take a node of hot chunk k (c, which has room). */
static int take_hot(struct sm *sm, struct mchunk *c, unsigned int k,
		    uint64_t *node)
{
	sm->hot_cur = k;
	sm->hot_used++;
	return take_node(sm, c, node);
}

/* Next fit in block order over the other chunks, from the hint, so that
 * the nodes of one transaction lie close together.  -ENOSPC when none
 * has room. */
static int alloc_other(struct sm *sm, uint64_t *node)
{
	struct cvec *v = &sm->uchunks;
	size_t ci = sm_cvec_room_next(v, v->hint);

	if (ci == v->n)
		ci = sm_cvec_room_next(v, 0);
	if (ci == v->n)
		return -ENOSPC;
	v->hint = ci;
	return take_node(sm, v->v[ci], node);
}

/*
 * A free node close to node near (within NEAR_NODES node numbers) in the
 * chunks of v, or -ENOSPC.  A copy placed next to its original has its
 * count in the same leaf of the sm tree as the original's, which the
 * commit changes anyway (rule 4).  O(chunks looked at).
 */
static int alloc_near(struct sm *sm, struct cvec *v, uint64_t near,
		      uint64_t *node)
{
	uint64_t block = near / sm->npc;
	uint64_t span = MAX(1, NEAR_NODES / sm->npc); /* in blocks */
	size_t pos = sm_cvec_pos(v, block);
	size_t lo = pos, hi = pos; /* next candidates: lo - 1, hi */

	while (lo > 0 || hi < v->n) {
		struct mchunk *c = NULL;

		/* the closer of the two neighbours first */
		if (hi < v->n && (!lo || v->v[hi]->block - block <=
					     block - v->v[lo - 1]->block))
			c = v->v[hi++];
		else
			c = v->v[--lo];
		if ((c->block > block ? c->block - block : block - c->block) >
		    span)
			break; /* the other side is farther still */
		if (c->busy < sm->npc)
			return take_node(sm, c, node);
	}
	return -ENOSPC;
}

/* First fit from the top over the sm chunks (none above the hint has
 * room), so the nodes that come and go stay in the highest ones. */
static int alloc_sm(struct sm *sm, uint64_t *node)
{
	struct cvec *v = &sm->schunks;
	size_t ci = sm_cvec_room_prev(v, v->hint);

	if (ci == v->n)
		return -ENOSPC;
	v->hint = ci;
	return take_node(sm, v->v[ci], node);
}

/* Hot chunk k (an ordinary chunk: hot_drop keeps it so). */
static struct mchunk *hot_chunk(const struct sm *sm, unsigned int k)
{
	struct mchunk *c = sm_chunk_find(sm, sm->hot[k]);

	assert(!c || !c->for_sm);
	return c;
}

/* Chunk block is hot no more (it became an sm chunk): an ordinary chunk
 * again in every respect, released when empty. */
static void hot_drop(struct sm *sm, uint64_t block)
{
	for (unsigned int k = 0; k < sm->nr_hot; k++) {
		if (sm->hot[k] != block)
			continue;
		sm->hot[k] = sm->hot[--sm->nr_hot];
		sm->hot_cur = HOT_CHUNKS; /* choose again */
		return;
	}
}

/* How many roomy chunks hot_candidate looks at, at most. */
#define HOT_PROBES 16u

/*
 * The ordinary chunk, not hot, with the fewest free nodes among the first
 * HOT_PROBES roomy ones from the next-fit hint, or NULL when none is
 * roomy.  The fullest: a chunk left with a few long-lived nodes is filled
 * up rather than kept beside an empty one (which is released), so the
 * chunks stay as few as the live nodes need.  O(HOT_PROBES + chunks /
 * 64), on a change of hot chunk only.
 */
static struct mchunk *hot_candidate(struct sm *sm)
{
	struct cvec *v = &sm->uchunks;
	struct mchunk *best = NULL;
	size_t from = v->hint < v->n ? v->hint : 0;
	size_t pos = sm_cvec_next(v, v->roomy, from);
	unsigned int probes = 0;
	bool wrapped = false;

	while (probes < HOT_PROBES) {
		struct mchunk *c;

		if (pos == v->n || (wrapped && pos >= from)) {
			if (wrapped || !from)
				break;
			wrapped = true;
			pos = sm_cvec_next(v, v->roomy, 0);
			continue;
		}
		c = v->v[pos];
		if (!sm_is_hot(sm, c->block)) {
			probes++;
			if (!best || c->busy > best->busy)
				best = c;
		}
		pos = sm_cvec_next(v, v->roomy, pos + 1);
	}
	return best;
}

/*
 * The ordinary chunks have more free nodes than the commit's spare, a hot
 * chunk's room and 1/32 of the nodes in use: no node goes hot, next-fit
 * fills the holes until they are fewer (rule 4).  Many nodes placed hot
 * live long (new leaves, upper nodes the next transactions' paths do not
 * touch), and leave chunks with too few free nodes to be hot, which
 * nothing else fills; without this bound the hot chunks would keep
 * taking new chunks beside them.
 */
static bool hot_fill(const struct sm *sm)
{
	return sm->m_free - sm->s_free >
	       SPARE_NODES + HOT_ROOM(sm->npc) + sm->m_used / 32;
}

/*
 * A node for a copy of a node the previous transaction wrote, or a new
 * one (rule 4): in a hot chunk (the caller checked hot_fill).  A
 * transaction starts on the hot chunk with the most free nodes and stays
 * on it while it has room.  When no hot chunk has HOT_ROOM free nodes,
 * an ordinary one that has (hot_candidate) replaces the fullest hot
 * chunk, which becomes ordinary: its long-lived nodes stay, and it is
 * filled, emptied and released like any other.  Only when no chunk has
 * HOT_ROOM free nodes is a chunk acquired for it; hot_fill bounds how
 * many free nodes the chunks can then hold.  Without one (a full pool),
 * the hot chunks are filled up, then -ENOSPC with *no_room set: place it
 * elsewhere (any other error is the transaction's).  In
 * steady state no chunk is acquired or released: the hot nodes of
 * transaction t are copied again by t + 1, so their chunk has room again
 * from t + 2 on (and is kept: release_empty_chunks skips hot chunks).
 */
static int alloc_hot(struct sm *sm, uint64_t *node, bool *no_room)
{
	struct mchunk *c = sm->hot_cur < sm->nr_hot && sm->hot_used
			       ? hot_chunk(sm, sm->hot_cur)
			       : NULL;
	unsigned int best = 0, worst = 0;
	uint32_t best_free = 0, worst_free = UINT32_MAX;
	int r;

	*no_room = false;
	if (c && c->busy < sm->npc)
		return take_hot(sm, c, sm->hot_cur, node);
	c = NULL;
	for (unsigned int k = 0; k < sm->nr_hot; k++) {
		struct mchunk *h = hot_chunk(sm, k);
		uint32_t nfree = h ? sm->npc - h->busy : 0;

		if (nfree > best_free) {
			best = k;
			best_free = nfree;
			c = h;
		}
		if (nfree < worst_free) {
			worst = k;
			worst_free = nfree;
		}
	}
	if (best_free < HOT_ROOM(sm->npc)) {
		struct mchunk *n = hot_candidate(sm);

		/* decided before any I/O: a read error may well be -ENOSPC */
		if (!n && can_allocate(sm, ALLOC_META)) {
			/* a hot chunk is a placement, not a need (rule 7);
			 * an I/O error is the transaction's, never a reason
			 * to place the node elsewhere */
			bool refused;

			r = acquire_chunk(sm, false, false, &refused, &n);
			if (r < 0 && !refused)
				return r;
		}
		if (n) {
			best = sm->nr_hot < HOT_CHUNKS ? sm->nr_hot++ : worst;
			sm->hot[best] = n->block;
			c = n;
		}
	}
	if (!c) {
		*no_room = true;
		return -ENOSPC;
	}
	return take_hot(sm, c, best, node);
}

int sm_alloc_node(struct sm *sm, uint64_t near, uint64_t *node)
{
	struct mchunk *nc = NULL;
	bool refused, no_room;
	uint32_t ni;
	int r;

	if (near)
		nc = sm_chunk_of_node(sm, near, &ni);
	if (sm->in_flush) {
		/* the sm tree's own nodes (rule 4): sm_ensure_spare made
		 * room */
		if (!sm->m_free) {
			log_error("space map: spare metadata nodes exhausted "
				  "during commit");
			return -ENOSPC;
		}
		r = nc && nc->for_sm ? alloc_near(sm, &sm->schunks, near, node)
				     : -ENOSPC;
		if (r == -ENOSPC)
			r = alloc_sm(sm, node);
		if (r == -ENOSPC) /* a full pool: anywhere */
			r = alloc_other(sm, node);
		goto out;
	}
	if (nc && !nc->for_sm && sm->m_free > sm->s_free) {
		r = alloc_near(sm, &sm->uchunks, near, node);
		if (r != -ENOSPC)
			return r;
	}
	if (sm->m_free == sm->s_free) {
		/* a full pool: the sm chunks' nodes are nodes too (the commit
		 * may take its spare nodes from the reserve) */
		if (sm->s_free && !can_allocate(sm, ALLOC_META)) {
			r = alloc_sm(sm, node);
			goto out;
		}
		r = acquire_chunk(sm, false, true, &refused, NULL);
		if (r < 0)
			return r;
	}
	if (!near && sm->npc >= HOT_MIN_NPC &&
	    sm->hot_used < HOT_MAX(sm->npc) && !hot_fill(sm)) {
		r = alloc_hot(sm, node, &no_room);
		if (r == 0 || !no_room)
			return r;
	}
	r = alloc_other(sm, node);
out:
	if (r == -ENOSPC || r == -EUCLEAN) {
		log_error("space map: %" PRIu64 " metadata nodes counted free "
			  "but none found",
			  sm->m_free);
		r = -EUCLEAN;
	}
	return r;
}

/*
 * At open (load): chunk c, ordinary and roomy, becomes hot if it has more
 * nodes in use than one of the HOT_CHUNKS hot ones.  The hot chunks of
 * the last session hold its last hot nodes (not empty, then), and may
 * hold long-lived ones: the fullest chunks that have room enough are hot
 * (as in hot_candidate), rather than empty ones, which are released
 * (rule 4).
 */
void sm_hot_offer(struct sm *sm, const struct mchunk *c)
{
	unsigned int least = 0;
	uint32_t least_busy = UINT32_MAX;

	if (sm->nr_hot < HOT_CHUNKS) {
		sm->hot[sm->nr_hot++] = c->block;
		return;
	}
	for (unsigned int k = 0; k < sm->nr_hot; k++) {
		const struct mchunk *h = sm_chunk_find(sm, sm->hot[k]);

		if (h->busy < least_busy) {
			least = k;
			least_busy = h->busy;
		}
	}
	if (c->busy > least_busy)
		sm->hot[least] = c->block;
}
