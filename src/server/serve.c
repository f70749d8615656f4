/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * serve.c - the daemon's life:
 *
 *   detach (unless --foreground) -> open the pool (exclusive lock)
 *   -> TLS credentials -> listen (NBD Unix socket, TCP, control socket)
 *   -> ready (pidfile, "serving" line, parent exits 0)
 *   -> accept until SIGTERM/SIGINT
 *   -> stop accepting -> finish requests in flight -> stop the control
 *      server -> close the pool (final commit, lock released)
 *   -> remove sockets and pidfile -> exit 0
 *
 * Signals are blocked in every thread and taken by the main loop through
 * a signalfd, so no handler runs in the middle of engine code.  SIGPIPE
 * is ignored: a client that went away is an EPIPE on its connection.
 * SIGHUP is taken like SIGTERM.
 *
 * Test only: with THINVOL_TEST_FAULTS=1 in the environment the pool is
 * opened through the fault-injection device of io/io.h, which the control
 * op "test.fault" arms (docs/control.md, "Test-only operations"), so that
 * tests/nbd/test-faults.sh can fail the pool's I/O under a running daemon.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "server/ctl.h"
#include "server/nbds.h"
#include "server/serve.h"
#include "server/tls.h"
#include "server/usock.h"
#include "thin/thin-ext.h"
#include "thinvol.h"

struct daemon {
	const struct serve_opts *o;
	struct tv_pool *pool;
	struct tls_ctx *tls;
	struct nbds *nbds;
	struct ctl_server *ctl;
	struct usock nbd;
	int tcp_fd, sig_fd;
	char ctl_path[108];
	char tcp_addr[80]; /* what --listen bound: "ADDR:PORT" */
	int pid_fd;	   /* the pidfile, locked; or -1 */
	struct stat pid_st;
	bool ready;   /* it served: start() succeeded */
	int ready_fd; /* the detached child's pipe to its parent, or -1 */
	const struct ctl_hooks *hooks; /* the control server's (recover) */
	struct timespec last_recover;
};

/* How often a pool made read-only by a full device is probed (recover). */
#define RECOVER_MS 2000

/* ---- logging ---- */

static FILE *log_out;
static bool log_syslog;

static void log_line(int level, const char *msg, void *ctx)
{
	static const char *const names[] = {"error", "warning", "info",
					    "debug"};
	(void) ctx;
	if (level < 0 || level > 3)
		level = 0;
	if (log_syslog) {
		static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO,
					   LOG_DEBUG};
		syslog(prio[level], "%s", msg);
		return;
	}
	if (log_out) {
		struct timespec ts;
		struct tm tm;
		char when[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(log_out, "%s.%03ld thinvol serve[%ld]: %s%s%s\n", when,
			ts.tv_nsec / 1000000, (long) getpid(),
			level <= 1 ? names[level] : "", level <= 1 ? ": " : "",
			msg);
		fflush(log_out);
	}
}

static void say(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_line(level, buf, NULL);
}

/* A fatal start-up error: logged, and told to a waiting parent as
 * "ERRNO MESSAGE".  Returns err (a negative errno). */
static int fail(struct daemon *d, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct daemon *d, int err, const char *fmt, ...)
{
	char buf[1024], msg[1100];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_line(0, buf, NULL);
	if (d->ready_fd >= 0) {
		/* the parent prints it on its stderr too */
		n = snprintf(msg, sizeof(msg), "%d %s", -err, buf);
		if (n > 0 && write(d->ready_fd, msg, (size_t) n) < 0) {
			/* the parent is gone: nobody to tell */
		}
		close(d->ready_fd);
		d->ready_fd = -1;
	}
	return err < 0 ? err : -EIO;
}

/* ---- sockets ---- */

