/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * check.c - the metadata checker.  Contract in check.h.
 *
 * Pass 1 walks every tree (the space map's own tree first) and counts
 * every reference to a node or block it finds.  Pass 2 reads the space map
 * tree in key order and compares each stored count with the recomputed
 * one, then reports what was referenced but has no count at all.
 */
#include "pdata/check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/btree.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "util/endian.h"
#include "util/u64map.h"

struct check {
	struct tm *tm;
	struct check_report *rep;
	FILE *out;
	unsigned int max_msgs, nr_msgs;
	struct u64map nodes; /* node -> references found */
	struct u64map data;  /* block -> references found */
	int err;	     /* the checker itself failed (ENOMEM) */
};

static void vmsg(struct check *ck, const char *fmt, va_list ap)
{
	if (!ck->out)
		return;
	if (ck->nr_msgs++ < ck->max_msgs) {
		vfprintf(ck->out, fmt, ap);
		fputc('\n', ck->out);
	}
}

static void msg(struct check *ck, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void msg(struct check *ck, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(ck, fmt, ap);
	va_end(ap);
}

void check_error(struct check *ck, const char *fmt, ...)
{
	va_list ap;

	ck->rep->errors++;
	va_start(ap, fmt);
	vmsg(ck, fmt, ap);
	va_end(ap);
}

struct tm *check_tm(struct check *ck)
{
	return ck->tm;
}

static uint64_t bump(struct check *ck, struct u64map *m, uint64_t key)
{
	uint64_t *v = u64map_find(m, key);

	if (v)
		return ++*v;
	if (u64map_put(m, key, 1) < 0)
		ck->err = -ENOMEM;
	return 1;
}

bool check_node_ref(struct check *ck, uint64_t blocknr)
{
	uint64_t limit = tm_dev(ck->tm)->size >> PD_NODE_SHIFT;

	if (blocknr < 2 || blocknr >= limit) {
		check_error(ck,
			    "reference to metadata node %" PRIu64
			    ", outside the metadata area",
			    blocknr);
		return false;
	}
	ck->rep->node_refs++;
	if (bump(ck, &ck->nodes, blocknr) == 1) {
		ck->rep->nodes++;
		return true;
	}
	return false;
}

void check_data_ref(struct check *ck, uint64_t block)
{
	if (block < tm_first_block(ck->tm) || block >= tm_nr_blocks(ck->tm)) {
		check_error(
		    ck,
		    "reference to block %" PRIu64
		    ", outside the data area (%" PRIu64 "..%" PRIu64 ")",
		    block, tm_first_block(ck->tm), tm_nr_blocks(ck->tm) - 1);
		return;
	}
	ck->rep->data_refs++;
	bump(ck, &ck->data, block);
}

void check_tree(struct check *ck, const struct btree_info *info,
		const struct tm_ref *root)
{
	int r = btree_check(info, root, ck);

	if (r < 0 && !ck->err)
		ck->err = r;
}

/* Compare one stored count with the recomputed one. */
static void compare(struct check *ck, const char *what, uint64_t addr,
		    uint64_t stored, uint64_t found)
{
	if (stored > found) {
		ck->rep->leaks++;
		msg(ck,
		    "leak: %s %" PRIu64 " counted %" PRIu64
		    ", referenced %" PRIu64,
		    what, addr, stored, found);
	} else if (stored < found) {
		ck->rep->missing++;
		msg(ck,
		    "missing reference count: %s %" PRIu64 " counted %" PRIu64
		    ", referenced %" PRIu64 " (could be handed out twice)",
		    what, addr, stored, found);
	}
}

static int compare_space_map(struct check *ck, uint64_t *data_used,
			     uint64_t *meta_nodes, uint64_t *chunks)
{
	struct sm *sm = tm_sm(ck->tm);
	const struct btree_info *info = sm_tree_info(sm);
	struct tm_ref root = sm_root(sm);
	uint64_t npc = tm_block_size(ck->tm) / PD_NODE_SIZE;
	struct u64map chunk_set;
	struct btree_cursor c;
	uint64_t *v, key, val;
	size_t pos;
	int r;

	u64map_init(&chunk_set);
	/* chunk records first: each is one reference to its block */
	r = btree_cursor_seek(info, &root, NULL, &c);
	while (r == 0 && c.valid) {
		key = get_be64(btree_cursor_key(&c));
		if ((key & SM_KEY_SPACE_MASK) == SM_KEY_CHUNK) {
			uint64_t block = key & ~SM_KEY_SPACE_MASK;

			(*chunks)++;
			if (u64map_put(&chunk_set, block, 1) < 0) {
				r = -ENOMEM;
				break;
			}
			/* the references counted so far are the trees'
			 * values: data mappings */
			v = u64map_find(&ck->data, block);
			if (v)
				check_error(ck,
					    "block %" PRIu64 " is a metadata "
					    "chunk, but mapped as data "
					    "%" PRIu64 " time%s",
					    block, *v, *v == 1 ? "" : "s");
			check_data_ref(ck, block);
		}
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	if (r < 0)
		goto out;

	/* every referenced node must lie in a chunk */
	pos = 0;
	while (u64map_next(&ck->nodes, &pos, &key, &val))
		if (!u64map_find(&chunk_set, key / npc))
			check_error(ck,
				    "metadata node %" PRIu64
				    " lies outside every metadata chunk",
				    key);

	r = btree_cursor_seek(info, &root, NULL, &c);
	while (r == 0 && c.valid) {
		uint64_t stored;

		key = get_be64(btree_cursor_key(&c));
		stored = get_le32(btree_cursor_value(&c));
		switch (key & SM_KEY_SPACE_MASK) {
		case 0:
			if (u64map_find(&chunk_set, key) && stored != 1)
				check_error(ck,
					    "metadata chunk %" PRIu64
					    " has count %" PRIu64
					    ", not 1 (is it also used "
					    "for data?)",
					    key, stored);
			v = u64map_find(&ck->data, key);
			compare(ck, "block", key, stored, v ? *v : 0);
			if (v)
				u64map_del(&ck->data, key);
			if (stored)
				(*data_used)++;
			else
				check_error(ck,
					    "space map stores a zero "
					    "count for block %" PRIu64,
					    key);
			break;
		case SM_KEY_META:
			key &= ~SM_KEY_SPACE_MASK;
			v = u64map_find(&ck->nodes, key);
			compare(ck, "metadata node", key, stored, v ? *v : 0);
			if (v)
				u64map_del(&ck->nodes, key);
			(*meta_nodes)++;
			break;
		case SM_KEY_CHUNK:
			break;
		default:
			check_error(ck,
				    "space map key %016" PRIx64
				    " in no known space",
				    key);
		}
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	if (r < 0)
		goto out;

	/* referenced, but not counted at all */
	pos = 0;
	while (u64map_next(&ck->data, &pos, &key, &val))
		compare(ck, "block", key, 0, val);
	pos = 0;
	while (u64map_next(&ck->nodes, &pos, &key, &val))
		compare(ck, "metadata node", key, 0, val);
out:
	u64map_free(&chunk_set);
	return r;
}

int check_run(struct tm *tm, const struct check_root *roots, unsigned int nr,
	      FILE *out, unsigned int max_msgs, struct check_report *rep)
{
	struct check ck = {
	    .tm = tm,
	    .rep = rep,
	    .out = out,
	    .max_msgs = max_msgs,
	};
	struct sm *sm = tm_sm(tm);
	struct tm_ref smroot = sm_root(sm);
	uint64_t data_used = 0, meta_nodes = 0, chunks = 0;
	struct sm_stats st;
	int r;

	memset(rep, 0, sizeof(*rep));
	u64map_init(&ck.nodes);
	u64map_init(&ck.data);

	check_tree(&ck, sm_tree_info(sm), &smroot);
	for (unsigned int i = 0; i < nr; i++) {
		struct tm_ref *root = tm_root(tm, roots[i].slot);

		if (!root) {
			r = -EINVAL;
			goto out;
		}
		check_tree(&ck, roots[i].info, root);
	}
	if (ck.err) {
		r = ck.err;
		goto out;
	}
	r = compare_space_map(&ck, &data_used, &meta_nodes, &chunks);
	if (r < 0)
		goto out;

	sm_get_stats(sm, &st);
	{
		uint64_t sb_nodes, sb_chunks;
		tm_sb_counters(tm, &sb_nodes, &sb_chunks);
		st.meta_nodes = sb_nodes;
		st.meta_chunks = sb_chunks;
	}
	if (st.data_used != data_used || st.meta_nodes != meta_nodes ||
	    st.meta_chunks != chunks) {
		rep->counter_errors++;
		msg(&ck,
		    "usage counters: %" PRIu64 " blocks, %" PRIu64
		    " nodes, %" PRIu64 " chunks recorded; %" PRIu64 ", %" PRIu64
		    ", %" PRIu64 " found",
		    st.data_used, st.meta_nodes, st.meta_chunks, data_used,
		    meta_nodes, chunks);
	}
	if (out && ck.nr_msgs > max_msgs)
		fprintf(out, "... %u more messages\n", ck.nr_msgs - max_msgs);
	r = ck.err;
out:
	u64map_free(&ck.nodes);
	u64map_free(&ck.data);
	return r;
}
