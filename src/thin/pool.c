/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * pool.c - a pool's life: creating it, opening it (with the one place it
 * meets the I/O path, pool_attach_io, and the descriptions of its
 * tables) and closing it; the background committer; info, probe and
 * reopen, resize, and check.  Commits, syncs and the read-only state are
 * pool-commit.c's; the room a change needs and reclaim, pool-space.c's.
 *
 * Rule 1 of the pool (pool-space.c has rules 2 and 3, pool-commit.c the
 * rules of syncs):
 *
 *   1. The committer thread wakes every commit_interval_ms: it frees a
 *      bounded part of the deleted volumes' trees (pool-space.c, rule 3),
 *      and if anything changed it commits (so at most one interval of
 *      metadata changes is at risk), then punches holes for blocks that
 *      became free.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pdata/sm.h"
#include "thin/thin-internal.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

#define ENGINE_MAGIC "tvengine"
/* reclaim's counts at a close (pool-space.c, rule 3) */
#define CLOSE_BUDGET (4 * RECLAIM_BUDGET)

const char *tv_pool_state_name(enum tv_pool_state s)
{
	switch (s) {
	case TV_POOL_RW:
		return "rw";
	case TV_POOL_READ_ONLY:
		return "read-only";
	case TV_POOL_NEEDS_CHECK:
		return "needs-check";
	}
	return "unknown";
}

/* ---- claiming the pool's storage ---- */

/*
 * Hold what the pool is on for as long as it is open: its file or device
 * and everything under it (a loop device's backing file, ...), so that no
 * other thinvol process, however it names the pool, opens it meanwhile
 * (io-ident.c, rule 3).  what: "the pool is" or "it is", for the message.
 */
static int claim_dev(struct io_dev *dev, const char *path, const char *what)
{
	char why[640];
	int r = io_file_claim(dev, why, sizeof(why));

	if (r == -EBUSY)
		return tv_err(r, "%s: %s in use by %s", path, what, why);
	if (r < 0)
		return tv_err(r, "%s: %s", path, why);
	return 0;
}

/* ---- create ---- */

#define PROBE_SPAN (1u << 20) /* bytes looked at, at each end */

/* A signature at off from the start (or, with from_end, from the end). */
struct sig {
	uint32_t off;
	bool from_end;
	uint8_t len;
	const char *magic;
	const char *what;
};

/*
 * What pool create knows by sight and overwrites only with --force, first
 * match wins: filesystems and volume formats, images and archives that
 * are files people keep, and partition tables.  FAT and NTFS boot
 * sectors come before the DOS partition table, whose 0x55AA they share.
 */
static const struct sig sigs[] = {
    {32, false, 8, "thinvol", "a thinvol pool"},
    {4096 + 32, false, 8, "thinvol", "a thinvol pool"},
    {1080, false, 2, "\x53\xef", "an ext2/3/4 filesystem"},
    {0, false, 4, "XFSB", "an XFS filesystem"},
    {65600, false, 8, "_BHRfS_M", "a btrfs filesystem"},
    {1024, false, 4, "\x10\x20\xf5\xf2", "an F2FS filesystem"},
    {0, false, 6, "LUKS\xba\xbe", "a LUKS volume"},
    {4086, false, 10, "SWAPSPACE2", "swap space"},
    {512, false, 8, "LABELONE", "an LVM physical volume"},
    {536, false, 8, "LVM2 001", "an LVM physical volume"},
    {4096, false, 4, "\xfc\x4e\x2b\xa9", "a Linux RAID (md) member"},
    {0, false, 4, "\xfc\x4e\x2b\xa9", "a Linux RAID (md) member"},
    {0, false, 4, "QFI\xfb", "a qcow2 image"},
    {0, false, 4, "QED", "a QED image"},
    {0, false, 4, "KDMV", "a VMDK image"},
    {0, false, 21, "# Disk DescriptorFile", "a VMDK descriptor"},
    {0, false, 8, "vhdxfile", "a VHDX image"},
    {64, false, 4, "\x7f\x10\xda\xbe", "a VirtualBox VDI image"},
    {0, false, 8, "conectix", "a VHD image"},
    {512, true, 8, "conectix", "a VHD image"},
    {32769, false, 5, "CD001", "an ISO 9660 image"},
    {0, false, 4, "hsqs", "a squashfs image"},
    {257, false, 5, "ustar", "a tar archive"},
    {0, false, 2, "\x1f\x8b", "a gzip file"},
    {0, false, 6,
     "\xfd"
     "7zXZ\0",
     "an xz file"},
    {0, false, 4, "\x28\xb5\x2f\xfd", "a zstd file"},
    {0, false, 3, "BZh", "a bzip2 file"},
    {0, false, 4, "PK\x03\x04", "a zip archive"},
    {0, false, 4,
     "\x7f"
     "ELF",
     "an ELF executable"},
    {512, false, 8, "EFI PART", "a GPT partition table"},
    {4096, false, 8, "EFI PART", "a GPT partition table"},
    {512, true, 8, "EFI PART", "a GPT partition table (its backup)"},
    {4096, true, 8, "EFI PART", "a GPT partition table (its backup)"},
    {3, false, 8, "NTFS    ", "an NTFS filesystem"},
    {3, false, 8, "EXFAT   ", "an exFAT filesystem"},
    {54, false, 3, "FAT", "a FAT filesystem"},
    {82, false, 5, "FAT32", "a FAT filesystem"},
    {510, false, 2, "\x55\xaa", "a DOS (MBR) partition table"},
};

