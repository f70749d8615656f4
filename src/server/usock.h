/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * usock - a listening Unix socket at a path: the one way the daemon makes
 * its NBD and control sockets.
 *
 *  1. The socket is never wider than 0600, and is exactly 0600 once
 *     usock_listen returns: its inode is made 0600 before bind, which
 *     gives the node that mode less the umask; a umask that takes the
 *     owner's own bits is undone afterwards on the node itself (checked
 *     to be the one bound).  The process's umask is not touched: other
 *     threads of the daemon create files meanwhile.
 *  2. Only a stale socket of our own user is replaced: a socket at the
 *     path that nobody accepts on (a non-blocking connect says
 *     ECONNREFUSED).  A live socket (one that accepts, or whose backlog is
 *     full) is -EADDRINUSE.  Anything that is not a socket (a regular
 *     file, a symlink, a directory, ...) and another user's socket, which
 *     is not even probed (its listener could make a connect wait), are
 *     -EEXIST and stay as they are.
 *  3. Binding, finding a stale socket and replacing it, and listening
 *     happen under an flock of the lock file PATH.lock (made mode 0600
 *     and removed again each time; waited for at most 5 s, then -EBUSY),
 *     so that two daemons never both take one stale socket: the second one
 *     sees the first one's socket live.  Only our user can open that file,
 *     so another user cannot hold the lock and keep a daemon from starting
 *     or stopping.  Where it cannot be had (a directory we may not write
 *     into, another user's file or a link at PATH.lock), a stale socket is
 *     left for the user to remove (-EEXIST); a path where nothing is is
 *     bound all the same (bind itself refuses a path that exists).
 *  4. usock_close removes the path only while it still names the socket
 *     we bound (same inode), under the same lock: a socket another daemon
 *     bound there since, or a file someone put there, stays.
 */
#ifndef TV_SERVER_USOCK_H
#define TV_SERVER_USOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/un.h>

struct usock {
	int fd; /* listening, or -1 */
	char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
	dev_t dev; /* of the socket's inode, once bound */
	ino_t ino;
	bool bound;
};

#define USOCK_INIT                                                             \
	{                                                                      \
		.fd = -1                                                       \
	}

/*
 * Listen on path.  Returns 0, -ENAMETOOLONG, -EADDRINUSE (a live socket
 * is there), -EEXIST (something that is not a socket, or another user's
 * socket, is there), -EBUSY (the lock was not had in time) or
 * another negative errno; on error msg says what (e.g. "a regular file is
 * in the way") and nothing was changed at path.
 */
int usock_listen(struct usock *u, const char *path, int backlog, char *msg,
		 size_t msglen);

/* Stop listening and remove the socket if it is still ours. */
void usock_close(struct usock *u);

#endif
