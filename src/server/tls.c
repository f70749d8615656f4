/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tls.c - the server side of TLS for NBD_OPT_STARTTLS (GnuTLS).
 *
 * Rules:
 *
 *  1. A context holds credentials only (PSK keys, X.509 certificate and
 *     key, optional CA) and one priority cache; after tls_ctx_new it is
 *     read-only, so any number of sessions on any threads share it.  It
 *     must outlive every session started from it (sessions borrow it).
 *  2. PSK keys live in memory we allocated; they are zeroed before they
 *     are freed, and so is the buffer the PSK file was read into.
 *  3. The PSK file is hostile input: every line is checked and an error
 *     names the file and the line.  An identity the file does not list is
 *     refused by the lookup callback (GnuTLS then fails the handshake).
 *  4. With a CA file a client must present a certificate that verifies
 *     against it, unless it authenticated with a PSK (a PSK is proof
 *     enough).  Verification happens in the handshake (so the client gets
 *     an alert) and again after it, before the session is handed out.
 *  5. Only TLS 1.2 and 1.3.  Session resumption (tickets) is off: NBD
 *     clients do not use it and it would skip rule 4 on a resumed session.
 *  6. One thread may receive while another sends.  GnuTLS allows that for
 *     the record layer; a TLS 1.3 KeyUpdate the peer requests is answered
 *     by the next gnutls_record_send (in the sending thread), not by the
 *     receiver, so the two never write the socket at once.
 *
 * Logging: tls_ctx_new logs an error (and fills msg).  What a client
 * causes goes through the session's note (tls.h), which the NBD server
 * rate-limits: tls_session_start says a failed handshake once, as a
 * warning, with the reason; tls_recv and tls_send say only errors that
 * are not the peer simply going away.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "server/tls.h"
#include "util/hex.h"
#include "util/log.h"

/*
 * The PSK key-exchanges are not in NORMAL; add them, ECDHE first (forward
 * secrecy), plain PSK last for old clients.  nbdkit and libnbd use the
 * same three.  Versions: 1.2 and 1.3 only.
 */
#define TLS_PRIORITY                                                           \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:"                          \
	"+ECDHE-PSK:+DHE-PSK:+PSK"

/* A client that stalls the handshake is dropped after this long. */
#define TLS_HANDSHAKE_TIMEOUT_MS 20000u

/* Limits on the PSK file: it is small; anything else is a mistake. */
#define PSK_FILE_MAX	 (1u << 20)
#define PSK_IDENTITY_MAX 1024u
#define PSK_KEY_MAX	 512u /* bytes, after hex decoding */
#define PSK_KEY_WEAK	 16u  /* warn below this many bytes */

struct psk_entry {
	char *identity; /* NUL-terminated, no ':' */
	size_t idlen;
	unsigned char *key;
	size_t keylen;
};

struct tls_ctx {
	gnutls_psk_server_credentials_t psk;   /* NULL without a PSK file */
	gnutls_certificate_credentials_t x509; /* NULL without a cert */
	bool verify_client;		       /* ca_file given */
	gnutls_priority_t prio;
	struct psk_entry *keys;
	size_t nkeys;
};

struct tls_session {
	gnutls_session_t gs;
	struct tls_ctx *ctx;  /* borrowed (rule 1) */
	struct tls_note note; /* fn NULL: the log */
	/* Set by the PSK callback during the handshake, for the log. */
	bool unknown_identity;
	char identity[64];
};

/* ---- errors ---- */

