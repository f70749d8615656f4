/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl-copy.c - import and export (see ctl-copy.h).
 *
 * Both copy in chunks of CHUNK bytes, or one pool block when blocks are
 * larger, so that every engine call covers whole blocks except at the
 * volume's end.  Errors are written once into c->msg where they are
 * detected, with the errno that decides the command's exit status.
 *
 * The client's file.  Rules:
 *
 *  1. Every operation on the file a copy was given (fstat, the checks,
 *     which open it again through /proc/self/fd, read, write, lseek,
 *     ftruncate, fsync) goes through struct file.  In the daemon
 *     (cancel_fd or peer_fd set) it runs on the file's own thread while
 *     the copy waits for its result, for the daemon's stop and for the
 *     client's hangup; a FUSE or NFS file that never answers then holds
 *     up that thread and nothing else: the copy ends with ECANCELED, the
 *     client thread answers, the daemon shuts down.  Offline every
 *     operation runs in place.
 *  2. A copy that stops waiting abandons the thread.  The thread owns
 *     everything it touches (its duplicate of the file's descriptor, its
 *     own open of the pool, the chunk buffer, an export's claim on its
 *     target) and
 *     frees it when its call returns, if ever; it never touches the pool,
 *     the request or the copy, so nothing it reads after the copy gave
 *     up reaches the pool.  The engine calls all stay on the copy's
 *     thread.  The pool is opened again for the thread, not
 *     duplicated (and closed once the checks are done): the pool's lock
 *     is a flock of the daemon's own open file description, so a stuck
 *     thread never keeps the pool locked after the daemon closed it
 *     (the daemon takes no POSIX locks, which any close would drop).
 *     Linux waits for a FUSE request that its server has taken and never
 *     answers even through SIGKILL: the daemon then says "stopped" with
 *     the pool closed and its lock free, and its process ends when the
 *     file system answers or its connection is aborted.
 *  3. While FILE_STUCK_MAX abandoned threads still wait for their files,
 *     a new copy is refused (EAGAIN): copies from files that never answer
 *     do not pile up threads and buffers without end.
 *  4. Pipes and sockets need no thread: stream_io waits for them itself
 *     (RWF_NOWAIT and poll()), on the client's own descriptor.
 */
#include "server/ctl-copy.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/io.h"
#include "thin/thin-ext.h"

#define CHUNK	       (1u << 20)
#define FILE_STUCK_MAX 16 /* rule 3 */

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* What struct file does for a copy (rule 1). */
enum fop {
	FOP_STAT,     /* fstat: st */
	FOP_CHECK,    /* check_file: not the pool; an export's claim */
	FOP_READ,     /* pread (off >= 0) or read into buf[pos, pos + len) */
	FOP_WRITE,    /* pwrite (off >= 0) or write from there, through wfd */
	FOP_SEEK,     /* lseek(off, whence) */
	FOP_TRUNCATE, /* ftruncate(off), through wfd */
	FOP_SYNC,     /* fsync, through wfd */
};

/* The client's file (rules 1 and 2). */
struct file {
	/* set before the first call, then the thread's to read */
	int fd;	 /* the file: a duplicate when threaded */
	int pfd; /* the pool's storage, likewise; -1: in memory */
	bool threaded;
	bool import;
	char name[256]; /* the file as the user named it (messages) */
	uint8_t *buf;	/* the chunk buffer, owned here */
	size_t buf_len;
	/* an export's hold on its target (FOP_CHECK) */
	struct io_claim *claim;
	int wfd; /* what writes go through: fd, or the claim's
		  * exclusive descriptor of a block device */
	/* one call at a time; lock guards what follows */
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int done_fd; /* eventfd: the call returned */
	int refs;    /* the copy's and the thread's */
	bool busy;   /* a call is asked for or running */
	bool quit;   /* the copy is done with the file */
	bool stuck;  /* abandoned in a call: counted in file_stuck */
	enum fop op;
	size_t pos, len;
	int64_t off;
	int whence;
	int64_t ret; /* >= 0, or -errno */
	struct stat st;
	char msg[1024]; /* FOP_CHECK: what it found, for c->msg */
};

