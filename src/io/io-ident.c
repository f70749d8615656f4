/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-ident.c - which storage a file or block device is, whether two of
 * them share it, and claiming a pool's storage for one process.
 * Contract in io.h and io-internal.h.
 *
 * A descriptor's bytes live in a stack of layers: the file or device
 * itself (the top); for a partition, its whole disk; for a device-mapper
 * or md device, the devices under it (sysfs "slaves"); for a loop device,
 * its backing file or device; and so on down.  A layer reached through a
 * partition or a slave is *partial*: only part of it is under the top.
 *
 * Rules:
 *
 *  1. Two descriptors share storage when their stacks hold the same layer
 *     (a file: its device and inode; a block device: its number) and at
 *     least one of them holds it whole.  So a partition and its disk
 *     share, a loop device and its backing file share, and two
 *     partitions of one disk (or of one loop device) do not.
 *  2. The walk reads sysfs (/sys/dev/block/MAJ:MIN) and opens every lower
 *     layer by its name (/dev/NAME, or the loop's backing_file) to check
 *     that it is what sysfs says: a loop device's backing file must be
 *     the device and inode that LOOP_GET_STATUS64 reports.  A layer that
 *     cannot be reached (a deleted backing file, one outside our mount
 *     namespace, no permission) ends its branch: the answer is then "as
 *     far as can be seen".
 *  3. Claiming a pool's storage holds every layer of its stack while the
 *     pool is open.  A whole block device is opened O_EXCL, so that the
 *     kernel refuses every other exclusive opener (a mount, md or dm, a
 *     partition of it or its disk, mkfs, another pool); every layer is
 *     also flock'ed, which names the holder in /proc/locks: a whole layer
 *     LOCK_EX, a partial one LOCK_SH.  So a second pool on the same file
 *     through a loop device (or on the loop device through the file)
 *     finds the first one's lock, while pools on two partitions of one
 *     loop device coexist and exclude a pool on the whole backing file.
 *  4. The top of a claim is the pool's own descriptor, reopened O_EXCL
 *     through /proc/self/fd when it is a block device (the same device,
 *     the same access mode); the caller uses that descriptor from then
 *     on.  A claim that fails holds nothing.
 *  5. Locks are advisory and O_EXCL binds only exclusive openers: a
 *     process that opens the device plainly and writes is not stopped.
 *     Every thinvol process claims, so no two of them share a pool.
 */
#include "io/io.h"
#include "io/io-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define STACK_MAX 16  /* layers of one stack */
#define LAYER_NAME 512 /* bytes of a layer's name, for messages */

/* What a layer is to the layer above it. */
enum rel {
	REL_TOP,
	REL_DISK,    /* the whole disk of a partition */
	REL_UNDER,   /* a device under a device-mapper or md device */
	REL_BACKING, /* the backing file or device of a loop device */
};

struct layer {
	struct io_ident id;
	struct stat st; /* of what we opened: a device node for a device */
	bool partial;	/* only part of it is under the top (rule 1) */
	int fd;		/* -1: not open */
	bool own;	/* fd was opened by the walk */
	int up;		/* index of the layer above; -1 for the top */
	enum rel rel;
	char name[LAYER_NAME];
};

struct stack {
	size_t n;
	struct layer l[STACK_MAX];
};

struct io_claim {
	struct stack s;
};

/* ---- small readers ---- */

/* A small file (sysfs, procfs) into buf, without its last newline. */
static int read_small(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	return 0;
}

/* /sys/dev/block/MAJ:MIN/ATTR of the block device rdev. */
static int sys_attr(dev_t rdev, const char *attr, char *buf, size_t len)
{
	char path[160];

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%s", major(rdev),
		 minor(rdev), attr);
	return read_small(path, buf, len);
}

static int parse_devt(const char *s, dev_t *out)
{
	unsigned int ma, mi;
	char extra;

	if (sscanf(s, "%u:%u%c", &ma, &mi, &extra) != 2)
		return -EINVAL;
	*out = makedev(ma, mi);
	return 0;
}

/* The kernel's sequence number of rdev's disk (a partition's is its
 * disk's), 0 when the kernel has none (before Linux 5.15). */
static uint64_t disk_seq(dev_t rdev)
{
	char buf[32], *end;
	uint64_t v;

	if (sys_attr(rdev, "diskseq", buf, sizeof(buf)) < 0 &&
	    sys_attr(rdev, "../diskseq", buf, sizeof(buf)) < 0)
		return 0;
	errno = 0;
	v = strtoull(buf, &end, 10);
	return errno || end == buf ? 0 : v;
}

