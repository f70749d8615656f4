/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-check - the metadata checker (pdata/check.h) names each kind of
 * damage it promises to find, and finds nothing in an intact store.
 *
 * The other tests run check_run as a pass/fail oracle: test-btree,
 * test-sm and the model tests require a clean report after their changes,
 * test-corrupt requires random damage to be noticed somewhere (an open, a
 * read or the check), test-tm a wrong meta_nodes counter.  This test makes
 * one precise fault at a time in a known store and requires the report's
 * counters to be exactly what that fault implies, and its message to name
 * the block or node:
 *
 *   through the API, then committed:
 *     a leaked block, a count above the references, a block used twice
 *     with one count, a reference to a block with no count, a leaked
 *     metadata node, a shared node counted once, values pointing outside
 *     the data area or onto a metadata chunk
 *   in the image, with the checksum recomputed where the fault needs a
 *   valid node:
 *     a bad checksum, a child pointer past the device, a child pointer
 *     into a data block, a stale child generation, keys out of order, a
 *     key below its parent's separator, a zero count stored in the space
 *     map, wrong superblock usage counters
 *   the checker itself: the message limit, a bad root slot, a tree walked
 *   with the wrong description
 *   the engine: tv_pool_check reports a block leaked in a pool file.
 *
 * The store: 4 KiB blocks (one node per metadata chunk), slot 0 a tree of
 * NKEYS keys (u64, big-endian) whose 8-byte values each hold a reference
 * to a block of their own.  V=1 shows the checker's messages.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thinvol.h"
#include "util/endian.h"
#include "util/log.h"

#define DEV_SIZE ((uint64_t) 32 << 20)
#define NKEYS	 1000u
#define TREE_TAG 0x4b434843u /* "CHCK" */

/* Offsets in a btree node (docs/format.md, "B+tree nodes"). */
#define BT_LEVEL       38
#define BT_NR_ENTRIES  40
#define BT_MAX_ENTRIES 42
#define BT_KEY_SIZE    44
#define BT_VALUE_SIZE  46
#define BT_KEYS	       64
/* Offsets in a superblock (docs/format.md, "Superblock"). */
#define SB_DATA_USED   96
#define SB_META_CHUNKS 112

static bool verbose;
static uint8_t *base;	       /* the committed image every case starts from */
static uint64_t blocks[NKEYS]; /* the block key i references */
static uint64_t root_node;     /* slot 0's root, an internal node */

/* ---- the tree's values: le64 block, one reference each ---- */

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

static void info_for(struct tm *tm, struct btree_info *info)
{
	memset(info, 0, sizeof(*info));
	info->tm = tm;
	info->tag = TREE_TAG;
	info->key_size = 8;
	info->value.size = 8;
	info->value.ctx = tm;
	info->value.inc = v_inc;
	info->value.dec = v_dec;
	info->value.check = v_check;
}

/* Key k with a value naming block; the tree takes the caller's reference
 * (btree.h), so a block not counted for it is not counted at all. */
static void put(struct tm *tm, unsigned int slot, uint64_t k, uint64_t block)
{
	struct btree_info info;
	uint8_t key[8], v[8];

	info_for(tm, &info);
	put_be64(key, k);
	put_le64(v, block);
	CHECK_OK(btree_insert(&info, tm_root(tm, slot), key, v));
}

/* ---- running the checker ---- */

struct result {
	int r;
	struct check_report rep;
	char *text; /* the messages */
};

static struct result run_roots(struct tm *tm, const struct check_root *roots,
			       unsigned int nr, unsigned int max_msgs)
{
	struct result res;
	size_t len;
	FILE *f = open_memstream(&res.text, &len);

	CHECK(f != NULL);
	res.r = check_run(tm, roots, nr, f, max_msgs, &res.rep);
	CHECK(fclose(f) == 0);
	if (verbose)
		fprintf(stderr, "%s", res.text);
	return res;
}