/* Put the message in msg (if any) and log it once. */
static void ctx_fail(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ctx_fail(char *msg, size_t msglen, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (msg && msglen)
		snprintf(msg, msglen, "%s", buf);
	log_error("tls: %s", buf);
}

/* A gnutls call that failed with r while setting up: "WHAT: REASON";
 * returns err, what it means to the caller (-ENOMEM: no resources). */
static int gnutls_fail(char *msg, size_t msglen, const char *what, int r,
		       int err)
{
	ctx_fail(msg, msglen, "%s: %s", what, gnutls_strerror(r));
	return err;
}

/* A line about what the session's client did, through its note. */
static void say(const struct tls_session *s, enum log_level lvl,
		const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(const struct tls_session *s, enum log_level lvl,
		const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (lvl > log_get_level())
		return; /* not shown: not counted against the note's rate */
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (s->note.fn)
		s->note.fn(s->note.arg, lvl, buf);
	else
		log_msg(lvl, "%s", buf);
}

/* Printable copy of a peer-supplied identity, for messages. */
static void printable(char *dst, size_t dstlen, const void *src, size_t n)
{
	const unsigned char *s = src;
	size_t i, o = 0;

	for (i = 0; i < n && o + 4 < dstlen; i++)
		dst[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char) s[i] : '?';
	if (i < n && o + 4 <= dstlen) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
}

/* ---- PSK file ---- */

/*
 * Read a whole small regular file.  On success *out is ours to free (the
 * caller zeroes it first: it holds keys) and is NUL-terminated.
 */
static int read_small_file(const char *path, char **out, size_t *outlen,
			   char *msg, size_t msglen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		ctx_fail(msg, msglen, "%s: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		ctx_fail(msg, msglen, "%s: %s", path, strerror(-r));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		ctx_fail(msg, msglen, "%s: not a regular file", path);
		goto out_close;
	}
	if (st.st_size > (off_t) PSK_FILE_MAX) {
		r = -EFBIG;
		ctx_fail(msg, msglen, "%s: too large (%lld bytes)", path,
			 (long long) st.st_size);
		goto out_close;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		log_warn("tls: %s: readable by group or others (mode %04o)",
			 path, (unsigned int) (st.st_mode & 07777));

	/* One more than the limit: a file that grew since fstat is caught. */
	buf = malloc(PSK_FILE_MAX + 2);
	if (!buf) {
		r = -ENOMEM;
		ctx_fail(msg, msglen, "%s: out of memory", path);
		goto out_close;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, PSK_FILE_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			ctx_fail(msg, msglen, "%s: read: %s", path,
				 strerror(-r));
			goto out_free;
		}
		if (n == 0)
			break;
		len += (size_t) n;
		if (len > PSK_FILE_MAX) {
			r = -EFBIG;
			ctx_fail(msg, msglen, "%s: too large for a PSK file",
				 path);
			goto out_free;
		}
	}
	buf[len] = '\0';
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;

out_free:
	gnutls_memset(buf, 0, len);
	free(buf);
out_close:
	close(fd);
	return r;
}

static void free_keys(struct tls_ctx *ctx)
{
	size_t i;

	for (i = 0; i < ctx->nkeys; i++) {
		struct psk_entry *e = &ctx->keys[i];
		gnutls_memset(e->key, 0, e->keylen);
		free(e->key);
		free(e->identity);
	}
	free(ctx->keys);
	ctx->keys = NULL;
	ctx->nkeys = 0;
}

/*
 * Parse one line "identity:hexkey" (without its newline) into a new entry
 * at the end of ctx->keys.
 */
static int add_psk_line(struct tls_ctx *ctx, const char *path,
			unsigned int lineno, const char *line, size_t n,
			char *msg, size_t msglen)
{
	const char *colon = memchr(line, ':', n);
	const char *hex;
	size_t idlen, hexlen, i;
	struct psk_entry *keys, *e;
	unsigned char *key;

	if (memchr(line, '\0', n)) {
		ctx_fail(msg, msglen, "%s: line %u: contains a NUL byte", path,
			 lineno);
		return -EINVAL;
	}
	if (!colon) {
		ctx_fail(msg, msglen,
			 "%s: line %u: malformed, expected identity:hexkey",
			 path, lineno);
		return -EINVAL;
	}
	idlen = (size_t) (colon - line);
	hex = colon + 1;
	hexlen = n - idlen - 1;
	if (idlen == 0 || idlen > PSK_IDENTITY_MAX) {
		ctx_fail(msg, msglen,
			 "%s: line %u: identity empty or over %u bytes", path,
			 lineno, PSK_IDENTITY_MAX);
		return -EINVAL;
	}
	if (hexlen == 0 || hexlen % 2 || hexlen / 2 > PSK_KEY_MAX) {
		ctx_fail(msg, msglen,
			 "%s: line %u: key not 2 to %u hex digits, even", path,
			 lineno, 2 * PSK_KEY_MAX);
		return -EINVAL;
	}
	for (i = 0; i < ctx->nkeys; i++) {
		if (ctx->keys[i].idlen == idlen &&
		    !memcmp(ctx->keys[i].identity, line, idlen)) {
			char id[64];
			printable(id, sizeof(id), line, idlen);
			ctx_fail(msg, msglen,
				 "%s: line %u: identity '%s' listed twice",
				 path, lineno, id);
			return -EINVAL;
		}
	}

	key = malloc(hexlen / 2);
	if (!key)
		goto nomem;
	if (hex_decode(hex, hexlen, key, hexlen / 2, &i) < 0) {
		/* what was decoded before the bad digit is part of a key */
		gnutls_memset(key, 0, hexlen / 2);
		free(key);
		ctx_fail(msg, msglen, "%s: line %u: key is not hexadecimal",
			 path, lineno);
		return -EINVAL;
	}
	if (hexlen / 2 < PSK_KEY_WEAK)
		log_warn("tls: %s: line %u: key of only %zu bytes", path,
			 lineno, hexlen / 2);

	keys = realloc(ctx->keys, (ctx->nkeys + 1) * sizeof(*keys));
	if (!keys)
		goto nomem_key;
	ctx->keys = keys;
	e = &keys[ctx->nkeys];
	e->identity = strndup(line, idlen);
	if (!e->identity)
		goto nomem_key;
	e->idlen = idlen;
	e->key = key;
	e->keylen = hexlen / 2;
	ctx->nkeys++;
	return 0;

nomem_key:
	gnutls_memset(key, 0, hexlen / 2);
	free(key);
nomem:
	ctx_fail(msg, msglen, "%s: out of memory", path);
	return -ENOMEM;
}

static int load_psk_file(struct tls_ctx *ctx, const char *path, char *msg,
			 size_t msglen)
{
	char *buf = NULL, *p, *end;
	size_t len = 0;
	unsigned int lineno = 0;
	int r;

	r = read_small_file(path, &buf, &len, msg, msglen);
	if (r < 0)
		return r;

	p = buf;
	end = buf + len;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t) (end - p));
		char *next = nl ? nl + 1 : end;
		size_t n = (size_t) ((nl ? nl : end) - p);

		lineno++;
		if (n && p[n - 1] == '\r') /* tolerate CRLF files */
			n--;
		if (n) {
			r = add_psk_line(ctx, path, lineno, p, n, msg, msglen);
			if (r < 0)
				goto out;
		}
		p = next;
	}
	if (ctx->nkeys == 0) {
		ctx_fail(msg, msglen, "%s: empty (no identity:hexkey lines)",
			 path);
		r = -EINVAL;
	}
