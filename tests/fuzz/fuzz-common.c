/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-common.c - the base pool and the quiet log of the fuzz targets
 * (fuzz.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "io/io.h"
#include "thin/thin-internal.h"
#include "util/log.h"

void fuzz_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz harness: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (%s)\n", tv_last_error());
	abort();
}

static void drop(enum log_level lvl, const char *msg, void *ctx)
{
	(void) lvl;
	(void) msg;
	(void) ctx;
}

static void drop_tv(int level, const char *msg, void *ctx)
{
	(void) level;
	(void) msg;
	(void) ctx;
}

int fuzz_verbose;

void fuzz_quiet(void)
{
	const char *v = getenv("FUZZ_VERBOSE");

	if (v && *v && strcmp(v, "0")) {
		fuzz_verbose = 1;
		return;
	}
	log_set_sink(drop, NULL);
	tv_set_logger(drop_tv, NULL, 0);
}

/* ---- the base pool ---- */

static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t) (seed >> 16);
	}
}

#define OK(expr)                                                               \
	do {                                                                   \
		int r_ = (expr);                                               \
		if (r_ < 0)                                                    \
			fuzz_die("%s: %s", #expr, strerror(-r_));              \
	} while (0)

uint8_t *fuzz_base_build(void)
{
	struct tv_pool_create_opts co = {.size = FUZZ_POOL_SIZE,
					 .block_size = FUZZ_BLOCK,
					 .blob_size = FUZZ_BLOB};
	struct tv_pool_open_opts oo = {.cache_bytes = 1u << 20};
	uint8_t blob[FUZZ_BLOB], *img, *buf;
	uint64_t a, snap, b, g, d, id;
	struct io_dev *mem;
	struct tv_pool *p;
	char name[16];

	/* ids from the counter alone (thin-internal.h): a run depends on its
	 * input only, and the corpus can name volumes #1.. */
	volume_id_clock = NULL;
	buf = malloc(64u << 10);
	img = malloc(FUZZ_POOL_SIZE);
	if (!buf || !img)
		fuzz_die("out of memory");
	OK(io_mem_create(FUZZ_POOL_SIZE, &mem));
	OK(pool_format_dev(mem, &co));
	OK(pool_open_dev(mem, false, "base", &oo, &p));

	/* alpha: data in three places, then a snapshot, then overwrites
	 * (shared and exclusive blocks) */
	memset(blob, 0xa1, sizeof(blob));
	OK(tv_vol_create(p, "alpha", 1u << 20, blob, sizeof(blob), &a));
	fill(buf, 64u << 10, 1);
	OK(tv_vol_write(p, a, buf, 64u << 10, 0, 0));
	OK(tv_vol_write(p, a, buf, 8192, 512u << 10, 0));
	OK(tv_vol_write(p, a, buf + 4096, 4096, (1u << 20) - 4096, 0));
	OK(tv_vol_snapshot(p, a, "alpha-snap", TV_VOL_READ_ONLY, NULL, 0,
			   &snap));
	fill(buf, 16384, 2);
	OK(tv_vol_write(p, a, buf, 16384, 8192, TV_IO_FUA));

	/* beta: written, then partly discarded and zeroed */
	memset(blob, 0xb2, sizeof(blob));
	OK(tv_vol_create(p, "beta", 512u << 10, blob, sizeof(blob), &b));
	fill(buf, 65536, 3);
	OK(tv_vol_write(p, b, buf, 65536, 65536, 0));
	OK(tv_vol_discard(p, b, 8192, 65536));
	OK(tv_vol_write_zeroes(p, b, 4096, 65536 + 16384));

	/* gamma: written and deleted (reclaimed by later commits) */
	OK(tv_vol_create(p, "gamma", 256u << 10, NULL, 0, &g));
	OK(tv_vol_write(p, g, buf, 32768, 0, 0));
	OK(tv_vol_flush(p, g));
	OK(tv_vol_delete(p, g));

	/* delta: renamed and grown */
	OK(tv_vol_create(p, "delta", 128u << 10, NULL, 0, &d));
	OK(tv_vol_rename(p, d, "delta2"));
	OK(tv_vol_resize(p, d, 2u << 20));
	OK(tv_vol_write(p, d, buf, 4096, (2u << 20) - 4096, 0));

	/* empty volumes with distinct blobs: a fuller volume tree and blob
	 * index */
	for (unsigned int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "v%02u", i);
		memset(blob, (int) i, sizeof(blob));
		OK(tv_vol_create(p, name, 64u << 10, blob, sizeof(blob), &id));
	}
	OK(tv_pool_flush(p));
	OK(tv_pool_close(p));
	memcpy(img, io_mem_data(mem), FUZZ_POOL_SIZE);
	io_close(mem);
	free(buf);
	return img;
}