/* Slots 0 and 1 hold trees of this test's kind. */
static struct result run(struct tm *tm)
{
	struct btree_info info;
	struct check_root roots[2] = {
	    {0, &info, "slot 0"},
	    {1, &info, "slot 1"},
	};

	info_for(tm, &info);
	return run_roots(tm, roots, 2, 100000);
}

/* The report must be exactly this, and name each of what[]. */
static void expect(const char *name, struct result *res, uint64_t errors,
		   uint64_t leaks, uint64_t missing, uint64_t counters,
		   const char *const *what, unsigned int nr_what)
{
	const struct check_report *rep = &res->rep;
	bool ok = res->r == 0 && rep->errors == errors && rep->leaks == leaks &&
		  rep->missing == missing && rep->counter_errors == counters;

	for (unsigned int i = 0; i < nr_what; i++)
		if (!strstr(res->text, what[i])) {
			fprintf(stderr, "%s: no message \"%s\"\n", name,
				what[i]);
			ok = false;
		}
	if (!ok) {
		fprintf(stderr,
			"%s: check returned %d: %" PRIu64 " errors, %" PRIu64
			" leaks, %" PRIu64 " missing, %" PRIu64
			" counter errors; want %" PRIu64 ", %" PRIu64
			", %" PRIu64 ", %" PRIu64 "; its messages:\n%s",
			name, res->r, rep->errors, rep->leaks, rep->missing,
			rep->counter_errors, errors, leaks, missing, counters,
			res->text);
		CHECK(0);
	}
	printf("  %-34s %" PRIu64 " errors, %" PRIu64 " leaks, %" PRIu64
	       " missing, %" PRIu64 " counter errors: as expected\n",
	       name, errors, leaks, missing, counters);
	free(res->text);
}

static const char *fmt(char *buf, size_t len, const char *f, uint64_t a,
		       uint64_t b)
{
	snprintf(buf, len, f, a, b);
	return buf;
}

/* ---- the store ---- */

static struct tm *open_image(const uint8_t *img, struct io_dev **dev)
{
	struct tm *tm;

	CHECK_OK(io_mem_create_from(img, DEV_SIZE, dev));
	CHECK_OK(tm_open(*dev, NULL, &tm));
	return tm;
}

static void close_store(struct tm *tm, struct io_dev *dev)
{
	tm_close(tm);
	io_close(dev);
}

static void build_base(void)
{
	struct tm_format_opts fo = {.block_size = 4096};
	struct btree_info info;
	struct io_dev *dev;
	unsigned int height;
	struct tm *tm;

	CHECK_OK(io_mem_create(DEV_SIZE, &dev));
	CHECK_OK(tm_format(dev, &fo));
	CHECK_OK(tm_open(dev, NULL, &tm));
	for (unsigned int i = 0; i < NKEYS; i++) {
		CHECK_OK(sm_alloc_block(tm_sm(tm), &blocks[i]));
		put(tm, 0, i, blocks[i]);
	}
	CHECK_OK(tm_commit(tm));
	info_for(tm, &info);
	CHECK_OK(btree_height(&info, tm_root(tm, 0), &height));
	CHECK_EQ(height, 1);
	root_node = tm_root(tm, 0)->blocknr;
	tm_close(tm);
	base = malloc(DEV_SIZE);
	CHECK(base != NULL);
	memcpy(base, io_mem_data(dev), DEV_SIZE);
	io_close(dev);
}

/* ---- the image, read as docs/format.md lays it out ---- */

static uint8_t *node_at(uint8_t *img, uint64_t node)
{
	return img + (node << PD_NODE_SHIFT);
}

static unsigned int nr_entries(const uint8_t *n)
{
	return get_le16(n + BT_NR_ENTRIES);
}

static uint8_t *key_at(uint8_t *n, unsigned int i)
{
	return n + BT_KEYS + (size_t) i * get_le16(n + BT_KEY_SIZE);
}

