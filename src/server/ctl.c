/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl.c - the control protocol's requests: one JSON line in, one JSON line
 * out (docs/control.md).  The socket side is ctl-server.c, the socket
 * paths ctl-path.c.
 *
 * Every request is hostile input.  It is parsed strictly (util/json.c,
 * with limits that bound the memory one line can make us use), checked
 * once here, field by field, and only then turned into the engine call the
 * thinvol command makes offline; every refusal is an error reply, never a
 * crash and never a silent close.
 *
 * Errors of engine calls carry tv_last_error() as their message (or
 * strerror when the engine said nothing), so that the command prints the
 * same line as offline.  Names and messages are bytes: one that is not
 * valid UTF-8 travels as "KEY_hex" beside a lossy "KEY" (requests may use
 * either), so nothing is altered on the way.
 *
 * Threads: ctl_handle runs on many client threads at once; it keeps no
 * state of its own, and the engine serialises metadata operations.
 */
#include "server/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "server/ctl-copy.h"
#include "server/ctl-internal.h"
#include "io/io.h"
#include "thin/thin-ext.h"
#include "util/json.h"
#include "util/hex.h"

#define CTL_LIST_MAX   256	   /* volumes per vol.list reply */
#define CTL_FIND_MAX   32768	   /* ids per vol.find_blob reply */
#define CTL_CHECK_TEXT (64u << 10) /* bytes of the checker's messages */

/* At most ~5 MiB of parsed values for one 1 MiB line. */
static const struct json_limits ctl_limits = {
    .max_depth = 8,
    .max_values = 1u << 17,
    .max_members = 32,
    .max_string = 64u << 10,
};

/* Imports running through this process (op_copy): ctl_pool_reopen waits
 * for none.  The one state kept here besides test_fault_dev. */
static atomic_uint imports_running;

/* Set once by a daemon started with THINVOL_TEST_FAULTS=1 (serve.c),
 * before any request; NULL otherwise, and then "test.fault" is unknown. */
static struct io_dev *test_fault_dev;

/* ---- errno names ---- */

static const struct {
	int err;
	const char *name;
} errno_names[] = {
    {EPERM, "EPERM"},		{ENOENT, "ENOENT"},
    {EINTR, "EINTR"},		{EIO, "EIO"},
    {E2BIG, "E2BIG"},		{EBADF, "EBADF"},
    {EAGAIN, "EAGAIN"},		{ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"},		{EBUSY, "EBUSY"},
    {EEXIST, "EEXIST"},		{ENODEV, "ENODEV"},
    {ENOTDIR, "ENOTDIR"},	{EISDIR, "EISDIR"},
    {EINVAL, "EINVAL"},		{EFBIG, "EFBIG"},
    {ENOSPC, "ENOSPC"},		{ESPIPE, "ESPIPE"},
    {EROFS, "EROFS"},		{EPIPE, "EPIPE"},
    {ERANGE, "ERANGE"},		{ENAMETOOLONG, "ENAMETOOLONG"},
    {ENOSYS, "ENOSYS"},		{EBADMSG, "EBADMSG"},
    {EOVERFLOW, "EOVERFLOW"},	{EPROTO, "EPROTO"},
    {EMSGSIZE, "EMSGSIZE"},	{EPROTONOSUPPORT, "EPROTONOSUPPORT"},
    {EOPNOTSUPP, "EOPNOTSUPP"}, {ECONNRESET, "ECONNRESET"},
    {ETIMEDOUT, "ETIMEDOUT"},	{EUCLEAN, "EUCLEAN"},
    {ENXIO, "ENXIO"},		{ESTALE, "ESTALE"},
    {EDQUOT, "EDQUOT"},
};

const char *ctl_errno_name(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]);
	     i++)
		if (errno_names[i].err == err)
			return errno_names[i].name;
	return "EUNKNOWN";
}

/* ---- writing ---- */

/* "key":"s" and, when s is not valid UTF-8, ,"key_hex":"..." too. */
static void put_bytes(FILE *f, const char *key, const char *s, size_t len)
{
	fprintf(f, "\"%s\":", key);
	json_put_string(f, s, len);
	if (!json_utf8_valid(s, len)) {
		fprintf(f, ",\"%s_hex\":", key);
		json_put_hex(f, s, len);
	}
}

static void put_vol(FILE *f, const struct tv_vol_info *v)
{
	fprintf(f, "{\"id\":%" PRIu64 ",\"uuid\":", v->id);
	json_put_hex(f, v->uuid, sizeof(v->uuid));
	putc(',', f);
	put_bytes(f, "name", v->name, strnlen(v->name, sizeof(v->name)));
	fprintf(f,
		",\"size\":%" PRIu64 ",\"flags\":%" PRIu32
		",\"parent\":%" PRIu64 ",\"ctime_ns\":%" PRIu64
		",\"mapped\":%" PRIu64 "}",
		v->size, v->flags, v->parent, v->ctime_ns, v->mapped);
}

