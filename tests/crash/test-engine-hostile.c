/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Hostile pool images: block numbers and node locations that a crafted
 * image holds, every node of it sealed with a valid checksum.
 *
 * A base pool (64 KiB blocks, in memory): volume "a" with four blocks
 * written, "b" with one, "d" written and then deleted (its mapping tree
 * waits in DEFERRED).  Each case patches a copy of the image the way an
 * attacker would, reseals what it changed, and checks what the engine
 * does with it:
 *
 *   map-superblock   a mapping of "a" names pool block 0 (the superblocks)
 *   map-overflow     ... block 2^48: block * 64 KiB wraps round to 0
 *   map-past-end     ... a block past the pool's last
 *   map-metadata     ... the metadata chunk that holds the mapping itself
 *   map-shared       ... "b"'s block, whose count (1) does not account
 *                    for the second mapping
 *   map-free         ... free blocks (count 0), several (review 2,
 *                    finding 2: the space map later took one as a
 *                    metadata chunk, and a's cached mapping wrote there)
 *   shared-reused    map-shared, then b trims the block, which is freed
 *                    and taken as a metadata chunk while a's mapping is
 *                    cached: a's reads and writes must not reach it
 *   own-counted-twice a's mapping, written since a's last snapshot, names
 *                    b's block, counted twice (for a and b): the check is
 *                    clean, and a's write must copy the block, not write
 *                    over b's data
 *   root-in-data     "a"'s mapping tree root names a node in "b"'s data
 *                    block, where a well-formed copy of the real root lies
 *                    (what b's client could have written there)
 *   sm-root-in-data  the space map's root, likewise
 *   deferred-in-data the deleted volume's tree in DEFERRED, likewise
 *
 * What must hold: writes and reads through a mapping outside the data
 * area or onto metadata fail (EIO) and the pool goes read-only in state
 * needs-check, the device is left byte for byte as it was (the client's
 * bytes reached neither the superblocks nor a node), the other volume
 * still reads right, and the checker reports the damage (not clean, with
 * the message the case is about).  A node pointer into a data block is
 * refused wherever it is followed (open, I/O, reclaim, check).  The
 * shared block is the checker's to find ("missing reference count"); the
 * I/O path's part is that nothing but the checker's finding follows from
 * it: no write of metadata when the block is freed and taken again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "pdata/sm.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/endian.h"
#include "util/log.h"

#define BS	   (64u << 10)
#define NPC	   (BS / PD_NODE_SIZE)
#define DEV_SIZE   (16ull << 20)
#define SB_SM_ROOT 120 /* disk_superblock.sm_root (docs/format.md) */

static const struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000,
					    .cache_bytes = 1u << 20};
static uint8_t *base; /* the base image */
static uint64_t a_id, b_id, b_block;

static uint8_t pattern(uint64_t vol, uint64_t vblock)
{
	return (uint8_t) (0x10 * vol + vblock + 1);
}

static void build_base(void)
{
	struct tv_pool_create_opts co = {.block_size = BS, .blob_size = 16};
	uint8_t *buf = malloc(BS);
	struct io_dev *mem;
	struct tv_pool *p;
	uint64_t d_id;

	CHECK(buf);
	CHECK_OK(io_mem_create(DEV_SIZE, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(pool_open_dev(mem, false, "base", &oo, &p));
	CHECK_OK(tv_vol_create(p, "a", 16 * BS, NULL, 0, &a_id));
	CHECK_OK(tv_vol_create(p, "b", 16 * BS, NULL, 0, &b_id));
	CHECK_OK(tv_vol_create(p, "d", 16 * BS, NULL, 0, &d_id));
	for (uint64_t vb = 0; vb < 4; vb++) {
		memset(buf, pattern(1, vb), BS);
		CHECK_OK(tv_vol_write(p, a_id, buf, BS, vb * BS, 0));
		memset(buf, pattern(3, vb), BS);
		CHECK_OK(tv_vol_write(p, d_id, buf, BS, vb * BS, 0));
	}
	memset(buf, pattern(2, 0), BS);
	CHECK_OK(tv_vol_write(p, b_id, buf, BS, 0, 0));
	CHECK_OK(tv_pool_flush(p));
	CHECK_OK(tv_vol_delete(p, d_id));
	/* the image as committed with d's tree still in DEFERRED: closing
	 * the pool would reclaim it (pool-space.c, rule 3) */
	CHECK_OK(tv_pool_flush(p));
	base = malloc(DEV_SIZE);
	CHECK(base);
	memcpy(base, io_mem_data(mem), DEV_SIZE);
	CHECK_OK(tv_pool_close(p));
	io_close(mem);
	free(buf);
}

/* ---- finding what to patch (on an open pool, meta_lock held) ---- */

/* Byte offset in the image of the value of key (8 bytes, big-endian
 * k) in the tree at root; also the node holding it. */
static uint64_t value_at(struct tv_pool *p, const struct btree_info *info,
			 const struct tm_ref *root, uint64_t k, uint64_t *node)
{
	struct btree_cursor c;
	const struct bc_node *leaf;
	uint8_t key[8];
	uint64_t off;

	put_be64(key, k);
	CHECK_OK(
	    btree_cursor_seek(info, root, k == UINT64_MAX ? NULL : key, &c));
	CHECK(c.valid);
	leaf = c.path[c.depth - 1].node;
	*node = leaf->blocknr;
	off =
	    leaf->blocknr * PD_NODE_SIZE +
	    (uint64_t) ((const uint8_t *) btree_cursor_value(&c) - leaf->data);
	btree_cursor_close(&c);
	(void) p;
	return off;
}

/* The image offset of volume id's mapping of vblock (its disk_mapping),
 * and the node holding it. */
static uint64_t mapping_at(struct tv_pool *p, uint64_t id, uint64_t vblock,
			   uint64_t *node)
{
	struct disk_volume v;
	struct tm_ref root;
	uint64_t off;

	pthread_mutex_lock(&p->meta_lock);
	CHECK_OK(vol_lookup_locked(p, id, &v));
	ref_from_disk(&root, &v.map_root);
	off = value_at(p, &p->map, &root, vblock, node);
	pthread_mutex_unlock(&p->meta_lock);
	return off;
}

/* The image offset of volume id's record (its disk_volume). */
static uint64_t record_at(struct tv_pool *p, uint64_t id)
{
	uint64_t off, node;

	pthread_mutex_lock(&p->meta_lock);
	off = value_at(p, &p->vols, tm_root(p->tm, SLOT_VOLS), id, &node);
	pthread_mutex_unlock(&p->meta_lock);
	return off;
}

static struct tv_pool *open_img(uint8_t *img, struct io_dev **dev)
{
	struct tv_pool *p;

	CHECK_OK(io_mem_create_from(img, DEV_SIZE, dev));
	CHECK_OK(pool_open_dev(*dev, false, "hostile", &oo, &p));
	return p;
}

/* Recompute the checksum of the node at image offset off's node. */
static void reseal(uint8_t *img, uint64_t off)
{
	bc_seal(img + off / PD_NODE_SIZE * PD_NODE_SIZE);
}

static void patch_u64(uint8_t *img, uint64_t off, uint64_t v)
{
	put_le64(img + off, v);
	reseal(img, off);
}

/* Copy node `from` of img into node `to` (in a data block), as a
 * well-formed node there: its own location in the header, resealed. */
static void forge_node(uint8_t *img, uint64_t from, uint64_t to)
{
	uint8_t *n = img + to * PD_NODE_SIZE;

	memcpy(n, img + from * PD_NODE_SIZE, PD_NODE_SIZE);
	put_le64(n + offsetof(struct disk_node_header, blocknr), to);
	bc_seal(n);
}

static uint64_t newest_sb(const uint8_t *img)
{
	uint64_t t0 = get_le64(img + 72), t1 = get_le64(img + 4096 + 72);

	return t0 > t1 ? 0 : 1;
}

/* ---- what must hold ---- */

static char *check_text(struct tv_pool *p, struct tv_check_report *rep)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	CHECK(f);
	CHECK_OK(tv_pool_check(p, f, rep));
	fclose(f);
	return text;
}

static void expect_check(struct tv_pool *p, const char *msg, const char *what)
{
	struct tv_check_report rep;
	char *text = check_text(p, &rep);

	if (rep.clean || !strstr(text, msg)) {
		fprintf(stderr, "%s: check %s, without '%s':\n%s", what,
			rep.clean ? "clean" : "not clean", msg, text);
		CHECK(0);
	}
	free(text);
}

static void expect_needs_check(struct tv_pool *p, const char *what)
{
	struct tv_pool_info pi;

	CHECK_OK(tv_pool_info(p, &pi));
	if (pi.state != TV_POOL_NEEDS_CHECK || !pi.reason[0]) {
		fprintf(stderr, "%s: pool state %s '%s'\n", what,
			tv_pool_state_name(pi.state), pi.reason);
		CHECK(0);
	}
}

/* b reads its one block, also on the damaged pool. */
static void expect_b(struct tv_pool *p)
{
	uint8_t *buf = malloc(BS);

	CHECK(buf);
	CHECK_OK(tv_vol_read(p, b_id, buf, BS, 0));
	for (size_t i = 0; i < BS; i++)
		CHECK_EQ(buf[i], pattern(2, 0));
	free(buf);
}

/*
 * a's vblock 1 is a bad mapping in img: a write through it and a read of
 * it (each on a fresh open) fail with EIO, the pool needs a check, the
 * device is untouched, b reads right, and the checker says msg.
 */
static void expect_refused(uint8_t *img, const char *msg, const char *what)
{
	uint8_t *buf = malloc(BS);
	struct io_dev *dev;
	struct tv_pool *p;

	CHECK(buf);
	memset(buf, 0xee, BS);
	/* writes: in place (own block), with FUA, and a part of the block */
	for (int round = 0; round < 2; round++) {
		p = open_img(img, &dev);
		CHECK_EQ(tv_vol_write(p, a_id, buf, round ? 4096 : BS,
				      BS + (round ? 8192 : 0),
				      round ? TV_IO_FUA : 0),
			 -EIO);
		expect_needs_check(p, what);
		CHECK(tv_vol_write(p, a_id, buf, BS, 0, 0) < 0);
		CHECK(tv_pool_flush(p) < 0);
		expect_b(p);
		tv_pool_close(p);
		if (memcmp(io_mem_data(dev), img, DEV_SIZE)) {
			fprintf(stderr,
				"%s: the refused write changed the "
				"device\n",
				what);
			CHECK(0);
		}
		io_close(dev);
	}
	/* a read, and a read that starts in the block before */
	for (int round = 0; round < 2; round++) {
		p = open_img(img, &dev);
		CHECK_EQ(tv_vol_read(p, a_id, buf, BS, round ? BS / 2 : BS),
			 -EIO);
		expect_needs_check(p, what);
		expect_b(p);
		tv_pool_close(p);
		CHECK(!memcmp(io_mem_data(dev), img, DEV_SIZE));
		io_close(dev);
	}
	/* the checker (read-only open: it changes nothing either) */
	{
		struct tv_pool_open_opts ro = oo;

		ro.read_only = true;
		CHECK_OK(io_mem_create_from(img, DEV_SIZE, &dev));
		CHECK_OK(pool_open_dev(dev, false, "hostile", &ro, &p));
		expect_check(p, msg, what);
		tv_pool_close(p);
		io_close(dev);
	}
	free(buf);
	printf("  %s: I/O refused (EIO), needs-check, device untouched; "
	       "check: '%s'\n",
	       what, msg);
}

/* a's vblock 1 maps to block in a copy of the base image. */
static void map_case(uint64_t (*target)(struct tv_pool *, uint64_t node),
		     const char *msg, const char *what)
{
	uint8_t *img = malloc(DEV_SIZE);
	struct io_dev *dev;
	struct tv_pool *p;
	uint64_t off, node, block;

	CHECK(img);
	memcpy(img, base, DEV_SIZE);
	p = open_img(img, &dev);
	off = mapping_at(p, a_id, 1, &node);
	block = target(p, node);
	tv_pool_close(p);
	io_close(dev);
	patch_u64(img, off + offsetof(struct disk_mapping, block), block);
	expect_refused(img, msg, what);
	free(img);
}

static uint64_t t_superblock(struct tv_pool *p, uint64_t node)
{
	(void) p;
	(void) node;
	return 0;
}

static uint64_t t_overflow(struct tv_pool *p, uint64_t node)
{
	(void) p;
	(void) node;
	return 1ull << 48; /* * 64 KiB == 2^64: offset 0 if unchecked */
}

static uint64_t t_past_end(struct tv_pool *p, uint64_t node)
{
	(void) node;
	return tm_nr_blocks(p->tm);
}

static uint64_t t_metadata(struct tv_pool *p, uint64_t node)
{
	CHECK(sm_is_chunk(tm_sm(p->tm), node / NPC));
	return node / NPC; /* the chunk holding the mapping's own leaf */
}

static uint64_t t_free(struct tv_pool *p, uint64_t node)
{
	(void) node;
	/* a free block of the data area, far from what the base uses */
	for (uint64_t b = tm_nr_blocks(p->tm) - 1;; b--) {
		uint32_t count;

		CHECK(b > tm_first_block(p->tm));
		CHECK_OK(sm_block_count(tm_sm(p->tm), b, &count));
		if (!count && !sm_is_chunk(tm_sm(p->tm), b))
			return b - 8;
	}
}

/*
 * Finding 2 of review 2 as the reviewer ran it: all of a's mappings point
 * at free blocks; a's client reads them (once accepted and cached), then
 * other volumes' creates make the space map take new chunks.  Now the
 * first read is refused: EIO, needs-check, nothing cached; the creates
 * are refused on the read-only pool; the device is left as it was.
 */
static void map_free_all(void)
{
	uint8_t *img = malloc(DEV_SIZE), *buf = malloc(BS);
	uint64_t off[4], node, tgt[4], n = 0;
	struct io_dev *dev;
	struct tv_pool *p;

	CHECK(img && buf);
	memcpy(img, base, DEV_SIZE);
	p = open_img(img, &dev);
	pthread_mutex_lock(&p->meta_lock);
	for (uint64_t b = tm_first_block(p->tm);
	     b < tm_nr_blocks(p->tm) && n < 4; b++) {
		uint32_t count;

		CHECK_OK(sm_block_count(tm_sm(p->tm), b, &count));
		if (!count && !sm_is_chunk(tm_sm(p->tm), b))
			tgt[n++] = b; /* the next chunks would go here */
	}
	pthread_mutex_unlock(&p->meta_lock);
	CHECK_EQ(n, 4);
	for (uint64_t vb = 0; vb < 4; vb++)
		off[vb] = mapping_at(p, a_id, vb, &node);
	tv_pool_close(p);
	io_close(dev);
	for (uint64_t vb = 0; vb < 4; vb++)
		patch_u64(img, off[vb] + offsetof(struct disk_mapping, block),
			  tgt[vb]);
	p = open_img(img, &dev);
	for (uint64_t vb = 0; vb < 4; vb++)
		CHECK_EQ(tv_vol_read(p, a_id, buf, BS, vb * BS), -EIO);
	expect_needs_check(p, "map-free");
	for (int k = 0; k < 300; k++) {
		char name[32];

		snprintf(name, sizeof(name), "vol-%d", k);
		CHECK(tv_vol_create(p, name, BS, NULL, 0, NULL) < 0);
	}
	memset(buf, 0xee, BS);
	CHECK(tv_vol_write(p, a_id, buf, BS, 0, 0) < 0);
	expect_b(p);
	tv_pool_close(p);
	CHECK(!memcmp(io_mem_data(dev), img, DEV_SIZE));
	io_close(dev);
	free(img);
	free(buf);
	printf("  map-free (all of a's blocks, then 300 creates): the first "
	       "read refused, nothing written\n");
}

/* a's vblock 1 maps to b's block (count 1, two mappings): no cheap way
 * for the I/O path to know; the checker finds it. */
static void map_shared(void)
{
	uint8_t *img = malloc(DEV_SIZE), *buf = malloc(BS);
	struct io_dev *dev;
	struct tv_pool *p;
	uint64_t off, node;

	CHECK(img && buf);
	memcpy(img, base, DEV_SIZE);
	p = open_img(img, &dev);
	off = mapping_at(p, a_id, 1, &node);
	tv_pool_close(p);
	io_close(dev);
	patch_u64(img, off + offsetof(struct disk_mapping, block), b_block);
	p = open_img(img, &dev);
	CHECK_OK(tv_vol_read(p, a_id, buf, BS, BS));
	CHECK_EQ(buf[0], pattern(2, 0));
	expect_check(p, "missing reference count: block", "map-shared");
	tv_pool_close(p);
	io_close(dev);
	free(img);
	free(buf);
	printf("  map-shared: the checker reports the uncounted second "
	       "mapping\n");
}

/*
 * map-shared, and then b trims the block: it is freed, and the space map
 * takes it again as a metadata chunk while a's cache still names it.
 * a's reads and writes of vblock 1 must not reach the chunk (EIO, the
 * pool needs a check); the chunk's bytes stay as the engine wrote them.
 */
static void shared_reused(void)
{
	uint8_t *img = malloc(DEV_SIZE), *buf = malloc(BS),
		*before = malloc(BS);
	struct io_dev *dev, *dev2;
	struct tv_pool *p;
	uint64_t off, node;
	bool chunk = false;
	uint8_t *dimg;

	CHECK(img && buf && before);
	memcpy(img, base, DEV_SIZE);
	p = open_img(img, &dev);
	off = mapping_at(p, a_id, 1, &node);
	tv_pool_close(p);
	io_close(dev);
	patch_u64(img, off + offsetof(struct disk_mapping, block), b_block);
	p = open_img(img, &dev);
	dimg = io_mem_data(dev);
	/* a reads (and writes in place) its vblock 1: b's block, cached */
	CHECK_OK(tv_vol_read(p, a_id, buf, BS, BS));
	CHECK_EQ(buf[0], pattern(2, 0));
	memset(buf, 0x5a, 4096);
	CHECK_OK(tv_vol_write(p, a_id, buf, 4096, BS, 0));
	/* b trims it: its count drops to 0, and the commit frees it */
	CHECK_OK(tv_vol_discard(p, b_id, BS, 0));
	CHECK_OK(tv_pool_flush(p));
	/* other volumes' metadata until the block is a chunk */
	for (int k = 0; k < 4000 && !chunk; k++) {
		char name[64];

		snprintf(name, sizeof(name), "vol-%d-%040d", k, k);
		CHECK_OK(tv_vol_create(p, name, BS, NULL, 0, NULL));
		pthread_mutex_lock(&p->meta_lock);
		chunk = sm_is_chunk(tm_sm(p->tm), b_block);
		pthread_mutex_unlock(&p->meta_lock);
	}
	CHECK(chunk);
	CHECK_OK(tv_pool_flush(p));
	memcpy(before, dimg + b_block * BS, BS);
	memset(buf, 0xee, BS);
	CHECK_EQ(tv_vol_write(p, a_id, buf, BS, BS, 0), -EIO);
	CHECK(!memcmp(before, dimg + b_block * BS, BS));
	CHECK_EQ(tv_vol_read(p, a_id, buf, BS, BS), -EIO);
	expect_needs_check(p, "shared-reused");
	CHECK_EQ(tv_vol_write(p, a_id, buf, 4096, BS, 0), -EROFS);
	CHECK(!memcmp(before, dimg + b_block * BS, BS));
	tv_pool_close(p);
	CHECK(!memcmp(before, dimg + b_block * BS, BS));
	/* what the engine committed reads back clean but for the damage */
	p = open_img(dimg, &dev2);
	expect_check(p, "is a metadata chunk, but mapped as data",
		     "shared-reused");
	tv_pool_close(p);
	io_close(dev2);
	io_close(dev);
	free(img);
	free(buf);
	free(before);
	printf("  shared-reused: the freed block taken as a metadata chunk; "
	       "a's cached mapping does not reach it\n");
}

/*
 * a's vblock 1, written after a's last snapshot (its epoch says a owns
 * it), names b's block, and the space map counts that block twice: a
 * consistent image as far as the checker can tell.  A block counted
 * twice is shared whatever the epoch: a's write copies it, and b keeps
 * its bytes.
 */
static void own_counted_twice(void)
{
	uint8_t *img = malloc(DEV_SIZE), *buf = malloc(BS);
	struct tv_check_report rep;
	struct io_dev *dev;
	struct tv_pool *p;
	uint64_t off, cnt_off, node;

	CHECK(img && buf);
	memcpy(img, base, DEV_SIZE);
	p = open_img(img, &dev);
	off = mapping_at(p, a_id, 1, &node);
	pthread_mutex_lock(&p->meta_lock);
	{
		struct tm_ref root = sm_root(tm_sm(p->tm));

		cnt_off = value_at(p, sm_tree_info(tm_sm(p->tm)), &root,
				   b_block, &node);
	}
	pthread_mutex_unlock(&p->meta_lock);
	tv_pool_close(p);
	io_close(dev);
	CHECK_EQ(get_le32(img + cnt_off), 1);
	put_le32(img + cnt_off, 2);
	reseal(img, cnt_off);
	patch_u64(img, off + offsetof(struct disk_mapping, block), b_block);
	/* (a's own block of vblock 1 is counted but unmapped now: a leak) */
	p = open_img(img, &dev);
	CHECK_OK(tv_pool_check(p, NULL, &rep));
	CHECK(!rep.missing && !rep.errors);
	for (int round = 0; round < 2; round++) {
		/* a whole block, then a part of one (after a reopen) */
		memset(buf, 0xee, BS);
		CHECK_OK(tv_vol_write(p, a_id, buf, round ? 4096 : BS, BS, 0));
		expect_b(p);
		CHECK_OK(tv_vol_read(p, a_id, buf, BS, BS));
		CHECK_EQ(buf[0], 0xee);
		CHECK_OK(tv_pool_flush(p));
		expect_b(p);
		tv_pool_close(p);
		if (!round) {
			/* again on the image as it was */
			io_close(dev);
			p = open_img(img, &dev);
		}
	}
	io_close(dev);
	free(img);
	free(buf);
	printf("  own-counted-twice: a's write copies the block; b keeps its "
	       "bytes\n");
}

/* a's record names a mapping tree root in b's data block, a copy of the
 * real root there. */
static void root_in_data(void)
{
	uint8_t *img = malloc(DEV_SIZE), *buf = malloc(BS);
	uint64_t off, to = b_block * NPC;
	struct disk_volume v;
	struct io_dev *dev;
	struct tv_pool *p;

	CHECK(img && buf);
	memcpy(img, base, DEV_SIZE);
	p = open_img(img, &dev);
	off = record_at(p, a_id);
	tv_pool_close(p);
	io_close(dev);
	memcpy(&v, img + off, sizeof(v));
	forge_node(img, le64_to_cpu(v.map_root.blocknr), to);
	patch_u64(img,
		  off + offsetof(struct disk_volume, map_root) +
		      offsetof(struct disk_ref, blocknr),
		  to);
	/* the I/O path: EUCLEAN from the tree, needs-check, nothing written */
	p = open_img(img, &dev);
	CHECK(tv_vol_read(p, a_id, buf, BS, 0) < 0);
	expect_needs_check(p, "root-in-data");
	CHECK(tv_vol_write(p, a_id, buf, BS, 0, 0) < 0);
	/* (b's block holds the forged node: what its client wrote) */
	CHECK_OK(tv_vol_read(p, b_id, buf, BS, 0));
	CHECK(!memcmp(buf, img + b_block * BS, BS));
	tv_pool_close(p);
	CHECK(!memcmp(io_mem_data(dev), img, DEV_SIZE));
	io_close(dev);
	p = open_img(img, &dev);
	CHECK(tv_vol_write(p, a_id, buf, BS, 0, 0) < 0);
	expect_needs_check(p, "root-in-data");
	tv_pool_close(p);
	CHECK(!memcmp(io_mem_data(dev), img, DEV_SIZE));
	io_close(dev);
	p = open_img(img, &dev);
	expect_check(p, "outside every metadata chunk", "root-in-data");
	tv_pool_close(p);
	io_close(dev);
	free(img);
	free(buf);
	printf("  root-in-data: a tree root in a data block is refused by "
	       "reads, writes and the checker\n");
}

/* The superblock's space map root in b's data block: open refuses. */
static void sm_root_in_data(void)
{
	uint8_t *img = malloc(DEV_SIZE);
	uint64_t sb = newest_sb(base) * PD_NODE_SIZE, to = b_block * NPC;
	struct io_dev *dev;
	struct tv_pool *p;

	CHECK(img);
	memcpy(img, base, DEV_SIZE);
	forge_node(img, get_le64(img + sb + SB_SM_ROOT), to);
	patch_u64(img, sb + SB_SM_ROOT, to);
	CHECK_OK(io_mem_create_from(img, DEV_SIZE, &dev));
	CHECK_EQ(pool_open_dev(dev, false, "hostile", &oo, &p), -EUCLEAN);
	CHECK(!memcmp(io_mem_data(dev), img, DEV_SIZE));
	io_close(dev);
	free(img);
	printf("  sm-root-in-data: the pool does not open\n");
}

/* The deleted volume's tree, as DEFERRED names it, in b's data block:
 * reclaim refuses to follow it, the checker reports it. */
static void deferred_in_data(void)
{
	uint8_t *img = malloc(DEV_SIZE);
	uint64_t off, node, to = b_block * NPC;
	struct tv_check_report rep;
	struct io_dev *dev;
	struct tv_pool *p;
	int r;

	CHECK(img);
	memcpy(img, base, DEV_SIZE);
	p = open_img(img, &dev);
	pthread_mutex_lock(&p->meta_lock);
	CHECK(tm_root(p->tm, SLOT_DEFERRED)->blocknr);
	off = value_at(p, &p->deferred, tm_root(p->tm, SLOT_DEFERRED),
		       UINT64_MAX, &node);
	pthread_mutex_unlock(&p->meta_lock);
	/* the base is clean: what the forged copy must not pass for */
	CHECK_OK(tv_pool_check(p, NULL, &rep));
	CHECK(rep.clean);
	tv_pool_close(p);
	io_close(dev);
	forge_node(img, get_le64(img + off), to);
	patch_u64(img, off + offsetof(struct disk_ref, blocknr), to);
	p = open_img(img, &dev);
	pthread_mutex_lock(&p->meta_lock);
	r = pool_reclaim_locked(p, 1u << 20);
	pthread_mutex_unlock(&p->meta_lock);
	CHECK_EQ(r, -EUCLEAN);
	tv_pool_close(p);
	io_close(dev);
	p = open_img(img, &dev);
	expect_check(p, "outside every metadata chunk", "deferred-in-data");
	tv_pool_close(p);
	io_close(dev);
	free(img);
	printf("  deferred-in-data: reclaim refuses the forged tree, the "
	       "checker reports it\n");
}

int main(void)
{
	struct io_dev *dev;
	struct tv_pool *p;
	uint64_t node;

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	build_base();
	p = open_img(base, &dev);
	{
		uint64_t off = mapping_at(p, b_id, 0, &node);

		b_block = get_le64(base + off);
	}
	tv_pool_close(p);
	io_close(dev);

	map_case(t_superblock, "outside the data area", "map-superblock");
	map_case(t_overflow, "outside the data area", "map-overflow");
	map_case(t_past_end, "outside the data area", "map-past-end");
	map_case(t_metadata, "is a metadata chunk, but mapped as data",
		 "map-metadata");
	map_case(t_free, "missing reference count", "map-free");
	map_free_all();
	map_shared();
	shared_reused();
	own_counted_twice();
	root_in_data();
	sm_root_in_data();
	deferred_in_data();
	free(base);
	printf("test-engine-hostile: ok\n");
	return 0;
}
