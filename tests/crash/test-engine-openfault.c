/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine open-fault test: fail the Nth I/O of a pool open, for every N
 * until an open no longer meets a fault, in both modes (only the Nth op /
 * every op from the Nth on), read-write and read-only.
 *
 * A failed open frees what it set up (pool_free) and nothing else:
 *   - a device the caller still owns (own_dev false) stays open and
 *     usable: the same fault device then opens the pool cleanly;
 *   - a device handed over (own_dev true) is closed exactly once (under
 *     ASan/LSan: no leak, no double close);
 *   - a pool file opened by path (tv_pool_open) that is not a pool gives
 *     back its claim: a second open meets the same error, not -EBUSY.
 * And an open that succeeds despite a fault closes cleanly.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"
#include "tcheck.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/log.h"

/* The committer's thread fails to start while set (-Wl,--wrap). */
static bool fail_threads;

int __real_pthread_create(pthread_t *t, const pthread_attr_t *a,
			  void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
			  void *(*fn)(void *), void *arg);

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
			  void *(*fn)(void *), void *arg)
{
	if (fail_threads)
		return EAGAIN;
	return __real_pthread_create(t, a, fn, arg);
}

static void quiet(enum log_level lvl, const char *msg, void *ctx)
{
	(void) lvl;
	(void) msg;
	(void) ctx;
}

/* A pool with a volume and some data on a memory device. */
static struct io_dev *make_pool(void)
{
	struct tv_pool_create_opts co = {.block_size = 4096, .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	uint8_t buf[8192];
	struct io_dev *mem;
	struct tv_pool *p;
	uint64_t id;

	memset(buf, 0xa5, sizeof(buf));
	CHECK_OK(io_mem_create(8 << 20, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &p));
	CHECK_OK(tv_vol_create(p, "v", 1 << 20, NULL, 0, &id));
	CHECK_OK(tv_vol_write(p, id, buf, sizeof(buf), 0, 0));
	CHECK_OK(tv_pool_close(p));
	return mem;
}

/* One open of mem through a fault wrapper failing the nth op; whether
 * the fault was met. */
static bool open_once(struct io_dev *mem, uint64_t n, bool persistent, bool ro,
		      bool own, uint64_t *fails)
{
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000,
				       .read_only = ro};
	struct io_fault_cfg fc = {.fail_at = n,
				  .persistent = persistent,
				  .error = -EIO,
				  .kind = IO_FAULT_ERROR};
	struct tv_check_report rep;
	struct io_dev *fault;
	struct tv_pool *p = NULL;
	bool met;
	int r;

	CHECK_OK(io_fault_wrap(mem, false, &fault));
	io_fault_arm(fault, &fc);
	r = pool_open_dev(fault, own, "fault", &oo, &p);
	if (r < 0) {
		++*fails;
		if (own)
			return true; /* closed by the failed open */
		/* still ours, still usable */
		met = io_fault_failed(fault) > 0;
		CHECK(met);
		io_fault_disarm(fault);
		CHECK_OK(pool_open_dev(fault, false, "again", &oo, &p));
		CHECK_OK(tv_pool_check(p, NULL, &rep));
		CHECK(rep.clean);
		CHECK_OK(tv_pool_close(p));
		io_close(fault);
		return true;
	}
	met = io_fault_failed(fault) > 0;
	io_fault_disarm(fault);
	tv_pool_close(p); /* may fail after the fault: no matter */
	if (!own)
		io_close(fault);
	return met;
}

static void open_faults(void)
{
	for (int mode = 0; mode < 8; mode++) {
		bool persistent = mode & 1, ro = mode & 2, own = mode & 4;
		struct io_dev *mem = make_pool();
		uint64_t n, fails = 0;

		for (n = 1; n < 10000; n++)
			if (!open_once(mem, n, persistent, ro, own, &fails))
				break;
		CHECK(n < 10000);
		CHECK(fails > 0);
		printf("  %s %s %s: ops 1..%" PRIu64 " failed in turn, "
		       "%" PRIu64 " opens failed\n",
		       persistent ? "persistent" : "one-shot",
		       ro ? "read-only" : "read-write",
		       own ? "own_dev" : "borrowed", n - 1, fails);
		io_close(mem);
	}
}

/* The open fails after the store is open and the I/O path is set up (the
 * committer cannot start): pool_free closes the store and frees the I/O
 * state, closes an owned device, and leaves a borrowed one usable. */
static void thread_fails(void)
{
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	struct io_dev *mem = make_pool(), *fault;
	struct tv_check_report rep;
	struct tv_pool *p = NULL;

	for (int own = 0; own < 2; own++) {
		CHECK_OK(io_fault_wrap(mem, false, &fault));
		fail_threads = true;
		CHECK_EQ(pool_open_dev(fault, own, "nothread", &oo, &p),
			 -EAGAIN);
		fail_threads = false;
		if (!own) {
			CHECK_OK(pool_open_dev(fault, false, "again", &oo, &p));
			CHECK_OK(tv_pool_check(p, NULL, &rep));
			CHECK(rep.clean);
			CHECK_OK(tv_pool_close(p));
			io_close(fault);
		}
	}
	/* read-only: no committer, the open succeeds */
	oo.read_only = true;
	fail_threads = true;
	CHECK_OK(pool_open_dev(mem, false, "ro", &oo, &p));
	fail_threads = false;
	CHECK_OK(tv_pool_close(p));
	io_close(mem);
	printf("  a committer that cannot start fails the open cleanly\n");
}

/* tv_pool_open of a file that is no pool: the failed open gives back its
 * claim on the file (pool_free closes the device it opened). */
static void not_a_pool(void)
{
	char dir[] = "/tmp/tv-openfault.XXXXXX", path[64];
	char junk[65536];
	struct tv_pool *p = NULL;
	int fd, r1, r2;

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/junk", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	CHECK(fd >= 0);
	memset(junk, 0x33, sizeof(junk));
	for (int i = 0; i < 64; i++)
		CHECK(write(fd, junk, sizeof(junk)) == (ssize_t) sizeof(junk));
	close(fd);
	r1 = tv_pool_open(path, NULL, &p);
	r2 = tv_pool_open(path, NULL, &p);
	CHECK(r1 < 0);
	CHECK_EQ(r1, r2);
	CHECK(r2 != -EBUSY);
	unlink(path);
	rmdir(dir);
	printf("  a failed open by path gives back its claim (%d)\n", r1);
}

/* Every hook of the I/O path is set (pool.c calls them unchecked). */
static void hooks_set(void)
{
	const struct vio_hooks *h = &vio_pool_hooks;

	CHECK(h->tm && h->init && h->destroy && h->reset_locked);
	CHECK(h->before_commit_locked && h->drain_locked);
	CHECK(h->sync_ranges_locked && h->sync_clear_locked);
	CHECK(h->held_locked && h->had_io && h->forget_all_locked);
	CHECK(h->invalidate_locked && h->snapshot_locked);
	CHECK(h->reap_pending && h->reap && h->zero_tail_locked);
}

int main(void)
{
	log_set_sink(quiet, NULL);
	hooks_set();
	open_faults();
	thread_fails();
	not_a_pool();
	printf("test-engine-openfault: ok\n");
	return 0;
}
