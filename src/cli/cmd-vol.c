/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cmd-vol.c - the volume commands: create, snapshot, delete, rename,
 * resize, set-blob, get-blob, list, show, find.
 *
 * Each command resolves every VOL argument first, then makes one engine
 * call (one transaction: commands that take several volumes use one
 * tv_batch), so a refused command changes nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/parse.h"

#define LIST_PAGE 256

/* The blob options of create, snapshot and set-blob (-x HEX, -F FILE):
 * at most one of the two. */
struct blob_arg {
	const char *hex, *file;
	uint8_t buf[TV_BLOB_MAX];
	bool set;
};

/* Option c of cli_getopt is a blob option: keep its value. */
static bool blob_arg_opt(struct blob_arg *b, int c)
{
	if (c == 'x')
		b->hex = optarg;
	else if (c == 'F')
		b->file = optarg;
	else
		return false;
	return true;
}

static int blob_arg_load(struct blob_arg *b, const char *ctx,
			 const char *hex_opt, const char *file_opt,
			 uint32_t blob_size)
{
	int r = 0;

	if (b->hex)
		r = cli_blob_hex(ctx, hex_opt, b->hex, blob_size, b->buf);
	else if (b->file)
		r = cli_blob_file(ctx, file_opt, b->file, blob_size, b->buf);
	b->set = !r && (b->hex || b->file);
	return r;
}

/* The arguments of "NAME POOL VOL" after the options: ctx becomes
 * "NAME 'VOL'" for messages.  Returns 0 or EXIT_USAGE (reported). */
static int pool_vol_args(const struct cli_cmd *cmd, int argc, char **argv,
			 const char **path, const char **vol, char *ctx,
			 size_t ctxlen)
{
	if (argc - optind != 2) {
		cli_usage(cmd, "needs POOL and VOL");
		return EXIT_USAGE;
	}
	*path = argv[optind];
	*vol = argv[optind + 1];
	snprintf(ctx, ctxlen, "%s '%s'", cmd->name, *vol);
	return 0;
}

/* ---- create ---- */

static int cmd_create(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"size", required_argument, NULL, 's'},
	    {"blob-hex", required_argument, NULL, 'x'},
	    {"blob-file", required_argument, NULL, 'F'},
	    {NULL, 0, NULL, 0},
	};
	struct blob_arg blob = {0};
	struct tv_pool_info in;
	struct cli_pool *pool;
	const char *path, *name, *size_arg = NULL;
	char ctx[TV_NAME_MAX + 32];
	uint64_t size, id;
	int c, r;

	while ((c = cli_getopt(cmd, argc, argv, ":s:x:F:", opts)) != -1) {
		if (c == 's')
			size_arg = optarg;
		else if (!blob_arg_opt(&blob, c))
			return EXIT_USAGE;
	}
	if (argc - optind != 2)
		return cli_usage(cmd, "needs POOL and NAME");
	if (!size_arg)
		return cli_usage(cmd, "needs --size");
	if (blob.hex && blob.file)
		return cli_usage(cmd, "--blob-hex and --blob-file exclude "
				      "each other");
	if (cli_size(cmd, "--size", size_arg, &size))
		return EXIT_USAGE;
	path = argv[optind];
	name = argv[optind + 1];
	snprintf(ctx, sizeof(ctx), "create '%s'", name);
	r = cli_open(path, CLI_RW, &pool, &in);
	if (r)
		return r;
	r = blob_arg_load(&blob, ctx, "--blob-hex", "--blob-file",
			  in.blob_size);
	if (r)
		return cli_close(pool, path, r);
	r = cli_vol_create(pool, name, size, blob.set ? blob.buf : NULL,
			   blob.set ? in.blob_size : 0, &id);
	if (r == 0)
		printf("%" PRIu64 "\n", id);
	return cli_finish(pool, path, ctx, r);
}

/* ---- snapshot ---- */

