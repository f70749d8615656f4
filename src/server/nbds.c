/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds.c - the NBD server: the protocol.  Who may connect, what memory
 * requests may hold and how connections are closed is nbds-conn.c.
 *
 * A connection goes through two phases (doc/proto.md):
 *
 *   accept --> handshake (options) --GO/EXPORT_NAME--> transmission --> close
 *                  |  ^                                    |
 *                  STARTTLS (the stream becomes TLS)       DISC, EOF, error,
 *                                                          killed (nbds-conn.c)
 *
 * Rules:
 *   1. Every request is validated once, in read_request(), against the
 *      export's size and flags and the options negotiated; below it the
 *      handlers assume a valid request.  A request that cannot be
 *      validated without losing sync with the stream (bad magic, a write
 *      payload too large to skip) ends the connection; every other bad
 *      request gets an error reply and the connection goes on.  Errors
 *      follow proto.md, "Error values": a read, trim, cache or block
 *      status past the end is EINVAL, a write or write-zeroes past the
 *      end ENOSPC, anything that writes to a read-only export EPERM (that
 *      first), a flag not defined for the command EINVAL.  FUA is
 *      accepted on every command ("Command flags": the server MUST).
 *   2. errno values become NBD errors in exactly one place, nbd_errno().
 *   3. A connection's threads take turns reading: one holds read_lock
 *      while it reads a request (and a write's payload), lets it go, and
 *      runs the request and sends its reply itself (leader/follower, as
 *      nbdkit does): no queue, no hand-off between threads.  A helper
 *      thread is started only while requests wait in the socket, up to
 *      NBDS_WORKERS threads in all.  The reader takes the request's
 *      buffer memory from the budget before it reads on (mem_get, which
 *      waits while the connection or the server is over budget), so a
 *      client that floods the server, or does not read its replies,
 *      holds at most NBDS_CONN_MEMORY.  On a plain socket the reader
 *      reads ahead into a buffer of NBDS_READ_AHEAD bytes (xport_read),
 *      so at a deep queue one recv brings several requests.
 *   4. A reply is sent whole under send_lock.  A write is acknowledged only
 *      after the engine accepted it; a flush only after tv_vol_flush made
 *      every acknowledged write of every connection durable (the engine's
 *      flush commits the whole pool: that is why CAN_MULTI_CONN is true).
 *   5. Once a reply cannot be sent (conn_gone) the connection stops
 *      reading and drops the requests it has not begun: the client has
 *      left, and nobody would see their results.  After EOF without a
 *      failed send the requests read are still answered (the client may
 *      have shut down only its sending side).
 *   6. The registry (nbds-conn.c) knows every connection and the volume
 *      it serves.  A volume claimed for a delete or shrink accepts no new
 *      connection until it is released.
 *   7. What a client sends is shown in a log line or a reply string only
 *      through esc_text (util/escape.h): no forged log lines, and reply
 *      strings stay UTF-8 as the spec wants of every string.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "server/nbd-proto.h"
#include "server/nbds-internal.h"
#include "server/tls.h"
#include "thin/thin-internal.h" /* vio_read_map_nofill */
#include "util/checked.h"
#include "util/clock.h"
#include "util/endian.h"
#include "util/escape.h"
#include "util/log.h"

#define NBDS_MAX_OPTION (64u << 10)  /* option data we keep */
#define NBDS_MAX_DISCARD (64u << 20) /* option or write data we skip */
#define NBDS_MAX_EXTENTS 1024	      /* block-status descriptors */
#define NBDS_READ_EXTENTS 64	      /* hole/data runs of one read */
#define NBDS_PREF_BLOCK 4096u
#define NBDS_CONTEXT_ID 1	      /* base:allocation */
#define NBDS_ZERO_CHUNK (1u << 20)
#define NBDS_POLL_MIN_NS 4000u	      /* read_header's polling window */
#define NBDS_POLL_MAX_NS 64000u
/* a client's string as shown in logs and error replies (escaped, cut) */
#define NBDS_SHOWN 100

/* ---- errors (rule 2) ---- */

static uint32_t nbd_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
		return NBDS_EPERM;
	case ENOMEM:
		return NBDS_ENOMEM;
	case EINVAL:
		return NBDS_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBDS_ENOSPC;
	case EOVERFLOW:
		return NBDS_EOVERFLOW;
	case ENOTSUP:
		return NBDS_ENOTSUP;
	case ESHUTDOWN:
		return NBDS_ESHUTDOWN;
	default: /* EIO, EROFS of a pool an error made read-only, ... */
		return NBDS_EIO;
	}
}

