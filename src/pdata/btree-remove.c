/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree-remove.c - taking keys out of a tree (btree.h): single removal,
 * range removal, and releasing whole subtrees by btree_del's rules
 * (btree_del, btree_release_walk, btree_split_root).
 *
 * Removal descends top-down like insertion (btree-internal.h): it tops
 * up every node it enters to more than min entries, borrowing from or
 * merging with a sibling, so that taking one entry never leaves a node
 * underfull (rule 5).  A subtree is read only when it must be: a shared
 * one is released by dropping its count.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/btree-internal.h"
#include "pdata/tm.h"
#include "util/log.h"

/* ---- releasing subtrees (btree_del's rules) ---- */

/*
 * Drop one reference to the subtree at ref.  If it was the last one, the
 * node's own references are dropped too.  A node still shared is never
 * read.  The node is copied before its count is dropped because once free
 * it may leave the cache (and a node born in this transaction may never
 * have been written).
 */
static int release_tree(struct bt *b, const struct tm_ref *ref, int level)
{
	struct bc_node *n;
	uint8_t *copy;
	uint32_t count;
	int r;

	if (!ref->blocknr) {
		log_error("btree: releasing a null reference");
		return -EUCLEAN;
	}
	/* a leaf whose values hold no references holds nothing */
	if (level == 0 && !b->info->value.dec)
		return tm_dec_node(b->tm, ref->blocknr, &count);
	r = tm_node_count(b->tm, ref->blocknr, &count);
	if (r)
		return r;
	if (count != 1)
		return tm_dec_node(b->tm, ref->blocknr, &count);

	r = btree_node_read(b, ref, level, &n);
	if (r)
		return r;
	copy = malloc(PD_NODE_SIZE);
	if (!copy) {
		tm_put(b->tm, n);
		return -ENOMEM;
	}
	memcpy(copy, n->data, PD_NODE_SIZE);
	tm_put(b->tm, n);

	r = tm_dec_node(b->tm, ref->blocknr, &count);
	if (r || count)
		goto out;
	{
		/* a private view of the copy, for the accessors */
		struct bc_node c = {.blocknr = ref->blocknr, .data = copy};
		unsigned int nr = nr_of(&c);

		for (unsigned int i = 0; i < nr && !r; i++) {
			if (is_leaf(&c)) {
				r = drop_value(b, &c, i);
			} else {
				struct tm_ref cref;

				r = btree_child(b, &c, i, &cref);
				if (!r)
					r = release_tree(
					    b, &cref, (int) level_of(&c) - 1);
			}
		}
	}
out:
	free(copy);
	return r;
}

/* ---- removal ---- */

/*
 * Make child i of n (writable) safe to lose an entry: if it has only min
 * entries, borrow from a sibling with more, else merge with it.  Returns
 * the child shadowed and pinned, and its (possibly new) index in *ip.
 */
static int prepare_child(struct bt *b, struct bc_node *n, unsigned int *ip,
			 struct bc_node **out)
{
	unsigned int i = *ip, li, ri, cnr, snr, min;
	struct bc_node *c, *s, *l, *rn;
	struct tm_ref sref;
	uint32_t count;
	int r;

	r = btree_child_read(b, n, i, &c);
	if (r)
		return r;
	cnr = nr_of(c);
	min = min_of(c);
	tm_put(b->tm, c);
	if (cnr > min || nr_of(n) < 2)
		return btree_child_shadow(b, n, i, out);

	li = i + 1 < nr_of(n) ? i : i - 1;
	ri = li + 1;
	r = btree_child_read(b, n, i == li ? ri : li, &s);
	if (r)
		return r;
	snr = nr_of(s);

