/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A commit in doubt (tm.h, rule 4; review 2, engine finding 1).
 *
 * When a flush of a commit fails after its superblock was written, the
 * device may hold the transaction before it (T) or the one it made
 * (T+1), and after a crash either may come up.  For two workloads, each
 * flush of the operation fails in turn:
 *
 *   cow    64 KiB blocks: v holds 64 KiB of 0xD0 (flushed), a snapshot
 *          shares it, v's first 4 KiB become 0xD1 (a copy of the shared
 *          block), then a FLUSH;
 *   batch  4 KiB blocks: a batch of 400 creates, which takes new
 *          metadata chunks.
 *
 * and in three ways: the fault device fails the flush and the writes
 * stay pending (a later flush writes them); the power-cut device loses
 * them the way Linux does (each reached the disk or not, none is written
 * again, reads still show them until the cache is dropped); and the same
 * with pages that stay in the cache (so a reopen reads T+1 from the cache
 * while the disk may hold T).  And the superblock's write itself failing
 * after a part of it landed (step d).  Then:
 *
 *   1. crash images at once (pending writes dropped, applied, mixed):
 *      each opens clean at T or T+1, the bytes as one of them has them;
 *   2. tv_pool_reopen (its probe writes a free block, which must be free
 *      in T and T+1): clean, bytes as T or T+1, read-write;
 *   3. new work on the reopened pool: new blocks, a batch of creates
 *      whose commit is in doubt again; crash images: clean, and at the
 *      reopened state or later, never the other one (the reopen made
 *      its state durable before it wrote anything).
 *
 * On the old code the reopen's probe zeroed v's copy (v read 0x00) or a
 * metadata node of T+1 (check: unreadable node), and a reopen at T+1
 * from the cache came back at T after a crash.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/log.h"

#define DEV_SIZE (16ull << 20)
#define NBATCH	 400
#define NPOST	 100
#define NDATA	 8 /* blocks of v written in T */

static const struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};

enum how { FAULT, LOST, STICKY, TORN_SB };
static const char *const how_name[] = {"fault", "lost", "sticky",
				       "torn superblock"};

struct rig {
	bool cow; /* the workload */
	uint32_t bs;
	struct io_dev *mem, *pc, *fault;
	struct tv_pool *p;
	uint64_t v, s;
	uint8_t *buf;
};

/* v's block b (b < NDATA) as T wrote it */
static uint8_t data_byte(uint64_t b)
{
	return (uint8_t) (0x40 + b);
}

static void rig_open(struct rig *g, bool cow)
{
	struct tv_pool_create_opts co = {.block_size = cow ? 65536 : 4096,
					 .blob_size = 16};

	memset(g, 0, sizeof(*g));
	g->cow = cow;
	g->bs = co.block_size;
	g->buf = malloc(65536);
	CHECK(g->buf);
	CHECK_OK(io_mem_create(DEV_SIZE, &g->mem));
	CHECK_OK(pool_format_dev(g->mem, &co));
	CHECK_OK(io_pc_wrap(g->mem, false, &g->pc));
	CHECK_OK(io_fault_wrap(g->pc, false, &g->fault));
	CHECK_OK(pool_open_dev(g->fault, false, "doubt", &oo, &g->p));
	CHECK_OK(tv_vol_create(g->p, "v", 1 << 20, NULL, 0, &g->v));
	for (uint64_t b = 0; b < NDATA; b++) {
		memset(g->buf, data_byte(b), g->bs);
		CHECK_OK(tv_vol_write(g->p, g->v, g->buf, g->bs, b * g->bs, 0));
	}
	if (cow) {
		memset(g->buf, 0xD0, 65536);
		CHECK_OK(tv_vol_write(g->p, g->v, g->buf, 65536, 0, 0));
		CHECK_OK(tv_pool_flush(g->p));
		CHECK_OK(tv_vol_snapshot(g->p, g->v, "s", TV_VOL_READ_ONLY,
					 NULL, 0, &g->s));
		/* a copy of the shared block, not yet committed */
		memset(g->buf, 0xD1, 4096);
		CHECK_OK(tv_vol_write(g->p, g->v, g->buf, 4096, 0, 0));
	} else {
		CHECK_OK(tv_pool_flush(g->p));
	}
}

static void rig_close(struct rig *g)
{
	tv_pool_close(g->p);
	io_close(g->fault);
	io_close(g->pc);
	io_close(g->mem);
	free(g->buf);
}

