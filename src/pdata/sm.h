/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sm - the space map: a reference count for every pool block and every
 * metadata node.
 *
 * Two address spaces share one persistent btree (the sm tree, rooted in the
 * superblock), keyed by 64-bit big-endian address, value a le32 count:
 *
 *   SM_DATA  pool block number      (top key bit 0)
 *   SM_META  metadata node number   (top key bit 1)
 *
 * Only non-zero counts are stored.  A pool block that holds metadata nodes
 * (a "metadata chunk") has SM_DATA count 1 and a chunk record (below); its
 * nodes are counted in SM_META.  Chunk records make the set of chunks
 * known at open without scanning the data counts.
 *
 * During a transaction the tree is not touched: SM_META counts are kept in
 * memory for every chunk (loaded at open), SM_DATA changes in a table of
 * {committed count, current count}.  At commit, sm_flush writes the changes
 * into the tree; changing the tree allocates and frees its own nodes, which
 * changes counts again, so it loops until nothing is pending (each node is
 * shadowed at most once per transaction, so it converges in a few rounds).
 *
 * Allocation never returns a block or node whose committed count is
 * non-zero, so nothing freed in a transaction is reused before it commits.
 *
 * Reserve: ordinary data allocations fail with -ENOSPC while fewer than
 * 2 * R pool blocks are allocatable, new metadata chunks outside a commit
 * while fewer than R are; a commit may use the rest.  R = 4 MiB worth of
 * blocks, at most 1/16 of the pool, but never less than what a commit's
 * spare nodes need (128 nodes' worth of blocks).  What a commit needs
 * grows with its transaction (sm.c, rule 6): the engine asks sm_room
 * before each change and commits first when the answer is no, so that
 * freeing, deleting and committing always succeed on a full pool.  On a
 * pool file the same is asked of the room in the file (sm_secure, sm.c
 * rule 7), so that a full filesystem refuses changes, never commits.
 *
 * Not thread-safe: called under the pool's metadata lock.
 */
#ifndef TV_PDATA_SM_H
#define TV_PDATA_SM_H

#include <stdbool.h>
#include <stdint.h>

#include "pdata/node.h"

struct tm;
struct sm;

enum sm_space { SM_DATA = 0, SM_META = 1 };

#define SM_COUNT_MAX 0xffffffffu

struct sm_stats {
	uint64_t nr_blocks;	 /* pool blocks in the allocatable range */
	uint64_t data_used;	 /* blocks with a count, chunks included */
	uint64_t meta_chunks;	 /* blocks holding metadata nodes */
	uint64_t meta_nodes;	 /* metadata nodes in use */
	uint64_t pending_free;	 /* freed this transaction, free at commit */
	uint64_t allocatable;	 /* could be allocated now */
	uint64_t reserve;	 /* R, in blocks */
	uint64_t flush_rounds;	 /* sm_flush rounds since open (cumulative) */
	uint64_t flush_tree_ops; /* tree changes by sm_flush (cumulative) */
	uint64_t commit_need;	 /* sm_commit_need now */
	uint64_t need_exceeded;	 /* commits that took more (cumulative) */
	uint64_t secured;	 /* free blocks reserved in the file (rule 7) */
};

/*
 * Lifetime: created by tm_open (and again by tm_abort), destroyed by
 * tm_close.  Loads every chunk record and metadata node count from the tree
 * at root (O(metadata nodes)); data_used is the superblock's counter.
 */
int sm_open(struct tm *tm, const struct tm_ref *root, uint64_t data_used,
	    struct sm **out);
void sm_destroy(struct sm *sm);

/* Data blocks (SM_DATA). */
int sm_alloc_block(struct sm *sm, uint64_t *block);
int sm_inc_block(struct sm *sm, uint64_t block);
/* *new_count may be NULL; decrementing a zero count is -EUCLEAN */
int sm_dec_block(struct sm *sm, uint64_t block, uint32_t *new_count);
int sm_block_count(struct sm *sm, uint64_t block, uint32_t *count);
/* The counts of n blocks, as sm_block_count gives them, with one walk of
 * the tree where the blocks ascend: O(n + the leaves they fall in); a
 * block below the one before costs a descent. */
int sm_block_counts(struct sm *sm, const uint64_t *blocks, size_t n,
		    uint32_t *counts);

/* Metadata nodes (SM_META), used through tm.h.  near: a node the new one
 * replaces (a copy's original), to allocate close to, or 0.  Inside
 * sm_flush (nodes of the sm tree itself) they come from separate chunks.
 * Placement: see sm.c, rule 4. */
int sm_alloc_node(struct sm *sm, uint64_t near, uint64_t *node);
int sm_inc_node(struct sm *sm, uint64_t node);
int sm_dec_node(struct sm *sm, uint64_t node, uint32_t *new_count);
int sm_node_count(struct sm *sm, uint64_t node, uint32_t *count);

/* The commit side (called by tm_commit): write pending counts into the
 * tree and return its root. */
int sm_flush(struct sm *sm, struct tm_ref *root);
/* The commit reached the disk: pending frees become free. */
void sm_committed(struct sm *sm);

/* Let allocations dip into the reserve (commit, delete, discard paths). */
void sm_set_reserve_mode(struct sm *sm, bool on);

/*
 * Room to commit (sm.c, rule 6).  sm_commit_need: an upper bound on the
 * pool blocks the commit of the open transaction takes (for the space
 * map's own changes), from the windows of keys its changed counts fall
 * in.  O(1).
 */
uint64_t sm_commit_need(const struct sm *sm);
/* Rule 6: the window of an sm tree key (a data block number, or
 * SM_KEY_META | node), and whether this transaction changed a count in
 * it already: a change there adds nothing to the commit's need. */
uint64_t sm_window_of(uint64_t key);
bool sm_window_known(const struct sm *sm, uint64_t key);

/*
 * Whether a change that allocates at most blocks data blocks and nodes
 * metadata nodes, and changes counts in at most windows windows that the
 * transaction has not touched yet (a count per change bounds it), can
 * be made now and the open transaction still commit, while leaving the
 * allocatable blocks that kind must leave:
 *   SM_ROOM_DATA     twice the reserve (writes that need new blocks)
 *   SM_ROOM_META     the reserve (metadata that does not free space)
 *   SM_ROOM_FREE     the free floor (below): changes that free at least
 *                    what they take, at their commit or when the engine's
 *                    background freeing has done what they handed it;
 *                    they run in reserve mode
 *   SM_ROOM_RECLAIM  nothing beyond the commit: the steps of that
 *                    background freeing, each of which fits the free
 *                    floor from a fresh transaction (SM_FREE_FLOOR_*)
 * false: commit first, or refuse the change (-ENOSPC).  O(1).
 *
 * The free floor is SM_FREE_FLOOR_NODES nodes' worth of blocks and their
 * commit (from a fresh transaction: SM_FREE_FLOOR_WINDOWS windows), but
 * at most half the reserve (so that on the smallest pools deletes still
 * have room beside the metadata's floor).
 */
enum sm_room { SM_ROOM_DATA, SM_ROOM_META, SM_ROOM_FREE, SM_ROOM_RECLAIM };
#define SM_FREE_FLOOR_NODES   96u
#define SM_FREE_FLOOR_WINDOWS 64u
bool sm_room(const struct sm *sm, enum sm_room kind, uint64_t blocks,
	     uint64_t nodes, uint64_t windows);

/*
 * Rule 7 of sm.c, room in the pool file: make the secured set (free
 * blocks allocated in the file) hold what a change of kind that
 * allocates nodes metadata nodes and changes counts in windows new
 * windows, and then the commit, may take as new chunks, plus the kind's
 * floor; reserves more while the filesystem has room.  -ENOSPC: it has
 * none, and the set is short (refuse the change, or commit first).  0 at
 * once where the device needs no reservations.  Call after sm_room said
 * yes.
 */
int sm_secure(struct sm *sm, enum sm_room kind, uint64_t nodes,
	      uint64_t windows);
/* The filesystem refused room (a write of new data failed with ENOSPC):
 * until a reservation passes again, the secured set gives back what it
 * holds beyond what the next writes of new data need. */
void sm_fs_full(struct sm *sm);
/* Whether rule 7 is on (the device needs room reserved): the engine then
 * estimates a change from the trees rather than by its loose bounds,
 * whose room the set would hold (several MiB). */
bool sm_fs_room(const struct sm *sm);
/* Whether block is in the secured set (free, but not to be punched). */
bool sm_secured(const struct sm *sm, uint64_t block);
/* An abort's new space map takes the old one's secured set. */
void sm_move_secured(struct sm *to, struct sm *from);
/* Closing: the secured blocks are punched out of the file again. */
void sm_release_secured(struct sm *sm);

/* The smallest pool (in blocks past the superblocks) that can always
 * commit: room for the reserve several times over. */
uint64_t sm_min_blocks(uint32_t block_size);

/* Grow the allocatable range to nr_blocks. */
int sm_grow(struct sm *sm, uint64_t nr_blocks);

void sm_get_stats(const struct sm *sm, struct sm_stats *st);

/*
 * Blocks whose count dropped to zero in committed transactions and that
 * have not yet been handed to a discard: pops up to max into out, returns
 * how many.  (The engine punches holes for them in the background.)  A
 * block on this list may have been allocated again since: whoever discards
 * must make sure it is still free and cannot be allocated meanwhile.
 */
size_t sm_take_freed(struct sm *sm, uint64_t *out, size_t max);

/* Whether pool block is a metadata chunk (O(1)): what a data mapping or a
 * node pointer read from disk is checked against. */
bool sm_is_chunk(const struct sm *sm, uint64_t block);

/* The btree descriptor of the sm tree, for the checker. */
const struct btree_info *sm_tree_info(struct sm *sm);
struct tm_ref sm_root(const struct sm *sm);

/*
 * Keys of the sm tree (big-endian u64).  The top two bits name the space:
 *   00  SM_DATA   pool block number         value: count
 *   10  SM_META   metadata node number      value: count
 *   11  chunk     pool block holding nodes  value: 0 (the record itself)
 */
#define SM_KEY_META	  (2ull << 62)
#define SM_KEY_CHUNK	  (3ull << 62)
#define SM_KEY_SPACE_MASK (3ull << 62)
#define SM_TREE_TAG	  0x50414d53u /* "SMAP" */

#endif
