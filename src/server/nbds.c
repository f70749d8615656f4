/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds.c - the NBD server: the transmission phase, and a connection's
 * life.  The option phase is nbds-opt.c; who may connect, what memory
 * requests may hold and how connections are closed is nbds-conn.c.
 *
 * A connection goes through two phases (doc/proto.md):
 *
 *   accept --> handshake (options) --GO/EXPORT_NAME--> transmission --> close
 *                  |  ^    (nbds-opt.c)                    |
 *                  STARTTLS (the stream becomes TLS)       DISC, EOF, error,
 *                                                          killed (nbds-conn.c)
 *
 * Rules:
 *   1. Every request is validated once, in read_request(), against the
 *      export's size and flags and the options negotiated; below it the
 *      handlers assume a valid request.  A request that cannot be
 *      validated without losing sync with the stream (bad magic, a write
 *      payload too large to skip) ends the connection; every other bad
 *      request gets an error reply and the connection goes on.  Errors
 *      follow proto.md, "Error values": a read, trim, cache or block
 *      status past the end is EINVAL, a write or write-zeroes past the
 *      end ENOSPC, anything that writes to a read-only export EPERM (that
 *      first), a flag not defined for the command EINVAL.  FUA is
 *      accepted on every command ("Command flags": the server MUST).
 *   2. errno values become NBD errors in exactly one place, nbd_errno().
 *   3. A connection's threads take turns reading: one holds read_lock
 *      while it reads a request (and a write's payload), lets it go, and
 *      runs the request and sends its reply itself (leader/follower, as
 *      nbdkit does): no queue, no hand-off between threads.  A helper
 *      thread is started only while requests wait in the socket, up to
 *      NBDS_WORKERS threads in all.  The reader takes the request's
 *      buffer memory from the budget before it reads on (nbds_mem_get:
 *      the connection's slot for a small request, else the shared
 *      budget, waiting while the connection or the server is over it),
 *      so a client that floods the server, or does not read its replies,
 *      holds at most NBDS_CONN_MEMORY, and a small request of another
 *      client never waits for it.  On a plain socket the reader
 *      reads ahead into a buffer of NBDS_READ_AHEAD bytes (xport_read),
 *      so at a deep queue one recv brings several requests.
 *   4. A reply is sent whole under send_lock.  A write is acknowledged only
 *      after the engine accepted it; a flush only after tv_vol_flush made
 *      every acknowledged write of every connection durable (the engine's
 *      flush commits the whole pool: that is why CAN_MULTI_CONN is true).
 *   5. Once a reply cannot be sent (nbds_conn_gone) the connection stops
 *      reading and drops the requests it has not begun: the client has
 *      left, and nobody would see their results.  A request that can
 *      take long (a write or unmap of zeroes: up to 4 GiB) looks again
 *      between steps of NBDS_ZERO_CHUNK or NBDS_UNMAP_STEP bytes and
 *      stops, unanswered; a read (32 MiB at most) is finished.  After
 *      EOF without a failed send the requests read are still answered
 *      (the client may have shut down only its sending side).
 *   6. The registry (nbds-conn.c) knows every connection and the volume
 *      it serves.  A volume claimed for a delete or shrink accepts no new
 *      connection until it is released.
 *   7. Threads come and go with the work: a helper is started only while
 *      requests wait and the server's thread budget allows
 *      (nbds_thread_get: threads beyond each connection's first, all
 *      connections together), and a thread that has waited NBDS_IDLE_MS
 *      for its turn to read leaves, since another has been waiting in
 *      the socket all that time; an idle connection keeps one thread.
 *      The threads are detached; the last to leave ends the connection
 *      (nbds_conn_release).  nbds_serve_fd's caller stays to the end.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "server/nbd-proto.h"
#include "server/nbds-internal.h"
#include "server/tls.h"
#include "thin/thin-ext.h" /* vio_read_map_nofill, pool_block_size */
#include "util/checked.h"
#include "util/clock.h"
#include "util/endian.h"
#include "util/escape.h"
#include "util/log.h"

#define NBDS_MAX_EXTENTS  1024	       /* block-status descriptors */
#define NBDS_READ_EXTENTS 64	       /* hole/data runs of one read */
#define NBDS_ZERO_CHUNK	  (1u << 20)   /* zeroes written at a time */
#define NBDS_UNMAP_STEP	  (256u << 20) /* bytes unmapped at a time */
#define NBDS_IDLE_MS	  2000u	       /* a helper thread with no work leaves */
#define NBDS_POLL_MIN_NS  4000u	       /* read_header's polling window */
#define NBDS_POLL_MAX_NS  64000u

/* ---- errors (rule 2) ---- */

static uint32_t nbd_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
		return NBDS_EPERM;
	case ENOMEM:
		return NBDS_ENOMEM;
	case EINVAL:
		return NBDS_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBDS_ENOSPC;
	case EOVERFLOW:
		return NBDS_EOVERFLOW;
	case ENOTSUP:
		return NBDS_ENOTSUP;
	case ESHUTDOWN:
		return NBDS_ESHUTDOWN;
	default: /* EIO, EROFS of a pool an error made read-only, ... */
		return NBDS_EIO;
	}
}

