/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What `pool info` calls reclaimable, and a trim of a volume's first leaf
 * (second review of issue 14, findings 7 and 6).  Pools of 4 KiB blocks
 * in memory, with no background commits: the committer's rounds are run
 * by hand (committer_round()).
 *
 *   3. a trim of exactly a volume's first leaf (finding 6: the checker
 *      called the pool damaged);
 *   4. reclaimable: deleted snapshots that share everything add nothing;
 *      what a snapshot wrote, a volume never snapshotted, a shrink's cut
 *      are counted exactly; never more than the pool holds; the data
 *      freed is at least the figure as reclaim runs.
 *
 * After every phase: the pool is read-write with no reason, the check is
 * clean, no commit took more room than the space map estimated (sm.c,
 * rule 6), and the volumes read as written.  TV_PHASES=4 runs phase 4
 * only.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/io.h"
#include "pdata/sm.h"
#include "tcheck.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

#define BS 4096u
#define MIB (1ull << 20)

static struct tv_pool *pool;
static struct io_dev *mem;
static uint8_t *buf, *got;

static void quiet(enum log_level lvl, const char *msg, void *ctx)
{
	(void)lvl;
	(void)msg;
	(void)ctx;
}

/* What block vb of volume id holds: a pattern of both, never zero. */
static void pattern(uint8_t *out, uint64_t id, uint64_t vb)
{
	for (unsigned int i = 0; i < BS / 8; i++) {
		uint64_t w = (id * 0x9E3779B97F4A7C15ull) ^ (vb << 20) ^ i ^
			     0x5a5a000000000001ull;

		memcpy(out + 8 * i, &w, 8);
	}
}

static void open_pool(uint64_t size)
{
	struct tv_pool_create_opts co = { .block_size = BS, .blob_size = 16 };
	struct tv_pool_open_opts oo = { .commit_interval_ms = 3600000 };

	CHECK_OK(io_mem_create(size, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &pool));
}

static void close_pool(void)
{
	CHECK_OK(tv_pool_close(pool));
	io_close(mem);
}

/* Write blocks [vb, vb + n) of id with their patterns (n <= 256); -ENOSPC
 * is returned, anything else fails. */
static int wr(uint64_t id, uint64_t vb, uint64_t n)
{
	int r;

	for (uint64_t i = 0; i < n; i++)
		pattern(buf + i * BS, id, vb + i);
	r = tv_vol_write(pool, id, buf, n * BS, vb * BS, 0);
	if (r && r != -ENOSPC) {
		fprintf(stderr, "write #%llu %llu+%llu: %s\n",
			(unsigned long long)id, (unsigned long long)vb,
			(unsigned long long)n, tv_last_error());
		CHECK(0);
	}
	return r;
}

/* Block vb of id must hold the pattern of (pid, pvb), or zeroes (pid 0). */
static void expect_block(uint64_t id, uint64_t vb, uint64_t pid, uint64_t pvb)
{
	uint8_t want[BS];

	CHECK_OK(tv_vol_read(pool, id, got, BS, vb * BS));
	if (pid)
		pattern(want, pid, pvb);
	else
		memset(want, 0, BS);
	if (memcmp(got, want, BS)) {
		fprintf(stderr, "volume #%llu block %llu: wrong contents\n",
			(unsigned long long)id, (unsigned long long)vb);
		CHECK(0);
	}
}

static struct tv_pool_info info(void)
{
	struct tv_pool_info pi;

	CHECK_OK(tv_pool_info(pool, &pi));
	return pi;
}

/* Bytes of data blocks in use (not metadata). */
static uint64_t data_bytes(struct tv_pool_info pi)
{
	return pi.used - pi.metadata;
}

static uint64_t deferred_entries(void)
{
	uint64_t n = 0;

	pthread_mutex_lock(&pool->meta_lock);
	CHECK_OK(btree_count(&pool->deferred, tm_root(pool->tm, SLOT_DEFERRED),
			     &n));
	pthread_mutex_unlock(&pool->meta_lock);
	return n;
}

/* A committer round (pool.c, rule 1): reclaim, then commit. */
static void committer_round(void)
{
	int r = 0;

	pthread_mutex_lock(&pool->meta_lock);
	if (tm_root(pool->tm, SLOT_DEFERRED)->blocknr)
		r = pool_reclaim_locked(pool, 16384);
	if (r == 0 && pool->dirty)
		r = pool_commit_bg_locked(pool);
	pthread_mutex_unlock(&pool->meta_lock);
	CHECK_OK(r);
}

/* The pool is read-write, checks clean, and no commit took more room than
 * the space map estimated. */
static void sane(const char *phase)
{
	struct tv_check_report rep;
	struct tv_pool_info pi = info();
	struct sm_stats st;

	if (pi.state != TV_POOL_RW || pi.reason[0]) {
		fprintf(stderr, "%s: pool state %s, reason '%s'\n", phase,
			tv_pool_state_name(pi.state), pi.reason);
		CHECK(0);
	}
	CHECK_OK(tv_pool_check(pool, stderr, &rep));
	if (!rep.clean)
		fprintf(stderr, "%s: the check is not clean\n", phase);
	CHECK(rep.clean);
	pthread_mutex_lock(&pool->meta_lock);
	sm_get_stats(tm_sm(pool->tm), &st);
	pthread_mutex_unlock(&pool->meta_lock);
	CHECK_EQ(st.need_exceeded, 0);
	/* rule 6 of volume.c: never more than the data the pool holds */
	CHECK(pi.reclaimable <= pi.used - pi.metadata);
	printf("  %-44s used %4llu MiB free %6llu KiB reclaimable %6llu KiB"
	       "\n",
	       phase, (unsigned long long)(pi.used >> 20),
	       (unsigned long long)(pi.free >> 10),
	       (unsigned long long)(pi.reclaimable >> 10));
	fflush(stdout);
}