int serve_parse_listen(const char *spec, char *host, size_t hostlen,
		       unsigned int *port, char *err, size_t errlen)
{
	const char *h = spec, *p;
	unsigned long v;
	size_t hl;
	char *end;

	/* ADDR:PORT, [V6]:PORT or :PORT (every address) */
	if (*spec == '[') {
		const char *e = strchr(spec, ']');

		if (!e || e[1] != ':')
			goto bad;
		h = spec + 1;
		hl = (size_t) (e - h);
		p = e + 2;
	} else {
		const char *colon = strrchr(spec, ':');

		if (!colon)
			goto bad;
		hl = (size_t) (colon - spec);
		p = colon + 1;
	}
	if (hl >= hostlen)
		goto bad;
	/* decimal digits only: no sign, no spaces, no service names */
	errno = 0;
	v = strtoul(p, &end, 10);
	if (!*p || *end || p[strspn(p, "0123456789")] || errno || v < 1 ||
	    v > 65535) {
		snprintf(err, errlen,
			 "--listen %s: the port must be a number from 1 to "
			 "65535",
			 spec);
		return -EINVAL;
	}
	memcpy(host, h, hl);
	host[hl] = 0;
	*port = (unsigned int) v;
	return 0;
bad:
	snprintf(err, errlen, "--listen %s: want ADDR:PORT or [IPV6]:PORT",
		 spec);
	return -EINVAL;
}

int serve_check_opts(const struct serve_opts *o, char *err, size_t errlen)
{
	char host[256];
	unsigned int port;
	int r;

	if (!o->listen)
		return 0;
	r = serve_parse_listen(o->listen, host, sizeof(host), &port, err,
			       errlen);
	if (r < 0)
		return r;
	/*
	 * Over TCP anyone who can reach the port is a client: only a PSK
	 * or a client certificate checked against --tls-ca tells them
	 * apart, and only with --tls require can nobody skip it.  The Unix
	 * socket is the file mode's business (0600).
	 */
	if (!serve_tcp_authenticated(o) && !o->allow_unauthenticated) {
		snprintf(err, errlen,
			 "--listen %s: TCP clients would not be "
			 "authenticated (%s): anyone who can reach the port "
			 "could read and write every volume; use --tls-psk, "
			 "or --tls-cert with --tls-ca, with --tls require, "
			 "or say --allow-unauthenticated",
			 o->listen,
			 !o->tls_psk && !o->tls_cert ? "no TLS"
			 : o->tls != SERVE_TLS_REQUIRE
			     ? "--tls optional lets plaintext clients in"
			     : "a certificate without --tls-ca checks no "
			       "client");
		return -EINVAL;
	}
	return 0;
}

bool serve_tcp_authenticated(const struct serve_opts *o)
{
	return o->tls == SERVE_TLS_REQUIRE && (o->tls_psk || o->tls_ca);
}

/* "ADDR:PORT" or "[ADDR]:PORT" of a bound socket. */
static void bound_addr(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getsockname(fd, (struct sockaddr *) &ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *) &ss, sl, host, sizeof(host), serv,
			sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(buf, len, "?");
		return;
	}
	snprintf(buf, len, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, serv);
}

static int tcp_listen(const char *spec, int *out, char *addr, size_t addrlen,
		      char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char host[256], port_s[8];
	unsigned int port;
	int fd = -1, one = 1, r;

	r = serve_parse_listen(spec, host, sizeof(host), &port, err, errlen);
	if (r < 0)
		return r;
	snprintf(port_s, sizeof(port_s), "%u", port);
	r = getaddrinfo(host[0] ? host : NULL, port_s, &hints, &res);
	if (r) {
		snprintf(err, errlen, "--listen %s: %s", spec, gai_strerror(r));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
	    listen(fd, 128) < 0) {
		r = -errno;
		snprintf(err, errlen, "--listen %s: %s", spec, strerror(-r));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return r;
	}
	freeaddrinfo(res);
	bound_addr(fd, addr, addrlen);
	*out = fd;
	return 0;
}

/*
 * The pidfile: opened without following a symlink, never truncated
 * before we hold its lock, and kept open and locked (flock) while the
 * daemon runs, so that a second daemon given the same pidfile fails
 * instead of overwriting the first one's pid.  Only a regular file that
 * we own with one link is ours to write.
 */
