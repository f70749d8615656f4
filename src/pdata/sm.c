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
 *      cannot alternate between acquiring and releasing.  Only chunks
 *      touched in the transaction, or found empty at the last commit or at
 *      open, are looked at: O(touched), not O(chunks).
 *   4. Placement.  Every node a transaction copies changes two counts in
 *      the sm tree (the copy's, 0 -> 1, the original's, 1 -> 0), each in
 *      the leaf that covers its node number; every sm leaf changed is
 *      copied in turn, which changes counts again, until sm_flush
 *      converges.  So the cost of a commit is the number of distinct sm
 *      leaves these counts fall in, and placement decides it:
 *        - the sm tree's own nodes (all allocated in sm_flush) live in
 *          chunks of their own, the "sm chunks", which sit together below
 *          the top of the pool and are filled first-fit from the top (or
 *          next to the original);
 *        - a copy goes next to its original (within NEAR_NODES), so both
 *          counts fall in one leaf, unless the original was written by the
 *          previous transaction (a root or an upper level, copied by every
 *          change): those, and new nodes, go to the "hot chunks" (up to
 *          HOT_MAX a transaction, then next-fit in block order).  A
 *          transaction fills the hot chunk with the most free nodes, so
 *          its hot nodes share one or two chunks, and so do their
 *          originals (the previous transaction's hot nodes): their counts
 *          fall in a leaf or two.  Those originals are freed at once
 *          (every change copies them again), so HOT_CHUNKS chunks take
 *          turns, and no chunk is acquired or released for them in
 *          steady state: hot chunks are never released while hot.  (Next-
 *          fit over the single free nodes a big pool is riddled with
 *          spread them over a leaf each.)  But many nodes placed hot live
 *          long (new leaves; upper nodes the next paths do not touch), so
 *          hot chunks do not empty: a chunk becomes hot only with
 *          HOT_ROOM free nodes, the fullest such chunk first (at open
 *          too), and one is acquired for it only when no chunk has that
 *          room; when the ordinary chunks hold more free nodes than the
 *          spare, a hot chunk's room and 1/32 of the nodes in use
 *          (hot_fill), next-fit places these nodes, filling the holes.
 *          So the metadata is at most ~3% bigger than the live nodes and
 *          the spare need, whatever the nodes' lifetimes.
 *      When the sm tree's nodes were spread over all the metadata, the
 *      cascade copied about a third of the sm leaves: one volume created,
 *      snapshotted or deleted at 10^6 volumes wrote ~100-260 nodes; with
 *      the sm chunks ~35-60, with the hot chunks ~22-28
 *      (bench/README.md).  Placement lives in memory only, not in the
 *      format: at open, the chunks that hold sm tree nodes (those load()
 *      reads) are sm chunks.
 *   5. sm_flush writes counts in key order where it can (data counts
 *      sorted, chunks by block), through one btree hint (btree.h), so
 *      that the counts that share a leaf are written into it without a
 *      descent from the root each.
 *   6. What a commit needs.  sm_flush copies every sm tree leaf that holds
 *      a count the transaction changed, and the path above it, and may
 *      split or merge leaves; every node it copies is a new node, and the
 *      only place left for new nodes when the pool is full is the
 *      reserve.  So the transaction keeps the set of windows of SM_WINDOW
 *      keys that its changed counts fall in (data counts, node counts,
 *      chunk records): no leaf but the root holds fewer keys than a
 *      window, so a window meets at most two leaves; the empty chunks the
 *      commit releases (rule 3) count two windows each (their records
 *      and data counts).  sm_commit_need turns that into blocks: 2 nodes
 *      per window, plus NEED_SLACK_NODES
 *      (the spare nodes ensure_spare keeps free, a path to the root), in
 *      whole chunks: a commit takes its nodes from sm chunks it acquires
 *      while the pool has free blocks.  The levels above the leaves (a
 *      node per SM_WINDOW leaves), splits and merges (they need keys
 *      added or removed, not counts changed) and the copies of its own
 *      copies (whose counts rule 4 keeps in few leaves) are not counted
 *      one by one: measured, commits of random and sequential changes,
 *      trims, snapshots and deletes on 4 KiB and 64 KiB blocks take 0.2
 *      to 0.7 nodes per window, and sm_flush counts (need_exceeded) and
 *      logs any commit that takes more blocks than estimated; the tests
 *      fail on it.  The engine keeps every transaction within what its
 *      commit can get (sm_room; pool.c, rule 2), so a commit does not
 *      fail for lack of space.
 *   7. Room in the pool file (a device with IO_DEV_SPARSE: a file, whose
 *      holes a full filesystem refuses to fill).  A commit writes nodes
 *      only where the file has room for them already, so that a full
 *      filesystem refuses new data (ENOSPC to the writer) while commits
 *      pass:
 *        - a block becomes a chunk only once it is allocated in the file
 *          (io_reserve, fallocate KEEP_SIZE, unsharing blocks a reflinked
 *          copy shares: reserve_block), and a chunk found at open is
 *          allocated there again (load_secure), as are the superblocks,
 *          which every commit overwrites (secure_superblocks); one
 *          that cannot be has its free nodes left unused ("unsecured":
 *          counted busy) until it is emptied and released;
 *        - free blocks reserved ahead, the secured set: before each
 *          change the engine asks sm_secure to hold as many as the change
 *          and then the commit may take as new chunks (rule 6's estimate,
 *          as sm_room counts them), plus a floor by kind (writes of new
 *          data leave two fresh commits' worth, other metadata one,
 *          what frees space none), reserving more while the filesystem
 *          has room; when it has none and the set is short, the change
 *          is refused before it begins (-ENOSPC);
 *        - a chunk the space map must take when the filesystem is full
 *          (its reservation failed) is a block of the secured set; one it
 *          may do without (a hot chunk, more sm chunks than the commit
 *          needs) is not taken then, and only that refusal (known
 *          before anything changed: acquire_chunk's *refused) sends its
 *          nodes elsewhere: any other error, -ENOSPC from a failed read
 *          included, is the transaction's;
 *        - secured blocks are free: data is allocated elsewhere while any
 *          other block is free, the hole puncher leaves them alone, an
 *          abort keeps them, and closing the pool punches them out.
 *      A filesystem without fallocate (EOPNOTSUPP) gets none of this: its
 *      chunks are allocated as their nodes are written; nor does a file
 *      copied on every overwrite (btrfs without nocow: IO_DEV_FS_COW,
 *      warned about), nor blocks a reflinked copy made while the pool is
 *      open shares (until the next open unshares them).
 */
#include "pdata/sm.h"

#include <assert.h>
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
/* Of those, kept in sm chunks (rule 4) when the pool has room: a quarter,
 * so that a small pool does not hold a chunk more for it. */
#define SM_SPARE_NODES 16u
/* Empty chunks that the next commit looks at again (to release them, or
 * keep them as spare): more than a commit's spare nodes fill, even with
 * one node a chunk; beyond that, they wait until they are touched. */
#define KEPT_MAX (2 * SPARE_NODES)
/* How far from its original a copy is placed, at most (rule 4). */
#define NEAR_NODES 64u
/* Hot chunks (rule 4): how many, the smallest chunk (in nodes) worth it,
 * how many nodes a transaction places there at most, and the free nodes
 * a chunk needs to become hot, below which a transaction starts on
 * another (with big blocks one chunk holds the hot nodes of many
 * transactions: no more is taken). */
#define HOT_CHUNKS 3u
#define HOT_MIN_NPC 8u
#define HOT_MAX(npc) MIN(2u * (npc), 64u)
#define HOT_ROOM(npc) MIN((npc) / 2, 32u)
#define FREED_MAX (1u << 20)
/* Rule 6: the fewest entries an sm tree leaf other than the root holds
 * (a quarter of what fits: 8-byte keys, 4-byte counts), so that W
 * consecutive keys fall in at most two leaves. */
#define SM_WINDOW ((PD_NODE_SIZE - BTREE_HEADER_SIZE) / 12 / 4)
/* Rule 6: nodes a commit may need besides 2 per window: the spare nodes
 * ensure_spare keeps free while it runs (SPARE_NODES in all, of which
 * SM_SPARE_NODES in sm chunks), and a path to the root. */
#define NEED_SLACK_NODES (SPARE_NODES + SM_SPARE_NODES + 16)

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
	bool for_sm;	   /* an sm chunk (rule 4) */
	bool unsecured;	   /* rule 7: not allocated in the file; busy is
			    * npc, so no node of it is handed out */
	uint32_t pos;	   /* position in its cvec, when last known */
};

/* Chunks sorted by block, with an allocation position: for the others
 * the next-fit position, for sm chunks the highest that may have a free
 * node (none above it has).  room has bit i set when chunk v[i] has a
 * node that is neither used nor freed in this transaction (busy < npc),
 * so that the allocators skip full chunks a word at a time instead of
 * reading every chunk (tens of thousands in a big pool); roomy, when it
 * has at least HOT_ROOM such nodes (a candidate hot chunk, rule 4). */
struct cvec {
	struct mchunk **v;
	size_t n, cap;
	size_t hint;
	uint64_t *room;	 /* cap bits */
	uint64_t *roomy; /* cap bits */
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

	/* metadata chunks: sm chunks (rule 4) and the others, each sorted
	 * by block */
	struct cvec schunks, uchunks;
	size_t nr_chunks;
	struct u64map chunk_idx; /* block -> struct mchunk * */
	uint64_t m_used; /* nodes with cur > 0 */
	uint64_t m_free; /* allocatable nodes in chunks */
	uint64_t s_free; /* allocatable nodes in schunks (part of m_free) */
	uint64_t *touched; /* blocks of touched chunks */
	size_t nr_touched, cap_touched;
	uint64_t nr_empty_touched; /* of those, with no node in use */
	/* chunks empty at the last commit, looked at again by the next */
	uint64_t kept[KEPT_MAX];
	size_t nr_kept;

	/* data blocks touched in this transaction */
	struct dentry *d;
	size_t nr_d, cap_d;
	struct u64map d_idx; /* block -> index in d */
	uint64_t d_used;     /* blocks with a current count > 0 */
	uint64_t d_pending;  /* committed > 0, current == 0 */
	uint64_t d_hint;

	uint64_t *freed;
	size_t nr_freed, cap_freed;

	/* rule 6: the windows of the counts this transaction changed */
	struct u64map win;
	bool win_lost; /* out of memory: assume the worst */
	uint64_t flush_acquired; /* blocks acquired by the running sm_flush */
	uint64_t need_exceeded;	 /* commits that took more (statistics) */

	uint64_t flush_rounds, flush_tree_ops; /* statistics */
	/* sm_flush's changes go through one hint: consecutive counts mostly
	 * share a leaf (btree.h) */
	struct btree_hint hint;

	/* hot chunks (rule 4): blocks, the one in use, nodes placed there
	 * in this transaction */
	uint64_t hot[HOT_CHUNKS];
	unsigned int nr_hot, hot_cur;
	uint32_t hot_used;

	/* rule 7: whether the device needs room reserved, and the secured
	 * set (free blocks reserved in the file): res[], its index, where
	 * sm_secure looks next */
	bool fs_room;
	bool fs_full; /* the last reservation failed */
	uint64_t *res;
	size_t nr_res, cap_res;
	struct u64map res_idx; /* block -> index in res */
	uint64_t res_hint;
};

static void key_of(uint8_t k[8], uint64_t v)
{
	put_be64(k, v);
}

/* ---- chunks ---- */

static struct mchunk *chunk_find(const struct sm *sm, uint64_t block)
{
	uint64_t *v = u64map_find(&sm->chunk_idx, block);

	return v ? (struct mchunk *)(uintptr_t)*v : NULL;
}

bool sm_is_chunk(const struct sm *sm, uint64_t block)
{
	return chunk_find(sm, block) != NULL;
}

static struct mchunk *chunk_of_node(const struct sm *sm, uint64_t node,
				    uint32_t *index)
{
	struct mchunk *c = chunk_find(sm, node / sm->npc);

	if (c)
		*index = (uint32_t)(node % sm->npc);
	return c;
}

/* Allocatable nodes of c changed by delta: keep m_free and s_free. */
static void free_add(struct sm *sm, const struct mchunk *c, int64_t delta)
{
	sm->m_free += (uint64_t)delta;
	if (c->for_sm)
		sm->s_free += (uint64_t)delta;
}

/* First position in v whose block is >= block. */
static size_t cvec_pos(const struct cvec *v, uint64_t block)
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

/* Chunk c (busy nodes: busy) has room; is roomy (rule 4). */
static bool has_room(uint32_t busy, uint32_t npc)
{
	return busy < npc;
}

static bool is_roomy(uint32_t busy, uint32_t npc)
{
	return npc - busy >= HOT_ROOM(npc);
}

static void room_set(struct cvec *v, size_t pos, uint32_t busy, uint32_t npc)
{
	bit_set(v->room, pos, has_room(busy, npc));
	bit_set(v->roomy, pos, is_roomy(busy, npc));
}

/* Recompute every room bit (at open). */
static void room_rebuild(struct cvec *v, uint32_t npc)
{
	for (size_t i = 0; i < v->n; i++)
		room_set(v, i, v->v[i]->busy, npc);
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
	w[k] = low | ((w[k] & ~((1ull << b) - 1)) << 1) |
	       ((uint64_t)room << b);
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
static size_t bits_next(const struct cvec *v, const uint64_t *bits,
			size_t from)
{
	size_t w = from / 64;
	uint64_t m;

	if (from >= v->n)
		return v->n;
	m = bits[w] & (~0ull << (from % 64));
	for (;;) {
		if (m) {
			size_t pos = w * 64 + (size_t)__builtin_ctzll(m);

			return pos < v->n ? pos : v->n;
		}
		if (++w * 64 >= v->n)
			return v->n;
		m = bits[w];
	}
}

static size_t room_next(const struct cvec *v, size_t from)
{
	return bits_next(v, v->room, from);
}

/* Last position <= from with room, or v->n when none. */
static size_t room_prev(const struct cvec *v, size_t from)
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
			return w * 64 + 63 - (size_t)__builtin_clzll(m);
		if (!w--)
			return v->n;
		m = v->room[w];
	}
}

