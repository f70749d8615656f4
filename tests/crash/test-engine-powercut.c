/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine power-cut test.  A seeded workload of creates, snapshots,
 * deletes, writes, discards and flushes runs on a pool over the power-cut
 * device; the power is cut after every mutating I/O (every write and every
 * flush).  Each crash image (unflushed writes dropped, applied, or mixed,
 * reordered and torn) is opened and must show:
 *   - the volume table of the last completed metadata operation (or of the
 *     one in flight, if its commit reached the disk);
 *   - every sector flushed (by a flush, or by any metadata operation, which
 *     commits) exactly; every sector written since either its old or one
 *     of its newer contents — never anything else, in particular never
 *     data of a deleted volume in a new one (the workload fills volumes,
 *     deletes them and writes 512-byte pieces into new ones);
 *   - next id not below any id ever handed out before the last commit;
 *   - a clean check.
 */
#include <errno.h>
#include <stdlib.h>

#include "io/io.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/checked.h"
#include "util/log.h"
#include "volmodel.h"

struct run {
	struct trng rng;
	struct vm_model cur;	   /* as the workload sees it */
	struct vm_model before_op; /* before the metadata op in flight */
	bool op_in_flight;
	unsigned int seq;
	uint32_t bs;
};

/* One step; returns the engine's error (the power went) or 0.  A
 * metadata step moves the model first: if the power goes during the
 * commit, either state may be on the device. */
static int step(struct run *w, struct tv_pool *p)
{
	struct vm_model *m = &w->cur;
	unsigned int op = (unsigned int) trng_below(&w->rng, 100);
	char name[16];
	int i, r;

	if (op < 12) { /* create */
		uint64_t id, want;
		i = vm_pick(m, &w->rng, false);
		if (i < 0)
			return 0;
		vm_begin_meta(m, &w->before_op);
		w->op_in_flight = true;
		snprintf(name, sizeof(name), "v%u", w->seq++);
		want = vm_create(
		    m, i, name, (2 + trng_below(&w->rng, 6)) * w->bs / VM_SECT);
		r = tv_vol_create(p, m->v[i].name, m->v[i].sectors * VM_SECT,
				  NULL, 0, &id);
		if (r < 0)
			return r;
		CHECK_EQ(id, want);
		w->op_in_flight = false;
	} else if (op < 18) { /* snapshot */
		int o = vm_pick(m, &w->rng, true);
		uint64_t id, want;
		i = vm_pick(m, &w->rng, false);
		if (i < 0 || o < 0)
			return 0;
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
	} else if (op < 25) { /* delete */
		uint64_t id;
		i = vm_pick(m, &w->rng, true);
		if (i < 0)
			return 0;
		vm_begin_meta(m, &w->before_op);
		w->op_in_flight = true;
		id = m->v[i].id;
		vm_delete(m, i);
		r = tv_vol_delete(p, id);
		if (r < 0)
			return r;
		w->op_in_flight = false;
	} else if (op < 80) { /* write: a whole-volume fill, or 512-byte
			       * pieces, or a random range */
		uint64_t first, n;
		uint8_t *buf;
		i = vm_pick(m, &w->rng, true);
		if (i < 0)
			return 0;
		if (op < 30) {
			first = 0;
			n = m->v[i].sectors;
		} else if (op < 55) {
			first = trng_below(&w->rng, m->v[i].sectors);
			n = 1;
		} else {
			first = trng_below(&w->rng, m->v[i].sectors);
			n = 1 + trng_below(&w->rng, MIN(m->v[i].sectors - first,
							2 * w->bs / VM_SECT));
		}
		buf = vm_random_data(&w->rng, n);
		r = tv_vol_write(p, m->v[i].id, buf, n * VM_SECT,
				 first * VM_SECT, 0);
		vm_write(m, i, first, n, buf);
		free(buf);
		if (r < 0)
			return r;
	} else if (op < 86) { /* discard */
		uint64_t first, n;
		i = vm_pick(m, &w->rng, true);
		if (i < 0)
			return 0;
		first = trng_below(&w->rng, m->v[i].sectors);
		n = 1 + trng_below(&w->rng, m->v[i].sectors - first);
		r = tv_vol_discard(p, m->v[i].id, n * VM_SECT, first * VM_SECT);
		vm_write(m, i, first, n, NULL);
		if (r < 0)
			return r;
	} else if (op < 94) { /* flush */
		r = tv_pool_flush(p);
		if (r < 0)
			return r;
		vm_settle(m);
	} else { /* what the committer thread does: reclaim deleted
		  * volumes' blocks, commit, punch holes (deterministic
		  * here, with the thread idle).  Its commit syncs only the
		  * metadata and the data of copied or reused blocks (vio.c,
		  * rule 7): a write into a hole is still old or new. */
		pthread_mutex_lock(&p->meta_lock);
		r = pool_reclaim_locked(p, 64);
		if (r == 0 && p->dirty)
			r = pool_commit_bg_locked(p);
		pthread_mutex_unlock(&p->meta_lock);
		if (r < 0)
			return r;
	}
	return 0;
}

