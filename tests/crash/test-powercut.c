/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Power-cut test: for a seeded workload of random btree operations with
 * commits, cut the power after every mutating I/O (every write and every
 * flush), build the images the cut could leave (unflushed writes all
 * dropped, all applied, and several random mixes of applied, dropped and
 * torn, in random order), reopen each, and require the store to equal the
 * last committed transaction — or the one being committed, if its
 * superblock made it — with a clean check.
 *
 * TV_SEED replays a run; TV_SCALE=n makes the workload n times longer.
 */
#include <errno.h>

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
	unsigned int steps;
	unsigned int commit_every;
	uint64_t key_range;
	uint32_t key_size, value_size;
};

struct totals {
	uint64_t cut_points, images, at_commit, at_attempt;
	unsigned int max_height;
};

/* Run the workload until the power goes (or the steps end). */
static void run_until_cut(const struct config *cf, uint64_t seed,
			  struct io_dev *pc, struct wl *wl)
{
	struct tm *tm;
	int r = tm_open(
	    pc, &(struct tm_open_opts){.cache_bytes = cf->cache_bytes}, &tm);

	if (r < 0) {
		CHECK(io_pc_is_cut(pc));
		return;
	}
	(void) seed;
	for (unsigned int i = 0; i < cf->steps; i++) {
		bool committed;

		r = wl_step(wl, tm, &committed);
		if (r < 0) {
			if (!io_pc_is_cut(pc)) {
				fprintf(stderr,
					"step %u failed (%d) before "
					"the cut\n",
					i, r);
				CHECK(0);
			}
			break;
		}
	}
	tm_close(tm);
}

static void verify_image(struct io_dev *img, struct wl *wl, struct totals *t)
{
	struct tm *tm;
	uint64_t txn;

	CHECK_OK(tm_open(img, NULL, &tm));
	txn = tm_committed_txn(tm);
	if (!wl_committed_txn(wl)) {
		/* the power went while the store was being opened (its
		 * flush is a mutating op), before the workload began: the
		 * image is the formatted store */
		CHECK_EQ(txn, 1);
		t->images++;
		tm_close(tm);
		return;
	}
	if (wl_verify(wl, tm, txn) != 0) {
		fprintf(stderr,
			"image at txn %" PRIu64 " (model committed %" PRIu64
			") differs\n",
			txn, wl_committed_txn(wl));
		CHECK(0);
	}
	if (txn == wl_committed_txn(wl))
		t->at_commit++;
	else
		t->at_attempt++;
	t->images++;
	tm_close(tm);
}

static void run_config(const struct config *cf, uint64_t seed, struct totals *t)
{
	struct wl_opts wo = {.seed = seed,
			     .key_range = cf->key_range,
			     .commit_every = cf->commit_every,
			     .key_size = cf->key_size,
			     .value_size = cf->value_size};
	struct tm_format_opts fo = {.block_size = cf->block_size};
	uint64_t total;
	struct io_dev *mem, *pc;
	struct wl *wl;

	/* dry run: how many mutating ops does the workload do? */
	CHECK_OK(io_mem_create(cf->dev_size, &mem));
	CHECK_OK(tm_format(mem, &fo));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	CHECK_OK(wl_create(&wo, &wl));
	run_until_cut(cf, seed, pc, wl);
	total = io_pc_ops(pc);
	{
		struct tm *tm;
		struct io_dev *img;
		CHECK_OK(io_pc_crash_image(pc, IO_PC_APPLY_ALL, 0, &img));
		CHECK_OK(tm_open(img, NULL, &tm));
		CHECK_OK(wl_verify(wl, tm, tm_committed_txn(tm)));
		tm_close(tm);
		io_close(img);
	}
	io_close(pc);
	printf("  block size %u: %" PRIu64 " mutating ops to cut at, "
	       "trees up to height %u\n",
	       cf->block_size, total, wl_max_height(wl));
	t->max_height = MAX(t->max_height, wl_max_height(wl));
	wl_destroy(wl);
	fflush(stdout);

	for (uint64_t k = 1; k <= total; k++) {
		static const enum io_pc_policy fixed[] = {IO_PC_DROP_ALL,
							  IO_PC_APPLY_ALL};
		struct io_dev *img;

		CHECK_OK(io_mem_create(cf->dev_size, &mem));
		CHECK_OK(tm_format(mem, &fo));
		CHECK_OK(io_pc_wrap(mem, true, &pc));
		CHECK_OK(wl_create(&wo, &wl));
		io_pc_set_cut_after(pc, k);
		run_until_cut(cf, seed, pc, wl);
		t->cut_points++;

		for (unsigned int p = 0; p < 2; p++) {
			CHECK_OK(io_pc_crash_image(pc, fixed[p], 0, &img));
			verify_image(img, wl, t);
			io_close(img);
		}
		/* random mixes only matter when something is pending */
		for (unsigned int s = 0; io_pc_pending(pc) && s < 3; s++) {
			uint64_t is = seed ^ (k * 0x9E3779B97F4A7C15ull) ^ s;
			CHECK_OK(io_pc_crash_image(pc, IO_PC_RANDOM, is, &img));
			verify_image(img, wl, t);
			io_close(img);
		}
		wl_destroy(wl);
		io_close(pc);
	}
}

int main(void)
{
	uint64_t seed = tseed("test-powercut");
	unsigned int scale = (unsigned int) tscale();
	unsigned int steps = (tsanitized() ? 400 : 800) * scale;
	struct config cfs[] = {
	    /* big keys and values: 8 entries a leaf, 15 an internal
	     * node, so 150 keys make a three-level tree */
	    {64 << 10, 16 << 20, 256 << 10, steps, 8, 200, 240, 264},
	    {4096, 8 << 20, 128 << 10, steps, 8, 600, 240, 264},
	    /* a commit after every change, as the engine's single ops
	     * do: hot chunks reused commit after commit (sm.c, rule
	     * 4), and the space map's changes mostly in hinted leaves */
	    {64 << 10, 16 << 20, 256 << 10, steps / 4, 1, 200, 240, 264},
	};
	struct totals t = {0};

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	for (unsigned int i = 0; i < ARRAY_SIZE(cfs); i++)
		run_config(&cfs[i], seed + i, &t);
	/* the workload must reach internal levels, or the test proves less */
	CHECK(t.max_height >= (tsanitized() ? 1 : 2));
	printf("test-powercut: %" PRIu64 " cut points explored, %" PRIu64
	       " crash images verified (%" PRIu64
	       " at the last commit, %" PRIu64 " at the commit in flight)\n",
	       t.cut_points, t.images, t.at_commit, t.at_attempt);
	return 0;
}