static bool all_zero(const uint8_t *p, size_t len)
{
	return !len || (!p[0] && !memcmp(p, p + 1, len - 1));
}

/*
 * What the device holds, when it is not empty: the first matching
 * signature's name, or what part of it is not zero.  NULL when its first
 * and last PROBE_SPAN bytes are all zero (or it has no bytes).  -errno
 * through *err when it cannot be read.
 */
static const char *probe(struct io_dev *dev, int *err)
{
	uint64_t size = dev->size;
	size_t head = (size_t) MIN(size, (uint64_t) PROBE_SPAN);
	size_t tail = head;
	uint64_t tail_off = size - tail;
	uint8_t *h = calloc(2, PROBE_SPAN), *t = h + PROBE_SPAN;
	const char *what = NULL;

	*err = 0;
	if (!h) {
		*err = -ENOMEM;
		return NULL;
	}
	if ((*err = io_read(dev, h, head, 0)) < 0 ||
	    (*err = io_read(dev, t, tail, tail_off)) < 0)
		goto out;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]) && !what; i++) {
		const struct sig *g = &sigs[i];

		if (g->from_end) {
			if (g->off <= tail &&
			    !memcmp(t + tail - g->off, g->magic, g->len))
				what = g->what;
		} else if ((size_t) g->off + g->len <= head &&
			   !memcmp(h + g->off, g->magic, g->len)) {
			what = g->what;
		}
	}
	if (!what && !all_zero(h, head))
		what = "data that thinvol does not recognise (its first MiB "
		       "is not all zeroes)";
	else if (!what && !all_zero(t, tail))
		what = "data that thinvol does not recognise (its last MiB "
		       "is not all zeroes)";
out:
	free(h);
	return what;
}

/* fsync the directory holding path: a new file's name is durable. */
static int sync_parent(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd, r = 0;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return r;
}

int pool_format_dev(struct io_dev *dev, const struct tv_pool_create_opts *o)
{
	uint32_t bs = o->block_size ? o->block_size : TV_BLOCK_DEFAULT;
	int32_t blob = o->blob_size < 0 ? TV_BLOB_DEFAULT : o->blob_size;
	struct tm_format_opts fo = {.block_size = bs};
	struct disk_pool_user user;

	if (blob > TV_BLOB_MAX)
		return -EINVAL;
	memset(&user, 0, sizeof(user));
	user.next_id = cpu_to_le64(1);
	user.blob_size = cpu_to_le32((uint32_t) blob);
	memcpy(user.magic, ENGINE_MAGIC, 8);
	fo.user = (const uint8_t *) &user;
	return tm_format(dev, &fo);
}

/*
 * The existing file or device at path, to make a pool of, opened: a
 * symbolic link that another user put in a sticky directory is not
 * followed (io-path.c).
 */
static int open_existing(const char *path, struct io_dev **out)
{
	char why[512];
	int fd, r;

	fd = io_open_user_path(path, O_RDWR | O_CLOEXEC | O_NOCTTY, 0, why,
			       sizeof(why));
	if (fd < 0)
		return tv_err(fd, "%s: %s", path, why);
	r = io_file_open_fd(fd, path, 0, 0, out);
	if (r < 0)
		return tv_err(r, "%s: %s", path, strerror(-r));
	return 0;
}

/*
 * Whether the existing regular file open on dev may become a pool.  A
 * pool holds other people's volumes and its file's owner is trusted as
 * their daemon's (docs/cli.md, "The daemon's sockets"), so the file must
 * be ours (or root's) already, have no other name, and nobody else may
 * write it: whoever can may hold it open already, and would read and
 * write the pool through that descriptor whatever its mode becomes.
 * --force overrides what the file holds, never who may have it.  What
 * group and others may read is taken away: a pool file is mode 0600, as
 * a new one is.
 */
