/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bench-engine - the volume benchmark: the engine's public API
 * (include/thinvol.h) only, on file-backed pools in a temporary directory.
 *
 * Part 1, on a pool in --dir (default $TMPDIR or /var/tmp, a real disk, so
 * every commit pays a real fdatasync):
 *
 *   1. build: --volumes volumes named "vol-%07d" with distinct random
 *      blobs of the pool's blob size, created by tv_batch in batches of
 *      --batch creates (one transaction, one commit each).  Each batch is
 *      timed; batch time / batch size is the engine's cost per create with
 *      the commit spread over the batch.  Metadata bytes per volume:
 *      tv_pool_info().metadata after the build, less that of the empty
 *      pool, divided by the volumes.
 *   2. single ops at that size: --single tv_vol_create calls, each timed
 *      (each is its own transaction: commit and fdatasync included), then
 *      --single tv_vol_snapshot of random volumes and --single
 *      tv_vol_delete of those snapshots, each timed; then the same numbers
 *      of snapshots and deletes through tv_batch in batches of --batch.
 *   3. list: every volume through tv_vol_list, --page infos a call.
 *   4. lookups of random volumes, each timed and its answer checked:
 *      tv_vol_resolve by name, tv_vol_find_blob with the whole blob, and
 *      with its first 4 bytes.
 *
 * Part 2, on pools in --snap-dir (default /dev/shm when it exists; the
 * data written is one sector per pool block, see below):
 *
 *   5. for each --snap-sizes size: a fresh pool, one volume of that size,
 *      every block of it mapped by a sequential 512-byte write at the start
 *      of the block, tv_pool_flush; metadata bytes per mapped block; then
 *      --snaps snapshots of it, each timed; then the deletes of the
 *      snapshots and of the origin, each timed, and the time until the
 *      background reclaim has freed everything.
 *   5b. the same snapshots of volumes of every size in one pool (so that
 *      only the volume's mapped size differs; see part_same_pool).
 *   6. random writes: a fresh pool, a volume of --random-blocks blocks,
 *      one 4 KiB write in each block in random order (so every write maps
 *      a new block), tv_pool_flush; metadata bytes per mapped block.
 *
 * One 512-byte write maps a whole pool block exactly as a full-block write
 * does (the engine zeroes the rest of a fresh block with fallocate), so the
 * mapping metadata is the same; only the data written differs (64 GiB
 * mapped would otherwise need 64 GiB of disk or memory).  On tmpfs the
 * zeroing punches a hole and costs no memory: 1M mapped blocks take 4 GiB
 * (one page each).
 *
 * Output: a block of figures per part and "BENCH key=value ..." lines.
 *
 * Usage: bench-engine [--volumes N] [--batch N] [--single N] [--lookups N]
 *        [--page N] [--cache-mb N] [--dir DIR] [--snap-dir DIR]
 *        [--snap-sizes LIST] [--snaps N] [--random-blocks N]
 *        [--reclaim-max SIZE]
 *        [--block-size N] [--snap-block-size N] [--blob-size N] [--seed N]
 *        [--skip-volumes] [--skip-snapshots] [--skip-same-pool]
 * Numbers accept 1e6-style exponents and K/M/G suffixes (powers of 1024).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "thinvol.h"
/* The one use of the engine's internals: commit statistics (nodes
 * written and read, time per step of the commit) for the single ops. */
#include "pdata/bc.h"
#include "pdata/tm.h"
#include "thin/thin-internal.h"

#define MAX_SNAP_SIZES 8
#define GiB	       ((uint64_t) 1 << 30)
#define MiB	       ((uint64_t) 1 << 20)

struct opts {
	uint64_t volumes;
	uint64_t batch;
	uint64_t single;
	uint64_t lookups;
	uint64_t page;
	uint64_t cache_mb; /* 0: the library's default */
	const char *dir;
	const char *snap_dir;
	uint64_t snap_sizes[MAX_SNAP_SIZES];
	int nr_snap_sizes;
	uint64_t snaps;
	uint64_t random_blocks;
	uint64_t reclaim_max; /* wait for the reclaim up to this size */
	uint32_t block_size;
	uint32_t snap_block_size;
	int32_t blob_size;
	uint64_t seed;
	bool skip_volumes, skip_snapshots, skip_same_pool;
};

/* ---- small helpers ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: on a shared machine, unlike the wall
 * time, it does not count the time other processes held the CPU (it
 * does count system time, e.g. the pwrite of metadata nodes). */
static double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t rnd_state;

static uint64_t rnd(void)
{
	return splitmix(&rnd_state);
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

/* Blob i: deterministic, so it need not be kept; distinct in practice
 * (the first 8 bytes are a bijection of i). */
static void make_blob(uint8_t *b, size_t len, uint64_t seed, uint64_t i)
{
	uint64_t x = seed * 0x100000001B3ull + i;

	for (size_t off = 0; off < len; off += 8) {
		uint64_t v = splitmix(&x);
		size_t n = len - off < 8 ? len - off : 8;

		memcpy(b + off, &v, n);
	}
}

static void die(const char *what, int r)
{
	fprintf(stderr, "bench-engine: %s: %s (%s)\n", what, strerror(-r),
		tv_last_error());
	exit(1);
}

/* ---- latency samples ---- */

struct lat {
	double *v;
	size_t n, cap;
	double sum;
};

static void lat_add(struct lat *l, double s)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			die("realloc", -ENOMEM);
	}
	l->v[l->n++] = s;
	l->sum += s;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *) a, y = *(const double *) b;

	return x < y ? -1 : x > y;
}