static int ident_of(const struct stat *st, struct io_ident *out)
{
	memset(out, 0, sizeof(*out));
	if (S_ISREG(st->st_mode)) {
		out->dev = st->st_dev;
		out->ino = st->st_ino;
		return 0;
	}
	if (S_ISBLK(st->st_mode)) {
		out->blk = true;
		out->rdev = st->st_rdev;
		out->diskseq = disk_seq(st->st_rdev);
		return 0;
	}
	return -EINVAL;
}

int io_ident_fd(int fd, struct io_ident *out)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	return ident_of(&st, out);
}

int io_ident_path(const char *path, struct io_ident *out)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	return ident_of(&st, out);
}

bool io_ident_equal(const struct io_ident *a, const struct io_ident *b)
{
	if (a->blk != b->blk)
		return false;
	if (!a->blk)
		return a->dev == b->dev && a->ino == b->ino;
	return a->rdev == b->rdev &&
	       (!a->diskseq || !b->diskseq || a->diskseq == b->diskseq);
}

/* ---- holders ---- */

pid_t io_lock_holder(dev_t dev, ino_t ino)
{
	FILE *f = fopen("/proc/locks", "re");
	char line[256];
	pid_t pid = 0;

	if (!f)
		return 0;
	/* "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter's
	 * line has "->" after the number: not a holder */
	while (!pid && fgets(line, sizeof(line), f)) {
		unsigned int maj, min;
		unsigned long long i;
		long p;

		if (strstr(line, "->") ||
		    sscanf(line, "%*s %*s %*s %*s %ld %x:%x:%llu", &p, &maj,
			   &min, &i) != 4)
			continue;
		if (p > 0 && makedev(maj, min) == dev &&
		    i == (unsigned long long)ino)
			pid = (pid_t)p;
	}
	fclose(f);
	return pid;
}

/* "process 123 (thinvol)" */
static void describe_pid(pid_t pid, char *buf, size_t len)
{
	char path[64], comm[64] = "";

	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	if (read_small(path, comm, sizeof(comm)) < 0)
		comm[0] = 0;
	snprintf(buf, len, "process %ld (%s)", (long)pid,
		 comm[0] ? comm : "?");
}

/* Where the block device rdev is mounted, from /proc/self/mountinfo
 * ("ID PARENT MAJ:MIN ROOT MOUNTPOINT ..."). */
static bool mounted_at(dev_t rdev, char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], want[32];
	bool found = false;

	if (!f)
		return false;
	snprintf(want, sizeof(want), "%u:%u", major(rdev), minor(rdev));
	while (!found && fgets(line, sizeof(line), f)) {
		char *field[5], *save = NULL, *p = line;
		int k;

		for (k = 0; k < 5 && (field[k] = strtok_r(p, " ", &save)); k++)
			p = NULL;
		if (k == 5 && !strcmp(field[2], want)) {
			snprintf(buf, len, "%s", field[4]);
			found = true;
		}
	}
	fclose(f);
	return found;
}

/* The first holder of rdev in sysfs (a device-mapper or md device). */
static bool sys_holder(dev_t rdev, char *buf, size_t len)
{
	char path[160];
	struct dirent *e;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/holders",
		 major(rdev), minor(rdev));
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(buf, len, "%s", e->d_name);
			found = true;
		}
	closedir(d);
	return found;
}

/* Who has the block device at node (st) claimed: an O_EXCL open failed
 * with EBUSY. */
static void describe_excl(const struct stat *st, char *buf, size_t len)
{
	char what[LAYER_NAME];
	pid_t pid = io_lock_holder(st->st_dev, st->st_ino);

	if (pid > 0)
		describe_pid(pid, buf, len);
	else if (mounted_at(st->st_rdev, what, sizeof(what)))
		snprintf(buf, len, "a filesystem mounted at %s", what);
	else if (sys_holder(st->st_rdev, what, sizeof(what)))
		snprintf(buf, len, "the device %s built on it", what);
	else
		snprintf(buf, len,
			 "another exclusive user (a mount, a RAID or "
			 "device-mapper device, a pool, or a partition of it "
			 "or its disk)");
}

int io_fd_locked(int fd, char *who, size_t whylen)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	char path[64];
	struct stat st;
	pid_t pid = 0;
	int nfd, r = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	/* a description of our own: fd's flock, if any, is not in the way */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	nfd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (nfd < 0)
		return 0; /* cannot tell */
	if (flock(nfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			r = 1;
			pid = io_lock_holder(st.st_dev, st.st_ino);
		}
	} else if (fcntl(nfd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
		r = 1; /* a POSIX or OFD lock: qemu's, for one */
		pid = fl.l_pid > 0 ? fl.l_pid : 0;
	}
	close(nfd);
	if (r && pid > 0)
		describe_pid(pid, who, whylen);
	else if (r)
		snprintf(who, whylen, "another process (it holds a lock)");
	return r;
}

