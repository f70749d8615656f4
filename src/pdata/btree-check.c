/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree-check.c - what a btree node must look like: a tree's geometry,
 * the validator every node read passes (bc_expect.validate, also run on
 * every pin), and btree_check, which walks a whole tree and verifies the
 * invariants of btree-internal.h.
 *
 * A bad node is an error (-EUCLEAN, logged once here), never an assert:
 * its bytes come from disk.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/btree-internal.h"
#include "pdata/check.h"
#include "pdata/tm.h"
#include "util/log.h"

static int btree_validate(const struct bc_node *n, const void *ctx);

int btree_geom_init(const struct btree_info *info, struct geom *g)
{
	uint32_t ks, vs;

	if (!info || !info->tm)
		return -EINVAL;
	ks = info->key_size;
	vs = info->value.size;
	if (ks == 0 || ks > BTREE_MAX_KEY || vs > BTREE_MAX_VALUE)
		return -EINVAL;
	g->tag = info->tag;
	g->key_size = ks;
	g->leaf_vsize = vs;
	g->leaf_max = BTREE_PAYLOAD / (ks + vs);
	g->int_max = BTREE_PAYLOAD / (ks + REF_SIZE);
	/* min = max / 4 must be >= 2 for splits and merges to work */
	if (g->leaf_max < BTREE_MIN_MAX_ENTRIES ||
	    g->int_max < BTREE_MIN_MAX_ENTRIES)
		return -EINVAL;
	return 0;
}

int btree_bt_init(struct bt *b, const struct btree_info *info)
{
	int r = btree_geom_init(info, &b->g);

	if (r)
		return r;
	b->info = info;
	b->tm = info->tm;
	b->exp.magic = PD_MAGIC_BTREE;
	b->exp.gen = 0; /* tm_read takes it from the ref */
	b->exp.validate = btree_validate;
	b->exp.ctx = &b->g;
	return 0;
}

/* ---- validation ---- */

int btree_bad_field(const struct bc_node *n, const char *field,
		    unsigned long long expected, unsigned long long found)
{
	log_error("btree node %llu: bad %s: expected %llu, found %llu",
		  (unsigned long long) n->blocknr, field, expected, found);
	return -EUCLEAN;
}

/* bc_expect.validate: the btree header against the tree's geometry.
 * Also run on every pin (cheap), because bc skips it on cache hits and a
 * corrupt pointer may lead into a cached node of another tree. */
static int btree_validate(const struct bc_node *n, const void *ctx)
{
	const struct geom *g = ctx;
	const struct disk_btree_header *h = bth(n);
	unsigned int flags = le16_to_cpu(h->flags);
	unsigned int level = le16_to_cpu(h->level);
	unsigned int nr = le16_to_cpu(h->nr_entries);
	unsigned int max = le16_to_cpu(h->max_entries);
	bool leaf = flags & BTREE_FLAG_LEAF;

	if (le32_to_cpu(h->tag) != g->tag) {
		log_error("btree node %llu: bad tree tag: expected %#x, found "
			  "%#x (a pointer into another kind of tree?)",
			  (unsigned long long) n->blocknr, g->tag,
			  le32_to_cpu(h->tag));
		return -EUCLEAN;
	}
	if (flags & ~BTREE_FLAG_LEAF)
		return btree_bad_field(n, "flags", flags & BTREE_FLAG_LEAF,
				       flags);
	if (level >= BTREE_MAX_DEPTH)
		return btree_bad_field(n, "level (max)", BTREE_MAX_DEPTH - 1,
				       level);
	if (leaf != (level == 0))
		return btree_bad_field(n, "level (leaf iff 0)", leaf ? 0 : 1,
				       level);
	if (le16_to_cpu(h->key_size) != g->key_size)
		return btree_bad_field(n, "key_size", g->key_size,
				       le16_to_cpu(h->key_size));
	if (le16_to_cpu(h->value_size) != (leaf ? g->leaf_vsize : REF_SIZE))
		return btree_bad_field(n, "value_size",
				       leaf ? g->leaf_vsize : REF_SIZE,
				       le16_to_cpu(h->value_size));
	if (max != (leaf ? g->leaf_max : g->int_max))
		return btree_bad_field(n, "max_entries",
				       leaf ? g->leaf_max : g->int_max, max);
	if (nr > max)
		return btree_bad_field(n, "nr_entries (max)", max, nr);
	for (size_t i = 0; i < sizeof(h->reserved); i++)
		if (h->reserved[i])
			return btree_bad_field(n, "reserved byte", 0,
					       h->reserved[i]);
	return 0;
}

