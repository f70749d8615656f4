/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vio-internal.h - what the files of the I/O path share: vio-cache.c (the
 * volumes' mapping caches, and the checks of a mapping read from the
 * tree), vio-read.c (reads and the allocation map) and vio.c (writes,
 * provisioning, and what commits need of the I/O path).  Nothing else
 * includes this: pool.c and volume.c reach the I/O path only through
 * struct vio_hooks (thin-internal.h).
 *
 * The I/O path's rules are numbered across its files: 1, 2 and 10 (locks,
 * the fast path, mappings read from the tree) are vio-cache.c's; 3 to 9
 * (provisioning, commits, copy-on-write, room) are vio.c's.
 *
 * The small helpers the fast path calls for every block are inline here,
 * so that the read and write paths cost what they cost in one file.
 */
#ifndef TV_THIN_VIO_INTERNAL_H
#define TV_THIN_VIO_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "thin/thin-internal.h"
#include "util/abits.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/u64map.h"

#define CACHE_MAX_ENTRIES (1u << 20) /* per volume; cleared beyond */
/*
 * A cached value is C_HOLE (not mapped), a block number below 2^63 (a
 * mapping that may be shared), or C_OWN | gen << C_GEN_SHIFT | block for
 * a block the volume owns (block < C_BLOCK_MASK).  A snapshot of the
 * volume bumps vs->gen instead of visiting the cache: the entries of the
 * older generation then read as shared, which they now are, and the
 * snapshot costs the same whatever the volume has mapped.  The mappings
 * stay good for reads.  When gen wraps round the cache is cleared, so an
 * old entry never passes for a new one.  Own blocks past C_BLOCK_MASK
 * (pools of 2^47 blocks and more) are cached as shared: their writes
 * take the slow path, which is right, only slower.
 */
#define C_OWN	     (1ull << 63)
#define C_HOLE	     UINT64_MAX
#define C_GEN_SHIFT  47
#define C_GEN_MASK   0xffffu
#define C_BLOCK_MASK ((1ull << C_GEN_SHIFT) - 1)
#define NO_BLOCK     UINT64_MAX /* no block (struct prov.old) */

struct vstate {
	uint64_t id;
	pthread_rwlock_t lock;
	bool valid; /* size and flags below are current */
	uint64_t size;
	uint32_t flags;
	uint32_t gen;	       /* snapshots of the volume, mod C_GEN_MASK + 1 */
	struct u64map cache;   /* vblock -> cached value (above) */
	struct u64map pending; /* meta_lock: vblock -> block in flight */
};

/* A cache taken from a volume, to be freed by the committer. */
struct dead_cache {
	struct u64map map;
	struct dead_cache *next;
};

struct vio {
	pthread_mutex_t lock; /* the table of vstates, and dead */
	struct u64map vols;   /* id -> struct vstate * */
	struct dead_cache *dead;

	/* provisions in flight (rule 4), all under meta_lock */
	pthread_cond_t done;   /* one finished, or a drain ended */
	uint64_t nr_pending;   /* in all volumes */
	unsigned int drainers; /* threads waiting for nr_pending == 0 */
	uint64_t unflushed;    /* bytes into new blocks since the last
				* flush before a commit (rule 5) */
	uint64_t unsynced;     /* of those, in blocks of rule 7's list */
	/* rule 9: what the provisions in flight may add when mapped */
	uint64_t held_nodes, held_counts;
	/* one provisioning batch writes to a pool file at a time */
	bool gate;
	pthread_mutex_t wgate;
	/* rule 8: the pool file's chunks preallocated since the open, a bit
	 * each (nr_chunks bits); NULL: not done on this device */
	_Atomic uint64_t *pa_bits;
	uint64_t pa_chunks;
	/* rule 7: blocks whose data the next commit must make durable */
	uint64_t *sync;
	size_t nr_sync, sync_cap;
	bool sync_lost; /* out of memory: flush everything */
};

/* ---- vio-cache.c: the volumes' cached state (rules 1, 2 and 10) ---- */

/* The vstate of a volume (created on first use; lives until close); NULL
 * when out of memory. */
struct vstate *vio_vstate_get(struct tv_pool *p, uint64_t id);
/* Remember v's size and flags for the fast path (meta_lock held). */
void vio_vstate_fill(struct tv_pool *p, struct vstate *vs,
		     const struct disk_volume *v);
/* Cache C_HOLE, or a block that may be shared. */
void vio_cache_put(struct vstate *vs, uint64_t vblock, uint64_t val);
/* Cache a block the volume owns (meta_lock held). */
void vio_cache_put_own(struct vstate *vs, uint64_t vblock, uint64_t block);
void vio_cache_del(struct vstate *vs, uint64_t vblock);
/* What the pool's hooks reach here (struct vio_hooks). */
void vio_invalidate_locked(struct tv_pool *p, uint64_t id);
void vio_snapshot_locked(struct tv_pool *p, uint64_t id);
void vio_reap(struct tv_pool *p);
bool vio_reap_pending(struct tv_pool *p);
void vio_forget_all_locked(struct tv_pool *p);
/* The store's hooks that keep rule 10's set of metadata chunks. */
extern const struct tm_hooks vio_tm_hooks;

