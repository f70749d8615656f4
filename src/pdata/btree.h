/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree - copy-on-write B+tree over fixed-size keys and values.
 *
 * A tree is named by a struct tm_ref to its root node (blocknr 0: the empty
 * tree, which costs no node).  Every operation that changes a tree takes
 * the root by pointer and updates it: the caller stores the new root where
 * it keeps it (a superblock slot, a value in another tree).
 *
 * Keys are key_size bytes compared with memcmp (encode integers
 * big-endian).  Values are value.size bytes, opaque to the tree except for
 * the references they may hold (to pool blocks, to other trees), which the
 * value type counts:
 *   - inserting a value gives the tree the caller's references;
 *   - overwriting or removing a value drops the tree's references (dec),
 *     unless the caller takes the removed value out (btree_remove with
 *     value_out), which hands them to the caller;
 *   - when a shared leaf is copied on write, every value in the copy is
 *     inc'd (it has a new owner).
 *
 * Sharing.  btree_clone is O(1): both roots point at one node whose count
 * goes up.  A later change through either root copies only the nodes on
 * the path it changes (tm_shadow); btree_del drops one reference and frees
 * only what no other tree still uses.
 *
 * Node layout (docs/format.md): the 32-byte node header, a 32-byte btree
 * header {tag, flags, level, nr_entries, max_entries, key_size,
 * value_size}, keys[max_entries], then values[max_entries] (leaves) or
 * struct disk_ref children[max_entries] (internal nodes; key[i] is the
 * lowest key under child i).  Every node but the root holds at least
 * max_entries / 4 entries; all leaves are at level 0 and the root at the
 * tree's height.  A leaf split after the last entry (sequential inserts)
 * keeps the left node 3/4 full instead of half.
 *
 * Cost: lookup, insert, remove O(log n) node reads; range removal
 * O(log n + removed leaves); clone O(1); delete O(nodes not shared).
 * Errors: 0 or negative errno; -ENOENT/-EEXIST as documented; -EUCLEAN for
 * a corrupt node (never an assert).  A failed change poisons the
 * transaction (the tree may be half-changed; only tm_abort recovers).
 *
 * Not thread-safe; the caller holds the metadata lock.  A cursor is
 * invalidated by any change to its tree.
 */
#ifndef TV_PDATA_BTREE_H
#define TV_PDATA_BTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pdata/node.h"

struct tm;
struct bc_node;
struct check;

#define BTREE_MAX_KEY	  256u
#define BTREE_MAX_VALUE	  768u
#define BTREE_MAX_DEPTH	  32
#define BTREE_HEADER_SIZE 64u /* node header + btree header */

struct btree_vtype {
	uint32_t size; /* bytes, 0 .. BTREE_MAX_VALUE */
	void *ctx;
	/* References held by a value; NULL when it holds none. */
	int (*inc)(void *ctx, const void *value);
	int (*dec)(void *ctx, const void *value);
	/* Checker: report the value's references (check_data_ref,
	 * check_tree) and validate it; NULL when it holds none. */
	void (*check)(void *ctx, const void *value, struct check *ck);
};

struct btree_info {
	struct tm *tm;
	uint32_t tag;	   /* tree kind, stored in every node: catches a
			    * pointer into another kind of tree */
	uint32_t key_size; /* 1 .. BTREE_MAX_KEY */
	struct btree_vtype value;
};

/* -ENOENT when absent.  value_out may be NULL (existence test). */
int btree_lookup(const struct btree_info *info, const struct tm_ref *root,
		 const void *key, void *value_out);

/* Largest key <= key (-ENOENT when none); key_out and value_out may be
 * NULL. */
int btree_lookup_le(const struct btree_info *info, const struct tm_ref *root,
		    const void *key, void *key_out, void *value_out);

/* Insert a new key: -EEXIST if present (the value's refs stay with the
 * caller then). */
int btree_insert(const struct btree_info *info, struct tm_ref *root,
		 const void *key, const void *value);
/* Overwrite an existing key: -ENOENT if absent. */
int btree_update(const struct btree_info *info, struct tm_ref *root,
		 const void *key, const void *value);
/* Insert or overwrite; *inserted (may be NULL) tells which. */
int btree_put(const struct btree_info *info, struct tm_ref *root,
	      const void *key, const void *value, bool *inserted);