/* ---- sending ---- */

static int send_all(struct conn *c, const struct iovec *iov, int n)
{
	int r;

	pthread_mutex_lock(&c->send_lock);
	if (c->send_failed) {
		r = -EPIPE;
	} else {
		r = xport_writev(&c->x, iov, n);
		if (r < 0) {
			c->send_failed = true;
			/* the reader must not wait for a client that will
			 * never read our replies, nor do its work (rule 5) */
			shutdown(c->fd, SHUT_RDWR);
			nbds_conn_gone(c);
		}
	}
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

/* ---- transmission ---- */

static int simple_reply(struct conn *c, uint64_t cookie, uint32_t err,
			const void *data, size_t len)
{
	uint8_t h[16];
	struct iovec iov[2] = {{h, sizeof(h)}, {(void *) data, len}};

	put_be32(h, NBDS_SIMPLE_REPLY_MAGIC);
	put_be32(h + 4, err);
	put_be64(h + 8, cookie);
	return send_all(c, iov, len ? 2 : 1);
}

static void chunk_header(uint8_t *h, uint16_t flags, uint16_t type,
			 uint64_t cookie, uint32_t len)
{
	put_be32(h, NBDS_STRUCTURED_REPLY_MAGIC);
	put_be16(h + 4, flags);
	put_be16(h + 6, type);
	put_be64(h + 8, cookie);
	put_be32(h + 16, len);
}

/* The reply to a request that failed (or, err 0, a done reply without
 * data). */
static int status_reply(struct conn *c, const struct req *q, uint32_t err)
{
	uint8_t h[20 + 6];
	struct iovec iov;

	/* a chunk header is 20 bytes: magic, flags, type, cookie, length */

	if (!c->structured)
		return simple_reply(c, q->cookie, err, NULL, 0);
	if (!err) {
		chunk_header(h, NBDS_REPLY_FLAG_DONE, NBDS_REPLY_TYPE_NONE,
			     q->cookie, 0);
		iov.iov_base = h;
		iov.iov_len = 20;
		return send_all(c, &iov, 1);
	}
	chunk_header(h, NBDS_REPLY_FLAG_DONE, NBDS_REPLY_TYPE_ERROR, q->cookie,
		     6);
	put_be32(h + 20, err);
	put_be16(h + 24, 0); /* no message */
	iov.iov_base = h;
	iov.iov_len = 26;
	return send_all(c, &iov, 1);
}

static int reply_err(struct conn *c, const struct req *q, int err)
{
	return status_reply(c, q, nbd_errno(err));
}

/* Read [off, off + len) of the volume, any alignment (bounce through
 * whole sectors when unaligned).  With ext, the bytes of the hole extents
 * reported are not written (they go out as OFFSET_HOLE chunks: zeroing
 * them would be wasted work), unless max is 1 (DF: all of it is sent as
 * data). */
static int vol_read(struct conn *c, void *buf, uint32_t len, uint64_t off,
		    struct tv_extent *ext, size_t max, size_t *n)
{
	uint64_t a0 = off & ~(uint64_t) (TV_SECTOR - 1);
	uint64_t a1 = (off + len + TV_SECTOR - 1) & ~(uint64_t) (TV_SECTOR - 1);
	uint8_t *b;
	int r;

	if (a0 == off && a1 == off + len && ext && max > 1)
		return vio_read_map_nofill(c->srv->pool, c->id, buf, len, off,
					   ext, max, n);
	if (a0 == off && a1 == off + len)
		return ext ? tv_vol_read_map(c->srv->pool, c->id, buf, len, off,
					     ext, max, n)
			   : tv_vol_read(c->srv->pool, c->id, buf, len, off);
	b = malloc(a1 - a0);
	if (!b)
		return -ENOMEM;
	r = tv_vol_read(c->srv->pool, c->id, b, a1 - a0, a0);
	if (r == 0) {
		memcpy(buf, b + (off - a0), len);
		if (ext) {
			ext[0].len = len; /* as data: its zeroes are in buf */
			ext[0].flags = 0;
			*n = 1;
		}
	}
	free(b);
	return r;
}

/* Write data (NULL: zeroes) at an unaligned range by read-modify-write of
 * the sectors around it. */
static int rmw_write(struct conn *c, const void *data, uint64_t len,
		     uint64_t off, unsigned int flags)
{
	uint64_t a0 = off & ~(uint64_t) (TV_SECTOR - 1);
	uint64_t a1 = (off + len + TV_SECTOR - 1) & ~(uint64_t) (TV_SECTOR - 1);
	uint8_t *b;
	int r;

	b = malloc(a1 - a0);
	if (!b)
		return -ENOMEM;
	pthread_mutex_lock(&c->srv->rmw_lock);
	r = tv_vol_read(c->srv->pool, c->id, b, a1 - a0, a0);
	if (r == 0) {
		if (data)
			memcpy(b + (off - a0), data, len);
		else
			memset(b + (off - a0), 0, len);
		r = tv_vol_write(c->srv->pool, c->id, b, a1 - a0, a0, flags);
	}
	pthread_mutex_unlock(&c->srv->rmw_lock);
	free(b);
	return r;
}

static int vol_write(struct conn *c, const void *data, uint32_t len,
		     uint64_t off, unsigned int flags)
{
	if ((off | len) % TV_SECTOR)
		return rmw_write(c, data, len, off, flags);
	return tv_vol_write(c->srv->pool, c->id, data, len, off, flags);
}

/*
 * Whether the client has left (rule 5): a send failed, the connection
 * was killed, or the peer has gone for good rather than shut down only
 * its sending side (it may still read replies).  A Unix socket tells
 * (POLLHUP once both sides are shut, also while nobody reads it); TCP
 * does not until a send fails.  One poll: cheap enough between the steps
 * of a long request.
 */
static bool client_left(struct conn *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLOUT};

	if (nbds_conn_is_gone(c))
		return true;
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
		nbds_conn_gone(c);
		return true;
	}
	return false;
}

