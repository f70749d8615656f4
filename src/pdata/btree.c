/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree - copy-on-write B+tree (contract in btree.h).
 *
 * Invariants kept by every change (btree_check verifies them):
 *
 *   1. Every node on disk passes btree_validate: its btree header matches
 *      the tree's geometry (tag, key and value sizes, max_entries).
 *   2. Keys are strictly increasing within a node.
 *   3. In an internal node, every key under child i lies in
 *      [key[i], key[i + 1]) (key[nr] being the parent's bound).  key[0] is
 *      a lower bound of the subtree, not necessarily its smallest key: an
 *      insert below it lowers it, a removal never raises it.  A node's
 *      key[0] is >= its parent's key for it.
 *   4. Children of a node at level L are at level L - 1; leaves are at 0.
 *      Levels strictly decrease downwards, so a corrupt child pointer can
 *      never make a walk loop.
 *   5. Every node but the root holds at least min = max_entries / 4
 *      entries; a root leaf holds at least one entry (the empty tree has
 *      no node), an internal root at least two children.
 *
 * Changes walk down from the root and shadow (tm_shadow) every node they
 * will modify, parent before child, storing the child's new location in
 * the parent.  They restructure on the way down (top-down), so a node is
 * never changed after its parent was released:
 *
 *   - insert splits every full node it meets before entering it, so the
 *     parent always has room for the new separator;
 *   - removal tops up every node it enters to more than min entries
 *     (borrowing from or merging with a sibling), so taking one entry (or
 *     one child, by a merge below) never leaves it underfull.
 *
 * A failed change poisons the transaction (tm_poison): the tree may be
 * half-changed, only tm_abort recovers.  The caller's root is still
 * updated so that it names what the transaction now holds.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/tm.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

/* Bytes 32..63 of every btree node, after struct disk_node_header. */
struct disk_btree_header {
	uint32_t tag;	      /* le32: btree_info.tag */
	uint16_t flags;	      /* le16: BTREE_FLAG_* */
	uint16_t level;	      /* le16: 0 for leaves */
	uint16_t nr_entries;  /* le16 */
	uint16_t max_entries; /* le16: (4096 - 64) / (key_size + value_size) */
	uint16_t key_size;    /* le16 */
	uint16_t value_size;  /* le16: sizeof(struct disk_ref) if internal */
	uint8_t reserved[16]; /* zero */
};
_Static_assert(sizeof(struct disk_btree_header) == 32, "btree header size");
_Static_assert(sizeof(struct disk_node_header) +
		       sizeof(struct disk_btree_header) ==
		   BTREE_HEADER_SIZE,
	       "btree node header size");

#define BTREE_FLAG_LEAF	      0x0001u
#define BTREE_MIN_MAX_ENTRIES 8u /* a smaller fanout is refused */
#define BTREE_PAYLOAD	      (PD_NODE_SIZE - BTREE_HEADER_SIZE)
#define REF_SIZE	      ((uint32_t) sizeof(struct disk_ref))

/* Geometry derived from a btree_info; also the validator's context. */
struct geom {
	uint32_t tag;
	uint32_t key_size;
	uint32_t leaf_vsize;
	uint32_t leaf_max;
	uint32_t int_max;
};

/* Per-call state of an operation. */
struct bt {
	const struct btree_info *info;
	struct tm *tm;
	struct geom g;
	struct bc_expect exp; /* exp.ctx points at g: never copy a bt */
};

static int btree_validate(const struct bc_node *n, const void *ctx);

static int geom_init(const struct btree_info *info, struct geom *g)
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

static int bt_init(struct bt *b, const struct btree_info *info)
{
	int r = geom_init(info, &b->g);

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

/* bt_init for the hinted operations, which change a pinned leaf in place
 * without shadowing it: not in a poisoned transaction. */
static int bt_init_hinted(struct bt *b, const struct btree_info *info)
{
	int r = bt_init(b, info);

	return r ? r : tm_state(b->tm);
}

/* ---- node accessors (the node was validated: header fields are sane) */

static struct disk_btree_header *bth(const struct bc_node *n)
{
	return (struct disk_btree_header *) (n->data +
					     sizeof(struct disk_node_header));
}

static unsigned int nr_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->nr_entries);
}