static int check_existing(struct io_dev *dev, const char *path)
{
	int fd = io_dev_fd(dev), r;
	const char *bad = NULL;
	struct stat st;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		return tv_err(r, "%s: %s", path, strerror(-r));
	}
	if (!S_ISREG(st.st_mode))
		return 0;
	if (st.st_uid != geteuid() && st.st_uid != 0)
		bad = "it is another user's file";
	else if (st.st_nlink != 1)
		bad = "it has other hard links, which may be anyone's names "
		      "for it";
	else if (st.st_mode & (S_IWGRP | S_IWOTH))
		bad = "its group or others may write it, and may hold it open "
		      "already";
	if (bad) {
		struct passwd pw, *res = NULL;
		char pwbuf[1024];

		if (getpwuid_r(st.st_uid, &pw, pwbuf, sizeof(pwbuf), &res) != 0)
			res = NULL;
		return tv_err(
		    -EPERM,
		    "%s: %s (owner %s%suid %u%s, mode %04o, %lu "
		    "link%s): refusing to make a pool of it, with "
		    "--force too; remove it, and pool create makes a "
		    "new file of mode 0600",
		    path, bad, res ? res->pw_name : "", res ? " (" : "",
		    (unsigned int) st.st_uid, res ? ")" : "",
		    (unsigned int) (st.st_mode & 07777),
		    (unsigned long) st.st_nlink, st.st_nlink == 1 ? "" : "s");
	}
	if ((st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) < 0) {
		r = -errno;
		return tv_err(r, "%s: chmod: %s", path, strerror(-r));
	}
	return 0;
}

int tv_pool_create(const char *path, const struct tv_pool_create_opts *o)
{
	uint32_t bs = o->block_size ? o->block_size : TV_BLOCK_DEFAULT;
	int32_t blob = o->blob_size < 0 ? TV_BLOB_DEFAULT : o->blob_size;
	struct io_dev *dev = NULL;
	bool created = false;
	const char *what;
	struct stat st;
	int r;

	if (bs < TM_MIN_BLOCK_SIZE || bs > TM_MAX_BLOCK_SIZE || (bs & (bs - 1)))
		return tv_err(-EINVAL,
			      "block size %u: a power of two from "
			      "4K to 1G is needed",
			      bs);
	if (blob > TV_BLOB_MAX)
		return tv_err(-EINVAL, "blob size %d: at most %d bytes", blob,
			      TV_BLOB_MAX);
	if (stat(path, &st) == 0) {
		if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
			return tv_err(-EINVAL,
				      "%s: not a file or block "
				      "device",
				      path);
		r = open_existing(path, &dev);
		if (r < 0)
			return r;
	} else if (errno == ENOENT) {
		if (!o->size)
			return tv_err(-EINVAL,
				      "%s: a size is needed to create "
				      "a new file",
				      path);
		/* O_EXCL: a name that appeared meanwhile, or a symbolic
		 * link to nowhere, is not followed */
		r = io_file_open(path, IO_FILE_CREATE | IO_FILE_EXCL, o->size,
				 &dev);
		if (r == -EEXIST)
			return tv_err(r,
				      "%s: something is in the way (a "
				      "symbolic link to nowhere, or a file "
				      "made meanwhile)",
				      path);
		if (r < 0)
			return tv_err(r, "%s: %s", path, strerror(-r));
		created = true;
	} else {
		return tv_err(-errno, "%s: %s", path, strerror(errno));
	}
	/* claimed before anything is read or changed: nobody else uses it
	 * (a pool served through a loop device over this file, a mount) */
	r = claim_dev(dev, path, "it is");
	if (r < 0)
		goto out;
	if (!created && (r = check_existing(dev, path)) < 0)
		goto out;
	/* what is there, before a file is grown: its old end counts */
	if (!created && !o->force) {
		what = probe(dev, &r);
		if (r < 0) {
			r = tv_err(r, "%s: cannot read it: %s", path,
				   strerror(-r));
			goto out;
		}
		if (what) {
			r = tv_err(-EEXIST,
				   "%s already holds %s; use --force "
				   "to overwrite it",
				   path, what);
			goto out;
		}
	}
	if (!(dev->flags & IO_DEV_BLOCKDEV) && o->size > dev->size) {
		r = io_resize(dev, o->size);
		if (r < 0) {
			r = tv_err(r, "%s: %s", path, strerror(-r));
			goto out;
		}
	}
	r = pool_format_dev(dev, o);
	if (r == -EINVAL)
		r = tv_err(r,
			   "%s: %" PRIu64 " bytes is too small for a pool "
			   "of %u-byte blocks",
			   path, dev->size, bs);
	else if (r < 0)
		r = tv_err(r, "%s: cannot create the pool: %s", path,
			   strerror(-r));
	/* the format flushed the file; a new file's name must last too */
	if (r == 0 && created && (r = sync_parent(path)) < 0)
		r = tv_err(r, "%s: cannot sync the directory holding it: %s",
			   path, strerror(-r));
out:
	io_close(dev);
	if (r < 0 && created)
		unlink(path);
	return r;
}