/* Unmap the whole blocks of a sector-aligned range and zero the sectors
 * of the partial ones, a step at a time: a client that has left stops
 * it (rule 5). */
static int vol_zero_blocks(struct conn *c, uint64_t len, uint64_t off)
{
	int r = 0;

	while (len && r == 0) {
		uint64_t n = MIN(len, (uint64_t) NBDS_UNMAP_STEP);

		if (client_left(c))
			return -ECONNRESET; /* rule 5 */
		r = tv_vol_discard(c->srv->pool, c->id, n, off);
		off += n;
		len -= n;
	}
	return r;
}

/* Zero a range: whole sectors by the engine (whole blocks become holes
 * unless no_hole), the unaligned edges by read-modify-write. */
static int vol_zero(struct conn *c, uint64_t len, uint64_t off, bool no_hole,
		    bool discard)
{
	struct tv_pool *p = c->srv->pool;
	uint64_t a0 = (off + TV_SECTOR - 1) & ~(uint64_t) (TV_SECTOR - 1);
	uint64_t a1 = (off + len) & ~(uint64_t) (TV_SECTOR - 1);
	int r = 0;

	if (a0 >= a1) { /* inside one or two sectors */
		return discard ? 0 : rmw_write(c, NULL, len, off, 0);
	}
	if (!discard && off < a0)
		r = rmw_write(c, NULL, a0 - off, off, 0);
	if (r == 0 && !discard && a1 < off + len)
		r = rmw_write(c, NULL, off + len - a1, a1, 0);
	if (r < 0)
		return r;
	if (discard || !no_hole)
		return vol_zero_blocks(c, a1 - a0, a0);
	/* NO_HOLE: the client wants the blocks allocated */
	{
		static const uint8_t zero[NBDS_ZERO_CHUNK];
		for (uint64_t pos = a0; pos < a1 && r == 0;) {
			uint64_t n =
			    a1 - pos < sizeof(zero) ? a1 - pos : sizeof(zero);
			if (client_left(c))
				return -ECONNRESET; /* rule 5 */
			r = tv_vol_write(p, c->id, zero, n, pos, 0);
			pos += n;
		}
	}
	return r;
}

/* Whether [off, off + len), inside one pool block, is unmapped. */
static int is_hole(struct conn *c, uint64_t off, uint64_t len, bool *hole)
{
	struct tv_extent e;
	size_t n = 0;
	int r;

	r = tv_vol_extents(c->srv->pool, c->id, off, len, &e, 1, &n);
	if (r == 0)
		*hole = n == 1 && e.len >= len && (e.flags & TV_EXTENT_HOLE);
	return r;
}

/*
 * WRITE_ZEROES with FAST_ZERO (proto.md: "MUST fail quickly with
 * NBD_ENOTSUP unless the request can be serviced in less time than a
 * corresponding NBD_CMD_WRITE").  Fast: pool blocks the range covers
 * whole are unmapped (a metadata change, whatever they held), and the
 * part of a block at either end is left alone when that block is
 * unmapped (it reads as zeroes already).  Slow: the part of a mapped
 * block at either end, which would take a write of zeroes (or a
 * read-modify-write of a sector, or a copy of a shared block): the
 * request then fails with ENOTSUP before anything is changed.
 */
