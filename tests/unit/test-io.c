/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-io: the device seam.  Every backend against its contract in io.h:
 * file (and a block device through a loop device when losetup works),
 * memory, fault injection and power-cut simulation.
 *
 * Randomized parts use tseed(); replay with TV_SEED=<seed>.  Library
 * messages are captured: expected errors are counted (so a test can insert
 * that an error was logged), unexpected ones are printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/io.h"
#include "tcheck.h"
#include "util/checked.h"
#include "util/log.h"

static uint64_t g_seed;
static char g_dir[] = "/tmp/test-io.XXXXXX";

/* ---- log capture ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static bool log_quiet;
static unsigned int log_errors;
static char log_last[1024];

static void log_capture(enum log_level lvl, const char *msg, void *ctx)
{
	(void) ctx;
	pthread_mutex_lock(&log_lock);
	if (lvl == LOG_LVL_ERROR)
		log_errors++;
	snprintf(log_last, sizeof(log_last), "%s", msg);
	if (!log_quiet)
		fprintf(stderr, "  log: %s\n", msg);
	pthread_mutex_unlock(&log_lock);
}

/* Expected errors follow: count them instead of printing them. */
static void quiet(bool on)
{
	pthread_mutex_lock(&log_lock);
	log_quiet = on;
	log_errors = 0;
	pthread_mutex_unlock(&log_lock);
}

static unsigned int logged_errors(void)
{
	unsigned int n;

	pthread_mutex_lock(&log_lock);
	n = log_errors;
	pthread_mutex_unlock(&log_lock);
	return n;
}

/* ---- helpers ---- */

static void *xcalloc(size_t n)
{
	void *p = calloc(n ? n : 1, 1);

	CHECK(p);
	return p;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* The whole device, read through the front door.  Caller frees. */
static uint8_t *read_all(struct io_dev *dev)
{
	uint8_t *buf = xcalloc((size_t) dev->size);

	CHECK_OK(io_read(dev, buf, (size_t) dev->size, 0));
	return buf;
}

static void check_contents(struct io_dev *dev, const uint8_t *want)
{
	uint8_t *got = read_all(dev);

	CHECK(memcmp(got, want, (size_t) dev->size) == 0);
	free(got);
}

/* The range rules every backend shares (through io.c). */
static void check_ranges(struct io_dev *dev)
{
	uint64_t sz = dev->size;
	uint8_t buf[16];

	quiet(true);
	CHECK_ERR(io_read(dev, buf, 2, sz - 1), -EINVAL);
	CHECK_ERR(io_read(dev, buf, 1, sz), -EINVAL);
	CHECK_ERR(io_read(dev, buf, 16, UINT64_MAX - 4), -EINVAL);
	CHECK_ERR(io_write(dev, buf, 1, sz), -EINVAL);
	CHECK_ERR(io_write(dev, buf, 16, UINT64_MAX - 8), -EINVAL);
	CHECK_ERR(io_discard(dev, 1, UINT64_MAX), -EINVAL);
	CHECK_ERR(io_discard(dev, 0, sz + 1), -EINVAL);
	CHECK_ERR(io_write_zeroes(dev, sz, 1), -EINVAL);
	CHECK_ERR(io_write_zeroes(dev, UINT64_MAX, 2), -EINVAL);
	CHECK_EQ(logged_errors(), 9); /* each logged, once */
	quiet(false);
	/* len == 0 is a no-op, wherever it points */
	CHECK_OK(io_read(dev, buf, 0, UINT64_MAX));
	CHECK_OK(io_write(dev, buf, 0, sz + 100));
	CHECK_OK(io_discard(dev, UINT64_MAX, 0));
	CHECK_OK(io_write_zeroes(dev, sz + 1, 0));
	CHECK_OK(io_read(dev, buf, 1, sz - 1));
}

/* ---- memory ---- */

struct mem_thread {
	struct io_dev *dev;
	uint64_t base;
	unsigned int id;
};

static void *mem_worker(void *arg)
{
	struct mem_thread *t = arg;
	uint8_t w[4096], r[4096];

	for (unsigned int i = 0; i < 500; i++) {
		tpattern(w, sizeof(w), t->id * 100000u + i);
		CHECK_OK(io_write(t->dev, w, sizeof(w), t->base));
		CHECK_OK(io_read(t->dev, r, sizeof(r), t->base));
		CHECK(memcmp(w, r, sizeof(w)) == 0);
		/* a shared region everybody overwrites: must not crash */
		CHECK_OK(io_write(t->dev, w, 512, 0));
		if (i % 50 == 0)
			CHECK_OK(io_write_zeroes(t->dev, t->base, 512));
	}
	return NULL;
}

static void test_mem(void)
{
	const uint64_t sz = 256 * 1024;
	struct io_dev *dev, *dev2;
	struct mem_thread th[4];
	pthread_t tid[4];
	uint8_t *ref = xcalloc(sz), buf[8192];

	CHECK_OK(io_mem_create(sz, &dev));
	CHECK_EQ(dev->size, sz);
	CHECK(io_mem_data(dev) != NULL);
	check_contents(dev, ref); /* zero-filled */

	tpattern(ref + 1000, 5000, 1);
	CHECK_OK(io_write(dev, ref + 1000, 5000, 1000));
	check_contents(dev, ref);
	CHECK(memcmp(io_mem_data(dev), ref, sz) == 0);
	CHECK_OK(io_discard(dev, 2000, 700));
	memset(ref + 2000, 0, 700);
	CHECK_OK(io_write_zeroes(dev, 5000, 100));
	memset(ref + 5000, 0, 100);
	check_contents(dev, ref);
	CHECK_OK(io_flush(dev));
	check_ranges(dev);

	/* resize: shrink drops the tail, growth reads as zeroes */
	tpattern(ref + sz - 8192, 8192, 2);
	CHECK_OK(io_write(dev, ref + sz - 8192, 8192, sz - 8192));
	CHECK_OK(io_resize(dev, sz - 4096));
	CHECK_EQ(dev->size, sz - 4096);
	quiet(true);
	CHECK_ERR(io_read(dev, buf, 1, sz - 4096), -EINVAL);
	quiet(false);
	CHECK_OK(io_resize(dev, sz + 4096));
	CHECK_EQ(dev->size, sz + 4096);
	CHECK_OK(io_read(dev, buf, 8192, sz - 4096));
	CHECK(all_zero(buf, 8192));
	CHECK_OK(io_read(dev, buf, 4096, sz - 8192));
	CHECK(memcmp(buf, ref + sz - 8192, 4096) == 0);
	CHECK_OK(io_resize(dev, sz));

	/* create_from copies */
	CHECK_OK(io_mem_create_from(ref, sz, &dev2));
	check_contents(dev2, ref);
	ref[0] ^= 1;
	CHECK(io_mem_data(dev2)[0] != ref[0]);
	ref[0] ^= 1;
	io_close(dev2);
	CHECK_OK(io_mem_create(0, &dev2)); /* empty is fine */
	CHECK_EQ(dev2->size, 0);
	io_close(dev2);

	/* concurrency: private regions stay private */
	for (unsigned int i = 0; i < 4; i++) {
		th[i] = (struct mem_thread){dev, 65536 * (i + 1) - 8192, i + 1};
		CHECK(pthread_create(&tid[i], NULL, mem_worker, &th[i]) == 0);
	}
	for (unsigned int i = 0; i < 4; i++)
		CHECK(pthread_join(tid[i], NULL) == 0);

	io_close(dev);
	io_close(NULL);
	free(ref);
	printf("mem: ok\n");
}

/* ---- file ---- */

static uint64_t blocks_of(const char *path)
{
	struct stat st;

	CHECK(stat(path, &st) == 0);
	return (uint64_t) st.st_blocks;
}

static void test_file_direct(const char *path)
{
	struct io_dev *dev;
	void *w, *r, *o;
	int ret;

	quiet(true);
	ret = io_file_open(path, IO_FILE_DIRECT, 0, &dev);
	quiet(false);
	if (ret == -EINVAL) {
		printf("file: O_DIRECT not supported under %s, skipped\n",
		       g_dir);
		return;
	}
	CHECK_OK(ret);
	CHECK(dev->flags & IO_DEV_DIRECT);
	CHECK(posix_memalign(&w, 4096, 65536) == 0);
	CHECK(posix_memalign(&r, 4096, 65536) == 0);
	CHECK(posix_memalign(&o, 4096, 65536) == 0);
	CHECK_OK(io_read(dev, o, 65536, 65536));
	tpattern(w, 65536, 77);
	CHECK_OK(io_write(dev, w, 65536, 65536));
	CHECK_OK(io_read(dev, r, 65536, 65536));
	CHECK(memcmp(w, r, 65536) == 0);
	/* the zeroing paths must cope with O_DIRECT too */
	CHECK_OK(io_write_zeroes(dev, 65536, 8192));
	CHECK_OK(io_discard(dev, 65536 + 8192, 8192));
	CHECK_OK(io_read(dev, r, 65536, 65536));
	CHECK(all_zero(r, 16384));
	CHECK(memcmp((uint8_t *) w + 16384, (uint8_t *) r + 16384,
		     65536 - 16384) == 0);
	/* put the bytes back for the caller's reference model */
	CHECK_OK(io_write(dev, o, 65536, 65536));
	CHECK_OK(io_flush(dev));
	io_close(dev);
	free(w);
	free(r);
	free(o);
	printf("file: O_DIRECT ok\n");
}

static void test_file(void)
{
	const uint64_t sz = 4 * 1024 * 1024, mib = 1024 * 1024;
	char path[PATH_MAX];
	struct io_dev *dev;
	uint8_t *ref = xcalloc(8 * mib), buf[4096];
	uint64_t b1, b2;
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/file", g_dir);

	CHECK_OK(io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, sz, &dev));
	CHECK_EQ(dev->size, sz);
	CHECK(!(dev->flags & (IO_DEV_BLOCKDEV | IO_DEV_RDONLY)));
	CHECK(stat(path, &st) == 0);
	CHECK_EQ(st.st_size, sz);
	CHECK(blocks_of(path) < sz / 512 / 2); /* sparse */
	fd = io_file_fd(dev);
	CHECK(fd >= 0);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	check_contents(dev, ref);
	check_ranges(dev);

	quiet(true);
	{
		struct io_dev *d2;

		CHECK_ERR(
		    io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, sz, &d2),
		    -EEXIST);
		CHECK_EQ(logged_errors(), 1);
	}
	quiet(false);

	/* write, read back, and watch the allocation grow and shrink */
	tpattern(ref, 2 * mib, 10);
	CHECK_OK(io_write(dev, ref, 2 * mib, 0));
	check_contents(dev, ref);
	CHECK_OK(io_flush(dev));
	b1 = blocks_of(path);
	CHECK(b1 >= 2 * mib / 512);

	CHECK_OK(io_discard(dev, 0, mib));
	memset(ref, 0, mib);
	CHECK_OK(io_flush(dev));
	b2 = blocks_of(path);
	CHECK(b2 + mib / 512 <= b1); /* the hole is really a hole */
	check_contents(dev, ref);

	/* unaligned zeroing keeps its neighbours */
	CHECK_OK(io_write_zeroes(dev, mib + 100, 5000));
	memset(ref + mib + 100, 0, 5000);
	CHECK_OK(io_discard(dev, mib + 10000, 300));
	memset(ref + mib + 10000, 0, 300);
	CHECK_OK(io_write_zeroes(dev, mib + 65536, 3 * 65536));
	memset(ref + mib + 65536, 0, 3 * 65536);
	check_contents(dev, ref);

	/* resize: grow reads zeroes, shrink drops the tail */
	CHECK_OK(io_resize(dev, 2 * sz));
	CHECK_EQ(dev->size, 2 * sz);
	CHECK(stat(path, &st) == 0);
	CHECK_EQ(st.st_size, 2 * sz);
	check_contents(dev, ref);
	CHECK_OK(io_resize(dev, 3 * mib));
	CHECK_EQ(dev->size, 3 * mib);
	quiet(true);
	CHECK_ERR(io_read(dev, buf, 1, 3 * mib), -EINVAL);
	quiet(false);
	CHECK_OK(io_flush(dev));
	io_close(dev);

	/* reopen: size and contents persisted; CREATE without EXCL opens */
	CHECK_OK(io_file_open(path, IO_FILE_CREATE, 12345, &dev));
	CHECK_EQ(dev->size, 3 * mib);
	check_contents(dev, ref);
	io_close(dev);

	test_file_direct(path);

	/* read-only */
	CHECK_OK(io_file_open(path, IO_FILE_RDONLY, 0, &dev));
	CHECK(dev->flags & IO_DEV_RDONLY);
	check_contents(dev, ref);
	quiet(true);
	CHECK_ERR(io_write(dev, buf, 512, 0), -EROFS);
	CHECK_ERR(io_discard(dev, 0, 512), -EROFS);
	CHECK_ERR(io_write_zeroes(dev, 0, 512), -EROFS);
	CHECK_ERR(io_resize(dev, mib), -EROFS);
	quiet(false);
	CHECK_OK(io_flush(dev));
	io_close(dev);
	CHECK(stat(path, &st) == 0);
	CHECK_EQ(st.st_size, 3 * mib);

	/* things that are not devices */
	quiet(true);
	{
		char p2[PATH_MAX];
		struct io_dev *d2;

		snprintf(p2, sizeof(p2), "%s/missing", g_dir);
		CHECK_ERR(io_file_open(p2, 0, 0, &d2), -ENOENT);
		CHECK_ERR(io_file_open(g_dir, IO_FILE_RDONLY, 0, &d2), -EINVAL);
		CHECK_ERR(io_file_open(p2, IO_FILE_CREATE | IO_FILE_RDONLY,
				       4096, &d2),
			  -EINVAL);
		CHECK(access(p2, F_OK) < 0);
		CHECK_EQ(logged_errors(), 3);
	}
	quiet(false);

	CHECK(unlink(path) == 0);
	free(ref);
	printf("file: ok (punched %" PRIu64 " -> %" PRIu64 " blocks)\n", b1,
	       b2);
}

