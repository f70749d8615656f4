/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the btree on a memory device: every operation's results
 * and errors, node fill under sequential inserts, ordered iteration, range
 * removal, sharing between clones (node and value reference counts),
 * persistence across reopen, and corrupt nodes reported as -EUCLEAN.
 * check_run must find the store clean after every commit.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "tcheck.h"
#include "util/checked.h"
#include "util/endian.h"

#define DEV_SIZE (256ull << 20)

struct env {
	struct io_dev *dev;
	struct tm *tm;
	struct btree_info info; /* u64 keys, 16-byte values: block + tag */
	struct btree_info big;	/* 200-byte keys, 300-byte values */
};

/* ---- values: le64 data block (0: none), le64 payload ---- */

static int val_inc(void *ctx, const void *v)
{
	struct env *e = ctx;
	uint64_t b = get_le64(v);

	return b ? sm_inc_block(tm_sm(e->tm), b) : 0;
}

static int val_dec(void *ctx, const void *v)
{
	struct env *e = ctx;
	uint64_t b = get_le64(v);

	return b ? sm_dec_block(tm_sm(e->tm), b, NULL) : 0;
}

static void val_check(void *ctx, const void *v, struct check *ck)
{
	(void) ctx;
	if (get_le64(v))
		check_data_ref(ck, get_le64(v));
}

static void key_of(const struct btree_info *info, uint64_t k, uint8_t *key)
{
	memset(key, 0xab, info->key_size);
	put_be64(key, k);
}

static void val_of(uint64_t block, uint64_t payload, uint8_t *v, size_t size)
{
	memset(v, 0, size);
	put_le64(v, block);
	put_le64(v + 8, payload);
}

/* ---- the store ---- */

static void env_open(struct env *e)
{
	struct tm_open_opts oo = {.cache_bytes = 8u << 20};

	CHECK_OK(tm_open(e->dev, &oo, &e->tm));
	e->info.tm = e->tm;
	e->big.tm = e->tm;
}

static void env_setup(struct env *e)
{
	struct tm_format_opts fo = {.block_size = 4096};
	static const struct btree_vtype vt = {
	    .size = 16,
	    .inc = val_inc,
	    .dec = val_dec,
	    .check = val_check,
	};

	memset(e, 0, sizeof(*e));
	e->info.tag = 0x54534554u;
	e->info.key_size = 8;
	e->info.value = vt;
	e->info.value.ctx = e;
	e->big = e->info;
	e->big.tag = 0x47494254u;
	e->big.key_size = 200;
	e->big.value.size = 300;
	CHECK_OK(io_mem_create(DEV_SIZE, &e->dev));
	CHECK_OK(tm_format(e->dev, &fo));
	env_open(e);
}

static void env_reopen(struct env *e)
{
	tm_close(e->tm);
	env_open(e);
}

static void env_teardown(struct env *e)
{
	tm_close(e->tm);
	io_close(e->dev);
}

static bool quiet;

/* Run the checker over slots [0, nr) with info; returns the report. */
static struct check_report
run_check(struct env *e, const struct btree_info *info, unsigned int nr)
{
	/* with no trees, everything they hold looks leaked; a corrupt store
	 * is expected to fail: no messages then */
	FILE *out = nr && !quiet ? stderr : NULL;
	struct check_root roots[TM_NR_ROOTS] = {0};
	struct check_report rep;

	for (unsigned int i = 0; i < nr; i++) {
		roots[i].slot = i;
		roots[i].info = info;
		roots[i].name = "test tree";
	}
	CHECK_OK(check_run(e->tm, roots, nr, out, 20, &rep));
	return rep;
}

/* Commit, then the whole store must check clean; returns how many nodes
 * the trees in slots [0, nr) use (without the space map's). */
static uint64_t commit_check(struct env *e, const struct btree_info *info,
			     unsigned int nr)
{
	struct check_report all, sm_only;
	struct sm_stats st;

	CHECK_OK(tm_commit(e->tm));
	all = run_check(e, info, nr);
	CHECK(check_clean(&all));
	/* the space map counts exactly the nodes the checker reached */
	sm_get_stats(tm_sm(e->tm), &st);
	CHECK_EQ(st.meta_nodes, all.nodes);
	sm_only = run_check(e, info, 0);
	return all.nodes - sm_only.nodes;
}

static uint64_t count(struct env *e, const struct btree_info *info,
		      unsigned int slot)
{
	uint64_t n;

	CHECK_OK(btree_count(info, tm_root(e->tm, slot), &n));
	return n;
}

static void put_n(struct env *e, const struct btree_info *info,
		  unsigned int slot, uint64_t k, uint64_t payload)
{
	uint8_t key[BTREE_MAX_KEY], v[BTREE_MAX_VALUE];

	key_of(info, k, key);
	val_of(0, payload, v, info->value.size);
	CHECK_OK(btree_insert(info, tm_root(e->tm, slot), key, v));
}

/* Lookup of k must give payload (or -ENOENT when payload is ~0). */
static void expect(struct env *e, const struct btree_info *info,
		   unsigned int slot, uint64_t k, uint64_t payload)
{
	uint8_t key[BTREE_MAX_KEY], v[BTREE_MAX_VALUE];
	int r;

	key_of(info, k, key);
	r = btree_lookup(info, tm_root(e->tm, slot), key, v);
	if (payload == ~0ull) {
		CHECK_ERR(r, -ENOENT);
	} else {
		CHECK_OK(r);
		CHECK_EQ(get_le64(v + 8), payload);
	}
}

/* ---- tests ---- */

static void test_bad_info(void)
{
	struct env e;
	struct btree_info bad;
	struct tm_ref root = {0, 0};
	uint8_t key[BTREE_MAX_KEY] = {0}, v[BTREE_MAX_VALUE] = {0};

	env_setup(&e);
	bad = e.info;
	bad.key_size = 0;
	CHECK_ERR(btree_insert(&bad, &root, key, v), -EINVAL);
	bad.key_size = BTREE_MAX_KEY + 1;
	CHECK_ERR(btree_lookup(&bad, &root, key, v), -EINVAL);
	bad = e.info;
	bad.value.size = BTREE_MAX_VALUE + 1;
	CHECK_ERR(btree_insert(&bad, &root, key, v), -EINVAL);
	/* fits the limits, but fewer than 8 entries per leaf */
	bad.key_size = BTREE_MAX_KEY;
	bad.value.size = BTREE_MAX_VALUE;
	CHECK_ERR(btree_insert(&bad, &root, key, v), -EINVAL);
	CHECK_EQ(root.blocknr, 0);
	CHECK_OK(tm_state(e.tm));
	env_teardown(&e);
}

static void test_empty(void)
{
	struct env e;
	struct tm_ref *root;
	struct btree_cursor c;
	uint8_t key[8], v[16];
	uint64_t n = 99;
	unsigned int h;

	env_setup(&e);
	root = tm_root(e.tm, 0);
	key_of(&e.info, 5, key);
	CHECK_ERR(btree_lookup(&e.info, root, key, v), -ENOENT);
	CHECK_ERR(btree_lookup_le(&e.info, root, key, NULL, NULL), -ENOENT);
	CHECK_ERR(btree_remove(&e.info, root, key, NULL), -ENOENT);
	CHECK_ERR(btree_update(&e.info, root, key, v), -ENOENT);
	CHECK_ERR(btree_height(&e.info, root, &h), -ENOENT);
	CHECK_OK(btree_count(&e.info, root, &n));
	CHECK_EQ(n, 0);
	CHECK_OK(btree_remove_range(&e.info, root, NULL, NULL, &n));
	CHECK_EQ(n, 0);
	CHECK_OK(btree_cursor_seek(&e.info, root, NULL, &c));
	CHECK(!c.valid);
	btree_cursor_close(&c);
	CHECK_OK(btree_clone(&e.info, root, tm_root(e.tm, 1)));
	CHECK_EQ(tm_root(e.tm, 1)->blocknr, 0);
	CHECK_OK(btree_del(&e.info, root));
	CHECK_EQ(root->blocknr, 0);
	CHECK_EQ(commit_check(&e, &e.info, 2), 0);
	env_teardown(&e);
}

