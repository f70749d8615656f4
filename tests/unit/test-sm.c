/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Space map: counting, nothing freed is reused before commit, the reserve
 * (ENOSPC for data while frees and commits still work), metadata growing
 * from free space and shrinking back, growth of the pool.
 */
#include <errno.h>

#include "io/io.h"
#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "tcheck.h"
#include "tquiet.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

static void info_for(struct tm *tm, struct btree_info *info)
{
	memset(info, 0, sizeof(*info));
	info->tm = tm;
	info->tag = 0x54534554;
	info->key_size = 8;
	info->value.size = 8;
}

/* slot 1: block number -> block, holding a reference to the block */
static int v_inc(void *ctx, const void *v)
{
	return sm_inc_block(tm_sm(ctx), get_le64(v));
}

static int v_dec(void *ctx, const void *v)
{
	return sm_dec_block(tm_sm(ctx), get_le64(v), NULL);
}

static void v_check(void *ctx, const void *v, struct check *ck)
{
	(void) ctx;
	check_data_ref(ck, get_le64(v));
}

static void data_info_for(struct tm *tm, struct btree_info *info)
{
	info_for(tm, info);
	info->tag++;
	info->value.ctx = tm;
	info->value.inc = v_inc;
	info->value.dec = v_dec;
	info->value.check = v_check;
}

/* The tree takes over the caller's reference to block. */
static void hold(struct tm *tm, uint64_t block)
{
	struct btree_info info;
	uint8_t k[8], v[8];

	data_info_for(tm, &info);
	put_be64(k, block);
	put_le64(v, block);
	CHECK_OK(btree_insert(&info, tm_root(tm, 1), k, v));
}

static void release(struct tm *tm, uint64_t block)
{
	struct btree_info info;
	uint8_t k[8];

	data_info_for(tm, &info);
	put_be64(k, block);
	CHECK_OK(btree_remove(&info, tm_root(tm, 1), k, NULL));
}

static void check_clean_store(struct tm *tm)
{
	struct btree_info info, dinfo;
	struct check_root roots[TM_NR_ROOTS];
	struct check_report rep;

	info_for(tm, &info);
	data_info_for(tm, &dinfo);
	roots[0] = (struct check_root){0, &info, "t"};
	for (unsigned int i = 1; i < TM_NR_ROOTS; i++)
		roots[i] = (struct check_root){i, &dinfo, "data"};
	CHECK_OK(check_run(tm, roots, TM_NR_ROOTS, stderr, 20, &rep));
	CHECK(check_clean(&rep));
}

/* A store on a 64 MiB memory device with a tree in root 0: keys i *
 * stride for i < n (value i), a commit every `every` inserts and one at
 * the end. */
static struct tm *tree_store(struct io_dev **mem, struct btree_info *info,
			     uint64_t n, uint64_t stride, uint64_t every)
{
	struct tm *tm;

	CHECK_OK(io_mem_create(64 << 20, mem));
	CHECK_OK(tm_format(*mem, NULL));
	CHECK_OK(tm_open(*mem, NULL, &tm));
	info_for(tm, info);
	for (uint64_t i = 0; i < n; i++) {
		uint8_t k[8], v[8];

		put_be64(k, i * stride);
		put_le64(v, i);
		CHECK_OK(btree_insert(info, tm_root(tm, 0), k, v));
		if (i % every == every - 1)
			CHECK_OK(tm_commit(tm));
	}
	CHECK_OK(tm_commit(tm));
	return tm;
}

/*
 * Placement (sm.c, rule 4): one change per commit to a big tree.  The
 * nodes each commit copies again (the root, the path) go to hot chunks,
 * which are reused without acquiring chunks in steady state (a reopen
 * adopts the fullest chunks with room), and a commit writes few nodes: the
 * tree's path, and the few space map leaves that count them.
 */
