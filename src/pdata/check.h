/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * check - the metadata checker.
 *
 * Walks everything reachable from the superblock: the space map tree and
 * every tree in the root slots (described by the caller), verifying every
 * node, and recomputes the reference count of every metadata node and
 * pool block.  Compares them with the space map:
 *   - a leak: the space map counts more references than exist
 *   - a missing reference (double use): more references exist than the
 *     space map counts, so the block could be handed out twice
 * Also checks the superblock's usage counters, and where references
 * point: a node outside every metadata chunk, a block outside the data
 * area, and a metadata chunk that a tree also names as data (a mapping
 * onto metadata) are errors.
 *
 * Read-only: works on the committed transaction (call with no uncommitted
 * changes).  O(metadata) time and memory: not on the I/O path.
 */
#ifndef TV_PDATA_CHECK_H
#define TV_PDATA_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "pdata/node.h"

struct tm;
struct check;
struct btree_info;

struct check_root {
	unsigned int slot;	       /* tm_root slot */
	const struct btree_info *info; /* how to walk it */
	const char *name;	       /* for messages */
};

struct check_report {
	uint64_t nodes;		 /* distinct metadata nodes visited */
	uint64_t node_refs;	 /* references to them */
	uint64_t data_refs;	 /* references to pool blocks */
	uint64_t errors;	 /* structural errors */
	uint64_t leaks;		 /* counts higher than references */
	uint64_t missing;	 /* counts lower than references */
	uint64_t counter_errors; /* superblock usage counters wrong */
};

/*
 * Run the whole check.  Messages (one line each, at most max_msgs, then a
 * count) go to out if not NULL.  Returns 0 when the check ran (clean or
 * not: see check_clean) or a negative errno when it could not run.
 */
int check_run(struct tm *tm, const struct check_root *roots, unsigned int nr,
	      FILE *out, unsigned int max_msgs, struct check_report *rep);

static inline bool check_clean(const struct check_report *r)
{
	return !r->errors && !r->leaks && !r->missing && !r->counter_errors;
}

/* ---- for walkers (btree_check, value check callbacks) ---- */

/* Count a reference to metadata node blocknr.  Returns true the first time
 * the node is referenced (the walker descends into it then). */
bool check_node_ref(struct check *ck, uint64_t blocknr);
/* Count a reference to pool block. */
void check_data_ref(struct check *ck, uint64_t block);
/* Walk a tree referenced from a value (e.g. a subtree root). */
void check_tree(struct check *ck, const struct btree_info *info,
		const struct tm_ref *root);
/* Report a structural problem (one line, formatted). */
void check_error(struct check *ck, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
struct tm *check_tm(struct check *ck);

#endif
