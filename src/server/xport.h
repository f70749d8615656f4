/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * xport - a connection's byte stream: a socket, or a TLS session on it
 * after STARTTLS.  Reads come from one thread (the connection's reader),
 * writes from any thread under the caller's send lock.
 */
#ifndef TV_SERVER_XPORT_H
#define TV_SERVER_XPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct tls_session;

struct xport {
	int fd;
	struct tls_session *tls; /* NULL: plain socket */
	/* Read buffer (plain sockets, once the handshake is over): bytes
	 * [rpos, rlen) of rbuf were received and not yet read. */
	char *rbuf;
	size_t rpos, rlen, rcap;
	/* Bytes received and sent since the start (the reader adds to rx,
	 * the sender, under the caller's send lock, to tx); and, while an
	 * xport_writev is in progress, when it began (CLOCK_MONOTONIC ns; 0
	 * when none is) and what tx was then.  Another thread reads them to
	 * judge how fast a client takes its replies: tx_since is written
	 * last when a write begins and first when it ends, so a reader that
	 * sees the same tx_since before and after reading tx_from has the
	 * tx_from of that write. */
	_Atomic uint64_t rx_bytes, tx_bytes;
	_Atomic uint64_t tx_since, tx_from;
};

/* Read exactly len bytes: 0, -ECONNRESET at end of stream (also in the
 * middle), or a negative errno.  With a read buffer, one recv takes
 * whatever the socket holds (several requests at a deep queue); a read
 * larger than half the buffer goes straight to buf past what was
 * buffered. */
int xport_read(struct xport *x, void *buf, size_t len);

/* Start buffering reads (a plain socket only; -EINVAL under TLS, whose
 * session buffers on its own).  Nothing may have been read ahead. */
int xport_buffer(struct xport *x, size_t cap);
/* Bytes received and not yet read. */
size_t xport_buffered(const struct xport *x);
/* One non-blocking recv into the read buffer: the bytes it added (> 0),
 * -EAGAIN when there were none, -ECONNRESET at end of stream, or a
 * negative errno.  Needs a read buffer. */
int xport_fill_nowait(struct xport *x);
/* Free the read buffer (the xport stays usable, unbuffered). */
void xport_unbuffer(struct xport *x);

/* Write all of iov[0, n): 0 or a negative errno (-EPIPE when the peer is
 * gone; never SIGPIPE).  A plain socket takes at most XPORT_PIECE bytes
 * per call, so that tx_bytes follows the client's reading. */
#define XPORT_PIECE (256u << 10)
int xport_writev(struct xport *x, const struct iovec *iov, int n);
int xport_write(struct xport *x, const void *buf, size_t len);

#endif