static void set_nr(struct bc_node *n, unsigned int nr)
{
	bth(n)->nr_entries = cpu_to_le16((uint16_t) nr);
}

static unsigned int max_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->max_entries);
}

static unsigned int min_of(const struct bc_node *n)
{
	return max_of(n) / 4;
}

static unsigned int level_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->level);
}

static bool is_leaf(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->flags) & BTREE_FLAG_LEAF;
}

static unsigned int vsize_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->value_size);
}

static uint8_t *key_at(const struct bt *b, const struct bc_node *n,
		       unsigned int i)
{
	return n->data + BTREE_HEADER_SIZE + (size_t) i * b->g.key_size;
}

static uint8_t *val_at(const struct bt *b, const struct bc_node *n,
		       unsigned int i)
{
	return n->data + BTREE_HEADER_SIZE +
	       (size_t) max_of(n) * b->g.key_size + (size_t) i * vsize_of(n);
}

/* A big-endian 8-byte key as an integer: one load and a byte swap. */
static inline uint64_t key64(const void *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return __builtin_bswap64(v);
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return v;
#else
	return get_be64(p);
#endif
}

/*
 * Keys compare as byte strings (memcmp).  8-byte keys, the common case,
 * compare as big-endian integers, which is the same order without a call.
 */
static int kcmp(const struct bt *b, const void *x, const void *y)
{
	if (b->g.key_size == 8) {
		uint64_t a = key64(x), c = key64(y);

		return (a > c) - (a < c);
	}
	return memcmp(x, y, b->g.key_size);
}

static void child_ref(const struct bt *b, const struct bc_node *n,
		      unsigned int i, struct tm_ref *ref)
{
	ref_load(ref, val_at(b, n, i));
}

static void set_child_ref(const struct bt *b, struct bc_node *n, unsigned int i,
			  const struct tm_ref *ref)
{
	ref_store(val_at(b, n, i), ref);
}

/*
 * lower_bound for 8-byte keys.  The node is usually not in the CPU caches
 * (warm lookups are memory-latency bound, bench/README.md), so first ask
 * for every cache line of the key array at once, then search without
 * branches: the misses overlap instead of coming one per halving.
 */
static unsigned int lower_bound64(const uint8_t *keys, unsigned int nr,
				  const void *key, bool *found)
{
	uint64_t k = key64(key);
	size_t base = 0, len = nr;

	for (size_t off = 0; off < (size_t) nr * 8; off += 64)
		__builtin_prefetch(keys + off);
	if (!nr) {
		*found = false;
		return 0;
	}
	/* invariant: the answer is in [base, base + len] */
	while (len > 1) {
		size_t half = len / 2;

		base = key64(keys + (base + half) * 8) < k ? base + half : base;
		len -= half;
	}
	base += key64(keys + base * 8) < k;
	*found = base < nr && key64(keys + base * 8) == k;
	return (unsigned int) base;
}