/* ---- block device (a loop device), when the machine allows ---- */

/* Run cmd; its first output line goes to out.  Returns the exit status. */
static int run_cmd(const char *cmd, char *out, size_t outlen)
{
	FILE *p = popen(cmd, "r");
	int st;

	out[0] = '\0';
	if (!p)
		return -1;
	if (fgets(out, (int) outlen, p))
		out[strcspn(out, "\n")] = '\0';
	while (fgetc(p) != EOF) {
	}
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_blockdev(void)
{
	const uint64_t sz = 8 * 1024 * 1024;
	char backing[PATH_MAX], cmd[PATH_MAX + 64], loopdev[256];
	char errmsg[256];
	uint8_t *ref = xcalloc(sz);
	struct io_dev *dev, *dev2;
	uint64_t b1, b2;
	int fd, r;

	snprintf(backing, sizeof(backing), "%s/backing", g_dir);
	fd = open(backing, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, (off_t) sz) == 0);
	close(fd);

	snprintf(cmd, sizeof(cmd), "losetup -f --show '%s' 2>&1", backing);
	r = run_cmd(cmd, loopdev, sizeof(loopdev));
	if (r != 0 || strncmp(loopdev, "/dev/", 5) != 0) {
		printf("blockdev: skipped: losetup failed (%d): %s\n", r,
		       loopdev);
		goto out;
	}

	r = io_file_open(loopdev, 0, 0, &dev);
	/* detach at once: the kernel defers it to our last close, so the
	 * loop device goes away even if a CHECK below aborts the test */
	snprintf(cmd, sizeof(cmd), "losetup -d '%s' 2>&1", loopdev);
	if (run_cmd(cmd, errmsg, sizeof(errmsg)) != 0)
		printf("blockdev: losetup -d %s failed: %s\n", loopdev, errmsg);
	if (r) {
		printf("blockdev: skipped: cannot open %s: %s\n", loopdev,
		       strerror(-r));
		goto out;
	}
	CHECK(dev->flags & IO_DEV_BLOCKDEV);
	CHECK_EQ(dev->size, sz);
	/* ranged syncs (io-file.c is_ranged_fs), and no holes: zeroes on a
	 * device do not outlast a crash by themselves */
	CHECK(dev->flags & IO_DEV_RANGED_SYNC);
	CHECK_EQ(io_is_hole(dev, 0, 65536), 0);
	check_ranges(dev);

	tpattern(ref, sz, 20);
	CHECK_OK(io_write(dev, ref, (size_t) sz, 0));
	CHECK_OK(io_flush(dev));
	check_contents(dev, ref);
	b1 = blocks_of(backing);

	/* a ranged sync writes the ranges back to the device: here the loop
	 * device's backing file, read through a descriptor of its own */
	{
		const struct io_range rg[2] = {{3 << 20, 65536},
					       {7 << 20, 4096}};
		const struct io_range bar = {0, 4096};
		uint8_t *got = xcalloc(65536);

		tpattern(ref + (3 << 20), 65536, 21);
		tpattern(ref + (7 << 20), 4096, 22);
		CHECK_OK(io_write(dev, ref + (3 << 20), 65536, 3 << 20));
		CHECK_OK(io_write(dev, ref + (7 << 20), 4096, 7 << 20));
		CHECK_OK(io_sync_ranges(dev, rg, 2, NULL));
		fd = open(backing, O_RDONLY | O_CLOEXEC);
		CHECK(fd >= 0);
		for (int i = 0; i < 2; i++) {
			CHECK(pread(fd, got, rg[i].len, (off_t) rg[i].off) ==
			      (ssize_t) rg[i].len);
			CHECK(memcmp(got, ref + rg[i].off, rg[i].len) == 0);
		}
		close(fd);
		CHECK_OK(io_sync_ranges(dev, rg, 2, &bar));
		check_contents(dev, ref);

		/* zeroes the kernel refuses (unaligned) are written as bytes
		 * into the page cache: a barrier must make them durable too
		 * (io_sync_ranges' contract), so it flushes */
		CHECK_OK(io_write_zeroes(dev, (5 << 20) + 100, 3000));
		memset(ref + (5 << 20) + 100, 0, 3000);
		CHECK_OK(io_sync_ranges(dev, NULL, 0, &bar));
		fd = open(backing, O_RDONLY | O_CLOEXEC);
		CHECK(fd >= 0);
		CHECK(pread(fd, got, 4096, 5 << 20) == 4096);
		CHECK(memcmp(got, ref + (5 << 20), 4096) == 0);
		close(fd);
		free(got);
	}

	/* aligned discard: may deallocate, must read as zeroes */
	CHECK_OK(io_discard(dev, 1024 * 1024, 2 * 1024 * 1024));
	memset(ref + 1024 * 1024, 0, 2 * 1024 * 1024);
	CHECK_OK(io_write_zeroes(dev, 4 * 1024 * 1024, 65536));
	memset(ref + 4 * 1024 * 1024, 0, 65536);
	/* unaligned: the kernel refuses, the fallback writes zeroes */
	CHECK_OK(io_discard(dev, 5 * 1024 * 1024 + 100, 1000));
	memset(ref + 5 * 1024 * 1024 + 100, 0, 1000);
	CHECK_OK(io_write_zeroes(dev, 6 * 1024 * 1024 + 7, 513));
	memset(ref + 6 * 1024 * 1024 + 7, 0, 513);
	CHECK_OK(io_flush(dev));
	check_contents(dev, ref);
	b2 = blocks_of(backing);

	CHECK_OK(io_resize(dev, sz));
	quiet(true);
	CHECK_ERR(io_resize(dev, sz * 2), -EOPNOTSUPP);
	CHECK_ERR(io_resize(dev, sz / 2), -EOPNOTSUPP);
	quiet(false);
	CHECK_EQ(dev->size, sz);

	/* what was written through the device is what a new open sees
	 * (opened before the first is closed: the device is detaching) */
	setenv("TV_IO_NO_RANGED_SYNC", "1", 1); /* turned off: flushes */
	CHECK_OK(io_file_open(loopdev, IO_FILE_RDONLY, 0, &dev2));
	unsetenv("TV_IO_NO_RANGED_SYNC");
	CHECK(dev2->flags & IO_DEV_RDONLY);
	CHECK(!(dev2->flags & IO_DEV_RANGED_SYNC));
	io_close(dev);
	check_contents(dev2, ref);
	io_close(dev2);
	printf("blockdev: ok on %s (backing file %" PRIu64 " -> %" PRIu64
	       " blocks after discard)\n",
	       loopdev, b1, b2);
out:
	unlink(backing);
	free(ref);
}