/* Abandoned threads still in a call (rule 3). */
static atomic_uint file_stuck;

/* One copy in progress. */
struct copy {
	struct ctl_copy *c;
	const char *what; /* "import" or "export" */
	struct tv_pool *pool;
	struct tv_vol_info v;
	uint64_t id;
	uint32_t bs;  /* the pool's block size */
	size_t chunk; /* bytes per engine call: a multiple of bs */
	uint8_t *buf; /* the file's buffer */
	struct file *f;
	enum { WAIT_NONE, WAIT_NOWAIT, WAIT_POLL } wait; /* stream_io */
};

/* The message "WHAT 'VOL': ..." for err; returns err. */
static int copy_err(struct copy *k, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int copy_err(struct copy *k, int err, const char *fmt, ...)
{
	struct ctl_copy *c = k->c;
	va_list ap;
	int n;

	n = snprintf(c->msg, sizeof(c->msg), "%s '%s': ", k->what, c->vol);
	if (n < 0 || (size_t) n >= sizeof(c->msg))
		return err;
	va_start(ap, fmt);
	vsnprintf(c->msg + n, sizeof(c->msg) - (size_t) n, fmt, ap);
	va_end(ap);
	return err;
}

/* An engine error: the context, then the engine's message. */
static int copy_fail(struct copy *k, int err, const char *what, uint64_t off)
{
	const char *why = tv_last_error();

	return copy_err(k, err, "%s at %" PRIu64 ": %s", what, off,
			why && why[0] ? why : strerror(-err));
}

static bool all_zero(const uint8_t *p, size_t len)
{
	/* the first byte, then the buffer against itself shifted by one */
	return !len || (!p[0] && !memcmp(p, p + 1, len - 1));
}

/* The end of the run of blocks of k->buf[pos, len) of one kind, all zero
 * or not (*zero says which), from pos: blocks of k->bs bytes, the last
 * one maybe shorter.  pos < len. */
static size_t same_run(const struct copy *k, size_t pos, size_t len, bool *zero)
{
	size_t end = pos;

	*zero = all_zero(k->buf + pos, MIN(k->bs, len - pos));
	while (end < len) {
		size_t n = MIN(k->bs, len - end);

		if (all_zero(k->buf + end, n) != *zero)
			break;
		end += n;
	}
	return end;
}

/* ---- the client's file (rules 1-3) ---- */

/* Everything f holds: its last reference is gone. */
static void file_free(struct file *f)
{
	if (f->wfd >= 0 && f->wfd != f->fd)
		close(f->wfd);
	io_claim_release(f->claim);
	if (f->threaded && f->fd >= 0)
		close(f->fd);
	if (f->threaded && f->pfd >= 0)
		close(f->pfd);
	if (f->done_fd >= 0)
		close(f->done_fd);
	free(f->buf);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* Drop a reference, with f->lock held (and released here). */
static void file_put_locked(struct file *f)
{
	bool last = --f->refs == 0;

	pthread_mutex_unlock(&f->lock);
	if (last)
		file_free(f);
}

/*
 * FOP_CHECK.  The file must not be the pool's storage, nor share it
 * (io_fd_overlap): an export into it would overwrite the pool, an import
 * from it would read the pool's own blocks while writing them.  An
 * export's regular file or block device must not be an image that a VM
 * has open (qemu takes POSIX locks), and is claimed while it is written,
 * as a pool claims its storage (io_fd_claim_target): not another pool's,
 * not mounted (also through a loop device over it), not under RAID or
 * dm; a block device is then written through its exclusive descriptor.
 */
static void check_file(struct file *f)
{
	char how[512], who[256], why[512];
	struct stat st;
	int r;

	f->ret = 0;
	if (f->pfd >= 0) {
		r = io_fd_overlap(f->pfd, f->fd, how, sizeof(how));
		if (r < 0) {
			snprintf(f->msg, sizeof(f->msg), "%s: %s", f->name,
				 strerror(-r));
			f->ret = r;
			return;
		}
		if (r > 0) {
			snprintf(f->msg, sizeof(f->msg),
				 "refusing to %s %s: %s",
				 f->import ? "read from" : "write into",
				 f->name, how);
			f->ret = -EINVAL;
			return;
		}
	}
	if (f->import || fstat(f->fd, &st) < 0 ||
	    (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)))
		return;
	if (io_fd_locked(f->fd, who, sizeof(who)) > 0) {
		snprintf(f->msg, sizeof(f->msg),
			 "refusing to write into %s: it is in use by %s",
			 f->name, who);
		f->ret = -EBUSY;
		return;
	}
	r = io_fd_claim_target(f->fd, f->name, &f->claim, &f->wfd, why,
			       sizeof(why));
	if (r == -EBUSY)
		snprintf(f->msg, sizeof(f->msg),
			 "refusing to write into %s: it is in use by %s",
			 f->name, why);
	else if (r < 0)
		snprintf(f->msg, sizeof(f->msg), "%s: %s", f->name, why);
	f->ret = r;
}

/* Carry out f->op (on the file's thread when there is one): only f's
 * own fields are touched (rule 2). */
static void run_op(struct file *f)
{
	/* the buffer exists once the copy is set up: READ and WRITE only */
	uint8_t *p = f->buf ? f->buf + f->pos : NULL;
	ssize_t n;
	off_t o;

	switch (f->op) {
	case FOP_STAT:
		f->ret = fstat(f->fd, &f->st) < 0 ? -errno : 0;
		return;
	case FOP_CHECK:
		check_file(f);
		/* the pool's descriptor is needed no more */
		if (f->threaded && f->pfd >= 0) {
			close(f->pfd);
			f->pfd = -1;
		}
		return;
	case FOP_READ:
		do {
			n = f->off >= 0
				? pread(f->fd, p, f->len, (off_t) f->off)
				: read(f->fd, p, f->len);
		} while (n < 0 && errno == EINTR);
		f->ret = n < 0 ? -errno : n;
		return;
	case FOP_WRITE:
		do {
			n = f->off >= 0
				? pwrite(f->wfd, p, f->len, (off_t) f->off)
				: write(f->wfd, p, f->len);
		} while (n < 0 && errno == EINTR);
		f->ret = n < 0 ? -errno : n;
		return;
	case FOP_SEEK:
		o = lseek(f->fd, (off_t) f->off, f->whence);
		f->ret = o < 0 ? -errno : o;
		return;
	case FOP_TRUNCATE:
		f->ret = ftruncate(f->wfd, (off_t) f->off) < 0 ? -errno : 0;
		return;
	case FOP_SYNC:
		f->ret = fsync(f->wfd) < 0 ? -errno : 0;
		return;
	}
	f->ret = -EINVAL;
}

/* The file's thread: one call at a time, until the copy is done with
 * it; abandoned in a call, it frees what it holds once that returns. */
static void *file_main(void *arg)
{
	struct file *f = arg;
	const uint64_t one = 1;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (!f->busy && !f->quit)
			pthread_cond_wait(&f->cv, &f->lock);
		if (!f->busy)
			break; /* done with, between calls */
		pthread_mutex_unlock(&f->lock);
		run_op(f);
		pthread_mutex_lock(&f->lock);
		f->busy = false;
		if (f->quit) {
			if (f->stuck)
				atomic_fetch_sub(&file_stuck, 1);
			break;
		}
		if (write(f->done_fd, &one, sizeof(one)) < 0) {
			/* an eventfd's counter does not fill up */
		}
	}
	file_put_locked(f);
	return NULL;
}