static int vol_zero_fast(struct conn *c, uint64_t len, uint64_t off)
{
	uint64_t bs = pool_block_size(c->srv->pool), end = off + len;
	uint64_t b0 = (off + bs - 1) / bs * bs, b1 = end / bs * bs;
	bool hole = true;
	int r = 0;

	if (b0 > b1) /* inside one block */
		r = is_hole(c, off, len, &hole);
	else if (off < b0)
		r = is_hole(c, off, b0 - off, &hole);
	if (r == 0 && hole && b0 <= b1 && b1 < end)
		r = is_hole(c, b1, end - b1, &hole);
	if (r < 0)
		return r;
	if (!hole)
		return -ENOTSUP;
	return b0 < b1 ? vol_zero_blocks(c, b1 - b0, b0) : 0;
}

static int do_read(struct conn *c, const struct req *q)
{
	struct tv_extent ext[NBDS_READ_EXTENTS];
	size_t next = 0;
	uint8_t *buf;
	int r;

	buf = malloc(q->len);
	if (!buf)
		return reply_err(c, q, -ENOMEM);
	if (!c->structured) {
		r = vol_read(c, buf, q->len, q->off, NULL, 0, NULL);
		r = r < 0 ? reply_err(c, q, r)
			  : simple_reply(c, q->cookie, 0, buf, q->len);
		free(buf);
		return r;
	}
	r = vol_read(c, buf, q->len, q->off, ext,
		     (q->flags & NBDS_CMD_FLAG_DF) ? 1 : NBDS_READ_EXTENTS,
		     &next);
	if (r < 0) {
		free(buf);
		return reply_err(c, q, r);
	}
	if (q->flags & NBDS_CMD_FLAG_DF) {
		/* one chunk: data, with the zeroes of any hole in it */
		ext[0].len = q->len;
		ext[0].flags = 0;
		next = 1;
	}
	/*
	 * One chunk per run: OFFSET_HOLE for unmapped runs, OFFSET_DATA for
	 * the rest; the last carries DONE.  All chunks go out under one
	 * hold of the send lock so another reply cannot interleave.
	 */
	{
		struct iovec iov[2 * NBDS_READ_EXTENTS];
		uint8_t hdr[NBDS_READ_EXTENTS][32];
		uint64_t pos = 0;
		int n = 0;

		for (size_t i = 0; i < next; i++) {
			bool last = i + 1 == next;
			uint16_t fl = last ? NBDS_REPLY_FLAG_DONE : 0;
			uint32_t len = (uint32_t) ext[i].len;

			if (ext[i].flags & TV_EXTENT_HOLE) {
				chunk_header(hdr[i], fl,
					     NBDS_REPLY_TYPE_OFFSET_HOLE,
					     q->cookie, 12);
				put_be64(hdr[i] + 20, q->off + pos);
				put_be32(hdr[i] + 28, len);
				iov[n].iov_base = hdr[i];
				iov[n++].iov_len = 32;
			} else {
				chunk_header(hdr[i], fl,
					     NBDS_REPLY_TYPE_OFFSET_DATA,
					     q->cookie, 8 + len);
				put_be64(hdr[i] + 20, q->off + pos);
				iov[n].iov_base = hdr[i];
				iov[n++].iov_len = 28;
				iov[n].iov_base = buf + pos;
				iov[n++].iov_len = len;
			}
			pos += len;
		}
		r = send_all(c, iov, n);
	}
	free(buf);
	return r;
}

static int do_block_status(struct conn *c, const struct req *q)
{
	size_t max = (q->flags & NBDS_CMD_FLAG_REQ_ONE) ? 1 : NBDS_MAX_EXTENTS;
	struct tv_extent *ext;
	uint8_t *body;
	size_t n = 0;
	uint8_t h[20];
	int r;

	ext = malloc(max * sizeof(*ext));
	body = malloc(4 + 8 * max);
	if (!ext || !body) {
		r = reply_err(c, q, -ENOMEM);
		goto out;
	}
	r = tv_vol_extents(c->srv->pool, c->id, q->off, q->len, ext, max, &n);
	if (r < 0) {
		r = reply_err(c, q, r);
		goto out;
	}
	put_be32(body, NBDS_CONTEXT_ID);
	for (size_t i = 0; i < n; i++) {
		put_be32(body + 4 + 8 * i, (uint32_t) ext[i].len);
		put_be32(body + 8 + 8 * i,
			 (ext[i].flags & TV_EXTENT_HOLE)
			     ? NBDS_STATE_HOLE | NBDS_STATE_ZERO
			     : 0);
	}
	chunk_header(h, NBDS_REPLY_FLAG_DONE, NBDS_REPLY_TYPE_BLOCK_STATUS,
		     q->cookie, (uint32_t) (4 + 8 * n));
	{
		struct iovec iov[2] = {{h, 20}, {body, 4 + 8 * n}};
		r = send_all(c, iov, 2);
	}
out:
	free(ext);
	free(body);
	return r;
}