/* ---- fault injection ---- */

enum { W_READ, W_WRITE, W_FLUSH, W_DISCARD, W_ZERO };

struct wop {
	int type;
	uint64_t off, len;
};

/* A small workload touching every operation type, on a 64 KiB device. */
static const struct wop workload[] = {
    {W_WRITE, 0, 8192},	    {W_READ, 0, 8192},	     {W_WRITE, 4096, 1000},
    {W_FLUSH, 0, 0},	    {W_DISCARD, 2048, 4096}, {W_ZERO, 10000, 3000},
    {W_READ, 0, 16384},	    {W_WRITE, 12000, 5000},  {W_FLUSH, 0, 0},
    {W_WRITE, 30000, 2000}, {W_DISCARD, 0, 512},     {W_READ, 8000, 30000},
    {W_ZERO, 60000, 5536},  {W_WRITE, 65000, 536},
};
#define WSIZE 65536u

static unsigned int wop_mask(int type)
{
	static const unsigned int m[] = {IO_OP_READ, IO_OP_WRITE, IO_OP_FLUSH,
					 IO_OP_DISCARD, IO_OP_WRITE_ZEROES};
	return m[type];
}

/*
 * Run the workload on dev, armed with cfg, checking that exactly the ops
 * cfg selects fail (with cfg.error, having done nothing) and that the rest
 * behave: reads see a reference that skips the failed ops.
 */
static void run_workload(struct io_dev *dev, const struct io_fault_cfg *cfg)
{
	uint8_t *ref = xcalloc(WSIZE), *buf = xcalloc(WSIZE);
	unsigned int mask = cfg->op_mask ? cfg->op_mask : IO_OP_ALL;
	uint64_t idx = 0, nfail = 0;

	CHECK_OK(io_write_zeroes(dev, 0, WSIZE)); /* disarmed: start clean */
	io_fault_arm(dev, cfg);
	for (size_t i = 0; i < ARRAY_SIZE(workload); i++) {
		const struct wop *w = &workload[i];
		bool fail = false;
		int r = 0;

		if (wop_mask(w->type) & mask) {
			idx++;
			fail = cfg->fail_at &&
			       (cfg->persistent ? idx >= cfg->fail_at
						: idx == cfg->fail_at);
		}
		switch (w->type) {
		case W_READ:
			memset(buf, 0xaa, w->len);
			r = io_read(dev, buf, w->len, w->off);
			if (!r)
				CHECK(memcmp(buf, ref + w->off, w->len) == 0);
			break;
		case W_WRITE:
			tpattern(buf, w->len, i + 1);
			r = io_write(dev, buf, w->len, w->off);
			if (!r)
				memcpy(ref + w->off, buf, w->len);
			break;
		case W_FLUSH:
			r = io_flush(dev);
			break;
		case W_DISCARD:
		case W_ZERO:
			r = w->type == W_ZERO
				? io_write_zeroes(dev, w->off, w->len)
				: io_discard(dev, w->off, w->len);
			if (!r)
				memset(ref + w->off, 0, w->len);
			break;
		}
		if (fail) {
			CHECK_ERR(r, cfg->error);
			nfail++;
		} else {
			CHECK_OK(r);
		}
	}
	CHECK_EQ(io_fault_count(dev), idx);
	CHECK_EQ(io_fault_failed(dev), nfail);
	io_fault_disarm(dev);
	check_contents(dev, ref);
	free(ref);
	free(buf);
}

/*
 * Per piece of [off, off + len) cut at absolute sector boundaries: 1 if
 * image holds new there, 0 if it holds old, -1 if neither (or a mix).
 */
static int piece_state(const uint8_t *image, const uint8_t *old,
		       const uint8_t *new, uint64_t s, uint64_t e)
{
	bool is_new = memcmp(image + s, new + s, e - s) == 0;
	bool is_old = memcmp(image + s, old + s, e - s) == 0;

	if (is_new && !is_old)
		return 1;
	if (is_old && !is_new)
		return 0;
	return -1;
}

/*
 * Write [off, off + len) of new over a device holding old, armed with
 * kind; check the outcome per kind.  Returns the applied pieces as bits
 * (pieces < 64).
 */
static uint64_t fault_one_write(enum io_fault_kind kind, uint64_t seed,
				uint64_t off, uint64_t len)
{
	const uint64_t sz = 16384;
	uint8_t *old = xcalloc(sz), *new = xcalloc(sz), *img;
	struct io_fault_cfg cfg = {
	    .fail_at = 1, .error = -ENOSPC, .kind = kind, .seed = seed};
	struct io_dev *mem, *dev;
	uint64_t s, e, bits = 0, npieces = 0;
	bool prefix_ended = false;
	int r;

	tpattern(old, sz, 1000);
	tpattern(new, sz, 2000);
	CHECK_OK(io_mem_create_from(old, sz, &mem));
	CHECK_OK(io_fault_wrap(mem, true, &dev));
	io_fault_arm(dev, &cfg);
	r = io_write(dev, new + off, len, off);
	CHECK_EQ(io_fault_failed(dev), 1);
	img = io_mem_data(mem);
	/* nothing outside the range moved */
	CHECK(memcmp(img, old, off) == 0);
	CHECK(memcmp(img + off + len, old + off + len, sz - off - len) == 0);
	for (s = off; s < off + len; s = e, npieces++) {
		int st;

		e = MIN(off + len, (s / IO_SECTOR + 1) * IO_SECTOR);
		st = piece_state(img, old, new, s, e);
		CHECK(st >= 0); /* whole sectors only */
		if (st)
			bits |= 1ull << npieces;
		if (kind == IO_FAULT_SHORT) {
			if (!st)
				prefix_ended = true;
			CHECK(!(st && prefix_ended));
		}
	}
	switch (kind) {
	case IO_FAULT_ERROR:
		CHECK_ERR(r, -ENOSPC);
		CHECK_EQ(bits, 0);
		break;
	case IO_FAULT_SHORT:
		CHECK_ERR(r, -ENOSPC);
		CHECK(bits != (1ull << npieces) - 1); /* strict prefix */
		break;
	case IO_FAULT_TORN:
		CHECK_OK(r); /* the device lies */
		CHECK(bits != (1ull << npieces) - 1);
		if (npieces > 1)
			CHECK(bits != 0);
		break;
	}
	io_close(dev);
	free(old);
	free(new);
	return bits;
}

