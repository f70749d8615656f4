/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree.c - copy-on-write B+tree (contract in btree.h): a tree's geometry
 * and the validator every node read passes, the spine (reading, copying
 * and allocating nodes), lookup, cursors, insertion, clone, and the
 * read-only walks (walk, count, path cost, height).  (The validator is
 * here, beside the reads that run it on every pin, so they inline it.)
 *
 * The invariants every change keeps, and how changes descend, are stated
 * in btree-internal.h (rules 1-5); removal is in btree-remove.c, changes
 * through a hint in btree-hint.c, the checker in btree-check.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/btree-internal.h"
#include "pdata/tm.h"
#include "util/log.h"

/* ---- geometry and validation ---- */

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
int btree_validate(const struct bc_node *n, const void *ctx)
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

/* ---- reading nodes ---- */

int btree_null_child(const struct bc_node *n, unsigned int i)
{
	log_error("btree node %llu: child %u is a null reference",
		  (unsigned long long) n->blocknr, i);
	return -EUCLEAN;
}

/* Pin the node ref names, read-only. */
int btree_node_read(struct bt *b, const struct tm_ref *ref, int level,
		    struct bc_node **out)
{
	struct bc_node *n;
	int r = tm_read(b->tm, ref, &b->exp, &n);

	if (r)
		return r;
	r = btree_check_pinned(b, n, level);
	if (r) {
		tm_put(b->tm, n);
		return r;
	}
	*out = n;
	return 0;
}

/* Pin child i of n, read-only. */
int btree_child_read(struct bt *b, const struct bc_node *n, unsigned int i,
		     struct bc_node **out)
{
	struct tm_ref ref;
	int r = btree_child(b, n, i, &ref);

	if (r)
		return r;
	return btree_node_read(b, &ref, (int) level_of(n) - 1, out);
}

/* The copy n is a new owner of everything it references. */
int btree_inc_children(struct bt *b, const struct bc_node *n)
{
	unsigned int nr = nr_of(n);
	int r;

	if (is_leaf(n)) {
		if (!b->info->value.inc)
			return 0;
		for (unsigned int i = 0; i < nr; i++) {
			r = b->info->value.inc(b->info->value.ctx,
					       val_at(b, n, i));
			if (r)
				return r;
		}
		return 0;
	}
	for (unsigned int i = 0; i < nr; i++) {
		struct tm_ref ref;

		r = btree_child(b, n, i, &ref);
		if (r)
			return r;
		r = tm_inc_node(b->tm, ref.blocknr);
		if (r)
			return r;
	}
	return 0;
}

/* Make the node *ref names writable and pin it; *ref may move. */
int btree_node_shadow(struct bt *b, struct tm_ref *ref, int level,
		      struct bc_node **out)
{
	struct bc_node *n;
	bool inc = false;
	int r;

	if (!ref->blocknr) {
		log_error("btree: shadowing a null reference");
		return -EUCLEAN;
	}
	r = tm_shadow(b->tm, ref, &b->exp, &n, &inc);
	if (r)
		return r;
	r = btree_check_pinned(b, n, level);
	if (!r && inc)
		r = btree_inc_children(b, n);
	if (r) {
		tm_put(b->tm, n);
		return r;
	}
	*out = n;
	return 0;
}

/* Shadow child i of parent, storing its new location in parent. */
int btree_child_shadow(struct bt *b, struct bc_node *parent, unsigned int i,
		       struct bc_node **out)
{
	struct tm_ref ref;
	int r;

	r = btree_child(b, parent, i, &ref);
	if (r)
		return r;
	r = btree_node_shadow(b, &ref, (int) level_of(parent) - 1, out);
	if (r)
		return r;
	set_child_ref(b, parent, i, &ref);
	tm_dirty(b->tm, parent);
	return 0;
}

static int new_node(struct bt *b, bool leaf, unsigned int level,
		    struct tm_ref *ref, struct bc_node **out)
{
	struct disk_btree_header *h;
	struct bc_node *n;
	int r;

