/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Error-path durability: after a failed sync no later flush succeeds
 * until the pool is reopened (pool.c, "syncs").
 *
 * Linux reports a writeback error of a file once, to the first sync that
 * looks; the next one returns 0 although the data is gone.  The fault
 * device models exactly that: a sync failing "once" fails, the next
 * passes.  For every way the engine syncs the device
 *
 *   - a client's flush (tv_pool_flush) with clean metadata (only
 *     overwrites in place since the last commit) and with dirty metadata,
 *   - a FUA write,
 *   - a metadata operation's commit,
 *   - the committer's ranged commit (its sync of the nodes and data
 *     ranges, on a device with ranged syncs),
 *   - the write-back before a ranged commit (vio.c, rule 5),
 *
 * one sync fails once, and then: the call reports it; the pool is
 * read-only with a reason; every later flush, FUA write, write, commit and
 * metadata operation fails, also once the device works again; reads give
 * the old or the new bytes.  Reopened (tv_pool_reopen, which refuses while
 * the device still fails, and closed and opened again), the pool is at its
 * last commit, clean and writable.
 *
 * Then two syncs at once, where the kernel tells only one of them: a
 * flush consumes the error and is held inside the device while another
 * thread commits (or flushes); the other must not return 0.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/io.h"
#include "iowrap.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/log.h"

#define BS	 (64u << 10)
#define DEV_SIZE (256ull << 20)
#define VOL_SIZE (64ull << 20)

static const struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};

struct rig {
	struct io_dev *mem, *pc, *fault;
	struct tv_pool *p;
	uint64_t id;
	uint8_t *old, *new; /* a block's bytes before and after */
};

/* A pool on fault(mem), or with ranged syncs on fault(powercut(mem));
 * volume "v" with block 0 written and committed. */
static void rig_open(struct rig *g, bool ranged)
{
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 16};

	memset(g, 0, sizeof(*g));
	g->old = malloc(BS);
	g->new = malloc(BS);
	CHECK(g->old && g->new);
	memset(g->old, 0x11, BS);
	memset(g->new, 0x22, BS);
	CHECK_OK(io_mem_create(DEV_SIZE, &g->mem));
	CHECK_OK(pool_format_dev(g->mem, &co));
	if (ranged) {
		CHECK_OK(io_pc_wrap(g->mem, false, &g->pc));
		CHECK_OK(io_fault_wrap(g->pc, false, &g->fault));
		CHECK(g->fault->flags & IO_DEV_RANGED_SYNC);
	} else {
		CHECK_OK(io_fault_wrap(g->mem, false, &g->fault));
	}
	CHECK_OK(pool_open_dev(g->fault, false, "syncerr", &oo, &g->p));
	CHECK_OK(tv_vol_create(g->p, "v", VOL_SIZE, NULL, 0, &g->id));
	CHECK_OK(tv_vol_write(g->p, g->id, g->old, BS, 0, 0));
	CHECK_OK(tv_pool_flush(g->p));
}

static void rig_close(struct rig *g)
{
	tv_pool_close(g->p);
	io_close(g->fault);
	io_close(g->pc);
	io_close(g->mem);
	free(g->old);
	free(g->new);
}

static bool is_dirty(struct tv_pool *p)
{
	bool d;

	pthread_mutex_lock(&p->meta_lock);
	d = p->dirty;
	pthread_mutex_unlock(&p->meta_lock);
	return d;
}

/* The next counted sync (a flush or a ranged sync) fails, once. */
static void fail_next_sync(struct rig *g)
{
	struct io_fault_cfg fc = {.fail_at = 1,
				  .error = -EIO,
				  .kind = IO_FAULT_ERROR,
				  .op_mask = IO_OP_FLUSH};

	io_fault_arm(g->fault, &fc);
}