static void test_basic(void)
{
	struct env e;
	struct tm_ref *root;
	uint8_t key[8], v[16], out[16];
	bool inserted;
	unsigned int h;

	env_setup(&e);
	root = tm_root(e.tm, 0);
	key_of(&e.info, 10, key);
	val_of(0, 100, v, 16);
	CHECK_OK(btree_insert(&e.info, root, key, v));
	CHECK(root->blocknr != 0);
	CHECK_ERR(btree_insert(&e.info, root, key, v), -EEXIST);
	CHECK_OK(btree_height(&e.info, root, &h));
	CHECK_EQ(h, 0);
	expect(&e, &e.info, 0, 10, 100);
	expect(&e, &e.info, 0, 11, ~0ull);
	expect(&e, &e.info, 0, 9, ~0ull);
	CHECK_OK(btree_lookup(&e.info, root, key, NULL));

	val_of(0, 101, v, 16);
	CHECK_OK(btree_update(&e.info, root, key, v));
	expect(&e, &e.info, 0, 10, 101);
	key_of(&e.info, 11, key);
	CHECK_ERR(btree_update(&e.info, root, key, v), -ENOENT);

	val_of(0, 110, v, 16);
	CHECK_OK(btree_put(&e.info, root, key, v, &inserted));
	CHECK(inserted);
	val_of(0, 111, v, 16);
	CHECK_OK(btree_put(&e.info, root, key, v, &inserted));
	CHECK(!inserted);
	CHECK_OK(btree_put(&e.info, root, key, v, NULL));
	expect(&e, &e.info, 0, 11, 111);
	CHECK_EQ(count(&e, &e.info, 0), 2);
	CHECK_EQ(commit_check(&e, &e.info, 1), 1);

	CHECK_OK(btree_remove(&e.info, root, key, out));
	CHECK_EQ(get_le64(out + 8), 111);
	CHECK_ERR(btree_remove(&e.info, root, key, out), -ENOENT);
	expect(&e, &e.info, 0, 11, ~0ull);
	key_of(&e.info, 10, key);
	CHECK_OK(btree_remove(&e.info, root, key, NULL));
	/* the empty tree has no node */
	CHECK_EQ(root->blocknr, 0);
	CHECK_EQ(commit_check(&e, &e.info, 1), 0);

	/* value size 0: a set */
	{
		struct btree_info set = e.info;

		set.value.size = 0;
		set.value.inc = set.value.dec = NULL;
		set.value.check = NULL;
		for (uint64_t k = 0; k < 5000; k++) {
			key_of(&set, k * 3, key);
			CHECK_OK(btree_insert(&set, root, key, NULL));
		}
		key_of(&set, 300, key);
		CHECK_OK(btree_lookup(&set, root, key, NULL));
		key_of(&set, 301, key);
		CHECK_ERR(btree_lookup(&set, root, key, NULL), -ENOENT);
		CHECK_EQ(count(&e, &set, 0), 5000);
		commit_check(&e, &set, 1);
		CHECK_OK(btree_del(&set, root));
		CHECK_EQ(commit_check(&e, &set, 1), 0);
	}
	env_teardown(&e);
}

/* 100k sequential (or reverse) inserts: nodes 3/4 full, not 1/2. */
static void test_fill(bool reverse)
{
	const uint64_t n = 100000;
	struct env e;
	uint64_t nodes;
	unsigned int h;

	env_setup(&e);
	for (uint64_t i = 0; i < n; i++)
		put_n(&e, &e.info, 0, reverse ? n - i : i, i);
	nodes = commit_check(&e, &e.info, 1);
	CHECK_OK(btree_height(&e.info, tm_root(e.tm, 0), &h));
	printf("fill %s: %llu entries in %llu nodes, height %u, "
	       "%.1f bytes per entry\n",
	       reverse ? "reverse" : "sequential", (unsigned long long) n,
	       (unsigned long long) nodes, h,
	       (double) nodes * PD_NODE_SIZE / (double) n);
	CHECK(nodes * PD_NODE_SIZE < 40 * n);
	CHECK_EQ(count(&e, &e.info, 0), n);
	for (uint64_t i = 0; i < n; i += 997)
		expect(&e, &e.info, 0, reverse ? n - i : i, i);
	env_teardown(&e);
}

static void test_lookup_le(void)
{
	struct env e;
	struct tm_ref *root;
	uint8_t key[8], kout[8], v[16];

	env_setup(&e);
	root = tm_root(e.tm, 0);
	/* even keys 100..20098: many leaves */
	for (uint64_t k = 100; k < 20100; k += 2)
		put_n(&e, &e.info, 0, k, k);
	key_of(&e.info, 99, key);
	CHECK_ERR(btree_lookup_le(&e.info, root, key, kout, v), -ENOENT);
	for (uint64_t k = 100; k < 20200; k++) {
		uint64_t want = k >= 20098 ? 20098 : k & ~1ull;

		key_of(&e.info, k, key);
		CHECK_OK(btree_lookup_le(&e.info, root, key, kout, v));
		CHECK_EQ(get_be64(kout), want);
		CHECK_EQ(get_le64(v + 8), want);
	}
	/* NULL outputs */
	CHECK_OK(btree_lookup_le(&e.info, root, key, NULL, NULL));
	/* remove the first key of many leaves: the parents' keys are then
	 * only lower bounds, and the answer is in an earlier leaf */
	for (uint64_t k = 100; k < 20100; k += 2)
		if ((k / 2) % 7 == 0 || (k >= 5000 && k < 6000)) {
			key_of(&e.info, k, key);
			CHECK_OK(btree_remove(&e.info, root, key, NULL));
		}
	for (uint64_t k = 100; k < 20200; k++) {
		uint64_t want = k >= 20098 ? 20098 : k & ~1ull;

		while (want >= 100 &&
		       ((want / 2) % 7 == 0 || (want >= 5000 && want < 6000)))
			want -= 2;
		key_of(&e.info, k, key);
		if (want < 100) {
			CHECK_ERR(btree_lookup_le(&e.info, root, key, kout, v),
				  -ENOENT);
			continue;
		}
		CHECK_OK(btree_lookup_le(&e.info, root, key, kout, v));
		CHECK_EQ(get_be64(kout), want);
	}
	commit_check(&e, &e.info, 1);
	env_teardown(&e);
}

static void test_cursor(void)
{
	struct env e;
	struct tm_ref *root;
	struct btree_cursor c;
	uint8_t key[200];
	uint64_t k, n;

	env_setup(&e);
	root = tm_root(e.tm, 0);
	/* keys 10, 20, ..., 100000 on a small-fanout tree: deep */
	for (k = 1; k <= 10000; k++)
		put_n(&e, &e.big, 0, k * 10, k);
	commit_check(&e, &e.big, 1);

	CHECK_OK(btree_cursor_seek(&e.big, root, NULL, &c));
	for (n = 0; c.valid; n++) {
		CHECK_EQ(get_be64(btree_cursor_key(&c)), (n + 1) * 10);
		CHECK_EQ(get_le64((const uint8_t *) btree_cursor_value(&c) + 8),
			 n + 1);
		CHECK_OK(btree_cursor_next(&c));
	}
	CHECK_EQ(n, 10000);
	CHECK(!c.valid);
	CHECK_OK(btree_cursor_next(&c)); /* at the end: stays there */
	CHECK(!c.valid);
	CHECK(btree_cursor_key(&c) == NULL);
	btree_cursor_close(&c);

	/* seeks: exact, between, before the first, after the last */
	for (k = 0; k <= 100010; k += 7) {
		uint64_t want = (k + 9) / 10 * 10;

		key_of(&e.big, k, key);
		CHECK_OK(btree_cursor_seek(&e.big, root, key, &c));
		if (want == 0)
			want = 10;
		if (want > 100000) {
			CHECK(!c.valid);
		} else {
			CHECK(c.valid);
			CHECK_EQ(get_be64(btree_cursor_key(&c)), want);
			/* a few steps on */
			for (int i = 1; i < 4 && want + i * 10 <= 100000; i++) {
				CHECK_OK(btree_cursor_next(&c));
				CHECK(c.valid);
				CHECK_EQ(get_be64(btree_cursor_key(&c)),
					 want + i * 10);
			}
		}
		btree_cursor_close(&c);
	}
	env_teardown(&e);
}

