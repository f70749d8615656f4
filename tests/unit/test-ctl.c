/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The control protocol (src/server/ctl*.c) over a real Unix socket,
 * without the NBD daemon: good requests and every kind of bad one (bad
 * JSON, unknown op, wrong version, missing and ill-typed arguments, an
 * oversized line), 1000 requests pipelined on one connection, concurrent
 * clients, a file descriptor passed for import and export, the socket's
 * mode (made without touching the umask), a stale socket replaced and a
 * live one refused, hello's op list against the ops answered and
 * documented, and the claim / release hooks around deletes and shrinks
 * (-EBUSY reaches the client with the hook's message).  Then ctl_handle on
 * random and mutated lines: every one gets a well-formed reply.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/ctl.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/json.h"
#include "util/log.h"

/* ---- the umask ---- */

/*
 * Every umask() call of this program lands here: the server library is
 * linked in statically, so its calls bind to this definition.  The umask
 * is the whole process's, and the daemon's other threads create files
 * while it makes a socket: the listener must not change it.
 */
static atomic_int umask_calls;

mode_t umask(mode_t mask)
{
	umask_calls++;
	return (mode_t) syscall(SYS_umask, mask);
}

/* ---- hooks ---- */

static atomic_int claims, releases;
static uint64_t busy_id; /* claim refuses this one unless forced */

static int claim(void *ctx, uint64_t id, bool force, char *msg, size_t len)
{
	(void) ctx;
	claims++;
	if (id == busy_id && !force) {
		snprintf(msg, len,
			 "volume #%llu is exported to 1 NBD client; "
			 "use --force to disconnect it",
			 (unsigned long long) id);
		return -EBUSY;
	}
	return 0;
}

static void release(void *ctx, uint64_t id)
{
	(void) ctx;
	(void) id;
	releases++;
}

static const struct ctl_hooks hooks = {NULL, claim, release};

/* ---- a client ---- */

static char sock_path[108];

static int dial(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	memcpy(sa.sun_path, sock_path, sizeof(sock_path));
	CHECK_OK(connect(fd, (struct sockaddr *) &sa, sizeof(sa)));
	return fd;
}

static void send_all(int fd, const char *buf, size_t len, int pass)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;

	while (len) {
		struct iovec iov = {.iov_base = (void *) buf, .iov_len = len};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (pass >= 0) {
			struct cmsghdr *cm;

			memset(&cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf.b;
			mh.msg_controllen = sizeof(cbuf.b);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &pass, sizeof(int));
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		CHECK(n > 0);
		pass = -1;
		buf += n;
		len -= (size_t) n;
	}
}

/* Reading replies, with what was read ahead. */
struct conn {
	int fd;
	char *buf;
	size_t len, cap;
};

/* The next reply line (malloc'd, without newline), or NULL at EOF. */
static char *read_line(struct conn *c)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		ssize_t n;

		if (nl) {
			size_t l = (size_t) (nl - c->buf);
			char *line = malloc(l + 1);

			CHECK(line);
			memcpy(line, c->buf, l);
			line[l] = 0;
			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
			return line;
		}
		if (c->cap - c->len < 65536) {
			c->cap = c->cap ? 2 * c->cap : 1 << 17;
			c->buf = realloc(c->buf, c->cap);
			CHECK(c->buf);
		}
		n = read(c->fd, c->buf + c->len, c->cap - c->len);
		CHECK(n >= 0);
		if (n == 0)
			return NULL;
		c->len += (size_t) n;
	}
}

/* A reply, parsed and checked for the envelope every reply has. */
static struct json_value *parse_reply(const char *line)
{
	struct json_value *d = NULL;
	struct json_error je;
	const struct json_value *v, *e, *r;