/* ---- the base pool as a file ---- */

static char tmpdir[64];
static char pool_path[96];
static uint8_t *base;
static size_t *pages; /* nonzero pages of base */
static size_t nr_pages;

static void cleanup(void)
{
	if (!pool_path[0])
		return;
	unlink(pool_path);
	rmdir(tmpdir);
}

/* The private directory of the pool file, once. */
static void dir_init(void)
{
	const char *t = getenv("TMPDIR");

	if (pool_path[0])
		return;
	snprintf(tmpdir, sizeof(tmpdir), "%s/tvfuzz.XXXXXX",
		 t && *t && strlen(t) < 40 ? t : "/tmp");
	if (!mkdtemp(tmpdir))
		fuzz_die("mkdtemp %s: %s", tmpdir, strerror(errno));
	snprintf(pool_path, sizeof(pool_path), "%s/pool", tmpdir);
	atexit(cleanup);
}

static void file_init(void)
{
	static const uint8_t zero[4096];

	dir_init();
	base = fuzz_base_build();
	pages = malloc(FUZZ_POOL_SIZE / 4096 * sizeof(*pages));
	if (!pages)
		fuzz_die("out of memory");
	for (size_t i = 0; i < FUZZ_POOL_SIZE / 4096; i++)
		if (memcmp(base + i * 4096, zero, 4096))
			pages[nr_pages++] = i;
}

struct tv_pool *fuzz_pool_file_open(void)
{
	struct tv_pool_open_opts oo = {.cache_bytes = 1u << 20,
				       .commit_interval_ms = 3600000};
	struct tv_pool *p;
	int fd, r;

	if (!base)
		file_init();
	/* truncating to 0 first zeroes whatever the last run wrote */
	fd = open(pool_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, 0) < 0 || ftruncate(fd, FUZZ_POOL_SIZE) < 0)
		fuzz_die("%s: %s", pool_path, strerror(errno));
	for (size_t i = 0; i < nr_pages; i++)
		if (pwrite(fd, base + pages[i] * 4096, 4096,
			   (off_t) pages[i] * 4096) != 4096)
			fuzz_die("%s: write: %s", pool_path, strerror(errno));
	close(fd);
	r = tv_pool_open(pool_path, &oo, &p);
	if (r < 0)
		fuzz_die("open %s: %s", pool_path, strerror(-r));
	return p;
}

int fuzz_file_dev(const uint8_t *img, size_t size, struct io_dev **out)
{
	static const uint8_t zero[4096];
	int fd;

	dir_init();
	/* truncating to 0 first zeroes whatever the last run wrote; the
	 * image's zero pages stay holes, as in a real pool file */
	fd = open(pool_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t) size) < 0)
		fuzz_die("%s: %s", pool_path, strerror(errno));
	for (size_t off = 0; off < size; off += 4096) {
		size_t n = size - off < 4096 ? size - off : 4096;

		if (memcmp(img + off, zero, n) &&
		    pwrite(fd, img + off, n, (off_t) off) != (ssize_t) n)
			fuzz_die("%s: write: %s", pool_path, strerror(errno));
	}
	close(fd);
	return io_file_open(pool_path, 0, 0, out);
}
