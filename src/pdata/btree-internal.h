/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree-internal.h - what the btree files share: the node layout and its
 * accessors, the per-call state, and the steps one file offers the others.
 * Not a contract for anyone outside src/pdata/btree*.c (that is btree.h).
 *
 * The files, each using only those listed before it:
 *   btree-check.c   a tree's geometry, the validator every node read
 *                   passes, and btree_check;
 *   btree.c         node reads, copies and allocation (the spine), lookup,
 *                   cursors, insertion and the read-only walks;
 *   btree-remove.c  removal, range removal and releasing subtrees;
 *   btree-hint.c    changes through a hint (on top of put and remove).
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
#ifndef TV_PDATA_BTREE_INTERNAL_H
#define TV_PDATA_BTREE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "pdata/bc.h"
#include "pdata/btree.h"
#include "pdata/node.h"
#include "pdata/tm.h"
#include "util/endian.h"

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

/* ---- node accessors (the node was validated: header fields are sane) */

static inline struct disk_btree_header *bth(const struct bc_node *n)
{
	return (struct disk_btree_header *) (n->data +
					     sizeof(struct disk_node_header));
}

static inline unsigned int nr_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->nr_entries);
}

static inline void set_nr(struct bc_node *n, unsigned int nr)
{
	bth(n)->nr_entries = cpu_to_le16((uint16_t) nr);
}

static inline unsigned int max_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->max_entries);
}

static inline unsigned int min_of(const struct bc_node *n)
{
	return max_of(n) / 4;
}

static inline unsigned int level_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->level);
}

static inline bool is_leaf(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->flags) & BTREE_FLAG_LEAF;
}

static inline unsigned int vsize_of(const struct bc_node *n)
{
	return le16_to_cpu(bth(n)->value_size);
}

static inline uint8_t *key_at(const struct bt *b, const struct bc_node *n,
			      unsigned int i)
{
	return n->data + BTREE_HEADER_SIZE + (size_t) i * b->g.key_size;
}