static int pidfile_lock(struct daemon *d)
{
	const char *path = d->o->pidfile;
	struct stat *st = &d->pid_st;
	const char *why = NULL;
	char who[64];
	pid_t pid;
	int fd, r;

	/* O_NONBLOCK: a FIFO put there must not make us wait for a reader */
	fd = open(path,
		  O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
		      O_NOCTTY,
		  0644);
	if (fd < 0) {
		r = -errno;
		return fail(d, r, "--pidfile %s: %s", path,
			    r == -ELOOP	  ? "a symbolic link: refusing to "
					    "follow it"
			    : r == -ENXIO ? "not a regular file: refusing to "
					    "write it"
					  : strerror(-r));
	}
	if (fstat(fd, st) < 0) {
		r = -errno;
		close(fd);
		return fail(d, r, "--pidfile %s: %s", path, strerror(-r));
	}
	if (!S_ISREG(st->st_mode))
		why = "not a regular file";
	else if (st->st_nlink != 1)
		why = "it has other hard links";
	else if (st->st_uid != geteuid())
		why = "owned by another user";
	if (why) {
		close(fd);
		return fail(d, -EPERM, "--pidfile %s: %s: refusing to write it",
			    path, why);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		pid = r == -EBUSY ? io_lock_holder(st->st_dev, st->st_ino) : 0;
		who[0] = 0;
		if (pid > 0)
			snprintf(who, sizeof(who), " (process %ld)",
				 (long) pid);
		close(fd);
		return fail(d, r, "--pidfile %s: %s%s", path,
			    r == -EBUSY ? "locked by a running daemon"
					: strerror(-r),
			    who);
	}
	d->pid_fd = fd;
	return 0;
}

/* Write our pid into the locked pidfile (once the daemon is ready). */
static int pidfile_write(struct daemon *d)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long) getpid());

	if (ftruncate(d->pid_fd, 0) < 0 ||
	    pwrite(d->pid_fd, buf, (size_t) n, 0) != n)
		return -(errno ? errno : EIO);
	return 0;
}

/*
 * Unlock the pidfile, and remove it if the path still names ours: at a
 * clean exit, and after a failed start (it never held a running daemon's
 * pid).  A daemon that served and then failed (its final commit) keeps
 * it, with its pid (docs/nbd.md, "Shutdown").
 */
static void pidfile_drop(struct daemon *d, bool remove)
{
	struct stat st;

	if (d->pid_fd < 0)
		return;
	if (remove && lstat(d->o->pidfile, &st) == 0 &&
	    st.st_dev == d->pid_st.st_dev && st.st_ino == d->pid_st.st_ino)
		unlink(d->o->pidfile);
	close(d->pid_fd);
	d->pid_fd = -1;
}

/*
 * The directory of a block-device pool's sockets: made by root, mode
 * 0700.  One that others may write into (or not a directory of root's or
 * ours) is refused: whoever can create files there could put a socket in
 * the daemon's place.
 */
static int run_dir(struct daemon *d)
{
	struct stat st;

	if (mkdir(CTL_RUN_DIR, 0700) < 0 && errno != EEXIST)
		return fail(d, -errno, "%s: %s", CTL_RUN_DIR, strerror(errno));
	if (lstat(CTL_RUN_DIR, &st) < 0)
		return fail(d, -errno, "%s: %s", CTL_RUN_DIR, strerror(errno));
	if (!S_ISDIR(st.st_mode) ||
	    (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 0022))
		return fail(d, -EPERM,
			    "%s: %s: refusing to put the pool's sockets there",
			    CTL_RUN_DIR,
			    !S_ISDIR(st.st_mode) ? "not a directory"
			    : st.st_mode & 0022	 ? "others may write into it"
						 : "owned by another user");
	return 0;
}

/* ---- descriptors ---- */

/* Descriptors kept from NBD connections: the control server's clients
 * and the descriptors they pass (ctl-server.c: 32 and 4 each), the pool,
 * the listening sockets, signalfd, syslog, TLS files, the odd library. */
#define SERVE_FD_RESERVE 256

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit, and return how many NBD
 * connections the descriptors allow: want, or fewer so that
 * SERVE_FD_RESERVE stay free even when every connection is taken (said
 * as a warning when the user asked for want).  A flood of connections
 * then never starves the control socket.
 */
