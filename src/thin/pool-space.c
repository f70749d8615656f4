/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * pool-space.c - the room a change needs to commit, read from the trees
 * (room probes), making room when there is none, and reclaim of the
 * deleted volumes' trees (DEFERRED).
 *
 * Rules 2 and 3 of the pool (pool.c has rule 1, pool-commit.c the rules
 * of syncs):
 *
 *   2. Room to commit.  A commit takes pool blocks for the space map's
 *      changes, more the bigger its transaction (sm.c, rule 6), and on a
 *      full pool only the reserve has them: a commit that found none
 *      would lose its transaction and leave the pool read-only.  So
 *      before every change the engine asks pool_room_locked whether the
 *      transaction, with the change (and the provisions in flight, vio.c
 *      rule 9), can still commit, and whether the change leaves what its
 *      kind must leave (sm.h, sm_room): a write into a new block twice
 *      the reserve; other metadata the reserve (a discard where a
 *      snapshot may share the blocks, a shrink whose cut others share:
 *      those free nothing); what frees at least what it takes (a delete,
 *      a discard in a volume never snapshotted, a shrink whose cut holds
 *      that much alone: volume.c, tree_alone) the free floor, part of the
 *      reserve; and the steps of reclaim (rule 3), which free what those
 *      handed to DEFERRED, nothing but their commit.  So the reserve goes
 *      only to what gives it back, and below the free floor only reclaim
 *      goes, whose every step fits the floor from a fresh transaction:
 *      reclaim can always go on, and a full pool never wedges.  When the
 *      answer is no, the I/O path and reclaim commit first
 *      (pool_make_room_locked: that also makes what the transaction
 *      freed allocatable, and starts the next transaction's need from
 *      nothing), and a batch, which is one transaction, is refused with
 *      -ENOSPC (after reclaim freed what it could, tv_batch); so is any
 *      change for which a fresh transaction has no room.  No transaction
 *      fails for lack of space once it has started changing the
 *      metadata, and a full pool does not go read-only: on a full pool
 *      trims commit every few hundred blocks, and the space comes back at
 *      each commit.  The same holds for the room in a pool file's
 *      filesystem: the answer is also no when the blocks the change and
 *      the commit may take as metadata chunks are not reserved in the
 *      file already and the filesystem refuses more (sm_secure; sm.c,
 *      rule 7), so that a full filesystem refuses a change before it
 *      begins, and never a commit.
 *   3. Reclaim.  A deleted volume's mapping tree, and the part a shrink
 *      cut off, wait in DEFERRED; reclaim frees them a step at a time,
 *      the last entry first (reclaim_one), so that what was deleted last
 *      comes back first and the pieces of a tree go before anything
 *      older.  A step is the whole tree when what it releases (a count
 *      per node it frees or per subtree another tree shares, whose nodes
 *      are never read, and per block in the nodes it frees:
 *      btree_release_walk) is within the budget and fits (rule 2); else,
 *      for a root that the entry holds alone, the root split, each child
 *      an entry of its own after every other (btree_split_root: the root
 *      is freed, nothing else read), or, for a single leaf, its first
 *      mappings.  Those fit the free floor whatever the tree, so no entry
 *      blocks the ones after it; splitting frees a tree depth first, so
 *      DEFERRED holds a node's children more per level of it at most.
 *      The committer reclaims every round (RECLAIM_BUDGET counts); so
 *      does a pool that finds no room (pool_make_room_locked: a write or
 *      a batch that hit -ENOSPC tries again after it), and closing a
 *      pool that this process changed reclaims CLOSE_BUDGET more
 *      (tv_pool_close), so that commands run without the daemon free
 *      space too, a bounded amount each.  The blocks a step frees leave
 *      the user area's reclaimable (volume.c, rule 6), which is 0 once
 *      DEFERRED is empty.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm.h"
#include "thin/thin-internal.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

/* ---- room (rule 2) ---- */

