/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-path.c - opening a path that a user named, to write into it, where
 * other users may have put something in its place (see io.h).
 *
 * Rules (the kernel's fs.protected_symlinks = 1 and fs.protected_regular
 * = 2, applied here whatever those sysctls are set to, since they are 0
 * on many machines):
 *
 *  1. A *shared directory* is a sticky one that its group or others may
 *     write into (/tmp, /var/tmp): anyone may create names there, and
 *     only a name's owner (or the directory's) may remove or replace it.
 *  2. A symbolic link as the last component, in a shared directory, is
 *     followed only when it belongs to us or to the directory's owner:
 *     nobody else can replace such a link, so following it is as safe as
 *     following it was when we looked.  Another user's link there is
 *     refused (-EPERM), whatever it points to.
 *  3. An existing regular file in a shared directory is written into only
 *     when it belongs to us or to the directory's owner and has one link:
 *     another user's file there would hand them what we write, and a hard
 *     link could be a name for one of our own files elsewhere.  The check
 *     is made on the open descriptor (the inode we would write), in the
 *     directory where it now is.
 */
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void io_uid_name(uid_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pwbuf[1024];

	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res)
		snprintf(buf, len, "%s (uid %u)", res->pw_name,
			 (unsigned int) uid);
	else
		snprintf(buf, len, "uid %u", (unsigned int) uid);
}

/* The directory part of path ("." when there is none). */
static void dir_of(const char *path, char *buf, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(buf, len, ".");
	else if (slash == path)
		snprintf(buf, len, "/");
	else
		snprintf(buf, len, "%.*s", (int) (slash - path), path);
}

/* Rule 1. */
static bool shared_dir(const struct stat *d)
{
	return S_ISDIR(d->st_mode) && (d->st_mode & S_ISVTX) &&
	       (d->st_mode & (S_IWGRP | S_IWOTH));
}

/* Rule 2 for the symbolic link at path (lst: its lstat): 0 or -EPERM. */
static int link_ok(const char *path, const struct stat *lst, char *why,
		   size_t whylen)
{
	char dir[PATH_MAX], who[128];
	struct stat d;

	dir_of(path, dir, sizeof(dir));
	if (stat(dir, &d) < 0 || !shared_dir(&d) || lst->st_uid == geteuid() ||
	    lst->st_uid == d.st_uid)
		return 0;
	io_uid_name(lst->st_uid, who, sizeof(who));
	snprintf(why, whylen,
		 "a symbolic link owned by %s in %s, a sticky directory that "
		 "others may write into: refusing to follow it",
		 who, dir);
	return -EPERM;
}

int io_open_user_path(const char *path, int flags, mode_t mode, char *why,
		      size_t whylen)
{
	struct stat lst;
	int fd, r;

	why[0] = 0;
	fd = open(path, flags | O_NOFOLLOW, mode);
	if (fd >= 0)
		return fd;
	r = -errno;
	/* the last component is a symbolic link: ELOOP, or EACCES where
	 * O_CREAT meets one in a sticky directory */
	if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
		r = link_ok(path, &lst, why, whylen);
		if (r < 0)
			return r;
		/* ours, or the directory owner's: nobody else can swap it */
		fd = open(path, flags, mode);
		if (fd >= 0)
			return fd;
		r = -errno;
	}
	snprintf(why, whylen, "%s", strerror(-r));
	return r;
}

int io_fd_user_target(int fd, char *why, size_t whylen)
{
	char link[64], real[PATH_MAX], dir[PATH_MAX], who[128];
	struct stat st, d;
	ssize_t n;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, real, sizeof(real) - 1);
	if (n <= 0 || real[0] != '/')
		return 0; /* no name left: nobody can have put it there */
	real[n] = 0;
	dir_of(real, dir, sizeof(dir));
	if (stat(dir, &d) < 0 || !shared_dir(&d))
		return 0;
	if (st.st_uid != geteuid() && st.st_uid != d.st_uid) {
		io_uid_name(st.st_uid, who, sizeof(who));
		snprintf(why, whylen,
			 "a file owned by %s in %s, a sticky directory that "
			 "others may write into: refusing to write into "
			 "another user's file there; remove it",
			 who, dir);
		return -EPERM;
	}
	if (st.st_nlink != 1) {
		snprintf(why, whylen,
			 "a file with %lu hard links in %s, a sticky directory "
			 "that others may write into: refusing to write into "
			 "it (another name of it may be anyone's)",
			 (unsigned long) st.st_nlink, dir);
		return -EPERM;
	}
	return 0;
}

/* What the mode bits of a pool file let its group or others do, the
 * worse first. */
static const struct exposure {
	mode_t group, others;
	const char *verb, *can;
} modes[] = {
    {S_IWGRP, S_IWOTH, "write", "read and change every volume"},
    {S_IRGRP, S_IROTH, "read", "read every volume"},
};

int io_pool_file_exposed(const struct stat *st, char *what, size_t len)
{
	char who[128];

	if (!S_ISREG(st->st_mode))
		return 0;
	if (st->st_uid != geteuid() && st->st_uid != 0) {
		io_uid_name(st->st_uid, who, sizeof(who));
		snprintf(what, len,
			 "the pool file belongs to %s, who can read and write "
			 "every volume, and whose daemon thinvol commands "
			 "trust",
			 who);
		return 1;
	}
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		const struct exposure *m = &modes[i];

		if (!(st->st_mode & (m->group | m->others)))
			continue;
		snprintf(what, len,
			 "%s may %s the pool file (mode %04o): they can %s",
			 st->st_mode & m->others ? "anyone" : "its group",
			 m->verb, (unsigned int) (st->st_mode & 07777), m->can);
		return 1;
	}
	return 0;
}