/* The operation whose commit fails: cow, a FLUSH; batch, 400 creates. */
static int doomed(struct rig *g)
{
	static struct tv_op ops[NBATCH];
	static char names[NBATCH][16];

	if (g->cow)
		return tv_pool_flush(g->p);
	for (int i = 0; i < NBATCH; i++) {
		snprintf(names[i], sizeof(names[i]), "b%d", i);
		ops[i] = (struct tv_op){
		    .kind = TV_OP_CREATE, .name = names[i], .size = 1 << 20};
	}
	return tv_batch(g->p, ops, NBATCH, NULL);
}

/*
 * What a state of the pool must show: a clean check; v's data of T; for
 * cow, v's block 0 all 0xD0 or 0xD1 then 0xD0 (*which: 0 or 1) and s all
 * 0xD0; for batch, *which: the volume count.  Blocks NDATA.. of v: zero,
 * or 0xE0 where post was written.
 */
static void expect_state(struct rig *g, struct tv_pool *p, uint64_t *which,
			 const char *what)
{
	struct tv_check_report rep;
	struct tv_pool_info pi;
	uint8_t *b = malloc(65536);

	CHECK(b);
	CHECK_OK(tv_pool_check(p, NULL, &rep));
	if (!rep.clean) {
		fprintf(stderr, "%s: the check finds damage:\n", what);
		tv_pool_check(p, stderr, &rep);
		CHECK(0);
	}
	for (uint64_t k = g->cow ? 1 : 0; k < NDATA; k++) {
		CHECK_OK(tv_vol_read(p, g->v, b, g->bs, k * g->bs));
		for (uint32_t i = 0; i < g->bs; i++)
			if (b[i] != data_byte(k)) {
				fprintf(stderr,
					"%s: v block %" PRIu64
					" byte %u is %#x\n",
					what, k, i, b[i]);
				CHECK(0);
			}
	}
	for (uint64_t k = NDATA; k < 2 * NDATA; k++) {
		CHECK_OK(tv_vol_read(p, g->v, b, g->bs, k * g->bs));
		for (uint32_t i = 0; i < g->bs; i++)
			CHECK(b[i] == 0 || b[i] == 0xE0);
	}
	if (g->cow) {
		uint64_t d1 = 0;

		CHECK_OK(tv_vol_read(p, g->v, b, 65536, 0));
		for (uint32_t i = 0; i < 65536; i++)
			d1 += b[i] == 0xD1;
		if (!((d1 == 0 || d1 == 4096) &&
		      (!d1 || !memcmp(b, b + 1, 4095)) && b[4096] == 0xD0 &&
		      !memcmp(b + 4096, b + 4097, 61439) &&
		      (d1 || b[0] == 0xD0))) {
			fprintf(stderr,
				"%s: v block 0 reads %#x.. %#x..: "
				"neither T's nor T+1's\n",
				what, b[0], b[4096]);
			CHECK(0);
		}
		*which = d1 != 0;
		CHECK_OK(tv_vol_read(p, g->s, b, 65536, 0));
		CHECK(b[0] == 0xD0 && !memcmp(b, b + 1, 65535));
	} else {
		CHECK_OK(tv_pool_info(p, &pi));
		*which = pi.nr_volumes;
	}
	free(b);
}

/* Crash images of the device now: each opens (read-only) and shows a
 * state; allowed: the states in ok[0..nok). */
static void expect_images(struct rig *g, const uint64_t *ok, int nok,
			  const char *what)
{
	for (int pol = 0; pol < 5; pol++) {
		struct tv_pool_open_opts ro = oo;
		struct io_dev *img;
		struct tv_pool *p;
		uint64_t which;
		char w[160];
		bool found = false;

		ro.read_only = true;
		CHECK_OK(io_pc_crash_image(g->pc,
					   pol == 0   ? IO_PC_DROP_ALL
					   : pol == 1 ? IO_PC_APPLY_ALL
						      : IO_PC_RANDOM,
					   (uint64_t) pol, &img));
		snprintf(w, sizeof(w), "%s, crash image %d", what, pol);
		CHECK_OK(pool_open_dev(img, true, "img", &ro, &p));
		expect_state(g, p, &which, w);
		for (int i = 0; i < nok; i++)
			found |= which == ok[i];
		if (!found) {
			fprintf(stderr,
				"%s: comes up at state %" PRIu64
				", not one allowed (%" PRIu64 ", %" PRIu64
				")\n",
				w, which, ok[0], ok[nok - 1]);
			CHECK(0);
		}
		tv_pool_close(p);
	}
}

/* Work on the reopened pool: 0xE0 into new blocks of v (in blocks free
 * in the reopened state, which the other state may use), then a batch of
 * creates, which commits the writes first: that commit is in doubt (the
 * flush after its superblock fails in the fault device, which leaves the
 * superblock pending), and the batch is refused. */