/* ---- the tables: their value types and infos (pool setup) ---- */

static void maptree_check(void *ctx, const void *value, struct check *ck)
{
	struct tv_pool *p = ctx;
	struct tm_ref r;

	ref_load(&r, value);
	if (r.blocknr)
		check_tree(ck, &p->map, &r);
}

/*
 * A volume record (and a DEFERRED entry) holds one reference to a mapping
 * tree, but the btree is not asked to count it: the tables are never
 * cloned, and the record is rewritten after every change to its mapping
 * tree, which has already moved the reference to the tree's new root
 * (shadowing decrements the old one).  The operations own the reference:
 * snapshot clones, delete moves it to DEFERRED, reclaim deletes the tree.
 * The checker is still told about it.
 */
#define MAPROOT_OFF offsetof(struct disk_volume, map_root)

static void vol_check(void *ctx, const void *value, struct check *ck)
{
	const struct disk_volume *v = value;
	uint32_t nl = le32_to_cpu(v->name_len);

	if (!nl || nl > TV_NAME_MAX || !le64_to_cpu(v->id) ||
	    le64_to_cpu(v->size) % TV_SECTOR)
		check_error(ck, "volume %" PRIu64 ": malformed record",
			    (uint64_t) le64_to_cpu(v->id));
	maptree_check(ctx, (const uint8_t *) value + MAPROOT_OFF, ck);
}

static int map_inc(void *ctx, const void *value)
{
	struct tv_pool *p = ctx;

	return sm_inc_block(tm_sm(p->tm), get_le64(value));
}

static int map_dec(void *ctx, const void *value)
{
	struct tv_pool *p = ctx;

	return sm_dec_block(tm_sm(p->tm), get_le64(value), NULL);
}

static void map_check(void *ctx, const void *value, struct check *ck)
{
	(void) ctx;
	check_data_ref(ck, get_le64(value));
}

/* The trees' descriptions (btree_info) for the pool's store: at open
 * and reopen. */
static void pool_init_infos(struct tv_pool *p)
{
	struct btree_info base = {.tm = p->tm};

	p->blobidx_prefix = MIN(p->blob_size, BLOBIDX_PREFIX_MAX);
	p->blob_chunk = MIN(p->blob_size, BLOB_CHUNK_MAX);

	p->vols = base;
	p->vols.tag = TAG_VOLS;
	p->vols.key_size = 8;
	p->vols.value = (struct btree_vtype){sizeof(struct disk_volume), p,
					     NULL, NULL, vol_check};
	p->names = base;
	p->names.tag = TAG_NAMES;
	p->names.key_size = 16;
	p->blobidx = base;
	p->blobidx.tag = TAG_BLOBIDX;
	p->blobidx.key_size = p->blobidx_prefix + 8;
	p->blobs = base;
	p->blobs.tag = TAG_BLOBS;
	p->blobs.key_size = 10;
	p->blobs.value.size = p->blob_chunk;
	p->deferred = base;
	p->deferred.tag = TAG_DEFERRED;
	p->deferred.key_size = 8;
	p->deferred.value = (struct btree_vtype){sizeof(struct disk_ref), p,
						 NULL, NULL, maptree_check};
	p->map = base;
	p->map.tag = TAG_MAP;
	p->map.key_size = 8;
	p->map.value = (struct btree_vtype){sizeof(struct disk_mapping), p,
					    map_inc, map_dec, map_check};
}

/* The tables tv_pool_check walks from the root slots. */
static int check_roots(struct tv_pool *p, struct check_root *roots,
		       unsigned int *nr)
{
	unsigned int n = 0;

	roots[n++] = (struct check_root){SLOT_VOLS, &p->vols, "volumes"};
	roots[n++] = (struct check_root){SLOT_NAMES, &p->names, "names"};
	if (p->blob_size) {
		roots[n++] = (struct check_root){SLOT_BLOBIDX, &p->blobidx,
						 "blob index"};
		roots[n++] =
		    (struct check_root){SLOT_BLOBS, &p->blobs, "blobs"};
	}
	roots[n++] = (struct check_root){SLOT_DEFERRED, &p->deferred,
					 "deferred deletes"};
	*nr = n;
	return 0;
}

/* ---- open / close ---- */

static void *committer_main(void *arg);

static int pool_open_common(struct tv_pool *p, const char *path,
			    const struct tv_pool_open_opts *o);

