/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A full pool stays read-write, and freeing space on it always works
 * (issue 14, items 13 and 14).  A 512 MiB pool of 4 KiB blocks, in
 * memory, with no background commits (everything below happens within
 * one commit interval, the worst case; before the fix the trims of step
 * 1 made this pool read-only after ~1400 of them, a 1 GiB one after
 * ~150):
 *
 *   1. fill it until writes fail with -ENOSPC (a commit that took the
 *      whole fill used to eat the reserve), then a storm of single-block
 *      trims spread over the volume: every trim succeeds (they used to
 *      exhaust the metadata reserve after ~100-4000 and turn the pool
 *      read-only), and the space comes back; a trim of a whole 1 EiB
 *      volume that maps three blocks is one quick step;
 *   2. fill again, then a storm of deletes: every delete succeeds, and
 *      the next writes get the space back (the reclaim runs when an
 *      allocation finds no room: there is no committer round here);
 *   3. a storm of snapshots on the full pool (each succeeds or fails
 *      cleanly with -ENOSPC), trims in the snapshots, then a storm of
 *      snapshot deletes, then trims of the origin: the space comes back;
 *      a grow of a volume whose last block (zero past its end) a
 *      snapshot shares succeeds on the full pool;
 *   4. shrink the full volume: it succeeds, the space comes back, a grow
 *      reads zeroes past the old end;
 *   5. reopen;
 *   6. delete everything: closing the pool then reclaims a bounded piece
 *      (item 14: commands run without the daemon free space), closing
 *      it unchanged writes nothing.
 *
 * After every phase: the pool is read-write with no reason, the check is
 * clean, no commit took more room than the space map estimated
 * (sm.c, rule 6), and every volume reads as the model (per block: a
 * hole, or the contents a numbered write put there): a sample of the
 * blocks and every block a phase changed, and all of them at the end.
 * TV_SEED replays the random choices.
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
#include "util/log.h"

#define BS	4096u
#define POOL	(512ull << 20)
#define BIG	(2 * POOL)	/* volume a: more than the pool holds */
#define ND	48		/* small volumes for the delete storm */
#define DBLOCKS 64		/* their blocks each */
#define NS	8		/* snapshots at most */
#define CHUNK	256		/* blocks per write of a fill */
#define HUGE	(1ull << 60)	/* the largest volume */
#define XBLOCKS 81920ull	/* more than a close reclaims (65536) */
#define USIZE	(2 * BS + 1536) /* a size inside a block */

struct mvol {
	bool live;
	uint64_t id;
	char name[16];
	uint64_t blocks;
	uint32_t *gen; /* per block: 0 a hole, else the write's number */
};

static struct mvol a, d[ND], s[NS], e, t;
static struct tv_pool *pool;
static struct trng rng;
static uint32_t gen_next = 1;
static uint8_t *buf, *got;

/* What write number g put into block vb. */
static void pattern(uint8_t *out, uint64_t vb, uint32_t g)
{
	uint64_t x = (uint64_t) g * 0x9E3779B97F4A7C15ull ^ vb;

	memcpy(out, &vb, 8);
	memcpy(out + 8, &g, 4);
	memset(out + 12, 0xa5, 4);
	for (unsigned int i = 2; i < BS / 8; i++) {
		uint64_t w = x ^ (i * 0xBF58476D1CE4E5B9ull);
		memcpy(out + 8 * i, &w, 8);
	}
}

static void new_vol(struct mvol *v, const char *name, uint64_t blocks)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->blocks = blocks;
	v->gen = calloc(blocks, sizeof(uint32_t));
	CHECK(v->gen);
	CHECK_OK(tv_vol_create(pool, name, blocks * BS, NULL, 0, &v->id));
	v->live = true;
}

static void snap_vol(struct mvol *v, const struct mvol *o, const char *name,
		     int r)
{
	uint64_t id = v->id;

	memset(v, 0, sizeof(*v));
	v->id = id;
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->blocks = o->blocks;
	v->gen = malloc(o->blocks * sizeof(uint32_t));
	CHECK(v->gen);
	memcpy(v->gen, o->gen, o->blocks * sizeof(uint32_t));
	v->live = r == 0;
}

