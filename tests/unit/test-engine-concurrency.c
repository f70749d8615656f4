/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine concurrency test, on a file pool of 4 KiB blocks.
 *
 * Part A - snapshots under concurrent writes.  NW writer threads write
 * versioned patterns to one volume while a snapshot thread takes
 * snapshots of it.  Every sector has one owner thread: the first half of
 * the volume is cut in contiguous regions (writes of 1..24 sectors, which
 * cross block boundaries), the second half is interleaved in 2-sector
 * units (the threads race on the same blocks: provisioning and
 * copy-on-write of one block by several threads at once).  The k-th write
 * of thread t stores (t, sector, k) in every sector it covers, and is
 * logged before it is issued.  Each thread publishes how many writes it
 * issued and completed.  The snapshot thread reads the completed counts,
 * snapshots, then reads the issued counts.  Each snapshot must hold, for
 * every sector, the last write completed before the request, or a write
 * issued (by the owner) between the request and the return - nothing
 * older, nothing issued after.  The origin must end with the last write
 * of every sector.
 *
 * Part B - racing writes to one block.  Two threads released together
 * write the same block: different sectors of an unmapped block, the same
 * sector, a whole block against a sector, and the same after a snapshot
 * (a copy-on-write race).  Afterwards the volume has exactly one more
 * block mapped (none more after copy-on-write), both writes are there
 * (the same sector holds one of the two), everything else reads zero (or
 * the snapshot's data), and the snapshot kept its content.
 *
 * Part C - many threads on many volumes.  NT threads do random writes,
 * reads, write-zeroes and sub-block discards on NV volumes (each thread
 * owns 2 KiB units of every volume, so each can check its reads exactly),
 * while another thread takes and deletes snapshots of them and another
 * flushes.  Afterwards every volume matches the threads' models, also
 * after a reopen, and the checker is clean.
 *
 * Part D - first writes in flight (vio.c, rules 3 and 4).  ND threads
 * provision a volume whose blocks keep being unmapped again: in its first
 * part they own interleaved 2-sector units (so several threads provision
 * the same block at once), in the rest contiguous regions side by side,
 * where they write up to 40 blocks at once (several batches, whole
 * neighbouring blocks) and discard whole blocks.  Another thread does the
 * same on a scratch volume that a meta thread deletes and creates again
 * (its writes may fail: ENOENT).  The meta thread also snapshots the
 * volume and deletes the snapshots, and runs the checker on the live pool
 * (which commits first: it must never find an allocated block that no
 * mapping names); a flush thread commits.  Afterwards the volume matches
 * the threads' models, also after a reopen, and the checker is clean.
 *
 * Seeded (TV_SEED); the interleavings are not replayable, the data is.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "tcheck.h"
#include "tquiet.h"
#include "thinvol.h"
#include "util/checked.h"
#include "util/log.h"

#define BS   4096u
#define SECT 512u
#define SPB  (BS / SECT)
#ifndef MAPPED_SCALE
#define MAPPED_SCALE 1 /* tv_vol_info.mapped is in bytes */
#endif

static struct tv_pool *pool;
static uint64_t seed;
static double budget_s; /* seconds per timed part */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static uint64_t mix(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t x = a * 0x9E3779B97F4A7C15ull ^ b * 0xC2B2AE3D27D4EB4Full ^
		     c * 0x165667B19E3779F9ull ^ seed;

	return trng_splitmix(&x);
}

/* A sector of write (tag, sector, version): a header and a pattern. */
static void pattern(uint8_t *p, uint64_t tag, uint64_t sector, uint64_t ver)
{
	uint64_t h[3] = {tag + 1, sector, ver};

	memcpy(p, h, sizeof(h));
	for (unsigned int k = 24; k < SECT; k += 8) {
		uint64_t x = mix(tag, sector, ver) + k;
		memcpy(p + k, &x, 8);
	}
}

/* Decode a sector: 0 and *ver = 0 for zeroes, 0 for a valid pattern of
 * (tag, sector), -1 for anything else. */
static int decode(const uint8_t *p, uint64_t tag, uint64_t sector,
		  uint64_t *ver)
{
	uint8_t want[SECT];
	uint64_t h[3];

	memcpy(h, p, sizeof(h));
	if (!h[0] && !h[1] && !h[2]) {
		for (unsigned int k = 0; k < SECT; k++)
			if (p[k])
				return -1;
		*ver = 0;
		return 0;
	}
	if (h[0] != tag + 1 || h[1] != sector)
		return -1;
	pattern(want, tag, sector, h[2]);
	if (memcmp(want, p, SECT))
		return -1;
	*ver = h[2];
	return 0;
}

static void clean(const char *what)
{
	struct tv_check_report rep;
	struct tv_pool_info pi;

	CHECK_OK(tv_pool_check(pool, stderr, &rep));
	if (!rep.clean)
		fprintf(stderr,
			"%s: check: %llu errors %llu leaks %llu "
			"missing\n",
			what, (unsigned long long) rep.errors,
			(unsigned long long) rep.leaks,
			(unsigned long long) rep.missing);
	CHECK(rep.clean);
	CHECK_OK(tv_pool_info(pool, &pi));
	CHECK_EQ(pi.state, TV_POOL_RW);
}

/* ================= Part A ================= */

#define NW	  4
#define A_REGION  192 /* contiguous sectors per writer */
#define A_UNITS	  96  /* interleaved 2-sector units per writer */
#define A_SECTORS (NW * A_REGION + NW * A_UNITS * 2)
#define A_MAXW	  2000000
#define A_MAXSNAP 200

struct wlog {
	uint32_t first; /* sector */
	uint16_t n;
};

struct writer {
	pthread_t th;
	int t;
	struct wlog *log; /* log[k] for k = 1 .. */
	_Atomic uint64_t issued, completed;
};

struct snap {
	uint64_t id;
	uint64_t cb[NW], ia[NW];
};

static struct writer writers[NW];
static struct snap snaps[A_MAXSNAP];
static int nsnaps;
static uint64_t a_vol;
static atomic_bool a_stop;

static int owner(uint64_t s)
{
	if (s < NW * A_REGION)
		return (int) (s / A_REGION);
	return (int) (((s - NW * A_REGION) / 2) % NW);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct trng r;
	uint8_t *buf = malloc(24 * SECT);

	CHECK(buf);
	trng_init(&r, seed ^ (0xA000u + (unsigned) w->t));
	for (uint64_t k = 1; k < A_MAXW && !atomic_load(&a_stop); k++) {
		uint64_t first, n;
		int ret;

		if (trng_below(&r, 2)) {
			first = (uint64_t) w->t * A_REGION +
				trng_below(&r, A_REGION);
			n = 1 +
			    trng_below(&r, MIN(24, (uint64_t) w->t * A_REGION +
						       A_REGION - first));
		} else {
			uint64_t u = trng_below(&r, A_UNITS);
			first = NW * A_REGION + (u * NW + (uint64_t) w->t) * 2;
			n = 1 + trng_below(&r, 2);
		}
		for (uint64_t s = 0; s < n; s++)
			pattern(buf + s * SECT, 0, first + s, k);
		w->log[k].first = (uint32_t) first;
		w->log[k].n = (uint16_t) n;
		atomic_store(&w->issued, k);
		ret = tv_vol_write(pool, a_vol, buf, n * SECT, first * SECT, 0);
		if (ret) {
			fprintf(stderr, "writer %d: write %llu: %s (%s)\n",
				w->t, (unsigned long long) k, strerror(-ret),
				tv_last_error());
			CHECK(0);
		}
		atomic_store(&w->completed, k);
		if (!(k % 32))
			usleep(100); /* leave the snapshot thread some CPU */
	}
	free(buf);
	return NULL;
}

static void *snapper_main(void *arg)
{
	double end = now_s() + budget_s;
	char name[32];

	(void) arg;
	while (nsnaps < A_MAXSNAP && now_s() < end) {
		struct snap *s = &snaps[nsnaps];
		int r;

		for (int t = 0; t < NW; t++)
			if (atomic_load(&writers[t].issued) >= A_MAXW - 1)
				goto out; /* a writer is done */

		for (int t = 0; t < NW; t++)
			s->cb[t] = atomic_load(&writers[t].completed);
		snprintf(name, sizeof(name), "a-snap%d", nsnaps);
		r = tv_vol_snapshot(pool, a_vol, name, TV_VOL_READ_ONLY, NULL,
				    0, &s->id);
		for (int t = 0; t < NW; t++)
			s->ia[t] = atomic_load(&writers[t].issued);
		if (r) {
			fprintf(stderr, "snapshot: %s (%s)\n", strerror(-r),
				tv_last_error());
			CHECK(0);
		}
		nsnaps++;
		usleep(2000 + (unsigned) (nsnaps % 7) * 1500);
	}
out:
	atomic_store(&a_stop, true);
	return NULL;
}

/* The sectors' versions after writes 1..cb[t] of every thread; called
 * with cb never going down, it replays only the writes since the last
 * call. */
static uint64_t a_ver[A_SECTORS], a_done[NW];

static void replay(const uint64_t *cb, uint64_t *ver)
{
	for (int t = 0; t < NW; t++) {
		CHECK(cb[t] >= a_done[t]);
		for (uint64_t k = a_done[t] + 1; k <= cb[t]; k++)
			for (uint32_t s = 0; s < writers[t].log[k].n; s++)
				a_ver[writers[t].log[k].first + s] = k;
		a_done[t] = cb[t];
	}
	memcpy(ver, a_ver, sizeof(a_ver));
}

static bool covers(int t, uint64_t k, uint64_t s)
{
	const struct wlog *l = &writers[t].log[k];

	return s >= l->first && s < (uint64_t) l->first + l->n;
}

/* Check one volume against cb/ia: 0 if fine. */
static uint64_t check_snapshot(uint64_t id, const uint64_t *cb,
			       const uint64_t *ia, const char *what,
			       uint64_t *inflight_seen)
{
	uint64_t *ver = malloc(A_SECTORS * sizeof(*ver));
	uint8_t *buf = malloc((size_t) A_SECTORS * SECT);
	uint64_t bad = 0;

	CHECK(ver && buf);
	replay(cb, ver);
	CHECK_OK(tv_vol_read(pool, id, buf, (size_t) A_SECTORS * SECT, 0));
	for (uint64_t s = 0; s < A_SECTORS; s++) {
		int t = owner(s);
		uint64_t v;
		bool ok;

		if (decode(buf + s * SECT, 0, s, &v) < 0) {
			ok = false;
			v = UINT64_MAX;
		} else if (v == ver[s]) {
			ok = true;
		} else {
			ok = v > cb[t] && v <= ia[t] && covers(t, v, s);
			if (ok)
				(*inflight_seen)++;
		}
		if (!ok && bad++ < 5)
			fprintf(stderr,
				"%s: sector %llu (block %llu, writer "
				"%d) holds version %lld; expected %llu "
				"(completed before: %llu, issued "
				"after: %llu)\n",
				what, (unsigned long long) s,
				(unsigned long long) (s / SPB), t,
				v == UINT64_MAX ? -1ll : (long long) v,
				(unsigned long long) ver[s],
				(unsigned long long) cb[t],
				(unsigned long long) ia[t]);
	}
	free(ver);
	free(buf);
	return bad;
}

static void part_a(void)
{
	pthread_t snapper;
	uint64_t fin[NW], bad = 0, inflight = 0, total = 0;

	CHECK_OK(tv_vol_create(pool, "a", (uint64_t) A_SECTORS * SECT, NULL, 0,
			       &a_vol));
	atomic_store(&a_stop, false);
	for (int t = 0; t < NW; t++) {
		writers[t].t = t;
		writers[t].log = calloc(A_MAXW, sizeof(struct wlog));
		CHECK(writers[t].log);
		atomic_store(&writers[t].issued, 0);
		atomic_store(&writers[t].completed, 0);
	}
	for (int t = 0; t < NW; t++)
		CHECK(!pthread_create(&writers[t].th, NULL, writer_main,
				      &writers[t]));
	CHECK(!pthread_create(&snapper, NULL, snapper_main, NULL));
	CHECK(!pthread_join(snapper, NULL));
	for (int t = 0; t < NW; t++) {
		CHECK(!pthread_join(writers[t].th, NULL));
		fin[t] = atomic_load(&writers[t].completed);
		CHECK_EQ(fin[t], atomic_load(&writers[t].issued));
		total += fin[t];
	}
	for (int i = 0; i < nsnaps; i++) {
		char what[48];
		snprintf(what, sizeof(what), "snapshot %d (#%llu)", i,
			 (unsigned long long) snaps[i].id);
		bad += check_snapshot(snaps[i].id, snaps[i].cb, snaps[i].ia,
				      what, &inflight);
	}
	bad += check_snapshot(a_vol, fin, fin, "origin", &inflight);
	printf("  part A: %d writers, %llu writes, %d snapshots verified "
	       "(%llu sectors held writes in flight during the snapshot)\n",
	       NW, (unsigned long long) total, nsnaps,
	       (unsigned long long) inflight);
	fflush(stdout);
	CHECK(nsnaps >= 4);
	CHECK_EQ(bad, 0);
	clean("part A");
	for (int i = 0; i < nsnaps; i++)
		CHECK_OK(tv_vol_delete(pool, snaps[i].id));
	CHECK_OK(tv_vol_delete(pool, a_vol));
	for (int t = 0; t < NW; t++)
		free(writers[t].log);
}

/* ================= Part B ================= */

struct racer {
	pthread_t th;
	pthread_barrier_t *bar;
	uint64_t vol;
	uint64_t off, len;
	const uint8_t *buf;
	int ret;
};

static void *racer_main(void *arg)
{
	struct racer *r = arg;

	pthread_barrier_wait(r->bar);
	r->ret = tv_vol_write(pool, r->vol, r->buf, r->len, r->off, 0);
	return NULL;
}

static uint64_t mapped_of(uint64_t id)
{
	struct tv_vol_info vi;

	CHECK_OK(tv_vol_info(pool, id, &vi));
	return vi.mapped * MAPPED_SCALE;
}

/* Race two writes [offX, offX + lenX) (offsets within block b) and
 * check the block: sectors only one wrote hold its data, sectors both
 * wrote hold one of the two, the rest hold base (the block before). */
static void race(uint64_t vol, uint64_t b, uint64_t off0, uint64_t len0,
		 uint64_t off1, uint64_t len1, const uint8_t *base,
		 uint64_t expect_mapped_delta, uint64_t *both_orders)
{
	pthread_barrier_t bar;
	struct racer rc[2];
	uint8_t *bufs[2], got[BS];
	uint64_t m0 = mapped_of(vol);

	pthread_barrier_init(&bar, NULL, 2);
	for (int i = 0; i < 2; i++) {
		bufs[i] = malloc(BS);
		for (unsigned int s = 0; s < SPB; s++)
			pattern(bufs[i] + s * SECT, 100 + (uint64_t) i,
				b * SPB + s, b);
		rc[i].bar = &bar;
		rc[i].vol = vol;
		rc[i].off = i ? off1 : off0;
		rc[i].len = i ? len1 : len0;
		rc[i].buf = bufs[i] + rc[i].off;
		rc[i].off += b * BS;
	}
	for (int i = 0; i < 2; i++)
		CHECK(!pthread_create(&rc[i].th, NULL, racer_main, &rc[i]));
	for (int i = 0; i < 2; i++) {
		CHECK(!pthread_join(rc[i].th, NULL));
		CHECK_OK(rc[i].ret);
	}
	pthread_barrier_destroy(&bar);
	CHECK_EQ(mapped_of(vol) - m0, expect_mapped_delta);
	CHECK_OK(tv_vol_read(pool, vol, got, BS, b * BS));
	for (unsigned int s = 0; s < SPB; s++) {
		uint64_t o = (uint64_t) s * SECT;
		bool in0 = o >= off0 && o < off0 + len0;
		bool in1 = o >= off1 && o < off1 + len1;
		bool is0 = !memcmp(got + o, bufs[0] + o, SECT);
		bool is1 = !memcmp(got + o, bufs[1] + o, SECT);
		bool isb = !memcmp(got + o, base + o, SECT);
		bool ok = in0 && in1 ? is0 || is1 : in0 ? is0 : in1 ? is1 : isb;

		if (in0 && in1)
			both_orders[is1]++;
		if (!ok) {
			fprintf(stderr,
				"race on block %llu (%llu+%llu vs "
				"%llu+%llu): sector %u holds %s\n",
				(unsigned long long) b,
				(unsigned long long) off0,
				(unsigned long long) len0,
				(unsigned long long) off1,
				(unsigned long long) len1, s,
				is0   ? "write 0's data"
				: is1 ? "write 1's data"
				: isb ? "the old data"
				      : "something else");
			CHECK(0);
		}
	}
	free(bufs[0]);
	free(bufs[1]);
}

static void part_b(unsigned int trials)
{
	uint64_t vol, snap, orders[2] = {0, 0};
	uint8_t zero[BS], *snapdata;
	uint64_t nb = trials;
	struct trng r;

	trng_init(&r, seed ^ 0xB);
	memset(zero, 0, sizeof(zero));
	CHECK_OK(tv_vol_create(pool, "race", nb * BS, NULL, 0, &vol));
	/* races to provision: one block gets mapped, both writes land */
	for (uint64_t b = 0; b < nb; b++) {
		uint64_t kind = b % 4, s0 = trng_below(&r, SPB),
			 s1 = trng_below(&r, SPB);
		switch (kind) {
		case 0: /* different sectors */
			if (s1 == s0)
				s1 = (s0 + 1) % SPB;
			race(vol, b, s0 * SECT, SECT, s1 * SECT, SECT, zero, BS,
			     orders);
			break;
		case 1: /* the same sector */
			race(vol, b, s0 * SECT, SECT, s0 * SECT, SECT, zero, BS,
			     orders);
			break;
		case 2: /* the whole block against one sector */
			race(vol, b, 0, BS, s1 * SECT, SECT, zero, BS, orders);
			break;
		default: /* overlapping ranges */
			race(vol, b, 0, 5 * SECT, 3 * SECT, 5 * SECT, zero, BS,
			     orders);
			break;
		}
	}
	CHECK_EQ(mapped_of(vol), nb * BS);
	/* races to copy a shared block: still one block, snapshot intact */
	snapdata = malloc(nb * BS);
	CHECK(snapdata);
	CHECK_OK(tv_vol_read(pool, vol, snapdata, nb * BS, 0));
	CHECK_OK(tv_vol_snapshot(pool, vol, "race-snap", 0, NULL, 0, &snap));
	for (uint64_t b = 0; b < nb; b++) {
		uint64_t s0 = trng_below(&r, SPB), s1 = trng_below(&r, SPB);
		if (b % 2 && s1 == s0)
			s1 = (s0 + 1) % SPB;
		race(vol, b, s0 * SECT, SECT, s1 * SECT, SECT,
		     snapdata + b * BS, 0, orders);
	}
	CHECK_EQ(mapped_of(vol), nb * BS);
	{
		uint8_t *got = malloc(nb * BS);
		CHECK(got);
		CHECK_OK(tv_vol_read(pool, snap, got, nb * BS, 0));
		CHECK(!memcmp(got, snapdata, nb * BS));
		free(got);
	}
	printf("  part B: %llu provisioning races, %llu copy-on-write races "
	       "(same-sector outcome: first %llu, second %llu)\n",
	       (unsigned long long) nb, (unsigned long long) nb,
	       (unsigned long long) orders[0], (unsigned long long) orders[1]);
	fflush(stdout);
	free(snapdata);
	clean("part B");
	CHECK_OK(tv_vol_delete(pool, snap));
	CHECK_OK(tv_vol_delete(pool, vol));
}

/* ================= Part C ================= */

#define NT	  6
#define NV	  6
#define C_UNIT	  4   /* sectors per unit */
#define C_UNITS	  192 /* units per volume: 384 KiB volumes */
#define C_SECTORS (C_UNIT * C_UNITS)

static uint64_t c_vol[NV];
static atomic_bool c_stop;
static _Atomic uint64_t c_ops[6];
/* per volume and sector: the version its owner last wrote (0: zeroes) */
static uint64_t c_model[NV][C_SECTORS];

struct cthread {
	pthread_t th;
	int t;
};

static void *c_main(void *arg)
{
	struct cthread *c = arg;
	uint8_t buf[C_UNIT * SECT];
	uint64_t ver = 0;
	struct trng r;
	unsigned int mine = C_UNITS / NT;

	trng_init(&r, seed ^ (0xC000u + (unsigned) c->t));
	while (!atomic_load(&c_stop)) {
		int v = (int) trng_below(&r, NV);
		uint64_t u = trng_below(&r, mine) * NT + (uint64_t) c->t;
		uint64_t s0 = u * C_UNIT + trng_below(&r, C_UNIT), n;
		unsigned int op = (unsigned int) trng_below(&r, 10);
		int ret;

		n = 1 + trng_below(&r, u * C_UNIT + C_UNIT - s0);
		if (op < 5) { /* write */
			ver++;
			for (uint64_t s = 0; s < n; s++)
				pattern(buf + s * SECT, (uint64_t) v, s0 + s,
					ver);
			ret = tv_vol_write(pool, c_vol[v], buf, n * SECT,
					   s0 * SECT, 0);
			for (uint64_t s = 0; s < n; s++)
				c_model[v][s0 + s] = ver;
			atomic_fetch_add(&c_ops[0], 1);
		} else if (op < 8) { /* read back and check */
			ret = tv_vol_read(pool, c_vol[v], buf, n * SECT,
					  s0 * SECT);
			for (uint64_t s = 0; !ret && s < n; s++) {
				uint64_t got;
				if (decode(buf + s * SECT, (uint64_t) v, s0 + s,
					   &got) < 0 ||
				    got != c_model[v][s0 + s]) {
					fprintf(stderr,
						"thread %d: volume %d "
						"sector %llu: not what "
						"it wrote (%llu)\n",
						c->t, v,
						(unsigned long long) (s0 + s),
						(unsigned long long)
						    c_model[v][s0 + s]);
					CHECK(0);
				}
			}
			atomic_fetch_add(&c_ops[1], 1);
		} else { /* zeroes: never a whole block (others own parts) */
			if (op == 8)
				ret = tv_vol_write_zeroes(pool, c_vol[v],
							  n * SECT, s0 * SECT);
			else
				ret = tv_vol_discard(pool, c_vol[v], n * SECT,
						     s0 * SECT);
			for (uint64_t s = 0; s < n; s++)
				c_model[v][s0 + s] = 0;
			atomic_fetch_add(&c_ops[2], 1);
		}
		if (ret) {
			fprintf(stderr,
				"thread %d: op %u on volume %d: %s "
				"(%s)\n",
				c->t, op, v, strerror(-ret), tv_last_error());
			CHECK(0);
		}
	}
	return NULL;
}

static void *c_meta_main(void *arg)
{
	uint64_t ss[8] = {0};
	unsigned int seq = 0;
	struct trng r;

	(void) arg;
	trng_init(&r, seed ^ 0xCAFE);
	while (!atomic_load(&c_stop)) {
		unsigned int slot = (unsigned int) trng_below(&r, 8);
		char name[32];
		uint8_t buf[BS];

		if (ss[slot]) {
			/* read a bit of the snapshot, then drop it */
			CHECK_OK(
			    tv_vol_read(pool, ss[slot], buf, BS,
					trng_below(&r, C_SECTORS / SPB) * BS));
			CHECK_OK(tv_vol_delete(pool, ss[slot]));
			ss[slot] = 0;
			atomic_fetch_add(&c_ops[4], 1);
		} else {
			snprintf(name, sizeof(name), "c-snap%u", seq++);
			CHECK_OK(tv_vol_snapshot(pool,
						 c_vol[trng_below(&r, NV)],
						 name, 0, NULL, 0, &ss[slot]));
			atomic_fetch_add(&c_ops[3], 1);
		}
		usleep(1000);
	}
	for (int i = 0; i < 8; i++)
		if (ss[i])
			CHECK_OK(tv_vol_delete(pool, ss[i]));
	return NULL;
}

static void *c_flush_main(void *arg)
{
	(void) arg;
	while (!atomic_load(&c_stop)) {
		CHECK_OK(tv_pool_flush(pool));
		atomic_fetch_add(&c_ops[5], 1);
		usleep(5000);
	}
	return NULL;
}

static void c_verify(const char *what)
{
	uint8_t *buf = malloc((size_t) C_SECTORS * SECT);

	CHECK(buf);
	for (int v = 0; v < NV; v++) {
		CHECK_OK(tv_vol_read(pool, c_vol[v], buf,
				     (size_t) C_SECTORS * SECT, 0));
		for (uint64_t s = 0; s < C_SECTORS; s++) {
			uint64_t got;
			if (decode(buf + s * SECT, (uint64_t) v, s, &got) < 0 ||
			    got != c_model[v][s]) {
				fprintf(stderr,
					"%s: volume %d sector %llu "
					"differs (want version %llu)\n",
					what, v, (unsigned long long) s,
					(unsigned long long) c_model[v][s]);
				CHECK(0);
			}
		}
	}
	free(buf);
}

static void part_c(const char *path, const struct tv_pool_open_opts *oo)
{
	struct cthread th[NT];
	pthread_t meta, fl;

	for (int v = 0; v < NV; v++) {
		char name[16];
		snprintf(name, sizeof(name), "c%d", v);
		CHECK_OK(tv_vol_create(pool, name, (uint64_t) C_SECTORS * SECT,
				       NULL, 0, &c_vol[v]));
	}
	atomic_store(&c_stop, false);
	for (int t = 0; t < NT; t++) {
		th[t].t = t;
		CHECK(!pthread_create(&th[t].th, NULL, c_main, &th[t]));
	}
	CHECK(!pthread_create(&meta, NULL, c_meta_main, NULL));
	CHECK(!pthread_create(&fl, NULL, c_flush_main, NULL));
	usleep((useconds_t) (budget_s * 1e6));
	atomic_store(&c_stop, true);
	for (int t = 0; t < NT; t++)
		CHECK(!pthread_join(th[t].th, NULL));
	CHECK(!pthread_join(meta, NULL));
	CHECK(!pthread_join(fl, NULL));
	printf("  part C: %d threads on %d volumes: %llu writes, %llu reads, "
	       "%llu zeroes/discards, %llu snapshots, %llu deletes, %llu "
	       "flushes\n",
	       NT, NV, (unsigned long long) c_ops[0],
	       (unsigned long long) c_ops[1], (unsigned long long) c_ops[2],
	       (unsigned long long) c_ops[3], (unsigned long long) c_ops[4],
	       (unsigned long long) c_ops[5]);
	fflush(stdout);
	c_verify("part C");
	clean("part C");
	CHECK_OK(tv_pool_close(pool));
	CHECK_OK(tv_pool_open(path, oo, &pool));
	c_verify("part C, reopened");
	clean("part C, reopened");
}

/* ================= Part D ================= */

#define ND	  4
#define D_UNITS	  64	     /* interleaved 2-sector units each */
#define D_REGION  (48 * SPB) /* contiguous sectors each */
#define D_ZONE1	  (ND * D_UNITS * 2)
#define D_SECTORS (D_ZONE1 + ND * D_REGION)
#define D_MAXW	  (40 * SPB) /* sectors per write, at most */

static uint64_t d_vol;
static _Atomic uint64_t d_scratch; /* 0 while deleted */
static atomic_bool d_stop;
static _Atomic uint64_t d_ops[6];
static uint64_t d_model[D_SECTORS];

struct dthread {
	pthread_t th;
	int t;
};

static void d_write(uint64_t vol, uint8_t *buf, uint64_t s0, uint64_t n,
		    uint64_t ver, bool model)
{
	int ret;

	for (uint64_t s = 0; s < n; s++)
		pattern(buf + s * SECT, 0xD, s0 + s, ver);
	ret = tv_vol_write(pool, vol, buf, n * SECT, s0 * SECT, 0);
	if (model) {
		if (ret)
			fprintf(stderr, "part D: write %llu+%llu: %s (%s)\n",
				(unsigned long long) s0, (unsigned long long) n,
				strerror(-ret), tv_last_error());
		CHECK_OK(ret);
		for (uint64_t s = 0; s < n; s++)
			d_model[s0 + s] = ver;
	} else {
		/* the scratch volume may be gone */
		CHECK(ret == 0 || ret == -ENOENT);
	}
}

static void d_check(const uint8_t *buf, uint64_t s0, uint64_t n,
		    const char *what)
{
	for (uint64_t s = 0; s < n; s++) {
		uint64_t got;
		if (decode(buf + s * SECT, 0xD, s0 + s, &got) < 0 ||
		    got != d_model[s0 + s]) {
			fprintf(stderr,
				"%s: sector %llu differs (want "
				"version %llu)\n",
				what, (unsigned long long) (s0 + s),
				(unsigned long long) d_model[s0 + s]);
			CHECK(0);
		}
	}
}

static void *d_main(void *arg)
{
	struct dthread *d = arg;
	uint8_t *buf = malloc((size_t) D_MAXW * SECT);
	uint64_t base = D_ZONE1 + (uint64_t) d->t * D_REGION, ver = 0;
	struct trng r;

	CHECK(buf);
	trng_init(&r, seed ^ (0xD000u + (unsigned) d->t));
	while (!atomic_load(&d_stop)) {
		unsigned int op = (unsigned int) trng_below(&r, 10);
		uint64_t s0, n;

		if (op < 3) { /* my units of the shared blocks */
			uint64_t u =
			    trng_below(&r, D_UNITS) * ND + (uint64_t) d->t;
			d_write(d_vol, buf, u * 2, 2, ++ver, true);
			atomic_fetch_add(&d_ops[0], 1);
			continue;
		}
		s0 = base + trng_below(&r, D_REGION);
		n = 1 + trng_below(&r, MIN(D_MAXW, base + D_REGION - s0));
		if (op < 7) { /* a run of my region */
			d_write(d_vol, buf, s0, n, ++ver, true);
			atomic_fetch_add(&d_ops[1], 1);
		} else if (op < 8) { /* read it back */
			CHECK_OK(
			    tv_vol_read(pool, d_vol, buf, n * SECT, s0 * SECT));
			d_check(buf, s0, n, "part D, read");
		} else { /* unmap whole blocks of my region */
			uint64_t b0 = DIV_ROUND_UP(s0, SPB) * SPB;
			uint64_t b1 = (s0 + n) / SPB * SPB;
			if (b0 >= b1)
				continue;
			CHECK_OK(op == 8 ? tv_vol_discard(pool, d_vol,
							  (b1 - b0) * SECT,
							  b0 * SECT)
					 : tv_vol_write_zeroes(pool, d_vol,
							       (b1 - b0) * SECT,
							       b0 * SECT));
			for (uint64_t s = b0; s < b1; s++)
				d_model[s] = 0;
			atomic_fetch_add(&d_ops[2], 1);
		}
	}
	free(buf);
	return NULL;
}

/* First writes to a volume that comes and goes. */
static void *d_scratch_main(void *arg)
{
	uint8_t *buf = malloc((size_t) D_MAXW * SECT);
	uint64_t ver = 0;
	struct trng r;

	(void) arg;
	CHECK(buf);
	trng_init(&r, seed ^ 0xD5C4);
	while (!atomic_load(&d_stop)) {
		uint64_t id = atomic_load(&d_scratch);
		uint64_t s0 = trng_below(&r, D_SECTORS);
		uint64_t n = 1 + trng_below(&r, MIN(D_MAXW, D_SECTORS - s0));

		if (id)
			d_write(id, buf, s0, n, ++ver, false);
	}
	free(buf);
	return NULL;
}

static void *d_meta_main(void *arg)
{
	unsigned int seq = 0;
	struct trng r;

	(void) arg;
	trng_init(&r, seed ^ 0xD3E7A);
	while (!atomic_load(&d_stop)) {
		unsigned int op = (unsigned int) trng_below(&r, 4);
		char name[32];
		uint64_t id;

		if (op == 0) {
			snprintf(name, sizeof(name), "d-snap%u", seq++);
			CHECK_OK(tv_vol_snapshot(pool, d_vol, name, 0, NULL, 0,
						 &id));
			CHECK_OK(tv_vol_delete(pool, id));
			atomic_fetch_add(&d_ops[3], 1);
		} else if (op == 1) {
			id = atomic_exchange(&d_scratch, 0);
			CHECK_OK(tv_vol_delete(pool, id));
			snprintf(name, sizeof(name), "d-scratch%u", seq++);
			CHECK_OK(tv_vol_create(pool, name,
					       (uint64_t) D_SECTORS * SECT,
					       NULL, 0, &id));
			atomic_store(&d_scratch, id);
			atomic_fetch_add(&d_ops[4], 1);
		} else {
			clean("part D, live");
			atomic_fetch_add(&d_ops[5], 1);
		}
		usleep(2000);
	}
	return NULL;
}

static void part_d(const char *path, const struct tv_pool_open_opts *oo)
{
	uint8_t *buf = malloc((size_t) D_SECTORS * SECT);
	struct dthread th[ND];
	pthread_t meta, scratch, fl;
	uint64_t id;

	CHECK(buf);
	CHECK_OK(tv_vol_create(pool, "d", (uint64_t) D_SECTORS * SECT, NULL, 0,
			       &d_vol));
	CHECK_OK(tv_vol_create(pool, "d-scratch", (uint64_t) D_SECTORS * SECT,
			       NULL, 0, &id));
	atomic_store(&d_scratch, id);
	atomic_store(&d_stop, false);
	atomic_store(&c_stop, false);
	for (int t = 0; t < ND; t++) {
		th[t].t = t;
		CHECK(!pthread_create(&th[t].th, NULL, d_main, &th[t]));
	}
	CHECK(!pthread_create(&scratch, NULL, d_scratch_main, NULL));
	CHECK(!pthread_create(&meta, NULL, d_meta_main, NULL));
	CHECK(!pthread_create(&fl, NULL, c_flush_main, NULL));
	usleep((useconds_t) (budget_s * 1e6));
	atomic_store(&d_stop, true);
	atomic_store(&c_stop, true);
	for (int t = 0; t < ND; t++)
		CHECK(!pthread_join(th[t].th, NULL));
	CHECK(!pthread_join(scratch, NULL));
	CHECK(!pthread_join(meta, NULL));
	CHECK(!pthread_join(fl, NULL));
	printf("  part D: %d threads: %llu shared-block writes, %llu runs, "
	       "%llu unmaps; %llu snapshots, %llu scratch volumes, %llu live "
	       "checks\n",
	       ND, (unsigned long long) d_ops[0], (unsigned long long) d_ops[1],
	       (unsigned long long) d_ops[2], (unsigned long long) d_ops[3],
	       (unsigned long long) d_ops[4], (unsigned long long) d_ops[5]);
	fflush(stdout);
	CHECK_OK(tv_vol_read(pool, d_vol, buf, (size_t) D_SECTORS * SECT, 0));
	d_check(buf, 0, D_SECTORS, "part D");
	clean("part D");
	CHECK_OK(tv_pool_close(pool));
	CHECK_OK(tv_pool_open(path, oo, &pool));
	CHECK_OK(tv_vol_read(pool, d_vol, buf, (size_t) D_SECTORS * SECT, 0));
	d_check(buf, 0, D_SECTORS, "part D, reopened");
	clean("part D, reopened");
	free(buf);
}

int main(void)
{
	char dir[] = "/tmp/tv-conc-XXXXXX", path[256];
	struct tv_pool_create_opts co = {
	    .size = 256ull << 20, .block_size = BS, .blob_size = 16};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 100};
	const char *e = getenv("TV_CONC_SECONDS");

	seed = tseed("test-engine-concurrency");
	budget_s = e && *e ? atof(e) : tsanitized() ? 6 : 3;
	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, &oo, &pool));

	part_a();
	part_b(tsanitized() ? 120 : 400);
	part_c(path, &oo);
	part_d(path, &oo);

	CHECK_OK(tv_pool_close(pool));
	unlink(path);
	rmdir(dir);
	printf("test-engine-concurrency: ok\n");
	return 0;
}
