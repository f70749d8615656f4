/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * thin-internal.h - the engine's shared internals (pool*.c, volume*.c,
 * vio*.c).  Nothing outside src/thin includes this (the tests may); the
 * daemon's share of them is thin-ext.h.
 *
 * Metadata in the pool's root slots (see docs/format.md, "Engine"):
 *
 *   slot 0  VOLS      id (be64)                  -> struct disk_volume
 *   slot 1  NAMES     name hash (be64), id (be64) -> (nothing)
 *   slot 2  BLOBIDX   blob prefix, id (be64)      -> (nothing)
 *   slot 3  BLOBS     id (be64), chunk (be16)     -> blob bytes
 *   slot 4  DEFERRED  sequence (be64)             -> struct disk_ref of a
 *                                                    mapping tree being freed
 *                                                    (or a piece of one)
 *   per volume: MAP   virtual block (be64)        -> struct disk_mapping
 *
 * The superblock's user bytes hold struct disk_pool_user.
 *
 * Locking: pool->meta_lock serialises every use of tm/sm/btree (none of
 * which is thread-safe).  Per-volume I/O state (vio-cache.c) has its own
 * locks, taken after meta_lock when both are held, never the other way
 * round (vio-cache.c, rule 1).
 */
#ifndef TV_THIN_INTERNAL_H
#define TV_THIN_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>

#include "io/io.h"
#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/node.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "thin/thin-ext.h"
#include "thinvol.h"
#include "util/abits.h"
#include "util/u64map.h"

enum {
	SLOT_VOLS = 0,
	SLOT_NAMES = 1,
	SLOT_BLOBIDX = 2,
	SLOT_BLOBS = 3,
	SLOT_DEFERRED = 4,
};

#define TAG_VOLS     0x534c4f56u /* "VOLS" */
#define TAG_NAMES    0x454d414eu /* "NAME" */
#define TAG_BLOBIDX  0x58444942u /* "BIDX" */
#define TAG_BLOBS    0x53424c42u /* "BLBS" */
#define TAG_DEFERRED 0x52464544u /* "DEFR" */
#define TAG_MAP	     0x5350414du /* "MAPS" */

/* Bytes of the blob that the index keys hold; longer prefixes are checked
 * against the stored blob. */
#define BLOBIDX_PREFIX_MAX 56u
/* Blobs are stored in chunks of at most this many bytes: with the 10-byte
 * key, 8 entries still fit a node (the btree's smallest fanout). */
#define BLOB_CHUNK_MAX 480u

struct disk_pool_user {
	uint64_t next_id;      /* le64: next volume id (never reused) */
	uint64_t epoch;	       /* le64: snapshot epoch counter */
	uint64_t nr_volumes;   /* le64 */
	uint64_t deferred_seq; /* le64: next DEFERRED key */
	uint64_t reclaimable;  /* le64: blocks reclaim will free, at
				* least (volume.c, rule 6) */
	uint32_t blob_size;    /* le32: fixed at creation */
	uint32_t flags;	       /* le32: POOL_F_* */
	uint8_t magic[8];      /* "tvengine" */
	uint8_t reserved[TM_USER_BYTES - 56];
};
_Static_assert(sizeof(struct disk_pool_user) == TM_USER_BYTES,
	       "pool user area");

#define POOL_F_NEEDS_CHECK (1u << 0)

struct disk_volume {
	uint64_t id; /* le64 */
	uint8_t uuid[16];
	uint64_t size;	     /* le64: bytes */
	uint32_t flags;	     /* le32: TV_VOL_* */
	uint32_t name_len;   /* le32: 1 .. TV_NAME_MAX */
	uint64_t parent;     /* le64 */
	uint64_t ctime_ns;   /* le64 */
	uint64_t snap_epoch; /* le64: pool epoch after its last snapshot */
	uint64_t mapped;     /* le64: blocks mapped */
	struct disk_ref map_root;
	uint8_t name[TV_NAME_MAX];
	uint8_t reserved[40];
};
_Static_assert(sizeof(struct disk_volume) == 256, "volume record");

