/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree-hint.c - changes through a hint (btree.h: btree_put_hinted,
 * btree_remove_hinted, btree_hint_drop).
 *
 * A change that the hint's pinned leaf can take without a split or merge
 * is made in that leaf in place; anything else drops the hint and takes
 * the ordinary path (btree.c's put, btree-remove.c's descent), which
 * leaves the new leaf in the hint.  This file sits on top of both, so
 * that neither reaches into the other.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/btree-internal.h"
#include "pdata/tm.h"
#include "util/log.h"

/* btree_bt_init for the hinted operations, which change a pinned leaf in place
 * without shadowing it: not in a poisoned transaction. */
static int bt_init_hinted(struct bt *b, const struct btree_info *info)
{
	int r = btree_bt_init(b, info);

	return r ? r : tm_state(b->tm);
}

/* ---- changes through a hint ---- */

void btree_hint_drop(const struct btree_info *info, struct btree_hint *hint)
{
	if (hint->leaf)
		tm_put(info->tm, hint->leaf);
	hint->leaf = NULL;
}

/*
 * Whether key lies in the hint's leaf: [key[0], hi), and the leaf may
 * still be changed in place: no node gained an owner since the hint was
 * taken (btree.h; a clone raises only the root's count, so the leaf's
 * own count would not tell).  A key below key[0] may belong there too,
 * but placing it would lower the leaf's first key, which the path's
 * separators may not allow: the ordinary path decides.
 */
static bool hint_covers(const struct bt *b, const struct btree_hint *h,
			const struct tm_ref *root, const void *key)
{
	const struct bc_node *n = h->leaf;

	return n && h->root == root->blocknr &&
	       h->share_seq == tm_share_seq(b->tm) && nr_of(n) &&
	       kcmp(b, key, key_at(b, n, 0)) >= 0 &&
	       (!h->has_hi || kcmp(b, key, h->hi) < 0);
}

int btree_put_hinted(const struct btree_info *info, struct tm_ref *root,
		     struct btree_hint *hint, const void *key,
		     const void *value, bool *inserted)
{
	struct bt b;
	struct bc_node *n;
	unsigned int pos;
	bool found;
	int r = bt_init_hinted(&b, info);

	if (r)
		return r;
	n = hint->leaf;
	if (hint_covers(&b, hint, root, key)) {
		pos = lower_bound(&b, n, key, &found);
		if (found) {
			r = overwrite_value(&b, n, pos, value);
			if (r) {
				tm_poison(b.tm, r);
				return r;
			}
			if (inserted)
				*inserted = false;
			return 0;
		}
		if (nr_of(n) < max_of(n)) {
			insert_at(&b, n, pos, key, value);
			tm_dirty(b.tm, n);
			if (inserted)
				*inserted = true;
			return 0;
		}
	}
	/* the ordinary path may free or move the leaf: unpin it first */
	btree_hint_drop(info, hint);
	return btree_put_any(&b, root, key, value, inserted, hint);
}

int btree_remove_hinted(const struct btree_info *info, struct tm_ref *root,
			struct btree_hint *hint, const void *key,
			void *value_out)
{
	struct rm_req req = {.key = key, .value_out = value_out};
	struct tm_ref rt = *root;
	struct bc_node *n;
	unsigned int pos;
	bool found;
	struct bt b;
	int r = bt_init_hinted(&b, info);

	if (r)
		return r;
	n = hint->leaf;
	if (hint_covers(&b, hint, root, key)) {
		pos = lower_bound(&b, n, key, &found);
		if (!found)
			return -ENOENT;
		/* a non-root leaf keeps min entries, a root leaf one */
		if (nr_of(n) > (hint->is_root ? 1u : min_of(n))) {
			r = take_value(&b, n, pos, value_out);
			if (r) {
				tm_poison(b.tm, r);
				return r;
			}
			delete_at(&b, n, pos, 1);
			tm_dirty(b.tm, n);
			return 0;
		}
	}
	btree_hint_drop(info, hint);
	/* -ENOENT before changing anything */
	r = btree_find(&b, root, key, NULL);
	if (r)
		return r;
	r = btree_remove_descend(&b, &rt, &req, hint);
	if (r)
		tm_poison(b.tm, r);
	*root = rt;
	return r;
}