/* Run one validated request and send its reply. */
static int handle(struct conn *c, struct req *q)
{
	struct tv_pool *p = c->srv->pool;
	bool fua = q->flags & NBDS_CMD_FLAG_FUA;
	int r = 0;

	if (q->error)
		return status_reply(c, q, (uint32_t) q->error);
	switch (q->type) {
	case NBDS_CMD_READ:
		return do_read(c, q);
	case NBDS_CMD_WRITE:
		r = vol_write(c, q->payload, q->len, q->off,
			      fua ? TV_IO_FUA : 0);
		break;
	case NBDS_CMD_FLUSH:
		r = tv_vol_flush(p, c->id);
		break;
	case NBDS_CMD_TRIM:
		r = vol_zero(c, q->len, q->off, false, true);
		if (r == 0 && fua)
			r = tv_vol_flush(p, c->id);
		break;
	case NBDS_CMD_WRITE_ZEROES:
		if (!(q->flags & NBDS_CMD_FLAG_FAST_ZERO))
			r = vol_zero(c, q->len, q->off,
				     q->flags & NBDS_CMD_FLAG_NO_HOLE, false);
		else if (q->flags & NBDS_CMD_FLAG_NO_HOLE)
			r = -ENOTSUP; /* allocating zeroes is writing them */
		else
			r = vol_zero_fast(c, q->len, q->off);
		if (r == 0 && fua)
			r = tv_vol_flush(p, c->id);
		break;
	case NBDS_CMD_CACHE:
		/* nothing to prefetch into: the device's page cache is the
		 * cache, and the mapping is read on first access */
		break;
	case NBDS_CMD_BLOCK_STATUS:
		return do_block_status(c, q);
	}
	if (r < 0 && r != -ECONNRESET && c->srv->verbose)
		log_info("%s: command %u at %" PRIu64 "+%u: %s", c->peer,
			 q->type, q->off, q->len, tv_last_error());
	return reply_err(c, q, r);
}

/* Threads polling at once, at most half the CPUs (at least one): many
 * connections at queue depth 1 must not keep every CPU spinning. */
static atomic_uint pollers;
static unsigned int max_pollers;
static pthread_once_t max_pollers_once = PTHREAD_ONCE_INIT;

static void max_pollers_init(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	max_pollers = n > 2 ? (unsigned int) (n / 2) : 1;
}

static bool poll_begin(void)
{
	pthread_once(&max_pollers_once, max_pollers_init);
	if (atomic_fetch_add(&pollers, 1) < max_pollers)
		return true;
	atomic_fetch_sub(&pollers, 1);
	return false;
}

static void poll_end(void)
{
	atomic_fetch_sub(&pollers, 1);
}

/*
 * Read a request header (read_lock held).  On a plain socket, first poll
 * for it for up to c->poll_ns, so that a client that sends its next
 * request soon after our reply (queue depth 1) finds this thread awake:
 * waking a thread that slept in recv costs tens of microseconds,
 * particularly on a virtual machine whose idle CPU must be woken first.
 * The window adapts as QEMU's event loop does it (poll-max-ns): it grows
 * while requests come within NBDS_POLL_MAX_NS of each other, and shrinks
 * when the thread had to sleep longer, so an idle connection does not
 * poll.  At most half the CPUs poll at once (poll_begin).
 */
static int read_header(struct conn *c, uint8_t *h, size_t len)
{
	size_t got = 0, before = xport_buffered(&c->x);
	uint64_t t0;
	int r;

	if (before >= len) /* a deep queue: read ahead already */
		return xport_read(&c->x, h, len);
	if (!c->x.tls && c->poll_ns && poll_begin()) {
		uint64_t until = clock_mono_ns() + c->poll_ns;

		r = 0;
		do {
			ssize_t n;

			if (c->x.rbuf) {
				n = xport_fill_nowait(&c->x);
				if (n == -EAGAIN)
					n = 0;
				if (n < 0)
					r = (int) n;
				got = xport_buffered(&c->x) - before;
				if (before + got >= len)
					break;
				continue;
			}
			n = recv(c->fd, h, len, MSG_DONTWAIT);
			if (n > 0) {
				got = (size_t) n;
				break;
			}
			if (n == 0)
				r = -ECONNRESET;
			else if (errno != EAGAIN && errno != EWOULDBLOCK &&
				 errno != EINTR)
				r = -errno;
		} while (!r && clock_mono_ns() < until);
		poll_end();
		if (r < 0)
			return r;
		if (c->x.rbuf && before + got >= len)
			return xport_read(&c->x, h, len);
		if (!c->x.rbuf && got == len)
			return 0;
	}
	t0 = clock_mono_ns();
	r = c->x.rbuf ? xport_read(&c->x, h, len)
		      : xport_read(&c->x, h + got, len - got);
	if (r == 0 && !c->x.tls) {
		uint64_t slept = clock_mono_ns() - t0;

		if (slept > NBDS_POLL_MAX_NS)
			c->poll_ns /= 2;
		else if (!got)
			c->poll_ns = MIN(MAX(c->poll_ns * 2, NBDS_POLL_MIN_NS),
					 NBDS_POLL_MAX_NS);
		if (c->poll_ns < NBDS_POLL_MIN_NS)
			c->poll_ns = 0;
	}
	return r;
}

