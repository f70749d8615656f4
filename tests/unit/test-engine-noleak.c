/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * No data leaks between volumes: fill a volume with a pattern and delete
 * it, fill another and discard it all, let the pool reclaim the space,
 * then create new volumes and write 512-byte pieces into fresh blocks:
 * every byte not written must read zero — while running, after a reopen,
 * and in every image a power cut at any point of the second phase could
 * leave.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/io.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/log.h"

#define BS	   (64u << 10)
#define VOL_BLOCKS 40u

/* Phase 1 on a clean pool: leave freed blocks full of old patterns. */
static void dirty_the_pool(struct tv_pool *p)
{
	uint8_t *buf = malloc(VOL_BLOCKS * BS);
	uint64_t a, b;

	memset(buf, 0xAA, VOL_BLOCKS * BS);
	CHECK_OK(tv_vol_create(p, "old-a", VOL_BLOCKS * BS, NULL, 0, &a));
	CHECK_OK(tv_vol_write(p, a, buf, VOL_BLOCKS * BS, 0, 0));
	memset(buf, 0xBB, VOL_BLOCKS * BS);
	CHECK_OK(tv_vol_create(p, "old-b", VOL_BLOCKS * BS, NULL, 0, &b));
	CHECK_OK(tv_vol_write(p, b, buf, VOL_BLOCKS * BS, 0, 0));
	CHECK_OK(tv_pool_flush(p));
	CHECK_OK(tv_vol_delete(p, a));
	CHECK_OK(tv_vol_discard(p, b, VOL_BLOCKS * BS, 0));
	CHECK_OK(tv_pool_flush(p));
	/* reclaim what the delete holds, as the committer would */
	pthread_mutex_lock(&p->meta_lock);
	CHECK_OK(pool_reclaim_locked(p, 1u << 20));
	CHECK_OK(pool_commit_locked(p));
	pthread_mutex_unlock(&p->meta_lock);
	free(buf);
}

/* Phase 2: new volumes, one 512-byte piece in each block. */
static int write_pieces(struct tv_pool *p, struct trng *r, uint64_t ids[2],
			uint64_t where[2][VOL_BLOCKS])
{
	uint8_t piece[512];
	int ret;

	memset(piece, 0x5c, sizeof(piece));
	for (int v = 0; v < 2; v++) {
		ret = tv_vol_create(p, v ? "new-d" : "new-c", VOL_BLOCKS * BS,
				    NULL, 0, &ids[v]);
		if (ret < 0)
			return ret;
		for (unsigned int k = 0; k < VOL_BLOCKS; k++) {
			where[v][k] = k * BS + trng_below(r, BS / 512) * 512;
			ret =
			    tv_vol_write(p, ids[v], piece, 512, where[v][k], 0);
			if (ret < 0)
				return ret;
		}
	}
	return tv_pool_flush(p);
}

/* Every byte is zero or (in a piece we wrote) 0x5c. */
static void verify(struct tv_pool *p, uint64_t where[2][VOL_BLOCKS])
{
	const char *names[2] = {"new-c", "new-d"};
	uint8_t *buf = malloc(VOL_BLOCKS * BS);

	for (int v = 0; v < 2; v++) {
		uint64_t id;

		if (tv_vol_resolve(p, names[v], &id) < 0)
			continue; /* not created before the cut */
		CHECK_OK(tv_vol_read(p, id, buf, VOL_BLOCKS * BS, 0));
		for (unsigned int k = 0; k < VOL_BLOCKS; k++)
			for (uint64_t o = k * BS; o < (k + 1) * BS; o++) {
				bool piece =
				    o >= where[v][k] && o < where[v][k] + 512;
				if (buf[o] == 0 || (piece && buf[o] == 0x5c))
					continue;
				fprintf(stderr, "%s byte %llu reads %02x\n",
					names[v], (unsigned long long) o,
					buf[o]);
				CHECK(0);
			}
	}
	free(buf);
}

int main(void)
{
	uint64_t seed = tseed("test-engine-noleak");
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 0};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	uint64_t where[2][VOL_BLOCKS], ids[2], total, opened, cuts = 0;
	struct io_dev *mem, *pc, *img;
	struct tv_check_report rep;
	struct tv_pool *p;
	struct trng r;
	/* room for the old volumes and little else: the new ones must reuse
	 * their blocks */
	uint64_t dev = (2 * VOL_BLOCKS + 24) * (uint64_t) BS;
	uint8_t *base;

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);

	/* phase 1 once, keep the image */
	CHECK_OK(io_mem_create(dev, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &p));
	dirty_the_pool(p);
	CHECK_OK(tv_pool_close(p));
	base = malloc(dev);
	memcpy(base, io_mem_data(mem), dev);
	io_close(mem);

	/* phase 2 without a crash, then reopened */
	CHECK_OK(io_mem_create_from(base, dev, &mem));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &p));
	trng_init(&r, seed);
	CHECK_OK(write_pieces(p, &r, ids, where));
	verify(p, where);
	CHECK_OK(tv_pool_close(p));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &p));
	verify(p, where);
	CHECK_OK(tv_pool_check(p, stderr, &rep));
	CHECK(rep.clean);
	CHECK_OK(tv_pool_close(p));
	io_close(mem);

	/* phase 2 cut at every mutating I/O */
	CHECK_OK(io_mem_create_from(base, dev, &mem));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	CHECK_OK(pool_open_dev(pc, false, "pc", &oo, &p));
	/* the cuts come after the open (its flush is a mutating op) */
	opened = io_pc_ops(pc);
	trng_init(&r, seed);
	CHECK_OK(write_pieces(p, &r, ids, where));
	CHECK_OK(tv_pool_close(p));
	total = io_pc_ops(pc) - opened;
	io_close(pc);
	for (uint64_t k = 1; k <= total; k++) {
		static const enum io_pc_policy pol[] = {
		    IO_PC_DROP_ALL, IO_PC_APPLY_ALL, IO_PC_RANDOM};
		CHECK_OK(io_mem_create_from(base, dev, &mem));
		CHECK_OK(io_pc_wrap(mem, true, &pc));
		CHECK_OK(pool_open_dev(pc, false, "pc", &oo, &p));
		io_pc_set_cut_after(pc, k);
		trng_init(&r, seed);
		write_pieces(p, &r, ids, where); /* fails at the cut */
		tv_pool_close(p);
		for (unsigned int i = 0; i < 3; i++) {
			CHECK_OK(io_pc_crash_image(pc, pol[i], seed + k, &img));
			CHECK_OK(pool_open_dev(img, false, "img", &oo, &p));
			verify(p, where);
			CHECK_OK(tv_pool_check(p, stderr, &rep));
			CHECK(rep.clean);
			CHECK_OK(tv_pool_close(p));
			io_close(img);
		}
		io_close(pc);
		cuts++;
	}
	free(base);
	printf("test-engine-noleak: ok, %llu cut points\n",
	       (unsigned long long) cuts);
	return 0;
}