static void test_hot_chunks(void)
{
	struct tm_commit_stats c0, c1;
	struct btree_info info;
	struct sm_stats st, st2;
	struct io_dev *mem;
	struct tm *tm;
	struct trng r;
	unsigned int height;
	uint64_t out[4];

	/* 8-byte keys and values: 252 a leaf; 100000 of them, 3 levels */
	tm = tree_store(&mem, &info, 100000, 7, 5000);
	CHECK_OK(btree_height(&info, tm_root(tm, 0), &height));
	CHECK(height >= 2);
	check_clean_store(tm);

	trng_init(&r, tseed("test-sm hot"));
	for (int round = 0; round < 2; round++) {
		/* warm up, then measure */
		for (int i = 0; i < 300; i++) {
			uint8_t k[8], v[8];

			if (i == 20) {
				tm_commit_stats(tm, &c0);
				sm_get_stats(tm_sm(tm), &st);
			}
			put_be64(k, trng_below(&r, 100000) * 7);
			put_le64(v, trng_next(&r));
			CHECK_OK(btree_update(&info, tm_root(tm, 0), k, v));
			CHECK_OK(tm_commit(tm));
			if (i % 50 == 0)
				check_clean_store(tm);
		}
		tm_commit_stats(tm, &c1);
		sm_get_stats(tm_sm(tm), &st2);
		printf("one update a commit: %.1f nodes written a commit, "
		       "metadata chunks %" PRIu64 " -> %" PRIu64 "\n",
		       (double) (c1.nodes_written - c0.nodes_written) /
			   (double) (c1.commits - c0.commits),
		       st.meta_chunks, st2.meta_chunks);
		/* the path (height + 1 nodes), the leaves counting the
		 * copies and the originals, and the sm tree's own path */
		CHECK(c1.nodes_written - c0.nodes_written <=
		      8 * (c1.commits - c0.commits));
		/* no chunk taken (one may be given back: after a reopen, a
		 * hot chunk that was not empty at close is an ordinary one) */
		CHECK(st2.meta_chunks <= st.meta_chunks);
		CHECK(st2.meta_chunks + 1 >= st.meta_chunks);
		check_clean_store(tm);
		/* a reopen keeps the chunks with room for hot nodes (the
		 * fullest): at most the empty ones beside them are released,
		 * one per hot chunk */
		tm_close(tm);
		CHECK_OK(tm_open(mem, NULL, &tm));
		info.tm = tm;
		CHECK_OK(tm_commit(tm));
		CHECK(sm_take_freed(tm_sm(tm), out, 4) <= 3);
	}
	tm_close(tm);
	io_close(mem);
}

/*
 * Metadata stays as big as the live nodes need, however long the nodes
 * placed hot live (sm.c, rule 4): a tree of 20000 keys, 3 updates of
 * random keys and one append a commit.  The appends' new leaves and
 * upper nodes are placed hot and live long; hot chunks never empty.
 * mode 0: one session; 1: reopen after every commit; 2: an aborted
 * change after every commit (tm_abort reloads the space map, as open
 * does).  The chunks grew without bound here once (12 -> 41 in 3500
 * commits; 12 -> 92 in 1500 with reopens, for 107-126 live nodes): hot
 * chunks were acquired whenever the hot ones lacked room, and at open
 * only empty chunks became hot.
 */
static void test_hot_bounded(int mode)
{
	/* 64 KiB blocks: 16 nodes a chunk */
	const uint64_t npc = 16;
	struct btree_info info;
	struct sm_stats st;
	struct io_dev *mem;
	struct tm *tm;
	struct trng r;
	uint64_t first = 0, most = 0;

	tm = tree_store(&mem, &info, 20000, 3, 2000);

	trng_init(&r, tseed("test-sm bounded"));
	for (uint64_t it = 0; it < 1500; it++) {
		uint8_t k[8], v[8];

		put_le64(v, it);
		for (int j = 0; j < 3; j++) {
			put_be64(k, trng_below(&r, 20000) * 3);
			CHECK_OK(btree_update(&info, tm_root(tm, 0), k, v));
		}
		put_be64(k, 60000 + it);
		CHECK_OK(btree_put(&info, tm_root(tm, 0), k, v, NULL));
		CHECK_OK(tm_commit(tm));
		if (mode == 1) {
			tm_close(tm);
			CHECK_OK(tm_open(mem, NULL, &tm));
			info.tm = tm;
		} else if (mode == 2) {
			put_be64(k, trng_below(&r, 20000) * 3);
			CHECK_OK(btree_update(&info, tm_root(tm, 0), k, v));
			CHECK_OK(tm_abort(tm));
		}
		sm_get_stats(tm_sm(tm), &st);
		if (!it)
			first = st.meta_chunks;
		most = MAX(most, st.meta_chunks);
		/* the live nodes' chunks, the commit's spare nodes (64:
		 * 4 chunks, one more as 16 must be in sm chunks), the hot
		 * chunks (3), and a little slack for holes: 10 */
		if (st.meta_chunks > st.meta_nodes / npc + 10)
			printf("mode %d commit %" PRIu64 ": %" PRIu64
			       " chunks for %" PRIu64 " nodes\n",
			       mode, it, st.meta_chunks, st.meta_nodes);
		CHECK(st.meta_chunks <= st.meta_nodes / npc + 10);
		if (it % 250 == 0)
			check_clean_store(tm);
	}
	check_clean_store(tm);
	printf("mode %d: metadata chunks %" PRIu64 " -> %" PRIu64
	       " (at most %" PRIu64 ") for %" PRIu64 " nodes\n",
	       mode, first, st.meta_chunks, most, st.meta_nodes);
	tm_close(tm);
	io_close(mem);
}