struct disk_mapping {
	uint64_t block; /* le64: pool block */
	uint64_t epoch; /* le64: pool epoch when written */
};
_Static_assert(sizeof(struct disk_mapping) == 16, "mapping");

struct tv_pool {
	pthread_mutex_t meta_lock;
	struct io_dev *dev;
	bool own_dev;
	struct tm *tm;
	char path[4096];
	uint32_t block_size;
	uint32_t blob_size;
	bool read_only;
	/* the last room refused was the file's (pool-space.c, rule 2) */
	bool fs_full;
	bool opened_ro;	    /* opened read-only (not by an error) */
	bool needs_check;   /* damaged metadata met (pool_set_damaged) */
	int ro_err;	    /* the error that made it read-only, or 0 */
	char reason[160];   /* why read-only, when it is */
	size_t cache_bytes; /* as opened (tv_pool_reopen) */

	/* Syncs (pool-commit.c): the first error of any sync of the
	 * device, and the gate that syncs issued without meta_lock hold
	 * shared and commits and flush_locked hold exclusive. */
	_Atomic int sync_err;
	pthread_rwlock_t sync_gate;

	struct btree_info vols, names, blobidx, blobs, deferred, map;
	uint32_t blobidx_prefix; /* min(blob_size, BLOBIDX_PREFIX_MAX) */
	uint32_t blob_chunk;	 /* min(blob_size, BLOB_CHUNK_MAX) */

	/* background commit and reclaim */
	pthread_t committer;
	bool committer_running;
	bool stopping;
	pthread_cond_t wake;
	unsigned int commit_interval_ms;
	bool dirty;	/* uncommitted changes exist */
	bool committed; /* this process committed something (rule 3) */

	const struct vio_hooks *io; /* the I/O path (pool_attach_io) */
	struct vio *vio;	    /* I/O state (vio-internal.h) */
	/* vio-cache.c, rule 10: the blocks that are (or were, and not
	 * taken for data since) metadata chunks, which the fast path tests
	 * without meta_lock; set through the store's hooks (vio_hooks.tm) */
	struct abits chunk_bits;
	atomic_bool chunk_bits_lost; /* out of memory: no fast path */
	atomic_bool freed_since_drain;
};

/*
 * pool-space.c, rule 2: what one change of a table (volumes, names, blobs,
 * deferred frees: trees that are never shared) may cost at most, as
 * btree_path_cost counts it for a tree of TABLE_DEPTH levels (at 15
 * volume records a leaf, more than 10^16 volumes): a copy and a split
 * per level, a new root, and their counts.
 */
#define TABLE_DEPTH	8
#define TABLE_OP_NODES	(2 * TABLE_DEPTH + 1)
#define TABLE_OP_COUNTS (4 * TABLE_DEPTH + 2)

/* Error reporting: sets the thread's last-error message, returns err. */
int tv_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Volume ids (volume.c): a new volume takes max(next_id, volume_id_clock())
 * and next_id becomes its id + 1.  The clock is the microseconds since
 * TV_ID_EPOCH (2025-01-01 00:00:00 UTC) on CLOCK_REALTIME, so an id handed
 * out after a restore of an older copy of the pool is still above every id
 * the newer copy handed out: nothing allocates ids faster than one per
 * microsecond.  Tests that predict ids set volume_id_clock to NULL: the
 * plain counter.
 */
#define TV_ID_EPOCH 1735689600ull
extern uint64_t (*volume_id_clock)(void);
uint64_t volume_id_clock_real(void);

/* pool.c */
/* Write an empty pool on dev (no checks for what it held). */
int pool_format_dev(struct io_dev *dev, const struct tv_pool_create_opts *o);

