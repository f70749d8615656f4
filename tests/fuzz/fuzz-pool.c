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
 *                                 validators, the checker and the trees)
 *                            u8   len, then len bytes
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
 * The device is always a private in-memory copy.  Phase 1 opens it
 * read-only: pool info, check, list every volume, and for each its info,
 * blob, usage, extents, a lookup of its name and blob, and reads (at most
 * READ_CAP bytes per input).  Phase 2 opens it read-write and makes
 * changes (create, write, snapshot, delete, commit), then reopens it:
 * the write paths on damaged metadata.  Every error is fine; a crash, a
 * sanitizer report or a hang is a bug.
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
#include "thin/thin-internal.h"
#include "util/crc32c.h"
#include "util/endian.h"

#define MAX_VOLS 64
#define READ_CAP (1u << 20)
#define CHUNK (64u << 10)

static uint8_t *base;
static uint8_t *buf;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dump;

	(void)argc;
	(void)argv;
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
		size_t len = p[i + 5];

		i += 6;
		if (len > n - i)
			len = n - i;
		if (len > FUZZ_POOL_SIZE - off)
			len = FUZZ_POOL_SIZE - off;
		for (size_t k = 0; k < len; k++) {
			if (flags & 1)
				img[off + k] ^= p[i + k];
			else
				img[off + k] = p[i + k];
		}
		if ((flags & 2) && len)
			reseal(img, FUZZ_POOL_SIZE, off, len);
		i += len;
	}
	return mode;
}

static void read_volume(struct tv_pool *p, const struct tv_vol_info *v,
			size_t *budget)
{
	struct tv_extent ext[32];
	uint8_t blob[TV_BLOB_MAX];
	uint64_t mapped, excl, id, off = 0;
	size_t n;

	tv_vol_info(p, v->id, &(struct tv_vol_info){ 0 });
	tv_vol_get_blob(p, v->id, blob, sizeof(blob));
	tv_vol_usage(p, v->id, &mapped, &excl);
	if (tv_vol_resolve(p, v->name, &id) == 0 && id != v->id) {
		/* two volumes answering to one name is damage the engine
		 * should have refused to open; tolerated, not a crash */
	}
	if (v->size)
		tv_vol_extents(p, v->id, 0, v->size < (1u << 30) ? v->size
								: 1u << 30,
			       ext, 32, &n);
	while (off < v->size && *budget >= TV_SECTOR) {
		size_t len = CHUNK;

		if (len > *budget)
			len = *budget;
		if (len > v->size - off)
			len = (size_t)(v->size - off);
		len &= ~(size_t)(TV_SECTOR - 1);
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

static void phase_ro(struct io_dev *dev)
{
	struct tv_pool_open_opts oo = { .read_only = true,
					.cache_bytes = 1u << 20,
					.commit_interval_ms = 3600000 };
	struct tv_vol_info *vols;
	struct tv_check_report rep = { 0 };
	struct tv_pool_info in = { 0 };
	struct tv_pool *p;
	uint64_t cursor = 0, ids[8];
	size_t budget = READ_CAP;
	int n, total = 0;

	if (pool_open_dev(dev, false, "fuzz", &oo, &p) < 0) {
		if (fuzz_verbose)
			fprintf(stderr, "fuzz-pool: open failed: %s\n",
				tv_last_error());
		return;
	}
	vols = calloc(MAX_VOLS, sizeof(*vols));
	if (!vols)
		fuzz_die("out of memory");
	tv_pool_info(p, &in);
	tv_pool_check(p, NULL, &rep);
	while (total < MAX_VOLS &&
	       (n = tv_vol_list(p, &cursor, vols + total,
				(size_t)(MAX_VOLS - total))) > 0)
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
	tv_pool_close(p);
	free(vols);
}

static void phase_rw(struct io_dev *dev)
{
	struct tv_pool_open_opts oo = { .cache_bytes = 1u << 20,
					.commit_interval_ms = 3600000 };
	struct tv_check_report rep;
	struct tv_vol_info v[4];
	struct tv_pool *p;
	uint64_t cursor = 0, id, snap;
	int n;

	if (pool_open_dev(dev, false, "fuzz", &oo, &p) < 0)
		return;
	memset(buf, 0x5a, 8192);
	n = tv_vol_list(p, &cursor, v, 4);
	for (int i = 0; i < n; i++) {
		if (v[i].size >= 8192) {
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
	tv_pool_close(p);
	/* reopen what it committed (or left after failing) and check it */
	if (pool_open_dev(dev, false, "fuzz", &oo, &p) < 0)
		return;
	tv_pool_check(p, NULL, &rep);
	tv_pool_close(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct io_dev *dev;
	unsigned int mode = 1;

	if (size >= 4 && !memcmp(data, "TVFZ", 4)) {
		if (io_mem_create_from(base, FUZZ_POOL_SIZE, &dev) < 0)
			fuzz_die("out of memory");
		mode = apply(io_mem_data(dev), data + 4, size - 4);
	} else {
		if (!size || io_mem_create_from(data, size, &dev) < 0)
			return 0;
	}
	phase_ro(dev);
	if (mode & 1)
		phase_rw(dev);
	io_close(dev);
	return 0;
}
