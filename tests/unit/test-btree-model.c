/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Randomized model test of the btree: several trees in the root slots,
 * driven by random inserts, updates, puts, removals, range removals,
 * lookups, scans, clones and deletes, compared after every operation with
 * a sorted array per tree.  Every few operations the transaction commits
 * and the checker must find the store clean; sometimes it aborts instead
 * (the model returns to the committed state), sometimes the store is
 * closed and reopened.
 *
 * Some values hold a reference to a data block, so that the checker also
 * verifies the values' reference counts across clones and copies.
 *
 * TV_SEED replays a run, TV_SCALE lengthens it.
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

#define NR_TREES TM_NR_ROOTS
#define MAX_KS	 256
#define MAX_VS	 768
#define DEV_SIZE (256ull << 20)

/* A configuration: key and value sizes, and how long to run. */
struct cfg {
	const char *name;
	uint32_t key_size;   /* >= 8: the key's first 8 bytes are the number */
	uint32_t value_size; /* >= 16: block (le64), then payload */
	uint64_t ops;
	uint64_t key_space; /* the usual range of key numbers */
};

struct ent {
	uint64_t k;
	uint8_t v[MAX_VS];
};

/* One tree's reference contents: sorted by k. */
struct model {
	struct ent *e;
	size_t n, cap;
};

struct state {
	const struct cfg *cfg;
	struct trng rng;
	struct io_dev *dev;
	struct tm *tm;
	struct btree_info info;
	struct model live[NR_TREES], committed[NR_TREES];
	uint64_t key_space;
	uint64_t nops[16];
	bool paranoid; /* TV_PARANOID: verify every tree after every op */
};

enum {
	OP_INSERT,
	OP_UPDATE,
	OP_PUT,
	OP_REMOVE,
	OP_RANGE,
	OP_LOOKUP,
	OP_LE,
	OP_SCAN,
	OP_CLONE,
	OP_DEL,
	OP_COMMIT,
	OP_ABORT,
	OP_REOPEN,
	OP_BURST,
	OP_COUNT_
};
/* clang-format off */
static const char *const op_names[] = {
	"insert", "update", "put", "remove", "remove_range", "lookup",
	"lookup_le", "scan", "clone", "del", "commit", "abort", "reopen",
	"burst",
};
/* clang-format on */

/* ---- the value type: bytes 0..7 a data block (0: none) ---- */

static uint64_t val_block(const void *v)
{
	return get_le64(v);
}

static int val_inc(void *ctx, const void *v)
{
	struct state *s = ctx;

	return val_block(v) ? sm_inc_block(tm_sm(s->tm), val_block(v)) : 0;
}

static int val_dec(void *ctx, const void *v)
{
	struct state *s = ctx;

	return val_block(v) ? sm_dec_block(tm_sm(s->tm), val_block(v), NULL)
			    : 0;
}

static void val_check(void *ctx, const void *v, struct check *ck)
{
	(void) ctx;
	if (val_block(v))
		check_data_ref(ck, val_block(v));
}

/* ---- keys and values ---- */

static void make_key(const struct state *s, uint64_t k, uint8_t *key)
{
	put_be64(key, k);
	/* the tail is a function of k, so order is k's order */
	for (uint32_t i = 8; i < s->cfg->key_size; i++)
		key[i] = (uint8_t) (k * 31 + i * 7);
}

/* A fresh value: sometimes holding a newly allocated data block (whose
 * reference the caller owns). */
static void make_value(struct state *s, uint8_t *v)
{
	uint64_t block = 0;

	memset(v, 0, s->cfg->value_size);
	if (trng_below(&s->rng, 4) == 0)
		CHECK_OK(sm_alloc_block(tm_sm(s->tm), &block));
	put_le64(v, block);
	for (uint32_t i = 8; i < s->cfg->value_size; i++)
		v[i] = (uint8_t) trng_next(&s->rng);
}

/* Give back a value's references the tree refused (-EEXIST, -ENOENT) or
 * handed out (btree_remove with value_out). */
static void drop_value(struct state *s, const uint8_t *v)
{
	CHECK_OK(val_dec(s, v));
}

/* ---- the model ---- */

static size_t m_lower(const struct model *m, uint64_t k)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->e[mid].k < k)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct ent *m_find(struct model *m, uint64_t k)
{
	size_t i = m_lower(m, k);

	return i < m->n && m->e[i].k == k ? &m->e[i] : NULL;
}