/* DISC, EOF, an error or shutdown: the connection reads no more
 * requests (read_lock held).  The watchdog then judges its replies
 * whether memory is short or not (nbds-conn.c, rule 4). */
static void stop_reading(struct conn *c)
{
	c->rdone = true;
	atomic_store(&c->ended, true);
}

/* The budget bytes a valid request holds until its reply went out: its
 * data buffer and a bounce buffer of whole sectors when unaligned
 * (vol_read, rmw_write), or the extents of a block status. */
static uint64_t req_mem(const struct req *q)
{
	uint64_t m = NBDS_REQ_OVERHEAD;

	switch (q->type) {
	case NBDS_CMD_READ:
	case NBDS_CMD_WRITE:
		m += q->len;
		if ((q->off | q->len) % TV_SECTOR)
			m += q->len + 2 * TV_SECTOR;
		break;
	case NBDS_CMD_BLOCK_STATUS:
		m += NBDS_MAX_EXTENTS * (sizeof(struct tv_extent) + 8);
		break;
	}
	return m;
}

/*
 * Read one request and validate it (rule 1).  Returns 1 for a request to
 * queue (q->error set if it only needs an error reply), 0 for DISC, or a
 * negative errno when the connection must end.
 */
static int read_request(struct conn *c, struct req *q)
{
	uint8_t h[28];
	uint16_t allowed = 0;
	bool range = true, write = false;
	uint32_t err = 0;
	int r;

	r = read_header(c, h, sizeof(h));
	if (r < 0)
		return r;
	if (get_be32(h) != NBDS_REQUEST_MAGIC) {
		nbds_note(c->srv, LOG_LVL_INFO,
			  "%s: bad request magic %#x: closing", c->peer,
			  get_be32(h));
		return -EPROTO;
	}
	memset(q, 0, sizeof(*q));
	q->flags = get_be16(h + 4);
	q->type = get_be16(h + 6);
	q->cookie = get_be64(h + 8);
	q->off = get_be64(h + 16);
	q->len = get_be32(h + 24);

	switch (q->type) {
	case NBDS_CMD_READ:
		allowed = c->structured ? NBDS_CMD_FLAG_DF : 0;
		break;
	case NBDS_CMD_WRITE:
		write = true;
		break;
	case NBDS_CMD_DISC:
		return 0;
	case NBDS_CMD_FLUSH:
		range = false;
		break;
	case NBDS_CMD_TRIM:
		write = true;
		break;
	case NBDS_CMD_WRITE_ZEROES:
		allowed = NBDS_CMD_FLAG_NO_HOLE | NBDS_CMD_FLAG_FAST_ZERO;
		write = true;
		break;
	case NBDS_CMD_CACHE:
		break;
	case NBDS_CMD_BLOCK_STATUS:
		allowed = NBDS_CMD_FLAG_REQ_ONE;
		if (!c->meta_alloc)
			err = NBDS_EINVAL; /* no context negotiated */
		break;
	default:
		err = NBDS_EINVAL;
		break;
	}
	/* "This flag is valid for all commands ... the server MUST accept
	 * all commands with this bit set (even by ignoring the bit)": it is
	 * ignored where nothing is written */
	allowed |= NBDS_CMD_FLAG_FUA;
	if (!err && (q->flags & ~allowed))
		err = NBDS_EINVAL;
	if (!err && write && c->ro)
		err = NBDS_EPERM; /* past the end too: it is read-only */
	if (!err && range) {
		if (!q->len)
			err = NBDS_EINVAL;
		else if (q->off > c->size || q->len > c->size - q->off)
			err = q->type == NBDS_CMD_WRITE ||
				      q->type == NBDS_CMD_WRITE_ZEROES
				  ? NBDS_ENOSPC
				  : NBDS_EINVAL;
	} else if (!err && (q->off || q->len)) {
		err = NBDS_EINVAL; /* FLUSH: reserved fields must be zero */
	}
	/* Over the maximum payload: EINVAL; a structured READ may say
	 * EOVERFLOW ("permitted to reject large read requests up front"),
	 * which nothing else SHOULD ("Error values"). */
	if (!err && (q->type == NBDS_CMD_READ || q->type == NBDS_CMD_WRITE) &&
	    q->len > NBDS_MAX_REQUEST)
		err = q->type == NBDS_CMD_READ && c->structured ? NBDS_EOVERFLOW
								: NBDS_EINVAL;
	/* The request's buffers come from the budget before anything more
	 * is read (nbds-conn.c, rule 3): a client over its share waits
	 * here, and the socket pushes back. */
	if (!err) {
		uint64_t m = req_mem(q);

		r = nbds_mem_get(c, m, &q->slot);
		if (r == -ESHUTDOWN) {
			/* read no more, not even this write's payload */
			err = NBDS_ESHUTDOWN;
			stop_reading(c);
			goto out;
		}
		if (r < 0)
			return r;
		q->mem = m;
	}

	if (q->type == NBDS_CMD_WRITE) {
		/* the payload follows whatever we think of the request;
		 * beyond what is worth skipping, the spec lets a server
		 * take it for a denial of service ("Size constraints") */
		if (err && q->len > NBDS_MAX_DISCARD) {
			nbds_note(c->srv, LOG_LVL_INFO,
				  "%s: refused write of %u bytes: closing",
				  c->peer, q->len);
			return -E2BIG;
		}
		if (!err) {
			q->payload = malloc(q->len);
			if (!q->payload)
				err = NBDS_ENOMEM;
		}
		if (q->payload) {
			/* a transfer the watchdog judges (nbds-conn.c, rule 4):
			 * it holds memory others may wait for */
			atomic_store(&c->rx_from, atomic_load(&c->x.rx_bytes));
			atomic_store(&c->rx_since, clock_mono_ns());
			r = xport_read(&c->x, q->payload, q->len);
			atomic_store(&c->rx_since, 0);
		} else {
			uint8_t junk[4096];
			uint32_t left = q->len;
			r = 0;
			while (left && r == 0) {
				uint32_t n =
				    left < sizeof(junk) ? left : sizeof(junk);
				r = xport_read(&c->x, junk, n);
				left -= n;
			}
		}
		if (r < 0) {
			free(q->payload);
			q->payload = NULL;
			if (q->mem)
				nbds_mem_put(c, q->mem, q->slot);
			return r;
		}
	}
out:
	if (err && c->srv->verbose)
		log_info("%s: refused command %u flags %#x at %" PRIu64
			 "+%u: error %u",
			 c->peer, q->type, q->flags, q->off, q->len, err);
	q->error = (int) err;
	return 1;
}