/* ---- sending ---- */

static int send_all(struct conn *c, const struct iovec *iov, int n)
{
	int r;

	pthread_mutex_lock(&c->send_lock);
	if (c->send_failed) {
		r = -EPIPE;
	} else {
		r = xport_writev(&c->x, iov, n);
		if (r < 0) {
			c->send_failed = true;
			/* the reader must not wait for a client that will
			 * never read our replies, nor do its work (rule 5) */
			shutdown(c->fd, SHUT_RDWR);
			conn_gone(c);
		}
	}
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

/* ---- the handshake ---- */

struct opt {
	uint32_t code, len;
	uint8_t *data; /* len bytes (NULL when len is 0, or dropped) */
	bool dropped;  /* len > NBDS_MAX_OPTION: read and dropped */
};

static int opt_reply(struct conn *c, uint32_t opt, uint32_t type,
		     const void *data, uint32_t len)
{
	uint8_t h[20];
	struct iovec iov[2] = { { h, sizeof(h) },
				{ (void *)data, len } };

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
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
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
	if ((size_t)n >= sizeof(msg)) {
		/* cut before a last character that lost its tail */
		int k = n = sizeof(msg) - 1;
		unsigned char lead;

		while (k > 0 && ((unsigned char)msg[k - 1] & 0xc0) == 0x80)
			k--;
		lead = k > 0 ? (unsigned char)msg[k - 1] : 0;
		if (lead >= 0xc0 &&
		    k - 1 + (lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2) > n)
			n = k - 1;
		msg[n] = 0;
	}
	if (c->srv->verbose)
		log_info("%s: option %u: %s", c->peer, opt, msg);
	return opt_reply(c, opt, type, msg, (uint32_t)n);
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
static int find_export(struct conn *c, const char *name,
		       struct tv_vol_info *v)
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
	uint16_t f = NBDS_TF_HAS_FLAGS | NBDS_TF_SEND_FLUSH |
		     NBDS_TF_SEND_FUA | NBDS_TF_SEND_TRIM |
		     NBDS_TF_SEND_WRITE_ZEROES | NBDS_TF_CAN_MULTI_CONN |
		     NBDS_TF_SEND_CACHE | NBDS_TF_SEND_FAST_ZERO;

	if (c->structured)
		f |= NBDS_TF_SEND_DF;

	/* a read-only export offers nothing that writes */
	if (v->flags & TV_VOL_READ_ONLY)
		f = (uint16_t)((f & ~(NBDS_TF_SEND_FUA | NBDS_TF_SEND_TRIM |
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
			put_be32(buf, (uint32_t)nl);
			memcpy(buf + 4, v[i].name, nl);
			memcpy(buf + 4 + nl, desc, dl);
			r = opt_reply(c, o->code, NBDS_REP_SERVER, buf,
				      (uint32_t)(4 + nl + dl));
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
	int r = conn_attach(c, v);

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
			       (uint32_t)strlen(v.name));
	if (r == 0 && want_desc) {
		describe(&v, desc, sizeof(desc));
		r = info_reply(c, o->code, NBDS_INFO_DESCRIPTION, desc,
			       (uint32_t)strlen(desc));
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

static int reply_starttls(struct conn *c, const struct opt *o)
{
	struct nbds *s = c->srv;
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
	if (r == 0)
		r = tls_session_start(s->tls, c->fd, &c->x.tls);
	if (r < 0) {
		nbds_note(c->srv, LOG_LVL_INFO, "%s: TLS handshake failed: %s",
			  c->peer, strerror(-r));
		return r;
	}
	/* "the server MUST NOT preserve any negotiation state" */
	c->structured = false;
	meta_clear(c);
	if (s->verbose)
		log_info("%s: TLS on", c->peer);
	return 0;
}

/*
 * The option phase.  Returns 1 when the connection enters transmission,
 * 0 when the client ended it (ABORT, or EOF), or a negative errno.
 */
static int handshake(struct conn *c)
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
				r = opt_reply(c, o.code, NBDS_REP_ACK, NULL,
					      0);
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

/* ---- transmission ---- */

static int simple_reply(struct conn *c, uint64_t cookie, uint32_t err,
			const void *data, size_t len)
{
	uint8_t h[16];
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)data, len } };

	put_be32(h, NBDS_SIMPLE_REPLY_MAGIC);
	put_be32(h + 4, err);
	put_be64(h + 8, cookie);
	return send_all(c, iov, len ? 2 : 1);
}

static void chunk_header(uint8_t *h, uint16_t flags, uint16_t type,
			 uint64_t cookie, uint32_t len)
{
	put_be32(h, NBDS_STRUCTURED_REPLY_MAGIC);
	put_be16(h + 4, flags);
	put_be16(h + 6, type);
	put_be64(h + 8, cookie);
	put_be32(h + 16, len);
}

/* The reply to a request that failed (or, err 0, a done reply without
 * data). */
static int status_reply(struct conn *c, const struct req *q, uint32_t err)
{
	uint8_t h[20 + 6];
	struct iovec iov;

	/* a chunk header is 20 bytes: magic, flags, type, cookie, length */

	if (!c->structured)
		return simple_reply(c, q->cookie, err, NULL, 0);
	if (!err) {
		chunk_header(h, NBDS_REPLY_FLAG_DONE, NBDS_REPLY_TYPE_NONE,
			     q->cookie, 0);
		iov.iov_base = h;
		iov.iov_len = 20;
		return send_all(c, &iov, 1);
	}
	chunk_header(h, NBDS_REPLY_FLAG_DONE, NBDS_REPLY_TYPE_ERROR,
		     q->cookie, 6);
	put_be32(h + 20, err);
	put_be16(h + 24, 0); /* no message */
	iov.iov_base = h;
	iov.iov_len = 26;
	return send_all(c, &iov, 1);
}

static int reply_err(struct conn *c, const struct req *q, int err)
{
	return status_reply(c, q, nbd_errno(err));
}

/* Read [off, off + len) of the volume, any alignment (bounce through
 * whole sectors when unaligned).  With ext, the bytes of the hole extents
 * reported are not written (they go out as OFFSET_HOLE chunks: zeroing
 * them would be wasted work), unless max is 1 (DF: all of it is sent as
 * data). */
static int vol_read(struct conn *c, void *buf, uint32_t len, uint64_t off,
		    struct tv_extent *ext, size_t max, size_t *n)
{
	uint64_t a0 = off & ~(uint64_t)(TV_SECTOR - 1);
	uint64_t a1 = (off + len + TV_SECTOR - 1) & ~(uint64_t)(TV_SECTOR - 1);
	uint8_t *b;
	int r;

	if (a0 == off && a1 == off + len && ext && max > 1)
		return vio_read_map_nofill(c->srv->pool, c->id, buf, len, off,
					   ext, max, n);
	if (a0 == off && a1 == off + len)
		return ext ? tv_vol_read_map(c->srv->pool, c->id, buf, len,
					     off, ext, max, n)
			   : tv_vol_read(c->srv->pool, c->id, buf, len, off);
	b = malloc(a1 - a0);
	if (!b)
		return -ENOMEM;
	r = tv_vol_read(c->srv->pool, c->id, b, a1 - a0, a0);
	if (r == 0) {
		memcpy(buf, b + (off - a0), len);
		if (ext) {
			ext[0].len = len; /* as data: its zeroes are in buf */
			ext[0].flags = 0;
			*n = 1;
		}
	}
	free(b);
	return r;
}

/* Write data (NULL: zeroes) at an unaligned range by read-modify-write of
 * the sectors around it. */
static int rmw_write(struct conn *c, const void *data, uint64_t len,
		     uint64_t off, unsigned int flags)
{
	uint64_t a0 = off & ~(uint64_t)(TV_SECTOR - 1);
	uint64_t a1 = (off + len + TV_SECTOR - 1) & ~(uint64_t)(TV_SECTOR - 1);
	uint8_t *b;
	int r;

	b = malloc(a1 - a0);
	if (!b)
		return -ENOMEM;
	pthread_mutex_lock(&c->srv->rmw_lock);
	r = tv_vol_read(c->srv->pool, c->id, b, a1 - a0, a0);
	if (r == 0) {
		if (data)
			memcpy(b + (off - a0), data, len);
		else
			memset(b + (off - a0), 0, len);
		r = tv_vol_write(c->srv->pool, c->id, b, a1 - a0, a0, flags);
	}
	pthread_mutex_unlock(&c->srv->rmw_lock);
	free(b);
	return r;
}

static int vol_write(struct conn *c, const void *data, uint32_t len,
		     uint64_t off, unsigned int flags)
{
	if ((off | len) % TV_SECTOR)
		return rmw_write(c, data, len, off, flags);
	return tv_vol_write(c->srv->pool, c->id, data, len, off, flags);
}

/* Zero a range: whole sectors by the engine (whole blocks become holes
 * unless no_hole), the unaligned edges by read-modify-write. */
static int vol_zero(struct conn *c, uint64_t len, uint64_t off, bool no_hole,
		    bool discard)
{
	struct tv_pool *p = c->srv->pool;
	uint64_t a0 = (off + TV_SECTOR - 1) & ~(uint64_t)(TV_SECTOR - 1);
	uint64_t a1 = (off + len) & ~(uint64_t)(TV_SECTOR - 1);
	int r = 0;

	if (a0 >= a1) { /* inside one or two sectors */
		return discard ? 0 : rmw_write(c, NULL, len, off, 0);
	}
	if (!discard && off < a0)
		r = rmw_write(c, NULL, a0 - off, off, 0);
	if (r == 0 && !discard && a1 < off + len)
		r = rmw_write(c, NULL, off + len - a1, a1, 0);
	if (r < 0)
		return r;
	if (discard)
		return tv_vol_discard(p, c->id, a1 - a0, a0);
	if (!no_hole)
		return tv_vol_write_zeroes(p, c->id, a1 - a0, a0);
	/* NO_HOLE: the client wants the blocks allocated */
	{
		static const uint8_t zero[NBDS_ZERO_CHUNK];
		for (uint64_t pos = a0; pos < a1 && r == 0;) {
			uint64_t n = a1 - pos < sizeof(zero) ? a1 - pos
							     : sizeof(zero);
			r = tv_vol_write(p, c->id, zero, n, pos, 0);
			pos += n;
		}
	}
	return r;
}

static int do_read(struct conn *c, const struct req *q)
{
	struct tv_extent ext[NBDS_READ_EXTENTS];
	size_t next = 0;
	uint8_t *buf;
	int r;

	buf = malloc(q->len);
	if (!buf)
		return reply_err(c, q, -ENOMEM);
	if (!c->structured) {
		r = vol_read(c, buf, q->len, q->off, NULL, 0, NULL);
		r = r < 0 ? reply_err(c, q, r)
			  : simple_reply(c, q->cookie, 0, buf, q->len);
		free(buf);
		return r;
	}
	r = vol_read(c, buf, q->len, q->off, ext,
		     (q->flags & NBDS_CMD_FLAG_DF) ? 1 : NBDS_READ_EXTENTS,
		     &next);
	if (r < 0) {
		free(buf);
		return reply_err(c, q, r);
	}
	if (q->flags & NBDS_CMD_FLAG_DF) {
		/* one chunk: data, with the zeroes of any hole in it */
		ext[0].len = q->len;
		ext[0].flags = 0;
		next = 1;
	}
	/*
	 * One chunk per run: OFFSET_HOLE for unmapped runs, OFFSET_DATA for
	 * the rest; the last carries DONE.  All chunks go out under one
	 * hold of the send lock so another reply cannot interleave.
	 */
	{
		struct iovec iov[2 * NBDS_READ_EXTENTS];
		uint8_t hdr[NBDS_READ_EXTENTS][32];
		uint64_t pos = 0;
		int n = 0;

		for (size_t i = 0; i < next; i++) {
			bool last = i + 1 == next;
			uint16_t fl = last ? NBDS_REPLY_FLAG_DONE : 0;
			uint32_t len = (uint32_t)ext[i].len;

			if (ext[i].flags & TV_EXTENT_HOLE) {
				chunk_header(hdr[i], fl,
					     NBDS_REPLY_TYPE_OFFSET_HOLE,
					     q->cookie, 12);
				put_be64(hdr[i] + 20, q->off + pos);
				put_be32(hdr[i] + 28, len);
				iov[n].iov_base = hdr[i];
				iov[n++].iov_len = 32;
			} else {
				chunk_header(hdr[i], fl,
					     NBDS_REPLY_TYPE_OFFSET_DATA,
					     q->cookie, 8 + len);
				put_be64(hdr[i] + 20, q->off + pos);
				iov[n].iov_base = hdr[i];
				iov[n++].iov_len = 28;
				iov[n].iov_base = buf + pos;
				iov[n++].iov_len = len;
			}
			pos += len;
		}
		r = send_all(c, iov, n);
	}
	free(buf);
	return r;
}

static int do_block_status(struct conn *c, const struct req *q)
{
	size_t max = (q->flags & NBDS_CMD_FLAG_REQ_ONE) ? 1 : NBDS_MAX_EXTENTS;
	struct tv_extent *ext;
	uint8_t *body;
	size_t n = 0;
	uint8_t h[20];
	int r;

	ext = malloc(max * sizeof(*ext));
	body = malloc(4 + 8 * max);
	if (!ext || !body) {
		r = reply_err(c, q, -ENOMEM);
		goto out;
	}
	r = tv_vol_extents(c->srv->pool, c->id, q->off, q->len, ext, max, &n);
	if (r < 0) {
		r = reply_err(c, q, r);
		goto out;
	}
	put_be32(body, NBDS_CONTEXT_ID);
	for (size_t i = 0; i < n; i++) {
		put_be32(body + 4 + 8 * i, (uint32_t)ext[i].len);
		put_be32(body + 8 + 8 * i,
			 (ext[i].flags & TV_EXTENT_HOLE)
				 ? NBDS_STATE_HOLE | NBDS_STATE_ZERO
				 : 0);
	}
	chunk_header(h, NBDS_REPLY_FLAG_DONE, NBDS_REPLY_TYPE_BLOCK_STATUS,
		     q->cookie, (uint32_t)(4 + 8 * n));
	{
		struct iovec iov[2] = { { h, 20 }, { body, 4 + 8 * n } };
		r = send_all(c, iov, 2);
	}
out:
	free(ext);
	free(body);
	return r;
}

/* Run one validated request and send its reply. */
static int handle(struct conn *c, struct req *q)
{
	struct tv_pool *p = c->srv->pool;
	bool fua = q->flags & NBDS_CMD_FLAG_FUA;
	int r = 0;

	if (q->error)
		return status_reply(c, q, (uint32_t)q->error);
	switch (q->type) {
	case NBDS_CMD_READ:
		return do_read(c, q);
	case NBDS_CMD_WRITE:
		r = vol_write(c, q->payload, q->len, q->off,
			      fua ? TV_IO_FUA : 0);
		break;
	case NBDS_CMD_FLUSH:
		r = tv_vol_flush(p, c->id);
		break;
	case NBDS_CMD_TRIM:
		r = vol_zero(c, q->len, q->off, false, true);
		if (r == 0 && fua)
			r = tv_vol_flush(p, c->id);
		break;
	case NBDS_CMD_WRITE_ZEROES:
		if ((q->flags & NBDS_CMD_FLAG_FAST_ZERO) &&
		    (q->flags & NBDS_CMD_FLAG_NO_HOLE)) {
			/* allocating zeroes means writing them: not fast */
			r = -ENOTSUP;
			break;
		}
		r = vol_zero(c, q->len, q->off,
			     q->flags & NBDS_CMD_FLAG_NO_HOLE, false);
		if (r == 0 && fua)
			r = tv_vol_flush(p, c->id);
		break;
	case NBDS_CMD_CACHE:
		/* nothing to prefetch into: the device's page cache is the
		 * cache, and the mapping is read on first access */
		break;
	case NBDS_CMD_BLOCK_STATUS:
		return do_block_status(c, q);
	}
	if (r < 0 && c->srv->verbose)
		log_info("%s: command %u at %" PRIu64 "+%u: %s", c->peer,
			 q->type, q->off, q->len, tv_last_error());
	return reply_err(c, q, r);
}

/* Threads polling at once, at most half the CPUs (at least one): many
 * connections at queue depth 1 must not keep every CPU spinning. */
static atomic_uint pollers;
static unsigned int max_pollers;
static pthread_once_t max_pollers_once = PTHREAD_ONCE_INIT;

static void max_pollers_init(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	max_pollers = n > 2 ? (unsigned int)(n / 2) : 1;
}

static bool poll_begin(void)
{
	pthread_once(&max_pollers_once, max_pollers_init);
	if (atomic_fetch_add(&pollers, 1) < max_pollers)
		return true;
	atomic_fetch_sub(&pollers, 1);
	return false;
}

static void poll_end(void)
{
	atomic_fetch_sub(&pollers, 1);
}

/*
 * Read a request header (read_lock held).  On a plain socket, first poll
 * for it for up to c->poll_ns, so that a client that sends its next
 * request soon after our reply (queue depth 1) finds this thread awake:
 * waking a thread that slept in recv costs tens of microseconds,
 * particularly on a virtual machine whose idle CPU must be woken first.
 * The window adapts as QEMU's event loop does it (poll-max-ns): it grows
 * while requests come within NBDS_POLL_MAX_NS of each other, and shrinks
 * when the thread had to sleep longer, so an idle connection does not
 * poll.  At most half the CPUs poll at once (poll_begin).
 */
static int read_header(struct conn *c, uint8_t *h, size_t len)
{
	size_t got = 0, before = xport_buffered(&c->x);
	uint64_t t0;
	int r;

	if (before >= len) /* a deep queue: read ahead already */
		return xport_read(&c->x, h, len);
	if (!c->x.tls && c->poll_ns && poll_begin()) {
		uint64_t until = clock_mono_ns() + c->poll_ns;

		r = 0;
		do {
			ssize_t n;

			if (c->x.rbuf) {
				n = xport_fill_nowait(&c->x);
				if (n == -EAGAIN)
					n = 0;
				if (n < 0)
					r = (int)n;
				got = xport_buffered(&c->x) - before;
				if (before + got >= len)
					break;
				continue;
			}
			n = recv(c->fd, h, len, MSG_DONTWAIT);
			if (n > 0) {
				got = (size_t)n;
				break;
			}
			if (n == 0)
				r = -ECONNRESET;
			else if (errno != EAGAIN && errno != EWOULDBLOCK &&
				 errno != EINTR)
				r = -errno;
		} while (!r && clock_mono_ns() < until);
		poll_end();
		if (r < 0)
			return r;
		if (c->x.rbuf && before + got >= len)
			return xport_read(&c->x, h, len);
		if (!c->x.rbuf && got == len)
			return 0;
	}
	t0 = clock_mono_ns();
	r = c->x.rbuf ? xport_read(&c->x, h, len)
		      : xport_read(&c->x, h + got, len - got);
	if (r == 0 && !c->x.tls) {
		uint64_t slept = clock_mono_ns() - t0;

		if (slept > NBDS_POLL_MAX_NS)
			c->poll_ns /= 2;
		else if (!got)
			c->poll_ns = MIN(MAX(c->poll_ns * 2, NBDS_POLL_MIN_NS),
					 NBDS_POLL_MAX_NS);
		if (c->poll_ns < NBDS_POLL_MIN_NS)
			c->poll_ns = 0;
	}
	return r;
}

/* The budget bytes a valid request holds until its reply went out: its
 * data buffer and a bounce buffer of whole sectors when unaligned
 * (vol_read, rmw_write), or the extents of a block status. */
static uint64_t req_mem(const struct req *q)
{
	uint64_t m = NBDS_REQ_OVERHEAD;

	switch (q->type) {
	case NBDS_CMD_READ:
	case NBDS_CMD_WRITE:
		m += q->len;
		if ((q->off | q->len) % TV_SECTOR)
			m += q->len + 2 * TV_SECTOR;
		break;
	case NBDS_CMD_BLOCK_STATUS:
		m += NBDS_MAX_EXTENTS * (sizeof(struct tv_extent) + 8);
		break;
	}
	return m;
}

/*
 * Read one request and validate it (rule 1).  Returns 1 for a request to
 * queue (q->error set if it only needs an error reply), 0 for DISC, or a
 * negative errno when the connection must end.
 */
static int read_request(struct conn *c, struct req *q)
{
	uint8_t h[28];
	uint16_t allowed = 0;
	bool range = true, write = false;
	uint32_t err = 0;
	int r;

	r = read_header(c, h, sizeof(h));
	if (r < 0)
		return r;
	if (get_be32(h) != NBDS_REQUEST_MAGIC) {
		nbds_note(c->srv, LOG_LVL_INFO,
			  "%s: bad request magic %#x: closing", c->peer,
			  get_be32(h));
		return -EPROTO;
	}
	memset(q, 0, sizeof(*q));
	q->flags = get_be16(h + 4);
	q->type = get_be16(h + 6);
	q->cookie = get_be64(h + 8);
	q->off = get_be64(h + 16);
	q->len = get_be32(h + 24);

	switch (q->type) {
	case NBDS_CMD_READ:
		allowed = c->structured ? NBDS_CMD_FLAG_DF : 0;
		break;
	case NBDS_CMD_WRITE:
		write = true;
		break;
	case NBDS_CMD_DISC:
		return 0;
	case NBDS_CMD_FLUSH:
		range = false;
		break;
	case NBDS_CMD_TRIM:
		write = true;
		break;
	case NBDS_CMD_WRITE_ZEROES:
		allowed = NBDS_CMD_FLAG_NO_HOLE | NBDS_CMD_FLAG_FAST_ZERO;
		write = true;
		break;
	case NBDS_CMD_CACHE:
		break;
	case NBDS_CMD_BLOCK_STATUS:
		allowed = NBDS_CMD_FLAG_REQ_ONE;
		if (!c->meta_alloc)
			err = NBDS_EINVAL; /* no context negotiated */
		break;
	default:
		err = NBDS_EINVAL;
		break;
	}
	/* "This flag is valid for all commands ... the server MUST accept
	 * all commands with this bit set (even by ignoring the bit)": it is
	 * ignored where nothing is written */
	allowed |= NBDS_CMD_FLAG_FUA;
	if (!err && (q->flags & ~allowed))
		err = NBDS_EINVAL;
	if (!err && write && c->ro)
		err = NBDS_EPERM; /* past the end too: it is read-only */
	if (!err && range) {
		if (!q->len)
			err = NBDS_EINVAL;
		else if (q->off > c->size || q->len > c->size - q->off)
			err = q->type == NBDS_CMD_WRITE ||
					      q->type == NBDS_CMD_WRITE_ZEROES
				      ? NBDS_ENOSPC
				      : NBDS_EINVAL;
	} else if (!err && (q->off || q->len)) {
		err = NBDS_EINVAL; /* FLUSH: reserved fields must be zero */
	}
	/* Over the maximum payload: EINVAL; a structured READ may say
	 * EOVERFLOW ("permitted to reject large read requests up front"),
	 * which nothing else SHOULD ("Error values"). */
	if (!err && (q->type == NBDS_CMD_READ || q->type == NBDS_CMD_WRITE) &&
	    q->len > NBDS_MAX_REQUEST)
		err = q->type == NBDS_CMD_READ && c->structured
			      ? NBDS_EOVERFLOW
			      : NBDS_EINVAL;
	/* The request's buffers come from the budget before anything more
	 * is read (nbds-conn.c, rule 3): a client over its share waits
	 * here, and the socket pushes back. */
	if (!err) {
		uint64_t m = req_mem(q);

		r = mem_get(c, m);
		if (r == -ESHUTDOWN) {
			/* read no more, not even this write's payload */
			err = NBDS_ESHUTDOWN;
			c->rdone = true;
			goto out;
		}
		if (r < 0)
			return r;
		q->mem = m;
	}

	if (q->type == NBDS_CMD_WRITE) {
		/* the payload follows whatever we think of the request;
		 * beyond what is worth skipping, the spec lets a server
		 * take it for a denial of service ("Size constraints") */
		if (err && q->len > NBDS_MAX_DISCARD) {
			nbds_note(c->srv, LOG_LVL_INFO,
				  "%s: refused write of %u bytes: closing",
				  c->peer, q->len);
			return -E2BIG;
		}
		if (!err) {
			q->payload = malloc(q->len);
			if (!q->payload)
				err = NBDS_ENOMEM;
		}
		if (q->payload) {
			r = xport_read(&c->x, q->payload, q->len);
		} else {
			uint8_t junk[4096];
			uint32_t left = q->len;
			r = 0;
			while (left && r == 0) {
				uint32_t n = left < sizeof(junk) ? left
								 : sizeof(junk);
				r = xport_read(&c->x, junk, n);
				left -= n;
			}
		}
		if (r < 0) {
			free(q->payload);
			q->payload = NULL;
			if (q->mem)
				mem_put(c, q->mem);
			return r;
		}
	}
out:
	if (err && c->srv->verbose)
		log_info("%s: refused command %u flags %#x at %" PRIu64
			 "+%u: error %u",
			 c->peer, q->type, q->flags, q->off, q->len, err);
	q->error = (int)err;
	return 1;
}

/*
 * Whether a connection thread should start another before running the
 * request it read: only when more requests are already waiting in the
 * socket and no other thread is waiting to read them.  A client at queue
 * depth 1 is then served by one thread that reads, runs and replies with
 * no hand-off at all; a deep queue gets up to NBDS_WORKERS threads.  Under
 * TLS, GnuTLS may hold decrypted requests the socket no longer shows: the
 * threads are started as if requests were waiting.
 */
static bool want_thread(struct conn *c)
{
	int n = 0;

	if (c->nthreads + 1 >= NBDS_WORKERS || c->waiting)
		return false; /* the connection's own thread is one */
	if (c->x.tls || xport_buffered(&c->x) >= 28)
		return true;
	return ioctl(c->fd, FIONREAD, &n) == 0 && n > 0;
}

static void *conn_worker(void *arg);

/*
 * The end of the stream: whether the peer has gone for good rather than
 * shut down only its sending side (it may still read replies).  A Unix
 * socket tells (POLLHUP once both sides are shut); TCP does not until a
 * send fails (rule 5).
 */
static void eof(struct conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLOUT };

	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)))
		conn_gone(c);
}