/*
 * What a parent promises about a child: level one less, and an internal
 * node has children.  level < 0: no expectation (a root).
 */
int btree_check_pinned(struct bt *b, const struct bc_node *n, int level)
{
	int r = btree_validate(n, &b->g);

	if (r)
		return r;
	if (level >= 0 && level_of(n) != (unsigned int) level)
		return btree_bad_field(n, "level (parent's - 1)",
				       (unsigned int) level, level_of(n));
	if (!is_leaf(n) && nr_of(n) == 0)
		return btree_bad_field(n, "nr_entries of internal node", 1, 0);
	return 0;
}

/* ---- checker ---- */

/*
 * Walk the subtree at ref, whose keys must lie in [lo, hi) (NULL: no
 * bound).  level < 0 for the root.  A node referenced before (shared) is
 * counted but not walked again, so bounds and fill are checked in the
 * context of its first reference only.
 */
static void check_subtree(struct bt *b, struct check *ck,
			  const struct tm_ref *ref, int level, const void *lo,
			  const void *hi)
{
	unsigned long long nb = (unsigned long long) ref->blocknr;
	struct bc_node *n;
	unsigned int nr, i;
	int r;

	if (!check_node_ref(ck, ref->blocknr))
		return;
	r = tm_read(b->tm, ref, &b->exp, &n);
	if (r) {
		check_error(ck, "btree node %llu: unreadable (%s)", nb,
			    strerror(-r));
		return;
	}
	if (btree_validate(n, &b->g)) {
		check_error(ck, "btree node %llu: bad btree header", nb);
		goto out;
	}
	if (level >= 0 && level_of(n) != (unsigned int) level) {
		check_error(ck, "btree node %llu: level %u, expected %d", nb,
			    level_of(n), level);
		goto out;
	}
	nr = nr_of(n);
	if (level < 0 && is_leaf(n) && nr < 1)
		check_error(ck, "btree node %llu: empty root leaf", nb);
	if (level < 0 && !is_leaf(n) && nr < 2)
		check_error(ck,
			    "btree node %llu: internal root with %u "
			    "children",
			    nb, nr);
	if (level >= 0 && nr < min_of(n))
		check_error(ck, "btree node %llu: %u entries, min %u", nb, nr,
			    min_of(n));
	if (!is_leaf(n) && nr == 0) {
		check_error(ck,
			    "btree node %llu: internal node without "
			    "children",
			    nb);
		goto out;
	}
	for (i = 1; i < nr; i++)
		if (kcmp(b, key_at(b, n, i - 1), key_at(b, n, i)) >= 0) {
			check_error(ck,
				    "btree node %llu: keys %u and %u out "
				    "of order",
				    nb, i - 1, i);
			break;
		}
	if (nr && lo && kcmp(b, key_at(b, n, 0), lo) < 0)
		check_error(ck,
			    "btree node %llu: key 0 below the parent's "
			    "separator",
			    nb);
	if (nr && hi && kcmp(b, key_at(b, n, nr - 1), hi) >= 0)
		check_error(ck,
			    "btree node %llu: key %u not below the next "
			    "separator",
			    nb, nr - 1);

	for (i = 0; i < nr; i++) {
		if (is_leaf(n)) {
			if (b->info->value.check)
				b->info->value.check(b->info->value.ctx,
						     val_at(b, n, i), ck);
		} else {
			struct tm_ref cref;

			child_ref(b, n, i, &cref);
			if (!cref.blocknr) {
				check_error(ck,
					    "btree node %llu: child %u is "
					    "null",
					    nb, i);
				continue;
			}
			check_subtree(b, ck, &cref, (int) level_of(n) - 1,
				      key_at(b, n, i),
				      i + 1 < nr ? key_at(b, n, i + 1) : hi);
		}
	}
out:
	tm_put(b->tm, n);
}

int btree_check(const struct btree_info *info, const struct tm_ref *root,
		struct check *ck)
{
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r) {
		check_error(ck,
			    "btree: invalid tree description (key size "
			    "%u, value size %u)",
			    info ? info->key_size : 0,
			    info ? info->value.size : 0);
		return r;
	}
	if (root->blocknr)
		check_subtree(&b, ck, root, -1, NULL, NULL);
	return 0;
}
