/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl-copy.c - import and export (see ctl-copy.h).
 *
 * Both copy in chunks of CHUNK bytes, or one pool block when blocks are
 * larger, so that every engine call covers whole blocks except at the
 * volume's end.  Errors are written once into c->msg where they are
 * detected, with the errno that decides the command's exit status.
 */
#include "server/ctl-copy.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/io.h"
#include "thin/thin-internal.h"

#define CHUNK (1u << 20)

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* One copy in progress. */
struct copy {
	struct ctl_copy *c;
	const char *what; /* "import" or "export" */
	struct tv_pool *pool;
	struct tv_vol_info v;
	uint64_t id;
	uint32_t bs;  /* the pool's block size */
	size_t chunk; /* bytes per engine call: a multiple of bs */
	uint8_t *buf;
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

/*
 * One read or write of a stream (not seekable) that gives up when the
 * copy is cancelled (-ECANCELED): the daemon stops, or the client that
 * asked for the copy went away.  How it waits (k->wait, set by
 * stream_kind):
 *
 *   WAIT_NONE    a plain read or write: offline there is nobody else to
 *                wait for; a regular file or a device written as a
 *                stream cannot be waited for with poll() anyway
 *   WAIT_NOWAIT  a pipe or a socket: each call says RWF_NOWAIT (the file
 *                description is the client's, so it is never switched to
 *                O_NONBLOCK) and poll()s the stream and the cancel
 *                descriptors when it would block
 *   WAIT_POLL    other streams (a terminal), or where the kernel refuses
 *                RWF_NOWAIT: poll() first, then a read (which returns
 *                what is there) or a write of at most PIPE_BUF bytes
 *
 * Returns the bytes moved (0: end of the stream), or a negative errno
 * with the message set.
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

	for (;;) {
		if (k->wait == WAIT_NONE || (k->wait == WAIT_POLL && ready))
			n = out ? write(fd, buf,
					k->wait == WAIT_POLL
					    ? MIN(len, (size_t) PIPE_BUF)
					    : len)
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

/*
 * The file must not be the pool's storage, nor share it (io_fd_overlap):
 * an export into it would overwrite the pool, an import from it would
 * read the pool's own blocks while writing them.
 */
static int check_not_pool(struct copy *k, int fd, bool import)
{
	char how[1024];
	int pfd = io_dev_fd(k->pool->dev), r;

	if (pfd < 0)
		return 0; /* a pool in memory is no file */
	r = io_fd_overlap(pfd, fd, how, sizeof(how));
	if (r < 0)
		return copy_err(k, r, "%s: %s", k->c->file, strerror(-r));
	if (r > 0)
		return copy_err(k, -EINVAL, "refusing to %s %s: %s",
				import ? "read from" : "write into",
				k->c->file, how);
	return 0;
}

/* The volume, the pool block size, the chunk and its buffer. */
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

