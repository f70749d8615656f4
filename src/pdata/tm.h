/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tm - transaction manager: the superblocks, shadowing, and commit.
 *
 * A store is one device: two superblocks at nodes 0 and 1 (the first
 * max(8 KiB, block_size) bytes), then pool blocks of block_size bytes.  Pool
 * blocks hold data or, carved into 4 KiB nodes, metadata; the space map
 * (sm.h) counts references to both.
 *
 * Transactions.  There is always exactly one open transaction, numbered
 * tm_txn() == committed txn + 1.  Rules:
 *
 *   1. Nothing the committed transaction references is ever written: a node
 *      is changed by shadowing it (tm_shadow), which copies it to a new
 *      location unless it was created in this transaction and is not
 *      shared.
 *   2. Blocks and nodes freed in a transaction are not reused before it
 *      commits (the space map enforces it).
 *   3. Commit (tm_commit), in this order:
 *        a. apply the space map's pending reference counts to its tree
 *        b. write every dirty node
 *        c. flush the device               (the nodes are durable)
 *        d. write superblock txn % 2 with the new roots and txn
 *        e. flush the device               (the transaction is durable)
 *      tm_commit_ranged makes (c) and (e) ranged syncs (io_sync_ranges):
 *      (c) of the nodes written in the transaction and of the data ranges
 *      the caller names, with slot txn % 2 as the barrier (its old
 *      contents written again), and (e) of the new superblock alone.
 *      Other data written since the last flush is not made durable.
 *      A crash before (e) leaves superblock (txn - 1) % 2 valid and every
 *      node it references untouched (rule 1), so the store opens at the
 *      previous transaction; a crash after (d) reached the disk opens at the
 *      new one.  Opening picks the valid superblock with the higher txn.
 *   4. Any error inside a transaction poisons it: every later call fails
 *      with the same error until tm_abort.  An error during commit steps
 *      (d)-(e) leaves it unknown which superblock the device holds, the
 *      new one or the one before (after a failed flush the page cache may
 *      show the new one while the disk has the old, and a crash may then
 *      bring up either): the store is in doubt (tm_in_doubt) and
 *      read-only (tm_state) until it is reopened.  In doubt it keeps the
 *      failed transaction's state, its roots and its space map, and
 *      tm_abort changes nothing: what that space map can still allocate
 *      is free in both transactions (sm.c, rule 1), so a block written
 *      meanwhile (tv_pool_probe's) holds nothing either one uses.  A store
 *      opened again at the new transaction writes its superblock again
 *      (tm_settle) before anything else, so that no crash takes it back to
 *      the old one, whose blocks the new one may have freed and the next
 *      transactions reuse.
 *   5. A node pointer from disk is followed (tm_read) only to a node of a
 *      metadata chunk: never a superblock, a data block or past the pool
 *      (a data block's bytes are a client's to choose).
 *
 * The layers above keep their tree roots in TM_NR_ROOTS root slots and
 * their counters in TM_USER_BYTES of the superblock; both are saved by the
 * commit that follows a change and restored by abort.
 *
 * Not thread-safe: the caller serialises every call (one metadata lock).
 */
#ifndef TV_PDATA_TM_H
#define TV_PDATA_TM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "pdata/node.h"

struct tm;
struct sm;

#define TM_FORMAT_VERSION 1
#define TM_NR_ROOTS	  8
#define TM_USER_BYTES	  512
#define TM_MIN_BLOCK_SIZE 4096u
#define TM_MAX_BLOCK_SIZE (1u << 30)

struct tm_format_opts {
	uint32_t block_size; /* power of two, 4 KiB .. 1 GiB; 0 = 64 KiB */
	const uint8_t *uuid; /* 16 bytes, or NULL for a random one */
	const uint8_t *user; /* TM_USER_BYTES of initial user bytes, or NULL
			      * for zeroes: written with the superblocks, so
			      * a pool is never seen without them */
};

/*
 * What the layer above learns of the space map's blocks (the engine's I/O
 * path keeps a set of the metadata chunks that it reads without the
 * metadata lock: vio-cache.c, rule 10).  Called from inside tm and sm calls,
 * with the caller's lock held; a hook must not call tm or sm.  Any may be
 * NULL.
 */
struct tm_hooks {
	void *ctx;
	/* block holds metadata now: a chunk found at open (or at an abort's
	 * reload) or taken by the space map */
	void (*chunk)(void *ctx, uint64_t block);
	/* block was taken for data (sm_alloc_block) */
	void (*data)(void *ctx, uint64_t block);
	/* a commit made blocks free (reusable from now on) */
	void (*freed)(void *ctx);
};

struct tm_open_opts {
	size_t cache_bytes;	      /* metadata cache budget; 0 = 64 MiB */
	bool read_only;		      /* never write (commit returns -EROFS) */
	const struct tm_hooks *hooks; /* copied; NULL: none */
};

/*
 * Write an empty store on dev: transaction 1, empty space map.  Destroys
 * whatever dev held (the caller checks first).  dev->size must hold the
 * superblocks and at least sm_min_blocks() pool blocks (2 MiB or so).
 */
int tm_format(struct io_dev *dev, const struct tm_format_opts *opts);

/*
 * Open the store on dev (borrowed until tm_close).  Errors: -EUCLEAN when
 * neither superblock is valid or the space map is damaged, -EIO etc.
 */
int tm_open(struct io_dev *dev, const struct tm_open_opts *opts,
	    struct tm **out);

/* Close without committing: an open transaction is abandoned. */
void tm_close(struct tm *tm);

int tm_commit(struct tm *tm);
/* A commit whose flushes cover only the transaction's nodes, the data
 * ranges given and what io_sync_ranges promises (rule 3). */
int tm_commit_ranged(struct tm *tm, const struct io_range *data, size_t n);
/* Drop the open transaction's changes and return to the committed state.
 * Allowed after any error; may fail only for I/O errors reloading it.  In
 * doubt (rule 4) it changes nothing. */
int tm_abort(struct tm *tm);

/* 0, or the negative errno that poisoned the transaction or the store. */
int tm_state(const struct tm *tm);
/* true once an error made the store read-only until reopened */
bool tm_read_only(const struct tm *tm);
/* Rule 4: a commit failed at step d or e; tm_txn() is the transaction
 * the device may or may not hold. */
bool tm_in_doubt(const struct tm *tm);
/*
 * Rule 4: make the committed state durable where it is: a flush, its
 * superblock written again in its own slot, a flush.  For a store opened
 * after a commit in doubt, at that commit's transaction: the superblock
 * may have reached only the page cache.  A torn rewrite leaves the other
 * slot, the transaction before, whose blocks nothing has reused yet.
 */
int tm_settle(struct tm *tm);
/* Poison the open transaction from a layer above (after a failed write). */
void tm_poison(struct tm *tm, int err);

/*
 * For tests: the random source of node generations (NULL: getrandom), so
 * that a test can make it fail and check the fallback (tm.c,
 * new_node_gen).  Process-wide; set it while no store is open.
 */
void tm_set_getrandom(ssize_t (*fn)(void *buf, size_t len, unsigned int flags));

uint64_t tm_txn(const struct tm *tm); /* the open transaction */
/* The metadata counters the committed superblock records (for check). */
void tm_sb_counters(const struct tm *tm, uint64_t *meta_nodes,
		    uint64_t *meta_chunks);
uint64_t tm_committed_txn(const struct tm *tm); /* tm_txn() - 1 */
/* The slot (0 or 1) whose superblock did not validate when the store was
 * opened while the other did, or -1; cleared by the next commit. */
int tm_damaged_superblock(const struct tm *tm);

/* Root slots and user bytes of the superblock (mutable, committed with
 * the transaction). */
struct tm_ref *tm_root(struct tm *tm, unsigned int slot);
uint8_t *tm_user(struct tm *tm);
/* The root slot as the last committed transaction left it.  Its trees can
 * be read while a transaction is open (rule 1: nothing they reference is
 * written, and rule 2: nothing they reference is reused), e.g. to ask what
 * the committed state shows. */
const struct tm_ref *tm_committed_root(const struct tm *tm, unsigned int slot);

/* Geometry. */
uint32_t tm_block_size(const struct tm *tm);
uint64_t tm_nr_blocks(const struct tm *tm);   /* pool blocks on the device */
uint64_t tm_first_block(const struct tm *tm); /* first allocatable block */
const uint8_t *tm_uuid(const struct tm *tm);  /* 16 bytes */
uint64_t tm_pool_tag(const struct tm *tm);
struct sm *tm_sm(struct tm *tm);
const struct tm_hooks *tm_hooks(const struct tm *tm);
struct bc *tm_bc(struct tm *tm);
struct io_dev *tm_dev(struct tm *tm);

/*
 * Cumulative commit statistics since open (for benchmarks and tests):
 * what each commit cost, by step of the commit order (rule 3).  Times are
 * CLOCK_MONOTONIC nanoseconds.
 */
struct tm_commit_stats {
	uint64_t commits;	/* successful commits */
	uint64_t nodes_written; /* nodes written by step b (and evictions) */
	uint64_t sm_rounds;	/* rounds of sm_flush's fixpoint (step a) */
	uint64_t sm_tree_ops;	/* space map tree changes in step a */
	uint64_t ns_sm_flush;	/* step a */
	uint64_t ns_write;	/* step b */
	uint64_t ns_flush;	/* step c */
	uint64_t ns_super;	/* steps d and e */
};
void tm_commit_stats(const struct tm *tm, struct tm_commit_stats *st);

/* Grow the store to the device's current size (after io_resize). */
int tm_grow(struct tm *tm);

/* ---- nodes (used by btree.c and the space map) ---- */

/*
 * Allocate a metadata node (reference count 1) in this transaction and pin
 * it zero-filled with its header set.  *ref receives its location and gen.
 */
int tm_new_node(struct tm *tm, uint32_t magic, struct tm_ref *ref,
		struct bc_node **out);

/* Pin the node ref points to; exp->gen is taken from ref.  A failed read
 * (-EUCLEAN, -EIO) does not poison the transaction: the caller decides
 * (changes poison it, lookups need not). */
int tm_read(struct tm *tm, const struct tm_ref *ref,
	    const struct bc_expect *exp, struct bc_node **out);

/*
 * Make the node *ref points to writable and pin it.  If it was created in
 * this transaction and its count is 1, it is returned as is and
 * *inc_children is false.  Otherwise it is copied to a new node (placed
 * near the original, or with the other new nodes if the previous
 * transaction wrote it: sm.c, rule 4), *ref is
 * updated, the original's count is decremented, and *inc_children tells
 * whether the original was shared (count > 1): if so the copy is a new
 * owner of everything the node references and the caller must increment
 * those references (child nodes, value references).  If not shared, the
 * references simply move to the copy.
 */
int tm_shadow(struct tm *tm, struct tm_ref *ref, const struct bc_expect *exp,
	      struct bc_node **out, bool *inc_children);

void tm_put(struct tm *tm, struct bc_node *n);
void tm_dirty(struct tm *tm, struct bc_node *n);

/* Reference counts of metadata nodes.  tm_dec_node only decrements: when
 * the count reaches 0 the caller releases what the node referenced.  A
 * node whose count reached 0 may be reallocated at once (if it was created
 * in this transaction) and need never have been written: read what you
 * need from it before the decrement (check tm_node_count first). */
int tm_inc_node(struct tm *tm, uint64_t blocknr);
/* Changes whenever a node gains an owner (tm_inc_node): whoever changes
 * a node in place that it pinned earlier (btree hints) learns whether the
 * node may be shared since.  O(1). */
uint64_t tm_share_seq(const struct tm *tm);
int tm_dec_node(struct tm *tm, uint64_t blocknr, uint32_t *new_count);
int tm_node_count(struct tm *tm, uint64_t blocknr, uint32_t *count);

#endif
