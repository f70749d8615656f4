/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * volume.c - the metadata operations (create, snapshot, delete, rename,
 * resize, set-blob), applied in batches that are one transaction each,
 * with the room each needs to commit.  The table, its indexes and blobs
 * they change are volume-table.c's.
 *
 * Invariants 3 to 6 of the volume table (volume-table.c has 1 and 2; the
 * checker and tests verify them all):
 *
 *   3. The user area's nr_volumes equals the number of VOLS entries; every
 *      id is below next_id, which only grows.  A new id is at least the
 *      microseconds since TV_ID_EPOCH (thin-internal.h), so that ids stay
 *      unique even across a restore of an older copy of the pool.
 *   4. A VOLS value holds one reference to its mapping tree; a DEFERRED
 *      value holds one reference to a mapping tree being freed (a deleted
 *      volume's, the part a shrink cut off, or a subtree of one of those
 *      that reclaim split off: pool-space.c, rule 3).
 *   5. An operation writes no byte that the committed state shows: every
 *      change is in the transaction, so a failed batch or a crash before
 *      the commit leaves every volume as it was.  So a shrink writes
 *      nothing: a volume maps no block wholly past its end, but the last
 *      block it keeps may hold, past the end, bytes from before a shrink.
 *      Nothing reads there (I/O stays inside the size), and a grow zeroes
 *      them first (grow_locked), in place only where the committed state
 *      cannot show them.
 *   6. The user area's reclaimable is at most the data blocks that reclaim
 *      will still free (pool-space.c, rule 3): a delete or shrink adds the
 *      blocks that the tree it hands to DEFERRED holds alone (no other
 *      mapping, live or deferred, shares them: tree_alone), and reclaim
 *      takes off every block it frees, down to 0.  Nothing can share a
 *      deferred tree's blocks later, so what was counted is freed; what
 *      others shared at the time and reclaim frees when they are gone
 *      too was never counted (it may take off more than the tree added,
 *      hence the floor at 0).  So the figure never exceeds what is to
 *      come, and never counts a block twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pdata/sm.h"
#include "thin/thin-internal.h"
#include "util/checked.h"
#include "util/endian.h"

/* ---- what a delete or a shrink frees (rule 6) ---- */

/*
 * What the tree at root holds alone from key lo on (lo NULL: all of it):
 * the nodes no other tree shares, and in them the mappings of blocks no
 * other mapping shares: what removing that part frees, once reclaim has
 * done it (btree_release_walk).  Looks at limit counts at most, and
 * stops once nodes + blocks * (nodes a block holds) reach enough (0: no
 * such stop); the figures are lower bounds then.  Reads what it counts:
 * O(limit).
 */
#define ALONE_LIMIT 16384 /* counts a delete or shrink looks at (rule 6) */

struct alone {
	struct tv_pool *p;
	uint64_t nodes, blocks;
	uint64_t refs, limit, enough;
};

static int alone_count(void *ctx, uint64_t node, const void *value, bool alone)
{
	struct alone *a = ctx;
	uint32_t count;
	int r;

	(void) node;
	if (a->refs >= a->limit)
		return 1;
	a->refs++;
	if (!value) {
		a->nodes += alone;
	} else {
		r = sm_block_count(tm_sm(a->p->tm), get_le64(value), &count);
		if (r < 0)
			return r;
		a->blocks += count == 1;
	}
	if (a->enough &&
	    a->nodes + a->blocks * (a->p->block_size / PD_NODE_SIZE) >=
		a->enough)
		return 1;
	return 0;
}

static int tree_alone(struct tv_pool *p, const struct tm_ref *root,
		      const uint8_t *lo, uint64_t limit, uint64_t enough,
		      struct alone *out)
{
	int r;

	memset(out, 0, sizeof(*out));
	out->p = p;
	out->limit = limit;
	out->enough = enough;
	r = btree_release_walk(&p->map, root, lo, alone_count, out);
	return r < 0 ? r : 0;
}

