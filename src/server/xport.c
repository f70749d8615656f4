/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * xport.c - read and write whole buffers on a socket or a TLS session.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/tls.h"
#include "server/xport.h"
#include "util/clock.h"

static int read_direct(struct xport *x, char *p, size_t len)
{
	while (len) {
		ssize_t n =
		    x->tls ? tls_recv(x->tls, p, len) : recv(x->fd, p, len, 0);
		if (n < 0 && !x->tls)
			n = -errno;
		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n < 0)
			return (int) n;
		if (n == 0)
			return -ECONNRESET;
		atomic_fetch_add(&x->rx_bytes, (uint64_t) n);
		p += n;
		len -= (size_t) n;
	}
	return 0;
}

/* Move what is buffered to the front and receive more, blocking until at
 * least one byte came. */
static int fill(struct xport *x, int flags)
{
	ssize_t n;

	if (x->rpos) {
		memmove(x->rbuf, x->rbuf + x->rpos, x->rlen - x->rpos);
		x->rlen -= x->rpos;
		x->rpos = 0;
	}
	do
		n = recv(x->fd, x->rbuf + x->rlen, x->rcap - x->rlen, flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	if (n == 0)
		return -ECONNRESET;
	atomic_fetch_add(&x->rx_bytes, (uint64_t) n);
	x->rlen += (size_t) n;
	return (int) n;
}

int xport_read(struct xport *x, void *buf, size_t len)
{
	char *p = buf;

	if (!x->rbuf)
		return read_direct(x, p, len);
	while (len) {
		size_t have = x->rlen - x->rpos, take = have < len ? have : len;
		int r;

		if (take) {
			memcpy(p, x->rbuf + x->rpos, take);
			x->rpos += take;
			p += take;
			len -= take;
			if (x->rpos == x->rlen)
				x->rpos = x->rlen = 0;
			continue;
		}
		if (len > x->rcap / 2)
			return read_direct(x, p, len);
		r = fill(x, 0);
		if (r < 0 && r != -EAGAIN)
			return r;
	}
	return 0;
}

int xport_buffer(struct xport *x, size_t cap)
{
	if (x->tls || x->rbuf || !cap)
		return -EINVAL;
	x->rbuf = malloc(cap);
	if (!x->rbuf)
		return -ENOMEM;
	x->rcap = cap;
	x->rpos = x->rlen = 0;
	return 0;
}

size_t xport_buffered(const struct xport *x)
{
	return x->rbuf ? x->rlen - x->rpos : 0;
}

int xport_fill_nowait(struct xport *x)
{
	if (!x->rbuf)
		return -EINVAL;
	if (x->rpos == x->rlen)
		x->rpos = x->rlen = 0;
	if (x->rlen == x->rcap && !x->rpos)
		return -ENOBUFS;
	return fill(x, MSG_DONTWAIT);
}

void xport_unbuffer(struct xport *x)
{
	free(x->rbuf);
	x->rbuf = NULL;
	x->rpos = x->rlen = x->rcap = 0;
}

int xport_write(struct xport *x, const void *buf, size_t len)
{
	struct iovec iov = {.iov_base = (void *) buf, .iov_len = len};

	return xport_writev(x, &iov, 1);
}

static int writev_tls(struct xport *x, const struct iovec *iov, int n)
{
	for (int i = 0; i < n; i++) {
		const char *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;
		while (len) {
			ssize_t w = tls_send(x->tls, p, len);
			if (w == -EINTR || w == -EAGAIN)
				continue;
			if (w < 0)
				return (int) w;
			atomic_fetch_add(&x->tx_bytes, (uint64_t) w);
			p += w;
			len -= (size_t) w;
		}
	}
	return 0;
}

static int writev_plain(struct xport *x, const struct iovec *iov, int n)
{
	struct iovec v[16];
	size_t off = 0;
	int i = 0, cnt;

	/* advance through iov by (i, off) after short writes */
	while (i < n) {
		size_t off0 = off, total = 0;
		struct msghdr mh;
		ssize_t w;

		for (cnt = 0; cnt < 16 && i + cnt < n && total < XPORT_PIECE;
		     cnt++) {
			v[cnt].iov_base =
			    (char *) iov[i + cnt].iov_base + (cnt ? 0 : off0);
			v[cnt].iov_len =
			    iov[i + cnt].iov_len - (cnt ? 0 : off0);
			if (v[cnt].iov_len > XPORT_PIECE - total)
				v[cnt].iov_len = XPORT_PIECE - total;
			total += v[cnt].iov_len;
		}
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = v;
		mh.msg_iovlen = (size_t) cnt;
		w = sendmsg(x->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		atomic_fetch_add(&x->tx_bytes, (uint64_t) w);
		while (i < n) {
			size_t rem = iov[i].iov_len - off;
			if ((size_t) w < rem) {
				off += (size_t) w;
				break;
			}
			w -= (ssize_t) rem;
			i++;
			off = 0;
		}
	}
	return 0;
}

int xport_writev(struct xport *x, const struct iovec *iov, int n)
{
	int r;

	atomic_store(&x->tx_from, atomic_load(&x->tx_bytes));
	atomic_store(&x->tx_since, clock_mono_ns());
	r = x->tls ? writev_tls(x, iov, n) : writev_plain(x, iov, n);
	atomic_store(&x->tx_since, 0);
	return r;
}
