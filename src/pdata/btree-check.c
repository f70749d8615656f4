/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * btree-check.c - btree_check, which walks a whole tree and verifies the
 * invariants of btree-internal.h (what one node must look like,
 * btree_validate, is in btree.c, beside the reads that run it on every
 * pin).
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
