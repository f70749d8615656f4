/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * thinvol.h - the engine API (libthinvol).
 *
 * A pool is one file or block device holding thin volumes and their
 * snapshots.  Every volume has a 64-bit id (allocated from a persistent
 * counter, never reused), a unique name, a size, optional read-only flag,
 * a parent (for snapshots) and an opaque blob of the pool's blob size.
 *
 * Conventions:
 *   - Every function returns 0 or a negative errno.  Results go through
 *     out-parameters, written only on success.
 *   - Errors that callers tell apart:
 *       -ENOENT   no such volume (or pool file)
 *       -EEXIST   a volume of that name exists / the path holds a pool
 *       -ENOSPC   the pool is full
 *       -EUCLEAN  the pool's metadata is damaged
 *       -EINVAL   a bad argument (size, name, blob length, ...)
 *       -EROFS    the pool or the volume is read-only
 *       -EBUSY    the pool is opened by another process, or the volume is
 *                 in use
 *     Every error is also described by tv_last_error() (a one-line
 *     message naming the object and the reason, for the CLI).
 *   - Metadata operations (create, snapshot, delete, rename, resize,
 *     set_blob, batch) are atomic and durable when they return: each is one
 *     transaction, committed before the call returns.
 *   - Thread safety: a pool may be used from many threads at once.  I/O on
 *     volumes runs concurrently; metadata operations are serialised by the
 *     pool.
 *   - Cost: metadata operations are O(log n) in the number of volumes;
 *     snapshot is O(1) in the volume's size.
 */
#ifndef THINVOL_H
#define THINVOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tv_pool;

#define TV_NAME_MAX	 128  /* bytes of UTF-8 */
#define TV_BLOB_MAX	 4096 /* largest blob size of a pool */
#define TV_BLOB_DEFAULT	 256
#define TV_BLOCK_DEFAULT (64u << 10)
#define TV_SECTOR	 512u

/* ---- pools ---- */

struct tv_pool_create_opts {
	uint64_t size;	     /* bytes; 0 for a block device's whole size,
			      * or an existing file's size */
	uint32_t block_size; /* 0: 64 KiB; power of two, 4 KiB .. 1 GiB */
	int32_t blob_size;   /* -1: 256; 0 .. 4096 */
	bool force;	     /* overwrite a pool or filesystem found there */
};

/* Create a pool at path (a file, created sparse, or a block device). */
int tv_pool_create(const char *path, const struct tv_pool_create_opts *o);

struct tv_pool_open_opts {
	bool read_only;
	size_t cache_bytes;		 /* 0: default (64 MiB) */
	unsigned int commit_interval_ms; /* 0: 1000; periodic commits */
};

/*
 * Open a pool; takes an exclusive lock on the file or device (-EBUSY, with
 * the holder named in the message, if another process has it).
 */
int tv_pool_open(const char *path, const struct tv_pool_open_opts *o,
		 struct tv_pool **out);

/* Commit and close.  Returns the commit's error (the pool is closed
 * either way). */
int tv_pool_close(struct tv_pool *pool);

/* Make every acknowledged write durable: flush data, commit metadata. */
int tv_pool_flush(struct tv_pool *pool);

enum tv_pool_state {
	TV_POOL_RW,
	TV_POOL_READ_ONLY, /* opened read-only, or an error made it so */
	TV_POOL_NEEDS_CHECK,
};

struct tv_pool_info {
	uint32_t format_version;
	uint8_t uuid[16];
	uint32_t block_size;
	uint32_t blob_size;
	uint64_t size;	      /* bytes of pool blocks */
	uint64_t used;	      /* bytes in use (data and metadata) */
	uint64_t free;	      /* bytes allocatable now */
	uint64_t metadata;    /* bytes of metadata chunks */
	uint64_t reclaimable; /* bytes that freeing deleted volumes and
			       * shrinks' cuts will still give back, at
			       * least: blocks they held alone (no
			       * snapshot or other volume maps them),
			       * all of a volume never snapshotted, of a
			       * snapshotted one what a bounded walk of
			       * its tree found; at most used; 0 when
			       * nothing is left to free
			       * (docs/cli.md, pool info) */
	uint64_t nr_volumes;
	uint64_t next_id;
	uint64_t transaction;
	enum tv_pool_state state;
	char reason[160]; /* why read-only / needs check, or "" */
	int error;	  /* the negative errno that made it read-only
			   * or needs-check (-ENOSPC, -EIO, -EUCLEAN,
			   * ...); 0 when it is not, or was opened
			   * read-only */
};

/* A file on ext4 without a journal: after a power failure the filesystem
 * may lose the file's newest blocks, whatever the engine synced. */
#define TV_POOL_FS_NO_JOURNAL (1u << 0)
/* A file its filesystem copies on every overwrite (btrfs without nocow):
 * a full filesystem can fail a commit, and the pool goes read-only. */