/* Remove [lo, hi) from a tree holding 0..n-1 and check what is left. */
static void range_case(struct env *e, const struct btree_info *info, uint64_t n,
		       int64_t lo, int64_t hi)
{
	uint8_t klo[BTREE_MAX_KEY], khi[BTREE_MAX_KEY];
	uint64_t removed, want, a, b;
	struct btree_cursor c;
	uint64_t k;

	for (k = 0; k < n; k++)
		put_n(e, info, 0, k, k);
	commit_check(e, info, 1);
	a = lo < 0 ? 0 : (uint64_t) lo;
	b = hi < 0 ? n : MIN((uint64_t) hi, n);
	want = b > a ? b - a : 0;
	key_of(info, (uint64_t) lo, klo);
	key_of(info, (uint64_t) hi, khi);
	CHECK_OK(btree_remove_range(info, tm_root(e->tm, 0),
				    lo < 0 ? NULL : klo, hi < 0 ? NULL : khi,
				    &removed));
	CHECK_EQ(removed, want);
	CHECK_EQ(count(e, info, 0), n - want);
	CHECK_OK(btree_cursor_seek(info, tm_root(e->tm, 0), NULL, &c));
	for (k = 0; k < n; k++) {
		if (k >= a && k < b)
			continue;
		CHECK(c.valid);
		CHECK_EQ(get_be64(btree_cursor_key(&c)), k);
		CHECK_OK(btree_cursor_next(&c));
	}
	CHECK(!c.valid);
	btree_cursor_close(&c);
	commit_check(e, info, 1);
	CHECK_OK(btree_del(info, tm_root(e->tm, 0)));
	CHECK_EQ(commit_check(e, info, 1), 0);
}

static void test_remove_range(void)
{
	const uint64_t n = 5000;
	struct env e;
	uint8_t lo[8], hi[8];
	uint64_t removed;

	env_setup(&e);
	for (int i = 0; i < 2; i++) {
		const struct btree_info *info = i ? &e.big : &e.info;

		range_case(&e, info, n, 10, 10);     /* empty */
		range_case(&e, info, n, 20, 10);     /* lo > hi */
		range_case(&e, info, n, -1, -1);     /* everything */
		range_case(&e, info, n, -1, 1);	     /* first key */
		range_case(&e, info, n, n - 1, -1);  /* last key */
		range_case(&e, info, n, n, n + 100); /* beyond the end */
		range_case(&e, info, n, 100, 140);   /* partial leaf */
		range_case(&e, info, n, 100, 4900);  /* many leaves */
		range_case(&e, info, n, 1, n - 1);   /* all but 2 */
		range_case(&e, info, n, -1, n / 2);  /* front half */
		range_case(&e, info, n, n / 3, -1);  /* tail */
		range_case(&e, info, 3, 0, 2);	     /* single leaf */
	}
	/* without nr_removed, and with values that hold no references,
	 * whole subtrees go unread: from a cold cache, far fewer node reads
	 * than the range's ~380 leaves */
	e.info.value.inc = e.info.value.dec = NULL;
	e.info.value.check = NULL;
	for (uint64_t k = 0; k < 50000; k++)
		put_n(&e, &e.info, 0, k, k);
	commit_check(&e, &e.info, 1);
	env_reopen(&e);
	key_of(&e.info, 77, lo);
	key_of(&e.info, 49000, hi);
	{
		struct bc_stats st0, st1;

		bc_stats(tm_bc(e.tm), &st0);
		CHECK_OK(btree_remove_range(&e.info, tm_root(e.tm, 0), lo, hi,
					    NULL));
		bc_stats(tm_bc(e.tm), &st1);
		printf("remove_range of 48923 keys in 50000: %llu node "
		       "reads\n",
		       (unsigned long long) (st1.reads - st0.reads));
		CHECK(st1.reads - st0.reads < 60);
	}
	CHECK_EQ(count(&e, &e.info, 0), 50000 - (49000 - 77));
	expect(&e, &e.info, 0, 76, 76);
	expect(&e, &e.info, 0, 77, ~0ull);
	expect(&e, &e.info, 0, 48999, ~0ull);
	expect(&e, &e.info, 0, 49000, 49000);
	commit_check(&e, &e.info, 1);
	CHECK_OK(btree_remove_range(&e.info, tm_root(e.tm, 0), NULL, NULL,
				    &removed));
	CHECK_EQ(removed, 1077);
	CHECK_EQ(tm_root(e.tm, 0)->blocknr, 0);
	CHECK_EQ(commit_check(&e, &e.info, 1), 0);
	env_teardown(&e);
}

/*
 * Removing the front of a tree that shares its nodes with a clone, up to
 * a leaf's first key (what reclaim does with a deleted snapshot's tree):
 * the subtrees inside the range go whole, unread, their counts dropped,
 * and only the path above the cut is copied.  The clone is untouched.
 */
static void test_remove_shared_prefix(void)
{
	const uint64_t n = 40000;
	struct tm_commit_stats c0, c1;
	struct btree_cursor c;
	struct bc_stats st0, st1;
	uint8_t hi[8];
	uint64_t cut = 0, k = 0;
	struct env e;

	env_setup(&e);
	for (k = 0; k < n; k++)
		put_n(&e, &e.info, 0, k, k);
	commit_check(&e, &e.info, 1);
	CHECK_OK(btree_clone(&e.info, tm_root(e.tm, 0), tm_root(e.tm, 1)));
	commit_check(&e, &e.info, 2);
	/* the first leaf boundary past 9/10 of the keys */
	CHECK_OK(btree_cursor_seek(&e.info, tm_root(e.tm, 1), NULL, &c));
	for (k = 0; c.valid; k++) {
		if (k >= n * 9 / 10 && c.path[c.depth - 1].index == 0) {
			memcpy(hi, btree_cursor_key(&c), 8);
			cut = k;
			break;
		}
		CHECK_OK(btree_cursor_next(&c));
	}
	btree_cursor_close(&c);
	CHECK(cut);
	env_reopen(&e);
	tm_commit_stats(e.tm, &c0);
	bc_stats(tm_bc(e.tm), &st0);
	CHECK_OK(btree_remove_range(&e.info, tm_root(e.tm, 1), NULL, hi, NULL));
	bc_stats(tm_bc(e.tm), &st1);
	CHECK_EQ(commit_check(&e, &e.info, 2) > 0, 1);
	tm_commit_stats(e.tm, &c1);
	printf("remove_range of the first %llu of %llu keys shared with a "
	       "clone: %llu node reads, %llu nodes written\n",
	       (unsigned long long) cut, (unsigned long long) n,
	       (unsigned long long) (st1.reads - st0.reads),
	       (unsigned long long) (c1.nodes_written - c0.nodes_written));
	/* a tree of three levels: the two nodes above the cut copied, the
	 * subtrees before it dropped unread (descending into the first
	 * of them, as before, read 11 nodes and wrote 9) */
	CHECK(st1.reads - st0.reads <= 8);
	CHECK(c1.nodes_written - c0.nodes_written <= 7);
	CHECK_EQ(count(&e, &e.info, 1), n - cut);
	CHECK_EQ(count(&e, &e.info, 0), n);
	expect(&e, &e.info, 1, cut - 1, ~0ull);
	expect(&e, &e.info, 1, cut, cut);
	expect(&e, &e.info, 0, 0, 0);
	env_teardown(&e);
}

/* The first keys of the leaves of the tree in slot (at most max); returns
 * how many leaves it has. */
static size_t leaf_starts(struct env *e, const struct btree_info *info,
			  unsigned int slot, uint64_t *out, size_t max)
{
	struct btree_cursor c;
	size_t n = 0;

	CHECK_OK(btree_cursor_seek(info, tm_root(e->tm, slot), NULL, &c));
	while (c.valid) {
		if (c.path[c.depth - 1].index == 0) {
			if (n < max)
				out[n] = get_be64(btree_cursor_key(&c));
			n++;
		}
		CHECK_OK(btree_cursor_next(&c));
	}
	btree_cursor_close(&c);
	return n;
}

/* The children of the root of the tree in slot (0 for a leaf root), and
 * the root's second key (its second child's lower bound) in *second, read
 * from the node (docs/format.md: nr_entries at byte 40, keys from 64). */
static unsigned int root_children(struct env *e, const struct btree_info *info,
				  unsigned int slot, uint64_t *second)
{
	struct btree_cursor c;
	unsigned int h, nr = 0;
	const uint8_t *d;

	CHECK_OK(btree_height(info, tm_root(e->tm, slot), &h));
	if (!h)
		return 0;
	CHECK_OK(btree_cursor_seek(info, tm_root(e->tm, slot), NULL, &c));
	CHECK(c.valid && c.depth == h + 1);
	d = c.path[0].node->data;
	nr = get_le16(d + 40);
	if (nr > 1 && second)
		*second = get_be64(d + 64 + info->key_size);
	btree_cursor_close(&c);
	return nr;
}

/*
 * A range removal that drops one child of a root of two whole, and finds
 * nothing left in the range after it, must still make the other child the
 * root (rule 5: an internal root has two children at least; the checker
 * said "internal root with 1 children" for good, and `thinvol check` the
 * pool DAMAGED, after a trim of exactly a volume's first leaf).  Either
 * child, at every height, shared with a clone or not.
 */