	if (json_parse(line, strlen(line), NULL, &d, &je) < 0) {
		fprintf(stderr, "bad reply: %s: %s\n", je.msg, line);
		CHECK(0);
	}
	CHECK(d->type == JSON_OBJECT);
	v = json_get(d, "v");
	CHECK(v && v->type == JSON_NUMBER && v->num.u == CTL_PROTO_VERSION);
	CHECK(json_get(d, "id"));
	e = json_get(d, "error");
	r = json_get(d, "result");
	CHECK(!e != !r);
	if (e) {
		const struct json_value *m = json_get(e, "message");

		CHECK(e->type == JSON_OBJECT);
		CHECK(json_get(e, "code") && json_get(e, "errno"));
		CHECK(m && m->type == JSON_STRING && m->str.len > 0);
	}
	return d;
}

/* Send one request (fd passed if >= 0) and return its parsed reply. */
static struct json_value *ask(struct conn *c, const char *req, int pass)
{
	char *line;
	struct json_value *d;

	send_all(c->fd, req, strlen(req), pass);
	send_all(c->fd, "\n", 1, -1);
	line = read_line(c);
	CHECK(line);
	d = parse_reply(line);
	free(line);
	return d;
}

/* The error code of a reply (0 for a result). */
static int code_of(const struct json_value *d)
{
	const struct json_value *e = json_get(d, "error");

	return e ? -(int) json_get(e, "code")->num.u : 0;
}

static const char *message_of(const struct json_value *d)
{
	return json_get(json_get(d, "error"), "message")->str.s;
}

static const struct json_value *result_of(const struct json_value *d)
{
	const struct json_value *r = json_get(d, "result");

	if (!r)
		fprintf(stderr, "  error: %s\n", message_of(d));
	CHECK(r);
	return r;
}

/* ask, and want error err whose message contains text. */
static void want_err(struct conn *c, const char *req, int err, const char *text)
{
	struct json_value *d = ask(c, req, -1);

	if (code_of(d) != err || (text && !strstr(message_of(d), text))) {
		fprintf(stderr, "  %s\n  -> code %d, %s\n", req, code_of(d),
			code_of(d) ? message_of(d) : "ok");
		CHECK(0);
	}
	json_free(d);
}

static uint64_t u64_of(const struct json_value *o, const char *key)
{
	const struct json_value *v = json_get(o, key);

	CHECK(v && v->type == JSON_NUMBER && v->num.is_uint);
	return v->num.u;
}

/* ---- hello's op list ---- */

/* The ops of docs/control.md's table of ops ("| `name` | ..." rows
 * after the "| op | args" header, up to the blank line), into names. */
static size_t documented_ops(char names[][32], size_t max)
{
	const char *src = getenv("TV_SRCDIR");
	char path[4096], line[4096];
	bool in_table = false;
	size_t n = 0;
	FILE *f;

	CHECK(src);
	snprintf(path, sizeof(path), "%s/docs/control.md", src);
	f = fopen(path, "r");
	CHECK(f);
	while (fgets(line, sizeof(line), f)) {
		char *end;

		if (!strncmp(line, "| op | args", 11)) {
			in_table = true;
			continue;
		}
		if (!in_table || !strncmp(line, "|---", 4))
			continue;
		if (line[0] != '|')
			break;
		CHECK(!strncmp(line, "| `", 3));
		end = strchr(line + 3, '`');
		CHECK(end && end - (line + 3) < 32 && n < max);
		memcpy(names[n], line + 3, (size_t) (end - (line + 3)));
		names[n++][end - (line + 3)] = 0;
	}
	fclose(f);
	CHECK(n > 0);
	return n;
}

/*
 * hello's "ops" are exactly the ops the server answers: each documented
 * op is listed once, each listed op is answered (whatever the arguments
 * say, never "unknown op"), and an op it does not list (test.fault,
 * outside a daemon testing faults) is unknown.
 */
