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
 * Above the top lie the loop devices that read it (and loops over those):
 * writing through one of them writes the top too.
 *
 * Rules:
 *
 *  1. Two descriptors share storage when their stacks hold the same layer
 *     (a file: its device and inode; a block device: its number) and at
 *     least one of them holds it whole.  So a partition and its disk
 *     share, a loop device and its backing file share, and two
 *     partitions of one disk (or of one loop device) do not.
 *  2. The walk reads sysfs (/sys/dev/block/MAJ:MIN) and opens every lower
 *     layer to check that it is what sysfs says.  A loop device's backing
 *     file or device is the one LOOP_GET_STATUS64 names, by device and
 *     inode (a device: by number): the name sysfs shows (backing_file)
 *     only helps to open it, and a file there that is not that inode is
 *     not taken.  A backing file that cannot be opened by that name (its
 *     name was removed and it lives on under another one, or it is outside
 *     our mount namespace) is still a layer, known by its identity alone
 *     (fd -1): it counts for rule 1.  Other layers that cannot be reached
 *     (no permission) end their branch: the answer is then "as far as can
 *     be seen".  overlayfs reports a device of its own for the files of
 *     its layers: io_fd_overlap also looks up, in /proc/self/mountinfo,
 *     the layers of an overlay mount a descriptor is on, and compares the
 *     file at the same path in each (overlay_shows).
 *  3. Claiming a pool's storage holds every layer of its stack while the
 *     pool is open.  A whole block device is opened O_EXCL, so that the
 *     kernel refuses every other exclusive opener (a mount, md or dm, a
 *     partition of it or its disk, mkfs, another pool); every layer is
 *     also flock'ed, which names the holder in /proc/locks: a whole layer
 *     LOCK_EX, a partial one LOCK_SH.  So a second pool on the same file
 *     through a loop device (or on the loop device through the file)
 *     finds the first one's lock, while pools on two partitions of one
 *     loop device coexist and exclude a pool on the whole backing file.
 *     A layer known by identity alone cannot be locked: the claim is
 *     refused while any process holds a conflicting lock on its inode in
 *     /proc/locks (every thinvol process that opened it by some name
 *     holds one).
 *  4. The top of a claim is the pool's own descriptor, reopened O_EXCL
 *     through /proc/self/fd when it is a block device (the same device,
 *     the same access mode); the caller uses that descriptor from then
 *     on.  A claim that fails holds nothing.
 *  5. Looking up.  A loop device holds nothing of what it reads (no lock,
 *     no exclusive open, an empty holders directory), so a claim also
 *     holds, O_EXCL and LOCK_EX, every bound loop device whose backing
 *     file or device (by identity, rule 2) is a layer the claim holds
 *     whole, and every loop device over those.  One that is mounted,
 *     under dm or md, a pool's, or whose partition is in use, makes the
 *     claim fail (-EBUSY, named).  So nothing is formatted, served or
 *     exported into while a filesystem is mounted from a loop device over
 *     it, and a pool file and a loop device over it exclude each other in
 *     either order whatever the file's names.  The claim looks up only
 *     after the layers below are locked: a loop device attached later and
 *     claimed by another process then finds those locks (rule 3), even
 *     when its backing file has no name.
 *  6. Locks are advisory and O_EXCL binds only exclusive openers: a
 *     process that opens the device plainly and writes is not stopped.
 *     Every thinvol process claims, so no two of them share a pool.
 *  7. An export's target is claimed the same way (io_fd_claim_target), but
 *     its top is locked through a description of the claim's own: the
 *     descriptor belongs to a client, whose file description must not
 *     keep a lock after the export.
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
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define STACK_MAX  32  /* layers of one stack, below and above the top */
#define LAYER_NAME 512 /* bytes of a layer's name, for messages */

/* What a layer is to the layer it was reached from. */
enum rel {
	REL_TOP,
	REL_DISK,    /* the whole disk of a partition */
	REL_UNDER,   /* a device under a device-mapper or md device */
	REL_BACKING, /* the backing file or device of a loop device */
	REL_OVER,    /* a loop device reading it (rule 5) */
};