/* O(n) memmove, but chunks come and go rarely (and mostly at the end). */
static int cvec_insert(struct cvec *v, struct mchunk *c, uint32_t npc)
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
	pos = cvec_pos(v, c->block);
	memmove(v->v + pos + 1, v->v + pos, (v->n - pos) * sizeof(*v->v));
	v->v[pos] = c;
	c->pos = (uint32_t)pos;
	if (v->n && pos <= v->hint)
		v->hint++; /* keep it on the same chunk */
	bits_insert(v->room, v->n, pos, has_room(c->busy, npc));
	bits_insert(v->roomy, v->n, pos, is_roomy(c->busy, npc));
	v->n++;
	return 0;
}

static void cvec_remove(struct cvec *v, const struct mchunk *c)
{
	size_t pos = cvec_pos(v, c->block);

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

/* c->busy changed: keep its room and roomy bits. */
static void room_update(struct sm *sm, struct mchunk *c);

static void chunk_free(struct mchunk *c)
{
	if (!c)
		return;
	free(c->cur);
	free(c->com);
	free(c->dirty);
	free(c);
}

static void room_update(struct sm *sm, struct mchunk *c)
{
	struct cvec *v = c->for_sm ? &sm->schunks : &sm->uchunks;
	size_t pos = c->pos;

	/* the position moves when chunks are added or removed before it:
	 * look it up again then (O(log n)) */
	if (pos >= v->n || v->v[pos] != c) {
		pos = cvec_pos(v, c->block);
		/* a chunk being released is in no vector any more */
		if (pos >= v->n || v->v[pos] != c)
			return;
		c->pos = (uint32_t)pos;
	}
	room_set(v, pos, c->busy, sm->npc);
}

/* Sm chunk c may have a free node now: raise schunks' hint to it. */
static void sm_chunk_freed(struct sm *sm, const struct mchunk *c)
{
	size_t pos;

	if (!c->for_sm)
		return;
	pos = cvec_pos(&sm->schunks, c->block);
	if (pos > sm->schunks.hint)
		sm->schunks.hint = pos;
}

/* The layer above learns of a chunk (tm.h, struct tm_hooks). */
static void hook_chunk(struct sm *sm, uint64_t block)
{
	const struct tm_hooks *h = tm_hooks(sm->tm);

	if (h->chunk)
		h->chunk(h->ctx, block);
}

/* A new chunk at block (not an sm chunk). */
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
	r = u64map_put(&sm->chunk_idx, block, (uint64_t)(uintptr_t)c);
	if (r < 0)
		goto fail;
	r = cvec_insert(&sm->uchunks, c, sm->npc);
	if (r < 0) {
		u64map_del(&sm->chunk_idx, block);
		goto fail;
	}
	sm->nr_chunks++;
	free_add(sm, c, sm->npc);
	hook_chunk(sm, block);
	*out = c;
	return 0;
fail:
	chunk_free(c);
	return r;
}