/* Index of the first key >= key (nr if none); *found when it is equal. */
static unsigned int lower_bound(const struct bt *b, const struct bc_node *n,
				const void *key, bool *found)
{
	unsigned int lo = 0, hi = nr_of(n);

	if (b->g.key_size == 8)
		return lower_bound64(key_at(b, n, 0), hi, key, found);

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (kcmp(b, key_at(b, n, mid), key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < nr_of(n) && kcmp(b, key_at(b, n, lo), key) == 0;
	return lo;
}

/* The child of internal node n whose range holds key (0 if key is below
 * every key: the caller decides whether that means "absent"). */
static unsigned int child_index(const struct bt *b, const struct bc_node *n,
				const void *key)
{
	bool found;
	unsigned int i = lower_bound(b, n, key, &found);

	if (found)
		return i;
	return i ? i - 1 : 0;
}

/* Move count entries from src[si..] to dst[di..] (same kind of node;
 * overlapping moves within one node are fine). */
static void move_entries(const struct bt *b, struct bc_node *dst,
			 unsigned int di, const struct bc_node *src,
			 unsigned int si, unsigned int count)
{
	if (!count)
		return;
	memmove(key_at(b, dst, di), key_at(b, src, si),
		(size_t) count * b->g.key_size);
	memmove(val_at(b, dst, di), val_at(b, src, si),
		(size_t) count * vsize_of(src));
}

/* Insert an entry at pos; the node has room. */
static void insert_at(const struct bt *b, struct bc_node *n, unsigned int pos,
		      const void *key, const void *val)
{
	unsigned int nr = nr_of(n);

	move_entries(b, n, pos + 1, n, pos, nr - pos);
	memcpy(key_at(b, n, pos), key, b->g.key_size);
	if (vsize_of(n))
		memcpy(val_at(b, n, pos), val, vsize_of(n));
	set_nr(n, nr + 1);
}

static void insert_child(const struct bt *b, struct bc_node *n,
			 unsigned int pos, const void *key,
			 const struct tm_ref *ref)
{
	uint8_t raw[sizeof(struct disk_ref)];

	ref_store(raw, ref);
	insert_at(b, n, pos, key, raw);
}

static void delete_at(const struct bt *b, struct bc_node *n, unsigned int pos,
		      unsigned int count)
{
	unsigned int nr = nr_of(n);

	move_entries(b, n, pos, n, pos + count, nr - pos - count);
	set_nr(n, nr - count);
}

/* ---- validation ---- */

static int bad_field(const struct bc_node *n, const char *field,
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
		return bad_field(n, "flags", flags & BTREE_FLAG_LEAF, flags);
	if (level >= BTREE_MAX_DEPTH)
		return bad_field(n, "level (max)", BTREE_MAX_DEPTH - 1, level);
	if (leaf != (level == 0))
		return bad_field(n, "level (leaf iff 0)", leaf ? 0 : 1, level);
	if (le16_to_cpu(h->key_size) != g->key_size)
		return bad_field(n, "key_size", g->key_size,
				 le16_to_cpu(h->key_size));
	if (le16_to_cpu(h->value_size) != (leaf ? g->leaf_vsize : REF_SIZE))
		return bad_field(n, "value_size",
				 leaf ? g->leaf_vsize : REF_SIZE,
				 le16_to_cpu(h->value_size));
	if (max != (leaf ? g->leaf_max : g->int_max))
		return bad_field(n, "max_entries",
				 leaf ? g->leaf_max : g->int_max, max);
	if (nr > max)
		return bad_field(n, "nr_entries (max)", max, nr);
	for (size_t i = 0; i < sizeof(h->reserved); i++)
		if (h->reserved[i])
			return bad_field(n, "reserved byte", 0, h->reserved[i]);
	return 0;
}

/*
 * What a parent promises about a child: level one less, and an internal
 * node has children.  level < 0: no expectation (a root).
 */
static int check_pinned(struct bt *b, const struct bc_node *n, int level)
{
	int r = btree_validate(n, &b->g);

	if (r)
		return r;
	if (level >= 0 && level_of(n) != (unsigned int) level)
		return bad_field(n, "level (parent's - 1)",
				 (unsigned int) level, level_of(n));
	if (!is_leaf(n) && nr_of(n) == 0)
		return bad_field(n, "nr_entries of internal node", 1, 0);
	return 0;
}

static int null_ref(const struct bc_node *parent, unsigned int i)
{
	log_error("btree node %llu: child %u is a null reference",
		  (unsigned long long) parent->blocknr, i);
	return -EUCLEAN;
}

/* Pin the node ref names, read-only. */
static int node_read(struct bt *b, const struct tm_ref *ref, int level,
		     struct bc_node **out)
{
	struct bc_node *n;
	int r = tm_read(b->tm, ref, &b->exp, &n);

	if (r)
		return r;
	r = check_pinned(b, n, level);
	if (r) {
		tm_put(b->tm, n);
		return r;
	}
	*out = n;
	return 0;
}

/* Pin child i of n, read-only. */
static int child_read(struct bt *b, const struct bc_node *n, unsigned int i,
		      struct bc_node **out)
{
	struct tm_ref ref;

	child_ref(b, n, i, &ref);
	if (!ref.blocknr)
		return null_ref(n, i);
	return node_read(b, &ref, (int) level_of(n) - 1, out);
}

/* The copy n is a new owner of everything it references. */
static int inc_children(struct bt *b, const struct bc_node *n)
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

		child_ref(b, n, i, &ref);
		if (!ref.blocknr)
			return null_ref(n, i);
		r = tm_inc_node(b->tm, ref.blocknr);
		if (r)
			return r;
	}
	return 0;
}

