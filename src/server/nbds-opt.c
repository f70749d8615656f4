/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds-opt.c - the NBD server's option phase (doc/proto.md, "Fixed
 * newstyle negotiation"): the greeting, the options, STARTTLS, and the
 * way into transmission (GO, EXPORT_NAME).
 *
 * Rules:
 *   1. Options are refused before they are looked at in the spec's order
 *      (option_refused): a client without FIXED_NEWSTYLE is in NOTLS
 *      mode, under --tls require every option but STARTTLS and ABORT
 *      gets ERR_TLS_REQD whatever its size, then data too large to keep
 *      gets ERR_TOO_BIG (only for options that take data).  ABORT is
 *      acknowledged whatever it carries.
 *   2. A SET_META_CONTEXT replaces the selection even when it fails; the
 *      selection names a volume by id, so "#ID" and the name are the
 *      same export.  STARTTLS forgets everything negotiated before it.
 *   3. What a client sends is shown in a log line or a reply string only
 *      through esc_text (util/escape.h): no forged log lines, and reply
 *      strings stay UTF-8 as the spec wants of every string.  Lines about
 *      misbehaving clients go through nbds_note (a few a second), the
 *      TLS session's too (tls_noted).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "server/nbd-proto.h"
#include "server/nbds-internal.h"
#include "server/tls.h"
#include "util/endian.h"
#include "util/escape.h"
#include "util/log.h"

#define NBDS_MAX_OPTION (64u << 10) /* option data we keep */
#define NBDS_PREF_BLOCK 4096u
/* a client's string as shown in logs and error replies (escaped, cut) */
#define NBDS_SHOWN 100

struct opt {
	uint32_t code, len;
	uint8_t *data; /* len bytes (NULL when len is 0, or dropped) */
	bool dropped;  /* len > NBDS_MAX_OPTION: read and dropped */
};

static int opt_reply(struct conn *c, uint32_t opt, uint32_t type,
		     const void *data, uint32_t len)
{
	uint8_t h[20];
	struct iovec iov[2] = {{h, sizeof(h)}, {(void *) data, len}};

	put_be64(h, NBDS_REP_MAGIC);
	put_be32(h + 8, opt);
	put_be32(h + 12, type);
	put_be32(h + 16, len);
	return xport_writev(&c->x, iov, len ? 2 : 1);
}

/* What the client sent, as it may be shown (rule 7). */
static const char *shown(char buf[NBDS_SHOWN], const char *s)
{
	return esc_str(buf, NBDS_SHOWN, s);
}

/* An error reply with a message for the client's logs.  The message is
 * UTF-8 (a proto.md string): anything of the client's in it went through
 * shown(), and a cut falls between characters. */
static int opt_error(struct conn *c, uint32_t opt, uint32_t type,
		     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int opt_error(struct conn *c, uint32_t opt, uint32_t type,
		     const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t) n >= sizeof(msg)) {
		/* cut before a last character that lost its tail */
		int k = n = sizeof(msg) - 1;
		unsigned char lead;

		while (k > 0 && ((unsigned char) msg[k - 1] & 0xc0) == 0x80)
			k--;
		lead = k > 0 ? (unsigned char) msg[k - 1] : 0;
		if (lead >= 0xc0 && k - 1 +
					    (lead >= 0xf0   ? 4
					     : lead >= 0xe0 ? 3
							    : 2) >
					n)
			n = k - 1;
		msg[n] = 0;
	}
	if (c->srv->verbose)
		log_info("%s: option %u: %s", c->peer, opt, msg);
	return opt_reply(c, opt, type, msg, (uint32_t) n);
}

static void describe(const struct tv_vol_info *v, char *buf, size_t len)
{
	char parent[48] = "";

	if (v->parent)
		snprintf(parent, sizeof(parent), ", snapshot of #%" PRIu64,
			 v->parent);
	snprintf(buf, len, "thinvol volume #%" PRIu64 ", %" PRIu64 " bytes%s%s",
		 v->id, v->size, parent,
		 (v->flags & TV_VOL_READ_ONLY) ? ", read-only" : "");
}