struct stats {
	size_t n;
	double mean, p50, p99, max, sum; /* seconds */
};

static struct stats lat_stats(struct lat *l)
{
	struct stats s = {.n = l->n, .sum = l->sum};

	if (!l->n)
		return s;
	qsort(l->v, l->n, sizeof(*l->v), cmp_double);
	s.mean = l->sum / (double) l->n;
	s.p50 = l->v[(l->n - 1) / 2];
	s.p99 = l->v[(size_t) ((double) (l->n - 1) * 0.99)];
	s.max = l->v[l->n - 1];
	return s;
}

static void lat_reset(struct lat *l)
{
	l->n = 0;
	l->sum = 0;
}

/* "label: mean/p50/p99/max" in µs, and the BENCH fields */
static char bench_line[8192];

static void bench_add(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void bench_add(const char *fmt, ...)
{
	size_t len = strlen(bench_line);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(bench_line + len, sizeof(bench_line) - len, fmt, ap);
	va_end(ap);
}

static void print_lat(const char *label, const char *key, struct lat *l,
		      double per)
{
	struct stats s = lat_stats(l);

	printf("  %-34s n=%-8zu mean %9.1f  p50 %9.1f  p99 %9.1f  max %9.1f "
	       "us%s\n",
	       label, s.n, s.mean / per * 1e6, s.p50 / per * 1e6,
	       s.p99 / per * 1e6, s.max / per * 1e6,
	       per > 1 ? " (per op)" : "");
	bench_add(" %s_mean_us=%.2f %s_p50_us=%.2f %s_p99_us=%.2f"
		  " %s_max_us=%.2f",
		  key, s.mean / per * 1e6, key, s.p50 / per * 1e6, key,
		  s.p99 / per * 1e6, key, s.max / per * 1e6);
}

/* The thread CPU time of single ops, under their wall-time line. */
static void print_cpu(const char *key, struct lat *l)
{
	struct stats s = lat_stats(l);

	printf("    thread CPU us: mean %.1f p50 %.1f p99 %.1f\n", s.mean * 1e6,
	       s.p50 * 1e6, s.p99 * 1e6);
	bench_add(" %s_cpu_mean_us=%.2f %s_cpu_p50_us=%.2f"
		  " %s_cpu_p99_us=%.2f",
		  key, s.mean * 1e6, key, s.p50 * 1e6, key, s.p99 * 1e6);
}

static void bench_flush(const char *part)
{
	printf("BENCH part=%s%s\n", part, bench_line);
	bench_line[0] = 0;
	fflush(stdout);
}

/* ---- options ---- */

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!*s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	if (*end == 'e' || *end == 'E') {
		char *e2;
		unsigned long e = strtoul(end + 1, &e2, 10);

		if (e2 == end + 1 || *e2 || e > 19)
			return -EINVAL;
		while (e--)
			mul *= 10;
		end = e2;
	} else if (*end) {
		switch (*end) {
		case 'k':
		case 'K':
			mul = 1ull << 10;
			break;
		case 'm':
		case 'M':
			mul = 1ull << 20;
			break;
		case 'g':
		case 'G':
			mul = 1ull << 30;
			break;
		default:
			return -EINVAL;
		}
		if (end[1])
			return -EINVAL;
	}
	if (v && mul > UINT64_MAX / v)
		return -ERANGE;
	*out = (uint64_t) v * mul;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: bench-engine [options]\n"
	    "  --volumes N         volumes to create (default 100000)\n"
	    "  --batch N           creates (snapshots, deletes) per tv_batch "
	    "(default 1000)\n"
	    "  --single N          single creates, snapshots, deletes timed "
	    "one by one\n"
	    "                      at --volumes volumes (default 10000)\n"
	    "  --lookups N         lookups of each kind (default 100000)\n"
	    "  --page N            infos per tv_vol_list call (default "
	    "1000)\n"
	    "  --cache-mb N        metadata cache, MiB (default 0: the "
	    "library's, 64)\n"
	    "  --dir DIR           pool directory of part 1 (default "
	    "$TMPDIR or /var/tmp)\n"
	    "  --snap-dir DIR      pool directory of part 2 (default "
	    "/dev/shm if it\n"
	    "                      exists, else as --dir)\n"
	    "  --snap-sizes LIST   mapped sizes, comma-separated (default "
	    "1G,16G)\n"
	    "  --snaps N           snapshots of each (default 50)\n"
	    "  --random-blocks N   blocks written by random 4 KiB writes "
	    "(default 256K)\n"
	    "  --reclaim-max SIZE  wait for (and time) the reclaim after "
	    "the deletes\n"
	    "                      up to this mapped size (default 1G; "
	    "it is throttled\n"
	    "                      by the commit interval, so slow)\n"
	    "  --block-size N      pool block size of part 1 (default 64K)\n"
	    "  --snap-block-size N pool block size of part 2 (default "
	    "64K)\n"
	    "  --blob-size N       pool blob size (default 256)\n"
	    "  --seed N            random seed (default 1)\n"
	    "  --skip-volumes      skip part 1\n"
	    "  --skip-snapshots    skip part 2\n"
	    "  --skip-same-pool    skip part 2's volumes of every size in "
	    "one pool\n");
}