static inline uint8_t *val_at(const struct bt *b, const struct bc_node *n,
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
static inline int kcmp(const struct bt *b, const void *x, const void *y)
{
	if (b->g.key_size == 8) {
		uint64_t a = key64(x), c = key64(y);

		return (a > c) - (a < c);
	}
	return memcmp(x, y, b->g.key_size);
}

static inline void child_ref(const struct bt *b, const struct bc_node *n,
			     unsigned int i, struct tm_ref *ref)
{
	ref_load(ref, val_at(b, n, i));
}

static inline void set_child_ref(const struct bt *b, struct bc_node *n,
				 unsigned int i, const struct tm_ref *ref)
{
	ref_store(val_at(b, n, i), ref);
}

/*
 * lower_bound for 8-byte keys.  The node is usually not in the CPU caches
 * (warm lookups are memory-latency bound, bench/README.md), so first ask
 * for every cache line of the key array at once, then search without
 * branches: the misses overlap instead of coming one per halving.
 */
static inline unsigned int lower_bound64(const uint8_t *keys, unsigned int nr,
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
static inline unsigned int lower_bound(const struct bt *b,
				       const struct bc_node *n, const void *key,
				       bool *found)
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
static inline unsigned int child_index(const struct bt *b,
				       const struct bc_node *n, const void *key)
{
	bool found;
	unsigned int i = lower_bound(b, n, key, &found);

	if (found)
		return i;
	return i ? i - 1 : 0;
}

/* Move count entries from src[si..] to dst[di..] (same kind of node;
 * overlapping moves within one node are fine). */
static inline void move_entries(const struct bt *b, struct bc_node *dst,
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
static inline void insert_at(const struct bt *b, struct bc_node *n,
			     unsigned int pos, const void *key, const void *val)
{
	unsigned int nr = nr_of(n);

	move_entries(b, n, pos + 1, n, pos, nr - pos);
	memcpy(key_at(b, n, pos), key, b->g.key_size);
	if (vsize_of(n))
		memcpy(val_at(b, n, pos), val, vsize_of(n));
	set_nr(n, nr + 1);
}

static inline void insert_child(const struct bt *b, struct bc_node *n,
				unsigned int pos, const void *key,
				const struct tm_ref *ref)
{
	uint8_t raw[sizeof(struct disk_ref)];

	ref_store(raw, ref);
	insert_at(b, n, pos, key, raw);
}

static inline void delete_at(const struct bt *b, struct bc_node *n,
			     unsigned int pos, unsigned int count)
{
	unsigned int nr = nr_of(n);

	move_entries(b, n, pos, n, pos + count, nr - pos - count);
	set_nr(n, nr - count);
}

/* Drop the references the value at i of leaf n holds (value.dec). */
static inline int drop_value(const struct bt *b, const struct bc_node *n,
			     unsigned int i)
{
	if (!b->info->value.dec)
		return 0;
	return b->info->value.dec(b->info->value.ctx, val_at(b, n, i));
}

/* Overwrite the value at pos of leaf n (writable), dropping the old
 * value's references. */
static inline int overwrite_value(const struct bt *b, struct bc_node *n,
				  unsigned int pos, const void *value)
{
	int r = drop_value(b, n, pos);

	if (r)
		return r;
	if (b->g.leaf_vsize)
		memcpy(val_at(b, n, pos), value, b->g.leaf_vsize);
	tm_dirty(b->tm, n);
	return 0;
}

/* The value at pos of leaf n leaves the tree: copied to value_out, which
 * takes its references, or (value_out NULL) its references dropped. */
static inline int take_value(const struct bt *b, const struct bc_node *n,
			     unsigned int pos, void *value_out)
{
	if (!value_out)
		return drop_value(b, n, pos);
	if (b->g.leaf_vsize)
		memcpy(value_out, val_at(b, n, pos), b->g.leaf_vsize);
	return 0;
}

/* ---- btree-check.c: geometry and validation ---- */

/* The geometry of info's tree; -EINVAL for a description the tree
 * cannot have (sizes out of range, a fanout below 8). */
int btree_geom_init(const struct btree_info *info, struct geom *g);
/* bc_expect.validate of every btree node: its header against the tree
 * geometry ctx (a struct geom).  -EUCLEAN, logged, when it does not fit. */
int btree_validate(const struct bc_node *n, const void *ctx);
/* Set up an operation on info's tree (its geometry and validator). */
int btree_bt_init(struct bt *b, const struct btree_info *info);
/* Log a header field that is not what it must be; -EUCLEAN. */
int btree_bad_field(const struct bc_node *n, const char *field,
		    unsigned long long expected, unsigned long long found);
/* What a parent promises about a pinned child: valid, at level (< 0:
 * a root, anything), an internal node with children. */
int btree_check_pinned(struct bt *b, const struct bc_node *n, int level);

/* ---- btree.c: the spine, lookup, cursors, insertion ---- */

/* -EUCLEAN, logged: child i of n is a null reference. */
int btree_null_child(const struct bc_node *n, unsigned int i);

/* Child i's reference in *ref; -EUCLEAN (logged) when it is null.  Inline:
 * every step down a tree takes it. */
static inline int btree_child(const struct bt *b, const struct bc_node *n,
			      unsigned int i, struct tm_ref *ref)
{
	child_ref(b, n, i, ref);
	if (__builtin_expect(ref->blocknr != 0, 1))
		return 0;
	return btree_null_child(n, i);
}
/* Pin the node ref names (or child i of n), read-only; level as for
 * btree_check_pinned. */
int btree_node_read(struct bt *b, const struct tm_ref *ref, int level,
		    struct bc_node **out);
int btree_child_read(struct bt *b, const struct bc_node *n, unsigned int i,
		     struct bc_node **out);
/* The copy n is a new owner of everything it references. */
int btree_inc_children(struct bt *b, const struct bc_node *n);
/* Make the node *ref names (or child i of parent, whose reference is
 * updated) writable and pin it; *ref may move. */
int btree_node_shadow(struct bt *b, struct tm_ref *ref, int level,
		      struct bc_node **out);
int btree_child_shadow(struct bt *b, struct bc_node *parent, unsigned int i,
		       struct bc_node **out);
/* Add the number of entries under ref to *count (reads every leaf). */
int btree_count_tree(struct bt *b, const struct tm_ref *ref, int level,
		     uint64_t *count);
/* btree_lookup on an operation's state. */
int btree_find(struct bt *b, const struct tm_ref *root, const void *key,
	       void *value_out);
/* Cursor steps (btree_remove_range seeks with them): init, descend to
 * the first key >= key (NULL: the first), settle on an entry. */
void btree_cur_init(struct btree_cursor *c, const struct btree_info *info);
int btree_cur_seek(struct bt *b, struct btree_cursor *c,
		   const struct tm_ref *root, const void *key);
int btree_cur_settle(struct bt *b, struct btree_cursor *c);
/* Insert or overwrite (btree_put); with a hint, leave the leaf the key
 * went to pinned in it. */
int btree_put_any(struct bt *b, struct tm_ref *root, const void *key,
		  const void *value, bool *inserted, struct btree_hint *hint);

/* ---- btree-remove.c ---- */

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

/* One descent from the root to the leaf holding req->key, removing that
 * key (single) or a run of keys from it (range); with a hint, leave the
 * leaf pinned in it. */
int btree_remove_descend(struct bt *b, struct tm_ref *root, struct rm_req *req,
			 struct btree_hint *hint);

/* Leave leaf n (pinned by the caller, handed over) in the hint. */
static inline void hint_set(const struct bt *b, struct btree_hint *h,
			    const struct tm_ref *root, struct bc_node *n,
			    bool is_root, const uint8_t *ub)
{
	h->leaf = n;
	h->root = root->blocknr;
	h->is_root = is_root;
	h->has_hi = ub != NULL;
	h->share_seq = tm_share_seq(b->tm);
	if (ub)
		memcpy(h->hi, ub, b->g.key_size);
}

#endif
