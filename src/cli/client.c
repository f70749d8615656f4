/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * client.c - where the command's engine calls go: to the pool opened
 * here, or, when a daemon (thinvol serve) holds the pool, as requests on
 * its control socket (docs/control.md, src/server/ctl.c).
 *
 * Each cli_* call has the meaning, the results and the errors of the
 * engine call it stands for.  Through the daemon, the reply's error
 * message is the engine's tv_last_error() there; cli_last_error() returns
 * it, so that cli_fail prints the same line as offline, and the errno
 * gives the same exit status.
 *
 * One request is outstanding at a time: send a line, read a line.
 * Finding the daemon and opening the pool (cli_open) are client-open.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client-internal.h"
#include "io/io.h"
#include "server/ctl-copy.h"
#include "server/ctl.h"
#include "util/hex.h"
#include "util/json.h"

#define REMOTE_LIST_MAX 256   /* volumes per vol.list request */
#define REMOTE_FIND_MAX 32768 /* ids per vol.find_blob reply */

bool cli_remote;
char cli_remote_msg[CLI_REMOTE_MSG_MAX];

const char *cli_last_error(void)
{
	return cli_remote ? cli_remote_msg : tv_last_error();
}

int cli_fail(int err, const char *fmt, ...)
{
	const char *why = cli_last_error();
	va_list ap;

	fprintf(cli_err, "%s: ", CLI_PROG);
	va_start(ap, fmt);
	vfprintf(cli_err, fmt, ap);
	va_end(ap);
	fprintf(cli_err, ": %s\n", why && why[0] ? why : strerror(-err));
	return cli_exit(err);
}

int cli_set_msg(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cli_remote_msg, sizeof(cli_remote_msg), fmt, ap);
	va_end(ap);
	return err;
}

int cli_bad_reply(const char *what)
{
	return cli_set_msg(-EPROTO,
			   "control socket: malformed reply from the "
			   "daemon (%s)",
			   what);
}

/* ---- requests ---- */

int cli_rq_start(struct rq *q, struct cli_pool *p, const char *op)
{
	q->buf = NULL;
	q->len = 0;
	q->first = true;
	q->f = open_memstream(&q->buf, &q->len);
	if (!q->f)
		return cli_set_msg(-ENOMEM, "out of memory");
	fprintf(q->f, "{\"v\":%d,\"id\":%" PRIu64 ",\"op\":\"%s\",\"args\":{",
		CTL_PROTO_VERSION, ++p->next_id, op);
	return 0;
}

static void rq_key(struct rq *q, const char *key)
{
	fprintf(q->f, "%s\"%s\":", q->first ? "" : ",", key);
	q->first = false;
}

static void rq_u64(struct rq *q, const char *key, uint64_t v)
{
	rq_key(q, key);
	fprintf(q->f, "%" PRIu64, v);
}

static void rq_bool(struct rq *q, const char *key, bool v)
{
	rq_key(q, key);
	fputs(v ? "true" : "false", q->f);
}

static void rq_hex(struct rq *q, const char *key, const void *b, size_t len)
{
	rq_key(q, key);
	json_put_hex(q->f, b, len);
}

/* A byte string: "key" when it is valid UTF-8, else "key_hex", so that
 * the daemon gets exactly these bytes. */
static void rq_bytes(struct rq *q, const char *key, const char *s)
{
	size_t len = strlen(s);

	if (json_utf8_valid(s, len)) {
		rq_key(q, key);
		json_put_string(q->f, s, len);
	} else {
		char hkey[48];

		snprintf(hkey, sizeof(hkey), "%s_hex", key);
		rq_hex(q, hkey, s, len);
	}
}

