/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fault test: for every N, fail the Nth I/O of a seeded workload.
 *
 * A dry run counts the I/Os (reads, writes, flushes, ...) the workload does
 * through the fault wrapper, opening the store included: T.  Then, for
 * every n in 1..T, the same workload runs on a fresh store with operation n
 * failing, alternating over the cases (bits of n):
 *
 *   bit 0  once / persistent (every later op fails too)
 *   bit 1  -EIO / -ENOSPC
 *   bit 2  IO_FAULT_ERROR / IO_FAULT_SHORT (a write lands a prefix)
 *   bit 3  recover by reopening / by tm_abort on the same store
 *
 * Rules checked:
 *   1. The injected op happens (the run is deterministic up to it) and its
 *      error reaches the caller: the step (or tm_open) that did it returns
 *      exactly the injected errno.  No failed I/O is absorbed silently.
 *   2. Nothing committed is lost: a fresh tm on the raw memory device
 *      opens, at the last commit or at the commit in flight (if its
 *      superblock landed), and equals the model with a clean check.
 *   3. tm_abort (when the store is not read-only) brings the same tm back
 *      to the committed state, which verifies.
 *   4. The store is usable afterwards: more steps and a commit succeed and
 *      verify, and verify again after another reopen.
 *
 * TV_SEED replays a run; TV_SCALE=n makes the workload n times longer;
 * V=1 shows the library's log and the workload's messages.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "io/io.h"
#include "pdata/tm.h"
#include "tcheck.h"
#include "tquiet.h"
#include "util/checked.h"
#include "util/log.h"
#include "workload.h"

struct config {
	uint32_t block_size;
	uint64_t dev_size;
	size_t cache_bytes;
	unsigned int steps; /* workload steps, then a final commit */
	unsigned int after; /* steps after recovery, then a commit */
	unsigned int commit_every;
	unsigned int reopen_every; /* commits between reopens */
	uint64_t key_range;
	uint32_t key_size, value_size;
};

struct totals {
	uint64_t points;    /* fault points injected */
	uint64_t surfaced;  /* errors that reached the caller */
	uint64_t at_open;   /* ... of which tm_open returned */
	uint64_t read_only; /* the store went read-only */
	uint64_t reopens;   /* reopen checks */
	uint64_t aborts;    /* tm_abort checks on the same tm */
	uint64_t landed;    /* a failed commit whose superblock landed */
};

static bool verbose;
static int saved_stderr = -1;

/*
 * The workload prints a line on some expected failures; hide stderr while
 * a fault is armed (the checks print after unmute).
 */