static int cmd_snapshot(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"read-only", no_argument, NULL, 'r'},
	    {"blob-hex", required_argument, NULL, 'x'},
	    {"blob-file", required_argument, NULL, 'F'},
	    {NULL, 0, NULL, 0},
	};
	struct blob_arg blob = {0};
	struct tv_pool_info in;
	struct cli_pool *pool;
	struct tv_op *ops = NULL;
	char **origins = NULL, **names = NULL;
	bool ro = false, pairs = true;
	const char *path;
	char ctx[2 * TV_NAME_MAX + 64];
	size_t n, failed = 0;
	int c, r;

	while ((c = cli_getopt(cmd, argc, argv, ":rx:F:", opts)) != -1) {
		if (c == 'r')
			ro = true;
		else if (!blob_arg_opt(&blob, c))
			return EXIT_USAGE;
	}
	if (argc - optind < 2)
		return cli_usage(cmd, "needs POOL ORIGIN NAME, or POOL "
				      "ORIGIN=NAME...");
	if (blob.hex && blob.file)
		return cli_usage(cmd, "--blob-hex and --blob-file exclude "
				      "each other");
	path = argv[optind];
	/* ORIGIN=NAME... when every argument has an '='; else ORIGIN NAME */
	for (int i = optind + 1; i < argc; i++)
		if (!strchr(argv[i], '='))
			pairs = false;
	if (!pairs && argc - optind != 3)
		return cli_usage(cmd, "needs POOL ORIGIN NAME, or POOL "
				      "ORIGIN=NAME...");
	n = pairs ? (size_t) (argc - optind - 1) : 1;
	ops = calloc(n, sizeof(*ops));
	origins = calloc(n, sizeof(*origins));
	names = calloc(n, sizeof(*names));
	if (!ops || !origins || !names) {
		r = cli_error(EXIT_OTHER, "out of memory");
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		if (pairs) {
			char *arg = argv[optind + 1 + (int) i];
			char *eq = strchr(arg, '=');

			*eq = 0; /* split ORIGIN=NAME in place */
			origins[i] = arg;
			names[i] = eq + 1;
		} else {
			origins[i] = argv[optind + 1];
			names[i] = argv[optind + 2];
		}
	}
	r = cli_open(path, CLI_RW, &pool, &in);
	if (r)
		goto out_free;
	snprintf(ctx, sizeof(ctx), "snapshot");
	r = blob_arg_load(&blob, ctx, "--blob-hex", "--blob-file",
			  in.blob_size);
	for (size_t i = 0; !r && i < n; i++) {
		snprintf(ctx, sizeof(ctx), "snapshot '%s' as '%s'", origins[i],
			 names[i]);
		ops[i].kind = TV_OP_SNAPSHOT;
		ops[i].name = names[i];
		ops[i].flags = ro ? TV_VOL_READ_ONLY : 0;
		ops[i].blob = blob.set ? blob.buf : NULL;
		ops[i].blob_len = blob.set ? in.blob_size : 0;
		r = cli_resolve(pool, ctx, origins[i], &ops[i].id);
	}
	if (r)
		goto out_close;
	r = cli_batch(pool, ops, n, &failed, false);
	if (r < 0) {
		if (failed >= n)
			failed = 0;
		r = cli_fail(r, "snapshot '%s' as '%s'", origins[failed],
			     names[failed]);
		goto out_close;
	}
	for (size_t i = 0; i < n; i++)
		printf("%" PRIu64 "\n", ops[i].result_id);
out_close:
	r = cli_close(pool, path, r);
out_free:
	free(ops);
	free(origins);
	free(names);
	return r;
}

/* ---- delete ---- */

