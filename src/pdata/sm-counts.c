/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sm-counts.c - the space map's counts in memory (rules at the top of
 * sm.c): the metadata chunks and the counts of their nodes, the data
 * blocks this transaction touched, the windows its changed counts fall in
 * (rule 6), and the secured set (rule 7).  Every change of a count goes
 * through sm_set_meta or sm_d_set, which keep the totals (m_used, m_free,
 * s_free, d_used, d_pending) and the chunk vector's room bits true.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm-internal.h"
#include "pdata/tm.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"
#include "util/u64map.h"

/* Allocatable nodes of c changed by delta: keep m_free and s_free. */
void sm_free_add(struct sm *sm, const struct mchunk *c, int64_t delta)
{
	sm->m_free += (uint64_t) delta;
	if (c->for_sm)
		sm->s_free += (uint64_t) delta;
}

void sm_chunk_free(struct mchunk *c)
{
	if (!c)
		return;
	free(c->cur);
	free(c->com);
	free(c->dirty);
	free(c);
}

void sm_room_update(struct sm *sm, struct mchunk *c)
{
	struct cvec *v = c->for_sm ? &sm->schunks : &sm->uchunks;
	size_t pos = c->pos;

	/* the position moves when chunks are added or removed before it:
	 * look it up again then (O(log n)) */
	if (pos >= v->n || v->v[pos] != c) {
		pos = sm_cvec_pos(v, c->block);
		/* a chunk being released is in no vector any more */
		if (pos >= v->n || v->v[pos] != c)
			return;
		c->pos = (uint32_t) pos;
	}
	sm_cvec_room_set(v, pos, c->busy, sm->npc);
}

/* Sm chunk c may have a free node now: raise schunks' hint to it. */
void sm_chunk_freed(struct sm *sm, const struct mchunk *c)
{
	size_t pos;

	if (!c->for_sm)
		return;
	pos = sm_cvec_pos(&sm->schunks, c->block);
	if (pos > sm->schunks.hint)
		sm->schunks.hint = pos;
}

/* The layer above learns of a chunk (tm.h, struct tm_hooks). */
static void hook_chunk(struct sm *sm, uint64_t block)
{
	const struct tm_hooks *h = tm_hooks(sm->tm);

	if (h->chunk)
		h->chunk(h->ctx, block);
}

/* A new chunk at block (not an sm chunk). */
int sm_chunk_add(struct sm *sm, uint64_t block, struct mchunk **out)
{
	struct mchunk *c = calloc(1, sizeof(*c));
	int r = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->block = block;
	c->cur = calloc(sm->npc, sizeof(uint32_t));
	c->com = calloc(sm->npc, sizeof(uint32_t));
	c->dirty = calloc(DIV_ROUND_UP(sm->npc, 64), sizeof(uint64_t));
	if (!c->cur || !c->com || !c->dirty)
		goto fail;
	r = u64map_put(&sm->chunk_idx, block, (uint64_t) (uintptr_t) c);
	if (r < 0)
		goto fail;
	r = sm_cvec_insert(&sm->uchunks, c, sm->npc);
	if (r < 0) {
		u64map_del(&sm->chunk_idx, block);
		goto fail;
	}
	sm->nr_chunks++;
	sm_free_add(sm, c, sm->npc);
	hook_chunk(sm, block);
	*out = c;
	return 0;
fail:
	sm_chunk_free(c);
	return r;
}

/* Remove c from the allocator; c stays allocated. */
void sm_chunk_unlink(struct sm *sm, struct mchunk *c)
{
	u64map_del(&sm->chunk_idx, c->block);
	sm_cvec_remove(c->for_sm ? &sm->schunks : &sm->uchunks, c);
	sm->nr_chunks--;
	sm_free_add(sm, c, -(int64_t) (sm->npc - c->busy));
}