/* ---- stacks ---- */

static void stack_free(struct stack *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->l[i].own && s->l[i].fd >= 0)
			close(s->l[i].fd);
	s->n = 0;
}

/* The layer already in s with this identity, or NULL. */
static struct layer *find(struct stack *s, const struct io_ident *id)
{
	for (size_t i = 0; i < s->n; i++)
		if (io_ident_equal(&s->l[i].id, id))
			return &s->l[i];
	return NULL;
}

/* Claiming: open whole block devices O_EXCL (rule 3). */
struct walk {
	struct stack *s;
	bool claim;
	char *why; /* claim: who holds a layer */
	size_t whylen;
};

/* A layer of s (not yet counted in s->n) for name, opened with flags;
 * 0 added, 1 not reachable (rule 2), or -EBUSY (claim, why set). */
static int add_open(struct walk *w, int up, enum rel rel, bool partial,
		    const char *name, const struct io_ident *want, int flags)
{
	struct stack *s = w->s;
	struct layer *l = &s->l[s->n];
	struct io_ident got;
	struct stat st;
	int fd;

	fd = open(name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | flags);
	if (fd < 0 && errno == EBUSY && (flags & O_EXCL)) {
		char who[LAYER_NAME];

		if (stat(name, &st) == 0)
			describe_excl(&st, who, sizeof(who));
		else
			snprintf(who, sizeof(who), "another exclusive user");
		snprintf(w->why, w->whylen, "%s, through %s", who, name);
		return -EBUSY;
	}
	if (fd < 0)
		return 1;
	if (fstat(fd, &st) < 0 || ident_of(&st, &got) < 0 ||
	    !io_ident_equal(&got, want)) {
		close(fd);
		return 1; /* replaced since sysfs named it */
	}
	memset(l, 0, sizeof(*l));
	l->id = got;
	l->st = st;
	l->partial = partial;
	l->fd = fd;
	l->own = true;
	l->up = up;
	l->rel = rel;
	snprintf(l->name, sizeof(l->name), "%s", name);
	s->n++;
	return 0;
}

/* The block device rdev under layer up, opened by its kernel name. */
static int add_blk(struct walk *w, int up, enum rel rel, dev_t rdev,
		   bool partial)
{
	struct io_ident want = {.blk = true, .rdev = rdev};
	char ue[1024], name[LAYER_NAME], *p;
	struct layer *old;

	want.diskseq = disk_seq(rdev);
	old = find(w->s, &want);
	if (old) {
		/* reached twice (a dm device on a partition and on its disk):
		 * one layer, whole if either way is; a claim keeps the way it
		 * was first opened */
		old->partial = old->partial && partial;
		return 0;
	}
	if (w->s->n == STACK_MAX || sys_attr(rdev, "uevent", ue, sizeof(ue)))
		return 1;
	p = strstr(ue, "DEVNAME=");
	if (!p || (p != ue && p[-1] != '\n'))
		return 1;
	p += 8;
	p[strcspn(p, "\n")] = 0;
	if (!*p || strstr(p, ".."))
		return 1;
	snprintf(name, sizeof(name), "/dev/%s", p);
	return add_open(w, up, rel, partial, name, &want,
			w->claim && !partial ? O_EXCL : 0);
}

/* The backing file of the loop device that layer up is. */
static int add_backing(struct walk *w, int up, const char *path)
{
	struct layer *u = &w->s->l[up], *old, *l;
	struct loop_info64 li;
	struct io_ident want;
	struct stat st;
	size_t n = strlen(path);
	const char *del = " (deleted)";
	int r;

	if (n >= strlen(del) && !strcmp(path + n - strlen(del), del))
		return 1;
	if (stat(path, &st) < 0 || ident_of(&st, &want) < 0)
		return 1;
	old = find(w->s, &want);
	if (old) {
		old->partial = old->partial && u->partial;
		return 0;
	}
	if (w->s->n == STACK_MAX)
		return 1;
	r = add_open(w, up, REL_BACKING, u->partial, path, &want,
		     want.blk && w->claim && !u->partial ? O_EXCL : 0);
	if (r)
		return r;
	/* the loop's own word on which inode it reads (rule 2) */
	l = &w->s->l[w->s->n - 1];
	if (u->fd >= 0 && ioctl(u->fd, LOOP_GET_STATUS64, &li) == 0 &&
	    ((dev_t)li.lo_device != l->st.st_dev ||
	     (ino_t)li.lo_inode != l->st.st_ino)) {
		close(l->fd);
		w->s->n--;
		return 1;
	}
	return 0;
}