static void put_error(FILE *f, int err, const char *msg, const size_t *index)
{
	fprintf(f, "\"error\":{\"errno\":\"%s\",\"code\":%d,",
		ctl_errno_name(err), err < 0 ? -err : err);
	put_bytes(f, "message", msg, strlen(msg));
	if (index)
		fprintf(f, ",\"index\":%zu", *index);
	putc('}', f);
}

/* Close the memstream f and hand over its buffer; -ENOMEM if any write
 * failed. */
static int finish(FILE *f, char **buf, size_t *len)
{
	bool bad = ferror(f);

	(void) len; /* set by fclose */
	if (fclose(f) != 0 || bad) {
		free(*buf);
		*buf = NULL;
		return -ENOMEM;
	}
	return 0;
}

int ctl_error_reply(int err, const char *msg, char **reply, size_t *reply_len)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return -ENOMEM;
	fprintf(f, "{\"v\":%d,\"id\":null,", CTL_PROTO_VERSION);
	put_error(f, err, msg, NULL);
	fputs("}\n", f);
	if (finish(f, &buf, &len) < 0)
		return -ENOMEM;
	*reply = buf;
	*reply_len = len;
	return 0;
}

/* ---- one request ---- */

struct req {
	struct tv_pool *pool;
	const struct ctl_hooks *hooks;
	const char *op;
	const struct json_value *args; /* an object */
	int fd;
	const struct ctl_wait *wait; /* or NULL */
	FILE *out;		     /* the result value */
	int err;
	char msg[1280];
	bool has_index;
	size_t index;
	void **allocs; /* freed after the request */
	size_t nallocs, allocs_cap;
};