/* Free what pool_open_dev set up, once the committer is stopped (or was
 * never started) and meta_lock is free: the I/O state, the store (NULL
 * when it was not opened), the device if the pool owns it, and p. */
static void pool_free(struct tv_pool *p)
{
	p->io->destroy(p);
	tm_close(p->tm);
	if (p->own_dev)
		io_close(p->dev);
	pthread_mutex_destroy(&p->meta_lock);
	pthread_cond_destroy(&p->wake);
	pthread_rwlock_destroy(&p->sync_gate);
	abits_free(&p->chunk_bits);
	free(p);
}

int tv_pool_open(const char *path, const struct tv_pool_open_opts *o,
		 struct tv_pool **out)
{
	bool ro = o && o->read_only;
	struct io_dev *dev;
	int r;

	r = io_file_open(path, ro ? IO_FILE_RDONLY : 0, 0, &dev);
	if (r < 0)
		return tv_err(r, "%s: %s", path, strerror(-r));
	r = claim_dev(dev, path, "the pool is");
	if (r == 0)
		r = pool_open_dev(dev, true, path, o, out);
	else
		io_close(dev);
	return r;
}

/*
 * The one place a pool meets the I/O path above it (vio*.c): its hooks
 * (thin-internal.h), set before anything of the pool is opened.  pool.c
 * and volume.c reach the I/O path through p->io only.
 */
static void pool_attach_io(struct tv_pool *p)
{
	p->io = &vio_pool_hooks;
}

int pool_open_dev(struct io_dev *dev, bool own_dev, const char *name,
		  const struct tv_pool_open_opts *o, struct tv_pool **out)
{
	struct tv_pool *p;
	int r;

	p = calloc(1, sizeof(*p));
	if (!p) {
		if (own_dev)
			io_close(dev);
		return tv_err(-ENOMEM, "out of memory");
	}
	pool_attach_io(p);
	p->dev = dev;
	p->own_dev = own_dev;
	snprintf(p->path, sizeof(p->path), "%s", name);
	pthread_mutex_init(&p->meta_lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	pool_sync_gate_init(p);
	abits_init(&p->chunk_bits);
	p->read_only = p->opened_ro = o && o->read_only;
	p->cache_bytes = o ? o->cache_bytes : 0;
	p->commit_interval_ms =
	    o && o->commit_interval_ms ? o->commit_interval_ms : 1000;
	r = pool_open_common(p, name, o);
	if (r == 0)
		*out = p;
	return r;
}

/* ---- for the daemon (thin-ext.h) ---- */

struct io_dev *pool_dev(struct tv_pool *p)
{
	return p->dev;
}

const char *pool_name(const struct tv_pool *p)
{
	return p->path;
}

uint32_t pool_block_size(const struct tv_pool *p)
{
	return p->block_size;
}

/* Open the store on p->dev into *out and check the engine's header in
 * its user bytes: the first open, and tv_pool_reopen. */
static int open_store(struct tv_pool *p, const char *path, struct tm **out)
{
	struct tm_hooks hooks = *p->io->tm;
	struct tm_open_opts to = {.cache_bytes = p->cache_bytes,
				  .read_only = p->opened_ro,
				  .hooks = &hooks};
	struct disk_pool_user *u;
	struct tm *tm;
	int r;

	hooks.ctx = p;
	r = tm_open(p->dev, &to, &tm);
	if (r < 0)
		return tv_err(r, "%s: cannot open the pool: %s", path,
			      r == -EUCLEAN ? "not a thinvol pool, or damaged"
					    : strerror(-r));
	u = (struct disk_pool_user *) tm_user(tm);
	if (memcmp(u->magic, ENGINE_MAGIC, 8)) {
		r = tv_err(-EUCLEAN,
			   "%s: not a thinvol pool (no volume "
			   "table)",
			   path);
		goto fail;
	}
	if (le32_to_cpu(u->blob_size) > TV_BLOB_MAX ||
	    !le64_to_cpu(u->next_id)) {
		r = tv_err(-EUCLEAN, "%s: damaged pool header", path);
		goto fail;
	}
	*out = tm;
	return 0;
fail:
	tm_close(tm);
	return r;
}

static int pool_open_common(struct tv_pool *p, const char *path,
			    const struct tv_pool_open_opts *o)
{
	int r;

	(void) o;
	r = open_store(p, path, &p->tm);
	if (r < 0)
		goto fail;
	p->block_size = tm_block_size(p->tm);
	p->blob_size = le32_to_cpu(pool_user(p)->blob_size);
	pool_init_infos(p);
	r = p->io->init(p);
	if (r < 0) {
		r = tv_err(r, "out of memory");
		goto fail;
	}
	if (!p->read_only) {
		r = pthread_create(&p->committer, NULL, committer_main, p);
		if (r) {
			r = tv_err(-r, "cannot start the committer thread");
			goto fail;
		}
		p->committer_running = true;
	}
	return 0;
fail:
	pool_free(p);
	return r;
}

int tv_pool_close(struct tv_pool *p)
{
	int r = 0;

	if (!p)
		return 0;
	if (p->committer_running) {
		pthread_mutex_lock(&p->meta_lock);
		p->stopping = true;
		pthread_cond_signal(&p->wake);
		pthread_mutex_unlock(&p->meta_lock);
		pthread_join(p->committer, NULL);
	}
	pthread_mutex_lock(&p->meta_lock);
	if (!p->read_only && p->dirty)
		r = pool_commit_locked(p);
	else if (!p->read_only && p->io->had_io(p))
		/* writes since the last flush (the committer's ranged
		 * commits leave some): closing makes everything durable */
		r = pool_flush_locked(p);
	/* pool-space.c, rule 3: a process that changed the pool frees a
	 * bounded piece of what is deleted before it goes, in transactions
	 * of its own (a failure there loses nothing of the user's: that is
	 * committed) */
	if (r == 0 && !p->read_only && p->committed &&
	    tm_root(p->tm, SLOT_DEFERRED)->blocknr) {
		r = pool_reclaim_locked(p, CLOSE_BUDGET);
		if (r == 0 && p->dirty)
			r = pool_commit_locked(p);
	}
	/* the room reserved ahead in the pool file goes back (sm.c, rule
	 * 7): free blocks in every state the pool may open at */
	if (!p->opened_ro)
		sm_release_secured(tm_sm(p->tm));
	pthread_mutex_unlock(&p->meta_lock);
	pool_free(p);
	return r;
}

/* ---- the committer (rule 1) ---- */

static void *committer_main(void *arg)
{
	struct tv_pool *p = arg;

	pthread_mutex_lock(&p->meta_lock);
	while (!p->stopping) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += p->commit_interval_ms / 1000;
		ts.tv_nsec += (long) (p->commit_interval_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->wake, &p->meta_lock, &ts);
		if (p->stopping || p->read_only)
			continue;
		if (tm_root(p->tm, SLOT_DEFERRED)->blocknr &&
		    pool_reclaim_locked(p, RECLAIM_BUDGET) < 0)
			continue; /* the pool is read-only now */
		if (p->dirty)
			pool_commit_bg_locked(p);
		if (p->io->reap_pending(p)) {
			pthread_mutex_unlock(&p->meta_lock);
			p->io->reap(p);
			pthread_mutex_lock(&p->meta_lock);
		}
	}
	/* finish reclaiming? no: it resumes at the next open */
	pthread_mutex_unlock(&p->meta_lock);
	return NULL;
}