	if (level >= BTREE_MAX_DEPTH) {
		log_error("btree: tree would exceed %d levels",
			  BTREE_MAX_DEPTH);
		return -EFBIG;
	}
	r = tm_new_node(b->tm, PD_MAGIC_BTREE, ref, &n);
	if (r)
		return r;
	/* the node comes zero-filled: reserved bytes and nr_entries are 0 */
	h = bth(n);
	h->tag = cpu_to_le32(b->g.tag);
	h->flags = cpu_to_le16(leaf ? BTREE_FLAG_LEAF : 0);
	h->level = cpu_to_le16((uint16_t) level);
	h->max_entries =
	    cpu_to_le16((uint16_t) (leaf ? b->g.leaf_max : b->g.int_max));
	h->key_size = cpu_to_le16((uint16_t) b->g.key_size);
	h->value_size =
	    cpu_to_le16((uint16_t) (leaf ? b->g.leaf_vsize : REF_SIZE));
	tm_dirty(b->tm, n);
	*out = n;
	return 0;
}

/* Number of entries under ref (reads every leaf). */
int btree_count_tree(struct bt *b, const struct tm_ref *ref, int level,
		     uint64_t *count)
{
	struct bc_node *n;
	int r = btree_node_read(b, ref, level, &n);

	if (r)
		return r;
	if (is_leaf(n)) {
		*count += nr_of(n);
	} else {
		for (unsigned int i = 0; i < nr_of(n) && !r; i++) {
			struct tm_ref cref;

			r = btree_child(b, n, i, &cref);
			if (!r)
				r = btree_count_tree(
				    b, &cref, (int) level_of(n) - 1, count);
		}
	}
	tm_put(b->tm, n);
	return r;
}

/* ---- lookup ---- */

int btree_find(struct bt *b, const struct tm_ref *root, const void *key,
	       void *value_out)
{
	struct bc_node *n, *c;
	bool found;
	unsigned int i;
	int r;

	if (!root->blocknr)
		return -ENOENT;
	r = btree_node_read(b, root, -1, &n);
	if (r)
		return r;
	while (!is_leaf(n)) {
		/* everything under n is >= key[0] (rule 3) */
		if (kcmp(b, key, key_at(b, n, 0)) < 0) {
			tm_put(b->tm, n);
			return -ENOENT;
		}
		i = child_index(b, n, key);
		r = btree_child_read(b, n, i, &c);
		tm_put(b->tm, n);
		if (r)
			return r;
		n = c;
	}
	i = lower_bound(b, n, key, &found);
	if (found && value_out && b->g.leaf_vsize) {
		const uint8_t *v = val_at(b, n, i);

		/* constant sizes: inline moves, not a libc call */
		if (b->g.leaf_vsize == 16)
			memcpy(value_out, v, 16);
		else if (b->g.leaf_vsize == 8)
			memcpy(value_out, v, 8);
		else
			memcpy(value_out, v, b->g.leaf_vsize);
	}
	tm_put(b->tm, n);
	return found ? 0 : -ENOENT;
}

int btree_lookup(const struct btree_info *info, const struct tm_ref *root,
		 const void *key, void *value_out)
{
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	return btree_find(&b, root, key, value_out);
}

/* ---- cursor (also the path walker of lookup_le) ---- */

static void cur_push(struct btree_cursor *c, struct bc_node *n,
		     unsigned int index)
{
	c->path[c->depth].node = n;
	c->path[c->depth].index = index;
	c->depth++;
}

static void cur_pop(struct btree_cursor *c)
{
	c->depth--;
	tm_put(c->tm, c->path[c->depth].node);
}

/* From the internal node on top of the path, descend to a leaf through
 * its current child, then always the first (or last) child. */
static int cur_descend(struct bt *b, struct btree_cursor *c, bool last)
{
	for (;;) {
		struct bc_node *top = c->path[c->depth - 1].node, *n;
		int r;

		if (is_leaf(top))
			return 0;
		if (c->depth >= BTREE_MAX_DEPTH)
			return btree_bad_field(top, "depth", BTREE_MAX_DEPTH,
					       c->depth);
		r = btree_child_read(b, top, c->path[c->depth - 1].index, &n);
		if (r)
			return r;
		cur_push(c, n, last && nr_of(n) ? nr_of(n) - 1 : 0);
	}
}

/* Leave the leaf on top for the first entry of the next leaf.  Returns 1
 * when positioned there, 0 at the end of the tree (path empty). */
static int cur_next_leaf(struct bt *b, struct btree_cursor *c)
{
	cur_pop(c);
	while (c->depth) {
		unsigned int d = c->depth - 1;

		if (c->path[d].index + 1 < nr_of(c->path[d].node)) {
			int r;

			c->path[d].index++;
			r = cur_descend(b, c, false);
			return r ? r : 1;
		}
		cur_pop(c);
	}
	return 0;
}