static void drop_vol(struct mvol *v)
{
	free(v->gen);
	v->gen = NULL;
	v->live = false;
}

/* Write n blocks of v from vb on; the model follows what was mapped.
 * Returns the engine's answer: on -ENOSPC the holes before the failing
 * block may be written (a write that fails part way), which the
 * allocation map tells. */
static int wr(struct mvol *v, uint64_t vb, uint64_t n)
{
	uint32_t g0 = gen_next;
	int r;

	for (uint64_t i = 0; i < n; i++)
		pattern(buf + i * BS, vb + i, gen_next++);
	r = tv_vol_write(pool, v->id, buf, n * BS, vb * BS, 0);
	if (r == 0) {
		for (uint64_t i = 0; i < n; i++)
			v->gen[vb + i] = g0 + (uint32_t) i;
		return 0;
	}
	if (r != -ENOSPC) {
		fprintf(stderr, "write %s %llu+%llu: %s\n", v->name,
			(unsigned long long) vb, (unsigned long long) n,
			tv_last_error());
		CHECK(0);
	}
	/* which of the blocks that were holes got mapped (a failed write
	 * over mapped blocks is only ever a single block here: it changed
	 * nothing) */
	for (uint64_t i = 0; i < n; i++) {
		struct tv_extent ex;
		size_t ne;

		if (v->gen[vb + i]) {
			CHECK(n == 1);
			continue;
		}
		CHECK_OK(tv_vol_extents(pool, v->id, (vb + i) * BS, BS, &ex, 1,
					&ne));
		if (!(ex.flags & TV_EXTENT_HOLE))
			v->gen[vb + i] = g0 + (uint32_t) i;
	}
	return r;
}

/* Fill v's holes from *next on until -ENOSPC; returns the blocks
 * written.  Big writes first, then single blocks to the last one. */
static uint64_t fill(struct mvol *v, uint64_t *next)
{
	uint64_t done = 0;

	while (*next + CHUNK <= v->blocks) {
		if (wr(v, *next, CHUNK) < 0)
			break;
		*next += CHUNK;
		done += CHUNK;
	}
	for (; *next < v->blocks; (*next)++) {
		if (v->gen[*next])
			continue;
		if (wr(v, *next, 1) < 0)
			break;
		done++;
	}
	CHECK(*next < v->blocks); /* it did fill up */
	return done;
}

/* Write the holes of v in [0, upto) one block at a time until -ENOSPC;
 * returns how many were written. */
static uint64_t fill_holes(struct mvol *v, uint64_t upto)
{
	uint64_t done = 0;

	for (uint64_t vb = 0; vb < upto; vb++) {
		if (v->gen[vb])
			continue;
		if (wr(v, vb, 1) < 0)
			break;
		done++;
	}
	return done;
}

/* Compare v with the model: every block (all), or the chunks of CHUNK
 * blocks that hold a change since the last check (the model's gen above
 * the mark) and one chunk in 16. */
static uint32_t gen_mark;

static void verify(const struct mvol *v, const char *phase, bool all)
{
	uint8_t want[BS];

	if (!v->live)
		return;
	for (uint64_t vb = 0; vb < v->blocks; vb += CHUNK) {
		uint64_t n = MIN((uint64_t) CHUNK, v->blocks - vb);
		bool look = all || trng_below(&rng, 16) == 0;

		for (uint64_t i = 0; !look && i < n; i++)
			look = v->gen[vb + i] >= gen_mark;
		if (!look)
			continue;

		CHECK_OK(tv_vol_read(pool, v->id, got, n * BS, vb * BS));
		for (uint64_t i = 0; i < n; i++) {
			uint32_t g = v->gen[vb + i];

			if (g)
				pattern(want, vb + i, g);
			else
				memset(want, 0, BS);
			if (memcmp(got + i * BS, want, BS)) {
				fprintf(stderr,
					"%s: %s block %llu: not the "
					"contents of write %u\n",
					phase, v->name,
					(unsigned long long) (vb + i), g);
				CHECK(0);
			}
		}
	}
}