static unsigned int fd_budget(unsigned int want, bool asked)
{
	struct rlimit rl;
	rlim_t avail;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return want;
	if (rl.rlim_cur < rl.rlim_max) {
		/* an infinite hard limit is not a number setrlimit takes
		 * for descriptors (fs.nr_open caps it): ask for 2^20 */
		struct rlimit up = {
		    .rlim_cur =
			rl.rlim_max == RLIM_INFINITY ? 1u << 20 : rl.rlim_max,
		    .rlim_max = rl.rlim_max,
		};
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl.rlim_cur = up.rlim_cur;
	}
	avail = rl.rlim_cur > 2 * SERVE_FD_RESERVE
		    ? rl.rlim_cur - SERVE_FD_RESERVE
		    : rl.rlim_cur / 2;
	if (want > avail) {
		say(asked ? 1 : 2,
		    "at most %llu NBD connections, not %u: the descriptor "
		    "limit (RLIMIT_NOFILE) is %llu, and %llu of them are kept "
		    "for the control socket and the pool",
		    (unsigned long long) avail, want,
		    (unsigned long long) rl.rlim_cur,
		    (unsigned long long) (rl.rlim_cur - avail));
		want = (unsigned int) avail;
	}
	return want;
}

/* ---- control hooks ---- */

static int hook_claim(void *ctx, uint64_t id, bool force, char *msg,
		      size_t msglen)
{
	struct daemon *d = ctx;
	struct tv_vol_info v;
	int r = nbds_claim(d->nbds, id, force, msg, msglen);

	/* name the volume in the message, as every other error does */
	if (r == -EBUSY && tv_vol_info(d->pool, id, &v) == 0) {
		size_t n = nbds_connections(d->nbds, id);
		snprintf(msg, msglen,
			 "volume '%s' is exported to %zu NBD client%s; use "
			 "--force to disconnect %s",
			 v.name, n ? n : 1, n == 1 ? "" : "s",
			 n == 1 ? "it" : "them");
	}
	return r;
}

static void hook_release(void *ctx, uint64_t id)
{
	struct daemon *d = ctx;

	nbds_release(d->nbds, id);
}

/* ---- test-only fault injection ---- */

#define TEST_FAULTS_ENV "THINVOL_TEST_FAULTS"

static bool test_faults_wanted(void)
{
	const char *e = getenv(TEST_FAULTS_ENV);

	return e && !strcmp(e, "1");
}

/*
 * What tv_pool_open does (open the file, claim it as the engine does,
 * open the pool), with a fault-injection device (disarmed) between the
 * engine and the file.  The device is owned by the pool; the control
 * server arms it.
 */
static int open_pool_with_faults(struct daemon *d,
				 const struct tv_pool_open_opts *po)
{
	const char *path = d->o->pool;
	struct io_dev *file, *fdev;
	char why[640];
	int r;

	say(1,
	    "%s=1: FAULT INJECTION IS ENABLED: the control op "
	    "\"test.fault\" can fail this pool's I/O; for tests only",
	    TEST_FAULTS_ENV);
	r = io_file_open(path, 0, 0, &file);
	if (r < 0)
		return fail(d, r, "%s: %s", path, strerror(-r));
	r = io_file_claim(file, why, sizeof(why));
	if (r < 0) {
		io_close(file);
		return fail(d, r, "%s: %s%s", path,
			    r == -EBUSY ? "the pool is in use by " : "", why);
	}
	r = io_fault_wrap(file, true, &fdev);
	if (r < 0) {
		io_close(file);
		return fail(d, r, "%s: %s", path, strerror(-r));
	}
	r = pool_open_dev(fdev, true, path, po, &d->pool);
	if (r < 0)
		return fail(d, r, "%s", tv_last_error());
	ctl_set_test_faults(fdev);
	return 0;
}

/* ---- start, loop, stop ---- */

