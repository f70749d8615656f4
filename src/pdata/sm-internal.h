/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sm-internal.h - what the space map's files share: the in-memory state
 * (struct sm) and the steps one file offers the others.  Not a contract
 * for anyone outside src/pdata/sm*.c (that is sm.h); the rules the
 * numbers refer to are at the top of sm.c.
 *
 * The files, each using only those listed before it:
 *   sm-chunks.c  the chunk vector and its room bitmaps (sm-chunks.h);
 *   sm-counts.c  the counts of a transaction: metadata chunks and their
 *                nodes, data blocks touched, the secured set (rule 7);
 *   sm-place.c   placement: where new data blocks, chunks and metadata
 *                nodes go (rule 4);
 *   sm.c         the rest of sm.h: counts, commit, open, room estimates.
 */
#ifndef TV_PDATA_SM_INTERNAL_H
#define TV_PDATA_SM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pdata/btree.h"
#include "pdata/sm-chunks.h"
#include "pdata/sm.h"
#include "util/endian.h"
#include "util/u64map.h"

/* Free nodes kept ready before each tree operation inside sm_flush: a
 * generous bound on what one insert or remove can allocate. */
#define SPARE_NODES 64u
/* Of those, kept in sm chunks (rule 4) when the pool has room: a quarter,
 * so that a small pool does not hold a chunk more for it. */
#define SM_SPARE_NODES 16u
/* Empty chunks that the next commit looks at again (to release them, or
 * keep them as spare): more than a commit's spare nodes fill, even with
 * one node a chunk; beyond that, they wait until they are touched. */
#define KEPT_MAX (2 * SPARE_NODES)
/* How far from its original a copy is placed, at most (rule 4). */
#define NEAR_NODES 64u
/* Hot chunks (rule 4): how many, the smallest chunk (in nodes) worth it,
 * how many nodes a transaction places there at most, and the free nodes
 * a chunk needs to become hot (HOT_ROOM, sm-chunks.h), below which a
 * transaction starts on another (with big blocks one chunk holds the hot
 * nodes of many transactions: no more is taken). */
#define HOT_CHUNKS   3u
#define HOT_MIN_NPC  8u
#define HOT_MAX(npc) MIN(2u * (npc), 64u)
#define FREED_MAX    (1u << 20)
/* Rule 6: the fewest entries an sm tree leaf other than the root holds
 * (a quarter of what fits: 8-byte keys, 4-byte counts), so that W
 * consecutive keys fall in at most two leaves. */
#define SM_WINDOW ((PD_NODE_SIZE - BTREE_HEADER_SIZE) / 12 / 4)
/* Rule 6: nodes a commit may need besides 2 per window: the spare nodes
 * sm_ensure_spare keeps free while it runs (SPARE_NODES in all, of which
 * SM_SPARE_NODES in sm chunks), and a path to the root. */
#define NEED_SLACK_NODES (SPARE_NODES + SM_SPARE_NODES + 16)

struct dentry {
	uint64_t block;
	uint32_t old; /* committed count */
	uint32_t now; /* current count */
	bool dirty;   /* now not yet written to the tree */
};

struct sm {
	struct tm *tm;
	struct btree_info info;
	struct tm_ref root;
	uint64_t first_block;
	uint64_t nr_blocks;
	uint32_t npc; /* nodes per chunk */
	uint64_t reserve;
	bool reserve_mode;
	bool in_flush;

	/* metadata chunks: sm chunks (rule 4) and the others, each sorted
	 * by block */
	struct cvec schunks, uchunks;
	size_t nr_chunks;
	struct u64map chunk_idx; /* block -> struct mchunk * */
	uint64_t m_used;	 /* nodes with cur > 0 */
	uint64_t m_free;	 /* allocatable nodes in chunks */
	uint64_t s_free;   /* allocatable nodes in schunks (part of m_free) */
	uint64_t *touched; /* blocks of touched chunks */
	size_t nr_touched, cap_touched;
	uint64_t nr_empty_touched; /* of those, with no node in use */
	/* chunks empty at the last commit, looked at again by the next */
	uint64_t kept[KEPT_MAX];
	size_t nr_kept;

	/* data blocks touched in this transaction */
	struct dentry *d;
	size_t nr_d, cap_d;
	struct u64map d_idx; /* block -> index in d */
	uint64_t d_used;     /* blocks with a current count > 0 */
	uint64_t d_pending;  /* committed > 0, current == 0 */
	uint64_t d_hint;

	uint64_t *freed;
	size_t nr_freed, cap_freed;

	/* rule 6: the windows of the counts this transaction changed */
	struct u64map win;
	bool win_lost;		 /* out of memory: assume the worst */
	uint64_t flush_acquired; /* blocks acquired by the running sm_flush */
	uint64_t need_exceeded;	 /* commits that took more (statistics) */

	uint64_t flush_rounds, flush_tree_ops; /* statistics */
	/* sm_flush's changes go through one hint: consecutive counts mostly
	 * share a leaf (btree.h) */
	struct btree_hint hint;

	/* hot chunks (rule 4): blocks, the one in use, nodes placed there
	 * in this transaction */
	uint64_t hot[HOT_CHUNKS];
	unsigned int nr_hot, hot_cur;
	uint32_t hot_used;

