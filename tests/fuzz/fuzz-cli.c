/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-cli - the command's parsers of hostile input: the batch document
 * (src/cli/cmd-batch.c), the JSON parser under it (src/util/json.c) and
 * the value parsers (src/cli/parse.c).
 *
 * The first byte of an input chooses:
 *
 *   'S'   the rest as a size and as an integer (parse_size, parse_u64)
 *   'H'   the rest as hex (parse_hex)
 *   'J'   the rest as a JSON document, with default and with tight limits
 *   other the whole input as a batch document: `thinvol batch POOL`
 *
 * The batch document is parsed and checked by the real cmd-batch.c,
 * compiled into this program; the calls it makes into the rest of the
 * command (cli.h: opening the pool, resolving volume references, hex
 * blobs, reading the input, errors) are replaced by the stubs below, so
 * that no pool is involved: volumes "alpha" (#1) .. "epsilon" (#5) exist,
 * blobs are 16 bytes.  cli_batch() receives what the parser accepted and
 * checks what cmd-batch.c promises the engine (every op has its required
 * fields; a blob is exactly the blob size).
 *
 * Oracles besides the sanitizers: parse_u64 and parse_size round-trip
 * (the decimal form of a value parses back to it), parse_hex agrees with
 * fmt_hex, and json_put_string always writes valid JSON.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "fuzz.h"
#include "util/json.h"

#define STUB_BLOB 16u

/* ---- stubs of the command's calls that cmd-batch.c makes ---- */

struct cli_pool {
	int unused;
};

static struct cli_pool fake_pool;
static const uint8_t *cur;
static size_t cur_len;

static const char *const names[] = {"alpha", "beta", "gamma", "delta",
				    "epsilon"};

int cli_error(int status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return status;
}

int cli_fail(int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err ? EXIT_OTHER : 0;
}

int cli_usage(const struct cli_cmd *cmd, const char *fmt, ...)
{
	(void) cmd;
	(void) fmt;
	return EXIT_USAGE;
}

int cli_getopt(const struct cli_cmd *cmd, int argc, char **argv,
	       const char *shortopts, const struct option *longopts)
{
	(void) cmd;
	(void) argc;
	(void) argv;
	(void) shortopts;
	(void) longopts;
	optind = 1;
	return -1;
}

int cli_read_all(const char *path, size_t max, char **buf, size_t *len)
{
	char *b;

	(void) path;
	if (cur_len > max)
		return EXIT_USAGE;
	if (!(b = malloc(cur_len + 1)))
		return EXIT_OTHER;
	memcpy(b, cur, cur_len);
	b[cur_len] = 0;
	*buf = b;
	*len = cur_len;
	return 0;
}

int cli_open(const char *path, enum cli_open_mode mode, struct cli_pool **pool,
	     struct tv_pool_info *info)
{
	(void) path;
	(void) mode;
	memset(info, 0, sizeof(*info));
	info->blob_size = STUB_BLOB;
	info->block_size = 4096;
	*pool = &fake_pool;
	return 0;
}

int cli_close(struct cli_pool *pool, const char *path, int status)
{
	(void) path;
	if (pool != &fake_pool)
		fuzz_die("cli_close: not the pool cli_open returned");
	return status;
}

/* As in cli-util.c. */
int cli_blob_hex(const char *ctx, const char *opt, const char *hex,
		 uint32_t blob_size, uint8_t *buf)
{
	char why[80];
	size_t len;

	if (parse_hex(hex, buf, TV_BLOB_MAX, &len, why, sizeof(why)) < 0)
		return cli_error(EXIT_USAGE, "%s: %s: malformed hex: %s", ctx,
				 opt, why);
	if (len != blob_size)
		return cli_error(EXIT_USAGE, "%s: %s: %zu bytes", ctx, opt,
				 len);
	return 0;
}

/* tv_vol_resolve's rule: "#ID" is an id, anything else a name. */
int cli_resolve(struct cli_pool *pool, const char *ctx, const char *spec,
		uint64_t *id)
{
	uint64_t v;

	if (pool != &fake_pool)
		fuzz_die("cli_resolve: not the pool cli_open returned");
	if (spec[0] == '#' && parse_u64(spec + 1, &v) == 0 && v >= 1 &&
	    v <= 5) {
		*id = v;
		return 0;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(spec, names[i])) {
			*id = i + 1;
			return 0;
		}
	}
	return cli_fail(-ENOENT, "%s", ctx);
}

int cli_batch(struct cli_pool *p, struct tv_op *ops, size_t n, size_t *failed,
	      bool force)
{
	(void) force;
	if (p != &fake_pool || !n)
		fuzz_die("cli_batch: bad pool or empty batch");
	for (size_t i = 0; i < n; i++) {
		const struct tv_op *op = &ops[i];
		bool needs_name = op->kind == TV_OP_CREATE ||
				  op->kind == TV_OP_SNAPSHOT ||
				  op->kind == TV_OP_RENAME;
		bool needs_id = op->kind != TV_OP_CREATE;

		if ((unsigned int) op->kind > TV_OP_SET_BLOB ||
		    (needs_name && !op->name) ||
		    (needs_id && (op->id < 1 || op->id > 5)) ||
		    (op->blob && op->blob_len != STUB_BLOB) ||
		    (op->kind == TV_OP_SET_BLOB && !op->blob) ||
		    (op->flags & ~TV_VOL_READ_ONLY))
			fuzz_die("batch op %zu (kind %d) passed the parser "
				 "unchecked",
				 i, (int) op->kind);
		ops[i].result_id = 100 + i;
	}
	/* an engine refusal of the last op: the error path after parsing */
	if (ops[n - 1].kind == TV_OP_DELETE && ops[n - 1].id == 5) {
		*failed = n - 1;
		return -EBUSY;
	}
	return 0;
}

