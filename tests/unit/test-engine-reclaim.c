/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reclaim on a full pool, and what `pool info` calls reclaimable (second
 * review of issue 14, findings 4, 6 and 7).  Pools of 4 KiB blocks in
 * memory, with no background commits: the committer's rounds are run by
 * hand (committer_round()).
 *
 *   1. wedge: an origin of 16000 blocks, 1500 writable snapshots of it,
 *      the pool filled; then each snapshot shrunk to one block, one batch
 *      each.  A snapshot's cut is shared with the origin and frees
 *      nothing: such shrinks must leave the reserve (they used to take
 *      it, and reclaim then found no room for the first cut and never
 *      reached anything after it); each succeeds or fails with -ENOSPC.
 *      Then a volume that shares nothing is deleted: its space comes
 *      back within a few rounds, and the refused shrinks then pass;
 *   2. a big tree reclaimed on a full pool a piece at a time (its roots
 *      split down to pieces that fit whole): DEFERRED stays small, the
 *      checker is clean every few rounds, the space comes back;
 *   3. a trim of exactly a volume's first leaf (finding 6: the checker
 *      called the pool damaged);
 *   4. reclaimable: deleted snapshots that share everything add nothing;
 *      what a snapshot wrote, a volume never snapshotted, a shrink's cut
 *      are counted exactly; never more than the pool holds; the free
 *      space grows by at least the figure as reclaim runs;
 *   5. a seeded storm of every operation on a small, mostly full pool:
 *      reclaim then empties DEFERRED and, once everything is deleted,
 *      only metadata is left (TV_SEED replays).
 *
 * After every phase: the pool is read-write with no reason, the check is
 * clean, no commit took more room than the space map estimated (sm.c,
 * rule 6), and the volumes read as written.  TV_PHASES=14 runs phases 1
 * and 4 only.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/io.h"
#include "pdata/sm.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

#define BS  4096u
#define MIB (1ull << 20)

static struct tv_pool *pool;
static struct io_dev *mem;
static uint8_t *buf, *got;

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
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};

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
			(unsigned long long) id, (unsigned long long) vb,
			(unsigned long long) n, tv_last_error());
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
			(unsigned long long) id, (unsigned long long) vb);
		CHECK(0);
	}
}

/* Fill a new volume until -ENOSPC; returns the blocks written. */
static uint64_t fill(const char *name, uint64_t *id)
{
	uint64_t vb = 0;

	CHECK_OK(tv_vol_create(pool, name, 1ull << 40, NULL, 0, id));
	while (wr(*id, vb, 256) == 0)
		vb += 256;
	while (wr(*id, vb, 1) == 0)
		vb++;
	/* a failed multi-block write may have mapped a part */
	return vb;
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
	CHECK_OK(
	    btree_count(&pool->deferred, tm_root(pool->tm, SLOT_DEFERRED), &n));
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
	       phase, (unsigned long long) (pi.used >> 20),
	       (unsigned long long) (pi.free >> 10),
	       (unsigned long long) (pi.reclaimable >> 10));
	fflush(stdout);
}

/* ---- 1: snapshot shrinks on a full pool ---- */

#define W_POOL (160 * MIB)
#define W_NB   16000
#define W_NS   1500