#define TV_POOL_FS_COW (1u << 1)

int tv_pool_info(struct tv_pool *pool, struct tv_pool_info *out);

/* TV_POOL_FS_*: what the filesystem under a pool file does that is worth
 * a warning (0 for a block device).  Fixed while the pool is open; O(1),
 * takes no lock.  (A function, not a field of struct tv_pool_info: the
 * public structs' sizes are libthinvol.so.0's ABI.) */
uint32_t tv_pool_fs_flags(struct tv_pool *pool);

/* "rw", "read-only", "needs-check" (what pool info prints). */
const char *tv_pool_state_name(enum tv_pool_state s);

/* Grow the pool to new_size bytes (a file is extended; a block device
 * must already be that size). */
int tv_pool_resize(struct tv_pool *pool, uint64_t new_size);

/*
 * After an error made the pool read-only (a failed commit or flush, a
 * full backing filesystem, damaged metadata met on the I/O path): whether
 * the device takes writes again.  Writes a block of zeroes to a pool
 * block that is free in every state a reopen may find (after a commit
 * whose superblock write or flush failed: the state before it and the
 * state it made), syncs the device, and punches the block out again;
 * changes nothing else.  -EINVAL when the pool is not read-only after an error
 * (read-write, or opened read-only); the write's or sync's error when the
 * device still fails.  O(1) I/O; takes the metadata lock.
 */
int tv_pool_probe(struct tv_pool *pool);

/*
 * After an error made the pool read-only: start again from its last
 * commit, as a restart would.  Probes the device (tv_pool_probe, which
 * must pass), then drops the open transaction, the metadata cache and
 * the volumes' mapping caches, re-reads the superblocks, and the pool is
 * read-write again.  After a commit whose superblock write or flush
 * failed, the pool reopens at the state before it or at the state it
 * made, whichever the device shows; in the second case that superblock
 * is written and flushed again first, so that no later crash brings up
 * the other.  Writes acknowledged since the last commit that
 * reached the disk may be lost, as after a crash: the caller must make
 * sure that whoever made them learns so (the daemon disconnects every
 * NBD client first) and that no volume I/O is in flight meanwhile.  A
 * pool in state needs-check reopens too, and meets its damage again:
 * check it (tv_pool_check) first.  -EINVAL as for tv_pool_probe; the
 * pool stays read-only on any error.
 */
int tv_pool_reopen(struct tv_pool *pool);

/* The message of the last error in this thread, or "". */
const char *tv_last_error(void);

/*
 * Where the engine's own log lines go (errors are also logged where they
 * are detected, with more context than tv_last_error): fn receives each
 * line of level <= max_level (0 error, 1 warning, 2 info, 3 debug); fn NULL
 * means stderr.  Process-wide; set it before opening pools.
 */
void tv_set_logger(void (*fn)(int level, const char *msg, void *ctx), void *ctx,
		   int max_level);

/* ---- volumes ---- */

#define TV_VOL_READ_ONLY (1u << 0)

struct tv_vol_info {
	uint64_t id;
	uint8_t uuid[16];
	char name[TV_NAME_MAX + 1];
	uint64_t size;	   /* bytes, a multiple of 512 */
	uint32_t flags;	   /* TV_VOL_* */
	uint64_t parent;   /* id of the origin of a snapshot, or 0 */
	uint64_t ctime_ns; /* creation time, CLOCK_REALTIME */
	uint64_t mapped;   /* bytes mapped (allocated to the volume) */
};

/*
 * Space a volume uses: mapped bytes, and exclusive bytes — those no other
 * volume shares (what deleting it would free).  O(mapped blocks): reads the
 * volume's whole mapping tree.
 */
int tv_vol_usage(struct tv_pool *pool, uint64_t id, uint64_t *mapped,
		 uint64_t *exclusive);

/* "#123" is id 123; anything else is a name. */
int tv_vol_resolve(struct tv_pool *pool, const char *spec, uint64_t *id);

int tv_vol_info(struct tv_pool *pool, uint64_t id, struct tv_vol_info *out);

/* Blob of exactly blob_size bytes (all zero if never set). */
int tv_vol_get_blob(struct tv_pool *pool, uint64_t id, void *blob, size_t len);

/*
 * Iterate volumes in id order: start with *cursor = 0; each call fills up
 * to max infos and returns how many (0 at the end) or a negative errno.
 */
int tv_vol_list(struct tv_pool *pool, uint64_t *cursor, struct tv_vol_info *out,
		size_t max);

/*
 * Volumes whose blob starts with prefix[0, len) (len == blob_size: equal
 * to it), through the blob index.  Fills up to max ids in id order and
 * returns how many were found in total (may exceed max).
 */
int tv_vol_find_blob(struct tv_pool *pool, const void *prefix, size_t len,
		     uint64_t *ids, size_t max);

/* ---- metadata operations (each atomic and durable on return) ---- */

