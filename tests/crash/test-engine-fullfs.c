/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A full backing filesystem (review 2, engine findings 3 and 5).
 *
 * The pool (256 MiB) is a sparse file on a filesystem with room for 24
 * MiB (the quota device: io_quota_wrap, a tmpfs of that size), for 4 KiB
 * and 64 KiB blocks, with the background committer running.  What must
 * hold (docs/reliability.md): a full filesystem refuses new data with
 * ENOSPC while commits still pass; trims and metadata operations either
 * succeed or are refused (ENOSPC) before they change anything; never a
 * failed commit, so the pool never goes read-only.  In turn:
 *
 *   1. an import: 1 MiB writes until ENOSPC; a FLUSH passes, and what was
 *      written reads back, also after the pool is closed and opened
 *      again (its close commits);
 *   2. on the full filesystem: creates, an overwrite in place, FLUSHes,
 *      a snapshot and writes into its shared blocks, 400 single-block
 *      trims with a FLUSH every 50, a delete of the snapshot;
 *   3. room again (the filesystem grown): writes into new blocks pass;
 *   4. a filesystem full before the pool took any metadata chunk: a
 *      create is refused, the pool stays read-write; with room it passes;
 *   5. chunks with holes where their free nodes are, opened on a full
 *      filesystem (holey_chunks).
 *
 * After each step: the pool is read-write with no error, no commit took
 * more than its estimate, and the bytes are as a model has them (a
 * block whose write failed holds its old or its new bytes); at the end a
 * clean check.  On the old code the commits fail (ENOSPC writing nodes
 * into chunks whose reservation failed) and the pool goes read-only.
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

#define MiB	 (1ull << 20)
#define DEV_SIZE (256 * MiB)
#define ROOM	 (24 * MiB)
#define VOL_SIZE (64 * MiB)

static const struct tv_pool_open_opts oo = {.commit_interval_ms = 20};

/* What a block of v may read: one of two bytes (a == b: exactly). */
struct allowed {
	uint8_t a, b;
};

struct rig {
	uint32_t bs;
	struct io_dev *mem, *fs;
	struct tv_pool *p;
	uint64_t v, s;
	struct allowed *m; /* per block of v */
	uint64_t nblocks;
	uint8_t *buf;
};

static void expect_rw(struct rig *g, const char *what)
{
	struct tv_pool_info pi;
	struct sm_stats st;

	CHECK_OK(tv_pool_info(g->p, &pi));
	if (pi.state != TV_POOL_RW || pi.error) {
		fprintf(stderr, "%s: the pool is %s: %s\n", what,
			tv_pool_state_name(pi.state), pi.reason);
		CHECK(0);
	}
	pthread_mutex_lock(&g->p->meta_lock);
	sm_get_stats(tm_sm(g->p->tm), &st);
	pthread_mutex_unlock(&g->p->meta_lock);
	CHECK_EQ(st.need_exceeded, 0);
}

static void expect_bytes(struct rig *g, const char *what)
{
	for (uint64_t b = 0; b < g->nblocks; b++) {
		CHECK_OK(tv_vol_read(g->p, g->v, g->buf, g->bs, b * g->bs));
		for (uint32_t i = 0; i < g->bs; i++) {
			if (g->buf[i] == g->m[b].a || g->buf[i] == g->m[b].b)
				continue;
			fprintf(stderr,
				"%s: v block %" PRIu64 " byte %u is "
				"%#x, not %#x or %#x\n",
				what, b, i, g->buf[i], g->m[b].a, g->m[b].b);
			CHECK(0);
		}
	}
}

/* Write byte c over v's blocks [first, first + n) in one call: 0, or
 * ENOSPC (then each block holds its old or its new bytes). */
static int write_blocks(struct rig *g, uint64_t first, uint64_t n, uint8_t c)
{
	uint64_t len = n * g->bs;
	uint8_t *w = malloc(len);
	int r;

	CHECK(w);
	memset(w, c, len);
	r = tv_vol_write(g->p, g->v, w, len, first * g->bs, 0);
	free(w);
	if (r && r != -ENOSPC) {
		fprintf(stderr, "a write failed with %d, not ENOSPC: %s\n", r,
			tv_last_error());
		CHECK(0);
	}
	for (uint64_t b = first; b < first + n; b++)
		g->m[b] =
		    r ? (struct allowed){g->m[b].a, c} : (struct allowed){c, c};
	return r;
}

/* A metadata operation: 0, or refused with ENOSPC. */
static void meta_ok(struct rig *g, int r, const char *what)
{
	if (r && r != -ENOSPC) {
		fprintf(stderr, "%s: %d (%s), not 0 or ENOSPC\n", what, r,
			tv_last_error());
		CHECK(0);
	}
	expect_rw(g, what);
}