/* Leave the leaf on top for the last entry of the previous leaf.  Returns
 * 1 when positioned there, 0 at the start of the tree. */
static int cur_prev_leaf(struct bt *b, struct btree_cursor *c)
{
	cur_pop(c);
	while (c->depth) {
		unsigned int d = c->depth - 1;

		if (c->path[d].index > 0) {
			int r;

			c->path[d].index--;
			r = cur_descend(b, c, true);
			return r ? r : 1;
		}
		cur_pop(c);
	}
	return 0;
}

/* Settle on an entry at or after the leaf position on top (skipping past
 * the end of leaves); c->valid tells whether there is one. */
int btree_cur_settle(struct bt *b, struct btree_cursor *c)
{
	c->valid = false;
	while (c->depth) {
		unsigned int d = c->depth - 1;
		int r;

		if (c->path[d].index < nr_of(c->path[d].node)) {
			c->valid = true;
			return 0;
		}
		r = cur_next_leaf(b, c);
		if (r < 0)
			return r;
	}
	return 0;
}

void btree_cur_init(struct btree_cursor *c, const struct btree_info *info)
{
	c->info = info;
	c->tm = info ? info->tm : NULL;
	c->depth = 0;
	c->valid = false;
}

/* Descend from root towards key (NULL: the first key), pinning the path;
 * the leaf on top is positioned at the first key >= key. */
int btree_cur_seek(struct bt *b, struct btree_cursor *c,
		   const struct tm_ref *root, const void *key)
{
	struct bc_node *n;
	bool found;
	int r;

	r = btree_node_read(b, root, -1, &n);
	if (r)
		return r;
	for (;;) {
		unsigned int i;

		if (is_leaf(n)) {
			cur_push(c, n,
				 key ? lower_bound(b, n, key, &found) : 0);
			return 0;
		}
		i = key ? child_index(b, n, key) : 0;
		cur_push(c, n, i);
		if (c->depth >= BTREE_MAX_DEPTH)
			return btree_bad_field(n, "depth", BTREE_MAX_DEPTH,
					       c->depth);
		r = btree_child_read(b, n, i, &n);
		if (r)
			return r;
	}
}

int btree_cursor_seek(const struct btree_info *info, const struct tm_ref *root,
		      const void *key, struct btree_cursor *c)
{
	struct bt b;
	int r;

	btree_cur_init(c, info);
	r = btree_bt_init(&b, info);
	if (r)
		return r;
	if (!root->blocknr)
		return 0;
	r = btree_cur_seek(&b, c, root, key);
	if (r)
		return r;
	return btree_cur_settle(&b, c);
}

int btree_cursor_next(struct btree_cursor *c)
{
	struct bt b;
	int r;

	if (!c->valid)
		return 0;
	r = btree_bt_init(&b, c->info);
	if (r)
		return r;
	c->path[c->depth - 1].index++;
	return btree_cur_settle(&b, c);
}

const void *btree_cursor_key(const struct btree_cursor *c)
{
	const struct bc_node *leaf;

	if (!c->valid)
		return NULL;
	leaf = c->path[c->depth - 1].node;
	return leaf->data + BTREE_HEADER_SIZE +
	       (size_t) c->path[c->depth - 1].index * c->info->key_size;
}

const void *btree_cursor_value(const struct btree_cursor *c)
{
	const struct bc_node *leaf;

	if (!c->valid)
		return NULL;
	leaf = c->path[c->depth - 1].node;
	return leaf->data + BTREE_HEADER_SIZE +
	       (size_t) max_of(leaf) * c->info->key_size +
	       (size_t) c->path[c->depth - 1].index * c->info->value.size;
}

void btree_cursor_close(struct btree_cursor *c)
{
	while (c->depth)
		cur_pop(c);
	c->valid = false;
}

int btree_lookup_le(const struct btree_info *info, const struct tm_ref *root,
		    const void *key, void *key_out, void *value_out)
{
	struct btree_cursor c;
	struct bt b;
	struct bc_node *leaf;
	unsigned int i;
	bool found;
	int r;

	btree_cur_init(&c, info);
	r = btree_bt_init(&b, info);
	if (r)
		return r;
	if (!root->blocknr)
		return -ENOENT;
	r = btree_cur_seek(&b, &c, root, key);
	if (r)
		goto out;
	leaf = c.path[c.depth - 1].node;
	i = lower_bound(&b, leaf, key, &found);
	/* key[0] of a subtree is only a lower bound (rule 3), so the
	 * answer may sit at the end of an earlier leaf */
	while (!found && i == 0) {
		r = cur_prev_leaf(&b, &c);
		if (r <= 0) {
			r = r ? r : -ENOENT;
			goto out;
		}
		leaf = c.path[c.depth - 1].node;
		i = nr_of(leaf);
	}
	if (!found)
		i--;
	if (key_out)
		memcpy(key_out, key_at(&b, leaf, i), b.g.key_size);
	if (value_out && b.g.leaf_vsize)
		memcpy(value_out, val_at(&b, leaf, i), b.g.leaf_vsize);
	r = 0;
out:
	btree_cursor_close(&c);
	return r;
}