static int commit_bg(struct tv_pool *p)
{
	int r;

	pthread_mutex_lock(&p->meta_lock);
	r = pool_commit_bg_locked(p);
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/* What must hold once a sync failed: read-only with a reason, no flush
 * or change succeeds, with the fault still armed and once disarmed;
 * block 0 reads its old or its new bytes.  Then reopened: clean and
 * writable. */
static void expect_stuck(struct rig *g, const char *what)
{
	struct tv_check_report rep;
	struct tv_pool_info pi;
	uint8_t *buf = malloc(BS);
	uint64_t id2;

	CHECK(buf);
	CHECK_EQ(io_fault_failed(g->fault), 1);
	for (int round = 0; round < 2; round++) {
		CHECK_OK(tv_pool_info(g->p, &pi));
		if (pi.state != TV_POOL_READ_ONLY || !pi.reason[0]) {
			fprintf(stderr, "%s: pool state %s, reason '%s'\n",
				what, tv_pool_state_name(pi.state), pi.reason);
			CHECK(0);
		}
		CHECK(strstr(pi.reason, "Input/output error"));
		CHECK(tv_pool_flush(g->p) < 0);
		CHECK(tv_vol_flush(g->p, g->id) < 0);
		CHECK(tv_vol_write(g->p, g->id, g->new, 4096, 0, TV_IO_FUA) <
		      0);
		CHECK(tv_vol_write(g->p, g->id, g->new, 4096, BS, 0) < 0);
		CHECK(commit_bg(g->p) < 0);
		CHECK(tv_vol_create(g->p, "w", VOL_SIZE, NULL, 0, &id2) < 0);
		CHECK_OK(tv_vol_read(g->p, g->id, buf, BS, 0));
		CHECK(!memcmp(buf, g->old, BS) || !memcmp(buf, g->new, BS));
		io_fault_disarm(g->fault); /* the device works again */
	}
	/* tv_pool_reopen, and closed and opened again: each time at its
	 * last commit, clean, writable */
	for (int how = 0; how < 2; how++) {
		if (how == 0) {
			CHECK_EQ(pi.error, -EIO);
			CHECK_OK(tv_pool_reopen(g->p));
		} else {
			tv_pool_close(g->p);
			CHECK_OK(pool_open_dev(g->fault, false, "syncerr", &oo,
					       &g->p));
		}
		CHECK_OK(tv_pool_info(g->p, &pi));
		CHECK_EQ(pi.state, TV_POOL_RW);
		CHECK(!pi.reason[0] && !pi.error);
		CHECK_OK(tv_pool_check(g->p, stderr, &rep));
		CHECK(rep.clean);
		CHECK_OK(tv_vol_read(g->p, g->id, buf, BS, 0));
		CHECK(!memcmp(buf, g->old, BS) || !memcmp(buf, g->new, BS));
		CHECK_OK(tv_vol_write(g->p, g->id, g->new, BS, 0, TV_IO_FUA));
		CHECK_OK(tv_vol_write(g->p, g->id, g->new, BS, 8 * BS, 0));
		CHECK_OK(tv_pool_flush(g->p));
		CHECK_EQ(tv_pool_reopen(g->p), -EINVAL); /* read-write */
	}
	free(buf);
	printf("  %s: the pool went read-only, no later flush passed; "
	       "tv_pool_reopen and a reopen from disk: clean, writable\n",
	       what);
}

/* tv_pool_reopen while the device still fails: refused, the pool stays
 * read-only; once it works: reopened at the last commit, without the
 * lost transaction's new block. */
static void reopen_while_failing(void)
{
	struct io_fault_cfg fc = {.fail_at = 1,
				  .persistent = true,
				  .error = -ENOSPC,
				  .kind = IO_FAULT_ERROR,
				  .op_mask = IO_OP_WRITE};
	struct tv_pool_open_opts ro = oo;
	struct tv_pool_info pi;
	struct tv_pool *q;
	struct rig g;
	uint64_t used;

	rig_open(&g, false);
	CHECK_OK(tv_pool_info(g.p, &pi));
	used = pi.used;
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 8 * BS, 0));
	io_fault_arm(g.fault, &fc); /* a full filesystem: writes refused */
	CHECK_EQ(tv_pool_flush(g.p), -ENOSPC);
	CHECK_OK(tv_pool_info(g.p, &pi));
	CHECK_EQ(pi.state, TV_POOL_READ_ONLY);
	CHECK_EQ(pi.error, -ENOSPC);
	CHECK_EQ(tv_pool_probe(g.p), -ENOSPC);
	CHECK_EQ(tv_pool_reopen(g.p), -ENOSPC);
	CHECK_OK(tv_pool_info(g.p, &pi));
	CHECK_EQ(pi.state, TV_POOL_READ_ONLY);
	CHECK(tv_pool_flush(g.p) < 0);
	io_fault_disarm(g.fault); /* room again */
	CHECK_OK(tv_pool_probe(g.p));
	CHECK_OK(tv_pool_info(g.p, &pi));
	CHECK_EQ(pi.state, TV_POOL_READ_ONLY); /* the probe changes nothing */
	CHECK_OK(tv_pool_reopen(g.p));
	CHECK_OK(tv_pool_info(g.p, &pi));
	CHECK_EQ(pi.state, TV_POOL_RW);
	CHECK_EQ(pi.used, used); /* the lost transaction's block is not */
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 8 * BS, 0));
	CHECK_OK(tv_pool_flush(g.p));
	rig_close(&g);
	/* a pool opened read-only has nothing to reopen */
	CHECK_OK(io_mem_create(DEV_SIZE, &g.mem));
	{
		struct tv_pool_create_opts co = {.block_size = BS};

		CHECK_OK(pool_format_dev(g.mem, &co));
	}
	ro.read_only = true;
	CHECK_OK(pool_open_dev(g.mem, false, "ro", &ro, &q));
	CHECK_EQ(tv_pool_probe(q), -EINVAL);
	CHECK_EQ(tv_pool_reopen(q), -EINVAL);
	tv_pool_close(q);
	io_close(g.mem);
	printf("  reopen while the device fails: refused, still read-only; "
	       "then reopened at the last commit\n");
}

