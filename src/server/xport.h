/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * xport - a connection's byte stream: a socket, or a TLS session on it
 * after STARTTLS.  Reads come from one thread (the connection's reader),
 * writes from any thread under the caller's send lock.
 */
#ifndef TV_SERVER_XPORT_H
#define TV_SERVER_XPORT_H

#include <stddef.h>
#include <sys/uio.h>

struct tls_session;

struct xport {
	int fd;
	struct tls_session *tls; /* NULL: plain socket */
};

/* Read exactly len bytes: 0, -ECONNRESET at end of stream (also in the
 * middle), or a negative errno. */
int xport_read(struct xport *x, void *buf, size_t len);

/* Write all of iov[0, n): 0 or a negative errno (-EPIPE when the peer is
 * gone; never SIGPIPE). */
int xport_writev(struct xport *x, const struct iovec *iov, int n);
int xport_write(struct xport *x, const void *buf, size_t len);

#endif