static void verify_image(struct io_dev *img, struct run *w, uint64_t *n)
{
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	struct tv_check_report rep;
	struct tv_pool *p;
	bool ok;

	CHECK_OK(pool_open_dev(img, false, "image", &oo, &p));
	ok = vm_matches(p, &w->cur, false);
	if (!ok && w->op_in_flight)
		ok = vm_matches(p, &w->before_op, false);
	if (!ok) {
		vm_matches(p, &w->cur, true);
		if (w->op_in_flight)
			vm_matches(p, &w->before_op, true);
		CHECK(0);
	}
	CHECK_OK(tv_pool_check(p, stderr, &rep));
	CHECK(rep.clean);
	CHECK_OK(tv_pool_close(p));
	(*n)++;
}

static void run_workload(struct run *w, struct io_dev *pc, uint64_t seed,
			 uint32_t bs, unsigned int steps)
{
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	struct tv_pool *p;

	memset(w, 0, sizeof(*w));
	w->cur.next_id = 1;
	trng_init(&w->rng, seed);
	w->bs = bs;
	if (pool_open_dev(pc, false, "pc", &oo, &p) < 0)
		return;
	for (unsigned int s = 0; s < steps; s++) {
		int r = step(w, p);
		if (r < 0) {
			/* only the power cut may stop the workload */
			if (!io_pc_is_cut(pc)) {
				fprintf(stderr, "step %u failed: %s\n", s,
					tv_last_error());
				CHECK(0);
			}
			break;
		}
	}
	/* after a cut, close must not write; before it, close commits */
	tv_pool_close(p);
}

/*
 * A formatted pool on the power-cut device.  stale: a block device that
 * held other data before (every byte 0xee..., IO_DEV_BLOCKDEV): nothing
 * reads as a hole there, so every new block's data must be synced before
 * a commit names it, and a block written in part must read zeroes around
 * the write.
 */
static struct io_dev *
pc_pool_dev(uint64_t dev_size, const struct tv_pool_create_opts *co, bool stale)
{
	struct io_dev *mem, *pc;

	CHECK_OK(io_mem_create(dev_size, &mem));
	if (stale) {
		uint8_t junk[4096];

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t) (0xee ^ i);
		for (uint64_t off = 0; off < dev_size; off += sizeof(junk))
			CHECK_OK(io_write(mem, junk, sizeof(junk), off));
		mem->flags |= IO_DEV_BLOCKDEV;
	}
	CHECK_OK(pool_format_dev(mem, co));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	return pc;
}

/* Cut at every point (sample 0) or at sample random points. */
static void run_config(uint32_t bs, uint64_t dev_size, uint64_t seed,
		       unsigned int steps, unsigned int sample, bool stale,
		       uint64_t *cuts, uint64_t *images)
{
	struct trng pick;
	struct tv_pool_create_opts co = {.block_size = bs, .blob_size = 16};
	struct io_dev *pc, *img;
	uint64_t total;
	struct run w;

	pc = pc_pool_dev(dev_size, &co, stale);
	run_workload(&w, pc, seed, bs, steps);
	total = io_pc_ops(pc);
	vm_free(&w.cur);
	vm_free(&w.before_op);
	io_close(pc);
	printf("  block size %u, %u steps%s: %llu mutating ops, cutting at "
	       "%s\n",
	       bs, steps, stale ? ", a block device of stale data" : "",
	       (unsigned long long) total,
	       sample ? "random ones" : "every one");
	fflush(stdout);
	trng_init(&pick, seed * 31);

	for (uint64_t i = 1; i <= (sample ? sample : total); i++) {
		uint64_t k = sample ? 1 + trng_below(&pick, total) : i;

		pc = pc_pool_dev(dev_size, &co, stale);
		io_pc_set_cut_after(pc, k);
		run_workload(&w, pc, seed, bs, steps);
		if (getenv("V"))
			fprintf(stderr, "cut %llu in flight %d\n",
				(unsigned long long) k, w.op_in_flight);
		(*cuts)++;
		CHECK_OK(io_pc_crash_image(pc, IO_PC_DROP_ALL, 0, &img));
		verify_image(img, &w, images);
		io_close(img);
		CHECK_OK(io_pc_crash_image(pc, IO_PC_APPLY_ALL, 0, &img));
		verify_image(img, &w, images);
		io_close(img);
		if (io_pc_pending(pc)) {
			CHECK_OK(io_pc_crash_image(pc, IO_PC_RANDOM, seed ^ k,
						   &img));
			verify_image(img, &w, images);
			io_close(img);
		}
		vm_free(&w.cur);
		vm_free(&w.before_op);
		io_close(pc);
	}
}