static void pool_state(const char *phase, struct tv_pool_info *pi)
{
	struct tv_check_report rep;
	struct sm_stats st;

	CHECK_OK(tv_pool_info(pool, pi));
	if (pi->state != TV_POOL_RW || pi->reason[0]) {
		fprintf(stderr, "%s: pool state %s, reason '%s'\n", phase,
			tv_pool_state_name(pi->state), pi->reason);
		CHECK(0);
	}
	CHECK_OK(tv_pool_check(pool, stderr, &rep));
	CHECK(rep.clean);
	pthread_mutex_lock(&pool->meta_lock);
	sm_get_stats(tm_sm(pool->tm), &st);
	pthread_mutex_unlock(&pool->meta_lock);
	if (st.need_exceeded) {
		fprintf(stderr,
			"%s: %llu commits took more room than the "
			"space map estimated\n",
			phase, (unsigned long long) st.need_exceeded);
		CHECK(0);
	}
}

static void phase_done(const char *phase, bool all)
{
	struct tv_pool_info pi;

	verify(&a, phase, all);
	verify(&e, phase, all);
	verify(&t, phase, all);
	for (int i = 0; i < ND; i++)
		verify(&d[i], phase, all);
	for (int i = 0; i < NS; i++)
		verify(&s[i], phase, all);
	gen_mark = gen_next;
	pool_state(phase, &pi);
	printf("  %-40s used %4llu MiB free %6llu KiB reclaimable %6llu "
	       "KiB\n",
	       phase, (unsigned long long) (pi.used >> 20),
	       (unsigned long long) (pi.free >> 10),
	       (unsigned long long) (pi.reclaimable >> 10));
	fflush(stdout);
}

static uint64_t free_bytes(void)
{
	struct tv_pool_info pi;

	CHECK_OK(tv_pool_info(pool, &pi));
	return pi.free;
}

/* Trim n mapped blocks of v spread over [0, upto): every trim must
 * succeed when must, else succeed or fail with -ENOSPC; returns how
 * many succeeded. */
static uint64_t trim_storm(struct mvol *v, uint64_t upto, uint64_t n, bool must)
{
	uint64_t ok = 0, step = MAX(upto / n, 1), vb = trng_below(&rng, step);

	for (uint64_t k = 0; k < n; k++, vb = (vb + step) % upto) {
		int r = tv_vol_discard(pool, v->id, BS, vb * BS);

		if (r == 0) {
			v->gen[vb] = 0;
			ok++;
			continue;
		}
		if (must || r != -ENOSPC) {
			fprintf(stderr, "trim %llu of %s block %llu: %s\n",
				(unsigned long long) k, v->name,
				(unsigned long long) vb, tv_last_error());
			CHECK(0);
		}
	}
	return ok;
}

/*
 * The reclaim of a close must not cost what the user wrote: a write not
 * yet committed, deleted blocks left to reclaim, then a close whose every
 * metadata read fails (the cache is cold: the pool was just opened).
 * Closing may fail, but if it says it succeeded the write must be there
 * (the close commits the user's transaction before it reclaims in
 * transactions of its own); and the pool opens and checks clean.
 */