static void test_range_root(void)
{
	for (int big = 0; big < 2; big++) {
		for (unsigned int height = 1; height <= (big ? 3u : 2u);
		     height++) {
			for (int which = 0; which < 4; which++) {
				struct env e;
				const struct btree_info *info;
				uint64_t n = 0, starts[2] = {0, 0}, want;
				uint8_t lo[BTREE_MAX_KEY], hi[BTREE_MAX_KEY];
				bool shared = which & 2, second = which & 1;
				unsigned int h = 0;

				env_setup(&e);
				info = big ? &e.big : &e.info;
				/* sequential inserts until the root has two
				 * children at this height */
				for (;;) {
					put_n(&e, info, 0, n, n);
					n++;
					CHECK_OK(btree_height(
					    info, tm_root(e.tm, 0), &h));
					if (h == height &&
					    root_children(&e, info, 0,
							  &starts[1]) == 2)
						break;
					CHECK(h <= height);
				}
				commit_check(&e, info, 1);
				/* sequential keys: the second child's first
				 * key is the root's separator */
				expect(&e, info, 0, starts[1], starts[1]);
				if (shared) {
					CHECK_OK(btree_clone(info,
							     tm_root(e.tm, 0),
							     tm_root(e.tm, 1)));
					commit_check(&e, info, 2);
				}
				key_of(info, starts[second], lo);
				key_of(info, starts[1], hi);
				CHECK_OK(btree_remove_range(
				    info, tm_root(e.tm, 0), lo,
				    second ? NULL : hi, NULL));
				want = second ? starts[1] : n - starts[1];
				CHECK_EQ(count(&e, info, 0), want);
				CHECK_OK(
				    btree_height(info, tm_root(e.tm, 0), &h));
				CHECK_EQ(h, height - 1);
				/* the checker: clean, no root of one child */
				commit_check(&e, info, shared ? 2 : 1);
				for (uint64_t k = 0; k < n; k++)
					expect(&e, info, 0, k,
					       (k < starts[1]) == second
						   ? k
						   : ~0ull);
				if (shared)
					CHECK_EQ(count(&e, info, 1), n);
				env_teardown(&e);
			}
		}
	}
}

/* One end of a random range in a tree of keys below space: often a leaf's
 * first key (whole subtrees go then), sometimes the end of the tree. */
static bool range_end(struct trng *rng, const uint64_t *starts, size_t ns,
		      uint64_t space, uint64_t *k)
{
	uint64_t p = trng_below(rng, 8);

	if (p == 0)
		return false;
	if (p < 5 && ns)
		*k = starts[trng_below(rng, ns)];
	else
		*k = trng_below(rng, space + 1);
	return true;
}

/* Tree slot must hold exactly the keys have[] marks, each with payload k. */
static void verify_model(struct env *e, const struct btree_info *info,
			 unsigned int slot, const bool *have, uint64_t space)
{
	struct btree_cursor c;
	uint8_t v[BTREE_MAX_VALUE];
	uint64_t k = 0;

	CHECK_OK(btree_cursor_seek(info, tm_root(e->tm, slot), NULL, &c));
	for (; c.valid; k++) {
		while (k < space && !have[k])
			k++;
		CHECK(k < space);
		CHECK_EQ(get_be64(btree_cursor_key(&c)), k);
		memcpy(v, btree_cursor_value(&c), info->value.size);
		CHECK_EQ(get_le64(v + 8), k);
		CHECK_OK(btree_cursor_next(&c));
	}
	btree_cursor_close(&c);
	while (k < space)
		CHECK(!have[k++]);
}

/*
 * Randomized range removals against a model, the checker after every
 * one: trees of random shape (sequential runs and scattered keys, up to
 * four levels), half of them shared with a clone that must not change,
 * ranges whose ends are often a leaf's first key (where drop_children
 * and drop_child_whole release whole subtrees) or the end of the tree.
 * TV_SEED replays.
 */
static void test_range_random(uint64_t seed)
{
	enum { ROUNDS = 120, STARTS = 4096 };
	static uint64_t starts[STARTS];
	uint64_t removals = 0, max_h = 0;
	struct trng rng;
	struct env e;

	trng_init(&rng, seed);
	env_setup(&e);
	for (int round = 0; round < ROUNDS; round++) {
		bool big = trng_below(&rng, 2), shared = trng_below(&rng, 2);
		const struct btree_info *info = big ? &e.big : &e.info;
		uint64_t space = 1 + trng_below(&rng, big ? 2500 : 40000);
		bool *have = calloc(space, 1), *orig = calloc(space, 1);
		uint64_t n = 0, want = 1 + trng_below(&rng, space);
		unsigned int h;

		CHECK(have && orig);
		while (n < want) {
			/* a run of consecutive keys, or a scattered one */
			uint64_t k = trng_below(&rng, space);
			uint64_t len = trng_below(&rng, 3)
					   ? 1 + trng_below(&rng, space / 4 + 1)
					   : 1;

			for (; len-- && k < space && n < want; k++) {
				if (have[k])
					continue;
				put_n(&e, info, 0, k, k);
				have[k] = true;
				n++;
			}
		}
		commit_check(&e, info, 1);
		CHECK_OK(btree_height(info, tm_root(e.tm, 0), &h));
		max_h = MAX(max_h, h);
		memcpy(orig, have, space);
		if (shared) {
			CHECK_OK(btree_clone(info, tm_root(e.tm, 0),
					     tm_root(e.tm, 1)));
			commit_check(&e, info, 2);
		}
		for (int j = 0; j < 5 && tm_root(e.tm, 0)->blocknr; j++) {
			uint8_t klo[BTREE_MAX_KEY], khi[BTREE_MAX_KEY];
			size_t ns = leaf_starts(&e, info, 0, starts, STARTS);
			uint64_t lo = 0, hi = 0, gone = 0, removed = 0;
			bool has_lo = range_end(&rng, starts, MIN(ns, STARTS),
						space, &lo);
			bool has_hi = range_end(&rng, starts, MIN(ns, STARTS),
						space, &hi);
			bool counted = trng_below(&rng, 2);

			if (has_lo && has_hi && lo > hi) {
				uint64_t x = lo;

				lo = hi;
				hi = x;
			}
			key_of(info, lo, klo);
			key_of(info, hi, khi);
			CHECK_OK(btree_remove_range(
			    info, tm_root(e.tm, 0), has_lo ? klo : NULL,
			    has_hi ? khi : NULL, counted ? &removed : NULL));
			for (uint64_t k = has_lo ? lo : 0;
			     k < (has_hi ? MIN(hi, space) : space); k++) {
				gone += have[k];
				have[k] = false;
			}
			if (counted)
				CHECK_EQ(removed, gone);
			removals++;
			commit_check(&e, info, shared ? 2 : 1);
			verify_model(&e, info, 0, have, space);
			if (shared)
				verify_model(&e, info, 1, orig, space);
		}
		CHECK_OK(btree_del(info, tm_root(e.tm, 0)));
		if (shared)
			CHECK_OK(btree_del(info, tm_root(e.tm, 1)));
		CHECK_EQ(commit_check(&e, info, 2), 0);
		free(have);
		free(orig);
	}
	env_teardown(&e);
	printf("random range removals: %llu, the checker clean after each "
	       "(trees up to height %llu)\n",
	       (unsigned long long) removals, (unsigned long long) max_h);
}

/* What btree_release_walk reports, by kind; stops after stop_at calls
 * (0: never) with 7. */
struct rw_count {
	uint64_t alone, shared, values, calls, stop_at;
};

static int rw_count_fn(void *ctx, uint64_t node, const void *value, bool alone)
{
	struct rw_count *c = ctx;

	if (c->stop_at && c->calls >= c->stop_at)
		return 7;
	c->calls++;
	if (value)
		c->values++;
	else if (alone)
		c->alone++;
	else
		c->shared++;
	CHECK(value || node);
	return 0;
}

static struct rw_count release_walk(struct env *e,
				    const struct btree_info *info,
				    unsigned int slot, int64_t lo)
{
	struct rw_count c = {0};
	uint8_t key[BTREE_MAX_KEY];

	key_of(info, (uint64_t) lo, key);
	CHECK_OK(btree_release_walk(info, tm_root(e->tm, slot),
				    lo < 0 ? NULL : key, rw_count_fn, &c));
	return c;
}

/*
 * btree_release_walk reports what btree_del frees (every node of a tree
 * alone, its values), a shared subtree as one count, and stops when told;
 * btree_split_root takes a tree apart into valid trees, down to a leaf,
 * the checker clean after each step, with a clone sharing it all.
 */