/* Look an export name up: the volume's name, or "#ID". */
static int find_export(struct conn *c, const char *name, struct tv_vol_info *v)
{
	uint64_t id;
	int r;

	if (!*name)
		return -ENOENT; /* no default export */
	r = tv_vol_resolve(c->srv->pool, name, &id);
	if (r == 0)
		r = tv_vol_info(c->srv->pool, id, v);
	return r;
}

/* The transmission flags of v for this connection.  SEND_DF only with
 * structured replies (proto.md, "Transmission flags": the server MUST
 * leave it clear if they have not been negotiated). */
static uint16_t tflags(const struct conn *c, const struct tv_vol_info *v)
{
	uint16_t f = NBDS_TF_HAS_FLAGS | NBDS_TF_SEND_FLUSH | NBDS_TF_SEND_FUA |
		     NBDS_TF_SEND_TRIM | NBDS_TF_SEND_WRITE_ZEROES |
		     NBDS_TF_CAN_MULTI_CONN | NBDS_TF_SEND_CACHE |
		     NBDS_TF_SEND_FAST_ZERO;

	if (c->structured)
		f |= NBDS_TF_SEND_DF;

	/* a read-only export offers nothing that writes */
	if (v->flags & TV_VOL_READ_ONLY)
		f = (uint16_t) ((f & ~(NBDS_TF_SEND_FUA | NBDS_TF_SEND_TRIM |
				       NBDS_TF_SEND_WRITE_ZEROES |
				       NBDS_TF_SEND_FAST_ZERO)) |
				NBDS_TF_READ_ONLY);
	return f;
}

static int reply_list(struct conn *c, const struct opt *o)
{
	struct tv_vol_info v[64];
	uint64_t cursor = 0;
	int n, r;

	if (o->len)
		return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
				 "LIST takes no data");
	while ((n = tv_vol_list(c->srv->pool, &cursor, v, 64)) > 0) {
		for (int i = 0; i < n; i++) {
			char desc[160];
			uint8_t buf[4 + TV_NAME_MAX + sizeof(desc)];
			size_t nl = strlen(v[i].name), dl;

			describe(&v[i], desc, sizeof(desc));
			dl = strlen(desc);
			put_be32(buf, (uint32_t) nl);
			memcpy(buf + 4, v[i].name, nl);
			memcpy(buf + 4 + nl, desc, dl);
			r = opt_reply(c, o->code, NBDS_REP_SERVER, buf,
				      (uint32_t) (4 + nl + dl));
			if (r < 0)
				return r;
		}
	}
	if (n < 0)
		return opt_error(c, o->code, NBDS_REP_ERR_PLATFORM,
				 "listing volumes: %s", tv_last_error());
	return opt_reply(c, o->code, NBDS_REP_ACK, NULL, 0);
}

/* Parse "u32 len, name" at data[*pos]; name NUL-terminated into out. */
static bool take_string(const struct opt *o, size_t *pos, char *out,
			size_t outlen)
{
	uint32_t n;

	if (o->len - *pos < 4)
		return false;
	n = get_be32(o->data + *pos);
	*pos += 4;
	if (n > o->len - *pos || n >= outlen)
		return false;
	memcpy(out, o->data + *pos, n);
	out[n] = 0;
	*pos += n;
	return strlen(out) == n; /* no NUL inside */
}

/* Forget the meta contexts selected.  A SET_META_CONTEXT replaces the
 * selection "including when this command fails" (proto.md): the
 * handshake calls this first for every one, whatever becomes of it. */
static void meta_clear(struct conn *c)
{
	c->meta_alloc = false;
	c->meta_id = 0;
}