static void m_insert(struct model *m, uint64_t k, const uint8_t *v, uint32_t vs)
{
	size_t i = m_lower(m, k);

	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 64;
		m->e = realloc(m->e, m->cap * sizeof(*m->e));
		CHECK(m->e);
	}
	memmove(&m->e[i + 1], &m->e[i], (m->n - i) * sizeof(*m->e));
	m->e[i].k = k;
	memcpy(m->e[i].v, v, vs);
	m->n++;
}

static void m_erase(struct model *m, size_t i, size_t count)
{
	memmove(&m->e[i], &m->e[i + count], (m->n - i - count) * sizeof(*m->e));
	m->n -= count;
}

static void m_copy(struct model *dst, const struct model *src)
{
	if (dst->cap < src->n) {
		dst->cap = src->n;
		dst->e = realloc(dst->e, dst->cap * sizeof(*dst->e));
		CHECK(dst->e);
	}
	if (src->n)
		memcpy(dst->e, src->e, src->n * sizeof(*src->e));
	dst->n = src->n;
}

/* ---- the store ---- */

static void store_open(struct state *s)
{
	struct tm_open_opts oo = {.cache_bytes = 4u << 20};

	CHECK_OK(tm_open(s->dev, &oo, &s->tm));
	s->info.tm = s->tm;
}

static void store_check(struct state *s)
{
	struct check_root roots[NR_TREES];
	struct check_report rep;

	for (unsigned int i = 0; i < NR_TREES; i++) {
		roots[i].slot = i;
		roots[i].info = &s->info;
		roots[i].name = "model tree";
	}
	CHECK_OK(check_run(s->tm, roots, NR_TREES, stderr, 20, &rep));
	if (!check_clean(&rep))
		fprintf(stderr,
			"check: %llu errors, %llu leaks, %llu missing\n",
			(unsigned long long) rep.errors,
			(unsigned long long) rep.leaks,
			(unsigned long long) rep.missing);
	CHECK(check_clean(&rep));
}

static void commit(struct state *s)
{
	CHECK_OK(tm_commit(s->tm));
	for (unsigned int t = 0; t < NR_TREES; t++)
		m_copy(&s->committed[t], &s->live[t]);
	store_check(s);
}

static void restore_model(struct state *s)
{
	for (unsigned int t = 0; t < NR_TREES; t++)
		m_copy(&s->live[t], &s->committed[t]);
}

/* ---- verification ---- */

/* Full comparison of tree t with its model, by cursor. */
static void verify_tree(struct state *s, unsigned int t)
{
	const struct model *m = &s->live[t];
	struct btree_cursor c;
	uint8_t key[MAX_KS];
	uint64_t count;
	size_t i = 0;

	CHECK_OK(btree_cursor_seek(&s->info, tm_root(s->tm, t), NULL, &c));
	while (c.valid) {
		CHECK(i < m->n);
		make_key(s, m->e[i].k, key);
		CHECK(!memcmp(btree_cursor_key(&c), key, s->cfg->key_size));
		CHECK(!memcmp(btree_cursor_value(&c), m->e[i].v,
			      s->cfg->value_size));
		i++;
		CHECK_OK(btree_cursor_next(&c));
	}
	btree_cursor_close(&c);
	CHECK_EQ(i, m->n);
	CHECK_OK(btree_count(&s->info, tm_root(s->tm, t), &count));
	CHECK_EQ(count, m->n);
	if (!m->n)
		CHECK_EQ(tm_root(s->tm, t)->blocknr, 0);
}

/* ---- operations ---- */

static uint64_t rand_key(struct state *s)
{
	return trng_below(&s->rng, s->key_space);
}