static int start(struct daemon *d, struct ctl_hooks *hooks)
{
	const struct serve_opts *o = d->o;
	struct tv_pool_open_opts po = {
	    .commit_interval_ms = o->commit_interval_ms,
	};
	struct nbds_opts no = {0};
	struct tv_pool_info info;
	char err[512], nbd_path[108];
	int r;

	/* a second daemon given the same pidfile stops here */
	if (o->pidfile) {
		r = pidfile_lock(d);
		if (r < 0)
			return r;
	}
	if (o->socket) {
		if (strlen(o->socket) >= sizeof(nbd_path))
			return fail(d, -ENAMETOOLONG,
				    "--socket %s: path too long for a Unix "
				    "socket",
				    o->socket);
		snprintf(nbd_path, sizeof(nbd_path), "%s", o->socket);
	} else if (ctl_socket_path(o->pool, ".nbd.sock", nbd_path,
				   sizeof(nbd_path)) < 0) {
		return fail(d, -ENAMETOOLONG,
			    "%s: path too long for a Unix socket beside it; "
			    "use --socket",
			    o->pool);
	}
	if (ctl_socket_path(o->pool, ".ctl.sock", d->ctl_path,
			    sizeof(d->ctl_path)) < 0)
		return fail(d, -ENAMETOOLONG,
			    "%s: path too long for the control socket "
			    "beside it",
			    o->pool);

	if (test_faults_wanted()) {
		r = open_pool_with_faults(d, &po);
		if (r < 0)
			return r;
	} else {
		r = tv_pool_open(o->pool, &po, &d->pool);
		if (r < 0)
			return fail(d, r, "%s", tv_last_error());
	}
	if (tv_pool_fs_flags(d->pool) & TV_POOL_FS_NO_JOURNAL)
		say(1, "%s: " SERVE_NO_JOURNAL_WARNING, o->pool);
	if (tv_pool_fs_flags(d->pool) & TV_POOL_FS_COW)
		say(1, "%s: " SERVE_COW_WARNING, o->pool);
	{
		struct stat st;
		char what[256];

		if (fstat(io_dev_fd(pool_dev(d->pool)), &st) == 0 &&
		    io_pool_file_exposed(&st, what, sizeof(what)))
			say(1, "%s: %s", o->pool, what);
	}
	r = tv_pool_info(d->pool, &info);
	if (r == 0 && info.state != TV_POOL_RW)
		return fail(d, -EROFS,
			    "%s: the pool is read-only%s%s: run 'thinvol "
			    "check' and fix the device first",
			    o->pool, info.reason[0] ? ": " : "", info.reason);
	if (o->tls_psk || o->tls_cert) {
		struct tls_opts to = {.psk_file = o->tls_psk,
				      .cert_file = o->tls_cert,
				      .key_file = o->tls_key,
				      .ca_file = o->tls_ca};
		err[0] = 0;
		r = tls_ctx_new(&to, &d->tls, err, sizeof(err));
		if (r < 0)
			return fail(d, r, "TLS: %s",
				    err[0] ? err : strerror(-r));
	}

	/* a block device's sockets are in CTL_RUN_DIR, a file's beside it
	 * (or in CTL_RUN_DIR too when its path is too long for that) */
	if (!strncmp(d->ctl_path, CTL_RUN_DIR "/", strlen(CTL_RUN_DIR) + 1)) {
		r = run_dir(d);
		if (r < 0)
			return r;
	}

	no.pool = d->pool;
	no.tls = d->tls;
	no.tls_required = d->tls && o->tls == SERVE_TLS_REQUIRE;
	no.verbose = o->verbose;
	no.max_connections = fd_budget(
	    o->max_connections ? o->max_connections : NBDS_DEFAULT_CONNECTIONS,
	    o->max_connections != 0);
	no.max_per_peer =
	    o->max_per_peer ? o->max_per_peer : NBDS_DEFAULT_PER_PEER;
	no.handshake_ms =
	    1000 * (o->handshake_timeout_s ? o->handshake_timeout_s
					   : NBDS_DEFAULT_HANDSHAKE_S);
	no.stall_ms = 1000 * NBDS_DEFAULT_STALL_S;
	no.max_memory = o->max_memory;
	r = nbds_new(&no, &d->nbds);
	if (r < 0)
		return fail(d, r, "out of memory");

	r = usock_listen(&d->nbd, nbd_path, 128, err, sizeof(err));
	if (r < 0)
		return fail(d, r, "%s: %s", nbd_path, err);
	if (o->listen) {
		err[0] = 0;
		r = tcp_listen(o->listen, &d->tcp_fd, d->tcp_addr,
			       sizeof(d->tcp_addr), err, sizeof(err));
		if (r < 0)
			return fail(d, r, "%s", err);
		if (!serve_tcp_authenticated(o))
			say(1,
			    "listening on TCP %s %s: anyone who can reach "
			    "it can read and write every volume "
			    "(--allow-unauthenticated); use --tls-psk, or "
			    "--tls-cert with --tls-ca, with --tls require",
			    d->tcp_addr,
			    !d->tls ? "WITHOUT TLS"
			    : o->tls != SERVE_TLS_REQUIRE
				? "with TLS optional"
				: "with TLS but without client "
				  "authentication");
	}
	hooks->ctx = d;
	hooks->claim = hook_claim;
	hooks->release = hook_release;
	d->hooks = hooks;
	r = ctl_server_start(d->ctl_path, d->pool, hooks, &d->ctl, err,
			     sizeof(err));
	if (r < 0)
		return fail(d, r, "%s: %s", d->ctl_path, err);
	if (d->pid_fd >= 0) {
		r = pidfile_write(d);
		if (r < 0)
			return fail(d, r, "--pidfile %s: %s", o->pidfile,
				    strerror(-r));
	}
	say(2,
	    "serving %s (%" PRIu64 " volume%s) on "
	    "nbd+unix:///VOLUME?socket=%s%s%s; control socket %s",
	    o->pool, info.nr_volumes, info.nr_volumes == 1 ? "" : "s",
	    d->nbd.path, o->listen ? " and TCP " : "", d->tcp_addr,
	    d->ctl_path);
	if (d->ready_fd >= 0) {
		close(d->ready_fd); /* EOF without a message: ready */
		d->ready_fd = -1;
	}
	d->ready = true;
	return 0;
}