/*
 * Rule 6: what a tree handed to DEFERRED adds to reclaimable: the blocks
 * of v's tree from lo on (NULL: all) that it holds alone.  A volume never
 * snapshotted holds all its blocks alone: mapped, which the caller knows
 * (a delete: v.mapped; a shrink: what it cut).  Else they are counted, a
 * delete's up to ALONE_LIMIT counts (a delete stays a bounded step; the
 * rest of a big tree is not counted), a shrink's all (it reads what it
 * cuts anyway, to count the mappings the volume loses).
 */
static int reclaimable_of(struct tv_pool *p, const struct disk_volume *v,
			  const uint8_t *lo, uint64_t mapped, uint64_t *out)
{
	struct tm_ref root;
	struct alone a;
	int r;

	if (!le64_to_cpu(v->snap_epoch)) {
		*out = mapped;
		return 0;
	}
	ref_from_disk(&root, &v->map_root);
	r = tree_alone(p, &root, lo, lo ? UINT64_MAX : ALONE_LIMIT, 0, &a);
	if (r == 0)
		*out = a.blocks;
	return r;
}

static void add_reclaimable(struct tv_pool *p, uint64_t blocks)
{
	struct disk_pool_user *u = pool_user(p);

	u->reclaimable = cpu_to_le64(le64_to_cpu(u->reclaimable) + blocks);
}

/* ---- operations ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

uint64_t volume_id_clock_real(void)
{
	uint64_t ns = now_ns();

	if (ns < TV_ID_EPOCH * 1000000000ull)
		return 0; /* a clock this wrong gives no floor at all */
	return (ns - TV_ID_EPOCH * 1000000000ull) / 1000;
}

uint64_t (*volume_id_clock)(void) = volume_id_clock_real;

static int check_size(uint64_t size)
{
	if (!size || size % TV_SECTOR)
		return tv_err(-EINVAL,
			      "size %" PRIu64 ": must be a non-zero "
			      "multiple of 512",
			      size);
	if (size > (1ull << 60))
		return tv_err(-EINVAL,
			      "size %" PRIu64 ": too large (at most "
			      "1 EiB)",
			      size);
	return 0;
}

static int check_blob(struct tv_pool *p, const void *blob, size_t len)
{
	if (blob && len != p->blob_size)
		return tv_err(-EINVAL,
			      "blob of %zu bytes: this pool's blobs "
			      "are exactly %u bytes",
			      len, p->blob_size);
	return 0;
}

static int new_volume(struct tv_pool *p, const char *name, uint64_t size,
		      struct disk_volume *v)
{
	struct disk_pool_user *u = pool_user(p);
	uint64_t id = le64_to_cpu(u->next_id),
		 least = volume_id_clock ? volume_id_clock() : 0;
	uint64_t other;
	int r;

	r = vol_check_name(name);
	if (r < 0)
		return r;
	r = vol_name_find_locked(p, name, &other);
	if (r == 0)
		return tv_err(-EEXIST,
			      "volume '%s': a volume of that name "
			      "exists (#%" PRIu64 ")",
			      name, other);
	if (r != -ENOENT)
		return r;
	id = MAX(id, least);
	if (id == UINT64_MAX)
		return tv_err(-EOVERFLOW, "volume ids are exhausted");
	memset(v, 0, sizeof(*v));
	v->id = cpu_to_le64(id);
	if (getrandom(v->uuid, 16, 0) != 16)
		return tv_err(-EIO, "no random bytes for a uuid");
	v->uuid[6] = (v->uuid[6] & 0x0f) | 0x40;
	v->uuid[8] = (v->uuid[8] & 0x3f) | 0x80;
	v->size = cpu_to_le64(size);
	v->name_len = cpu_to_le32((uint32_t) strlen(name));
	memcpy(v->name, name, strlen(name));
	v->ctime_ns = cpu_to_le64(now_ns());
	u->next_id = cpu_to_le64(id + 1);
	u->nr_volumes = cpu_to_le64(le64_to_cpu(u->nr_volumes) + 1);
	r = vol_names_add(p, name, id);
	return r;
}