/*
 * Whether a connection thread should start another before running the
 * request it read: only when more requests are already waiting in the
 * socket and no other thread is waiting to read them.  A client at queue
 * depth 1 is then served by one thread that reads, runs and replies with
 * no hand-off at all; a deep queue gets up to NBDS_WORKERS threads.  Under
 * TLS, GnuTLS may hold decrypted requests the socket no longer shows: the
 * threads are started as if requests were waiting.
 */
static bool want_thread(struct conn *c)
{
	int n = 0;

	if (c->nthreads >= NBDS_WORKERS || c->waiting)
		return false;
	if (!c->x.tls && xport_buffered(&c->x) < 28 &&
	    (ioctl(c->fd, FIONREAD, &n) < 0 || n <= 0))
		return false;
	return nbds_thread_get(c->srv);
}

static void *conn_worker(void *arg);

/* Start a helper thread for c (rlock held, and read_lock: nthreads only
 * grows under both).  Detached: the last thread of the connection ends
 * it (rule 7). */
static void start_helper(struct conn *c)
{
	pthread_attr_t attr;
	pthread_t t;
	int r;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &attr, conn_worker, c);
	pthread_attr_destroy(&attr);
	if (r == 0)
		c->nthreads++;
	else
		nbds_thread_put(c->srv); /* the one thread goes on alone */
}

/*
 * Wait for the turn to read (rule 3).  A thread that may leave waits
 * NBDS_IDLE_MS at most: when it has not had its turn by then, another
 * thread has held read_lock all that time, waiting for a request that
 * does not come, and this one leaves (rule 7).  Returns false then.
 */