static void test_release_split(void)
{
	const uint64_t n = 2000;
	struct rw_count c;
	struct tm_ref kids[32];
	uint64_t nodes, total, k, pieces = 0;
	unsigned int h, nr;
	uint8_t key[BTREE_MAX_KEY], v[BTREE_MAX_VALUE];
	struct env e;

	env_setup(&e);
	for (k = 0; k < n; k++)
		put_n(&e, &e.big, 0, k, k);
	nodes = commit_check(&e, &e.big, 4);
	CHECK_OK(btree_height(&e.big, tm_root(e.tm, 0), &h));
	CHECK(h >= 3);
	/* alone: every node, every value */
	c = release_walk(&e, &e.big, 0, -1);
	CHECK_EQ(c.alone, nodes);
	CHECK_EQ(c.values, n);
	CHECK_EQ(c.shared, 0);
	/* from a key on: the values from there */
	c = release_walk(&e, &e.big, 0, 1234);
	CHECK_EQ(c.values, n - 1234);
	CHECK(c.alone < nodes);
	/* told to stop */
	c.stop_at = 5;
	c.calls = 0;
	CHECK_EQ(
	    btree_release_walk(&e.big, tm_root(e.tm, 0), NULL, rw_count_fn, &c),
	    7);
	CHECK_EQ(c.calls, 5);
	/* shared whole: one count */
	CHECK_OK(btree_clone(&e.big, tm_root(e.tm, 0), tm_root(e.tm, 1)));
	c = release_walk(&e, &e.big, 0, -1);
	CHECK(c.calls == 1 && c.shared == 1);
	c = release_walk(&e, &e.big, 0, 10);
	CHECK_EQ(c.calls, 0); /* the path is shared: nothing is released */
	/* one path apart: that path alone (its leaf's values), the rest
	 * shared subtrees; btree_del frees exactly the nodes reported */
	key_of(&e.big, 1000, key);
	val_of(0, 77, v, e.big.value.size);
	CHECK_OK(btree_update(&e.big, tm_root(e.tm, 1), key, v));
	nodes = commit_check(&e, &e.big, 4);
	c = release_walk(&e, &e.big, 0, -1);
	CHECK_EQ(c.alone, h + 1);
	CHECK(c.values > 0 && c.values < 16);
	CHECK(c.shared > 0);
	CHECK_OK(btree_del(&e.big, tm_root(e.tm, 0)));
	CHECK_EQ(commit_check(&e, &e.big, 4), nodes - c.alone);
	/* slot 1 back to slot 0, shared with slot 3 */
	*tm_root(e.tm, 0) = *tm_root(e.tm, 1);
	tm_root(e.tm, 1)->blocknr = 0;
	tm_root(e.tm, 1)->gen = 0;
	CHECK_OK(btree_clone(&e.big, tm_root(e.tm, 0), tm_root(e.tm, 3)));
	commit_check(&e, &e.big, 4);

	/* split slot 0, then its last child, and so on down to a leaf:
	 * the last child kept in slot 2 and checked, the others released */
	total = n;
	CHECK_ERR(btree_split_root(&e.big, tm_root(e.tm, 2), kids, 32, &nr),
		  -EINVAL);
	*tm_root(e.tm, 2) = *tm_root(e.tm, 0);
	*tm_root(e.tm, 0) = (struct tm_ref){0, 0};
	for (;;) {
		uint64_t last = 0;

		CHECK_OK(btree_height(&e.big, tm_root(e.tm, 2), &h));
		if (!h)
			break;
		CHECK_ERR(
		    btree_split_root(&e.big, tm_root(e.tm, 2), kids, 1, &nr),
		    -EINVAL);
		CHECK_OK(
		    btree_split_root(&e.big, tm_root(e.tm, 2), kids, 32, &nr));
		CHECK(nr >= 2);
		CHECK_EQ(tm_root(e.tm, 2)->blocknr, 0);
		for (unsigned int i = 0; i < nr; i++) {
			struct btree_cursor cur;
			uint64_t m;

			/* each a tree, in key order */
			CHECK_OK(btree_count(&e.big, &kids[i], &m));
			CHECK_OK(
			    btree_cursor_seek(&e.big, &kids[i], NULL, &cur));
			CHECK(cur.valid);
			CHECK(!i || get_be64(btree_cursor_key(&cur)) >= last);
			btree_cursor_close(&cur);
			if (i + 1 < nr) {
				CHECK_OK(btree_del(&e.big, &kids[i]));
				total -= m;
			}
			last = m;
		}
		*tm_root(e.tm, 2) = kids[nr - 1];
		/* the last child a tree the checker finds sound (rule 5
		 * too), the other pieces released, the clone untouched */
		commit_check(&e, &e.big, 4);
		CHECK_EQ(count(&e, &e.big, 2), total);
		CHECK_EQ(count(&e, &e.big, 3), n);
		pieces += nr;
	}
	CHECK_ERR(btree_split_root(&e.big, tm_root(e.tm, 2), kids, 32, &nr),
		  -EINVAL);
	/* what is left is the last keys */
	for (k = 0; k < n; k++)
		expect(&e, &e.big, 2, k,
		       k >= n - total ? (k == 1000 ? 77 : k) : ~0ull);
	CHECK_OK(btree_del(&e.big, tm_root(e.tm, 2)));
	CHECK_OK(btree_del(&e.big, tm_root(e.tm, 3)));
	CHECK_EQ(commit_check(&e, &e.big, 4), 0);
	printf("release walk and root splits: %llu pieces\n",
	       (unsigned long long) pieces);
	env_teardown(&e);
}

/* Clone, then change each side: the other must not see it. */
static void test_clone(void)
{
	struct env e;
	uint8_t lo[200], hi[200], key[200], v[300];
	uint64_t k, shared, nodes;
	unsigned int h;

	env_setup(&e);
	for (k = 0; k < 3000; k++)
		put_n(&e, &e.big, 0, k, k);
	shared = commit_check(&e, &e.big, 2);
	CHECK_OK(btree_clone(&e.big, tm_root(e.tm, 0), tm_root(e.tm, 1)));
	CHECK_EQ(tm_root(e.tm, 1)->blocknr, tm_root(e.tm, 0)->blocknr);
	/* a clone costs no node */
	CHECK_EQ(commit_check(&e, &e.big, 2), shared);

	/* one change copies one path */
	CHECK_OK(btree_height(&e.big, tm_root(e.tm, 1), &h));
	key_of(&e.big, 1500, key);
	val_of(0, 7, v, 300);
	CHECK_OK(btree_update(&e.big, tm_root(e.tm, 1), key, v));
	CHECK_EQ(commit_check(&e, &e.big, 2), shared + h + 1);
	expect(&e, &e.big, 0, 1500, 1500);
	expect(&e, &e.big, 1, 1500, 7);

	/* B: removals, range removal, inserts */
	for (k = 0; k < 3000; k += 3) {
		key_of(&e.big, k, key);
		CHECK_OK(btree_remove(&e.big, tm_root(e.tm, 1), key, NULL));
	}
	key_of(&e.big, 2000, lo);
	key_of(&e.big, 2500, hi);
	CHECK_OK(btree_remove_range(&e.big, tm_root(e.tm, 1), lo, hi, NULL));
	for (k = 3000; k < 3500; k++)
		put_n(&e, &e.big, 1, k, k + 1);
	commit_check(&e, &e.big, 2);
	/* A: updates everywhere */
	for (k = 0; k < 3000; k += 5) {
		key_of(&e.big, k, key);
		val_of(0, k + 2, v, 300);
		CHECK_OK(btree_update(&e.big, tm_root(e.tm, 0), key, v));
	}
	commit_check(&e, &e.big, 2);
	for (k = 0; k < 3500; k++) {
		expect(&e, &e.big, 0, k, k >= 3000 ? ~0ull : k % 5 ? k : k + 2);
		if (k < 3000 && (k % 3 == 0 || (k >= 2000 && k < 2500)))
			expect(&e, &e.big, 1, k, ~0ull);
		else
			expect(&e, &e.big, 1, k,
			       k >= 3000   ? k + 1
			       : k == 1500 ? 7
					   : k);
	}

	/* deleting one frees exactly what the other does not use */
	nodes = commit_check(&e, &e.big, 2);
	CHECK_OK(btree_del(&e.big, tm_root(e.tm, 1)));
	CHECK_EQ(tm_root(e.tm, 1)->blocknr, 0);
	shared = commit_check(&e, &e.big, 2);
	CHECK(shared < nodes);
	/* a tree alone: every node is its own */
	CHECK_OK(btree_clone(&e.big, tm_root(e.tm, 0), tm_root(e.tm, 2)));
	CHECK_OK(btree_del(&e.big, tm_root(e.tm, 0)));
	CHECK_EQ(commit_check(&e, &e.big, 3), shared);
	CHECK_OK(btree_del(&e.big, tm_root(e.tm, 2)));
	CHECK_EQ(commit_check(&e, &e.big, 3), 0);
	env_teardown(&e);
}