out:
	gnutls_memset(buf, 0, len);
	free(buf);
	return r;
}

/* GnuTLS asks for the key of the identity the client offered. */
static int psk_lookup(gnutls_session_t gs, const gnutls_datum_t *user,
		      gnutls_datum_t *key)
{
	struct tls_session *s = gnutls_session_get_ptr(gs);
	struct tls_ctx *ctx = s->ctx;
	size_t i;

	for (i = 0; i < ctx->nkeys; i++) {
		struct psk_entry *e = &ctx->keys[i];
		if (e->idlen != user->size ||
		    memcmp(e->identity, user->data, user->size))
			continue;
		/* GnuTLS frees (and zeroes) it with gnutls_free. */
		key->data = gnutls_malloc(e->keylen);
		if (!key->data)
			return -1;
		memcpy(key->data, e->key, e->keylen);
		key->size = (unsigned int) e->keylen;
		printable(s->identity, sizeof(s->identity), user->data,
			  user->size);
		return 0;
	}
	s->unknown_identity = true;
	printable(s->identity, sizeof(s->identity), user->data, user->size);
	return -1;
}

/* ---- X.509 ---- */

static int check_readable(const char *path, const char *what, char *msg,
			  size_t msglen)
{
	if (access(path, R_OK) < 0) {
		int r = -errno;
		ctx_fail(msg, msglen, "%s %s: %s", what, path, strerror(-r));
		return r;
	}
	return 0;
}

