/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * client-internal.h - what client.c (the pool calls, and the requests
 * and replies of the control protocol under them) and client-open.c
 * (finding and trusting the daemon of a pool, cli_open, cli_close)
 * share.  client-open.c calls into client.c, never the other way.
 */
#ifndef TV_CLI_CLIENT_INTERNAL_H
#define TV_CLI_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "thinvol.h"
#include "util/json.h"

struct cli_pool {
	struct tv_pool *local; /* or NULL: remote */
	int fd;		       /* remote: the control connection */
	uint64_t next_id;      /* of the next request */
	char *rbuf;	       /* bytes of replies read ahead */
	size_t rlen, rcap;
};

/*
 * The process works on one pool: remote or not is process-wide.  Set
 * once a daemon's hello passed (client-open.c).  cli_remote_msg is the
 * message of the last failed request (the daemon's, or ours about the
 * reply), or of a refused daemon.
 */
#define CLI_REMOTE_MSG_MAX 2048
extern bool cli_remote;
extern char cli_remote_msg[CLI_REMOTE_MSG_MAX];

/* Set cli_remote_msg; returns err. */
int cli_set_msg(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "control socket: malformed reply from the daemon (WHAT)": -EPROTO. */
int cli_bad_reply(const char *what);

/* A request being written: cli_rq_start, then its arguments (client.c),
 * then cli_call, which sends it and frees it. */
struct rq {
	FILE *f;
	char *buf;
	size_t len;
	bool first; /* no argument written yet */
};

/* Start request op (with the next id) on p: 0 or -ENOMEM. */
int cli_rq_start(struct rq *q, struct cli_pool *p, const char *op);

/*
 * Send the request in q (with fd passed, if >= 0) and read its reply.
 * On success *doc is the reply (json_free) and *res its result.  On an
 * error reply returns its -errno, with cli_last_error() its message and
 * *index (if not NULL) the failed op of a batch.
 */
int cli_call(struct cli_pool *p, struct rq *q, int fd, struct json_value **doc,
	     const struct json_value **res, size_t *index);

/* o[key], an unsigned integer, or a malformed reply. */
int cli_r_u64(const struct json_value *o, const char *key, uint64_t *out);

#endif