struct fault_thread {
	struct io_dev *dev;
	unsigned int id;
	unsigned int nfailed;
};

static void *fault_worker(void *arg)
{
	struct fault_thread *t = arg;
	uint8_t buf[512];

	memset(buf, (int) t->id, sizeof(buf));
	for (unsigned int i = 0; i < 500; i++) {
		int r = io_write(t->dev, buf, sizeof(buf), t->id * 512);

		if (r) {
			CHECK_ERR(r, -EIO);
			t->nfailed++;
		}
	}
	return NULL;
}

static void test_fault(void)
{
	static const unsigned int masks[] = {
	    0, IO_OP_WRITE, IO_OP_READ | IO_OP_FLUSH,
	    IO_OP_DISCARD | IO_OP_WRITE_ZEROES, IO_OP_ALL};
	static const int errs[] = {-EIO, -ENOSPC};
	struct io_dev *mem, *dev;
	unsigned int runs = 0;
	uint64_t seen_short = 0, seen_torn = 0, bits;

	/* every N (and one past the end), once and persistent, per mask */
	for (size_t m = 0; m < ARRAY_SIZE(masks); m++)
		for (uint64_t n = 0; n <= ARRAY_SIZE(workload) + 1; n++)
			for (int p = 0; p < 2; p++)
				for (size_t e = 0; e < ARRAY_SIZE(errs); e++) {
					struct io_fault_cfg cfg = {
					    .fail_at = n,
					    .persistent = p,
					    .error = errs[e],
					    .kind = IO_FAULT_ERROR,
					    .op_mask = masks[m],
					};

					CHECK_OK(io_mem_create(WSIZE, &mem));
					CHECK_OK(
					    io_fault_wrap(mem, true, &dev));
					CHECK_EQ(dev->size, WSIZE);
					run_workload(dev, &cfg);
					io_close(dev);
					runs++;
				}

	/* SHORT and TORN on other op types behave as ERROR */
	CHECK_OK(io_mem_create(WSIZE, &mem));
	CHECK_OK(io_fault_wrap(mem, true, &dev));
	for (int k = IO_FAULT_SHORT; k <= IO_FAULT_TORN; k++)
		for (uint64_t n = 1; n <= ARRAY_SIZE(workload); n++) {
			struct io_fault_cfg cfg = {
			    .fail_at = n,
			    .error = -EIO,
			    .kind = (enum io_fault_kind) k,
			    .op_mask = IO_OP_ALL & ~IO_OP_WRITE,
			};

			run_workload(dev, &cfg);
		}
	/* disarmed: counts, never fails; resize passes through */
	io_fault_disarm(dev);
	CHECK_OK(io_flush(dev));
	CHECK_OK(io_resize(dev, 2 * WSIZE));
	CHECK_EQ(dev->size, 2 * WSIZE);
	CHECK_EQ(mem->size, 2 * WSIZE);
	check_ranges(dev);
	io_close(dev); /* own_lower: mem goes too (ASan would notice) */

	/* short and torn writes apply whole sectors, as promised */
	for (uint64_t seed = 0; seed < 1000; seed++) {
		fault_one_write(IO_FAULT_ERROR, seed, 4096, 4096);
		bits = fault_one_write(IO_FAULT_SHORT, seed, 4096, 4096);
		seen_short |= 1ull << __builtin_popcountll(bits);
		bits = fault_one_write(IO_FAULT_SHORT, seed, 4096 + 200, 3000);
		bits = fault_one_write(IO_FAULT_TORN, seed, 4096, 4096);
		seen_torn |= 1ull << __builtin_popcountll(bits);
		CHECK_EQ(bits,
			 fault_one_write(IO_FAULT_TORN, seed, 4096, 4096));
		fault_one_write(IO_FAULT_TORN, seed, 4096 + 200, 3000);
		CHECK_EQ(fault_one_write(IO_FAULT_TORN, seed, 1024, 512), 0);
		CHECK_EQ(fault_one_write(IO_FAULT_TORN, seed, 1030, 100), 0);
	}
	/* every prefix length 0..7 and every subset size 1..7 turned up */
	CHECK_EQ(seen_short, 0xff);
	CHECK_EQ(seen_torn, 0xfe);

	/* the counter under concurrency: 4 x 500 writes, fail from 1001 */
	{
		struct fault_thread th[4];
		pthread_t tid[4];
		struct io_fault_cfg cfg = {
		    .fail_at = 1001, .persistent = true, .error = -EIO};
		unsigned int nfailed = 0;

		CHECK_OK(io_mem_create(WSIZE, &mem));
		CHECK_OK(io_fault_wrap(mem, false, &dev));
		io_fault_arm(dev, &cfg);
		for (unsigned int i = 0; i < 4; i++) {
			th[i] = (struct fault_thread){dev, i + 1, 0};
			CHECK(pthread_create(&tid[i], NULL, fault_worker,
					     &th[i]) == 0);
		}
		for (unsigned int i = 0; i < 4; i++) {
			CHECK(pthread_join(tid[i], NULL) == 0);
			nfailed += th[i].nfailed;
		}
		CHECK_EQ(io_fault_count(dev), 2000);
		CHECK_EQ(io_fault_failed(dev), 1000);
		CHECK_EQ(nfailed, 1000);
		io_close(dev);
		CHECK_OK(io_flush(mem)); /* not owned: still open */
		io_close(mem);
	}
	printf("fault: ok (%u workload runs)\n", runs);
}

/* ---- power cut ---- */

static void check_image(struct io_dev *pc, enum io_pc_policy policy,
			uint64_t seed, const uint8_t *want)
{
	struct io_dev *img;

	CHECK_OK(io_pc_crash_image(pc, policy, seed, &img));
	CHECK_EQ(img->size, pc->size);
	CHECK(io_mem_data(img) != NULL);
	CHECK(memcmp(io_mem_data(img), want, (size_t) img->size) == 0);
	io_close(img);
}

static void test_pc_basic(void)
{
	const uint64_t sz = 65536;
	uint8_t *old = xcalloc(sz), *cur = xcalloc(sz), buf[4096];
	struct io_dev *mem, *pc;

	tpattern(old, sz, 3000);
	memcpy(cur, old, sz);
	CHECK_OK(io_mem_create_from(old, sz, &mem));
	CHECK_OK(io_pc_wrap(mem, false, &pc));
	CHECK_EQ(pc->size, sz);
	check_ranges(pc);
	CHECK_EQ(io_pc_ops(pc), 0); /* rejected requests are not ops */

	/* the cache is coherent: reads see pending writes, lower does not */
	tpattern(cur + 1024, 2048, 1);
	CHECK_OK(io_write(pc, cur + 1024, 2048, 1024));
	CHECK_OK(io_read(pc, buf, 4096, 0));
	CHECK(memcmp(buf, cur, 4096) == 0);
	CHECK(memcmp(io_mem_data(mem), old, sz) == 0);
	CHECK_OK(io_discard(pc, 1536, 512));
	memset(cur + 1536, 0, 512);
	CHECK_OK(io_write_zeroes(pc, 3000, 100));
	memset(cur + 3000, 0, 100);
	tpattern(cur + 2000, 300, 2); /* overlaps both: issue order wins */
	CHECK_OK(io_write(pc, cur + 2000, 300, 2000));
	CHECK_EQ(io_pc_pending(pc), 4);
	CHECK_EQ(io_pc_ops(pc), 4);
	CHECK(!io_pc_is_cut(pc));
	check_contents(pc, cur);
	CHECK(memcmp(io_mem_data(mem), old, sz) == 0);

	check_image(pc, IO_PC_DROP_ALL, 0, old);
	check_image(pc, IO_PC_APPLY_ALL, 0, cur);
	check_contents(pc, cur); /* building images changes nothing */
	CHECK_EQ(io_pc_pending(pc), 4);

	/* flush: durable, pending gone */
	CHECK_OK(io_flush(pc));
	CHECK_EQ(io_pc_pending(pc), 0);
	CHECK_EQ(io_pc_ops(pc), 5);
	CHECK(memcmp(io_mem_data(mem), cur, sz) == 0);
	check_image(pc, IO_PC_DROP_ALL, 0, cur);
	check_image(pc, IO_PC_RANDOM, 1, cur);

	/* resize applies at once and clips pending writes */
	tpattern(cur + sz - 4096, 4096, 3);
	CHECK_OK(io_write(pc, cur + sz - 4096, 4096, sz - 4096));
	CHECK_OK(io_resize(pc, sz - 1024));
	CHECK_EQ(pc->size, sz - 1024);
	CHECK_EQ(mem->size, sz - 1024);
	CHECK_OK(io_resize(pc, sz));
	memset(cur + sz - 1024, 0, 1024);
	check_contents(pc, cur);
	check_image(pc, IO_PC_APPLY_ALL, 0, cur);
	CHECK_OK(io_flush(pc));
	CHECK(memcmp(io_mem_data(mem), cur, sz) == 0);

	io_close(pc);
	CHECK(memcmp(io_mem_data(mem), cur, sz) == 0); /* not owned */
	io_close(mem);
	free(old);
	free(cur);
}

