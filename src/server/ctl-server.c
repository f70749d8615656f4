/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl-server.c - the control socket: a Unix stream socket beside the pool,
 * an accept thread, and one thread per client that reads request lines
 * (with any file descriptor passed along), runs them through ctl_handle
 * and writes the replies in order.
 *
 * Lifecycle of a client thread:
 *
 *   read --(a whole line)--> ctl_handle --> write reply --+
 *    ^                                                    |
 *    +------------------(not stopping)--------------------+
 *   read --(EOF, error, stopping)--> close
 *   read --(CTL_MAX_LINE bytes, no newline)--> error reply --> close
 *
 * Stopping (ctl_server_stop) writes to a pipe that every poll() watches:
 * the accept thread ends, and each client thread ends once the request it
 * is running (if any) has been answered.  Then stop joins them all.
 *
 * Memory is bounded: at most CTL_MAX_CLIENTS connections, each with a
 * buffer of at most CTL_MAX_LINE + 1 bytes and at most CTL_MAX_FDS
 * passed descriptors waiting for their request.
 */
#include "server/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/ctl-internal.h"
#include "server/usock.h"
#include "util/log.h"

#define CTL_MAX_CLIENTS 32
#define CTL_MAX_FDS	4 /* descriptors received but not yet used */

struct ctl_client {
	struct ctl_server *srv;
	int fd;
	pthread_t thread;
	bool done; /* the thread has finished: join it */
	struct ctl_client *next;
	/* the line being read */
	char *buf;
	size_t len, cap;
	/* passed descriptors, with the offset in buf of the first byte of
	 * the message that carried them */
	int fds[CTL_MAX_FDS];
	size_t fd_pos[CTL_MAX_FDS];
	size_t nfds;
};

struct ctl_server {
	struct tv_pool *pool;
	const struct ctl_hooks *hooks;
	struct usock sock;
	int stop_pipe[2]; /* readable once stopping */
	pthread_t accept_thread;
	pthread_mutex_t lock; /* protects clients, nclients */
	struct ctl_client *clients;
	size_t nclients;
};

/* ---- one client ---- */

static bool stopping(struct ctl_server *srv)
{
	struct pollfd p = {.fd = srv->stop_pipe[0], .events = POLLIN};

	return poll(&p, 1, 0) > 0;
}

/* Write all of buf; false when the client is gone or we stop. */
static bool send_all(struct ctl_client *c, const char *buf, size_t len)
{
	while (len) {
		struct pollfd p[2] = {
		    {.fd = c->fd, .events = POLLOUT},
		    {.fd = c->srv->stop_pipe[0], .events = POLLIN},
		};
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (!(p[0].revents & (POLLOUT | POLLERR | POLLHUP)))
			return false; /* stopping, and the client reads not */
		n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t) n;
	}
	return true;
}

static void close_fds_before(struct ctl_client *c, size_t end, int *first)
{
	size_t k = 0;

	*first = -1;
	for (size_t i = 0; i < c->nfds; i++) {
		if (c->fd_pos[i] < end) {
			if (*first < 0)
				*first = c->fds[i];
			else
				close(c->fds[i]); /* one per request */
		} else {
			c->fds[k] = c->fds[i];
			c->fd_pos[k++] = c->fd_pos[i] - end;
		}
	}
	c->nfds = k;
}

/* Answer a request line of len bytes at the start of the buffer;
 * consumed is what to drop from the buffer. */
static bool answer(struct ctl_client *c, size_t len, size_t consumed)
{
	char *reply = NULL;
	size_t rlen = 0;
	int fd, r;
	bool ok;

	struct ctl_wait wait = {.stop_fd = c->srv->stop_pipe[0],
				.peer_fd = c->fd};

	close_fds_before(c, consumed, &fd);
	r = ctl_handle(c->srv->pool, c->srv->hooks, &wait, c->buf, len, fd,
		       &reply, &rlen);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return false;
	ok = send_all(c, reply, rlen);
	free(reply);
	memmove(c->buf, c->buf + consumed, c->len - consumed);
	c->len -= consumed;
	return ok;
}

/* Read more bytes (and descriptors); false at EOF, error or stop. */
static bool receive(struct ctl_client *c)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * CTL_MAX_FDS)];
		struct cmsghdr align;
	} cbuf;
	struct pollfd p[2] = {
	    {.fd = c->fd, .events = POLLIN},
	    {.fd = c->srv->stop_pipe[0], .events = POLLIN},
	};
	struct iovec iov;
	struct msghdr mh = {0};
	ssize_t n;

	if (c->cap - c->len < 4096 && c->cap < CTL_MAX_LINE + 1) {
		size_t nc = c->cap ? 2 * c->cap : 8192;
		char *nb;

		if (nc > CTL_MAX_LINE + 1)
			nc = CTL_MAX_LINE + 1;
		nb = realloc(c->buf, nc);
		if (!nb)
			return false;
		c->buf = nb;
		c->cap = nc;
	}
	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (p[1].revents)
			return false;
		break;
	}
	iov.iov_base = c->buf + c->len;
	iov.iov_len = c->cap - c->len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf.b;
	mh.msg_controllen = sizeof(cbuf.b);
	do {
		n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return false;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
	     cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
			       sizeof(fd));
			if (c->nfds < CTL_MAX_FDS) {
				c->fds[c->nfds] = fd;
				c->fd_pos[c->nfds++] = c->len;
			} else {
				close(fd);
			}
		}
	}
	if (n == 0)
		return false;
	c->len += (size_t) n;
	return true;
}