static int op_create(struct tv_pool *p, struct tv_op *op)
{
	uint8_t zero[TV_BLOB_MAX] = {0};
	struct disk_volume v;
	int r;

	r = check_size(op->size);
	if (r == 0)
		r = check_blob(p, op->blob, op->blob_len);
	if (r == 0)
		r = new_volume(p, op->name, op->size, &v);
	if (r == 0)
		r = vol_blob_set_locked(p, le64_to_cpu(v.id), NULL,
					op->blob ? op->blob : zero);
	if (r == 0)
		r = vol_store_locked(p, &v);
	if (r == 0)
		op->result_id = le64_to_cpu(v.id);
	return r;
}

static int op_snapshot(struct tv_pool *p, struct tv_op *op)
{
	uint8_t zero[TV_BLOB_MAX] = {0};
	struct disk_pool_user *u = pool_user(p);
	struct disk_volume o, v;
	struct tm_ref root, clone;
	uint64_t epoch;
	int r;

	if (op->flags & ~TV_VOL_READ_ONLY)
		return tv_err(-EINVAL, "unknown snapshot flags %#x", op->flags);
	r = check_blob(p, op->blob, op->blob_len);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &o);
	if (r == 0)
		r = new_volume(p, op->name, le64_to_cpu(o.size), &v);
	if (r < 0)
		return r;
	/*
	 * The snapshot shares the origin's mapping tree (O(1)).  Both get a
	 * new snapshot epoch: every mapping written before it is possibly
	 * shared, so the next write to it breaks the sharing first.
	 */
	/* Writes in flight on the origin finish first (their data is then
	 * in the snapshot); later ones see the new epoch and copy. */
	p->io->snapshot_locked(p, op->id);
	epoch = le64_to_cpu(u->epoch) + 1;
	u->epoch = cpu_to_le64(epoch);
	ref_from_disk(&root, &o.map_root);
	r = btree_clone(&p->map, &root, &clone);
	if (r < 0)
		return r;
	ref_to_disk(&v.map_root, &clone);
	v.parent = o.id;
	v.flags = cpu_to_le32(op->flags);
	v.snap_epoch = cpu_to_le64(epoch);
	v.mapped = o.mapped;
	o.snap_epoch = cpu_to_le64(epoch);
	r = vol_blob_set_locked(p, le64_to_cpu(v.id), NULL,
				op->blob ? op->blob : zero);
	if (r == 0)
		r = vol_store_locked(p, &o);
	if (r == 0)
		r = vol_store_locked(p, &v);
	if (r == 0)
		op->result_id = le64_to_cpu(v.id);
	return r;
}

static int op_delete(struct tv_pool *p, struct tv_op *op)
{
	struct disk_pool_user *u = pool_user(p);
	uint8_t k[8], blob[TV_BLOB_MAX];
	struct disk_volume v;
	uint64_t alone;
	int r;

	r = vol_lookup_locked(p, op->id, &v);
	if (r == 0)
		r = vol_blob_load_locked(p, op->id, blob);
	if (r < 0)
		return r;
	p->io->invalidate_locked(p, op->id);
	r = vol_names_del(p, &v);
	if (r == 0)
		r = vol_blob_del_locked(p, op->id, blob);
	if (r < 0)
		return r;
	/* Take the record out: its mapping tree reference becomes ours, and
	 * moves to DEFERRED, which frees it a bounded piece at a time. */
	put_be64(k, op->id);
	r = btree_remove(&p->vols, tm_root(p->tm, SLOT_VOLS), k, &v);
	if (r < 0)
		return r;
	u->nr_volumes = cpu_to_le64(le64_to_cpu(u->nr_volumes) - 1);
	if (!v.map_root.blocknr)
		return 0;
	r = reclaimable_of(p, &v, NULL, le64_to_cpu(v.mapped), &alone);
	if (r < 0)
		return r;
	add_reclaimable(p, alone);
	return pool_defer_locked(p, &v.map_root);
}