/* LIST_META_CONTEXT and SET_META_CONTEXT. */
static int reply_meta(struct conn *c, const struct opt *o)
{
	bool set = o->code == NBDS_OPT_SET_META_CONTEXT;
	char name[NBDS_MAX_STRING + 1], q[NBDS_MAX_STRING + 1];
	char sh[NBDS_SHOWN];
	struct tv_vol_info v;
	size_t pos = 0;
	uint32_t nq;
	bool match = false;
	int r;

	if (set && !c->structured)
		return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
				 "structured replies were not negotiated");
	if (!take_string(o, &pos, name, sizeof(name)) || o->len - pos < 4)
		return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
				 "malformed meta context request");
	nq = get_be32(o->data + pos);
	pos += 4;
	/* validate every query before answering any */
	{
		size_t p2 = pos;
		for (uint32_t i = 0; i < nq; i++)
			if (!take_string(o, &p2, q, sizeof(q)))
				return opt_error(c, o->code,
						 NBDS_REP_ERR_INVALID,
						 "malformed meta context "
						 "query %u",
						 i);
		if (p2 != o->len)
			return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
					 "trailing bytes after the queries");
	}
	if (find_export(c, name, &v) < 0)
		return opt_error(c, o->code, NBDS_REP_ERR_UNKNOWN,
				 "no volume '%s'", shown(sh, name));
	if (!nq && !set) {
		match = true; /* list everything we have */
	} else {
		for (uint32_t i = 0; i < nq; i++) {
			take_string(o, &pos, q, sizeof(q));
			if (!strcmp(q, "base:allocation") ||
			    (!set && !strcmp(q, "base:")))
				match = true;
		}
	}
	if (set && match) {
		/* the volume, not the name: "#ID" and the name are the same
		 * export, and a volume renamed or deleted and created again
		 * under the name before GO is not */
		c->meta_alloc = true;
		c->meta_id = v.id;
	}
	if (match) {
		uint8_t buf[4 + 15];
		put_be32(buf, set ? NBDS_CONTEXT_ID : 0);
		memcpy(buf + 4, "base:allocation", 15);
		r = opt_reply(c, o->code, NBDS_REP_META_CONTEXT, buf,
			      sizeof(buf));
		if (r < 0)
			return r;
	}
	return opt_reply(c, o->code, NBDS_REP_ACK, NULL, 0);
}

/* Enter transmission on volume v (rule 6).  Returns 0, -EBUSY
 * (claimed), -ESHUTDOWN, or -ECONNRESET (the connection was closed
 * meanwhile: out of time, or evicted). */
static int attach(struct conn *c, const struct tv_vol_info *v)
{
	char sh[NBDS_SHOWN];
	int r = nbds_conn_attach(c, v);

	if (r)
		return r;
	c->size = v->size;
	c->ro = v->flags & TV_VOL_READ_ONLY;
	snprintf(c->name, sizeof(c->name), "%s", v->name);
	if (c->meta_alloc && c->meta_id != v->id)
		meta_clear(c); /* set for another export */
	if (c->srv->verbose)
		log_info("%s: serving volume '%s' (#%" PRIu64 ")%s", c->peer,
			 shown(sh, v->name), v->id, c->ro ? " read-only" : "");
	return 0;
}

static int info_reply(struct conn *c, uint32_t opt, uint16_t type,
		      const void *body, uint32_t blen)
{
	uint8_t buf[2 + NBDS_MAX_STRING];

	put_be16(buf, type);
	memcpy(buf + 2, body, blen);
	return opt_reply(c, opt, NBDS_REP_INFO, buf, 2 + blen);
}