/* ---- insertion ---- */

enum put_mode { PUT_INSERT, PUT_UPDATE, PUT_ANY };

/*
 * Grow the tree by one level: a new root whose only child is the old root
 * n (full, about to be split).  *root names the new root, pinned in *out.
 * Its key is the lower of n's and the key being inserted, which may
 * become n's lowest (rule 3).
 */
static int grow_root(struct bt *b, struct tm_ref *root, struct bc_node *n,
		     const void *key, struct bc_node **out)
{
	const void *low = key_at(b, n, 0);
	struct tm_ref ref;
	struct bc_node *p;
	int r = new_node(b, false, level_of(n) + 1, &ref, &p);

	if (r)
		return r;
	if (kcmp(b, key, low) < 0)
		low = key;
	insert_child(b, p, 0, low, root);
	*root = ref;
	*out = p;
	return 0;
}

/*
 * Split the full node *np, child idx of parent (writable, not full): the
 * entries from s on move to a new right sibling, whose first key becomes
 * its separator in parent.  On return *np is whichever half key belongs
 * to, the other is unpinned.  The new node is allocated before anything
 * changes, so a failed allocation leaves the tree as it was.
 */
static int split_child(struct bt *b, struct bc_node *parent, unsigned int idx,
		       struct bc_node **np, unsigned int s, const void *key)
{
	struct bc_node *n = *np, *sib;
	struct tm_ref ref;
	unsigned int nr = nr_of(n);
	int r;

	r = new_node(b, is_leaf(n), level_of(n), &ref, &sib);
	if (r)
		return r;
	move_entries(b, sib, 0, n, s, nr - s);
	set_nr(sib, nr - s);
	set_nr(n, s);
	insert_child(b, parent, idx + 1, key_at(b, sib, 0), &ref);
	tm_dirty(b->tm, n);
	tm_dirty(b->tm, parent);
	if (kcmp(b, key, key_at(b, sib, 0)) >= 0) {
		tm_put(b->tm, n);
		*np = sib;
	} else {
		tm_put(b->tm, sib);
	}
	return 0;
}

/*
 * Where to split a full node for a key that goes to position pos (leaf)
 * or into child pos (internal).  Half and half in general; but appending
 * at the end leaves the left node 3/4 full and the right one at the
 * minimum, so sequential inserts fill nodes to 3/4 instead of 1/2 (and
 * symmetrically at the front).  A leaf is certain to get the new entry;
 * an internal node only maybe (if its child splits), so it must be at
 * least min on both sides already.
 */
static unsigned int split_point(const struct bc_node *n, unsigned int pos)
{
	unsigned int nr = nr_of(n), max = max_of(n), min = min_of(n);

	if (is_leaf(n)) {
		if (pos >= nr)
			return max - min + 1;
		if (pos == 0)
			return min - 1;
	} else {
		if (pos == nr - 1)
			return max - min;
		if (pos == 0)
			return min;
	}
	return nr / 2;
}

/* Split n if it is full, growing the tree if n is the root. */
static int split_if_full(struct bt *b, struct tm_ref *root,
			 struct bc_node **parent, unsigned int pidx,
			 struct bc_node **np, unsigned int pos, const void *key)
{
	int r;

	if (nr_of(*np) < max_of(*np))
		return 0;
	if (!*parent) {
		r = grow_root(b, root, *np, key, parent);
		if (r)
			return r;
		pidx = 0;
	}
	return split_child(b, *parent, pidx, np, split_point(*np, pos), key);
}

/*
 * The upper bound of child idx of p, whose own bound is pub (NULL: none),
 * copied to buf: NULL when the child is unbounded.
 */
static const uint8_t *child_bound(const struct bt *b, const struct bc_node *p,
				  unsigned int idx, const uint8_t *pub,
				  uint8_t *buf)
{
	if (idx + 1 < nr_of(p)) {
		memcpy(buf, key_at(b, p, idx + 1), b->g.key_size);
		return buf;
	}
	if (pub && pub != buf)
		memcpy(buf, pub, b->g.key_size);
	return pub ? buf : NULL;
}

