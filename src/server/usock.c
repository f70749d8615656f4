/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * usock.c - a listening Unix socket at a path (see usock.h).
 */
#include "server/usock.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/io.h"

/* How long we wait for another process's lock on the socket's path. */
#define PATH_LOCK_MS 5000

/*
 * Whether a server accepts on the socket at sa, without waiting: a
 * listener whose backlog is full (connect would block) is alive, and so
 * is anything we cannot tell.  Only ECONNREFUSED (nobody listens) and
 * ENOENT (gone) say it is not.
 */
static bool alive(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	bool live;

	if (fd < 0)
		return true; /* cannot tell: do not remove it */
	live = connect(fd, (const struct sockaddr *) sa, sizeof(*sa)) == 0 ||
	       (errno != ECONNREFUSED && errno != ENOENT);
	close(fd);
	return live;
}

/*
 * Bind fd to sa with mode 0600 from the start (rule 1).  Linux makes the
 * node that bind creates with the mode of the socket's own inode, masked
 * by the umask: so that inode is made 0600 first (fchmod), and the node
 * is never wider, not even for a moment.  Not the umask: it is the whole
 * process's, and other threads of the daemon create files meanwhile.
 */
static int bind_private(int fd, const struct sockaddr_un *sa)
{
	if (fchmod(fd, 0600) < 0 ||
	    bind(fd, (const struct sockaddr *) sa, sizeof(*sa)) < 0)
		return -errno;
	return 0;
}

/*
 * Rule 1's second half: a umask that takes the owner's own bits (0277,
 * 0777) leaves the node narrower than 0600, and the owner's own commands
 * could not connect.  Widen it back to exactly 0600 through a descriptor
 * of the node *st names (no link followed, the same inode checked), so a
 * name swapped since is never changed.  Only ever narrower, never wider,
 * than 0600 before this.
 */
static int restore_mode(const char *path, const struct stat *st)
{
	char proc[64];
	struct stat fst;
	int fd, r = 0;

	if ((st->st_mode & 07777) == 0600)
		return 0;
	fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (fstat(fd, &fst) < 0)
		r = -errno;
	else if (!S_ISSOCK(fst.st_mode) || fst.st_dev != st->st_dev ||
		 fst.st_ino != st->st_ino)
		r = -ESTALE;
	else if (chmod(proc, 0600) < 0)
		r = -errno;
	close(fd);
	return r;
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

/* " (owned by NAME, uid N)" when uid is not ours. */
static void owner(uid_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pwbuf[1024];

	buf[0] = 0;
	if (uid == geteuid())
		return;
	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res)
		snprintf(buf, len, " (owned by %s, uid %u)", res->pw_name,
			 (unsigned int) uid);
	else
		snprintf(buf, len, " (owned by uid %u)", (unsigned int) uid);
}

/*
 * Lock the socket's path for replacing what is there (rule 3): an flock
 * of the lock file PATH.lock, made by us, mode 0600, and removed again by
 * path_unlock.  Only a process of our user (or root) can open that file,
 * so nobody else can take the lock and keep us waiting; a directory that
 * others may only read gives them no way in.  Waited for at most
 * PATH_LOCK_MS.  *out is the locked descriptor, or -1 when there is no
 * lock to be had: the directory is not ours to write into, or another
 * user's file (or a link, or anything but a regular file) holds the lock
 * file's name, and then the caller replaces nothing.  -EBUSY (msg set)
 * when the wait ran out.
 *
 * The lock file is removed while it is locked, so a waiter may end up
 * holding a lock on a file that no longer has the name: after each flock
 * the descriptor must still be the file at the name, or we start over.
 */