static int cmd_delete(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"force", no_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	struct tv_pool_info in;
	struct cli_pool *pool;
	struct tv_op *ops;
	const char *path;
	char ctx[TV_NAME_MAX + 32];
	size_t n, failed = 0;
	bool force = false;
	int r = 0;

	if (cli_flag_opt(cmd, argc, argv, ":f", opts, &force))
		return EXIT_USAGE;
	if (argc - optind < 2)
		return cli_usage(cmd, "needs POOL and at least one VOL");
	path = argv[optind];
	n = (size_t) (argc - optind - 1);
	ops = calloc(n, sizeof(*ops));
	if (!ops)
		return cli_error(EXIT_OTHER, "out of memory");
	r = cli_open(path, CLI_RW, &pool, &in);
	if (r)
		goto out_free;
	for (size_t i = 0; !r && i < n; i++) {
		const char *vol = argv[optind + 1 + (int) i];

		snprintf(ctx, sizeof(ctx), "delete '%s'", vol);
		ops[i].kind = TV_OP_DELETE;
		r = cli_resolve(pool, ctx, vol, &ops[i].id);
		for (size_t k = 0; !r && k < i; k++)
			if (ops[k].id == ops[i].id)
				r = cli_error(EXIT_USAGE,
					      "%s: volume #%" PRIu64
					      " is named twice",
					      ctx, ops[i].id);
	}
	if (r)
		goto out_close;
	r = cli_batch(pool, ops, n, &failed, force);
	if (r < 0) {
		if (failed >= n)
			failed = 0;
		r = cli_fail(r, "delete '%s'", argv[optind + 1 + (int) failed]);
	}
out_close:
	r = cli_close(pool, path, r);
out_free:
	free(ops);
	return r;
}

/* ---- rename, resize ---- */

static int cmd_rename(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {{NULL, 0, NULL, 0}};
	struct tv_pool_info in;
	struct cli_pool *pool;
	const char *path, *vol, *name;
	char ctx[2 * TV_NAME_MAX + 32];
	uint64_t id;
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":", opts, NULL))
		return EXIT_USAGE;
	if (argc - optind != 3)
		return cli_usage(cmd, "needs POOL, VOL and NEWNAME");
	path = argv[optind];
	vol = argv[optind + 1];
	name = argv[optind + 2];
	snprintf(ctx, sizeof(ctx), "rename '%s' to '%s'", vol, name);
	r = cli_open_vol(path, CLI_RW, ctx, vol, &pool, &in, &id);
	if (r)
		return r;
	return cli_finish(pool, path, ctx, cli_vol_rename(pool, id, name));
}

static int cmd_resize(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"force", no_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	struct tv_pool_info in;
	struct cli_pool *pool;
	const char *path, *vol;
	char ctx[TV_NAME_MAX + 32];
	uint64_t id, size;
	bool force = false;
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":f", opts, &force))
		return EXIT_USAGE;
	if (argc - optind != 3)
		return cli_usage(cmd, "needs POOL, VOL and SIZE");
	path = argv[optind];
	vol = argv[optind + 1];
	if (cli_size(cmd, "SIZE", argv[optind + 2], &size))
		return EXIT_USAGE;
	snprintf(ctx, sizeof(ctx), "resize '%s'", vol);
	r = cli_open_vol(path, CLI_RW, ctx, vol, &pool, &in, &id);
	if (r)
		return r;
	return cli_finish(pool, path, ctx,
			  cli_vol_resize(pool, id, size, force));
}

/* ---- set-blob, get-blob ---- */

static int cmd_set_blob(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"hex", required_argument, NULL, 'x'},
	    {"file", required_argument, NULL, 'F'},
	    {NULL, 0, NULL, 0},
	};
	struct blob_arg blob = {0};
	struct tv_pool_info in;
	struct cli_pool *pool;
	const char *path, *vol;
	char ctx[TV_NAME_MAX + 32];
	uint64_t id;
	int c, r;

	while ((c = cli_getopt(cmd, argc, argv, ":x:F:", opts)) != -1)
		if (!blob_arg_opt(&blob, c))
			return EXIT_USAGE;
	if (pool_vol_args(cmd, argc, argv, &path, &vol, ctx, sizeof(ctx)))
		return EXIT_USAGE;
	if (!blob.hex == !blob.file)
		return cli_usage(cmd, "needs exactly one of --hex and --file");
	r = cli_open(path, CLI_RW, &pool, &in);
	if (r)
		return r;
	/* the blob first: its errors come before VOL's */
	r = blob_arg_load(&blob, ctx, "--hex", "--file", in.blob_size);
	if (!r)
		r = cli_resolve(pool, ctx, vol, &id);
	if (r)
		return cli_close(pool, path, r);
	return cli_finish(pool, path, ctx,
			  cli_vol_set_blob(pool, id, blob.buf, in.blob_size));
}