static int op_rename(struct tv_pool *p, struct tv_op *op)
{
	struct disk_volume v;
	uint64_t other;
	int r;

	r = vol_check_name(op->name);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &v);
	if (r < 0)
		return r;
	r = vol_name_find_locked(p, op->name, &other);
	if (r == 0 && other == op->id)
		return 0;
	if (r == 0)
		return tv_err(-EEXIST,
			      "volume '%s': a volume of that name "
			      "exists (#%" PRIu64 ")",
			      op->name, other);
	if (r != -ENOENT)
		return r;
	r = vol_names_del(p, &v);
	if (r == 0)
		r = vol_names_add(p, op->name, op->id);
	if (r < 0)
		return r;
	memset(v.name, 0, sizeof(v.name));
	memcpy(v.name, op->name, strlen(op->name));
	v.name_len = cpu_to_le32((uint32_t) strlen(op->name));
	return vol_store_locked(p, &v);
}

/* The size the committed state gives volume id (0 when it has none: a
 * volume made in this transaction). */
static int committed_size_locked(struct tv_pool *p, uint64_t id, uint64_t *size)
{
	struct disk_volume cv;
	uint8_t k[8];
	int r;

	put_be64(k, id);
	r = btree_lookup(&p->vols, tm_committed_root(p->tm, SLOT_VOLS), k, &cv);
	if (r == -ENOENT) {
		*size = 0;
		return 0;
	}
	if (r == 0)
		*size = le64_to_cpu(cv.size);
	return r;
}

/*
 * Shrink v to size (rule 5): the mappings of the blocks wholly past the
 * new end move, as a tree of their own, to DEFERRED, which frees them a
 * bounded piece at a time as for a deleted volume.  The volume's tree is
 * split in two: a clone (O(1)) loses everything below the cut, the
 * original everything from it on; each copies only the path to the cut
 * and hands over the subtrees on the other side by reference counts, so
 * the transaction changes O(height) reference counts however much is
 * cut, and its commit stays small, also on a full pool.  Nothing is
 * written to any block: what the last kept block holds past the end
 * stays there, unseen (rule 5), and the old state is whole for a
 * rollback or a crash.
 */
static int shrink_locked(struct tv_pool *p, struct disk_volume *v,
			 uint64_t size)
{
	uint64_t first = DIV_ROUND_UP(size, p->block_size), cut_n = 0;
	uint64_t alone = 0;
	struct tm_ref root, cut;
	struct btree_cursor c;
	struct disk_ref dref;
	uint8_t lo[8];
	bool any;
	int r;

	ref_from_disk(&root, &v->map_root);
	put_be64(lo, first);
	r = btree_cursor_seek(&p->map, &root, lo, &c);
	any = r == 0 && c.valid;
	btree_cursor_close(&c);
	if (r < 0 || !any)
		return r;
	/* rule 6, before the split (after it the two trees share the path
	 * to the cut) */
	r = reclaimable_of(p, v, lo, 0, &alone);
	if (r == 0)
		r = btree_clone(&p->map, &root, &cut);
	if (r == 0)
		r = btree_remove_range(&p->map, &cut, NULL, lo, NULL);
	if (r == 0)
		r = btree_remove_range(&p->map, &root, lo, NULL, &cut_n);
	if (r < 0)
		return r;
	add_reclaimable(p, le64_to_cpu(v->snap_epoch) ? alone : cut_n);
	ref_to_disk(&v->map_root, &root);
	v->mapped = cpu_to_le64(le64_to_cpu(v->mapped) - cut_n);
	ref_to_disk(&dref, &cut);
	return pool_defer_locked(p, &dref);
}