/* pool-commit.c */
struct disk_pool_user *pool_user(struct tv_pool *p);
/* Syncs, rule 3: the gate, as a pool is opened. */
void pool_sync_gate_init(struct tv_pool *p);
/* Syncs, rule 2: wait for the syncs in flight without meta_lock and hold
 * the gate; returns the first sync error so far (0: none).  meta_lock
 * held; pool_sync_gate_leave when done. */
int pool_sync_gate_enter_locked(struct tv_pool *p);
void pool_sync_gate_leave(struct tv_pool *p);
/* Commit the open transaction; on failure the pool goes read-only with
 * the reason recorded.  Caller holds meta_lock; it is dropped for a while
 * first, to wait for the I/O path's provisions (vio.c, rule 4). */
int pool_commit_locked(struct tv_pool *p);
/* The committer's commit: on a device with ranged syncs it makes durable
 * only the metadata and the data of vio.c's rule 7, not every write since
 * the last flush.  Then, if it succeeded, punch holes for the blocks
 * freed (discard).  Same locking as pool_commit_locked. */
int pool_commit_bg_locked(struct tv_pool *p);
/* Make every acknowledged write durable: commit when dirty, else flush
 * the device (tv_pool_flush, tv_pool_close).  meta_lock held. */
int pool_flush_locked(struct tv_pool *p);
/* Abandon the open transaction.  Caller holds meta_lock (dropped for a
 * while first, as for the commit). */
void pool_abort_locked(struct tv_pool *p);
void pool_set_read_only(struct tv_pool *p, int err, const char *why);
/* Damaged metadata met while serving (what: one line naming it): the
 * pool goes read-only, in state needs-check, until reopened.  meta_lock
 * held; no vstate lock. */
void pool_set_damaged(struct tv_pool *p, const char *what);
/* The error of a change refused because the pool is read-only (-EROFS,
 * the message naming the reason).  meta_lock held. */
int pool_read_only_err(struct tv_pool *p);
/* A sync of the device without meta_lock (pool-commit.c, "syncs"): n ==
 * SIZE_MAX flushes, else io_sync_ranges(r, n) without a barrier.  On
 * failure the error is recorded, and whoever next holds meta_lock and
 * would declare a sync or commit done makes the pool read-only instead. */
int pool_sync_unlocked(struct tv_pool *p, const struct io_range *r, size_t n);

/* pool-space.c */
/* Reference counts reclaim drops in a committer round (pool.c, rule 1)
 * and when a change found no room (pool-space.c, rule 3). */
#define RECLAIM_BUDGET 16384
/* Hand the tree tree names to DEFERRED, which then holds its reference
 * (volume.c, rule 4), under the next sequence number: reclaim frees the
 * last first (rule 3).  meta_lock held. */
int pool_defer_locked(struct tv_pool *p, const struct disk_ref *tree);
/* Free some of the DEFERRED trees, the last first: steps that change at
 * most budget reference counts in all, each one what the commit can take
 * (pool-space.c, rules 2 and 3), committing between steps when the room
 * runs out.  meta_lock held; dropped while it commits. */
int pool_reclaim_locked(struct tv_pool *p, uint64_t budget);
/* Rule 2 of pool-space.c: whether a change of kind that allocates at
 * most blocks data blocks and nodes metadata nodes and changes at most
 * counts reference counts leaves the open transaction (with the
 * provisions in flight) able to commit.  meta_lock held. */
bool pool_room_locked(struct tv_pool *p, enum sm_room kind, uint64_t blocks,
		      uint64_t nodes, uint64_t counts);
/* What was full when a change was refused for want of room: "the pool
 * is full", or the filesystem under the pool file (pool_room_locked). */
