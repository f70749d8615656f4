/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * workload - a seeded, replayable workload on a pdata store, with a model.
 *
 * Up to WL_SLOTS trees live in tm_root slots 0..WL_SLOTS-1; most
 * operations go to slot 0, so it grows large.  Keys start with the key as
 * 8 big-endian bytes, values with {le64 data block, le64 payload}; every
 * value holds a
 * reference to a pool block of its own (allocated at insert, counted by the
 * value type), so the space map's data counts are exercised as well as the
 * node counts.  Operations: insert, update, remove, remove_range, clone a
 * tree into an empty slot, delete a tree, commit.
 *
 * The model keeps, per slot, the sorted (key, payload) pairs of the open
 * transaction and of the last commit.  After a crash the store must equal
 * one of the committed states the model recorded (wl_state_at).
 */
#ifndef TV_TESTS_WORKLOAD_H
#define TV_TESTS_WORKLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/tm.h"

#define WL_SLOTS 4

struct wl;

struct wl_opts {
	uint64_t seed;
	uint64_t key_range;	   /* keys drawn from [0, key_range) */
	unsigned int commit_every; /* mean ops between commits */
	/* Key and value sizes (0: 8 and 16).  Bigger ones mean fewer
	 * entries per node, so small workloads still build deep trees and
	 * split, merge and copy nodes at every level.  Extra bytes hold a
	 * pattern derived from the key or payload, verified on read. */
	uint32_t key_size;
	uint32_t value_size;
};

int wl_create(const struct wl_opts *o, struct wl **out);
void wl_destroy(struct wl *wl);

/* Describe the workload's trees for tm (value type included). */
void wl_info(struct wl *wl, struct tm *tm, struct btree_info *info);
/* check_root entries for every slot, for check_run. */
unsigned int wl_check_roots(struct wl *wl, struct tm *tm,
			    struct check_root *roots);

/*
 * One operation (possibly a commit) on tm.  On success returns 0 and the
 * model follows.  On error the store's error is returned: the open
 * transaction is dead and the caller must tm_abort (and wl_abort) or
 * reopen.  *committed tells whether this step committed (and which txn).
 */
int wl_step(struct wl *wl, struct tm *tm, bool *committed);

/* Commit now (same contract as wl_step). */
int wl_commit(struct wl *wl, struct tm *tm);

/* The store's transaction was abandoned: model back to the last commit. */
void wl_abort(struct wl *wl);

/*
 * A commit was attempted and failed at its end: the store may hold the new
 * transaction (txn) or the previous one.  Both are acceptable after a
 * reopen; wl_sync_to() tells the model which one it got.
 */
int wl_sync_to(struct wl *wl, uint64_t txn);

/* txn of the last commit the model knows, and of the one before it */
uint64_t wl_committed_txn(const struct wl *wl);

/*
 * Compare the committed contents of tm with the model's state for txn
 * (the last committed or the attempt in flight): every slot's keys and
 * payloads, then check_run must be clean.  Returns 0, or -EUCLEAN after
 * printing the first difference.
 */
int wl_verify(struct wl *wl, struct tm *tm, uint64_t txn);

/* Height of the tallest tree seen by wl_verify (0: a single leaf). */
unsigned int wl_max_height(const struct wl *wl);

/* Number of operations done so far. */
uint64_t wl_ops(const struct wl *wl);

#endif
