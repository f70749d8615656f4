/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bench-btree - the metadata benchmark: one copy-on-write btree of 8-byte
 * keys and 16-byte values, in a file-backed store, so that every commit
 * pays a real fdatasync.
 *
 * For each key order (random 64-bit keys, or ascending keys) it measures:
 *
 *   1. build: --keys inserts into the tree in root slot 0, tm_commit every
 *      --commit-every inserts (and once at the end).  Each commit is timed
 *      on its own; the insert rate counts the commits too.
 *   2. metadata: sm_get_stats after the final commit; the user tree and the
 *      space map tree are walked with a cursor to count their nodes, which
 *      also pulls every node of the user tree into the cache.
 *   3. warm lookups: --lookups lookups of random present keys, then a batch
 *      of absent keys, with the whole tree cached (the cache misses during
 *      the timed loop are reported: they should be 0).
 *   4. cold lookups: the store is closed, the file dropped from the page
 *      cache (posix_fadvise, best effort) and reopened; --cold random
 *      lookups then read their nodes from the device.  The reopen (which
 *      loads the space map) is timed too.
 *
 * Every lookup checks the value it gets, so a wrong tree cannot produce a
 * fast figure.  Output: a block of figures per run, a summary table, and
 * one "BENCH key=value ..." line per run for scripts.
 *
 * Usage: bench-btree [--keys N] [--order random|sequential|both]
 *        [--commit-every N] [--cache-mb N] [--pool PATH] [--block-size N]
 *        [--lookups N] [--absent N] [--cold N] [--seed N]
 * Numbers accept 1e6-style exponents and K/M/G suffixes (powers of 1024).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "pdata/btree.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "util/checked.h"
#include "util/endian.h"

#define KEY_SIZE   8u
#define VALUE_SIZE 16u
#define BENCH_TAG  0x48434e42u /* "BNCH" */
#define MAX_LEVELS BTREE_MAX_DEPTH

enum order { ORDER_RANDOM, ORDER_SEQUENTIAL };
static const char *const order_names[] = {"random", "sequential"};

struct opts {
	uint64_t keys;
	bool orders[2];
	uint64_t commit_every;
	uint64_t cache_mb;
	const char *pool; /* NULL: a temporary file */
	uint32_t block_size;
	uint64_t lookups; /* 0: as many as keys */
	uint64_t absent;  /* UINT64_MAX: min(lookups, 10^6) */
	uint64_t cold;
	uint64_t seed;
};

/* Everything one run reports. */
struct result {
	enum order order;
	uint64_t keys;
	double build_s, commit_s;
	uint64_t nr_commits;
	double commit_mean_ms, commit_p50_ms, commit_p99_ms, commit_max_ms;
	double nodes_written_per_commit;
	struct sm_stats sm;
	uint64_t tree_nodes, tree_leaves, sm_nodes, sm_entries;
	unsigned int height;
	double leaf_fill;    /* entries / (leaves * max_entries) */
	uint64_t file_bytes; /* allocated in the pool file */
	uint64_t lookups, absent, lookup_misses;
	double lookup_s, absent_s;
	double lookup_cpu_s; /* CPU time of the present lookups: less than
			      * lookup_s when other load took the CPU */
	double reopen_s;
	uint64_t cold;
	double cold_s;
	uint64_t cold_reads;
};