const char *pool_full_what(const struct tv_pool *p);
/*
 * Rule 2 of pool-space.c, a change's cost read from the trees: the nodes it
 * may allocate, and the windows of the space map's keys (sm.c, rule 6)
 * that its count changes fall in and the transaction has not touched
 * yet.  probe_path adds a change of a tree at key (NULL: its first
 * entry; shared: every node on the path shared, as after a clone; leaf
 * false: the path's nodes above the leaf only, see btree_path_cost),
 * probe_add changes in unknown places (each a window).  meta_lock held.
 */
struct room_probe {
	struct tv_pool *p;
	const struct btree_info *info; /* of the path being read */
	struct u64map seen;	       /* windows counted already */
	uint64_t nodes, windows;
	bool lost; /* out of memory: no room */
};
void probe_init(struct room_probe *q, struct tv_pool *p);
void probe_free(struct room_probe *q);
int probe_path(struct room_probe *q, const struct btree_info *info,
	       const struct tm_ref *root, const void *key, bool shared,
	       bool leaf);
void probe_add(struct room_probe *q, uint64_t nodes, uint64_t windows);
/* A count that changes at key of the space map's tree (a data block, or
 * SM_KEY_META | node): a window, unless one is counted there already. */
void probe_key(struct room_probe *q, uint64_t key);
/* n changes of the table in root slot slot (never shared): a path of
 * its height each, every node on it a window of its own. */
int probe_table(struct room_probe *q, unsigned int slot, uint64_t n);
/* n inserts, in order, of keys past the last one of the table in slot. */
int probe_table_append(struct room_probe *q, unsigned int slot, uint64_t n);
bool probe_room(struct room_probe *q, enum sm_room kind, uint64_t blocks);
/* Rule 2 of pool-space.c: there was no room; make some: commit the open
 * transaction, or when it holds nothing, free a piece of the deleted
 * volumes and commit that.  0: something changed, look again (meta_lock
 * was dropped: look up what you use again); -ENOSPC: nothing can; other
 * errors: the commit failed (the pool is read-only).  The caller holds
 * meta_lock and no provision in flight. */
int pool_make_room_locked(struct tv_pool *p);

/* volume-table.c (the operations, volume.c, need these; meta_lock held) */
int vol_lookup_locked(struct tv_pool *p, uint64_t id, struct disk_volume *v);
int vol_store_locked(struct tv_pool *p, const struct disk_volume *v);
void vol_to_info(const struct tv_pool *p, const struct disk_volume *v,
		 struct tv_vol_info *info);
/* -EROFS, the message naming v: a change refused, v is read-only. */
int vol_read_only_err(const struct disk_volume *v);
/* A name a volume may have: 0, or -EINVAL with the message set. */
int vol_check_name(const char *name);
/* The id of the volume named name (-ENOENT: none). */
int vol_name_find_locked(struct tv_pool *p, const char *name, uint64_t *id);
/* The NAMES entry of a volume: add it, or remove v's. */
int vol_names_add(struct tv_pool *p, const char *name, uint64_t id);
int vol_names_del(struct tv_pool *p, const struct disk_volume *v);
/* The chunks a blob is stored in (BLOBS). */
uint32_t vol_blob_chunks(const struct tv_pool *p);
/* A volume's blob (blob_size bytes; zeroes when none is stored). */
int vol_blob_load_locked(struct tv_pool *p, uint64_t id, uint8_t *blob);
/* Replace a volume's blob old (NULL: it has none yet) by blob, in BLOBS
 * and the blob index (invariants 1 and 2). */
int vol_blob_set_locked(struct tv_pool *p, uint64_t id, const uint8_t *old,
			const uint8_t *blob);
/* Remove a volume's blob old from BLOBS and the blob index. */
int vol_blob_del_locked(struct tv_pool *p, uint64_t id, const uint8_t *old);
/* The table and its indexes agree (errors counted, up to 50 printed). */
int vol_check_indexes_locked(struct tv_pool *p, FILE *out, uint64_t *errors);