/* Values holding data blocks: counts follow copies of shared leaves. */
static void test_value_refs(void)
{
	struct env e;
	struct sm *sm;
	uint8_t key[8], v[16];
	uint64_t blocks[64], nb;
	uint32_t cnt;

	env_setup(&e);
	sm = tm_sm(e.tm);
	/* 64 keys with a block each, then 2000 without: a few leaves */
	for (uint64_t k = 0; k < 64; k++) {
		CHECK_OK(sm_alloc_block(sm, &blocks[k]));
		key_of(&e.info, k, key);
		val_of(blocks[k], k, v, 16);
		CHECK_OK(btree_insert(&e.info, tm_root(e.tm, 0), key, v));
	}
	for (uint64_t k = 64; k < 2064; k++)
		put_n(&e, &e.info, 0, k, k);
	commit_check(&e, &e.info, 2);
	CHECK_OK(btree_clone(&e.info, tm_root(e.tm, 0), tm_root(e.tm, 1)));
	commit_check(&e, &e.info, 2);
	/* the leaf is shared: one reference to each block */
	CHECK_OK(sm_block_count(sm, blocks[3], &cnt));
	CHECK_EQ(cnt, 1);

	/* changing key 5 in the clone copies its leaf: its values gain an
	 * owner */
	key_of(&e.info, 5, key);
	CHECK_OK(sm_alloc_block(sm, &nb));
	val_of(nb, 500, v, 16);
	CHECK_OK(btree_update(&e.info, tm_root(e.tm, 1), key, v));
	commit_check(&e, &e.info, 2);
	CHECK_OK(sm_block_count(sm, blocks[3], &cnt));
	CHECK_EQ(cnt, 2);
	CHECK_OK(sm_block_count(sm, blocks[5], &cnt));
	CHECK_EQ(cnt, 1);
	CHECK_OK(sm_block_count(sm, nb, &cnt));
	CHECK_EQ(cnt, 1);

	/* an -EEXIST insert leaves the reference with the caller */
	key_of(&e.info, 6, key);
	val_of(nb, 0, v, 16);
	CHECK_OK(sm_inc_block(sm, nb));
	CHECK_ERR(btree_insert(&e.info, tm_root(e.tm, 1), key, v), -EEXIST);
	CHECK_OK(sm_dec_block(sm, nb, NULL));

	/* remove with value_out hands the reference over */
	key_of(&e.info, 7, key);
	CHECK_OK(btree_remove(&e.info, tm_root(e.tm, 1), key, v));
	CHECK_EQ(get_le64(v), blocks[7]);
	CHECK_OK(sm_block_count(sm, blocks[7], &cnt));
	CHECK_EQ(cnt, 2); /* the copy of the leaf took one */
	CHECK_OK(sm_dec_block(sm, blocks[7], NULL));
	commit_check(&e, &e.info, 2);

	/* removing in the original drops its reference only */
	key_of(&e.info, 3, key);
	CHECK_OK(btree_remove(&e.info, tm_root(e.tm, 0), key, NULL));
	CHECK_OK(sm_block_count(sm, blocks[3], &cnt));
	CHECK_EQ(cnt, 1);
	commit_check(&e, &e.info, 2);

	/* deleting the clone drops what only it referenced */
	CHECK_OK(btree_del(&e.info, tm_root(e.tm, 1)));
	commit_check(&e, &e.info, 2);
	CHECK_OK(sm_block_count(sm, nb, &cnt));
	CHECK_EQ(cnt, 0);
	CHECK_OK(sm_block_count(sm, blocks[3], &cnt));
	CHECK_EQ(cnt, 0);
	CHECK_OK(sm_block_count(sm, blocks[5], &cnt));
	CHECK_EQ(cnt, 1);
	/* range removal drops values too */
	CHECK_OK(
	    btree_remove_range(&e.info, tm_root(e.tm, 0), NULL, NULL, NULL));
	commit_check(&e, &e.info, 2);
	for (int i = 0; i < 64; i++) {
		/* blocks[3] was freed a commit earlier: free space may have
		 * been handed out again (metadata of this commit) */
		if (i == 3)
			continue;
		CHECK_OK(sm_block_count(sm, blocks[i], &cnt));
		CHECK_EQ(cnt, 0);
	}
	env_teardown(&e);
}

static void test_persist_abort(void)
{
	struct env e;
	uint64_t k;

	env_setup(&e);
	for (k = 0; k < 20000; k++)
		put_n(&e, &e.info, 0, k * 2, k);
	commit_check(&e, &e.info, 1);
	/* uncommitted changes vanish on abort and on close */
	for (k = 0; k < 20000; k += 2)
		put_n(&e, &e.info, 0, k * 2 + 1, k);
	CHECK_OK(tm_abort(e.tm));
	CHECK_EQ(count(&e, &e.info, 0), 20000);
	put_n(&e, &e.info, 0, 1, 1);
	env_reopen(&e);
	CHECK_EQ(count(&e, &e.info, 0), 20000);
	expect(&e, &e.info, 0, 1, ~0ull);
	for (k = 0; k < 20000; k += 13)
		expect(&e, &e.info, 0, k * 2, k);
	commit_check(&e, &e.info, 1);
	env_teardown(&e);
}

/* Flip a byte of node nr in the image; reseal if asked (so that only the
 * btree's own validation can notice). */
static void corrupt(struct env *e, uint64_t nr, size_t off, uint8_t x,
		    bool reseal)
{
	uint8_t *node;

	tm_close(e->tm);
	node = io_mem_data(e->dev) + nr * PD_NODE_SIZE;
	node[off] ^= x;
	if (reseal)
		bc_seal(node);
	env_open(e);
}

static void test_corrupt(void)
{
	struct env e;
	struct check_report rep;
	struct tm_ref root, child;
	uint8_t key[8], v[16], *node;

	/* a flipped byte: the checksum catches it.  (The errors logged below
	 * are expected.) */
	quiet = true;
	env_setup(&e);
	for (uint64_t k = 0; k < 5000; k++)
		put_n(&e, &e.info, 0, k, k);
	commit_check(&e, &e.info, 1);
	root = *tm_root(e.tm, 0);
	corrupt(&e, root.blocknr, 100, 0x10, false);
	key_of(&e.info, 17, key);
	CHECK_ERR(btree_lookup(&e.info, tm_root(e.tm, 0), key, v), -EUCLEAN);
	CHECK_ERR(btree_insert(&e.info, tm_root(e.tm, 0), key, v), -EUCLEAN);
	CHECK_OK(tm_abort(e.tm));
	rep = run_check(&e, &e.info, 1);
	CHECK(!check_clean(&rep));
	corrupt(&e, root.blocknr, 100, 0x10, false); /* undo */
	rep = run_check(&e, &e.info, 1);
	CHECK(check_clean(&rep));

	/* a resealed btree header: the validator catches each field */
	{
		static const size_t offs[] = {32, 36, 38, 42, 44, 46, 50};

		for (size_t i = 0; i < ARRAY_SIZE(offs); i++) {
			corrupt(&e, root.blocknr, offs[i], 0x40, true);
			CHECK_ERR(
			    btree_lookup(&e.info, tm_root(e.tm, 0), key, v),
			    -EUCLEAN);
			rep = run_check(&e, &e.info, 1);
			CHECK(!check_clean(&rep));
			corrupt(&e, root.blocknr, offs[i], 0x40, true);
			CHECK_OK(
			    btree_lookup(&e.info, tm_root(e.tm, 0), key, v));
		}
	}

	/* a child reference with the wrong generation */
	node = io_mem_data(e.dev) + root.blocknr * PD_NODE_SIZE;
	(void) node;
	{
		unsigned int h;
		size_t max = (PD_NODE_SIZE - BTREE_HEADER_SIZE) / (8 + 16);
		size_t ref_off = BTREE_HEADER_SIZE + max * 8; /* child 0 */

		CHECK_OK(btree_height(&e.info, tm_root(e.tm, 0), &h));
		CHECK(h >= 1);
		tm_close(e.tm);
		node = io_mem_data(e.dev) + root.blocknr * PD_NODE_SIZE;
		ref_load(&child, node + ref_off);
		child.gen ^= 1;
		ref_store(node + ref_off, &child);
		bc_seal(node);
		env_open(&e);
		key_of(&e.info, 0, key);
		CHECK_ERR(btree_lookup(&e.info, tm_root(e.tm, 0), key, v),
			  -EUCLEAN);
		key_of(&e.info, 4999, key);
		CHECK_OK(btree_lookup(&e.info, tm_root(e.tm, 0), key, v));
		rep = run_check(&e, &e.info, 1);
		CHECK(!check_clean(&rep));
	}
	env_teardown(&e);
}