enum tv_op_kind {
	TV_OP_CREATE,	/* name, size, blob -> result_id */
	TV_OP_SNAPSHOT, /* id (origin), name, flags, blob -> result_id */
	TV_OP_DELETE,	/* id */
	TV_OP_RENAME,	/* id, name */
	TV_OP_RESIZE,	/* id, size */
	TV_OP_SET_BLOB, /* id, blob */
};

struct tv_op {
	enum tv_op_kind kind;
	uint64_t id;
	const char *name;
	uint64_t size;
	uint32_t flags;
	const void *blob; /* NULL: zeroes (create, snapshot); else exactly
			   * blob_size bytes */
	size_t blob_len;
	uint64_t result_id; /* out: the new volume's id */
};

/*
 * Apply ops in order, all in one transaction: all or nothing.  On failure
 * *failed (if not NULL) is the index of the op that failed, or n when
 * the commit failed.  A commit that failed after its superblock was
 * written (a failed flush) may have made the batch durable after all:
 * its message says so, and the pool, read-only until reopened, reopens
 * with the batch or without it.
 */
int tv_batch(struct tv_pool *pool, struct tv_op *ops, size_t n, size_t *failed);

int tv_vol_create(struct tv_pool *pool, const char *name, uint64_t size,
		  const void *blob, size_t blob_len, uint64_t *id);
int tv_vol_snapshot(struct tv_pool *pool, uint64_t origin, const char *name,
		    uint32_t flags, const void *blob, size_t blob_len,
		    uint64_t *id);
/* Returns at once; the blocks are freed by later transactions and show as
 * reclaimable meanwhile (those the volume held alone). */
int tv_vol_delete(struct tv_pool *pool, uint64_t id);
int tv_vol_rename(struct tv_pool *pool, uint64_t id, const char *name);
/* Grow or shrink; shrinking frees the blocks past the end. */
int tv_vol_resize(struct tv_pool *pool, uint64_t id, uint64_t size);
int tv_vol_set_blob(struct tv_pool *pool, uint64_t id, const void *blob,
		    size_t len);

/* ---- I/O ---- */

/*
 * All offsets and lengths are multiples of 512 and lie inside the volume.
 * Reads of never-written or discarded ranges return zeroes.  A write is
 * durable after a later tv_vol_flush/tv_pool_flush returns, or at once
 * with TV_IO_FUA.  Errors: -EINVAL (range), -EROFS, -ENOSPC, -EIO.
 */
#define TV_IO_FUA (1u << 0)

int tv_vol_read(struct tv_pool *pool, uint64_t id, void *buf, size_t len,
		uint64_t off);
int tv_vol_write(struct tv_pool *pool, uint64_t id, const void *buf, size_t len,
		 uint64_t off, unsigned int flags);
/* Unmap whole blocks in the range, zero the partial ones. */
int tv_vol_discard(struct tv_pool *pool, uint64_t id, uint64_t len,
		   uint64_t off);
int tv_vol_write_zeroes(struct tv_pool *pool, uint64_t id, uint64_t len,
			uint64_t off);
int tv_vol_flush(struct tv_pool *pool, uint64_t id);

/* ---- allocation map ---- */

#define TV_EXTENT_HOLE (1u << 0) /* not mapped: reads as zeroes */

struct tv_extent {
	uint64_t len;	/* bytes */
	uint32_t flags; /* TV_EXTENT_* */
};

/*
 * The allocation map of [off, off + len) (any bytes inside the volume, len
 * > 0): consecutive runs of mapped and unmapped space, neighbours with the
 * same flags merged, at block granularity (clipped to the range).  Fills
 * up to max extents into out and sets *n; they cover the start of the
 * range, all of it unless max ran out.  O(log n + mapped blocks in the
 * range), under the metadata lock.
 */
int tv_vol_extents(struct tv_pool *pool, uint64_t id, uint64_t off,
		   uint64_t len, struct tv_extent *out, size_t max, size_t *n);

/*
 * tv_vol_read, also telling which parts of the range it found unmapped
 * (read as zeroes): up to max extents into ext, *n set.  If max runs out,
 * the last extent covers the rest as data (whose zeroes are in buf).  No
 * extra cost over tv_vol_read.
 */
int tv_vol_read_map(struct tv_pool *pool, uint64_t id, void *buf, size_t len,
		    uint64_t off, struct tv_extent *ext, size_t max, size_t *n);

/* ---- check ---- */

struct tv_check_report {
	bool clean;
	uint64_t nodes, node_refs, data_refs;
	uint64_t errors, leaks, missing, counter_errors;
	uint64_t volumes;
};

/* Verify the whole pool (committed state); messages to out if not NULL. */
int tv_pool_check(struct tv_pool *pool, void *out_FILE,
		  struct tv_check_report *rep);

#ifdef __cplusplus
}
#endif

#endif