	if (snr > min) {
		/* borrow: the child gets the larger half */
		unsigned int total = cnr + snr, want = (total + 1) / 2;

		tm_put(b->tm, s);
		r = btree_child_shadow(b, n, li, &l);
		if (r)
			return r;
		r = btree_child_shadow(b, n, ri, &rn);
		if (r) {
			tm_put(b->tm, l);
			return r;
		}
		if (i == li) {
			unsigned int k = want - nr_of(l);

			move_entries(b, l, nr_of(l), rn, 0, k);
			set_nr(l, nr_of(l) + k);
			delete_at(b, rn, 0, k);
		} else {
			unsigned int k = want - nr_of(rn);

			move_entries(b, rn, k, rn, 0, nr_of(rn));
			move_entries(b, rn, 0, l, nr_of(l) - k, k);
			set_nr(rn, nr_of(rn) + k);
			set_nr(l, nr_of(l) - k);
		}
		memcpy(key_at(b, n, ri), key_at(b, rn, 0), b->g.key_size);
		tm_dirty(b->tm, l);
		tm_dirty(b->tm, rn);
		tm_dirty(b->tm, n);
		if (i == li) {
			tm_put(b->tm, rn);
			*out = l;
		} else {
			tm_put(b->tm, l);
			*out = rn;
		}
		return 0;
	}

	/* merge the right node into the left one (at most 2 * min <= max) */
	tm_put(b->tm, s);
	r = btree_child_shadow(b, n, li, &l);
	if (r)
		return r;
	r = btree_child_read(b, n, ri, &rn);
	if (r)
		goto fail_l;
	child_ref(b, n, ri, &sref);
	r = tm_node_count(b->tm, sref.blocknr, &count);
	/* still shared: l becomes one more owner of what rn references;
	 * else the references just move */
	if (!r && count > 1)
		r = btree_inc_children(b, rn);
	if (r) {
		tm_put(b->tm, rn);
		goto fail_l;
	}
	move_entries(b, l, nr_of(l), rn, 0, nr_of(rn));
	set_nr(l, nr_of(l) + nr_of(rn));
	tm_put(b->tm, rn);
	delete_at(b, n, ri, 1);
	tm_dirty(b->tm, l);
	tm_dirty(b->tm, n);
	r = tm_dec_node(b->tm, sref.blocknr, &count);
	if (r)
		goto fail_l;
	*ip = li;
	*out = l;
	return 0;

fail_l:
	tm_put(b->tm, l);
	return r;
}

/*
 * Range removal: drop the children after i of n that lie wholly inside
 * [.., hi), as long as n keeps min + 1 entries (1 for the root).  ub is
 * n's upper bound (NULL: none).  The subtrees are released without being
 * read, unless their keys must be counted.
 */
static int drop_children(struct bt *b, struct bc_node *n, unsigned int i,
			 const void *ub, bool is_root, struct rm_req *req)
{
	unsigned int nr = nr_of(n), keep, j, end;
	int r = 0;

	keep = is_root ? 1 : min_of(n) + 1;
	if (nr <= keep)
		return 0;
	for (end = i + 1; end < nr && end < i + 1 + (nr - keep); end++) {
		const void *upper = end + 1 < nr ? key_at(b, n, end + 1) : ub;

		if (req->hi && (!upper || kcmp(b, upper, req->hi) > 0))
			break;
	}
	if (end == i + 1)
		return 0;
	for (j = i + 1; j < end && !r; j++) {
		struct tm_ref ref;

		r = btree_child(b, n, j, &ref);
		if (r)
			break;
		if (req->count)
			r = btree_count_tree(b, &ref, (int) level_of(n) - 1,
					     &req->removed);
		if (!r)
			r = release_tree(b, &ref, (int) level_of(n) - 1);
	}
	/* the entries go even on failure: the transaction is dead anyway,
	 * and the node must not name what may have been freed */
	delete_at(b, n, i + 1, end - (i + 1));
	tm_dirty(b->tm, n);
	req->progress = true;
	return r;
}

/*
 * Range removal: child i of n, which holds the first key to remove, when
 * it lies wholly inside the range (it starts at that key, and ends at or
 * before hi) and n can lose an entry: released whole like the children
 * drop_children drops (a shared subtree is not read, so cutting a tree
 * that shares its nodes with another costs a count per subtree, not a
 * copy of the path).  *dropped tells.
 */