static void phase_wedge(void)
{
	static uint64_t snaps[W_NS];
	static bool shrunk[W_NS];
	uint64_t o, f, nf, ok = 0, later = 0, free0;
	char name[16];
	int r;

	open_pool(W_POOL);
	CHECK_OK(tv_vol_create(pool, "o", W_NB * BS, NULL, 0, &o));
	for (uint64_t vb = 0; vb < W_NB; vb += 250)
		CHECK_OK(wr(o, vb, 250));
	for (int i = 0; i < W_NS; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		CHECK_OK(tv_vol_snapshot(pool, o, name, 0, NULL, 0, &snaps[i]));
	}
	nf = fill("fill", &f);
	printf("  full: 'fill' holds %llu MiB, %d snapshots of %d blocks\n",
	       (unsigned long long) (nf * BS >> 20), W_NS, W_NB);
	sane("1: full");

	/* 200 shrinks (the reserve is not reached yet: all pass); their cuts
	 * are shared with the origin (each a count per subtree to drop)
	 * and reclaim frees them on the full pool, many a round */
	free0 = info().free;
	for (int i = 0; i < 200; i++) {
		CHECK_OK(tv_vol_resize(pool, snaps[i], BS));
		shrunk[i] = true;
	}
	CHECK_EQ(deferred_entries(), 200);
	sane("1: 200 snapshots shrunk");
	for (int i = 0; i < 10 && deferred_entries(); i++)
		committer_round();
	CHECK_EQ(deferred_entries(), 0);
	printf("  free: %llu KiB, after the shrinks %llu KiB\n",
	       (unsigned long long) (free0 >> 10),
	       (unsigned long long) (info().free >> 10));
	sane("1: their cuts reclaimed");
	/* the rest: once the reserve is reached, they are refused */
	ok = 200;
	for (int i = 200; i < W_NS; i++) {
		r = tv_vol_resize(pool, snaps[i], BS);
		CHECK(r == 0 || r == -ENOSPC);
		shrunk[i] = r == 0;
		ok += r == 0;
	}
	printf("  shrinks of the snapshots to one block: %llu of %d\n",
	       (unsigned long long) ok, W_NS);
	CHECK(ok < W_NS);
	sane("1: snapshots shrunk");

	/* a delete on the full pool always works; its space comes back at
	 * once: a few committer rounds at most */
	free0 = info().free;
	CHECK_OK(tv_vol_delete(pool, f));
	for (int i = 0; i < 4; i++)
		committer_round();
	printf("  free after the delete and 4 rounds: %llu -> %llu MiB\n",
	       (unsigned long long) (free0 >> 20),
	       (unsigned long long) (info().free >> 20));
	CHECK(info().free >= free0 + nf * BS * 9 / 10);
	sane("1: 'fill' deleted, 4 rounds");

	/* the refused shrinks pass now */
	for (int i = 0; i < W_NS; i++) {
		if (shrunk[i])
			continue;
		CHECK_OK(tv_vol_resize(pool, snaps[i], BS));
		later++;
	}
	printf("  the %llu refused shrinks, again: all pass\n",
	       (unsigned long long) later);
	/* and a new volume gets 64 MiB */
	CHECK_OK(tv_vol_create(pool, "new", 64 * MIB, NULL, 0, &f));
	for (uint64_t vb = 0; vb < 64 * MIB / BS; vb += 256)
		CHECK_OK(wr(f, vb, 256));
	for (int i = 0; i < 200 && deferred_entries(); i++)
		committer_round();
	CHECK_EQ(deferred_entries(), 0);
	sane("1: shrinks done, reclaimed");

	/* the data: the origin whole, each snapshot its one block */
	for (uint64_t vb = 0; vb < W_NB; vb += 97)
		expect_block(o, vb, o, vb);
	for (int i = 0; i < W_NS; i += 7) {
		struct tv_vol_info vi;

		CHECK_OK(tv_vol_info(pool, snaps[i], &vi));
		CHECK_EQ(vi.size, BS);
		expect_block(snaps[i], 0, o, 0);
	}
	expect_block(f, 12345, f, 12345);
	CHECK_OK(tv_pool_close(pool));
	{
		struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};

		CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &pool));
	}
	sane("1: reopened");
	close_pool();
}

/* ---- 2: a big tree, split ---- */

#define P_POOL (96 * MIB)