static bool take_turn(struct conn *c, bool may_leave)
{
	struct timespec until;

	if (!may_leave) {
		pthread_mutex_lock(&c->read_lock);
		return true;
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += NBDS_IDLE_MS / 1000;
	until.tv_nsec += (long) (NBDS_IDLE_MS % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	return pthread_mutex_timedlock(&c->read_lock, &until) == 0;
}

/*
 * The transmission phase, run by every thread of the connection (rule 3):
 * take the read lock, read one request, maybe start a helper thread, let
 * the lock go, run the request, reply.  The thread that meets DISC, EOF or
 * an error marks the stream done; the others finish the request they hold
 * and stop.  Once the connection is gone, requests not begun are dropped
 * (rule 5).  Returns when the stream is done, or this thread was idle
 * (may_leave, rule 7).
 */
static void serve_requests(struct conn *c, bool may_leave)
{
	for (;;) {
		struct req *q;
		bool turn;
		int r;

		pthread_mutex_lock(&c->rlock);
		c->waiting++;
		pthread_mutex_unlock(&c->rlock);
		turn = take_turn(c, may_leave);
		pthread_mutex_lock(&c->rlock);
		c->waiting--;
		pthread_mutex_unlock(&c->rlock);
		if (!turn)
			break;
		if (c->rdone) {
			pthread_mutex_unlock(&c->read_lock);
			break;
		}
		q = malloc(sizeof(*q));
		r = q ? read_request(c, q) : -ENOMEM;
		if (r <= 0) {
			stop_reading(c);
			if (r == -ECONNRESET)
				(void) client_left(c);
			pthread_mutex_unlock(&c->read_lock);
			free(q);
			if (r < 0 && r != -ECONNRESET && c->srv->verbose)
				log_info("%s: %s", c->peer, strerror(-r));
			break;
		}
		pthread_mutex_lock(&c->rlock);
		if (want_thread(c))
			start_helper(c);
		pthread_mutex_unlock(&c->rlock);
		pthread_mutex_unlock(&c->read_lock);

		if (!nbds_conn_is_gone(c))
			handle(c, q);
		free(q->payload);
		if (q->mem)
			nbds_mem_put(c, q->mem, q->slot);
		free(q);
	}
}

/*
 * A thread of c's transmission leaves (rule 7): true when it was the
 * last, which then ends the connection.  One that must stay to the end
 * (nbds_serve_fd's caller) first waits for the others.
 */
static bool leave(struct conn *c, bool stay)
{
	bool last;

	pthread_mutex_lock(&c->rlock);
	while (stay && c->nthreads > 1)
		pthread_cond_wait(&c->left, &c->rlock);
	last = --c->nthreads == 0;
	if (!last)
		nbds_thread_put(c->srv);
	pthread_cond_broadcast(&c->left);
	pthread_mutex_unlock(&c->rlock);
	return last;
}

/* The end of a connection, by its last thread. */
static void conn_end(struct conn *c)
{
	if (c->srv->verbose)
		log_info("%s: disconnected", c->peer);
	nbds_conn_release(c);
}

static void *conn_worker(void *arg)
{
	struct conn *c = arg;

	serve_requests(c, true);
	if (leave(c, false))
		conn_end(c);
	return NULL;
}

/* Returns whether this thread was the connection's last. */
static bool transmission(struct conn *c, bool stay)
{
	/* Plain sockets read ahead (xport_read): at a deep queue one recv
	 * brings several requests, payloads included.  The handshake is
	 * over, so nothing STARTTLS hands to GnuTLS can be in the buffer.
	 * Without memory for it, reads go unbuffered. */
	if (!c->x.tls && nbds_mem_read_ahead(c, NBDS_READ_AHEAD))
		(void) xport_buffer(&c->x, NBDS_READ_AHEAD);
	pthread_mutex_lock(&c->rlock);
	c->nthreads = 1;
	pthread_mutex_unlock(&c->rlock);
	serve_requests(c, !stay);
	/* DISC or EOF: the requests other threads hold are still answered
	 * (proto.md: "the server MUST handle all outstanding requests"),
	 * by those threads; the last to leave ends the connection */
	return leave(c, stay);
}

/* The life of connection c in the calling thread; stay: return only when
 * the connection has ended (else this thread may leave the transmission
 * to its helpers, rule 7). */
static void conn_run(struct conn *c, bool stay)
{
	int r = nbds_handshake(c);

	if (r < 0 && c->srv->verbose)
		log_info("%s: handshake ended: %s", c->peer, strerror(-r));
	if (r == 1 && !transmission(c, stay))
		return; /* another thread ends it */
	conn_end(c);
}

static void *conn_thread(void *arg)
{
	conn_run(arg, false);
	return NULL;
}

int nbds_accept(struct nbds *s, int fd, const char *peer, const char *addr)
{
	struct conn *c = nbds_conn_new(s, fd, peer, addr);
	pthread_attr_t attr;
	pthread_t t;
	int r;

	if (!c)
		return -ENOMEM;
	r = nbds_conn_admit(s, c);
	if (r < 0) {
		nbds_conn_release(c);
		return r;
	}
	if (s->verbose)
		log_info("%s: connected", c->peer);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&t, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		/* out of threads (RLIMIT_NPROC, pids.max): a flood must not
		 * flood the log on top */
		nbds_note(s, LOG_LVL_ERROR, "%s: cannot start a thread: %s",
			  c->peer, strerror(-r));
		nbds_conn_release(c);
	}
	return r;
}

void nbds_serve_fd(struct nbds *s, int fd)
{
	struct conn *c = nbds_conn_new(s, fd, "fd", NULL);

	if (!c)
		return;
	if (nbds_conn_admit(s, c) < 0) {
		nbds_conn_release(c);
		return;
	}
	conn_run(c, true);
}
