/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * thinvol - the command.
 *
 * This is the first cut: it works on the persistent-data store directly
 * (pool create / pool info / check).  Volumes, the engine API and the
 * daemon come on top of it.
 *
 * Exit statuses (stable; scripts may rely on them):
 *   0 success           2 usage error        3 not found
 *   4 already exists     5 out of space       6 corrupt pool / check failed
 *   1 any other error
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/parse.h"
#include "io/io.h"
#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "util/checked.h"
#include "util/log.h"

#define EXIT_USAGE 2
#define EXIT_NOTFOUND 3
#define EXIT_EXISTS 4
#define EXIT_NOSPACE 5
#define EXIT_CORRUPT 6

static const char *prog = "thinvol";

static int exit_for(int err)
{
	switch (err) {
	case 0:
		return 0;
	case -ENOENT:
		return EXIT_NOTFOUND;
	case -EEXIST:
		return EXIT_EXISTS;
	case -ENOSPC:
		return EXIT_NOSPACE;
	case -EUCLEAN:
		return EXIT_CORRUPT;
	case -EINVAL:
		return EXIT_USAGE;
	default:
		return 1;
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s COMMAND ...\n"
		"\n"
		"  pool create PATH --size SIZE [--block-size SIZE] [--force]\n"
		"        make a new pool in a file (created sparse) or on a\n"
		"        block device\n"
		"  pool info PATH [--json]\n"
		"        format, geometry, usage and state of a pool\n"
		"  check PATH [--json]\n"
		"        verify every metadata node and reference count;\n"
		"        exit 0 only when clean\n"
		"\n"
		"SIZE takes K, M, G, T suffixes (powers of 1024).\n"
		"Exit status: 0 ok, 2 usage, 3 not found, 4 exists, 5 no space,\n"
		"6 corrupt, 1 other errors.\n",
		prog);
}

static int die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see '%s --help')\n", prog);
	return EXIT_USAGE;
}

/* ---- opening a pool ---- */

struct pool_handle {
	struct io_dev *dev;
	struct tm *tm;
};

static int lock_dev(struct io_dev *dev, const char *path)
{
	if (flock(io_file_fd(dev), LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		if (e == EWOULDBLOCK)
			fprintf(stderr, "%s: %s: the pool is in use by another "
					"process\n",
				prog, path);
		else
			fprintf(stderr, "%s: %s: lock: %s\n", prog, path,
				strerror(e));
		return -EBUSY;
	}
	return 0;
}

static int pool_open(const char *path, bool rdonly, struct pool_handle *h)
{
	int r;

	memset(h, 0, sizeof(*h));
	r = io_file_open(path, rdonly ? IO_FILE_RDONLY : 0, 0, &h->dev);
	if (r < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(-r));
		return r;
	}
	r = lock_dev(h->dev, path);
	if (r < 0)
		goto fail;
	r = tm_open(h->dev, &(struct tm_open_opts){ .read_only = rdonly },
		    &h->tm);
	if (r < 0) {
		fprintf(stderr, "%s: %s: cannot open the pool: %s\n", prog,
			path,
			r == -EUCLEAN ? "not a thinvol pool, or damaged"
				      : strerror(-r));
		goto fail;
	}
	return 0;
fail:
	io_close(h->dev);
	return r;
}

static void pool_close(struct pool_handle *h)
{
	tm_close(h->tm);
	io_close(h->dev);
}

/* ---- pool create ---- */

/* Name what the first bytes of a device hold, if we recognise it. */
static const char *recognise(struct io_dev *dev)
{
	static uint8_t buf[68 * 1024];
	size_t n = (size_t)MIN(dev->size, sizeof(buf));

	memset(buf, 0, sizeof(buf));
	if (!n || io_read(dev, buf, n, 0) < 0)
		return NULL;
	if (!memcmp(buf + 32, "thinvol", 8) ||
	    !memcmp(buf + 4096 + 32, "thinvol", 8))
		return "a thinvol pool";
	if (buf[1080] == 0x53 && buf[1081] == 0xEF)
		return "an ext2/3/4 filesystem";
	if (!memcmp(buf, "XFSB", 4))
		return "an XFS filesystem";
	if (!memcmp(buf + 65600, "_BHRfS_M", 8))
		return "a btrfs filesystem";
	if (!memcmp(buf, "LUKS\xba\xbe", 6))
		return "a LUKS volume";
	if (!memcmp(buf + 4086, "SWAPSPACE2", 10))
		return "swap space";
	if (!memcmp(buf + 512, "LABELONE", 8) ||
	    !memcmp(buf + 536, "LVM2 001", 8))
		return "an LVM physical volume";
	return NULL;
}