/* Value i of a leaf, child ref i of an internal node. */
static uint8_t *value_at(uint8_t *n, unsigned int i)
{
	return n + BT_KEYS +
	       (size_t) get_le16(n + BT_MAX_ENTRIES) *
		   get_le16(n + BT_KEY_SIZE) +
	       (size_t) i * get_le16(n + BT_VALUE_SIZE);
}

/* The node child i of node n points to. */
static uint64_t child(uint8_t *n, unsigned int i)
{
	return get_le64(value_at(n, i));
}

/* The superblock of the committed transaction (tm.h, rule 3d). */
static uint8_t *newest_sb(uint8_t *img)
{
	struct io_dev *dev;
	struct tm *tm = open_image(img, &dev);
	uint64_t slot = tm_committed_txn(tm) % 2;

	close_store(tm, dev);
	return node_at(img, slot);
}

/*
 * The leaf of the tree at root holding key (big-endian u64), and the
 * entry's index in it.
 */
static uint8_t *leaf_of(uint8_t *img, uint64_t root, uint64_t key,
			unsigned int *index)
{
	uint8_t *n = node_at(img, root);

	while (get_le16(n + BT_LEVEL)) {
		unsigned int i = 0;

		while (i + 1 < nr_entries(n) &&
		       get_be64(key_at(n, i + 1)) <= key)
			i++;
		n = node_at(img, child(n, i));
	}
	for (unsigned int i = 0; i < nr_entries(n); i++)
		if (get_be64(key_at(n, i)) == key) {
			*index = i;
			return n;
		}
	CHECK(0);
	return NULL;
}

/* ---- the cases ---- */

static void clean_store(void)
{
	struct io_dev *dev;
	struct tm *tm = open_image(base, &dev);
	struct btree_info info;
	struct sm_stats st;
	struct result res;

	res = run(tm);
	expect("intact store", &res, 0, 0, 0, 0, NULL, 0);
	CHECK(check_clean(&res.rep));
	sm_get_stats(tm_sm(tm), &st);
	CHECK_EQ(res.rep.nodes, st.meta_nodes);
	CHECK_EQ(res.rep.node_refs, res.rep.nodes);
	/* the values' blocks and the chunk records' */
	CHECK_EQ(res.rep.data_refs, NKEYS + st.meta_chunks);

	/* a clone: the shared root is counted at both references, what is
	 * below it walked once */
	info_for(tm, &info);
	CHECK_OK(btree_clone(&info, tm_root(tm, 0), tm_root(tm, 1)));
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	expect("intact store with a clone", &res, 0, 0, 0, 0, NULL, 0);
	CHECK_EQ(res.rep.node_refs, res.rep.nodes + 1);
	sm_get_stats(tm_sm(tm), &st);
	CHECK_EQ(res.rep.data_refs, NKEYS + st.meta_chunks);
	close_store(tm, dev);
}

