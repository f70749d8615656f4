/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine out-of-space test.  A small file pool (8 MiB of 64 KiB blocks):
 *
 *   1. fill a volume until a write returns -ENOSPC; the failed write maps
 *      nothing; overwrites (whole, partial, write-zeroes, partial discard)
 *      of blocks the volume owns keep working, as do writes to other
 *      volumes' owned blocks; a small create may work or fail with
 *      -ENOSPC, but the pool stays clean;
 *   2. snapshot the full volume: a write to a now shared block needs a new
 *      block and gets -ENOSPC (nothing changes in either volume), in-place
 *      writes elsewhere still work;
 *   3. make room three ways, each time without reopening, and each time
 *      the blocked writes succeed again until the pool is full again:
 *      (a) discard a range of another volume and commit,
 *      (b) delete another volume and wait for the background reclaim,
 *      (c) grow the pool with tv_pool_resize.
 *
 * After every phase: the full check is clean, the pool is read-write with
 * no reason, and every volume reads exactly as the in-memory model.  At the
 * end the pool is reopened and verified again.  Seeded (the patterns and
 * the partial-write offsets): TV_SEED replays.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "tcheck.h"
#include "tquiet.h"
#include "thinvol.h"
#include "util/checked.h"
#include "util/log.h"

#define BS    (64u << 10)
#define POOL0 (8ull << 20)
#define POOL1 (16ull << 20)
#ifndef MAPPED_SCALE
#define MAPPED_SCALE 1 /* tv_vol_info.mapped is in bytes */
#endif

enum { VA, VS, VB, VC, VD, NV };

struct mvol {
	bool live;
	uint64_t id;
	uint64_t size;
	uint8_t *data;
	const char *name;
};

static struct mvol vols[NV];
static struct trng rng;
static struct tv_pool *pool;
static uint64_t nwrites, nenospc;

static void fill(uint8_t *buf, size_t len)
{
	for (size_t k = 0; k < len; k += 8) {
		uint64_t x = trng_next(&rng) | 1; /* never a zero word */
		memcpy(buf + k, &x, 8);
	}
}

static void state_rw(const char *phase)
{
	struct tv_pool_info pi;

	CHECK_OK(tv_pool_info(pool, &pi));
	if (pi.state != TV_POOL_RW || pi.reason[0]) {
		fprintf(stderr, "%s: pool state %d reason '%s'\n", phase,
			(int) pi.state, pi.reason);
		CHECK(0);
	}
}

static void clean(const char *phase)
{
	struct tv_check_report rep;

	CHECK_OK(tv_pool_check(pool, stderr, &rep));
	if (!rep.clean)
		fprintf(stderr,
			"%s: check: %llu errors %llu leaks %llu "
			"missing %llu counter errors\n",
			phase, (unsigned long long) rep.errors,
			(unsigned long long) rep.leaks,
			(unsigned long long) rep.missing,
			(unsigned long long) rep.counter_errors);
	CHECK(rep.clean);
	state_rw(phase);
}

static void verify(const char *phase)
{
	for (int i = 0; i < NV; i++) {
		struct tv_vol_info vi;
		uint8_t *buf;

		if (!vols[i].live)
			continue;
		CHECK_OK(tv_vol_info(pool, vols[i].id, &vi));
		CHECK_EQ(vi.size, vols[i].size);
		buf = malloc(vols[i].size);
		CHECK(buf);
		CHECK_OK(tv_vol_read(pool, vols[i].id, buf, vols[i].size, 0));
		if (memcmp(buf, vols[i].data, vols[i].size)) {
			uint64_t k = 0;
			while (buf[k] == vols[i].data[k])
				k++;
			fprintf(stderr,
				"%s: volume %s differs from the model "
				"at byte %llu (block %llu)\n",
				phase, vols[i].name, (unsigned long long) k,
				(unsigned long long) (k / BS));
			CHECK(0);
		}
		free(buf);
	}
}

static void phase_done(const char *phase)
{
	verify(phase);
	clean(phase);
	{
		struct tv_pool_info pi;
		CHECK_OK(tv_pool_info(pool, &pi));
		printf("  %-34s size %3llu MiB used %4llu KiB free %4llu KiB "
		       "reclaimable %llu KiB\n",
		       phase, (unsigned long long) (pi.size >> 20),
		       (unsigned long long) (pi.used >> 10),
		       (unsigned long long) (pi.free >> 10),
		       (unsigned long long) (pi.reclaimable >> 10));
		fflush(stdout);
	}
}

static void new_vol(int i, const char *name, uint64_t size)
{
	vols[i].name = name;
	vols[i].size = size;
	vols[i].data = calloc(1, size);
	CHECK(vols[i].data);
	CHECK_OK(tv_vol_create(pool, name, size, NULL, 0, &vols[i].id));
	vols[i].live = true;
}

/* Write [off, off + len) of volume i with fresh random bytes; on success
 * the model follows; on failure nothing may have changed (single-block
 * writes only). */