/* Mappings read from the tree (meta_lock held). */
/* The request [off, off + len) is 512-aligned inside v: 0, or -EINVAL
 * with the message set. */
int vio_check_range(struct tv_pool *p, const struct disk_volume *v,
		    uint64_t len, uint64_t off);
/* The mapping of vblock in v's tree (-ENOENT: a hole). */
int vio_map_lookup(struct tv_pool *p, const struct disk_volume *v,
		   uint64_t vblock, struct disk_mapping *m);
/* Rule 10 without the count: NULL when block lies in the data area and
 * is no metadata chunk, else what it is.  O(1). */
const char *vio_map_block_place(struct tv_pool *p, uint64_t block);
/* Rule 10: reading v's mapping tree failed with r (returned). */
int vio_map_failed_locked(struct tv_pool *p, const struct disk_volume *v,
			  int r);
/* Rule 10: vblock of v maps to block, no data block in use (-EIO). */
int vio_bad_mapping_locked(struct tv_pool *p, const struct disk_volume *v,
			   uint64_t vblock, uint64_t block, const char *why);
/* Rule 10: whether the mapping m of vblock of v may be used (*own: in
 * place), else the I/O's error. */
int vio_mapping_use_locked(struct tv_pool *p, const struct disk_volume *v,
			   uint64_t vblock, const struct disk_mapping *m,
			   bool *own);

/* ---- vio.c: what the pool's hooks reach there ---- */

int vio_init(struct tv_pool *p);
void vio_destroy(struct tv_pool *p);
void vio_reset_locked(struct tv_pool *p);
void vio_drain_locked(struct tv_pool *p);
void vio_before_commit_locked(struct tv_pool *p, bool ranged);
int vio_sync_ranges_locked(struct tv_pool *p, struct io_range **out, size_t *n);
void vio_sync_clear_locked(struct tv_pool *p);
void vio_held_locked(struct tv_pool *p, uint64_t *nodes, uint64_t *counts);
bool vio_had_io(struct tv_pool *p);
int vio_zero_tail_locked(struct tv_pool *p, struct disk_volume *v,
			 uint64_t from, bool in_place);

/* ---- inline helpers of the fast path ---- */

/* Whether the fast path may use cached value val: a hole, or a block
 * that is no metadata chunk (rule 10).  Any thread. */
static inline bool fast_val_ok(struct tv_pool *p, uint64_t val)
{
	if (val == C_HOLE)
		return true;
	return !atomic_load_explicit(&p->chunk_bits_lost,
				     memory_order_relaxed) &&
	       !abits_test(&p->chunk_bits,
			   val & C_OWN ? val & C_BLOCK_MASK : val);
}

/* Fast-path range check; vs->lock held.  1: fine, 0: ask the slow path
 * (which reports errors with the volume's name). */
static inline int fast_ok(const struct vstate *vs, uint64_t len, uint64_t off,
			  bool write)
{
	return vs->valid && !((off | len) % TV_SECTOR) &&
	       !range_outside(off, len, vs->size) &&
	       !(write && (vs->flags & TV_VOL_READ_ONLY));
}

/* The block a cached value names (not C_HOLE). */
static inline uint64_t c_block(uint64_t val)
{
	return val & C_OWN ? val & C_BLOCK_MASK : val;
}

/* Whether a cached value is a block the volume owns now; vs->lock held. */
static inline bool c_own(const struct vstate *vs, uint64_t val)
{
	return val != C_HOLE && (val & C_OWN) &&
	       ((val >> C_GEN_SHIFT) & C_GEN_MASK) == vs->gen;
}

static inline void cache_put_locked(struct vstate *vs, uint64_t vblock,
				    uint64_t val)
{
	if (vs->cache.len >= CACHE_MAX_ENTRIES)
		u64map_clear(&vs->cache);
	u64map_put(&vs->cache, vblock, val); /* ENOMEM: just not cached */
}

/* The cached value of a block the volume owns; vs->lock held. */
static inline uint64_t own_val(const struct vstate *vs, uint64_t block)
{
	return block < C_BLOCK_MASK
		   ? C_OWN | (uint64_t) vs->gen << C_GEN_SHIFT | block
		   : block;
}

/* Whether a mapping of v is v's own (written since its last snapshot,
 * so not shared: rule 6). */
static inline bool mapping_own(const struct disk_volume *v,
			       const struct disk_mapping *m)
{
	return le64_to_cpu(m->epoch) >= le64_to_cpu(v->snap_epoch);
}

static inline uint64_t dev_off(struct tv_pool *p, uint64_t block, uint64_t in)
{
	return block * p->block_size + in;
}

#endif