/* ---- info, resize, check ---- */

int tv_pool_info(struct tv_pool *p, struct tv_pool_info *out)
{
	struct disk_pool_user *u;
	struct sm_stats st;
	uint64_t bs;

	pthread_mutex_lock(&p->meta_lock);
	u = pool_user(p);
	sm_get_stats(tm_sm(p->tm), &st);
	bs = p->block_size;
	memset(out, 0, sizeof(*out));
	out->format_version = TM_FORMAT_VERSION;
	memcpy(out->uuid, tm_uuid(p->tm), 16);
	out->block_size = p->block_size;
	out->blob_size = p->blob_size;
	out->size = st.nr_blocks * bs;
	out->used = st.data_used * bs;
	out->free = st.allocatable * bs;
	out->metadata = st.meta_chunks * bs;
	/* volume.c, rule 6: at most what reclaim will free, so never more
	 * than the data blocks in use (a damaged or crafted counter) */
	out->reclaimable =
	    MIN(le64_to_cpu(u->reclaimable),
		st.data_used - MIN(st.data_used, st.meta_chunks)) *
	    bs;
	out->nr_volumes = le64_to_cpu(u->nr_volumes);
	out->next_id = le64_to_cpu(u->next_id);
	out->transaction = tm_committed_txn(p->tm);
	if (p->read_only) {
		out->state = TV_POOL_READ_ONLY;
		out->error = p->ro_err;
		snprintf(out->reason, sizeof(out->reason), "%s",
			 p->reason[0] ? p->reason : "opened read-only");
	}
	/* needs-check is what the pool itself says: it wins over how this
	 * process happened to open it */
	if (p->needs_check) {
		out->state = TV_POOL_NEEDS_CHECK;
		out->error = p->ro_err;
		snprintf(out->reason, sizeof(out->reason), "%s", p->reason);
	} else if (le32_to_cpu(u->flags) & POOL_F_NEEDS_CHECK) {
		out->state = TV_POOL_NEEDS_CHECK;
		snprintf(out->reason, sizeof(out->reason),
			 "an earlier error left it unchecked");
	}
	pthread_mutex_unlock(&p->meta_lock);
	return 0;
}