static void mute(void)
{
	int fd;

	if (verbose)
		return;
	fflush(stderr);
	saved_stderr = dup(STDERR_FILENO);
	fd = open("/dev/null", O_WRONLY);
	CHECK(saved_stderr >= 0 && fd >= 0);
	CHECK(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
}

static void unmute(void)
{
	if (saved_stderr < 0)
		return;
	fflush(stderr);
	CHECK(dup2(saved_stderr, STDERR_FILENO) >= 0);
	close(saved_stderr);
	saved_stderr = -1;
}

static struct tm *open_tm(const struct config *cf, struct io_dev *dev)
{
	struct tm *tm;

	CHECK_OK(tm_open(
	    dev, &(struct tm_open_opts){.cache_bytes = cf->cache_bytes}, &tm));
	return tm;
}

/*
 * Run the workload on *tm over dev: steps, then a commit.  Every
 * reopen_every commits the tm is closed and opened again on dev, so that
 * later steps read their nodes from the device (a cold cache) and tm_open
 * itself meets faults.  Stops at the first error; *tm is NULL if a reopen
 * failed.
 */
static int run_steps(const struct config *cf, struct wl *wl, struct tm **tm,
		     struct io_dev *dev, unsigned int steps, unsigned int *done)
{
	unsigned int commits = 0;
	int r = 0;

	for (*done = 0; *done < steps; (*done)++) {
		bool committed;

		r = wl_step(wl, *tm, &committed);
		if (r < 0)
			return r;
		if (committed && ++commits % cf->reopen_every == 0) {
			tm_close(*tm);
			*tm = NULL;
			r = tm_open(dev,
				    &(struct tm_open_opts){.cache_bytes =
							       cf->cache_bytes},
				    tm);
			if (r < 0) {
				*tm = NULL;
				return r;
			}
		}
	}
	return wl_commit(wl, *tm);
}

static void verify(struct wl *wl, struct tm *tm, const char *what, uint64_t n)
{
	uint64_t txn = tm_committed_txn(tm);

	if (wl_verify(wl, tm, txn) != 0) {
		fprintf(stderr,
			"fault point %" PRIu64 ": %s: store at txn %" PRIu64
			" differs from the model\n",
			n, what, txn);
		CHECK(0);
	}
}

/* Ops of the types in mask that the disarmed workload does. */
static uint64_t count_ops(const struct config *cf, uint64_t seed,
			  unsigned int mask, struct wl **wl_out,
			  struct tm **tm_out, struct io_dev **dev_out)
{
	struct wl_opts wo = {.seed = seed,
			     .key_range = cf->key_range,
			     .commit_every = cf->commit_every,
			     .key_size = cf->key_size,
			     .value_size = cf->value_size};
	struct tm_format_opts fo = {.block_size = cf->block_size};
	struct io_dev *mem, *fdev;
	unsigned int done;
	uint64_t total;
	struct tm *tm;
	struct wl *wl;

	CHECK_OK(io_mem_create(cf->dev_size, &mem));
	CHECK_OK(tm_format(mem, &fo));
	CHECK_OK(io_fault_wrap(mem, true, &fdev));
	CHECK_OK(wl_create(&wo, &wl));
	io_fault_arm(fdev, &(struct io_fault_cfg){.op_mask = mask});
	tm = open_tm(cf, fdev);
	CHECK_OK(run_steps(cf, wl, &tm, fdev, cf->steps, &done));
	total = io_fault_count(fdev);
	CHECK_EQ(io_fault_failed(fdev), 0);
	if (wl_out) {
		*wl_out = wl;
		*tm_out = tm;
		*dev_out = fdev;
	} else {
		tm_close(tm);
		wl_destroy(wl);
		io_close(fdev);
	}
	return total;
}

/* More work on a recovered store: it must succeed and verify. */
static struct tm *continue_after(const struct config *cf, struct wl *wl,
				 struct tm *tm, struct io_dev *mem, uint64_t n)
{
	unsigned int done;

	CHECK_OK(run_steps(cf, wl, &tm, mem, cf->after, &done));
	verify(wl, tm, "after recovery", n);
	tm_close(tm);
	tm = open_tm(cf, mem);
	CHECK_EQ(tm_committed_txn(tm), wl_committed_txn(wl));
	verify(wl, tm, "after recovery and reopen", n);
	return tm;
}

static void run_point(const struct config *cf, uint64_t seed, uint64_t n,
		      struct totals *t)
{
	struct wl_opts wo = {.seed = seed,
			     .key_range = cf->key_range,
			     .commit_every = cf->commit_every,
			     .key_size = cf->key_size,
			     .value_size = cf->value_size};
	struct tm_format_opts fo = {.block_size = cf->block_size};
	struct io_fault_cfg fc = {
	    .fail_at = n,
	    .persistent = n & 1,
	    .error = n & 2 ? -ENOSPC : -EIO,
	    .kind = n & 4 ? IO_FAULT_SHORT : IO_FAULT_ERROR,
	    .seed = seed ^ n,
	};
	bool use_abort = n & 8;
	struct io_dev *mem, *fdev;
	struct tm *tm = NULL;
	struct wl *wl;
	unsigned int done = 0;
	uint64_t before;
	int r;

	CHECK_OK(io_mem_create(cf->dev_size, &mem));
	CHECK_OK(tm_format(mem, &fo));
	CHECK_OK(io_fault_wrap(mem, false, &fdev));
	CHECK_OK(wl_create(&wo, &wl));

	mute();
	io_fault_arm(fdev, &fc);
	r = tm_open(
	    fdev, &(struct tm_open_opts){.cache_bytes = cf->cache_bytes}, &tm);
	if (r == 0)
		r = run_steps(cf, wl, &tm, fdev, cf->steps, &done);
	io_fault_disarm(fdev);
	unmute();
	t->points++;

	/* rule 1: the op happened, failed, and its error surfaced */
	if (io_fault_failed(fdev) == 0 || r != fc.error) {
		fprintf(stderr,
			"fault point %" PRIu64 " (%s, %s, %s): %" PRIu64
			" ops failed, the workload returned %d after %u "
			"steps%s\n",
			n, fc.persistent ? "persistent" : "once",
			fc.error == -EIO ? "EIO" : "ENOSPC",
			fc.kind == IO_FAULT_SHORT ? "short" : "error",
			io_fault_failed(fdev), r, done,
			tm ? "" : " (from tm_open)");
		CHECK(0);
	}
	t->surfaced++;
	if (!tm) {
		t->at_open++;
	} else {
		CHECK(tm_state(tm) < 0 || !tm_read_only(tm));
		if (tm_read_only(tm))
			t->read_only++;
	}

	if (tm && use_abort && !tm_read_only(tm)) {
		/* rules 3 and 4 on the same tm */
		CHECK_OK(tm_abort(tm));
		CHECK_OK(tm_state(tm));
		wl_abort(wl);
		CHECK_EQ(tm_committed_txn(tm), wl_committed_txn(wl));
		verify(wl, tm, "after tm_abort", n);
		t->aborts++;
	} else {
		/*
		 * rules 2 and 4 on a fresh tm, straight on the memory device.
		 * No wl_abort: a commit that failed after writing its
		 * superblock may have landed, and wl_sync_to needs the
		 * attempt to tell.
		 */
		tm_close(tm);
		before = wl_committed_txn(wl);
		tm = open_tm(cf, mem);
		CHECK_OK(wl_sync_to(wl, tm_committed_txn(tm)));
		if (before && tm_committed_txn(tm) != before)
			t->landed++;
		verify(wl, tm, "after reopen", n);
		t->reopens++;
	}
	tm = continue_after(cf, wl, tm, mem, n);

	tm_close(tm);
	wl_destroy(wl);
	io_close(fdev);
	io_close(mem);
}

static void run_config(const struct config *cf, uint64_t seed, struct totals *t)
{
	uint64_t total, reads, writes, flushes, commits;
	struct io_dev *fdev;
	struct tm *tm;
	struct wl *wl;

	/* dry runs, disarmed: how many ops (of each type) are there? */
	total = count_ops(cf, seed, IO_OP_ALL, &wl, &tm, &fdev);
	verify(wl, tm, "dry run", 0);
	commits = wl_committed_txn(wl) - 1;
	tm_close(tm);
	wl_destroy(wl);
	io_close(fdev);
	reads = count_ops(cf, seed, IO_OP_READ, NULL, NULL, NULL);
	writes = count_ops(cf, seed, IO_OP_WRITE, NULL, NULL, NULL);
	flushes = count_ops(cf, seed, IO_OP_FLUSH, NULL, NULL, NULL);
	printf("  block size %u: %u steps, %" PRIu64 " commits: %" PRIu64
	       " I/O ops to fail (%" PRIu64 " reads, %" PRIu64
	       " writes, %" PRIu64 " flushes, %" PRIu64 " other)\n",
	       cf->block_size, cf->steps, commits, total, reads, writes,
	       flushes, total - reads - writes - flushes);
	fflush(stdout);

	for (uint64_t n = 1; n <= total; n++)
		run_point(cf, seed, n, t);
}

int main(void)
{
	uint64_t seed = tseed("test-fault");
	unsigned int scale = (unsigned int) tscale();
	unsigned int steps = (tsanitized() ? 800 : 1500) * scale;
	struct config cfs[] = {
	    /* a 16-node cache under trees of ~60 nodes: reads miss and
	     * evictions write dirty nodes early, so faults hit both */
	    {64 << 10, 16 << 20, 16 * 4096, steps, 20, 10, 3, 150, 240, 264},
	    {4096, 8 << 20, 16 * 4096, steps, 20, 12, 3, 2000, 8, 16},
	};
	struct totals t = {0};

	verbose = getenv("V") != NULL;
	if (!verbose)
		log_set_sink(tquiet, NULL);
	for (unsigned int i = 0; i < ARRAY_SIZE(cfs); i++)
		run_config(&cfs[i], seed + i, &t);
	printf("test-fault: %" PRIu64 " fault points injected, %" PRIu64
	       " errors surfaced (%" PRIu64 " by tm_open, %" PRIu64
	       " left the store read-only), %" PRIu64 " reopen checks (%" PRIu64
	       " found the failed commit landed), %" PRIu64
	       " tm_abort checks\n",
	       t.points, t.surfaced, t.at_open, t.read_only, t.reopens,
	       t.landed, t.aborts);
	return 0;
}