static int wr(int i, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len);
	int r;

	CHECK(buf);
	CHECK(off / BS == (off + len - 1) / BS);
	fill(buf, len);
	r = tv_vol_write(pool, vols[i].id, buf, len, off, 0);
	if (r == 0) {
		memcpy(vols[i].data + off, buf, len);
		nwrites++;
	} else {
		nenospc++;
	}
	free(buf);
	return r;
}

static uint64_t mapped(int i)
{
	struct tv_vol_info vi;

	CHECK_OK(tv_vol_info(pool, vols[i].id, &vi));
	return vi.mapped * MAPPED_SCALE;
}

/* Write whole blocks of A from *next on until -ENOSPC (or the end);
 * returns how many succeeded.  Each block of A either is unmapped or
 * shared with S at this point, so every write needs a new block. */
static uint64_t write_until_full(uint64_t *next, const char *phase)
{
	uint64_t n = 0, nblocks = vols[VA].size / BS;
	int r = 0;

	while (*next < nblocks) {
		r = wr(VA, *next * BS, BS);
		if (r < 0)
			break;
		(*next)++;
		n++;
	}
	if (r < 0 && r != -ENOSPC) {
		fprintf(stderr, "%s: write of block %llu: %s (%s)\n", phase,
			(unsigned long long) *next, strerror(-r),
			tv_last_error());
		CHECK(0);
	}
	printf("  %-34s %llu blocks written, then %s\n", phase,
	       (unsigned long long) n, r ? "-ENOSPC" : "the volume's end");
	fflush(stdout);
	return n;
}

