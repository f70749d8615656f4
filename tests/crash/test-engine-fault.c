/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine fault test: fail the Nth I/O, for every N, of a seeded workload
 * of creates, snapshots, writes, deletes and flushes (commits).
 *
 * The pool is formatted on a memory device and opened on a fault wrapper
 * of it (through a small tracing device of our own, which records what
 * kind of operation failed), with a long commit interval so that only the
 * workload's flushes and metadata operations commit.  For each N, in two
 * modes (only the Nth operation fails / every operation from the Nth on
 * fails):
 *   - the error reaches the caller: the step during which an operation
 *     failed returns < 0;
 *   - if the failed operation was a flush (of a commit or not), or a write
 *     of a commit (a flush or a metadata operation), the pool is
 *     read-only with a reason;
 *   - the pool is closed (that may fail) and reopened on the raw memory
 *     device: the volume table is the last committed one (or the one of
 *     the metadata operation in flight), every flushed sector reads back
 *     exactly, every sector written since reads its old or a newer
 *     content, ids never go back, and the checker is clean.
 */
#include <errno.h>
#include <stdlib.h>

#include "io/io.h"
#include "iowrap.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/checked.h"
#include "util/log.h"
#include "volmodel.h"

#define BS	 4096u
#define DEV_SIZE (4ull << 20)

/* ---- a tracing device: remembers the kind of the last failed op ---- */

struct tdev {
	struct iowrap w;
	unsigned int failed_kind; /* IO_OP_* of the first failure, or 0 */
	unsigned int nfailed;
};

static struct tdev *T(struct io_dev *d)
{
	return (struct tdev *) d;
}

static int note(struct io_dev *d, unsigned int kind, int r)
{
	if (r < 0 && !T(d)->nfailed++)
		T(d)->failed_kind = kind;
	return r;
}

static int t_read(struct io_dev *d, void *buf, size_t len, uint64_t off)
{
	return note(d, IO_OP_READ, iowrap_read(d, buf, len, off));
}

static int t_write(struct io_dev *d, const void *buf, size_t len, uint64_t off)
{
	return note(d, IO_OP_WRITE, iowrap_write(d, buf, len, off));
}

static int t_flush(struct io_dev *d)
{
	return note(d, IO_OP_FLUSH, iowrap_flush(d));
}

static int t_discard(struct io_dev *d, uint64_t off, uint64_t len)
{
	return note(d, IO_OP_DISCARD, iowrap_discard(d, off, len));
}

static int t_wz(struct io_dev *d, uint64_t off, uint64_t len)
{
	return note(d, IO_OP_WRITE_ZEROES, iowrap_write_zeroes(d, off, len));
}

static void t_close(struct io_dev *d)
{
	free(d);
}

static const struct io_ops tops = {
    .read = t_read,
    .write = t_write,
    .flush = t_flush,
    .discard = t_discard,
    .write_zeroes = t_wz,
    .resize = iowrap_no_resize,
    .close = t_close,
};

static struct io_dev *trace_wrap(struct io_dev *lower)
{
	struct tdev *t = calloc(1, sizeof(*t));

	CHECK(t);
	iowrap_init(&t->w, &tops, lower, "trace");
	return &t->w.dev;
}

enum step_kind { S_NONE, S_CREATE, S_SNAPSHOT, S_DELETE, S_WRITE, S_FLUSH };
static const char *const step_names[] = {"none",   "create", "snapshot",
					 "delete", "write",  "flush"};

struct run {
	struct trng rng;
	struct vm_model cur, before_op;
	bool op_in_flight;
	unsigned int seq;
	enum step_kind last;
};

