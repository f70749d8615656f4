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
 *      in the middle of a tree operation: sm_ensure_spare tops up free
 *      nodes before each one, because finding a free block reads the tree.
 *   3. Chunks whose nodes are all free are released at the start of
 *      sm_flush (keeping SPARE free nodes), never in its loop, so the loop
 *      cannot alternate between acquiring and releasing.  Only chunks
 *      touched in the transaction, or found empty at the last commit or at
 *      open, are looked at: O(touched), not O(chunks).
 *   4. Placement (where new blocks and nodes go, and why: the cost of a
 *      commit) has its own rules, at the top of sm-place.c.
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
 *      (the spare nodes sm_ensure_spare keeps free, a path to the root), in
 *      whole chunks: a commit takes its nodes from sm chunks it acquires
 *      while the pool has free blocks.  The levels above the leaves (a
 *      node per SM_WINDOW leaves), splits and merges (they need keys
 *      added or removed, not counts changed) and the copies of its own
 *      copies (whose counts rule 4 keeps in few leaves) are not counted
 *      one by one: 2 nodes per window must cover them (bench/README.md
 *      has what commits take), and sm_flush counts (need_exceeded) and
 *      logs any commit that takes more blocks than estimated; the tests
 *      fail on it.  The engine keeps every transaction within what its
 *      commit can get (sm_room; pool-space.c, rule 2), so a commit does not
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

bool sm_is_chunk(const struct sm *sm, uint64_t block)
{
	return sm_chunk_find(sm, block) != NULL;
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
	uint64_t bs = (uint64_t) sm->npc * PD_NODE_SIZE;
	bool all = tm_dev(sm->tm)->flags & IO_DEV_FS_SHARING;

	for (size_t i = 0; i < v->n && sm->fs_room;) {
		size_t j = i;
		int r;

		if (v->v[i]->busy == sm->npc && !all) {
			i++;
			continue;
		}
		while (j + 1 < v->n &&
		       v->v[j + 1]->block == v->v[j]->block + 1 &&
		       (all || v->v[j + 1]->busy < sm->npc))
			j++;
		r = io_reserve(tm_dev(sm->tm), v->v[i]->block * bs,
			       (v->v[j]->block - v->v[i]->block + 1) * bs);
		for (size_t k = i; r < 0 && k <= j && sm->fs_room; k++) {
			struct mchunk *c = v->v[k];

			if (sm_reserve_block(sm, c->block) == 0)
				continue;
			c->unsecured = true;
			sm_free_add(sm, c, -(int64_t) (sm->npc - c->busy));
			c->busy = sm->npc;
			sm_cvec_room_set(v, k, c->busy, sm->npc);
		}
		i = j + 1;
	}
}

/* The entry of data block block, for a change of its count by a
 * reference: -EUCLEAN for a block outside the pool or a metadata chunk. */
static int data_ref(struct sm *sm, uint64_t block, struct dentry **out)
{
	int r = sm_check_block(sm, block);

	if (r < 0)
		return r;
	if (sm_chunk_find(sm, block)) {
		log_error(
		    "space map: data reference to metadata block %" PRIu64,
		    block);
		return -EUCLEAN;
	}
	return sm_d_get(sm, block, true, out);
}

int sm_inc_block(struct sm *sm, uint64_t block)
{
	struct dentry *e;
	int r = data_ref(sm, block, &e);

	if (r < 0)
		return r;
	if (e->now == 0) {
		log_error("space map: reference to free block %" PRIu64, block);
		return -EUCLEAN;
	}
	if (e->now == SM_COUNT_MAX)
		return -EOVERFLOW;
	sm_d_set(sm, e, e->now + 1);
	return 0;
}

int sm_dec_block(struct sm *sm, uint64_t block, uint32_t *new_count)
{
	struct dentry *e;
	int r = data_ref(sm, block, &e);

	if (r < 0)
		return r;
	if (e->now == 0) {
		log_error("space map: block %" PRIu64
			  " released more often than referenced",
			  block);
		return -EUCLEAN;
	}
	sm_d_set(sm, e, e->now - 1);
	if (new_count)
		*new_count = e->now;
	return 0;
}

