/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sm-chunks.h - the space map's metadata chunks in memory, and the chunk
 * vector: chunks sorted by block with two bitmaps over their positions
 * (room, roomy) that let the allocators skip full chunks a word at a time.
 * Internal to src/pdata/sm*.c.
 *
 * Rules:
 *   1. v[0 .. n) is sorted by block, strictly increasing; a chunk is in at
 *      most one vector.
 *   2. Bit i of room is has_room(v[i]->busy, npc), bit i of roomy
 *      is_roomy(v[i]->busy, npc), for every i < n; bits at n and above are
 *      zero.  Whoever changes a chunk's busy count tells the vector
 *      (sm_cvec_room_set); insert and remove keep the bits of the others
 *      without reading their chunks.
 *   3. hint stays on the same chunk across inserts and removes before it
 *      (its meaning is the allocator's: next-fit position or the highest
 *      sm chunk that may have room).
 *
 * Cost: lookups O(log n); insert and remove O(n) memmove (chunks come and
 * go rarely, mostly at the end); the room searches O(n / 64) at worst.
 */
#ifndef TV_PDATA_SM_CHUNKS_H
#define TV_PDATA_SM_CHUNKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/checked.h"

/* The free nodes a chunk needs to be roomy: to become hot (sm-place.c,
 * sm.c rule 4). */
#define HOT_ROOM(npc) MIN((npc) / 2, 32u)

/* One metadata chunk: a pool block of npc nodes, with each node's count
 * in this transaction (cur) and at the last commit (com). */
struct mchunk {
	uint64_t block;
	uint32_t *cur;
	uint32_t *com;
	uint64_t *dirty;   /* bitmap: cur not yet written to the tree */
	uint32_t used_cur; /* nodes with cur > 0 */
	uint32_t busy;	   /* nodes with cur > 0 or com > 0 */
	bool touched;	   /* cur changed in this transaction */
	bool record_in_tree;
	bool record_dirty;
	bool for_sm;	/* an sm chunk (rule 4) */
	bool unsecured; /* rule 7: not allocated in the file; busy is
			 * npc, so no node of it is handed out */
	uint32_t pos;	/* position in its cvec, when last known */
};

/* Chunks sorted by block, with an allocation position: for the others
 * the next-fit position, for sm chunks the highest that may have a free
 * node (none above it has).  room has bit i set when chunk v[i] has a
 * node that is neither used nor freed in this transaction (busy < npc),
 * so that the allocators skip full chunks a word at a time instead of
 * reading every chunk (tens of thousands in a big pool); roomy, when it
 * has at least HOT_ROOM such nodes (a candidate hot chunk, rule 4). */
struct cvec {
	struct mchunk **v;
	size_t n, cap;
	size_t hint;
	uint64_t *room;	 /* cap bits */
	uint64_t *roomy; /* cap bits */
};

/* A chunk whose busy nodes are busy (of npc) has room: a node neither
 * used nor freed in this transaction. */
static inline bool has_room(uint32_t busy, uint32_t npc)
{
	return busy < npc;
}

/* ... and is roomy: at least HOT_ROOM such nodes (a hot candidate). */
static inline bool is_roomy(uint32_t busy, uint32_t npc)
{
	return npc - busy >= HOT_ROOM(npc);
}

/* First position in v whose block is >= block (v->n if none). */
size_t sm_cvec_pos(const struct cvec *v, uint64_t block);
/* Insert c at its place (c->block not in v yet); sets c->pos.  -ENOMEM
 * leaves v as it was. */
int sm_cvec_insert(struct cvec *v, struct mchunk *c, uint32_t npc);
/* Remove c, which is in v. */
void sm_cvec_remove(struct cvec *v, const struct mchunk *c);
/* The chunk at pos now has busy busy nodes: set its two bits. */
void sm_cvec_room_set(struct cvec *v, size_t pos, uint32_t busy, uint32_t npc);
/* Recompute every bit from the chunks (after their busy counts were set
 * directly, at open). */
void sm_cvec_room_rebuild(struct cvec *v, uint32_t npc);
/* First position >= from with its bit set in bits (v->room or
 * v->roomy), or v->n. */
size_t sm_cvec_next(const struct cvec *v, const uint64_t *bits, size_t from);
/* First position >= from with room, or v->n. */
size_t sm_cvec_room_next(const struct cvec *v, size_t from);
/* Last position <= from with room, or v->n when none. */
size_t sm_cvec_room_prev(const struct cvec *v, size_t from);
/* Free the vector's arrays (not the chunks). */
void sm_cvec_free(struct cvec *v);
#ifndef NDEBUG
/* Assert rule 2 (debug builds; skipped above 4096 chunks). */
void sm_cvec_room_check(const struct cvec *v, uint32_t npc);
#endif

#endif
