/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbds-conn.c - the NBD server's connections: who gets in, what they may
 * hold, and how they are made to leave.
 *
 *   accept --nbds_conn_admit--> handshake --nbds_conn_attach--> transmission
 *     |          |             |                           |
 *     refused    evicted, the  deadline passed            claim --force,
 *     (a limit)  least along   (watchdog)                  stalled reply
 *                in handshake                              while memory is
 *                                                          short (watchdog),
 *                                                          shutdown grace
 *   every way out: conn_kill_locked (the socket is shut down both ways, so
 *   the connection's own threads wake up, finish and nbds_conn_release it).
 *
 * Rules:
 *   1. At most max_conns connections count at once, and at most
 *      max_per_peer from one TCP address (Unix clients have no per-peer
 *      limit: the socket is the daemon user's own).  A connection over a
 *      limit makes room by closing a connection that is still in its
 *      handshake (of its own address for the per-peer limit), and is
 *      refused (closed at once) when there is none: a flood of idle
 *      connections cannot lock a new client out, and one that completed
 *      its handshake is never closed to make room.  Which one: the one
 *      that has come least far (nothing received, bytes received, TLS
 *      handshake done: progress()), of those the one whose address
 *      holds the most such connections, then the oldest (victim_locked).
 *      Age alone closed a client that negotiates slowly (a long round
 *      trip, a TLS handshake) again and again under a flood faster than
 *      max_conns per negotiation: now a flood that sends nothing can
 *      only close a client that has sent nothing either and whose
 *      address holds as many connections in their handshake as any.
 *   2. A connection must enter transmission within handshake_ns of being
 *      accepted, or the watchdog closes it (slow or stalled clients,
 *      TLS handshakes included).
 *   3. Memory: a request holds budget bytes (its buffer and bounce
 *      buffers) from when it is read until its reply went out.  Every
 *      connection has a slot of s->slot bytes (NBDS_SLOT_MIN to
 *      NBDS_SLOT_MAX), reserved for it out of mem_max: one request that
 *      fits takes it when it is free, whatever the other connections
 *      hold, so a small request never waits for another connection's
 *      big ones.  Other requests, and read-ahead buffers, share what is
 *      left (mem_shared).  The reader of a connection waits, holding
 *      read_lock, while the connection holds NBDS_CONN_MEMORY (its slot
 *      included) or the shared budget is spent: it stops reading, and
 *      TCP or the socket buffer pushes back on the client.  A request
 *      larger than a budget proceeds when no other request holds any of
 *      it (of the connection, or of the shared budget: read-ahead
 *      buffers do not count), so every connection makes progress.
 *   4. A write's payload and a reply are transfers; one that has been
 *      going for stall_ns and moved fewer than NBDS_MIN_RATE bytes a
 *      second on average since it began is too slow.  While another
 *      connection's reader waits for the shared budget, the watchdog
 *      closes a connection with a transfer too slow: a client that
 *      sends a write header and no payload, stops reading, or reads a
 *      trickle cannot keep the others waiting for memory longer than
 *      that.  A connection that reads no more requests (DISC, EOF)
 *      is closed when its reply is too slow, memory short or not: it
 *      has nothing left to do but that reply.  Otherwise a slow client
 *      keeps its connection (a paused client), holding its own budget
 *      at most.
 *   5. gone is set once the peer cannot be answered (a send failed) or
 *      the connection is killed: its reader stops, a reader waiting for
 *      memory wakes up, and requests not yet begun are dropped, so no
 *      work is done for a client that has left.
 *   6. conn_kill_locked runs under srv->lock while c is registered, so
 *      c->fd is still c's own socket (nbds_conn_release closes it only after
 *      leaving the registry).
 *   7. Threads: each connection has one, counted by the connection limit;
 *      the helpers a connection starts for a deep queue (nbds.c, rule 7)
 *      come from one budget of max_helpers for all connections.  Without
 *      a --max-threads, the budget follows the task limits the daemon
 *      runs under (RLIMIT_NPROC, the pids.max of its cgroup and their
 *      parents): NBDS_THREAD_RESERVE tasks are kept for everything else
 *      (the control server's threads first), the connection limit is
 *      lowered to half of the rest at most, and the helpers have what
 *      is left.  So a flood of deep queues never takes the threads the
 *      control socket needs.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/nbds-internal.h"
#include "server/tls.h"
#include "util/checked.h"
#include "util/clock.h"
#include "util/log.h"

#define NBDS_SHUTDOWN_GRACE_S 5	 /* replies still pending at shutdown */
#define NBDS_THREAD_RESERVE   64 /* tasks kept from the NBD connections */
#define NBDS_WATCHDOG_TICK_NS (250ull * 1000 * 1000) /* while contended */
#define NS_PER_S	      1000000000ull

/* ---- the gone flag and killing (rules 5, 6) ---- */

void nbds_conn_gone(struct conn *c)
{
	struct nbds *s = c->srv;

	pthread_mutex_lock(&s->mem_lock);
	atomic_store(&c->gone, true);
	pthread_cond_broadcast(&s->mem_cond); /* its reader may wait there */
	pthread_mutex_unlock(&s->mem_lock);
}

bool nbds_conn_is_gone(struct conn *c)
{
	return atomic_load(&c->gone);
}

/* Stop counting c against the limits (srv->lock). */
static void uncount_locked(struct conn *c)
{
	if (c->counted) {
		c->counted = false;
		c->srv->ncounted--;
	}
}

/* Make c's threads end: shut its socket down both ways (blocked reads
 * see EOF, blocked sends fail), drop what it has not begun (srv->lock
 * held, rule 6). */
static void conn_kill_locked(struct conn *c)
{
	uncount_locked(c);
	shutdown(c->fd, SHUT_RDWR);
	nbds_conn_gone(c);
}

/* ---- admission (rule 1) ---- */

/*
 * Lines about what clients did (refused, closed, protocol errors) are
 * logged at most NBDS_NOTES_PER_S a second, --verbose or not: a flood of
 * bad clients must not flood the log.  What is left out is counted, and
 * the count said with the next line.
 */
#define NBDS_NOTES_PER_S 10

void nbds_note(struct nbds *s, enum log_level lvl, const char *fmt, ...)
{
	uint64_t now = clock_mono_ns();
	unsigned long quiet = 0;
	char msg[512], more[64] = "";
	va_list ap;
	bool say;

	pthread_mutex_lock(&s->note_lock);
	if (now - s->note_window >= NS_PER_S) {
		s->note_window = now;
		s->notes = 0;
	}
	say = s->notes < NBDS_NOTES_PER_S;
	if (say) {
		s->notes++;
		quiet = s->notes_left_out;
		s->notes_left_out = 0;
	} else {
		s->notes_left_out++;
	}
	pthread_mutex_unlock(&s->note_lock);
	if (!say)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (quiet)
		snprintf(more, sizeof(more), " (and %lu such lines left out)",
			 quiet);
	log_msg(lvl, "%s%s", msg, more);
}

/* How far c has come in its handshake (rule 1): 0 nothing received, 1
 * some bytes received, 2 its TLS handshake succeeded. */
static int progress(const struct conn *c)
{
	if (atomic_load(&c->secured))
		return 2;
	return atomic_load(&c->x.rx_bytes) ? 1 : 0;
}

struct candidate {
	struct conn *c;
	int progress; /* as it was when looked at: it grows meanwhile */
};

static int by_addr(const void *a, const void *b)
{
	return strcmp(((const struct candidate *) a)->c->addr,
		      ((const struct candidate *) b)->c->addr);
}

/* The oldest counted connection still in its handshake, of addr (NULL:
 * any): what is closed when the list of candidates cannot be made. */
static struct conn *oldest_negotiating_locked(struct nbds *s, const char *addr)
{
	struct conn *old = NULL;

	for (struct conn *c = s->conns; c; c = c->next)
		if (c->counted && !c->attached &&
		    (!addr || !strcmp(c->addr, addr)))
			old = c; /* the list is newest first */
	return old;
}

/*
 * The connection to close to make room (rule 1), among the counted ones
 * still in their handshake, of addr (NULL: any): the least progress
 * first; among those, one of the address that holds the most of them;
 * then the oldest.  NULL when there is none.
 */
static struct conn *victim_locked(struct nbds *s, const char *addr)
{
	struct candidate *v;
	struct conn *best = NULL;
	size_t n = 0, m = 0, run, best_run = 0;
	int low = 2;

	if (!s->ncounted)
		return NULL;
	v = malloc(s->ncounted * sizeof(*v));
	if (!v)
		return oldest_negotiating_locked(s, addr);
	for (struct conn *c = s->conns; c && n < s->ncounted; c = c->next)
		if (c->counted && !c->attached &&
		    (!addr || !strcmp(c->addr, addr))) {
			v[n].c = c;
			v[n].progress = progress(c);
			low = MIN(low, v[n].progress);
			n++;
		}
	for (size_t i = 0; i < n; i++)
		if (v[i].progress == low)
			v[m++] = v[i];
	/* each address's run, oldest first (qsort keeps no order: ages
	 * are compared) */
	qsort(v, m, sizeof(*v), by_addr);
	for (size_t i = 0; i < m; i += run) {
		struct conn *old = v[i].c;

		for (run = 1; i + run < m && !by_addr(&v[i], &v[i + run]);
		     run++)
			if (v[i + run].c->accepted < old->accepted)
				old = v[i + run].c;
		if (run > best_run ||
		    (run == best_run && old->accepted < best->accepted)) {
			best = old;
			best_run = run;
		}
	}
	free(v);
	return best;
}

static bool evict_locked(struct nbds *s, const char *addr, const char *why,
			 const struct conn *by)
{
	static const char *const how[] = {"has sent nothing", "is negotiating",
					  "is negotiating over TLS"};
	struct conn *old = victim_locked(s, addr);

	if (!old)
		return false;
	nbds_note(s, LOG_LVL_WARN,
		  "%s: %s: closing %s, still in its handshake (it %s), to "
		  "make room",
		  by->peer, why, old->peer, how[progress(old)]);
	conn_kill_locked(old);
	return true;
}

int nbds_conn_admit(struct nbds *s, struct conn *c)
{
	char why[96];

	pthread_mutex_lock(&s->lock);
	if (s->shutting_down) {
		pthread_mutex_unlock(&s->lock);
		return -ESHUTDOWN;
	}
	if (c->addr[0] && s->max_per_peer) {
		unsigned int n = 0;

		for (struct conn *o = s->conns; o; o = o->next)
			n += o->counted && !strcmp(o->addr, c->addr);
		snprintf(why, sizeof(why), "%u connections from %s", n,
			 c->addr);
		if (n >= s->max_per_peer && !evict_locked(s, c->addr, why, c)) {
			nbds_note(s, LOG_LVL_WARN,
				  "%s: refused: %s already (the limit per "
				  "address, --max-connections-per-peer)",
				  c->peer, why);
			pthread_mutex_unlock(&s->lock);
			return -EAGAIN;
		}
	}
	if (s->max_conns && s->ncounted >= s->max_conns) {
		snprintf(why, sizeof(why), "%zu connections", s->ncounted);
		if (!evict_locked(s, NULL, why, c)) {
			nbds_note(s, LOG_LVL_WARN,
				  "%s: refused: %zu connections already "
				  "(--max-connections)",
				  c->peer, s->ncounted);
			pthread_mutex_unlock(&s->lock);
			return -EAGAIN;
		}
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	c->registered = true;
	c->counted = true;
	s->ncounted++;
	/* the watchdog sleeps until the oldest deadline: this one is later,
	 * unless it was idle */
	if (s->handshake_ns)
		pthread_cond_signal(&s->wd_cond);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

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

int nbds_conn_attach(struct conn *c, const struct tv_vol_info *v)
{
	struct nbds *s = c->srv;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (s->shutting_down)
		r = -ESHUTDOWN;
	else if (claimed_locked(s, v->id))
		r = -EBUSY;
	else if (atomic_load(&c->gone))
		r = -ECONNRESET; /* evicted, or out of time, meanwhile */
	if (r == 0) {
		c->id = v->id;
		c->attached = true;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- new and released connections ---- */

struct conn *nbds_conn_new(struct nbds *s, int fd, const char *peer,
			   const char *addr)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return NULL;
	}
	c->srv = s;
	c->fd = fd;
	c->x.fd = fd;
	c->accepted = clock_mono_ns();
	snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "client");
	snprintf(c->addr, sizeof(c->addr), "%s", addr ? addr : "");
	pthread_mutex_init(&c->read_lock, NULL);
	pthread_mutex_init(&c->rlock, NULL);
	pthread_cond_init(&c->left, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	return c;
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
	uncount_locked(c);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void put_read_ahead(struct conn *c);

static void conn_free(struct conn *c)
{
	close(c->fd);
	xport_unbuffer(&c->x);
	pthread_mutex_destroy(&c->read_lock);
	pthread_mutex_destroy(&c->rlock);
	pthread_cond_destroy(&c->left);
	pthread_mutex_destroy(&c->send_lock);
	free(c);
}

/*
 * Once c leaves the registry, nbds_shutdown may return and the daemon
 * free the server and its TLS credentials: what c gives back to the
 * server (its read-ahead budget) and its TLS session go before that.
 * Its socket is closed only after (rule 6).
 */
void nbds_conn_release(struct conn *c)
{
	if (c->x.tls) {
		if (!c->send_failed && !atomic_load(&c->gone))
			tls_session_bye(c->x.tls);
		tls_session_free(c->x.tls);
		c->x.tls = NULL;
	}
	put_read_ahead(c);
	if (c->registered)
		unregister(c);
	conn_free(c);
}

/* ---- memory (rule 3) ---- */

/*
 * The budget is counted in atomics, so that a request that fits takes
 * its bytes without a lock shared by every connection.  Only readers
 * that must wait take mem_lock.  No wake-up is lost: a waiter counts
 * itself in mem_sleepers before it looks at the counts (under mem_lock,
 * which it holds until it sleeps), and nbds_mem_put looks at mem_sleepers
 * after it lowered the counts; both sequentially consistent, so one of
 * them sees the other, and nbds_mem_put then broadcasts under mem_lock.
 */

/* Take bytes of the shared budget if they fit (or no request holds any:
 * a request alone always proceeds). */
static bool take_server(struct nbds *s, uint64_t bytes)
{
	uint64_t u = atomic_load(&s->mem_reqs);

	do {
		if (u && u + atomic_load(&s->mem_ra) + bytes > s->mem_shared)
			return false;
	} while (!atomic_compare_exchange_weak(&s->mem_reqs, &u, u + bytes));
	return true;
}

/* Take the connection's slot if bytes fit in it and it is free.  Only
 * its reader takes it (under read_lock); any thread gives it back. */
static bool take_slot(struct conn *c, uint64_t bytes)
{
	if (bytes > c->srv->slot || atomic_load(&c->slot_busy))
		return false;
	atomic_store(&c->slot_busy, true);
	return true;
}

/* Whether the connection may take bytes more.  Only its reader adds to
 * c->mem (under read_lock), so what it sees can only go down meanwhile. */
static bool conn_fits(const struct conn *c, uint64_t bytes)
{
	uint64_t m = atomic_load(&c->mem);

	return !m || m + bytes <= NBDS_CONN_MEMORY;
}

int nbds_mem_get(struct conn *c, uint64_t bytes, bool *slot)
{
	struct nbds *s = c->srv;
	bool held_up = false; /* counted in mem_waiters */
	int r = 0;

	*slot = false;
	if (conn_fits(c, bytes)) {
		if (take_slot(c, bytes)) {
			*slot = true;
			goto taken;
		}
		if (take_server(s, bytes))
			goto taken;
	}
	pthread_mutex_lock(&s->mem_lock);
	atomic_fetch_add(&s->mem_sleepers, 1);
	for (;;) {
		bool mine;

		if (atomic_load(&c->gone)) {
			r = -ECONNRESET;
			break;
		}
		if (s->mem_stop) {
			r = -ESHUTDOWN;
			break;
		}
		mine = conn_fits(c, bytes);
		if (mine && take_slot(c, bytes)) {
			*slot = true;
			break;
		}
		if (mine && take_server(s, bytes))
			break;
		/* mem_waiters counts the readers that the server's budget
		 * holds up, not their own connection's (rule 4) */
		if (mine != held_up) {
			held_up = mine;
			atomic_store(&c->held_up, held_up);
			if (held_up)
				s->mem_waiters++;
			else
				s->mem_waiters--;
		}
		pthread_cond_wait(&s->mem_cond, &s->mem_lock);
	}
	if (held_up) {
		atomic_store(&c->held_up, false);
		s->mem_waiters--;
	}
	atomic_fetch_sub(&s->mem_sleepers, 1);
	pthread_mutex_unlock(&s->mem_lock);
	if (r)
		return r;
taken:
	atomic_fetch_add(&c->mem, bytes);
	return 0;
}

bool nbds_mem_read_ahead(struct conn *c, uint64_t bytes)
{
	struct nbds *s = c->srv;
	uint64_t ra = atomic_load(&s->mem_ra);

	do {
		if (atomic_load(&s->mem_reqs) + ra + bytes > s->mem_shared)
			return false;
	} while (!atomic_compare_exchange_weak(&s->mem_ra, &ra, ra + bytes));
	c->read_ahead += bytes;
	return true;
}

static void wake_sleepers(struct nbds *s)
{
	if (atomic_load(&s->mem_sleepers)) {
		pthread_mutex_lock(&s->mem_lock);
		pthread_cond_broadcast(&s->mem_cond);
		pthread_mutex_unlock(&s->mem_lock);
	}
}

void nbds_mem_put(struct conn *c, uint64_t bytes, bool slot)
{
	atomic_fetch_sub(&c->mem, bytes);
	if (slot)
		atomic_store(&c->slot_busy, false);
	else
		atomic_fetch_sub(&c->srv->mem_reqs, bytes);
	wake_sleepers(c->srv);
}

/* nbds_conn_release: the read-ahead buffer's bytes go back. */
static void put_read_ahead(struct conn *c)
{
	if (c->read_ahead) {
		atomic_fetch_sub(&c->srv->mem_ra, c->read_ahead);
		c->read_ahead = 0;
		wake_sleepers(c->srv);
	}
}

/* ---- threads (rule 7) ---- */

bool nbds_thread_get(struct nbds *s)
{
	unsigned int n = atomic_load(&s->helpers);

	do {
		if (n >= s->max_helpers)
			return false;
	} while (!atomic_compare_exchange_weak(&s->helpers, &n, n + 1));
	return true;
}

void nbds_thread_put(struct nbds *s)
{
	atomic_fetch_sub(&s->helpers, 1);
}

/* A number from a cgroup or /proc file ("max": UINT64_MAX); false when
 * the file cannot be read. */
static bool read_count(const char *path, uint64_t *out)
{
	char buf[64];
	FILE *f = fopen(path, "re");
	bool ok;

	if (!f)
		return false;
	ok = fgets(buf, sizeof(buf), f) != NULL;
	fclose(f);
	if (!ok)
		return false;
	if (!strncmp(buf, "max", 3)) {
		*out = UINT64_MAX;
		return true;
	}
	return sscanf(buf, "%" SCNu64, out) == 1;
}

/* Tasks the pids controller lets the cgroup at dir (under root) and its
 * parents up to root start: the least of pids.max - pids.current. */
static uint64_t cgroup_room(const char *root, const char *dir)
{
	char path[PATH_MAX];
	uint64_t room = UINT64_MAX;
	size_t n = strlen(dir);

	for (;;) {
		uint64_t max, cur;

		snprintf(path, sizeof(path), "%s%.*s/pids.max", root, (int) n,
			 dir);
		if (read_count(path, &max) && max != UINT64_MAX) {
			snprintf(path, sizeof(path), "%s%.*s/pids.current",
				 root, (int) n, dir);
			if (!read_count(path, &cur))
				cur = 0;
			if (max - MIN(max, cur) < room)
				room = max - MIN(max, cur);
		}
		while (n && dir[n - 1] != '/')
			n--;
		if (!n)
			break;
		n--; /* the parent: without its trailing part */
	}
	return room;
}

/* How many more tasks (threads) this process may start, as far as its
 * limits tell: RLIMIT_NPROC (not enforced for root; it counts every
 * process of the user, of which only ours are known here) and the pids
 * controller, cgroup v1 or v2.  UINT64_MAX: no limit found. */
static uint64_t task_room(void)
{
	uint64_t room = UINT64_MAX, own = 0;
	struct rlimit rl;
	char line[PATH_MAX + 64];
	FILE *f;

	f = fopen("/proc/self/status", "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "Threads: %" SCNu64, &own) == 1)
				break;
		fclose(f);
	}
	if (geteuid() != 0 && getrlimit(RLIMIT_NPROC, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY)
		room = rl.rlim_cur > own ? rl.rlim_cur - own : 0;
	f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return room;
	while (fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *dir;
		uint64_t r = UINT64_MAX;

		if (!ctl || !(dir = strchr(ctl + 1, ':')))
			continue;
		*dir++ = 0;
		dir[strcspn(dir, "\n")] = 0;
		ctl++;
		if (!strcmp(dir, "/"))
			dir[0] = 0;
		if (!*ctl) { /* v2: the unified hierarchy */
			r = cgroup_room("/sys/fs/cgroup", dir);
			if (r == UINT64_MAX)
				r = cgroup_room("/sys/fs/cgroup/unified", dir);
		} else {
			for (char *t = strtok(ctl, ","); t;
			     t = strtok(NULL, ","))
				if (!strcmp(t, "pids"))
					r = cgroup_room("/sys/fs/cgroup/pids",
							dir);
		}
		if (r < room)
			room = r;
	}
	fclose(f);
	return room;
}

/* Rule 7: the helpers' budget, and the connection limit within the
 * task limits. */
static void set_threads(struct nbds *s, unsigned int max_threads)
{
	uint64_t room = max_threads, avail, conns;

	if (!room) {
		room = task_room();
		if (room == UINT64_MAX) {
			s->max_helpers = UINT_MAX;
			return;
		}
	}
	avail = max_threads			 ? room
		: room > 2 * NBDS_THREAD_RESERVE ? room - NBDS_THREAD_RESERVE
						 : room / 2;
	conns = MAX(MIN(avail / 2, (uint64_t) UINT_MAX), 1);
	if (s->max_conns > conns)
		log_warn("at most %" PRIu64 " NBD connections, not %u: %" PRIu64
			 " threads may be started (RLIMIT_NPROC, pids.max, "
			 "less %u kept for the rest of the daemon), and a "
			 "connection needs one, and more for a deep queue",
			 conns, s->max_conns, room,
			 max_threads ? 0 : NBDS_THREAD_RESERVE);
	/* no limit (0) becomes this one: each connection takes a thread */
	if (!s->max_conns || s->max_conns > conns)
		s->max_conns = (unsigned int) conns;
	s->max_helpers = (unsigned int) MIN(avail - MIN(avail, s->max_conns),
					    (uint64_t) UINT_MAX - 1);
}

/* ---- the watchdog (rules 2, 4) ---- */

/* How many readers the server's budget holds up. */
static unsigned int readers_held_up(struct nbds *s)
{
	unsigned int n;

	pthread_mutex_lock(&s->mem_lock);
	n = s->mem_waiters;
	pthread_mutex_unlock(&s->mem_lock);
	return n;
}

/* Whether a transfer that began at since (0: none is going) and has
 * moved bytes since then is too slow at now (rule 4).  A transfer that
 * began after the watchdog read its clock is not. */
static bool too_slow(const struct nbds *s, uint64_t since, uint64_t moved,
		     uint64_t now, double *secs)
{
	double t;

	if (!since || since >= now || now - since < s->stall_ns)
		return false;
	t = (double) (now - since) / NS_PER_S;
	*secs = t;
	return (double) moved < t * NBDS_MIN_RATE;
}

/* The write payload c's reader waits for. */
static bool payload_too_slow(const struct nbds *s, struct conn *c, uint64_t now,
			     double *secs, uint64_t *moved)
{
	uint64_t since = atomic_load(&c->rx_since);
	uint64_t from = atomic_load(&c->rx_from);

	if (atomic_load(&c->rx_since) != since)
		return false; /* another payload began meanwhile */
	*moved = atomic_load(&c->x.rx_bytes) - from;
	return too_slow(s, since, *moved, now, secs);
}

/* The reply being sent on c (xport.h: tx_since is stable around the
 * read of tx_from). */
static bool reply_too_slow(const struct nbds *s, struct conn *c, uint64_t now,
			   double *secs, uint64_t *moved)
{
	uint64_t since = atomic_load(&c->x.tx_since);
	uint64_t from = atomic_load(&c->x.tx_from);

	if (atomic_load(&c->x.tx_since) != since)
		return false;
	*moved = atomic_load(&c->x.tx_bytes) - from;
	return too_slow(s, since, *moved, now, secs);
}

/* One pass over the registry (srv->lock): close the connections past
 * their handshake deadline and those whose transfers are too slow while
 * memory is short (rule 4).  Returns when to look again (0: not until
 * woken). */
static uint64_t watch_locked(struct nbds *s, uint64_t now)
{
	unsigned int waiting = s->stall_ns ? readers_held_up(s) : 0;
	bool short_of_memory = waiting > 0;
	/* A reader that starts waiting for memory cannot wake us (it holds
	 * mem_lock and a read_lock, under which srv->lock may not be
	 * taken): with the stall rule on, look at least once a second. */
	uint64_t next = !s->stall_ns	  ? 0
			: short_of_memory ? now + NBDS_WATCHDOG_TICK_NS
					  : now + NS_PER_S;

	for (struct conn *c = s->conns; c; c = c->next) {
		uint64_t moved;
		bool others;
		double t;

		if (atomic_load(&c->gone))
			continue;
		if (!c->attached && s->handshake_ns) {
			uint64_t deadline = c->accepted + s->handshake_ns;

			if (now >= deadline) {
				nbds_note(s, LOG_LVL_WARN,
					  "%s: handshake not finished after "
					  "%.1f s (--handshake-timeout): "
					  "closing",
					  c->peer,
					  (double) s->handshake_ns / NS_PER_S);
				conn_kill_locked(c);
				continue;
			}
			if (!next || deadline < next)
				next = deadline;
		}
		if (!c->attached || !s->stall_ns)
			continue;
		/* others must be waiting: its own reader, held up by the
		 * memory it holds itself, does not count */
		others = waiting > (atomic_load(&c->held_up) ? 1u : 0u);
		if (others && payload_too_slow(s, c, now, &t, &moved)) {
			nbds_note(s, LOG_LVL_WARN,
				  "%s: %" PRIu64 " bytes of a write's payload "
				  "in %.1f s while others wait for memory: "
				  "closing",
				  c->peer, moved, t);
			conn_kill_locked(c);
		} else if ((others || atomic_load(&c->ended)) &&
			   reply_too_slow(s, c, now, &t, &moved)) {
			nbds_note(s, LOG_LVL_WARN,
				  "%s: %" PRIu64 " bytes of a reply taken in "
				  "%.1f s %s: closing",
				  c->peer, moved, t,
				  others ? "while others wait for memory"
					 : "after its last request");
			conn_kill_locked(c);
		}
	}
	return next;
}

static void *watchdog(void *arg)
{
	struct nbds *s = arg;

	pthread_mutex_lock(&s->lock);
	while (!s->wd_stop) {
		uint64_t next = watch_locked(s, clock_mono_ns());

		if (!next) {
			pthread_cond_wait(&s->wd_cond, &s->lock);
		} else {
			struct timespec ts = {
			    .tv_sec = (time_t) (next / NS_PER_S),
			    .tv_nsec = (long) (next % NS_PER_S),
			};
			pthread_cond_timedwait(&s->wd_cond, &s->lock, &ts);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- the server ---- */

/* A quarter of the RAM, at most 1 GiB, at least 128 MiB. */
static uint64_t default_memory(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t m = 1ull << 30;

	if (pages > 0 && psize > 0 &&
	    (uint64_t) pages * (uint64_t) psize / 4 < m)
		m = (uint64_t) pages * (uint64_t) psize / 4;
	return m < (128ull << 20) ? 128ull << 20 : m;
}

/*
 * Rule 3: every connection's slot is reserved out of mem_max, a quarter
 * of it shared out among max_conns, each between NBDS_SLOT_MIN and
 * NBDS_SLOT_MAX.  When even the minimum slots take more than half of
 * mem_max (a small --max-memory for many connections) the shared budget
 * keeps half, and the slots go beyond mem_max.  Without a connection
 * limit nothing bounds the slots: they are not reserved.
 */
static void set_slots(struct nbds *s)
{
	uint64_t slot = NBDS_SLOT_MAX, reserve;

	if (!s->max_conns) {
		s->slot = slot;
		s->mem_shared = s->mem_max;
		return;
	}
	if (s->mem_max / 4 / s->max_conns < slot)
		slot = s->mem_max / 4 / s->max_conns / 4096 * 4096;
	if (slot < NBDS_SLOT_MIN)
		slot = NBDS_SLOT_MIN;
	reserve = slot * s->max_conns;
	s->slot = slot;
	s->mem_shared =
	    reserve <= s->mem_max / 2 ? s->mem_max - reserve : s->mem_max / 2;
}

int nbds_new(const struct nbds_opts *o, struct nbds **out)
{
	struct nbds *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;
	int r;

	if (!s)
		return -ENOMEM;
	s->pool = o->pool;
	s->tls = o->tls;
	s->tls_required = o->tls_required;
	s->verbose = o->verbose;
	s->max_conns = o->max_connections;
	s->max_per_peer = o->max_per_peer;
	s->handshake_ns = (uint64_t) o->handshake_ms * 1000000;
	s->stall_ns = (uint64_t) o->stall_ms * 1000000;
	set_threads(s, o->max_threads);
	s->mem_max = o->max_memory ? o->max_memory : default_memory();
	set_slots(s);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_mutex_init(&s->mem_lock, NULL);
	pthread_cond_init(&s->mem_cond, NULL);
	pthread_mutex_init(&s->rmw_lock, NULL);
	pthread_mutex_init(&s->note_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wd_cond, &ca);
	pthread_condattr_destroy(&ca);
	if (s->handshake_ns || s->stall_ns) {
		r = pthread_create(&s->wd_thread, NULL, watchdog, s);
		if (r) {
			nbds_free(s);
			return -r;
		}
		s->wd_started = true;
	}
	*out = s;
	return 0;
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
	/* Kick the volume's clients off: the requests they have running
	 * finish, those not begun are dropped, then they unregister. */
	if (n) {
		if (id)
			log_info(
			    "disconnecting %zu client%s of volume #%" PRIu64, n,
			    n == 1 ? "" : "s", id);
		else
			log_info("disconnecting every client (%zu)", n);
		for (struct conn *c = s->conns; c; c = c->next)
			if (claim_covers(c, id))
				conn_kill_locked(c);
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
				conn_kill_locked(c);
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

void nbds_shutdown(struct nbds *s)
{
	struct timespec until;

	pthread_mutex_lock(&s->lock);
	s->shutting_down = true;
	/* stop reading: readers see EOF (or, waiting for memory, mem_stop),
	 * requests already read still complete and their replies go out */
	pthread_mutex_lock(&s->mem_lock);
	s->mem_stop = true;
	pthread_cond_broadcast(&s->mem_cond);
	pthread_mutex_unlock(&s->mem_lock);
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
				conn_kill_locked(c);
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
	if (s->wd_started) {
		pthread_mutex_lock(&s->lock);
		s->wd_stop = true;
		pthread_cond_signal(&s->wd_cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->wd_thread, NULL);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->mem_lock);
	pthread_cond_destroy(&s->mem_cond);
	pthread_cond_destroy(&s->wd_cond);
	pthread_mutex_destroy(&s->rmw_lock);
	pthread_mutex_destroy(&s->note_lock);
	free(s->claimed);
	free(s);
}