static void op_insert(struct state *s, unsigned int t, int mode)
{
	struct model *m = &s->live[t];
	uint8_t key[MAX_KS], v[MAX_VS];
	uint64_t k = rand_key(s);
	struct ent *e = m_find(m, k);
	struct tm_ref *root = tm_root(s->tm, t);
	bool inserted;
	int r;

	make_key(s, k, key);
	make_value(s, v);
	if (mode == OP_INSERT) {
		r = btree_insert(&s->info, root, key, v);
		CHECK_EQ(r, e ? -EEXIST : 0);
		if (r)
			drop_value(s, v);
		else
			m_insert(m, k, v, s->cfg->value_size);
	} else if (mode == OP_UPDATE) {
		r = btree_update(&s->info, root, key, v);
		CHECK_EQ(r, e ? 0 : -ENOENT);
		if (r)
			drop_value(s, v);
		else
			memcpy(e->v, v, s->cfg->value_size);
	} else {
		CHECK_OK(btree_put(&s->info, root, key, v, &inserted));
		CHECK_EQ(inserted, !e);
		if (e)
			memcpy(e->v, v, s->cfg->value_size);
		else
			m_insert(m, k, v, s->cfg->value_size);
	}
}

/* Many consecutive keys, ascending or descending: builds big, deep trees
 * and exercises the sequential split policy. */
static void op_burst(struct state *s, unsigned int t)
{
	uint64_t n = 50 + trng_below(&s->rng, 400);
	uint64_t k0 = trng_below(&s->rng, s->key_space * 4);
	bool down = trng_below(&s->rng, 2);
	uint8_t key[MAX_KS], v[MAX_VS];

	for (uint64_t i = 0; i < n; i++) {
		uint64_t k = down ? k0 + n - i : k0 + i;
		bool inserted;

		make_key(s, k, key);
		make_value(s, v);
		CHECK_OK(
		    btree_put(&s->info, tm_root(s->tm, t), key, v, &inserted));
		CHECK_EQ(inserted, !m_find(&s->live[t], k));
		if (inserted)
			m_insert(&s->live[t], k, v, s->cfg->value_size);
		else
			memcpy(m_find(&s->live[t], k)->v, v,
			       s->cfg->value_size);
	}
}

static void op_remove(struct state *s, unsigned int t)
{
	struct model *m = &s->live[t];
	uint8_t key[MAX_KS], v[MAX_VS];
	uint64_t k;
	bool take = trng_below(&s->rng, 2);
	size_t i;
	int r;

	/* mostly keys that are there */
	if (m->n && trng_below(&s->rng, 4))
		k = m->e[trng_below(&s->rng, m->n)].k;
	else
		k = rand_key(s);
	make_key(s, k, key);
	i = m_lower(m, k);
	r = btree_remove(&s->info, tm_root(s->tm, t), key, take ? v : NULL);
	if (i < m->n && m->e[i].k == k) {
		CHECK_OK(r);
		if (take) {
			CHECK(!memcmp(v, m->e[i].v, s->cfg->value_size));
			drop_value(s, v);
		}
		m_erase(m, i, 1);
	} else {
		CHECK_EQ(r, -ENOENT);
	}
}

static void op_range(struct state *s, unsigned int t)
{
	struct model *m = &s->live[t];
	uint8_t lo[MAX_KS], hi[MAX_KS];
	uint64_t a, b, removed, want;
	bool has_lo = trng_below(&s->rng, 8), has_hi = trng_below(&s->rng, 8);
	bool count = trng_below(&s->rng, 2);
	size_t i, j;

	a = rand_key(s);
	/* mostly short ranges, sometimes long ones */
	b = a + (trng_below(&s->rng, 4) ? trng_below(&s->rng, 64)
					: trng_below(&s->rng, s->key_space));
	make_key(s, a, lo);
	make_key(s, b, hi);
	i = has_lo ? m_lower(m, a) : 0;
	j = has_hi ? m_lower(m, b) : m->n;
	want = j > i ? j - i : 0;
	if (s->paranoid)
		fprintf(stderr, "range [%s%llu, %s%llu) of %zu: want %llu\n",
			has_lo ? "" : "-", (unsigned long long) a,
			has_hi ? "" : "+", (unsigned long long) b, m->n,
			(unsigned long long) want);
	CHECK_OK(btree_remove_range(&s->info, tm_root(s->tm, t),
				    has_lo ? lo : NULL, has_hi ? hi : NULL,
				    count ? &removed : NULL));
	if (count)
		CHECK_EQ(removed, want);
	if (want)
		m_erase(m, i, want);
}

static void op_lookup(struct state *s, unsigned int t)
{
	struct model *m = &s->live[t];
	uint8_t key[MAX_KS], v[MAX_VS];
	uint64_t k = rand_key(s);
	struct ent *e;
	int r;

	if (m->n && trng_below(&s->rng, 2))
		k = m->e[trng_below(&s->rng, m->n)].k;
	e = m_find(m, k);
	make_key(s, k, key);
	r = btree_lookup(&s->info, tm_root(s->tm, t), key, v);
	if (e) {
		CHECK_OK(r);
		CHECK(!memcmp(v, e->v, s->cfg->value_size));
	} else {
		CHECK_EQ(r, -ENOENT);
	}
}