int sm_u64_room(uint64_t **v, size_t n, size_t *cap, size_t first)
{
	size_t ncap;
	uint64_t *nv;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : first;
	nv = realloc(*v, ncap * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	*cap = ncap;
	return 0;
}

int sm_touch(struct sm *sm, struct mchunk *c)
{
	if (c->touched)
		return 0;
	if (sm_u64_room(&sm->touched, sm->nr_touched, &sm->cap_touched, 64))
		return -ENOMEM;
	sm->touched[sm->nr_touched++] = c->block;
	c->touched = true;
	if (!c->used_cur)
		sm->nr_empty_touched++;
	return 0;
}

/* Rule 6: a count under key changes in this transaction. */
void sm_win_note(struct sm *sm, uint64_t key)
{
	if (!sm->in_flush && u64map_put(&sm->win, key / SM_WINDOW, 1) < 0)
		sm->win_lost = true;
}

/* Set the current count of node i of chunk c, keeping every counter. */
int sm_set_meta(struct sm *sm, struct mchunk *c, uint32_t i, uint32_t v)
{
	uint32_t was = c->cur[i];
	bool busy_before = was || c->com[i];
	bool busy_after = v || c->com[i];
	int r = sm_touch(sm, c);

	if (r < 0)
		return r;
	c->cur[i] = v;
	if (!was && v) {
		if (!c->used_cur++)
			sm->nr_empty_touched--;
		sm->m_used++;
	} else if (was && !v) {
		if (!--c->used_cur)
			sm->nr_empty_touched++;
		sm->m_used--;
	}
	/* the bits change only at two thresholds: no update otherwise; an
	 * unsecured chunk stays busy (rule 7) */
	if (c->unsecured) {
		/* nothing: its free nodes are not handed out */
	} else if (!busy_before && busy_after) {
		c->busy++;
		sm_free_add(sm, c, -1);
		if (c->busy == sm->npc ||
		    sm->npc - c->busy == HOT_ROOM(sm->npc) - 1)
			sm_room_update(sm, c);
	} else if (busy_before && !busy_after) {
		c->busy--;
		sm_free_add(sm, c, 1);
		sm_chunk_freed(sm, c);
		if (c->busy == sm->npc - 1 ||
		    sm->npc - c->busy == HOT_ROOM(sm->npc))
			sm_room_update(sm, c);
	}
	c->dirty[i / 64] |= 1ull << (i % 64);
	sm_win_note(sm, SM_KEY_META | (c->block * sm->npc + i));
	return 0;
}

/* ---- data blocks ---- */

static void d_account(struct sm *sm, const struct dentry *e, int sign)
{
	uint64_t used = e->now > 0;
	uint64_t pending = e->old > 0 && e->now == 0;

	if (sign > 0) {
		sm->d_used += used;
		sm->d_pending += pending;
	} else {
		sm->d_used -= used;
		sm->d_pending -= pending;
	}
}

int sm_tree_count(struct sm *sm, uint64_t key, uint32_t *count)
{
	uint8_t k[8], v[4];
	int r;

	key_of(k, key);
	r = btree_lookup(&sm->info, &sm->root, k, v);
	if (r == -ENOENT) {
		*count = 0;
		return 0;
	}
	if (r < 0)
		return r;
	*count = get_le32(v);
	return 0;
}

int sm_d_get(struct sm *sm, uint64_t block, bool create, struct dentry **out)
{
	uint64_t *idx = u64map_find(&sm->d_idx, block);
	struct dentry *e;
	uint32_t count;
	int r;

	if (idx) {
		*out = &sm->d[*idx];
		return 0;
	}
	if (!create) {
		*out = NULL;
		return 0;
	}
	r = sm_tree_count(sm, block, &count);
	if (r < 0)
		return r;
	if (sm->nr_d == sm->cap_d) {
		size_t cap = sm->cap_d ? sm->cap_d * 2 : 256;
		struct dentry *v = realloc(sm->d, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		sm->d = v;
		sm->cap_d = cap;
	}
	r = u64map_put(&sm->d_idx, block, sm->nr_d);
	if (r < 0)
		return r;
	e = &sm->d[sm->nr_d++];
	e->block = block;
	e->old = e->now = count;
	e->dirty = false;
	*out = e;
	return 0;
}

void sm_d_set(struct sm *sm, struct dentry *e, uint32_t now)
{
	d_account(sm, e, -1);
	e->now = now;
	e->dirty = true;
	d_account(sm, e, +1);
	sm_win_note(sm, e->block);
}

int sm_bad_block(const struct sm *sm, uint64_t block)
{
	log_error("space map: reference to block %" PRIu64
		  " outside the pool (%" PRIu64 "..%" PRIu64 ")",
		  block, sm->first_block, sm->nr_blocks - 1);
	return -EUCLEAN;
}

/* ---- rule 7: room in the pool file ---- */

bool sm_res_has(const struct sm *sm, uint64_t block)
{
	return u64map_find(&sm->res_idx, block) != NULL;
}

int sm_res_add(struct sm *sm, uint64_t block)
{
	int r;

	if (sm_u64_room(&sm->res, sm->nr_res, &sm->cap_res, 64))
		return -ENOMEM;
	r = u64map_put(&sm->res_idx, block, sm->nr_res);
	if (r < 0)
		return r;
	sm->res[sm->nr_res++] = block;
	return 0;
}

void sm_res_del(struct sm *sm, uint64_t block)
{
	uint64_t *i = u64map_find(&sm->res_idx, block);
	uint64_t last;

	if (!i)
		return;
	last = sm->res[--sm->nr_res];
	if (last != block) {
		sm->res[*i] = last;
		u64map_put(&sm->res_idx, last, *i); /* updates: no memory */
	}
	u64map_del(&sm->res_idx, block);
}

/* A block of the secured set, taken out of it; false when it is empty. */
bool sm_res_pop(struct sm *sm, uint64_t *block)
{
	if (!sm->nr_res)
		return false;
	*block = sm->res[sm->nr_res - 1];
	sm_res_del(sm, *block);
	return true;
}

/*
 * Allocate block in the pool file (rule 7): 0 when done or when the
 * device needs nothing; the filesystem's error (-ENOSPC when full).  A
 * filesystem without fallocate turns rule 7 off.
 */
int sm_reserve_block(struct sm *sm, uint64_t block)
{
	uint64_t bs = (uint64_t) sm->npc * PD_NODE_SIZE;
	int r;

	if (!sm->fs_room)
		return 0;
	r = io_reserve(tm_dev(sm->tm), block * bs, bs);
	if (r == -EOPNOTSUPP) {
		log_info("%s: the filesystem cannot reserve room (fallocate): "
			 "a commit may fail when it is full",
			 tm_dev(sm->tm)->name);
		sm->fs_room = false;
		return 0;
	}
	if (r < 0)
		log_debug("space map: reserving block %" PRIu64 ": %s", block,
			  strerror(-r));
	return r;
}