static void *client_main(void *arg)
{
	struct ctl_client *c = arg;
	struct ctl_server *srv = c->srv;
	size_t scanned = 0;

	for (;;) {
		char *nl = c->len > scanned ? memchr(c->buf + scanned, '\n',
						     c->len - scanned)
					    : NULL;

		if (nl) {
			size_t len = (size_t) (nl - c->buf);

			if (stopping(srv) || !answer(c, len, len + 1))
				break;
			scanned = 0;
			continue;
		}
		scanned = c->len;
		if (c->len > CTL_MAX_LINE) {
			/* ctl_handle answers "request too long"; then we
			 * close, as the rest of the line cannot be parsed */
			answer(c, c->len, c->len);
			break;
		}
		if (!receive(c))
			break;
	}
	for (size_t i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	c->nfds = 0;
	shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_lock(&srv->lock);
	c->done = true;
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static void client_free(struct ctl_client *c)
{
	close(c->fd);
	free(c->buf);
	free(c);
}

/* Join the finished client threads (lock held). */
static void reap(struct ctl_server *srv, bool all)
{
	struct ctl_client **pp = &srv->clients;

	while (*pp) {
		struct ctl_client *c = *pp;

		if (!all && !c->done) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		srv->nclients--;
		pthread_mutex_unlock(&srv->lock);
		pthread_join(c->thread, NULL);
		client_free(c);
		pthread_mutex_lock(&srv->lock);
	}
}

/* A connection over the limit gets an error reply and is closed. */
static void refuse(int fd, const char *msg)
{
	char *reply;
	size_t len;

	if (ctl_error_reply(-EBUSY, msg, &reply, &len) == 0) {
		/* best effort: the connection is closed either way */
		(void) !send(fd, reply, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		free(reply);
	}
	close(fd);
}

static void *accept_main(void *arg)
{
	struct ctl_server *srv = arg;

	for (;;) {
		struct pollfd p[2] = {
		    {.fd = srv->sock.fd, .events = POLLIN},
		    {.fd = srv->stop_pipe[0], .events = POLLIN},
		};
		struct ctl_client *c;
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("control socket: poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(srv->sock.fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue; /* EAGAIN, ECONNABORTED, EMFILE: retry */
		pthread_mutex_lock(&srv->lock);
		reap(srv, false);
		if (srv->nclients >= CTL_MAX_CLIENTS) {
			pthread_mutex_unlock(&srv->lock);
			refuse(fd, "too many control connections");
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			pthread_mutex_unlock(&srv->lock);
			refuse(fd, "out of memory");
			continue;
		}
		c->srv = srv;
		c->fd = fd;
		if (pthread_create(&c->thread, NULL, client_main, c)) {
			pthread_mutex_unlock(&srv->lock);
			free(c);
			refuse(fd, "cannot start a thread");
			continue;
		}
		c->next = srv->clients;
		srv->clients = c;
		srv->nclients++;
		pthread_mutex_unlock(&srv->lock);
	}
	return NULL;
}

/* ---- start, stop ---- */

int ctl_server_start(const char *path, struct tv_pool *pool,
		     const struct ctl_hooks *hooks, struct ctl_server **out,
		     char *msg, size_t msglen)
{
	struct ctl_server *srv;
	int r;

	msg[0] = 0;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->pool = pool;
	srv->hooks = hooks;
	srv->sock = (struct usock) USOCK_INIT;
	if (pipe2(srv->stop_pipe, O_CLOEXEC) < 0) {
		r = -errno;
		goto out_free;
	}
	r = pthread_mutex_init(&srv->lock, NULL);
	if (r) {
		r = -r;
		goto out_pipe;
	}
	r = usock_listen(&srv->sock, path, 64, msg, msglen);
	if (r < 0)
		goto out_mutex;
	r = pthread_create(&srv->accept_thread, NULL, accept_main, srv);
	if (r) {
		r = -r;
		goto out_socket;
	}
	*out = srv;
	return 0;
out_socket:
	usock_close(&srv->sock);
out_mutex:
	pthread_mutex_destroy(&srv->lock);
out_pipe:
	close(srv->stop_pipe[0]);
	close(srv->stop_pipe[1]);
out_free:
	free(srv);
	return r;
}

void ctl_server_stop(struct ctl_server *srv)
{
	ssize_t n;

	if (!srv)
		return;
	do {
		n = write(srv->stop_pipe[1], "x", 1);
	} while (n < 0 && errno == EINTR);
	pthread_join(srv->accept_thread, NULL);
	usock_close(&srv->sock);
	pthread_mutex_lock(&srv->lock);
	reap(srv, true);
	pthread_mutex_unlock(&srv->lock);
	pthread_mutex_destroy(&srv->lock);
	close(srv->stop_pipe[0]);
	close(srv->stop_pipe[1]);
	free(srv);
}