static void op_le(struct state *s, unsigned int t)
{
	struct model *m = &s->live[t];
	uint8_t key[MAX_KS], kout[MAX_KS], want[MAX_KS], v[MAX_VS];
	uint64_t k = rand_key(s);
	size_t i;
	int r;

	if (m->n && trng_below(&s->rng, 2))
		k = m->e[trng_below(&s->rng, m->n)].k + trng_below(&s->rng, 3);
	make_key(s, k, key);
	i = m_lower(m, k);
	if (i < m->n && m->e[i].k == k)
		i++;
	/* m->e[i - 1] is the largest <= k */
	r = btree_lookup_le(&s->info, tm_root(s->tm, t), key, kout, v);
	if (i == 0) {
		CHECK_EQ(r, -ENOENT);
		return;
	}
	CHECK_OK(r);
	make_key(s, m->e[i - 1].k, want);
	CHECK(!memcmp(kout, want, s->cfg->key_size));
	CHECK(!memcmp(v, m->e[i - 1].v, s->cfg->value_size));
}

static void op_scan(struct state *s, unsigned int t)
{
	struct model *m = &s->live[t];
	uint8_t key[MAX_KS], want[MAX_KS];
	struct btree_cursor c;
	uint64_t k = rand_key(s);
	size_t i, n = trng_below(&s->rng, 300);

	make_key(s, k, key);
	i = m_lower(m, k);
	CHECK_OK(btree_cursor_seek(&s->info, tm_root(s->tm, t), key, &c));
	for (; n--; i++) {
		CHECK_EQ(c.valid, i < m->n);
		if (!c.valid)
			break;
		make_key(s, m->e[i].k, want);
		CHECK(!memcmp(btree_cursor_key(&c), want, s->cfg->key_size));
		CHECK(!memcmp(btree_cursor_value(&c), m->e[i].v,
			      s->cfg->value_size));
		CHECK_OK(btree_cursor_next(&c));
	}
	btree_cursor_close(&c);
}

static void op_del(struct state *s, unsigned int t)
{
	CHECK_OK(btree_del(&s->info, tm_root(s->tm, t)));
	CHECK_EQ(tm_root(s->tm, t)->blocknr, 0);
	s->live[t].n = 0;
}

static void op_clone(struct state *s, unsigned int t)
{
	unsigned int u = (t + 1 + trng_below(&s->rng, NR_TREES - 1)) % NR_TREES;

	if (tm_root(s->tm, u)->blocknr)
		op_del(s, u);
	CHECK_OK(btree_clone(&s->info, tm_root(s->tm, t), tm_root(s->tm, u)));
	m_copy(&s->live[u], &s->live[t]);
}