static void check_hello_ops(struct conn *c, const struct json_value *res)
{
	const struct json_value *ops = json_get(res, "ops");
	char doc[32][32], req[128];
	size_t ndoc = documented_ops(doc, 32);

	CHECK(ops && ops->type == JSON_ARRAY);
	CHECK_EQ(ops->arr.n, ndoc);
	for (size_t i = 0; i < ops->arr.n; i++) {
		const struct json_value *o = ops->arr.items[i];
		struct json_value *d;
		size_t k, seen = 0;

		CHECK(o->type == JSON_STRING);
		for (k = 0; k < ndoc; k++)
			seen += !strcmp(doc[k], o->str.s);
		CHECK_EQ(seen, 1);
		for (k = 0; k < i; k++)
			CHECK(strcmp(ops->arr.items[k]->str.s, o->str.s));
		snprintf(req, sizeof(req), "{\"v\":1,\"id\":%zu,\"op\":\"%s\"}",
			 100 + i, o->str.s);
		d = ask(c, req, -1);
		CHECK(code_of(d) != -EOPNOTSUPP);
		json_free(d);
	}
	want_err(c,
		 "{\"v\":1,\"id\":99,\"op\":\"test.fault\",\"args\":"
		 "{\"fail_at\":0}}",
		 -EOPNOTSUPP, "unknown op");
}

/* ---- concurrent clients ---- */

static void *client_thread(void *arg)
{
	struct conn c = {.fd = dial()};
	int k = (int) (intptr_t) arg;
	char req[128];

	for (int i = 0; i < 200; i++) {
		struct json_value *d;

		snprintf(req, sizeof(req),
			 "{\"v\":1,\"id\":%d,\"op\":\"vol.resolve\","
			 "\"args\":{\"spec\":\"vol%d\"}}",
			 i, k);
		d = ask(&c, req, -1);
		CHECK_EQ(u64_of(d, "id"), i);
		CHECK(u64_of(result_of(d), "id") > 0);
		json_free(d);
	}
	close(c.fd);
	free(c.buf);
	return NULL;
}

/* ---- fuzzing ctl_handle directly ---- */

static void fuzz(struct tv_pool *pool, uint64_t seed)
{
	static const char *const seeds[] = {
	    "{\"v\":1,\"id\":1,\"op\":\"hello\"}",
	    "{\"v\":1,\"id\":2,\"op\":\"vol.list\",\"args\":{\"cursor\":0,"
	    "\"max\":3}}",
	    "{\"v\":1,\"id\":3,\"op\":\"vol.resolve\",\"args\":{\"spec\":"
	    "\"#1\"}}",
	    "{\"v\":1,\"id\":4,\"op\":\"vol.find_blob\",\"args\":{"
	    "\"prefix\":\"00\",\"max\":10}}",
	    "{\"v\":1,\"id\":5,\"op\":\"batch\",\"args\":{\"ops\":[{\"kind\":"
	    "\"rename\",\"id\":1,\"name\":\"zz\"}]}}",
	    "{\"v\":1,\"id\":6,\"op\":\"vol.get_blob\",\"args\":{\"id\":1,"
	    "\"len\":8}}",
	    "{\"v\":1,\"id\":7,\"op\":\"vol.resolve\",\"args\":{\"spec_hex\":"
	    "\"ff41\"}}",
	};
	struct trng rng;
	char buf[512];

	trng_init(&rng, seed);
	for (int i = 0; i < 20000; i++) {
		const char *s =
		    seeds[trng_below(&rng, sizeof(seeds) / sizeof(seeds[0]))];
		size_t len = strlen(s);
		struct json_value *d;
		char *reply = NULL;
		size_t rlen = 0;
		int k = (int) trng_below(&rng, 6);

		memcpy(buf, s, len);
		if (i % 10 == 0) {
			/* random bytes */
			len = (size_t) trng_below(&rng, sizeof(buf));
			for (size_t j = 0; j < len; j++)
				buf[j] = (char) trng_next(&rng);
		}
		for (int m = 0; m < k && len; m++) {
			size_t at = (size_t) trng_below(&rng, len);

			switch (trng_below(&rng, 3)) {
			case 0: /* flip a byte */
				buf[at] = (char) trng_next(&rng);
				break;
			case 1: /* cut */
				len = at;
				break;
			default: /* duplicate a piece */
				if (len + 16 < sizeof(buf)) {
					memmove(buf + at + 16, buf + at,
						len - at);
					len += 16;
				}
				break;
			}
		}
		/* no hooks: as offline, nothing is claimed */
		CHECK_OK(
		    ctl_handle(pool, NULL, NULL, buf, len, -1, &reply, &rlen));
		CHECK(rlen > 0 && reply[rlen - 1] == '\n');
		CHECK(!memchr(reply, '\n', rlen - 1));
		reply[rlen - 1] = 0;
		d = parse_reply(reply);
		json_free(d);
		free(reply);
	}
}

