/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * usock - a listening Unix socket at a path: the one way the daemon makes
 * its NBD and control sockets.
 *
 *  - The socket is mode 0600 from the moment it exists (the umask is set
 *    around bind).
 *  - Only a stale socket is replaced: a socket at the path that nobody
 *    accepts on (connect says ECONNREFUSED).  A live socket is
 *    -EADDRINUSE; anything that is not a socket (a regular file, a
 *    symlink, a directory, ...) is -EEXIST and stays as it is.
 *  - usock_close removes the path only while it still names the socket
 *    we bound (same inode): a socket another daemon bound there since, or
 *    a file someone put there, stays.
 *
 * Not thread-safe against other threads that create files (the umask is
 * process-wide): call while the daemon starts.
 */
#ifndef TV_SERVER_USOCK_H
#define TV_SERVER_USOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/un.h>

struct usock {
	int fd; /* listening, or -1 */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev; /* of the socket's inode, once bound */
	ino_t ino;
	bool bound;
};

#define USOCK_INIT { .fd = -1 }

/*
 * Listen on path.  Returns 0, -ENAMETOOLONG, -EADDRINUSE (a live socket
 * is there), -EEXIST (something that is not a socket is there) or
 * another negative errno; on error msg says what (e.g. "a regular file is
 * in the way") and nothing was changed at path.
 */
int usock_listen(struct usock *u, const char *path, int backlog, char *msg,
		 size_t msglen);

/* Stop listening and remove the socket if it is still ours. */
void usock_close(struct usock *u);

#endif