bool pool_room_locked(struct tv_pool *p, enum sm_room kind, uint64_t blocks,
		      uint64_t nodes, uint64_t counts)
{
	struct sm *sm = tm_sm(p->tm);
	uint64_t hn, hc;

	p->io->held_locked(p, &hn, &hc);
	/* the pool's blocks, then the room in the pool file for the nodes
	 * (sm.c, rule 7): a full filesystem refuses the change now, never
	 * the commit later */
	if (!sm_room(sm, kind, blocks, nodes + hn, counts + hc))
		return p->fs_full = false;
	p->fs_full = sm_secure(sm, kind, nodes + hn, counts + hc) != 0;
	return !p->fs_full;
}

const char *pool_full_what(const struct tv_pool *p)
{
	return p->fs_full ? "the filesystem under the pool file is full"
			  : "the pool is full";
}

void probe_init(struct room_probe *q, struct tv_pool *p)
{
	memset(q, 0, sizeof(*q));
	q->p = p;
	u64map_init(&q->seen);
}

void probe_free(struct room_probe *q)
{
	u64map_free(&q->seen);
}

void probe_key(struct room_probe *q, uint64_t key)
{
	uint64_t w;

	if (sm_window_known(tm_sm(q->p->tm), key))
		return;
	w = sm_window_of(key);
	if (u64map_find(&q->seen, w))
		return;
	if (u64map_put(&q->seen, w, 1) < 0)
		q->lost = true;
	q->windows++;
}

/* btree_path_cost's callback: one count that may change. */
static void probe_ref(void *ctx, uint64_t node, const void *value)
{
	struct room_probe *q = ctx;

	/* only a mapping holds a reference the tree counts (a block); the
	 * tables' values hold none */
	if (!value)
		probe_key(q, SM_KEY_META | node);
	else if (q->info == &q->p->map)
		probe_key(q, get_le64(value));
}

int probe_path(struct room_probe *q, const struct btree_info *info,
	       const struct tm_ref *root, const void *key, bool shared,
	       bool leaf)
{
	uint64_t nodes;
	int r;

	q->info = info;
	r = btree_path_cost(info, root, key, shared, leaf, probe_ref, q,
			    &nodes);
	if (r < 0)
		return r;
	/* the new nodes' own counts: places not known yet */
	probe_add(q, nodes, nodes);
	return 0;
}

void probe_add(struct room_probe *q, uint64_t nodes, uint64_t windows)
{
	q->nodes += nodes;
	q->windows += windows;
}

/* The table in root slot slot (NULL: none). */
static const struct btree_info *table_info(struct tv_pool *p, unsigned int slot)
{
	static const struct {
		unsigned int slot;
		size_t off;
	} infos[] = {
	    {SLOT_VOLS, offsetof(struct tv_pool, vols)},
	    {SLOT_NAMES, offsetof(struct tv_pool, names)},
	    {SLOT_BLOBIDX, offsetof(struct tv_pool, blobidx)},
	    {SLOT_BLOBS, offsetof(struct tv_pool, blobs)},
	    {SLOT_DEFERRED, offsetof(struct tv_pool, deferred)},
	};

	for (size_t i = 0; i < ARRAY_SIZE(infos); i++)
		if (infos[i].slot == slot)
			return (const struct btree_info *) ((const char *) p +
							    infos[i].off);
	return NULL;
}

/* The height of the table info (0 when empty). */
static int table_height(struct room_probe *q, const struct btree_info *info,
			unsigned int slot, unsigned int *h)
{
	int r;

	*h = 0;
	r = btree_height(info, tm_root(q->p->tm, slot), h);
	return r == -ENOENT ? 0 : r;
}

/* The table in root slot slot (*info) and its height (*h); -EINVAL when
 * the slot holds no table. */
static int table_of(struct room_probe *q, unsigned int slot,
		    const struct btree_info **info, unsigned int *h)
{
	*info = table_info(q->p, slot);
	if (!*info)
		return -EINVAL;
	return table_height(q, *info, slot, h);
}