static bool good_block(uint64_t v)
{
	return v >= 4096 && v <= GiB && !(v & (v - 1));
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	    {"volumes", required_argument, NULL, 'n'},
	    {"batch", required_argument, NULL, 'B'},
	    {"single", required_argument, NULL, 'S'},
	    {"lookups", required_argument, NULL, 'l'},
	    {"page", required_argument, NULL, 'P'},
	    {"cache-mb", required_argument, NULL, 'm'},
	    {"dir", required_argument, NULL, 'd'},
	    {"snap-dir", required_argument, NULL, 'D'},
	    {"snap-sizes", required_argument, NULL, 'z'},
	    {"snaps", required_argument, NULL, 'k'},
	    {"random-blocks", required_argument, NULL, 'r'},
	    {"reclaim-max", required_argument, NULL, 'R'},
	    {"block-size", required_argument, NULL, 'b'},
	    {"snap-block-size", required_argument, NULL, 'c'},
	    {"blob-size", required_argument, NULL, 'o'},
	    {"seed", required_argument, NULL, 's'},
	    {"skip-volumes", no_argument, NULL, 'V'},
	    {"skip-snapshots", no_argument, NULL, 'X'},
	    {"skip-same-pool", no_argument, NULL, 'Y'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct stat st;
	uint64_t v;
	int c;

	*o = (struct opts){
	    .volumes = 100000,
	    .batch = 1000,
	    .single = 10000,
	    .lookups = 100000,
	    .page = 1000,
	    .snap_sizes = {GiB, 16 * GiB},
	    .nr_snap_sizes = 2,
	    .snaps = 50,
	    .random_blocks = 256 * 1024,
	    .reclaim_max = GiB,
	    .block_size = 64u << 10,
	    .snap_block_size = 64u << 10,
	    .blob_size = 256,
	    .seed = 1,
	};
	o->dir = getenv("TMPDIR");
	if (!o->dir || !*o->dir)
		o->dir = "/var/tmp";
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			exit(0);
		case 'd':
			o->dir = optarg;
			continue;
		case 'D':
			o->snap_dir = optarg;
			continue;
		case 'V':
			o->skip_volumes = true;
			continue;
		case 'X':
			o->skip_snapshots = true;
			continue;
		case 'Y':
			o->skip_same_pool = true;
			continue;
		case 'z': {
			char *s = strdup(optarg), *save = NULL, *t;

			o->nr_snap_sizes = 0;
			for (t = strtok_r(s, ",", &save); t;
			     t = strtok_r(NULL, ",", &save)) {
				if (o->nr_snap_sizes == MAX_SNAP_SIZES ||
				    parse_u64(t, &v) || !v)
					goto bad;
				o->snap_sizes[o->nr_snap_sizes++] = v;
			}
			free(s);
			continue;
		}
		case '?':
			goto bad;
		default:
			break;
		}
		if (parse_u64(optarg, &v))
			goto bad;
		switch (c) {
		case 'n':
			o->volumes = v;
			break;
		case 'B':
			o->batch = v;
			break;
		case 'S':
			o->single = v;
			break;
		case 'l':
			o->lookups = v;
			break;
		case 'P':
			o->page = v;
			break;
		case 'm':
			o->cache_mb = v;
			break;
		case 'k':
			o->snaps = v;
			break;
		case 'r':
			o->random_blocks = v;
			break;
		case 'R':
			o->reclaim_max = v;
			break;
		case 'b':
			if (!good_block(v))
				goto bad;
			o->block_size = (uint32_t) v;
			break;
		case 'c':
			if (!good_block(v))
				goto bad;
			o->snap_block_size = (uint32_t) v;
			break;
		case 'o':
			if (v > TV_BLOB_MAX)
				goto bad;
			o->blob_size = (int32_t) v;
			break;
		case 's':
			o->seed = v;
			break;
		default:
			goto bad;
		}
	}
	if (optind != argc || !o->volumes || !o->batch || !o->page ||
	    o->volumes + o->single > 9999999 || o->blob_size < 4)
		goto bad;
	if (!o->snap_dir)
		o->snap_dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)
				  ? "/dev/shm"
				  : o->dir;
	return 0;
bad:
	fprintf(stderr, "bench-engine: bad arguments\n");
	usage(stderr);
	return -EINVAL;
}

/* ---- pools ---- */

static char *tmp_dirs[4];
static int nr_tmp_dirs;

static void cleanup(void)
{
	for (int i = 0; i < nr_tmp_dirs; i++) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/pool", tmp_dirs[i]);
		unlink(path);
		rmdir(tmp_dirs[i]);
	}
}

static const char *fs_name(const char *dir)
{
	struct statfs sf;

	if (statfs(dir, &sf) < 0)
		return "?";
	switch ((unsigned long) sf.f_type) {
	case 0x01021994ul:
		return "tmpfs";
	case 0xEF53ul:
		return "ext4";
	case 0x58465342ul:
		return "xfs";
	case 0x9123683Eul:
		return "btrfs";
	default:
		return "other";
	}
}

/* A fresh pool file in a new temporary directory under dir. */
static struct tv_pool *pool_new(const struct opts *o, const char *dir,
				uint64_t size, uint32_t block_size,
				char **path_out)
{
	struct tv_pool_create_opts co = {
	    .size = size,
	    .block_size = block_size,
	    .blob_size = o->blob_size,
	};
	struct tv_pool_open_opts oo = {
	    .cache_bytes = (size_t) (o->cache_mb * MiB),
	};
	struct tv_pool *pool;
	char *d, *path;
	int r;

	if (asprintf(&d, "%s/thinvol-bench-engine-XXXXXX", dir) < 0 ||
	    !mkdtemp(d)) {
		fprintf(stderr, "bench-engine: mkdtemp in %s: %s\n", dir,
			strerror(errno));
		exit(1);
	}
	tmp_dirs[nr_tmp_dirs++] = d;
	if (asprintf(&path, "%s/pool", d) < 0)
		die("asprintf", -ENOMEM);
	r = tv_pool_create(path, &co);
	if (r)
		die("tv_pool_create", r);
	r = tv_pool_open(path, &oo, &pool);
	if (r)
		die("tv_pool_open", r);
	*path_out = path;
	return pool;
}