/* ---- the targets ---- */

static char *cstr(const uint8_t *d, size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		fuzz_die("out of memory");
	memcpy(s, d, n);
	s[n] = 0;
	return s;
}

static void t_size(const uint8_t *d, size_t n)
{
	char *s = cstr(d, n), back[32], human[32];
	uint64_t v, w;

	if (parse_u64(s, &v) == 0) {
		snprintf(back, sizeof(back), "%llu", (unsigned long long) v);
		if (parse_u64(back, &w) != 0 || w != v)
			fuzz_die("parse_u64 round trip: '%s' -> %s", s, back);
		if (parse_size(s, &w) != 0 || w != v)
			fuzz_die("parse_size disagrees with parse_u64 on '%s'",
				 s);
	}
	if (parse_size(s, &v) == 0) {
		snprintf(back, sizeof(back), "%llu", (unsigned long long) v);
		if (parse_size(back, &w) != 0 || w != v)
			fuzz_die("parse_size round trip: '%s' -> %s", s, back);
		fmt_size(v, human, sizeof(human));
		if (!memchr(human, 0, sizeof(human)))
			fuzz_die("fmt_size: unterminated");
	}
	free(s);
}

static void t_hex(const uint8_t *d, size_t n)
{
	static uint8_t out[TV_BLOB_MAX];
	static char back[2 * TV_BLOB_MAX + 1];
	char *s = cstr(d, n), why[80];
	size_t len;

	if (parse_hex(s, out, sizeof(out), &len, why, sizeof(why)) == 0) {
		if (len > sizeof(out) || strlen(s) != 2 * len)
			fuzz_die("parse_hex: %zu bytes from '%s'", len, s);
		fmt_hex(out, len, back);
		if (strcasecmp(back, s))
			fuzz_die("parse_hex/fmt_hex: '%s' -> '%s'", s, back);
	} else if (!memchr(why, 0, sizeof(why))) {
		fuzz_die("parse_hex: unterminated reason");
	}
	free(s);
}

static void put_strings(FILE *f, const struct json_value *v)
{
	if (v->type == JSON_STRING) {
		if (strlen(v->str.s) != v->str.len ||
		    !json_utf8_valid(v->str.s, v->str.len))
			fuzz_die("json: a parsed string is not what it says");
		json_put_string(f, v->str.s, v->str.len);
	} else if (v->type == JSON_ARRAY) {
		for (size_t i = 0; i < v->arr.n; i++)
			put_strings(f, v->arr.items[i]);
	} else if (v->type == JSON_OBJECT) {
		for (size_t i = 0; i < v->obj.n; i++) {
			json_put_string(f, v->obj.m[i].key,
					v->obj.m[i].key_len);
			if (json_get(v, v->obj.m[i].key) != v->obj.m[i].val)
				fuzz_die("json: duplicate key accepted");
			put_strings(f, v->obj.m[i].val);
		}
	}
}

static void t_json(const uint8_t *d, size_t n)
{
	static const struct json_limits tight = {4, 64, 8, 32};
	struct json_value *doc;
	struct json_error err;
	char *out = NULL;
	size_t out_len = 0;
	FILE *f;

	if (json_parse((const char *) d, n, &tight, &doc, &err) == 0)
		json_free(doc);
	else if (err.offset > n || !memchr(err.msg, 0, sizeof(err.msg)))
		fuzz_die("json: error offset %zu past %zu", err.offset, n);
	if (json_parse((const char *) d, n, NULL, &doc, &err) < 0)
		return;
	/* json_put_string of anything must parse back as one string */
	f = open_memstream(&out, &out_len);
	if (!f)
		fuzz_die("open_memstream: %m");
	json_put_string(f, (const char *) d, n);
	fclose(f);
	json_free(doc);
	if (json_parse(out, out_len, NULL, &doc, &err) < 0 ||
	    doc->type != JSON_STRING)
		fuzz_die("json_put_string wrote bad JSON: %s", err.msg);
	json_free(doc);
	free(out);
	/* and every string it parsed can be written back */
	if (json_parse((const char *) d, n, NULL, &doc, &err) == 0) {
		f = fopen("/dev/null", "w");
		if (f) {
			put_strings(f, doc);
			fclose(f);
		}
		json_free(doc);
	}
}

static void t_batch(const uint8_t *d, size_t n)
{
	static char a0[] = "batch", a1[] = "POOL";
	char *argv[] = {a0, a1, NULL};

	cur = d;
	cur_len = n;
	cli_batch_cmd.run(&cli_batch_cmd, 2, argv);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fuzz_quiet();
	/* the batch's results are printed on stdout */
	if (!freopen("/dev/null", "w", stdout))
		fuzz_die("freopen: %m");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size && data[0] == 'S')
		t_size(data + 1, size - 1);
	else if (size && data[0] == 'H')
		t_hex(data + 1, size - 1);
	else if (size && data[0] == 'J')
		t_json(data + 1, size - 1);
	else
		t_batch(data, size);
	return 0;
}
