/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vio-cache.c - the volumes' cached state for the I/O path: each volume
 * that has seen I/O has a struct vstate (vio-internal.h) with its size and
 * flags and a mapping cache: virtual block -> pool block, with a bit
 * saying the block is the volume's own (written since its last snapshot,
 * so not shared).  Also what the pool asks of that state (invalidate,
 * snapshot, forget, reap: through struct vio_hooks), the set of metadata
 * chunks the fast path tests, and the checks every mapping read from a
 * tree passes before it is used or cached.
 *
 * The I/O path's rules 1, 2 and 10 (vio.c has 3 to 9):
 *
 *   1. Lock order: pool->meta_lock before any vstate->lock, never the
 *      other way round.  The fast path takes only vstate->lock (shared).
 *   2. A read or an in-place write through the cache holds vstate->lock
 *      shared for the whole device I/O.  Whatever unmaps a block or takes
 *      away its "own" bit (discard, snapshot, delete, resize) takes
 *      vstate->lock exclusively first — so it waits for those I/Os, and no
 *      block is freed, reused or shared while a fast-path I/O uses it.
 *      That is also how a snapshot drains the writes in flight on its
 *      origin: they finish before the tree is cloned.
 *  10. A mapping read from the tree is used only if its block is a data
 *      block in use: inside the pool's data area (not the superblocks,
 *      not past the end), no metadata chunk, and counted in the space map
 *      (map_block_check where a mapping leaves the tree: the slow paths
 *      of read and write, before it is cached, and the tail zeroing of a
 *      grow; the counts of a read's window in one walk of the space map).
 *      Else the I/O fails with EIO and the pool goes read-only in state
 *      needs-check: a damaged or hostile image must not turn a client's
 *      writes into writes of the superblocks or the metadata, and a free
 *      block may become a metadata chunk any time.  A block counted more
 *      than once is written in place by no one, whatever its mapping's
 *      epoch says (vio.c, rule 6).  A cached block stays counted while it
 *      is cached, but where the metadata is damaged: a block counted once
 *      and mapped twice (the checker's missing count), freed through one
 *      mapping, may be taken again while the other is cached.  So the
 *      fast path uses a cached block only while it is not in the set of
 *      metadata chunks (pool->chunk_bits, kept by the space map's hooks:
 *      vio_tm_hooks; tested without a lock, O(1)), and the first chunk
 *      taken after a commit freed blocks waits for the fast-path I/O in
 *      flight (hook_chunk), so none that tested the set before can reach
 *      the chunk's nodes.  A freed block taken again for data is not
 *      caught: through the damaged mapping, the volume then reads and
 *      writes the block's new owner's data, as it shared the block with
 *      the other mapping before; the checker reports the missing count.
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

/* ---- the volumes' states ---- */

/* The vstate of a volume, if it has one (vio->lock held). */
static struct vstate *vstate_find_locked(struct tv_pool *p, uint64_t id)
{
	uint64_t *v = u64map_find(&p->vio->vols, id);

	return v ? (struct vstate *) (uintptr_t) *v : NULL;
}

/* The vstate of a volume (created on first use; lives until close). */
struct vstate *vio_vstate_get(struct tv_pool *p, uint64_t id)
{
	struct vstate *vs;

	pthread_mutex_lock(&p->vio->lock);
	vs = vstate_find_locked(p, id);
	if (!vs) {
		vs = calloc(1, sizeof(*vs));
		if (vs) {
			vs->id = id;
			pthread_rwlock_init(&vs->lock, NULL);
			u64map_init(&vs->cache);
			u64map_init(&vs->pending);
			if (u64map_put(&p->vio->vols, id,
				       (uint64_t) (uintptr_t) vs) < 0) {
				pthread_rwlock_destroy(&vs->lock);
				free(vs);
				vs = NULL;
			}
		}
	}
	pthread_mutex_unlock(&p->vio->lock);
	return vs;
}

static struct vstate *vstate_find(struct tv_pool *p, uint64_t id)
{
	struct vstate *vs;

	pthread_mutex_lock(&p->vio->lock);
	vs = vstate_find_locked(p, id);
	pthread_mutex_unlock(&p->vio->lock);
	return vs;
}

/* Forget what we cached of a volume (deleted, or resized); waits for
 * fast-path I/O on it.  Called with meta_lock held (rule 1).  The cache
 * is handed to the committer to free, so that the caller does not pay
 * for the size of what was cached. */
void vio_invalidate_locked(struct tv_pool *p, uint64_t id)
{
	struct vstate *vs = vstate_find(p, id);
	struct dead_cache *d;
	bool moved = false;

	if (!vs)
		return;
	d = malloc(sizeof(*d));
	pthread_rwlock_wrlock(&vs->lock);
	if (d && vs->cache.len) {
		d->map = vs->cache;
		u64map_init(&vs->cache);
		moved = true;
	} else {
		u64map_clear(&vs->cache);
	}
	vs->valid = false;
	pthread_rwlock_unlock(&vs->lock);
	if (moved) {
		pthread_mutex_lock(&p->vio->lock);
		d->next = p->vio->dead;
		p->vio->dead = d;
		pthread_mutex_unlock(&p->vio->lock);
	} else {
		free(d);
	}
}

/* A snapshot of volume id is being taken (meta_lock held): wait for the
 * writes in flight through the cache, then make every cached block of it
 * shared (a new generation, see C_OWN) — O(1), whatever is cached. */
void vio_snapshot_locked(struct tv_pool *p, uint64_t id)
{
	struct vstate *vs = vstate_find(p, id);

	if (!vs)
		return;
	pthread_rwlock_wrlock(&vs->lock);
	vs->gen = (vs->gen + 1) & C_GEN_MASK;
	if (!vs->gen)
		u64map_clear(&vs->cache);
	pthread_rwlock_unlock(&vs->lock);
}

/* Free the caches of deleted and resized volumes (no lock held). */
void vio_reap(struct tv_pool *p)
{
	struct dead_cache *d;

	pthread_mutex_lock(&p->vio->lock);
	d = p->vio->dead;
	p->vio->dead = NULL;
	pthread_mutex_unlock(&p->vio->lock);
	while (d) {
		struct dead_cache *next = d->next;

		u64map_free(&d->map);
		free(d);
		d = next;
	}
}

bool vio_reap_pending(struct tv_pool *p)
{
	bool r;

	pthread_mutex_lock(&p->vio->lock);
	r = p->vio->dead != NULL;
	pthread_mutex_unlock(&p->vio->lock);
	return r;
}

/* Forget what we cached of every volume (meta_lock held): used when the
 * pool goes read-only, so that the next I/O of each volume asks the slow
 * path again (and vio_vstate_fill records the pool's state). */
void vio_forget_all_locked(struct tv_pool *p)
{
	size_t pos = 0;
	uint64_t k, val;

	if (!p->vio)
		return;
	pthread_mutex_lock(&p->vio->lock);
	while (u64map_next(&p->vio->vols, &pos, &k, &val)) {
		struct vstate *vs = (struct vstate *) (uintptr_t) val;

		pthread_rwlock_wrlock(&vs->lock);
		u64map_clear(&vs->cache);
		vs->valid = false;
		pthread_rwlock_unlock(&vs->lock);
	}
	pthread_mutex_unlock(&p->vio->lock);
}

/* ---- rule 10: the metadata chunks, for the fast path ---- */

/* Wait for every fast-path I/O in flight: each holds its volume's lock
 * shared for the whole I/O (rule 2).  meta_lock held, no vstate lock. */
static void fast_drain_locked(struct tv_pool *p)
{
	size_t pos = 0;
	uint64_t k, val;

	pthread_mutex_lock(&p->vio->lock);
	while (u64map_next(&p->vio->vols, &pos, &k, &val)) {
		struct vstate *vs = (struct vstate *) (uintptr_t) val;

		pthread_rwlock_wrlock(&vs->lock);
		pthread_rwlock_unlock(&vs->lock);
	}
	pthread_mutex_unlock(&p->vio->lock);
}

/* tm_hooks.chunk (meta_lock held, or the pool being opened): block holds
 * metadata from now on.  Only a block freed since the open can be in a
 * cache (a mapping is cached only while its block is counted), and only
 * where the metadata is damaged; a fast-path I/O on it that tested the
 * set before this ends before the chunk's nodes can be written. */
static void hook_chunk(void *ctx, uint64_t block)
{
	struct tv_pool *p = ctx;
	bool lost = abits_set(&p->chunk_bits, block) < 0;

	if (lost)
		atomic_store(&p->chunk_bits_lost, true);
	if (p->vio && (atomic_exchange(&p->freed_since_drain, false) || lost))
		fast_drain_locked(p);
}

/* tm_hooks.data: block was taken for data: a volume may cache it now. */
static void hook_data(void *ctx, uint64_t block)
{
	struct tv_pool *p = ctx;

	abits_clear(&p->chunk_bits, block);
}

/* tm_hooks.freed: blocks a volume mapped may be free now. */
static void hook_freed(void *ctx)
{
	struct tv_pool *p = ctx;

	atomic_store(&p->freed_since_drain, true);
}

const struct tm_hooks vio_tm_hooks = {
    .chunk = hook_chunk,
    .data = hook_data,
    .freed = hook_freed,
};

/* ---- the cache ---- */

/* Remember the volume's size and flags for the fast path (meta_lock).
 * A volume of a pool that went read-only is read-only to the fast path
 * too: its writes go to the slow path, which refuses them (EROFS). */
void vio_vstate_fill(struct tv_pool *p, struct vstate *vs,
		     const struct disk_volume *v)
{
	bool valid;

	/* Usually already filled: don't wait for the fast path's I/O then.
	 * (Size and flags change only under meta_lock, which we hold.) */
	pthread_rwlock_rdlock(&vs->lock);
	valid = vs->valid;
	pthread_rwlock_unlock(&vs->lock);
	if (valid)
		return;
	pthread_rwlock_wrlock(&vs->lock);
	vs->size = le64_to_cpu(v->size);
	vs->flags =
	    le32_to_cpu(v->flags) | (p->read_only ? TV_VOL_READ_ONLY : 0);
	vs->valid = true;
	pthread_rwlock_unlock(&vs->lock);
}

/* Cache C_HOLE, or a block that may be shared. */
void vio_cache_put(struct vstate *vs, uint64_t vblock, uint64_t val)
{
	pthread_rwlock_wrlock(&vs->lock);
	cache_put_locked(vs, vblock, val);
	pthread_rwlock_unlock(&vs->lock);
}

/* Cache a block the volume owns (meta_lock held, so no snapshot of the
 * volume can come between the decision that it is owned and this). */
void vio_cache_put_own(struct vstate *vs, uint64_t vblock, uint64_t block)
{
	pthread_rwlock_wrlock(&vs->lock);
	cache_put_locked(vs, vblock, own_val(vs, block));
	pthread_rwlock_unlock(&vs->lock);
}

void vio_cache_del(struct vstate *vs, uint64_t vblock)
{
	pthread_rwlock_wrlock(&vs->lock);
	u64map_del(&vs->cache, vblock);
	pthread_rwlock_unlock(&vs->lock);
}

/* ---- mappings read from the tree (rule 10), under meta_lock ---- */

int vio_check_range(struct tv_pool *p, const struct disk_volume *v,
		    uint64_t len, uint64_t off)
{
	if ((off | len) % TV_SECTOR ||
	    range_outside(off, len, le64_to_cpu(v->size)))
		return tv_err(-EINVAL,
			      "volume '%.*s': range %" PRIu64 "+%" PRIu64
			      " is not 512-aligned inside "
			      "its %" PRIu64 " bytes",
			      (int) MIN(le32_to_cpu(v->name_len), TV_NAME_MAX),
			      v->name, off, len, le64_to_cpu(v->size));
	(void) p;
	return 0;
}

int vio_map_lookup(struct tv_pool *p, const struct disk_volume *v,
		   uint64_t vblock, struct disk_mapping *m)
{
	struct tm_ref root;
	uint8_t k[8];

	ref_from_disk(&root, &v->map_root);
	put_be64(k, vblock);
	return btree_lookup(&p->map, &root, k, m);
}

/* Rule 10 without the count: NULL when block lies in the data area and
 * is no metadata chunk, else what it is.  O(1). */
const char *vio_map_block_place(struct tv_pool *p, uint64_t block)
{
	if (block < tm_first_block(p->tm) || block >= tm_nr_blocks(p->tm))
		return "outside the data area";
	if (sm_is_chunk(tm_sm(p->tm), block))
		return "a metadata chunk";
	return NULL;
}

/*
 * Rule 10: whether block, which a mapping names, is a data block in use:
 * 1 when it is (*count: its reference count), 0 when not (*why says
 * what it is), or the error reading its count.  O(1) but the count: a
 * lookup in the space map.  meta_lock held.
 */
static int map_block_check(struct tv_pool *p, uint64_t block, uint32_t *count,
			   const char **why)
{
	int r;

	*why = vio_map_block_place(p, block);
	if (*why)
		return 0;
	r = sm_block_count(tm_sm(p->tm), block, count);
	if (r < 0)
		return r;
	if (!*count) {
		*why = "a free block";
		return 0;
	}
	return 1;
}

/* Rule 10: reading v's mapping tree failed with r; a node that failed its
 * checks (EUCLEAN: damaged, or not in a metadata chunk) is damage the
 * pool must not write on.  meta_lock held, no vstate lock.  Returns r. */
int vio_map_failed_locked(struct tv_pool *p, const struct disk_volume *v, int r)
{
	char what[160];

	if (r != -EUCLEAN)
		return r;
	snprintf(what, sizeof(what),
		 "volume #%" PRIu64 ": its mapping tree is damaged",
		 le64_to_cpu(v->id));
	pool_set_damaged(p, what);
	return r;
}

/* Rule 10: virtual block vblock of v maps to block, which is no data
 * block in use (why: what it is): refuse the I/O, and the pool needs a
 * check.  meta_lock held, no vstate lock. */
int vio_bad_mapping_locked(struct tv_pool *p, const struct disk_volume *v,
			   uint64_t vblock, uint64_t block, const char *why)
{
	char what[160];

	snprintf(what, sizeof(what),
		 "volume #%" PRIu64 " maps block %" PRIu64
		 " to pool block %" PRIu64 ", %s",
		 le64_to_cpu(v->id), vblock, block, why);
	pool_set_damaged(p, what);
	return tv_err(-EIO, "%s: damaged metadata: %s; run thinvol check",
		      p->path, what);
}

/* Rule 10: the mapping m of vblock of v, read from the tree: 0 when its
 * block may be used (*own: in place, as v's own: written since v's last
 * snapshot and counted once), else the I/O's error (the pool then needs
 * a check).  meta_lock held, no vstate lock. */
int vio_mapping_use_locked(struct tv_pool *p, const struct disk_volume *v,
			   uint64_t vblock, const struct disk_mapping *m,
			   bool *own)
{
	uint64_t block = le64_to_cpu(m->block);
	const char *why = NULL;
	uint32_t count = 0;
	int r = map_block_check(p, block, &count, &why);

	if (r < 0)
		return vio_map_failed_locked(p, v, r);
	if (!r)
		return vio_bad_mapping_locked(p, v, vblock, block, why);
	/* a count above 1 on a block v wrote since its last snapshot is
	 * damage too (a snapshot gives both sides a new epoch), which the
	 * checker reports; the block is treated as shared, so that v's
	 * writes do not reach whoever else maps it */
	*own = mapping_own(v, m) && count == 1;
	return 0;
}