/*
 * Grow v from old (rule 5): the bytes of the block old falls in, from
 * old on, may hold what the volume had there before a shrink; they must
 * read as zeroes now.  When the committed state cannot show them (its
 * size of the volume is at most old) they are zeroed in place; else in
 * a copy of the block, so that a rollback or a crash before the commit
 * finds them as they were.
 */
static int grow_locked(struct tv_pool *p, struct disk_volume *v, uint64_t old)
{
	uint64_t csize;
	int r;

	if (!(old % p->block_size))
		return 0;
	r = committed_size_locked(p, le64_to_cpu(v->id), &csize);
	if (r == 0)
		r = p->io->zero_tail_locked(p, v, old, csize <= old);
	return r;
}

static int op_resize(struct tv_pool *p, struct tv_op *op)
{
	struct disk_volume v;
	uint64_t old;
	int r;

	r = check_size(op->size);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &v);
	if (r < 0)
		return r;
	if (le32_to_cpu(v.flags) & TV_VOL_READ_ONLY)
		return vol_read_only_err(&v);
	old = le64_to_cpu(v.size);
	if (op->size == old)
		return 0;
	/* rule 2 of vio-cache.c: no fast-path I/O uses a block we change */
	p->io->invalidate_locked(p, op->id);
	r = op->size < old ? shrink_locked(p, &v, op->size)
			   : grow_locked(p, &v, old);
	if (r < 0)
		return r;
	v.size = cpu_to_le64(op->size);
	return vol_store_locked(p, &v);
}

static int op_set_blob(struct tv_pool *p, struct tv_op *op)
{
	uint8_t old[TV_BLOB_MAX];
	struct disk_volume v;
	int r;

	if (!op->blob)
		return tv_err(-EINVAL, "set-blob needs a blob");
	r = check_blob(p, op->blob, op->blob_len);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &v);
	if (r == 0)
		r = vol_blob_load_locked(p, op->id, old);
	if (r == 0)
		r = vol_blob_set_locked(p, op->id, old, op->blob);
	return r;
}

static int apply_op(struct tv_pool *p, struct tv_op *op);

/*
 * Pool-space.c, rule 2: whether op fits what the transaction can still commit.
 * A batch is one transaction and cannot commit a part of itself first:
 * no room is -ENOSPC, before the op changes anything.  A delete frees
 * space, and so does a shrink whose cut holds at least what it takes
 * alone: they may use the reserve down to the free floor (*freeing: run
 * them in reserve mode); a shrink whose cut others share (a snapshot's)
 * leaves the reserve, as metadata does.  The tables' changes are bounded
 * from their heights (probe_table); a shrink's split of the mapping tree
 * (shrink_locked) is read from its path, every node on it counted as
 * shared (it is, after the clone); a grow that must copy its tail block
 * is checked where it allocates it (vio.c, rule 9).
 */