/*
 * The transmission phase, run by every thread of the connection (rule 3):
 * take the read lock, read one request, maybe start a helper thread, let
 * the lock go, run the request, reply.  The thread that meets DISC, EOF or
 * an error marks the stream done; the others finish the request they hold
 * and stop.  Once the connection is gone, requests not begun are dropped
 * (rule 5).
 */
static void serve_requests(struct conn *c)
{
	for (;;) {
		struct req *q;
		int r;

		pthread_mutex_lock(&c->rlock);
		c->waiting++;
		pthread_mutex_unlock(&c->rlock);
		pthread_mutex_lock(&c->read_lock);
		pthread_mutex_lock(&c->rlock);
		c->waiting--;
		pthread_mutex_unlock(&c->rlock);
		if (c->rdone) {
			pthread_mutex_unlock(&c->read_lock);
			break;
		}
		q = malloc(sizeof(*q));
		r = q ? read_request(c, q) : -ENOMEM;
		if (r <= 0) {
			c->rdone = true;
			if (r == -ECONNRESET)
				eof(c);
			pthread_mutex_unlock(&c->read_lock);
			free(q);
			if (r < 0 && r != -ECONNRESET && c->srv->verbose)
				log_info("%s: %s", c->peer, strerror(-r));
			break;
		}
		pthread_mutex_lock(&c->rlock);
		if (want_thread(c) &&
		    pthread_create(&c->threads[c->nthreads], NULL, conn_worker,
				   c) == 0)
			c->nthreads++;
		pthread_mutex_unlock(&c->rlock);
		pthread_mutex_unlock(&c->read_lock);

		if (!conn_is_gone(c))
			handle(c, q);
		free(q->payload);
		if (q->mem)
			mem_put(c, q->mem);
		free(q);
	}
}