/*
 * The file open on fd (borrowed) for the copy k (rule 1): threaded in the
 * daemon (when threaded), in place offline.  0, or an error with the
 * message set.
 */
static int file_open(struct copy *k, int fd, bool import, bool threaded)
{
	struct ctl_copy *c = k->c;
	struct file *f = calloc(1, sizeof(*f));
	int pfd = io_dev_fd(pool_dev(k->pool)), r;
	pthread_attr_t attr;
	pthread_t t;

	if (!f)
		return copy_err(k, -ENOMEM, "out of memory");
	f->fd = fd;
	f->wfd = fd;
	f->pfd = pfd >= 0 ? pfd : -1;
	f->done_fd = -1;
	f->import = import;
	f->refs = 1;
	snprintf(f->name, sizeof(f->name), "%s", c->file);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cv, NULL);
	k->f = f;
	if (!threaded || (c->cancel_fd < 0 && c->peer_fd < 0))
		return 0;
	if (atomic_load(&file_stuck) >= FILE_STUCK_MAX)
		return copy_err(k, -EAGAIN,
				"%s: %u copies still wait for files that do "
				"not answer; try again later",
				c->file, FILE_STUCK_MAX);
	/* rule 2: descriptors of the thread's own */
	f->threaded = true;
	f->fd = f->wfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (pfd >= 0) {
		/* the pool opened again, not a duplicate: the pool's lock
		 * (a flock) is its open file description's, and a thread
		 * stuck in the checks must not keep it (rule 2) */
		char proc[64];

		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
		f->pfd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	} else {
		f->pfd = -1;
	}
	f->done_fd = eventfd(0, EFD_CLOEXEC);
	if (f->fd < 0 || (pfd >= 0 && f->pfd < 0) || f->done_fd < 0)
		return copy_err(k, -errno, "%s: %s", c->file, strerror(errno));
	f->refs = 2;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &attr, file_main, f);
	pthread_attr_destroy(&attr);
	if (r) {
		f->refs = 1;
		return copy_err(k, -EAGAIN, "%s: cannot start a thread: %s",
				c->file, strerror(r));
	}
	return 0;
}