static int load_x509(struct tls_ctx *ctx, const struct tls_opts *o, char *msg,
		     size_t msglen)
{
	int r;

	r = check_readable(o->cert_file, "certificate", msg, msglen);
	if (r < 0)
		return r;
	r = check_readable(o->key_file, "key", msg, msglen);
	if (r < 0)
		return r;
	if (o->ca_file) {
		r = check_readable(o->ca_file, "CA file", msg, msglen);
		if (r < 0)
			return r;
	}

	r = gnutls_certificate_allocate_credentials(&ctx->x509);
	if (r < 0)
		return gnutls_fail(msg, msglen, "allocating X.509 credentials",
				   r, -ENOMEM);
	/* Also checks that the key belongs to the certificate. */
	r = gnutls_certificate_set_x509_key_file(
	    ctx->x509, o->cert_file, o->key_file, GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		ctx_fail(msg, msglen, "certificate %s with key %s: %s",
			 o->cert_file, o->key_file, gnutls_strerror(r));
		return -EINVAL;
	}
	if (o->ca_file) {
		r = gnutls_certificate_set_x509_trust_file(
		    ctx->x509, o->ca_file, GNUTLS_X509_FMT_PEM);
		if (r <= 0) {
			ctx_fail(msg, msglen, "CA file %s: %s", o->ca_file,
				 r < 0 ? gnutls_strerror(r)
				       : "no certificates in it");
			return -EINVAL;
		}
		ctx->verify_client = true;
	}
	r = gnutls_certificate_set_known_dh_params(ctx->x509,
						   GNUTLS_SEC_PARAM_MEDIUM);
	if (r < 0)
		return gnutls_fail(msg, msglen, "DH parameters", r, -ENOMEM);
	return 0;
}

/* ---- context ---- */

int tls_ctx_new(const struct tls_opts *o, struct tls_ctx **out, char *msg,
		size_t msglen)
{
	struct tls_ctx *ctx;
	const char *errpos = NULL;
	int r;

	if (msg && msglen)
		msg[0] = '\0';
	if (!o->psk_file && !o->cert_file && !o->key_file) {
		ctx_fail(msg, msglen, "need a PSK file or certificate and key");
		return -EINVAL;
	}
	if (!o->cert_file != !o->key_file) {
		ctx_fail(msg, msglen,
			 "a certificate needs a key and a key a certificate");
		return -EINVAL;
	}
	if (o->ca_file && !o->cert_file) {
		ctx_fail(msg, msglen,
			 "a CA file needs a server certificate and key");
		return -EINVAL;
	}

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		ctx_fail(msg, msglen, "out of memory");
		return -ENOMEM;
	}

	if (o->psk_file) {
		r = load_psk_file(ctx, o->psk_file, msg, msglen);
		if (r < 0)
			goto out_free;
		r = gnutls_psk_allocate_server_credentials(&ctx->psk);
		if (r < 0) {
			r = gnutls_fail(msg, msglen,
					"allocating PSK credentials", r,
					-ENOMEM);
			goto out_free;
		}
		gnutls_psk_set_server_credentials_function2(ctx->psk,
							    psk_lookup);
		r = gnutls_psk_set_server_known_dh_params(
		    ctx->psk, GNUTLS_SEC_PARAM_MEDIUM);
		if (r < 0) {
			r = gnutls_fail(msg, msglen, "DH parameters", r,
					-ENOMEM);
			goto out_free;
		}
	}
	if (o->cert_file) {
		r = load_x509(ctx, o, msg, msglen);
		if (r < 0)
			goto out_free;
	}

	r = gnutls_priority_init(&ctx->prio, TLS_PRIORITY, &errpos);
	if (r < 0) {
		ctx_fail(msg, msglen, "priority string at '%s': %s",
			 errpos ? errpos : "?", gnutls_strerror(r));
		r = -EINVAL;
		goto out_free;
	}

	*out = ctx;
	return 0;

