/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * xport.c - read and write whole buffers on a socket or a TLS session.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/tls.h"
#include "server/xport.h"

int xport_read(struct xport *x, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = x->tls ? tls_recv(x->tls, p, len)
				   : recv(x->fd, p, len, 0);
		if (n < 0 && !x->tls)
			n = -errno;
		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int xport_write(struct xport *x, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return xport_writev(x, &iov, 1);
}

int xport_writev(struct xport *x, const struct iovec *iov, int n)
{
	struct iovec v[16];
	size_t off = 0;
	int i, cnt = 0;

	if (x->tls) {
		for (i = 0; i < n; i++) {
			const char *p = iov[i].iov_base;
			size_t len = iov[i].iov_len;
			while (len) {
				ssize_t w = tls_send(x->tls, p, len);
				if (w == -EINTR || w == -EAGAIN)
					continue;
				if (w < 0)
					return (int)w;
				p += w;
				len -= (size_t)w;
			}
		}
		return 0;
	}
	/* advance through iov by (i, off) after short writes */
	i = 0;
	while (i < n) {
		size_t off0 = off;
		struct msghdr mh;
		ssize_t w;

		for (cnt = 0; cnt < 16 && i + cnt < n; cnt++) {
			v[cnt].iov_base = (char *)iov[i + cnt].iov_base +
					  (cnt ? 0 : off0);
			v[cnt].iov_len = iov[i + cnt].iov_len - (cnt ? 0 : off0);
		}
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = v;
		mh.msg_iovlen = (size_t)cnt;
		w = sendmsg(x->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		while (i < n) {
			size_t rem = iov[i].iov_len - off;
			if ((size_t)w < rem) {
				off += (size_t)w;
				break;
			}
			w -= (ssize_t)rem;
			i++;
			off = 0;
		}
	}
	return 0;
}
