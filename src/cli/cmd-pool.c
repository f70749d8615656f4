/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cmd-pool.c - thinvol pool create | info | resize | reopen, and thinvol
 * check.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/json.h"
#include "cli/parse.h"
#include "server/ctl.h"
#include "server/serve.h"

/* ---- pool create ---- */

static int cmd_pool_create(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"size", required_argument, NULL, 's'},
	    {"block-size", required_argument, NULL, 'b'},
	    {"blob-size", required_argument, NULL, 'B'},
	    {"force", no_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	struct tv_pool_create_opts o = {.blob_size = -1};
	struct tv_pool_info info;
	struct cli_pool *pool;
	char b1[32], b2[32];
	uint64_t v;
	const char *path;
	int c, r;

	while ((c = cli_getopt(cmd, argc, argv, ":s:b:B:f", opts)) != -1) {
		switch (c) {
		case 's':
			if (cli_size(cmd, "--size", optarg, &o.size))
				return EXIT_USAGE;
			if (!o.size)
				return cli_usage(cmd, "--size 0: a pool needs "
						      "a size");
			break;
		case 'b':
			if (cli_size(cmd, "--block-size", optarg, &v))
				return EXIT_USAGE;
			if (v < 4096 || v > (1u << 30) || (v & (v - 1)))
				return cli_usage(cmd,
						 "--block-size %s: a "
						 "power of two from 4K "
						 "to 1G is needed",
						 optarg);
			o.block_size = (uint32_t) v;
			break;
		case 'B':
			if (cli_size(cmd, "--blob-size", optarg, &v))
				return EXIT_USAGE;
			if (v > TV_BLOB_MAX)
				return cli_usage(cmd,
						 "--blob-size %s: at "
						 "most %d bytes",
						 optarg, TV_BLOB_MAX);
			o.blob_size = (int32_t) v;
			break;
		case 'f':
			o.force = true;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1)
		return cli_usage(cmd, "needs exactly one PATH");
	path = argv[optind];
	r = tv_pool_create(path, &o);
	if (r < 0)
		return cli_fail(r, "pool create");
	r = cli_open(path, CLI_RO, &pool, &info);
	if (r)
		return r;
	printf("created pool %s: %s in blocks of %s, %u-byte blobs\n", path,
	       fmt_size(info.size, b1, sizeof(b1)),
	       fmt_size(info.block_size, b2, sizeof(b2)), info.blob_size);
	if (cli_pool_fs_no_journal(pool))
		cli_error(0, "warning: %s: " SERVE_NO_JOURNAL_WARNING, path);
	if (cli_pool_fs_cow(pool))
		cli_error(0, "warning: %s: " SERVE_COW_WARNING, path);
	return cli_close(pool, path, 0);
}

/* ---- pool info ---- */

static int cmd_pool_info(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {NULL, 0, NULL, 0},
	};
	struct tv_pool_info in;
	struct cli_pool *pool;
	bool json = false;
	const char *path;
	char uuid[37];
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":j", opts, &json))
		return EXIT_USAGE;
	if (argc - optind != 1)
		return cli_usage(cmd, "needs exactly one PATH");
	path = argv[optind];
	r = cli_open(path, CLI_INFO, &pool, &in);
	if (r)
		return r;
	fmt_uuid(in.uuid, uuid);
	if (json) {
		printf("{\"path\":");
		json_put_string(stdout, path, strlen(path));
		printf(",\"format_version\":%" PRIu32 ",\"uuid\":\"%s\","
		       "\"block_size\":%" PRIu32 ",\"blob_size\":%" PRIu32
		       ",\"size\":%" PRIu64 ",\"used\":%" PRIu64
		       ",\"free\":%" PRIu64 ",\"metadata\":%" PRIu64
		       ",\"reclaimable\":%" PRIu64 ",\"volumes\":%" PRIu64
		       ",\"next_id\":%" PRIu64 ",\"transaction\":%" PRIu64
		       ",\"state\":\"%s\",\"reason\":",
		       in.format_version, uuid, in.block_size, in.blob_size,
		       in.size, in.used, in.free, in.metadata, in.reclaimable,
		       in.nr_volumes, in.next_id, in.transaction,
		       tv_pool_state_name(in.state));
		json_put_string(stdout, in.reason,
				strnlen(in.reason, sizeof(in.reason)));
		printf("}\n");
	} else {
		char b[6][32];

		printf("pool:           %s\n"
		       "format version: %" PRIu32 "\n"
		       "uuid:           %s\n"
		       "block size:     %s\n"
		       "blob size:      %" PRIu32 " bytes\n"
		       "size:           %s (%" PRIu64 " blocks)\n"
		       "used:           %s (metadata %s)\n"
		       "free:           %s\n"
		       "reclaimable:    %s\n"
		       "volumes:        %" PRIu64 "\n"
		       "next id:        %" PRIu64 "\n"
		       "transaction:    %" PRIu64 "\n"
		       "state:          %s%s%.*s\n",
		       path, in.format_version, uuid,
		       fmt_size(in.block_size, b[0], 32), in.blob_size,
		       fmt_size(in.size, b[1], 32), in.size / in.block_size,
		       fmt_size(in.used, b[2], 32),
		       fmt_size(in.metadata, b[3], 32),
		       fmt_size(in.free, b[4], 32),
		       fmt_size(in.reclaimable, b[5], 32), in.nr_volumes,
		       in.next_id, in.transaction, tv_pool_state_name(in.state),
		       in.reason[0] ? ": " : "", (int) sizeof(in.reason),
		       in.reason);
		if (in.error)
			printf("                once the cause is fixed: "
			       "thinvol pool reopen %s%s\n",
			       path,
			       in.error == -ENOSPC || in.error == -EDQUOT
				   ? " (thinvol serve also does it by "
				     "itself once writes pass again)"
				   : "");
	}
	return cli_close(pool, path, 0);
}

