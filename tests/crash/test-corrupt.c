/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Corruption test: damage one metadata node of a committed store and
 * require a clear error, never a crash or an out-of-bounds read (run it in
 * the sanitizer build too).
 *
 * A seeded workload builds a store: several commits, an image copy after
 * an early one (for stale node copies), then a last commit F made with
 * tm_commit directly so that the model knows both F and the commit before
 * it, A = F - 1.  Every allocated metadata node is listed from the space
 * map tree (its SM_KEY_META entries); all of them are reachable, so a full
 * read and check_run visit each.
 *
 * Each trial copies the image and applies one corruption:
 *
 *   bitflip    one random bit of a node (all 4096 bytes are checksummed)
 *   zero       a node zeroed
 *   misdirect  another node's bytes over it (a write to the wrong place)
 *   stale      the early image's bytes at its location (a lost write)
 *   forge      random header fields / bytes / refs in a node (or the newest
 *              superblock), checksum recomputed: hostile but well-formed
 *              bytes that only the validators and the checker can refuse
 *   sb-one     one superblock destroyed: the store opens from the other, at
 *              F or A, and verifies against the model for that txn
 *   sb-both    both destroyed: tm_open fails with -EUCLEAN
 *   garbage    random bytes; or random bytes with a valid superblock
 *
 * Then tm_open; if it succeeds, a cursor scan of every workload slot,
 * check_run, and a few changes and a commit.  Rules:
 *   1. Every error is -EUCLEAN (-ENOENT where a key is absent), and a
 *      failed open or read logs what it found.
 *   2. bitflip, zero, misdirect, stale: DETECTED — the open or a read
 *      failed, or check_run reported the store not clean.
 *   3. sb-one opens and verifies; sb-both and garbage fail to open.
 *   4. forge: whatever happens, no crash and only clean errors.
 *
 * TV_SEED replays a run; TV_SCALE=n runs n times more trials; V=1 shows
 * the library's log and the checker's messages.
 */
#include <errno.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "tcheck.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"
#include "workload.h"

enum kind {
	K_BITFLIP,
	K_ZERO,
	K_MISDIRECT,
	K_STALE,
	K_FORGE,
	K_SB_ONE,
	K_SB_BOTH,
	K_GARBAGE,
	K_NR
};

static const char *const kind_names[K_NR] = {
    "bitflip", "zero",	 "misdirect", "stale",
    "forge",   "sb-one", "sb-both",   "garbage",
};

/* How a trial ended. */
enum outcome { O_OPEN, O_READ, O_CHECK, O_WRITE, O_NONE, O_NR };

static const char *const outcome_names[O_NR] = {
    "open", "read", "check", "write", "none",
};

struct config {
	const char *name;
	uint32_t block_size;
	uint64_t dev_size;
	bool bulk;	    /* bulk trees (below) instead of the workload */
	unsigned int steps; /* workload: steps */
	unsigned int commit_every;
	uint64_t key_range; /* workload and bulk: key space */
	unsigned int share; /* bulk: values per data block */
};

/*
 * Bulk trees.  The workload's trees stay small (it deletes and clones over
 * a slot every few dozen steps), so a second kind of base store holds big
 * ones: a tree of BULK_KEYS random keys (internal nodes two levels deep),
 * a clone of it changed in a few places (shared subtrees), a sequential
 * tree and a clone of that, with the workload's value type (each value
 * references a data block) and a dense model per slot: payload[key], 0 for
 * absent.
 */
#define BULK_KEYS 60000u

/* The store every trial starts from. */
struct base {
	const struct config *cf;
	uint8_t *final;	 /* image after commit F */
	uint8_t *old;	 /* image after an early commit */
	uint64_t *pages; /* nonzero 4 KiB pages of final */
	size_t nr_pages;
	uint64_t *nodes; /* allocated metadata nodes (superblocks excluded) */
	size_t nr_nodes;
	uint64_t *stale; /* nodes whose bytes differ in old */
	size_t nr_stale;
	uint64_t txn_f, txn_a;
	uint64_t data_used, nr_blocks;
	struct wl *wl; /* knows both F (cur) and A (com); bulk: unused */
	uint64_t *model_a, *model_f; /* bulk: WL_SLOTS * key_range payloads */
};