static int cmd_get_blob(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"hex", no_argument, NULL, 'x'},
	    {NULL, 0, NULL, 0},
	};
	uint8_t blob[TV_BLOB_MAX];
	char hex[2 * TV_BLOB_MAX + 1], ctx[TV_NAME_MAX + 32];
	struct tv_pool_info in;
	struct cli_pool *pool;
	const char *path, *vol;
	bool as_hex = false;
	uint64_t id;
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":x", opts, &as_hex))
		return EXIT_USAGE;
	if (pool_vol_args(cmd, argc, argv, &path, &vol, ctx, sizeof(ctx)))
		return EXIT_USAGE;
	r = cli_open_vol(path, CLI_RO, ctx, vol, &pool, &in, &id);
	if (r)
		return r;
	r = cli_vol_get_blob(pool, id, blob, in.blob_size);
	if (!r && as_hex) {
		fmt_hex(blob, in.blob_size, hex);
		printf("%s\n", hex);
	} else if (!r) {
		fwrite(blob, 1, in.blob_size, stdout);
	}
	return cli_finish(pool, path, ctx, r);
}

/* ---- list, show, find ---- */

/* Print one volume, as a JSON array element or a table row. */
static int put_vol(struct cli_pool *pool, const struct tv_pool_info *in,
		   const struct tv_vol_info *v, bool json, bool first)
{
	int r;

	if (!json) {
		cli_put_vol_row(stdout, v);
		return 0;
	}
	fputs(first ? "\n" : ",\n", stdout);
	r = cli_put_vol_json(stdout, pool, in->blob_size, v, NULL);
	if (r < 0)
		return cli_fail(r, "volume #%" PRIu64, v->id);
	return 0;
}

static int cmd_list(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {NULL, 0, NULL, 0},
	};
	struct tv_vol_info *page;
	struct tv_pool_info in;
	struct cli_pool *pool;
	uint64_t cursor = 0, count = 0;
	bool json = false;
	const char *path;
	int r, n = 0;

	if (cli_flag_opt(cmd, argc, argv, ":j", opts, &json))
		return EXIT_USAGE;
	if (argc - optind != 1)
		return cli_usage(cmd, "needs exactly one POOL");
	path = argv[optind];
	page = calloc(LIST_PAGE, sizeof(*page));
	if (!page)
		return cli_error(EXIT_OTHER, "out of memory");
	r = cli_open(path, CLI_RO, &pool, &in);
	if (r)
		goto out_free;
	if (json)
		fputs("[", stdout);
	else
		cli_put_vol_header(stdout);
	while (!r && (n = cli_vol_list(pool, &cursor, page, LIST_PAGE)) > 0)
		for (int i = 0; !r && i < n; i++)
			r = put_vol(pool, &in, &page[i], json, !count++);
	if (!r && n < 0)
		r = cli_fail(n, "list");
	if (json)
		fputs(count ? "\n]\n" : "]\n", stdout);
	r = cli_close(pool, path, r);
out_free:
	free(page);
	return r;
}