static void flush_ok(struct rig *g, const char *what)
{
	int r = tv_pool_flush(g->p);

	if (r) {
		fprintf(stderr, "%s: FLUSH: %d (%s)\n", what, r,
			tv_last_error());
		CHECK(0);
	}
	/* flushed: a block is what was last acknowledged of it, or, where
	 * the last write failed, what it was before or that write */
	expect_rw(g, what);
}

static void run(uint32_t bs)
{
	struct tv_pool_create_opts co = {.block_size = bs, .blob_size = 16};
	struct tv_check_report rep;
	uint64_t per_mib, kept = 0, w, ids[8];
	unsigned int created = 0, refused = 0, trims = 0, trims_refused = 0;
	struct rig g;
	char what[80];
	int r;

	memset(&g, 0, sizeof(g));
	g.bs = bs;
	g.nblocks = VOL_SIZE / bs;
	g.m = calloc(g.nblocks, sizeof(*g.m));
	g.buf = malloc(bs);
	CHECK(g.m && g.buf);
	per_mib = MiB / bs;
	CHECK_OK(io_mem_create(DEV_SIZE, &g.mem));
	CHECK_OK(io_quota_wrap(g.mem, false, ROOM, &g.fs));
	CHECK_OK(pool_format_dev(g.fs, &co));
	CHECK_OK(pool_open_dev(g.fs, false, "fullfs", &oo, &g.p));
	CHECK_OK(tv_vol_create(g.p, "v", VOL_SIZE, NULL, 0, &g.v));

	/* 1. an import until the filesystem is full */
	for (w = 0; w < VOL_SIZE / MiB; w++) {
		if (write_blocks(&g, w * per_mib, per_mib,
				 (uint8_t) (0x40 + w)))
			break;
		kept = w + 1;
	}
	CHECK(w < VOL_SIZE / MiB);
	snprintf(what, sizeof(what), "%u: the import", bs);
	expect_rw(&g, what);
	flush_ok(&g, what);
	expect_bytes(&g, what);
	CHECK_OK(tv_pool_close(g.p));
	CHECK_OK(pool_open_dev(g.fs, false, "fullfs", &oo, &g.p));
	expect_rw(&g, what);
	expect_bytes(&g, what);
	CHECK(kept * MiB >= ROOM / 2);

	/* 2. on the full filesystem */
	snprintf(what, sizeof(what), "%u: full", bs);
	for (int i = 0; i < 8; i++) {
		char name[16];

		snprintf(name, sizeof(name), "w%d", i);
		r = tv_vol_create(g.p, name, MiB, NULL, 0, &ids[i]);
		meta_ok(&g, r, what);
		created += r == 0;
		refused += r != 0;
	}
	CHECK_OK(write_blocks(&g, 0, 1, 0x5a)); /* in place: no room needed */
	flush_ok(&g, what);
	r = tv_vol_snapshot(g.p, g.v, "s", TV_VOL_READ_ONLY, NULL, 0, &g.s);
	meta_ok(&g, r, what);
	if (r == 0) {
		/* copies of shared blocks: new data */
		for (uint64_t b = 1; b < 4 * per_mib; b += per_mib)
			write_blocks(&g, b, 1, 0x6b);
		flush_ok(&g, what);
	}
	for (uint64_t k = 0; k < 400; k++) {
		uint64_t b = (k * 7919) % (kept * per_mib);

		r = tv_vol_discard(g.p, g.v, bs, b * bs);
		meta_ok(&g, r, what);
		if (r == 0)
			g.m[b] = (struct allowed){0, 0};
		trims++;
		trims_refused += r != 0;
		if (k % 50 == 49)
			flush_ok(&g, what);
	}
	flush_ok(&g, what);
	expect_bytes(&g, what);
	if (g.s) {
		meta_ok(&g, tv_vol_delete(g.p, g.s), what);
		flush_ok(&g, what);
	}

	/* 3. room again */
	snprintf(what, sizeof(what), "%u: room again", bs);
	io_quota_set(g.fs, DEV_SIZE);
	CHECK_OK(write_blocks(&g, kept * per_mib, 2 * per_mib, 0x7c));
	flush_ok(&g, what);
	expect_bytes(&g, what);
	CHECK_OK(tv_pool_check(g.p, stderr, &rep));
	CHECK(rep.clean);
	CHECK_OK(tv_pool_close(g.p));
	CHECK_OK(pool_open_dev(g.fs, false, "fullfs", &oo, &g.p));
	expect_bytes(&g, what);
	CHECK_OK(tv_pool_check(g.p, stderr, &rep));
	CHECK(rep.clean);
	CHECK_OK(tv_pool_close(g.p));
	io_close(g.fs);
	io_close(g.mem);
	printf("%u-byte blocks: the import kept %" PRIu64 " MiB; on the full "
	       "filesystem %u creates passed, %u refused, %u of %u trims "
	       "refused; no commit failed\n",
	       bs, kept, created, refused, trims_refused, trims);

	/* 4. full before the pool took a metadata chunk */
	snprintf(what, sizeof(what), "%u: full from the start", bs);
	CHECK_OK(io_mem_create(DEV_SIZE, &g.mem));
	CHECK_OK(io_quota_wrap(g.mem, false, ROOM, &g.fs));
	CHECK_OK(pool_format_dev(g.fs, &co));
	io_quota_set(g.fs, io_quota_used(g.fs));
	CHECK_OK(pool_open_dev(g.fs, false, "fullfs", &oo, &g.p));
	r = tv_vol_create(g.p, "w", MiB, NULL, 0, NULL);
	CHECK_EQ(r, -ENOSPC);
	expect_rw(&g, what);
	io_quota_set(g.fs, ROOM);
	CHECK_OK(tv_vol_create(g.p, "w", MiB, NULL, 0, NULL));
	CHECK_OK(tv_pool_flush(g.p));
	expect_rw(&g, what);
	CHECK_OK(tv_pool_close(g.p));
	io_close(g.fs);
	io_close(g.mem);
	free(g.m);
	free(g.buf);
}