static void run(const struct cfg *cfg, uint64_t seed)
{
	struct tm_format_opts fo = {.block_size = 4096};
	struct state *s = calloc(1, sizeof(*s));
	uint64_t ops = cfg->ops * tscale(), next_commit;

	CHECK(s);
	s->cfg = cfg;
	trng_init(&s->rng, seed);
	s->info.tag = 0x4d4f444cu; /* "MODL" */
	s->info.key_size = cfg->key_size;
	s->info.value.size = cfg->value_size;
	s->info.value.ctx = s;
	s->info.value.inc = val_inc;
	s->info.value.dec = val_dec;
	s->info.value.check = val_check;
	s->key_space = cfg->key_space;
	s->paranoid = getenv("TV_PARANOID") != NULL;

	CHECK_OK(io_mem_create(DEV_SIZE, &s->dev));
	CHECK_OK(tm_format(s->dev, &fo));
	store_open(s);

	next_commit = 1 + trng_below(&s->rng, 200);
	for (uint64_t n = 0; n < ops; n++) {
		unsigned int t = trng_below(&s->rng, NR_TREES);
		uint64_t p = trng_below(&s->rng, 1000);
		int op;

		/* phases: small key spaces force collisions */
		if (trng_below(&s->rng, 500) == 0)
			s->key_space = trng_below(&s->rng, 3) == 0
					   ? 16 + trng_below(&s->rng, 64)
					   : cfg->key_space;

		if (p < 200)
			op = OP_INSERT;
		else if (p < 260)
			op = OP_UPDATE;
		else if (p < 400)
			op = OP_PUT;
		else if (p < 560)
			op = OP_REMOVE;
		else if (p < 590)
			op = OP_RANGE;
		else if (p < 700)
			op = OP_LOOKUP;
		else if (p < 800)
			op = OP_LE;
		else if (p < 850)
			op = OP_SCAN;
		else if (p < 870)
			op = OP_CLONE;
		else if (p < 880)
			op = OP_DEL;
		else
			op = OP_BURST;
		if (op == OP_BURST && trng_below(&s->rng, 4))
			op = OP_PUT; /* bursts are big: keep them rarer */

		switch (op) {
		case OP_INSERT:
		case OP_UPDATE:
		case OP_PUT:
			op_insert(s, t, op);
			break;
		case OP_REMOVE:
			op_remove(s, t);
			break;
		case OP_RANGE:
			op_range(s, t);
			break;
		case OP_LOOKUP:
			op_lookup(s, t);
			break;
		case OP_LE:
			op_le(s, t);
			break;
		case OP_SCAN:
			op_scan(s, t);
			break;
		case OP_CLONE:
			op_clone(s, t);
			break;
		case OP_DEL:
			op_del(s, t);
			break;
		case OP_BURST:
			op_burst(s, t);
			break;
		}
		s->nops[op]++;
		CHECK_OK(tm_state(s->tm));
		/* every pin was released */
		{
			struct bc_stats st;

			bc_stats(tm_bc(s->tm), &st);
			CHECK_EQ(st.pinned, 0);
		}
		if (s->paranoid) {
			fprintf(stderr, "op %llu: %s tree %u\n",
				(unsigned long long) n, op_names[op], t);
			verify_tree(s, t);
			for (unsigned int u = 0; u < NR_TREES; u++)
				verify_tree(s, u);
		}

		if (n + 1 < next_commit)
			continue;
		next_commit = n + 1 + trng_below(&s->rng, 300);
		for (unsigned int u = 0; u < NR_TREES; u++)
			verify_tree(s, u);
		if (trng_below(&s->rng, 8) == 0) {
			CHECK_OK(tm_abort(s->tm));
			restore_model(s);
			s->nops[OP_ABORT]++;
		} else {
			commit(s);
			s->nops[OP_COMMIT]++;
		}
		if (trng_below(&s->rng, 10) == 0) {
			/* uncommitted changes, if any, are abandoned */
			if (trng_below(&s->rng, 2))
				op_insert(s, t, OP_PUT);
			tm_close(s->tm);
			store_open(s);
			restore_model(s);
			s->nops[OP_REOPEN]++;
		}
		for (unsigned int u = 0; u < NR_TREES; u++)
			verify_tree(s, u);
	}
	commit(s);
	for (unsigned int u = 0; u < NR_TREES; u++)
		verify_tree(s, u);

	printf("%s (key %u, value %u):", cfg->name, cfg->key_size,
	       cfg->value_size);
	for (int i = 0; i < OP_COUNT_; i++)
		printf(" %s %llu", op_names[i],
		       (unsigned long long) s->nops[i]);
	printf("\n");
	for (unsigned int u = 0; u < NR_TREES; u++) {
		unsigned int h = 0;
		int r = btree_height(&s->info, tm_root(s->tm, u), &h);

		printf("  tree %u: %zu entries, height %d\n", u, s->live[u].n,
		       r ? -1 : (int) h);
		free(s->live[u].e);
		free(s->committed[u].e);
	}
	fflush(stdout);
	tm_close(s->tm);
	io_close(s->dev);
	free(s);
}

int main(void)
{
	static const struct cfg cfgs[] = {
	    {"u64 keys", 8, 16, 12000, 20000},
	    {"odd sizes", 13, 40, 9000, 5000},
	    /* fanout 8 (leaves) and 18 (internal): deep trees, many
	     * splits and merges from few entries */
	    {"tiny fanout", 200, 300, 9000, 3000},
	};
	uint64_t seed = tseed("test-btree-model");

	for (size_t i = 0; i < ARRAY_SIZE(cfgs); i++)
		run(&cfgs[i], seed + i);
	return 0;
}