/* The layers under layer i, a block device. */
static int expand(struct walk *w, int i)
{
	dev_t rdev = w->s->l[i].id.rdev, lower;
	char buf[4096], path[160];
	struct dirent *e;
	DIR *d;
	int r = 0;

	/* a partition: its disk */
	if (sys_attr(rdev, "partition", buf, sizeof(buf)) == 0 &&
	    sys_attr(rdev, "../dev", buf, sizeof(buf)) == 0 &&
	    parse_devt(buf, &lower) == 0) {
		r = add_blk(w, i, REL_DISK, lower, true);
		if (r < 0)
			return r;
	}
	/* device-mapper, md: the devices under it */
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/slaves",
		 major(rdev), minor(rdev));
	d = opendir(path);
	while (d && (e = readdir(d))) {
		char dev[160];

		if (e->d_name[0] == '.')
			continue;
		snprintf(dev, sizeof(dev), "/sys/class/block/%.64s/dev",
			 e->d_name);
		if (read_small(dev, buf, sizeof(buf)) == 0 &&
		    parse_devt(buf, &lower) == 0) {
			r = add_blk(w, i, REL_UNDER, lower, true);
			if (r < 0)
				break;
		}
	}
	if (d)
		closedir(d);
	if (r < 0)
		return r;
	/* a loop device: its backing file or device */
	if (sys_attr(rdev, "loop/backing_file", buf, sizeof(buf)) == 0 &&
	    buf[0] == '/') {
		r = add_backing(w, i, buf);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The stack under fd (the top, borrowed), named name.  Returns 0 or
 * -EBUSY (claim: an O_EXCL open failed; why says who). */
static int walk(int fd, const char *name, struct walk *w)
{
	struct stack *s = w->s;
	struct layer *top = &s->l[0];
	int r;

	s->n = 0;
	memset(top, 0, sizeof(*top));
	if (fstat(fd, &top->st) < 0)
		return -errno;
	r = ident_of(&top->st, &top->id);
	if (r < 0)
		return r;
	top->fd = fd;
	top->up = -1;
	snprintf(top->name, sizeof(top->name), "%s", name);
	s->n = 1;
	for (size_t i = 0; i < s->n; i++) {
		if (!s->l[i].id.blk)
			continue;
		r = expand(w, (int)i);
		if (r < 0) {
			stack_free(s);
			return r;
		}
	}
	return 0;
}

static const char *rel_name(enum rel r)
{
	switch (r) {
	case REL_DISK:
		return "the disk of";
	case REL_UNDER:
		return "a device under";
	case REL_BACKING:
		return "the backing file of";
	case REL_TOP:
		break;
	}
	return "";
}

/* ", through NAME (the backing file of UP)" for a layer under the top. */
static void through(const struct stack *s, const struct layer *l, char *buf,
		    size_t len)
{
	if (l->up < 0)
		buf[0] = 0;
	else
		snprintf(buf, len, ", through %s (%s %s)", l->name,
			 rel_name(l->rel), s->l[l->up].name);
}

/* ---- claims ---- */

int io_fd_reopen_excl(int fd, int *out, char *why, size_t whylen)
{
	char path[64];
	struct stat st, nst;
	int flags, nfd;

	if (fstat(fd, &st) < 0 || (flags = fcntl(fd, F_GETFL)) < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -errno;
	}
	if (!S_ISBLK(st.st_mode)) {
		snprintf(why, whylen, "not a block device");
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	nfd = open(path, (flags & (O_ACCMODE | O_DIRECT)) | O_EXCL |
				 O_CLOEXEC | O_NOCTTY);
	if (nfd < 0 && errno == EBUSY) {
		describe_excl(&st, why, whylen);
		return -EBUSY;
	}
	if (nfd < 0) {
		int e = errno;

		snprintf(why, whylen, "opening it exclusively: %s%s",
			 strerror(e),
			 e == ENOENT ? " (is /proc mounted?)" : "");
		return -e;
	}
	if (fstat(nfd, &nst) < 0 || !S_ISBLK(nst.st_mode) ||
	    nst.st_rdev != st.st_rdev) {
		close(nfd);
		snprintf(why, whylen, "/proc/self/fd gave another file");
		return -EIO;
	}
	*out = nfd;
	return 0;
}

int io_claim(int fd, const char *name, struct io_claim **out, int *newfd,
	     char *why, size_t whylen)
{
	struct io_claim *c = calloc(1, sizeof(*c));
	struct walk w = {.s = c ? &c->s : NULL, .claim = true,
			 .why = why, .whylen = whylen};
	struct stat st;
	int top = fd, r;

	why[0] = 0;
	if (!c) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, whylen, "%s", strerror(-r));
		goto out_free;
	}
	if (S_ISBLK(st.st_mode)) {
		r = io_fd_reopen_excl(fd, &top, why, whylen);
		if (r < 0)
			goto out_free;
	}
	r = walk(top, name, &w);
	if (r < 0) {
		if (!why[0])
			snprintf(why, whylen, "%s", strerror(-r));
		goto out_top;
	}
	for (size_t i = 0; i < c->s.n; i++) {
		struct layer *l = &c->s.l[i];
		char who[LAYER_NAME / 2], via[LAYER_NAME * 2];
		pid_t pid;

		if (flock(l->fd, (l->partial ? LOCK_SH : LOCK_EX) | LOCK_NB) ==
		    0)
			continue;
		if (errno != EWOULDBLOCK) {
			r = -errno;
			snprintf(why, whylen, "lock %s: %s", l->name,
				 strerror(-r));
			goto out_stack;
		}
		pid = io_lock_holder(l->st.st_dev, l->st.st_ino);
		if (pid > 0)
			describe_pid(pid, who, sizeof(who));
		else
			snprintf(who, sizeof(who), "another process");
		through(&c->s, l, via, sizeof(via));
		snprintf(why, whylen, "%s%s", who, via);
		r = -EBUSY;
		goto out_stack;
	}
	/* the caller owns the top; the claim holds the rest */
	c->s.l[0].fd = -1;
	*out = c;
	*newfd = top;
	return 0;
out_stack:
	c->s.l[0].fd = -1;
	stack_free(&c->s);
out_top:
	if (top != fd)
		close(top);
out_free:
	free(c);
	return r;
}