static void close_reclaim_fails(void)
{
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	struct io_fault_cfg fc = {.fail_at = 1,
				  .persistent = true,
				  .error = -EIO,
				  .kind = IO_FAULT_ERROR,
				  .op_mask = IO_OP_READ};
	struct tv_check_report rep;
	struct io_dev *m, *fault;
	struct tv_pool *p;
	uint64_t x, y;
	int r;

	CHECK_OK(io_mem_create(POOL, &m));
	CHECK_OK(pool_format_dev(m, &co));
	CHECK_OK(io_fault_wrap(m, false, &fault));
	CHECK_OK(pool_open_dev(fault, false, "fault", &oo, &p));
	/* more mappings than a close reclaims: some are left for the next */
	CHECK_OK(tv_vol_create(p, "x", XBLOCKS * BS, NULL, 0, &x));
	CHECK_OK(tv_vol_create(p, "y", 1 << 20, NULL, 0, &y));
	for (uint64_t o = 0; o < XBLOCKS * BS; o += CHUNK * BS)
		CHECK_OK(tv_vol_write(p, x, buf, CHUNK * BS, o, 0));
	CHECK_OK(tv_vol_delete(p, x));
	CHECK_OK(tv_pool_close(p));
	/* cold: a new open; the write maps a new block (not committed) */
	CHECK_OK(pool_open_dev(fault, false, "fault", &oo, &p));
	pattern(buf, 0, 7);
	CHECK_OK(tv_vol_write(p, y, buf, BS, 0, 0));
	io_fault_arm(fault, &fc);
	r = tv_pool_close(p);
	io_fault_disarm(fault);
	CHECK_OK(pool_open_dev(fault, false, "fault", &oo, &p));
	CHECK_OK(tv_vol_read(p, y, got, BS, 0));
	printf("  a close whose reads fail: %s, the write %s\n",
	       r ? strerror(-r) : "ok",
	       memcmp(got, buf, BS) ? "lost (an unflushed write)" : "kept");
	CHECK(r < 0 || memcmp(got, buf, BS) == 0);
	CHECK_OK(tv_pool_check(p, stderr, &rep));
	CHECK(rep.clean);
	CHECK_OK(tv_pool_close(p));
	io_close(fault);
	io_close(m);
}