/* A client's FLUSH after overwrites in place only: no metadata to
 * commit, so the flush is the only sync. */
static void flush_clean(bool ranged)
{
	struct rig g;

	rig_open(&g, ranged);
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 0, 0));
	CHECK(!is_dirty(g.p)); /* in place: what this case is about */
	fail_next_sync(&g);
	CHECK(tv_pool_flush(g.p) < 0);
	expect_stuck(&g, ranged ? "flush, clean metadata, ranged device"
				: "flush, clean metadata");
	rig_close(&g);
}

/* The same with a new block written since the last commit. */
static void flush_dirty(void)
{
	struct rig g;

	rig_open(&g, false);
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 0, 0));
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 8 * BS, 0));
	CHECK(is_dirty(g.p));
	fail_next_sync(&g);
	CHECK(tv_pool_flush(g.p) < 0);
	expect_stuck(&g, "flush, dirty metadata");
	rig_close(&g);
}

/* A FUA write in place: its flush fails. */
static void fua_write(void)
{
	struct rig g;

	rig_open(&g, false);
	fail_next_sync(&g);
	CHECK(tv_vol_write(g.p, g.id, g.new, BS, 0, TV_IO_FUA) < 0);
	expect_stuck(&g, "FUA write");
	rig_close(&g);
}

/* A metadata operation's commit: its first sync (the nodes) fails. */
static void meta_commit(void)
{
	struct rig g;
	uint64_t id;

	rig_open(&g, false);
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 0, 0));
	fail_next_sync(&g);
	CHECK(tv_vol_create(g.p, "x", VOL_SIZE, NULL, 0, &id) < 0);
	expect_stuck(&g, "metadata operation's commit");
	rig_close(&g);
}

/* The committer's ranged commit: the sync of the nodes and the data
 * ranges (its first counted sync) fails. */
static void ranged_commit(void)
{
	struct rig g;

	rig_open(&g, true);
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 0, 0));
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 8 * BS, 0));
	CHECK(is_dirty(g.p));
	fail_next_sync(&g);
	CHECK(commit_bg(g.p) < 0);
	expect_stuck(&g, "ranged commit");
	rig_close(&g);
}

/* The write-back of many new blocks before a ranged commit, without
 * meta_lock (vio.c, rule 5): a ranged sync without a barrier fails. */
static void ranged_writeback(void)
{
	size_t len = 24u << 20;
	uint8_t *big = malloc(len);
	struct rig g;

	CHECK(big);
	memset(big, 0x33, len);
	rig_open(&g, true);
	/* new blocks that are no holes of the device (the power-cut device
	 * has none): rule 7 syncs them, and past 16 MiB rule 5 writes them
	 * back first */
	CHECK_OK(tv_vol_write(g.p, g.id, big, len, 2 * BS, 0));
	CHECK_OK(tv_vol_write(g.p, g.id, g.new, BS, 0, 0));
	fail_next_sync(&g);
	CHECK(commit_bg(g.p) < 0);
	expect_stuck(&g, "write-back before a ranged commit");
	rig_close(&g);
	free(big);
}

/* ---- two syncs at once ---- */

/*
 * A device that reports a pending writeback error the way Linux does:
 * to the first sync that looks, once.  That sync is then held inside the
 * device until another sync has passed (or HOLD_MS went by), so that the
 * engine meets the interleaving where the error's only witness has not
 * yet told anyone while another thread's sync succeeds.
 */
#define HOLD_MS 300

struct edev {
	struct iowrap w;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool armed, other_passed;
};

static struct edev *E(struct io_dev *d)
{
	return (struct edev *) d;
}

