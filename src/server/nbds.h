/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds - the NBD server: every volume of a pool as an export
 * (fixed newstyle; docs/nbd.md says what is supported and how).
 *
 * Threads: each connection has its own threads (one for the handshake,
 * then up to NBDS_WORKERS that take turns reading a request and run it and
 * reply themselves), so a slow client only ever holds up its own threads.
 * Replies go out in any order, under the connection's send lock.
 *
 * Limits (docs/nbd.md, "Limits"): connections in all and per TCP peer
 * address, a deadline for the handshake, and the buffer memory of the
 * requests in flight, per connection and in all.  A client that floods
 * or stalls holds a bounded share and never locks others out for good.
 */
#ifndef TV_SERVER_NBDS_H
#define TV_SERVER_NBDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "thinvol.h"

struct tls_ctx;
struct nbds;

/* The daemon's defaults (thinvol serve); 0 in nbds_opts means none. */
#define NBDS_DEFAULT_CONNECTIONS 1024
#define NBDS_DEFAULT_PER_PEER	 64
#define NBDS_DEFAULT_HANDSHAKE_S 10
/* A reply that takes no byte for this long, while other requests wait
 * for memory, ends its connection. */
#define NBDS_DEFAULT_STALL_S 30

struct nbds_opts {
	struct tv_pool *pool; /* borrowed until nbds_free */
	struct tls_ctx *tls;  /* NULL: no STARTTLS; borrowed */
	bool tls_required;    /* every option but STARTTLS needs TLS first */
	bool verbose;	      /* a log line per connection event */
	/* 0: no limit */
	unsigned int max_connections; /* at once, both transports */
	unsigned int max_per_peer;    /* at once from one TCP address */
	unsigned int handshake_ms;    /* from accept to transmission */
	unsigned int stall_ms;	      /* see NBDS_DEFAULT_STALL_S */
	/* buffer memory of the requests in flight, all connections; 0: a
	 * quarter of the RAM, at most 1 GiB */
	uint64_t max_memory;
	/* threads for the connections (each has one, and helpers while its
	 * queue is deep); 0: what the task limits allow (RLIMIT_NPROC,
	 * pids.max) less a reserve for the rest of the daemon.  With a
	 * limit, max_connections is lowered to half of it at most. */
	unsigned int max_threads;
};

int nbds_new(const struct nbds_opts *o, struct nbds **out);

/*
 * Serve a new connection on fd (takes ownership) in threads of its own.
 * peer names it in log lines; addr is a TCP peer's address (the
 * per-peer limit counts by it), NULL for a Unix socket.  -EAGAIN when a
 * limit refuses it, -ESHUTDOWN once nbds_shutdown began (fd closed).
 */
int nbds_accept(struct nbds *s, int fd, const char *peer, const char *addr);

/* Serve a connection on fd in the calling thread, returning when it ends
 * (fd is closed), as a Unix client under the same limits (refused: fd
 * closed at once).  For fuzzing and tests. */
void nbds_serve_fd(struct nbds *s, int fd);

/* The ctl_hooks of the control server (see ctl.h): keep clients off a
 * volume being deleted or shrunk.  id 0 claims every volume, and every
 * connection (one still negotiating too): for tv_pool_reopen. */
int nbds_claim(struct nbds *s, uint64_t id, bool force, char *msg,
	       size_t msglen);
void nbds_release(struct nbds *s, uint64_t id);

/* Number of open connections (to volume id, or all with id 0). */
size_t nbds_connections(struct nbds *s, uint64_t id);

/* Stop reading from every connection, let requests already read finish
 * and their replies go out, and wait for every connection to close. */
void nbds_shutdown(struct nbds *s);

void nbds_free(struct nbds *s);

#endif