static void pool_end(struct tv_pool *pool, char *path)
{
	int r = tv_pool_close(pool);

	if (r)
		die("tv_pool_close", r);
	unlink(path);
	free(path);
	cleanup();
	nr_tmp_dirs = 0;
}

static struct tv_pool_info info_of(struct tv_pool *pool)
{
	struct tv_pool_info in;
	int r = tv_pool_info(pool, &in);

	if (r)
		die("tv_pool_info", r);
	return in;
}

static uint64_t file_allocated(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t) st.st_blocks * 512 : 0;
}

static long max_rss_mb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss / 1024;
}

/* ---- commit statistics (internal probe) ---- */

struct probe {
	struct tm_commit_stats c;
	struct bc_stats b;
};

static struct probe probe_of(struct tv_pool *pool)
{
	struct probe pr;

	pthread_mutex_lock(&pool->meta_lock);
	tm_commit_stats(pool->tm, &pr.c);
	bc_stats(tm_bc(pool->tm), &pr.b);
	pthread_mutex_unlock(&pool->meta_lock);
	return pr;
}

/* Per op between two probes: commits, nodes written and read, space map
 * fixpoint rounds and tree changes, and the commit's time by step. */
static void print_probe(const char *key, const struct probe *a,
			const struct probe *b, uint64_t ops)
{
	double n = (double) ops;
	double commits = (double) (b->c.commits - a->c.commits);

	printf("    per op: %.2f commits, %.1f nodes written, %.1f nodes "
	       "read (%.1f cache misses), sm %.1f rounds %.1f tree changes; "
	       "commit us: sm_flush %.1f write %.1f flush %.1f super+flush "
	       "%.1f\n",
	       commits / n,
	       (double) (b->c.nodes_written - a->c.nodes_written) / n,
	       (double) (b->b.reads - a->b.reads) / n,
	       (double) (b->b.misses - a->b.misses) / n,
	       (double) (b->c.sm_rounds - a->c.sm_rounds) / n,
	       (double) (b->c.sm_tree_ops - a->c.sm_tree_ops) / n,
	       (double) (b->c.ns_sm_flush - a->c.ns_sm_flush) / n / 1e3,
	       (double) (b->c.ns_write - a->c.ns_write) / n / 1e3,
	       (double) (b->c.ns_flush - a->c.ns_flush) / n / 1e3,
	       (double) (b->c.ns_super - a->c.ns_super) / n / 1e3);
	bench_add(" %s_nodes_written=%.1f %s_nodes_read=%.1f"
		  " %s_sync_us=%.1f",
		  key, (double) (b->c.nodes_written - a->c.nodes_written) / n,
		  key, (double) (b->b.reads - a->b.reads) / n, key,
		  (double) (b->c.ns_flush - a->c.ns_flush + b->c.ns_super -
			    a->c.ns_super) /
		      n / 1e3);
}

/* ---- part 1: many volumes ---- */

#define VOL_SIZE GiB

static void name_of(char *buf, const char *prefix, uint64_t i)
{
	snprintf(buf, 32, "%s-%07" PRIu64, prefix, i);
}