struct layer {
	struct io_ident id;
	struct stat st; /* of what we opened: a device node for a device */
	bool partial;	/* only part of it is under the top (rule 1) */
	int fd;		/* -1: not open (known by identity alone, rule 2) */
	bool own;	/* fd was opened by the walk */
	int up;		/* the layer it was reached from; -1 for the top */
	enum rel rel;
	char name[LAYER_NAME];
};

struct stack {
	size_t n;
	struct layer l[STACK_MAX];
};

struct io_claim {
	struct stack s;
	int top_lock; /* a target's own description of the top (rule 7) */
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

/*
 * A device number as the kernel hands it out in a 64-bit field
 * (huge_encode_dev: minor bits 0-7, major bits 8-19, minor bits 20-31),
 * which is not glibc's dev_t layout.
 */
static dev_t kdev_decode(uint64_t v)
{
	return makedev((unsigned int) ((v >> 8) & 0xfff),
		       (unsigned int) ((v & 0xff) | ((v >> 12) & 0xfff00)));
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

/* "/dev/NAME" of the block device rdev, from its uevent. */
static int dev_name(dev_t rdev, char *buf, size_t len)
{
	char ue[1024], *p;

	if (sys_attr(rdev, "uevent", ue, sizeof(ue)))
		return -ENOENT;
	p = strstr(ue, "DEVNAME=");
	if (!p || (p != ue && p[-1] != '\n'))
		return -ENOENT;
	p += 8;
	p[strcspn(p, "\n")] = 0;
	if (!*p || strstr(p, ".."))
		return -ENOENT;
	snprintf(buf, len, "/dev/%s", p);
	return 0;
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

/* What the loop device open on fd reads, by the kernel's word (rule 2):
 * a file's device and inode, or a block device's number. */
static int loop_backing(int fd, struct io_ident *out)
{
	struct loop_info64 li;

	if (ioctl(fd, LOOP_GET_STATUS64, &li) < 0)
		return -errno;
	memset(out, 0, sizeof(*out));
	if (li.lo_rdevice) {
		out->blk = true;
		out->rdev = kdev_decode(li.lo_rdevice);
		out->diskseq = disk_seq(out->rdev);
	} else {
		out->dev = kdev_decode(li.lo_device);
		out->ino = (ino_t) li.lo_inode;
	}
	return 0;
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

/*
 * A process holding a lock on the inode (dev, ino) in /proc/locks (a
 * flock, a POSIX or an OFD lock); with write_only, only an exclusive one
 * counts.  0 when none is found.
 */
static pid_t lock_holder(dev_t dev, ino_t ino, bool write_only)
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
		char type[16];
		long p;

		if (strstr(line, "->") ||
		    sscanf(line, "%*s %*s %*s %15s %ld %x:%x:%llu", type, &p,
			   &maj, &min, &i) != 5)
			continue;
		if (write_only && strcmp(type, "WRITE"))
			continue;
		if (p > 0 && makedev(maj, min) == dev &&
		    i == (unsigned long long) ino)
			pid = (pid_t) p;
	}
	fclose(f);
	return pid;
}

pid_t io_lock_holder(dev_t dev, ino_t ino)
{
	return lock_holder(dev, ino, false);
}

/* "process 123 (thinvol)" */
static void describe_pid(pid_t pid, char *buf, size_t len)
{
	char path[64], comm[64] = "";

	snprintf(path, sizeof(path), "/proc/%ld/comm", (long) pid);
	if (read_small(path, comm, sizeof(comm)) < 0)
		comm[0] = 0;
	snprintf(buf, len, "process %ld (%s)", (long) pid,
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

/* A partition of the disk rdev that is mounted: "NAME mounted at DIR". */
static bool part_mounted(dev_t rdev, char *buf, size_t len)
{
	char path[160], dev[400], num[32], at[LAYER_NAME / 2];
	struct dirent *e;
	bool found = false;
	dev_t part;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(rdev),
		 minor(rdev));
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(dev, sizeof(dev), "%s/%.200s/partition", path,
			 e->d_name);
		if (read_small(dev, num, sizeof(num)) < 0)
			continue;
		snprintf(dev, sizeof(dev), "%s/%.200s/dev", path, e->d_name);
		if (read_small(dev, num, sizeof(num)) < 0 ||
		    parse_devt(num, &part) < 0 ||
		    !mounted_at(part, at, sizeof(at)))
			continue;
		snprintf(buf, len, "%.64s mounted at %s", e->d_name, at);
		found = true;
	}
	closedir(d);
	return found;
}

/* Who has the block device rdev (its node: dev, ino) claimed, as far as
 * can be told: an O_EXCL open of it failed with EBUSY. */
static void describe_busy(dev_t dev, ino_t ino, dev_t rdev, char *buf,
			  size_t len)
{
	char what[LAYER_NAME];
	pid_t pid = io_lock_holder(dev, ino);

	if (pid > 0)
		describe_pid(pid, buf, len);
	else if (mounted_at(rdev, what, sizeof(what)))
		snprintf(buf, len, "a filesystem mounted at %s", what);
	else if (sys_holder(rdev, what, sizeof(what)))
		snprintf(buf, len, "the device %s built on it", what);
	else if (part_mounted(rdev, what, sizeof(what)))
		snprintf(buf, len, "a filesystem on its partition %s", what);
	else
		snprintf(buf, len,
			 "another exclusive user (a mount, a RAID or "
			 "device-mapper device, a pool, or a partition of it "
			 "or its disk)");
}

static void describe_excl(const struct stat *st, char *buf, size_t len)
{
	describe_busy(st->st_dev, st->st_ino, st->st_rdev, buf, len);
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

static const char *rel_name(enum rel r)
{
	switch (r) {
	case REL_DISK:
		return "the disk of";
	case REL_UNDER:
		return "a device under";
	case REL_BACKING:
		return "the backing file of";
	case REL_OVER:
		return "a loop device over";
	case REL_TOP:
		break;
	}
	return "";
}

/* ", through NAME (the backing file of UP)" for a layer that is not the
 * top. */
static void through(const struct stack *s, const struct layer *l, char *buf,
		    size_t len)
{
	if (l->up < 0)
		buf[0] = 0;
	else
		snprintf(buf, len, ", through %s (%s %s)", l->name,
			 rel_name(l->rel), s->l[l->up].name);
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
		snprintf(w->why, w->whylen, "%s, through %s (%s %s)", who, name,
			 rel_name(rel), s->l[up].name);
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

/* The block device rdev, reached from layer up, opened by its kernel
 * name. */
static int add_blk(struct walk *w, int up, enum rel rel, dev_t rdev,
		   bool partial)
{
	struct io_ident want = {.blk = true, .rdev = rdev};
	char name[LAYER_NAME];
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
	if (w->s->n == STACK_MAX || dev_name(rdev, name, sizeof(name)) < 0)
		return 1;
	return add_open(w, up, rel, partial, name, &want,
			w->claim && !partial ? O_EXCL : 0);
}

/* A backing file known by its identity alone (rule 2), named as sysfs
 * names it ("... (deleted)"). */
static int add_nameless(struct walk *w, int up, const char *path,
			const struct io_ident *want)
{
	struct layer *l = &w->s->l[w->s->n];

	memset(l, 0, sizeof(*l));
	l->id = *want;
	l->st.st_mode = S_IFREG;
	l->st.st_dev = want->dev;
	l->st.st_ino = want->ino;
	l->partial = w->s->l[up].partial;
	l->fd = -1;
	l->up = up;
	l->rel = REL_BACKING;
	snprintf(l->name, sizeof(l->name), "%s", path);
	w->s->n++;
	return 0;
}

/* The backing file or device of the loop device that layer up is; path
 * is what sysfs calls it (rule 2). */
static int add_backing(struct walk *w, int up, const char *path)
{
	static const char del[] = " (deleted)";
	struct layer *u = &w->s->l[up], *old;
	size_t n = strlen(path), dl = sizeof(del) - 1;
	char name[LAYER_NAME];
	struct io_ident want;
	struct stat st;
	int r;

	if (u->fd < 0 || loop_backing(u->fd, &want) < 0) {
		/* the loop device will not say: its name, as far as it goes */
		if (path[0] != '/' || stat(path, &st) < 0 ||
		    ident_of(&st, &want) < 0)
			return 1;
	}
	if (want.blk)
		return add_blk(w, up, REL_BACKING, want.rdev, u->partial);
	old = find(w->s, &want);
	if (old) {
		old->partial = old->partial && u->partial;
		return 0;
	}
	if (w->s->n == STACK_MAX)
		return 1;
	/* by the name sysfs shows, and by that name without the " (deleted)"
	 * the kernel adds to a removed one (a file may be called that):
	 * add_open takes only the very inode */
	if (path[0] == '/') {
		r = add_open(w, up, REL_BACKING, u->partial, path, &want, 0);
		if (r != 1)
			return r;
		if (n > dl && !strcmp(path + n - dl, del)) {
			snprintf(name, sizeof(name), "%.*s", (int) (n - dl),
				 path);
			r = add_open(w, up, REL_BACKING, u->partial, name,
				     &want, 0);
			if (r != 1)
				return r;
		}
	}
	return add_nameless(w, up, path, &want);
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
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/slaves", major(rdev),
		 minor(rdev));
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
	if (sys_attr(rdev, "loop/backing_file", buf, sizeof(buf)) == 0) {
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
		if (!s->l[i].id.blk || s->l[i].fd < 0)
			continue;
		r = expand(w, (int) i);
		if (r < 0) {
			stack_free(s);
			return r;
		}
	}
	return 0;
}

/* ---- looking up (rule 5) ---- */

/*
 * What the bound loop device rdev reads (*back), by LOOP_GET_STATUS64 on
 * its node; where we may not open it, by the name sysfs gives its backing
 * file (bf), as far as that goes.  -errno when it cannot be told.
 */
static int loop_of(dev_t rdev, const char *bf, struct io_ident *back)
{
	char name[LAYER_NAME];
	struct stat st;
	int fd, r = -ENOENT;

	if (dev_name(rdev, name, sizeof(name)) == 0) {
		fd = open(name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
		if (fd >= 0) {
			r = fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) &&
				    st.st_rdev == rdev
				? loop_backing(fd, back)
				: -ENOENT;
			close(fd);
			if (r == 0)
				return 0;
		}
	}
	if (bf[0] != '/' || stat(bf, &st) < 0)
		return r;
	return ident_of(&st, back);
}

/* Hold the loop device rdev, which reads layer i (rule 5).  0, or -EBUSY
 * with who in why. */
static int add_over(struct walk *w, int i, dev_t rdev)
{
	char name[LAYER_NAME], who[LAYER_NAME];
	struct stat st;
	int r;

	if (w->s->n == STACK_MAX) {
		snprintf(w->why, w->whylen,
			 "more than %d devices are stacked on %s: cannot hold "
			 "them all",
			 STACK_MAX, w->s->l[i].name);
		return -EBUSY;
	}
	r = add_blk(w, i, REL_OVER, rdev, false);
	if (r != 1)
		return r;
	/* we may not open it: refuse at least while it is in use */
	if (dev_name(rdev, name, sizeof(name)) < 0)
		snprintf(name, sizeof(name), "block device %u:%u", major(rdev),
			 minor(rdev));
	memset(&st, 0, sizeof(st));
	if (stat(name, &st) < 0 || st.st_rdev != rdev)
		memset(&st, 0, sizeof(st));
	describe_busy(st.st_dev, st.st_ino, rdev, who, sizeof(who));
	if (!strncmp(who, "another exclusive user", 22))
		return 0; /* nothing seen: as far as can be seen, unused */
	snprintf(w->why, w->whylen, "%s, through %s (%s %s)", who, name,
		 rel_name(REL_OVER), w->s->l[i].name);
	return -EBUSY;
}

/* Every bound loop device that reads layer i and is not in the stack. */
static int add_loops_over(struct walk *w, int i)
{
	struct dirent *e;
	int r = 0;
	DIR *d;

	d = opendir("/sys/block");
	if (!d)
		return 0;
	while (r >= 0 && (e = readdir(d))) {
		char path[300], buf[32], bf[LAYER_NAME];
		struct io_ident id = {.blk = true}, back;

		if (e->d_name[0] == '.')
			continue;
		/* only a bound loop device has loop/ */
		snprintf(path, sizeof(path),
			 "/sys/block/%.200s/loop/backing_file", e->d_name);
		if (read_small(path, bf, sizeof(bf)) < 0)
			continue;
		snprintf(path, sizeof(path), "/sys/block/%.200s/dev",
			 e->d_name);
		if (read_small(path, buf, sizeof(buf)) < 0 ||
		    parse_devt(buf, &id.rdev) < 0)
			continue;
		id.diskseq = disk_seq(id.rdev);
		if (find(w->s, &id) || loop_of(id.rdev, bf, &back) < 0 ||
		    !io_ident_equal(&back, &w->s->l[i].id))
			continue;
		r = add_over(w, i, id.rdev);
	}
	closedir(d);
	return r;
}

/* ---- claims ---- */

static int reopen_excl(int fd, int *out, char *why, size_t whylen)
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
	nfd = open(path, (flags & (O_ACCMODE | O_DIRECT)) | O_EXCL | O_CLOEXEC |
			     O_NOCTTY);
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

/* flock layer l of s (rule 3); 0, or -EBUSY/-errno with why set. */
static int lock_layer(const struct stack *s, const struct layer *l, int fd,
		      char *why, size_t whylen)
{
	char who[LAYER_NAME / 2], via[LAYER_NAME * 2];
	pid_t pid;

	if (fd < 0) {
		/* known by identity alone: nobody may hold what we would */
		pid = lock_holder(l->id.dev, l->id.ino, l->partial);
		if (!pid)
			return 0;
	} else if (flock(fd, (l->partial ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0) {
		return 0;
	} else if (errno != EWOULDBLOCK) {
		int e = errno;

		snprintf(why, whylen, "lock %s: %s", l->name, strerror(e));
		return -e;
	} else {
		pid = io_lock_holder(l->st.st_dev, l->st.st_ino);
	}
	if (pid > 0)
		describe_pid(pid, who, sizeof(who));
	else
		snprintf(who, sizeof(who), "another process");
	through(s, l, via, sizeof(via));
	snprintf(why, whylen, "%s%s", who, via);
	return -EBUSY;
}

/*
 * Claim the storage open on fd (rules 3-5, and 7 when target): walk
 * down, lock what is below, then look up and hold the loop devices over
 * it.
 */
static int claim(int fd, const char *name, bool target, struct io_claim **out,
		 int *newfd, char *why, size_t whylen)
{
	struct io_claim *c = calloc(1, sizeof(*c));
	struct walk w = {
	    .s = c ? &c->s : NULL, .claim = true, .why = why, .whylen = whylen};
	struct stat st;
	size_t below;
	int top = fd, r;

	why[0] = 0;
	if (!c) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	c->top_lock = -1;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, whylen, "%s", strerror(-r));
		goto out_free;
	}
	if (S_ISBLK(st.st_mode)) {
		r = reopen_excl(fd, &top, why, whylen);
		if (r < 0)
			goto out_free;
	} else if (target) {
		/* rule 7: the lock on a description of our own */
		char path[64];
		int fl = fcntl(fd, F_GETFL);

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		c->top_lock = open(
		    path, (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY ? O_WRONLY
								   : O_RDONLY) |
			      O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	}
	r = walk(top, name, &w);
	if (r < 0) {
		if (!why[0])
			snprintf(why, whylen, "%s", strerror(-r));
		goto out_top;
	}
	for (size_t i = 0; i < c->s.n; i++) {
		int lfd = c->s.l[i].fd;

		if (!i && c->top_lock >= 0)
			lfd = c->top_lock;
		else if (!i && target && top == fd)
			continue; /* no description of our own: cannot lock */
		r = lock_layer(&c->s, &c->s.l[i], lfd, why, whylen);
		if (r < 0)
			goto out_stack;
	}
	/* rule 5: up from every layer held whole, below locked first */
	below = c->s.n;
	for (size_t i = 0; i < c->s.n; i++) {
		if (c->s.l[i].partial)
			continue;
		r = add_loops_over(&w, (int) i);
		if (r < 0)
			goto out_stack;
	}
	for (size_t i = below; i < c->s.n; i++) {
		r = lock_layer(&c->s, &c->s.l[i], c->s.l[i].fd, why, whylen);
		if (r < 0)
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
	if (c->top_lock >= 0)
		close(c->top_lock);
out_free:
	free(c);
	return r;
}

int io_claim(int fd, const char *name, struct io_claim **out, int *newfd,
	     char *why, size_t whylen)
{
	return claim(fd, name, false, out, newfd, why, whylen);
}

int io_fd_claim_target(int fd, const char *name, struct io_claim **out,
		       int *newfd, char *why, size_t whylen)
{
	return claim(fd, name, true, out, newfd, why, whylen);
}

void io_claim_release(struct io_claim *c)
{
	if (!c)
		return;
	stack_free(&c->s);
	if (c->top_lock >= 0)
		close(c->top_lock);
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
		snprintf(buf, len, "%s, %s %s", l->name, rel_name(l->rel), top);
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

/* mountinfo's octal escapes (\040 for a space) undone in place */
static void unescape_mountinfo(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*d++ = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				       (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = 0;
}

/*
 * Whether fd is a file of an overlayfs mount that shows the file st (by
 * device and inode) of one of its layers: overlayfs reports a device of
 * its own, so io_fd_overlap's identities do not meet (rule 2).  The
 * layers are those /proc/self/mountinfo lists for the mount fd is on
 * (lowerdir, upperdir), the file the one at fd's path below the mount
 * point in each.  1 (what set, naming the mount), or 0.
 */
static int overlay_shows(int fd, const struct stat *st, char *what,
			 size_t whatlen)
{
	char path[PATH_MAX + 1], link[64], best[PATH_MAX + 1] = "";
	char opts[PATH_MAX * 2] = "", *line = NULL, *osave = NULL;
	size_t cap = 0, blen = 0;
	struct statfs sf;
	ssize_t n;
	int found = 0;
	FILE *f;

	if (fstatfs(fd, &sf) < 0 || sf.f_type != 0x794c7630 /* overlayfs */)
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0 || path[0] != '/')
		return 0;
	path[n] = 0;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	/* the overlay mount whose point is the longest prefix of path */
	while (getline(&line, &cap, f) > 0) {
		char mnt[PATH_MAX + 1], type[64], sopts[PATH_MAX * 2];
		size_t ml;

		if (sscanf(line,
			   "%*s %*s %*s %*s %4096s %*[^-]- %63s %*s %8191s",
			   mnt, type, sopts) != 3 ||
		    strcmp(type, "overlay"))
			continue;
		unescape_mountinfo(mnt);
		ml = strlen(mnt);
		if (ml == 1)
			ml = 0; /* "/" */
		if (strncmp(path, mnt, ml) || (path[ml] && path[ml] != '/') ||
		    (blen && ml <= blen))
			continue;
		snprintf(best, sizeof(best), "%s", mnt);
		snprintf(opts, sizeof(opts), "%s", sopts);
		blen = ml ? ml : 1;
	}
	free(line);
	fclose(f);
	if (!best[0])
		return 0;
	/* each layer of lowerdir=a:b and upperdir=c, with path's rest */
	for (char *o = strtok_r(opts, ",", &osave); o && !found;
	     o = strtok_r(NULL, ",", &osave)) {
		char *dirs = NULL, *save = NULL;

		if (!strncmp(o, "lowerdir=", 9))
			dirs = o + 9;
		else if (!strncmp(o, "upperdir=", 9))
			dirs = o + 9;
		if (!dirs)
			continue;
		unescape_mountinfo(dirs);
		for (char *d = strtok_r(dirs, ":", &save); d && !found;
		     d = strtok_r(NULL, ":", &save)) {
			char p[PATH_MAX * 2 + 2];
			struct stat ls;

			snprintf(p, sizeof(p), "%s%s", d,
				 path + (strcmp(best, "/") ? strlen(best) : 0));
			if (stat(p, &ls) == 0 && ls.st_dev == st->st_dev &&
			    ls.st_ino == st->st_ino) {
				snprintf(what, whatlen,
					 "%.400s seen through the overlayfs at "
					 "%.400s",
					 p, best);
				found = 1;
			}
		}
	}
	return found;
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
	/* overlayfs hides its layers' identities (rule 2) */
	if (!r) {
		struct stat pst, ost;
		char what[LAYER_NAME * 2];

		if (fstat(pool_fd, &pst) == 0 &&
		    overlay_shows(other_fd, &pst, what, sizeof(what))) {
			snprintf(how, howlen, "it is the pool itself (%s)",
				 what);
			r = 1;
		} else if (fstat(other_fd, &ost) == 0 &&
			   overlay_shows(pool_fd, &ost, what, sizeof(what))) {
			snprintf(how, howlen, "the pool is it (%s)", what);
			r = 1;
		}
	}
out:
	stack_free(a);
	stack_free(b);
	free(a);
	return r;
}