int main(void)
{
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	uint64_t seed = tseed("test-engine-fullpool");
	uint64_t next = 0, n, f0, trims, nsnap = 0, size, huge, u, us;
	const uint64_t huge_at[3] = {0, 1ull << 40, HUGE - BS};
	struct tv_pool_info pi;
	struct io_dev *mem;
	char name[16];
	int r;

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	trng_init(&rng, seed);
	buf = malloc(CHUNK * BS);
	got = malloc(CHUNK * BS);
	CHECK(buf && got);
	CHECK_OK(io_mem_create(POOL + (1 << 20), &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &pool));

	/* ---- 1: fill, then single-block trims ---- */
	for (int i = 0; i < ND; i++) {
		snprintf(name, sizeof(name), "d%d", i);
		new_vol(&d[i], name, DBLOCKS);
		CHECK_OK(wr(&d[i], 0, DBLOCKS));
	}
	/* a huge, almost empty volume (its model only the blocks written) */
	CHECK_OK(tv_vol_create(pool, "huge", HUGE, NULL, 0, &huge));
	for (int i = 0; i < 3; i++)
		CHECK_OK(tv_vol_write(pool, huge, buf, BS, huge_at[i], 0));
	/* a volume never snapshotted, for trims below the reserve */
	new_vol(&t, "t", 256);
	CHECK_OK(wr(&t, 0, 256));
	/* a volume of a size inside a block, written all over */
	CHECK_OK(tv_vol_create(pool, "u", USIZE, NULL, 0, &u));
	memset(buf, 0x5c, USIZE);
	CHECK_OK(tv_vol_write(pool, u, buf, USIZE, 0, 0));
	new_vol(&a, "a", BIG / BS);
	n = fill(&a, &next);
	printf("  filled: %llu MiB into a, then -ENOSPC\n",
	       (unsigned long long) (n * BS >> 20));
	CHECK(n * BS > POOL * 9 / 10);
	phase_done("1: full", false);
	f0 = free_bytes();
	trims = trim_storm(&a, next, 5000, true);
	CHECK_OK(tv_pool_flush(pool));
	CHECK(free_bytes() >= f0 + trims * BS * 3 / 4);
	phase_done("1: 5000 single-block trims", false);
	/* a trim of all of the huge volume, still on the nearly full pool:
	 * its cost is what it maps, not its length (else the steps that fit
	 * a full pool's room would take years: the alarm fails the test) */
	alarm(60);
	CHECK_OK(tv_vol_discard(pool, huge, HUGE, 0));
	alarm(0);
	for (int i = 0; i < 3; i++) {
		CHECK_OK(tv_vol_read(pool, huge, got, BS, huge_at[i]));
		for (unsigned int k = 0; k < BS; k++)
			CHECK(got[k] == 0);
	}
	CHECK_OK(tv_vol_delete(pool, huge));
	phase_done("1: a 1 EiB volume trimmed whole", false);

	/* ---- 2: fill again, then delete every small volume ---- */
	n = fill_holes(&a, next);
	CHECK(n >= trims * 9 / 10);
	fill(&a, &next);
	phase_done("2: full again", false);
	for (int i = 0; i < ND; i++) {
		CHECK_OK(tv_vol_delete(pool, d[i].id));
		drop_vol(&d[i]);
	}
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK(pi.reclaimable >= ND * DBLOCKS * BS);
	phase_done("2: 48 deletes", false);
	/* the writes find no room, and reclaim makes it */
	n = fill(&a, &next);
	printf("  after the deletes: %llu blocks written\n",
	       (unsigned long long) n);
	CHECK(n >= ND * DBLOCKS * 9 / 10);
	phase_done("2: the deleted space written again", false);

	/* ---- 3: snapshots, trims in them, snapshot deletes ---- */
	/* u's last block shared with a snapshot, on the full pool: a grow
	 * finds its tail zero already and copies nothing */
	CHECK_OK(tv_vol_snapshot(pool, u, "us", 0, NULL, 0, &us));
	for (int i = 0; i < NS; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		r = tv_vol_snapshot(pool, a.id, name, 0, NULL, 0, &s[i].id);
		CHECK(r == 0 || r == -ENOSPC);
		snap_vol(&s[i], &a, name, r);
		nsnap += r == 0;
		if (r)
			drop_vol(&s[i]);
	}
	printf("  %llu of %d snapshots taken on the full pool\n",
	       (unsigned long long) nsnap, NS);
	CHECK(nsnap > 0);
	{
		/* full to the last block: a scratch volume takes the rest */
		uint64_t w, o = 0;

		CHECK_OK(tv_vol_create(pool, "w", 64 << 20, NULL, 0, &w));
		while (o < (64 << 20) &&
		       tv_vol_write(pool, w, buf, BS, o, 0) == 0)
			o += BS;
		CHECK(o < (64 << 20));
		CHECK_ERR(tv_vol_write(pool, w, buf, BS, o, 0), -ENOSPC);
		CHECK_OK(tv_vol_resize(pool, u, 1 << 20));
		CHECK_OK(tv_vol_delete(pool, w));
	}
	CHECK_OK(tv_vol_read(pool, u, got, 1 << 20, 0));
	for (size_t i = 0; i < (1 << 20); i++)
		CHECK(got[i] == (i < USIZE ? 0x5c : 0));
	CHECK_OK(tv_vol_delete(pool, us));
	/* a's blocks are shared now: writes need new ones, and soon fail */
	for (uint64_t vb = 0; vb < next && wr(&a, vb, 1) == 0; vb++)
		;
	for (int i = 0; i < NS; i++)
		if (s[i].live)
			trim_storm(&s[i], next, 64, false);
	phase_done("3: snapshots, trims in them", false);
	/* the trims in the snapshots (blocks shared: nothing freed) leave
	 * the reserve alone, but the commits may have taken some of it: a
	 * volume that no snapshot shares still trims, as it frees what it
	 * unmaps */
	CHECK_OK(tv_pool_info(pool, &pi));
	printf("  free after the trims in the snapshots: %llu KiB\n",
	       (unsigned long long) (pi.free >> 10));
	trim_storm(&t, 256, 256, true);
	phase_done("3: trims of a volume never snapshotted", false);
	for (int i = 0; i < NS; i++) {
		if (!s[i].live)
			continue;
		CHECK_OK(tv_vol_delete(pool, s[i].id));
		drop_vol(&s[i]);
	}
	phase_done("3: snapshots deleted", false);
	/* the deleted snapshots' trees still hold a's blocks (so nothing
	 * of them is reclaimable: a holds them too); reclaim, as the
	 * committer runs it, frees the trees on the full pool */
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK_EQ(pi.reclaimable, 0);
	for (int round = 0;; round++) {
		pthread_mutex_lock(&pool->meta_lock);
		n = tm_root(pool->tm, SLOT_DEFERRED)->blocknr;
		pthread_mutex_unlock(&pool->meta_lock);
		if (!n)
			break;
		CHECK(round < 1000);
		pthread_mutex_lock(&pool->meta_lock);
		r = pool_reclaim_locked(pool, 16384);
		if (r == 0 && pool->dirty)
			r = pool_commit_bg_locked(pool);
		pthread_mutex_unlock(&pool->meta_lock);
		CHECK_OK(r);
	}
	phase_done("3: the deleted snapshots reclaimed", false);
	trims = trim_storm(&a, next, 2000, true);
	n = fill_holes(&a, next);
	printf("  %llu of %llu trimmed blocks of the origin written again\n",
	       (unsigned long long) n, (unsigned long long) trims);
	CHECK(n >= trims * 9 / 10);
	phase_done("3: origin trimmed and written", false);

	/* ---- 4: shrink the full volume ---- */
	size = next / 2 * BS + 1536;
	CHECK_OK(tv_vol_resize(pool, a.id, size));
	for (uint64_t vb = next / 2 + 1; vb < a.blocks; vb++)
		a.gen[vb] = 0;
	a.blocks = next / 2 + 1;
	CHECK_OK(tv_pool_info(pool, &pi));
	/* the blocks cut off (less the holes the trims left) wait for
	 * reclaim */
	CHECK(pi.reclaimable >= (next - next / 2) * BS * 9 / 10);
	/* the tail block keeps 1536 bytes; a grow zeroes the rest */
	CHECK_OK(tv_vol_resize(pool, a.id, size + BS));
	CHECK_OK(tv_vol_read(pool, a.id, got, 1536 + BS, (next / 2) * BS));
	if (a.gen[next / 2])
		pattern(buf, next / 2, a.gen[next / 2]);
	else
		memset(buf, 0, 1536); /* a block the trims left a hole */
	CHECK(memcmp(got, buf, 1536) == 0);
	for (size_t i = 1536; i < 1536 + BS; i++)
		CHECK(got[i] == 0);
	CHECK_OK(tv_vol_resize(pool, a.id, (next / 2) * BS));
	a.blocks = next / 2;
	/* a new volume gets the space the shrink gave back */
	new_vol(&e, "e", POOL / BS);
	next = 0;
	n = fill(&e, &next);
	printf("  after the shrink: %llu MiB written into a new volume\n",
	       (unsigned long long) (n * BS >> 20));
	CHECK(n * BS >= POOL / 3);
	phase_done("4: shrunk, space written again", false);

	/* ---- 5: reopen ---- */
	CHECK_OK(tv_pool_close(pool));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &pool));
	phase_done("5: reopened", true);

	/* ---- 6: closing a pool it changed, a process reclaims a bounded
	 * piece (CLOSE_BUDGET: 65536 counts, each freed block one);
	 * closing one it did not change writes nothing ---- */
	CHECK_OK(tv_vol_delete(pool, a.id));
	CHECK_OK(tv_vol_delete(pool, e.id));
	drop_vol(&a);
	drop_vol(&e);
	CHECK_OK(tv_pool_info(pool, &pi));
	size = pi.used - pi.metadata;
	CHECK(size > 100000ull * BS);
	CHECK_OK(tv_pool_close(pool));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &pool));
	CHECK_OK(tv_pool_info(pool, &pi));
	printf("  a close after deletes: data %llu -> %llu KiB\n",
	       (unsigned long long) (size >> 10),
	       (unsigned long long) ((pi.used - pi.metadata) >> 10));
	CHECK(pi.used - pi.metadata + 50000ull * BS <= size);
	CHECK(pi.used - pi.metadata + 65536ull * BS >= size);
	CHECK(tm_root(pool->tm, SLOT_DEFERRED)->blocknr);
	size = pi.reclaimable;
	n = pi.transaction;
	CHECK_OK(tv_pool_close(pool));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &pool));
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK_EQ(pi.reclaimable, size);
	CHECK_EQ(pi.transaction, n);
	phase_done("6: closes reclaim after changes", true);
	io_close(mem);
	close_reclaim_fails();
	free(buf);
	free(got);
	printf("test-engine-fullpool: ok\n");
	return 0;
}