static void test_pc_cut(void)
{
	const uint64_t sz = 16384;
	uint8_t *d0 = xcalloc(sz), *d1 = xcalloc(sz), *d2 = xcalloc(sz);
	uint8_t buf[512];
	struct io_dev *mem, *pc;

	/* cut after a flush: both writes durable, everything else fails */
	CHECK_OK(io_mem_create(sz, &mem));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	CHECK_OK(io_write(pc, d0, 512, 0)); /* before arming: not in n */
	io_pc_set_cut_after(pc, 3);
	tpattern(d1, 1024, 1);
	CHECK_OK(io_write(pc, d1, 1024, 0)); /* 1 */
	CHECK_OK(io_read(pc, buf, 512, 0));  /* reads don't count */
	tpattern(d1 + 4096, 512, 2);
	CHECK_OK(io_write(pc, d1 + 4096, 512, 4096)); /* 2 */
	CHECK(!io_pc_is_cut(pc));
	CHECK_OK(io_flush(pc)); /* 3: completes, then the cut */
	CHECK(io_pc_is_cut(pc));
	CHECK_EQ(io_pc_ops(pc), 4);
	quiet(true);
	CHECK_ERR(io_read(pc, buf, 512, 0), -EIO);
	CHECK_ERR(io_write(pc, buf, 512, 0), -EIO);
	CHECK_ERR(io_discard(pc, 0, 512), -EIO);
	CHECK_ERR(io_write_zeroes(pc, 0, 512), -EIO);
	CHECK_ERR(io_flush(pc), -EIO);
	CHECK_ERR(io_resize(pc, sz * 2), -EIO);
	quiet(false);
	CHECK_EQ(io_pc_ops(pc), 4);
	CHECK_EQ(pc->size, sz);
	CHECK(memcmp(io_mem_data(mem), d1, sz) == 0);
	check_image(pc, IO_PC_DROP_ALL, 0, d1);
	io_close(pc);

	/* cut after a write: it is pending, the next one never happened */
	CHECK_OK(io_mem_create(sz, &mem));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	io_pc_set_cut_after(pc, 2);
	memset(d2, 0, sz);
	tpattern(d2, 2048, 5);
	CHECK_OK(io_write(pc, d2, 1024, 0));
	CHECK_OK(io_write(pc, d2 + 1024, 1024, 1024));
	CHECK(io_pc_is_cut(pc));
	quiet(true);
	CHECK_ERR(io_write(pc, d1, 1024, 8192), -EIO);
	quiet(false);
	CHECK_EQ(io_pc_pending(pc), 2);
	check_image(pc, IO_PC_DROP_ALL, 0, d0);
	check_image(pc, IO_PC_APPLY_ALL, 0, d2);
	CHECK(all_zero(io_mem_data(mem), sz)); /* nothing reached lower */
	io_close(pc);

	/* n == 0 disarms; re-arming counts from now */
	CHECK_OK(io_mem_create(sz, &mem));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	io_pc_set_cut_after(pc, 2);
	io_pc_set_cut_after(pc, 0);
	for (int i = 0; i < 5; i++)
		CHECK_OK(io_write(pc, d1, 512, 0));
	CHECK(!io_pc_is_cut(pc));
	io_pc_set_cut_after(pc, 1);
	CHECK_OK(io_flush(pc));
	CHECK(io_pc_is_cut(pc));
	io_close(pc);

	free(d0);
	free(d1);
	free(d2);
}

/*
 * IO_PC_RANDOM: every sector of the image holds the durable bytes or the
 * bytes of one pending op covering it, and all the expected kinds of
 * outcome (dropped, applied, torn, reordered) do turn up.
 */
static void test_pc_random(void)
{
	/* sector-aligned except one op alone in its sectors */
	static const struct wop ops[] = {
	    {W_WRITE, 0, 4096}, /* A */
	    {W_WRITE, 0, 2048}, /* B over A's head */
	    {W_DISCARD, 8192, 4096},
	    {W_WRITE, 16384, 8192}, /* W: alone, 16 sectors */
	    {W_ZERO, 24576, 1024},
	    {W_WRITE, 28672 + 100, 1400}, /* unaligned, alone */
	    {W_WRITE, 10240, 4096},	  /* over the discard's tail */
	};
	const uint64_t sz = 32768, nsec = sz / IO_SECTOR;
	uint8_t *old = xcalloc(sz), *data[ARRAY_SIZE(ops)];
	uint8_t *cand = xcalloc(IO_SECTOR);
	unsigned int w_all = 0, w_none = 0, w_torn = 0, a_over_b = 0;
	struct io_dev *mem, *pc, *img, *img2;
	uint64_t nseeds = 500 * tscale();

	tpattern(old, sz, 4000);
	CHECK_OK(io_mem_create_from(old, sz, &mem));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
		/* data[i]: the whole device as op i alone would leave it */
		data[i] = xcalloc(sz);
		memcpy(data[i], old, sz);
		if (ops[i].type == W_WRITE) {
			tpattern(data[i] + ops[i].off, ops[i].len, 50 + i);
			CHECK_OK(io_write(pc, data[i] + ops[i].off, ops[i].len,
					  ops[i].off));
		} else {
			memset(data[i] + ops[i].off, 0, ops[i].len);
			CHECK_OK(
			    ops[i].type == W_ZERO
				? io_write_zeroes(pc, ops[i].off, ops[i].len)
				: io_discard(pc, ops[i].off, ops[i].len));
		}
	}
	CHECK_EQ(io_pc_pending(pc), ARRAY_SIZE(ops));

	for (uint64_t seed = g_seed; seed < g_seed + nseeds; seed++) {
		const uint8_t *im;
		unsigned int w_new = 0;

		CHECK_OK(io_pc_crash_image(pc, IO_PC_RANDOM, seed, &img));
		im = io_mem_data(img);
		for (uint64_t s = 0; s < nsec; s++) {
			const uint8_t *sec = im + s * IO_SECTOR;
			bool ok =
			    memcmp(sec, old + s * IO_SECTOR, IO_SECTOR) == 0;

			for (size_t i = 0; i < ARRAY_SIZE(ops) && !ok; i++) {
				memcpy(cand, data[i] + s * IO_SECTOR,
				       IO_SECTOR);
				ok = memcmp(sec, cand, IO_SECTOR) == 0;
			}
			if (!ok)
				fprintf(stderr,
					"  seed %" PRIu64 ": sector %" PRIu64
					" is no op's\n",
					seed, s);
			CHECK(ok);
			if (s >= 32 && s < 48)
				w_new += memcmp(sec, data[3] + s * IO_SECTOR,
						IO_SECTOR) == 0;
		}
		if (w_new == 16)
			w_all++;
		else if (w_new == 0)
			w_none++;
		else
			w_torn++;
		/* A's bytes in B's range: A landed after B, or B was lost */
		if (memcmp(im, data[0], 2048) == 0)
			a_over_b++;
		/* the same seed gives the same image */
		CHECK_OK(io_pc_crash_image(pc, IO_PC_RANDOM, seed, &img2));
		CHECK(memcmp(im, io_mem_data(img2), sz) == 0);
		io_close(img2);
		io_close(img);
	}
	printf("pc random: %" PRIu64 " seeds: W applied %u, dropped %u, "
	       "torn %u; A over B %u\n",
	       nseeds, w_all, w_none, w_torn, a_over_b);
	CHECK(w_all > 0 && w_none > 0 && w_torn > 0);
	CHECK(a_over_b > 0);
	/* the wrapper is unchanged by all this */
	CHECK_EQ(io_pc_pending(pc), ARRAY_SIZE(ops));
	CHECK(memcmp(io_mem_data(mem), old, sz) == 0);

	io_close(pc);
	for (size_t i = 0; i < ARRAY_SIZE(ops); i++)
		free(data[i]);
	free(old);
	free(cand);
}