static void phase_split(void)
{
	uint64_t a, b, na, free0, most = 0, rounds = 0;

	open_pool(P_POOL);
	/* a: most of the pool, in a tree of three levels (4 KiB blocks:
	 * ~126 mappings a leaf, ~126 leaves under a node); b fills the rest
	 * after a snapshot of a, so that a was snapshotted (its delete is
	 * counted by walking its tree) */
	CHECK_OK(tv_vol_create(pool, "a", 1ull << 40, NULL, 0, &a));
	for (na = 0; na < 20000; na += 256)
		CHECK_OK(wr(a, na * 2, 256));
	{
		uint64_t s;

		CHECK_OK(tv_vol_snapshot(pool, a, "s", 0, NULL, 0, &s));
		CHECK_OK(tv_vol_delete(pool, s));
		while (deferred_entries())
			committer_round();
	}
	fill("b", &b);
	sane("2: full");
	free0 = info().free;
	CHECK_OK(tv_vol_delete(pool, a));
	/* rounds of a small budget: the tree goes a piece at a time */
	while (deferred_entries()) {
		pthread_mutex_lock(&pool->meta_lock);
		CHECK_OK(pool_reclaim_locked(pool, 2000));
		if (pool->dirty)
			CHECK_OK(pool_commit_bg_locked(pool));
		pthread_mutex_unlock(&pool->meta_lock);
		most = MAX(most, deferred_entries());
		rounds++;
		CHECK(rounds < 1000);
		if (rounds % 8 == 0)
			sane("2: a round of reclaim");
	}
	printf("  a's %llu blocks reclaimed in %llu rounds, DEFERRED at most "
	       "%llu entries\n",
	       (unsigned long long) na, (unsigned long long) rounds,
	       (unsigned long long) most);
	/* depth first: a node's children a level at most (168 a node
	 * with 8-byte keys), two levels above the leaves */
	CHECK(most <= 2 * 168);
	CHECK(info().free >= free0 + na * BS);
	expect_block(b, 100, b, 100);
	sane("2: a reclaimed");
	close_pool();
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

/* ---- 5: a storm on a small pool ---- */

#define S_POOL (16 * MIB)
#define S_OPS  3000
#define S_VOLS 48

static uint64_t vol_blocks(uint64_t id)
{
	struct tv_vol_info vi;

	CHECK_OK(tv_vol_info(pool, id, &vi));
	return vi.size / BS;
}

/*
 * Random creates, writes, snapshots, shrinks, grows, trims, deletes and
 * committer rounds on a 16 MiB pool, mostly full: each succeeds or fails
 * with -ENOSPC and the pool stays read-write; then reclaim empties
 * DEFERRED, every volume can be deleted, and once that is reclaimed only
 * metadata is left (the old code left deleted trees it could never free
 * here, and their space with them).  TV_SEED replays.
 */
static void phase_storm(uint64_t seed)
{
	uint64_t ids[S_VOLS], nb, at, n, full = 0;
	struct trng rng;
	struct tv_pool_info pi;
	unsigned int nv = 0;
	char name[24];
	int r;

	trng_init(&rng, seed);
	open_pool(S_POOL);
	for (int op = 0; op < S_OPS; op++) {
		unsigned int k = (unsigned int) trng_below(&rng, 10);
		unsigned int i = nv ? (unsigned int) trng_below(&rng, nv) : 0;

		r = 0;
		if (nv < 2 || (k == 0 && nv < S_VOLS)) {
			snprintf(name, sizeof(name), "v%d", op);
			r = tv_vol_create(pool, name,
					  (1 + trng_below(&rng, 4096)) * BS,
					  NULL, 0, &ids[nv]);
			nv += r == 0;
		} else if (k <= 3) {
			nb = vol_blocks(ids[i]);
			at = trng_below(&rng, nb);
			n = MIN(256, nb - at); /* (MIN evaluates twice) */
			n = 1 + trng_below(&rng, n);
			r = wr(ids[i], at, n);
		} else if (k == 4 && nv < S_VOLS) {
			snprintf(name, sizeof(name), "s%d", op);
			r = tv_vol_snapshot(pool, ids[i], name, 0, NULL, 0,
					    &ids[nv]);
			nv += r == 0;
		} else if (k == 5) {
			nb = vol_blocks(ids[i]);
			if (nb > 1)
				r = tv_vol_resize(
				    pool, ids[i],
				    (1 + trng_below(&rng, nb - 1)) * BS);
		} else if (k == 6) {
			r = tv_vol_delete(pool, ids[i]);
			if (r == 0)
				ids[i] = ids[--nv];
		} else if (k == 7) {
			nb = vol_blocks(ids[i]);
			at = trng_below(&rng, nb);
			n = 1 + trng_below(&rng, 300);
			n = MIN(nb - at, n);
			r = tv_vol_discard(pool, ids[i], n * BS, at * BS);
		} else if (k == 8) {
			if (trng_below(&rng, 4) == 0)
				committer_round();
		} else {
			r = tv_vol_resize(
			    pool, ids[i],
			    (vol_blocks(ids[i]) + 1 + trng_below(&rng, 100)) *
				BS);
		}
		if (r && r != -ENOSPC) {
			fprintf(stderr, "storm op %d (kind %u): %s\n", op, k,
				tv_last_error());
			CHECK(0);
		}
		full += r == -ENOSPC;
		pi = info();
		CHECK(pi.state == TV_POOL_RW);
		CHECK(pi.reclaimable <= pi.used - pi.metadata);
	}
	printf("  storm: %d operations, %llu refused with -ENOSPC\n", S_OPS,
	       (unsigned long long) full);
	CHECK(full > 0); /* it did get full */
	for (int i = 0; i < 100 && deferred_entries(); i++)
		committer_round();
	CHECK_EQ(deferred_entries(), 0);
	sane("5: storm, reclaimed");
	while (nv)
		CHECK_OK(tv_vol_delete(pool, ids[--nv]));
	for (int i = 0; i < 100 && deferred_entries(); i++)
		committer_round();
	CHECK_EQ(deferred_entries(), 0);
	pi = info();
	CHECK_EQ(pi.used, pi.metadata);
	CHECK_EQ(pi.reclaimable, 0);
	sane("5: all deleted, reclaimed");
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
		log_set_sink(tquiet, NULL);
	buf = malloc(256 * BS);
	got = malloc(256 * BS);
	CHECK(buf && got);
	/* TV_PHASES (e.g. "14"): only those */
	if (want_phase('3'))
		phase_first_leaf();
	if (want_phase('4'))
		phase_reclaimable();
	if (want_phase('2'))
		phase_split();
	if (want_phase('1'))
		phase_wedge();
	if (want_phase('5'))
		phase_storm(tseed("test-engine-reclaim"));
	free(buf);
	free(got);
	printf("test-engine-reclaim: ok\n");
	return 0;
}