static int path_lock(const char *path, int *out, char *msg, size_t msglen)
{
	struct timespec nap = {.tv_nsec = 10 * 1000 * 1000};
	struct stat fst, pst;
	char lock[sizeof(((struct sockaddr_un *) 0)->sun_path) + 8];
	int fd = -1, waited = 0;

	*out = -1;
	snprintf(lock, sizeof(lock), "%s.lock", path);
	for (;;) {
		if (fd < 0) {
			/* 0600: a umask can only narrow it */
			fd = open(lock,
				  O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC |
				      O_NONBLOCK | O_NOCTTY,
				  0600);
			if (fd < 0)
				return 0; /* not ours to write, or a link */
			if (fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode) ||
			    fst.st_uid != geteuid() || fst.st_nlink != 1) {
				close(fd);
				return 0; /* someone else's: no lock */
			}
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			if (stat(lock, &pst) == 0 && pst.st_dev == fst.st_dev &&
			    pst.st_ino == fst.st_ino)
				break;
			/* removed (and maybe made again) by its last
			 * holder while we waited: take the new one */
			close(fd);
			fd = -1;
			continue;
		}
		if (errno != EWOULDBLOCK && errno != EINTR) {
			close(fd);
			return 0;
		}
		if (waited >= PATH_LOCK_MS) {
			char who[64] = "another process";
			pid_t pid = io_lock_holder(fst.st_dev, fst.st_ino);

			if (pid > 0)
				snprintf(who, sizeof(who), "process %ld",
					 (long) pid);
			snprintf(msg, msglen,
				 "%s stays locked by %s: cannot tell whether a "
				 "server listens at the socket",
				 lock, who);
			close(fd);
			return -EBUSY;
		}
		nanosleep(&nap, NULL);
		waited += 10;
	}
	*out = fd;
	return 0;
}

/* Remove the lock file while we hold it (waiters see it gone and make a
 * new one), then let go. */
static void path_unlock(int fd, const char *path)
{
	char lock[sizeof(((struct sockaddr_un *) 0)->sun_path) + 8];

	if (fd < 0)
		return;
	snprintf(lock, sizeof(lock), "%s.lock", path);
	unlink(lock);
	close(fd); /* the lock goes with the description */
}

/* With the path locked (lk, or -1 when it could not be): what is at
 * path is ours to replace, or the error. */
static int may_replace(const struct sockaddr_un *sa, int lk, char *msg,
		       size_t msglen)
{
	const char *path = sa->sun_path;
	char who[96];
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	owner(st.st_uid, who, sizeof(who));
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(msg, msglen,
			 "%s%s is in the way (only a stale socket is replaced)",
			 kind(st.st_mode), who);
		return -EEXIST;
	}
	if (st.st_uid != geteuid()) {
		/* not probed: another user's listener can make a connect
		 * wait, and its socket is not ours to remove */
		snprintf(msg, msglen,
			 "a socket%s is in the way: refusing to use or "
			 "replace another user's socket; remove it if no "
			 "server listens there",
			 who);
		return -EEXIST;
	}
	if (alive(sa)) {
		snprintf(msg, msglen, "in use by a running server");
		return -EADDRINUSE;
	}
	if (lk < 0) {
		snprintf(msg, msglen,
			 "a stale socket is in the way, and its lock file "
			 "cannot be had to replace it safely: remove it");
		return -EEXIST;
	}
	return 0;
}

int usock_listen(struct usock *u, const char *path, int backlog, char *msg,
		 size_t msglen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, lk = -1, r;

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
	/* rule 3: bind and listen, or find a stale socket and replace it,
	 * while no other daemon does the same at this path */
	r = path_lock(path, &lk, msg, msglen);
	if (r < 0)
		goto out_close;
	r = bind_private(fd, &sa);
	if (r == -EADDRINUSE) {
		r = may_replace(&sa, lk, msg, msglen);
		if (r < 0)
			goto out_close;
		if (unlink(path) < 0 && errno != ENOENT) {
			r = -errno;
			snprintf(msg, msglen, "removing a stale socket: %s",
				 strerror(-r));
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
	r = restore_mode(path, &st);
	if (r < 0) {
		unlink(path);
		snprintf(msg, msglen,
			 "making the socket mode 0600 (the umask "
			 "left it %03o): %s",
			 (unsigned int) (st.st_mode & 0777), strerror(-r));
		goto out_close;
	}
	path_unlock(lk, path);
	u->fd = fd;
	u->dev = st.st_dev;
	u->ino = st.st_ino;
	u->bound = true;
	return 0;
out_msg:
	snprintf(msg, msglen, "%s", strerror(-r));
out_close:
	path_unlock(lk, path);
	if (fd >= 0)
		close(fd);
	return r;
}

void usock_close(struct usock *u)
{
	char msg[256];
	struct stat st;
	int lk = -1;

	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
	if (!u->bound)
		return;
	/* under the lock: a daemon that replaced our socket (stale once
	 * closed) keeps its own */
	if (path_lock(u->path, &lk, msg, sizeof(msg)) == 0 &&
	    lstat(u->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == u->dev && st.st_ino == u->ino)
		unlink(u->path);
	path_unlock(lk, u->path);
	u->bound = false;
}