static int put(struct bt *b, struct tm_ref *root, const void *key,
	       const void *value, enum put_mode mode, bool *inserted,
	       struct btree_hint *hint)
{
	struct tm_ref rt = *root;
	struct bc_node *n = NULL, *parent = NULL, *c;
	unsigned int pidx = 0, pos, i;
	/* the bound of parent (for the hint): NULL none, else in pbuf */
	uint8_t pbuf[BTREE_MAX_KEY], nbuf[BTREE_MAX_KEY];
	const uint8_t *pub = NULL;
	bool found;
	int r;

	/* Decide -EEXIST/-ENOENT before changing anything (the path is
	 * then in the cache for the real descent). */
	if (mode != PUT_ANY) {
		r = btree_find(b, root, key, NULL);
		if (r && r != -ENOENT)
			return r;
		if (mode == PUT_INSERT && !r)
			return -EEXIST;
		if (mode == PUT_UPDATE && r)
			return -ENOENT;
	}

	if (!rt.blocknr) {
		r = new_node(b, true, 0, &rt, &n);
		if (r)
			goto fail;
		insert_at(b, n, 0, key, value);
		*inserted = true;
		goto out;
	}

	r = btree_node_shadow(b, &rt, -1, &n);
	if (r)
		goto fail;
	while (!is_leaf(n)) {
		r = split_if_full(b, &rt, &parent, pidx, &n,
				  child_index(b, n, key), key);
		if (r)
			goto fail;
		i = child_index(b, n, key);
		if (i == 0 && kcmp(b, key, key_at(b, n, 0)) < 0) {
			/* keep key[0] a lower bound (rule 3) */
			memcpy(key_at(b, n, 0), key, b->g.key_size);
			tm_dirty(b->tm, n);
		}
		r = btree_child_shadow(b, n, i, &c);
		if (r)
			goto fail;
		if (hint) {
			/* n's bound, after any split of n above */
			const uint8_t *nub =
			    parent ? child_bound(b, parent,
						 child_index(b, parent, key),
						 pub, nbuf)
				   : NULL;

			if (nub)
				memcpy(pbuf, nub, b->g.key_size);
			pub = nub ? pbuf : NULL;
		}
		if (parent)
			tm_put(b->tm, parent);
		parent = n;
		pidx = i;
		n = c;
	}

	pos = lower_bound(b, n, key, &found);
	if (found) {
		if (mode == PUT_INSERT) {
			r = -EEXIST; /* raced with nothing: cannot happen */
			goto out;
		}
		r = overwrite_value(b, n, pos, value);
		if (r)
			goto fail;
		*inserted = false;
		goto out;
	}
	if (mode == PUT_UPDATE) {
		r = -ENOENT;
		goto out;
	}
	r = split_if_full(b, &rt, &parent, pidx, &n, pos, key);
	if (r)
		goto fail;
	pos = lower_bound(b, n, key, &found);
	insert_at(b, n, pos, key, value);
	tm_dirty(b->tm, n);
	*inserted = true;
	r = 0;
	goto out;

fail:
	tm_poison(b->tm, r);
out:
	if (n && hint && !r) {
		/* n is the leaf key is in: written in this transaction */
		hint_set(b, hint, &rt, n, !parent,
			 parent ? child_bound(b, parent,
					      child_index(b, parent, key), pub,
					      nbuf)
				: NULL);
		n = NULL;
	}
	if (n)
		tm_put(b->tm, n);
	if (parent)
		tm_put(b->tm, parent);
	*root = rt;
	return r;
}

/* btree_insert and btree_update: put in mode, without a hint */
static int put_mode(const struct btree_info *info, struct tm_ref *root,
		    const void *key, const void *value, enum put_mode mode)
{
	struct bt b;
	bool inserted;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	return put(&b, root, key, value, mode, &inserted, NULL);
}

int btree_insert(const struct btree_info *info, struct tm_ref *root,
		 const void *key, const void *value)
{
	return put_mode(info, root, key, value, PUT_INSERT);
}

int btree_update(const struct btree_info *info, struct tm_ref *root,
		 const void *key, const void *value)
{
	return put_mode(info, root, key, value, PUT_UPDATE);
}

