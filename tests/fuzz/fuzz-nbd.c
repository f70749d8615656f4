/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-nbd - the NBD server: an input is everything a client sends on one
 * connection (its 4 bytes of flags, options, then requests), fed through
 * a socketpair into nbds_serve_fd() (src/server/nbds.c), the real code
 * the daemon runs for each connection, on the base pool of fuzz.h (in a
 * temporary file, restored before every input).  The seeds are real
 * client sessions (gen-nbd-corpus.py, capture-nbd.py).
 *
 * The server runs in a thread of its own; this thread writes the input
 * and reads the replies at the same time (both ends non-blocking under
 * poll, so that neither side can fill its socket buffer and wait for the
 * other), then shuts down its write side: the server sees EOF, finishes
 * the requests it read and closes.  Replies are drained and discarded;
 * the oracle is the sanitizers, and a hang is a bug (libFuzzer's
 * -timeout reports it).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "server/nbds.h"

struct conn {
	struct nbds *srv;
	int fd;
};

static void *serve(void *arg)
{
	struct conn *c = arg;

	nbds_serve_fd(c->srv, c->fd);
	return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fuzz_quiet();
	/* our writes to a server that closed early: EPIPE, not a signal */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static void talk(int fd, const uint8_t *data, size_t size)
{
	static uint8_t sink[65536];
	size_t sent = 0;
	bool wr_open = true;

	if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
		fuzz_die("fcntl: %m");
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (wr_open && sent == size) {
			shutdown(fd, SHUT_WR);
			wr_open = false;
		}
		if (wr_open)
			pfd.events |= POLLOUT;
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			fuzz_die("poll: %m");
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(fd, sink, sizeof(sink));
			if (n == 0)
				return; /* the server closed */
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				return; /* ECONNRESET: it closed on us */
		}
		if (wr_open && (pfd.revents & POLLOUT)) {
			n = write(fd, data + sent, size - sent);
			if (n > 0)
				sent += (size_t) n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				wr_open = false; /* EPIPE: it stopped reading */
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbds_opts o = {0};
	struct conn c;
	pthread_t t;
	int sv[2], r;

	o.pool = fuzz_pool_file_open();
	r = nbds_new(&o, &c.srv);
	if (r < 0)
		fuzz_die("nbds_new: %s", strerror(-r));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		fuzz_die("socketpair: %m");
	c.fd = sv[0];
	if ((r = pthread_create(&t, NULL, serve, &c)))
		fuzz_die("pthread_create: %s", strerror(r));
	talk(sv[1], data, size);
	pthread_join(t, NULL);
	close(sv[1]);
	nbds_shutdown(c.srv);
	nbds_free(c.srv);
	tv_pool_close(o.pool);
	return 0;
}