/* Make the node *ref names writable and pin it; *ref may move. */
static int node_shadow(struct bt *b, struct tm_ref *ref, int level,
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
	r = check_pinned(b, n, level);
	if (!r && inc)
		r = inc_children(b, n);
	if (r) {
		tm_put(b->tm, n);
		return r;
	}
	*out = n;
	return 0;
}

/* Shadow child i of parent, storing its new location in parent. */
static int child_shadow(struct bt *b, struct bc_node *parent, unsigned int i,
			struct bc_node **out)
{
	struct tm_ref ref;
	int r;

	child_ref(b, parent, i, &ref);
	if (!ref.blocknr)
		return null_ref(parent, i);
	r = node_shadow(b, &ref, (int) level_of(parent) - 1, out);
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

	r = node_read(b, ref, level, &n);
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
				if (b->info->value.dec)
					r = b->info->value.dec(
					    b->info->value.ctx,
					    val_at(b, &c, i));
			} else {
				struct tm_ref cref;

				child_ref(b, &c, i, &cref);
				if (!cref.blocknr)
					r = null_ref(&c, i);
				else
					r = release_tree(
					    b, &cref, (int) level_of(&c) - 1);
			}
		}
	}
out:
	free(copy);
	return r;
}

/* Number of entries under ref (reads every leaf). */
static int count_tree(struct bt *b, const struct tm_ref *ref, int level,
		      uint64_t *count)
{
	struct bc_node *n;
	int r = node_read(b, ref, level, &n);

	if (r)
		return r;
	if (is_leaf(n)) {
		*count += nr_of(n);
	} else {
		for (unsigned int i = 0; i < nr_of(n) && !r; i++) {
			struct tm_ref cref;

			child_ref(b, n, i, &cref);
			if (!cref.blocknr)
				r = null_ref(n, i);
			else
				r = count_tree(b, &cref, (int) level_of(n) - 1,
					       count);
		}
	}
	tm_put(b->tm, n);
	return r;
}

/* ---- lookup ---- */