int probe_table(struct room_probe *q, unsigned int slot, uint64_t n)
{
	const struct btree_info *info;
	unsigned int h;
	uint64_t nodes;
	int r;

	r = table_of(q, slot, &info, &h);
	if (r < 0)
		return r;
	/* a copy and a split per level, a new root; their counts, and the
	 * originals' */
	nodes = 2 * (h + 1) + 1;
	probe_add(q, n * nodes, n * (nodes + h + 1));
	return 0;
}

int probe_table_append(struct room_probe *q, unsigned int slot, uint64_t n)
{
	const uint64_t room = PD_NODE_SIZE - BTREE_HEADER_SIZE;
	const struct btree_info *info;
	uint64_t nodes, adds = n, fit;
	unsigned int h;
	int r;

	r = table_of(q, slot, &info, &h);
	if (r < 0)
		return r;
	/* The path to the end is copied once.  At each level, the node at
	 * the end splits (btree.h: the new node holds a quarter of what
	 * fits, the old one the rest) at most once more than every
	 * fit - fit / 4 entries added to it; each split adds an entry to
	 * the level above.  And a new root. */
	nodes = h + 1;
	for (unsigned int level = 0; level <= h; level++) {
		fit = room / (info->key_size + (level ? sizeof(struct disk_ref)
						      : info->value.size));
		adds = 1 + adds / (fit - fit / 4);
		nodes += adds;
	}
	nodes++;
	probe_add(q, nodes, nodes + h + 1);
	return 0;
}

bool probe_room(struct room_probe *q, enum sm_room kind, uint64_t blocks)
{
	return !q->lost &&
	       pool_room_locked(q->p, kind, blocks, q->nodes, q->windows);
}

int pool_make_room_locked(struct tv_pool *p)
{
	int r;

	if (p->read_only)
		return pool_read_only_err(p);
	if (!p->dirty && tm_root(p->tm, SLOT_DEFERRED)->blocknr) {
		r = pool_reclaim_locked(p, RECLAIM_BUDGET);
		if (r < 0)
			return r;
	}
	if (!p->dirty)
		return tv_err(-ENOSPC, "%s: %s", p->path, pool_full_what(p));
	return pool_commit_bg_locked(p);
}

/* ---- reclaim (rule 3) ---- */

int pool_defer_locked(struct tv_pool *p, const struct disk_ref *tree)
{
	struct disk_pool_user *u = pool_user(p);
	uint64_t seq = le64_to_cpu(u->deferred_seq);
	uint8_t k[8];

	u->deferred_seq = cpu_to_le64(seq + 1);
	put_be64(k, seq);
	return btree_insert(&p->deferred, tm_root(p->tm, SLOT_DEFERRED), k,
			    tree);
}

/* The last DEFERRED entry: its key and tree.  *found false when none. */
static int deferred_last(struct tv_pool *p, uint8_t key[8], struct tm_ref *tree,
			 bool *found)
{
	uint8_t last[8];
	struct disk_ref dref;
	int r;

	*found = false;
	memset(last, 0xff, sizeof(last));
	r = btree_lookup_le(&p->deferred, tm_root(p->tm, SLOT_DEFERRED), last,
			    key, &dref);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	ref_from_disk(tree, &dref);
	*found = true;
	return 0;
}

/* A step's cost as btree_release_walk reports what it releases: a window
 * for each count that drops, at most budget counts, and no further once
 * the room is gone (looked at every 64 counts: the walk may be long). */
struct release_cost {
	struct room_probe *q;
	uint64_t refs, budget;
};

static int release_count(void *ctx, uint64_t node, const void *value,
			 bool alone)
{
	struct release_cost *w = ctx;

	(void) alone;
	if (w->refs >= w->budget)
		return 1;
	w->refs++;
	probe_key(w->q, value ? get_le64(value) : SM_KEY_META | node);
	if (w->refs % 64 == 0 && !probe_room(w->q, SM_ROOM_RECLAIM, 0))
		return 1;
	return 0;
}

/* Step 1: the whole tree at once, when what it releases is at most budget
 * counts and fits (rule 2).  *used: the counts, 0 when it did not fit. */