static int req_err(struct req *q, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int req_err(struct req *q, int err, const char *fmt, ...)
{
	va_list ap;

	q->err = err;
	va_start(ap, fmt);
	vsnprintf(q->msg, sizeof(q->msg), fmt, ap);
	va_end(ap);
	return err;
}

/* An engine call failed: its own message. */
static int req_engine(struct req *q, int err)
{
	const char *why = tv_last_error();

	return req_err(q, err, "%s", why && why[0] ? why : strerror(-err));
}

static void *req_alloc(struct req *q, size_t size)
{
	void *p;

	if (q->nallocs == q->allocs_cap) {
		size_t nc = q->allocs_cap ? 2 * q->allocs_cap : 16;
		void **na = realloc(q->allocs, nc * sizeof(*na));

		if (!na)
			return NULL;
		q->allocs = na;
		q->allocs_cap = nc;
	}
	p = malloc(size ? size : 1);
	if (p)
		q->allocs[q->nallocs++] = p;
	return p;
}

/* Only the keys in allowed (NULL-terminated) may appear in obj. */
static int check_keys(struct req *q, const char *where,
		      const struct json_value *obj, const char *const *allowed)
{
	for (size_t m = 0; m < obj->obj.n; m++) {
		const char *key = obj->obj.m[m].key;
		bool ok = false;

		for (size_t k = 0; allowed[k] && !ok; k++)
			ok = !strcmp(allowed[k], key);
		if (!ok)
			return req_err(q, -EINVAL,
				       "%s: unknown argument \"%.40s\"", where,
				       key);
	}
	return 0;
}

static int get_u64(struct req *q, const char *where,
		   const struct json_value *obj, const char *key, bool required,
		   uint64_t *out)
{
	const struct json_value *v = json_get(obj, key);

	if (!v && !required)
		return 0;
	if (!v)
		return req_err(q, -EINVAL, "%s: needs \"%s\"", where, key);
	if (v->type != JSON_NUMBER || !v->num.is_uint)
		return req_err(q, -EINVAL,
			       "%s: \"%s\" must be an integer from 0 to "
			       "2^64-1",
			       where, key);
	*out = v->num.u;
	return 0;
}

static int get_bool(struct req *q, const char *where,
		    const struct json_value *obj, const char *key, bool *out)
{
	const struct json_value *v = json_get(obj, key);

	if (!v)
		return 0;
	if (v->type != JSON_BOOL)
		return req_err(q, -EINVAL,
			       "%s: \"%s\" must be true or false, not %s",
			       where, key, json_type_name(v->type));
	*out = v->b;
	return 0;
}

/* Hex bytes of obj[key] into buf[0, max); *present tells if given. */
static int get_hex(struct req *q, const char *where,
		   const struct json_value *obj, const char *key, uint8_t *buf,
		   size_t max, size_t *len)
{
	const struct json_value *v = json_get(obj, key);

	if (!v)
		return 1;
	if (v->type != JSON_STRING ||
	    hex_decode(v->str.s, v->str.len, buf, max, len) < 0)
		return req_err(q, -EINVAL,
			       "%s: \"%s\" must be a string of at most %zu "
			       "bytes in hex",
			       where, key, max);
	return 0;
}

/*
 * A byte string without NUL: obj[key] (a string) or obj[key_hex] (hex),
 * NUL-terminated, freed with the request.  Absent: *out stays NULL.
 */
static int get_bytes(struct req *q, const char *where,
		     const struct json_value *obj, const char *key,
		     bool required, const char **out)
{
	char hkey[48];
	const struct json_value *v, *h;
	size_t len;
	char *s;

	snprintf(hkey, sizeof(hkey), "%s_hex", key);
	v = json_get(obj, key);
	h = json_get(obj, hkey);
	if (!h) {
		if (!v && !required)
			return 0;
		if (!v)
			return req_err(q, -EINVAL, "%s: needs \"%s\"", where,
				       key);
		if (v->type != JSON_STRING)
			return req_err(q, -EINVAL,
				       "%s: \"%s\" must be a string, not %s",
				       where, key, json_type_name(v->type));
		*out = v->str.s;
		return 0;
	}
	if (h->type != JSON_STRING)
		return req_err(q, -EINVAL,
			       "%s: \"%s\" must be a string, not %s", where,
			       hkey, json_type_name(h->type));
	s = req_alloc(q, h->str.len / 2 + 1);
	if (!s)
		return req_err(q, -ENOMEM, "out of memory");
	if (hex_decode(h->str.s, h->str.len, (uint8_t *) s, h->str.len / 2,
		       &len) < 0 ||
	    memchr(s, 0, len))
		return req_err(q, -EINVAL,
			       "%s: \"%s\" must be hex digits of bytes other "
			       "than 0",
			       where, hkey);
	s[len] = 0;
	*out = s;
	return 0;
}

/* ---- the operations ---- */

/* The names of the ops in the table below, for hello. */
static void put_op_names(FILE *f);

/*
 * Which pool this daemon serves, so that a client can tell it is the one
 * it means (docs/control.md, "hello"): its uuid, the path the daemon
 * opened, and what that is: a file (its device and inode) or a block
 * device (its number and the kernel's disk sequence number).
 */
static void put_pool(struct req *q)
{
	struct tv_pool_info in;
	struct io_ident id;
	int fd = io_dev_fd(pool_dev(q->pool));

	fputs("\"pool\":{", q->out);
	if (tv_pool_info(q->pool, &in) == 0) {
		fputs("\"uuid\":", q->out);
		json_put_hex(q->out, in.uuid, sizeof(in.uuid));
		putc(',', q->out);
	}
	put_bytes(q->out, "path", pool_name(q->pool),
		  strlen(pool_name(q->pool)));
	if (fd < 0 || io_ident_fd(fd, &id) < 0)
		fputs(",\"type\":\"other\"", q->out);
	else if (id.blk)
		fprintf(q->out,
			",\"type\":\"block\",\"rdev\":\"%u:%u\","
			"\"diskseq\":%" PRIu64,
			major(id.rdev), minor(id.rdev), id.diskseq);
	else
		fprintf(q->out,
			",\"type\":\"file\",\"dev\":\"%u:%u\",\"ino\":%" PRIu64,
			major(id.dev), minor(id.dev), (uint64_t) id.ino);
	putc('}', q->out);
}

static int op_hello(struct req *q)
{
	fprintf(q->out,
		"{\"proto\":%d,\"versions\":[%d],\"max_line\":%u,"
		"\"ops\":[",
		CTL_PROTO_VERSION, CTL_PROTO_VERSION, CTL_MAX_LINE);
	put_op_names(q->out);
	fputs("],", q->out);
	put_pool(q);
	putc('}', q->out);
	return 0;
}

static int op_pool_info(struct req *q)
{
	struct tv_pool_info in;
	int r = tv_pool_info(q->pool, &in);

	if (r < 0)
		return req_engine(q, r);
	fprintf(q->out,
		"{\"format_version\":%" PRIu32 ",\"uuid\":", in.format_version);
	json_put_hex(q->out, in.uuid, sizeof(in.uuid));
	fprintf(q->out,
		",\"block_size\":%" PRIu32 ",\"blob_size\":%" PRIu32
		",\"size\":%" PRIu64 ",\"used\":%" PRIu64 ",\"free\":%" PRIu64
		",\"metadata\":%" PRIu64 ",\"reclaimable\":%" PRIu64
		",\"nr_volumes\":%" PRIu64 ",\"next_id\":%" PRIu64
		",\"transaction\":%" PRIu64 ",\"state\":\"%s\",",
		in.block_size, in.blob_size, in.size, in.used, in.free,
		in.metadata, in.reclaimable, in.nr_volumes, in.next_id,
		in.transaction, tv_pool_state_name(in.state));
	put_bytes(q->out, "reason", in.reason,
		  strnlen(in.reason, sizeof(in.reason)));
	/* what made it read-only: pool.reopen's business */
	if (in.error)
		fprintf(q->out, ",\"error\":{\"errno\":\"%s\",\"code\":%d}",
			ctl_errno_name(in.error), -in.error);
	else
		fputs(",\"error\":null", q->out);
	putc('}', q->out);
	return 0;
}

static int op_pool_resize(struct req *q)
{
	uint64_t size = 0;
	int r;

	if ((r = get_u64(q, q->op, q->args, "size", true, &size)))
		return r;
	r = tv_pool_resize(q->pool, size);
	if (r < 0)
		return req_engine(q, r);
	fputs("{}", q->out);
	return 0;
}

int ctl_pool_reopen(struct tv_pool *pool, const struct ctl_hooks *hooks,
		    char *msg, size_t msglen)
{
	int r;

	/* An import is a client the claim does not disconnect: one whose
	 * writes straddled the failure would end with a flush that passes
	 * on the reopened pool.  Once it ran into the read-only pool it
	 * fails and ends; until then, no reopen. */
	if (atomic_load(&imports_running)) {
		snprintf(msg, msglen,
			 "an import is running through the "
			 "daemon: reopen once it has ended");
		return -EBUSY;
	}
	/* the probe first: nobody is disconnected for a reopen that the
	 * pool's state or its device refuses anyway */
	r = tv_pool_probe(pool);
	if (r == 0 && hooks && hooks->claim)
		r = hooks->claim(hooks->ctx, 0, true, msg, msglen);
	if (r < 0) {
		if (!msg[0])
			snprintf(msg, msglen, "%s", tv_last_error());
		return r;
	}
	r = tv_pool_reopen(pool);
	if (r < 0)
		snprintf(msg, msglen, "%s", tv_last_error());
	if (hooks && hooks->release)
		hooks->release(hooks->ctx, 0);
	return r;
}

static int op_pool_reopen(struct req *q)
{
	char msg[sizeof(q->msg)] = "";
	struct tv_pool_info in;
	int r = ctl_pool_reopen(q->pool, q->hooks, msg, sizeof(msg));

	if (r < 0)
		return req_err(q, r, "%s", msg[0] ? msg : strerror(-r));
	r = tv_pool_info(q->pool, &in);
	if (r < 0)
		return req_engine(q, r);
	fprintf(q->out, "{\"transaction\":%" PRIu64 "}", in.transaction);
	return 0;
}

void ctl_put_check_report(FILE *f, const struct tv_check_report *rep)
{
	fprintf(f,
		"{\"clean\":%s,\"nodes\":%" PRIu64 ",\"node_refs\":%" PRIu64
		",\"data_refs\":%" PRIu64 ",\"errors\":%" PRIu64
		",\"leaks\":%" PRIu64 ",\"missing\":%" PRIu64
		",\"counter_errors\":%" PRIu64 ",\"volumes\":%" PRIu64 "}",
		rep->clean ? "true" : "false", rep->nodes, rep->node_refs,
		rep->data_refs, rep->errors, rep->leaks, rep->missing,
		rep->counter_errors, rep->volumes);
}

static int op_pool_check(struct req *q)
{
	struct tv_check_report rep;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int r;

	if (!f)
		return req_err(q, -ENOMEM, "out of memory");
	r = tv_pool_check(q->pool, f, &rep);
	if (finish(f, &text, &len) < 0)
		return req_err(q, -ENOMEM, "out of memory");
	if (r < 0) {
		free(text);
		return req_engine(q, r);
	}
	fputs("{\"report\":", q->out);
	ctl_put_check_report(q->out, &rep);
	putc(',', q->out);
	if (len > CTL_CHECK_TEXT) {
		static const char more[] = "... (more messages cut short)\n";

		/* cut at a line end, so that what is left reads well */
		len = CTL_CHECK_TEXT - sizeof(more);
		while (len && text[len - 1] != '\n')
			len--;
		memcpy(text + len, more, sizeof(more) - 1);
		len += sizeof(more) - 1;
	}
	put_bytes(q->out, "text", text, len);
	putc('}', q->out);
	free(text);
	return 0;
}

static int op_vol_list(struct req *q)
{
	struct tv_vol_info *page;
	uint64_t cursor = 0, max = CTL_LIST_MAX;
	int r, n;

	if ((r = get_u64(q, q->op, q->args, "cursor", false, &cursor)) ||
	    (r = get_u64(q, q->op, q->args, "max", false, &max)))
		return r;
	if (!max || max > CTL_LIST_MAX)
		return req_err(q, -EINVAL, "%s: \"max\" must be 1 to %d", q->op,
			       CTL_LIST_MAX);
	page = calloc((size_t) max, sizeof(*page));
	if (!page)
		return req_err(q, -ENOMEM, "out of memory");
	n = tv_vol_list(q->pool, &cursor, page, (size_t) max);
	if (n < 0) {
		free(page);
		return req_engine(q, n);
	}
	fputs("{\"volumes\":[", q->out);
	for (int i = 0; i < n; i++) {
		if (i)
			putc(',', q->out);
		put_vol(q->out, &page[i]);
	}
	fprintf(q->out, "],\"cursor\":%" PRIu64 "}", cursor);
	free(page);
	return 0;
}

static int op_vol_info(struct req *q)
{
	struct tv_vol_info v;
	uint64_t id = 0;
	int r;

	if ((r = get_u64(q, q->op, q->args, "id", true, &id)))
		return r;
	r = tv_vol_info(q->pool, id, &v);
	if (r < 0)
		return req_engine(q, r);
	put_vol(q->out, &v);
	return 0;
}

static int op_vol_usage(struct req *q)
{
	uint64_t id = 0, mapped, exclusive;
	int r;

	if ((r = get_u64(q, q->op, q->args, "id", true, &id)))
		return r;
	r = tv_vol_usage(q->pool, id, &mapped, &exclusive);
	if (r < 0)
		return req_engine(q, r);
	fprintf(q->out, "{\"mapped\":%" PRIu64 ",\"exclusive\":%" PRIu64 "}",
		mapped, exclusive);
	return 0;
}

static int op_vol_resolve(struct req *q)
{
	const char *spec = NULL;
	uint64_t id = 0;
	int r;

	if ((r = get_bytes(q, q->op, q->args, "spec", true, &spec)))
		return r;
	r = tv_vol_resolve(q->pool, spec, &id);
	if (r < 0)
		return req_engine(q, r);
	fprintf(q->out, "{\"id\":%" PRIu64 "}", id);
	return 0;
}

static int op_vol_get_blob(struct req *q)
{
	uint8_t blob[TV_BLOB_MAX];
	uint64_t id = 0, len = 0;
	int r;

	if ((r = get_u64(q, q->op, q->args, "id", true, &id)) ||
	    (r = get_u64(q, q->op, q->args, "len", true, &len)))
		return r;
	if (len > TV_BLOB_MAX)
		return req_err(q, -EINVAL, "%s: \"len\" must be 0 to %d", q->op,
			       TV_BLOB_MAX);
	r = tv_vol_get_blob(q->pool, id, blob, (size_t) len);
	if (r < 0)
		return req_engine(q, r);
	fputs("{\"blob\":", q->out);
	json_put_hex(q->out, blob, (size_t) len);
	putc('}', q->out);
	return 0;
}

static int op_vol_find_blob(struct req *q)
{
	uint8_t prefix[TV_BLOB_MAX];
	uint64_t max = 64, *ids;
	size_t len = 0;
	int r, n;

	r = get_hex(q, q->op, q->args, "prefix", prefix, sizeof(prefix), &len);
	if (r > 0)
		return req_err(q, -EINVAL, "%s: needs \"prefix\"", q->op);
	if (r || (r = get_u64(q, q->op, q->args, "max", false, &max)))
		return r;
	if (max > CTL_FIND_MAX)
		return req_err(q, -EINVAL, "%s: \"max\" must be 0 to %d", q->op,
			       CTL_FIND_MAX);
	ids = calloc(max ? (size_t) max : 1, sizeof(*ids));
	if (!ids)
		return req_err(q, -ENOMEM, "out of memory");
	n = tv_vol_find_blob(q->pool, prefix, len, ids, (size_t) max);
	if (n < 0) {
		free(ids);
		return req_engine(q, n);
	}
	fprintf(q->out, "{\"count\":%d,\"ids\":[", n);
	for (int i = 0; i < n && (uint64_t) i < max; i++)
		fprintf(q->out, "%s%" PRIu64, i ? "," : "", ids[i]);
	fputs("]}", q->out);
	free(ids);
	return 0;
}

/* ---- batch ---- */

static const struct {
	const char *kind;
	enum tv_op_kind k;
	const char *const keys[8];
} batch_kinds[] = {
    {"create", TV_OP_CREATE, {"kind", "name", "name_hex", "size", "blob"}},
    {"snapshot",
     TV_OP_SNAPSHOT,
     {"kind", "id", "name", "name_hex", "read_only", "blob"}},
    {"delete", TV_OP_DELETE, {"kind", "id"}},
    {"rename", TV_OP_RENAME, {"kind", "id", "name", "name_hex"}},
    {"resize", TV_OP_RESIZE, {"kind", "id", "size"}},
    {"set_blob", TV_OP_SET_BLOB, {"kind", "id", "blob"}},
};

static int batch_op(struct req *q, size_t i, const struct json_value *o,
		    struct tv_op *op)
{
	const struct json_value *kind;
	char where[64];
	size_t k, len = 0;
	uint8_t *blob;
	bool ro = false;
	int r;

	snprintf(where, sizeof(where), "batch: ops[%zu]", i);
	if (o->type != JSON_OBJECT)
		return req_err(q, -EINVAL, "%s: must be an object, not %s",
			       where, json_type_name(o->type));
	kind = json_get(o, "kind");
	if (!kind || kind->type != JSON_STRING)
		return req_err(q, -EINVAL, "%s: needs \"kind\", a string",
			       where);
	for (k = 0; k < sizeof(batch_kinds) / sizeof(batch_kinds[0]); k++)
		if (!strcmp(batch_kinds[k].kind, kind->str.s))
			break;
	if (k == sizeof(batch_kinds) / sizeof(batch_kinds[0]))
		return req_err(q, -EINVAL,
			       "%s: unknown kind \"%.40s\" (create, snapshot, "
			       "delete, rename, resize or set_blob)",
			       where, kind->str.s);
	if ((r = check_keys(q, where, o, batch_kinds[k].keys)))
		return r;
	op->kind = batch_kinds[k].k;
	/* the fields each kind needs (its keys above), in this order: the
	 * first one missing or ill-typed is the error */
	r = 0;
	if (op->kind != TV_OP_CREATE)
		r = get_u64(q, where, o, "id", true, &op->id);
	if (!r && (op->kind == TV_OP_CREATE || op->kind == TV_OP_SNAPSHOT ||
		   op->kind == TV_OP_RENAME))
		r = get_bytes(q, where, o, "name", true, &op->name);
	if (!r && (op->kind == TV_OP_CREATE || op->kind == TV_OP_RESIZE))
		r = get_u64(q, where, o, "size", true, &op->size);
	if (!r && op->kind == TV_OP_SNAPSHOT) {
		r = get_bool(q, where, o, "read_only", &ro);
		op->flags = ro ? TV_VOL_READ_ONLY : 0;
	}
	if (r)
		return r;
	blob = req_alloc(q, TV_BLOB_MAX);
	if (!blob)
		return req_err(q, -ENOMEM, "out of memory");
	r = get_hex(q, where, o, "blob", blob, TV_BLOB_MAX, &len);
	if (r < 0)
		return r;
	if (r == 0) {
		op->blob = blob;
		op->blob_len = len;
	} else if (op->kind == TV_OP_SET_BLOB) {
		return req_err(q, -EINVAL, "%s: needs \"blob\"", where);
	}
	return 0;
}

/* Whether op takes its volume away from NBD clients: a delete, or a
 * resize that shrinks it. */
static bool batch_claims(struct req *q, const struct tv_op *op)
{
	struct tv_vol_info v;

	if (op->kind == TV_OP_DELETE)
		return true;
	return op->kind == TV_OP_RESIZE &&
	       tv_vol_info(q->pool, op->id, &v) == 0 && op->size < v.size;
}

static int op_batch(struct req *q)
{
	const struct json_value *arr = json_get(q->args, "ops");
	struct tv_op *ops = NULL;
	uint64_t *claimed = NULL;
	size_t n, nclaimed = 0, failed = 0;
	bool force = false;
	int r;

	if (!arr || arr->type != JSON_ARRAY)
		return req_err(q, -EINVAL, "batch: needs \"ops\", an array");
	if ((r = get_bool(q, q->op, q->args, "force", &force)))
		return r;
	n = arr->arr.n;
	ops = calloc(n ? n : 1, sizeof(*ops));
	claimed = calloc(n ? n : 1, sizeof(*claimed));
	if (!ops || !claimed) {
		r = req_err(q, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if ((r = batch_op(q, i, arr->arr.items[i], &ops[i])))
			goto out;
	/* Claim before the change: NBD clients of a volume that goes away
	 * (or shrinks) are refused, or with force disconnected, first. */
	for (size_t i = 0; q->hooks && q->hooks->claim && i < n; i++) {
		char msg[sizeof(q->msg)] = "";
		bool dup = false;

		if (!batch_claims(q, &ops[i]))
			continue;
		for (size_t k = 0; k < nclaimed && !dup; k++)
			dup = claimed[k] == ops[i].id;
		if (dup)
			continue;
		r = q->hooks->claim(q->hooks->ctx, ops[i].id, force, msg,
				    sizeof(msg));
		if (r < 0) {
			q->has_index = true;
			q->index = i;
			r = req_err(q, r, "%s", msg[0] ? msg : strerror(-r));
			goto out_release;
		}
		claimed[nclaimed++] = ops[i].id;
	}
	/* An empty batch changes nothing: no transaction at all. */
	if (n) {
		r = tv_batch(q->pool, ops, n, &failed);
		if (r < 0) {
			/* no op failed when the commit did */
			q->has_index = failed < n;
			q->index = failed;
			req_engine(q, r);
			goto out_release;
		}
	}
	fputs("{\"ids\":[", q->out);
	for (size_t i = 0; i < n; i++)
		fprintf(q->out, "%s%" PRIu64, i ? "," : "", ops[i].result_id);
	fputs("]}", q->out);
out_release:
	for (size_t k = 0; k < nclaimed; k++)
		if (q->hooks->release)
			q->hooks->release(q->hooks->ctx, claimed[k]);
out:
	free(ops);
	free(claimed);
	return r;
}

/* ---- import, export ---- */

static int op_copy(struct req *q, bool import)
{
	struct ctl_copy c = {
	    .cancel_fd = q->wait ? q->wait->stop_fd : -1,
	    .peer_fd = q->wait ? q->wait->peer_fd : -1,
	};
	bool stream = false;
	uint64_t id = 0;
	int r;

	if ((r = get_u64(q, q->op, q->args, "id", true, &id)) ||
	    (r = get_bytes(q, q->op, q->args, "pool", true, &c.pool)) ||
	    (r = get_bytes(q, q->op, q->args, "volume", true, &c.vol)) ||
	    (r = get_bytes(q, q->op, q->args, "file", true, &c.file)) ||
	    (!import && (r = get_bool(q, q->op, q->args, "stream", &stream))))
		return r;
	if (q->fd < 0)
		return req_err(q, -EINVAL,
			       "%s: needs the file's descriptor, passed with "
			       "the request (SCM_RIGHTS)",
			       q->op);
	if (import) {
		atomic_fetch_add(&imports_running, 1);
		r = ctl_import(q->pool, id, q->fd, &c);
		atomic_fetch_sub(&imports_running, 1);
	} else {
		r = ctl_export(q->pool, id, q->fd, stream, &c);
	}
	if (r < 0)
		return req_err(q, r, "%s", c.msg[0] ? c.msg : strerror(-r));
	fprintf(q->out, "{\"copied\":%" PRIu64 ",\"zero\":%" PRIu64 "}",
		c.copied, c.zero);
	return 0;
}

static int op_vol_import(struct req *q)
{
	return op_copy(q, true);
}

static int op_vol_export(struct req *q)
{
	return op_copy(q, false);
}

/* ---- test only: fault injection ---- */

void ctl_set_test_faults(struct io_dev *dev)
{
	test_fault_dev = dev;
}

/*
 * {fail_at, persistent?, error? ("EIO" or "ENOSPC"), ops? [names]}: reply
 * with the counters of the arming it replaces, then arm (fail_at 0
 * disarms).  io_fault_arm is thread-safe against I/O in flight.
 */
static int op_test_fault(struct req *q)
{
	static const struct {
		const char *name;
		unsigned int bit;
	} op_names[] = {
	    {"read", IO_OP_READ},
	    {"write", IO_OP_WRITE},
	    {"flush", IO_OP_FLUSH},
	    {"discard", IO_OP_DISCARD},
	    {"write_zeroes", IO_OP_WRITE_ZEROES},
	};
	struct io_fault_cfg cfg = {.error = -EIO, .kind = IO_FAULT_ERROR};
	const struct json_value *err = json_get(q->args, "error");
	const struct json_value *ops = json_get(q->args, "ops");
	int r;

	if ((r = get_u64(q, q->op, q->args, "fail_at", true, &cfg.fail_at)) ||
	    (r = get_bool(q, q->op, q->args, "persistent", &cfg.persistent)))
		return r;
	if (err && err->type == JSON_STRING && !strcmp(err->str.s, "ENOSPC"))
		cfg.error = -ENOSPC;
	else if (err && (err->type != JSON_STRING || strcmp(err->str.s, "EIO")))
		return req_err(q, -EINVAL,
			       "%s: \"error\" must be \"EIO\" or \"ENOSPC\"",
			       q->op);
	if (ops && ops->type != JSON_ARRAY)
		return req_err(q, -EINVAL, "%s: \"ops\" must be an array",
			       q->op);
	for (size_t i = 0; ops && i < ops->arr.n; i++) {
		const struct json_value *o = ops->arr.items[i];
		size_t k, nk = sizeof(op_names) / sizeof(op_names[0]);

		for (k = 0; o->type == JSON_STRING && k < nk; k++)
			if (!strcmp(o->str.s, op_names[k].name))
				break;
		if (o->type != JSON_STRING || k == nk)
			return req_err(q, -EINVAL,
				       "%s: \"ops\" holds read, write, flush, "
				       "discard or write_zeroes",
				       q->op);
		cfg.op_mask |= op_names[k].bit;
	}
	if (!cfg.op_mask)
		cfg.op_mask = IO_OP_ALL;
	fprintf(q->out, "{\"counted\":%" PRIu64 ",\"failed\":%" PRIu64 "}",
		io_fault_count(test_fault_dev),
		io_fault_failed(test_fault_dev));
	io_fault_arm(test_fault_dev, &cfg);
	return 0;
}

/* ---- dispatch ---- */

/* In the order hello lists them. */
static const struct ctl_op {
	const char *name;
	int (*fn)(struct req *q);
	const char *const args[12]; /* allowed; { NULL }: none */
	bool any_args;
} ctl_ops[] = {
    {"hello", op_hello, {NULL}, true},
    {"pool.info", op_pool_info, {NULL}, false},
    {"pool.resize", op_pool_resize, {"size"}, false},
    {"pool.check", op_pool_check, {NULL}, false},
    {"vol.list", op_vol_list, {"cursor", "max"}, false},
    {"vol.info", op_vol_info, {"id"}, false},
    {"vol.usage", op_vol_usage, {"id"}, false},
    {"vol.resolve", op_vol_resolve, {"spec", "spec_hex"}, false},
    {"vol.get_blob", op_vol_get_blob, {"id", "len"}, false},
    {"vol.find_blob", op_vol_find_blob, {"prefix", "max"}, false},
    {"batch", op_batch, {"ops", "force"}, false},
    {"vol.import",
     op_vol_import,
     {"id", "pool", "pool_hex", "volume", "volume_hex", "file", "file_hex"},
     false},
    {"vol.export",
     op_vol_export,
     {"id", "pool", "pool_hex", "volume", "volume_hex", "file", "file_hex",
      "stream"},
     false},
    {"pool.reopen", op_pool_reopen, {NULL}, false},
    {"test.fault",
     op_test_fault,
     {"fail_at", "persistent", "error", "ops"},
     false},
};

/* Whether this server answers op o: test.fault only in a daemon testing
 * faults. */
static bool op_known(const struct ctl_op *o)
{
	return o->fn != op_test_fault || test_fault_dev;
}

/* hello's "ops": every op run() answers, in the table's order. */
static void put_op_names(FILE *f)
{
	bool first = true;

	for (size_t i = 0; i < sizeof(ctl_ops) / sizeof(ctl_ops[0]); i++) {
		if (!op_known(&ctl_ops[i]))
			continue;
		fprintf(f, "%s\"%s\"", first ? "" : ",", ctl_ops[i].name);
		first = false;
	}
}

static const struct json_value empty_args = {.type = JSON_OBJECT};

/* Check the envelope and run the op; the result or the error in q. */
static int run(struct req *q, const struct json_value *doc, bool *has_id,
	       uint64_t *id)
{
	static const char *const top[] = {"v", "id", "op", "args", NULL};
	const struct json_value *v, *op, *args;
	const struct ctl_op *o = NULL;
	int r;

	if (doc->type != JSON_OBJECT)
		return req_err(q, -EINVAL, "request: must be an object, not %s",
			       json_type_name(doc->type));
	v = json_get(doc, "id");
	if (v && (v->type != JSON_NUMBER || !v->num.is_uint))
		return req_err(q, -EINVAL,
			       "request: \"id\" must be an integer "
			       "from 0 to 2^64-1");
	if (v) {
		*has_id = true;
		*id = v->num.u;
	}
	if ((r = check_keys(q, "request", doc, top)))
		return r;
	v = json_get(doc, "v");
	if (!v)
		return req_err(q, -EINVAL,
			       "request: needs \"v\", the protocol "
			       "version");
	if (v->type != JSON_NUMBER || !v->num.is_uint ||
	    v->num.u != CTL_PROTO_VERSION)
		return req_err(q, -EPROTONOSUPPORT,
			       "request: protocol version not supported (this "
			       "server speaks version %d)",
			       CTL_PROTO_VERSION);
	op = json_get(doc, "op");
	if (!op || op->type != JSON_STRING)
		return req_err(q, -EINVAL, "request: needs \"op\", a string");
	for (size_t i = 0; i < sizeof(ctl_ops) / sizeof(ctl_ops[0]); i++)
		if (!strcmp(ctl_ops[i].name, op->str.s))
			o = &ctl_ops[i];
	if (o && !op_known(o))
		o = NULL;
	if (!o)
		return req_err(q, -EOPNOTSUPP, "unknown op \"%.40s\"",
			       op->str.s);
	q->op = o->name;
	args = json_get(doc, "args");
	if (args && args->type != JSON_OBJECT)
		return req_err(q, -EINVAL,
			       "%s: \"args\" must be an object, "
			       "not %s",
			       o->name, json_type_name(args->type));
	q->args = args ? args : &empty_args;
	if (!o->any_args && (r = check_keys(q, o->name, q->args, o->args)))
		return r;
	return o->fn(q);
}

int ctl_handle(struct tv_pool *pool, const struct ctl_hooks *hooks,
	       const struct ctl_wait *wait, const char *line, size_t len,
	       int fd, char **reply, size_t *reply_len)
{
	struct req q = {.pool = pool, .hooks = hooks, .fd = fd, .wait = wait};
	struct json_value *doc = NULL;
	struct json_error jerr;
	char *res = NULL, *buf = NULL;
	size_t res_len = 0, blen = 0;
	bool has_id = false;
	uint64_t id = 0;
	FILE *f;
	int r;

	if (len > CTL_MAX_LINE)
		return ctl_error_reply(-EMSGSIZE,
				       "request too long (more than "
				       "1048576 bytes)",
				       reply, reply_len);
	q.out = open_memstream(&res, &res_len);
	if (!q.out)
		return -ENOMEM;
	r = json_parse(line, len, &ctl_limits, &doc, &jerr);
	if (r == -ENOMEM)
		req_err(&q, -ENOMEM, "out of memory");
	else if (r < 0)
		req_err(&q, -EBADMSG, "request: byte %zu: %s", jerr.offset,
			jerr.msg);
	else
		run(&q, doc, &has_id, &id);
	if (finish(q.out, &res, &res_len) < 0 && !q.err)
		req_err(&q, -ENOMEM, "out of memory");

	f = open_memstream(&buf, &blen);
	if (!f) {
		r = -ENOMEM;
		goto out;
	}
	fprintf(f, "{\"v\":%d,\"id\":", CTL_PROTO_VERSION);
	if (has_id)
		fprintf(f, "%" PRIu64, id);
	else
		fputs("null", f);
	putc(',', f);
	if (q.err) {
		put_error(f, q.err, q.msg, q.has_index ? &q.index : NULL);
	} else {
		fputs("\"result\":", f);
		fwrite(res, 1, res_len, f);
	}
	fputs("}\n", f);
	r = finish(f, &buf, &blen);
	if (r < 0)
		goto out;
	if (blen > CTL_MAX_LINE) {
		free(buf);
		buf = NULL;
		r = ctl_error_reply(-EMSGSIZE, "reply too long", &buf, &blen);
		if (r < 0)
			goto out;
	}
	*reply = buf;
	*reply_len = blen;
	buf = NULL;
out:
	free(buf);
	free(res);
	json_free(doc);
	for (size_t i = 0; i < q.nallocs; i++)
		free(q.allocs[i]);
	free(q.allocs);
	return r;
}