	/* rule 7: whether the device needs room reserved, and the secured
	 * set (free blocks reserved in the file): res[], its index, where
	 * sm_secure looks next */
	bool fs_room;
	bool fs_full; /* the last reservation failed */
	uint64_t *res;
	size_t nr_res, cap_res;
	struct u64map res_idx; /* block -> index in res */
	uint64_t res_hint;
};

static inline void key_of(uint8_t k[8], uint64_t v)
{
	put_be64(k, v);
}

enum alloc_kind { ALLOC_DATA, ALLOC_META };

/* ---- sm-counts.c ---- */

/* Room for one more element in the array *v of n elements (capacity
 * *cap, doubled from first): -ENOMEM leaves it as it was. */
int sm_u64_room(uint64_t **v, size_t n, size_t *cap, size_t first);

/* The chunk at block (NULL: none); the chunk that holds node, and the
 * node's index in it. */
static inline struct mchunk *sm_chunk_find(const struct sm *sm, uint64_t block)
{
	uint64_t *v = u64map_find(&sm->chunk_idx, block);

	return v ? (struct mchunk *) (uintptr_t) *v : NULL;
}

static inline struct mchunk *sm_chunk_of_node(const struct sm *sm,
					      uint64_t node, uint32_t *index)
{
	struct mchunk *c = sm_chunk_find(sm, node / sm->npc);

	if (c)
		*index = (uint32_t) (node % sm->npc);
	return c;
}
/* Allocatable nodes of c changed by delta: keep m_free and s_free. */
void sm_free_add(struct sm *sm, const struct mchunk *c, int64_t delta);
void sm_chunk_free(struct mchunk *c);
/* c->busy changed: keep its room and roomy bits. */
void sm_room_update(struct sm *sm, struct mchunk *c);
/* Sm chunk c may have a free node now: raise schunks' hint to it. */
void sm_chunk_freed(struct sm *sm, const struct mchunk *c);
/* A new chunk at block (not an sm chunk). */
int sm_chunk_add(struct sm *sm, uint64_t block, struct mchunk **out);
/* Remove c from the allocator; c stays allocated. */
void sm_chunk_unlink(struct sm *sm, struct mchunk *c);
/* c changes in this transaction: remember it for the commit. */
int sm_touch(struct sm *sm, struct mchunk *c);
/* Rule 6: a count under key changes in this transaction. */
void sm_win_note(struct sm *sm, uint64_t key);
/* Set the current count of node i of chunk c, keeping every counter. */
int sm_set_meta(struct sm *sm, struct mchunk *c, uint32_t i, uint32_t v);
/* The committed count under key in the tree (0 when absent). */
int sm_tree_count(struct sm *sm, uint64_t key, uint32_t *count);
/* The entry of data block block in this transaction; with create, made
 * from the tree's count if there is none (else *out = NULL). */
int sm_d_get(struct sm *sm, uint64_t block, bool create, struct dentry **out);
/* Set e's current count, keeping the counters. */
void sm_d_set(struct sm *sm, struct dentry *e, uint32_t now);
/* -EUCLEAN, logged: block is outside the pool. */
int sm_bad_block(const struct sm *sm, uint64_t block);

/* -EUCLEAN (logged) for a block outside the pool. */
static inline int sm_check_block(const struct sm *sm, uint64_t block)
{
	if (__builtin_expect(block >= sm->first_block && block < sm->nr_blocks,
			     1))
		return 0;
	return sm_bad_block(sm, block);
}

/* Blocks neither in use nor freed in this transaction. */
static inline uint64_t sm_allocatable(const struct sm *sm)
{
	uint64_t range = sm->nr_blocks - sm->first_block;
	uint64_t busy = sm->d_used + sm->d_pending;

	return busy >= range ? 0 : range - busy;
}
/* Rule 7: the secured set. */
bool sm_res_has(const struct sm *sm, uint64_t block);
int sm_res_add(struct sm *sm, uint64_t block);
void sm_res_del(struct sm *sm, uint64_t block);
/* A block of the secured set, taken out of it; false when it is empty. */
bool sm_res_pop(struct sm *sm, uint64_t *block);
/* Allocate block in the pool file (rule 7). */
int sm_reserve_block(struct sm *sm, uint64_t block);

/* ---- sm-place.c ---- */

/* A free block in [lo, hi) (*ok tells whether one was found). */
int sm_scan_range(struct sm *sm, uint64_t lo, uint64_t hi, bool skip_res,
		  bool *ok, uint64_t *found);
/* Make c an sm chunk (rule 4). */
int sm_chunk_set_sm(struct sm *sm, struct mchunk *c);
/* Rule 2: free nodes ready before each change of the sm tree. */
int sm_ensure_spare(struct sm *sm);
/* Whether the chunk at block is hot (rule 4). */
static inline bool sm_is_hot(const struct sm *sm, uint64_t block)
{
	for (unsigned int k = 0; k < sm->nr_hot; k++)
		if (sm->hot[k] == block)
			return true;
	return false;
}
/* At open: offer chunk c as a hot chunk (rule 4). */
void sm_hot_offer(struct sm *sm, const struct mchunk *c);

#endif
