/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bc - block cache of 4 KiB metadata nodes, with validators.
 *
 * Every node read from the device is validated before anyone sees it: the
 * common header (checksum, own location, pool tag, magic, generation when
 * the caller knows it) and then a type-specific check supplied by the
 * caller.  A node that fails is an error (-EUCLEAN) logged once with what
 * was expected and what was found; it is never cached and never asserted.
 *
 * Handles are pinned: bc_get/bc_new return a node that stays in memory at
 * the same address until bc_put.  The same node may be pinned several
 * times.  Unpinned clean nodes are evicted by a CLOCK sweep (an
 * approximation of least-recently-used) once the cache is over its budget;
 * unpinned dirty nodes are written out
 * (checksummed) to make room, which is safe because a dirty node is always
 * at a location that the committed transaction does not reference.
 *
 * Writes: bc_dirty marks a pinned node modified; bc_write_dirty writes every
 * dirty node (sorted and coalesced) and does not flush: the transaction
 * manager decides when to flush (see tm.c for the commit order).
 *
 * Not thread-safe: the caller serialises all calls (the pool's metadata
 * lock).
 */
#ifndef TV_PDATA_BC_H
#define TV_PDATA_BC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/io.h"
#include "pdata/node.h"

struct bc;

/* A pinned node.  data is PD_NODE_SIZE bytes, 4096-aligned. */
struct bc_node {
	uint64_t blocknr;
	uint8_t *data;
};

/* What a reader expects of a node (see node.h for the header fields). */
struct bc_expect {
	uint32_t magic;
	uint64_t gen; /* 0: any generation */
	/*
	 * Type-specific validation of a node whose header passed; NULL for
	 * none.  Returns 0 or -EUCLEAN after logging what is wrong.  Called
	 * once when the node is read from the device, not on cache hits.
	 */
	int (*validate)(const struct bc_node *n, const void *ctx);
	const void *ctx;
};

struct bc_stats {
	uint64_t hits, misses, reads, writes, evictions;
	size_t nodes, dirty, pinned;
};

/*
 * Create a cache over dev with a budget of cache_bytes (rounded to nodes,
 * at least 16 nodes).  pool_tag is checked in every node read and stamped
 * into every node written.  dev is borrowed for the cache's lifetime.
 */
int bc_create(struct io_dev *dev, uint64_t pool_tag, size_t cache_bytes,
	      struct bc **out);
/* Frees everything; dirty nodes are discarded.  No node may be pinned. */
void bc_destroy(struct bc *bc);

void bc_set_pool_tag(struct bc *bc, uint64_t pool_tag);

/*
 * Pin node blocknr, reading and validating it if it is not cached.
 * Errors: -EUCLEAN (validation failed), -EIO etc. from the device,
 * -ENOMEM.  On a cache hit the header's magic and (if exp->gen) generation
 * are still compared, so a misdirected pointer is caught either way.
 */
int bc_get(struct bc *bc, uint64_t blocknr, const struct bc_expect *exp,
	   struct bc_node **out);

/*
 * Pin a fresh node at blocknr without reading the device: zero-filled,
 * header filled in (magic, blocknr, gen, pool_tag), marked dirty.  Any
 * cached copy of that location is replaced (it must not be pinned).
 */
int bc_new(struct bc *bc, uint64_t blocknr, uint32_t magic, uint64_t gen,
	   struct bc_node **out);

/*
 * bc_new, but the payload (everything after the node header) is copied
 * from src, PD_NODE_SIZE bytes that must not be in a slot this call may
 * reuse: a pinned node's data (a copy on write skips zeroing the node it
 * then overwrites).
 */
int bc_new_copy(struct bc *bc, uint64_t blocknr, uint32_t magic, uint64_t gen,
		const void *src, struct bc_node **out);

void bc_put(struct bc *bc, struct bc_node *n);

/* Mark a pinned node modified. */
void bc_dirty(struct bc *bc, struct bc_node *n);

/*
 * Write every dirty node (checksum computed here).  On error some nodes may
 * have been written; the dirty set is kept so nothing is lost, and the
 * caller poisons its transaction.
 */
int bc_write_dirty(struct bc *bc);

/*
 * The nodes written since bc_written_clear (by bc_write_dirty or to make
 * room), as byte ranges of the device: what a commit must make durable.
 * false: the list is incomplete (it ran out of memory): flush it all.
 */
bool bc_written(const struct bc *bc, const struct io_range **v, size_t *n);
void bc_written_clear(struct bc *bc);

/* Forget every cached node whose header gen is >= gen (abort). */
void bc_forget_gen(struct bc *bc, uint64_t gen);

/* Forget one unpinned cached node (after it was freed and may be reused). */
void bc_forget(struct bc *bc, uint64_t blocknr);

void bc_stats(const struct bc *bc, struct bc_stats *st);

/* Compute and store the checksum of a node image (for writers that bypass
 * the cache, e.g. the superblock). */
void bc_seal(void *data);
/* Validate the header of a raw node image; logs and returns -EUCLEAN. */
int bc_check_header(const void *data, uint64_t blocknr, uint64_t pool_tag,
		    const struct bc_expect *exp);

#endif