/* ---- small helpers ---- */

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static double now_s(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

/* xoshiro256** seeded through splitmix64 (as in tests/common/tcheck.h) */
struct rng {
	uint64_t s[4];
};

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void rng_init(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix(&seed);
}

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = (s[3] << 45) | (s[3] >> 19);
	return res;
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

static void make_value(uint8_t *v, uint64_t key)
{
	put_be64(v, key);
	put_le64(v + 8, ~key);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *) a, y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/* Parse a count: digits, optionally "eN" (1e6), or a K/M/G suffix. */
static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0, mul = 1;
	const char *p = s;

	if (!*p)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (mul_overflow_u64(v, 10, &v) ||
		    add_overflow_u64(v, (uint64_t) (*p - '0'), &v))
			return -ERANGE;
	}
	if (p == s)
		return -EINVAL;
	if (*p == 'e' || *p == 'E') {
		unsigned int e = 0;

		if (p[1] < '0' || p[1] > '9' || (p[2] && p[3]))
			return -EINVAL;
		for (p++; *p; p++)
			e = e * 10 + (unsigned int) (*p - '0');
		while (e--)
			if (mul_overflow_u64(mul, 10, &mul))
				return -ERANGE;
	} else if (*p) {
		switch (*p) {
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
		if (p[1])
			return -EINVAL;
	}
	if (mul_overflow_u64(v, mul, &v))
		return -ERANGE;
	*out = v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: bench-btree [options]\n"
	    "  --keys N           keys to insert (default 1000000)\n"
	    "  --order ORDER      random, sequential or both (default both)\n"
	    "  --commit-every N   inserts per commit (default 10000)\n"
	    "  --cache-mb N       metadata cache, MiB (default 2048)\n"
	    "  --pool PATH        pool file to create (must not exist);\n"
	    "                     default: a temporary file in $TMPDIR or\n"
	    "                     /var/tmp; deleted at the end either way\n"
	    "  --block-size N     pool block size (default 64K)\n"
	    "  --lookups N        warm lookups of present keys (default: "
	    "keys)\n"
	    "  --absent N         warm lookups of absent keys\n"
	    "                     (default: min(lookups, 1000000))\n"
	    "  --cold N           lookups after reopening with cold caches\n"
	    "                     (default 10000; 0: skip)\n"
	    "  --seed N           random seed (default 1)\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	    {"keys", required_argument, NULL, 'k'},
	    {"order", required_argument, NULL, 'o'},
	    {"commit-every", required_argument, NULL, 'c'},
	    {"cache-mb", required_argument, NULL, 'm'},
	    {"pool", required_argument, NULL, 'p'},
	    {"block-size", required_argument, NULL, 'b'},
	    {"lookups", required_argument, NULL, 'l'},
	    {"absent", required_argument, NULL, 'a'},
	    {"cold", required_argument, NULL, 'C'},
	    {"seed", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c;

	*o = (struct opts){
	    .keys = 1000000,
	    .orders = {true, true},
	    .commit_every = 10000,
	    .cache_mb = 2048,
	    .block_size = 64u << 10,
	    .absent = UINT64_MAX,
	    .cold = 10000,
	    .seed = 1,
	};
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		if (c == 'p') {
			o->pool = optarg;
			continue;
		}
		if (c == 'o') {
			o->orders[ORDER_RANDOM] = !strcmp(optarg, "random") ||
						  !strcmp(optarg, "both");
			o->orders[ORDER_SEQUENTIAL] =
			    !strcmp(optarg, "sequential") ||
			    !strcmp(optarg, "both");
			if (!o->orders[0] && !o->orders[1])
				goto bad;
			continue;
		}
		if (c == '?' || parse_u64(optarg, &v))
			goto bad;
		switch (c) {
		case 'k':
			o->keys = v;
			break;
		case 'c':
			o->commit_every = v;
			break;
		case 'm':
			o->cache_mb = v;
			break;
		case 'b':
			if (v < TM_MIN_BLOCK_SIZE || v > TM_MAX_BLOCK_SIZE ||
			    (v & (v - 1)))
				goto bad;
			o->block_size = (uint32_t) v;
			break;
		case 'l':
			o->lookups = v;
			break;
		case 'a':
			o->absent = v;
			break;
		case 'C':
			o->cold = v;
			break;
		case 's':
			o->seed = v;
			break;
		default:
			goto bad;
		}
	}
	if (optind != argc || !o->keys || !o->commit_every || !o->cache_mb ||
	    o->keys > (1ull << 40) || o->cache_mb > (SIZE_MAX >> 20))
		goto bad;
	if (!o->lookups)
		o->lookups = o->keys;
	if (o->absent == UINT64_MAX)
		o->absent = MIN(o->lookups, 1000000);
	return 0;
bad:
	fprintf(stderr, "bench-btree: bad arguments\n");
	usage(stderr);
	return -EINVAL;
}