static void part_volumes(const struct opts *o)
{
	const uint64_t n = o->volumes, B = o->batch;
	const size_t bsz = (size_t) o->blob_size;
	struct tv_pool_info in0, in1, in2;
	struct tv_pool *pool;
	struct lat lat = {0};
	uint64_t *ids, *snap_ids, *found;
	struct tv_op *ops;
	uint8_t *blobs;
	char(*names)[32];
	char *path;
	double t0, t1, c0;
	int r;

	pool = pool_new(o, o->dir, 64 * GiB, o->block_size, &path);
	printf("\n== part 1: %" PRIu64 " volumes, pool %s (%s), block %u, "
	       "blob %d, cache %s ==\n",
	       n, path, fs_name(o->dir), o->block_size, o->blob_size,
	       o->cache_mb ? "set" : "library default");
	if (o->cache_mb)
		printf("  cache %" PRIu64 " MiB\n", o->cache_mb);
	bench_add(" volumes=%" PRIu64 " batch=%" PRIu64 " block_size=%u"
		  " blob_size=%d cache_mb=%" PRIu64 " fs=%s",
		  n, B, o->block_size, o->blob_size, o->cache_mb,
		  fs_name(o->dir));

	ids = calloc(n + o->single, sizeof(*ids));
	snap_ids = calloc(o->single + 1, sizeof(*snap_ids));
	ops = calloc(B, sizeof(*ops));
	blobs = malloc(B * bsz);
	names = calloc(B, sizeof(*names));
	found = calloc(64, sizeof(*found));
	if (!ids || !snap_ids || !ops || !blobs || !names || !found)
		die("calloc", -ENOMEM);
	in0 = info_of(pool);

	/* 1. batched build */
	t0 = now_s();
	c0 = cpu_s();
	for (uint64_t i = 0; i < n; i += B) {
		size_t m = (size_t) (n - i < B ? n - i : B);
		size_t failed = 0;
		double b0;

		for (size_t j = 0; j < m; j++) {
			name_of(names[j], "vol", i + j);
			make_blob(blobs + j * bsz, bsz, o->seed, i + j);
			ops[j] = (struct tv_op){
			    .kind = TV_OP_CREATE,
			    .name = names[j],
			    .size = VOL_SIZE,
			    .blob = blobs + j * bsz,
			    .blob_len = bsz,
			};
		}
		b0 = now_s();
		r = tv_batch(pool, ops, m, &failed);
		lat_add(&lat, now_s() - b0);
		if (r)
			die("tv_batch(create)", r);
		for (size_t j = 0; j < m; j++)
			ids[i + j] = ops[j].result_id;
	}
	t1 = now_s();
	in1 = info_of(pool);
	printf("build (tv_batch of %" PRIu64 " creates): %.2f s, %.0f "
	       "creates/s, on CPU %.0f%%\n",
	       B, t1 - t0, (double) n / (t1 - t0),
	       (cpu_s() - c0) / (t1 - t0) * 100);
	print_lat("batch of creates, per create", "batch_create", &lat,
		  (double) B);
	printf("  metadata %.1f MiB (empty pool %.1f MiB): %.1f bytes/volume;"
	       " pool file allocated %.1f MiB; nr_volumes %" PRIu64 "\n",
	       (double) in1.metadata / MiB, (double) in0.metadata / MiB,
	       (double) (in1.metadata - in0.metadata) / (double) n,
	       (double) file_allocated(path) / MiB, in1.nr_volumes);
	bench_add(" build_s=%.3f meta_bytes_per_volume=%.1f", t1 - t0,
		  (double) (in1.metadata - in0.metadata) / (double) n);
	lat_reset(&lat);

	/* 2. single ops, each its own transaction */
	if (o->single) {
		uint8_t *blob = blobs;
		struct probe pa, pb;
		struct lat cpu = {0};

		pa = probe_of(pool);

		for (uint64_t i = n; i < n + o->single; i++) {
			double b0, tc;

			name_of(names[0], "vol", i);
			make_blob(blob, bsz, o->seed, i);
			tc = thread_cpu_s();
			b0 = now_s();
			r = tv_vol_create(pool, names[0], VOL_SIZE, blob, bsz,
					  &ids[i]);
			lat_add(&lat, now_s() - b0);
			lat_add(&cpu, thread_cpu_s() - tc);
			if (r)
				die("tv_vol_create", r);
		}
		print_lat("tv_vol_create (commit each)", "create", &lat, 1);
		pb = probe_of(pool);
		print_probe("create", &pa, &pb, o->single);
		print_cpu("create", &cpu);
		pa = pb;
		lat_reset(&lat);
		lat_reset(&cpu);
		for (uint64_t i = 0; i < o->single; i++) {
			uint64_t origin = ids[rnd_below(n)];
			double b0, tc;

			name_of(names[0], "snap", i);
			tc = thread_cpu_s();
			b0 = now_s();
			r = tv_vol_snapshot(pool, origin, names[0], 0, NULL, 0,
					    &snap_ids[i]);
			lat_add(&lat, now_s() - b0);
			lat_add(&cpu, thread_cpu_s() - tc);
			if (r)
				die("tv_vol_snapshot", r);
		}
		print_lat("tv_vol_snapshot (commit each)", "snapshot", &lat, 1);
		pb = probe_of(pool);
		print_probe("snapshot", &pa, &pb, o->single);
		print_cpu("snapshot", &cpu);
		pa = pb;
		lat_reset(&lat);
		lat_reset(&cpu);
		for (uint64_t i = 0; i < o->single; i++) {
			double tc = thread_cpu_s();
			double b0 = now_s();

			r = tv_vol_delete(pool, snap_ids[i]);
			lat_add(&lat, now_s() - b0);
			lat_add(&cpu, thread_cpu_s() - tc);
			if (r)
				die("tv_vol_delete", r);
		}
		print_lat("tv_vol_delete (commit each)", "delete", &lat, 1);
		pb = probe_of(pool);
		print_probe("delete", &pa, &pb, o->single);
		print_cpu("delete", &cpu);
		free(cpu.v);
		pa = pb;
		lat_reset(&lat);

		/* the same through tv_batch */
		for (uint64_t i = 0; i < o->single; i += B) {
			size_t m =
			    (size_t) (o->single - i < B ? o->single - i : B);
			size_t failed = 0;
			double b0;

			for (size_t j = 0; j < m; j++) {
				name_of(names[j], "bsnap", i + j);
				ops[j] = (struct tv_op){
				    .kind = TV_OP_SNAPSHOT,
				    .id = ids[rnd_below(n)],
				    .name = names[j],
				};
			}
			b0 = now_s();
			r = tv_batch(pool, ops, m, &failed);
			lat_add(&lat, (now_s() - b0) * (double) B / (double) m);
			if (r)
				die("tv_batch(snapshot)", r);
			for (size_t j = 0; j < m; j++)
				snap_ids[i + j] = ops[j].result_id;
		}
		print_lat("batch of snapshots, per snapshot", "batch_snapshot",
			  &lat, (double) B);
		lat_reset(&lat);
		for (uint64_t i = 0; i < o->single; i += B) {
			size_t m =
			    (size_t) (o->single - i < B ? o->single - i : B);
			size_t failed = 0;
			double b0;

			for (size_t j = 0; j < m; j++)
				ops[j] = (struct tv_op){
				    .kind = TV_OP_DELETE,
				    .id = snap_ids[i + j],
				};
			b0 = now_s();
			r = tv_batch(pool, ops, m, &failed);
			lat_add(&lat, (now_s() - b0) * (double) B / (double) m);
			if (r)
				die("tv_batch(delete)", r);
		}
		print_lat("batch of deletes, per delete", "batch_delete", &lat,
			  (double) B);
		lat_reset(&lat);
	}
	in2 = info_of(pool);

	/* 3. list */
	{
		struct tv_vol_info *infos = calloc(o->page, sizeof(*infos));
		uint64_t cursor = 0, total = 0;
		int got;

		if (!infos)
			die("calloc", -ENOMEM);
		t0 = now_s();
		c0 = cpu_s();
		while ((got = tv_vol_list(pool, &cursor, infos,
					  (size_t) o->page)) > 0)
			total += (uint64_t) got;
		t1 = now_s();
		if (got < 0)
			die("tv_vol_list", got);
		if (total != in2.nr_volumes) {
			fprintf(stderr,
				"bench-engine: listed %" PRIu64
				" volumes of %" PRIu64 "\n",
				total, in2.nr_volumes);
			exit(1);
		}
		printf("list: %" PRIu64 " volumes in %.3f s, %.2f us/volume "
		       "(%" PRIu64 " a call), on CPU %.0f%%\n",
		       total, t1 - t0, (t1 - t0) / (double) total * 1e6,
		       o->page, (cpu_s() - c0) / (t1 - t0) * 100);
		bench_add(" list_s=%.3f list_us_per_volume=%.3f", t1 - t0,
			  (t1 - t0) / (double) total * 1e6);
		free(infos);
	}

	/* 4. lookups of random volumes (the first n: their blobs are known) */
	{
		uint8_t *blob = blobs;
		uint64_t prefix_hits = 0;
		double l0;

		for (uint64_t k = 0; k < o->lookups; k++) {
			uint64_t i = rnd_below(n), id = 0;

			name_of(names[0], "vol", i);
			l0 = now_s();
			r = tv_vol_resolve(pool, names[0], &id);
			lat_add(&lat, now_s() - l0);
			if (r || id != ids[i]) {
				fprintf(stderr,
					"bench-engine: resolve %s: %d, "
					"id %" PRIu64 " not %" PRIu64 "\n",
					names[0], r, id, ids[i]);
				exit(1);
			}
		}
		print_lat("tv_vol_resolve (name)", "resolve", &lat, 1);
		lat_reset(&lat);
		for (uint64_t k = 0; k < o->lookups; k++) {
			uint64_t i = rnd_below(n);

			make_blob(blob, bsz, o->seed, i);
			l0 = now_s();
			r = tv_vol_find_blob(pool, blob, bsz, found, 64);
			lat_add(&lat, now_s() - l0);
			if (r != 1 || found[0] != ids[i]) {
				fprintf(stderr,
					"bench-engine: find_blob of "
					"volume %" PRIu64 ": %d\n",
					i, r);
				exit(1);
			}
		}
		print_lat("tv_vol_find_blob (whole blob)", "find_blob", &lat,
			  1);
		lat_reset(&lat);
		for (uint64_t k = 0; k < o->lookups; k++) {
			uint64_t i = rnd_below(n);
			bool hit = false;

			make_blob(blob, bsz, o->seed, i);
			l0 = now_s();
			r = tv_vol_find_blob(pool, blob, 4, found, 64);
			lat_add(&lat, now_s() - l0);
			for (int j = 0; j < r && j < 64; j++)
				hit |= found[j] == ids[i];
			if (r < 1 || (r <= 64 && !hit)) {
				fprintf(stderr,
					"bench-engine: find_blob prefix "
					"of volume %" PRIu64 ": %d\n",
					i, r);
				exit(1);
			}
			prefix_hits += (uint64_t) r;
		}
		print_lat("tv_vol_find_blob (4-byte prefix)", "find_prefix",
			  &lat, 1);
		printf("  4-byte prefix: %.4f volumes found per lookup\n",
		       (double) prefix_hits / (double) o->lookups);
		lat_reset(&lat);
	}
	printf("  max RSS %ld MiB\n", max_rss_mb());
	bench_flush("volumes");
	pool_end(pool, path);
	free(lat.v);
	free(ids);
	free(snap_ids);
	free(ops);
	free(blobs);
	free(names);
	free(found);
}

