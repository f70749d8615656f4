/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * client-open.c - cli_open and cli_close: whether a daemon holds the pool
 * and may be trusted with it (the rules below), and then the connection
 * to it, or the pool opened here.  The requests themselves are client.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client-internal.h"
#include "io/io.h"
#include "server/ctl.h"
#include "util/json.h"

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

	io_uid_name(uid, who, sizeof(who));
	io_uid_name(pool->st_uid, owner, sizeof(owner));
	return cli_set_msg(
	    -EPERM,
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

	if (!pl || pl->type != JSON_OBJECT || !(t = json_get(pl, "type")) ||
	    t->type != JSON_STRING)
		return cli_set_msg(
		    -EPROTO,
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
			return cli_bad_reply("pool.rdev");
		got.rdev = makedev(ma, mi);
		v = json_get(pl, "diskseq");
		if (v && v->type == JSON_NUMBER && v->num.is_uint)
			got.diskseq = v->num.u;
	} else if (!strcmp(t->str.s, "file")) {
		v = json_get(pl, "dev");
		if (!v || v->type != JSON_STRING ||
		    sscanf(v->str.s, "%u:%u%c", &ma, &mi, &extra) != 2)
			return cli_bad_reply("pool.dev");
		got.dev = makedev(ma, mi);
		v = json_get(pl, "ino");
		if (!v || v->type != JSON_NUMBER || !v->num.is_uint)
			return cli_bad_reply("pool.ino");
		got.ino = (ino_t) v->num.u;
	} else {
		return -ESTALE;
	}
	return io_ident_equal(&want, &got) ? 0 : -ESTALE;
}

static int remote_hello(struct cli_pool *p, const char *path, const char *sock)
{
	const struct json_value *res;
	struct json_value *doc;
	struct rq q;
	uint64_t proto = 0;
	int r;

	if ((r = cli_rq_start(&q, p, "hello")) ||
	    (r = cli_call(p, &q, -1, &doc, &res, NULL)))
		return r;
	r = cli_r_u64(res, "proto", &proto);
	if (!r && proto != CTL_PROTO_VERSION)
		r = cli_set_msg(-EPROTONOSUPPORT,
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
 * go on offline), or a negative errno with cli_remote_msg set (refuse).
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

		io_uid_name(sst.st_uid, who, sizeof(who));
		return cli_set_msg(
		    -EPERM,
		    "%s is in the place of the pool's control "
		    "socket but is not a socket (%s, owned by "
		    "%s): refusing to use it; remove it",
		    sock, S_ISLNK(sst.st_mode) ? "a symbolic link" : "a file",
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
		return cli_set_msg(-errno, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
		/* stale (nobody listens), gone, or not ours to use: the
		 * pool's lock tells the rest */
		close(fd);
		return 0;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		r = cli_set_msg(-errno, "control socket %s: SO_PEERCRED: %s",
				sock, strerror(errno));
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
	cli_remote = true;
	r = remote_hello(p, path, sock);
	if (r == 0)
		return 1;
	close(fd);
	p->fd = -1;
	cli_remote = false;
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
	if (have_st &&
	    ctl_socket_path(path, ".ctl.sock", sock, sizeof(sock)) == 0)
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
	return cli_error(cli_exit(r), "%s: %s", path, cli_remote_msg);
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