static size_t pinned(struct tm *tm)
{
	struct bc_stats st;

	bc_stats(tm_bc(tm), &st);
	return st.pinned;
}

/* One batch of changes; stops at the first error and returns it. */
static int fault_batch(struct env *e)
{
	uint8_t key[200], hi[200], v[300];
	struct btree_cursor c;
	int r = 0;

	val_of(0, 1, v, 300);
	for (uint64_t k = 0; k < 3000 && !r; k += 97) {
		key_of(&e->big, k * 2 + 1, key);
		r = btree_insert(&e->big, tm_root(e->tm, 0), key, v);
	}
	for (uint64_t k = 0; k < 3000 && !r; k += 89) {
		key_of(&e->big, k * 2, key);
		r = btree_remove(&e->big, tm_root(e->tm, 0), key, NULL);
	}
	if (!r)
		r = btree_clone(&e->big, tm_root(e->tm, 0), tm_root(e->tm, 1));
	key_of(&e->big, 1000, key);
	key_of(&e->big, 3000, hi);
	if (!r)
		r = btree_remove_range(&e->big, tm_root(e->tm, 1), key, hi,
				       NULL);
	if (!r) {
		r = btree_cursor_seek(&e->big, tm_root(e->tm, 0), key, &c);
		while (!r && c.valid)
			r = btree_cursor_next(&c);
		btree_cursor_close(&c);
	}
	if (!r)
		r = btree_lookup_le(&e->big, tm_root(e->tm, 0), hi, NULL, v);
	if (!r)
		r = btree_del(&e->big, tm_root(e->tm, 0));
	return r;
}

/*
 * Fail the Nth I/O for every N during a batch of changes, with a small
 * cache so that nodes come and go: the error is returned, no pin is left
 * behind, and after abort the tree is the committed one.
 */
static void test_faults(void)
{
	struct tm_open_opts oo = {.cache_bytes = 64 * PD_NODE_SIZE};
	struct io_dev *fdev, *mem;
	struct check_report rep;
	struct env e;
	uint64_t n, nfail = 0;
	int r;

	env_setup(&e);
	for (uint64_t k = 0; k < 3000; k++)
		put_n(&e, &e.big, 0, k * 2, k);
	commit_check(&e, &e.big, 2);
	tm_close(e.tm);
	mem = e.dev;
	CHECK_OK(io_fault_wrap(mem, false, &fdev));
	for (n = 1;; n++) {
		struct io_fault_cfg cfg = {
		    .fail_at = n,
		    .persistent = true,
		    .error = -EIO,
		    .kind = IO_FAULT_ERROR,
		    .op_mask = IO_OP_ALL,
		};

		io_fault_disarm(fdev);
		CHECK_OK(tm_open(fdev, &oo, &e.tm));
		e.info.tm = e.big.tm = e.tm;
		io_fault_arm(fdev, &cfg);
		r = fault_batch(&e);
		CHECK_EQ(pinned(e.tm), 0);
		io_fault_disarm(fdev);
		if (!r) {
			tm_close(e.tm);
			break;
		}
		nfail++;
		CHECK(r < 0);
		CHECK_OK(tm_abort(e.tm));
		CHECK_EQ(count(&e, &e.big, 0), 3000);
		CHECK_EQ(tm_root(e.tm, 1)->blocknr, 0);
		rep = run_check(&e, &e.big, 2);
		CHECK(check_clean(&rep));
		tm_close(e.tm);
	}
	printf("faults: %llu failing I/O points\n", (unsigned long long) nfail);
	CHECK(nfail > 10);
	io_close(fdev);
	e.dev = mem;
	env_open(&e);
	env_teardown(&e);
}

/*
 * Changes through a hint (btree_put_hinted, btree_remove_hinted) against
 * a model: runs of neighbouring keys (the fast path in the hinted leaf)
 * mixed with random ones, splits and merges (the ordinary path), removes
 * of absent keys, values holding data block references (dropped on
 * overwrite and remove, or handed out), down to the empty tree and back.
 * The store must check clean at every commit (references counted
 * exactly), and every key must read back.
 */
static void hinted_round(struct env *e, const struct btree_info *info,
			 struct trng *r, uint64_t *model, uint64_t range,
			 unsigned int ops, unsigned int remove_pct)
{
	struct btree_hint h = BTREE_HINT_INIT;
	uint8_t key[BTREE_MAX_KEY], v[BTREE_MAX_VALUE];
	struct sm *sm = tm_sm(e->tm);
	uint64_t k = trng_below(r, range);

	for (unsigned int i = 0; i < ops; i++) {
		/* mostly the next key: the same leaf as the last change */
		k = trng_below(r, 4) ? (k + 1) % range : trng_below(r, range);
		key_of(info, k, key);
		if (trng_below(r, 100) < remove_pct) {
			bool take = trng_below(r, 2);
			int rr = btree_remove_hinted(info, tm_root(e->tm, 0),
						     &h, key, take ? v : NULL);

			if (!model[k]) {
				CHECK_ERR(rr, -ENOENT);
				continue;
			}
			CHECK_OK(rr);
			if (take) {
				/* the caller now holds the reference */
				CHECK_EQ(get_le64(v + 8), model[k]);
				if (get_le64(v))
					CHECK_OK(sm_dec_block(sm, get_le64(v),
							      NULL));
			}
			model[k] = 0;
		} else {
			uint64_t b = 0, payload = trng_next(r) | 1;
			bool ins;

			if (trng_below(r, 2))
				CHECK_OK(sm_alloc_block(sm, &b));
			val_of(b, payload, v, info->value.size);
			CHECK_OK(btree_put_hinted(info, tm_root(e->tm, 0), &h,
						  key, v, &ins));
			CHECK_EQ(ins, !model[k]);
			model[k] = payload;
		}
	}
	btree_hint_drop(info, &h);
	CHECK(h.leaf == NULL);
	commit_check(e, info, 1);
	for (uint64_t j = 0; j < range; j++)
		expect(e, info, 0, j, model[j] ? model[j] : ~0ull);
}

static void test_hinted(const struct btree_info *(*pick)(struct env *),
			uint64_t range)
{
	struct env e;
	const struct btree_info *info;
	uint64_t *model = calloc(range, sizeof(*model));
	struct trng r;
	uint64_t left = 0;

	CHECK(model != NULL);
	env_setup(&e);
	info = pick(&e);
	trng_init(&r, tseed("test-btree hinted"));
	/* grow, churn, shrink to nothing, grow again */
	for (int round = 0; round < 6; round++)
		hinted_round(&e, info, &r, model, range, 400, 20);
	for (int round = 0; round < 6; round++)
		hinted_round(&e, info, &r, model, range, 400, 50);
	for (int round = 0; round < 40; round++)
		hinted_round(&e, info, &r, model, range, 400, 95);
	/* then remove whatever is left, in order, through one hint */
	{
		struct btree_hint h = BTREE_HINT_INIT;
		uint8_t key[BTREE_MAX_KEY];

		for (uint64_t k = 0; k < range; k++) {
			key_of(info, k, key);
			CHECK_ERR(btree_remove_hinted(info, tm_root(e.tm, 0),
						      &h, key, NULL),
				  model[k] ? 0 : -ENOENT);
			model[k] = 0;
		}
		btree_hint_drop(info, &h);
	}
	CHECK_EQ(tm_root(e.tm, 0)->blocknr, 0);
	commit_check(&e, info, 1);
	for (int round = 0; round < 3; round++)
		hinted_round(&e, info, &r, model, range, 400, 10);
	for (uint64_t j = 0; j < range; j++)
		left += model[j] != 0;
	CHECK(left > 0);
	CHECK(count(&e, info, 0) == left);
	env_reopen(&e);
	for (uint64_t j = 0; j < range; j++)
		expect(&e, info, 0, j, model[j] ? model[j] : ~0ull);
	env_teardown(&e);
	free(model);
}