static void e_close(struct io_dev *d)
{
	pthread_mutex_destroy(&E(d)->lock);
	pthread_cond_destroy(&E(d)->cond);
	free(d);
}

static int e_flush(struct io_dev *d)
{
	struct edev *e = E(d);
	struct timespec ts;
	int r;

	pthread_mutex_lock(&e->lock);
	if (e->armed) {
		e->armed = false;
		e->other_passed = false;
		pthread_cond_broadcast(&e->cond);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += HOLD_MS * 1000000l;
		ts.tv_sec += ts.tv_nsec / 1000000000l;
		ts.tv_nsec %= 1000000000l;
		while (!e->other_passed &&
		       pthread_cond_timedwait(&e->cond, &e->lock, &ts) == 0)
			;
		pthread_mutex_unlock(&e->lock);
		return -EIO;
	}
	pthread_mutex_unlock(&e->lock);
	r = iowrap_flush(d);
	pthread_mutex_lock(&e->lock);
	e->other_passed = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	return r;
}

static const struct io_ops eops = {
    .read = iowrap_read,
    .write = iowrap_write,
    .flush = e_flush,
    .discard = iowrap_discard,
    .write_zeroes = iowrap_write_zeroes,
    .resize = iowrap_no_resize,
    .close = e_close,
};

static struct io_dev *edev_wrap(struct io_dev *lower)
{
	struct edev *e = calloc(1, sizeof(*e));

	CHECK(e);
	iowrap_init(&e->w, &eops, lower, "errseq");
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	return &e->w.dev;
}

struct flusher {
	struct tv_pool *p;
	int r;
};

static void *flusher_main(void *arg)
{
	struct flusher *f = arg;

	f->r = tv_pool_flush(f->p);
	return NULL;
}

/* other: what the second thread does while the first flush holds the
 * error: 0 a metadata operation (a commit), 1 a flush. */
static void concurrent(int other)
{
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 16};
	struct io_dev *mem, *dev;
	struct flusher f;
	struct tv_pool_info pi;
	struct tv_pool *p;
	pthread_t t;
	uint8_t *buf = malloc(BS);
	uint64_t id, id2;
	int r;

	CHECK(buf);
	memset(buf, 0x44, BS);
	CHECK_OK(io_mem_create(DEV_SIZE, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	dev = edev_wrap(mem);
	CHECK_OK(pool_open_dev(dev, false, "errseq", &oo, &p));
	CHECK_OK(tv_vol_create(p, "v", VOL_SIZE, NULL, 0, &id));
	CHECK_OK(tv_vol_write(p, id, buf, BS, 0, 0));
	CHECK_OK(tv_pool_flush(p));
	/* a new block (the commit names it) or an overwrite in place */
	CHECK_OK(tv_vol_write(p, id, buf, BS, other ? 0 : 4 * BS, 0));

	pthread_mutex_lock(&E(dev)->lock);
	E(dev)->armed = true;
	pthread_mutex_unlock(&E(dev)->lock);
	f.p = p;
	f.r = 0;
	CHECK(pthread_create(&t, NULL, flusher_main, &f) == 0);
	pthread_mutex_lock(&E(dev)->lock);
	while (E(dev)->armed)
		pthread_cond_wait(&E(dev)->cond, &E(dev)->lock);
	pthread_mutex_unlock(&E(dev)->lock);
	/* the first flush holds the error now */
	r = other ? tv_pool_flush(p)
		  : tv_vol_create(p, "w", VOL_SIZE, NULL, 0, &id2);
	pthread_join(t, NULL);
	if (r == 0) {
		fprintf(stderr,
			"concurrent: the %s returned 0 while the other "
			"flush was told of the error (%d)\n",
			other ? "flush" : "commit", f.r);
		CHECK(0);
	}
	CHECK(f.r < 0);
	CHECK_OK(tv_pool_info(p, &pi));
	CHECK_EQ(pi.state, TV_POOL_READ_ONLY);
	CHECK(tv_pool_flush(p) < 0);
	tv_pool_close(p);
	io_close(dev);
	io_close(mem);
	free(buf);
	printf("  two syncs at once, the error told to one: the %s beside "
	       "it failed too\n",
	       other ? "flush" : "commit");
}

int main(void)
{
	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	flush_clean(false);
	flush_clean(true);
	flush_dirty();
	fua_write();
	meta_commit();
	ranged_commit();
	ranged_writeback();
	reopen_while_failing();
	concurrent(0);
	concurrent(1);
	printf("test-engine-syncerr: ok\n");
	return 0;
}
