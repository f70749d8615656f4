/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tls - TLS for the NBD server (GnuTLS): a server context made from a PSK
 * file or an X.509 certificate and key (and optionally a CA to verify
 * client certificates), and sessions started on a connected socket after
 * NBD_OPT_STARTTLS.
 *
 * A session may be used by two threads at once: one receiving and one
 * sending (GnuTLS allows exactly that); callers serialise their sends.
 */
#ifndef TV_SERVER_TLS_H
#define TV_SERVER_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "util/log.h"

struct tls_opts {
	const char *psk_file;  /* "identity:hexkey" lines (psktool's format) */
	const char *cert_file; /* PEM; with key_file */
	const char *key_file;
	const char *ca_file; /* optional: require and verify client certs */
};

struct tls_ctx;
struct tls_session;

/* Load the credentials; errors name the file and the reason (logged once
 * and put in msg).  Returns 0 or a negative errno. */
int tls_ctx_new(const struct tls_opts *o, struct tls_ctx **out, char *msg,
		size_t msglen);
void tls_ctx_free(struct tls_ctx *ctx);

/*
 * Where a session says what its client did (a failed handshake and why,
 * a refused certificate, a broken record): lines a client can cause at
 * will, so the server passes them through its rate limit.  fn gets the
 * line's level and text (without the client's name, which the server
 * knows); arg is borrowed for the session's life.  NULL, or a NULL fn:
 * straight to the log.
 */
struct tls_note {
	void (*fn)(void *arg, enum log_level lvl, const char *msg);
	void *arg;
};

/* The server side of a TLS handshake on fd (blocking); on success the
 * session owns nothing of fd (the caller closes it after tls_session_free).
 * Returns 0 or a negative errno (-ECONNRESET, -EPROTO, -EACCES); the
 * reason of a failure went to note, once. */
int tls_session_start(struct tls_ctx *ctx, int fd, const struct tls_note *note,
		      struct tls_session **out);

/* Like recv/send: bytes transferred (> 0), 0 at end of stream (recv), or
 * a negative errno.  Retries EINTR/EAGAIN internally. */
ssize_t tls_recv(struct tls_session *s, void *buf, size_t len);
ssize_t tls_send(struct tls_session *s, const void *buf, size_t len);

/* Send close_notify if the socket takes it at once: never waits, neither
 * for room in a socket buffer that a client does not read nor for the
 * peer's close_notify.  No other thread may use the session meanwhile. */
void tls_session_bye(struct tls_session *s);
void tls_session_free(struct tls_session *s);

#endif