out_free:
	tls_ctx_free(ctx);
	return r;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return;
	if (ctx->prio)
		gnutls_priority_deinit(ctx->prio);
	if (ctx->x509)
		gnutls_certificate_free_credentials(ctx->x509);
	if (ctx->psk)
		gnutls_psk_free_server_credentials(ctx->psk);
	free_keys(ctx);
	free(ctx);
}

/* ---- sessions ---- */

/* A failed handshake as an errno (see tls.h). */
static int handshake_errno(const struct tls_session *s, int gr)
{
	if (s->unknown_identity)
		return -EACCES;
	/* A known identity with the wrong key: TLS 1.3 finds the binder
	 * wrong, TLS 1.2 cannot decrypt the client's Finished. */
	if (s->identity[0] && (gr == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER ||
			       gr == GNUTLS_E_DECRYPTION_FAILED))
		return -EACCES;
	switch (gr) {
	case GNUTLS_E_MEMORY_ERROR:
		return -ENOMEM;
	case GNUTLS_E_TIMEDOUT:
		return -ETIMEDOUT;
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_PUSH_ERROR:
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
		return -ECONNRESET;
	case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
	case GNUTLS_E_CERTIFICATE_ERROR:
	case GNUTLS_E_CERTIFICATE_REQUIRED:
	case GNUTLS_E_NO_CERTIFICATE_FOUND:
	case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
	case GNUTLS_E_KEY_USAGE_VIOLATION:
		return -EACCES;
	default:
		return -EPROTO;
	}
}

/* Why the client's certificate was refused, in words. */
static int cert_status_text(const struct tls_session *s, char *buf, size_t len)
{
	gnutls_datum_t txt = {NULL, 0};
	unsigned int status = gnutls_session_get_verify_cert_status(s->gs);

	if (gnutls_certificate_verification_status_print(
		status, GNUTLS_CRT_X509, &txt, 0) < 0)
		return -EINVAL;
	snprintf(buf, len, "%s", (const char *) txt.data);
	gnutls_free(txt.data);
	return 0;
}

static void log_handshake_failure(const struct tls_session *s, int gr)
{
	const char *alert = NULL;
	char why[256];

	if (gr == GNUTLS_E_FATAL_ALERT_RECEIVED)
		alert = gnutls_alert_get_name(gnutls_alert_get(s->gs));
	if (s->unknown_identity)
		say(s, LOG_LVL_WARN,
		    "tls: handshake failed: unknown PSK identity '%s'",
		    s->identity);
	else if (s->identity[0])
		say(s, LOG_LVL_WARN,
		    "tls: handshake failed for PSK identity '%s': %s",
		    s->identity, gnutls_strerror(gr));
	else if (gr == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
		 cert_status_text(s, why, sizeof(why)) == 0)
		say(s, LOG_LVL_WARN,
		    "tls: handshake failed: client certificate: %s", why);
	else
		say(s, LOG_LVL_WARN, "tls: handshake failed: %s%s%s%s",
		    gnutls_strerror(gr), alert ? " (" : "", alert ? alert : "",
		    alert ? ")" : "");
}

/*
 * After the handshake: a client that authenticated with a certificate
 * must have one that verifies against the CA (rule 4).
 */