static int step(struct run *w, struct tv_pool *p)
{
	struct vm_model *m = &w->cur;
	unsigned int op = (unsigned int) trng_below(&w->rng, 100);
	char name[16];
	int i, r;

	w->last = S_NONE;
	if (op < 12) {
		uint64_t id, want;
		i = vm_pick(m, &w->rng, false);
		if (i < 0)
			return 0;
		w->last = S_CREATE;
		vm_begin_meta(m, &w->before_op);
		w->op_in_flight = true;
		snprintf(name, sizeof(name), "v%u", w->seq++);
		want = vm_create(m, i, name,
				 (2 + trng_below(&w->rng, 5)) * BS / VM_SECT);
		r = tv_vol_create(p, m->v[i].name, m->v[i].sectors * VM_SECT,
				  NULL, 0, &id);
		if (r < 0)
			return r;
		CHECK_EQ(id, want);
		w->op_in_flight = false;
	} else if (op < 20) {
		int o = vm_pick(m, &w->rng, true);
		uint64_t id, want;
		i = vm_pick(m, &w->rng, false);
		if (i < 0 || o < 0)
			return 0;
		w->last = S_SNAPSHOT;
		vm_begin_meta(m, &w->before_op);
		w->op_in_flight = true;
		snprintf(name, sizeof(name), "s%u", w->seq++);
		want = vm_snapshot(m, i, o, name);
		r = tv_vol_snapshot(p, m->v[o].id, m->v[i].name, 0, NULL, 0,
				    &id);
		if (r < 0)
			return r;
		CHECK_EQ(id, want);
		w->op_in_flight = false;
	} else if (op < 27) {
		uint64_t id;
		i = vm_pick(m, &w->rng, true);
		if (i < 0)
			return 0;
		w->last = S_DELETE;
		vm_begin_meta(m, &w->before_op);
		w->op_in_flight = true;
		id = m->v[i].id;
		vm_delete(m, i);
		r = tv_vol_delete(p, id);
		if (r < 0)
			return r;
		w->op_in_flight = false;
	} else if (op < 88) {
		uint64_t first, n;
		uint8_t *buf;
		i = vm_pick(m, &w->rng, true);
		if (i < 0)
			return 0;
		w->last = S_WRITE;
		if (op < 50) {
			first = trng_below(&w->rng, m->v[i].sectors);
			n = 1;
		} else {
			first = trng_below(&w->rng, m->v[i].sectors);
			n = 1 + trng_below(&w->rng, MIN(m->v[i].sectors - first,
							2 * BS / VM_SECT));
		}
		buf = vm_random_data(&w->rng, n);
		r = tv_vol_write(p, m->v[i].id, buf, n * VM_SECT,
				 first * VM_SECT, 0);
		vm_write(m, i, first, n, buf);
		free(buf);
		if (r < 0)
			return r;
	} else {
		w->last = S_FLUSH;
		r = tv_pool_flush(p);
		if (r < 0)
			return r;
		vm_settle(m);
	}
	return 0;
}

struct stats {
	uint64_t points, readonly_commit, meta_read_rw, close_failed;
	uint64_t in_flight_landed, in_flight_lost;
};

static unsigned int nsteps;

/* Does the pool have uncommitted metadata changes? */
static bool is_dirty(struct tv_pool *p)
{
	bool d;

	pthread_mutex_lock(&p->meta_lock);
	d = p->dirty;
	pthread_mutex_unlock(&p->meta_lock);
	return d;
}

/*
 * One run: fail op n (n == 0: none).  Returns the number of counted ops
 * (for the dry run).
 */