/* The copy is done with its file (rule 2): a thread still in a call is
 * left to it. */
static void file_close(struct copy *k)
{
	struct file *f = k->f;

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->quit = true;
	if (f->busy && f->threaded) {
		f->stuck = true;
		atomic_fetch_add(&file_stuck, 1);
	}
	pthread_cond_signal(&f->cv);
	file_put_locked(f);
	k->f = NULL;
	k->buf = NULL;
}

/*
 * A pipe, a socket or a terminal needs no thread (rule 4): once the
 * threaded file has looked at it (fstat, the checks), which holds nothing
 * yet, the copy goes on with the descriptor in place.
 */
static int file_settle(struct copy *k, int fd, const struct stat *st,
		       bool import)
{
	if (!k->f->threaded || k->f->claim || k->f->buf ||
	    !(S_ISFIFO(st->st_mode) || S_ISSOCK(st->st_mode) ||
	      S_ISCHR(st->st_mode)))
		return 0;
	file_close(k);
	return file_open(k, fd, import, false);
}

/*
 * Carry out the call set up in k->f and wait for it: 0 when it returned
 * (its result in f->ret), or -ECANCELED with the message set when the
 * copy gave up waiting: the daemon stops, or the client went away.
 */
static int file_call(struct copy *k)
{
	struct file *f = k->f;
	struct ctl_copy *c = k->c;

	if (!f->threaded) {
		run_op(f);
		return 0;
	}
	pthread_mutex_lock(&f->lock);
	f->busy = true;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->lock);
	for (;;) {
		struct pollfd p[3] = {
		    {.fd = f->done_fd, .events = POLLIN},
		    {.fd = c->cancel_fd, .events = POLLIN},
		    {.fd = c->peer_fd, .events = POLLRDHUP},
		};
		uint64_t v;
		bool busy;

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return copy_err(k, -EIO, "%s: poll: %s", c->file,
					strerror(errno));
		}
		if (p[0].revents & POLLIN) {
			if (read(f->done_fd, &v, sizeof(v)) < 0) {
				/* busy below says whether it is done */
			}
			pthread_mutex_lock(&f->lock);
			busy = f->busy;
			pthread_mutex_unlock(&f->lock);
			if (!busy)
				return 0;
		}
		if (p[1].revents)
			return copy_err(k, -ECANCELED,
					"%s: the daemon is stopping", c->file);
		if (p[2].revents)
			return copy_err(k, -ECANCELED,
					"%s: the client went away", c->file);
	}
}