/* The committer's ranged commit leaves a write into a hole of the pool
 * unflushed, a copied block flushed, and closing the pool flushes all.
 * stale (pc_pool_dev): on a block device there is no hole, and the
 * ranged commit syncs the new block's data too, zeroes around it. */
static void ranged_commit_test(bool stale)
{
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	struct tv_pool_create_opts co = {.block_size = 65536, .blob_size = 16};
	uint8_t a[4096], b[4096], got[4096], zero[4096] = {0};
	struct io_dev *pc, *img;
	struct tv_pool *p, *q;
	uint64_t id, snap;

	memset(a, 0xa5, sizeof(a));
	memset(b, 0x5a, sizeof(b));
	pc = pc_pool_dev(16 << 20, &co, stale);
	CHECK_OK(pool_open_dev(pc, false, "pc", &oo, &p));
	CHECK_OK(tv_vol_create(p, "v", 1 << 20, NULL, 0, &id));
	CHECK_OK(tv_vol_write(p, id, a, 4096, 0, 0));
	CHECK_OK(tv_vol_write(p, id, a, 4096, 131072, 0));
	CHECK_OK(tv_pool_flush(p));
	CHECK_OK(tv_vol_snapshot(p, id, "s", 0, NULL, 0, &snap));
	/* a first write into a hole, and a copy of a shared block */
	CHECK_OK(tv_vol_write(p, id, b, 4096, 65536, 0));
	CHECK_OK(tv_vol_write(p, id, b, 512, 131072, 0));
	pthread_mutex_lock(&p->meta_lock);
	CHECK_OK(pool_commit_bg_locked(p));
	pthread_mutex_unlock(&p->meta_lock);

	CHECK_OK(io_pc_crash_image(pc, IO_PC_DROP_ALL, 0, &img));
	CHECK_OK(pool_open_dev(img, false, "image", &oo, &q));
	CHECK_OK(tv_vol_read(q, id, got, 4096, 65536));
	if (!stale) {
		CHECK(memcmp(got, zero, 4096) == 0); /* the hole's: not yet */
	} else {
		CHECK(memcmp(got, b, 4096) == 0); /* a device's: synced */
		for (uint64_t o = 65536 + 4096; o < 131072; o += 4096) {
			CHECK_OK(tv_vol_read(q, id, got, 4096, o));
			CHECK(memcmp(got, zero, 4096) == 0);
		}
	}
	CHECK_OK(tv_vol_read(q, id, got, 4096, 131072));
	CHECK(memcmp(got, b, 512) == 0); /* the copy: mapped, so durable */
	CHECK(memcmp(got + 512, a + 512, 4096 - 512) == 0);
	CHECK_OK(tv_vol_read(q, snap, got, 4096, 131072));
	CHECK(memcmp(got, a, 4096) == 0);
	CHECK_OK(tv_pool_close(q));
	io_close(img);

	CHECK_OK(tv_pool_close(p));
	CHECK_OK(io_pc_crash_image(pc, IO_PC_DROP_ALL, 0, &img));
	CHECK_OK(pool_open_dev(img, false, "image", &oo, &q));
	CHECK_OK(tv_vol_read(q, id, got, 4096, 65536));
	CHECK(memcmp(got, b, 4096) == 0); /* closing flushed it */
	CHECK_OK(tv_pool_close(q));
	io_close(img);
	io_close(pc);
	if (!stale)
		printf("  ranged commit: a hole's write left to the next "
		       "flush, a copy synced, close flushes\n");
	else
		printf("  ranged commit on a block device of stale data: a "
		       "new block's write synced with zeroes around it, a "
		       "copy synced, close flushes\n");
}

int main(void)
{
	uint64_t seed = tseed("test-engine-powercut");
	unsigned int steps =
	    (unsigned int) ((tsanitized() ? 60 : 150) * tscale());
	uint64_t cuts = 0, images = 0;
	uint8_t zero[VM_SECT] = {0};

	volume_id_clock = NULL; /* plain counter: ids 1, 2, ... */
	vm_zero_hash = vm_hash(zero);
	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	ranged_commit_test(false);
	ranged_commit_test(true);
	/* small pools, so that freed blocks are soon handed out again: the
	 * no-leak property is only tested when blocks are reused */
	run_config(4096, 3 << 20, seed, steps, 0, false, &cuts, &images);
	run_config(64 << 10, 6 << 20, seed + 1, steps, 0, false, &cuts,
		   &images);
	/* a longer workload, at random points of it */
	run_config(4096, 4 << 20, seed + 2, steps * 6, tsanitized() ? 40 : 150,
		   false, &cuts, &images);
	/* a block device: no holes, stale data in every block not written */
	run_config(64 << 10, 6 << 20, seed + 3, steps * 2,
		   tsanitized() ? 40 : 150, true, &cuts, &images);
	printf("test-engine-powercut: %llu cut points explored, %llu crash "
	       "images verified\n",
	       (unsigned long long) cuts, (unsigned long long) images);
	return 0;
}