static int reclaim_whole(struct tv_pool *p, const uint8_t *key,
			 struct tm_ref *tree, uint64_t budget, uint64_t *used)
{
	struct tm_ref *droot = tm_root(p->tm, SLOT_DEFERRED);
	struct room_probe q;
	struct release_cost w = {&q, 0, budget};
	bool fits;
	int r;

	probe_init(&q, p);
	r = probe_path(&q, &p->deferred, droot, key, false, true);
	if (r == 0)
		r = btree_release_walk(&p->map, tree, NULL, release_count, &w);
	fits = r == 0 && probe_room(&q, SM_ROOM_RECLAIM, 0);
	probe_free(&q);
	if (r < 0)
		return r;
	if (!fits)
		return 0;
	/* the entry's reference to the tree is ours to drop (volume.c) */
	r = btree_remove(&p->deferred, droot, key, NULL);
	if (r == 0)
		r = btree_del(&p->map, tree);
	if (r == 0)
		*used = MAX(w.refs, 1);
	return r;
}

/* The most children a mapping tree's node has (8-byte keys). */
#define MAP_FANOUT                                                             \
	((PD_NODE_SIZE - BTREE_HEADER_SIZE) / (8 + sizeof(struct disk_ref)))

/* Step 2, for a tree whose root is internal and this entry's alone: each
 * child of the root becomes an entry of its own, after every other, so
 * that they are the next steps' (btree_split_root: the root is freed,
 * nothing else is read).  A bounded step whatever the tree's size; the
 * tree is freed depth first, a subtree walked once by a step that found
 * it too big before it is split: DEFERRED holds MAP_FANOUT entries more
 * per level at most, and the walks read each node twice at most. */
static int reclaim_split(struct tv_pool *p, const uint8_t *key,
			 struct tm_ref *tree, uint64_t *used)
{
	struct tm_ref *droot = tm_root(p->tm, SLOT_DEFERRED);
	struct tm_ref kids[MAP_FANOUT];
	struct disk_ref dref;
	struct room_probe q;
	unsigned int nr = 0;
	bool fits;
	int r;

	probe_init(&q, p);
	/* the root freed, the entry removed, the children's entries */
	probe_key(&q, SM_KEY_META | tree->blocknr);
	r = probe_path(&q, &p->deferred, droot, key, false, true);
	if (r == 0)
		r = probe_table_append(&q, SLOT_DEFERRED, MAP_FANOUT);
	fits = r == 0 && probe_room(&q, SM_ROOM_RECLAIM, 0);
	probe_free(&q);
	if (r < 0 || !fits)
		return r;
	r = btree_remove(&p->deferred, droot, key, NULL);
	if (r == 0)
		r = btree_split_root(&p->map, tree, kids, MAP_FANOUT, &nr);
	for (unsigned int i = 0; r == 0 && i < nr; i++) {
		ref_to_disk(&dref, &kids[i]);
		r = pool_defer_locked(p, &dref);
	}
	if (r == 0)
		*used = 1;
	return r;
}

/* Step 3, for a tree that is one leaf of this entry's alone: its first
 * mappings, as many as budget and the room allow (all but the last: the
 * tree stays a tree), each a block's count. */
static int reclaim_front(struct tv_pool *p, const uint8_t *key,
			 struct tm_ref *tree, uint64_t budget, uint64_t *used)
{
	struct tm_ref *droot = tm_root(p->tm, SLOT_DEFERRED);
	struct btree_cursor c;
	struct disk_ref dref;
	struct room_probe q;
	uint8_t hi[8];
	uint64_t n = 0;
	int r;