/* put(PUT_ANY), telling whether the key was new */
int btree_put_any(struct bt *b, struct tm_ref *root, const void *key,
		  const void *value, bool *inserted, struct btree_hint *hint)
{
	bool ins = false;
	int r = put(b, root, key, value, PUT_ANY, &ins, hint);

	if (!r && inserted)
		*inserted = ins;
	return r;
}

int btree_put(const struct btree_info *info, struct tm_ref *root,
	      const void *key, const void *value, bool *inserted)
{
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	return btree_put_any(&b, root, key, value, inserted, NULL);
}

/* ---- whole trees ---- */

int btree_clone(const struct btree_info *info, const struct tm_ref *root,
		struct tm_ref *out)
{
	struct geom g;
	int r = btree_geom_init(info, &g);

	if (r)
		return r;
	if (root->blocknr) {
		r = tm_inc_node(info->tm, root->blocknr);
		if (r) {
			tm_poison(info->tm, r);
			return r;
		}
	}
	*out = *root;
	return 0;
}

/* Walk every entry under ref; shared: some node above or here is
 * referenced more than once (so its entries belong to other trees too). */
static int walk_tree(struct bt *b, const struct tm_ref *ref, int level,
		     bool shared, btree_walk_fn fn, void *ctx)
{
	struct bc_node *n;
	uint32_t count;
	int r = btree_node_read(b, ref, level, &n);

	if (r)
		return r;
	r = tm_node_count(b->tm, ref->blocknr, &count);
	shared = shared || count > 1;
	for (unsigned int i = 0; i < nr_of(n) && !r; i++) {
		if (is_leaf(n)) {
			r = fn(ctx, key_at(b, n, i), val_at(b, n, i), shared);
		} else {
			struct tm_ref cref;

			r = btree_child(b, n, i, &cref);
			if (!r)
				r = walk_tree(b, &cref, (int) level_of(n) - 1,
					      shared, fn, ctx);
		}
	}
	tm_put(b->tm, n);
	return r;
}

int btree_walk(const struct btree_info *info, const struct tm_ref *root,
	       btree_walk_fn fn, void *ctx)
{
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r || !root->blocknr)
		return r;
	return walk_tree(&b, root, -1, false, fn, ctx);
}

int btree_count(const struct btree_info *info, const struct tm_ref *root,
		uint64_t *count)
{
	uint64_t n = 0;
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	if (root->blocknr) {
		r = btree_count_tree(&b, root, -1, &n);
		if (r)
			return r;
	}
	*count = n;
	return 0;
}

int btree_path_cost(const struct btree_info *info, const struct tm_ref *root,
		    const void *key, bool shared, bool leaf, btree_ref_fn fn,
		    void *ctx, uint64_t *nodes)
{
	struct bc_node *n, *c;
	uint64_t cn = 1; /* a new root on a split of the old one */
	uint32_t count;
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	if (!root->blocknr)
		goto out;
	r = btree_node_read(&b, root, -1, &n);
	if (r)
		return r;
	for (;;) {
		unsigned int nr = nr_of(n);

		r = tm_node_count(b.tm, n->blocknr, &count);
		if (r)
			break;
		/* below a shared node everything is shared: the copy above
		 * gives each child a reference more */
		shared = shared || count > 1;
		if (is_leaf(n) && !leaf)
			break;
		/* the copy and a split, each a new node; the original's
		 * count */
		cn += 2;
		fn(ctx, n->blocknr, NULL);
		for (unsigned int i = 0; shared && i < nr; i++) {
			if (is_leaf(n)) {
				fn(ctx, 0, val_at(&b, n, i));
			} else {
				struct tm_ref cref;

				child_ref(&b, n, i, &cref);
				fn(ctx, cref.blocknr, NULL);
			}
		}
		if (is_leaf(n))
			break;
		r = btree_child_read(&b, n, key ? child_index(&b, n, key) : 0,
				     &c);
		if (r)
			break;
		tm_put(b.tm, n);
		n = c;
	}
	tm_put(b.tm, n);
	if (r)
		return r;
out:
	*nodes = cn;
	return 0;
}

int btree_height(const struct btree_info *info, const struct tm_ref *root,
		 unsigned int *height)
{
	struct bc_node *n;
	struct bt b;
	int r = btree_bt_init(&b, info);

	if (r)
		return r;
	if (!root->blocknr)
		return -ENOENT;
	r = btree_node_read(&b, root, -1, &n);
	if (r)
		return r;
	*height = level_of(n);
	tm_put(b.tm, n);
	return 0;
}