/* ---- part 2: mapped volumes, snapshots, deletes ---- */

/* Until nothing deleted is left to free (reclaimable is only a lower
 * bound of what is to come: a delete does not count all of a big
 * snapshotted volume). */
static bool reclaim_pending(struct tv_pool *pool)
{
	bool pending;

	pthread_mutex_lock(&pool->meta_lock);
	pending = tm_root(pool->tm, SLOT_DEFERRED)->blocknr != 0;
	pthread_mutex_unlock(&pool->meta_lock);
	return pending;
}

static void wait_reclaimed(struct tv_pool *pool, double *secs)
{
	double t0 = now_s();

	while (reclaim_pending(pool)) {
		if (now_s() - t0 > 600) {
			printf("  reclaim: still %" PRIu64 " bytes after 600 s"
			       "\n",
			       info_of(pool).reclaimable);
			break;
		}
		usleep(1000);
	}
	*secs = now_s() - t0;
}

static void part_snapshot(const struct opts *o, uint64_t size)
{
	const uint32_t bs = o->snap_block_size;
	const uint64_t blocks = size / bs;
	struct tv_pool_info in0, in1;
	struct lat lat = {0};
	struct probe pa, pb;
	struct tv_pool *pool;
	char *path, name[32];
	uint64_t id, *snaps;
	static uint8_t sector[512];
	double t0, t1, rec_s;
	int r;

	memset(sector, 0xa5, sizeof(sector));
	pool = pool_new(o, o->snap_dir, size + size / 4 + GiB, bs, &path);
	printf("\n== part 2: %" PRIu64 " MiB mapped (%" PRIu64 " blocks of "
	       "%u), pool on %s ==\n",
	       size / MiB, blocks, bs, fs_name(o->snap_dir));
	bench_add(" mapped_mib=%" PRIu64 " blocks=%" PRIu64 " block_size=%u"
		  " fs=%s",
		  size / MiB, blocks, bs, fs_name(o->snap_dir));
	r = tv_vol_create(pool, "origin", size, NULL, 0, &id);
	if (r)
		die("tv_vol_create", r);
	in0 = info_of(pool);
	t0 = now_s();
	for (uint64_t b = 0; b < blocks; b++) {
		r = tv_vol_write(pool, id, sector, sizeof(sector), b * bs, 0);
		if (r)
			die("tv_vol_write", r);
	}
	r = tv_pool_flush(pool);
	if (r)
		die("tv_pool_flush", r);
	t1 = now_s();
	in1 = info_of(pool);
	printf("sequential fill: %.2f s, %.2f us per block mapped; metadata "
	       "+%.2f MiB: %.2f bytes per mapped block\n",
	       t1 - t0, (t1 - t0) / (double) blocks * 1e6,
	       (double) (in1.metadata - in0.metadata) / MiB,
	       (double) (in1.metadata - in0.metadata) / (double) blocks);
	bench_add(" fill_s=%.2f meta_bytes_per_block_seq=%.2f", t1 - t0,
		  (double) (in1.metadata - in0.metadata) / (double) blocks);

	snaps = calloc(o->snaps + 1, sizeof(*snaps));
	if (!snaps)
		die("calloc", -ENOMEM);
	pa = probe_of(pool);
	for (uint64_t i = 0; i < o->snaps; i++) {
		snprintf(name, sizeof(name), "snap-%" PRIu64, i);
		t0 = now_s();
		r = tv_vol_snapshot(pool, id, name, 0, NULL, 0, &snaps[i]);
		lat_add(&lat, now_s() - t0);
		if (r)
			die("tv_vol_snapshot", r);
		if (i == 0) {
			/* the first one finds the origin's cache full */
			struct probe p1 = probe_of(pool);

			printf("  first snapshot after the fill    %.1f us\n",
			       (now_s() - t0) * 1e6);
			bench_add(" snapshot_first_us=%.1f",
				  (now_s() - t0) * 1e6);
			print_probe("snapshot_first", &pa, &p1, 1);
		}
	}
	pb = probe_of(pool);
	print_lat("tv_vol_snapshot", "snapshot", &lat, 1);
	print_probe("snapshot", &pa, &pb, o->snaps);
	lat_reset(&lat);
	pa = probe_of(pool);
	for (uint64_t i = 0; i < o->snaps; i++) {
		t0 = now_s();
		r = tv_vol_delete(pool, snaps[i]);
		lat_add(&lat, now_s() - t0);
		if (r)
			die("tv_vol_delete(snapshot)", r);
	}
	pb = probe_of(pool);
	print_lat("tv_vol_delete (snapshot)", "delete_snap", &lat, 1);
	print_probe("delete_snap", &pa, &pb, o->snaps);
	lat_reset(&lat);
	if (size <= o->reclaim_max) {
		wait_reclaimed(pool, &rec_s);
		printf("  reclaim of the snapshots: %.3f s\n", rec_s);
	}
	t0 = now_s();
	r = tv_vol_delete(pool, id);
	t1 = now_s();
	if (r)
		die("tv_vol_delete(origin)", r);
	printf("  tv_vol_delete (origin)             %.1f us\n",
	       (t1 - t0) * 1e6);
	bench_add(" delete_origin_us=%.1f", (t1 - t0) * 1e6);
	if (size <= o->reclaim_max) {
		wait_reclaimed(pool, &rec_s);
		printf("  reclaim of the origin's %" PRIu64 " blocks: %.3f s "
		       "(%.2f us/block)\n",
		       blocks, rec_s, rec_s / (double) blocks * 1e6);
		bench_add(" reclaim_s=%.3f", rec_s);
	}
	printf("  max RSS %ld MiB\n", max_rss_mb());
	bench_flush("snapshot");
	pool_end(pool, path);
	free(snaps);
	free(lat.v);
}