struct totals {
	uint64_t trials[K_NR];
	uint64_t outcome[K_NR][O_NR];
	uint64_t sb_opened_at_a, sb_opened_at_f;
};

static bool verbose;
static uint64_t nr_errors_logged;

static void sink(enum log_level lvl, const char *msg, void *ctx)
{
	(void) ctx;
	if (lvl == LOG_LVL_ERROR)
		nr_errors_logged++;
	if (verbose)
		fprintf(stderr, "thinvol: %s\n", msg);
}

static uint8_t *node_at(uint8_t *img, uint64_t node)
{
	return img + (node << PD_NODE_SHIFT);
}

static bool page_is_zero(const uint8_t *p)
{
	for (size_t i = 0; i < PD_NODE_SIZE; i++)
		if (p[i])
			return false;
	return true;
}

static void fill_random(struct trng *g, uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t) trng_next(g);
}

/* ---- building the store ---- */

static uint8_t *copy_image(struct io_dev *mem, uint64_t size)
{
	uint8_t *p = malloc(size);

	CHECK(p != NULL);
	memcpy(p, io_mem_data(mem), size);
	return p;
}

/* Every SM_KEY_META entry of the sm tree: the allocated metadata nodes. */
static void list_nodes(struct base *b, struct io_dev *mem)
{
	struct btree_cursor c;
	struct sm_stats st;
	struct tm_ref root;
	struct tm *tm;
	size_t cap = 64;
	uint8_t k[8];
	int r;

	CHECK_OK(tm_open(mem, NULL, &tm));
	root = sm_root(tm_sm(tm));
	b->nodes = malloc(cap * sizeof(*b->nodes));
	CHECK(b->nodes != NULL);
	put_be64(k, SM_KEY_META);
	r = btree_cursor_seek(sm_tree_info(tm_sm(tm)), &root, k, &c);
	while (r == 0 && c.valid) {
		uint64_t key = get_be64(btree_cursor_key(&c));

		if ((key & SM_KEY_SPACE_MASK) != SM_KEY_META)
			break;
		CHECK(get_le32(btree_cursor_value(&c)) > 0);
		if (b->nr_nodes == cap) {
			cap *= 2;
			b->nodes = realloc(b->nodes, cap * sizeof(*b->nodes));
			CHECK(b->nodes != NULL);
		}
		b->nodes[b->nr_nodes++] = key & ~SM_KEY_SPACE_MASK;
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	CHECK_OK(r);
	sm_get_stats(tm_sm(tm), &st);
	CHECK_EQ(b->nr_nodes, st.meta_nodes);
	b->data_used = st.data_used;
	b->nr_blocks = st.nr_blocks;
	CHECK(b->nr_nodes >= 2);
	tm_close(tm);

	b->stale = malloc(b->nr_nodes * sizeof(*b->stale));
	CHECK(b->stale != NULL);
	for (size_t i = 0; i < b->nr_nodes; i++) {
		uint64_t n = b->nodes[i];

		CHECK(n >= 2 && (n + 1) << PD_NODE_SHIFT <= b->cf->dev_size);
		if (memcmp(node_at(b->final, n), node_at(b->old, n),
			   PD_NODE_SIZE))
			b->stale[b->nr_stale++] = n;
	}
}

/* ---- bulk trees ---- */

struct bulk {
	const struct config *cf;
	struct tm *tm;
	struct btree_info info;
	struct trng g;
	uint64_t *model; /* WL_SLOTS * key_range */
	uint64_t payload_seq;
	uint64_t block; /* the data block values are sharing */
	unsigned int block_refs;
};

static uint64_t *bulk_slot(uint64_t *model, const struct config *cf,
			   unsigned int slot)
{
	return model + (uint64_t) slot * cf->key_range;
}

/* A value: a reference to a data block (shared by cf->share values). */
static void bulk_value(struct bulk *u, uint8_t v[16], uint64_t *payload)
{
	if (!u->block_refs || u->block_refs >= u->cf->share) {
		CHECK_OK(sm_alloc_block(tm_sm(u->tm), &u->block));
		u->block_refs = 1;
	} else {
		CHECK_OK(sm_inc_block(tm_sm(u->tm), u->block));
		u->block_refs++;
	}
	*payload = ++u->payload_seq;
	put_le64(v, u->block);
	put_le64(v + 8, *payload);
}

static void bulk_put(struct bulk *u, unsigned int slot, uint64_t key)
{
	uint8_t k[8], v[16];
	uint64_t payload;

	put_be64(k, key);
	bulk_value(u, v, &payload);
	CHECK_OK(btree_put(&u->info, tm_root(u->tm, slot), k, v, NULL));
	bulk_slot(u->model, u->cf, slot)[key] = payload;
}

static void bulk_remove_range(struct bulk *u, unsigned int slot, uint64_t lo,
			      uint64_t hi)
{
	uint8_t kl[8], kh[8];

	put_be64(kl, lo);
	put_be64(kh, hi);
	CHECK_OK(
	    btree_remove_range(&u->info, tm_root(u->tm, slot), kl, kh, NULL));
	memset(bulk_slot(u->model, u->cf, slot) + lo, 0,
	       (hi - lo) * sizeof(uint64_t));
}

static void bulk_remove(struct bulk *u, unsigned int slot, uint64_t key)
{
	uint64_t *m = bulk_slot(u->model, u->cf, slot);
	uint8_t k[8];

	put_be64(k, key);
	CHECK_ERR(btree_remove(&u->info, tm_root(u->tm, slot), k, NULL),
		  m[key] ? 0 : -ENOENT);
	m[key] = 0;
}

static void bulk_clone(struct bulk *u, unsigned int from, unsigned int to)
{
	CHECK_OK(btree_del(&u->info, tm_root(u->tm, to)));
	CHECK_OK(
	    btree_clone(&u->info, tm_root(u->tm, from), tm_root(u->tm, to)));
	memcpy(bulk_slot(u->model, u->cf, to), bulk_slot(u->model, u->cf, from),
	       u->cf->key_range * sizeof(uint64_t));
}

static uint64_t *model_copy(const struct bulk *u)
{
	size_t sz = WL_SLOTS * u->cf->key_range * sizeof(uint64_t);
	uint64_t *m = malloc(sz);

	CHECK(m != NULL);
	memcpy(m, u->model, sz);
	return m;
}

/* Compare every slot with the model, then check_run must be clean. */
static int bulk_verify(const struct base *b, struct tm *tm,
		       const uint64_t *model)
{
	struct check_root roots[WL_SLOTS];
	struct check_report rep;
	struct btree_info info;
	unsigned int nr;
	int r;

	wl_info(b->wl, tm, &info);
	for (unsigned int i = 0; i < WL_SLOTS; i++) {
		const uint64_t *m = model + (uint64_t) i * b->cf->key_range;
		struct btree_cursor c;
		uint64_t n = 0, want = 0;

		for (uint64_t k = 0; k < b->cf->key_range; k++)
			want += m[k] != 0;
		r = btree_cursor_seek(&info, tm_root(tm, i), NULL, &c);
		while (r == 0 && c.valid) {
			uint64_t key = get_be64(btree_cursor_key(&c));
			uint64_t pl = get_le64(
			    (const uint8_t *) btree_cursor_value(&c) + 8);

			if (key >= b->cf->key_range || m[key] != pl) {
				fprintf(stderr,
					"bulk slot %u: key %" PRIu64
					" payload %" PRIu64 "\n",
					i, key, pl);
				r = -EUCLEAN;
				break;
			}
			n++;
			r = btree_cursor_next(&c);
		}
		btree_cursor_close(&c);
		if (r < 0)
			return r;
		if (n != want) {
			fprintf(stderr,
				"bulk slot %u: %" PRIu64 " keys, model %" PRIu64
				"\n",
				i, n, want);
			return -EUCLEAN;
		}
	}
	nr = wl_check_roots(b->wl, tm, roots);
	r = check_run(tm, roots, nr, stderr, 20, &rep);
	if (r < 0)
		return r;
	return check_clean(&rep) ? 0 : -EUCLEAN;
}

static void build_bulk(const struct config *cf, uint64_t seed, struct base *b,
		       struct io_dev *mem, struct tm *tm)
{
	struct bulk u = {.cf = cf, .tm = tm};
	uint64_t kr = cf->key_range;
	unsigned int height;

	u.model = calloc(WL_SLOTS * kr, sizeof(uint64_t));
	CHECK(u.model != NULL);
	trng_init(&u.g, seed);
	wl_info(b->wl, tm, &u.info);

	/* 1: a big random tree */
	for (unsigned int i = 0; i < BULK_KEYS; i++)
		bulk_put(&u, 0, trng_below(&u.g, kr));
	CHECK_OK(tm_commit(tm));
	/* 2: a clone, changed in a few places */
	bulk_clone(&u, 0, 1);
	for (unsigned int i = 0; i < 300; i++) {
		bulk_put(&u, 1, trng_below(&u.g, kr));
		bulk_remove(&u, 1, trng_below(&u.g, kr));
	}
	CHECK_OK(tm_commit(tm));
	b->old = copy_image(mem, cf->dev_size);
	/* 3 (A): a sequential tree and a clone of it; a hole in the first */
	for (unsigned int i = 0; i < kr / 4; i++)
		bulk_put(&u, 2, i * 3);
	bulk_clone(&u, 2, 3);
	for (unsigned int i = 0; i < 200; i++)
		bulk_remove(&u, 3, trng_below(&u.g, kr));
	bulk_remove_range(&u, 0, kr / 4, kr / 3);
	CHECK_OK(tm_commit(tm));
	b->txn_a = tm_committed_txn(tm);
	b->model_a = model_copy(&u);
	/* 4 (F): more changes through shared trees */
	for (unsigned int i = 0; i < 500; i++)
		bulk_put(&u, 1, trng_below(&u.g, kr));
	for (unsigned int i = 0; i < 300; i++)
		bulk_put(&u, 0, trng_below(&u.g, kr));
	bulk_clone(&u, 1, 3);
	for (unsigned int i = 0; i < 100; i++)
		bulk_put(&u, 3, trng_below(&u.g, kr));
	CHECK_OK(tm_commit(tm));
	b->txn_f = tm_committed_txn(tm);
	b->model_f = model_copy(&u);
	CHECK_OK(btree_height(&u.info, tm_root(tm, 0), &height));
	CHECK(height >= 2);
	CHECK_OK(bulk_verify(b, tm, b->model_f));
	free(u.model);
}

/* The contents at txn (A or F) must equal the model's. */
static int verify_at(const struct base *b, struct tm *tm, uint64_t txn)
{
	if (!b->cf->bulk)
		return wl_verify(b->wl, tm, txn);
	return bulk_verify(b, tm, txn == b->txn_f ? b->model_f : b->model_a);
}

static void build(const struct config *cf, uint64_t seed, struct base *b)
{
	struct wl_opts wo = {.seed = seed,
			     .key_range = cf->key_range,
			     .commit_every = cf->commit_every};
	struct tm_format_opts fo = {.block_size = cf->block_size};
	uint64_t nr = cf->dev_size >> PD_NODE_SHIFT;
	struct io_dev *mem;
	struct tm *tm;

	memset(b, 0, sizeof(*b));
	b->cf = cf;
	CHECK_OK(io_mem_create(cf->dev_size, &mem));
	CHECK_OK(tm_format(mem, &fo));
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_OK(wl_create(&wo, &b->wl));
	if (cf->bulk) {
		build_bulk(cf, seed, b, mem, tm);
		goto built;
	}
	for (unsigned int i = 0; i < cf->steps; i++) {
		bool committed;

		if (i == cf->steps / 3) {
			CHECK_OK(wl_commit(b->wl, tm));
			b->old = copy_image(mem, cf->dev_size);
		}
		CHECK_OK(wl_step(b->wl, tm, &committed));
	}
	/* A: through the model; then changes, and F behind its back */
	CHECK_OK(wl_commit(b->wl, tm));
	for (unsigned int i = 0; i < cf->commit_every * 2; i++) {
		bool committed;

		CHECK_OK(wl_step(b->wl, tm, &committed));
	}
	b->txn_a = wl_committed_txn(b->wl);
	CHECK_OK(tm_commit(tm));
	b->txn_f = tm_committed_txn(tm);
	CHECK_EQ(b->txn_f, b->txn_a + 1);
	CHECK_OK(wl_verify(b->wl, tm, b->txn_f));
built:
	tm_close(tm);
	b->final = copy_image(mem, cf->dev_size);

	b->pages = malloc(nr * sizeof(*b->pages));
	CHECK(b->pages != NULL);
	for (uint64_t p = 0; p < nr; p++)
		if (!page_is_zero(node_at(b->final, p)))
			b->pages[b->nr_pages++] = p;
	list_nodes(b, mem);
	io_close(mem);
}

static void base_free(struct base *b)
{
	wl_destroy(b->wl);
	free(b->final);
	free(b->old);
	free(b->pages);
	free(b->nodes);
	free(b->stale);
	free(b->model_a);
	free(b->model_f);
}

/* A fresh device holding the final image (only its nonzero pages). */
static struct io_dev *image(const struct base *b)
{
	struct io_dev *dev;
	uint8_t *d;

	CHECK_OK(io_mem_create(b->cf->dev_size, &dev));
	d = io_mem_data(dev);
	for (size_t i = 0; i < b->nr_pages; i++)
		memcpy(node_at(d, b->pages[i]), node_at(b->final, b->pages[i]),
		       PD_NODE_SIZE);
	return dev;
}

/* ---- corruptions ---- */

static uint64_t pick(struct trng *g, const uint64_t *v, size_t n)
{
	return v[trng_below(g, n)];
}

static void bitflip(struct trng *g, uint8_t *p)
{
	uint64_t bit = trng_below(g, PD_NODE_SIZE * 8);

	p[bit / 8] ^= (uint8_t) (1u << (bit % 8));
}

/* Another node's bytes (or the other superblock's) over node n. */
static void misdirect(struct trng *g, const struct base *b, uint8_t *d,
		      uint64_t n)
{
	uint64_t o;

	do {
		o = trng_below(g, 4) ? pick(g, b->nodes, b->nr_nodes)
				     : trng_below(g, 2);
	} while (o == n);
	memcpy(node_at(d, n), node_at(b->final, o), PD_NODE_SIZE);
}

/* A value for a 16-bit field: edges and random. */
static uint16_t field16(struct trng *g, uint16_t cur)
{
	switch (trng_below(g, 6)) {
	case 0:
		return 0;
	case 1:
		return 0xffff;
	case 2:
		return (uint16_t) (cur + 1);
	case 3:
		return (uint16_t) (cur - 1);
	case 4:
		return (uint16_t) (cur * 2);
	default:
		return (uint16_t) trng_next(g);
	}
}

/*
 * Hostile bytes with a valid checksum.  The node header (location, gen,
 * pool tag) stays, so the node passes bc_check_header and only the
 * type-specific validator and the checker stand between it and the tree
 * code.
 */
static void forge(struct trng *g, const struct base *b, uint8_t *p)
{
	unsigned int nr = trng_below(g, 3) + 1;

	for (unsigned int i = 0; i < nr; i++) {
		unsigned int what = (unsigned int) trng_below(g, 5);
		/* btree header: 16-bit fields at 36..47 */
		unsigned int off;

		if (what == 0) { /* a btree header field */
			off = 36 + 2 * (unsigned int) trng_below(g, 6);
			put_le16(p + off, field16(g, get_le16(p + off)));
		} else if (what == 1) { /* a random byte of the payload */
			off = 32 +
			      (unsigned int) trng_below(g, PD_NODE_SIZE - 32);
			p[off] = (uint8_t) trng_next(g);
		} else if (what == 2) { /* a 64-bit word: a ref, a key */
			off = 64 + 8 * (unsigned int) trng_below(
					   g, (PD_NODE_SIZE - 64) / 8);
			switch (trng_below(g, 4)) {
			case 0:
				put_le64(p + off,
					 pick(g, b->nodes, b->nr_nodes));
				break;
			case 1:
				put_le64(p + off, get_le64(p + off) + 1);
				break;
			case 2:
				put_le64(p + off,
					 UINT64_MAX - trng_below(g, 4));
				break;
			default:
				put_le64(p + off, trng_next(g));
			}
		} else if (what == 3) { /* swap two 8-byte words */
			unsigned int a =
			    64 + 8 * (unsigned int) trng_below(g, 60);
			unsigned int c =
			    64 + 8 * (unsigned int) trng_below(g, 60);
			uint64_t x = get_le64(p + a);

			put_le64(p + a, get_le64(p + c));
			put_le64(p + c, x);
		} else { /* the tree tag, or the leaf flag */
			if (trng_below(g, 2))
				put_le32(p + 32, (uint32_t) trng_next(g));
			else
				put_le16(p + 36, get_le16(p + 36) ^ 1);
		}
	}
	bc_seal(p);
}

/* Destroy superblock slot s (not forge: it must stop being valid). */
static void destroy_sb(struct trng *g, const struct base *b, uint8_t *d,
		       unsigned int s, bool allow_stale)
{
	uint8_t *p = node_at(d, s);

	switch (trng_below(g, allow_stale ? 4 : 3)) {
	case 0:
		bitflip(g, p);
		break;
	case 1:
		memset(p, 0, PD_NODE_SIZE);
		break;
	case 2:
		misdirect(g, b, d, s);
		break;
	default:
		/* an older superblock of the same slot: still valid, but
		 * older than the other one */
		memcpy(p, node_at(b->old, s), PD_NODE_SIZE);
	}
}

/* ---- probing a damaged store ---- */

static void check_err(int r, const char *what, uint64_t trial)
{
	if (r != -EUCLEAN) {
		fprintf(stderr,
			"trial %" PRIu64 ": %s returned %d (%s), "
			"want -EUCLEAN\n",
			trial, what, r, strerror(-r));
		CHECK(0);
	}
}

/* A few changes and a commit on the damaged store: clean errors only. */
static bool try_writes(struct trng *g, struct wl *wl, struct tm *tm,
		       uint64_t trial)
{
	struct btree_info info;
	int r = 0;

	wl_info(wl, tm, &info);
	for (unsigned int i = 0; r == 0 && i < 8; i++) {
		unsigned int slot = (unsigned int) trng_below(g, WL_SLOTS);
		uint8_t k[8], v[16];
		uint64_t block;

		put_be64(k, trng_below(g, 2000));
		if (trng_below(g, 2)) {
			r = sm_alloc_block(tm_sm(tm), &block);
			if (r < 0)
				break;
			put_le64(v, block);
			put_le64(v + 8, 0);
			r = btree_put(&info, tm_root(tm, slot), k, v, NULL);
		} else {
			r = btree_remove(&info, tm_root(tm, slot), k, NULL);
			if (r == -ENOENT)
				r = 0;
		}
	}
	if (r == 0)
		r = tm_commit(tm);
	if (r < 0) {
		check_err(r, "a change", trial);
		r = tm_abort(tm);
		if (r < 0)
			check_err(r, "tm_abort", trial);
		return true;
	}
	return false;
}

/*
 * The damaged node itself, read the way its parent would (its location,
 * the gen the parent records): the header check must refuse it.  Right
 * after tm_open, so that only a node the open read can be cached; a cached
 * node passed validation, which for this damage is a miss.
 */
static void probe_node(const struct base *b, struct tm *tm, uint64_t node,
		       uint64_t trial)
{
	struct bc_expect exp = {
	    .magic = PD_MAGIC_BTREE,
	    .gen = get_le64(node_at(b->final, node) + 16),
	};
	struct bc_stats before, after;
	struct bc_node *n;
	int r;

	bc_stats(tm_bc(tm), &before);
	r = bc_get(tm_bc(tm), node, &exp, &n);
	bc_stats(tm_bc(tm), &after);
	if (r == 0) {
		fprintf(stderr,
			"trial %" PRIu64 ": damaged node %" PRIu64
			" passed validation (%s)\n",
			trial, node,
			after.hits > before.hits ? "cached by tm_open"
						 : "read now");
		bc_put(tm_bc(tm), n);
		CHECK(0);
	}
	check_err(r, "reading the damaged node", trial);
}

/*
 * Open, read everything, check, change.  Returns how the damage showed
 * (O_NONE: it did not).  node: the damaged node, or 0 (not checked).
 */
static enum outcome probe(struct trng *g, const struct base *b,
			  struct io_dev *dev, uint64_t node, uint64_t trial)
{
	struct check_root roots[WL_SLOTS];
	struct check_report rep;
	struct btree_info info;
	enum outcome o = O_NONE;
	uint64_t logged = nr_errors_logged;
	unsigned int nr;
	struct tm *tm;
	int r;

	r = tm_open(dev, NULL, &tm);
	if (r < 0) {
		check_err(r, "tm_open", trial);
		CHECK(nr_errors_logged > logged);
		return O_OPEN;
	}
	if (node)
		probe_node(b, tm, node, trial);
	wl_info(b->wl, tm, &info);
	for (unsigned int i = 0; i < WL_SLOTS; i++) {
		struct btree_cursor c;

		logged = nr_errors_logged;
		r = btree_cursor_seek(&info, tm_root(tm, i), NULL, &c);
		while (r == 0 && c.valid)
			r = btree_cursor_next(&c);
		btree_cursor_close(&c);
		if (r < 0) {
			check_err(r, "a cursor scan", trial);
			CHECK(nr_errors_logged > logged);
			o = O_READ;
		}
	}
	nr = wl_check_roots(b->wl, tm, roots);
	r = check_run(tm, roots, nr, verbose ? stderr : NULL, 5, &rep);
	if (r < 0)
		check_err(r, "check_run", trial);
	if ((r < 0 || !check_clean(&rep)) && o == O_NONE)
		o = O_CHECK;
	if (try_writes(g, b->wl, tm, trial) && o == O_NONE)
		o = O_WRITE;
	tm_close(tm);
	return o;
}

/* sb-one: the store opens from the other superblock and verifies. */
static void probe_sb_one(const struct base *b, struct io_dev *dev,
			 unsigned int slot, uint64_t trial, struct totals *t)
{
	uint64_t want = slot == b->txn_f % 2 ? b->txn_a : b->txn_f;
	struct tm *tm;

	CHECK_OK(tm_open(dev, NULL, &tm));
	if (tm_committed_txn(tm) != want) {
		fprintf(stderr,
			"trial %" PRIu64 ": superblock %u destroyed, "
			"opened at txn %" PRIu64 ", want %" PRIu64 "\n",
			trial, slot, tm_committed_txn(tm), want);
		CHECK(0);
	}
	if (verify_at(b, tm, want) != 0) {
		fprintf(stderr,
			"trial %" PRIu64 ": superblock %u destroyed, "
			"txn %" PRIu64 " differs from the model\n",
			trial, slot, want);
		CHECK(0);
	}
	if (want == b->txn_a)
		t->sb_opened_at_a++;
	else
		t->sb_opened_at_f++;
	tm_close(tm);
}

static void trial(const struct base *b, struct trng *g, enum kind k, uint64_t n,
		  struct totals *t)
{
	struct io_dev *dev = image(b);
	uint8_t *d = io_mem_data(dev);
	uint64_t node = pick(g, b->nodes, b->nr_nodes);
	enum outcome o;
	unsigned int s;

	switch (k) {
	case K_BITFLIP:
		bitflip(g, node_at(d, node));
		break;
	case K_ZERO:
		memset(node_at(d, node), 0, PD_NODE_SIZE);
		break;
	case K_MISDIRECT:
		misdirect(g, b, d, node);
		break;
	case K_STALE:
		if (!b->nr_stale)
			goto out;
		node = pick(g, b->stale, b->nr_stale);
		memcpy(node_at(d, node), node_at(b->old, node), PD_NODE_SIZE);
		break;
	case K_FORGE:
		if (!trng_below(g, 5))
			node = b->txn_f % 2; /* the newest superblock */
		forge(g, b, node_at(d, node));
		break;
	case K_SB_ONE:
		s = (unsigned int) trng_below(g, 2);
		destroy_sb(g, b, d, s, true);
		probe_sb_one(b, dev, s, n, t);
		t->trials[k]++;
		goto out;
	case K_SB_BOTH:
		destroy_sb(g, b, d, 0, false);
		destroy_sb(g, b, d, 1, false);
		break;
	case K_GARBAGE:
		/* random metadata; half the time under a valid superblock */
		for (size_t i = 0; i < b->nr_pages; i++)
			fill_random(g, node_at(d, b->pages[i]), PD_NODE_SIZE);
		fill_random(g, d, 1u << 20);
		if (trng_below(g, 2)) {
			s = (unsigned int) trng_below(g, 2);
			memcpy(node_at(d, s), node_at(b->final, s),
			       PD_NODE_SIZE);
		}
		break;
	case K_NR:
		abort();
	}
	o = probe(g, b, dev, k <= K_STALE ? node : 0, n);
	t->trials[k]++;
	t->outcome[k][o]++;
	if (k == K_FORGE)
		goto out;
	if (o == O_NONE) {
		fprintf(stderr,
			"trial %" PRIu64 ": %s of node %" PRIu64
			" went undetected\n",
			n, kind_names[k], node);
		CHECK(0);
	}
	if ((k == K_SB_BOTH || k == K_GARBAGE) && o != O_OPEN) {
		fprintf(stderr, "trial %" PRIu64 ": %s: the store opened\n", n,
			kind_names[k]);
		CHECK(0);
	}
out:
	io_close(dev);
}

static void run_config(const struct config *cf, uint64_t seed,
		       unsigned int per_kind, struct totals *t)
{
	struct trng g;
	struct base b;
	uint64_t n = 0;

	build(cf, seed, &b);
	printf("  %s, block size %u: txn %" PRIu64 ", %zu metadata nodes "
	       "(%zu with an older copy), %" PRIu64 " of %" PRIu64
	       " blocks used\n",
	       cf->name, cf->block_size, b.txn_f, b.nr_nodes, b.nr_stale,
	       b.data_used, b.nr_blocks);
	fflush(stdout);
	trng_init(&g, seed ^ 0xc0441c7ull);
	for (unsigned int i = 0; i < per_kind; i++)
		for (unsigned int k = 0; k < K_NR; k++) {
			if (verbose)
				fprintf(stderr, "-- trial %" PRIu64 ": %s\n", n,
					kind_names[k]);
			trial(&b, &g, (enum kind) k, n++, t);
		}
	base_free(&b);
}

int main(void)
{
	uint64_t seed = tseed("test-corrupt");
	unsigned int per_kind =
	    (tsanitized() ? 25 : 60) * (unsigned int) tscale();
	struct config cfs[] = {
	    /* 32 MiB: some seeds ran the workload out of space in 16 */
	    {"workload", 64 << 10, 32 << 20, false, 600, 10, 500, 0},
	    {"workload", 4096, 4 << 20, false, 600, 10, 500, 0},
	    {"bulk", 64 << 10, 24 << 20, true, 0, 0, 100000, 1024},
	    {"bulk", 4096, 24 << 20, true, 0, 0, 100000, 64},
	};
	struct totals t = {0};
	uint64_t all = 0;

	verbose = getenv("V") != NULL;
	log_set_sink(sink, NULL);
	for (unsigned int i = 0; i < ARRAY_SIZE(cfs); i++)
		run_config(&cfs[i], seed + i, per_kind, &t);

	for (unsigned int k = 0; k < K_NR; k++)
		all += t.trials[k];
	printf("test-corrupt: %" PRIu64 " trials:\n", all);
	for (unsigned int k = 0; k < K_NR; k++) {
		uint64_t det = t.trials[k] - t.outcome[k][O_NONE];

		if (k == K_SB_ONE) {
			printf("  %-9s %4" PRIu64 " opened from the other "
			       "superblock and verified (%" PRIu64 " at the "
			       "older txn, %" PRIu64 " at the newest)\n",
			       kind_names[k], t.trials[k], t.sb_opened_at_a,
			       t.sb_opened_at_f);
			continue;
		}
		printf("  %-9s %4" PRIu64 " detected %4" PRIu64 " (",
		       kind_names[k], t.trials[k], det);
		for (unsigned int o = 0; o < O_NR; o++)
			printf("%s%s %" PRIu64, o ? ", " : "", outcome_names[o],
			       t.outcome[k][o]);
		printf(")\n");
	}
	return 0;
}