int sm_block_count(struct sm *sm, uint64_t block, uint32_t *count)
{
	struct dentry *e;
	int r = sm_check_block(sm, block);

	if (r < 0)
		return r;
	r = sm_d_get(sm, block, false, &e);
	if (r < 0)
		return r;
	if (e) {
		*count = e->now;
		return 0;
	}
	return sm_tree_count(sm, block, count);
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

		r = sm_check_block(sm, b);
		if (r == 0)
			r = sm_d_get(sm, b, false, &e);
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

static int node_lookup(struct sm *sm, uint64_t node, struct mchunk **c,
		       uint32_t *i)
{
	*c = sm_chunk_of_node(sm, node, i);
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
	return sm_set_meta(sm, c, i, c->cur[i] + 1);
}

int sm_dec_node(struct sm *sm, uint64_t node, uint32_t *new_count)
{
	struct mchunk *c;
	uint32_t i;
	int r = node_lookup(sm, node, &c, &i);

	if (r < 0)
		return r;
	r = sm_set_meta(sm, c, i, c->cur[i] - 1);
	if (r < 0)
		return r;
	if (new_count)
		*new_count = c->cur[i];
	return 0;
}

int sm_node_count(struct sm *sm, uint64_t node, uint32_t *count)
{
	uint32_t i;
	struct mchunk *c = sm_chunk_of_node(sm, node, &i);

	*count = c ? c->cur[i] : 0;
	return 0;
}

/* ---- commit ---- */

static int tree_set(struct sm *sm, uint64_t key, uint32_t count)
{
	uint8_t k[8], v[4];
	int r;

	r = sm_ensure_spare(sm);
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
 * the spare nodes sm_ensure_spare wants.  Only touched chunks can have
 * become empty, so this costs O(touched), not O(chunks); a chunk kept as
 * spare is looked at again when it is next touched.
 */
static int release_empty_chunks(struct sm *sm)
{
	size_t nkept = sm->nr_kept;

	/* the empty chunks of the last commit are looked at again */
	sm->nr_kept = 0;
	for (size_t k = 0; k < nkept; k++) {
		struct mchunk *c = sm_chunk_find(sm, sm->kept[k]);
		int r = c && !c->used_cur ? sm_touch(sm, c) : 0;

		if (r < 0)
			return r;
	}
	/* sm_touch() may append while we go: index, and re-read the length */
	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = sm_chunk_find(sm, sm->touched[t]);
		uint64_t nfree = c ? sm->npc - c->busy : 0;
		struct dentry *e;
		bool progress = false;
		int r;

		/* an empty chunk kept as spare is kept (sm_committed), and
		 * so is a hot one (rule 4) */
		if (!c || c->used_cur || sm_is_hot(sm, c->block) ||
		    sm->m_free - nfree < SPARE_NODES ||
		    (c->for_sm && sm->s_free - nfree < SM_SPARE_NODES))
			continue;
		/* Out of the allocator first, so the tree changes below
		 * cannot put nodes into it. */
		sm_chunk_unlink(sm, c);
		r = flush_chunk(sm, c, &progress);
		if (r == 0 && c->record_in_tree)
			r = tree_set(sm, SM_KEY_CHUNK | c->block, 0);
		if (r == 0)
			r = sm_d_get(sm, c->block, true, &e);
		if (r == 0) {
			if (e->now != 1) {
				log_error("space map: metadata block %" PRIu64
					  " has count %u",
					  c->block, e->now);
				r = -EUCLEAN;
			} else {
				sm_d_set(sm, e, 0);
			}
		}
		sm_chunk_free(c);
		if (r < 0)
			return r;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

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
			struct dentry *e =
			    &sm->d[*u64map_find(&sm->d_idx, blocks[k])];
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
		struct mchunk *c = sm_chunk_find(sm, sm->touched[t]);

		if (!c || !c->record_dirty)
			continue;
		c->record_dirty = false;
		r = sm_ensure_spare(sm);
		if (r == 0) {
			uint8_t k[8], v[4] = {0};
			key_of(k, SM_KEY_CHUNK | c->block);
			r = btree_put_hinted(&sm->info, &sm->root, &sm->hint, k,
					     v, NULL);
		}
		if (r < 0)
			goto out;
		c->record_in_tree = true;
		*progress = true;
	}
	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = sm_chunk_find(sm, sm->touched[t]);

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

void sm_committed(struct sm *sm)
{
	const struct tm_hooks *h = tm_hooks(sm->tm);
	bool freed = false;

	for (size_t t = 0; t < sm->nr_touched; t++) {
		struct mchunk *c = sm_chunk_find(sm, sm->touched[t]);

		if (!c)
			continue;
		memcpy(c->com, c->cur, sm->npc * sizeof(uint32_t));
		if (!c->used_cur && sm->nr_kept < KEPT_MAX)
			sm->kept[sm->nr_kept++] = c->block;
		if (c->unsecured) {
			c->touched = false; /* stays busy (rule 7) */
			continue;
		}
		sm_free_add(sm, c, (int64_t) c->busy - (int64_t) c->used_cur);
		if (c->busy != c->used_cur) {
			sm_chunk_freed(sm, c);
			c->busy = c->used_cur;
			sm_room_update(sm, c);
		}
		c->touched = false;
	}
	sm->nr_touched = 0;
	sm->nr_empty_touched = 0;
	sm->hot_used = 0;
#ifndef NDEBUG
	sm_cvec_room_check(&sm->uchunks, sm->npc);
	sm_cvec_room_check(&sm->schunks, sm->npc);
#endif
	for (size_t i = 0; i < sm->nr_d; i++) {
		struct dentry *e = &sm->d[i];

		/* next-fit restarts at the lowest block freed, so space is
		 * reused early and the pool stays compact */
		freed |= e->old && !e->now;
		if (e->old && !e->now && e->block < sm->d_hint)
			sm->d_hint = e->block;
		if (e->old && !e->now && sm->nr_freed < FREED_MAX) {
			if (sm_u64_room(&sm->freed, sm->nr_freed,
					&sm->cap_freed, 256))
				continue; /* only a discard hint */
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
		if (sm_u64_room(&s->v, s->n, &s->cap, 256))
			return -ENOMEM;
		s->v[s->n++] = c->path[d].node->blocknr;
	}
	return 0;
}

static int mark_sm_chunks(struct sm *sm, const struct seen *s)
{
	for (size_t k = 0; k < s->n; k++) {
		uint32_t i;
		struct mchunk *c = sm_chunk_of_node(sm, s->v[k], &i);
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
		r = sm_chunk_set_sm(sm, c);
		if (r < 0)
			return r;
	}
	return 0;
}

static int load(struct sm *sm)
{
	struct btree_cursor c;
	struct seen seen = {0};
	uint8_t k[8];
	int r;

	/* chunk records */
	key_of(k, SM_KEY_CHUNK);
	r = btree_cursor_seek(&sm->info, &sm->root, k, &c);
	while (r == 0 && c.valid) {
		uint64_t block =
		    get_be64(btree_cursor_key(&c)) & ~SM_KEY_SPACE_MASK;
		struct mchunk *ch;

		r = sm_check_block(sm, block);
		if (r < 0)
			break;
		/* A damaged tree could repeat a key; trusting it would put
		 * live nodes on the free list. */
		if (sm_chunk_find(sm, block)) {
			log_error("space map: metadata chunk %" PRIu64
				  " recorded twice",
				  block);
			r = -EUCLEAN;
			break;
		}
		r = sm_chunk_add(sm, block, &ch);
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
		ch = sm_chunk_of_node(sm, node, &i);
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
		sm_free_add(sm, ch, -1);
		r = seen_path(&seen, &c);
		if (r == 0)
			r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	/* load() set busy directly: recompute the room bits */
	sm_cvec_room_rebuild(&sm->uchunks, sm->npc);
	/* after the counts: sm_chunk_set_sm counts the chunk's free nodes */
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
			sm_hot_offer(sm, m);
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
		sm_chunk_free(sm->uchunks.v[i]);
	for (size_t i = 0; i < sm->schunks.n; i++)
		sm_chunk_free(sm->schunks.v[i]);
	sm_cvec_free(&sm->uchunks);
	sm_cvec_free(&sm->schunks);
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
	uint64_t a = sm_allocatable(sm), floor, step, all;

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
	       (kind == SM_ROOM_DATA   ? 2 * fresh
		: kind == SM_ROOM_META ? fresh
				       : 0);
	/* a full pool holds fewer: sm_room decides that */
	want = MIN(want, sm_allocatable(sm));
	/* The set keeps the most any change asked for; once the filesystem
	 * is full (sm_fs_full), what it holds beyond what new data's change
	 * needs goes back to the filesystem for the data. */
	if (sm->fs_full && kind == SM_ROOM_DATA && sm->nr_res > want) {
		uint64_t bs = (uint64_t) sm->npc * PD_NODE_SIZE, b;

		while (sm->nr_res > want && sm_res_pop(sm, &b))
			io_discard(tm_dev(sm->tm), b * bs, bs);
	}
	while (sm->nr_res < want) {
		uint64_t hint = sm->res_hint, b;
		bool ok;
		int r;

		if (hint < sm->first_block || hint >= sm->nr_blocks)
			hint = sm->first_block;
		r = sm_scan_range(sm, hint, sm->nr_blocks, true, &ok, &b);
		if (r == 0 && !ok && hint > sm->first_block)
			r = sm_scan_range(sm, sm->first_block, hint, true, &ok,
					  &b);
		if (r < 0)
			return r;
		if (!ok)
			break; /* every free block is secured */
		r = sm_reserve_block(sm, b);
		if (!sm->fs_room)
			return 0; /* no fallocate: nothing to secure */
		sm->fs_full = r < 0;
		if (r < 0)
			return -ENOSPC;
		r = sm_res_add(sm, b);
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
	return sm_res_has(sm, block);
}

void sm_move_secured(struct sm *to, struct sm *from)
{
	uint64_t b;

	while (sm_res_pop(from, &b))
		if (sm_res_add(to, b) < 0)
			break; /* out of memory: stays allocated, unused */
}

void sm_release_secured(struct sm *sm)
{
	uint64_t bs = (uint64_t) sm->npc * PD_NODE_SIZE, b;

	while (sm_res_pop(sm, &b))
		io_discard(tm_dev(sm->tm), b * bs, bs);
}

int sm_grow(struct sm *sm, uint64_t nr_blocks)
{
	if (nr_blocks < sm->nr_blocks)
		return -EINVAL;
	sm->nr_blocks = nr_blocks;
	sm->reserve =
	    reserve_for(nr_blocks - sm->first_block, tm_block_size(sm->tm));
	return 0;
}

void sm_get_stats(const struct sm *sm, struct sm_stats *st)
{
	st->nr_blocks = sm->nr_blocks - sm->first_block;
	st->data_used = sm->d_used;
	st->meta_chunks = sm->nr_chunks;
	st->meta_nodes = sm->m_used;
	st->pending_free = sm->d_pending;
	st->allocatable = sm_allocatable(sm);
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