		if (!seekable) {
			n = stream_io(k, fd, buf + done, len - done, false);
			if (n < 0)
				return (int) n;
		} else {
			n = pread(fd, buf + done, len - done,
				  (off_t) (off + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return copy_err(k, -EIO, "%s: read: %s",
						k->c->file, strerror(errno));
		}
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
		size_t end = pos;
		bool zero = all_zero(k->buf + pos, MIN(k->bs, len - pos));

		/* the run of blocks of the same kind */
		while (end < len) {
			size_t n = MIN(k->bs, len - end);

			if (all_zero(k->buf + end, n) != zero)
				break;
			end += n;
		}
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
	bool seek_data = is_reg;
	/* nothing mapped yet: zeroes need no discard (we move forwards) */
	bool unmapped = k->v.mapped == 0;
	uint64_t vsize = k->v.size, fsize = UINT64_MAX, off = 0;
	size_t got;
	int r;

	if (is_reg) {
		fsize = (uint64_t) st->st_size;
	} else if (seekable) {
		off_t end = lseek(fd, 0, SEEK_END);

		if (end < 0)
			return copy_err(k, -EIO, "%s: %s", file,
					strerror(errno));
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
			off_t d = lseek(fd, (off_t) off, SEEK_DATA);
			uint64_t data;

			if (d < 0 && errno == ENXIO) {
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
		/* a stream as long as the volume: it must end here */
		uint8_t extra;

		r = read_full(k, fd, false, &extra, 1, 0, &got);
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
	struct stat st;
	int r, f;

	c->copied = c->zero = 0;
	c->msg[0] = 0;
	if (fstat(fd, &st) < 0)
		return copy_err(&k, -EIO, "%s: %s", c->file, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return copy_err(&k, -EINVAL, "%s: is a directory", c->file);
	r = check_not_pool(&k, fd, true);
	if (r)
		return r;
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
	free(k.buf);
	return r;
}

/* ---- export ---- */

static int write_full(struct copy *k, int fd, bool seekable, const uint8_t *buf,
		      size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n;

		if (!seekable) {
			n = stream_io(k, fd, (void *) (buf + done), len - done,
				      true);
			if (n < 0)
				return (int) n;
		} else {
			n = pwrite(fd, buf + done, len - done,
				   (off_t) (off + done));
			if (n < 0 && errno == EINTR)
				continue;
		}
		if (n <= 0)
			return copy_err(k, -EIO, "%s: write: %s", k->c->file,
					n < 0 ? strerror(errno)
					      : "no progress");
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
			size_t end = pos;
			bool zero = all_zero(k->buf + pos, MIN(k->bs, n - pos));

			while (end < n) {
				size_t m = MIN(k->bs, n - end);

				if (all_zero(k->buf + end, m) != zero)
					break;
				end += m;
			}
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
	if (sparse && ftruncate(fd, (off_t) vsize) < 0)
		return copy_err(k, -EIO, "%s: truncate: %s", k->c->file,
				strerror(errno));
	if (seekable && fsync(fd) < 0)
		return copy_err(k, -EIO, "%s: sync: %s", k->c->file,
				strerror(errno));
	return 0;
}

int ctl_export(struct tv_pool *pool, uint64_t id, int fd, bool stream,
	       struct ctl_copy *c)
{
	struct copy k = {.c = c, .what = "export", .pool = pool, .id = id};
	struct tv_pool_info in;
	bool sparse, seekable;
	struct io_claim *claim = NULL;
	struct stat st;
	int xfd = -1, r;

	c->copied = c->zero = 0;
	c->msg[0] = 0;
	r = copy_setup(&k, &in);
	if (r)
		goto out;
	if (fstat(fd, &st) < 0) {
		r = copy_err(&k, -EIO, "%s: %s", c->file, strerror(errno));
		goto out;
	}
	r = check_not_pool(&k, fd, false);
	if (r)
		goto out;
	if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
		/* not an image a VM has open (qemu takes POSIX locks) */
		char who[256], why[1024];

		if (io_fd_locked(fd, who, sizeof(who)) > 0) {
			r = copy_err(&k, -EBUSY, "refusing to write into %s: "
						 "it is in use by %s",
				     c->file, who);
			goto out;
		}
		/* held while we write, as a pool holds its storage: not
		 * another pool's, not mounted (also through a loop device
		 * over the file), not under RAID or dm.  A block device is
		 * written through its exclusive descriptor. */
		r = io_fd_claim_target(fd, c->file, &claim, &xfd, why,
				       sizeof(why));
		if (r == -EBUSY) {
			r = copy_err(&k, r, "refusing to write into %s: it is "
					    "in use by %s",
				     c->file, why);
			goto out;
		}
		if (r < 0) {
			r = copy_err(&k, r, "%s: %s", c->file, why);
			goto out;
		}
		if (xfd != fd)
			fd = xfd;
		else
			xfd = -1;
	}
	sparse = !stream && S_ISREG(st.st_mode);
	seekable = !stream && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
	/* a regular file starts empty, so that skipped blocks are holes */
	if (sparse && ftruncate(fd, 0) < 0) {
		r = copy_err(&k, -EIO, "%s: truncate: %s", c->file,
			     strerror(errno));
		goto out;
	}
	stream_kind(&k, st.st_mode);
	r = export_run(&k, fd, sparse, seekable);
out:
	if (xfd >= 0)
		close(xfd);
	io_claim_release(claim);
	free(k.buf);
	return r;
}