static int verify_client(struct tls_session *s)
{
	gnutls_datum_t txt = {NULL, 0};
	unsigned int status = 0;
	int r;

	if (!s->ctx->verify_client ||
	    gnutls_auth_get_type(s->gs) != GNUTLS_CRD_CERTIFICATE)
		return 0;
	r = gnutls_certificate_verify_peers3(s->gs, NULL, &status);
	if (r < 0) {
		say(s, LOG_LVL_WARN, "tls: client certificate: %s",
		    gnutls_strerror(r));
		return -EACCES;
	}
	if (status == 0)
		return 0;
	if (gnutls_certificate_verification_status_print(
		status, GNUTLS_CRT_X509, &txt, 0) == 0) {
		say(s, LOG_LVL_WARN, "tls: client certificate refused: %s",
		    txt.data);
		gnutls_free(txt.data);
	} else {
		say(s, LOG_LVL_WARN,
		    "tls: client certificate refused (status 0x%x)", status);
	}
	return -EACCES;
}

int tls_session_start(struct tls_ctx *ctx, int fd, const struct tls_note *note,
		      struct tls_session **out)
{
	struct tls_session *s;
	int gr, r;

	s = calloc(1, sizeof(*s));
	if (!s) {
		log_error("tls: out of memory for a session");
		return -ENOMEM;
	}
	s->ctx = ctx;
	if (note)
		s->note = *note;

	/* No SIGPIPE on a dead peer; no resumption (rule 5). */
	gr = gnutls_init(&s->gs,
			 GNUTLS_SERVER | GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS);
	if (gr < 0) {
		log_error("tls: gnutls_init: %s", gnutls_strerror(gr));
		free(s);
		return -ENOMEM;
	}
	gnutls_session_set_ptr(s->gs, s);

	if (ctx->psk) {
		gr = gnutls_credentials_set(s->gs, GNUTLS_CRD_PSK, ctx->psk);
		if (gr < 0)
			goto fail_setup;
	}
	if (ctx->x509) {
		gr = gnutls_credentials_set(s->gs, GNUTLS_CRD_CERTIFICATE,
					    ctx->x509);
		if (gr < 0)
			goto fail_setup;
		if (ctx->verify_client) {
			gnutls_certificate_server_set_request(
			    s->gs, GNUTLS_CERT_REQUIRE);
			/* Verify inside the handshake too (rule 4). */
			gnutls_session_set_verify_cert(s->gs, NULL, 0);
		}
	}
	gr = gnutls_priority_set(s->gs, ctx->prio);
	if (gr < 0)
		goto fail_setup;

	gnutls_transport_set_int(s->gs, fd);
	gnutls_handshake_set_timeout(s->gs, TLS_HANDSHAKE_TIMEOUT_MS);

	/* Non-fatal: EINTR, EAGAIN, a warning alert: carry on.  The
	 * timeout above bounds the whole handshake, retries included. */
	do {
		gr = gnutls_handshake(s->gs);
	} while (gr < 0 && !gnutls_error_is_fatal(gr));
	if (gr < 0) {
		log_handshake_failure(s, gr);
		r = handshake_errno(s, gr);
		/* Tell the client why (GnuTLS does not on its own), unless
		 * it is gone or stalled: that send could block. */
		if (r != -ECONNRESET && r != -ETIMEDOUT)
			gnutls_alert_send_appropriate(s->gs, gr);
		goto out_deinit;
	}

	r = verify_client(s);
	if (r < 0) {
		gnutls_alert_send(s->gs, GNUTLS_AL_FATAL,
				  GNUTLS_A_ACCESS_DENIED);
		goto out_deinit;
	}

	if (log_get_level() >= LOG_LVL_DEBUG) {
		char *desc = gnutls_session_get_desc(s->gs);
		log_debug("tls: handshake done: %s%s%s", desc ? desc : "?",
			  s->identity[0] ? ", PSK identity " : "", s->identity);
		gnutls_free(desc);
	}
	*out = s;
	return 0;

fail_setup:
	log_error("tls: setting up a session: %s", gnutls_strerror(gr));
	r = gr == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EPROTO;
out_deinit:
	gnutls_deinit(s->gs);
	free(s);
	return r;
}