static int op_room_locked(struct tv_pool *p, const struct tv_op *op,
			  bool *freeing)
{
	uint32_t blob = p->blob_size ? 1 : 0, chunks = vol_blob_chunks(p);
	enum sm_room kind = SM_ROOM_META;
	struct room_probe q;
	struct disk_volume v;
	bool fits;
	int r = 0;

	*freeing = false;
	probe_init(&q, p);
	switch (op->kind) {
	case TV_OP_CREATE:
	case TV_OP_SNAPSHOT:
		r = probe_table(&q, SLOT_NAMES, 1);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBIDX, blob);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBS, chunks);
		if (r == 0)
			r = probe_table(&q, SLOT_VOLS, 2);
		probe_add(&q, 0, 1); /* a snapshot's clone: the root's count */
		break;
	case TV_OP_DELETE:
		r = probe_table(&q, SLOT_NAMES, 1);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBIDX, blob);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBS, chunks);
		if (r == 0)
			r = probe_table(&q, SLOT_VOLS, 1);
		if (r == 0)
			r = probe_table(&q, SLOT_DEFERRED, 1);
		kind = SM_ROOM_FREE;
		break;
	case TV_OP_RENAME:
		r = probe_table(&q, SLOT_NAMES, 2);
		if (r == 0)
			r = probe_table(&q, SLOT_VOLS, 1);
		break;
	case TV_OP_SET_BLOB:
		r = probe_table(&q, SLOT_BLOBIDX, 2 * blob);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBS, chunks);
		break;
	case TV_OP_RESIZE:
		r = probe_table(&q, SLOT_VOLS, 1);
		if (r < 0 || check_size(op->size) < 0 ||
		    vol_lookup_locked(p, op->id, &v) < 0 ||
		    (le32_to_cpu(v.flags) & TV_VOL_READ_ONLY) ||
		    op->size >= le64_to_cpu(v.size)) {
			tv_err(0, "%s", ""); /* the op says what is wrong */
			break;
		}
		{
			uint8_t k[8];
			struct tm_ref root;

			ref_from_disk(&root, &v.map_root);
			put_be64(k, DIV_ROUND_UP(op->size, p->block_size));
			/* the clone's two ends, the original's one */
			r = probe_path(&q, &p->map, &root, NULL, true, true);
			if (r == 0)
				r = probe_path(&q, &p->map, &root, k, true,
					       true);
			if (r == 0)
				r = probe_path(&q, &p->map, &root, k, true,
					       true);
			if (r == 0)
				r = probe_table(&q, SLOT_DEFERRED, 1);
			/* Into the reserve only if what the shrink cuts off
			 * frees at least the nodes it may take, once reclaim
			 * has done it (pool-space.c, rule 2).  A volume never
			 * snapshotted holds everything alone; a snapshot's
			 * cut, shared with its origin, frees nothing. */
			kind = SM_ROOM_FREE;
			if (r == 0 && le64_to_cpu(v.snap_epoch)) {
				struct alone a;

				r = tree_alone(p, &root, k, ALONE_LIMIT,
					       q.nodes, &a);
				if (r == 0 &&
				    a.nodes + a.blocks * (p->block_size /
							  PD_NODE_SIZE) <
					q.nodes)
					kind = SM_ROOM_META;
			}
		}
		break;
	}
	fits = r == 0 && probe_room(&q, kind, 0);
	probe_free(&q);
	if (r < 0)
		return r;
	if (!fits)
		return tv_err(-ENOSPC,
			      "%s: %s: no room to commit this "
			      "operation",
			      p->path, pool_full_what(p));
	*freeing = kind == SM_ROOM_FREE;
	return 0;
}

static int apply(struct tv_pool *p, struct tv_op *op)
{
	bool freeing;
	int r = op_room_locked(p, op, &freeing);

	if (r < 0)
		return r;
	if (freeing)
		sm_set_reserve_mode(tm_sm(p->tm), true);
	r = apply_op(p, op);
	if (freeing)
		sm_set_reserve_mode(tm_sm(p->tm), false);
	return r;
}

static int apply_op(struct tv_pool *p, struct tv_op *op)
{
	switch (op->kind) {
	case TV_OP_CREATE:
		return op_create(p, op);
	case TV_OP_SNAPSHOT:
		return op_snapshot(p, op);
	case TV_OP_DELETE:
		return op_delete(p, op);
	case TV_OP_RENAME:
		return op_rename(p, op);
	case TV_OP_RESIZE:
		return op_resize(p, op);
	case TV_OP_SET_BLOB:
		return op_set_blob(p, op);
	}
	return tv_err(-EINVAL, "unknown operation %d", (int) op->kind);
}