static int cmd_show(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {NULL, 0, NULL, 0},
	};
	uint8_t blob[TV_BLOB_MAX];
	char hex[2 * TV_BLOB_MAX + 1], ctx[TV_NAME_MAX + 32], uuid[37];
	char b1[32], b2[32];
	struct tv_vol_info v, parent;
	struct tv_pool_info in;
	struct cli_pool *pool;
	const char *path, *vol;
	bool json = false, zero = true;
	uint64_t id, mapped, exclusive;
	int r;

	if (cli_flag_opt(cmd, argc, argv, ":j", opts, &json))
		return EXIT_USAGE;
	if (pool_vol_args(cmd, argc, argv, &path, &vol, ctx, sizeof(ctx)))
		return EXIT_USAGE;
	r = cli_open_vol(path, CLI_RO, ctx, vol, &pool, &in, &id);
	if (r)
		return r;
	r = cli_vol_info(pool, id, &v);
	if (!r)
		r = cli_vol_usage(pool, id, &mapped, &exclusive);
	if (r)
		return cli_finish(pool, path, ctx, r);
	if (json) {
		r = cli_put_vol_json(stdout, pool, in.blob_size, &v,
				     &exclusive);
		if (!r)
			fputs("\n", stdout);
		return cli_finish(pool, path, ctx, r);
	}
	r = cli_vol_get_blob(pool, id, blob, in.blob_size);
	if (r < 0)
		return cli_finish(pool, path, ctx, r);
	fmt_uuid(v.uuid, uuid);
	printf("id:       #%" PRIu64 "\n"
	       "name:     %s\n"
	       "uuid:     %s\n"
	       "size:     %s (%" PRIu64 " bytes)\n"
	       "mapped:   %s (%" PRIu64 " bytes)\n",
	       v.id, v.name, uuid, fmt_size(v.size, b1, sizeof(b1)), v.size,
	       fmt_size(v.mapped, b2, sizeof(b2)), v.mapped);
	printf("exclusive: %s (%" PRIu64 " bytes not shared with any other "
	       "volume)\n",
	       fmt_size(exclusive, b2, sizeof(b2)), exclusive);
	if (!v.parent)
		printf("parent:   -\n");
	else if (cli_vol_info(pool, v.parent, &parent) == 0)
		printf("parent:   #%" PRIu64 " (%s)\n", v.parent, parent.name);
	else
		printf("parent:   #%" PRIu64 " (deleted)\n", v.parent);
	printf("flags:    %s\n",
	       v.flags & TV_VOL_READ_ONLY ? "read-only" : "-");
	{
		time_t t = (time_t) (v.ctime_ns / 1000000000u);
		struct tm tm;
		char when[40] = "?";

		if (gmtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC",
				 &tm);
		printf("created:  %s\n", when);
	}
	for (uint32_t i = 0; i < in.blob_size; i++)
		zero = zero && !blob[i];
	if (!in.blob_size) {
		printf("blob:     (this pool has no blobs)\n");
	} else if (zero) {
		printf("blob:     %u bytes, all zero\n", in.blob_size);
	} else {
		fmt_hex(blob, in.blob_size, hex);
		printf("blob:     %u bytes\n", in.blob_size);
		for (uint32_t i = 0; i < 2 * in.blob_size; i += 64)
			printf("  %.64s\n", hex + i);
	}
	return cli_close(pool, path, 0);
}

