/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cmd-batch.c - thinvol batch POOL [FILE]: a JSON array of operations
 * applied in one transaction, all or nothing.
 *
 * The input is hostile.  It is parsed strictly (json.c), then every
 * operation is checked field by field and its volume references are
 * resolved against the pool as it is before the batch; only when all of
 * that passed is the batch handed to the engine as one tv_batch.  So an
 * operation may refer only to volumes that exist before the batch (a
 * volume created by the batch cannot be referred to by a later op of the
 * same batch); docs/cli.md says so.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/json.h"
#include "cli/parse.h"

#define BATCH_MAX_INPUT (16u << 20)

struct op_spec {
	const char *op;
	enum tv_op_kind kind;
	const char *fields[5]; /* allowed besides "op" */
	const char *required[3];
};

static const struct op_spec specs[] = {
    {"create", TV_OP_CREATE, {"name", "size", "blob_hex"}, {"name", "size"}},
    {"snapshot",
     TV_OP_SNAPSHOT,
     {"origin", "name", "read_only", "blob_hex"},
     {"origin", "name"}},
    {"delete", TV_OP_DELETE, {"volume"}, {"volume"}},
    {"rename", TV_OP_RENAME, {"volume", "name"}, {"volume", "name"}},
    {"resize", TV_OP_RESIZE, {"volume", "size"}, {"volume", "size"}},
    {"set-blob",
     TV_OP_SET_BLOB,
     {"volume", "blob_hex"},
     {"volume", "blob_hex"}},
};

static bool in_list(const char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; i < n && list[i]; i++)
		if (!strcmp(list[i], s))
			return true;
	return false;
}

struct batch {
	struct cli_pool *pool;
	uint32_t blob_size;
	struct tv_op *ops;
	uint8_t *blobs; /* blob_size bytes per op */
	const struct op_spec **spec;
	size_t n;
};

