/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * serve - the daemon: owns a pool, serves its volumes over NBD (a Unix
 * socket, optionally TCP, optionally TLS) and takes management requests on
 * the control socket, until SIGTERM or SIGINT.
 */
#ifndef TV_SERVER_SERVE_H
#define TV_SERVER_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum serve_tls_mode {
	SERVE_TLS_OFF,
	SERVE_TLS_OPTIONAL, /* STARTTLS offered, plaintext allowed */
	SERVE_TLS_REQUIRE,  /* nothing but STARTTLS before TLS */
};

struct serve_opts {
	const char *pool;    /* path of the pool file or device */
	const char *socket;  /* NBD Unix socket; NULL: beside the pool */
	const char *listen;  /* "ADDR:PORT" or "[V6]:PORT" for TCP, or NULL */
	const char *tls_psk; /* PSK file */
	const char *tls_cert, *tls_key, *tls_ca;
	enum serve_tls_mode tls; /* OFF unless a credential is given */
	/* TCP clients may connect without a PSK or a client certificate
	 * checked against tls_ca (serve_check_opts) */
	bool allow_unauthenticated;
	bool foreground; /* else detach once ready */
	const char *pidfile;
	bool syslog;	/* log to syslog instead of log_file */
	bool verbose;	/* per-connection events */
	FILE *log_file; /* where log lines go (stderr of the command) */
	unsigned int commit_interval_ms; /* 0: the engine's default */
	/* NBD limits (docs/nbd.md, "Limits"); 0: the default of nbds.h */
	unsigned int max_connections; /* at most, as descriptors allow */
	unsigned int max_per_peer;    /* from one TCP address */
	unsigned int handshake_timeout_s;
	uint64_t max_memory; /* 0: a quarter of RAM, <= 1 GiB */
};

/*
 * Run the daemon; returns 0 after a clean shutdown by signal, else a
 * negative errno with the reason logged (-EBUSY: the pool is held by
 * another process; -EUCLEAN: damaged; -EADDRINUSE: a server runs on the
 * socket; -EINVAL/-ENOENT: bad TLS files or options, ...).  Without
 * foreground, the calling process returns 0 as soon as the detached daemon
 * is ready (or its error), and the daemon itself never returns: it exits
 * with 0, or 1 after an error.
 */
int serve_run(const struct serve_opts *o);

/*
 * --listen's ADDR:PORT, [IPV6]:PORT or :PORT into host (empty: every
 * address) and port, which must be 1 to 65535 in decimal.  -EINVAL with
 * the reason in err.
 */
int serve_parse_listen(const char *spec, char *host, size_t hostlen,
		       unsigned int *port, char *err, size_t errlen);

/* Whether TCP clients must authenticate: --tls require with a PSK file or
 * a CA that client certificates are checked against. */
bool serve_tcp_authenticated(const struct serve_opts *o);

/*
 * The options serve_run refuses (it checks them too): a bad --listen, and
 * TCP whose clients would not be authenticated, unless
 * allow_unauthenticated.  -EINVAL with the reason in err.
 */
int serve_check_opts(const struct serve_opts *o, char *err, size_t errlen);

/* What thinvol serve and thinvol pool create say, after "POOL: ", about a
 * pool file on ext4 without a journal (IO_DEV_FS_NO_JOURNAL). */
#define SERVE_NO_JOURNAL_WARNING                                               \
	"on ext4 without a journal: after a power failure that filesystem "    \
	"may lose the pool file's newest blocks or show other files' old "     \
	"data in them, whatever thinvol syncs: without a journal ext4 makes "  \
	"no allocation crash-safe; keep pools on a journalled filesystem or "  \
	"a block device"

/* ... about a pool file that its filesystem copies on every overwrite
 * (IO_DEV_FS_COW). */
#define SERVE_COW_WARNING                                                      \
	"on btrfs without the nocow attribute: every overwrite needs new "     \
	"room, so a full filesystem can fail a commit and make the pool "      \
	"read-only; make the pool with 'thinvol pool create' on btrfs "        \
	"(which sets nocow) or keep it on another filesystem"

#endif