static int cmd_pool_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "force", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t size = 0, bs = 64 << 10;
	bool force = false, have_size = false, created = false;
	struct io_dev *dev = NULL;
	struct tm_format_opts fo = { 0 };
	struct stat st;
	const char *path, *what;
	int c, r;

	while ((c = getopt_long(argc, argv, "s:b:f", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_size(optarg, &size) < 0 || !size)
				return die_usage("--size %s: not a size",
						 optarg);
			have_size = true;
			break;
		case 'b':
			if (parse_size(optarg, &bs) < 0)
				return die_usage("--block-size %s: not a size",
						 optarg);
			break;
		case 'f':
			force = true;
			break;
		default:
			return die_usage("pool create: bad option");
		}
	}
	if (optind != argc - 1)
		return die_usage("pool create needs exactly one PATH");
	path = argv[optind];
	if (bs < TM_MIN_BLOCK_SIZE || bs > TM_MAX_BLOCK_SIZE ||
	    (bs & (bs - 1)))
		return die_usage("--block-size: a power of two from 4K to 1G");

	if (stat(path, &st) == 0 && S_ISBLK(st.st_mode)) {
		r = io_file_open(path, 0, 0, &dev);
	} else if (stat(path, &st) == 0) {
		if (!have_size)
			size = (uint64_t)st.st_size;
		r = io_file_open(path, 0, 0, &dev);
		if (r == 0 && size > dev->size)
			r = io_resize(dev, size);
	} else {
		if (!have_size)
			return die_usage("pool create %s: --size is needed "
					 "for a new file",
					 path);
		r = io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, size,
				 &dev);
		created = r == 0;
	}
	if (r < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(-r));
		return exit_for(r);
	}
	r = lock_dev(dev, path);
	if (r < 0)
		goto out;
	if (!created && !force && (what = recognise(dev))) {
		fprintf(stderr, "%s: %s already holds %s; use --force to "
				"overwrite it\n",
			prog, path, what);
		r = -EEXIST;
		goto out;
	}
	fo.block_size = (uint32_t)bs;
	r = tm_format(dev, &fo);
	if (r < 0) {
		fprintf(stderr, "%s: %s: cannot create the pool: %s\n", prog,
			path, strerror(-r));
		goto out;
	}
	{
		char b1[32], b2[32];
		printf("created pool %s: %s in blocks of %s\n", path,
		       fmt_size(dev->size, b1, sizeof(b1)),
		       fmt_size(bs, b2, sizeof(b2)));
	}
out:
	io_close(dev);
	if (r < 0 && created)
		unlink(path);
	return exit_for(r);
}

/* ---- pool info ---- */

static void uuid_str(const uint8_t *u, char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int k = 0;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[k++] = '-';
		out[k++] = hex[u[i] >> 4];
		out[k++] = hex[u[i] & 15];
	}
	out[k] = 0;
}