uint32_t tv_pool_fs_flags(struct tv_pool *p)
{
	uint32_t f = 0;

	if (p->dev->flags & IO_DEV_FS_NO_JOURNAL)
		f |= TV_POOL_FS_NO_JOURNAL;
	if (p->dev->flags & IO_DEV_FS_COW)
		f |= TV_POOL_FS_COW;
	return f;
}

/* ---- probe and reopen ---- */

#define PROBE_BYTES (64u << 10)

/* Whether the pool is read-only after an error (what probe and reopen
 * are for).  meta_lock held. */
static int after_error_locked(struct tv_pool *p)
{
	if (p->opened_ro)
		return tv_err(-EINVAL, "%s: the pool was opened read-only",
			      p->path);
	if (!p->read_only)
		return tv_err(-EINVAL,
			      "%s: the pool is read-write: nothing "
			      "to reopen",
			      p->path);
	return 0;
}

/*
 * tv_pool_probe under meta_lock and the sync gate (syncs, rule 2: no sync
 * beside it takes its error), the pool read-only after an error and no
 * provision in flight (so nothing else writes, allocates or syncs).  A
 * block the space map can allocate is free in the open transaction and
 * in the last commit (sm.c, rule 1), and after a commit in doubt the
 * space map is that commit's (tm.h, rule 4): so the block is free in
 * every state a reopen may find, the transaction before the failure and
 * the one that failed, and whatever is written there is never read (a
 * new block is zeroed or overwritten whole before a mapping names it:
 * vio.c, rule 3).  The write allocates space in a pool file's hole,
 * which is what a full filesystem refuses; the hole is punched again
 * after.  On a pool without a free block the sync alone is the probe.
 */
static int probe_locked(struct tv_pool *p)
{
	uint64_t len = MIN((uint64_t) p->block_size, PROBE_BYTES), b = 0;
	struct sm *sm = tm_sm(p->tm);
	void *zero = NULL;
	bool have = false;
	int r;

	sm_set_reserve_mode(sm, true);
	have = sm_alloc_block(sm, &b) == 0;
	sm_set_reserve_mode(sm, false);
	if (have) {
		r = posix_memalign(&zero, 4096, (size_t) len);
		if (r) {
			sm_dec_block(sm, b, NULL);
			return tv_err(-r, "out of memory");
		}
		memset(zero, 0, (size_t) len);
		r = io_write(p->dev, zero, (size_t) len, b * p->block_size);
		free(zero);
		if (r < 0)
			goto out;
	}
	r = io_flush(p->dev);
out:
	if (have) {
		io_discard(p->dev, b * p->block_size, p->block_size);
		sm_dec_block(sm, b, NULL);
	}
	if (r < 0)
		return tv_err(r, "%s: the device still fails: %s %s", p->path,
			      have ? "a write and sync of a free block:"
				   : "a sync:",
			      strerror(-r));
	return 0;
}

/* after_error_locked, then wait for the provisions in flight and take
 * the sync gate (probe_locked's conditions).  meta_lock held; on success
 * pool_sync_gate_leave when done. */
static int probe_enter_locked(struct tv_pool *p)
{
	int r = after_error_locked(p);

	if (r)
		return r;
	p->io->drain_locked(p); /* may drop meta_lock meanwhile */
	r = after_error_locked(p);
	if (r == 0)
		pool_sync_gate_enter_locked(p);
	return r;
}