static int cmd_find(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"blob-hex", required_argument, NULL, 'x'},
	    {"blob-prefix-hex", required_argument, NULL, 'p'},
	    {"json", no_argument, NULL, 'j'},
	    {NULL, 0, NULL, 0},
	};
	uint8_t key[TV_BLOB_MAX];
	const char *path, *hex = NULL, *prefix = NULL;
	struct tv_pool_info in;
	struct cli_pool *pool;
	uint64_t *ids = NULL;
	size_t len = 0, max = 64;
	bool json = false;
	char why[80];
	int c, r, n;

	while ((c = cli_getopt(cmd, argc, argv, ":x:p:j", opts)) != -1) {
		switch (c) {
		case 'x':
			hex = optarg;
			break;
		case 'p':
			prefix = optarg;
			break;
		case 'j':
			json = true;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1)
		return cli_usage(cmd, "needs exactly one POOL");
	if (!hex == !prefix)
		return cli_usage(cmd, "needs exactly one of --blob-hex and "
				      "--blob-prefix-hex");
	path = argv[optind];
	r = cli_open(path, CLI_RO, &pool, &in);
	if (r)
		return r;
	if (hex) {
		r = cli_blob_hex("find", "--blob-hex", hex, in.blob_size, key);
		len = in.blob_size;
	} else if (parse_hex(prefix, key, TV_BLOB_MAX, &len, why, sizeof(why)) <
		   0) {
		r = cli_error(EXIT_USAGE,
			      "find: --blob-prefix-hex: malformed "
			      "hex: %s",
			      why);
	} else if (!len || len > in.blob_size) {
		r = cli_error(EXIT_USAGE,
			      "find: --blob-prefix-hex: %zu "
			      "bytes, but a prefix is 1 to %u "
			      "bytes in this pool",
			      len, in.blob_size);
	}
	if (r)
		return cli_close(pool, path, r);
	/* the engine reports how many match: grow the buffer to fit */
	for (;;) {
		uint64_t *nids = realloc(ids, max * sizeof(*ids));

		if (!nids) {
			r = cli_error(EXIT_OTHER, "out of memory");
			goto out;
		}
		ids = nids;
		n = cli_vol_find_blob(pool, key, len, ids, max);
		if (n < 0) {
			r = cli_fail(n, "find");
			goto out;
		}
		if ((size_t) n <= max)
			break;
		max = (size_t) n;
	}
	if (json)
		fputs("[", stdout);
	else
		cli_put_vol_header(stdout);
	for (int i = 0; !r && i < n; i++) {
		struct tv_vol_info v;

		r = cli_vol_info(pool, ids[i], &v);
		if (r < 0) {
			r = cli_fail(r, "find");
			break;
		}
		r = put_vol(pool, &in, &v, json, i == 0);
	}
	if (json)
		fputs(n ? "\n]\n" : "]\n", stdout);
out:
	free(ids);
	return cli_close(pool, path, r);
}