static int drop_child_whole(struct bt *b, struct bc_node *n, unsigned int i,
			    const void *ub, bool is_root, struct rm_req *req,
			    bool *dropped)
{
	unsigned int nr = nr_of(n), keep = is_root ? 1 : min_of(n) + 1;
	const void *upper = i + 1 < nr ? key_at(b, n, i + 1) : ub;
	struct tm_ref ref;
	int r = 0;

	*dropped = false;
	if (nr <= keep || kcmp(b, key_at(b, n, i), req->key) != 0 ||
	    (req->hi && (!upper || kcmp(b, upper, req->hi) > 0)))
		return 0;
	r = btree_child(b, n, i, &ref);
	if (r)
		return r;
	if (req->count)
		r = btree_count_tree(b, &ref, (int) level_of(n) - 1,
				     &req->removed);
	if (!r)
		r = release_tree(b, &ref, (int) level_of(n) - 1);
	/* the entry goes even on failure, as in drop_children */
	delete_at(b, n, i, 1);
	tm_dirty(b->tm, n);
	req->progress = true;
	*dropped = true;
	return r;
}

/* The root n (writable, pinned) has one child: make the child the root.
 * n's only reference moves to *root; n is freed. */
static int shrink_root(struct bt *b, struct tm_ref *root, struct bc_node *n)
{
	uint32_t count;
	uint64_t old = root->blocknr;

	child_ref(b, n, 0, root);
	tm_put(b->tm, n);
	return tm_dec_node(b->tm, old, &count);
}

/* One descent from the root to the leaf holding req->key, removing that
 * key (single) or a run of keys from it (range). */
int btree_remove_descend(struct bt *b, struct tm_ref *root, struct rm_req *req,
			 struct btree_hint *hint)
{
	uint8_t ubuf[BTREE_MAX_KEY];
	const uint8_t *ub = NULL; /* n's upper bound: NULL for none */
	unsigned int i, pos, nr, end, allow, k;
	struct bc_node *n = NULL, *c;
	bool is_root = true, found;
	uint32_t count;
	int r;

	r = btree_node_shadow(b, root, -1, &n);
	if (r)
		return r;
	while (!is_leaf(n)) {
		i = child_index(b, n, req->key);
		if (req->range) {
			bool dropped;

			r = drop_children(b, n, i, ub, is_root, req);
			if (!r)
				r = drop_child_whole(b, n, i, ub, is_root, req,
						     &dropped);
			if (!r && dropped && is_root && nr_of(n) == 1) {
				/* rule 5 now, not in a next round: there
				 * may be none (nothing left in the range),
				 * and the root would keep one child.  That
				 * child, not a root, holds min >= 2 entries:
				 * a valid root. */
				r = shrink_root(b, root, n);
				n = NULL;
			}
			if (r || dropped)
				goto out; /* the next round seeks again */
		}
		if (is_root && nr_of(n) == 1) {
			unsigned int level = level_of(n);

			r = shrink_root(b, root, n);
			n = NULL;
			if (r)
				goto out;
			r = btree_node_shadow(b, root, (int) level - 1, &n);
			if (r)
				goto out;
			continue;
		}
		r = prepare_child(b, n, &i, &c);
		if (r)
			goto out;
		if (is_root && nr_of(n) == 1) {
			/* the root's last two children merged */
			r = shrink_root(b, root, n);
			n = c;
			if (r)
				goto out;
			continue;
		}
		if (i + 1 < nr_of(n)) {
			/* copy: n is unpinned below */
			memcpy(ubuf, key_at(b, n, i + 1), b->g.key_size);
			ub = ubuf;
		}
		tm_put(b->tm, n);
		n = c;
		is_root = false;
	}