int tv_pool_probe(struct tv_pool *p)
{
	int r;

	pthread_mutex_lock(&p->meta_lock);
	r = probe_enter_locked(p);
	if (r == 0) {
		r = probe_locked(p);
		pool_sync_gate_leave(p);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int tv_pool_reopen(struct tv_pool *p)
{
	uint64_t doubt = 0;
	struct tm *tm;
	bool gate;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	r = probe_enter_locked(p);
	gate = r == 0;
	if (r == 0)
		r = probe_locked(p);
	if (r < 0)
		goto out;
	/* The kernel's cache of the pool's bytes goes first, where a write
	 * whose writeback failed still reads as if it had landed (the
	 * probe's sync left nothing dirty): the superblocks are read from
	 * the disk, where it drops them. */
	io_drop_cache(p->dev, 0, 0);
	if (tm_in_doubt(p->tm))
		doubt = tm_txn(p->tm);
	r = open_store(p, p->path, &tm);
	if (r < 0)
		goto out;
	if (tm_block_size(tm) != p->block_size ||
	    le32_to_cpu(((struct disk_pool_user *) tm_user(tm))->blob_size) !=
		p->blob_size) {
		tm_close(tm);
		r = tv_err(-EUCLEAN,
			   "%s: cannot reopen: the pool's block or "
			   "blob size changed",
			   p->path);
		goto out;
	}
	/* tm.h, rule 4: at the commit in doubt, that superblock may still be
	 * only in the page cache (a page in use stays there): it is written
	 * again before anything else is, so no crash can take the pool back
	 * to the transaction before it, whose blocks the next ones reuse */
	if (doubt && tm_committed_txn(tm) == doubt) {
		r = tm_settle(tm);
		if (r < 0) {
			tm_close(tm);
			r = tv_err(r,
				   "%s: cannot reopen: writing the "
				   "superblock again: %s",
				   p->path, strerror(-r));
			goto out;
		}
	}
	/* the committed state replaces everything in memory: the lost
	 * transaction, the metadata cache, the mappings the I/O path
	 * cached (no provision is in flight: probe_locked drained them) */
	p->io->reset_locked(p);
	/* free in every state (sm.c, rule 7): the new store has its own */
	sm_release_secured(tm_sm(p->tm));
	tm_close(p->tm);
	p->tm = tm;
	pool_init_infos(p);
	p->read_only = false;
	p->needs_check = false;
	p->dirty = false;
	p->ro_err = 0;
	p->reason[0] = 0;
	atomic_store(&p->sync_err, 0);
	log_info("%s: reopened at transaction %" PRIu64, p->path,
		 tm_committed_txn(p->tm));
out:
	if (gate)
		pool_sync_gate_leave(p);
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int tv_pool_resize(struct tv_pool *p, uint64_t new_size)
{
	int r;

	pthread_mutex_lock(&p->meta_lock);
	if (p->read_only) {
		r = tv_err(-EROFS, "%s: the pool is read-only", p->path);
		goto out;
	}
	if (new_size / p->block_size < tm_nr_blocks(p->tm)) {
		r = tv_err(-EINVAL,
			   "%s: a pool can only grow (now %" PRIu64 " bytes)",
			   p->path, tm_nr_blocks(p->tm) * p->block_size);
		goto out;
	}
	/* the commit's room in the pool file (sm.c, rule 7; its blocks a
	 * full pool has in its reserve, and the grow adds more) */
	{
		uint64_t hn, hc;

		p->io->held_locked(p, &hn, &hc);
		r = sm_secure(tm_sm(p->tm), SM_ROOM_FREE, hn, hc + 1);
		if (r < 0) {
			r = tv_err(r,
				   "%s: no room to commit the grow in the "
				   "filesystem under the pool",
				   p->path);
			goto out;
		}
	}
	if (new_size > p->dev->size) {
		r = io_resize(p->dev, new_size);
		if (r < 0) {
			r = tv_err(r,
				   "%s: cannot grow to %" PRIu64 " bytes: %s",
				   p->path, new_size, strerror(-r));
			goto out;
		}
	}
	r = tm_grow(p->tm);
	if (r == 0) {
		p->dirty = true;
		r = pool_commit_locked(p);
	} else {
		r = tv_err(r, "%s: grow failed: %s", p->path, strerror(-r));
	}
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int tv_pool_check(struct tv_pool *p, void *out_file,
		  struct tv_check_report *rep)
{
	struct check_root roots[8];
	struct check_report cr;
	unsigned int nr = 0;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	if (p->dirty && !p->read_only) {
		r = pool_commit_locked(p);
		if (r < 0)
			goto out;
	}
	if (out_file && tm_damaged_superblock(p->tm) >= 0)
		fprintf(out_file,
			"warning: superblock %d was damaged when the pool was "
			"opened; it is at transaction %" PRIu64 " from the "
			"other (a later commit, if there was one, is lost)\n",
			tm_damaged_superblock(p->tm), tm_committed_txn(p->tm));
	r = check_roots(p, roots, &nr);
	if (r == 0)
		r = check_run(p->tm, roots, nr, out_file, 50, &cr);
	/* the trees are sound: now the tables must agree with each other */
	if (r == 0 && !cr.errors)
		r = vol_check_indexes_locked(p, out_file, &cr.errors);
	if (r == 0) {
		memset(rep, 0, sizeof(*rep));
		rep->clean = check_clean(&cr);
		rep->nodes = cr.nodes;
		rep->node_refs = cr.node_refs;
		rep->data_refs = cr.data_refs;
		rep->errors = cr.errors;
		rep->leaks = cr.leaks;
		rep->missing = cr.missing;
		rep->counter_errors = cr.counter_errors;
		rep->volumes = le64_to_cpu(pool_user(p)->nr_volumes);
	} else {
		r = tv_err(r, "%s: check could not run: %s", p->path,
			   strerror(-r));
	}
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}
