/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * usock.c - a listening Unix socket at a path (see usock.h).
 */
#include "server/usock.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether a server accepts on the socket at sa. */
static bool alive(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return true; /* cannot tell: do not remove it */
	live = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
	       (errno != ECONNREFUSED && errno != ENOENT);
	close(fd);
	return live;
}

/* Bind fd to sa with mode 0600 from the start: the umask makes the
 * socket's inode, so it is never wider, not even for a moment. */
static int bind_private(int fd, const struct sockaddr_un *sa)
{
	mode_t old = umask(0177);
	int r = bind(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;

	umask(old);
	return r < 0 ? -e : 0;
}

static const char *kind(mode_t m)
{
	if (S_ISREG(m))
		return "a regular file";
	if (S_ISLNK(m))
		return "a symbolic link";
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISFIFO(m))
		return "a FIFO";
	return "a device or other file";
}

/* " (owned by NAME)" when uid is not ours. */
static void owner(uid_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pwbuf[1024];

	buf[0] = 0;
	if (uid == geteuid())
		return;
	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res)
		snprintf(buf, len, " (owned by %s, uid %u)", res->pw_name,
			 (unsigned int)uid);
	else
		snprintf(buf, len, " (owned by uid %u)", (unsigned int)uid);
}

int usock_listen(struct usock *u, const char *path, int backlog, char *msg,
		 size_t msglen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char who[96];
	struct stat st;
	int fd, r;

	u->fd = -1;
	u->bound = false;
	msg[0] = 0;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(msg, msglen, "path too long for a Unix socket");
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	snprintf(u->path, sizeof(u->path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out_msg;
	}
	r = bind_private(fd, &sa);
	if (r == -EADDRINUSE) {
		/* a socket left by a server that died is replaced; a live
		 * one, or anything that is not a socket, is left alone */
		if (lstat(path, &st) < 0) {
			r = -errno;
			goto out_msg;
		}
		owner(st.st_uid, who, sizeof(who));
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(msg, msglen,
				 "%s%s is in the way (only a stale socket is "
				 "replaced)",
				 kind(st.st_mode), who);
			r = -EEXIST;
			goto out_close;
		}
		if (alive(&sa)) {
			snprintf(msg, msglen, "in use by a running server%s",
				 who);
			r = -EADDRINUSE;
			goto out_close;
		}
		if (unlink(path) < 0 && errno != ENOENT) {
			r = -errno;
			snprintf(msg, msglen, "removing a stale socket%s: %s",
				 who, strerror(-r));
			goto out_close;
		}
		r = bind_private(fd, &sa);
	}
	if (r < 0)
		goto out_msg;
	if (lstat(path, &st) < 0 || listen(fd, backlog) < 0) {
		r = -errno;
		unlink(path);
		goto out_msg;
	}
	u->fd = fd;
	u->dev = st.st_dev;
	u->ino = st.st_ino;
	u->bound = true;
	return 0;
out_msg:
	snprintf(msg, msglen, "%s", strerror(-r));
out_close:
	if (fd >= 0)
		close(fd);
	return r;
}

void usock_close(struct usock *u)
{
	struct stat st;

	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
	if (u->bound && lstat(u->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == u->dev && st.st_ino == u->ino)
		unlink(u->path);
	u->bound = false;
}