static int file_stat(struct copy *k, struct stat *st)
{
	int r;

	k->f->op = FOP_STAT;
	r = file_call(k);
	if (r == 0 && (r = (int) k->f->ret) < 0)
		return copy_err(k, -EIO, "%s: %s", k->c->file, strerror(-r));
	if (r == 0)
		*st = k->f->st;
	return r;
}

/* FOP_CHECK: 0, or the error with its message. */
static int file_check(struct copy *k)
{
	int r;

	k->f->op = FOP_CHECK;
	r = file_call(k);
	if (r == 0 && (r = (int) k->f->ret) < 0)
		return copy_err(k, r, "%s", k->f->msg);
	return r;
}

/* A read (out false) or write of buf[0, len), a part of the copy's
 * buffer, at off, or where the file stands when off < 0.  The bytes
 * moved, or an error with its message. */
static ssize_t file_rw(struct copy *k, bool out, void *buf, size_t len,
		       int64_t off)
{
	struct file *f = k->f;
	int r;

	assert((uint8_t *) buf >= f->buf &&
	       (uint8_t *) buf + len <= f->buf + f->buf_len);
	f->op = out ? FOP_WRITE : FOP_READ;
	f->pos = (size_t) ((uint8_t *) buf - f->buf);
	f->len = len;
	f->off = off;
	r = file_call(k);
	if (r < 0)
		return r;
	if (f->ret < 0)
		return copy_err(k, -EIO, "%s: %s: %s", k->c->file,
				out ? "write" : "read",
				strerror((int) -f->ret));
	return (ssize_t) f->ret;
}

/* lseek: the offset, or -errno (no message: the caller's to say). */
static int64_t file_seek(struct copy *k, int64_t off, int whence, bool *gave_up)
{
	struct file *f = k->f;

	f->op = FOP_SEEK;
	f->off = off;
	f->whence = whence;
	*gave_up = file_call(k) < 0;
	return *gave_up ? -ECANCELED : f->ret;
}

/* FOP_TRUNCATE (what "truncate" or "sync" says) or FOP_SYNC: 0, or an
 * error with its message. */
static int file_finish(struct copy *k, enum fop op, int64_t len)
{
	struct file *f = k->f;
	int r;

	f->op = op;
	f->off = len;
	r = file_call(k);
	if (r == 0 && f->ret < 0)
		r = copy_err(k, -EIO, "%s: %s: %s", k->c->file,
			     op == FOP_SYNC ? "sync" : "truncate",
			     strerror((int) -f->ret));
	return r;
}

/*
 * One read or write of a stream (not seekable) that gives up when the
 * copy is cancelled (-ECANCELED): the daemon stops, or the client that
 * asked for the copy went away.  How it waits (k->wait, set by
 * stream_kind):
 *
 *   WAIT_NONE    through the file (rule 1): in place offline, where there
 *                is nobody else to wait for; on the file's thread in the
 *                daemon (a regular file or a device written as a stream,
 *                which poll() cannot wait for)
 *   WAIT_NOWAIT  a pipe or a socket: each call says RWF_NOWAIT (the file
 *                description is the client's, so it is never switched to
 *                O_NONBLOCK) and poll()s the stream and the cancel
 *                descriptors when it would block
 *   WAIT_POLL    other streams (a terminal), or where the kernel refuses
 *                RWF_NOWAIT: poll() first, then a read (which returns
 *                what is there) or a write of at most PIPE_BUF bytes
 *
 * buf lies in the copy's buffer.  Returns the bytes moved (0: end of the
 * stream), or a negative errno with the message set.
 */
