/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vio.c - the write path: write, discard, write-zeroes and flush on
 * volumes; provisioning (new blocks for holes, copies of shared ones);
 * and what commits need of the I/O path (drain, the data to sync, the
 * room provisions in flight hold).  The hooks the pool reaches the I/O
 * path by (struct vio_hooks) are at the end.
 *
 * The I/O path's rules 3 to 9 (vio-cache.c has 1, 2 and 10):
 *
 *   3. Provisioning (a new block for a hole, or the copy of a shared
 *      block) runs in three steps, so that the data I/O of many of them
 *      overlaps:
 *        a. under meta_lock: allocate the block and record it in the
 *           volume's table of provisions in flight (vs->pending: vblock ->
 *           new block, under meta_lock); the trees do not change yet;
 *        b. with no lock: write the data (and zeroes for the rest of a
 *           fresh block unless it is still a hole of the pool file, or
 *           the old contents of a shared block);
 *        c. under meta_lock again: insert the mapping (which drops the
 *           shared block's reference), drop the record, wake waiters.
 *      So a new block's data is on the device before the mapping that
 *      exposes it is inserted, and the commit makes it durable before its
 *      superblock (rule 7): no committed mapping ever points at a block
 *      holding older data.  A block in flight is allocated, so the hole
 *      puncher (pool-commit.c, under meta_lock) leaves it alone, and
 *      nothing freed can be handed out twice.  Writes of zeroes and the
 *      tail zeroing of a grow are rare and run all three steps under one
 *      hold of meta_lock (write_block_locked).  A read of a block the
 *      cache does not know looks it up under meta_lock (a block in flight
 *      reads as before the write: that write has not completed).
 *   4. Waiting for provisions in flight: on vio->done, with meta_lock.
 *        - The commit and the abort drain them all (vio_before_commit_locked,
 *          vio_drain_locked): else a committed space map would hold blocks
 *          that no mapping names (a leak after a crash), or an abort would
 *          free blocks still being written and mapped.  While a drain
 *          waits no provision starts (vio->drainers), so a stream of first
 *          writes cannot starve a commit.
 *        - Step a makes the pool dirty, so tv_batch, which commits first
 *          when dirty and then holds meta_lock to the end, runs snapshot,
 *          delete and resize with no provision in flight.
 *        - A write, zeroing or discard that meets a block in flight of its
 *          volume waits for it, then looks again: two writes racing to
 *          provision one block end with one block mapped and both applied,
 *          in the order they completed.
 *        - A thread never waits while it holds provisions in flight of its
 *          own (it finishes step c first), so the waits cannot deadlock.
 *        - Step c finds the transaction poisoned if another thread's
 *          metadata error is aborting it (that thread waits in its drain):
 *          it then touches no metadata and fails the write.
 *   5. Before a commit, when many bytes went into new blocks since the
 *      last one (into blocks of rule 7's list, with ranged commits),
 *      vio_before_commit_locked flushes the device (writes those blocks
 *      back) with meta_lock dropped: the writeback then runs while the I/O
 *      path goes on, and the commit's own flush under meta_lock has little
 *      left.  If that flush fails the commit fails and the pool goes
 *      read-only: a writeback error is reported once, and the commit's
 *      flush must not pass after it (pool-commit.c, "syncs").
 *   6. Copy-on-write: a mapping written before the volume's last snapshot
 *      epoch may be shared; a write to it goes to a new block holding the
 *      old contents merged with the new data, and the old block loses one
 *      reference (freed if it was not shared after all).
 *   7. What a commit must make durable besides the metadata: the data of
 *      every block provisioned in its transaction, except a fresh block
 *      that was a hole of the pool file when step b began (io_is_hole;
 *      a block device has none, so there every new block is synced).
 *      Such a hole reads as zeroes after a crash whether or not the data
 *      written since reached the disk (a hole punched since the last
 *      commit is durable through the commit's barrier, io_sync_ranges),
 *      and zeroes are the old contents of any block the volume did not
 *      have: the write is then found old or new, as for any write not
 *      yet flushed.  Every other new block (a copy, a block that held
 *      data, a zeroed one) goes on vio->sync at step c, and the
 *      committer's ranged commit (pool_commit_bg_locked) syncs exactly
 *      those with the nodes.  Every other commit, and every flush the
 *      client asks for, flushes everything.
 *   8. A fresh block about to be written while it is a hole of a pool
 *      file first has its PREALLOC_BYTES chunk of the file allocated
 *      (fallocate, KEEP_SIZE; once per chunk since the open, and only if
 *      the whole chunk is a hole, so that blocks freed and punched among
 *      others' data stay holes; ext4 and XFS only): writing into an
 *      allocated, unwritten extent costs ext4 and XFS much less than
 *      allocating at writeback (bench/README.md has the figures).  The
 *      extents read as zeroes, also after a crash, so rule 7 and the
 *      known holes hold.  The allocator hands blocks out in order
 *      (sm.c), so a chunk is mostly used soon; at most one chunk per
 *      place the allocator works is allocated ahead of the data.
 *   9. Room to commit (pool-space.c, rule 2).  Before a step changes
 *      metadata it asks whether the transaction could still commit after
 *      it: a provision, before its block is allocated (prov_room_locked: the
 *      block, the mapping's path, the record's store, on top of what its
 *      batch planned and of every provision in flight, whose costs are
 *      held in vio->held until step c maps them); an unmap, before it
 *      starts (unmap_fit_locked: as many blocks as fit).  The cost of a
 *      path is first bounded from the volume (never snapshotted: no node
 *      shared), and when that bound does not fit, read from the path
 *      itself (btree_path_cost); on a pool file it is read from the path
 *      at once, since the room the bound asks for would be reserved in
 *      the file (sm.c, rule 7).  No room: the first block of a step
 *      makes room (pool_make_room_locked, with no provision of ours in
 *      flight) and starts again, a later block of a batch ends the batch
 *      there; when nothing makes room the write fails with -ENOSPC and
 *      has changed nothing.  Unmaps run in reserve mode; those of a
 *      volume never snapshotted (all its blocks its own: what it unmaps
 *      is freed) may use the reserve as deletes do, the others leave it
 *      (a trim of blocks that a snapshot shares frees nothing).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm.h"
#include "thin/vio-internal.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"
#define SLOW_BATCH 16 /* blocks per hold of meta_lock */
/* new-block bytes after which a commit flushes first without meta_lock */
#define PREFLUSH_BYTES	(16u << 20)
#define PREFLUSH_ROUNDS 3
/* rule 8: the pool file is allocated this much at a time */
#define PREALLOC_BYTES (4u << 20)
/* Rule 9: a mapping tree has at most MAP_DEPTH levels (168 mappings a
 * leaf: 7 levels hold more blocks than a volume of 1 EiB has); one change
 * of it costs at most MAP_OP_NODES new nodes and MAP_OP_COUNTS count
 * changes when no node on its path is shared, and MAP_NODE_REFS more
 * counts per level when every one is (a copy references all its
 * entries). */
#define MAP_DEPTH     8
#define MAP_OP_NODES  (2 * MAP_DEPTH + 1)
#define MAP_OP_COUNTS (4 * MAP_DEPTH + 2)
#define MAP_NODE_REFS 170

/* One provision (rule 3). */
struct prov {
	uint64_t vblock;
	uint64_t block;	    /* the new block */
	uint64_t old;	    /* copy-on-write: the shared block; or NO_BLOCK */
	uint64_t in, len;   /* the range written, inside the block */
	const uint8_t *buf; /* the data; NULL: zeroes */
	int r;		    /* how its data write went */
	bool sync;	    /* rule 7: a commit must make its data durable */
	uint64_t nodes, counts; /* rule 9: what mapping it may cost */
};

/* Rule 9: what a step plans to change. */
struct cost {
	uint64_t blocks, nodes, counts;
};

/* ---- the I/O state ---- */

/* Rule 8: the unit of preallocation, at least a block. */
static uint64_t prealloc_bytes(const struct tv_pool *p)
{
	return MAX((uint64_t) PREALLOC_BYTES, (uint64_t) p->block_size);
}

int vio_init(struct tv_pool *p)
{
	p->vio = calloc(1, sizeof(*p->vio));
	if (!p->vio)
		return -ENOMEM;
	pthread_mutex_init(&p->vio->lock, NULL);
	pthread_mutex_init(&p->vio->wgate, NULL);
	pthread_cond_init(&p->vio->done, NULL);
	u64map_init(&p->vio->vols);
	p->vio->gate = !(p->dev->flags & IO_DEV_BLOCKDEV);
	if (p->dev->ops->prealloc && !(p->dev->flags & IO_DEV_BLOCKDEV) &&
	    !(p->dev->flags & IO_DEV_RDONLY)) {
		uint64_t n = DIV_ROUND_UP(p->dev->size, prealloc_bytes(p));

		p->vio->pa_bits = calloc(DIV_ROUND_UP(n, 64), sizeof(uint64_t));
		if (p->vio->pa_bits) /* else: no preallocation */
			p->vio->pa_chunks = n;
	}
	return 0;
}

void vio_destroy(struct tv_pool *p)
{
	size_t pos = 0;
	uint64_t k, v;

	if (!p->vio)
		return;
	while (u64map_next(&p->vio->vols, &pos, &k, &v)) {
		struct vstate *vs = (struct vstate *) (uintptr_t) v;
		u64map_free(&vs->cache);
		u64map_free(&vs->pending);
		pthread_rwlock_destroy(&vs->lock);
		free(vs);
	}
	u64map_free(&p->vio->vols);
	vio_reap(p);
	free(p->vio->sync);
	free((void *) p->vio->pa_bits);
	pthread_cond_destroy(&p->vio->done);
	pthread_mutex_destroy(&p->vio->wgate);
	pthread_mutex_destroy(&p->vio->lock);
	free(p->vio);
	p->vio = NULL;
}

void vio_reset_locked(struct tv_pool *p)
{
	vio_forget_all_locked(p);
	vio_sync_clear_locked(p);
	if (p->vio)
		p->vio->unflushed = p->vio->unsynced = 0;
}

/* ---- provisioning (rules 3, 6, 7, 8 and 9) ---- */

static int map_put(struct tv_pool *p, struct disk_volume *v, uint64_t vblock,
		   uint64_t block, bool *inserted)
{
	struct disk_mapping m;
	struct tm_ref root;
	uint8_t k[8];
	int r;

	ref_from_disk(&root, &v->map_root);
	put_be64(k, vblock);
	m.block = cpu_to_le64(block);
	m.epoch = pool_user(p)->epoch;
	r = btree_put(&p->map, &root, k, &m, inserted);
	ref_to_disk(&v->map_root, &root);
	return r;
}

/* An error inside a metadata change: the transaction is lost. */
static int fail_locked(struct tv_pool *p, int r)
{
	if (tm_state(p->tm)) {
		pool_abort_locked(p);
		pool_set_read_only(p, r, "metadata update failed");
		/* cached mappings may name blocks of the lost transaction */
		vio_forget_all_locked(p);
	}
	return r;
}

/* Rule 9: a bound on one change of v's mapping tree from what v is
 * (into q): snap_epoch is 0 until the volume is snapshotted or is a
 * snapshot, and until then no other tree shares its nodes. */
static void map_bound(const struct disk_volume *v, struct room_probe *q)
{
	uint64_t counts = MAP_OP_COUNTS;

	if (le64_to_cpu(v->snap_epoch))
		counts += MAP_DEPTH * MAP_NODE_REFS;
	probe_add(q, MAP_OP_NODES, counts);
}

/* Rule 9: the cost of one change of v's mapping tree at vblock as its
 * path holds it now (into q). */
static int map_probe(struct tv_pool *p, const struct disk_volume *v,
		     uint64_t vblock, struct room_probe *q)
{
	struct tm_ref root;
	uint8_t k[8];

	ref_from_disk(&root, &v->map_root);
	put_be64(k, vblock);
	return probe_path(q, &p->map, &root, k, false, true);
}

/* Rule 9: room for a new block at vblock of v, on top of what the step
 * planned already (acc); *c gets the mapping's cost.  -EAGAIN: none. */
static int prov_room_locked(struct tv_pool *p, const struct disk_volume *v,
			    uint64_t vblock, const struct cost *acc,
			    struct cost *c)
{
	/* on a pool file, the room the bound asks for would be held in the
	 * file (sm.c, rule 7): several MiB that new data then lacks */
	for (int exact = sm_fs_room(tm_sm(p->tm)); exact < 2; exact++) {
		struct room_probe q;
		bool fits;
		int r = 0;

		probe_init(&q, p);
		if (exact)
			r = map_probe(p, v, vblock, &q);
		else
			map_bound(v, &q);
		c->nodes = q.nodes;
		c->counts = q.windows + 2; /* the new block, the old one */
		/* and the store of the volume's record at the step's end */
		probe_add(&q, acc->nodes, acc->counts + 2);
		if (r == 0 && exact)
			r = probe_table(&q, SLOT_VOLS, 1);
		else
			probe_add(&q, TABLE_OP_NODES, TABLE_OP_COUNTS);
		fits = r == 0 && probe_room(&q, SM_ROOM_DATA, acc->blocks + 1);
		probe_free(&q);
		if (r < 0)
			return r;
		if (fits)
			return 0;
	}
	return -EAGAIN;
}

/*
 * Step a of a write of buf (NULL: zeroes) at [in, in + len) of virtual
 * block vblock (rule 3), meta_lock held.  Our own block is written in
 * place at once, unless copy (its old bytes must survive: the committed
 * state may show them); zeroes over a hole need nothing; else a new block
 * is allocated and described in *pv, and *queued set: steps b and c are
 * the caller's.  acc: what the step planned so far (rule 9), this block
 * added; -EAGAIN when there is no room for it.
 */
static int plan_block_locked(struct tv_pool *p, const struct disk_volume *v,
			     struct vstate *vs, uint64_t vblock, uint64_t in,
			     const uint8_t *buf, uint64_t len, bool copy,
			     struct cost *acc, struct prov *pv, bool *queued)
{
	struct disk_mapping m;
	uint64_t old = NO_BLOCK, nb;
	struct cost c;
	int r;

	*queued = false;
	r = vio_map_lookup(p, v, vblock, &m);
	if (r < 0 && r != -ENOENT)
		return vio_map_failed_locked(p, v, r);
	if (r == 0) {
		bool own;

		old = le64_to_cpu(m.block);
		r = vio_mapping_use_locked(p, v, vblock, &m, &own);
		if (r < 0)
			return r;
		if (own && !copy) {
			/* our own block: in place */
			r = buf ? io_write(p->dev, buf, len,
					   dev_off(p, old, in))
				: io_write_zeroes(p->dev, dev_off(p, old, in),
						  len);
			if (r == 0 && vs)
				vio_cache_put_own(vs, vblock, old);
			return r;
		}
	} else if (!buf) {
		return 0; /* zeroes over a hole: nothing to do */
	}
	r = prov_room_locked(p, v, vblock, acc, &c);
	if (r < 0)
		return r;
	r = sm_alloc_block(tm_sm(p->tm), &nb);
	if (r < 0)
		return r == -ENOSPC ? tv_err(r, "%s: the pool is full", p->path)
				    : r;
	acc->blocks++;
	acc->nodes += c.nodes;
	acc->counts += c.counts;
	pv->nodes = c.nodes;
	pv->counts = c.counts;
	pv->vblock = vblock;
	pv->block = nb;
	pv->old = old;
	pv->in = in;
	pv->len = len;
	pv->buf = buf;
	pv->r = 0;
	*queued = true;
	return 0;
}

/* Rule 8: allocate the pool file's chunk around byte at, once. */
static void prealloc_chunk(struct tv_pool *p, uint64_t at)
{
	struct vio *io = p->vio;
	uint64_t unit = prealloc_bytes(p), chunk = at / unit;
	uint64_t bit = 1ull << (chunk % 64), len;
	int r;

	if (chunk >= io->pa_chunks ||
	    (atomic_load_explicit(&io->pa_bits[chunk / 64],
				  memory_order_relaxed) &
	     bit) ||
	    (atomic_fetch_or(&io->pa_bits[chunk / 64], bit) & bit))
		return;
	len = MIN(unit, p->dev->size - chunk * unit);
	/* only a chunk that is all hole: never allocate again the freed
	 * blocks the committer punched among others' data */
	if (!io_is_hole(p->dev, chunk * unit, len))
		return;
	r = io_prealloc(p->dev, chunk * unit, len);
	if (r < 0 && r != -ENOSPC)
		log_debug("%s: preallocating %" PRIu64 " bytes at %" PRIu64
			  ": %s",
			  p->path, len, chunk * unit, strerror(-r));
}

/* Step b: the data of a new block (no lock needed: rule 3).  Sets
 * pv->sync (rule 7). */
static int prov_write(struct tv_pool *p, struct prov *pv)
{
	uint32_t bs = p->block_size;
	uint64_t at = dev_off(p, pv->block, 0);
	uint8_t *tmp;
	int r;

	/* A hole of a sparse pool file (never written, or punched when
	 * freed — the puncher runs under meta_lock and skips allocated
	 * blocks) reads as zeroes, also after a crash. */
	pv->sync =
	    pv->old != NO_BLOCK || !pv->buf || !io_is_hole(p->dev, at, bs);
	if (!pv->sync)
		prealloc_chunk(p, at);
	if (pv->len == bs && pv->buf) /* nothing of the old block is kept */
		return io_write(p->dev, pv->buf, bs, at);
	if (pv->old == NO_BLOCK &&
	    !(pv->sync && (p->dev->flags & IO_DEV_BLOCKDEV))) {
		/* a fresh block: what the write does not cover reads zero,
		 * whatever the block held before; a hole already does, and
		 * zeroing it would only cost time */
		r = pv->sync ? io_write_zeroes(p->dev, at, bs) : 0;
		return r ? r : io_write(p->dev, pv->buf, pv->len, at + pv->in);
	}
	/*
	 * One write of the whole block: the old contents (copy-on-write), or
	 * for a fresh block of a device zeroes, with the new data over them.
	 * On a device that goes through the page cache like the data, rather
	 * than BLKZEROOUT (a synchronous command to the device) and then the
	 * data: before Linux 5.15 readahead could also cache the block's old
	 * bytes between the two.
	 */
	tmp = pv->old == NO_BLOCK ? calloc(1, bs) : malloc(bs);
	if (!tmp)
		return -ENOMEM;
	r = pv->old == NO_BLOCK
		? 0
		: io_read(p->dev, tmp, bs, dev_off(p, pv->old, 0));
	if (r == 0) {
		if (pv->buf)
			memcpy(tmp + pv->in, pv->buf, pv->len);
		else
			memset(tmp + pv->in, 0, pv->len);
		r = io_write(p->dev, tmp, bs, at);
	}
	free(tmp);
	return r;
}

/* Step b for a batch, one batch at a time on a pool file (io->wgate):
 * the file's inode lock lets one buffered write in at a time anyway, and
 * threads waiting for it in the kernel (rwsem_spin_on_owner) spin on a
 * CPU the holder or the client could use.  Block by block: writing
 * neighbouring whole blocks with one pwrite saves little, and then ext4
 * caches the file in folios as large as the write, which makes every
 * later small overwrite in them slower (ext4_block_write_begin visits
 * each buffer of the folio).  bench/README.md has the figures. */
static void prov_write_all(struct tv_pool *p, struct prov *pv, unsigned int n)
{
	struct vio *io = p->vio;

	if (io->gate)
		pthread_mutex_lock(&io->wgate);
	for (unsigned int i = 0; i < n; i++)
		pv[i].r = prov_write(p, &pv[i]);
	if (io->gate)
		pthread_mutex_unlock(&io->wgate);
}

/* Rule 7: the next commit makes block's data durable. */
static void sync_add_locked(struct vio *io, uint64_t block)
{
	if (io->nr_sync == io->sync_cap) {
		size_t cap = io->sync_cap ? io->sync_cap * 2 : 256;
		uint64_t *v = realloc(io->sync, cap * sizeof(*v));

		if (!v) {
			io->sync_lost = true;
			return;
		}
		io->sync = v;
		io->sync_cap = cap;
	}
	io->sync[io->nr_sync++] = block;
}

int vio_sync_ranges_locked(struct tv_pool *p, struct io_range **out, size_t *n)
{
	struct vio *io = p->vio;
	struct io_range *v;

	*out = NULL;
	*n = 0;
	if (io->sync_lost)
		return -ENOMEM;
	if (!io->nr_sync)
		return 0;
	v = malloc(io->nr_sync * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < io->nr_sync; i++)
		v[i] = (struct io_range){dev_off(p, io->sync[i], 0),
					 p->block_size};
	*out = v;
	*n = io->nr_sync;
	return 0;
}

bool vio_had_io(struct tv_pool *p)
{
	bool any;

	if (!p->vio)
		return false;
	pthread_mutex_lock(&p->vio->lock);
	any = p->vio->vols.len > 0;
	pthread_mutex_unlock(&p->vio->lock);
	return any;
}

void vio_sync_clear_locked(struct tv_pool *p)
{
	struct vio *io = p->vio;

	if (!io)
		return;
	io->nr_sync = 0;
	io->sync_lost = false;
	if (io->sync_cap > 65536) {
		free(io->sync);
		io->sync = NULL;
		io->sync_cap = 0;
	}
}

/* Step c for one block: map it (meta_lock held; v is stored by the
 * caller).  An error poisons the transaction: abort undoes it all. */
static int prov_insert_locked(struct tv_pool *p, struct disk_volume *v,
			      struct vstate *vs, const struct prov *pv)
{
	bool inserted;
	int r;

	r = map_put(p, v, pv->vblock, pv->block, &inserted);
	if (r < 0)
		return r;
	if (inserted)
		v->mapped = cpu_to_le64(le64_to_cpu(v->mapped) + 1);
	if (vs)
		vio_cache_put_own(vs, pv->vblock, pv->block);
	p->dirty = true;
	if (pv->sync && (p->dev->flags & IO_DEV_RANGED_SYNC))
		sync_add_locked(p->vio, pv->block);
	return 0;
}

/*
 * Write buf (NULL: zeroes) at [in, in + len) of virtual block vblock, all
 * three steps under this one hold of meta_lock (rule 3: zeroing, and the
 * tail zeroing of a grow); copy as for plan_block_locked.  The record v
 * is updated in memory (the caller stores it).  -EAGAIN: no room (rule
 * 9), nothing done.
 */
static int write_block_locked(struct tv_pool *p, struct disk_volume *v,
			      struct vstate *vs, uint64_t vblock, uint64_t in,
			      const uint8_t *buf, uint64_t len, bool copy)
{
	struct cost acc = {0, 0, 0};
	struct prov pv;
	bool queued;
	int r;

	r = plan_block_locked(p, v, vs, vblock, in, buf, len, copy, &acc, &pv,
			      &queued);
	if (r < 0 || !queued)
		return r;
	r = prov_write(p, &pv);
	if (r == 0)
		return prov_insert_locked(p, v, vs, &pv);
	if (r == -ENOSPC || r == -EDQUOT)
		sm_fs_full(tm_sm(p->tm)); /* sm.c, rule 7 */
	sm_dec_block(tm_sm(p->tm), pv.block, NULL);
	return r;
}

/* ---- provisions in flight (rules 4 and 5) ---- */

/* Whether vs has a provision in flight in [first, first + nr). */
static bool in_flight(const struct vstate *vs, uint64_t first, uint64_t nr)
{
	size_t pos = 0;
	uint64_t k, val;

	if (!vs->pending.len)
		return false;
	if (nr <= 64) {
		for (uint64_t b = first; b < first + nr; b++)
			if (u64map_find(&vs->pending, b))
				return true;
		return false;
	}
	while (u64map_next(&vs->pending, &pos, &k, &val))
		if (k >= first && k - first < nr)
			return true;
	return false;
}

void vio_drain_locked(struct tv_pool *p)
{
	struct vio *io = p->vio;

	if (!io || !io->nr_pending)
		return;
	io->drainers++;
	while (io->nr_pending)
		pthread_cond_wait(&io->done, &p->meta_lock);
	if (--io->drainers == 0)
		pthread_cond_broadcast(&io->done); /* provisions may start */
}

void vio_before_commit_locked(struct tv_pool *p, bool ranged)
{
	struct vio *io = p->vio;

	if (!io)
		return;
	ranged = ranged && (p->dev->flags & IO_DEV_RANGED_SYNC);
	for (int i = 0;
	     i < PREFLUSH_ROUNDS && !p->read_only && !tm_state(p->tm) &&
	     (ranged ? io->unsynced : io->unflushed) >= PREFLUSH_BYTES;
	     i++) {
		struct io_range *rg = NULL;
		size_t n = SIZE_MAX;
		int r;

		/* a ranged commit syncs rule 7's blocks only: write those
		 * back; any other commit flushes everything */
		io->unsynced = 0;
		if (ranged && vio_sync_ranges_locked(p, &rg, &n) < 0)
			n = SIZE_MAX;
		if (n == SIZE_MAX)
			io->unflushed = 0;
		pthread_mutex_unlock(&p->meta_lock);
		r = pool_sync_unlocked(p, rg, n);
		free(rg);
		pthread_mutex_lock(&p->meta_lock);
		if (r < 0) {
			/* the commit must fail: its own flush would not see
			 * this error again (rule 5); pool_sync_unlocked
			 * recorded it for the commit (pool-commit.c,
			 * "syncs") */
			log_error("%s: flush: %s", p->path, strerror(-r));
			break;
		}
	}
	vio_drain_locked(p);
}

/* Step a's end: the batch's provisions become in flight. */
static int pending_add_locked(struct tv_pool *p, struct vstate *vs,
			      const struct prov *pv, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		if (u64map_put(&vs->pending, pv[i].vblock, pv[i].block) < 0) {
			while (i--)
				u64map_del(&vs->pending, pv[i].vblock);
			return tv_err(-ENOMEM, "out of memory");
		}
	}
	p->vio->nr_pending += n;
	for (unsigned int i = 0; i < n; i++) {
		p->vio->held_nodes += pv[i].nodes;
		p->vio->held_counts += pv[i].counts;
	}
	p->dirty = true; /* rule 4: whoever commits when dirty drains */
	return 0;
}

void vio_held_locked(struct tv_pool *p, uint64_t *nodes, uint64_t *counts)
{
	*nodes = p->vio ? p->vio->held_nodes : 0;
	*counts = p->vio ? p->vio->held_counts : 0;
}

/*
 * Step c for a batch: map the blocks whose data was written, give back
 * the others, end their time in flight.  meta_lock held.  Returns 0 or the
 * first error.
 */
static int pending_finish_locked(struct tv_pool *p, struct vstate *vs,
				 uint64_t id, const struct prov *pv,
				 unsigned int n)
{
	struct disk_volume v, before;
	bool poisoned = tm_state(p->tm) || p->read_only;
	bool have_v = false;
	int r = 0, werr = 0;

	if (poisoned) {
		/* an abort waits for us in its drain: it frees the blocks */
		r = tm_state(p->tm) ? tm_state(p->tm) : -EROFS;
		r = tv_err(r, "%s: the pool failed during the write", p->path);
	} else {
		r = vol_lookup_locked(p, id, &v);
		have_v = r == 0;
		before = v;
	}
	for (unsigned int i = 0; i < n; i++) {
		if (pv[i].r < 0 && !werr)
			werr = pv[i].r;
		/* sm.c, rule 7: the filesystem is full */
		if ((pv[i].r == -ENOSPC || pv[i].r == -EDQUOT) && !poisoned)
			sm_fs_full(tm_sm(p->tm));
		if (r == 0 && pv[i].r == 0) {
			r = prov_insert_locked(p, &v, vs, &pv[i]);
			uint64_t bytes =
			    pv[i].old == NO_BLOCK ? pv[i].len : p->block_size;

			p->vio->unflushed += bytes;
			if (pv[i].sync)
				p->vio->unsynced += bytes;
		} else if (!poisoned && !tm_state(p->tm)) {
			sm_dec_block(tm_sm(p->tm), pv[i].block, NULL);
		}
		u64map_del(&vs->pending, pv[i].vblock);
		p->vio->held_nodes -= pv[i].nodes;
		p->vio->held_counts -= pv[i].counts;
	}
	p->vio->nr_pending -= n;
	pthread_cond_broadcast(&p->vio->done);
	if (poisoned)
		return r;
	if (have_v && memcmp(&v, &before, sizeof(v)) && !tm_state(p->tm)) {
		int rs = vol_store_locked(p, &v);
		if (rs < 0 && r == 0)
			r = rs;
	}
	if (r < 0)
		return fail_locked(p, r);
	if (werr)
		return tv_err(werr, "volume #%" PRIu64 ": write: %s", id,
			      strerror(-werr));
	return 0;
}

static int unmap_block_locked(struct tv_pool *p, struct disk_volume *v,
			      uint64_t vblock)
{
	struct tm_ref root;
	uint8_t k[8];
	int r;

	ref_from_disk(&root, &v->map_root);
	put_be64(k, vblock);
	r = btree_remove(&p->map, &root, k, NULL);
	ref_to_disk(&v->map_root, &root);
	if (r == -ENOENT)
		return 0;
	if (r == 0) {
		v->mapped = cpu_to_le64(le64_to_cpu(v->mapped) - 1);
		p->dirty = true;
	}
	return r;
}

/* Unmap virtual blocks [first, first + nr) of v, waiting for fast-path
 * I/O on the volume first (rule 2). */
static int unmap_blocks_locked(struct tv_pool *p, struct disk_volume *v,
			       struct vstate *vs, uint64_t first, uint64_t nr)
{
	struct tm_ref root;
	uint8_t lo[8], hi[8];
	uint64_t removed = 0;
	int r;

	if (nr == 1) {
		vio_cache_del(vs, first);
		r = unmap_block_locked(p, v, first);
		if (r == 0)
			vio_cache_put(vs, first, C_HOLE);
		return r;
	}
	pthread_rwlock_wrlock(&vs->lock);
	u64map_clear(&vs->cache);
	pthread_rwlock_unlock(&vs->lock);
	ref_from_disk(&root, &v->map_root);
	put_be64(lo, first);
	put_be64(hi, first + nr);
	r = btree_remove_range(&p->map, &root, lo, hi, &removed);
	ref_to_disk(&v->map_root, &root);
	if (r == 0 && removed) {
		v->mapped = cpu_to_le64(le64_to_cpu(v->mapped) - removed);
		p->dirty = true;
	}
	return r;
}

static int writable_locked(struct tv_pool *p, const struct disk_volume *v)
{
	if (p->read_only)
		return pool_read_only_err(p);
	if (le32_to_cpu(v->flags) & TV_VOL_READ_ONLY)
		return vol_read_only_err(v);
	return 0;
}

/* ---- the API ---- */

/*
 * Rule 9: how many of the nr whole blocks from vblock of v one unmap may
 * take, leaving the transaction able to commit: all of them when they
 * fit, else as many as do (*nr; 0: not even one).
 */
static int unmap_fit_locked(struct tv_pool *p, const struct disk_volume *v,
			    uint64_t vblock, uint64_t *nr)
{
	uint64_t n = *nr, m = le64_to_cpu(v->mapped);
	bool exact = sm_fs_room(tm_sm(p->tm)); /* as prov_room_locked */

	for (;;) {
		struct room_probe q;
		bool fits;
		int r = 0;

		probe_init(&q, p);
		/* both ends of a range (a single block: one path) */
		if (!exact) {
			map_bound(v, &q);
			if (n > 1)
				map_bound(v, &q);
		} else {
			r = map_probe(p, v, vblock, &q);
			if (r == 0 && n > 1)
				r = map_probe(p, v, vblock + n, &q);
		}
		/* the blocks, and the nodes released with them (a leaf
		 * holds at least 42 mappings), and the record's store: no
		 * more blocks than the volume maps (a trim of a huge, mostly
		 * unmapped range goes in one step) */
		probe_add(&q, 0, MIN(n, m) + MIN(n, m) / 32 + 2);
		if (r == 0 && exact)
			r = probe_table(&q, SLOT_VOLS, 1);
		else
			probe_add(&q, TABLE_OP_NODES, TABLE_OP_COUNTS);
		/* A volume never snapshotted owns all its blocks: what it
		 * unmaps is freed, and it may use the reserve as deletes do.
		 * Else the reserve stays: an unmap of blocks a snapshot
		 * shares frees nothing, and must not eat what reclaim and
		 * deletes need to free space (pool-space.c, rule 2). */
		fits = r == 0 &&
		       probe_room(&q,
				  le64_to_cpu(v->snap_epoch) ? SM_ROOM_META
							     : SM_ROOM_FREE,
				  0);
		probe_free(&q);
		if (r < 0)
			return r;
		if (fits) {
			*nr = n;
			return 0;
		}
		if (!exact) {
			exact = true;
		} else if (n == 1) {
			*nr = 0;
			return 0;
		} else {
			n /= 2;
		}
	}
}

/*
 * The slow path of modify(): the first blocks of [off, off + len), up to
 * SLOW_BATCH of them, or the whole blocks of a discard at once (as many
 * as rule 9 lets one step take).  Sets *done to the bytes done.
 * Provisions run in the three steps of rule 3.
 */
static int slow_modify(struct tv_pool *p, struct vstate *vs, uint64_t id,
		       const uint8_t *buf, uint64_t len, uint64_t off,
		       bool discard, bool *checked, uint64_t *done)
{
	uint32_t bs = p->block_size;
	uint64_t vblock = off / bs, in = off % bs;
	uint64_t n = MIN(len, bs - in), did = 0;
	bool unmap = discard && in == 0 && n == bs;
	struct prov pv[SLOW_BATCH];
	struct disk_volume v, before;
	struct cost acc = {0, 0, 0};
	unsigned int npv = 0, tries = 0;
	int r, late = 0;

	pthread_mutex_lock(&p->meta_lock);
again:
	/* rule 4: no new provision while a drain waits; and whatever is in
	 * flight where we go first */
	while (p->vio->drainers || in_flight(vs, vblock, unmap ? len / bs : 1))
		pthread_cond_wait(&p->vio->done, &p->meta_lock);
	r = vol_lookup_locked(p, id, &v);
	if (r == 0)
		r = writable_locked(p, &v);
	/* Always, not only the first time: a shrink between two rounds of
	 * a multi-block write must stop it, else it would map blocks past
	 * the new end (and a later grow would show them). */
	if (r == 0)
		r = vio_check_range(p, &v, len, off);
	if (r < 0) {
		pthread_mutex_unlock(&p->meta_lock);
		return r;
	}
	vio_vstate_fill(p, vs, &v);
	*checked = true;
	before = v;
	if (unmap) {
		/* the whole blocks left in the range, at once, or as many as
		 * the commit has room for (rule 9) */
		uint64_t nr = len / bs;

		r = unmap_fit_locked(p, &v, vblock, &nr);
		if (r == 0 && !nr)
			r = -EAGAIN;
		if (r == 0) {
			did = nr * bs;
			sm_set_reserve_mode(tm_sm(p->tm), true);
			r = unmap_blocks_locked(p, &v, vs, vblock, nr);
			sm_set_reserve_mode(tm_sm(p->tm), false);
		}
	} else {
		/* this block and up to SLOW_BATCH - 1 more in one hold of
		 * the lock, with one store of the volume record: a large
		 * first write is many provisionings in a row */
		for (unsigned int k = 0;;) {
			bool queued = false;

			if (buf)
				r = plan_block_locked(p, &v, vs, vblock, in,
						      buf + did, n, false, &acc,
						      &pv[npv], &queued);
			else
				r = write_block_locked(p, &v, vs, vblock, in,
						       NULL, n, false);
			if (r == -EAGAIN && k) {
				r = 0; /* rule 9: the batch ends here */
				break;
			}
			if (r < 0)
				break;
			npv += queued;
			did += n;
			if (++k >= SLOW_BATCH || did >= len)
				break;
			vblock++;
			in = 0;
			n = MIN(len - did, bs);
			if (discard && n == bs)
				break; /* unmapped at once, above */
			if (in_flight(vs, vblock, 1))
				break; /* the next round waits for it */
		}
	}
	if (r == -EAGAIN) {
		/* Rule 9: no room for the step's first block, and nothing of
		 * the step done: make room (commit, or free deleted
		 * volumes' blocks), then look everything up again.  A few
		 * tries: other threads may fill what was made. */
		r = ++tries <= 4 ? pool_make_room_locked(p) : -ENOSPC;
		if (r == 0) {
			vblock = off / bs;
			in = off % bs;
			n = MIN(len, bs - in);
			goto again;
		}
		if (r == -ENOSPC)
			r = tv_err(r, "%s: %s", p->path, pool_full_what(p));
		pthread_mutex_unlock(&p->meta_lock);
		return r;
	}
	if (r < 0 && npv && !tm_state(p->tm)) {
		/* a refused allocation (ENOSPC) or a data error in the
		 * middle of the batch: the blocks before it are still
		 * written and mapped, as a write that fails part way may
		 * leave them (and a full pool then stays full) */
		late = r;
		r = 0;
	}
	/* Store what was done, also when a later block of the batch failed
	 * with a data error: the mappings made before it are in v's tree.
	 * (After a metadata error the transaction is poisoned and abort
	 * undoes all.)  Before the provisions go in flight: a failure here
	 * aborts, and the abort would wait for them (rule 4). */
	if (memcmp(&v, &before, sizeof(v)) && (r == 0 || !tm_state(p->tm))) {
		int rs = vol_store_locked(p, &v);
		if (rs < 0)
			r = rs;
	}
	if (r == 0 && npv)
		r = pending_add_locked(p, vs, pv, npv);
	if (r < 0 && !tm_state(p->tm)) {
		/* give back what this batch allocated (after a metadata
		 * error the abort does) */
		for (unsigned int i = 0; i < npv; i++)
			sm_dec_block(tm_sm(p->tm), pv[i].block, NULL);
	}
	if (r < 0)
		r = fail_locked(p, r);
	pthread_mutex_unlock(&p->meta_lock);
	*done = did;
	if (r < 0 || !npv)
		return r;

	/* step b, with no lock held: other requests run meanwhile */
	prov_write_all(p, pv, npv);

	pthread_mutex_lock(&p->meta_lock);
	r = pending_finish_locked(p, vs, id, pv, npv);
	pthread_mutex_unlock(&p->meta_lock);
	return r < 0 ? r : late;
}

/* Write or zero (buf NULL) a range; discard unmaps whole blocks. */
static int modify(struct tv_pool *p, uint64_t id, const uint8_t *buf,
		  uint64_t len, uint64_t off, bool discard)
{
	struct vstate *vs = vio_vstate_get(p, id);
	uint32_t bs = p->block_size;
	bool checked = false;
	int r = 0;

	if (!vs)
		return tv_err(-ENOMEM, "out of memory");
	while (len) {
		uint64_t vblock = off / bs, in = off % bs;
		uint64_t n = MIN(len, bs - in);

		/* fast path: our own block, cached: write in place */
		if (buf) {
			uint64_t *cv;
			pthread_rwlock_rdlock(&vs->lock);
			if (checked || fast_ok(vs, len, off, true)) {
				checked = true;
				cv = u64map_find(&vs->cache, vblock);
				if (cv && c_own(vs, *cv) &&
				    fast_val_ok(p, *cv)) {
					r = io_write(
					    p->dev, buf, n,
					    dev_off(p, c_block(*cv), in));
					pthread_rwlock_unlock(&vs->lock);
					if (r < 0)
						return tv_err(r,
							      "volume #%" PRIu64
							      ": write: %s",
							      id, strerror(-r));
					goto next;
				}
			}
			pthread_rwlock_unlock(&vs->lock);
		}
		r = slow_modify(p, vs, id, buf, len, off, discard, &checked,
				&n);
		if (r < 0)
			return r;
	next:
		if (buf)
			buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

int tv_vol_write(struct tv_pool *p, uint64_t id, const void *buf, size_t len,
		 uint64_t off, unsigned int flags)
{
	int r;

	if (flags & ~TV_IO_FUA)
		return tv_err(-EINVAL, "unknown write flags %#x", flags);
	r = modify(p, id, buf, len, off, false);
	if (r == 0 && (flags & TV_IO_FUA))
		r = tv_pool_flush(p);
	return r;
}

int tv_vol_discard(struct tv_pool *p, uint64_t id, uint64_t len, uint64_t off)
{
	return modify(p, id, NULL, len, off, true);
}

int tv_vol_write_zeroes(struct tv_pool *p, uint64_t id, uint64_t len,
			uint64_t off)
{
	/* Whole blocks are unmapped (they read as zeroes and cost nothing);
	 * partial ones are zeroed. */
	return modify(p, id, NULL, len, off, true);
}

int tv_vol_flush(struct tv_pool *p, uint64_t id)
{
	(void) id;
	return tv_pool_flush(p);
}

int vio_zero_tail_locked(struct tv_pool *p, struct disk_volume *v,
			 uint64_t from, bool in_place)
{
	uint32_t bs = p->block_size;
	uint64_t in = from % bs;
	struct disk_mapping m;
	uint8_t *tail;
	bool zero = true, own;
	int r;

	if (!in)
		return 0;
	r = vio_map_lookup(p, v, from / bs, &m);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return vio_map_failed_locked(p, v, r);
	/* rule 10: the block is read below, before any write looks at it */
	r = vio_mapping_use_locked(p, v, from / bs, &m, &own);
	if (r < 0)
		return r;
	/* Already zero (never shrunk from further, or zeroed before): no
	 * write, and no copy of a block a snapshot shares. */
	tail = malloc(bs - in);
	if (!tail)
		return tv_err(-ENOMEM, "out of memory");
	r = io_read(p->dev, tail, bs - in,
		    dev_off(p, le64_to_cpu(m.block), in));
	for (uint64_t i = 0; r == 0 && zero && i < bs - in; i++)
		zero = !tail[i];
	free(tail);
	if (r < 0)
		return tv_err(r, "volume #%" PRIu64 ": read: %s",
			      (uint64_t) le64_to_cpu(v->id), strerror(-r));
	if (zero)
		return 0;
	r = write_block_locked(p, v, NULL, from / bs, in, NULL, bs - in,
			       !in_place);
	/* a batch cannot commit early (rule 9): the pool is full for it */
	return r == -EAGAIN
		   ? tv_err(-ENOSPC, "%s: %s", p->path, pool_full_what(p))
		   : r;
}

/* ---- the pool's hooks (thin-internal.h) ---- */

const struct vio_hooks vio_pool_hooks = {
    .tm = &vio_tm_hooks,
    .init = vio_init,
    .destroy = vio_destroy,
    .reset_locked = vio_reset_locked,
    .before_commit_locked = vio_before_commit_locked,
    .drain_locked = vio_drain_locked,
    .sync_ranges_locked = vio_sync_ranges_locked,
    .sync_clear_locked = vio_sync_clear_locked,
    .held_locked = vio_held_locked,
    .had_io = vio_had_io,
    .forget_all_locked = vio_forget_all_locked,
    .invalidate_locked = vio_invalidate_locked,
    .snapshot_locked = vio_snapshot_locked,
    .reap_pending = vio_reap_pending,
    .reap = vio_reap,
    .zero_tail_locked = vio_zero_tail_locked,
};