	probe_init(&q, p);
	/* the leaf's copy, the entry's new value */
	r = probe_path(&q, &p->map, tree, NULL, false, true);
	if (r == 0)
		r = probe_path(&q, &p->deferred, droot, key, false, true);
	if (r < 0) {
		probe_free(&q);
		return r;
	}
	r = btree_cursor_seek(&p->map, tree, NULL, &c);
	while (r == 0 && c.valid && n < budget) {
		uint64_t block = get_le64(btree_cursor_value(&c));

		memcpy(hi, btree_cursor_key(&c), 8);
		r = btree_cursor_next(&c);
		if (r < 0 || !c.valid)
			break; /* the last one stays */
		probe_key(&q, block);
		if (!probe_room(&q, SM_ROOM_RECLAIM, 0))
			break;
		n++;
		memcpy(hi, btree_cursor_key(&c), 8);
	}
	btree_cursor_close(&c);
	probe_free(&q);
	if (r < 0 || !n)
		return r;
	r = btree_remove_range(&p->map, tree, NULL, hi, NULL);
	if (r == 0) {
		ref_to_disk(&dref, tree);
		r = btree_update(&p->deferred, droot, key, &dref);
	}
	if (r == 0)
		*used = n;
	return r;
}

/*
 * One step of reclaim on the last DEFERRED entry (rule 3): the whole tree
 * when it fits, else a step that always fits what a fresh transaction
 * has room for (sm.h, the free floor): its root split into its children,
 * or the first mappings of a leaf.  *used: the counts it changed (the
 * budget's unit), 0 when there was no room for even that.
 */
static int reclaim_one(struct tv_pool *p, uint64_t budget, uint64_t *used)
{
	struct tm_ref tree;
	uint8_t key[8];
	uint32_t count = 0;
	unsigned int h = 0;
	bool found;
	int r;

	*used = 0;
	r = deferred_last(p, key, &tree, &found);
	if (r < 0 || !found)
		return r;
	sm_set_reserve_mode(tm_sm(p->tm), true);
	r = reclaim_whole(p, key, &tree, budget, used);
	if (r == 0 && !*used && tree.blocknr) {
		/* a root another tree shares went whole above (one count),
		 * if anything could */
		r = tm_node_count(p->tm, tree.blocknr, &count);
		if (r == 0 && count == 1)
			r = btree_height(&p->map, &tree, &h);
		if (r == 0 && count == 1)
			r = h ? reclaim_split(p, key, &tree, used)
			      : reclaim_front(p, key, &tree, budget, used);
	}
	sm_set_reserve_mode(tm_sm(p->tm), false);
	if (r == 0 && *used)
		p->dirty = true;
	return r;
}

int pool_reclaim_locked(struct tv_pool *p, uint64_t budget)
{
	struct disk_pool_user *u = pool_user(p);

	while (budget && !p->read_only &&
	       tm_root(p->tm, SLOT_DEFERRED)->blocknr) {
		struct sm_stats s0, s1;
		uint64_t used, rec;
		int r;

		sm_get_stats(tm_sm(p->tm), &s0);
		r = reclaim_one(p, budget, &used);
		if (r < 0) {
			/* a metadata error: the transaction is lost */
			pool_abort_locked(p);
			pool_set_read_only(p, r, "reclaim failed");
			return tv_err(r, "%s: reclaim failed: %s", p->path,
				      strerror(-r));
		}
		/* the blocks it freed are reclaimable no more (the figure
		 * is a lower bound: volume.c, rule 6) */
		sm_get_stats(tm_sm(p->tm), &s1);
		rec = le64_to_cpu(u->reclaimable);
		if (s1.pending_free > s0.pending_free)
			rec -= MIN(rec, s1.pending_free - s0.pending_free);
		/* nothing deferred, nothing to come (also for a figure that
		 * older versions counted otherwise) */
		if (!tm_root(p->tm, SLOT_DEFERRED)->blocknr)
			rec = 0;
		if (rec != le64_to_cpu(u->reclaimable)) {
			u->reclaimable = cpu_to_le64(rec);
			p->dirty = true;
		}
		if (!used) {
			/* rule 2: commit what there is, then go on; with
			 * nothing to commit there is no room at all now */
			if (!p->dirty)
				return 0;
			r = pool_commit_bg_locked(p);
			if (r < 0)
				return r;
			continue;
		}
		budget -= MIN(used, budget);
	}
	return 0;
}
