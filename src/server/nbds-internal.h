/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds-internal.h - what the parts of the NBD server share:
 *
 *   nbds.c       the transmission phase (requests, replies) and a
 *                connection's life
 *   nbds-opt.c   the option phase
 *   nbds-conn.c  the connections: admission (limits), the registry, the
 *                memory budget, the watchdog (handshake deadline,
 *                stalled replies), claims and shutdown
 *
 * Calls go one way: nbds.c uses nbds-opt.c, both use nbds-conn.c.
 *
 * Locks, in the order they nest:
 *   srv->lock      the registry, the counts, every conn's admission and
 *                  phase fields
 *   c->read_lock   one reader per connection (nbds.c, rule 3)
 *   c->rlock       the connection's thread fields (nbds.c, rule 7)
 *   c->send_lock   one reply at a time on the stream
 *   srv->mem_lock  readers waiting for memory, and the gone flags
 *   srv->note_lock the rate of nbds_note
 *   (the last two are innermost: nothing that holds one takes a lock)
 * (the reader waits on mem_cond holding read_lock: that is how a
 * connection over its budget stops reading.)
 */
#ifndef TV_SERVER_NBDS_INTERNAL_H
#define TV_SERVER_NBDS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "server/nbd-proto.h"
#include "server/nbds.h"
#include "server/xport.h"
#include "util/log.h"

#ifndef NBDS_WORKERS
#define NBDS_WORKERS 8 /* threads per connection, at most */
#endif
/* Memory a request holds besides its data buffer: the request, chunk
 * headers, bounce buffers of unaligned edges. */
#define NBDS_REQ_OVERHEAD 4096u
/* A connection's requests hold at most this much buffer memory at once:
 * two aligned requests of the largest size (a request alone may exceed
 * it: one always proceeds). */
#define NBDS_CONN_MEMORY (2 * ((uint64_t) NBDS_MAX_REQUEST + NBDS_REQ_OVERHEAD))
/* A connection's slot: one small request of its own in flight, whatever
 * the others hold (nbds-conn.c, rule 3): a quarter of the budget shared
 * out among max_conns, within these bounds.  32 KiB takes a 4 KiB read
 * or write, even unaligned, a flush, a trim, a block status. */
#define NBDS_SLOT_MIN (32u << 10)
#define NBDS_SLOT_MAX (64u << 10)
/* A payload or reply that has been moving for stall_ns must have moved
 * at least this many bytes a second on average, or its connection is
 * closed when others wait for memory (nbds-conn.c, rule 4). */
#define NBDS_MIN_RATE (1u << 20)
/* read-ahead buffer of a plain connection: a queue of 32 4 KiB writes */
#define NBDS_READ_AHEAD (256u << 10)
/* option or write data read and dropped; beyond, the connection ends */
#define NBDS_MAX_DISCARD (64u << 20)
#define NBDS_CONTEXT_ID	 1 /* base:allocation */

struct req {
	uint16_t flags, type;
	uint64_t cookie, off;
	uint32_t len;
	void *payload; /* a write's data */
	int error;     /* an NBD error found by validation: reply only */
	uint64_t mem;  /* bytes of the budget it holds (nbds_mem_get) */
	bool slot;     /* ... in its connection's slot */
};

struct conn {
	struct nbds *srv;
	struct conn *prev, *next; /* registry, under srv->lock */
	int fd;
	struct xport x;
	char peer[64];	   /* for log lines: "ADDR:PORT" or "unix#N" */
	char addr[64];	   /* a TCP peer's address (per-peer limit), or "" */
	uint64_t accepted; /* monotonic ns */

	/* srv->lock */
	bool registered; /* admitted (set before its threads start) */
	bool attached;	 /* in transmission (no handshake deadline) */
	bool counted;	 /* counts against the connection limits */
	/* its TLS handshake succeeded (set by its thread, read by the
	 * eviction, nbds-conn.c rule 1) */
	atomic_bool secured;

	/* set under srv->mem_lock; read anywhere */
	atomic_bool gone; /* killed, or a reply could not be sent: stop
			   * reading, drop the requests not yet begun */

	/* negotiated in the handshake */
	bool fixed; /* the client set FIXED_NEWSTYLE */
	bool no_zeroes, structured, meta_alloc;
	uint64_t meta_id; /* the volume SET_META_CONTEXT named */
	uint64_t id;	  /* the volume, once in transmission (0 before) */
	uint64_t size;
	bool ro;
	char name[TV_NAME_MAX + 1];

	/* the threads that read and run requests (nbds.c, rules 3, 7) */
	pthread_mutex_t read_lock; /* held while reading one request */
	pthread_mutex_t rlock;	   /* the fields below */
	pthread_cond_t left;	   /* a thread left the transmission */
	bool rdone;		   /* DISC, EOF or error: stop reading */
	unsigned int nthreads;	   /* in the transmission */
	unsigned int waiting;	   /* of which wait for their turn to read */
	uint32_t poll_ns;	   /* read_lock: how long to poll for the next
				    * request before sleeping (read_header) */