/* INFO and GO: returns 1 when GO succeeded (enter transmission). */
static int reply_info_go(struct conn *c, const struct opt *o)
{
	char name[NBDS_MAX_STRING + 1], desc[160], sh[NBDS_SHOWN];
	struct tv_vol_info v;
	uint8_t body[12];
	size_t pos = 0;
	uint16_t nreq;
	bool want_name = false, want_desc = false;
	int r;

	if (!take_string(o, &pos, name, sizeof(name)) || o->len - pos < 2)
		return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
				 "malformed INFO/GO request");
	nreq = get_be16(o->data + pos);
	pos += 2;
	if (o->len - pos != 2u * nreq)
		return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
				 "INFO/GO: %u requests need %u bytes, got %zu",
				 nreq, 2u * nreq, o->len - pos);
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t t = get_be16(o->data + pos + 2u * i);
		want_name |= t == NBDS_INFO_NAME;
		want_desc |= t == NBDS_INFO_DESCRIPTION;
	}
	r = find_export(c, name, &v);
	if (r < 0)
		return opt_error(c, o->code, NBDS_REP_ERR_UNKNOWN,
				 "no volume '%s'", shown(sh, name));
	put_be64(body, v.size);
	put_be16(body + 8, tflags(c, &v));
	r = info_reply(c, o->code, NBDS_INFO_EXPORT, body, 10);
	if (r == 0 && want_name)
		r = info_reply(c, o->code, NBDS_INFO_NAME, v.name,
			       (uint32_t) strlen(v.name));
	if (r == 0 && want_desc) {
		describe(&v, desc, sizeof(desc));
		r = info_reply(c, o->code, NBDS_INFO_DESCRIPTION, desc,
			       (uint32_t) strlen(desc));
	}
	if (r == 0) {
		/* any byte alignment works (unaligned writes are
		 * read-modify-write); 4 KiB avoids that */
		put_be32(body, 1);
		put_be32(body + 4, NBDS_PREF_BLOCK);
		put_be32(body + 8, NBDS_MAX_REQUEST);
		r = info_reply(c, o->code, NBDS_INFO_BLOCK_SIZE, body, 12);
	}
	if (r < 0)
		return r;
	if (o->code == NBDS_OPT_INFO)
		return opt_reply(c, o->code, NBDS_REP_ACK, NULL, 0);
	r = attach(c, &v);
	if (r == -EBUSY)
		return opt_error(c, o->code, NBDS_REP_ERR_UNKNOWN,
				 "volume '%s' is being deleted or shrunk",
				 shown(sh, v.name));
	if (r == -ESHUTDOWN)
		return opt_error(c, o->code, NBDS_REP_ERR_SHUTDOWN,
				 "the server is shutting down");
	if (r < 0)
		return r;
	r = opt_reply(c, o->code, NBDS_REP_ACK, NULL, 0);
	return r < 0 ? r : 1;
}

/* EXPORT_NAME: no error replies exist; a failure closes the connection. */
static int reply_export_name(struct conn *c, const struct opt *o)
{
	char name[NBDS_MAX_STRING + 1], sh[NBDS_SHOWN];
	struct tv_vol_info v;
	uint8_t buf[10 + 124];
	int r;

	if (o->len > NBDS_MAX_STRING) {
		nbds_note(c->srv, LOG_LVL_INFO,
			  "%s: EXPORT_NAME of %u bytes: closing", c->peer,
			  o->len);
		return -EINVAL;
	}
	if (o->len) /* data is NULL when len is 0 (found by fuzz-nbd) */
		memcpy(name, o->data, o->len);
	name[o->len] = 0;
	if (strlen(name) != o->len || find_export(c, name, &v) < 0) {
		nbds_note(c->srv, LOG_LVL_INFO, "%s: no export '%s': closing",
			  c->peer, esc_text(sh, sizeof(sh), o->data, o->len));
		return -ENOENT;
	}
	r = attach(c, &v);
	if (r < 0)
		return r;
	memset(buf, 0, sizeof(buf));
	put_be64(buf, v.size);
	put_be16(buf + 8, tflags(c, &v));
	r = xport_write(&c->x, buf, c->no_zeroes ? 10 : sizeof(buf));
	return r < 0 ? r : 1;
}

/* Read an option's header and data (data beyond NBDS_MAX_OPTION is read
 * and dropped: o->dropped, o->len kept; beyond NBDS_MAX_DISCARD the
 * connection ends: -E2BIG). */
static int read_option(struct conn *c, struct opt *o)
{
	uint8_t h[16];
	int r;

	r = xport_read(&c->x, h, sizeof(h));
	if (r < 0)
		return r;
	if (get_be64(h) != NBDS_IHAVEOPT)
		return -EPROTO;
	o->code = get_be32(h + 8);
	o->len = get_be32(h + 12);
	o->data = NULL;
	o->dropped = false;
	if (o->len > NBDS_MAX_DISCARD) {
		nbds_note(c->srv, LOG_LVL_INFO,
			  "%s: option %u with %u bytes of data: closing",
			  c->peer, o->code, o->len);
		return -E2BIG;
	}
	if (o->len > NBDS_MAX_OPTION) {
		o->dropped = true;
		uint8_t junk[4096];
		uint32_t left = o->len;
		while (left) {
			uint32_t n = left < sizeof(junk) ? left : sizeof(junk);
			r = xport_read(&c->x, junk, n);
			if (r < 0)
				return r;
			left -= n;
		}
		return 0;
	}
	if (o->len) {
		o->data = malloc(o->len);
		if (!o->data)
			return -ENOMEM;
		r = xport_read(&c->x, o->data, o->len);
		if (r < 0) {
			free(o->data);
			o->data = NULL;
			return r;
		}
	}
	return 0;
}