/*
 * 5. Metadata chunks with holes where their free nodes are (a sparse copy
 * of the pool, or a pool written before chunks were allocated in the
 * file), opened on a full filesystem: those nodes are never handed out,
 * since writing one needs room.  The room then comes back 4 KiB at a
 * time, each time taken by the reservations a create asks for, until a
 * create passes: none of its nodes (nor its commit's) lands in a hole.
 */
static void holey_chunks(uint32_t bs)
{
	struct tv_pool_create_opts co = {.block_size = bs, .blob_size = 16};
	uint32_t npc = bs / PD_NODE_SIZE;
	struct tv_check_report rep;
	struct io_dev *mem, *fs;
	struct tv_pool *p;
	uint64_t holes = 0, room;
	unsigned int passed = 0, steps = 0;

	CHECK_OK(io_mem_create(DEV_SIZE, &mem));
	CHECK_OK(io_quota_wrap(mem, false, DEV_SIZE, &fs));
	CHECK_OK(pool_format_dev(fs, &co));
	CHECK_OK(pool_open_dev(fs, false, "fullfs", &oo, &p));
	for (int i = 0; i < 40; i++) {
		char name[16];

		snprintf(name, sizeof(name), "h%d", i);
		CHECK_OK(tv_vol_create(p, name, MiB, NULL, 0, NULL));
	}
	CHECK_OK(tv_pool_close(p));
	/* punch the free nodes of every chunk, as a sparse copy has them */
	{
		struct tv_pool_open_opts ro = oo;

		ro.read_only = true;
		CHECK_OK(pool_open_dev(fs, false, "fullfs", &ro, &p));
		pthread_mutex_lock(&p->meta_lock);
		for (uint64_t b = tm_first_block(p->tm);
		     b < tm_nr_blocks(p->tm); b++) {
			if (!sm_is_chunk(tm_sm(p->tm), b))
				continue;
			for (uint32_t i = 0; i < npc; i++) {
				uint32_t count;

				CHECK_OK(sm_node_count(tm_sm(p->tm),
						       b * npc + i, &count));
				if (count)
					continue;
				CHECK_OK(
				    io_discard(fs, (b * npc + i) * PD_NODE_SIZE,
					       PD_NODE_SIZE));
				holes++;
			}
		}
		pthread_mutex_unlock(&p->meta_lock);
		tv_pool_close(p);
	}
	CHECK(holes);
	room = io_quota_used(fs);
	io_quota_set(fs, room);
	CHECK_OK(pool_open_dev(fs, false, "fullfs", &oo, &p));
	while (passed < 8 && steps < 20000) {
		char name[16];
		int r;

		snprintf(name, sizeof(name), "n%u", passed);
		r = tv_vol_create(p, name, MiB, NULL, 0, NULL);
		if (r == 0) {
			passed++;
			CHECK_OK(tv_pool_flush(p));
		} else {
			CHECK_EQ(r, -ENOSPC);
			/* 4 KiB more room, which the next try takes */
			room += 4096;
			io_quota_set(fs, room);
			steps++;
		}
		{
			struct tv_pool_info pi;

			CHECK_OK(tv_pool_info(p, &pi));
			if (pi.state != TV_POOL_RW) {
				fprintf(stderr,
					"holey chunks, %u-byte blocks: "
					"%s\n",
					bs, pi.reason);
				CHECK(0);
			}
		}
	}
	CHECK_EQ(passed, 8);
	CHECK_OK(tv_pool_check(p, stderr, &rep));
	CHECK(rep.clean);
	CHECK_OK(tv_pool_close(p));
	io_close(fs);
	io_close(mem);
	printf("%u-byte blocks: %" PRIu64 " free nodes in holes; 8 creates "
	       "as room came back 4 KiB at a time, no commit failed\n",
	       bs, holes);
}

int main(void)
{
	if (!getenv("TV_VERBOSE"))
		log_set_sink(tquiet, NULL);
	run(4096);
	run(65536);
	holey_chunks(4096);
	holey_chunks(65536);
	return 0;
}