/*
 * 5b. The volume's mapped size alone: one pool, a volume of each
 * --snap-sizes size filled as in 5, then --snaps rounds of one snapshot
 * of each (in turn, so that the machine's noise falls on every size
 * alike), each timed and its metadata nodes counted.  In 5 each size has
 * a pool of its own, so the pool's metadata grows with it too.
 */
static void part_same_pool(const struct opts *o)
{
	const uint32_t bs = o->snap_block_size;
	const int ns = o->nr_snap_sizes;
	struct lat lat[MAX_SNAP_SIZES] = {0};
	uint64_t ids[MAX_SNAP_SIZES], nodes[MAX_SNAP_SIZES] = {0};
	uint64_t total = 0, *snaps, nsnaps = 0;
	static uint8_t sector[512];
	struct tv_pool *pool;
	char *path, name[48];
	int r;

	memset(sector, 0x5c, sizeof(sector));
	for (int i = 0; i < ns; i++)
		total += o->snap_sizes[i];
	pool = pool_new(o, o->snap_dir, total + total / 4 + GiB, bs, &path);
	printf("\n== part 2: one pool, a volume of each size (%" PRIu64
	       " MiB mapped in all), pool on %s ==\n",
	       total / MiB, fs_name(o->snap_dir));
	for (int i = 0; i < ns; i++) {
		snprintf(name, sizeof(name), "m-%" PRIu64, o->snap_sizes[i]);
		r = tv_vol_create(pool, name, o->snap_sizes[i], NULL, 0,
				  &ids[i]);
		if (r)
			die("tv_vol_create", r);
		for (uint64_t b = 0; b < o->snap_sizes[i] / bs; b++) {
			r = tv_vol_write(pool, ids[i], sector, sizeof(sector),
					 b * bs, 0);
			if (r)
				die("tv_vol_write", r);
		}
	}
	r = tv_pool_flush(pool);
	if (r)
		die("tv_pool_flush", r);
	snaps = calloc(o->snaps * (uint64_t) ns + 1, sizeof(*snaps));
	if (!snaps)
		die("calloc", -ENOMEM);
	for (uint64_t k = 0; k < o->snaps; k++) {
		for (int i = 0; i < ns; i++) {
			struct probe pa, pb;
			double t0;

			snprintf(name, sizeof(name), "s-%d-%" PRIu64, i, k);
			pa = probe_of(pool);
			t0 = now_s();
			r = tv_vol_snapshot(pool, ids[i], name, 0, NULL, 0,
					    &snaps[nsnaps++]);
			lat_add(&lat[i], now_s() - t0);
			if (r)
				die("tv_vol_snapshot", r);
			pb = probe_of(pool);
			nodes[i] += pb.c.nodes_written - pa.c.nodes_written;
		}
	}
	for (int i = 0; i < ns; i++) {
		char label[64], key[48];

		snprintf(label, sizeof(label),
			 "tv_vol_snapshot, %" PRIu64 " MiB mapped",
			 o->snap_sizes[i] / MiB);
		snprintf(key, sizeof(key), "same_pool_snapshot_%" PRIu64 "m",
			 o->snap_sizes[i] / MiB);
		print_lat(label, key, &lat[i], 1);
		printf("    per op: %.1f nodes written\n",
		       (double) nodes[i] / (double) o->snaps);
		bench_add(" %s_nodes_written=%.1f", key,
			  (double) nodes[i] / (double) o->snaps);
		free(lat[i].v);
	}
	for (uint64_t k = 0; k < nsnaps; k++) {
		r = tv_vol_delete(pool, snaps[k]);
		if (r)
			die("tv_vol_delete", r);
	}
	bench_flush("same_pool");
	pool_end(pool, path);
	free(snaps);
}