void io_claim_release(struct io_claim *c)
{
	if (!c)
		return;
	stack_free(&c->s);
	free(c);
}

/* ---- sharing storage ---- */

/* "NAME, the backing file of UP", UP being top when it is the top, and
 * "(below TOP)" added when the layer lies further down. */
static void chain(const struct stack *s, size_t i, const char *top, char *buf,
		  size_t len)
{
	const struct layer *l = &s->l[i];

	if (l->up == 0)
		snprintf(buf, len, "%s, %s %s", l->name, rel_name(l->rel),
			 top);
	else
		snprintf(buf, len, "%s, %s %s (below %s)", l->name,
			 rel_name(l->rel), s->l[l->up].name, top);
}

/* The path fd was opened with, for messages. */
static void fd_name(int fd, char *buf, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, len - 1);
	buf[n > 0 ? n : 0] = 0;
}

int io_fd_overlap(int pool_fd, int other_fd, char *how, size_t howlen)
{
	struct stack *a = calloc(2, sizeof(*a)), *b = a + 1;
	struct walk wa = {.s = a}, wb = {.s = b};
	char buf[LAYER_NAME * 3], pname[LAYER_NAME], oname[LAYER_NAME];
	char ptop[LAYER_NAME + 16];
	int r = 0;

	if (!a)
		return -ENOMEM;
	fd_name(pool_fd, pname, sizeof(pname));
	fd_name(other_fd, oname, sizeof(oname));
	snprintf(ptop, sizeof(ptop), "the pool %s", pname);
	if (walk(pool_fd, pname, &wa) < 0 || walk(other_fd, oname, &wb) < 0)
		goto out;
	for (size_t i = 0; i < a->n && !r; i++) {
		for (size_t j = 0; j < b->n && !r; j++) {
			if (!io_ident_equal(&a->l[i].id, &b->l[j].id) ||
			    (a->l[i].partial && b->l[j].partial))
				continue;
			r = 1;
			if (!i && !j) {
				snprintf(how, howlen, "it is the pool itself");
			} else if (!j) {
				chain(a, i, ptop, buf, sizeof(buf));
				snprintf(how, howlen, "it is %s", buf);
			} else if (!i) {
				chain(b, j, oname, buf, sizeof(buf));
				snprintf(how, howlen, "the pool is %s", buf);
			} else {
				snprintf(how, howlen,
					 "both it and the pool are on %s",
					 a->l[i].name);
			}
		}
	}
out:
	stack_free(a);
	stack_free(b);
	free(a);
	return r;
}