/* An error reply sent (r 0) means "refused" to option_refused's caller. */
static int refused(int r)
{
	return r < 0 ? r : 1;
}

/*
 * Whether option o may not be carried out as such, before looking at what
 * it asks (proto.md, "Option haggling", "TLS support"): returns 0 to go
 * on, 1 when an error reply went out instead, or a negative errno to
 * close (EXPORT_NAME has no error reply).  In this order:
 *   - a client without FIXED_NEWSTYLE is in NOTLS mode (the server MUST
 *     operate so), where TLS_REQD MUST NOT be sent: under --tls require
 *     it is refused everything with ERR_POLICY, since it can never reach
 *     TLS;
 *   - under --tls require, before TLS, every option but STARTTLS (and
 *     ABORT, done earlier) gets ERR_TLS_REQD, whatever its size;
 *   - data too large to keep: ERR_TOO_BIG for the options that take
 *     data; those that take none say ERR_INVALID, and one we do not know
 *     ERR_UNSUP (the MUST of "Baseline"), in their own handlers.
 */
static int option_refused(struct conn *c, const struct opt *o)
{
	struct nbds *s = c->srv;

	if (!c->fixed && s->tls_required) {
		if (o->code == NBDS_OPT_EXPORT_NAME) {
			nbds_note(c->srv, LOG_LVL_INFO,
				  "%s: EXPORT_NAME without TLS: closing",
				  c->peer);
			return -EACCES;
		}
		return refused(opt_error(c, o->code, NBDS_REP_ERR_POLICY,
					 "TLS is required, and a client needs "
					 "fixed newstyle negotiation to start "
					 "it"));
	}
	if (s->tls_required && !c->x.tls && o->code != NBDS_OPT_STARTTLS) {
		if (o->code == NBDS_OPT_EXPORT_NAME) {
			nbds_note(c->srv, LOG_LVL_INFO,
				  "%s: EXPORT_NAME without TLS: closing",
				  c->peer);
			return -EACCES;
		}
		return refused(opt_error(c, o->code, NBDS_REP_ERR_TLS_REQD,
					 "TLS is required: use STARTTLS"));
	}
	if (o->dropped) {
		switch (o->code) {
		case NBDS_OPT_EXPORT_NAME:
			nbds_note(c->srv, LOG_LVL_INFO,
				  "%s: EXPORT_NAME of %u bytes: closing",
				  c->peer, o->len);
			return -E2BIG;
		case NBDS_OPT_INFO:
		case NBDS_OPT_GO:
		case NBDS_OPT_LIST_META_CONTEXT:
		case NBDS_OPT_SET_META_CONTEXT:
			return refused(opt_error(c, o->code,
						 NBDS_REP_ERR_TOO_BIG,
						 "option data of %u bytes: "
						 "more than %u",
						 o->len, NBDS_MAX_OPTION));
		}
	}
	return 0;
}

/* The TLS session's lines about its client (a failed handshake, a
 * broken record), with the client's name, at the rate of nbds_note. */
static void tls_noted(void *arg, enum log_level lvl, const char *msg)
{
	struct conn *c = arg;

	nbds_note(c->srv, lvl, "%s: %s", c->peer, msg);
}