static int cmd_pool_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct pool_handle h;
	struct sm_stats st;
	bool json = false;
	char uuid[37];
	uint64_t bs, size, used, meta, free_bytes;
	int c, r;

	while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
		if (c != 'j')
			return die_usage("pool info: bad option");
		json = true;
	}
	if (optind != argc - 1)
		return die_usage("pool info needs exactly one PATH");
	r = pool_open(argv[optind], true, &h);
	if (r < 0)
		return exit_for(r);
	sm_get_stats(tm_sm(h.tm), &st);
	uuid_str(tm_uuid(h.tm), uuid);
	bs = tm_block_size(h.tm);
	size = st.nr_blocks * bs;
	used = st.data_used * bs;
	meta = st.meta_chunks * bs;
	free_bytes = st.allocatable * bs;
	if (json) {
		printf("{\"format_version\":%d,\"uuid\":\"%s\","
		       "\"block_size\":%" PRIu64 ",\"size\":%" PRIu64 ","
		       "\"used\":%" PRIu64 ",\"free\":%" PRIu64 ","
		       "\"metadata\":%" PRIu64 ",\"metadata_nodes\":%" PRIu64
		       ",\"transaction\":%" PRIu64 ",\"state\":\"rw\"}\n",
		       TM_FORMAT_VERSION, uuid, bs, size, used, free_bytes,
		       meta, st.meta_nodes, tm_committed_txn(h.tm));
	} else {
		char b[5][32];
		printf("pool:           %s\n"
		       "format version: %d\n"
		       "uuid:           %s\n"
		       "block size:     %s\n"
		       "size:           %s (%" PRIu64 " blocks)\n"
		       "used:           %s (metadata %s)\n"
		       "free:           %s\n"
		       "transaction:    %" PRIu64 "\n"
		       "state:          rw\n",
		       argv[optind], TM_FORMAT_VERSION, uuid,
		       fmt_size(bs, b[0], 32), fmt_size(size, b[1], 32),
		       st.nr_blocks, fmt_size(used, b[2], 32),
		       fmt_size(meta, b[3], 32),
		       fmt_size(free_bytes, b[4], 32),
		       tm_committed_txn(h.tm));
	}
	pool_close(&h);
	return 0;
}

/* ---- check ---- */

static int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct check_report rep;
	struct pool_handle h;
	bool json = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
		if (c != 'j')
			return die_usage("check: bad option");
		json = true;
	}
	if (optind != argc - 1)
		return die_usage("check needs exactly one PATH");
	r = pool_open(argv[optind], true, &h);
	if (r < 0)
		return exit_for(r);
	r = check_run(h.tm, NULL, 0, json ? stderr : stdout, 50, &rep);
	pool_close(&h);
	if (r < 0) {
		fprintf(stderr, "%s: %s: check could not run: %s\n", prog,
			argv[optind], strerror(-r));
		return exit_for(r);
	}
	if (json)
		printf("{\"clean\":%s,\"nodes\":%" PRIu64
		       ",\"node_refs\":%" PRIu64 ",\"data_refs\":%" PRIu64
		       ",\"errors\":%" PRIu64 ",\"leaks\":%" PRIu64
		       ",\"missing\":%" PRIu64 ",\"counter_errors\":%" PRIu64
		       "}\n",
		       check_clean(&rep) ? "true" : "false", rep.nodes,
		       rep.node_refs, rep.data_refs, rep.errors, rep.leaks,
		       rep.missing, rep.counter_errors);
	else
		printf("%s: %s: %" PRIu64 " metadata nodes, %" PRIu64
		       " block references; %" PRIu64 " errors, %" PRIu64
		       " leaks, %" PRIu64 " missing counts\n",
		       argv[optind], check_clean(&rep) ? "clean" : "DAMAGED",
		       rep.nodes, rep.data_refs, rep.errors, rep.leaks,
		       rep.missing);
	return check_clean(&rep) ? 0 : EXIT_CORRUPT;
}

int main(int argc, char **argv)
{
	const char *cmd;

	log_set_level(getenv("THINVOL_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
	if (argc < 2)
		return die_usage("no command");
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") ||
	    !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf("thinvol 0.1.0 (on-disk format %d)\n",
		       TM_FORMAT_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "pool") && argc >= 3) {
		if (!strcmp(argv[2], "create"))
			return cmd_pool_create(argc - 2, argv + 2);
		if (!strcmp(argv[2], "info"))
			return cmd_pool_info(argc - 2, argv + 2);
		return die_usage("unknown command 'pool %s'", argv[2]);
	}
	if (!strcmp(cmd, "check"))
		return cmd_check(argc - 1, argv + 1);
	return die_usage("unknown command '%s'", cmd);
}