/* Remove a key (-ENOENT if absent).  value_out NULL: the value's refs are
 * dropped; else the value is copied out and its refs handed over. */
int btree_remove(const struct btree_info *info, struct tm_ref *root,
		 const void *key, void *value_out);

/*
 * Changes through a hint: for a caller that makes many changes to one
 * tree in a row, most of them to a leaf the previous change already made
 * writable (sm_flush: the counts of one chunk's nodes share a leaf).  A
 * hint keeps the leaf the last change ended in pinned, with its key
 * range; a put or remove of a key in that range that needs no split or
 * merge is done in the leaf directly, without a descent from the root
 * (and a remove of an absent key in the range is -ENOENT at once).
 * Anything else takes the ordinary path and moves the hint.  Semantics
 * are those of btree_put and btree_remove.
 *
 * Rules for the caller: start with a zeroed hint (BTREE_HINT_INIT); while
 * it is held, change the tree only through these calls (with the same
 * root); release it with btree_hint_drop before the transaction commits
 * or aborts, and after any error.  Reads of the tree are fine meanwhile.
 *
 * A change in the pinned leaf is made in place, so the leaf must be
 * reachable from this root only.  It was when the hint was taken (the
 * path to it had just been copied); btree_clone of the tree, or anything
 * else that gives a node another owner (tm_share_seq), may share it
 * since, even when only the root's count went up.  So a hinted change
 * after such a clone does not use the leaf: it drops the hint and takes
 * the ordinary path, which copies what is shared, and the clone keeps
 * its contents.  Cloning while a hint is held is correct but makes the
 * next change a full descent: clone before taking the hint, or after
 * dropping it.
 */
struct btree_hint {
	struct bc_node *leaf; /* pinned, written in this transaction; or NULL */
	uint64_t root;	      /* the root's blocknr when it was taken */
	bool is_root;	      /* the leaf is the root */
	bool has_hi;	      /* the leaf's keys are < hi (else unbounded) */
	uint64_t share_seq;   /* tm_share_seq when it was taken */
	uint8_t hi[BTREE_MAX_KEY];
};
#define BTREE_HINT_INIT                                                        \
	{                                                                      \
		.leaf = NULL                                                   \
	}

int btree_put_hinted(const struct btree_info *info, struct tm_ref *root,
		     struct btree_hint *hint, const void *key,
		     const void *value, bool *inserted);
int btree_remove_hinted(const struct btree_info *info, struct tm_ref *root,
			struct btree_hint *hint, const void *key,
			void *value_out);
/* Unpin the hint's leaf (no-op for an empty hint). */
void btree_hint_drop(const struct btree_info *info, struct btree_hint *hint);

/* Remove every key in [lo, hi) (NULL lo: from the start; NULL hi: to the
 * end), dropping their values' refs.  Subtrees wholly inside the range are
 * released with btree_del's rules (nodes still shared elsewhere are not
 * read).  nr_removed may be NULL; otherwise it receives the number of keys
 * removed (which then requires reading released subtrees to count them). */
int btree_remove_range(const struct btree_info *info, struct tm_ref *root,
		       const void *lo, const void *hi, uint64_t *nr_removed);

/* out = another reference to root's tree: O(1). */
int btree_clone(const struct btree_info *info, const struct tm_ref *root,
		struct tm_ref *out);

/* Drop this reference to the tree (*root becomes empty); frees every node
 * and value reference no other tree shares. */
int btree_del(const struct btree_info *info, struct tm_ref *root);

/*
 * What btree_del would release (lo NULL), or a removal of every key from
 * lo on: fn is called, in key order, for every reference count that drops
 * with it: a node's (node, value NULL; alone: this was its last reference,
 * so the node is freed and what it references is reported next) and a
 * value's (node 0, alone true; the value's bytes borrowed for the call).
 * A subtree that another tree shares is one call (its root, alone false),
 * never read.  With lo, the path to lo is not reported (it is copied, not
 * released), nor anything below a node on it that another tree shares
 * (the copy keeps what the removal drops).  fn's first non-zero return
 * stops the walk and is returned.  Changes nothing; reads what it reports
 * as alone: a caller that bounds fn's calls bounds the reads.
 */
typedef int (*btree_release_fn)(void *ctx, uint64_t node, const void *value,
				bool alone);