static int reply_starttls(struct conn *c, const struct opt *o)
{
	struct nbds *s = c->srv;
	struct tls_note note = {tls_noted, c};
	int r;

	if (o->len)
		return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
				 "STARTTLS takes no data");
	if (!c->fixed)
		return opt_error(c, o->code, NBDS_REP_ERR_POLICY,
				 "TLS needs fixed newstyle negotiation");
	if (!s->tls)
		return opt_error(c, o->code, NBDS_REP_ERR_POLICY,
				 "TLS is not configured");
	if (c->x.tls)
		return opt_error(c, o->code, NBDS_REP_ERR_INVALID,
				 "TLS is already on");
	r = opt_reply(c, o->code, NBDS_REP_ACK, NULL, 0);
	if (r < 0)
		return r;
	/* a failure is said once, by the session, through the note */
	r = tls_session_start(s->tls, c->fd, &note, &c->x.tls);
	if (r < 0)
		return r;
	/* the client holds the credentials: eviction spares it first
	 * (nbds-conn.c, rule 1) */
	atomic_store(&c->secured, true);
	/* "the server MUST NOT preserve any negotiation state" */
	c->structured = false;
	meta_clear(c);
	if (s->verbose)
		log_info("%s: TLS on", c->peer);
	return 0;
}

int nbds_handshake(struct conn *c)
{
	struct nbds *s = c->srv;
	uint8_t h[18];
	uint32_t cflags;
	int r;

	put_be64(h, NBDS_MAGIC);
	put_be64(h + 8, NBDS_IHAVEOPT);
	put_be16(h + 16, NBDS_FLAG_FIXED_NEWSTYLE | NBDS_FLAG_NO_ZEROES);
	r = xport_write(&c->x, h, sizeof(h));
	if (r < 0)
		return r;
	r = xport_read(&c->x, h, 4);
	if (r < 0)
		return r == -ECONNRESET ? 0 : r;
	cflags = get_be32(h);
	/* A client without FIXED_NEWSTYLE still speaks newstyle ("its side
	 * of the protocol does not change incompatibly"; we honour fixed
	 * newstyle from it, as the spec allows), but in NOTLS mode; only
	 * flags we do not know end the connection. */
	if (cflags & ~(NBDS_CFLAG_FIXED_NEWSTYLE | NBDS_CFLAG_NO_ZEROES)) {
		nbds_note(c->srv, LOG_LVL_INFO,
			  "%s: unsupported client flags %#x", c->peer, cflags);
		return -EPROTO;
	}
	c->fixed = cflags & NBDS_CFLAG_FIXED_NEWSTYLE;
	c->no_zeroes = cflags & NBDS_CFLAG_NO_ZEROES;

	for (;;) {
		struct opt o;

		r = read_option(c, &o);
		if (r == -ECONNRESET)
			return 0;
		if (r < 0)
			return r;
		if (s->verbose)
			log_info("%s: option %u, %u bytes", c->peer, o.code,
				 o.len);
		/* replaced "including when this command fails" */
		if (o.code == NBDS_OPT_SET_META_CONTEXT)
			meta_clear(c);
		if (o.code == NBDS_OPT_ABORT) {
			/* "The server MUST reply with NBD_REP_ACK" and
			 * ignore any data (read and dropped above); the
			 * client may be gone already: best effort */
			opt_reply(c, o.code, NBDS_REP_ACK, NULL, 0);
			free(o.data);
			return 0;
		}
		r = option_refused(c, &o);
		if (r != 0) {
			r = r < 0 ? r : 0;
			goto next;
		}
		switch (o.code) {
		case NBDS_OPT_EXPORT_NAME:
			r = reply_export_name(c, &o);
			break;
		case NBDS_OPT_LIST:
			r = reply_list(c, &o);
			break;
		case NBDS_OPT_STARTTLS:
			r = reply_starttls(c, &o);
			break;
		case NBDS_OPT_INFO:
		case NBDS_OPT_GO:
			r = reply_info_go(c, &o);
			break;
		case NBDS_OPT_STRUCTURED_REPLY:
			if (o.len) {
				r = opt_error(c, o.code, NBDS_REP_ERR_INVALID,
					      "STRUCTURED_REPLY takes no "
					      "data");
			} else {
				c->structured = true;
				r = opt_reply(c, o.code, NBDS_REP_ACK, NULL, 0);
			}
			break;
		case NBDS_OPT_LIST_META_CONTEXT:
		case NBDS_OPT_SET_META_CONTEXT:
			r = reply_meta(c, &o);
			break;
		default:
			r = opt_error(c, o.code, NBDS_REP_ERR_UNSUP,
				      "option %u is not supported", o.code);
			break;
		}
	next:
		free(o.data);
		if (r != 0)
			return r;
	}
}