/*
 * The I/O path's hooks.  The I/O path (vio.c, vio-cache.c, vio-read.c)
 * sits above pool.c and volume.c: it calls them, and they reach it only
 * through these, as dm-thin's metadata code reaches the pool through its
 * pre-commit callback.  vio.c fills them in (vio_pool_hooks); pool_attach_io
 * (pool.c) is the one place a pool is given them, before its store opens.
 * meta_lock is held where a name ends in _locked (and none of the I/O
 * path's own locks); where the comment says so, the hook drops meta_lock
 * for a while, and the caller must look again at what it read before.
 */
struct vio_hooks {
	/* The store's hooks (tm.h) that keep the set of metadata chunks the
	 * fast path tests (vio-cache.c, rule 10); ctx is the pool.  For
	 * every store the pool opens. */
	const struct tm_hooks *tm;

	/* The I/O state: made once the store is open (-ENOMEM), freed when
	 * the pool is (no I/O, no committer).  reset_locked: tv_pool_reopen
	 * starts it again (caches, rule 7's list, the byte counters of rule
	 * 5), no provision in flight. */
	int (*init)(struct tv_pool *p);
	void (*destroy)(struct tv_pool *p);
	void (*reset_locked)(struct tv_pool *p);

	/* Commits (vio.c, rules 4, 5, 7 and 9).  before_commit_locked: flush
	 * the data of new blocks with meta_lock dropped when there is much of
	 * it (ranged: the committer's commit; a failed flush poisons the
	 * transaction), then drain.  drain_locked: wait until no provision is
	 * in flight (before an abort); drops meta_lock while it waits.
	 * sync_ranges_locked: the ranges of the blocks whose data the next
	 * commit must make durable (*out malloc'd, NULL when none; -ENOMEM:
	 * the list is incomplete, flush everything).  sync_clear_locked:
	 * after a commit or an abort the list starts again.  held_locked:
	 * what the provisions in flight may still add to the transaction
	 * when they are mapped.  had_io: whether any volume has seen I/O
	 * since the pool was opened (no lock needed). */
	void (*before_commit_locked)(struct tv_pool *p, bool ranged);
	void (*drain_locked)(struct tv_pool *p);
	int (*sync_ranges_locked)(struct tv_pool *p, struct io_range **out,
				  size_t *n);
	void (*sync_clear_locked)(struct tv_pool *p);
	void (*held_locked)(struct tv_pool *p, uint64_t *nodes,
			    uint64_t *counts);
	bool (*had_io)(struct tv_pool *p);

	/* The volumes' cached state (vio-cache.c).  forget_all_locked: the
	 * pool went read-only, every volume asks the slow path again.
	 * invalidate_locked: drop a volume's cached mappings, size and
	 * flags after waiting for the I/O that uses them (delete, resize).
	 * snapshot_locked: a snapshot of id is being taken: wait for the
	 * writes in flight through its cache, then every cached block of it
	 * is shared.  reap_pending, reap: the caches that invalidate handed
	 * over wait to be freed; reap frees them with no lock held (the
	 * committer). */
	void (*forget_all_locked)(struct tv_pool *p);
	void (*invalidate_locked)(struct tv_pool *p, uint64_t id);
	void (*snapshot_locked)(struct tv_pool *p, uint64_t id);
	bool (*reap_pending)(struct tv_pool *p);
	void (*reap)(struct tv_pool *p);

	/* Zero [from, end of its block) of v when that block is mapped: a
	 * grow past an end inside a block (volume.c, rule 5).  in_place: no
	 * committed state shows those bytes, so the block may be written
	 * where it is; else (or when the block is shared) the zeroes go into
	 * a copy, and the old bytes stay for the committed state and for
	 * rollback.  v is updated in memory, the caller stores it. */
	int (*zero_tail_locked)(struct tv_pool *p, struct disk_volume *v,
				uint64_t from, bool in_place);
};
extern const struct vio_hooks vio_pool_hooks;

#endif