static ssize_t stream_io(struct copy *k, int fd, void *buf, size_t len,
			 bool out)
{
	struct pollfd p[3] = {
	    {.fd = fd, .events = out ? POLLOUT : POLLIN},
	    {.fd = k->c->cancel_fd, .events = POLLIN},
	    {.fd = k->c->peer_fd, .events = POLLRDHUP},
	};
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	const char *what = out ? "write" : "read";
	bool ready = false;
	ssize_t n;

	if (k->wait == WAIT_NONE)
		return file_rw(k, out, buf, len, -1);
	for (;;) {
		if (k->wait == WAIT_POLL && ready)
			n = out ? write(fd, buf, MIN(len, (size_t) PIPE_BUF))
				: read(fd, buf, len);
		else if (k->wait == WAIT_NOWAIT)
			n = out ? pwritev2(fd, &iov, 1, -1, RWF_NOWAIT)
				: preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
		else
			n = -1, errno = EAGAIN;
		if (n >= 0)
			return n;
		if (errno == EOPNOTSUPP && k->wait == WAIT_NOWAIT) {
			k->wait = WAIT_POLL; /* not for this file */
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return copy_err(k, -EIO, "%s: %s: %s", k->c->file, what,
					strerror(errno));
		if (poll(p, k->c->peer_fd >= 0 ? 3 : 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return copy_err(k, -EIO, "%s: poll: %s", k->c->file,
					strerror(errno));
		}
		if (p[1].revents)
			return copy_err(k, -ECANCELED,
					"%s: the daemon is stopping",
					k->c->file);
		if (p[2].revents)
			return copy_err(k, -ECANCELED,
					"%s: the client went away", k->c->file);
		ready = p[0].revents != 0;
	}
}

/* How stream_io waits on a stream of this type. */
static void stream_kind(struct copy *k, mode_t mode)
{
	if (k->c->cancel_fd < 0 && k->c->peer_fd < 0)
		k->wait = WAIT_NONE;
	else if (S_ISFIFO(mode) || S_ISSOCK(mode))
		k->wait = WAIT_NOWAIT;
	else if (S_ISCHR(mode))
		k->wait = WAIT_POLL;
	else
		k->wait = WAIT_NONE;
}

/* The volume, the pool block size, the chunk and its buffer (the
 * file's). */
static int copy_setup(struct copy *k, struct tv_pool_info *in)
{
	const char *why;
	int r;

	r = tv_vol_info(k->pool, k->id, &k->v);
	if (r < 0 || (r = tv_pool_info(k->pool, in)) < 0) {
		why = tv_last_error();
		return copy_err(k, r, "%s", why && why[0] ? why : strerror(-r));
	}
	k->bs = in->block_size;
	k->chunk = k->bs > CHUNK ? k->bs : CHUNK;
	/* aligned for O_DIRECT pools and devices; CHUNK and bs are powers
	 * of two */
	if (posix_memalign((void **) &k->buf, 4096, k->chunk)) {
		k->buf = NULL;
		return copy_err(k, -ENOMEM, "out of memory");
	}
	k->f->buf = k->buf;
	k->f->buf_len = k->chunk;
	return 0;
}

/* ---- import ---- */

/* Read up to len bytes at off (or sequentially when !seekable); *got is
 * how many, fewer only at the end of the file. */
static int read_full(struct copy *k, int fd, bool seekable, uint8_t *buf,
		     size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n;

		if (!seekable)
			n = stream_io(k, fd, buf + done, len - done, false);
		else
			n = file_rw(k, false, buf + done, len - done,
				    (int64_t) (off + done));
		if (n < 0)
			return (int) n;
		if (n == 0)
			break;
		done += (size_t) n;
	}
	*got = done;
	return 0;
}

/* [off, off + len) of the volume reads zero from now on. */
static int import_zero(struct copy *k, bool unmapped, uint64_t off,
		       uint64_t len)
{
	int r;

	k->c->zero += len;
	if (unmapped || !len)
		return 0;
	r = tv_vol_discard(k->pool, k->id, len, off);
	if (r < 0)
		return copy_fail(k, r, "discard", off);
	return 0;
}

/* Write buf[0, len) at off: the non-zero blocks, and discard the others.
 * off is block-aligned; len is a multiple of 512. */
static int import_chunk(struct copy *k, bool unmapped, uint64_t off, size_t len)
{
	size_t pos = 0;
	int r;

	while (pos < len) {
		bool zero;
		size_t end = same_run(k, pos, len, &zero);

		if (zero) {
			r = import_zero(k, unmapped, off + pos, end - pos);
		} else {
			r = tv_vol_write(k->pool, k->id, k->buf + pos,
					 end - pos, off + pos, 0);
			if (r < 0)
				r = copy_fail(k, r, "write", off + pos);
			else
				k->c->copied += end - pos;
		}
		if (r)
			return r;
		pos = end;
	}
	return 0;
}

static int import_run(struct copy *k, int fd, const struct stat *st)
{
	const char *file = k->c->file;
	bool is_reg = S_ISREG(st->st_mode);
	bool seekable = is_reg || S_ISBLK(st->st_mode);
	bool seek_data = is_reg, gave_up;
	/* nothing mapped yet: zeroes need no discard (we move forwards) */
	bool unmapped = k->v.mapped == 0;
	uint64_t vsize = k->v.size, fsize = UINT64_MAX, off = 0;
	size_t got = 0;
	int r;

	if (is_reg) {
		fsize = (uint64_t) st->st_size;
	} else if (seekable) {
		int64_t end = file_seek(k, 0, SEEK_END, &gave_up);

		if (gave_up)
			return (int) end;
		if (end < 0)
			return copy_err(k, -EIO, "%s: %s", file,
					strerror((int) -end));
		fsize = (uint64_t) end;
	}
	stream_kind(k, st->st_mode);
	if (fsize != UINT64_MAX && fsize > vsize)
		return copy_err(k, -EINVAL,
				"%s is %" PRIu64 " bytes, larger "
				"than the volume (%" PRIu64
				" bytes); resize the volume first",
				file, fsize, vsize);
	while (off < vsize) {
		uint64_t n = MIN((uint64_t) k->chunk, vsize - off);

		if (off >= fsize)
			return import_zero(k, unmapped, off, vsize - off);
		if (seek_data) {
			/* skip the hole at off, in whole blocks */
			int64_t d =
			    file_seek(k, (int64_t) off, SEEK_DATA, &gave_up);
			uint64_t data;

			if (gave_up)
				return (int) d;
			if (d == -ENXIO) {
				data = fsize; /* a hole up to the end */
			} else if (d < 0) {
				seek_data = false; /* not supported here */
				data = off;
			} else {
				data = (uint64_t) d;
			}
			data -= data % k->bs;
			if (data > off) {
				r = import_zero(k, unmapped, off, data - off);
				if (r)
					return r;
				off = data;
				continue;
			}
		}
		r = read_full(k, fd, seekable, k->buf, (size_t) n, off, &got);
		if (r)
			return r;
		/* past the end of the file: zeroes */
		memset(k->buf + got, 0, (size_t) n - got);
		if (got < n)
			fsize = off + got;
		r = import_chunk(k, unmapped, off, (size_t) n);
		if (r)
			return r;
		off += n;
	}
	if (fsize == UINT64_MAX) {
		/* a stream as long as the volume: it must end here (one more
		 * byte, read into the buffer: the file's thread may outlive
		 * us, rule 2) */
		r = read_full(k, fd, false, k->buf, 1, 0, &got);
		if (r)
			return r;
		if (got)
			return copy_err(k, -EINVAL,
					"%s is larger than the "
					"volume (%" PRIu64 " bytes); "
					"the volume holds its first "
					"%" PRIu64 " bytes",
					file, vsize, vsize);
	}
	return 0;
}

int ctl_import(struct tv_pool *pool, uint64_t id, int fd, struct ctl_copy *c)
{
	struct copy k = {.c = c, .what = "import", .pool = pool, .id = id};
	struct tv_pool_info in;
	struct stat st = {0};
	int r, f;

	c->copied = c->zero = 0;
	c->msg[0] = 0;
	r = file_open(&k, fd, true, true);
	if (r)
		goto out;
	r = file_stat(&k, &st);
	if (r)
		goto out;
	if (S_ISDIR(st.st_mode)) {
		r = copy_err(&k, -EINVAL, "%s: is a directory", c->file);
		goto out;
	}
	r = file_check(&k);
	if (r || (r = file_settle(&k, fd, &st, true)))
		goto out;
	r = copy_setup(&k, &in);
	if (r)
		goto out;
	/* said at once, even when the image is all zero and the volume
	 * empty, so nothing would be written */
	if (in.state != TV_POOL_RW) {
		r = copy_err(&k, -EROFS, "%s: the pool is read-only%s%.*s",
			     c->pool, in.reason[0] ? ": " : "",
			     (int) sizeof(in.reason), in.reason);
		goto out;
	}
	if (k.v.flags & TV_VOL_READ_ONLY) {
		r = copy_err(&k, -EROFS, "volume '%s' is read-only", k.v.name);
		goto out;
	}
	r = import_run(&k, fd, &st);
	/* what was written is made durable, also after a failure */
	f = tv_pool_flush(pool);
	if (f < 0 && !r)
		r = copy_fail(&k, f, "flush", 0);
out:
	file_close(&k);
	return r;
}

/* ---- export ---- */

static int write_full(struct copy *k, int fd, bool seekable, const uint8_t *buf,
		      size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n;

		if (!seekable)
			n = stream_io(k, fd, (void *) (buf + done), len - done,
				      true);
		else
			n = file_rw(k, true, (void *) (buf + done), len - done,
				    (int64_t) (off + done));
		if (n < 0)
			return (int) n;
		if (n == 0)
			return copy_err(k, -EIO, "%s: write: no progress",
					k->c->file);
		done += (size_t) n;
	}
	return 0;
}