/*
 * A random workload against a reference: cur (what reads must see) and
 * durable (what lower must hold).  DROP_ALL must give durable and
 * APPLY_ALL cur, at every step.
 */
static void test_pc_model(void)
{
	const uint64_t sz = 256 * 1024;
	uint8_t *cur = xcalloc(sz), *dur = xcalloc(sz), *buf = xcalloc(sz);
	struct io_dev *mem, *pc;
	struct trng r;
	uint64_t nops = 2000 * tscale(), flushes = 0;

	trng_init(&r, g_seed);
	CHECK_OK(io_mem_create(sz, &mem));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	for (uint64_t i = 0; i < nops; i++) {
		uint64_t k = trng_below(&r, 10);
		uint64_t len = 1 + trng_below(&r, 16384);
		uint64_t off = trng_below(&r, sz - len + 1);

		if (k < 4) {
			tpattern(cur + off, len, i);
			CHECK_OK(io_write(pc, cur + off, len, off));
		} else if (k < 5) {
			memset(cur + off, 0, len);
			CHECK_OK(io_discard(pc, off, len));
		} else if (k < 6) {
			memset(cur + off, 0, len);
			CHECK_OK(io_write_zeroes(pc, off, len));
		} else if (k < 7) {
			CHECK_OK(io_flush(pc));
			memcpy(dur, cur, sz);
			flushes++;
		} else {
			CHECK_OK(io_read(pc, buf, len, off));
			CHECK(memcmp(buf, cur + off, len) == 0);
		}
		if (i % 97 == 0) {
			CHECK(memcmp(io_mem_data(mem), dur, sz) == 0);
			check_image(pc, IO_PC_DROP_ALL, i, dur);
			check_image(pc, IO_PC_APPLY_ALL, i, cur);
			check_contents(pc, cur);
		}
	}
	printf("pc model: %" PRIu64 " ops, %" PRIu64 " flushes, ok\n", nops,
	       flushes);
	io_close(pc);
	free(cur);
	free(dur);
	free(buf);
}

/* lower need not be a memory device */
static void test_pc_file(void)
{
	const uint64_t sz = 3 * 1024 * 1024 + 4096; /* > one copy chunk */
	char path[PATH_MAX];
	uint8_t *zero = xcalloc(sz), *cur = xcalloc(sz);
	struct io_dev *f, *pc;

	snprintf(path, sizeof(path), "%s/pc-file", g_dir);
	CHECK_OK(io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, sz, &f));
	CHECK_OK(io_pc_wrap(f, true, &pc));
	tpattern(cur + sz - 10000, 10000, 9);
	CHECK_OK(io_write(pc, cur + sz - 10000, 10000, sz - 10000));
	check_image(pc, IO_PC_DROP_ALL, 0, zero);
	check_image(pc, IO_PC_APPLY_ALL, 0, cur);
	CHECK_OK(io_flush(pc));
	check_image(pc, IO_PC_DROP_ALL, 0, cur);
	io_close(pc);

	CHECK_OK(io_file_open(path, 0, 0, &f));
	check_contents(f, cur);
	io_close(f);
	CHECK(unlink(path) == 0);
	free(zero);
	free(cur);
}

/* Ranged syncs (rule 7 of io-powercut.c): what becomes durable, what stays
 * pending, and that a discard after a write wins over it for good. */
static void test_pc_ranged(void)
{
	const uint64_t sz = 65536;
	uint8_t *old = xcalloc(sz), *cur = xcalloc(sz), *dur = xcalloc(sz);
	const struct io_range rg = {8192, 8192}, bar = {32768, 512};
	struct io_dev *mem, *pc, *img;
	uint64_t ops;

	tpattern(old, sz, 4000);
	memset(old + 49152, 0, 4096); /* a zero stretch for is_hole */
	memcpy(cur, old, sz);
	CHECK_OK(io_mem_create_from(old, sz, &mem));
	CHECK_OK(io_pc_wrap(mem, false, &pc));
	CHECK(pc->flags & IO_DEV_RANGED_SYNC);

	tpattern(cur, 4096, 1); /* outside the range */
	CHECK_OK(io_write(pc, cur, 4096, 0));
	CHECK_OK(io_discard(pc, 0, 1024)); /* a later discard over it */
	memset(cur, 0, 1024);
	tpattern(cur + 8192, 4096, 2); /* inside */
	CHECK_OK(io_write(pc, cur + 8192, 4096, 8192));
	tpattern(cur + 20480, 4096, 3); /* outside */
	CHECK_OK(io_write(pc, cur + 20480, 4096, 20480));
	CHECK_OK(io_write_zeroes(pc, 40960, 1024)); /* outside: durable */
	memset(cur + 40960, 0, 1024);
	tpattern(cur + 16000, 1000, 4); /* across the range's end */
	CHECK_OK(io_write(pc, cur + 16000, 1000, 16000));
	tpattern(cur + 32768, 512, 5); /* the barrier */
	CHECK_OK(io_write(pc, cur + 32768, 512, 32768));
	CHECK_OK(io_discard(pc, 45056, 1024)); /* over durable data */
	memset(cur + 45056, 0, 1024);
	CHECK_EQ(io_pc_pending(pc), 8);

	/* is_hole: zeroes with no write pending only */
	CHECK_EQ(io_is_hole(pc, 49152, 4096), 1);
	CHECK_EQ(io_is_hole(pc, 45056, 1024), 1); /* a discard over data */
	CHECK_EQ(io_is_hole(pc, 0, 1024), 0);	  /* a write pending */
	CHECK_EQ(io_is_hole(pc, 45056, 4096), 0); /* data */

	/* bad requests change nothing and are not counted */
	ops = io_pc_ops(pc);
	CHECK_EQ(io_sync_ranges(pc, &(struct io_range){sz - 10, 20}, 1, &bar),
		 -EINVAL);
	CHECK_EQ(io_sync_ranges(pc, &rg, 1, &(struct io_range){0, 0}), -EINVAL);
	CHECK_EQ(io_pc_ops(pc), ops);
	/* no barrier: a preparation, nothing becomes durable */
	CHECK_OK(io_sync_ranges(pc, &rg, 1, NULL));
	CHECK_EQ(io_pc_pending(pc), 8);
	CHECK(memcmp(io_mem_data(mem), old, sz) == 0);

	CHECK_OK(io_sync_ranges(pc, &rg, 1, &bar));
	memcpy(dur, old, sz);
	memset(dur, 0, 1024);
	memcpy(dur + 8192, cur + 8192, 4096);
	memset(dur + 40960, 0, 1024);
	memset(dur + 45056, 0, 1024);
	memcpy(dur + 16000, cur + 16000, 16384 - 16000);
	memcpy(dur + 32768, cur + 32768, 512);
	CHECK(memcmp(io_mem_data(mem), dur, sz) == 0);
	check_image(pc, IO_PC_DROP_ALL, 0, dur);
	check_image(pc, IO_PC_APPLY_ALL, 0, cur);
	check_contents(pc, cur);
	/* left: the first write less its discarded part, the third, the
	 * tail of the fourth */
	CHECK_EQ(io_pc_pending(pc), 3);
	for (uint64_t seed = 1; seed <= 20; seed++) {
		CHECK_OK(io_pc_crash_image(pc, IO_PC_RANDOM, seed, &img));
		for (uint64_t i = 0; i < sz; i++)
			CHECK(io_mem_data(img)[i] == dur[i] ||
			      io_mem_data(img)[i] == cur[i]);
		/* the discarded bytes of the first write never come back */
		for (uint64_t i = 0; i < 1024; i++)
			CHECK(io_mem_data(img)[i] == 0);
		io_close(img);
	}
	CHECK_OK(io_flush(pc));
	CHECK_EQ(io_pc_pending(pc), 0);
	CHECK(memcmp(io_mem_data(mem), cur, sz) == 0);

	/* a device without ranged syncs flushes instead (with a barrier) */
	{
		struct io_dev *m2;
		uint8_t b[512];

		CHECK_OK(io_mem_create(sz, &m2));
		CHECK(!(m2->flags & IO_DEV_RANGED_SYNC));
		memset(b, 7, sizeof(b));
		CHECK_OK(io_write(m2, b, sizeof(b), 0));
		CHECK_OK(io_sync_ranges(m2, &rg, 1, &bar));
		CHECK_OK(io_sync_ranges(m2, NULL, 0, NULL));
		io_close(m2);
	}
	io_close(pc);
	io_close(mem);
	free(old);
	free(cur);
	free(dur);
}

static void test_pc(void)
{
	test_pc_basic();
	test_pc_cut();
	test_pc_random();
	test_pc_model();
	test_pc_file();
	test_pc_ranged();
	printf("pc: ok\n");
}

