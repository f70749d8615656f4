/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds - the NBD server: every volume of a pool as an export
 * (fixed newstyle; doc/nbd.md says what is supported and how).
 *
 * Threads: each connection has its own threads (one for the handshake,
 * then up to NBDS_WORKERS that take turns reading a request and run it and
 * reply themselves), so a slow client only ever holds up its own threads.
 * Replies go out in any order, under the connection's send lock.
 */
#ifndef TV_SERVER_NBDS_H
#define TV_SERVER_NBDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "thinvol.h"

struct tls_ctx;
struct nbds;

struct nbds_opts {
	struct tv_pool *pool; /* borrowed until nbds_free */
	struct tls_ctx *tls;  /* NULL: no STARTTLS; borrowed */
	bool tls_required;    /* every option but STARTTLS needs TLS first */
	bool verbose;	      /* a log line per connection event */
};

int nbds_new(const struct nbds_opts *o, struct nbds **out);

/* Serve a new connection on fd (takes ownership) in threads of its own.
 * peer names it in log lines.  -ESHUTDOWN once nbds_shutdown began. */
int nbds_accept(struct nbds *s, int fd, const char *peer);

/* Serve a connection on fd in the calling thread, returning when it ends
 * (fd is closed).  For fuzzing and tests. */
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