	nr = nr_of(n);
	pos = lower_bound(b, n, req->key, &found);
	if (!found) {
		r = -ENOENT; /* the caller saw it: cannot happen */
		goto out;
	}
	if (!req->range) {
		r = take_value(b, n, pos, req->value_out);
		if (r)
			goto out;
		end = pos + 1;
	} else {
		/* a non-root leaf was topped up to more than min */
		allow = is_root ? nr : (nr > min_of(n) ? nr - min_of(n) : 0);
		for (end = pos; end < nr && end - pos < allow; end++)
			if (req->hi && kcmp(b, key_at(b, n, end), req->hi) >= 0)
				break;
		for (k = pos; k < end && b->info->value.dec; k++) {
			r = drop_value(b, n, k);
			if (r)
				goto out;
		}
	}
	delete_at(b, n, pos, end - pos);
	tm_dirty(b->tm, n);
	req->removed += end - pos;
	if (end > pos)
		req->progress = true;
	if (is_root && nr_of(n) == 0) {
		/* the empty tree has no node */
		uint64_t old = root->blocknr;

		tm_put(b->tm, n);
		n = NULL;
		root->blocknr = 0;
		root->gen = 0;
		r = tm_dec_node(b->tm, old, &count);
	}
out:
	if (n && hint && !r) {
		hint_set(b, hint, root, n, is_root, ub);
		n = NULL;
	}
	if (n)
		tm_put(b->tm, n);
	return r;
}

int btree_remove(const struct btree_info *info, struct tm_ref *root,
		 const void *key, void *value_out)
{
	struct rm_req req = {.key = key, .value_out = value_out};
	struct tm_ref rt = *root;
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	/* -ENOENT before changing anything */
	r = btree_find(&b, root, key, NULL);
	if (r)
		return r;
	r = btree_remove_descend(&b, &rt, &req, NULL);
	if (r)
		tm_poison(b.tm, r);
	*root = rt;
	return r;
}

/*
 * Each round finds the first key left in the range and descends to it,
 * dropping whole subtrees to its right that lie inside the range and
 * removing what it can from the leaf (all but min entries).  Restructuring
 * on the way down keeps every node valid between rounds, the root too
 * (rule 5): a round that leaves it one child makes that child the root
 * before it ends, since no later round may come (the range may be empty
 * by then).
 *
 * A node may drop children only down to min + 1 (so that the merge below
 * it stays legal); the in-range children it keeps are emptied by later
 * rounds, and each of them, once merged into its left neighbour, drops
 * most of its own children in turn.  So the work is about
 * O(height * min_entries) descents (cached) beyond the nodes released:
 * an unshared leaf is read to drop its values' references, unless the
 * value type holds none (value.dec NULL); shared subtrees are never read.
 */
int btree_remove_range(const struct btree_info *info, struct tm_ref *root,
		       const void *lo, const void *hi, uint64_t *nr_removed)
{
	struct rm_req req = {
	    .range = true, .hi = hi, .count = nr_removed != NULL};
	uint8_t first[BTREE_MAX_KEY];
	struct btree_cursor c;
	struct tm_ref rt = *root;
	struct bt b;
	bool found;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	if (lo && hi && kcmp(&b, lo, hi) >= 0)
		goto done;
	req.key = first;
	while (rt.blocknr) {
		btree_cur_init(&c, info);
		r = btree_cur_seek(&b, &c, &rt, lo);
		if (!r)
			r = btree_cur_settle(&b, &c);
		found = !r && c.valid;
		if (found)
			memcpy(first, btree_cursor_key(&c), b.g.key_size);
		btree_cursor_close(&c);
		if (r)
			goto fail;
		if (!found || (hi && kcmp(&b, first, hi) >= 0))
			break;
		req.progress = false;
		r = btree_remove_descend(&b, &rt, &req, NULL);
		if (!r && !req.progress) {
			/* only possible with underfull nodes */
			log_error("btree: range removal made no progress "
				  "at root %llu",
				  (unsigned long long) rt.blocknr);
			r = -EUCLEAN;
		}
		if (r)
			goto fail;
	}
done:
	*root = rt;
	if (nr_removed)
		*nr_removed = req.removed;
	return 0;
fail:
	tm_poison(b.tm, r);
	*root = rt;
	return r;
}

int btree_del(const struct btree_info *info, struct tm_ref *root)
{
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	if (root->blocknr) {
		r = release_tree(&b, root, -1);
		if (r) {
			tm_poison(b.tm, r);
			return r;
		}
	}
	root->blocknr = 0;
	root->gen = 0;
	return 0;
}