static void post_work(struct rig *g)
{
	static struct tv_op ops[NPOST];
	static char names[NPOST][16];
	struct io_fault_cfg fc = {
	    .fail_at = 2, .error = -EIO, .op_mask = IO_OP_FLUSH};

	memset(g->buf, 0xE0, g->bs);
	for (uint64_t k = NDATA; k < 2 * NDATA; k++)
		CHECK_OK(tv_vol_write(g->p, g->v, g->buf, g->bs, k * g->bs, 0));
	for (int i = 0; i < NPOST; i++) {
		snprintf(names[i], sizeof(names[i]), "p%d", i);
		ops[i] = (struct tv_op){
		    .kind = TV_OP_CREATE, .name = names[i], .size = 1 << 20};
	}
	io_fault_arm(g->fault, &fc);
	CHECK(tv_batch(g->p, ops, NPOST, NULL) < 0);
	io_fault_disarm(g->fault);
}

/* The flushes (or writes) of the doomed operation (a dry run). */
static uint64_t count_ops(bool cow, unsigned int mask)
{
	struct io_fault_cfg fc = {.fail_at = 0, .op_mask = mask};
	struct rig g;
	uint64_t n;

	rig_open(&g, cow);
	io_fault_arm(g.fault, &fc);
	CHECK_OK(doomed(&g));
	n = io_fault_count(g.fault);
	rig_close(&g);
	return n;
}

static void one(bool cow, enum how how, uint64_t k, uint64_t seed)
{
	uint64_t t0, t1, at;
	struct rig g;
	char what[160];
	int r;

	rig_open(&g, cow);
	/* the states T and T+1 */
	t0 = cow ? 0 : 1;
	t1 = cow ? 1 : 1 + NBATCH;
	if (how == FAULT) {
		struct io_fault_cfg fc = {
		    .fail_at = k, .error = -EIO, .op_mask = IO_OP_FLUSH};
		io_fault_arm(g.fault, &fc);
	} else if (how == TORN_SB) {
		/* write k is the commit's last, its superblock: a prefix of
		 * its sectors lands (seeded), then it fails */
		struct io_fault_cfg fc = {.fail_at = k,
					  .error = -EIO,
					  .kind = IO_FAULT_SHORT,
					  .op_mask = IO_OP_WRITE,
					  .seed = seed};
		io_fault_arm(g.fault, &fc);
	} else {
		struct io_pc_flush_fail ff = {.nth = k,
					      .error = -EIO,
					      .seed = seed,
					      .sticky = how == STICKY};
		io_pc_fail_flush(g.pc, &ff);
	}
	r = doomed(&g);
	io_fault_disarm(g.fault);
	snprintf(what, sizeof(what),
		 "%s, %s, flush %" PRIu64 " of the commit "
		 "fails (seed %" PRIu64 ")",
		 cow ? "cow" : "batch", how_name[how], k, seed);
	CHECK(r < 0);
	/* 1. a crash now */
	{
		uint64_t ok[2] = {t0, t1};
		expect_images(&g, ok, 2, what);
	}
	/* 2. reopened: T or T+1, read-write */
	CHECK_OK(tv_pool_reopen(g.p));
	expect_state(&g, g.p, &at, what);
	CHECK(at == t0 || at == t1);
	/* 3. new work, a crash: the reopened state or later */
	post_work(&g);
	{
		uint64_t ok[2] = {at, cow ? at : at + NPOST};
		char w2[200];

		snprintf(w2, sizeof(w2), "%s, reopened at %s, then new work",
			 what, at == t0 ? "T" : "T+1");
		expect_images(&g, ok, 2, w2);
	}
	rig_close(&g);
}

int main(void)
{
	if (!getenv("TV_VERBOSE"))
		log_set_sink(tquiet, NULL);
	volume_id_clock = NULL;
	for (int cow = 1; cow >= 0; cow--) {
		uint64_t n = count_ops(cow, IO_OP_FLUSH);
		uint64_t w = count_ops(cow, IO_OP_WRITE);

		CHECK(n >= 2);
		for (uint64_t k = 1; k <= n; k++) {
			one(cow, FAULT, k, 0);
			for (uint64_t seed = 1; seed <= 4; seed++) {
				one(cow, LOST, k, seed);
				one(cow, STICKY, k, seed);
			}
		}
		for (uint64_t seed = 0; seed < 4; seed++)
			one(cow, TORN_SB, w, seed);
		printf("%s: each of the %" PRIu64 " flushes of the commit "
		       "failing, three ways, and its superblock's write torn: "
		       "crash images at T or T+1; reopened at T or T+1, clean; "
		       "after new work no crash goes back past the reopened "
		       "state\n",
		       cow ? "cow" : "batch", n);
	}
	return 0;
}