/* ---- pool reopen ---- */

static int cmd_pool_reopen(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {{NULL, 0, NULL, 0}};
	struct tv_pool_info in;
	struct cli_pool *pool;
	uint64_t txn = 0;
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":", opts, NULL))
		return EXIT_USAGE;
	if (argc - optind != 1)
		return cli_usage(cmd, "needs exactly one PATH");
	r = cli_open(argv[optind], CLI_RW, &pool, &in);
	if (r)
		return r;
	r = cli_pool_reopen(pool, &txn);
	if (r == 0)
		printf("reopened %s at transaction %" PRIu64 "\n", argv[optind],
		       txn);
	return cli_finish(pool, argv[optind], "pool reopen", r);
}

/* ---- pool resize ---- */

static int cmd_pool_resize(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {{NULL, 0, NULL, 0}};
	struct tv_pool_info in;
	struct cli_pool *pool;
	uint64_t size;
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":", opts, NULL))
		return EXIT_USAGE;
	if (argc - optind != 2)
		return cli_usage(cmd, "needs PATH and SIZE");
	if (cli_size(cmd, "SIZE", argv[optind + 1], &size))
		return EXIT_USAGE;
	r = cli_open(argv[optind], CLI_RW, &pool, &in);
	if (r)
		return r;
	return cli_finish(pool, argv[optind], "pool resize",
			  cli_pool_resize(pool, size));
}

/* ---- check ---- */

static int cmd_check(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {NULL, 0, NULL, 0},
	};
	struct tv_check_report rep;
	struct tv_pool_info in;
	struct cli_pool *pool;
	bool json = false;
	const char *path;
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":j", opts, &json))
		return EXIT_USAGE;
	if (argc - optind != 1)
		return cli_usage(cmd, "needs exactly one POOL");
	path = argv[optind];
	r = cli_open(path, CLI_RO, &pool, &in);
	if (r)
		return r;
	/* the checker's findings go to cli_err when stdout carries JSON */
	r = cli_pool_check(pool, json ? cli_err : stdout, &rep);
	if (r < 0)
		return cli_finish(pool, path, "check", r);
	if (json) {
		ctl_put_check_report(stdout, &rep);
		putchar('\n');
	} else {
		printf("%s: %s: %" PRIu64 " volumes, %" PRIu64
		       " metadata nodes, %" PRIu64 " block references; %" PRIu64
		       " errors, %" PRIu64 " leaks, %" PRIu64
		       " missing counts, %" PRIu64 " counter errors\n",
		       path, rep.clean ? "clean" : "DAMAGED", rep.volumes,
		       rep.nodes, rep.data_refs, rep.errors, rep.leaks,
		       rep.missing, rep.counter_errors);
	}
	if (!rep.clean)
		fprintf(cli_err, "thinvol: %s: check found damage\n", path);
	return cli_close(pool, path, rep.clean ? 0 : EXIT_CORRUPT);
}