/* A hinted put of key k (payload) in a tree of e->big, which must be
 * an overwrite. */
static void put_hinted(struct env *e, struct btree_hint *h, unsigned int slot,
		       uint64_t k, uint64_t payload)
{
	uint8_t key[BTREE_MAX_KEY], v[BTREE_MAX_VALUE];
	bool ins;

	key_of(&e->big, k, key);
	val_of(0, payload, v, e->big.value.size);
	CHECK_OK(
	    btree_put_hinted(&e->big, tm_root(e->tm, slot), h, key, v, &ins));
	CHECK(!ins);
}

/*
 * A clone taken while a hint is held (btree.h: the hint rules): the hinted
 * leaf is then reachable from the clone too, so the next hinted change
 * must copy it, not change it in place; the clone keeps its contents.
 * Three shapes: a clone of a tree of three levels (only the root's count
 * goes up), a clone whose root a change then copied (the root is private
 * again, the nodes below it shared), and a single leaf.
 */
static void test_hinted_clone(void)
{
	struct btree_hint h = BTREE_HINT_INIT;
	uint8_t key[BTREE_MAX_KEY];
	struct env e;
	uint64_t k, n = 3000;
	unsigned int height;

	env_setup(&e);
	for (k = 0; k < n; k++)
		put_n(&e, &e.big, 0, k, k + 1);
	commit_check(&e, &e.big, 1);
	CHECK_OK(btree_height(&e.big, tm_root(e.tm, 0), &height));
	CHECK(height >= 2);

	/* 1: clone, then a hinted put and remove in the hinted leaf */
	put_hinted(&e, &h, 0, 100, 1000);
	CHECK_OK(btree_clone(&e.big, tm_root(e.tm, 0), tm_root(e.tm, 1)));
	put_hinted(&e, &h, 0, 101, 1001);
	key_of(&e.big, 102, key);
	CHECK_OK(btree_remove_hinted(&e.big, tm_root(e.tm, 0), &h, key, NULL));
	btree_hint_drop(&e.big, &h);
	CHECK(tm_root(e.tm, 0)->blocknr != tm_root(e.tm, 1)->blocknr);
	expect(&e, &e.big, 1, 100, 1000); /* before the clone */
	expect(&e, &e.big, 1, 101, 102);
	expect(&e, &e.big, 1, 102, 103);
	expect(&e, &e.big, 0, 101, 1001);
	expect(&e, &e.big, 0, 102, ~0ull);
	CHECK_EQ(count(&e, &e.big, 1), n);
	CHECK_EQ(count(&e, &e.big, 0), n - 1);
	commit_check(&e, &e.big, 2);

	/* 2: clone, a change through the clone (far from the hinted leaf),
	 * then a hinted put in the hinted leaf */
	put_hinted(&e, &h, 0, 2000, 5);
	CHECK_OK(btree_clone(&e.big, tm_root(e.tm, 0), tm_root(e.tm, 2)));
	put_n(&e, &e.big, 2, n + 5, 9);
	put_hinted(&e, &h, 0, 2001, 6);
	btree_hint_drop(&e.big, &h);
	expect(&e, &e.big, 2, 2000, 5); /* before the clone */
	expect(&e, &e.big, 2, 2001, 2002);
	expect(&e, &e.big, 0, 2001, 6);
	expect(&e, &e.big, 0, n + 5, ~0ull);
	commit_check(&e, &e.big, 3);

	/* 3: a tree of one leaf, which is the root */
	for (k = 0; k < 3; k++)
		put_n(&e, &e.big, 3, k, k + 1);
	commit_check(&e, &e.big, 4);
	put_hinted(&e, &h, 3, 0, 10);
	CHECK_OK(btree_clone(&e.big, tm_root(e.tm, 3), tm_root(e.tm, 4)));
	put_hinted(&e, &h, 3, 1, 11);
	btree_hint_drop(&e.big, &h);
	expect(&e, &e.big, 4, 1, 2);
	expect(&e, &e.big, 3, 1, 11);
	commit_check(&e, &e.big, 5);
	env_teardown(&e);
}

/*
 * Review: hinted changes interleaved with clones (snapshots) of the hinted
 * tree, deletions of clones, and ordinary changes of the clones, against
 * one model per slot.  Every clone must keep its contents whatever the
 * hinted tree does after it, the hint must never hold more than the one
 * pin of its leaf (the fallback drops the old pin), and the store checks
 * clean (counts exact) after every round.
 */
static void test_hinted_snapshots(void)
{
	enum { NS = 4, RANGE = 1500 };
	struct btree_hint h = BTREE_HINT_INIT;
	uint8_t key[BTREE_MAX_KEY], v[BTREE_MAX_VALUE];
	const struct btree_info *info;
	uint64_t *model[NS];
	struct trng r;
	struct env e;
	uint64_t k = 0;

	env_setup(&e);
	info = &e.info;
	trng_init(&r, tseed("test-btree hinted snapshots"));
	for (unsigned int s = 0; s < NS; s++) {
		model[s] = calloc(RANGE, sizeof(uint64_t));
		CHECK(model[s] != NULL);
	}
	for (k = 0; k < RANGE; k += 2) {
		put_n(&e, info, 0, k, k + 1);
		model[0][k] = k + 1;
	}
	commit_check(&e, info, 1);
	for (int round = 0; round < 30; round++) {
		for (int i = 0; i < 300; i++) {
			unsigned int op = trng_below(&r, 100);

			k = trng_below(&r, 4) ? (k + 1) % RANGE
					      : trng_below(&r, RANGE);
			key_of(info, k, key);
			if (op < 4) {
				/* snapshot the hinted tree, hint held */
				unsigned int s = 1 + trng_below(&r, NS - 1);

				if (tm_root(e.tm, s)->blocknr)
					CHECK_OK(
					    btree_del(info, tm_root(e.tm, s)));
				CHECK_OK(btree_clone(info, tm_root(e.tm, 0),
						     tm_root(e.tm, s)));
				memcpy(model[s], model[0],
				       RANGE * sizeof(uint64_t));
			} else if (op < 10) {
				/* an ordinary change in a snapshot */
				unsigned int s = 1 + trng_below(&r, NS - 1);
				uint64_t pl = trng_next(&r) | 1;

				if (!tm_root(e.tm, s)->blocknr)
					continue;
				val_of(0, pl, v, info->value.size);
				CHECK_OK(btree_put(info, tm_root(e.tm, s), key,
						   v, NULL));
				model[s][k] = pl;
			} else if (op < 40) {
				int rr = btree_remove_hinted(
				    info, tm_root(e.tm, 0), &h, key, NULL);

				CHECK_ERR(rr, model[0][k] ? 0 : -ENOENT);
				model[0][k] = 0;
			} else {
				uint64_t pl = trng_next(&r) | 1;
				bool ins;

				val_of(0, pl, v, info->value.size);
				CHECK_OK(btree_put_hinted(
				    info, tm_root(e.tm, 0), &h, key, v, &ins));
				CHECK_EQ(ins, !model[0][k]);
				model[0][k] = pl;
			}
			/* the hint's leaf, and nothing else, stays pinned */
			CHECK_EQ(pinned(e.tm), h.leaf ? 1u : 0u);
		}
		btree_hint_drop(info, &h);
		CHECK_EQ(pinned(e.tm), 0);
		commit_check(&e, info, NS);
		for (unsigned int s = 0; s < NS; s++) {
			if (s && !tm_root(e.tm, s)->blocknr)
				continue;
			for (uint64_t j = 0; j < RANGE; j++)
				expect(&e, info, s, j,
				       model[s][j] ? model[s][j] : ~0ull);
		}
	}
	env_teardown(&e);
	for (unsigned int s = 0; s < NS; s++)
		free(model[s]);
}

static const struct btree_info *pick_small(struct env *e)
{
	return &e->info;
}

static const struct btree_info *pick_big(struct env *e)
{
	return &e->big;
}

int main(void)
{
	test_bad_info();
	test_empty();
	test_basic();
	test_fill(false);
	test_fill(true);
	test_lookup_le();
	test_cursor();
	test_remove_range();
	test_remove_shared_prefix();
	test_range_root();
	test_range_random(tseed("test-btree"));
	test_release_split();
	test_clone();
	test_value_refs();
	test_persist_abort();
	test_corrupt();
	test_faults();
	test_hinted(pick_small, 3000);
	test_hinted(pick_big, 400);
	test_hinted_clone();
	test_hinted_snapshots();
	printf("test-btree: ok\n");
	return 0;
}