static void *conn_worker(void *arg)
{
	serve_requests(arg);
	return NULL;
}

static void transmission(struct conn *c)
{
	unsigned int n;

	/* Plain sockets read ahead (xport_read): at a deep queue one recv
	 * brings several requests, payloads included.  The handshake is
	 * over, so nothing STARTTLS hands to GnuTLS can be in the buffer.
	 * Without memory for it, reads go unbuffered. */
	if (!c->x.tls && mem_read_ahead(c, NBDS_READ_AHEAD))
		(void)xport_buffer(&c->x, NBDS_READ_AHEAD);
	serve_requests(c);
	/* DISC or EOF: the requests other threads hold are still answered
	 * (proto.md: "the server MUST handle all outstanding requests").
	 * nthreads only grows under rlock by threads that hold read_lock,
	 * and none does once rdone is set. */
	pthread_mutex_lock(&c->rlock);
	n = c->nthreads;
	pthread_mutex_unlock(&c->rlock);
	for (unsigned int i = 0; i < n; i++)
		pthread_join(c->threads[i], NULL);
}

static void conn_run(struct conn *c)
{
	int r = handshake(c);

	if (r < 0 && c->srv->verbose)
		log_info("%s: handshake ended: %s", c->peer, strerror(-r));
	if (r == 1)
		transmission(c);
	if (c->srv->verbose)
		log_info("%s: disconnected", c->peer);
	conn_release(c);
}

static void *conn_thread(void *arg)
{
	conn_run(arg);
	return NULL;
}

int nbds_accept(struct nbds *s, int fd, const char *peer, const char *addr)
{
	struct conn *c = conn_new(s, fd, peer, addr);
	pthread_attr_t attr;
	pthread_t t;
	int r;

	if (!c)
		return -ENOMEM;
	r = conn_admit(s, c);
	if (r < 0) {
		conn_release(c);
		return r;
	}
	if (s->verbose)
		log_info("%s: connected", c->peer);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&t, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		/* out of threads (RLIMIT_NPROC, pids.max): a flood must not
		 * flood the log on top */
		nbds_note(s, LOG_LVL_ERROR, "%s: cannot start a thread: %s",
			  c->peer, strerror(-r));
		conn_release(c);
	}
	return r;
}

void nbds_serve_fd(struct nbds *s, int fd)
{
	struct conn *c = conn_new(s, fd, "fd", NULL);

	if (!c)
		return;
	if (conn_admit(s, c) < 0) {
		conn_release(c);
		return;
	}
	conn_run(c);
}