static void part_random(const struct opts *o)
{
	const uint32_t bs = o->snap_block_size;
	const uint64_t blocks = o->random_blocks;
	struct tv_pool_info in0, in1;
	struct tv_pool *pool;
	uint64_t id, *perm;
	static uint8_t buf[4096];
	char *path;
	double t0, t1;
	int r;

	memset(buf, 0x5a, sizeof(buf));
	pool = pool_new(o, o->snap_dir, blocks * bs + blocks * bs / 4 + GiB, bs,
			&path);
	printf("\n== part 2: random 4 KiB writes into %" PRIu64 " blocks of "
	       "%u, pool on %s ==\n",
	       blocks, bs, fs_name(o->snap_dir));
	r = tv_vol_create(pool, "random", blocks * bs, NULL, 0, &id);
	if (r)
		die("tv_vol_create", r);
	perm = malloc(blocks * sizeof(*perm));
	if (!perm)
		die("malloc", -ENOMEM);
	for (uint64_t i = 0; i < blocks; i++)
		perm[i] = i;
	for (uint64_t i = blocks - 1; i > 0; i--) {
		uint64_t j = rnd_below(i + 1), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	in0 = info_of(pool);
	t0 = now_s();
	for (uint64_t i = 0; i < blocks; i++) {
		uint64_t off = perm[i] * bs + rnd_below(bs / 4096) * 4096;

		r = tv_vol_write(pool, id, buf, sizeof(buf), off, 0);
		if (r)
			die("tv_vol_write", r);
	}
	r = tv_pool_flush(pool);
	if (r)
		die("tv_pool_flush", r);
	t1 = now_s();
	in1 = info_of(pool);
	printf("random fill: %.2f s, %.2f us per block mapped; metadata "
	       "+%.2f MiB: %.2f bytes per mapped block\n",
	       t1 - t0, (t1 - t0) / (double) blocks * 1e6,
	       (double) (in1.metadata - in0.metadata) / MiB,
	       (double) (in1.metadata - in0.metadata) / (double) blocks);
	bench_add(" blocks=%" PRIu64 " block_size=%u fill_s=%.2f"
		  " meta_bytes_per_block_random=%.2f",
		  blocks, bs, t1 - t0,
		  (double) (in1.metadata - in0.metadata) / (double) blocks);
	bench_flush("random");
	pool_end(pool, path);
	free(perm);
}

int main(int argc, char **argv)
{
	struct opts o;

	if (parse_opts(argc, argv, &o))
		return 2;
	rnd_state = o.seed;
	atexit(cleanup);
	printf("bench-engine: %" PRIu64 " volumes (batches of %" PRIu64
	       ", %" PRIu64 " single ops, %" PRIu64 " lookups), blob %d, "
	       "block %u / %u, seed %" PRIu64 "\n",
	       o.volumes, o.batch, o.single, o.lookups, o.blob_size,
	       o.block_size, o.snap_block_size, o.seed);
	if (!o.skip_volumes)
		part_volumes(&o);
	if (!o.skip_snapshots) {
		for (int i = 0; i < o.nr_snap_sizes; i++)
			part_snapshot(&o, o.snap_sizes[i]);
		if (o.nr_snap_sizes > 1 && !o.skip_same_pool)
			part_same_pool(&o);
		if (o.random_blocks)
			part_random(&o);
	}
	return 0;
}