const struct cli_cmd cli_vol_cmds[] = {
    {
	"create",
	"create POOL NAME --size SIZE [--blob-hex HEX | --blob-file "
	"FILE]",
	"usage: thinvol create POOL NAME --size SIZE [--blob-hex HEX | "
	"--blob-file FILE]\n"
	"\n"
	"Create an empty thin volume and print its id.  NAME is 1 to 128\n"
	"bytes of UTF-8 without '/' or control characters, not starting\n"
	"with '#', and unique in the pool.\n"
	"\n"
	"  -s, --size SIZE        virtual size, a non-zero multiple of 512\n"
	"  -x, --blob-hex HEX     the volume's blob, exactly the pool's\n"
	"                         blob size (default: all zero)\n"
	"  -F, --blob-file FILE   the blob from a file of exactly the blob\n"
	"                         size ('-' reads stdin)\n"
	"  -h, --help             this text\n",
	cmd_create,
    },
    {
	"snapshot",
	"snapshot POOL ORIGIN NAME | POOL ORIGIN=NAME... [--read-only] "
	"[--blob-hex HEX | --blob-file FILE]",
	"usage: thinvol snapshot POOL ORIGIN NAME [OPTION...]\n"
	"       thinvol snapshot POOL ORIGIN=NAME [ORIGIN=NAME...] "
	"[OPTION...]\n"
	"\n"
	"Snapshot ORIGIN (a name or #ID) as a new volume NAME and print\n"
	"the new id.  The second form takes several snapshots at once,\n"
	"atomically (all or none), and prints one id per line in order;\n"
	"it is used when every argument after POOL contains '=' (split at\n"
	"the first '=').\n"
	"\n"
	"  -r, --read-only        make the snapshots read-only\n"
	"  -x, --blob-hex HEX     blob of the new volumes (default: all\n"
	"                         zero); the same for every snapshot\n"
	"  -F, --blob-file FILE   the blob from a file ('-' reads stdin)\n"
	"  -h, --help             this text\n",
	cmd_snapshot,
    },
    {
	"delete",
	"delete POOL VOL... [--force]",
	"usage: thinvol delete POOL VOL... [--force]\n"
	"\n"
	"Delete volumes, all in one transaction (all or none).  Returns at\n"
	"once; the blocks are freed by later transactions and show as\n"
	"reclaimable in 'pool info' meanwhile.  Ids are never reused.\n"
	"While 'thinvol serve' holds the pool, a volume that NBD clients\n"
	"have open is not deleted (exit status 8) unless --force.\n"
	"\n"
	"  -f, --force  disconnect the volume's NBD clients first\n"
	"  -h, --help   this text\n",
	cmd_delete,
    },
    {
	"rename",
	"rename POOL VOL NEWNAME",
	"usage: thinvol rename POOL VOL NEWNAME\n"
	"\n"
	"Give a volume a new name (unique in the pool).\n"
	"\n"
	"  -h, --help   this text\n",
	cmd_rename,
    },
    {
	"resize",
	"resize POOL VOL SIZE [--force]",
	"usage: thinvol resize POOL VOL SIZE [--force]\n"
	"\n"
	"Grow or shrink a volume to SIZE (a non-zero multiple of 512).\n"
	"Shrinking frees the blocks past the new end, as delete does:\n"
	"later transactions free them (reclaimable in 'pool info'\n"
	"meanwhile).  Growing reads as zeroes past the old end.\n"
	"While 'thinvol serve' holds the pool, a volume that NBD\n"
	"clients have open is not shrunk (exit status 8) unless\n"
	"--force.\n"
	"\n"
	"  -f, --force  disconnect the volume's NBD clients before\n"
	"               shrinking\n"
	"  -h, --help   this text\n",
	cmd_resize,
    },
    {
	"set-blob",
	"set-blob POOL VOL (--hex HEX | --file FILE)",
	"usage: thinvol set-blob POOL VOL (--hex HEX | --file FILE)\n"
	"\n"
	"Replace a volume's blob; it must be exactly the pool's blob size.\n"
	"\n"
	"  -x, --hex HEX     the blob as hex digits\n"
	"  -F, --file FILE   the blob's raw bytes from FILE ('-': stdin)\n"
	"  -h, --help        this text\n",
	cmd_set_blob,
    },
    {
	"get-blob",
	"get-blob POOL VOL [--hex]",
	"usage: thinvol get-blob POOL VOL [--hex]\n"
	"\n"
	"Write a volume's blob to stdout: its raw bytes, or hex and a\n"
	"newline with --hex.\n"
	"\n"
	"  -x, --hex    hex instead of raw bytes\n"
	"  -h, --help   this text\n",
	cmd_get_blob,
    },
    {
	"list",
	"list POOL [--json]",
	"usage: thinvol list POOL [--json]\n"
	"\n"
	"List every volume in id order: id, name, size, mapped bytes,\n"
	"parent and flags (a table), or with --json an array of objects\n"
	"that also carry the uuid, creation time and blob (docs/cli.md).\n"
	"\n"
	"  -j, --json   JSON instead of a table\n"
	"  -h, --help   this text\n",
	cmd_list,
    },
    {
	"show",
	"show POOL VOL [--json]",
	"usage: thinvol show POOL VOL [--json]\n"
	"\n"
	"Everything about one volume.\n"
	"\n"
	"  -j, --json   one JSON object (as in 'list --json')\n"
	"  -h, --help   this text\n",
	cmd_show,
    },
    {
	"find",
	"find POOL (--blob-hex HEX | --blob-prefix-hex HEX) [--json]",
	"usage: thinvol find POOL (--blob-hex HEX | --blob-prefix-hex "
	"HEX) [--json]\n"
	"\n"
	"The volumes whose blob equals HEX, or starts with the prefix,\n"
	"found through the pool's blob index, in id order.\n"
	"\n"
	"  -x, --blob-hex HEX          the whole blob (exactly the blob "
	"size)\n"
	"  -p, --blob-prefix-hex HEX   its first 1 to blob-size bytes\n"
	"  -j, --json                  JSON array (as 'list --json')\n"
	"  -h, --help                  this text\n",
	cmd_find,
    },
    {NULL, NULL, NULL, NULL},
};