int main(void)
{
	struct io_dev *mem;
	struct tm *tm;
	struct sm *sm;
	struct sm_stats st, st2;
	struct btree_info info;
	uint64_t b, b2, *blocks;
	uint32_t c;
	size_t nb = 0;
	int r;

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	/* 1024 blocks of 64 KiB */
	CHECK_OK(io_mem_create(64 << 20, &mem));
	CHECK_OK(tm_format(mem, NULL));
	CHECK_OK(tm_open(mem, NULL, &tm));
	sm = tm_sm(tm);
	sm_get_stats(sm, &st);
	CHECK_EQ(st.nr_blocks, 1023);
	CHECK_EQ(st.data_used, 0);
	CHECK_EQ(st.reserve, 63); /* 1023 / 16: a small pool's reserve */

	/* counting */
	CHECK_OK(sm_alloc_block(sm, &b));
	CHECK_OK(sm_block_count(sm, b, &c));
	CHECK_EQ(c, 1);
	CHECK_OK(sm_inc_block(sm, b));
	CHECK_OK(sm_inc_block(sm, b));
	CHECK_OK(sm_dec_block(sm, b, &c));
	CHECK_EQ(c, 2);
	CHECK_ERR(sm_inc_block(sm, 0), -EUCLEAN);    /* superblock area */
	CHECK_ERR(sm_inc_block(sm, 1024), -EUCLEAN); /* past the end */
	CHECK_OK(sm_alloc_block(sm, &b2));
	CHECK_OK(sm_dec_block(sm, b2, &c));
	CHECK_EQ(c, 0);
	CHECK_ERR(sm_dec_block(sm, b2, NULL), -EUCLEAN); /* underflow */
	CHECK_ERR(sm_inc_block(sm, b2), -EUCLEAN);	 /* free block */
	CHECK_OK(tm_abort(tm));
	sm = tm_sm(tm);

	/* a block freed in a transaction is not reused before it commits;
	 * one allocated and freed within the transaction may be */
	CHECK_OK(sm_alloc_block(sm, &b));
	hold(tm, b);
	CHECK_OK(tm_commit(tm));
	check_clean_store(tm);
	release(tm, b);
	CHECK_OK(sm_block_count(sm, b, &c));
	CHECK_EQ(c, 0);
	sm_get_stats(sm, &st);
	CHECK_EQ(st.pending_free, 1);
	for (int i = 0; i < 900; i++) {
		r = sm_alloc_block(sm, &b2);
		if (r == -ENOSPC)
			break;
		CHECK_OK(r);
		CHECK(b2 != b);
	}
	CHECK_OK(tm_abort(tm));
	sm = tm_sm(tm);
	release(tm, b);
	CHECK_OK(tm_commit(tm));
	check_clean_store(tm);
	CHECK_OK(sm_alloc_block(sm, &b2));
	CHECK_OK(tm_abort(tm));
	sm = tm_sm(tm);

	/* fill the pool with data: ENOSPC leaves 2R blocks for metadata and
	 * commits */
	blocks = calloc(1024, sizeof(*blocks));
	while ((r = sm_alloc_block(sm, &blocks[nb])) == 0)
		nb++;
	CHECK_ERR(r, -ENOSPC);
	sm_get_stats(sm, &st);
	CHECK_EQ(st.allocatable, 2 * st.reserve);
	/* metadata still grows (a tree of 20000 entries needs chunks) */
	info_for(tm, &info);
	for (uint64_t i = 0; i < 20000; i++) {
		uint8_t k[8], v[8];
		put_be64(k, i);
		put_le64(v, i);
		CHECK_OK(btree_insert(&info, tm_root(tm, 0), k, v));
	}
	for (size_t i = 0; i < nb; i++)
		hold(tm, blocks[i]);
	CHECK_OK(tm_commit(tm));
	check_clean_store(tm);
	/* freeing works on the full pool, and the space comes back after
	 * the commit */
	for (size_t i = 0; i < nb; i += 2)
		release(tm, blocks[i]);
	CHECK_ERR(sm_alloc_block(sm, &b), -ENOSPC);
	CHECK_OK(tm_commit(tm));
	CHECK_OK(sm_alloc_block(sm, &b));
	hold(tm, b);
	CHECK_OK(tm_commit(tm));
	check_clean_store(tm);

	/* metadata shrinks back: delete the tree, two commits later its
	 * chunks are free again */
	sm_get_stats(sm, &st);
	CHECK(st.meta_chunks >= 3);
	CHECK_OK(btree_del(&info, tm_root(tm, 0)));
	CHECK_OK(tm_commit(tm));
	CHECK_OK(tm_commit(tm));
	CHECK_OK(tm_commit(tm));
	sm_get_stats(sm, &st2);
	CHECK(st2.meta_chunks < st.meta_chunks);
	printf("metadata chunks %" PRIu64 " -> %" PRIu64 ", nodes %" PRIu64
	       " -> %" PRIu64 "\n",
	       st.meta_chunks, st2.meta_chunks, st.meta_nodes, st2.meta_nodes);
	CHECK(st2.meta_chunks <= DIV_ROUND_UP(st2.meta_nodes, 16) + 4);
	check_clean_store(tm);

	/* reopen: counters come back from the superblock and agree */
	tm_close(tm);
	CHECK_OK(tm_open(mem, NULL, &tm));
	sm = tm_sm(tm);
	sm_get_stats(sm, &st);
	CHECK_EQ(st.meta_chunks, st2.meta_chunks);
	CHECK_EQ(st.data_used, st2.data_used);
	check_clean_store(tm);

	/* growing the pool makes room */
	while (sm_alloc_block(sm, &b) == 0) {
		hold(tm, b);
	}
	sm_get_stats(sm, &st);
	CHECK_OK(io_resize(mem, 96 << 20));
	CHECK_OK(tm_grow(tm));
	sm_get_stats(sm, &st2);
	CHECK_EQ(st2.allocatable, st.allocatable + 512);
	CHECK_OK(sm_alloc_block(sm, &b));
	hold(tm, b);
	for (int i = 0; i < 400; i++) {
		CHECK_OK(sm_alloc_block(sm, &b2));
		hold(tm, b2);
	}
	CHECK(b2 >= 1024);
	CHECK_OK(tm_commit(tm));
	check_clean_store(tm);
	tm_close(tm);

	/* freed blocks are offered for discard once committed */
	CHECK_OK(tm_open(mem, NULL, &tm));
	sm = tm_sm(tm);
	release(tm, b);
	{
		uint64_t out[4];
		CHECK_EQ(sm_take_freed(sm, out, 4), 0);
		CHECK_OK(tm_commit(tm));
		CHECK_EQ(sm_take_freed(sm, out, 4), 1);
		CHECK_EQ(out[0], b);
	}
	tm_close(tm);

	/*
	 * The smallest pool with 4 KiB blocks (one node a chunk) still
	 * commits when its data fills it: the reserve covers a commit's
	 * spare nodes.  (Regression: pools of under 64 blocks failed their
	 * commit with ENOSPC.)
	 */
	{
		uint64_t min = sm_min_blocks(4096);
		struct io_dev *small;
		int filled = 0;

		CHECK_ERR(io_mem_create((min + 1) * 4096, &small), 0);
		CHECK_ERR(
		    tm_format(small,
			      &(struct tm_format_opts){.block_size = 4096}),
		    -EINVAL);
		io_close(small);
		CHECK_OK(io_mem_create((min + 2) * 4096, &small));
		CHECK_OK(tm_format(
		    small, &(struct tm_format_opts){.block_size = 4096}));
		CHECK_OK(tm_open(small, NULL, &tm));
		sm = tm_sm(tm);
		for (int round = 0; round < 8; round++) {
			while (sm_alloc_block(sm, &b) == 0) {
				hold(tm, b);
				filled++;
			}
			/* seven clones updated in one transaction */
			for (unsigned int sl = 2; sl < 8; sl++) {
				struct btree_info di;
				data_info_for(tm, &di);
				CHECK_OK(btree_del(&di, tm_root(tm, sl)));
				CHECK_OK(btree_clone(&di, tm_root(tm, 1),
						     tm_root(tm, sl)));
			}
			CHECK_OK(tm_commit(tm));
			check_clean_store(tm);
			for (int i = 0; i < 3 && sm_alloc_block(sm, &b) == 0;
			     i++)
				hold(tm, b);
			CHECK_OK(tm_commit(tm));
		}
		CHECK(filled > 0);
		tm_close(tm);
		io_close(small);
	}

	test_hot_chunks();
	for (int mode = 0; mode < 3; mode++)
		test_hot_bounded(mode);
	free(blocks);
	io_close(mem);
	printf("test-sm: ok\n");
	return 0;
}