	_Atomic uint64_t mem;  /* bytes its requests hold */
	atomic_bool slot_busy; /* a request holds its slot */
	atomic_bool held_up;   /* its reader waits for the server's budget */
	/* while a write's payload is read: since when (0: none), and the
	 * x.rx_bytes of then (nbds-conn.c, rule 4) */
	_Atomic uint64_t rx_since, rx_from;
	atomic_bool ended;   /* it reads no more requests (DISC, EOF...) */
	uint64_t read_ahead; /* bytes of its read-ahead buffer (its own
			      * thread's) */

	pthread_mutex_t send_lock;
	bool send_failed;
};

struct nbds {
	struct tv_pool *pool;
	struct tls_ctx *tls;
	bool tls_required, verbose;

	/* limits (0: none) */
	unsigned int max_conns, max_per_peer;
	uint64_t handshake_ns, stall_ns;

	pthread_mutex_t lock; /* the registry */
	pthread_cond_t cond;  /* a connection went away */
	struct conn *conns;   /* newest first */
	size_t nconns;	      /* registered */
	size_t ncounted;      /* of which count against the limits */
	uint64_t *claimed;
	size_t nclaimed, capclaimed;
	bool shutting_down;

	/* the memory budget (nbds-conn.c, rule 3) */
	uint64_t mem_max;
	uint64_t slot;	     /* bytes of a connection's slot */
	uint64_t mem_shared; /* what the requests beyond the slots share */
	_Atomic uint64_t mem_reqs;	   /* held by requests */
	_Atomic uint64_t mem_ra;	   /* by read-ahead buffers */
	_Atomic unsigned int mem_sleepers; /* readers in the slow path */
	pthread_mutex_t mem_lock;
	pthread_cond_t mem_cond;  /* bytes freed, a connection gone */
	bool mem_stop;		  /* mem_lock: shutting down */
	unsigned int mem_waiters; /* mem_lock: readers the server's budget
				   * holds up (watchdog, rule 4) */

	/* the watchdog thread (srv->lock) */
	pthread_t wd_thread;
	pthread_cond_t wd_cond; /* CLOCK_MONOTONIC */
	bool wd_started, wd_stop;

	/* the thread budget (nbds-conn.c, rule 7) */
	atomic_uint helpers;	  /* threads beyond each connection's first */
	unsigned int max_helpers; /* UINT_MAX: no limit */

	pthread_mutex_t rmw_lock; /* unaligned writes (read-modify-write) */

	/* nbds_note's rate (innermost) */
	pthread_mutex_t note_lock;
	uint64_t note_window;
	unsigned int notes;
	unsigned long notes_left_out;
};

/* ---- nbds-opt.c ---- */

/* The option phase of c.  Returns 1 when the connection enters
 * transmission, 0 when the client ended it (ABORT, or EOF), or a
 * negative errno. */
int nbds_handshake(struct conn *c);

/* ---- nbds-conn.c ---- */

/* Log a line about what a client did (a refusal, a protocol error): at
 * most a few a second, the rest counted. */
void nbds_note(struct nbds *s, enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A new connection on fd (owned by it from now on); NULL without
 * memory (fd is then closed). */
struct conn *nbds_conn_new(struct nbds *s, int fd, const char *peer,
			   const char *addr);
/* Admit c into the registry, within the limits (making room by closing
 * the oldest connection still in its handshake, if that is allowed), or
 * refuse it: -EAGAIN (over a limit) or -ESHUTDOWN.  On failure c is
 * not registered; the caller frees it. */
int nbds_conn_admit(struct nbds *s, struct conn *c);
/* Enter transmission on volume v: no handshake deadline any more.
 * 0, -EBUSY (the volume is claimed) or -ESHUTDOWN. */
int nbds_conn_attach(struct conn *c, const struct tv_vol_info *v);
/* Leave the registry and free c (closes its socket). */
void nbds_conn_release(struct conn *c);
/* The peer cannot be answered any more (a send failed): c is gone. */
void nbds_conn_gone(struct conn *c);
bool nbds_conn_is_gone(struct conn *c);

/* Take bytes of the budget for a request, from the connection's slot
 * when they fit there and it is free (*slot set), else from the shared
 * budget, waiting while the connection or the server is over its
 * budget: 0, -ECONNRESET (the connection is gone) or -ESHUTDOWN (the
 * server is shutting down). */
int nbds_mem_get(struct conn *c, uint64_t bytes, bool *slot);
/* Charge a read-ahead buffer of bytes if they are free now: true when
 * charged (until nbds_conn_release). */
bool nbds_mem_read_ahead(struct conn *c, uint64_t bytes);
/* Give back what nbds_mem_get took (slot as it said). */
void nbds_mem_put(struct conn *c, uint64_t bytes, bool slot);

/* A thread more for a connection that has one, if the server's thread
 * budget has it: true when taken (give it back with nbds_thread_put). */
bool nbds_thread_get(struct nbds *s);
void nbds_thread_put(struct nbds *s);

#endif