int tv_batch(struct tv_pool *p, struct tv_op *ops, size_t n, size_t *failed)
{
	size_t i = 0;
	int r = 0;

	tv_err(0, "%s", "");
	pthread_mutex_lock(&p->meta_lock);
	if (p->read_only) {
		r = pool_read_only_err(p);
		goto out;
	}
	/* Commit what the I/O path changed first, so that a failed batch
	 * rolls back only itself. */
	if (p->dirty) {
		r = pool_commit_locked(p);
		if (r < 0)
			goto out;
	}
	for (unsigned int tries = 0;; tries++) {
		for (i = 0; i < n; i++) {
			r = apply(p, &ops[i]);
			if (r < 0)
				break;
		}
		/* Full, while deleted volumes still hold blocks (pool.c,
		 * rule 3): free some of them and try the batch again. */
		if (r != -ENOSPC || tries >= 8 ||
		    !tm_committed_root(p->tm, SLOT_DEFERRED)->blocknr)
			break;
		{
			char msg[256];
			int rm;

			snprintf(msg, sizeof(msg), "%s", tv_last_error());
			pool_abort_locked(p);
			rm = pool_make_room_locked(p);
			if (rm == -ENOSPC) {
				/* nothing more to free: the op's error */
				tv_err(r, "%s", msg);
				if (failed)
					*failed = i;
				goto out;
			}
			if (rm < 0) {
				r = rm;
				goto out;
			}
		}
		tv_err(0, "%s", "");
	}
	if (r < 0) {
		/* A refused op leaves its message; a store error gets one */
		if (!tv_last_error()[0] || tm_state(p->tm))
			tv_err(r, "operation %zu: %s", i + 1, strerror(-r));
		if (failed)
			*failed = i;
		pool_abort_locked(p);
		/* A metadata I/O error or damage (not a refused request):
		 * stop writing until the pool is reopened and checked. */
		if (r == -EIO || r == -EUCLEAN)
			pool_set_read_only(p, r, "metadata I/O failed");
		goto out;
	}
	p->dirty = true;
	r = pool_commit_locked(p);
	if (r < 0 && failed)
		*failed = n; /* no op failed: the commit did */
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

static int one(struct tv_pool *p, struct tv_op *op)
{
	tv_err(0, "%s", "");
	return tv_batch(p, op, 1, NULL);
}

int tv_vol_create(struct tv_pool *p, const char *name, uint64_t size,
		  const void *blob, size_t blob_len, uint64_t *id)
{
	struct tv_op op = {.kind = TV_OP_CREATE,
			   .name = name,
			   .size = size,
			   .blob = blob,
			   .blob_len = blob_len};
	int r = one(p, &op);

	if (r == 0 && id)
		*id = op.result_id;
	return r;
}

int tv_vol_snapshot(struct tv_pool *p, uint64_t origin, const char *name,
		    uint32_t flags, const void *blob, size_t blob_len,
		    uint64_t *id)
{
	struct tv_op op = {.kind = TV_OP_SNAPSHOT,
			   .id = origin,
			   .name = name,
			   .flags = flags,
			   .blob = blob,
			   .blob_len = blob_len};
	int r = one(p, &op);

	if (r == 0 && id)
		*id = op.result_id;
	return r;
}

int tv_vol_delete(struct tv_pool *p, uint64_t id)
{
	struct tv_op op = {.kind = TV_OP_DELETE, .id = id};

	return one(p, &op);
}

int tv_vol_rename(struct tv_pool *p, uint64_t id, const char *name)
{
	struct tv_op op = {.kind = TV_OP_RENAME, .id = id, .name = name};

	return one(p, &op);
}

int tv_vol_resize(struct tv_pool *p, uint64_t id, uint64_t size)
{
	struct tv_op op = {.kind = TV_OP_RESIZE, .id = id, .size = size};

	return one(p, &op);
}

int tv_vol_set_blob(struct tv_pool *p, uint64_t id, const void *blob,
		    size_t len)
{
	struct tv_op op = {
	    .kind = TV_OP_SET_BLOB, .id = id, .blob = blob, .blob_len = len};

	return one(p, &op);
}