/* ---- main ---- */

static void cleanup_dir(void)
{
	rmdir(g_dir);
}

/* ---- known holes of a file (io_is_hole, io-file.c) ---- */

struct hole_worker {
	struct io_dev *dev;
	unsigned int first, step, nblocks;
};

/* Each worker owns every step-th 64 KiB block: a block is a hole until
 * the worker writes it, and never after, whatever the others' queries
 * (each records the hole up to the next data) raced with. */
static void *hole_worker(void *arg)
{
	struct hole_worker *w = arg;
	uint8_t buf[512];

	memset(buf, 0x77, sizeof(buf));
	for (unsigned int b = w->first; b < w->nblocks; b += w->step) {
		uint64_t off = (uint64_t) b << 16;

		CHECK_EQ(io_is_hole(w->dev, off, 65536), 1);
		CHECK_OK(io_write(w->dev, buf, sizeof(buf), off + 4096));
		CHECK_EQ(io_is_hole(w->dev, off, 65536), 0);
		CHECK_EQ(io_is_hole(w->dev, off + 8192, 4096), 1);
	}
	return NULL;
}

/* The window between SEEK_DATA and recording the hole: a write lands in
 * it, from another thread; the hole recorded must not cover it. */
static struct io_dev *race_dev;
static uint64_t race_off;
static pthread_t race_thread;
static bool race_armed;

static void *race_write(void *arg)
{
	uint8_t b[512];

	(void) arg;
	memset(b, 0x5a, sizeof(b));
	CHECK_OK(io_write(race_dev, b, sizeof(b), race_off));
	return NULL;
}

static void race_hook(void)
{
	if (!race_armed)
		return;
	race_armed = false;
	CHECK(pthread_create(&race_thread, NULL, race_write, NULL) == 0);
	/* its pwrite lands now; its bookkeeping must wait for ours */
	usleep(20000);
}

static unsigned int seeks;

static void count_seek(void)
{
	seeks++;
}

/* The pool's pattern: blocks handed out in order, a partial write into
 * each.  The pieces left around each write must not push the hole that
 * runs to the end of the file out of the set: one SEEK_DATA in all. */

/* A pool file's ranged sync (file_sync_ranges): which filesystems get it,
 * that it keeps every byte (the barrier's too), its argument checks, the
 * fallback, and a failure through the fault device. */
static void test_file_sync_ranges_in(const char *dir)
{
	const uint64_t sz = 8ull << 20;
	char path[PATH_MAX];
	uint8_t *want = xcalloc(sz);
	struct io_range rg[3] = {{1 << 20, 65536},
				 {4096, 8192},
				 {1 << 20, 4096}}; /* unsorted, overlapping */
	const struct io_range bar = {0, 4096};
	struct statfs sfs;
	struct io_dev *dev, *fault;
	bool ranged_fs;

	snprintf(path, sizeof(path), "%s/tv-test-io-ranged.%d", dir,
		 (int) getpid());
	CHECK_OK(io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, sz, &dev));
	CHECK(statfs(dir, &sfs) == 0);
	ranged_fs = sfs.f_type == 0xef53 || sfs.f_type == 0x58465342 ||
		    sfs.f_type == 0x01021994;
	/* ext4 only with a journal and without data=writeback */
	CHECK(!(dev->flags & IO_DEV_RANGED_SYNC) || ranged_fs);
	if (sfs.f_type == 0x01021994 || sfs.f_type == 0x58465342)
		CHECK(dev->flags & IO_DEV_RANGED_SYNC);
	ranged_fs = dev->flags & IO_DEV_RANGED_SYNC;
	tpattern(want, sz, 77);
	memset(want + (2 << 20), 0, 1 << 20); /* a hole stays one */
	CHECK_OK(io_write(dev, want, 2 << 20, 0));
	CHECK_OK(io_write(dev, want + (3 << 20), sz - (3 << 20), 3 << 20));
	CHECK_OK(io_discard(dev, 5 << 20, 65536));
	memset(want + (5 << 20), 0, 65536);
	CHECK_OK(io_sync_ranges(dev, rg, 3, NULL));
	CHECK_OK(io_sync_ranges(dev, rg, 3, &bar));
	CHECK_OK(io_sync_ranges(dev, NULL, 0, &bar));
	check_contents(dev, want);
	CHECK_EQ(io_is_hole(dev, 2 << 20, 1 << 20), 1);
	CHECK_EQ(io_sync_ranges(dev, &(struct io_range){sz, 1}, 1, &bar),
		 -EINVAL);
	CHECK_EQ(io_sync_ranges(dev, rg, 1, &(struct io_range){sz - 1, 2}),
		 -EINVAL);

	/* a fault device counts it as a flush and can fail it */
	CHECK_OK(io_fault_wrap(dev, false, &fault));
	io_fault_arm(fault, &(struct io_fault_cfg){.fail_at = 1,
						   .error = -EIO,
						   .op_mask = IO_OP_FLUSH});
	CHECK_EQ(io_sync_ranges(fault, rg, 3, &bar), -EIO);
	CHECK_OK(io_sync_ranges(fault, rg, 3, &bar));
	CHECK_EQ(io_fault_count(fault), 2);
	io_close(fault);
	io_close(dev);

	/* turned off: no flag, and a barrier is a whole flush */
	setenv("TV_IO_NO_RANGED_SYNC", "1", 1);
	CHECK_OK(io_file_open(path, 0, 0, &dev));
	unsetenv("TV_IO_NO_RANGED_SYNC");
	CHECK(!(dev->flags & IO_DEV_RANGED_SYNC));
	CHECK_OK(io_sync_ranges(dev, rg, 3, &bar));
	check_contents(dev, want);
	io_close(dev);
	unlink(path);
	free(want);
	printf("file ranged sync in %s: ok (%s)\n", dir,
	       ranged_fs ? "ranged on this filesystem" : "flushes here");
}

static void test_file_sync_ranges(void)
{
	struct statfs sfs;

	test_file_sync_ranges_in(g_dir);
	/* the ranged path itself, where tmpfs is at hand */
	if (statfs("/dev/shm", &sfs) == 0 && sfs.f_type == 0x01021994 &&
	    access("/dev/shm", W_OK) == 0)
		test_file_sync_ranges_in("/dev/shm");
}

/* Preallocation (io_prealloc): a regular file gets unwritten extents that
 * read as zeroes and still count as holes; data already there stays. */
static void test_file_prealloc_in(const char *dir)
{
	const uint64_t sz = 16ull << 20;
	char path[PATH_MAX];
	uint8_t *want = xcalloc(sz);
	struct io_dev *dev, *mem;
	struct stat st0, st1;
	struct statfs sfs;
	int hole;

	snprintf(path, sizeof(path), "%s/tv-test-io-prealloc.%d", dir,
		 (int) getpid());
	CHECK_OK(io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, sz, &dev));
	tpattern(want + (5 << 20), 65536, 9);
	CHECK_OK(io_write(dev, want + (5 << 20), 65536, 5 << 20));
	CHECK(stat(path, &st0) == 0);
	CHECK_EQ(io_is_hole(dev, 4 << 20, 1 << 20), 1);
	CHECK(statfs(dir, &sfs) == 0);
	if (sfs.f_type != 0xef53 && sfs.f_type != 0x58465342) {
		/* only where it pays: ext4 and XFS */
		CHECK_EQ(io_prealloc(dev, 4 << 20, 4 << 20), -EOPNOTSUPP);
		io_close(dev);
		unlink(path);
		free(want);
		printf("file prealloc: not done on this filesystem (ok)\n");
		return;
	}
	CHECK_OK(io_prealloc(dev, 4 << 20, 4 << 20));
	CHECK(stat(path, &st1) == 0);
	CHECK((uint64_t) (st1.st_blocks - st0.st_blocks) * 512 >= (3u << 20));
	CHECK_EQ(st1.st_size, (off_t) sz); /* KEEP_SIZE */
	check_contents(dev, want);
	/* a hint: ext4 and XFS report unwritten extents as holes */
	hole = io_is_hole(dev, 4 << 20, 1 << 20);
	CHECK_EQ(io_is_hole(dev, 5 << 20, 65536), 0);
	CHECK_EQ(io_prealloc(dev, sz - 4096, 8192), -EINVAL);
	CHECK_OK(io_prealloc(dev, 0, 0));
	io_close(dev);
	CHECK_OK(io_file_open(path, IO_FILE_RDONLY, 0, &dev));
	CHECK_EQ(io_prealloc(dev, 0, 4096), -EROFS);
	io_close(dev);
	CHECK_OK(io_mem_create(1 << 20, &mem));
	CHECK_EQ(io_prealloc(mem, 0, 4096), -EOPNOTSUPP);
	io_close(mem);
	unlink(path);
	free(want);
	printf("file prealloc in %s: ok (preallocated range %s a hole)\n", dir,
	       hole ? "still counts as" : "no longer counts as");
}

