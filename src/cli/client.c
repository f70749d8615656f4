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
 */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "io/io.h"
#include "server/ctl-copy.h"
#include "server/ctl.h"
#include "thin/thin-internal.h"
#include "util/hex.h"
#include "util/json.h"

#define REMOTE_LIST_MAX 256   /* volumes per vol.list request */
#define REMOTE_FIND_MAX 32768 /* ids per vol.find_blob reply */

struct cli_pool {
	struct tv_pool *local; /* or NULL: remote */
	int fd;		       /* remote: the control connection */
	uint64_t next_id;      /* of the next request */
	char *rbuf;	       /* bytes of replies read ahead */
	size_t rlen, rcap;
};

/* The process works on one pool: remote or not is process-wide. */
static bool remote;
static char remote_msg[2048];

const char *cli_last_error(void)
{
	return remote ? remote_msg : tv_last_error();
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


static int set_msg(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int set_msg(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(remote_msg, sizeof(remote_msg), fmt, ap);
	va_end(ap);
	return err;
}

static int bad_reply(const char *what)
{
	return set_msg(-EPROTO,
		       "control socket: malformed reply from the "
		       "daemon (%s)",
		       what);
}

/* ---- requests ---- */

struct rq {
	FILE *f;
	char *buf;
	size_t len;
	bool first; /* no argument written yet */
};

static int rq_start(struct rq *q, struct cli_pool *p, const char *op)
{
	q->buf = NULL;
	q->len = 0;
	q->first = true;
	q->f = open_memstream(&q->buf, &q->len);
	if (!q->f)
		return set_msg(-ENOMEM, "out of memory");
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
			return set_msg(-EIO, "control socket: %s",
				       n < 0 ? strerror(errno) : "no progress");
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
			return bad_reply("too long");
		if (p->rcap - p->rlen < 4096) {
			size_t nc = p->rcap ? 2 * p->rcap : 65536;
			char *nb = realloc(p->rbuf, nc);

			if (!nb)
				return set_msg(-ENOMEM, "out of memory");
			p->rbuf = nb;
			p->rcap = nc;
		}
		n = recv(p->fd, p->rbuf + p->rlen, p->rcap - p->rlen, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return set_msg(-EIO, "control socket: %s",
				       strerror(errno));
		if (n == 0)
			return set_msg(-EIO, "control socket: the daemon "
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
			return bad_reply(key);
		out[len] = 0;
		return 0;
	}
	if (!v || v->type != JSON_STRING || v->str.len > max)
		return bad_reply(key);
	memcpy(out, v->str.s, v->str.len + 1);
	return 0;
}

static int r_u64(const struct json_value *o, const char *key, uint64_t *out)
{
	const struct json_value *v = json_get(o, key);

	if (!v || v->type != JSON_NUMBER || !v->num.is_uint)
		return bad_reply(key);
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
		return bad_reply(key);
	return 0;
}

/*
 * Send the request in q (with fd passed, if >= 0) and read its reply.
 * On success *doc is the reply (json_free) and *res its result.  On an
 * error reply returns its -errno, with cli_last_error() its message and
 * *index (if not NULL) the failed op of a batch.
 */
static int call(struct cli_pool *p, struct rq *q, int fd,
		struct json_value **doc, const struct json_value **res,
		size_t *index)
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
		return set_msg(-ENOMEM, "out of memory");
	}
	if (q->len > CTL_MAX_LINE + 1) {
		free(q->buf);
		return set_msg(-E2BIG,
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
		return r == -ENOMEM ? set_msg(r, "out of memory")
				    : bad_reply(jerr.msg);
	r = -EPROTO;
	if (d->type != JSON_OBJECT || r_u64(d, "v", &id) ||
	    id != CTL_PROTO_VERSION) {
		bad_reply("version");
		goto out;
	}
	v = json_get(d, "id");
	if (v && v->type == JSON_NULL) {
		/* the daemon could not read the request */
	} else if (r_u64(d, "id", &id) || id != p->next_id) {
		bad_reply("id");
		goto out;
	}
	e = json_get(d, "error");
	if (e) {
		if (e->type != JSON_OBJECT || r_u64(e, "code", &code) ||
		    !code || code > 4095 ||
		    r_bytes(e, "message", remote_msg, sizeof(remote_msg) - 1)) {
			bad_reply("error");
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
		bad_reply("no result");
		goto out;
	}
	*doc = d;
	return 0;
out:
	json_free(d);
	return r;
}

/* ---- finding the daemon ---- */

/*
 * Rules (docs/cli.md, "The daemon's sockets"):
 *
 *  1. A pool's control socket is where ctl_socket_path says: beside the
 *     pool file's real path, or named after a block device's number (or
 *     after the file's device and inode when its real path is too long
 *     for a socket beside it), so that every path to a pool (symlinks,
 *     relative paths, /dev/disk/by-id links) gives the same socket and no
 *     two pools share one.
 *  2. Nothing is sent on a socket before it is trusted: it must be a
 *     socket (not a symlink or anything else) owned by root, by the
 *     pool's owner or by us, and the process listening on it
 *     (SO_PEERCRED) must run as one of them.  Anything else at the
 *     socket's path is refused with a message that names it and its
 *     owner; the command does not go on offline as if nothing were there.
 *  3. The daemon's hello must name this very pool: the same file (device
 *     and inode) or block device (number and disk sequence).  A daemon
 *     that serves another one (the pool file was replaced by a copy, the
 *     socket outlived its device) is not used: the command opens the pool
 *     itself, under its lock, as if no daemon were there.
 *  4. A pool whose lock a daemon holds that rule 1 does not find (reached
 *     through a hard link, or renamed since the daemon started) is found
 *     through its lock: the holder in /proc/locks, that process's
 *     listening control socket in /proc/net/unix.  That socket passes
 *     rules 2 and 3, and SO_PEERCRED must name the holder.
 */

/* "alice (uid 1000)" */
static void user_name(uid_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pwbuf[1024];

	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res)
		snprintf(buf, len, "%s (uid %u)", res->pw_name,
			 (unsigned int) uid);
	else
		snprintf(buf, len, "uid %u", (unsigned int) uid);
}

/* Rule 2: root, the pool's owner, or ourselves. */
static bool trusted(uid_t uid, const struct stat *pool)
{
	return uid == 0 || uid == pool->st_uid || uid == geteuid();
}

/* "WHAT SOCK IS uid, not by root or by the pool's owner ...": -EPERM */
static int untrusted(const char *what, const char *sock, const char *is,
		     uid_t uid, const struct stat *pool)
{
	char who[128], owner[128];

	user_name(uid, who, sizeof(who));
	user_name(pool->st_uid, owner, sizeof(owner));
	return set_msg(-EPERM,
		       "%s %s %s %s, not root or the pool's owner %s: "
		       "refusing to use it (remove it if no thinvol daemon of "
		       "this pool listens there)",
		       what, sock, is, who, owner);
}

/* Rule 3: the "pool" of a hello names the pool at path. */
static int same_pool(const struct json_value *res, const char *path,
		     const char *sock)
{
	const struct json_value *pl = json_get(res, "pool"), *t, *v;
	struct io_ident want, got = {0};
	unsigned int ma, mi;
	char extra;

	if (!pl || pl->type != JSON_OBJECT ||
	    !(t = json_get(pl, "type")) || t->type != JSON_STRING)
		return set_msg(-EPROTO,
			       "the daemon on %s does not say which pool it "
			       "serves (a thinvol older than this command?); "
			       "restart it",
			       sock);
	if (io_ident_path(path, &want) < 0)
		return -ESTALE;
	if (!strcmp(t->str.s, "block")) {
		got.blk = true;
		v = json_get(pl, "rdev");
		if (!v || v->type != JSON_STRING ||
		    sscanf(v->str.s, "%u:%u%c", &ma, &mi, &extra) != 2)
			return bad_reply("pool.rdev");
		got.rdev = makedev(ma, mi);
		v = json_get(pl, "diskseq");
		if (v && v->type == JSON_NUMBER && v->num.is_uint)
			got.diskseq = v->num.u;
	} else if (!strcmp(t->str.s, "file")) {
		v = json_get(pl, "dev");
		if (!v || v->type != JSON_STRING ||
		    sscanf(v->str.s, "%u:%u%c", &ma, &mi, &extra) != 2)
			return bad_reply("pool.dev");
		got.dev = makedev(ma, mi);
		v = json_get(pl, "ino");
		if (!v || v->type != JSON_NUMBER || !v->num.is_uint)
			return bad_reply("pool.ino");
		got.ino = (ino_t) v->num.u;
	} else {
		return -ESTALE;
	}
	return io_ident_equal(&want, &got) ? 0 : -ESTALE;
}

static int remote_hello(struct cli_pool *p, const char *path,
			const char *sock)
{
	const struct json_value *res;
	struct json_value *doc;
	struct rq q;
	uint64_t proto = 0;
	int r;

	if ((r = rq_start(&q, p, "hello")) ||
	    (r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	r = r_u64(res, "proto", &proto);
	if (!r && proto != CTL_PROTO_VERSION)
		r = set_msg(-EPROTONOSUPPORT,
			    "control socket: the daemon "
			    "speaks protocol version %" PRIu64
			    ", this command %d",
			    proto, CTL_PROTO_VERSION);
	if (!r)
		r = same_pool(res, path, sock);
	json_free(doc);
	return r;
}

/*
 * Use the daemon on sock for the pool at path (pst: its stat), if rules
 * 2 and 3 let us; want_pid (rule 4): the listener must be that process.
 * Returns 1 (p->fd is the connection), 0 (no daemon of this pool there:
 * go on offline), or a negative errno with remote_msg set (refuse).
 */
static int try_socket(struct cli_pool *p, const char *path,
		      const struct stat *pst, const char *sock, pid_t want_pid)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	struct stat sst;
	int fd, r;

	if (lstat(sock, &sst) < 0)
		return 0;
	if (!S_ISSOCK(sst.st_mode) && want_pid)
		return 0;
	if (!S_ISSOCK(sst.st_mode)) {
		char who[128];

		user_name(sst.st_uid, who, sizeof(who));
		return set_msg(-EPERM,
			       "%s is in the place of the pool's control "
			       "socket but is not a socket (%s, owned by "
			       "%s): refusing to use it; remove it",
			       sock,
			       S_ISLNK(sst.st_mode) ? "a symbolic link"
						    : "a file",
			       who);
	}
	if (!trusted(sst.st_uid, pst))
		return untrusted("control socket", sock, "is owned by",
				 sst.st_uid, pst);
	if (strlen(sock) >= sizeof(sa.sun_path))
		return 0;
	strcpy(sa.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return set_msg(-errno, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
		/* stale (nobody listens), gone, or not ours to use: the
		 * pool's lock tells the rest */
		close(fd);
		return 0;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		r = set_msg(-errno, "control socket %s: SO_PEERCRED: %s", sock,
			    strerror(errno));
		close(fd);
		return r;
	}
	if (!trusted(cred.uid, pst)) {
		close(fd);
		return untrusted("the process listening on", sock, "runs as",
				 cred.uid, pst);
	}
	if (want_pid && cred.pid != want_pid) {
		close(fd);
		return 0;
	}
	p->fd = fd;
	remote = true;
	r = remote_hello(p, path, sock);
	if (r == 0)
		return 1;
	close(fd);
	p->fd = -1;
	remote = false;
	free(p->rbuf);
	p->rbuf = NULL;
	p->rlen = p->rcap = 0;
	return r == -ESTALE ? 0 : r;
}

/* A pool file others may read or write, or another user's (whose daemon
 * rule 2 trusts), is said once, not refused: someone chose it so. */
static void warn_exposed(const char *path, const struct stat *pst)
{
	char what[256];

	if (io_pool_file_exposed(pst, what, sizeof(what)))
		cli_error(0, "warning: %s: %s", path, what);
}

int cli_open(const char *path, enum cli_open_mode mode, struct cli_pool **pool,
	     struct tv_pool_info *info)
{
	struct tv_pool_open_opts o = {.read_only = mode == CLI_RO};
	char sock[sizeof(((struct sockaddr_un *) 0)->sun_path)];
	struct cli_pool *p;
	struct stat pst = {0};
	bool have_st;
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return cli_error(EXIT_OTHER, "out of memory");
	p->fd = -1;
	/* A daemon of this pool holds it: everything goes there (rules
	 * 1-3).  None: open the pool here; if someone holds it after all,
	 * it may be a daemon reached by another name (rule 4), else the
	 * engine names the holder. */
	have_st = stat(path, &pst) == 0;
	r = 0;
	if (have_st && ctl_socket_path(path, ".ctl.sock", sock,
				       sizeof(sock)) == 0)
		r = try_socket(p, path, &pst, sock, 0);
	if (r == 1)
		goto remote_info;
	if (r < 0)
		goto refuse;
	if (mode == CLI_INFO)
		o.commit_interval_ms = 1u << 30; /* no background commits */
	r = tv_pool_open(path, &o, &p->local);
	if (mode == CLI_INFO && (r == -EACCES || r == -EROFS || r == -EPERM)) {
		o.read_only = true;
		r = tv_pool_open(path, &o, &p->local);
	}
	if (r == -EBUSY && have_st) {
		char busy[512];
		pid_t pid = io_lock_holder(pst.st_dev, pst.st_ino);
		int t = 0;

		snprintf(busy, sizeof(busy), "%s", tv_last_error());
		if (pid > 0 && ctl_socket_of(pid, sock, sizeof(sock)) == 0)
			t = try_socket(p, path, &pst, sock, pid);
		if (t == 1)
			goto remote_info;
		if (t < 0) {
			r = t;
			goto refuse;
		}
		free(p);
		return cli_error(cli_exit(r), "%s", busy);
	}
	if (r < 0) {
		/* the engine's message names the path */
		const char *why = tv_last_error();

		free(p);
		if (why[0])
			return cli_error(cli_exit(r), "%s", why);
		return cli_fail(r, "%s", path);
	}
	r = tv_pool_info(p->local, info);
	if (r < 0) {
		r = cli_fail(r, "%s", path);
		tv_pool_close(p->local);
		free(p);
		return r;
	}
	warn_exposed(path, &pst);
	*pool = p;
	return 0;

remote_info:
	r = cli_pool_info(p, info);
	if (r < 0) {
		r = cli_fail(r, "%s", path);
		cli_close(p, path, r);
		return r;
	}
	warn_exposed(path, &pst);
	*pool = p;
	return 0;
refuse:
	free(p);
	return cli_error(cli_exit(r), "%s: %s", path, remote_msg);
}

int cli_close(struct cli_pool *p, const char *path, int status)
{
	int r = 0;

	if (p->local) {
		r = tv_pool_close(p->local);
	} else {
		close(p->fd);
		free(p->rbuf);
	}
	free(p);
	if (r < 0) {
		int s = cli_fail(r, "%s: close", path);
		return status ? status : s;
	}
	return status;
}

/* ---- pools ---- */

static int r_state(const struct json_value *o, enum tv_pool_state *out)
{
	const struct json_value *v = json_get(o, "state");

	if (!v || v->type != JSON_STRING)
		return bad_reply("state");
	for (int s = TV_POOL_RW; s <= TV_POOL_NEEDS_CHECK; s++) {
		if (!strcmp(v->str.s, tv_pool_state_name(s))) {
			*out = (enum tv_pool_state)s;
			return 0;
		}
	}
	return bad_reply("state");
}

bool cli_pool_fs_no_journal(const struct cli_pool *p)
{
	return p->local && (p->local->dev->flags & IO_DEV_FS_NO_JOURNAL);
}

bool cli_pool_fs_cow(const struct cli_pool *p)
{
	return p->local && (p->local->dev->flags & IO_DEV_FS_COW);
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
	if ((r = rq_start(&q, p, "pool.info")) ||
	    (r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	if ((r = r_u64(res, "format_version", &fv)) ||
	    (r = r_hex(res, "uuid", in.uuid, sizeof(in.uuid))) ||
	    (r = r_u64(res, "block_size", &bs)) ||
	    (r = r_u64(res, "blob_size", &blob)) ||
	    (r = r_u64(res, "size", &in.size)) ||
	    (r = r_u64(res, "used", &in.used)) ||
	    (r = r_u64(res, "free", &in.free)) ||
	    (r = r_u64(res, "metadata", &in.metadata)) ||
	    (r = r_u64(res, "reclaimable", &in.reclaimable)) ||
	    (r = r_u64(res, "nr_volumes", &in.nr_volumes)) ||
	    (r = r_u64(res, "next_id", &in.next_id)) ||
	    (r = r_u64(res, "transaction", &in.transaction)) ||
	    (r = r_state(res, &in.state)) ||
	    (r = r_bytes(res, "reason", in.reason, sizeof(in.reason) - 1)))
		goto out;
	{
		/* what made it read-only (absent before pool.reopen) */
		const struct json_value *e = json_get(res, "error");
		uint64_t code = 0;

		if (e && e->type != JSON_NULL &&
		    (e->type != JSON_OBJECT || r_u64(e, "code", &code) ||
		     !code || code > 4095)) {
			r = bad_reply("error");
			goto out;
		}
		in.error = -(int)code;
	}
	/* hostile even from the daemon: sizes we divide by and index with */
	if (fv > UINT32_MAX || !bs || bs > UINT32_MAX || blob > TV_BLOB_MAX) {
		r = bad_reply("sizes");
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
	int r = call(p, q, fd, &doc, &res, index);

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
	if ((r = rq_start(&q, p, "pool.resize")))
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
	if ((r = rq_start(&q, p, "pool.reopen")) ||
	    (r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	r = r_u64(res, "transaction", transaction);
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
	if ((r = rq_start(&q, p, "pool.check")) ||
	    (r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	rp = json_get(res, "report");
	clean = rp ? json_get(rp, "clean") : NULL;
	if (!clean || clean->type != JSON_BOOL) {
		r = bad_reply("report");
		goto out;
	}
	c.clean = clean->b;
	if ((r = r_u64(rp, "nodes", &c.nodes)) ||
	    (r = r_u64(rp, "node_refs", &c.node_refs)) ||
	    (r = r_u64(rp, "data_refs", &c.data_refs)) ||
	    (r = r_u64(rp, "errors", &c.errors)) ||
	    (r = r_u64(rp, "leaks", &c.leaks)) ||
	    (r = r_u64(rp, "missing", &c.missing)) ||
	    (r = r_u64(rp, "counter_errors", &c.counter_errors)) ||
	    (r = r_u64(rp, "volumes", &c.volumes)))
		goto out;
	text = malloc(CTL_MAX_LINE + 1);
	if (!text) {
		r = set_msg(-ENOMEM, "out of memory");
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
		return bad_reply("volume");
	if ((r = r_u64(o, "id", &v.id)) ||
	    (r = r_hex(o, "uuid", v.uuid, sizeof(v.uuid))) ||
	    (r = r_bytes(o, "name", v.name, TV_NAME_MAX)) ||
	    (r = r_u64(o, "size", &v.size)) ||
	    (r = r_u64(o, "flags", &flags)) ||
	    (r = r_u64(o, "parent", &v.parent)) ||
	    (r = r_u64(o, "ctime_ns", &v.ctime_ns)) ||
	    (r = r_u64(o, "mapped", &v.mapped)))
		return r;
	if (flags > UINT32_MAX)
		return bad_reply("flags");
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
	if ((r = rq_start(&q, p, "vol.list")))
		return r;
	rq_u64(&q, "cursor", *cursor);
	rq_u64(&q, "max", max < REMOTE_LIST_MAX ? max : REMOTE_LIST_MAX);
	if ((r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	vols = json_get(res, "volumes");
	if (!vols || vols->type != JSON_ARRAY || vols->arr.n > max ||
	    vols->arr.n > REMOTE_LIST_MAX) {
		r = bad_reply("volumes");
		goto out;
	}
	if ((r = r_u64(res, "cursor", &next)))
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

int cli_vol_info(struct cli_pool *p, uint64_t id, struct tv_vol_info *out)
{
	const struct json_value *res;
	struct json_value *doc;
	struct rq q;
	int r;

	if (p->local)
		return tv_vol_info(p->local, id, out);
	if ((r = rq_start(&q, p, "vol.info")))
		return r;
	rq_u64(&q, "id", id);
	if ((r = call(p, &q, -1, &doc, &res, NULL)))
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
	struct rq q;
	int r;

	if (p->local)
		return tv_vol_usage(p->local, id, mapped, exclusive);
	if ((r = rq_start(&q, p, "vol.usage")))
		return r;
	rq_u64(&q, "id", id);
	if ((r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	if (!(r = r_u64(res, "mapped", &m)) &&
	    !(r = r_u64(res, "exclusive", &e))) {
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
	if ((r = rq_start(&q, p, "vol.resolve")))
		return r;
	rq_bytes(&q, "spec", spec);
	if ((r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	r = r_u64(res, "id", id);
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
	if ((r = rq_start(&q, p, "vol.get_blob")))
		return r;
	rq_u64(&q, "id", id);
	rq_u64(&q, "len", len);
	if ((r = call(p, &q, -1, &doc, &res, NULL)))
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
	if ((r = rq_start(&q, p, "vol.find_blob")))
		return r;
	rq_hex(&q, "prefix", prefix, len);
	rq_u64(&q, "max", ask);
	if ((r = call(p, &q, -1, &doc, &res, NULL)))
		return r;
	arr = json_get(res, "ids");
	if ((r = r_u64(res, "count", &count)))
		goto out;
	if (count > INT32_MAX || !arr || arr->type != JSON_ARRAY ||
	    arr->arr.n != (count < ask ? count : ask)) {
		r = bad_reply("ids");
		goto out;
	}
	if (count > ask && max > ask) {
		r = set_msg(-E2BIG,
			    "more than %d volumes match: too many for "
			    "the control protocol",
			    REMOTE_FIND_MAX);
		goto out;
	}
	for (size_t i = 0; i < arr->arr.n; i++) {
		const struct json_value *v = arr->arr.items[i];

		if (v->type != JSON_NUMBER || !v->num.is_uint) {
			r = bad_reply("ids");
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

	if ((r = rq_start(&q, p, "batch")))
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
	r = call(p, &q, -1, &doc, &res, &index);
	if (r < 0) {
		if (failed)
			*failed = index;
		return r;
	}
	arr = json_get(res, "ids");
	if (!arr || arr->type != JSON_ARRAY || arr->arr.n != n) {
		r = bad_reply("ids");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct json_value *v = arr->arr.items[i];

		if (v->type != JSON_NUMBER || !v->num.is_uint) {
			r = bad_reply("ids");
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

	if ((r = rq_start(&q, p, op)))
		goto out_msg;
	rq_u64(&q, "id", id);
	rq_bytes(&q, "pool", c->pool);
	rq_bytes(&q, "volume", c->vol);
	rq_bytes(&q, "file", c->file);
	if (stream)
		rq_bool(&q, "stream", *stream);
	r = call(p, &q, fd, &doc, &res, NULL);
	if (r < 0)
		goto out_msg;
	if (!(r = r_u64(res, "copied", &c->copied)))
		r = r_u64(res, "zero", &c->zero);
	json_free(doc);
	if (!r)
		return 0;
out_msg:
	snprintf(c->msg, sizeof(c->msg), "%.*s", (int) sizeof(c->msg) - 1,
		 remote_msg);
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