/* A record-layer error as an errno; says what is not a plain hang-up. */
static ssize_t record_errno(const struct tls_session *s, ssize_t gr,
			    const char *op)
{
	switch (gr) {
	case GNUTLS_E_MEMORY_ERROR:
		say(s, LOG_LVL_ERROR, "tls: %s: %s", op,
		    gnutls_strerror((int) gr));
		return -ENOMEM;
	case GNUTLS_E_PUSH_ERROR:
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_SESSION_EOF:
	case GNUTLS_E_INVALID_SESSION:
		say(s, LOG_LVL_DEBUG, "tls: %s: %s", op,
		    gnutls_strerror((int) gr));
		return -ECONNRESET;
	case GNUTLS_E_REHANDSHAKE:
		say(s, LOG_LVL_WARN,
		    "tls: %s: client asked to renegotiate; refused", op);
		return -EPROTO;
	default:
		say(s, LOG_LVL_WARN, "tls: %s: %s", op,
		    gnutls_strerror((int) gr));
		return -EIO;
	}
}

ssize_t tls_recv(struct tls_session *s, void *buf, size_t len)
{
	ssize_t gr;

	if (len == 0)
		return 0;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	for (;;) {
		gr = gnutls_record_recv(s->gs, buf, len);
		if (gr >= 0)
			return gr; /* 0: close_notify */
		if (gr == GNUTLS_E_AGAIN || gr == GNUTLS_E_INTERRUPTED ||
		    gr == GNUTLS_E_WARNING_ALERT_RECEIVED)
			continue;
		/* A peer that closes without close_notify: end of stream
		 * all the same (the NBD layer knows whether that was at
		 * a message boundary). */
		if (gr == GNUTLS_E_PREMATURE_TERMINATION)
			return 0;
		return record_errno(s, gr, "recv");
	}
}

ssize_t tls_send(struct tls_session *s, const void *buf, size_t len)
{
	ssize_t gr;

	if (len == 0)
		return 0;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	for (;;) {
		/* After AGAIN/INTERRUPTED GnuTLS wants the same buffer
		 * again; it is. */
		gr = gnutls_record_send(s->gs, buf, len);
		if (gr > 0)
			return gr;
		if (gr == GNUTLS_E_AGAIN || gr == GNUTLS_E_INTERRUPTED)
			continue;
		if (gr == 0) /* cannot happen with len > 0 */
			return -EIO;
		return record_errno(s, gr, "send");
	}
}

void tls_session_bye(struct tls_session *s)
{
	int fd, fl, gr;

	if (!s)
		return;
	/* A client that sends its requests and never reads the replies
	 * fills the socket buffer: a blocking send of close_notify would
	 * then wait for ever, holding the connection's thread and socket.
	 * The socket is made non-blocking for this one record (GnuTLS then
	 * says AGAIN, and close_notify is dropped); SHUT_WR does not wait
	 * for the peer's close_notify. */
	fd = gnutls_transport_get_int(s->gs);
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 ||
	    (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
		say(s, LOG_LVL_DEBUG, "tls: close_notify not sent: %s",
		    strerror(errno));
		return;
	}
	do
		gr = gnutls_bye(s->gs, GNUTLS_SHUT_WR);
	while (gr == GNUTLS_E_INTERRUPTED);
	if (!(fl & O_NONBLOCK))
		(void) fcntl(fd, F_SETFL, fl);
	if (gr < 0)
		say(s, LOG_LVL_DEBUG, "tls: close_notify: %s",
		    gnutls_strerror(gr));
}

void tls_session_free(struct tls_session *s)
{
	if (!s)
		return;
	gnutls_deinit(s->gs);
	free(s);
}