/* Report a problem with operation i at byte off; returns status. */
static int op_error(int status, size_t i, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int op_error(int status, size_t i, size_t off, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cli_error(status, "batch: operation %zu (byte %zu): %s", i + 1,
			 off, msg);
}

static int field_string(size_t i, const struct json_value *obj, const char *key,
			const char **out)
{
	const struct json_value *v = json_get(obj, key);

	if (!v)
		return 0;
	if (v->type != JSON_STRING)
		return op_error(EXIT_USAGE, i, v->offset,
				"\"%s\" must be a string, not %s", key,
				json_type_name(v->type));
	*out = v->str.s;
	return 0;
}

static int field_size(size_t i, const struct json_value *obj, uint64_t *out)
{
	const struct json_value *v = json_get(obj, "size");
	int r;

	if (!v)
		return 0;
	if (v->type == JSON_NUMBER && v->num.is_uint) {
		*out = v->num.u;
		return 0;
	}
	if (v->type == JSON_NUMBER)
		return op_error(EXIT_USAGE, i, v->offset,
				"\"size\": a number of bytes must be a "
				"non-negative integer below 2^64");
	if (v->type != JSON_STRING)
		return op_error(EXIT_USAGE, i, v->offset,
				"\"size\" must be a string or a number, not %s",
				json_type_name(v->type));
	r = parse_size(v->str.s, out);
	if (r == -ERANGE)
		return op_error(EXIT_USAGE, i, v->offset,
				"\"size\": '%.40s' is too large", v->str.s);
	if (r < 0)
		return op_error(EXIT_USAGE, i, v->offset,
				"\"size\": '%.40s' is not a size (digits with "
				"an optional K, M, G, T or P suffix)",
				v->str.s);
	return 0;
}

/* Check and translate operation i, resolving its volume reference. */
static int load_op(struct batch *b, size_t i, const struct json_value *o)
{
	struct tv_op *op = &b->ops[i];
	const struct json_value *kind, *ro;
	const struct op_spec *spec = NULL;
	const char *ref = NULL, *hex = NULL, *name = NULL;
	char ctx[64];
	int r;

	if (o->type != JSON_OBJECT)
		return op_error(EXIT_USAGE, i, o->offset,
				"must be an object, not %s",
				json_type_name(o->type));
	kind = json_get(o, "op");
	if (!kind)
		return op_error(EXIT_USAGE, i, o->offset, "needs \"op\"");
	if (kind->type != JSON_STRING)
		return op_error(EXIT_USAGE, i, kind->offset,
				"\"op\" must be a string, not %s",
				json_type_name(kind->type));
	for (size_t k = 0; k < sizeof(specs) / sizeof(specs[0]); k++)
		if (!strcmp(specs[k].op, kind->str.s))
			spec = &specs[k];
	if (!spec)
		return op_error(EXIT_USAGE, i, kind->offset,
				"unknown op \"%.40s\" (create, snapshot, "
				"delete, rename, resize or set-blob)",
				kind->str.s);
	b->spec[i] = spec;
	for (size_t m = 0; m < o->obj.n; m++) {
		const char *key = o->obj.m[m].key;

		if (strcmp(key, "op") && !in_list(spec->fields, 5, key))
			return op_error(EXIT_USAGE, i, o->obj.m[m].offset,
					"unknown field \"%.40s\" for \"%s\"",
					key, spec->op);
	}
	for (size_t k = 0; k < 3 && spec->required[k]; k++)
		if (!json_get(o, spec->required[k]))
			return op_error(EXIT_USAGE, i, o->offset,
					"\"%s\" needs \"%s\"", spec->op,
					spec->required[k]);
	op->kind = spec->kind;
	if ((r = field_string(i, o, "name", &name)) ||
	    (r = field_string(i, o, "blob_hex", &hex)) ||
	    (r = field_string(i, o, "volume", &ref)) ||
	    (!ref && (r = field_string(i, o, "origin", &ref))) ||
	    (r = field_size(i, o, &op->size)))
		return r;
	ro = json_get(o, "read_only");
	if (ro && ro->type != JSON_BOOL)
		return op_error(EXIT_USAGE, i, ro->offset,
				"\"read_only\" must be true or false, not %s",
				json_type_name(ro->type));
	if (ro && ro->b)
		op->flags = TV_VOL_READ_ONLY;
	op->name = name;
	snprintf(ctx, sizeof(ctx), "batch: operation %zu", i + 1);
	if (hex) {
		uint8_t *blob = b->blobs + i * b->blob_size;
		uint8_t tmp[TV_BLOB_MAX];

		/* cli_blob_hex may decode up to TV_BLOB_MAX bytes before it
		 * checks the length: never into the op's blob_size slot
		 * (found by fuzz-cli: regress-batch-blob-hex-too-long) */
		r = cli_blob_hex(ctx, "\"blob_hex\"", hex, b->blob_size, tmp);
		if (r)
			return r;
		memcpy(blob, tmp, b->blob_size);
		op->blob = blob;
		op->blob_len = b->blob_size;
	}
	if (ref) {
		r = cli_resolve(b->pool, ctx, ref, &op->id);
		if (r)
			return r;
	}
	return 0;
}

static void put_results(const struct batch *b, bool json)
{
	if (json)
		fputs("[", stdout);
	for (size_t i = 0; i < b->n; i++) {
		const struct tv_op *op = &b->ops[i];
		bool makes =
		    op->kind == TV_OP_CREATE || op->kind == TV_OP_SNAPSHOT;

		if (!json) {
			if (makes)
				printf("%" PRIu64 "\n", op->result_id);
			continue;
		}
		printf("%s{\"op\":\"%s\",\"id\":%" PRIu64, i ? ",\n" : "\n",
		       b->spec[i]->op, makes ? op->result_id : op->id);
		if (op->name) {
			fputs(",\"name\":", stdout);
			json_put_string(stdout, op->name, strlen(op->name));
		}
		fputs("}", stdout);
	}
	if (json)
		fputs(b->n ? "\n]\n" : "]\n", stdout);
}

static int cmd_batch(const struct cli_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"force", no_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	struct batch b = {0};
	struct tv_pool_info in;
	struct json_value *doc = NULL;
	struct json_error jerr;
	const char *path, *file = "-";
	bool json = false, force = false;
	size_t len, failed = SIZE_MAX;
	char *text = NULL;
	int c, r;

	while ((c = cli_getopt(cmd, argc, argv, ":jf", opts)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'f')
			force = true;
		else
			return EXIT_USAGE;
	}
	if (argc - optind < 1 || argc - optind > 2)
		return cli_usage(cmd, "needs POOL and optionally FILE");
	path = argv[optind];
	if (argc - optind == 2)
		file = argv[optind + 1];
	r = cli_read_all(file, BATCH_MAX_INPUT, &text, &len);
	if (r)
		return r;
	r = json_parse(text, len, NULL, &doc, &jerr);
	if (r < 0) {
		r = cli_error(r == -ENOMEM ? EXIT_OTHER : EXIT_USAGE,
			      "batch: %s: byte %zu: %s",
			      strcmp(file, "-") ? file : "<stdin>", jerr.offset,
			      jerr.msg);
		goto out_free;
	}
	if (doc->type != JSON_ARRAY) {
		r = cli_error(EXIT_USAGE,
			      "batch: %s: byte %zu: the input must "
			      "be an array of operations, not %s",
			      strcmp(file, "-") ? file : "<stdin>", doc->offset,
			      json_type_name(doc->type));
		goto out_free;
	}
	b.n = doc->arr.n;
	r = cli_open(path, CLI_RW, &b.pool, &in);
	if (r)
		goto out_free;
	b.blob_size = in.blob_size;
	b.ops = calloc(b.n ? b.n : 1, sizeof(*b.ops));
	b.spec = calloc(b.n ? b.n : 1, sizeof(*b.spec));
	b.blobs = calloc(b.n ? b.n : 1, in.blob_size ? in.blob_size : 1);
	if (!b.ops || !b.spec || !b.blobs) {
		r = cli_error(EXIT_OTHER, "out of memory");
		goto out_close;
	}
	for (size_t i = 0; !r && i < b.n; i++)
		r = load_op(&b, i, doc->arr.items[i]);
	if (r)
		goto out_close;
	/* An empty batch changes nothing: no transaction at all. */
	if (b.n) {
		r = cli_batch(b.pool, b.ops, b.n, &failed, force);
		if (r < 0) {
			if (failed >= b.n)
				r = cli_fail(r, "batch"); /* its commit */
			else
				r = cli_fail(r, "batch: operation %zu (%s)",
					     failed + 1, b.spec[failed]->op);
			goto out_close;
		}
	}
	put_results(&b, json);
out_close:
	r = cli_close(b.pool, path, r);
out_free:
	free(b.ops);
	free(b.spec);
	free(b.blobs);
	json_free(doc);
	free(text);
	return r;
}

const struct cli_cmd cli_batch_cmd = {
    "batch",
    "batch POOL [FILE] [--json] [--force]",
    "usage: thinvol batch POOL [FILE] [--json] [--force]\n"
    "\n"
    "Apply a JSON array of operations (read from FILE, or stdin) in one\n"
    "transaction: all of them, or none when any is refused.  Each\n"
    "operation is an object:\n"
    "\n"
    "  {\"op\":\"create\", \"name\":N, \"size\":S, \"blob_hex\":H?}\n"
    "  {\"op\":\"snapshot\", \"origin\":V, \"name\":N, \"read_only\":B?, "
    "\"blob_hex\":H?}\n"
    "  {\"op\":\"delete\", \"volume\":V}\n"
    "  {\"op\":\"rename\", \"volume\":V, \"name\":N}\n"
    "  {\"op\":\"resize\", \"volume\":V, \"size\":S}\n"
    "  {\"op\":\"set-blob\", \"volume\":V, \"blob_hex\":H}\n"
    "\n"
    "V is a volume name or \"#ID\" of a volume that exists before the\n"
    "batch; S is a SIZE string (\"1G\") or a number of bytes; fields\n"
    "marked ? are optional.  Unknown fields and duplicate keys are\n"
    "errors.  Prints the ids of the new volumes, one per line.\n"
    "\n"
    "  -j, --json   print one result object per operation:\n"
    "               [{\"op\":..,\"id\":..,\"name\":..}, ...]\n"
    "  -f, --force  while 'thinvol serve' holds the pool: disconnect the\n"
    "               NBD clients of volumes that are deleted or shrunk\n"
    "               (else the batch is refused, exit status 8)\n"
    "  -h, --help   this text\n",
    cmd_batch,
};