/* Faults made through the API and committed. */
static void api_faults(void)
{
	struct btree_info info;
	struct io_dev *dev;
	struct result res;
	struct tm *tm;
	uint64_t b;
	char m1[160], m2[160];
	const char *w[2];

	/* a block allocated and never referenced */
	tm = open_image(base, &dev);
	CHECK_OK(sm_alloc_block(tm_sm(tm), &b));
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "leak: block %" PRIu64 " counted %" PRIu64 ", referenced 0",
		   b, 1);
	expect("leaked block", &res, 0, 1, 0, 0, w, 1);
	close_store(tm, dev);

	/* a count above the references */
	tm = open_image(base, &dev);
	CHECK_OK(sm_inc_block(tm_sm(tm), blocks[5]));
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "leak: block %" PRIu64 " counted %" PRIu64 ", referenced 1",
		   blocks[5], 2);
	expect("count above references", &res, 0, 1, 0, 0, w, 1);
	close_store(tm, dev);

	/* a block used twice, counted once: could be handed out twice */
	tm = open_image(base, &dev);
	put(tm, 0, NKEYS + 1, blocks[7]);
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "missing reference count: block %" PRIu64 " counted %" PRIu64
		   ", referenced 2",
		   blocks[7], 1);
	expect("block used twice", &res, 0, 0, 1, 0, w, 1);
	close_store(tm, dev);

	/* a reference to a block with no count at all (a free block; freed
	 * after a commit, so that this transaction's new nodes cannot take
	 * it: sm.h) */
	tm = open_image(base, &dev);
	CHECK_OK(sm_alloc_block(tm_sm(tm), &b));
	CHECK_OK(tm_commit(tm));
	CHECK_OK(sm_dec_block(tm_sm(tm), b, NULL));
	put(tm, 0, NKEYS + 1, b);
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "missing reference count: block %" PRIu64 " counted %" PRIu64
		   ", referenced 1",
		   b, 0);
	expect("reference to a free block", &res, 0, 0, 1, 0, w, 1);
	close_store(tm, dev);

	/* a metadata node counted once more than referenced */
	tm = open_image(base, &dev);
	CHECK_OK(tm_inc_node(tm, root_node));
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "leak: metadata node %" PRIu64 " counted %" PRIu64
		   ", referenced 1",
		   root_node, 2);
	expect("leaked metadata node", &res, 0, 1, 0, 0, w, 1);
	close_store(tm, dev);

	/* a node shared by two trees, counted once */
	tm = open_image(base, &dev);
	info_for(tm, &info);
	CHECK_OK(btree_clone(&info, tm_root(tm, 0), tm_root(tm, 1)));
	CHECK_OK(tm_commit(tm));
	CHECK_OK(tm_dec_node(tm, root_node, NULL));
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "missing reference count: metadata node %" PRIu64
		   " counted %" PRIu64 ", referenced 2",
		   root_node, 1);
	expect("shared node counted once", &res, 0, 0, 1, 0, w, 1);
	close_store(tm, dev);

	/* values naming blocks outside the data area: past the device, and
	 * the superblocks' */
	tm = open_image(base, &dev);
	b = tm_nr_blocks(tm) + 3;
	put(tm, 0, NKEYS + 1, b);
	put(tm, 0, NKEYS + 2, 0);
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "reference to block %" PRIu64
		   ", outside the data area (%" PRIu64,
		   b, tm_first_block(tm));
	w[1] = fmt(m2, sizeof(m2),
		   "reference to block %" PRIu64
		   ", outside the data area (%" PRIu64,
		   0, tm_first_block(tm));
	expect("blocks outside the data area", &res, 2, 0, 0, 0, w, 2);
	close_store(tm, dev);

	/* a value naming a metadata chunk (a mapping onto metadata): with 4
	 * KiB blocks the root node's block is a chunk of its own */
	tm = open_image(base, &dev);
	CHECK(tm_block_size(tm) == PD_NODE_SIZE);
	put(tm, 0, NKEYS + 1, root_node);
	CHECK_OK(tm_commit(tm));
	res = run(tm);
	w[0] = fmt(m1, sizeof(m1),
		   "block %" PRIu64
		   " is a metadata chunk, but mapped as data %" PRIu64 " time",
		   root_node, 1);
	w[1] = fmt(m2, sizeof(m2),
		   "missing reference count: block %" PRIu64 " counted %" PRIu64
		   ", referenced 2",
		   root_node, 1);
	expect("data mapped onto metadata", &res, 1, 0, 1, 0, w, 2);
	close_store(tm, dev);
}

/* A copy of the base image with child 1 of the root changed by fn (the
 * root's checksum recomputed), checked.  Returns the result; *leaf: the
 * leaf child 1 named before, *nr: its entries. */