static int lookup(struct bt *b, const struct tm_ref *root, const void *key,
		  void *value_out)
{
	struct bc_node *n, *c;
	bool found;
	unsigned int i;
	int r;

	if (!root->blocknr)
		return -ENOENT;
	r = node_read(b, root, -1, &n);
	if (r)
		return r;
	while (!is_leaf(n)) {
		/* everything under n is >= key[0] (rule 3) */
		if (kcmp(b, key, key_at(b, n, 0)) < 0) {
			tm_put(b->tm, n);
			return -ENOENT;
		}
		i = child_index(b, n, key);
		r = child_read(b, n, i, &c);
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
	int r = bt_init(&b, info);

	if (r)
		return r;
	return lookup(&b, root, key, value_out);
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
			return bad_field(top, "depth", BTREE_MAX_DEPTH,
					 c->depth);
		r = child_read(b, top, c->path[c->depth - 1].index, &n);
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
static int cur_settle(struct bt *b, struct btree_cursor *c)
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

static void cur_init(struct btree_cursor *c, const struct btree_info *info)
{
	c->info = info;
	c->tm = info ? info->tm : NULL;
	c->depth = 0;
	c->valid = false;
}

/* Descend from root towards key (NULL: the first key), pinning the path;
 * the leaf on top is positioned at the first key >= key. */
static int cur_seek(struct bt *b, struct btree_cursor *c,
		    const struct tm_ref *root, const void *key)
{
	struct bc_node *n;
	bool found;
	int r;

	r = node_read(b, root, -1, &n);
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
			return bad_field(n, "depth", BTREE_MAX_DEPTH, c->depth);
		r = child_read(b, n, i, &n);
		if (r)
			return r;
	}
}

int btree_cursor_seek(const struct btree_info *info, const struct tm_ref *root,
		      const void *key, struct btree_cursor *c)
{
	struct bt b;
	int r;

	cur_init(c, info);
	r = bt_init(&b, info);
	if (r)
		return r;
	if (!root->blocknr)
		return 0;
	r = cur_seek(&b, c, root, key);
	if (r)
		return r;
	return cur_settle(&b, c);
}

int btree_cursor_next(struct btree_cursor *c)
{
	struct bt b;
	int r;

	if (!c->valid)
		return 0;
	r = bt_init(&b, c->info);
	if (r)
		return r;
	c->path[c->depth - 1].index++;
	return cur_settle(&b, c);
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

	cur_init(&c, info);
	r = bt_init(&b, info);
	if (r)
		return r;
	if (!root->blocknr)
		return -ENOENT;
	r = cur_seek(&b, &c, root, key);
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

/* Leave leaf n (pinned by the caller, handed over) in the hint. */
static void hint_set(const struct bt *b, struct btree_hint *h,
		     const struct tm_ref *root, struct bc_node *n,
		     bool is_root, const uint8_t *ub)
{
	h->leaf = n;
	h->root = root->blocknr;
	h->is_root = is_root;
	h->has_hi = ub != NULL;
	if (ub)
		memcpy(h->hi, ub, b->g.key_size);
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
		r = lookup(b, root, key, NULL);
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

	r = node_shadow(b, &rt, -1, &n);
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
		r = child_shadow(b, n, i, &c);
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
		if (b->info->value.dec) {
			r = b->info->value.dec(b->info->value.ctx,
					       val_at(b, n, pos));
			if (r)
				goto fail;
		}
		if (b->g.leaf_vsize)
			memcpy(val_at(b, n, pos), value, b->g.leaf_vsize);
		tm_dirty(b->tm, n);
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
		hint_set(b, hint, &rt, n,
			 !parent,
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

int btree_insert(const struct btree_info *info, struct tm_ref *root,
		 const void *key, const void *value)
{
	struct bt b;
	bool inserted;
	int r = bt_init(&b, info);

	if (r)
		return r;
	return put(&b, root, key, value, PUT_INSERT, &inserted, NULL);
}

int btree_update(const struct btree_info *info, struct tm_ref *root,
		 const void *key, const void *value)
{
	struct bt b;
	bool inserted;
	int r = bt_init(&b, info);

	if (r)
		return r;
	return put(&b, root, key, value, PUT_UPDATE, &inserted, NULL);
}

/* put(PUT_ANY), telling whether the key was new */
static int put_any(struct bt *b, struct tm_ref *root, const void *key,
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
	int r = bt_init(&b, info);

	if (r)
		return r;
	return put_any(&b, root, key, value, inserted, NULL);
}

/* ---- removal ---- */

/* What one descent removes. */
struct rm_req {
	const void *key;  /* the first key to remove; it exists */
	bool range;	  /* else just key */
	const void *hi;	  /* range: end (excluded); NULL: none */
	void *value_out;  /* single: receives the value (may be NULL) */
	bool count;	  /* range: count keys under dropped subtrees */
	uint64_t removed; /* keys removed (as far as counted) */
	bool progress;	  /* something was removed */
};

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

	r = child_read(b, n, i, &c);
	if (r)
		return r;
	cnr = nr_of(c);
	min = min_of(c);
	tm_put(b->tm, c);
	if (cnr > min || nr_of(n) < 2)
		return child_shadow(b, n, i, out);

	li = i + 1 < nr_of(n) ? i : i - 1;
	ri = li + 1;
	r = child_read(b, n, i == li ? ri : li, &s);
	if (r)
		return r;
	snr = nr_of(s);

	if (snr > min) {
		/* borrow: the child gets the larger half */
		unsigned int total = cnr + snr, want = (total + 1) / 2;

		tm_put(b->tm, s);
		r = child_shadow(b, n, li, &l);
		if (r)
			return r;
		r = child_shadow(b, n, ri, &rn);
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
	r = child_shadow(b, n, li, &l);
	if (r)
		return r;
	r = child_read(b, n, ri, &rn);
	if (r)
		goto fail_l;
	child_ref(b, n, ri, &sref);
	r = tm_node_count(b->tm, sref.blocknr, &count);
	/* still shared: l becomes one more owner of what rn references;
	 * else the references just move */
	if (!r && count > 1)
		r = inc_children(b, rn);
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

		child_ref(b, n, j, &ref);
		if (!ref.blocknr) {
			r = null_ref(n, j);
			break;
		}
		if (req->count)
			r = count_tree(b, &ref, (int) level_of(n) - 1,
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
	child_ref(b, n, i, &ref);
	if (!ref.blocknr)
		return null_ref(n, i);
	if (req->count)
		r = count_tree(b, &ref, (int) level_of(n) - 1, &req->removed);
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
static int remove_descend(struct bt *b, struct tm_ref *root, struct rm_req *req,
			  struct btree_hint *hint)
{
	uint8_t ubuf[BTREE_MAX_KEY];
	const uint8_t *ub = NULL; /* n's upper bound: NULL for none */
	unsigned int i, pos, nr, end, allow, k;
	struct bc_node *n = NULL, *c;
	bool is_root = true, found;
	uint32_t count;
	int r;

	r = node_shadow(b, root, -1, &n);
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
			r = node_shadow(b, root, (int) level - 1, &n);
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
		if (req->value_out) {
			if (b->g.leaf_vsize)
				memcpy(req->value_out, val_at(b, n, pos),
				       b->g.leaf_vsize);
		} else if (b->info->value.dec) {
			r = b->info->value.dec(b->info->value.ctx,
					       val_at(b, n, pos));
			if (r)
				goto out;
		}
		end = pos + 1;
	} else {
		/* a non-root leaf was topped up to more than min */
		allow = is_root ? nr : (nr > min_of(n) ? nr - min_of(n) : 0);
		for (end = pos; end < nr && end - pos < allow; end++)
			if (req->hi && kcmp(b, key_at(b, n, end), req->hi) >= 0)
				break;
		for (k = pos; k < end && b->info->value.dec; k++) {
			r = b->info->value.dec(b->info->value.ctx,
					       val_at(b, n, k));
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
	int r = bt_init(&b, info);

	if (r)
		return r;
	/* -ENOENT before changing anything */
	r = lookup(&b, root, key, NULL);
	if (r)
		return r;
	r = remove_descend(&b, &rt, &req, NULL);
	if (r)
		tm_poison(b.tm, r);
	*root = rt;
	return r;
}

/* ---- changes through a hint ---- */

void btree_hint_drop(const struct btree_info *info, struct btree_hint *hint)
{
	if (hint->leaf)
		tm_put(info->tm, hint->leaf);
	hint->leaf = NULL;
}

/*
 * Whether key lies in the hint's leaf: [key[0], hi).  A key below key[0]
 * may belong there too, but placing it would lower the leaf's first key,
 * which the path's separators may not allow: the ordinary path decides.
 */
static bool hint_covers(const struct bt *b, const struct btree_hint *h,
			const struct tm_ref *root, const void *key)
{
	const struct bc_node *n = h->leaf;

	return n && h->root == root->blocknr && nr_of(n) &&
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
			if (info->value.dec) {
				r = info->value.dec(info->value.ctx,
						    val_at(&b, n, pos));
				if (r) {
					tm_poison(b.tm, r);
					return r;
				}
			}
			if (b.g.leaf_vsize)
				memcpy(val_at(&b, n, pos), value,
				       b.g.leaf_vsize);
			tm_dirty(b.tm, n);
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
	return put_any(&b, root, key, value, inserted, hint);
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
			if (value_out) {
				if (b.g.leaf_vsize)
					memcpy(value_out, val_at(&b, n, pos),
					       b.g.leaf_vsize);
			} else if (info->value.dec) {
				r = info->value.dec(info->value.ctx,
						    val_at(&b, n, pos));
				if (r) {
					tm_poison(b.tm, r);
					return r;
				}
			}
			delete_at(&b, n, pos, 1);
			tm_dirty(b.tm, n);
			return 0;
		}
	}
	btree_hint_drop(info, hint);
	/* -ENOENT before changing anything */
	r = lookup(&b, root, key, NULL);
	if (r)
		return r;
	r = remove_descend(&b, &rt, &req, hint);
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
	int r = bt_init(&b, info);

	if (r)
		return r;
	if (lo && hi && kcmp(&b, lo, hi) >= 0)
		goto done;
	req.key = first;
	while (rt.blocknr) {
		cur_init(&c, info);
		r = cur_seek(&b, &c, &rt, lo);
		if (!r)
			r = cur_settle(&b, &c);
		found = !r && c.valid;
		if (found)
			memcpy(first, btree_cursor_key(&c), b.g.key_size);
		btree_cursor_close(&c);
		if (r)
			goto fail;
		if (!found || (hi && kcmp(&b, first, hi) >= 0))
			break;
		req.progress = false;
		r = remove_descend(&b, &rt, &req, NULL);
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

/* ---- whole trees ---- */

int btree_clone(const struct btree_info *info, const struct tm_ref *root,
		struct tm_ref *out)
{
	struct geom g;
	int r = geom_init(info, &g);

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

int btree_del(const struct btree_info *info, struct tm_ref *root)
{
	struct bt b;
	int r = bt_init(&b, info);

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
 * node_read. */
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
	r = node_read(b, ref, level, &n);
	if (r)
		return r;
	for (unsigned int i = 0; i < nr_of(n) && !r; i++) {
		if (is_leaf(n)) {
			if (b->info->value.dec)
				r = fn(ctx, 0, val_at(b, n, i), true);
		} else {
			struct tm_ref cref;

			child_ref(b, n, i, &cref);
			r = cref.blocknr
				? release_walk(b, &cref, (int) level_of(n) - 1,
					       fn, ctx)
				: null_ref(n, i);
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
	int r = bt_init(&b, info);

	if (r || !root->blocknr)
		return r;
	if (!lo)
		return release_walk(&b, root, -1, fn, ctx);
	/* the path to lo is changed, not released; below a node on it that
	 * another tree shares, nothing is released (the copy takes a
	 * reference to what the removal drops) */
	r = node_read(&b, root, -1, &n);
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

			child_ref(&b, n, i, &cref);
			r = cref.blocknr
				? release_walk(&b, &cref, (int) level_of(n) - 1,
					       fn, ctx)
				: null_ref(n, i);
		}
		if (r)
			break;
		r = child_read(&b, n, pos, &c);
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
	int r = bt_init(&b, info);

	if (r)
		return r;
	if (!root->blocknr)
		return -EINVAL;
	r = node_read(&b, root, -1, &n);
	if (r)
		return r;
	leaf = is_leaf(n);
	if (!leaf)
		k = nr_of(n);
	for (unsigned int i = 0; i < k && i < max && !r; i++) {
		child_ref(&b, n, i, &out[i]);
		if (!out[i].blocknr)
			r = null_ref(n, i);
	}
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

/* Walk every entry under ref; shared: some node above or here is
 * referenced more than once (so its entries belong to other trees too). */
static int walk_tree(struct bt *b, const struct tm_ref *ref, int level,
		     bool shared, btree_walk_fn fn, void *ctx)
{
	struct bc_node *n;
	uint32_t count;
	int r = node_read(b, ref, level, &n);

	if (r)
		return r;
	r = tm_node_count(b->tm, ref->blocknr, &count);
	shared = shared || count > 1;
	for (unsigned int i = 0; i < nr_of(n) && !r; i++) {
		if (is_leaf(n)) {
			r = fn(ctx, key_at(b, n, i), val_at(b, n, i), shared);
		} else {
			struct tm_ref cref;

			child_ref(b, n, i, &cref);
			r = cref.blocknr ? walk_tree(b, &cref,
						     (int) level_of(n) - 1,
						     shared, fn, ctx)
					 : null_ref(n, i);
		}
	}
	tm_put(b->tm, n);
	return r;
}

int btree_walk(const struct btree_info *info, const struct tm_ref *root,
	       btree_walk_fn fn, void *ctx)
{
	struct bt b;
	int r = bt_init(&b, info);

	if (r || !root->blocknr)
		return r;
	return walk_tree(&b, root, -1, false, fn, ctx);
}

int btree_count(const struct btree_info *info, const struct tm_ref *root,
		uint64_t *count)
{
	uint64_t n = 0;
	struct bt b;
	int r = bt_init(&b, info);

	if (r)
		return r;
	if (root->blocknr) {
		r = count_tree(&b, root, -1, &n);
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
	int r = bt_init(&b, info);

	if (r)
		return r;
	if (!root->blocknr)
		goto out;
	r = node_read(&b, root, -1, &n);
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
		r = child_read(&b, n, key ? child_index(&b, n, key) : 0, &c);
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
	int r = bt_init(&b, info);

	if (r)
		return r;
	if (!root->blocknr)
		return -ENOENT;
	r = node_read(&b, root, -1, &n);
	if (r)
		return r;
	*height = level_of(n);
	tm_put(b.tm, n);
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
	int r = bt_init(&b, info);

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