int btree_release_walk(const struct btree_info *info, const struct tm_ref *root,
		       const void *lo, btree_release_fn fn, void *ctx);

/*
 * Take an internal root apart: out[0 .. *nr) receive its children, in key
 * order, each now a tree of its own that the caller owns one reference
 * to (a node below the root holds min >= 2 entries: a valid root), and
 * this reference to the root is dropped (*root becomes empty).  Reads
 * the root only: a root this reference holds alone is freed and its
 * children's counts stay as they are; a shared one gives each child a
 * reference more.  -EINVAL for a leaf, the empty tree, or a root of more
 * than max children (nothing changed).  For freeing a big tree a piece
 * at a time, each piece a tree.
 */
int btree_split_root(const struct btree_info *info, struct tm_ref *root,
		     struct tm_ref *out, unsigned int max, unsigned int *nr);

/* Number of entries (reads every leaf: O(n)). */
int btree_count(const struct btree_info *info, const struct tm_ref *root,
		uint64_t *count);

/*
 * Call fn for every entry in key order (stop at its first non-zero
 * return, which btree_walk returns).  shared tells whether the entry sits
 * in a node that another tree also references (some node on its path has
 * a count above 1).  O(n); the pointers are borrowed for the call.
 */
typedef int (*btree_walk_fn)(void *ctx, const void *key, const void *value,
			     bool shared);
int btree_walk(const struct btree_info *info, const struct tm_ref *root,
	       btree_walk_fn fn, void *ctx);

/*
 * What a change of the entry at key (NULL: the first) may cost at most,
 * for a caller that must know before it changes the tree that the
 * transaction can still commit.  *nodes: the nodes it may allocate (a
 * copy and a split per level, a new root).  fn is called for every
 * reference count it may change: each node on the path (node, value
 * NULL), and, for every node on the path that another tree shares or
 * that lies below one (shared: treat the root as shared, as after a
 * clone), each of its entries, whose owner the copy becomes too (a
 * child: node; a value: node 0 and the value's bytes, borrowed for the
 * call).  A range removal costs the paths to both of its ends plus what
 * it releases.  leaf false: the path ends above the leaf (a range
 * removal whose end is a leaf's first key leaves that leaf alone).
 * O(height) reads plus the shared entries; changes nothing.
 */
typedef void (*btree_ref_fn)(void *ctx, uint64_t node, const void *value);
int btree_path_cost(const struct btree_info *info, const struct tm_ref *root,
		    const void *key, bool shared, bool leaf, btree_ref_fn fn,
		    void *ctx, uint64_t *nodes);

/* Height of the tree (0: a single leaf), -ENOENT for the empty tree. */
int btree_height(const struct btree_info *info, const struct tm_ref *root,
		 unsigned int *height);

/* ---- ordered iteration ---- */

struct btree_cursor {
	const struct btree_info *info;
	struct tm *tm;
	unsigned int depth; /* nodes pinned in path */
	struct {
		struct bc_node *node;
		unsigned int index;
	} path[BTREE_MAX_DEPTH];
	bool valid; /* positioned on an entry */
};

/*
 * Position at the first key >= key (key NULL: the first key).  Returns 0
 * with c->valid false when there is no such key.  The cursor pins nodes
 * until btree_cursor_close (always call it, also after errors).
 */
int btree_cursor_seek(const struct btree_info *info, const struct tm_ref *root,
		      const void *key, struct btree_cursor *c);
/* Advance; c->valid false at the end. */
int btree_cursor_next(struct btree_cursor *c);
/* Borrowed pointers into the pinned leaf, valid until next/close. */
const void *btree_cursor_key(const struct btree_cursor *c);
const void *btree_cursor_value(const struct btree_cursor *c);
void btree_cursor_close(struct btree_cursor *c);

/* ---- checker ---- */

/*
 * Verify the tree and report every reference it holds to ck: each node
 * (check_node_ref), and each value (info->value.check).  Verifies every
 * node's header and btree header, key order within nodes and against the
 * parent's separators, fill bounds, uniform depth, child generations.
 * Shared subtrees are walked once and counted at every reference.
 * Problems are reported through check_error, not returned; the return value
 * is for failures of the checker itself (-ENOMEM).
 */
int btree_check(const struct btree_info *info, const struct tm_ref *root,
		struct check *ck);

#endif
