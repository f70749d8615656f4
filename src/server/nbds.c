/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds.c - the NBD server.
 *
 * A connection goes through two phases (doc/proto.md):
 *
 *   accept --> handshake (options) --GO/EXPORT_NAME--> transmission --> close
 *                  |  ^                                    |
 *                  STARTTLS (the stream becomes TLS)       DISC, EOF, error,
 *                                                          claim --force,
 *                                                          shutdown
 *
 * Rules:
 *   1. Every request is validated once, in read_request(), against the
 *      export's size and flags and the options negotiated; below it the
 *      handlers assume a valid request.  A request that cannot be
 *      validated without losing sync with the stream (bad magic) ends the
 *      connection; every other bad request gets an error reply and the
 *      connection goes on.
 *   2. errno values become NBD errors in exactly one place, nbd_errno().
 *   3. A connection's threads take turns reading: one holds read_lock
 *      while it reads a request (and a write's payload), lets it go, and
 *      runs the request and sends its reply itself (leader/follower, as
 *      nbdkit does): no queue, no hand-off between threads.  A helper
 *      thread is started only while requests wait in the socket, up to
 *      NBDS_WORKERS; so a connection holds at most NBDS_WORKERS requests
 *      (each at most 32 MiB of buffer) and a client that floods the
 *      server, or does not read its replies, only slows itself.  On a
 *      plain socket the reader reads ahead into a buffer of
 *      NBDS_READ_AHEAD bytes (xport_read), so at a deep queue one recv
 *      brings several requests; that buffer, too, is all a flood gets.
 *   4. A reply is sent whole under send_lock.  A write is acknowledged only
 *      after the engine accepted it; a flush only after tv_vol_flush made
 *      every acknowledged write of every connection durable (the engine's
 *      flush commits the whole pool: that is why CAN_MULTI_CONN is true).
 *   5. The registry (s->lock) knows every connection and the volume it
 *      serves.  A volume claimed for a delete or shrink accepts no new
 *      connection until it is released.
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
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "server/nbd-proto.h"
#include "server/nbds.h"
#include "server/tls.h"
#include "server/xport.h"
#include "thin/thin-internal.h" /* vio_read_map_nofill */
#include "util/checked.h"
#include "util/clock.h"
#include "util/endian.h"
#include "util/log.h"

#ifndef NBDS_WORKERS
#define NBDS_WORKERS 8 /* threads per connection, at most */
#endif
#define NBDS_MAX_OPTION (64u << 10)   /* option data we keep */
#define NBDS_MAX_DISCARD (64u << 20)  /* option data we read to skip */
#define NBDS_MAX_EXTENTS 1024	       /* block-status descriptors */
#define NBDS_READ_EXTENTS 64	       /* hole/data runs of one read */
#define NBDS_PREF_BLOCK 4096u
#define NBDS_CONTEXT_ID 1	       /* base:allocation */
#define NBDS_ZERO_CHUNK (1u << 20)
#define NBDS_SHUTDOWN_GRACE_S 5      /* replies still pending at shutdown */
#define NBDS_POLL_MIN_NS 4000u	       /* read_header's polling window */
#define NBDS_POLL_MAX_NS 64000u
/* read-ahead buffer of a plain connection: a queue of 32 4 KiB writes */
#define NBDS_READ_AHEAD (256u << 10)

struct req {
	struct req *next;
	uint16_t flags, type;
	uint64_t cookie, off;
	uint32_t len;
	void *payload; /* a write's data */
	int error;     /* an NBD error found by validation: reply only */
};

struct conn {
	struct nbds *srv;
	struct conn *prev, *next; /* registry, under srv->lock */
	int fd;
	struct xport x;
	char peer[64];

	/* negotiated in the handshake */
	bool no_zeroes, structured, meta_alloc;
	char *meta_export; /* the export SET_META_CONTEXT named */
	uint64_t id;	   /* the volume, once in transmission (0 before) */
	uint64_t size;
	bool ro;
	char name[TV_NAME_MAX + 1];

	/* the threads that read and run requests (rule 3) */
	pthread_mutex_t read_lock; /* held while reading one request */
	pthread_mutex_t rlock;	   /* the fields below */
	bool rdone;		   /* DISC, EOF or error: stop reading */
	unsigned int nthreads, waiting;
	pthread_t threads[NBDS_WORKERS];
	uint32_t poll_ns; /* read_lock: how long to poll for the next
			   * request before sleeping (read_header) */

	pthread_mutex_t send_lock;
	bool send_failed;
};

struct nbds {
	struct tv_pool *pool;
	struct tls_ctx *tls;
	bool tls_required, verbose;

	pthread_mutex_t lock; /* the registry (rule 5) */
	pthread_cond_t cond;  /* a connection went away */
	struct conn *conns;
	size_t nconns;
	uint64_t *claimed;
	size_t nclaimed, capclaimed;
	bool shutting_down;

	pthread_mutex_t rmw_lock; /* unaligned writes (read-modify-write) */
};

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

/* ---- the registry ---- */

/* Whether id is claimed, by itself or by a claim of every volume (0). */
static bool claimed_locked(struct nbds *s, uint64_t id)
{
	for (size_t i = 0; i < s->nclaimed; i++)
		if (s->claimed[i] == id || !s->claimed[i])
			return true;
	return false;
}

/* Whether connection c serves what a claim of id covers. */
static bool claim_covers(const struct conn *c, uint64_t id)
{
	return !id || c->id == id;
}

static void unregister(struct conn *c)
{
	struct nbds *s = c->srv;

	pthread_mutex_lock(&s->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

size_t nbds_connections(struct nbds *s, uint64_t id)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	for (struct conn *c = s->conns; c; c = c->next)
		if (!id || c->id == id)
			n++;
	pthread_mutex_unlock(&s->lock);
	return n;
}

int nbds_claim(struct nbds *s, uint64_t id, bool force, char *msg,
	       size_t msglen)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	for (struct conn *c = s->conns; c; c = c->next)
		if (claim_covers(c, id))
			n++;
	if (n && !force) {
		pthread_mutex_unlock(&s->lock);
		snprintf(msg, msglen,
			 "volume #%" PRIu64 " is exported to %zu NBD client%s; "
			 "use --force to disconnect %s",
			 id, n, n == 1 ? "" : "s", n == 1 ? "it" : "them");
		return -EBUSY;
	}
	if (s->nclaimed == s->capclaimed) {
		size_t cap = s->capclaimed ? 2 * s->capclaimed : 8;
		uint64_t *a = realloc(s->claimed, cap * sizeof(*a));
		if (!a) {
			pthread_mutex_unlock(&s->lock);
			snprintf(msg, msglen, "out of memory");
			return -ENOMEM;
		}
		s->claimed = a;
		s->capclaimed = cap;
	}
	s->claimed[s->nclaimed++] = id;
	/* Kick the volume's clients off: their readers see EOF, their
	 * requests in flight finish, then they unregister. */
	if (n) {
		if (id)
			log_info("disconnecting %zu client%s of volume #%" PRIu64,
				 n, n == 1 ? "" : "s", id);
		else
			log_info("disconnecting every client (%zu)", n);
		for (struct conn *c = s->conns; c; c = c->next)
			if (claim_covers(c, id))
				shutdown(c->fd, SHUT_RDWR);
	}
	for (;;) {
		n = 0;
		for (struct conn *c = s->conns; c; c = c->next) {
			if (!claim_covers(c, id))
				continue;
			n++;
			/* a claim of everything also meets connections that
			 * arrived meanwhile (still negotiating: they would
			 * be refused their export, but may linger) */
			if (!id)
				shutdown(c->fd, SHUT_RDWR);
		}
		if (!n)
			break;
		pthread_cond_wait(&s->cond, &s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void nbds_release(struct nbds *s, uint64_t id)
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nclaimed; i++) {
		if (s->claimed[i] == id) {
			s->claimed[i] = s->claimed[--s->nclaimed];
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
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
			 * never read our replies */
			shutdown(c->fd, SHUT_RDWR);
		}
	}
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

/* ---- the handshake ---- */

struct opt {
	uint32_t code, len;
	uint8_t *data; /* len bytes (NULL when len is 0) */
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

/* An error reply with a message for the client's logs. */
static int opt_error(struct conn *c, uint32_t opt, uint32_t type,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int opt_error(struct conn *c, uint32_t opt, uint32_t type,
		     const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
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

static uint16_t tflags(const struct tv_vol_info *v)
{
	uint16_t f = NBDS_TF_HAS_FLAGS | NBDS_TF_SEND_FLUSH |
		     NBDS_TF_SEND_FUA | NBDS_TF_SEND_TRIM |
		     NBDS_TF_SEND_WRITE_ZEROES | NBDS_TF_SEND_DF |
		     NBDS_TF_CAN_MULTI_CONN | NBDS_TF_SEND_CACHE |
		     NBDS_TF_SEND_FAST_ZERO;

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

/* LIST_META_CONTEXT and SET_META_CONTEXT. */
static int reply_meta(struct conn *c, const struct opt *o)
{
	bool set = o->code == NBDS_OPT_SET_META_CONTEXT;
	char name[NBDS_MAX_STRING + 1], q[NBDS_MAX_STRING + 1];
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
				 "no volume '%s'", name);
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
	if (set) {
		free(c->meta_export);
		c->meta_export = NULL;
		c->meta_alloc = match;
		if (match) {
			c->meta_export = strdup(name);
			if (!c->meta_export)
				return -ENOMEM;
		}
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

/* Enter transmission on volume v: registers the connection (rule 5).
 * Returns 0, -EBUSY (claimed), or -ESHUTDOWN. */
static int attach(struct conn *c, const struct tv_vol_info *v)
{
	struct nbds *s = c->srv;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (s->shutting_down)
		r = -ESHUTDOWN;
	else if (claimed_locked(s, v->id))
		r = -EBUSY;
	else
		c->id = v->id;
	pthread_mutex_unlock(&s->lock);
	if (r)
		return r;
	c->size = v->size;
	c->ro = v->flags & TV_VOL_READ_ONLY;
	snprintf(c->name, sizeof(c->name), "%s", v->name);
	if (c->meta_alloc && c->meta_export && strcmp(c->meta_export, v->name))
		c->meta_alloc = false; /* set for another export */
	if (s->verbose)
		log_info("%s: serving volume '%s' (#%" PRIu64 ")%s", c->peer,
			 v->name, v->id, c->ro ? " read-only" : "");
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
	char name[NBDS_MAX_STRING + 1], desc[160];
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
				 "no volume '%s'", name);
	put_be64(body, v.size);
	put_be16(body + 8, tflags(&v));
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
				 v.name);
	if (r == -ESHUTDOWN)
		return opt_error(c, o->code, NBDS_REP_ERR_SHUTDOWN,
				 "the server is shutting down");
	r = opt_reply(c, o->code, NBDS_REP_ACK, NULL, 0);
	return r < 0 ? r : 1;
}

/* EXPORT_NAME: no error replies exist; a failure closes the connection. */
static int reply_export_name(struct conn *c, const struct opt *o)
{
	char name[NBDS_MAX_STRING + 1];
	struct tv_vol_info v;
	uint8_t buf[10 + 124];
	int r;

	if (o->len > NBDS_MAX_STRING)
		return -EINVAL;
	if (o->len) /* data is NULL when len is 0 (found by fuzz-nbd) */
		memcpy(name, o->data, o->len);
	name[o->len] = 0;
	if (strlen(name) != o->len || find_export(c, name, &v) < 0) {
		log_info("%s: no export '%.64s'", c->peer, name);
		return -ENOENT;
	}
	r = attach(c, &v);
	if (r < 0)
		return r;
	memset(buf, 0, sizeof(buf));
	put_be64(buf, v.size);
	put_be16(buf + 8, tflags(&v));
	r = xport_write(&c->x, buf, c->no_zeroes ? 10 : sizeof(buf));
	return r < 0 ? r : 1;
}

/* Read an option's header and data (data beyond NBDS_MAX_OPTION is read
 * and dropped: o->data NULL, o->len kept). */
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
	if (o->len > NBDS_MAX_DISCARD)
		return -E2BIG;
	if (o->len > NBDS_MAX_OPTION) {
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
	 * of the protocol does not change incompatibly"); only flags we do
	 * not know end the connection. */
	if (cflags & ~(NBDS_CFLAG_FIXED_NEWSTYLE | NBDS_CFLAG_NO_ZEROES)) {
		log_info("%s: unsupported client flags %#x", c->peer, cflags);
		return -EPROTO;
	}
	c->no_zeroes = cflags & NBDS_CFLAG_NO_ZEROES;

	for (;;) {
		struct opt o;
		bool tls_ok = !s->tls_required || c->x.tls;

		r = read_option(c, &o);
		if (r == -ECONNRESET)
			return 0;
		if (r < 0)
			return r;
		if (s->verbose)
			log_info("%s: option %u, %u bytes", c->peer, o.code,
				 o.len);
		if (o.len && !o.data) {
			/* too big to keep: only EXPORT_NAME must close */
			r = o.code == NBDS_OPT_EXPORT_NAME
				    ? -E2BIG
				    : opt_error(c, o.code,
						NBDS_REP_ERR_TOO_BIG,
						"option data too long");
			goto next;
		}
		if (!tls_ok && o.code != NBDS_OPT_STARTTLS &&
		    o.code != NBDS_OPT_ABORT) {
			if (o.code == NBDS_OPT_EXPORT_NAME) {
				log_info("%s: EXPORT_NAME without TLS: "
					 "closing",
					 c->peer);
				r = -EACCES;
			} else {
				r = opt_error(c, o.code,
					      NBDS_REP_ERR_TLS_REQD,
					      "TLS is required: use STARTTLS");
			}
			goto next;
		}
		switch (o.code) {
		case NBDS_OPT_EXPORT_NAME:
			r = reply_export_name(c, &o);
			break;
		case NBDS_OPT_ABORT:
			/* the client may already be gone: best effort */
			if (!o.len)
				opt_reply(c, o.code, NBDS_REP_ACK, NULL, 0);
			free(o.data);
			return 0;
		case NBDS_OPT_LIST:
			r = reply_list(c, &o);
			break;
		case NBDS_OPT_STARTTLS:
			if (o.len) {
				r = opt_error(c, o.code, NBDS_REP_ERR_INVALID,
					      "STARTTLS takes no data");
			} else if (!s->tls) {
				r = opt_error(c, o.code, NBDS_REP_ERR_POLICY,
					      "TLS is not configured");
			} else if (c->x.tls) {
				r = opt_error(c, o.code, NBDS_REP_ERR_INVALID,
					      "TLS is already on");
			} else {
				r = opt_reply(c, o.code, NBDS_REP_ACK, NULL,
					      0);
				if (r == 0)
					r = tls_session_start(s->tls, c->fd,
							      &c->x.tls);
				if (r < 0) {
					log_info("%s: TLS handshake failed: "
						 "%s",
						 c->peer, strerror(-r));
				} else {
					/* what was negotiated in clear
					 * does not count */
					c->structured = false;
					c->meta_alloc = false;
					if (s->verbose)
						log_info("%s: TLS on", c->peer);
				}
			}
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

/*
 * Read one request and validate it (rule 1).  Returns 1 for a request to
 * queue (q->error set if it only needs an error reply), 0 for DISC, or a
 * negative errno when the connection must end.
 */
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
		log_info("%s: bad request magic %#x: closing", c->peer,
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
		allowed = NBDS_CMD_FLAG_FUA;
		write = true;
		break;
	case NBDS_CMD_DISC:
		return 0;
	case NBDS_CMD_FLUSH:
		range = false;
		break;
	case NBDS_CMD_TRIM:
		allowed = NBDS_CMD_FLAG_FUA;
		write = true;
		break;
	case NBDS_CMD_WRITE_ZEROES:
		allowed = NBDS_CMD_FLAG_FUA | NBDS_CMD_FLAG_NO_HOLE |
			  NBDS_CMD_FLAG_FAST_ZERO;
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
	if (!err && (q->flags & ~allowed))
		err = NBDS_EINVAL;
	if (!err && range) {
		if (!q->len || q->off > c->size || q->len > c->size - q->off)
			err = write ? NBDS_ENOSPC : NBDS_EINVAL;
		if (!q->len)
			err = NBDS_EINVAL;
	} else if (!err && (q->off || q->len)) {
		err = NBDS_EINVAL; /* FLUSH: reserved fields must be zero */
	}
	if (!err && (q->type == NBDS_CMD_READ || q->type == NBDS_CMD_WRITE) &&
	    q->len > NBDS_MAX_REQUEST)
		err = NBDS_EOVERFLOW;
	if (!err && write && c->ro)
		err = NBDS_EPERM;

	if (q->type == NBDS_CMD_WRITE) {
		/* the payload follows whatever we think of the request */
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
			return r;
		}
	}
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

	if (c->nthreads >= NBDS_WORKERS || c->waiting)
		return false;
	if (c->x.tls || xport_buffered(&c->x) >= 28)
		return true;
	return ioctl(c->fd, FIONREAD, &n) == 0 && n > 0;
}

static void *conn_worker(void *arg);

/*
 * The transmission phase, run by every thread of the connection (rule 3):
 * take the read lock, read one request, maybe start a helper thread, let
 * the lock go, run the request, reply.  The thread that meets DISC, EOF or
 * an error marks the stream done; the others finish the request they hold
 * and stop.
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

		handle(c, q);
		free(q->payload);
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
	if (!c->x.tls)
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

static void conn_free(struct conn *c)
{
	if (c->x.tls) {
		if (!c->send_failed)
			tls_session_bye(c->x.tls);
		tls_session_free(c->x.tls);
	}
	close(c->fd);
	xport_unbuffer(&c->x);
	free(c->meta_export);
	pthread_mutex_destroy(&c->read_lock);
	pthread_mutex_destroy(&c->rlock);
	pthread_mutex_destroy(&c->send_lock);
	free(c);
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
	unregister(c);
	conn_free(c);
}

static void *conn_thread(void *arg)
{
	conn_run(arg);
	return NULL;
}

static struct conn *conn_new(struct nbds *s, int fd, const char *peer)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->srv = s;
	c->fd = fd;
	c->x.fd = fd;
	snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "client");
	pthread_mutex_init(&c->read_lock, NULL);
	pthread_mutex_init(&c->rlock, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	return c;
}

/* Register c; fails once shutdown began. */
static int conn_register(struct nbds *s, struct conn *c)
{
	pthread_mutex_lock(&s->lock);
	if (s->shutting_down) {
		pthread_mutex_unlock(&s->lock);
		return -ESHUTDOWN;
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int nbds_accept(struct nbds *s, int fd, const char *peer)
{
	struct conn *c = conn_new(s, fd, peer);
	pthread_attr_t attr;
	pthread_t t;
	int r;

	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	r = conn_register(s, c);
	if (r < 0) {
		conn_free(c);
		return r;
	}
	if (s->verbose)
		log_info("%s: connected", c->peer);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&t, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		log_error("%s: cannot start a thread: %s", c->peer,
			  strerror(-r));
		unregister(c);
		conn_free(c);
	}
	return r;
}

void nbds_serve_fd(struct nbds *s, int fd)
{
	struct conn *c = conn_new(s, fd, "fd");

	if (!c) {
		close(fd);
		return;
	}
	if (conn_register(s, c) < 0) {
		conn_free(c);
		return;
	}
	conn_run(c);
}

int nbds_new(const struct nbds_opts *o, struct nbds **out)
{
	struct nbds *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->pool = o->pool;
	s->tls = o->tls;
	s->tls_required = o->tls_required;
	s->verbose = o->verbose;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_mutex_init(&s->rmw_lock, NULL);
	*out = s;
	return 0;
}

void nbds_shutdown(struct nbds *s)
{
	struct timespec until;

	pthread_mutex_lock(&s->lock);
	s->shutting_down = true;
	/* stop reading: readers see EOF, queued requests still complete
	 * and their replies still go out */
	for (struct conn *c = s->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RD);
	/* A client that does not read its replies would keep a worker in
	 * send() for ever: after a grace period its socket is shut both
	 * ways (the requests have run; only their replies are lost). */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += NBDS_SHUTDOWN_GRACE_S;
	while (s->nconns) {
		if (pthread_cond_timedwait(&s->cond, &s->lock, &until) ==
		    ETIMEDOUT) {
			log_warn("%zu client%s not reading replies: "
				 "disconnecting",
				 s->nconns, s->nconns == 1 ? "" : "s");
			for (struct conn *c = s->conns; c; c = c->next)
				shutdown(c->fd, SHUT_RDWR);
			while (s->nconns)
				pthread_cond_wait(&s->cond, &s->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

void nbds_free(struct nbds *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->rmw_lock);
	free(s->claimed);
	free(s);
}