static struct result damaged_child(void (*fn)(uint8_t *ref, uint8_t *img),
				   uint64_t *leaf, unsigned int *nr)
{
	uint8_t *img = malloc(DEV_SIZE);
	struct io_dev *dev;
	struct result res;
	struct tm *tm;
	uint8_t *root;

	CHECK(img != NULL);
	memcpy(img, base, DEV_SIZE);
	root = node_at(img, root_node);
	CHECK(nr_entries(root) >= 3);
	*leaf = child(root, 1);
	*nr = nr_entries(node_at(img, *leaf));
	fn(value_at(root, 1), img);
	bc_seal(root);
	tm = open_image(img, &dev);
	res = run(tm);
	close_store(tm, dev);
	free(img);
	return res;
}

static void ref_past_device(uint8_t *ref, uint8_t *img)
{
	(void) img;
	put_le64(ref, (DEV_SIZE >> PD_NODE_SHIFT) + 7);
}

static void ref_into_data(uint8_t *ref, uint8_t *img)
{
	(void) img;
	put_le64(ref, blocks[0]); /* node number = block: 4 KiB blocks */
}

static void ref_stale_gen(uint8_t *ref, uint8_t *img)
{
	(void) img;
	put_le64(ref + 8, get_le64(ref + 8) + 1);
}

static void ref_unchanged(uint8_t *ref, uint8_t *img)
{
	(void) ref;
	(void) img;
}