static int send_line(struct cli_pool *p, const char *buf, size_t len,
		     int pass_fd)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;

	while (len) {
		struct iovec iov = {.iov_base = (void *) buf, .iov_len = len};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (pass_fd >= 0) {
			/* the descriptor rides with the first byte */
			struct cmsghdr *cm;

			memset(&cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf.b;
			mh.msg_controllen = sizeof(cbuf.b);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
		}
		n = sendmsg(p->fd, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return cli_set_msg(-EIO, "control socket: %s",
					   n < 0 ? strerror(errno)
						 : "no progress");
		pass_fd = -1;
		buf += n;
		len -= (size_t) n;
	}
	return 0;
}

/* Read one reply line into p->rbuf[0, *len) (newline excluded). */
static int recv_line(struct cli_pool *p, size_t *len)
{
	size_t scanned = 0;

	for (;;) {
		char *nl = p->rlen > scanned ? memchr(p->rbuf + scanned, '\n',
						      p->rlen - scanned)
					     : NULL;
		ssize_t n;

		if (nl) {
			*len = (size_t) (nl - p->rbuf);
			return 0;
		}
		scanned = p->rlen;
		if (p->rlen > CTL_MAX_LINE)
			return cli_bad_reply("too long");
		if (p->rcap - p->rlen < 4096) {
			size_t nc = p->rcap ? 2 * p->rcap : 65536;
			char *nb = realloc(p->rbuf, nc);

			if (!nb)
				return cli_set_msg(-ENOMEM, "out of memory");
			p->rbuf = nb;
			p->rcap = nc;
		}
		n = recv(p->fd, p->rbuf + p->rlen, p->rcap - p->rlen, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cli_set_msg(-EIO, "control socket: %s",
					   strerror(errno));
		if (n == 0)
			return cli_set_msg(-EIO, "control socket: the daemon "
						 "closed the connection");
		p->rlen += (size_t) n;
	}
}

/* A byte string of a reply: key_hex if there, else key; NUL-terminated
 * into out[0, max]. */
static int r_bytes(const struct json_value *o, const char *key, char *out,
		   size_t max)
{
	const struct json_value *v, *h;
	char hkey[48];
	size_t len = 0;

	snprintf(hkey, sizeof(hkey), "%s_hex", key);
	v = json_get(o, key);
	h = json_get(o, hkey);
	if (h && h->type == JSON_STRING && h->str.len % 2 == 0 &&
	    h->str.len / 2 <= max) {
		if (hex_decode(h->str.s, h->str.len, (uint8_t *) out, max,
			       &len) < 0)
			return cli_bad_reply(key);
		out[len] = 0;
		return 0;
	}
	if (!v || v->type != JSON_STRING || v->str.len > max)
		return cli_bad_reply(key);
	memcpy(out, v->str.s, v->str.len + 1);
	return 0;
}

int cli_r_u64(const struct json_value *o, const char *key, uint64_t *out)
{
	const struct json_value *v = json_get(o, key);

	if (!v || v->type != JSON_NUMBER || !v->num.is_uint)
		return cli_bad_reply(key);
	*out = v->num.u;
	return 0;
}

/* Exactly len bytes of hex. */
static int r_hex(const struct json_value *o, const char *key, void *out,
		 size_t len)
{
	const struct json_value *v = json_get(o, key);
	size_t n;

	if (!v || v->type != JSON_STRING || v->str.len != 2 * len ||
	    hex_decode(v->str.s, v->str.len, out, len, &n) < 0)
		return cli_bad_reply(key);
	return 0;
}

/* client-internal.h */
int cli_call(struct cli_pool *p, struct rq *q, int fd, struct json_value **doc,
	     const struct json_value **res, size_t *index)
{
	static const struct json_limits lim = {
	    .max_depth = 8,
	    .max_values = 1u << 21,
	    .max_members = 64,
	    .max_string = CTL_MAX_LINE,
	};
	const struct json_value *v, *e;
	struct json_value *d = NULL;
	struct json_error jerr;
	uint64_t id = 0, code = 0;
	bool bad;
	size_t len = 0;
	int r;

	fputs("}}\n", q->f);
	bad = ferror(q->f);
	if (fclose(q->f) != 0 || bad) {
		free(q->buf);
		return cli_set_msg(-ENOMEM, "out of memory");
	}
	if (q->len > CTL_MAX_LINE + 1) {
		free(q->buf);
		return cli_set_msg(-E2BIG,
				   "the request is larger than the control "
				   "protocol allows (%u bytes)",
				   CTL_MAX_LINE);
	}
	r = send_line(p, q->buf, q->len, fd);
	free(q->buf);
	if (r < 0)
		return r;
	r = recv_line(p, &len);
	if (r < 0)
		return r;
	r = json_parse(p->rbuf, len, &lim, &d, &jerr);
	memmove(p->rbuf, p->rbuf + len + 1, p->rlen - len - 1);
	p->rlen -= len + 1;
	if (r < 0)
		return r == -ENOMEM ? cli_set_msg(r, "out of memory")
				    : cli_bad_reply(jerr.msg);
	r = -EPROTO;
	if (d->type != JSON_OBJECT || cli_r_u64(d, "v", &id) ||
	    id != CTL_PROTO_VERSION) {
		cli_bad_reply("version");
		goto out;
	}
	v = json_get(d, "id");
	if (v && v->type == JSON_NULL) {
		/* the daemon could not read the request */
	} else if (cli_r_u64(d, "id", &id) || id != p->next_id) {
		cli_bad_reply("id");
		goto out;
	}
	e = json_get(d, "error");
	if (e) {
		if (e->type != JSON_OBJECT || cli_r_u64(e, "code", &code) ||
		    !code || code > 4095 ||
		    r_bytes(e, "message", cli_remote_msg,
			    sizeof(cli_remote_msg) - 1)) {
			cli_bad_reply("error");
			goto out;
		}
		v = json_get(e, "index");
		if (index && v && v->type == JSON_NUMBER && v->num.is_uint)
			*index = (size_t) v->num.u;
		r = -(int) code;
		goto out;
	}
	*res = json_get(d, "result");
	if (!*res) {
		cli_bad_reply("no result");
		goto out;
	}
	*doc = d;
	return 0;
out:
	json_free(d);
	return r;
}

/* ---- pools ---- */

static int r_state(const struct json_value *o, enum tv_pool_state *out)
{
	const struct json_value *v = json_get(o, "state");

	if (!v || v->type != JSON_STRING)
		return cli_bad_reply("state");
	for (int s = TV_POOL_RW; s <= TV_POOL_NEEDS_CHECK; s++) {
		if (!strcmp(v->str.s, tv_pool_state_name(s))) {
			*out = (enum tv_pool_state) s;
			return 0;
		}
	}
	return cli_bad_reply("state");
}

/* TV_POOL_FS_* of a pool opened here (a daemon's pool: none). */
static uint32_t local_fs_flags(const struct cli_pool *p)
{
	return p->local ? tv_pool_fs_flags(p->local) : 0;
}

bool cli_pool_fs_no_journal(const struct cli_pool *p)
{
	return local_fs_flags(p) & TV_POOL_FS_NO_JOURNAL;
}

bool cli_pool_fs_cow(const struct cli_pool *p)
{
	return local_fs_flags(p) & TV_POOL_FS_COW;
}

int cli_pool_info(struct cli_pool *p, struct tv_pool_info *out)
{
	const struct json_value *res;
	struct json_value *doc;
	struct tv_pool_info in = {0};
	uint64_t fv = 0, bs = 0, blob = 0;
	struct rq q;
	int r;

	if (p->local)
		return tv_pool_info(p->local, out);
	if ((r = cli_rq_start(&q, p, "pool.info")) ||
	    (r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	if ((r = cli_r_u64(res, "format_version", &fv)) ||
	    (r = r_hex(res, "uuid", in.uuid, sizeof(in.uuid))) ||
	    (r = cli_r_u64(res, "block_size", &bs)) ||
	    (r = cli_r_u64(res, "blob_size", &blob)) ||
	    (r = cli_r_u64(res, "size", &in.size)) ||
	    (r = cli_r_u64(res, "used", &in.used)) ||
	    (r = cli_r_u64(res, "free", &in.free)) ||
	    (r = cli_r_u64(res, "metadata", &in.metadata)) ||
	    (r = cli_r_u64(res, "reclaimable", &in.reclaimable)) ||
	    (r = cli_r_u64(res, "nr_volumes", &in.nr_volumes)) ||
	    (r = cli_r_u64(res, "next_id", &in.next_id)) ||
	    (r = cli_r_u64(res, "transaction", &in.transaction)) ||
	    (r = r_state(res, &in.state)) ||
	    (r = r_bytes(res, "reason", in.reason, sizeof(in.reason) - 1)))
		goto out;
	{
		/* what made it read-only (absent before pool.reopen) */
		const struct json_value *e = json_get(res, "error");
		uint64_t code = 0;

		if (e && e->type != JSON_NULL &&
		    (e->type != JSON_OBJECT || cli_r_u64(e, "code", &code) ||
		     !code || code > 4095)) {
			r = cli_bad_reply("error");
			goto out;
		}
		in.error = -(int) code;
	}
	/* hostile even from the daemon: sizes we divide by and index with */
	if (fv > UINT32_MAX || !bs || bs > UINT32_MAX || blob > TV_BLOB_MAX) {
		r = cli_bad_reply("sizes");
		goto out;
	}
	in.format_version = (uint32_t) fv;
	in.block_size = (uint32_t) bs;
	in.blob_size = (uint32_t) blob;
	*out = in;
out:
	json_free(doc);
	return r;
}

/* A request whose result we do not look at. */
static int call_plain(struct cli_pool *p, struct rq *q, int fd, size_t *index)
{
	const struct json_value *res;
	struct json_value *doc;
	int r = cli_call(p, q, fd, &doc, &res, index);

	if (!r)
		json_free(doc);
	return r;
}

int cli_pool_resize(struct cli_pool *p, uint64_t size)
{
	struct rq q;
	int r;

	if (p->local)
		return tv_pool_resize(p->local, size);
	if ((r = cli_rq_start(&q, p, "pool.resize")))
		return r;
	rq_u64(&q, "size", size);
	return call_plain(p, &q, -1, NULL);
}

int cli_pool_reopen(struct cli_pool *p, uint64_t *transaction)
{
	const struct json_value *res;
	struct json_value *doc;
	struct tv_pool_info in;
	struct rq q;
	int r;

	if (p->local) {
		r = tv_pool_reopen(p->local);
		if (r == 0)
			r = tv_pool_info(p->local, &in);
		if (r == 0)
			*transaction = in.transaction;
		return r;
	}
	if ((r = cli_rq_start(&q, p, "pool.reopen")) ||
	    (r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	r = cli_r_u64(res, "transaction", transaction);
	json_free(doc);
	return r;
}

int cli_pool_check(struct cli_pool *p, FILE *out, struct tv_check_report *rep)
{
	const struct json_value *res, *rp, *clean;
	struct json_value *doc;
	struct tv_check_report c = {0};
	char *text;
	struct rq q;
	int r;

	if (p->local)
		return tv_pool_check(p->local, out, rep);
	if ((r = cli_rq_start(&q, p, "pool.check")) ||
	    (r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	rp = json_get(res, "report");
	clean = rp ? json_get(rp, "clean") : NULL;
	if (!clean || clean->type != JSON_BOOL) {
		r = cli_bad_reply("report");
		goto out;
	}
	c.clean = clean->b;
	if ((r = cli_r_u64(rp, "nodes", &c.nodes)) ||
	    (r = cli_r_u64(rp, "node_refs", &c.node_refs)) ||
	    (r = cli_r_u64(rp, "data_refs", &c.data_refs)) ||
	    (r = cli_r_u64(rp, "errors", &c.errors)) ||
	    (r = cli_r_u64(rp, "leaks", &c.leaks)) ||
	    (r = cli_r_u64(rp, "missing", &c.missing)) ||
	    (r = cli_r_u64(rp, "counter_errors", &c.counter_errors)) ||
	    (r = cli_r_u64(rp, "volumes", &c.volumes)))
		goto out;
	text = malloc(CTL_MAX_LINE + 1);
	if (!text) {
		r = cli_set_msg(-ENOMEM, "out of memory");
		goto out;
	}
	r = r_bytes(res, "text", text, CTL_MAX_LINE);
	if (!r && out)
		fputs(text, out);
	free(text);
	if (!r)
		*rep = c;
out:
	json_free(doc);
	return r;
}

/* ---- volumes ---- */

static int r_vol(const struct json_value *o, struct tv_vol_info *out)
{
	struct tv_vol_info v = {0};
	uint64_t flags = 0;
	int r;

	if (o->type != JSON_OBJECT)
		return cli_bad_reply("volume");
	if ((r = cli_r_u64(o, "id", &v.id)) ||
	    (r = r_hex(o, "uuid", v.uuid, sizeof(v.uuid))) ||
	    (r = r_bytes(o, "name", v.name, TV_NAME_MAX)) ||
	    (r = cli_r_u64(o, "size", &v.size)) ||
	    (r = cli_r_u64(o, "flags", &flags)) ||
	    (r = cli_r_u64(o, "parent", &v.parent)) ||
	    (r = cli_r_u64(o, "ctime_ns", &v.ctime_ns)) ||
	    (r = cli_r_u64(o, "mapped", &v.mapped)))
		return r;
	if (flags > UINT32_MAX)
		return cli_bad_reply("flags");
	v.flags = (uint32_t) flags;
	*out = v;
	return 0;
}

int cli_vol_list(struct cli_pool *p, uint64_t *cursor, struct tv_vol_info *out,
		 size_t max)
{
	const struct json_value *res, *vols;
	struct json_value *doc;
	uint64_t next = 0;
	struct rq q;
	int r;

	if (p->local)
		return tv_vol_list(p->local, cursor, out, max);
	if ((r = cli_rq_start(&q, p, "vol.list")))
		return r;
	rq_u64(&q, "cursor", *cursor);
	rq_u64(&q, "max", max < REMOTE_LIST_MAX ? max : REMOTE_LIST_MAX);
	if ((r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	vols = json_get(res, "volumes");
	if (!vols || vols->type != JSON_ARRAY || vols->arr.n > max ||
	    vols->arr.n > REMOTE_LIST_MAX) {
		r = cli_bad_reply("volumes");
		goto out;
	}
	if ((r = cli_r_u64(res, "cursor", &next)))
		goto out;
	for (size_t i = 0; i < vols->arr.n; i++)
		if ((r = r_vol(vols->arr.items[i], &out[i])))
			goto out;
	*cursor = next;
	r = (int) vols->arr.n;
out:
	json_free(doc);
	return r;
}

/* A request whose one argument is a volume's id. */
static int call_id(struct cli_pool *p, const char *op, uint64_t id,
		   struct json_value **doc, const struct json_value **res)
{
	struct rq q;
	int r;

	if ((r = cli_rq_start(&q, p, op)))
		return r;
	rq_u64(&q, "id", id);
	return cli_call(p, &q, -1, doc, res, NULL);
}

int cli_vol_info(struct cli_pool *p, uint64_t id, struct tv_vol_info *out)
{
	const struct json_value *res;
	struct json_value *doc;
	int r;

	if (p->local)
		return tv_vol_info(p->local, id, out);
	if ((r = call_id(p, "vol.info", id, &doc, &res)))
		return r;
	r = r_vol(res, out);
	json_free(doc);
	return r;
}

int cli_vol_usage(struct cli_pool *p, uint64_t id, uint64_t *mapped,
		  uint64_t *exclusive)
{
	const struct json_value *res;
	struct json_value *doc;
	uint64_t m = 0, e = 0;
	int r;

	if (p->local)
		return tv_vol_usage(p->local, id, mapped, exclusive);
	if ((r = call_id(p, "vol.usage", id, &doc, &res)))
		return r;
	if (!(r = cli_r_u64(res, "mapped", &m)) &&
	    !(r = cli_r_u64(res, "exclusive", &e))) {
		*mapped = m;
		*exclusive = e;
	}
	json_free(doc);
	return r;
}

int cli_vol_resolve(struct cli_pool *p, const char *spec, uint64_t *id)
{
	const struct json_value *res;
	struct json_value *doc;
	struct rq q;
	int r;

	if (p->local)
		return tv_vol_resolve(p->local, spec, id);
	if ((r = cli_rq_start(&q, p, "vol.resolve")))
		return r;
	rq_bytes(&q, "spec", spec);
	if ((r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	r = cli_r_u64(res, "id", id);
	json_free(doc);
	return r;
}

int cli_vol_get_blob(struct cli_pool *p, uint64_t id, void *blob, size_t len)
{
	const struct json_value *res;
	struct json_value *doc;
	struct rq q;
	int r;

	if (p->local)
		return tv_vol_get_blob(p->local, id, blob, len);
	if ((r = cli_rq_start(&q, p, "vol.get_blob")))
		return r;
	rq_u64(&q, "id", id);
	rq_u64(&q, "len", len);
	if ((r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	r = r_hex(res, "blob", blob, len);
	json_free(doc);
	return r;
}

int cli_vol_find_blob(struct cli_pool *p, const void *prefix, size_t len,
		      uint64_t *ids, size_t max)
{
	const struct json_value *res, *arr;
	struct json_value *doc;
	size_t ask = max < REMOTE_FIND_MAX ? max : REMOTE_FIND_MAX;
	uint64_t count = 0;
	struct rq q;
	int r;

	if (p->local)
		return tv_vol_find_blob(p->local, prefix, len, ids, max);
	if ((r = cli_rq_start(&q, p, "vol.find_blob")))
		return r;
	rq_hex(&q, "prefix", prefix, len);
	rq_u64(&q, "max", ask);
	if ((r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	arr = json_get(res, "ids");
	if ((r = cli_r_u64(res, "count", &count)))
		goto out;
	if (count > INT32_MAX || !arr || arr->type != JSON_ARRAY ||
	    arr->arr.n != (count < ask ? count : ask)) {
		r = cli_bad_reply("ids");
		goto out;
	}
	if (count > ask && max > ask) {
		r = cli_set_msg(-E2BIG,
				"more than %d volumes match: too many for "
				"the control protocol",
				REMOTE_FIND_MAX);
		goto out;
	}
	for (size_t i = 0; i < arr->arr.n; i++) {
		const struct json_value *v = arr->arr.items[i];

		if (v->type != JSON_NUMBER || !v->num.is_uint) {
			r = cli_bad_reply("ids");
			goto out;
		}
		ids[i] = v->num.u;
	}
	r = (int) count;
out:
	json_free(doc);
	return r;
}

/* ---- metadata operations ---- */

static const char *kind_name(enum tv_op_kind k)
{
	switch (k) {
	case TV_OP_CREATE:
		return "create";
	case TV_OP_SNAPSHOT:
		return "snapshot";
	case TV_OP_DELETE:
		return "delete";
	case TV_OP_RENAME:
		return "rename";
	case TV_OP_RESIZE:
		return "resize";
	case TV_OP_SET_BLOB:
		return "set_blob";
	}
	return "?";
}

static int remote_batch(struct cli_pool *p, struct tv_op *ops, size_t n,
			size_t *failed, bool force)
{
	const struct json_value *res, *arr;
	struct json_value *doc;
	size_t index = SIZE_MAX; /* none: the batch's commit failed */
	struct rq q;
	int r;

	if ((r = cli_rq_start(&q, p, "batch")))
		return r;
	rq_bool(&q, "force", force);
	rq_key(&q, "ops");
	putc('[', q.f);
	for (size_t i = 0; i < n; i++) {
		struct rq o = {.f = q.f, .first = true};

		fputs(i ? ",{" : "{", q.f);
		rq_key(&o, "kind");
		fprintf(q.f, "\"%s\"", kind_name(ops[i].kind));
		if (ops[i].kind != TV_OP_CREATE)
			rq_u64(&o, "id", ops[i].id);
		if (ops[i].name)
			rq_bytes(&o, "name", ops[i].name);
		if (ops[i].kind == TV_OP_CREATE || ops[i].kind == TV_OP_RESIZE)
			rq_u64(&o, "size", ops[i].size);
		if (ops[i].kind == TV_OP_SNAPSHOT)
			rq_bool(&o, "read_only",
				ops[i].flags & TV_VOL_READ_ONLY);
		if (ops[i].blob)
			rq_hex(&o, "blob", ops[i].blob, ops[i].blob_len);
		putc('}', q.f);
	}
	putc(']', q.f);
	r = cli_call(p, &q, -1, &doc, &res, &index);
	if (r < 0) {
		if (failed)
			*failed = index;
		return r;
	}
	arr = json_get(res, "ids");
	if (!arr || arr->type != JSON_ARRAY || arr->arr.n != n) {
		r = cli_bad_reply("ids");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct json_value *v = arr->arr.items[i];

		if (v->type != JSON_NUMBER || !v->num.is_uint) {
			r = cli_bad_reply("ids");
			goto out;
		}
		ops[i].result_id = v->num.u;
	}
out:
	json_free(doc);
	return r;
}

int cli_batch(struct cli_pool *p, struct tv_op *ops, size_t n, size_t *failed,
	      bool force)
{
	if (p->local)
		return tv_batch(p->local, ops, n, failed);
	return remote_batch(p, ops, n, failed, force);
}

int cli_vol_create(struct cli_pool *p, const char *name, uint64_t size,
		   const void *blob, size_t blob_len, uint64_t *id)
{
	struct tv_op op = {.kind = TV_OP_CREATE,
			   .name = name,
			   .size = size,
			   .blob = blob,
			   .blob_len = blob_len};
	int r;

	if (p->local)
		return tv_vol_create(p->local, name, size, blob, blob_len, id);
	r = remote_batch(p, &op, 1, NULL, false);
	if (!r)
		*id = op.result_id;
	return r;
}

int cli_vol_rename(struct cli_pool *p, uint64_t id, const char *name)
{
	struct tv_op op = {.kind = TV_OP_RENAME, .id = id, .name = name};

	if (p->local)
		return tv_vol_rename(p->local, id, name);
	return remote_batch(p, &op, 1, NULL, false);
}

int cli_vol_resize(struct cli_pool *p, uint64_t id, uint64_t size, bool force)
{
	struct tv_op op = {.kind = TV_OP_RESIZE, .id = id, .size = size};

	if (p->local)
		return tv_vol_resize(p->local, id, size);
	return remote_batch(p, &op, 1, NULL, force);
}

int cli_vol_set_blob(struct cli_pool *p, uint64_t id, const void *blob,
		     size_t len)
{
	struct tv_op op = {
	    .kind = TV_OP_SET_BLOB, .id = id, .blob = blob, .blob_len = len};

	if (p->local)
		return tv_vol_set_blob(p->local, id, blob, len);
	return remote_batch(p, &op, 1, NULL, false);
}

/* ---- import, export ---- */

static int remote_copy(struct cli_pool *p, const char *op, uint64_t id, int fd,
		       const bool *stream, struct ctl_copy *c)
{
	const struct json_value *res;
	struct json_value *doc;
	struct rq q;
	int r;

	if ((r = cli_rq_start(&q, p, op)))
		goto out_msg;
	rq_u64(&q, "id", id);
	rq_bytes(&q, "pool", c->pool);
	rq_bytes(&q, "volume", c->vol);
	rq_bytes(&q, "file", c->file);
	if (stream)
		rq_bool(&q, "stream", *stream);
	r = cli_call(p, &q, fd, &doc, &res, NULL);
	if (r < 0)
		goto out_msg;
	if (!(r = cli_r_u64(res, "copied", &c->copied)))
		r = cli_r_u64(res, "zero", &c->zero);
	json_free(doc);
	if (!r)
		return 0;
out_msg:
	snprintf(c->msg, sizeof(c->msg), "%.*s", (int) sizeof(c->msg) - 1,
		 cli_remote_msg);
	return r;
}

int cli_import(struct cli_pool *p, uint64_t id, int fd, struct ctl_copy *c)
{
	if (p->local)
		return ctl_import(p->local, id, fd, c);
	return remote_copy(p, "vol.import", id, fd, NULL, c);
}

int cli_export(struct cli_pool *p, uint64_t id, int fd, bool stream,
	       struct ctl_copy *c)
{
	if (p->local)
		return ctl_export(p->local, id, fd, stream, c);
	return remote_copy(p, "vol.export", id, fd, &stream, c);
}