/* ---- the pool ---- */

/*
 * Create a fresh sparse pool file of size bytes and open it.  *path_out is
 * the name to unlink afterwards (malloc'd, caller frees).  A temporary file
 * is unlinked at once: the open fd keeps it, and it cannot be left behind.
 */
static int pool_create(const struct opts *o, uint64_t size, struct io_dev **dev,
		       char **path_out)
{
	char *path;
	int r;

	if (o->pool) {
		path = strdup(o->pool);
		if (!path)
			return -ENOMEM;
		r = io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, size,
				 dev);
		if (r) {
			fprintf(stderr, "bench-btree: cannot create %s: %s\n",
				path, strerror(-r));
			free(path);
			return r;
		}
		*path_out = path;
		return 0;
	}

	const char *dir = getenv("TMPDIR");
	int fd;

	if (!dir || !*dir)
		dir = "/var/tmp";
	if (asprintf(&path, "%s/thinvol-bench-XXXXXX", dir) < 0)
		return -ENOMEM;
	fd = mkstemp(path);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "bench-btree: mkstemp %s: %s\n", path,
			strerror(errno));
		goto out_free;
	}
	if (ftruncate(fd, (off_t) size) < 0) {
		r = -errno;
		fprintf(stderr, "bench-btree: ftruncate %s: %s\n", path,
			strerror(errno));
		close(fd);
		goto out_unlink;
	}
	close(fd);
	r = io_file_open(path, 0, 0, dev);
	if (r)
		fprintf(stderr, "bench-btree: open %s: %s\n", path,
			strerror(-r));
out_unlink:
	unlink(path);
out_free:
	free(path);
	*path_out = NULL;
	return r;
}

static uint64_t file_allocated(struct io_dev *dev)
{
	struct stat st;
	int fd = io_file_fd(dev);

	if (fd < 0 || fstat(fd, &st) < 0)
		return 0;
	return (uint64_t) st.st_blocks * 512;
}

static void drop_page_cache(struct io_dev *dev)
{
	int fd = io_file_fd(dev);

	if (fd >= 0) {
		(void) fdatasync(fd);
		(void) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	}
}

/* ---- the measurements ---- */

/*
 * Walk every entry of a tree with a cursor, counting the distinct nodes at
 * each depth of the path (a node's entries are contiguous in key order).
 */