static uint64_t run_one(uint64_t seed, uint64_t n, bool persistent,
			struct stats *st)
{
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000,
				       .cache_bytes = 64 << 10};
	struct io_fault_cfg fc = {.fail_at = n,
				  .persistent = persistent,
				  .error = -EIO,
				  .kind = IO_FAULT_ERROR};
	struct io_dev *mem, *fault, *tr;
	struct tv_check_report rep;
	struct tv_pool_info pi;
	struct tv_pool *p;
	struct run w;
	uint64_t ops;
	bool dirty = false;
	int r = 0;
	unsigned int s;

	memset(&w, 0, sizeof(w));
	w.cur.next_id = 1;
	trng_init(&w.rng, seed);
	CHECK_OK(io_mem_create(DEV_SIZE, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(io_fault_wrap(mem, false, &fault));
	tr = trace_wrap(fault);
	CHECK_OK(pool_open_dev(tr, false, "fault", &oo, &p));
	io_fault_arm(fault, &fc);
	for (s = 0; s < nsteps; s++) {
		dirty = is_dirty(p);
		r = step(&w, p);
		if (r < 0 || T(tr)->nfailed)
			break;
	}
	if (r == 0 && s == nsteps) {
		/* close has nothing left to commit */
		w.last = S_FLUSH;
		dirty = is_dirty(p);
		r = tv_pool_flush(p);
	}
	ops = io_fault_count(fault);
	if (n && T(tr)->nfailed) {
		unsigned int kind = T(tr)->failed_kind;
		/* any failed flush makes the pool read-only, also one with
		 * no metadata to commit (a writeback error is reported only
		 * once: pool.c, "syncs"); a failed write, when it was a
		 * commit's */
		bool commit =
		    kind == IO_OP_FLUSH ||
		    (((w.last == S_FLUSH && dirty) || w.last == S_CREATE ||
		      w.last == S_SNAPSHOT || w.last == S_DELETE) &&
		     kind == IO_OP_WRITE);

		st->points++;
		if (r == 0) {
			fprintf(stderr,
				"fail at %llu (%s, %s): the %s step "
				"%u returned 0 after op kind %#x "
				"failed\n",
				(unsigned long long) n,
				persistent ? "persistent" : "once",
				"error swallowed", step_names[w.last], s, kind);
			CHECK(0);
		}
		CHECK_OK(tv_pool_info(p, &pi));
		if (commit) {
			if (pi.state != TV_POOL_READ_ONLY || !pi.reason[0]) {
				fprintf(stderr,
					"fail at %llu (%s): %s step %u: "
					"a commit's op kind %#x "
					"failed (%d), pool state %d "
					"reason '%s'\n",
					(unsigned long long) n,
					persistent ? "persistent" : "once",
					step_names[w.last], s, kind, r,
					(int) pi.state, pi.reason);
				CHECK(0);
			}
			st->readonly_commit++;
		} else if (kind == IO_OP_READ && w.last != S_WRITE &&
			   pi.state == TV_POOL_RW) {
			st->meta_read_rw++;
		}
	} else if (n) {
		CHECK_OK(r); /* nothing failed: nothing may fail */
	}
	if (tv_pool_close(p) < 0)
		st->close_failed++;
	io_close(tr);
	io_close(fault);
	if (n) {
		/* reopen on the raw device */
		bool ok;

		CHECK_OK(pool_open_dev(mem, false, "raw", &oo, &p));
		ok = vm_matches(p, &w.cur, false);
		if (ok && w.op_in_flight)
			st->in_flight_landed++;
		if (!ok && w.op_in_flight) {
			ok = vm_matches(p, &w.before_op, false);
			st->in_flight_lost += ok;
		}
		if (!ok) {
			fprintf(stderr,
				"fail at %llu (%s): after %s step %u "
				"the pool does not match the model\n",
				(unsigned long long) n,
				persistent ? "persistent" : "once",
				step_names[w.last], s);
			vm_matches(p, &w.cur, true);
			if (w.op_in_flight)
				vm_matches(p, &w.before_op, true);
			CHECK(0);
		}
		CHECK_OK(tv_pool_check(p, stderr, &rep));
		if (!rep.clean)
			fprintf(stderr, "fail at %llu (%s): check not clean\n",
				(unsigned long long) n,
				persistent ? "persistent" : "once");
		CHECK(rep.clean);
		CHECK_OK(tv_pool_close(p));
	}
	io_close(mem);
	vm_free(&w.cur);
	vm_free(&w.before_op);
	return ops;
}

/*
 * The flush a commit does first without meta_lock when much data went into
 * new blocks (vio.c, rule 5) fails: the commit must fail too, although the
 * commit's own flush, later, succeeds (a writeback error is reported
 * once), and nothing of the transaction may be committed.
 */
static void preflush_fault(void)
{
	struct tv_pool_create_opts co = {.block_size = 64 << 10,
					 .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	struct io_fault_cfg fc = {.fail_at = 1,
				  .error = -EIO,
				  .kind = IO_FAULT_ERROR,
				  .op_mask = IO_OP_FLUSH};
	size_t len = 24 << 20;
	uint8_t *buf = malloc(len);
	struct io_dev *mem, *fault;
	struct tv_check_report rep;
	struct tv_pool_info pi;
	struct tv_pool *p;
	uint64_t id, used;

	CHECK(buf);
	memset(buf, 0x5a, len);
	CHECK_OK(io_mem_create(128 << 20, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(io_fault_wrap(mem, false, &fault));
	CHECK_OK(pool_open_dev(fault, false, "preflush", &oo, &p));
	CHECK_OK(tv_vol_create(p, "v", 64 << 20, NULL, 0, &id));
	CHECK_OK(tv_pool_info(p, &pi));
	used = pi.used;
	CHECK_OK(tv_vol_write(p, id, buf, len, 0, 0));
	io_fault_arm(fault, &fc);
	CHECK(tv_pool_flush(p) < 0);
	CHECK_EQ(io_fault_failed(fault), 1);
	CHECK(io_fault_count(fault) >= 1);
	CHECK_OK(tv_pool_info(p, &pi));
	CHECK_EQ(pi.state, TV_POOL_READ_ONLY);
	io_fault_disarm(fault);
	tv_pool_close(p);
	/* the committed pool: the volume, none of the writes */
	CHECK_OK(pool_open_dev(fault, false, "preflush", &oo, &p));
	CHECK_OK(tv_pool_info(p, &pi));
	CHECK_EQ(pi.used, used);
	CHECK_OK(tv_pool_check(p, NULL, &rep));
	CHECK(rep.clean);
	CHECK_OK(tv_pool_close(p));
	io_close(fault);
	io_close(mem);
	free(buf);
	printf("  a failed flush before a commit fails the commit\n");
}

int main(void)
{
	uint64_t seed = tseed("test-engine-fault");
	struct stats st[2];
	uint64_t total;

	volume_id_clock = NULL; /* plain counter: ids 1, 2, ... */
	memset(st, 0, sizeof(st));
	{
		uint8_t zero[VM_SECT] = {0};
		vm_zero_hash = vm_hash(zero);
	}
	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	nsteps = (unsigned int) ((tsanitized() ? 120 : 400) * tscale());
	preflush_fault();
	total = run_one(seed, 0, false, &st[0]);
	printf("  workload of %u steps: %llu I/O operations to fail\n", nsteps,
	       (unsigned long long) total);
	fflush(stdout);
	for (int mode = 0; mode < 2; mode++) {
		for (uint64_t n = 1; n <= total; n++)
			run_one(seed, n, mode == 1, &st[mode]);
		printf("  %s: %llu fault points; %llu hit a commit (pool "
		       "read-only), %llu metadata reads failed leaving the "
		       "pool read-write, close failed %llu times; op in "
		       "flight landed %llu / lost %llu\n",
		       mode ? "every op from N on fails" : "only op N fails",
		       (unsigned long long) st[mode].points,
		       (unsigned long long) st[mode].readonly_commit,
		       (unsigned long long) st[mode].meta_read_rw,
		       (unsigned long long) st[mode].close_failed,
		       (unsigned long long) st[mode].in_flight_landed,
		       (unsigned long long) st[mode].in_flight_lost);
		fflush(stdout);
		CHECK_EQ(st[mode].points, total);
	}
	printf("test-engine-fault: ok (%llu fault points)\n",
	       (unsigned long long) (st[0].points + st[1].points));
	return 0;
}
