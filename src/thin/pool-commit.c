/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * pool-commit.c - the end of a pool's transaction: commits (the
 * committer's ranged one too), aborts and flushes; the syncs of the
 * device and the read-only state a failure leaves; the pool's user area;
 * and the error message every file of the engine reports through
 * (tv_err, tv_last_error) and where its log goes.  It reaches the I/O
 * path (drain, the data to sync) through the pool's hooks.
 *
 * Syncs.  Linux reports a writeback error of a file once, to the first
 * sync of it that looks (fdatasync, sync_file_range, an RWF_DSYNC
 * write); a later one passes although the data is gone.  So:
 *
 *   1. Any failed sync of the device (a flush, a ranged sync, a commit's)
 *      makes the pool read-only with the reason, and the open transaction
 *      is abandoned, as after a failed commit: no later flush or commit
 *      returns 0 until the pool is reopened (tv_pool_reopen).
 *   2. A sync without meta_lock (pool_sync_unlocked: a client's flush
 *      writing the data back before its commit, vio.c's rule 5) holds
 *      sync_gate shared and records its error in sync_err before it lets
 *      go.  Whatever declares a sync done under meta_lock (a commit,
 *      pool_flush_locked, tv_pool_flush's answer) takes the gate
 *      exclusively first, so it waits for the syncs in flight and sees an
 *      error one of them took from it (the kernel told only that one).
 *   3. The gate prefers writers: a stream of flushes cannot hold a commit
 *      off.  No one waits for meta_lock while holding the gate shared.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm.h"
#include "thin/thin-internal.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

/* ---- errors and the log ---- */

static __thread char last_error[256];

const char *tv_last_error(void)
{
	return last_error;
}

int tv_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

static void (*user_logger)(int level, const char *msg, void *ctx);
static void *user_logger_ctx;

static void logger_tramp(enum log_level lvl, const char *msg, void *ctx)
{
	(void) ctx;
	user_logger((int) lvl, msg, user_logger_ctx);
}

void tv_set_logger(void (*fn)(int level, const char *msg, void *ctx), void *ctx,
		   int max_level)
{
	user_logger = fn;
	user_logger_ctx = ctx;
	log_set_sink(fn ? logger_tramp : NULL, NULL);
	if (max_level < LOG_LVL_ERROR)
		max_level = LOG_LVL_ERROR;
	if (max_level > LOG_LVL_DEBUG)
		max_level = LOG_LVL_DEBUG;
	log_set_level((enum log_level) max_level);
}

struct disk_pool_user *pool_user(struct tv_pool *p)
{
	return (struct disk_pool_user *) tm_user(p->tm);
}

/* Syncs, rule 3: a writer waiting for the gate holds new readers off. */
void pool_sync_gate_init(struct tv_pool *p)
{
	pthread_rwlockattr_t a;

	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(
	    &a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&p->sync_gate, &a);
	pthread_rwlockattr_destroy(&a);
	atomic_init(&p->sync_err, 0);
}

/* The error of a change refused because the pool is read-only, with
 * the reason it is.  meta_lock held. */
int pool_read_only_err(struct tv_pool *p)
{
	return tv_err(-EROFS, "%s: the pool is read-only%s%s", p->path,
		      p->reason[0] ? ": " : "", p->reason);
}

/* ---- syncs (rules at the top) ---- */

/* Record a sync's error (the first one wins). */
static void sync_failed(struct tv_pool *p, int err)
{
	int none = 0;

	atomic_compare_exchange_strong(&p->sync_err, &none, err);
}

int pool_sync_unlocked(struct tv_pool *p, const struct io_range *r, size_t n)
{
	int e;

	pthread_rwlock_rdlock(&p->sync_gate);
	e = atomic_load(&p->sync_err);
	if (!e) {
		e = n == SIZE_MAX ? io_flush(p->dev)
				  : io_sync_ranges(p->dev, r, n, NULL);
		if (e < 0)
			sync_failed(p, e);
	}
	pthread_rwlock_unlock(&p->sync_gate);
	return e;
}

/* Rule 2: wait for the syncs in flight without meta_lock and hold the
 * gate; returns the first sync error so far (0: none).  meta_lock held;
 * pool_sync_gate_leave when done. */
int pool_sync_gate_enter_locked(struct tv_pool *p)
{
	pthread_rwlock_wrlock(&p->sync_gate);
	return atomic_load(&p->sync_err);
}

void pool_sync_gate_leave(struct tv_pool *p)
{
	pthread_rwlock_unlock(&p->sync_gate);
}

/* Rule 1: a sync failed with err.  meta_lock held (dropped for a while
 * by the abort, which waits for the provisions in flight). */
static void sync_fail_locked(struct tv_pool *p, int err)
{
	sync_failed(p, err);
	if (p->read_only)
		return;
	if (p->dirty || tm_state(p->tm))
		pool_abort_locked(p);
	pool_set_read_only(p, err, "a data flush failed");
}

/* ---- commits ---- */

void pool_set_read_only(struct tv_pool *p, int err, const char *why)
{
	if (p->read_only)
		return;
	p->read_only = true;
	p->ro_err = err < 0 ? err : -EIO;
	snprintf(p->reason, sizeof(p->reason), "%s: %s", why, strerror(-err));
	/* the fast path writes in place without meta_lock: make it ask
	 * again, so that it sees the pool is read-only (a block it holds as
	 * the volume's own may be shared by a transaction whose superblock
	 * reached the disk before the failure) */
	p->io->forget_all_locked(p);
	log_error("%s: pool is now read-only: %s", p->path, p->reason);
}

void pool_set_damaged(struct tv_pool *p, const char *what)
{
	bool was_ro = p->read_only;

	if (p->needs_check)
		return;
	p->needs_check = true;
	if (!was_ro) {
		pool_set_read_only(p, -EUCLEAN, what);
		return;
	}
	/* opened read-only: there is nothing to stop, only to say */
	p->ro_err = -EUCLEAN;
	snprintf(p->reason, sizeof(p->reason), "%s", what);
	log_error("%s: damaged metadata: %s", p->path, what);
}

/* ranged: the committer's commit (pool_commit_bg_locked). */
static int commit_locked(struct tv_pool *p, bool ranged)
{
	struct io_range *data = NULL;
	size_t n = SIZE_MAX;
	int r;

	p->io->before_commit_locked(p, ranged); /* may drop meta_lock */
	if (p->read_only)
		return pool_read_only_err(p);
	/* syncs, rule 2: no sync without meta_lock runs beside the commit's
	 * own, and none failed before it */
	r = pool_sync_gate_enter_locked(p);
	if (r < 0) {
		pool_sync_gate_leave(p);
		sync_fail_locked(p, r);
		return tv_err(r,
			      "%s: commit refused: an earlier flush "
			      "failed: %s",
			      p->path, strerror(-r));
	}
	/* an incomplete list (out of memory): flush it all */
	if (!ranged || !(p->dev->flags & IO_DEV_RANGED_SYNC) ||
	    p->io->sync_ranges_locked(p, &data, &n) < 0)
		n = SIZE_MAX;
	r = tm_commit_ranged(p->tm, data, n);
	if (r < 0)
		sync_failed(p, r); /* rule 1, whatever failed */
	pool_sync_gate_leave(p);
	free(data);
	p->io->sync_clear_locked(p);
	if (r < 0) {
		/* A metadata I/O error: the transaction is lost, and the
		 * pool stops writing until it is reopened and checked.
		 * Unless the superblock write had begun (tm.h, rule 4): then
		 * the device may hold the transaction, and a reopen may find
		 * it; whoever asked must not be told it did not happen. */
		bool doubt = tm_in_doubt(p->tm);

		tm_abort(p->tm);
		pool_set_read_only(p, r, "metadata commit failed");
		if (doubt)
			return tv_err(r,
				      "%s: commit failed after its "
				      "superblock was written (%s): the "
				      "change may or may not be in the "
				      "pool; reopen it to see which",
				      p->path, strerror(-r));
		return tv_err(r, "%s: commit failed: %s", p->path,
			      strerror(-r));
	}
	p->dirty = false;
	p->committed = true;
	return 0;
}

int pool_commit_locked(struct tv_pool *p)
{
	return commit_locked(p, false);
}

void pool_abort_locked(struct tv_pool *p)
{
	int r;

	p->io->drain_locked(p); /* may drop meta_lock meanwhile */
	p->io->sync_clear_locked(p);
	r = tm_abort(p->tm);
	/* vio-cache.c, rule 10: blocks the transaction took are free again */
	atomic_store(&p->freed_since_drain, true);

	p->dirty = false;
	if (r < 0)
		pool_set_read_only(p, r, "could not reload the metadata");
}

int tv_pool_flush(struct tv_pool *p)
{
	bool ro;
	int r;

	/* The data first, without meta_lock: since the committer's commits
	 * are ranged, a flush may have gigabytes to write, and provisioning
	 * goes on meanwhile.  Then what the metadata needs, under the lock
	 * (a commit when dirty: every mapping a write acknowledged before
	 * this call made is then durable, by this commit or an earlier
	 * one). */
	pthread_mutex_lock(&p->meta_lock);
	ro = p->read_only;
	pthread_mutex_unlock(&p->meta_lock);
	if (!ro) {
		r = pool_sync_unlocked(p, NULL, SIZE_MAX);
		if (r < 0) {
			pthread_mutex_lock(&p->meta_lock);
			sync_fail_locked(p, r);
			pthread_mutex_unlock(&p->meta_lock);
			return tv_err(r, "%s: flush: %s", p->path,
				      strerror(-r));
		}
	}
	pthread_mutex_lock(&p->meta_lock);
	if (p->dirty || p->read_only) {
		r = pool_flush_locked(p);
	} else {
		/* syncs, rule 2: a flush beside ours may have been told the
		 * error that ours needed to hear */
		r = pool_sync_gate_enter_locked(p);
		pool_sync_gate_leave(p);
		if (r < 0) {
			sync_fail_locked(p, r);
			r = tv_err(r, "%s: flush: %s", p->path, strerror(-r));
		}
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int pool_flush_locked(struct tv_pool *p)
{
	int r = 0;

	if (p->read_only)
		return pool_read_only_err(p);
	if (p->dirty)
		return pool_commit_locked(p);
	/* nothing in the metadata changed; data may have */
	r = pool_sync_gate_enter_locked(p);
	if (r == 0)
		r = io_flush(p->dev);
	if (r < 0)
		sync_failed(p, r);
	pool_sync_gate_leave(p);
	if (r < 0) {
		sync_fail_locked(p, r);
		r = tv_err(r, "%s: flush: %s", p->path, strerror(-r));
	}
	return r;
}
#define DISCARD_BATCH 1024 /* freed blocks punched per round */

/* Punch holes for blocks freed by committed transactions.  The blocks are
 * re-checked under meta_lock, which also keeps them from being allocated
 * while the hole is punched. */
static void discard_freed_locked(struct tv_pool *p)
{
	uint64_t blocks[64];
	size_t n, done = 0;

	while (done < DISCARD_BATCH &&
	       (n = sm_take_freed(tm_sm(p->tm), blocks, ARRAY_SIZE(blocks)))) {
		for (size_t i = 0; i < n; i++) {
			uint32_t count;
			/* a secured block stays allocated (sm.c, rule 7) */
			if (sm_block_count(tm_sm(p->tm), blocks[i], &count) ||
			    count || sm_secured(tm_sm(p->tm), blocks[i]))
				continue;
			io_discard(p->dev, blocks[i] * p->block_size,
				   p->block_size);
		}
		done += n;
	}
}

int pool_commit_bg_locked(struct tv_pool *p)
{
	int r = commit_locked(p, true);

	if (r == 0)
		discard_freed_locked(p);
	return r;
}
