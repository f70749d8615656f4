/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-pool - pool images: open, check, list and read every volume.
 *
 * An input is one of two things:
 *
 *   "TVFZ" MODE PATCH...   patches to the base pool image (fuzz.h), built
 *                          in memory once per process.  MODE: bit 0 also
 *                          runs the read-write phase.  A PATCH is
 *                            le32 offset (modulo the image size)
 *                            u8   flags: bit 0 XOR the bytes in instead of
 *                                 writing them; bit 1 recompute the
 *                                 CRC-32C of every 4 KiB node the patch
 *                                 touched (so that the damage gets past
 *                                 the checksum and reaches the
 *                                 validators, the checker and the trees);
 *                                 bit 2 copy instead: the bytes are a
 *                                 le32 source offset (modulo the image
 *                                 size), and len bytes of the image are
 *                                 copied from there (a node moved where
 *                                 it does not belong, with this run's
 *                                 pool tag in it)
 *                            u8   len, then len bytes (4 with bit 2)
 *   anything else          a whole image, as is (a real pool file, or
 *                          arbitrary bytes); both phases run.
 *
 * Why patches: a real pool is megabytes, mostly zeroes, and every metadata
 * node is checksummed, so a mutated raw image almost never gets past the
 * checksum of the node it changed.  A patch list of a few bytes says the
 * same damage in a small corpus file, and the resealing flag lets the
 * fuzzer forge well-formed hostile nodes (what test-corrupt's "forge"
 * does at random).  Raw images stay possible for real damaged pools found
 * in the field and for AFL++ runs on files.
 *
 * Every input runs twice: on a private in-memory copy of the image, and
 * on a pool file holding it (fuzz_file_dev: holes, preallocation and
 * fdatasync of the file backend).  Phase 1 opens it read-only: pool info,
 * check, list every volume, and for each its info, blob, usage, extents,
 * a lookup of its name and blob, and reads (at most READ_CAP bytes per
 * input).  Phase 2 opens it read-write and makes changes (overwrites of
 * mapped blocks, writes, discards, create, snapshot, delete, commit),
 * then reopens it and checks it: the write paths on damaged metadata.
 * Every error is fine; a crash, a sanitizer report or a hang is a bug,
 * and so is a broken oracle:
 *
 *   - the guard: a device between the engine and the image that fails
 *     the run when a write, discard or write-zeroes that is not a sealed
 *     node at its own place lands in the superblocks' block, a block the
 *     space map counts as a metadata chunk, or past the pool's last block
 *     (a client's data turned into metadata: vio-cache.c, rule 10);
 *   - the checker: a mapping outside the data area or onto a metadata
 *     chunk (found by walking every volume's and every deleted volume's
 *     mapping tree here) is a finding, so the check must not call such a
 *     pool clean; and a pool that checked clean before phase 2 checks
 *     clean after it (the engine's own writes never damage a pool).
 *
 * FUZZ_POOL_DUMP=FILE writes the base image to FILE and exits (the seed
 * generator, gen-pool-corpus.py, reads it to find the nodes).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "io/io.h"
#include "pdata/sm.h"
#include "thin/thin-internal.h"
#include "util/checked.h"
#include "util/crc32c.h"
#include "util/endian.h"

#define MAX_VOLS      64
#define READ_CAP      (1u << 20)
#define CHUNK	      (64u << 10)
#define OVERWRITE_CAP 64 /* mapped blocks phase 2 overwrites */

static uint8_t *base;
static uint8_t *buf;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dump;

	(void) argc;
	(void) argv;
	fuzz_quiet();
	base = fuzz_base_build();
	dump = getenv("FUZZ_POOL_DUMP");
	if (dump && *dump) {
		/* for gen-pool-corpus.py: the image the patches apply to */
		FILE *f = fopen(dump, "wb");

		if (!f || fwrite(base, FUZZ_POOL_SIZE, 1, f) != 1 || fclose(f))
			fuzz_die("%s: cannot write", dump);
		exit(0);
	}
	buf = malloc(CHUNK);
	if (!buf)
		fuzz_die("out of memory");
	return 0;
}

static void reseal(uint8_t *img, uint64_t size, uint64_t off, size_t len)
{
	uint64_t first = off / 4096, last = (off + len - 1) / 4096;

	for (uint64_t n = first; n <= last && (n + 1) * 4096 <= size; n++) {
		uint8_t *node = img + n * 4096;

		put_le32(node, crc32c(0, node + 4, 4096 - 4));
	}
}

/* Apply the patch list; returns the image's mode byte. */
static unsigned int apply(uint8_t *img, const uint8_t *p, size_t n)
{
	unsigned int mode = n ? p[0] : 0;
	size_t i = 1;

	while (i + 6 <= n) {
		uint64_t off = get_le32(p + i) % FUZZ_POOL_SIZE;
		unsigned int flags = p[i + 4];
		size_t len = p[i + 5], take;

		i += 6;
		if (flags & 4) {
			uint64_t src;

			if (n - i < 4)
				break;
			src = get_le32(p + i) % FUZZ_POOL_SIZE;
			take = 4;
			if (len > FUZZ_POOL_SIZE - MAX(off, src))
				len = FUZZ_POOL_SIZE - MAX(off, src);
			memmove(img + off, img + src, len);
		} else {
			if (len > n - i)
				len = n - i;
			take = len;
			if (len > FUZZ_POOL_SIZE - off)
				len = FUZZ_POOL_SIZE - off;
			for (size_t k = 0; k < len; k++) {
				if (flags & 1)
					img[off + k] ^= p[i + k];
				else
					img[off + k] = p[i + k];
			}
		}
		if ((flags & 2) && len)
			reseal(img, FUZZ_POOL_SIZE, off, len);
		i += take;
	}
	return mode;
}

/* ---- the guard (an oracle) ---- */

struct guard {
	struct io_dev dev;
	struct io_dev *lower;
	struct tv_pool *pool; /* the pool open on it, or NULL */
};

static struct guard *G(struct io_dev *d)
{
	return (struct guard *) d;
}

/* [at, at + len) of buf are sealed nodes, each at its own place. */
static bool sealed_nodes(const uint8_t *bytes, uint64_t at, uint64_t len)
{
	if (!bytes || at % 4096 || len % 4096)
		return false;
	for (uint64_t i = 0; i < len; i += 4096) {
		const uint8_t *n = bytes + i;

		if (get_le32(n) != crc32c(0, n + 4, 4096 - 4) ||
		    get_le64(n + 8) != (at + i) / 4096)
			return false;
	}
	return true;
}

/* A change of [off, off + len) (bytes: what is written; NULL: zeroes or
 * a discard) on the guarded device. */
static void guard_check(struct guard *g, const char *op, uint64_t off,
			uint64_t len, const uint8_t *bytes)
{
	struct tv_pool *p = g->pool;
	uint64_t bs, b, end = off + len;

	if (!p || !len)
		return;
	bs = p->block_size;
	for (b = off / bs; b * bs < end; b++) {
		uint64_t lo = b * bs > off ? b * bs : off;
		uint64_t hi = (b + 1) * bs < end ? (b + 1) * bs : end;
		const char *what = b < tm_first_block(p->tm) ? "the superblocks"
				   : b >= tm_nr_blocks(p->tm) ? "past the pool"
				   : sm_is_chunk(tm_sm(p->tm), b)
				       ? "a metadata chunk"
				       : NULL;

		if (what && !sealed_nodes(bytes ? bytes + (lo - off) : NULL, lo,
					  hi - lo))
			fuzz_die("guard: a %s of %llu bytes at %llu reached %s "
				 "(block %llu) with bytes that are no sealed "
				 "node",
				 op, (unsigned long long) len,
				 (unsigned long long) off, what,
				 (unsigned long long) b);
	}
}

static int g_read(struct io_dev *d, void *to, size_t len, uint64_t off)
{
	return io_read(G(d)->lower, to, len, off);
}

static int g_write(struct io_dev *d, const void *from, size_t len, uint64_t off)
{
	guard_check(G(d), "write", off, len, from);
	return io_write(G(d)->lower, from, len, off);
}

static int g_flush(struct io_dev *d)
{
	return io_flush(G(d)->lower);
}

static int g_discard(struct io_dev *d, uint64_t off, uint64_t len)
{
	guard_check(G(d), "discard", off, len, NULL);
	return io_discard(G(d)->lower, off, len);
}

static int g_wz(struct io_dev *d, uint64_t off, uint64_t len)
{
	guard_check(G(d), "write_zeroes", off, len, NULL);
	return io_write_zeroes(G(d)->lower, off, len);
}

static int g_resize(struct io_dev *d, uint64_t n)
{
	int r = io_resize(G(d)->lower, n);

	d->size = G(d)->lower->size;
	return r;
}

static void g_close(struct io_dev *d)
{
	free(d);
}

static int g_is_hole(struct io_dev *d, uint64_t off, uint64_t len)
{
	return io_is_hole(G(d)->lower, off, len);
}

static int g_prealloc(struct io_dev *d, uint64_t off, uint64_t len)
{
	return io_prealloc(G(d)->lower, off, len);
}

static int g_sync_ranges(struct io_dev *d, const struct io_range *r, size_t n,
			 const struct io_range *barrier)
{
	return io_sync_ranges(G(d)->lower, r, n, barrier);
}

static const struct io_ops guard_ops = {
    .read = g_read,
    .write = g_write,
    .flush = g_flush,
    .discard = g_discard,
    .write_zeroes = g_wz,
    .resize = g_resize,
    .close = g_close,
    .is_hole = g_is_hole,
    .prealloc = g_prealloc,
    .sync_ranges = g_sync_ranges,
};

static struct io_dev *guard_wrap(struct io_dev *lower)
{
	struct guard *g = calloc(1, sizeof(*g));

	if (!g)
		fuzz_die("out of memory");
	g->dev.ops = &guard_ops;
	g->dev.size = lower->size;
	g->dev.flags = lower->flags;
	snprintf(g->dev.name, sizeof(g->dev.name), "guard");
	g->lower = lower;
	return &g->dev;
}

/* pool_open_dev on the guard, which then checks every change. */
static int open_guarded(struct io_dev *dev, const struct tv_pool_open_opts *o,
			struct tv_pool **out)
{
	int r = pool_open_dev(dev, false, "fuzz", o, out);

	if (r == 0)
		G(dev)->pool = *out;
	return r;
}

static int close_guarded(struct io_dev *dev, struct tv_pool *p)
{
	int r = tv_pool_close(p);

	G(dev)->pool = NULL;
	return r;
}

/* ---- the checker's oracle: mappings outside the data area ---- */

struct walk {
	struct tv_pool *p;
	uint64_t bad, block; /* bad mappings found, the first one's block */
};

static int walk_mapping(void *ctx, const void *key, const void *value,
			bool shared)
{
	struct walk *w = ctx;
	struct tv_pool *p = w->p;
	uint64_t b = get_le64(value);

	(void) key;
	(void) shared;
	if (b < tm_first_block(p->tm) || b >= tm_nr_blocks(p->tm) ||
	    sm_is_chunk(tm_sm(p->tm), b)) {
		if (!w->bad++)
			w->block = b;
	}
	return 0;
}

static void walk_tree(struct walk *w, const struct disk_ref *d)
{
	struct tm_ref root;

	ref_from_disk(&root, d);
	if (root.blocknr) /* a damaged tree stops its walk: fine */
		btree_walk(&w->p->map, &root, walk_mapping, w);
}

static int walk_volume(void *ctx, const void *key, const void *value,
		       bool shared)
{
	(void) key;
	(void) shared;
	walk_tree(ctx, &((const struct disk_volume *) value)->map_root);
	return 0;
}

static int walk_deferred(void *ctx, const void *key, const void *value,
			 bool shared)
{
	(void) key;
	(void) shared;
	walk_tree(ctx, value);
	return 0;
}

/* Mappings of live and deleted volumes that name no data block: the
 * checker must not call the pool clean then. */
static void expect_check_sees_bad_mappings(struct tv_pool *p,
					   const struct tv_check_report *rep,
					   int check_r)
{
	struct walk w = {.p = p};

	pthread_mutex_lock(&p->meta_lock);
	btree_walk(&p->vols, tm_root(p->tm, SLOT_VOLS), walk_volume, &w);
	btree_walk(&p->deferred, tm_root(p->tm, SLOT_DEFERRED), walk_deferred,
		   &w);
	pthread_mutex_unlock(&p->meta_lock);
	if (w.bad && check_r == 0 && rep->clean)
		fuzz_die("the check calls the pool clean, but %llu mappings "
			 "name no data block (the first, block %llu)",
			 (unsigned long long) w.bad,
			 (unsigned long long) w.block);
}

static void read_volume(struct tv_pool *p, const struct tv_vol_info *v,
			size_t *budget)
{
	struct tv_extent ext[32];
	uint8_t blob[TV_BLOB_MAX];
	uint64_t mapped, excl, id, off = 0;
	size_t n;

	tv_vol_info(p, v->id, &(struct tv_vol_info){0});
	tv_vol_get_blob(p, v->id, blob, sizeof(blob));
	tv_vol_usage(p, v->id, &mapped, &excl);
	if (tv_vol_resolve(p, v->name, &id) == 0 && id != v->id) {
		/* two volumes answering to one name is damage the engine
		 * should have refused to open; tolerated, not a crash */
	}
	if (v->size)
		tv_vol_extents(p, v->id, 0,
			       v->size < (1u << 30) ? v->size : 1u << 30, ext,
			       32, &n);
	while (off < v->size && *budget >= TV_SECTOR) {
		size_t len = CHUNK;

		if (len > *budget)
			len = *budget;
		if (len > v->size - off)
			len = (size_t) (v->size - off);
		len &= ~(size_t) (TV_SECTOR - 1);
		if (!len)
			break;
		if (off & 1)
			tv_vol_read_map(p, v->id, buf, len, off, ext, 32, &n);
		else if (tv_vol_read(p, v->id, buf, len, off) < 0)
			break;
		*budget -= len;
		/* from the start, the end and then every 256 KiB: the
		 * budget reaches every volume */
		off += len < 256u << 10 ? 256u << 10 : len;
	}
}

/* Returns whether the pool opened and checked clean. */
static bool phase_ro(struct io_dev *dev)
{
	struct tv_pool_open_opts oo = {.read_only = true,
				       .cache_bytes = 1u << 20,
				       .commit_interval_ms = 3600000};
	struct tv_vol_info *vols;
	struct tv_check_report rep = {0};
	struct tv_pool_info in = {0};
	struct tv_pool *p;
	uint64_t cursor = 0, ids[8];
	size_t budget = READ_CAP;
	int n, total = 0, cr;
	bool clean;

	if (open_guarded(dev, &oo, &p) < 0) {
		if (fuzz_verbose)
			fprintf(stderr, "fuzz-pool: open failed: %s\n",
				tv_last_error());
		return false;
	}
	vols = calloc(MAX_VOLS, sizeof(*vols));
	if (!vols)
		fuzz_die("out of memory");
	tv_pool_info(p, &in);
	cr = tv_pool_check(p, NULL, &rep);
	clean = cr == 0 && rep.clean;
	expect_check_sees_bad_mappings(p, &rep, cr);
	while (total < MAX_VOLS &&
	       (n = tv_vol_list(p, &cursor, vols + total,
				(size_t) (MAX_VOLS - total))) > 0)
		total += n;
	if (fuzz_verbose)
		fprintf(stderr, "fuzz-pool: opened, check %s, %d volumes\n",
			rep.clean ? "clean" : "NOT clean", total);
	for (int i = 0; i < total; i++)
		read_volume(p, &vols[i], &budget);
	if (total) {
		uint8_t blob[TV_BLOB_MAX];

		if (tv_vol_get_blob(p, vols[0].id, blob, in.blob_size) == 0)
			tv_vol_find_blob(p, blob, in.blob_size / 2, ids, 8);
	}
	tv_vol_resolve(p, "#1", &cursor);
	close_guarded(dev, p);
	free(vols);
	return clean;
}

/* Overwrite 4 KiB at the start of every block the volume maps (in place
 * where it owns the block, else a copy): the writes that go where the
 * mappings say, at most *budget of them. */
static void overwrite_mapped(struct tv_pool *p, const struct tv_vol_info *v,
			     unsigned int *budget)
{
	struct tv_extent ext[32];
	uint64_t off = 0;
	size_t n;

	if (tv_vol_extents(p, v->id, 0, v->size, ext, 32, &n) < 0)
		return;
	for (size_t k = 0; k < n; off += ext[k++].len) {
		if (ext[k].flags & TV_EXTENT_HOLE)
			continue;
		for (uint64_t b = off; b < off + ext[k].len && *budget;
		     b += FUZZ_BLOCK, --*budget)
			tv_vol_write(p, v->id, buf, 4096, b,
				     *budget % 8 ? 0 : TV_IO_FUA);
	}
}

/* was_clean: phase 1 found the pool clean (it must stay so). */
static void phase_rw(struct io_dev *dev, bool was_clean)
{
	struct tv_pool_open_opts oo = {.cache_bytes = 1u << 20,
				       .commit_interval_ms = 3600000};
	struct tv_check_report rep;
	struct tv_vol_info v[4];
	struct tv_pool *p;
	uint64_t cursor = 0, id, snap;
	unsigned int budget = OVERWRITE_CAP;
	int n, cr;

	if (open_guarded(dev, &oo, &p) < 0)
		return;
	memset(buf, 0x5a, 8192);
	n = tv_vol_list(p, &cursor, v, 4);
	for (int i = 0; i < n; i++) {
		if (v[i].size >= 8192) {
			overwrite_mapped(p, &v[i], &budget);
			tv_vol_write(p, v[i].id, buf, 8192, 0, 0);
			tv_vol_discard(p, v[i].id, 4096, v[i].size - 4096);
		}
	}
	if (n > 1)
		tv_vol_delete(p, v[n - 1].id);
	if (tv_vol_create(p, "fuzz-new", 1u << 20, NULL, 0, &id) == 0) {
		tv_vol_write(p, id, buf, 8192, 4096, TV_IO_FUA);
		tv_vol_snapshot(p, id, "fuzz-snap", 0, NULL, 0, &snap);
		tv_vol_write(p, id, buf, 4096, 0, 0);
	}
	tv_pool_flush(p);
	close_guarded(dev, p);
	/* reopen what it committed (or left after failing) and check it */
	if (open_guarded(dev, &oo, &p) < 0) {
		if (was_clean)
			fuzz_die("a clean pool does not open after phase 2");
		return;
	}
	cr = tv_pool_check(p, was_clean ? stderr : NULL, &rep);
	if (was_clean && (cr < 0 || !rep.clean))
		fuzz_die("a clean pool is not clean after phase 2");
	expect_check_sees_bad_mappings(p, &rep, cr);
	close_guarded(dev, p);
}

/* Both phases on lower (owned) through a guard. */
static void run_on(struct io_dev *lower, unsigned int mode)
{
	struct io_dev *dev = guard_wrap(lower);
	bool clean = phase_ro(dev);

	if (mode & 1)
		phase_rw(dev, clean);
	io_close(dev);
	io_close(lower);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *img = data;
	struct io_dev *dev;
	uint8_t *patched = NULL;
	unsigned int mode = 1;

	if (size >= 4 && !memcmp(data, "TVFZ", 4)) {
		patched = malloc(FUZZ_POOL_SIZE);
		if (!patched)
			fuzz_die("out of memory");
		memcpy(patched, base, FUZZ_POOL_SIZE);
		mode = apply(patched, data + 4, size - 4);
		img = patched;
		size = FUZZ_POOL_SIZE;
	}
	if (!size)
		return 0;
	if (io_mem_create_from(img, size, &dev) < 0)
		fuzz_die("out of memory");
	run_on(dev, mode);
	/* the file backend (a raw image of a few bytes is no pool file: the
	 * memory run covers it) */
	if (size >= 8192 && fuzz_file_dev(img, size, &dev) == 0)
		run_on(dev, mode);
	free(patched);
	return 0;
}