static void test_file_prealloc(void)
{
	test_file_prealloc_in(g_dir);
}

/*
 * The filesystems test-io-fs.sh mounts (TEST_IO_FS: "KIND=DIR ..."):
 * whether a pool file there gets ranged syncs is what keeps a commit
 * crash-safe (docs/format.md "Ranged commits"), so each kind's answer is
 * checked, then the ranged sync and preallocation tests run there.
 *   ext4j   ext4 with its journal, data=ordered: ranged
 *   ext4nj  ext4 without a journal: not ranged (no ordering of a new
 *           block's data before its allocation)
 *   ext4wb  ext4 with its journal, data=writeback: not ranged (same)
 *   ext4wbdef  the same, data=writeback being a default mount option in
 *           the superblock (tune2fs -o journal_data_writeback), which
 *           mountinfo does not show: not ranged
 *   xfs     XFS: ranged
 */
static void test_fs_kind(const char *kind, const char *dir)
{
	char path[PATH_MAX];
	struct io_dev *dev;
	bool want = false;

	if (!strcmp(kind, "ext4j") || !strcmp(kind, "xfs"))
		want = true;
	else if (!strcmp(kind, "ext4nj") || !strcmp(kind, "ext4wb") ||
		 !strcmp(kind, "ext4wbdef"))
		want = false;
	else {
		fprintf(stderr, "TEST_IO_FS: unknown kind '%s'\n", kind);
		tfail(__FILE__, __LINE__, "TEST_IO_FS");
	}
	snprintf(path, sizeof(path), "%s/tv-test-io-kind.%d", dir,
		 (int) getpid());
	CHECK_OK(
	    io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, 1 << 20, &dev));
	CHECK_EQ(!!(dev->flags & IO_DEV_RANGED_SYNC), want);
	/* the daemon warns about this one (where the kernel tells:
	 * test-io-fs.sh sets TEST_IO_NO_JOURNAL_TASK before Linux 5.1) */
	if (!getenv("TEST_IO_NO_JOURNAL_TASK"))
		CHECK_EQ(!!(dev->flags & IO_DEV_FS_NO_JOURNAL),
			 !strcmp(kind, "ext4nj"));
	else
		CHECK(!(dev->flags & IO_DEV_FS_NO_JOURNAL));
	io_close(dev);
	unlink(path);
	printf("%s in %s: %s (ok)\n", kind, dir,
	       want ? "ranged syncs" : "full flushes");
	test_file_sync_ranges_in(dir);
	test_file_prealloc_in(dir);
}

static void test_fs_matrix(void)
{
	const char *env = getenv("TEST_IO_FS");
	char *list, *save = NULL;

	if (!env || !*env)
		return;
	list = strdup(env);
	CHECK(list);
	for (char *w = strtok_r(list, " ", &save); w;
	     w = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(w, '=');

		if (!eq) {
			fprintf(stderr, "TEST_IO_FS: '%s' is not KIND=DIR\n",
				w);
			tfail(__FILE__, __LINE__, "TEST_IO_FS");
		}
		*eq = 0;
		test_fs_kind(w, eq + 1);
	}
	free(list);
}

static void test_file_holes_in_order(void)
{
	char path[PATH_MAX];
	struct io_dev *dev;
	uint8_t buf[4096];

	snprintf(path, sizeof(path), "%s/holes-order", g_dir);
	CHECK_OK(io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, 64ull << 20,
			      &dev));
	memset(buf, 0x22, sizeof(buf));
	seeks = 0;
	io_file_seek_hook = count_seek;
	for (uint64_t b = 0; b < 512; b++) {
		CHECK_EQ(io_is_hole(dev, b << 16, 65536), 1);
		CHECK_OK(io_write(dev, buf, sizeof(buf),
				  (b << 16) + ((b * 5) % 16) * 4096));
	}
	io_file_seek_hook = NULL;
	for (uint64_t b = 0; b < 512; b++) {
		uint64_t at = (b << 16) + ((b * 5) % 16) * 4096;

		CHECK_EQ(io_is_hole(dev, b << 16, 65536), 0);
		CHECK_EQ(io_is_hole(dev, at, 4096), 0);
		if (at > (b << 16))
			CHECK_EQ(io_is_hole(dev, b << 16, at - (b << 16)), 1);
	}
	printf("file holes: 512 blocks provisioned in order, %u SEEK_DATA\n",
	       seeks);
	CHECK(seeks <= 2);
	io_close(dev);
	unlink(path);
}

static void test_file_holes(void)
{
	const uint64_t sz = 64ull << 20;
	char path[PATH_MAX];
	struct io_dev *dev;
	struct hole_worker w[4];
	pthread_t t[4];
	uint8_t buf[4096];

	snprintf(path, sizeof(path), "%s/holes", g_dir);
	CHECK_OK(io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, sz, &dev));
	memset(buf, 0x11, sizeof(buf));
	/* fresh: a hole everywhere, answered from memory after the first */
	CHECK_EQ(io_is_hole(dev, 0, sz), 1);
	CHECK_EQ(io_is_hole(dev, 1 << 20, 4096), 1);
	/* a write in the middle of a known hole splits it */
	CHECK_OK(io_write(dev, buf, 4096, 1 << 20));
	CHECK_EQ(io_is_hole(dev, 1 << 20, 4096), 0);
	CHECK_EQ(io_is_hole(dev, (1 << 20) + 2048, 512), 0);
	CHECK_EQ(io_is_hole(dev, (1 << 20) - 4096, 8192), 0);
	CHECK_EQ(io_is_hole(dev, (1 << 20) - 4096, 4096), 1);
	CHECK_EQ(io_is_hole(dev, (1 << 20) + 4096, 4096), 1);
	CHECK_EQ(io_is_hole(dev, 0, sz), 0);
	/* more splits than the set holds: knowledge is dropped, never
	 * invented */
	for (unsigned int i = 0; i < 200; i++)
		CHECK_OK(io_write(dev, buf, 512, (2ull << 20) + i * 8192));
	for (unsigned int i = 0; i < 200; i++) {
		uint64_t off = (2ull << 20) + i * 8192;
		CHECK_EQ(io_is_hole(dev, off, 512), 0);
		CHECK_EQ(io_is_hole(dev, off + 4096, 4096), 1);
	}
	/* zeroes written (the fallback) and punched ranges */
	CHECK_OK(io_write(dev, buf, 4096, 8ull << 20));
	CHECK_OK(io_discard(dev, 8ull << 20, 65536));
	CHECK_EQ(io_is_hole(dev, 8ull << 20, 65536), 1);
	CHECK_OK(io_write(dev, buf, 4096, 8ull << 20));
	CHECK_EQ(io_is_hole(dev, 8ull << 20, 65536), 0);
	/* a write landing between a SEEK_DATA and the hole it records */
	race_dev = dev;
	race_off = (12ull << 20) + 65536;
	for (unsigned int i = 0; i < 256; i++) /* not a known hole now */
		CHECK_OK(io_write(dev, buf, 4096, (12ull << 20) + i * 4096));
	CHECK_OK(io_discard(dev, 12ull << 20, 1ull << 20));
	race_armed = true;
	io_file_seek_hook = race_hook;
	CHECK_EQ(io_is_hole(dev, 12ull << 20, 4096), 1);
	CHECK(!race_armed); /* the SEEK_DATA ran, and the write with it */
	pthread_join(race_thread, NULL);
	io_file_seek_hook = NULL;
	CHECK_EQ(io_is_hole(dev, race_off, 512), 0);
	CHECK_EQ(io_is_hole(dev, 12ull << 20, 65536), 1);
	/* writers racing with each other's queries */
	for (unsigned int i = 0; i < 4; i++) {
		w[i] = (struct hole_worker){dev, 256 + i, 4, 1024};
		CHECK(pthread_create(&t[i], NULL, hole_worker, &w[i]) == 0);
	}
	for (unsigned int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (unsigned int b = 256; b < 1024; b++)
		CHECK_EQ(io_is_hole(dev, (uint64_t) b << 16, 65536), 0);
	io_close(dev);
	unlink(path);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	g_seed = tseed("test-io");
	log_set_sink(log_capture, NULL);

	if (!mkdtemp(g_dir)) {
		printf("test-io: skipped: mkdtemp: %s\n", strerror(errno));
		return TEST_SKIP;
	}
	atexit(cleanup_dir);

	test_mem();
	test_file();
	test_file_holes();
	test_file_holes_in_order();
	test_file_sync_ranges();
	test_file_prealloc();
	test_blockdev();
	test_fault();
	test_pc();
	test_fs_matrix();
	printf("test-io: all ok\n");
	return 0;
}