/* Remove c from the allocator; c stays allocated. */
static void chunk_unlink(struct sm *sm, struct mchunk *c)
{
	u64map_del(&sm->chunk_idx, c->block);
	cvec_remove(c->for_sm ? &sm->schunks : &sm->uchunks, c);
	sm->nr_chunks--;
	free_add(sm, c, -(int64_t)(sm->npc - c->busy));
}

static void hot_drop(struct sm *sm, uint64_t block);

/* Make c an sm chunk (rule 4). */
static int chunk_set_sm(struct sm *sm, struct mchunk *c)
{
	int r;

	if (c->for_sm)
		return 0;
	r = cvec_insert(&sm->schunks, c, sm->npc);
	if (r < 0)
		return r;
	cvec_remove(&sm->uchunks, c);
	c->for_sm = true;
	hot_drop(sm, c->block);
	sm->s_free += sm->npc - c->busy;
	sm_chunk_freed(sm, c);
	return 0;
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
	if (!c->used_cur)
		sm->nr_empty_touched++;
	return 0;
}

/* Rule 6: a count under key changes in this transaction. */
static void win_note(struct sm *sm, uint64_t key)
{
	if (!sm->in_flush && u64map_put(&sm->win, key / SM_WINDOW, 1) < 0)
		sm->win_lost = true;
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
		if (!c->used_cur++)
			sm->nr_empty_touched--;
		sm->m_used++;
	} else if (was && !v) {
		if (!--c->used_cur)
			sm->nr_empty_touched++;
		sm->m_used--;
	}
	/* the bits change only at two thresholds: no update otherwise; an
	 * unsecured chunk stays busy (rule 7) */
	if (c->unsecured) {
		/* nothing: its free nodes are not handed out */
	} else if (!busy_before && busy_after) {
		c->busy++;
		free_add(sm, c, -1);
		if (c->busy == sm->npc ||
		    sm->npc - c->busy == HOT_ROOM(sm->npc) - 1)
			room_update(sm, c);
	} else if (busy_before && !busy_after) {
		c->busy--;
		free_add(sm, c, 1);
		sm_chunk_freed(sm, c);
		if (c->busy == sm->npc - 1 ||
		    sm->npc - c->busy == HOT_ROOM(sm->npc))
			room_update(sm, c);
	}
	c->dirty[i / 64] |= 1ull << (i % 64);
	win_note(sm, SM_KEY_META | (c->block * sm->npc + i));
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
	win_note(sm, e->block);
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
 * Find a free block in [lo, hi): not in the tree, not touched now, and
 * with skip_res not in the secured set (rule 7).  *found is set only if
 * one was found; errors are the tree's (an I/O error may well be -ENOSPC,
 * so "none here" is not an error code).
 */