static int export_run(struct copy *k, int fd, bool sparse, bool seekable)
{
	uint64_t vsize = k->v.size, off = 0;
	int r;

	while (off < vsize) {
		size_t n = (size_t) MIN((uint64_t) k->chunk, vsize - off);
		size_t pos = 0;

		r = tv_vol_read(k->pool, k->id, k->buf, n, off);
		if (r < 0)
			return copy_fail(k, r, "read", off);
		while (pos < n) {
			bool zero;
			size_t end = same_run(k, pos, n, &zero);

			if (zero && sparse) {
				k->c->zero += end - pos;
			} else {
				r = write_full(k, fd, seekable, k->buf + pos,
					       end - pos, off + pos);
				if (r)
					return r;
				k->c->copied += end - pos;
			}
			pos = end;
		}
		off += n;
	}
	/* the zero blocks at the end are a hole too: the size says it */
	if (sparse && (r = file_finish(k, FOP_TRUNCATE, (int64_t) vsize)))
		return r;
	if (seekable && (r = file_finish(k, FOP_SYNC, 0)))
		return r;
	return 0;
}

int ctl_export(struct tv_pool *pool, uint64_t id, int fd, bool stream,
	       struct ctl_copy *c)
{
	struct copy k = {.c = c, .what = "export", .pool = pool, .id = id};
	struct tv_pool_info in;
	bool sparse, seekable;
	struct stat st;
	int r;

	c->copied = c->zero = 0;
	c->msg[0] = 0;
	r = file_open(&k, fd, false, true);
	if (r)
		goto out;
	r = file_stat(&k, &st);
	if (r)
		goto out;
	/* not the pool; a file or device held while we write it */
	r = file_check(&k);
	if (r || (r = file_settle(&k, fd, &st, false)))
		goto out;
	r = copy_setup(&k, &in);
	if (r)
		goto out;
	sparse = !stream && S_ISREG(st.st_mode);
	seekable = !stream && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
	/* a regular file starts empty, so that skipped blocks are holes */
	if (sparse && (r = file_finish(&k, FOP_TRUNCATE, 0)))
		goto out;
	stream_kind(&k, st.st_mode);
	r = export_run(&k, fd, sparse, seekable);
out:
	file_close(&k);
	return r;
}