/* release_walk below ref (btree_release_walk's rules); level as for
 * btree_node_read. */
static int release_walk(struct bt *b, const struct tm_ref *ref, int level,
			btree_release_fn fn, void *ctx)
{
	struct bc_node *n;
	uint32_t count;
	int r = tm_node_count(b->tm, ref->blocknr, &count);

	if (r)
		return r;
	/* release_tree reads a node only when this is its last reference,
	 * and a leaf only when its values hold references */
	if (count != 1 || (level == 0 && !b->info->value.dec))
		return fn(ctx, ref->blocknr, NULL, count == 1);
	r = fn(ctx, ref->blocknr, NULL, true);
	if (r)
		return r;
	r = btree_node_read(b, ref, level, &n);
	if (r)
		return r;
	for (unsigned int i = 0; i < nr_of(n) && !r; i++) {
		if (is_leaf(n)) {
			if (b->info->value.dec)
				r = fn(ctx, 0, val_at(b, n, i), true);
		} else {
			struct tm_ref cref;

			r = btree_child(b, n, i, &cref);
			if (!r)
				r = release_walk(
				    b, &cref, (int) level_of(n) - 1, fn, ctx);
		}
	}
	tm_put(b->tm, n);
	return r;
}

int btree_release_walk(const struct btree_info *info, const struct tm_ref *root,
		       const void *lo, btree_release_fn fn, void *ctx)
{
	struct bc_node *n, *c;
	unsigned int i, pos;
	uint32_t count;
	bool found;
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r || !root->blocknr)
		return r;
	if (!lo)
		return release_walk(&b, root, -1, fn, ctx);
	/* the path to lo is changed, not released; below a node on it that
	 * another tree shares, nothing is released (the copy takes a
	 * reference to what the removal drops) */
	r = btree_node_read(&b, root, -1, &n);
	if (r)
		return r;
	for (;;) {
		r = tm_node_count(b.tm, n->blocknr, &count);
		if (r || count != 1)
			break;
		if (is_leaf(n)) {
			pos = lower_bound(&b, n, lo, &found);
			for (i = pos; i < nr_of(n) && !r && info->value.dec;
			     i++)
				r = fn(ctx, 0, val_at(&b, n, i), true);
			break;
		}
		pos = child_index(&b, n, lo);
		for (i = pos + 1; i < nr_of(n) && !r; i++) {
			struct tm_ref cref;

			r = btree_child(&b, n, i, &cref);
			if (!r)
				r = release_walk(
				    &b, &cref, (int) level_of(n) - 1, fn, ctx);
		}
		if (r)
			break;
		r = btree_child_read(&b, n, pos, &c);
		if (r)
			break;
		tm_put(b.tm, n);
		n = c;
	}
	tm_put(b.tm, n);
	return r;
}

int btree_split_root(const struct btree_info *info, struct tm_ref *root,
		     struct tm_ref *out, unsigned int max, unsigned int *nr)
{
	struct bc_node *n;
	unsigned int k = 0;
	uint32_t count;
	bool leaf;
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	if (!root->blocknr)
		return -EINVAL;
	r = btree_node_read(&b, root, -1, &n);
	if (r)
		return r;
	leaf = is_leaf(n);
	if (!leaf)
		k = nr_of(n);
	for (unsigned int i = 0; i < k && i < max && !r; i++)
		r = btree_child(&b, n, i, &out[i]);
	/* out holds the references now: copied before the node may go */
	tm_put(b.tm, n);
	if (r)
		return r;
	if (leaf || k > max)
		return -EINVAL;
	/* a root still shared: the new trees are owners of its children
	 * too; else its references move to them */
	r = tm_node_count(b.tm, root->blocknr, &count);
	for (unsigned int i = 0; !r && count > 1 && i < k; i++)
		r = tm_inc_node(b.tm, out[i].blocknr);
	if (!r)
		r = tm_dec_node(b.tm, root->blocknr, &count);
	if (r) {
		tm_poison(b.tm, r);
		return r;
	}
	root->blocknr = 0;
	root->gen = 0;
	*nr = k;
	return 0;
}