const struct cli_cmd cli_pool_cmds[] = {
    {
	"pool create",
	"pool create PATH [--size SIZE] [--block-size SIZE] "
	"[--blob-size N] [--force]",
	"usage: thinvol pool create PATH [--size SIZE] "
	"[--block-size SIZE] [--blob-size N] [--force]\n"
	"\n"
	"Make a new, empty pool.  PATH is a file (created sparse, or an\n"
	"existing one grown to SIZE) or a block device (its whole size).\n"
	"\n"
	"  -s, --size SIZE        size of the pool; needed for a new file,\n"
	"                         optional for an existing file or device\n"
	"  -b, --block-size SIZE  allocation unit: a power of two from 4K\n"
	"                         to 1G (default 64K); fixed for the pool's\n"
	"                         life\n"
	"  -B, --blob-size N      bytes of the opaque blob every volume\n"
	"                         carries: 0 to 4096 (default 256); fixed\n"
	"                         for the pool's life\n"
	"  -f, --force            overwrite a pool or a filesystem found at\n"
	"                         PATH (refused otherwise, exit status 4)\n"
	"  -h, --help             this text\n"
	"\n"
	"Prints one line describing the new pool.\n",
	cmd_pool_create,
    },
    {
	"pool info",
	"pool info PATH [--json]",
	"usage: thinvol pool info PATH [--json]\n"
	"\n"
	"Show a pool's format version, uuid, block and blob sizes, size,\n"
	"used / free / metadata / reclaimable bytes, number of volumes,\n"
	"next volume id, last committed transaction and state (rw,\n"
	"read-only with the reason, needs-check).\n"
	"\n"
	"  -j, --json   one JSON object instead of text (docs/cli.md)\n"
	"  -h, --help   this text\n",
	cmd_pool_info,
    },
    {
	"pool reopen",
	"pool reopen PATH",
	"usage: thinvol pool reopen PATH\n"
	"\n"
	"After an error made the pool read-only (a failed flush or\n"
	"commit, a full backing filesystem: pool info says why), start\n"
	"it again from its last commit without restarting thinvol serve.\n"
	"A probe write and sync must pass first (else the pool stays\n"
	"read-only and the command fails with the error).  Then every\n"
	"NBD client is disconnected: writes acknowledged since the last\n"
	"commit may be lost, as in a crash, and the clients must see\n"
	"one.  A pool the daemon found damaged (needs-check) reopens too:\n"
	"run thinvol check first.  Refused (exit status 2) when the\n"
	"pool is read-write; a command that opens the pool itself always\n"
	"starts at its last commit.\n"
	"\n"
	"  -h, --help   this text\n",
	cmd_pool_reopen,
    },
    {
	"pool resize",
	"pool resize PATH SIZE",
	"usage: thinvol pool resize PATH SIZE\n"
	"\n"
	"Grow the pool to SIZE bytes.  A file is extended; a block device\n"
	"must already be that large.  Pools cannot shrink.\n"
	"\n"
	"  -h, --help   this text\n",
	cmd_pool_resize,
    },
    {
	"check",
	"check POOL [--json]",
	"usage: thinvol check POOL [--json]\n"
	"\n"
	"Verify the whole pool: every metadata node, the reference counts\n"
	"of metadata and data blocks, every volume's mappings, and that\n"
	"the name and blob indexes agree with the volume table.  Exit\n"
	"status 0 only when the pool is clean, 6 when damage is found.\n"
	"\n"
	"  -j, --json   one JSON object on stdout (the checker's messages\n"
	"               go to cli_err)\n"
	"  -h, --help   this text\n",
	cmd_check,
    },
    {NULL, NULL, NULL, NULL},
};