int main(void)
{
	char dir[] = "/tmp/tv-nospace-XXXXXX", path[256];
	struct tv_pool_create_opts co = {
	    .size = POOL0, .block_size = BS, .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 20};
	uint64_t seed = tseed("test-engine-nospace");
	uint64_t filled, nextA, shared_upto, n;
	struct tv_pool_info pi, pi2;
	int r;

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	trng_init(&rng, seed);
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, &oo, &pool));

	/* ---- phase 1: fill ---- */
	new_vol(VA, "a", 4 * POOL1); /* bigger than the pool ever gets */
	new_vol(VB, "b", 16 * BS);
	new_vol(VC, "c", 16 * BS);
	for (uint64_t b = 0; b < 16; b++) {
		CHECK_OK(wr(VB, b * BS, BS));
		CHECK_OK(wr(VC, b * BS, BS));
	}
	CHECK_OK(tv_pool_flush(pool));
	nextA = 0;
	filled = write_until_full(&nextA, "fill A");
	CHECK(filled > 8);
	CHECK(nextA < vols[VA].size / BS);
	/* the failed write mapped nothing, and keeps failing */
	CHECK_EQ(mapped(VA), filled * BS);
	CHECK_ERR(wr(VA, nextA * BS, BS), -ENOSPC);
	CHECK_ERR(wr(VA, nextA * BS + 4096, 512), -ENOSPC);
	CHECK_EQ(mapped(VA), filled * BS);
	state_rw("after -ENOSPC");
	/* overwrites of owned blocks keep working: whole, partial, zeroes */
	for (uint64_t b = 0; b < filled; b++)
		CHECK_OK(wr(VA, b * BS, BS));
	for (int k = 0; k < 64; k++) {
		uint64_t b = trng_below(&rng, filled);
		uint64_t s = trng_below(&rng, BS / 512);
		uint64_t cnt = 1 + trng_below(&rng, BS / 512 - s);
		CHECK_OK(wr(VA, b * BS + s * 512, cnt * 512));
	}
	for (int k = 0; k < 16; k++) {
		uint64_t b = trng_below(&rng, filled);
		uint64_t s = trng_below(&rng, BS / 512 - 1);
		uint64_t cnt = 1 + trng_below(&rng, BS / 512 - 1 - s);
		if (k & 1)
			CHECK_OK(tv_vol_write_zeroes(
			    pool, vols[VA].id, cnt * 512, b * BS + s * 512));
		else
			CHECK_OK(tv_vol_discard(pool, vols[VA].id, cnt * 512,
						b * BS + s * 512));
		memset(vols[VA].data + b * BS + s * 512, 0, cnt * 512);
	}
	for (uint64_t b = 0; b < 16; b++)
		CHECK_OK(wr(VB, b * BS + 512 * trng_below(&rng, 128), 512));
	CHECK_EQ(mapped(VA), filled * BS);
	CHECK_OK(tv_pool_flush(pool));
	phase_done("phase 1: full, overwrites work");

	/* metadata operations on the full pool: may fail, must not corrupt */
	r = tv_vol_create(pool, "d", 1 << 20, NULL, 0, &vols[VD].id);
	printf("  create on a full pool: %s\n", r ? strerror(-r) : "ok");
	CHECK(r == 0 || r == -ENOSPC);
	if (r == 0) {
		vols[VD].live = true;
		vols[VD].name = "d";
		vols[VD].size = 1 << 20;
		vols[VD].data = calloc(1, 1 << 20);
		CHECK_ERR(wr(VD, 0, 512), -ENOSPC);
		r = tv_vol_rename(pool, vols[VD].id, "d2");
		CHECK(r == 0 || r == -ENOSPC);
		if (r == 0)
			vols[VD].name = "d2";
	}
	phase_done("phase 1: metadata ops");

	/* ---- phase 2: snapshot; shared blocks need new ones ---- */
	r = tv_vol_snapshot(pool, vols[VA].id, "s", 0, NULL, 0, &vols[VS].id);
	printf("  snapshot on a full pool: %s\n", r ? strerror(-r) : "ok");
	CHECK(r == 0 || r == -ENOSPC);
	shared_upto = 0;
	if (r == 0) {
		vols[VS].live = true;
		vols[VS].name = "s";
		vols[VS].size = vols[VA].size;
		vols[VS].data = malloc(vols[VS].size);
		memcpy(vols[VS].data, vols[VA].data, vols[VS].size);
		shared_upto = filled;
		CHECK_ERR(wr(VA, 0, BS), -ENOSPC);
		CHECK_ERR(wr(VA, 3 * 512, 512), -ENOSPC);
		CHECK_ERR(wr(VA, (filled - 1) * BS, 1024), -ENOSPC);
		/* in-place writes elsewhere still work */
		for (uint64_t b = 0; b < 16; b++)
			CHECK_OK(wr(VB, b * BS, BS));
		CHECK_EQ(mapped(VA), filled * BS);
		CHECK_EQ(mapped(VS), filled * BS);
	}
	CHECK_OK(tv_pool_flush(pool));
	phase_done("phase 2: snapshot, shared writes fail");
	/* from here on, A is written from block 0 again if it is shared
	 * (each write copies), else from where the fill stopped */
	if (shared_upto)
		nextA = 0;

	/* ---- phase 3a: discard half of B, commit, write again ---- */
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK_OK(tv_vol_discard(pool, vols[VB].id, 8 * BS, 4 * BS));
	memset(vols[VB].data + 4 * BS, 0, 8 * BS);
	CHECK_EQ(mapped(VB), 8 * BS);
	CHECK_OK(tv_pool_flush(pool));
	CHECK_OK(tv_pool_info(pool, &pi2));
	printf("  discard of 8 blocks: free %llu -> %llu KiB\n",
	       (unsigned long long) (pi.free >> 10),
	       (unsigned long long) (pi2.free >> 10));
	n = write_until_full(&nextA, "phase 3a: after discard");
	CHECK(n >= 1);
	phase_done("phase 3a: discard made room");

	/* ---- phase 3b: delete C, wait for the reclaim ---- */
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK_OK(tv_vol_delete(pool, vols[VC].id));
	vols[VC].live = false;
	for (int t = 0;; t++) {
		CHECK_OK(tv_pool_info(pool, &pi2));
		if (!pi2.reclaimable && pi2.free >= pi.free + 8 * BS)
			break;
		if (t == 1000) {
			fprintf(stderr,
				"delete: space never came back: free "
				"%llu -> %llu, reclaimable %llu\n",
				(unsigned long long) pi.free,
				(unsigned long long) pi2.free,
				(unsigned long long) pi2.reclaimable);
			CHECK(0);
		}
		usleep(10000);
	}
	printf("  delete of 16 blocks: free %llu -> %llu KiB\n",
	       (unsigned long long) (pi.free >> 10),
	       (unsigned long long) (pi2.free >> 10));
	n = write_until_full(&nextA, "phase 3b: after delete");
	CHECK(n >= 8);
	phase_done("phase 3b: delete made room");

	/* ---- phase 3c: grow the pool ---- */
	CHECK_OK(tv_pool_resize(pool, POOL1));
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK_EQ(pi.size >= POOL1 - 4 * BS, 1);
	n = write_until_full(&nextA, "phase 3c: after resize");
	CHECK(n >= 64);
	/* owned blocks still overwrite in place on the full pool */
	CHECK_OK(wr(VA, 0, BS));
	CHECK_OK(wr(VA, (nextA - 1) * BS + 512, 512));
	CHECK_ERR(wr(VA, nextA * BS, 512), -ENOSPC);
	phase_done("phase 3c: resize made room");

	/* everything survives a reopen */
	CHECK_OK(tv_pool_close(pool));
	CHECK_OK(tv_pool_open(path, &oo, &pool));
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK_EQ(pi.size >= POOL1 - 4 * BS, 1);
	phase_done("reopened");
	CHECK_OK(tv_pool_close(pool));

	for (int i = 0; i < NV; i++)
		free(vols[i].data);
	unlink(path);
	rmdir(dir);
	printf("test-engine-nospace: ok (%llu writes done, %llu refused "
	       "with -ENOSPC)\n",
	       (unsigned long long) nwrites, (unsigned long long) nenospc);
	return 0;
}