/* Faults made in the image. */
static void image_faults(void)
{
	char m1[160], m2[160];
	unsigned int nr, i;
	struct io_dev *dev;
	struct result res;
	const char *w[2];
	struct tm *tm;
	uint64_t leaf;
	uint8_t *img = malloc(DEV_SIZE), *n, *sb;

	CHECK(img != NULL);

	/* a leaf whose checksum fails: unreadable, so the blocks its values
	 * hold look leaked */
	memcpy(img, base, DEV_SIZE);
	leaf = child(node_at(img, root_node), 1);
	n = node_at(img, leaf);
	nr = nr_entries(n);
	n[200] ^= 0x10;
	tm = open_image(img, &dev);
	res = run(tm);
	close_store(tm, dev);
	snprintf(m1, sizeof(m1), "btree node %" PRIu64 ": unreadable (%s)",
		 leaf, strerror(EUCLEAN));
	w[0] = m1;
	expect("bad checksum", &res, 1, nr, 0, 0, w, 1);

	/* a child pointer past the end of the device: the leaf it named
	 * and its values' blocks look leaked */
	res = damaged_child(ref_past_device, &leaf, &nr);
	snprintf(m1, sizeof(m1),
		 "reference to metadata node %" PRIu64
		 ", outside the metadata area",
		 (DEV_SIZE >> PD_NODE_SHIFT) + 7);
	w[0] = m1;
	expect("child past the device", &res, 1, 1 + nr, 0, 0, w, 1);

	/* a child pointer into a data block: not followed (tm.h, rule 5),
	 * outside every chunk, and the node has no count */
	res = damaged_child(ref_into_data, &leaf, &nr);
	snprintf(m1, sizeof(m1),
		 "metadata node %" PRIu64 " lies outside every metadata chunk",
		 blocks[0]);
	w[0] = m1;
	w[1] = fmt(m2, sizeof(m2),
		   "missing reference count: metadata node %" PRIu64
		   " counted %" PRIu64 ", referenced 1",
		   blocks[0], 0);
	expect("child pointing into data", &res, 2, 1 + nr, 1, 0, w, 2);

	/* a child whose generation is not the one the leaf was written at
	 * (a lost write would leave this) */
	res = damaged_child(ref_stale_gen, &leaf, &nr);
	snprintf(m1, sizeof(m1), "btree node %" PRIu64 ": unreadable", leaf);
	w[0] = m1;
	expect("stale child generation", &res, 1, nr, 0, 0, w, 1);

	/* resealing an unchanged root changes nothing */
	res = damaged_child(ref_unchanged, &leaf, &nr);
	expect("root resealed unchanged", &res, 0, 0, 0, 0, NULL, 0);

	/* two keys of a leaf swapped */
	memcpy(img, base, DEV_SIZE);
	leaf = child(node_at(img, root_node), 1);
	n = node_at(img, leaf);
	{
		uint64_t k3 = get_be64(key_at(n, 3));

		put_be64(key_at(n, 3), get_be64(key_at(n, 4)));
		put_be64(key_at(n, 4), k3);
	}
	bc_seal(n);
	tm = open_image(img, &dev);
	res = run(tm);
	close_store(tm, dev);
	snprintf(m1, sizeof(m1),
		 "btree node %" PRIu64 ": keys 3 and 4 out of order", leaf);
	w[0] = m1;
	expect("keys out of order", &res, 1, 0, 0, 0, w, 1);

	/* a leaf's first key below its parent's separator for it */
	memcpy(img, base, DEV_SIZE);
	leaf = child(node_at(img, root_node), 1);
	n = node_at(img, leaf);
	put_be64(key_at(n, 0),
		 get_be64(key_at(node_at(img, root_node), 1)) - 1);
	bc_seal(n);
	tm = open_image(img, &dev);
	res = run(tm);
	close_store(tm, dev);
	snprintf(m1, sizeof(m1),
		 "btree node %" PRIu64 ": key 0 below the parent's separator",
		 leaf);
	w[0] = m1;
	expect("key below the separator", &res, 1, 0, 0, 0, w, 1);

	/* the space map stores a zero count for a referenced block: the
	 * block is referenced without a count, and data_used (which counts
	 * the stored counts) is one too high */
	memcpy(img, base, DEV_SIZE);
	tm = open_image(img, &dev);
	leaf = sm_root(tm_sm(tm)).blocknr;
	close_store(tm, dev);
	n = leaf_of(img, leaf, blocks[9], &i);
	CHECK_EQ(get_le32(value_at(n, i)), 1);
	put_le32(value_at(n, i), 0);
	bc_seal(n);
	tm = open_image(img, &dev);
	res = run(tm);
	close_store(tm, dev);
	snprintf(m1, sizeof(m1),
		 "space map stores a zero count for block %" PRIu64, blocks[9]);
	w[0] = m1;
	w[1] = fmt(m2, sizeof(m2),
		   "missing reference count: block %" PRIu64 " counted %" PRIu64
		   ", referenced 1",
		   blocks[9], 0);
	expect("zero count stored", &res, 1, 0, 1, 1, w, 2);

	/* the superblock's usage counters: data_used, then meta_chunks */
	for (int which = 0; which < 2; which++) {
		unsigned int off = which ? SB_META_CHUNKS : SB_DATA_USED;

		memcpy(img, base, DEV_SIZE);
		sb = newest_sb(img);
		put_le64(sb + off, get_le64(sb + off) + 1);
		bc_seal(sb);
		tm = open_image(img, &dev);
		res = run(tm);
		close_store(tm, dev);
		w[0] = "usage counters: ";
		expect(which ? "meta_chunks counter wrong"
			     : "data_used counter wrong",
		       &res, 0, 0, 0, 1, w, 1);
	}
	free(img);
}

/* The checker's own contract: the message limit, a bad slot, a tree
 * described wrongly. */