/* Accept one connection and hand it to the NBD server, which applies
 * the connection limits (a refused one is closed at once). */
static void accept_one(struct daemon *d, int lfd, bool tcp)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char peer[64] = "unix", host[NI_MAXHOST] = "";
	int fd;

	fd = accept4(lfd, (struct sockaddr *) &ss, &sl, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
			say(1, "accept: %s", strerror(errno));
		if (errno == EMFILE || errno == ENFILE)
			usleep(100000); /* don't spin on a full table */
		return;
	}
	if (tcp) {
		char serv[NI_MAXSERV];
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (getnameinfo((struct sockaddr *) &ss, sl, host, sizeof(host),
				serv, sizeof(serv),
				NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			snprintf(peer, sizeof(peer),
				 strchr(host, ':') ? "[%.46s]:%.8s"
						   : "%.46s:%.8s",
				 host, serv);
		else
			snprintf(host, sizeof(host), "?"); /* one peer */
	} else {
		static unsigned long seq;
		snprintf(peer, sizeof(peer), "unix#%lu", ++seq);
	}
	nbds_accept(d->nbds, fd, peer, tcp ? host : NULL);
}

/*
 * A pool that went read-only because its device had no room (ENOSPC or
 * EDQUOT: a full backing filesystem) is reopened once a probe write and
 * sync pass again, as `thinvol pool reopen` would (ctl_pool_reopen: every
 * NBD client is disconnected first, and sees what a crash would show it).
 * Room comes back without anyone here noticing; other errors (a device
 * failing with EIO, damaged metadata) want a look first, and wait for the
 * command.  At most every RECOVER_MS, from the main loop.
 */
static void recover(struct daemon *d)
{
	struct tv_pool_info in;
	struct timespec now;
	char msg[512] = "";

	clock_gettime(CLOCK_MONOTONIC, &now);
	if ((now.tv_sec - d->last_recover.tv_sec) * 1000 +
		(now.tv_nsec - d->last_recover.tv_nsec) / 1000000 <
	    RECOVER_MS)
		return;
	d->last_recover = now;
	if (tv_pool_info(d->pool, &in) < 0 || in.state != TV_POOL_READ_ONLY ||
	    (in.error != -ENOSPC && in.error != -EDQUOT))
		return;
	if (ctl_pool_reopen(d->pool, d->hooks, msg, sizeof(msg)) == 0 &&
	    tv_pool_info(d->pool, &in) == 0)
		say(2,
		    "the pool's device takes writes again: reopened at "
		    "transaction %" PRIu64 " (NBD clients were "
		    "disconnected)",
		    in.transaction);
}

static int loop(struct daemon *d)
{
	for (;;) {
		struct pollfd pf[3] = {
		    {.fd = d->sig_fd, .events = POLLIN},
		    {.fd = d->nbd.fd, .events = POLLIN},
		    {.fd = d->tcp_fd, .events = POLLIN},
		};
		int r = poll(pf, d->tcp_fd >= 0 ? 3 : 2, RECOVER_MS);

		recover(d);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			say(0, "poll: %s", strerror(errno));
			return -errno;
		}
		if (pf[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(d->sig_fd, &si, sizeof(si)) == sizeof(si)) {
				say(2, "%s: shutting down",
				    strsignal((int) si.ssi_signo));
				return 0;
			}
		}
		if (pf[1].revents & POLLIN)
			accept_one(d, d->nbd.fd, false);
		if (d->tcp_fd >= 0 && (pf[2].revents & POLLIN))
			accept_one(d, d->tcp_fd, true);
	}
}