/* ---- 3: a trim of exactly the first leaf ---- */

static void phase_first_leaf(void)
{
	uint64_t v, cut = 0, k = 0;
	struct btree_cursor c;
	struct disk_volume d;

	open_pool(64 * MIB);
	CHECK_OK(tv_vol_create(pool, "v", 256 * BS, NULL, 0, &v));
	CHECK_OK(wr(v, 0, 256));
	CHECK_OK(tv_pool_flush(pool));
	/* the second leaf's first key */
	pthread_mutex_lock(&pool->meta_lock);
	CHECK_OK(vol_lookup_locked(pool, v, &d));
	{
		struct tm_ref root;

		ref_from_disk(&root, &d.map_root);
		CHECK_OK(btree_cursor_seek(&pool->map, &root, NULL, &c));
		for (k = 0; c.valid; k++) {
			if (k && c.path[c.depth - 1].index == 0) {
				cut = get_be64(btree_cursor_key(&c));
				break;
			}
			CHECK_OK(btree_cursor_next(&c));
		}
		btree_cursor_close(&c);
	}
	pthread_mutex_unlock(&pool->meta_lock);
	CHECK(cut > 0 && cut < 256);
	CHECK_OK(tv_vol_discard(pool, v, cut * BS, 0));
	CHECK_OK(tv_pool_flush(pool));
	for (uint64_t vb = 0; vb < 256; vb++)
		expect_block(v, vb, vb < cut ? 0 : v, vb);
	sane("3: first leaf trimmed");
	close_pool();
}

/* ---- 4: reclaimable ---- */

static void phase_reclaimable(void)
{
	uint64_t v, s[8], w, t, u, data0, rec;
	struct tv_pool_info pi;
	char name[16];

	open_pool(64 * MIB);
	CHECK_OK(tv_vol_create(pool, "v", 8192 * BS, NULL, 0, &v));
	for (uint64_t vb = 0; vb < 8192; vb += 256)
		CHECK_OK(wr(v, vb, 256));
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		CHECK_OK(tv_vol_snapshot(pool, v, name, 0, NULL, 0, &s[i]));
	}
	/* eight snapshots that share everything: nothing to come back (the
	 * figure was 8 x 32 MiB on a 64 MiB pool) */
	for (int i = 0; i < 8; i++)
		CHECK_OK(tv_vol_delete(pool, s[i]));
	CHECK_EQ(info().reclaimable, 0);
	sane("4: 8 snapshots deleted");
	while (deferred_entries())
		committer_round();
	CHECK_EQ(info().reclaimable, 0);

	/* a snapshot that wrote 300 blocks of its own: those */
	CHECK_OK(tv_vol_snapshot(pool, v, "w", 0, NULL, 0, &w));
	CHECK_OK(wr(w, 1000, 256));
	CHECK_OK(wr(w, 5000, 44));
	CHECK_OK(tv_vol_delete(pool, w));
	CHECK_EQ(info().reclaimable, 300 * BS);
	sane("4: a snapshot with 300 blocks of its own deleted");
	data0 = data_bytes(info());
	while (deferred_entries())
		committer_round();
	pi = info();
	CHECK_EQ(pi.reclaimable, 0);
	CHECK(data_bytes(pi) + 300 * BS <= data0);

	/* a shrink of v (snapshotted once: its cut is counted by walking
	 * it; nothing shares it now) */
	CHECK_OK(tv_vol_resize(pool, v, 4096 * BS + 512));
	CHECK_EQ(info().reclaimable, (8192 - 4097) * BS);
	/* a volume never snapshotted: its mapped blocks */
	CHECK_OK(tv_vol_create(pool, "t", 1000 * BS, NULL, 0, &t));
	CHECK_OK(wr(t, 0, 200));
	CHECK_OK(wr(t, 700, 100));
	CHECK_OK(tv_vol_delete(pool, t));
	CHECK_EQ(info().reclaimable, (8192 - 4097 + 300) * BS);
	/* a shrink of a volume never snapshotted: what it cut */
	CHECK_OK(tv_vol_create(pool, "u", 1000 * BS, NULL, 0, &u));
	CHECK_OK(wr(u, 0, 250));
	CHECK_OK(tv_vol_resize(pool, u, 100 * BS));
	rec = info().reclaimable;
	CHECK_EQ(rec, (8192 - 4097 + 300 + 150) * BS);
	sane("4: shrinks and a delete");
	data0 = data_bytes(info());
	while (deferred_entries())
		committer_round();
	pi = info();
	CHECK_EQ(pi.reclaimable, 0);
	CHECK(data_bytes(pi) + rec <= data0);
	sane("4: reclaimed");
	for (uint64_t vb = 0; vb < 4097; vb += 31)
		expect_block(v, vb, v, vb);
	for (uint64_t vb = 0; vb < 100; vb++)
		expect_block(u, vb, u, vb);
	close_pool();
}

static bool want_phase(char c)
{
	const char *e = getenv("TV_PHASES");

	return !e || strchr(e, c);
}

int main(void)
{
	if (!getenv("V"))
		log_set_sink(quiet, NULL);
	buf = malloc(256 * BS);
	got = malloc(256 * BS);
	CHECK(buf && got);
	/* TV_PHASES (e.g. "14"): only those */
	if (want_phase('3'))
		phase_first_leaf();
	if (want_phase('4'))
		phase_reclaimable();
	free(buf);
	free(got);
	printf("test-engine-reclaim: ok\n");
	return 0;
}