static int walk_tree(const struct btree_info *info, const struct tm_ref *root,
		     uint64_t *entries, uint64_t *nodes, uint64_t *leaves)
{
	uint64_t last[MAX_LEVELS], n = 0, total = 0, nleaves = 0;
	struct btree_cursor c;
	unsigned int d;
	int r;

	for (d = 0; d < MAX_LEVELS; d++)
		last[d] = 0;
	r = btree_cursor_seek(info, root, NULL, &c);
	while (!r && c.valid) {
		for (d = 0; d < c.depth; d++) {
			uint64_t b = c.path[d].node->blocknr;

			if (b != last[d]) {
				last[d] = b;
				total++;
				if (d == c.depth - 1)
					nleaves++;
			}
		}
		n++;
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	if (r)
		return r;
	*entries = n;
	*nodes = total;
	*leaves = nleaves;
	return 0;
}

static int timed_commit(struct tm *tm, double *lat, uint64_t *nr_commits)
{
	double t0 = now_s();
	int r = tm_commit(tm);

	lat[(*nr_commits)++] = now_s() - t0;
	if (r)
		fprintf(stderr, "bench-btree: tm_commit: %s\n", strerror(-r));
	return r;
}

/* Build the tree: keys[] receives the keys actually inserted. */
static int build(const struct opts *o, struct tm *tm,
		 const struct btree_info *info, enum order order,
		 struct rng *rng, uint64_t *keys, struct result *res)
{
	uint64_t max_commits = o->keys / o->commit_every + 2, writes0;
	double *lat = calloc(max_commits, sizeof(*lat));
	struct bc_stats bs;
	uint8_t kb[KEY_SIZE], vb[VALUE_SIZE];
	double t0, sum = 0;
	uint64_t i;
	int r = 0;

	if (!lat)
		return -ENOMEM;
	bc_stats(tm_bc(tm), &bs);
	writes0 = bs.writes;
	res->nr_commits = 0;
	t0 = now_s();
	for (i = 0; i < o->keys; i++) {
		uint64_t k = order == ORDER_RANDOM ? rng_next(rng) : 2 * i;

		put_be64(kb, k);
		make_value(vb, k);
		r = btree_insert(info, tm_root(tm, 0), kb, vb);
		while (r == -EEXIST && order == ORDER_RANDOM) {
			k = rng_next(rng); /* a repeated random key */
			put_be64(kb, k);
			make_value(vb, k);
			r = btree_insert(info, tm_root(tm, 0), kb, vb);
		}
		if (r) {
			fprintf(stderr,
				"bench-btree: insert #%" PRIu64 ": %s\n", i,
				strerror(-r));
			goto out;
		}
		keys[i] = k;
		if ((i + 1) % o->commit_every == 0) {
			r = timed_commit(tm, lat, &res->nr_commits);
			if (r)
				goto out;
		}
	}
	if (o->keys % o->commit_every) {
		r = timed_commit(tm, lat, &res->nr_commits);
		if (r)
			goto out;
	}
	res->build_s = now_s() - t0;
	bc_stats(tm_bc(tm), &bs);
	res->nodes_written_per_commit =
	    (double) (bs.writes - writes0) / (double) res->nr_commits;

	for (i = 0; i < res->nr_commits; i++)
		sum += lat[i];
	res->commit_s = sum;
	qsort(lat, res->nr_commits, sizeof(*lat), cmp_double);
	res->commit_mean_ms = sum / (double) res->nr_commits * 1e3;
	res->commit_p50_ms = lat[res->nr_commits / 2] * 1e3;
	res->commit_p99_ms = lat[(res->nr_commits * 99) / 100] * 1e3;
	res->commit_max_ms = lat[res->nr_commits - 1] * 1e3;
out:
	free(lat);
	return r;
}

/* Time n lookups of keys[random index]: every one must find its value.
 * *cpu_secs (may be NULL) receives the CPU time they took. */
static int lookup_present(const struct btree_info *info, struct tm *tm,
			  const uint64_t *keys, uint64_t nkeys, uint64_t n,
			  struct rng *rng, double *secs, double *cpu_secs)
{
	uint8_t kb[KEY_SIZE], vb[VALUE_SIZE], want[VALUE_SIZE];
	double c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	double t0 = now_s();
	uint64_t i, next = rng_below(rng, nkeys);
	int r;

	for (i = 0; i < n; i++) {
		uint64_t k = keys[next];

		/* Fetch the next key while this lookup runs: keys[] is 8 bytes
		 * a key, and a cache miss on it is not the tree's cost. */
		next = rng_below(rng, nkeys);
		__builtin_prefetch(&keys[next]);

		put_be64(kb, k);
		r = btree_lookup(info, tm_root(tm, 0), kb, vb);
		make_value(want, k);
		if (r || memcmp(vb, want, VALUE_SIZE)) {
			fprintf(stderr,
				"bench-btree: lookup of %016" PRIx64 " %s\n", k,
				r ? strerror(-r) : "returned a wrong value");
			return r ? r : -EUCLEAN;
		}
	}
	*secs = now_s() - t0;
	if (cpu_secs)
		*cpu_secs = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
	return 0;
}

/* Time n lookups of keys that are not in the tree: odd keys for the
 * sequential tree (its keys are even), random ones for the random tree
 * (a rare random hit is checked and then skipped). */
static int lookup_absent(const struct btree_info *info, struct tm *tm,
			 enum order order, uint64_t nkeys, uint64_t n,
			 struct rng *rng, double *secs)
{
	uint8_t kb[KEY_SIZE], vb[VALUE_SIZE], want[VALUE_SIZE];
	double t0 = now_s();
	uint64_t i;
	int r;

	for (i = 0; i < n; i++) {
		uint64_t k = order == ORDER_RANDOM
				 ? rng_next(rng)
				 : 2 * rng_below(rng, nkeys) + 1;

		put_be64(kb, k);
		r = btree_lookup(info, tm_root(tm, 0), kb, vb);
		if (r == -ENOENT)
			continue;
		make_value(want, k);
		if (r || order != ORDER_RANDOM ||
		    memcmp(vb, want, VALUE_SIZE)) {
			fprintf(stderr,
				"bench-btree: absent lookup of %016" PRIx64
				": %d\n",
				k, r);
			return r ? r : -EUCLEAN;
		}
	}
	*secs = now_s() - t0;
	return 0;
}

static int run(const struct opts *o, enum order order, struct result *res)
{
	struct tm_format_opts fo = {.block_size = o->block_size};
	struct tm_open_opts oo = {.cache_bytes = (size_t) o->cache_mb << 20};
	struct btree_info info = {
	    .tag = BENCH_TAG,
	    .key_size = KEY_SIZE,
	    .value = {.size = VALUE_SIZE},
	};
	uint64_t pool_size, *keys, entries, sm_leaves;
	struct io_dev *dev = NULL;
	struct tm *tm = NULL;
	struct bc_stats b0, b1;
	struct rng rng;
	char *path = NULL;
	double t0;
	int r;

	memset(res, 0, sizeof(*res));
	res->order = order;
	res->keys = o->keys;
	rng_init(&rng, o->seed ^ (uint64_t) order);

	/* Sparse, so generous: the metadata of random inserts is about 35
	 * bytes a key, plus what the copies of each transaction hold until
	 * the commit frees the old ones. */
	if (mul_overflow_u64(o->keys, 256, &pool_size) ||
	    add_overflow_u64(pool_size, 1ull << 30, &pool_size))
		return -ERANGE;
	pool_size -= pool_size % o->block_size;

	keys = malloc(o->keys * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	r = pool_create(o, pool_size, &dev, &path);
	if (r)
		goto out_keys;
	r = tm_format(dev, &fo);
	if (r) {
		fprintf(stderr, "bench-btree: tm_format: %s\n", strerror(-r));
		goto out_dev;
	}
	r = tm_open(dev, &oo, &tm);
	if (r) {
		fprintf(stderr, "bench-btree: tm_open: %s\n", strerror(-r));
		goto out_dev;
	}
	info.tm = tm;

	/* 1. build */
	r = build(o, tm, &info, order, &rng, keys, res);
	if (r)
		goto out_tm;

	/* 2. metadata */
	sm_get_stats(tm_sm(tm), &res->sm);
	res->file_bytes = file_allocated(dev);
	r = walk_tree(&info, tm_root(tm, 0), &entries, &res->tree_nodes,
		      &res->tree_leaves);
	if (r || entries != o->keys) {
		fprintf(stderr,
			"bench-btree: walking the tree: %s, %" PRIu64
			" entries of %" PRIu64 "\n",
			strerror(-r), entries, o->keys);
		r = r ? r : -EUCLEAN;
		goto out_tm;
	}
	{
		struct tm_ref smr = sm_root(tm_sm(tm));

		r = walk_tree(sm_tree_info(tm_sm(tm)), &smr, &res->sm_entries,
			      &res->sm_nodes, &sm_leaves);
		if (r) {
			fprintf(stderr,
				"bench-btree: walking the sm tree: %s\n",
				strerror(-r));
			goto out_tm;
		}
	}
	r = btree_height(&info, tm_root(tm, 0), &res->height);
	if (r)
		goto out_tm;
	res->leaf_fill = (double) o->keys / (double) res->tree_leaves /
			 (double) ((PD_NODE_SIZE - BTREE_HEADER_SIZE) /
				   (KEY_SIZE + VALUE_SIZE));

	/* 3. warm lookups (the walk above read every node of the tree) */
	res->lookups = o->lookups;
	res->absent = o->absent;
	bc_stats(tm_bc(tm), &b0);
	r = lookup_present(&info, tm, keys, o->keys, o->lookups, &rng,
			   &res->lookup_s, &res->lookup_cpu_s);
	if (r)
		goto out_tm;
	r = lookup_absent(&info, tm, order, o->keys, o->absent, &rng,
			  &res->absent_s);
	if (r)
		goto out_tm;
	bc_stats(tm_bc(tm), &b1);
	res->lookup_misses = b1.misses - b0.misses;

	/* 4. cold: reopen with empty caches */
	if (o->cold) {
		tm_close(tm);
		tm = NULL;
		drop_page_cache(dev);
		t0 = now_s();
		r = tm_open(dev, &oo, &tm);
		res->reopen_s = now_s() - t0;
		if (r) {
			fprintf(stderr, "bench-btree: reopen: %s\n",
				strerror(-r));
			goto out_dev;
		}
		info.tm = tm;
		bc_stats(tm_bc(tm), &b0);
		res->cold = o->cold;
		r = lookup_present(&info, tm, keys, o->keys, o->cold, &rng,
				   &res->cold_s, NULL);
		if (r)
			goto out_tm;
		bc_stats(tm_bc(tm), &b1);
		res->cold_reads = b1.reads - b0.reads;
	}
out_tm:
	tm_close(tm);
out_dev:
	io_close(dev);
	if (path)
		unlink(path);
	free(path);
out_keys:
	free(keys);
	return r;
}

/* ---- output ---- */

static double per_key(uint64_t nodes, uint64_t keys)
{
	return (double) nodes * PD_NODE_SIZE / (double) keys;
}

static void print_run(const struct opts *o, const struct result *r)
{
	uint64_t other = r->sm.meta_nodes - r->tree_nodes - r->sm_nodes;

	printf("\n== %s, %" PRIu64 " keys, commit every %" PRIu64
	       " inserts ==\n",
	       order_names[r->order], r->keys, o->commit_every);
	printf("build        %.2f s: %.0f inserts/s (%.0f/s without the "
	       "commits)\n",
	       r->build_s, (double) r->keys / r->build_s,
	       (double) r->keys / (r->build_s - r->commit_s));
	printf("commits      %" PRIu64 ", %.2f s in all, %.0f nodes written "
	       "per commit\n",
	       r->nr_commits, r->commit_s, r->nodes_written_per_commit);
	printf("commit ms    mean %.2f  p50 %.2f  p99 %.2f  max %.2f\n",
	       r->commit_mean_ms, r->commit_p50_ms, r->commit_p99_ms,
	       r->commit_max_ms);
	printf("tree         height %u, %" PRIu64 " nodes (%" PRIu64
	       " leaves, %.0f%% full)\n",
	       r->height, r->tree_nodes, r->tree_leaves, r->leaf_fill * 100);
	printf("space map    %" PRIu64 " nodes, %" PRIu64 " entries\n",
	       r->sm_nodes, r->sm_entries);
	printf("metadata     %" PRIu64 " nodes in %" PRIu64 " chunks (%" PRIu64
	       " other nodes)\n",
	       r->sm.meta_nodes, r->sm.meta_chunks, other);
	printf("bytes/key    %.1f total (%.1f tree + %.1f space map); "
	       "%.1f in chunks\n",
	       per_key(r->sm.meta_nodes, r->keys),
	       per_key(r->tree_nodes, r->keys), per_key(r->sm_nodes, r->keys),
	       (double) r->sm.meta_chunks * o->block_size / (double) r->keys);
	printf("pool file    %.1f MiB allocated\n",
	       (double) r->file_bytes / (1 << 20));
	printf("warm lookups %.0f/s present (%" PRIu64 "), %.0f/s absent "
	       "(%" PRIu64 "), %" PRIu64 " cache misses, on CPU %.0f%%\n",
	       (double) r->lookups / r->lookup_s, r->lookups,
	       r->absent ? (double) r->absent / r->absent_s : 0.0, r->absent,
	       r->lookup_misses, r->lookup_cpu_s / r->lookup_s * 100);
	if (r->cold)
		printf("cold         reopen %.1f ms; %.0f lookups/s (%" PRIu64
		       ", %.2f node reads each)\n",
		       r->reopen_s * 1e3, (double) r->cold / r->cold_s, r->cold,
		       (double) r->cold_reads / (double) r->cold);
	fflush(stdout);
}

static void print_line(const struct opts *o, const struct result *r)
{
	printf("BENCH order=%s keys=%" PRIu64 " commit_every=%" PRIu64
	       " block_size=%u cache_mb=%" PRIu64 " inserts_per_s=%.0f"
	       " commit_mean_ms=%.3f commit_p50_ms=%.3f commit_p99_ms=%.3f"
	       " commit_max_ms=%.3f nodes_per_commit=%.0f"
	       " lookups_per_s=%.0f absent_per_s=%.0f lookup_misses=%" PRIu64
	       " lookup_on_cpu=%.2f"
	       " meta_nodes=%" PRIu64 " tree_nodes=%" PRIu64
	       " sm_nodes=%" PRIu64 " bytes_per_key=%.2f"
	       " tree_bytes_per_key=%.2f height=%u leaf_fill=%.3f"
	       " reopen_ms=%.1f cold_lookups_per_s=%.0f\n",
	       order_names[r->order], r->keys, o->commit_every, o->block_size,
	       o->cache_mb, (double) r->keys / r->build_s, r->commit_mean_ms,
	       r->commit_p50_ms, r->commit_p99_ms, r->commit_max_ms,
	       r->nodes_written_per_commit, (double) r->lookups / r->lookup_s,
	       r->absent ? (double) r->absent / r->absent_s : 0.0,
	       r->lookup_misses, r->lookup_cpu_s / r->lookup_s,
	       r->sm.meta_nodes, r->tree_nodes, r->sm_nodes,
	       per_key(r->sm.meta_nodes, r->keys),
	       per_key(r->tree_nodes, r->keys), r->height, r->leaf_fill,
	       r->reopen_s * 1e3, r->cold ? (double) r->cold / r->cold_s : 0.0);
}

static void print_summary(const struct opts *o, const struct result *rs, int n)
{
	printf("\n%-10s %9s %9s %27s %10s %10s %8s %8s\n", "order", "keys",
	       "ins/s", "commit ms mean/p50/p99/max", "lookup/s", "absent/s",
	       "B/key", "tree B/k");
	for (int i = 0; i < n; i++) {
		const struct result *r = &rs[i];
		char lat[64];

		snprintf(lat, sizeof(lat), "%.1f/%.1f/%.1f/%.1f",
			 r->commit_mean_ms, r->commit_p50_ms, r->commit_p99_ms,
			 r->commit_max_ms);
		printf("%-10s %9" PRIu64 " %9.0f %27s %10.0f %10.0f %8.1f "
		       "%8.1f\n",
		       order_names[r->order], r->keys,
		       (double) r->keys / r->build_s, lat,
		       (double) r->lookups / r->lookup_s,
		       r->absent ? (double) r->absent / r->absent_s : 0.0,
		       per_key(r->sm.meta_nodes, r->keys),
		       per_key(r->tree_nodes, r->keys));
	}
	for (int i = 0; i < n; i++)
		print_line(o, &rs[i]);
}

int main(int argc, char **argv)
{
	struct result rs[2];
	struct opts o;
	int n = 0;

	if (parse_opts(argc, argv, &o))
		return 2;
	printf("bench-btree: %" PRIu64 " keys of %u bytes, values of %u "
	       "bytes, commit every %" PRIu64 ", cache %" PRIu64
	       " MiB, block %u, seed %" PRIu64 "\n",
	       o.keys, KEY_SIZE, VALUE_SIZE, o.commit_every, o.cache_mb,
	       o.block_size, o.seed);
	for (int ord = 0; ord < 2; ord++) {
		if (!o.orders[ord])
			continue;
		if (run(&o, (enum order) ord, &rs[n]))
			return 1;
		print_run(&o, &rs[n]);
		n++;
	}
	print_summary(&o, rs, n);
	return 0;
}