static int stop(struct daemon *d, int status)
{
	/* stop accepting; the socket goes at the end */
	if (d->nbd.fd >= 0)
		close(d->nbd.fd);
	if (d->tcp_fd >= 0)
		close(d->tcp_fd);
	d->nbd.fd = d->tcp_fd = -1;
	/* finish what clients sent; then no more management */
	if (d->nbds)
		nbds_shutdown(d->nbds);
	if (d->ctl)
		ctl_server_stop(d->ctl);
	/* the final commit, and the lock goes */
	if (d->pool) {
		int r = tv_pool_close(d->pool);
		if (r < 0) {
			say(0, "closing the pool: %s", tv_last_error());
			status = status ? status : r;
		}
	}
	usock_close(&d->nbd);
	pidfile_drop(d, !status || !d->ready);
	nbds_free(d->nbds);
	if (d->tls)
		tls_ctx_free(d->tls);
	if (d->sig_fd >= 0)
		close(d->sig_fd);
	if (!status)
		say(2, "stopped");
	return status;
}

/*
 * Detach: fork; the child becomes the daemon (new session, cwd kept so
 * relative paths still work, stdin on /dev/null) and reports "ready" or
 * its error through a pipe; the parent waits for that and exits with the
 * matching status.  Returns -1 in the parent (after printing any error),
 * 0 in the child.
 */
static int detach(struct daemon *d, int *parent_status)
{
	int p[2], null;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		char msg[1024];
		ssize_t n, got = 0;

		close(p[1]);
		while ((n = read(p[0], msg + got,
				 sizeof(msg) - 1 - (size_t) got)) > 0)
			got += n;
		close(p[0]);
		msg[got] = 0;
		*parent_status = 0;
		if (got > 0) {
			/* "ERRNO MESSAGE": the child logged it to syslog; say
			 * it here too, and fail as it did */
			bool sl = log_syslog;
			char *rest;
			long e = strtol(msg, &rest, 10);

			log_syslog = false;
			say(0, "%s", *rest == ' ' ? rest + 1 : msg);
			log_syslog = sl;
			*parent_status = e > 0 && e < 4096 ? -(int) e : -EIO;
		}
		return -1;
	}
	close(p[0]);
	d->ready_fd = p[1];
	setsid();
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		close(null);
	}
	if (!d->o->syslog) {
		/* our log file is the command's stderr: a terminal that may
		 * go away; syslog keeps the daemon's lines */
		log_syslog = true;
		openlog("thinvol", LOG_PID, LOG_DAEMON);
	}
	return 0;
}

int serve_run(const struct serve_opts *o)
{
	struct daemon d = {
	    .o = o,
	    .nbd = USOCK_INIT,
	    .tcp_fd = -1,
	    .sig_fd = -1,
	    .pid_fd = -1,
	    .ready_fd = -1,
	};
	struct ctl_hooks hooks = {0};
	sigset_t set;
	int status;

	log_out = o->log_file ? o->log_file : stderr;
	log_syslog = o->syslog;
	if (o->syslog)
		openlog("thinvol", LOG_PID, LOG_DAEMON);
	tv_set_logger(log_line, NULL, 2);
	{
		char err[512];
		int r = serve_check_opts(o, err, sizeof(err));

		if (r < 0) {
			say(0, "%s", err);
			return r;
		}
	}

	if (!o->foreground) {
		int parent_status = 0, r = detach(&d, &parent_status);
		if (r < 0) {
			if (r != -1)
				say(0, "cannot detach: %s", strerror(-r));
			return r == -1 ? parent_status : r;
		}
	}

	/* every thread inherits this mask: signals only reach sig_fd */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	d.sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
	if (d.sig_fd < 0)
		return stop(&d,
			    fail(&d, -errno, "signalfd: %s", strerror(errno)));

	status = start(&d, &hooks);
	if (status)
		return stop(&d, status);
	status = loop(&d);
	status = stop(&d, status);
	if (!o->foreground)
		exit(status ? 1 : 0);
	return status;
}