static void checker_contract(void)
{
	struct check_root roots[1];
	struct btree_info info;
	struct io_dev *dev;
	struct result res;
	struct tm *tm;
	uint64_t b;
	const char *w[1];
	char m1[160];
	unsigned int lines = 0;

	/* five leaks, at most two messages, then how many more */
	tm = open_image(base, &dev);
	for (int i = 0; i < 5; i++)
		CHECK_OK(sm_alloc_block(tm_sm(tm), &b));
	CHECK_OK(tm_commit(tm));
	info_for(tm, &info);
	roots[0] = (struct check_root){0, &info, "slot 0"};
	res = run_roots(tm, roots, 1, 2);
	for (const char *p = res.text; *p; p++)
		lines += *p == '\n';
	CHECK_EQ(lines, 3);
	w[0] = "\n... 3 more messages\n";
	expect("five leaks, two messages", &res, 0, 5, 0, 0, w, 1);

	/* a root slot that does not exist */
	roots[0].slot = TM_NR_ROOTS;
	res = run_roots(tm, roots, 1, 2);
	CHECK_ERR(res.r, -EINVAL);
	free(res.text);

	/* slot 0 walked as a tree of another kind: its root is refused,
	 * and everything below it looks leaked */
	roots[0].slot = 0;
	info.tag ^= 1;
	res = run_roots(tm, roots, 1, 1000);
	CHECK(res.r == 0 && res.rep.errors == 1 && res.rep.leaks > NKEYS);
	snprintf(m1, sizeof(m1), "btree node %" PRIu64 ": ", root_node);
	CHECK(strstr(res.text, m1) != NULL);
	printf("  %-34s refused, %" PRIu64 " leaks\n", "tree of another kind",
	       res.rep.leaks);
	free(res.text);
	close_store(tm, dev);
}

/*
 * The engine's check (tv_pool_check) runs this checker over the pool's
 * trees: a block leaked in a pool file behind the engine's back is
 * reported there too.
 */
static void engine_check(void)
{
	struct tv_pool_create_opts co = {.size = 64 << 20, .blob_size = 0};
	char dir[] = "/tmp/tv-check-XXXXXX", path[64];
	struct tv_check_report rep;
	struct io_dev *dev;
	struct tv_pool *p;
	struct tm *tm;
	char *text;
	size_t len;
	FILE *f;
	uint64_t id, b;
	uint8_t buf[4096];

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, NULL, &p));
	CHECK_OK(tv_vol_create(p, "a", 1 << 20, NULL, 0, &id));
	memset(buf, 0x5a, sizeof(buf));
	CHECK_OK(tv_vol_write(p, id, buf, sizeof(buf), 0, 0));
	CHECK_OK(tv_pool_check(p, verbose ? stderr : NULL, &rep));
	CHECK(rep.clean && rep.volumes == 1 && rep.data_refs >= 1);
	CHECK_OK(tv_pool_close(p));

	CHECK_OK(io_file_open(path, 0, 0, &dev));
	CHECK_OK(tm_open(dev, NULL, &tm));
	CHECK_OK(sm_alloc_block(tm_sm(tm), &b));
	CHECK_OK(tm_commit(tm));
	close_store(tm, dev);

	CHECK_OK(tv_pool_open(path, NULL, &p));
	f = open_memstream(&text, &len);
	CHECK(f != NULL);
	CHECK_OK(tv_pool_check(p, f, &rep));
	CHECK(fclose(f) == 0);
	if (verbose)
		fprintf(stderr, "%s", text);
	CHECK(!rep.clean);
	CHECK(rep.leaks == 1 && !rep.errors && !rep.missing &&
	      !rep.counter_errors);
	{
		char m[96];

		snprintf(m, sizeof(m), "leak: block %" PRIu64 " counted 1", b);
		CHECK(strstr(text, m) != NULL);
	}
	printf("  %-34s %" PRIu64 " leaks: as expected\n",
	       "engine: block leaked in the file", rep.leaks);
	free(text);
	CHECK_OK(tv_pool_close(p));
	CHECK(unlink(path) == 0);
	CHECK(rmdir(dir) == 0);
}

int main(void)
{
	verbose = getenv("V") != NULL;
	if (!verbose)
		log_set_sink(tquiet, NULL);
	printf("test-check:\n");
	build_base();
	clean_store();
	api_faults();
	image_faults();
	checker_contract();
	engine_check();
	free(base);
	printf("test-check: ok\n");
	return 0;
}