static bool res_has(const struct sm *sm, uint64_t block);

static int scan_range(struct sm *sm, uint64_t lo, uint64_t hi, bool skip_res,
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
		    (skip_res && res_has(sm, cand))) {
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

static bool can_allocate(const struct sm *sm, enum alloc_kind kind)
{
	uint64_t limit = 0;

	if (!sm->reserve_mode && !sm->in_flush)
		limit = kind == ALLOC_DATA ? 2 * sm->reserve : sm->reserve;
	return allocatable(sm) > limit;
}

static bool res_pop(struct sm *sm, uint64_t *block);

/* A free block, next-fit; data goes where no block of the secured set is
 * (rule 7) while there is such a place, a chunk anywhere (a secured
 * block is one the chunk need not reserve). */
static int find_free_block(struct sm *sm, enum alloc_kind kind,
			   uint64_t *block)
{
	bool skip = kind == ALLOC_DATA && sm->nr_res;
	uint64_t avail = allocatable(sm);
	uint64_t hint = sm->d_hint;
	bool ok;
	int r;

	if (!can_allocate(sm, kind))
		return -ENOSPC;
	if (hint < sm->first_block || hint >= sm->nr_blocks)
		hint = sm->first_block;
	r = scan_range(sm, hint, sm->nr_blocks, skip, &ok, block);
	if (r == 0 && !ok && hint > sm->first_block)
		r = scan_range(sm, sm->first_block, hint, skip, &ok, block);
	if (r < 0)
		return r;
	if (!ok && skip && res_pop(sm, block)) {
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
	uint64_t cand = sm->schunks.n ? sm->schunks.v[0]->block
				      : sm->nr_blocks;

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

/* ---- rule 7: room in the pool file ---- */

static bool res_has(const struct sm *sm, uint64_t block)
{
	return u64map_find(&sm->res_idx, block) != NULL;
}

static int res_add(struct sm *sm, uint64_t block)
{
	int r;

	if (sm->nr_res == sm->cap_res) {
		size_t cap = sm->cap_res ? sm->cap_res * 2 : 64;
		uint64_t *v = realloc(sm->res, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		sm->res = v;
		sm->cap_res = cap;
	}
	r = u64map_put(&sm->res_idx, block, sm->nr_res);
	if (r < 0)
		return r;
	sm->res[sm->nr_res++] = block;
	return 0;
}

static void res_del(struct sm *sm, uint64_t block)
{
	uint64_t *i = u64map_find(&sm->res_idx, block);
	uint64_t last;

	if (!i)
		return;
	last = sm->res[--sm->nr_res];
	if (last != block) {
		sm->res[*i] = last;
		u64map_put(&sm->res_idx, last, *i); /* updates: no memory */
	}
	u64map_del(&sm->res_idx, block);
}

/* A block of the secured set, taken out of it; false when it is empty. */
static bool res_pop(struct sm *sm, uint64_t *block)
{
	if (!sm->nr_res)
		return false;
	*block = sm->res[sm->nr_res - 1];
	res_del(sm, *block);
	return true;
}

/*
 * Allocate block in the pool file (rule 7): 0 when done or when the
 * device needs nothing; the filesystem's error (-ENOSPC when full).  A
 * filesystem without fallocate turns rule 7 off.
 */
static int reserve_block(struct sm *sm, uint64_t block)
{
	uint64_t bs = (uint64_t)sm->npc * PD_NODE_SIZE;
	int r;

	if (!sm->fs_room)
		return 0;
	r = io_reserve(tm_dev(sm->tm), block * bs, bs);
	if (r == -EOPNOTSUPP) {
		log_info("%s: the filesystem cannot reserve room (fallocate): "
			 "a commit may fail when it is full",
			 tm_dev(sm->tm)->name);
		sm->fs_room = false;
		return 0;
	}
	if (r < 0)
		log_debug("space map: reserving block %" PRIu64 ": %s", block,
			  strerror(-r));
	return r;
}

/*
 * Rule 7: every commit writes a superblock in place, so its room is taken
 * at open as a chunk's is (after a reflinked copy of the pool on XFS it is
 * shared; see io_reserve).  When the filesystem refuses, said: nothing
 * else can be done about it here.
 */
static void secure_superblocks(struct sm *sm)
{
	int r;

	if (!sm->fs_room)
		return;
	r = io_reserve(tm_dev(sm->tm), 0, 2 * PD_NODE_SIZE);
	if (r < 0 && r != -EOPNOTSUPP)
		log_warn("%s: reserving room for the superblocks: %s: a "
			 "commit may fail while the filesystem is full",
			 tm_dev(sm->tm)->name, strerror(-r));
}

/*
 * Rule 7: chunks found at open that have free nodes are allocated in the
 * file again (a sparse copy of the pool, or an older thinvol, may have
 * left holes there), a run of neighbours at a time; a chunk that cannot
 * be is unsecured: its free nodes are not handed out.  Where another file
 * may share the pool file's blocks (IO_DEV_FS_SHARING: a reflinked copy
 * on XFS), full chunks too: their nodes, once freed, are written again in
 * place, and io_reserve unshares them.
 */
static void secure_chunks(struct sm *sm, struct cvec *v)
{
	uint64_t bs = (uint64_t)sm->npc * PD_NODE_SIZE;
	bool all = tm_dev(sm->tm)->flags & IO_DEV_FS_SHARING;

	for (size_t i = 0; i < v->n && sm->fs_room;) {
		size_t j = i;
		int r;

		if (v->v[i]->busy == sm->npc && !all) {
			i++;
			continue;
		}
		while (j + 1 < v->n && v->v[j + 1]->block == v->v[j]->block + 1 &&
		       (all || v->v[j + 1]->busy < sm->npc))
			j++;
		r = io_reserve(tm_dev(sm->tm), v->v[i]->block * bs,
			       (v->v[j]->block - v->v[i]->block + 1) * bs);
		for (size_t k = i; r < 0 && k <= j && sm->fs_room; k++) {
			struct mchunk *c = v->v[k];

			if (reserve_block(sm, c->block) == 0)
				continue;
			c->unsecured = true;
			free_add(sm, c, -(int64_t)(sm->npc - c->busy));
			c->busy = sm->npc;
			room_set(v, k, c->busy, sm->npc);
		}
		i = j + 1;
	}
}

/*
 * A new chunk (an sm chunk: for_sm), allocated in the pool file first
 * (rule 7).  When the filesystem refuses, a block of the secured set if
 * need (the transaction cannot do without it), else -ENOSPC with
 * *refused set, before anything changed: only then may the caller place
 * its nodes elsewhere.  Any other error (an I/O error may well be
 * -ENOSPC too) is the transaction's and must reach the caller.
 */
static int acquire_chunk(struct sm *sm, bool for_sm, bool need,
			 bool *refused, struct mchunk **out)
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
	if (res_has(sm, block)) {
		res_del(sm, block); /* reserved already */
	} else if (reserve_block(sm, block) < 0) {
		if (!need || !res_pop(sm, &block)) {
			*refused = true;
			return -ENOSPC;
		}
	}
	r = d_get(sm, block, true, &e);
	if (r < 0)
		return r;
	r = chunk_add(sm, block, &c);
	if (r < 0)
		return r;
	d_set(sm, e, 1);
	c->record_dirty = true;
	win_note(sm, SM_KEY_CHUNK | block);
	if (sm->in_flush)
		sm->flush_acquired++;
	if (for_sm) {
		r = chunk_set_sm(sm, c);
		if (r < 0)
			return r;
	}
	if (out)
		*out = c;
	return touch(sm, c);
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
	return chunk_set_sm(sm, best);
}

/*
 * Before each change of the sm tree in sm_flush (rule 2): SPARE_NODES
 * free nodes, and SM_SPARE_NODES of them in sm chunks, where the sm
 * tree's nodes go (rule 4).  Only the first is needed to commit: on a full
 * pool the sm tree's nodes may go to other chunks.
 */
static int ensure_spare(struct sm *sm)
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
	r = d_get(sm, b, true, &e);
	if (r < 0)
		return r;
	d_set(sm, e, 1);
	if (h->data)
		h->data(h->ctx, b);
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

/* How far sm_block_counts steps a cursor before it seeks instead. */
#define COUNTS_STEPS 8

static uint64_t cursor_at(const struct btree_cursor *c)
{
	return c->valid ? get_be64(btree_cursor_key(c)) : UINT64_MAX;
}

int sm_block_counts(struct sm *sm, const uint64_t *blocks, size_t n,
		    uint32_t *counts)
{
	/* the keys in [lo, at) are not in the tree; the cursor is on at
	 * (UINT64_MAX: past the last key) */
	uint64_t lo = 0, at = 0;
	struct btree_cursor c;
	bool open = false;
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t b = blocks[i];
		unsigned int steps = 0;
		struct dentry *e;

		r = check_block(sm, b);
		if (r == 0)
			r = d_get(sm, b, false, &e);
		if (r < 0)
			break;
		if (e) {
			counts[i] = e->now;
			continue;
		}
		/* a few entries on from where the cursor is (blocks mapped
		 * in a row are counted in a row), else a descent */
		while (open && b > at && steps++ < COUNTS_STEPS) {
			lo = at + 1;
			r = btree_cursor_next(&c);
			if (r < 0)
				goto out;
			at = cursor_at(&c);
		}
		if (!open || b < lo || b > at) {
			uint8_t k[8];

			if (open)
				btree_cursor_close(&c);
			key_of(k, b);
			r = btree_cursor_seek(&sm->info, &sm->root, k, &c);
			open = true;
			if (r < 0)
				goto out;
			lo = b;
			at = cursor_at(&c);
		}
		counts[i] = at == b ? get_le32(btree_cursor_value(&c)) : 0;
	}
out:
	if (open)
		btree_cursor_close(&c);
	return r;
}

/* ---- public: metadata nodes ---- */

/* Take a free node of chunk c (which has one). */
static int take_node(struct sm *sm, struct mchunk *c, uint64_t *node)
{
	for (uint32_t i = 0; i < sm->npc; i++) {
		int r;

		if (c->cur[i] || c->com[i])
			continue;
		r = set_meta(sm, c, i, 1);
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
	size_t ci = room_next(v, v->hint);

	if (ci == v->n)
		ci = room_next(v, 0);
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
	size_t pos = cvec_pos(v, block);
	size_t lo = pos, hi = pos; /* next candidates: lo - 1, hi */

	while (lo > 0 || hi < v->n) {
		struct mchunk *c = NULL;

		/* the closer of the two neighbours first */
		if (hi < v->n &&
		    (!lo || v->v[hi]->block - block <= block - v->v[lo - 1]->block))
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
	size_t ci = room_prev(v, v->hint);

	if (ci == v->n)
		return -ENOSPC;
	v->hint = ci;
	return take_node(sm, v->v[ci], node);
}

static bool is_hot(const struct sm *sm, uint64_t block)
{
	for (unsigned int k = 0; k < sm->nr_hot; k++)
		if (sm->hot[k] == block)
			return true;
	return false;
}

/* Hot chunk k (an ordinary chunk: hot_drop keeps it so). */
static struct mchunk *hot_chunk(const struct sm *sm, unsigned int k)
{
	struct mchunk *c = chunk_find(sm, sm->hot[k]);

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
	size_t pos = bits_next(v, v->roomy, from);
	unsigned int probes = 0;
	bool wrapped = false;

	while (probes < HOT_PROBES) {
		struct mchunk *c;

		if (pos == v->n || (wrapped && pos >= from)) {
			if (wrapped || !from)
				break;
			wrapped = true;
			pos = bits_next(v, v->roomy, 0);
			continue;
		}
		c = v->v[pos];
		if (!is_hot(sm, c->block)) {
			probes++;
			if (!best || c->busy > best->busy)
				best = c;
		}
		pos = bits_next(v, v->roomy, pos + 1);
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
		nc = chunk_of_node(sm, near, &ni);
	if (sm->in_flush) {
		/* the sm tree's own nodes (rule 4); ensure_spare made room */
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
			  "but none found", sm->m_free);
		r = -EUCLEAN;
	}
	return r;
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
	sm->flush_tree_ops++;
	key_of(k, key);
	if (!count) {
		r = btree_remove_hinted(&sm->info, &sm->root, &sm->hint, k,
					NULL);
		return r == -ENOENT ? 0 : r;
	}
	put_le32(v, count);
	return btree_put_hinted(&sm->info, &sm->root, &sm->hint, k, v, NULL);
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

/*
 * Release the chunks this transaction emptied (no node in use), keeping
 * the spare nodes ensure_spare wants.  Only touched chunks can have
 * become empty, so this costs O(touched), not O(chunks); a chunk kept as
 * spare is looked at again when it is next touched.
 */
static int release_empty_chunks(struct sm *sm)
{
	size_t nkept = sm->nr_kept;

	/* the empty chunks of the last commit are looked at again */
	sm->nr_kept = 0;
	for (size_t k = 0; k < nkept; k++) {
		struct mchunk *c = chunk_find(sm, sm->kept[k]);
		int r = c && !c->used_cur ? touch(sm, c) : 0;

		if (r < 0)
			return r;
	}
	/* touch() may append while we go: index, and re-read the length */
	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = chunk_find(sm, sm->touched[t]);
		uint64_t nfree = c ? sm->npc - c->busy : 0;
		struct dentry *e;
		bool progress = false;
		int r;

		/* an empty chunk kept as spare is kept (sm_committed), and
		 * so is a hot one (rule 4) */
		if (!c || c->used_cur || is_hot(sm, c->block) ||
		    sm->m_free - nfree < SPARE_NODES ||
		    (c->for_sm && sm->s_free - nfree < SM_SPARE_NODES))
			continue;
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

	/* chunk records, then node counts, in block order: the counts of
	 * neighbouring chunks share leaves, which the hint then keeps */
	if (sm->nr_touched > 1)
		qsort(sm->touched, sm->nr_touched, sizeof(*sm->touched),
		      cmp_u64);
	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = chunk_find(sm, sm->touched[t]);

		if (!c || !c->record_dirty)
			continue;
		c->record_dirty = false;
		r = ensure_spare(sm);
		if (r == 0) {
			uint8_t k[8], v[4] = { 0 };
			key_of(k, SM_KEY_CHUNK | c->block);
			r = btree_put_hinted(&sm->info, &sm->root, &sm->hint,
					     k, v, NULL);
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

	uint64_t need = sm_commit_need(sm);

	sm->in_flush = true;
	sm->flush_acquired = 0;
	r = release_empty_chunks(sm);
	if (r < 0)
		goto out;
	do {
		progress = false;
		sm->flush_rounds++;
		r = flush_round(sm, &progress);
		if (r < 0)
			goto out;
	} while (progress);
	*root = sm->root;
	if (sm->flush_acquired > need) {
		/* rule 6 underestimated: the reserve covered it this time */
		log_error("space map: a commit took %" PRIu64 " blocks, more "
			  "than the %" PRIu64 " estimated",
			  sm->flush_acquired, need);
		sm->need_exceeded++;
	}
out:
	btree_hint_drop(&sm->info, &sm->hint);
	sm->in_flush = false;
	return r;
}

#ifndef NDEBUG
/* The room bits agree with the chunks (debug builds, small pools). */
static void room_check(const struct sm *sm, const struct cvec *v)
{
	if (v->n > 4096)
		return;
	for (size_t i = 0; i < v->n; i++) {
		assert(!!(v->room[i / 64] & (1ull << (i % 64))) ==
		       has_room(v->v[i]->busy, sm->npc));
		assert(!!(v->roomy[i / 64] & (1ull << (i % 64))) ==
		       is_roomy(v->v[i]->busy, sm->npc));
	}
}
#endif

void sm_committed(struct sm *sm)
{
	const struct tm_hooks *h = tm_hooks(sm->tm);
	bool freed = false;

	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = chunk_find(sm, sm->touched[t]);

		if (!c)
			continue;
		memcpy(c->com, c->cur, sm->npc * sizeof(uint32_t));
		if (!c->used_cur && sm->nr_kept < KEPT_MAX)
			sm->kept[sm->nr_kept++] = c->block;
		if (c->unsecured) {
			c->touched = false; /* stays busy (rule 7) */
			continue;
		}
		free_add(sm, c, (int64_t)c->busy - (int64_t)c->used_cur);
		if (c->busy != c->used_cur) {
			sm_chunk_freed(sm, c);
			c->busy = c->used_cur;
			room_update(sm, c);
		}
		c->touched = false;
	}
	sm->nr_touched = 0;
	sm->nr_empty_touched = 0;
	sm->hot_used = 0;
#ifndef NDEBUG
	room_check(sm, &sm->uchunks);
	room_check(sm, &sm->schunks);
#endif
	for (size_t i = 0; i < sm->nr_d; i++) {
		struct dentry *e = &sm->d[i];

		/* next-fit restarts at the lowest block freed, so space is
		 * reused early and the pool stays compact */
		freed |= e->old && !e->now;
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
	/* u64map_clear costs the table's capacity, which one big
	 * transaction may have grown: a small one deletes its keys */
	if (sm->nr_d * 8 < sm->d_idx.cap) {
		for (size_t i = 0; i < sm->nr_d; i++)
			u64map_del(&sm->d_idx, sm->d[i].block);
	} else {
		u64map_clear(&sm->d_idx);
	}
	sm->nr_d = 0;
	sm->d_pending = 0;
	if (freed && h->freed)
		h->freed(h->ctx);
	/* a big transaction grew the table: do not pay for its capacity at
	 * every commit after it */
	if (sm->win.cap > 4096 && sm->win.len * 4 < sm->win.cap) {
		u64map_free(&sm->win);
		u64map_init(&sm->win);
	} else {
		u64map_clear(&sm->win);
	}
	sm->win_lost = false;
}

/* ---- open / misc ---- */

/* The nodes of the sm tree that load() passes through, so that their
 * chunks can be marked as the sm tree's (rule 4). */
struct seen {
	uint64_t *v;
	size_t n, cap;
	uint64_t last_leaf;
};

static int seen_path(struct seen *s, const struct btree_cursor *c)
{
	if (!c->valid || !c->depth ||
	    c->path[c->depth - 1].node->blocknr == s->last_leaf)
		return 0;
	s->last_leaf = c->path[c->depth - 1].node->blocknr;
	for (unsigned int d = 0; d < c->depth; d++) {
		if (s->n == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 256;
			uint64_t *v = realloc(s->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			s->v = v;
			s->cap = cap;
		}
		s->v[s->n++] = c->path[d].node->blocknr;
	}
	return 0;
}

static int mark_sm_chunks(struct sm *sm, const struct seen *s)
{
	for (size_t k = 0; k < s->n; k++) {
		uint32_t i;
		struct mchunk *c = chunk_of_node(sm, s->v[k], &i);
		int r;

		/* a node of the tree read before the chunks were known
		 * (tm_read checks the others): in a data block, it would be
		 * a volume's data, which its client writes */
		if (!c) {
			log_error("space map: tree node %" PRIu64
				  " lies outside every metadata chunk",
				  s->v[k]);
			return -EUCLEAN;
		}
		r = chunk_set_sm(sm, c);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * At open (load): chunk c, ordinary and roomy, becomes hot if it has more
 * nodes in use than one of the HOT_CHUNKS hot ones.  The hot chunks of
 * the last session hold its last hot nodes (not empty, then), and may
 * hold long-lived ones: the fullest chunks that have room enough are hot
 * (as in hot_candidate), rather than empty ones, which are released
 * (rule 4).
 */
static void hot_offer(struct sm *sm, const struct mchunk *c)
{
	unsigned int least = 0;
	uint32_t least_busy = UINT32_MAX;

	if (sm->nr_hot < HOT_CHUNKS) {
		sm->hot[sm->nr_hot++] = c->block;
		return;
	}
	for (unsigned int k = 0; k < sm->nr_hot; k++) {
		const struct mchunk *h = chunk_find(sm, sm->hot[k]);

		if (h->busy < least_busy) {
			least = k;
			least_busy = h->busy;
		}
	}
	if (c->busy > least_busy)
		sm->hot[least] = c->block;
}

static int load(struct sm *sm)
{
	struct btree_cursor c;
	struct seen seen = { 0 };
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
		r = seen_path(&seen, &c);
		if (r == 0)
			r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	if (r < 0)
		goto out;

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
		free_add(sm, ch, -1);
		r = seen_path(&seen, &c);
		if (r == 0)
			r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	/* load() set busy directly: recompute the room bits */
	room_rebuild(&sm->uchunks, sm->npc);
	/* after the counts: chunk_set_sm counts the chunk's free nodes */
	if (r == 0)
		r = mark_sm_chunks(sm, &seen);
	/* rule 7, once the free nodes are known */
	if (r == 0) {
		secure_superblocks(sm);
		secure_chunks(sm, &sm->uchunks);
		secure_chunks(sm, &sm->schunks);
	}
	/* empty chunks: the first commit releases them */
	for (size_t i = 0; r == 0 && i < sm->uchunks.n + sm->schunks.n; i++) {
		const struct mchunk *m = i < sm->uchunks.n
			? sm->uchunks.v[i]
			: sm->schunks.v[i - sm->uchunks.n];

		if (!m->used_cur && sm->nr_kept < KEPT_MAX)
			sm->kept[sm->nr_kept++] = m->block;
		/* O(HOT_CHUNKS) a chunk: open is O(chunks) anyway */
		if (!m->for_sm && sm->npc >= HOT_MIN_NPC &&
		    is_roomy(m->busy, sm->npc))
			hot_offer(sm, m);
	}
out:
	free(seen.v);
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
	sm->res_hint = sm->first_block;
	sm->fs_room = (tm_dev(tm)->flags & IO_DEV_SPARSE) && !tm_read_only(tm);
	u64map_init(&sm->chunk_idx);
	u64map_init(&sm->d_idx);
	u64map_init(&sm->win);
	u64map_init(&sm->res_idx);
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
	for (size_t i = 0; i < sm->uchunks.n; i++)
		chunk_free(sm->uchunks.v[i]);
	for (size_t i = 0; i < sm->schunks.n; i++)
		chunk_free(sm->schunks.v[i]);
	free(sm->uchunks.v);
	free(sm->schunks.v);
	free(sm->uchunks.room);
	free(sm->schunks.room);
	free(sm->uchunks.roomy);
	free(sm->schunks.roomy);
	free(sm->touched);
	free(sm->d);
	free(sm->freed);
	u64map_free(&sm->chunk_idx);
	u64map_free(&sm->d_idx);
	u64map_free(&sm->win);
	u64map_free(&sm->res_idx);
	free(sm->res);
	free(sm);
}

void sm_set_reserve_mode(struct sm *sm, bool on)
{
	sm->reserve_mode = on;
}

/* Pool blocks that nodes new nodes of a change take: the free nodes of
 * the ordinary chunks first, then whole chunks. */
static uint64_t step_blocks(const struct sm *sm, uint64_t nodes)
{
	uint64_t have = sm->m_free - sm->s_free;

	return nodes <= have ? 0 : DIV_ROUND_UP(nodes - have, sm->npc);
}

/* Pool blocks that a commit needing nodes nodes takes: its nodes come
 * from sm chunks (rule 4) that it acquires while the pool has blocks,
 * after releasing the empty ones (rule 3: down to the spare that
 * NEED_SLACK_NODES counts), so no free node there now is counted on;
 * and a chunk more, partly used. */
static uint64_t commit_blocks(const struct sm *sm, uint64_t nodes)
{
	return DIV_ROUND_UP(nodes, sm->npc) + 1;
}

/* Rule 6: the nodes the commit needs if the transaction changes counts
 * in windows more windows. */
static uint64_t need_nodes(const struct sm *sm, uint64_t windows)
{
	if (sm->win_lost)
		return UINT64_MAX / 8; /* unknown: commit first */
	/* the empty chunks the commit releases (rule 3): a chunk record and
	 * a data count each */
	windows += 2 * (sm->nr_kept + sm->nr_empty_touched);
	return 2 * (sm->win.len + windows) + NEED_SLACK_NODES;
}

bool sm_window_known(const struct sm *sm, uint64_t key)
{
	return u64map_find(&sm->win, key / SM_WINDOW) != NULL;
}

uint64_t sm_window_of(uint64_t key)
{
	return key / SM_WINDOW;
}

uint64_t sm_commit_need(const struct sm *sm)
{
	return commit_blocks(sm, need_nodes(sm, 0));
}

/* sm_room's free floor (sm.h): a step of SM_FREE_FLOOR_NODES nodes and
 * the commit of SM_FREE_FLOOR_WINDOWS windows, from a fresh transaction. */
static uint64_t free_floor(const struct sm *sm)
{
	uint64_t f =
	    DIV_ROUND_UP(SM_FREE_FLOOR_NODES, sm->npc) +
	    commit_blocks(sm, 2 * SM_FREE_FLOOR_WINDOWS + NEED_SLACK_NODES);

	return MIN(f, sm->reserve / 2);
}

bool sm_room(const struct sm *sm, enum sm_room kind, uint64_t blocks,
	     uint64_t nodes, uint64_t windows)
{
	uint64_t a = allocatable(sm), floor, step, all;

	floor = kind == SM_ROOM_DATA   ? 2 * sm->reserve
		: kind == SM_ROOM_META ? sm->reserve
		: kind == SM_ROOM_FREE ? free_floor(sm)
				       : 0;
	/* what the change takes must leave its floor; what it and then the
	 * commit take must be there */
	step = blocks + step_blocks(sm, nodes);
	all = step + commit_blocks(sm, need_nodes(sm, windows));
	return a >= step + floor && a >= all;
}

int sm_secure(struct sm *sm, enum sm_room kind, uint64_t nodes,
	      uint64_t windows)
{
	uint64_t fresh = commit_blocks(sm, NEED_SLACK_NODES), want;

	if (!sm->fs_room || sm->in_flush)
		return 0;
	want = step_blocks(sm, nodes) +
	       commit_blocks(sm, need_nodes(sm, windows)) +
	       (kind == SM_ROOM_DATA	? 2 * fresh
		: kind == SM_ROOM_META ? fresh
				       : 0);
	/* a full pool holds fewer: sm_room decides that */
	want = MIN(want, allocatable(sm));
	/* The set keeps the most any change asked for; once the filesystem
	 * is full (sm_fs_full), what it holds beyond what new data's change
	 * needs goes back to the filesystem for the data. */
	if (sm->fs_full && kind == SM_ROOM_DATA && sm->nr_res > want) {
		uint64_t bs = (uint64_t)sm->npc * PD_NODE_SIZE, b;

		while (sm->nr_res > want && res_pop(sm, &b))
			io_discard(tm_dev(sm->tm), b * bs, bs);
	}
	while (sm->nr_res < want) {
		uint64_t hint = sm->res_hint, b;
		bool ok;
		int r;

		if (hint < sm->first_block || hint >= sm->nr_blocks)
			hint = sm->first_block;
		r = scan_range(sm, hint, sm->nr_blocks, true, &ok, &b);
		if (r == 0 && !ok && hint > sm->first_block)
			r = scan_range(sm, sm->first_block, hint, true, &ok, &b);
		if (r < 0)
			return r;
		if (!ok)
			break; /* every free block is secured */
		r = reserve_block(sm, b);
		if (!sm->fs_room)
			return 0; /* no fallocate: nothing to secure */
		sm->fs_full = r < 0;
		if (r < 0)
			return -ENOSPC;
		r = res_add(sm, b);
		if (r < 0)
			return r;
		sm->res_hint = b + 1;
	}
	return 0;
}

void sm_fs_full(struct sm *sm)
{
	sm->fs_full = sm->fs_room;
}

bool sm_fs_room(const struct sm *sm)
{
	return sm->fs_room;
}

bool sm_secured(const struct sm *sm, uint64_t block)
{
	return res_has(sm, block);
}

void sm_move_secured(struct sm *to, struct sm *from)
{
	uint64_t b;

	while (res_pop(from, &b))
		if (res_add(to, b) < 0)
			break; /* out of memory: stays allocated, unused */
}

void sm_release_secured(struct sm *sm)
{
	uint64_t bs = (uint64_t)sm->npc * PD_NODE_SIZE, b;

	while (res_pop(sm, &b))
		io_discard(tm_dev(sm->tm), b * bs, bs);
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
	st->flush_rounds = sm->flush_rounds;
	st->flush_tree_ops = sm->flush_tree_ops;
	st->commit_need = sm_commit_need(sm);
	st->need_exceeded = sm->need_exceeded;
	st->secured = sm->nr_res;
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
