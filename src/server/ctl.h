/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl - the control protocol: JSON requests and replies, one per line,
 * over a Unix socket beside the pool (docs/control.md).
 *
 * The daemon (serve.c) runs a control server; the thinvol command is its
 * client (src/cli).  Requests run the same engine calls the command makes
 * offline, so that the output and the errors are the same.
 *
 * Threads: the control server has its own accept thread and one thread
 * per client connection; the hooks are called from those threads.
 */
#ifndef TV_SERVER_CTL_H
#define TV_SERVER_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "thinvol.h"

#define CTL_PROTO_VERSION 1
#define CTL_MAX_LINE	  (1u << 20) /* bytes of one request or reply line */

/*
 * What the daemon does around metadata changes that affect NBD clients.
 *
 * claim: called before deleting a volume or shrinking it.  Returns 0 when
 * no NBD client has the volume open — and from then until release() no
 * new client may open it; with force, connected clients are disconnected
 * first (and waited for).  Returns -EBUSY otherwise, with a one-line
 * reason in msg ("volume 'x' is exported to 2 NBD clients; use --force to
 * disconnect them").
 * release: the change is done (or failed); new clients may connect again.
 * id 0 stands for every volume (pool.reopen).
 */
struct ctl_hooks {
	void *ctx;
	int (*claim)(void *ctx, uint64_t id, bool force, char *msg,
		     size_t msglen);
	void (*release)(void *ctx, uint64_t id);
};

/*
 * pool.reopen (and the daemon's own recovery, serve.c): -EBUSY while an
 * import runs through the daemon (vol.import), else tv_pool_probe;
 * if the device takes writes again, claim every volume with force
 * (hooks->claim with id 0: every NBD client is disconnected, so that it
 * sees what a crash would show it), tv_pool_reopen, release.  On failure
 * a one-line message in msg (msglen bytes, at least 1; starts empty).
 */
int ctl_pool_reopen(struct tv_pool *pool, const struct ctl_hooks *hooks,
		    char *msg, size_t msglen);

/*
 * A check report as one JSON object, {"clean":...,"volumes":N} without a
 * newline: pool.check's "report", and what thinvol check --json prints
 * (docs/control.md, docs/cli.md), byte for byte the same.
 */
void ctl_put_check_report(FILE *f, const struct tv_check_report *rep);

/*
 * When an import or export waiting on a client's pipe or socket gives up
 * (ctl-copy.h): the server stops (stop_fd turns readable), or the client
 * hangs up (peer_fd, its connection).  Either may be -1.
 */
struct ctl_wait {
	int stop_fd;
	int peer_fd;
};

/*
 * Handle one request line (without its newline) and produce the reply
 * line (with its newline, malloc'd, owned by the caller).  fd is a file
 * descriptor passed with the request (SCM_RIGHTS), or -1; it stays owned
 * by the caller.  wait (or NULL: wait as long as it takes) says when a
 * copy stops waiting.  Never fails for bad input: that is an error reply.
 * Returns 0, or -ENOMEM when no reply could be built.
 */
int ctl_handle(struct tv_pool *pool, const struct ctl_hooks *hooks,
	       const struct ctl_wait *wait, const char *line, size_t len,
	       int fd, char **reply, size_t *reply_len);

/*
 * Where the daemon of the pool at pool_path listens (docs/cli.md, "The
 * daemon's sockets"): suffix is ".ctl.sock" (the control socket) or
 * ".nbd.sock" (the default NBD socket).
 *   - a block device (any path to it: symlinks, /dev/disk/by-id, ...):
 *     CTL_RUN_DIR "/block-MAJ:MIN" SUFFIX, named after the device number;
 *   - a file: beside the file, under its real path (symlinks and "."
 *     resolved), so that every path to it gives the same socket.  A path
 *     that does not exist (yet) is used as given;
 *   - a file whose real path is too long for a socket beside it:
 *     CTL_RUN_DIR "/file-MAJ:MIN-INO" SUFFIX, named after the file's
 *     device and inode, as a block device is named after its number.
 * Returns 0 or -ENAMETOOLONG (a Unix socket path is at most 107 bytes).
 */
#define CTL_RUN_DIR "/run/thinvol"
int ctl_socket_path(const char *pool_path, const char *suffix, char *out,
		    size_t outlen);

/*
 * The control socket that process pid listens on: a listening Unix socket
 * among its descriptors (/proc/PID/fd) whose path (/proc/net/unix) ends in
 * ".ctl.sock".  For finding the daemon that holds a pool's lock when its
 * socket is not where ctl_socket_path says (a hard link to the pool).
 * Returns 0, -ENOENT (none), or -errno (/proc/PID/fd unreadable: not our
 * process).  What the socket is worth is the caller's to check.
 */
int ctl_socket_of(pid_t pid, char *out, size_t outlen);

/*
 * Test only: a daemon started with THINVOL_TEST_FAULTS=1 opens its pool
 * through a fault-injection device (io/io.h) and names it here before
 * ctl_server_start; the op "test.fault" arms it (docs/control.md).  While
 * none is set (always, outside such tests) "test.fault" is an unknown op.
 * The device is borrowed until the pool is closed; call before any
 * request is handled.
 */
struct io_dev;
void ctl_set_test_faults(struct io_dev *dev);

struct ctl_server;

/*
 * Listen on path (usock.h: mode 0600; only a stale socket there is
 * replaced, a live one is -EADDRINUSE, anything else -EEXIST; msg says
 * which) and serve requests on pool.  The pool and hooks are borrowed
 * until ctl_server_stop returns.
 */
int ctl_server_start(const char *path, struct tv_pool *pool,
		     const struct ctl_hooks *hooks, struct ctl_server **out,
		     char *msg, size_t msglen);

/* Stop accepting, let requests in progress finish, close every client,
 * remove the socket and free the server. */
void ctl_server_stop(struct ctl_server *srv);

#endif