int main(void)
{
	char dir[] = "/tmp/tv-ctl-XXXXXX", path[256], img[256], out[256];
	struct tv_pool_create_opts co = {.size = 256 << 20, .blob_size = 8};
	struct ctl_server *srv, *srv2;
	struct conn c = {0};
	struct json_value *d;
	const struct json_value *r;
	struct tv_pool *pool;
	struct stat st;
	pthread_t th[8];
	char req[512], *big;
	uint64_t seed = tseed("test-ctl");
	int fd, ffd;

	volume_id_clock = NULL; /* plain counter: ids 1, 2, ... */
	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	snprintf(img, sizeof(img), "%s/img", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, NULL, &pool));

	/* the socket path beside a pool file: as given while it does not
	 * exist, else under its real path (a symlink to it gives the same) */
	CHECK_OK(ctl_socket_path("no/such/dir/x.pool", ".ctl.sock", sock_path,
				 sizeof(sock_path)));
	CHECK(!strcmp(sock_path, "no/such/dir/x.pool.ctl.sock"));
	memset(req, 'a', 120);
	req[120] = 0;
	CHECK_ERR(
	    ctl_socket_path(req, ".ctl.sock", sock_path, sizeof(sock_path)),
	    -ENAMETOOLONG);
	{
		char link[300], via[108];

		snprintf(link, sizeof(link), "%s/link", dir);
		CHECK_OK(symlink("p.pool", link));
		CHECK_OK(ctl_socket_path(link, ".nbd.sock", via, sizeof(via)));
		CHECK_OK(ctl_socket_path(path, ".nbd.sock", sock_path,
					 sizeof(sock_path)));
		CHECK(!strcmp(via, sock_path));
		unlink(link);
	}
	CHECK_OK(
	    ctl_socket_path(path, ".ctl.sock", sock_path, sizeof(sock_path)));

	/* only a stale socket is replaced: a regular file, or a symlink to
	 * a stale socket, in the way is -EEXIST and stays as it was */
	{
		char msg[256], stale[100];
		int s;

		fd = open(sock_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		CHECK(fd >= 0);
		CHECK(write(fd, "keep", 4) == 4);
		close(fd);
		CHECK_ERR(ctl_server_start(sock_path, pool, &hooks, &srv, msg,
					   sizeof(msg)),
			  -EEXIST);
		CHECK(strstr(msg, "a regular file is in the way"));
		CHECK_OK(stat(sock_path, &st));
		CHECK(S_ISREG(st.st_mode) && st.st_size == 4);
		unlink(sock_path);

		snprintf(stale, sizeof(stale), "%s/stale.sock", dir);
		{
			struct sockaddr_un sa = {.sun_family = AF_UNIX};

			s = socket(AF_UNIX, SOCK_STREAM, 0);
			memcpy(sa.sun_path, stale, sizeof(stale));
			CHECK_OK(bind(s, (struct sockaddr *) &sa, sizeof(sa)));
			close(s);
		}
		CHECK_OK(symlink(stale, sock_path));
		CHECK_ERR(ctl_server_start(sock_path, pool, &hooks, &srv, msg,
					   sizeof(msg)),
			  -EEXIST);
		CHECK(strstr(msg, "symbolic link"));
		CHECK_OK(lstat(sock_path, &st));
		CHECK(S_ISLNK(st.st_mode));
		CHECK_OK(stat(stale, &st));
		unlink(sock_path);
		unlink(stale);
	}

	/* a stale socket is replaced; the new one is 0600, whatever the
	 * umask (here none), which stays untouched */
	{
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int s = socket(AF_UNIX, SOCK_STREAM, 0);

		memcpy(sa.sun_path, sock_path, sizeof(sock_path));
		CHECK_OK(bind(s, (struct sockaddr *) &sa, sizeof(sa)));
		close(s);
	}
	{
		char msg[256];
		mode_t old = (mode_t) syscall(SYS_umask, 0);

		umask_calls = 0;
		CHECK_OK(ctl_server_start(sock_path, pool, &hooks, &srv, msg,
					  sizeof(msg)));
		CHECK_EQ(umask_calls, 0);
		CHECK_EQ(syscall(SYS_umask, old), 0);
	}
	CHECK_OK(stat(sock_path, &st));
	CHECK(S_ISSOCK(st.st_mode));
	CHECK_EQ(st.st_mode & 07777, 0600);
	/* a live one is not */
	{
		char msg[256];

		CHECK_ERR(ctl_server_start(sock_path, pool, &hooks, &srv2, msg,
					   sizeof(msg)),
			  -EADDRINUSE);
		CHECK(strstr(msg, "in use by a running server"));
	}

	c.fd = dial();
	d = ask(&c, "{\"v\":1,\"id\":1,\"op\":\"hello\"}", -1);
	CHECK_EQ(u64_of(d, "id"), 1);
	CHECK_EQ(u64_of(result_of(d), "proto"), CTL_PROTO_VERSION);
	check_hello_ops(&c, result_of(d));
	json_free(d);

	/* bad requests: each gets its error, and the connection goes on */
	want_err(&c, "{", -EBADMSG, "byte 1");
	want_err(&c, "", -EBADMSG, NULL);
	want_err(&c, "\xff\xfe", -EBADMSG, NULL);
	want_err(&c, "[1,2]", -EINVAL, "must be an object");
	want_err(&c, "{\"v\":1,\"id\":2,\"op\":\"frobnicate\"}", -EOPNOTSUPP,
		 "unknown op");
	want_err(&c, "{\"v\":2,\"id\":3,\"op\":\"hello\"}", -EPROTONOSUPPORT,
		 "version");
	want_err(&c, "{\"id\":3,\"op\":\"hello\"}", -EINVAL, "\"v\"");
	want_err(&c, "{\"v\":1,\"id\":-3,\"op\":\"hello\"}", -EINVAL, "\"id\"");
	want_err(&c, "{\"v\":1,\"id\":4}", -EINVAL, "\"op\"");
	want_err(&c, "{\"v\":1,\"id\":5,\"op\":\"hello\",\"x\":1}", -EINVAL,
		 "unknown argument");
	want_err(&c, "{\"v\":1,\"id\":6,\"op\":\"vol.info\"}", -EINVAL,
		 "needs \"id\"");
	want_err(&c,
		 "{\"v\":1,\"id\":7,\"op\":\"vol.info\",\"args\":{\"id\":"
		 "\"1\"}}",
		 -EINVAL, "integer");
	want_err(&c,
		 "{\"v\":1,\"id\":8,\"op\":\"vol.info\",\"args\":{\"id\":1,"
		 "\"zz\":1}}",
		 -EINVAL, "unknown argument");
	want_err(&c, "{\"v\":1,\"id\":9,\"op\":\"vol.info\",\"args\":[]}",
		 -EINVAL, "\"args\"");
	want_err(&c,
		 "{\"v\":1,\"id\":10,\"op\":\"vol.info\",\"args\":{\"id\":"
		 "99}}",
		 -ENOENT, NULL);
	want_err(&c,
		 "{\"v\":1,\"id\":11,\"op\":\"batch\",\"args\":{\"ops\":"
		 "[{\"kind\":\"explode\"}]}}",
		 -EINVAL, "unknown kind");
	want_err(&c,
		 "{\"v\":1,\"id\":12,\"op\":\"batch\",\"args\":{\"ops\":"
		 "[{\"kind\":\"create\",\"name\":\"q\"}]}}",
		 -EINVAL, "needs \"size\"");
	want_err(&c,
		 "{\"v\":1,\"id\":13,\"op\":\"batch\",\"args\":{\"ops\":"
		 "[{\"kind\":\"create\",\"name_hex\":\"6100\",\"size\":512}]}}",
		 -EINVAL, "name_hex");
	want_err(&c,
		 "{\"v\":1,\"id\":14,\"op\":\"vol.list\",\"args\":{\"max\":"
		 "100000}}",
		 -EINVAL, "\"max\"");
	want_err(&c,
		 "{\"v\":1,\"id\":15,\"op\":\"vol.import\",\"args\":{\"id\":1,"
		 "\"pool\":\"p\",\"volume\":\"v\",\"file\":\"f\"}}",
		 -EINVAL, "descriptor");

	/* volumes, through a batch; errors carry the engine's message and
	 * the index of the op that failed */
	d = ask(&c,
		"{\"v\":1,\"id\":20,\"op\":\"batch\",\"args\":{\"ops\":["
		"{\"kind\":\"create\",\"name\":\"vol0\",\"size\":8388608},"
		"{\"kind\":\"create\",\"name\":\"vol1\",\"size\":1048576,"
		"\"blob\":\"0102030405060708\"}]}}",
		-1);
	r = json_get(result_of(d), "ids");
	CHECK(r && r->type == JSON_ARRAY && r->arr.n == 2);
	CHECK_EQ(r->arr.items[0]->num.u, 1);
	CHECK_EQ(r->arr.items[1]->num.u, 2);
	json_free(d);
	d = ask(&c,
		"{\"v\":1,\"id\":21,\"op\":\"batch\",\"args\":{\"ops\":["
		"{\"kind\":\"create\",\"name\":\"new\",\"size\":512},"
		"{\"kind\":\"create\",\"name\":\"vol0\",\"size\":512}]}}",
		-1);
	CHECK_EQ(code_of(d), -EEXIST);
	CHECK(strstr(message_of(d), "a volume of that name exists"));
	CHECK_EQ(u64_of(json_get(d, "error"), "index"), 1);
	json_free(d);
	want_err(&c,
		 "{\"v\":1,\"id\":22,\"op\":\"vol.resolve\",\"args\":{"
		 "\"spec\":\"new\"}}",
		 -ENOENT, "no such volume");
	/* a name that is not UTF-8 travels as hex: the engine gets the very
	 * bytes (and refuses them) */
	want_err(&c,
		 "{\"v\":1,\"id\":23,\"op\":\"vol.resolve\",\"args\":{"
		 "\"spec_hex\":\"61ff\"}}",
		 -EINVAL, "not valid UTF-8");
	for (int k = 2; k < 8; k++) {
		snprintf(
		    req, sizeof(req),
		    "{\"v\":1,\"id\":24,\"op\":\"batch\",\"args\":{\"ops\":"
		    "[{\"kind\":\"create\",\"name\":\"vol%d\",\"size\":"
		    "512}]}}",
		    k);
		json_free(ask(&c, req, -1));
	}
	d = ask(&c,
		"{\"v\":1,\"id\":25,\"op\":\"vol.get_blob\",\"args\":{"
		"\"id\":2,\"len\":8}}",
		-1);
	CHECK(
	    !strcmp(json_get(result_of(d), "blob")->str.s, "0102030405060708"));
	json_free(d);
	d = ask(&c,
		"{\"v\":1,\"id\":26,\"op\":\"vol.list\",\"args\":{"
		"\"cursor\":0,\"max\":5}}",
		-1);
	CHECK_EQ(json_get(result_of(d), "volumes")->arr.n, 5);
	json_free(d);
	d = ask(&c, "{\"v\":1,\"id\":27,\"op\":\"pool.check\"}", -1);
	CHECK(json_get(json_get(result_of(d), "report"), "clean")->b);
	json_free(d);

	/* claim and release around a delete and a shrink; -EBUSY with the
	 * hook's message, and nothing changed */
	busy_id = 3;
	claims = releases = 0;
	d = ask(&c,
		"{\"v\":1,\"id\":30,\"op\":\"batch\",\"args\":{\"ops\":["
		"{\"kind\":\"delete\",\"id\":4},"
		"{\"kind\":\"delete\",\"id\":3}]}}",
		-1);
	CHECK_EQ(code_of(d), -EBUSY);
	CHECK(strstr(message_of(d), "is exported to 1 NBD client"));
	CHECK_EQ(u64_of(json_get(d, "error"), "index"), 1);
	json_free(d);
	CHECK_EQ(claims, 2);
	CHECK_EQ(releases, 1); /* the one that was granted */
	want_err(&c,
		 "{\"v\":1,\"id\":31,\"op\":\"vol.info\",\"args\":{\"id\":"
		 "4}}",
		 0, NULL);
	claims = releases = 0;
	d = ask(&c,
		"{\"v\":1,\"id\":32,\"op\":\"batch\",\"args\":{\"force\":"
		"true,\"ops\":[{\"kind\":\"delete\",\"id\":3}]}}",
		-1);
	result_of(d);
	json_free(d);
	CHECK_EQ(claims, 1);
	CHECK_EQ(releases, 1);
	/* a shrink claims, a growth does not; a failed change releases */
	busy_id = 1;
	claims = releases = 0;
	want_err(&c,
		 "{\"v\":1,\"id\":33,\"op\":\"batch\",\"args\":{\"ops\":["
		 "{\"kind\":\"resize\",\"id\":1,\"size\":16777216}]}}",
		 0, NULL);
	CHECK_EQ(claims, 0);
	want_err(&c,
		 "{\"v\":1,\"id\":34,\"op\":\"batch\",\"args\":{\"ops\":["
		 "{\"kind\":\"resize\",\"id\":1,\"size\":1048576}]}}",
		 -EBUSY, "use --force");
	CHECK_EQ(claims, 1);
	CHECK_EQ(releases, 0);
	want_err(&c,
		 "{\"v\":1,\"id\":35,\"op\":\"batch\",\"args\":{\"ops\":["
		 "{\"kind\":\"delete\",\"id\":5},"
		 "{\"kind\":\"rename\",\"id\":6,\"name\":\"vol0\"}]}}",
		 -EEXIST, NULL);
	CHECK_EQ(claims, 2);
	CHECK_EQ(releases, 1);
	want_err(&c,
		 "{\"v\":1,\"id\":36,\"op\":\"vol.info\",\"args\":{\"id\":"
		 "5}}",
		 0, NULL);
	busy_id = 0;

	/* import and export through passed descriptors */
	{
		uint8_t data[65536], back[65536];

		for (size_t i = 0; i < sizeof(data); i++)
			data[i] = (uint8_t) (i * 7 + 1);
		ffd = open(img, O_RDWR | O_CREAT | O_TRUNC, 0600);
		CHECK(ffd >= 0);
		CHECK(write(ffd, data, sizeof(data)) == (ssize_t) sizeof(data));
		d = ask(&c,
			"{\"v\":1,\"id\":40,\"op\":\"vol.import\",\"args\":{"
			"\"id\":1,\"pool\":\"p\",\"volume\":\"vol0\","
			"\"file\":\"img\"}}",
			ffd);
		CHECK_EQ(u64_of(result_of(d), "copied"), sizeof(data));
		json_free(d);
		close(ffd);
		ffd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
		CHECK(ffd >= 0);
		d = ask(&c,
			"{\"v\":1,\"id\":41,\"op\":\"vol.export\",\"args\":{"
			"\"id\":1,\"pool\":\"p\",\"volume\":\"vol0\","
			"\"file\":\"out\"}}",
			ffd);
		CHECK_EQ(u64_of(result_of(d), "copied"), sizeof(data));
		json_free(d);
		CHECK(pread(ffd, back, sizeof(back), 0) ==
		      (ssize_t) sizeof(back));
		CHECK(!memcmp(data, back, sizeof(data)));
		CHECK_OK(fstat(ffd, &st));
		CHECK_EQ(st.st_size, 16 << 20);
		close(ffd);
		/* a file larger than the volume: the copy's own message */
		ffd = open(out, O_RDONLY);
		d = ask(&c,
			"{\"v\":1,\"id\":42,\"op\":\"vol.import\",\"args\":{"
			"\"id\":3,\"pool\":\"p\",\"volume\":\"vol3\","
			"\"file\":\"out\"}}",
			ffd);
		CHECK(code_of(d) == -ENOENT || code_of(d) == -EINVAL);
		CHECK(strstr(message_of(d), "import 'vol3'"));
		json_free(d);
		close(ffd);
	}

	/* 1000 requests in one write, answered in order */
	{
		size_t cap = 1000 * 128, len = 0;
		char *all = malloc(cap);

		CHECK(all);
		for (int i = 0; i < 1000; i++)
			len += (size_t) snprintf(all + len, cap - len,
						 "{\"v\":1,\"id\":%d,\"op\":"
						 "\"vol.resolve\",\"args\":{"
						 "\"spec\":\"#%d\"}}\n",
						 1000 + i, 1 + i % 8);
		send_all(c.fd, all, len, -1);
		for (int i = 0; i < 1000; i++) {
			char *line = read_line(&c);

			CHECK(line);
			d = parse_reply(line);
			CHECK_EQ(u64_of(d, "id"), 1000 + i);
			json_free(d);
			free(line);
		}
		free(all);
	}

	/* concurrent clients (vol2 was deleted above) */
	for (int k = 0; k < 8; k++)
		CHECK_OK(pthread_create(&th[k], NULL, client_thread,
					(void *) (intptr_t) (k == 2 ? 0 : k)));
	for (int k = 0; k < 8; k++)
		CHECK_OK(pthread_join(th[k], NULL));

	/* an oversized line: an error reply, then the connection closes */
	big = malloc(CTL_MAX_LINE + 4096);
	CHECK(big);
	memset(big, ' ', CTL_MAX_LINE + 4096);
	send_all(c.fd, big, CTL_MAX_LINE + 4096, -1);
	free(big);
	{
		char *line = read_line(&c);

		CHECK(line);
		d = parse_reply(line);
		CHECK_EQ(code_of(d), -EMSGSIZE);
		CHECK(strstr(message_of(d), "request too long"));
		json_free(d);
		free(line);
		CHECK(read_line(&c) == NULL);
	}
	close(c.fd);
	free(c.buf);

	/* stop with a client connected and idle: it is closed */
	fd = dial();
	ctl_server_stop(srv);
	{
		char b;

		/* EOF, or a reset if it was never accepted */
		CHECK(read(fd, &b, 1) <= 0);
	}
	close(fd);
	CHECK(stat(sock_path, &st) < 0 && errno == ENOENT);

	/* stopping removes the socket only while it is still ours: a file
	 * put in its place meanwhile stays */
	{
		char msg[256];

		CHECK_OK(ctl_server_start(sock_path, pool, &hooks, &srv, msg,
					  sizeof(msg)));
		CHECK_OK(unlink(sock_path));
		fd = open(sock_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		CHECK(fd >= 0);
		close(fd);
		ctl_server_stop(srv);
		CHECK_OK(stat(sock_path, &st));
		CHECK(S_ISREG(st.st_mode));
		unlink(sock_path);
	}

	fuzz(pool, seed);
	{
		struct tv_check_report rep;

		CHECK_OK(tv_pool_check(pool, stderr, &rep));
		CHECK(rep.clean);
	}
	CHECK_OK(tv_pool_close(pool));
	unlink(img);
	unlink(out);
	unlink(path);
	rmdir(dir);
	printf("test-ctl: ok\n");
	return 0;
}
