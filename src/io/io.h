/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io - the device seam.
 *
 * Everything thinvol reads or writes goes through a struct io_dev. Backends:
 *
 *   io-file.c      a regular file or a block device (pread/pwrite,
 *                  fdatasync or sync_file_range + RWF_DSYNC, fallocate or
 *                  BLKDISCARD/BLKZEROOUT)
 *   io-mem.c       a byte array in memory
 *   io-fault.c     wraps another device; fails the Nth operation
 *   io-powercut.c  wraps another device; models a volatile write cache and
 *                  produces the image a power cut could leave behind
 *
 * Contract of every operation:
 *   - returns 0 or a negative errno; never a partial success.  A backend
 *     that sees a short read/write from the kernel retries until done or
 *     an error occurs.
 *   - [off, off + len) must lie inside the device: otherwise -EINVAL and
 *     nothing is touched.  len == 0 is a no-op that succeeds.
 *   - write, discard and write_zeroes become durable only after a later
 *     flush returns 0 (volatile write cache semantics).  Writes not yet
 *     flushed may, after a crash, be found applied, missing, or torn at
 *     512-byte sector granularity, in any combination.
 *   - discard: afterwards the range reads as zeroes (we only ever discard
 *     ranges we also want zeroed; backends that cannot guarantee it fall
 *     back to writing zeroes).
 *   - thread-safe: several threads may call read/write/discard/
 *     write_zeroes/flush on one device at once.  resize and close must not
 *     race with anything else.
 */
#ifndef TV_IO_IO_H
#define TV_IO_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define IO_SECTOR 512u

struct io_dev;

/* A byte range of a device. */
struct io_range {
	uint64_t off, len;
};

struct io_ops {
	int (*read)(struct io_dev *dev, void *buf, size_t len, uint64_t off);
	int (*write)(struct io_dev *dev, const void *buf, size_t len,
		     uint64_t off);
	int (*flush)(struct io_dev *dev);
	int (*discard)(struct io_dev *dev, uint64_t off, uint64_t len);
	int (*write_zeroes)(struct io_dev *dev, uint64_t off, uint64_t len);
	/* Grow (or shrink) the device; block devices return -EOPNOTSUPP
	 * unless the new size equals the current one. */
	int (*resize)(struct io_dev *dev, uint64_t new_size);
	void (*close)(struct io_dev *dev);
	/* Optional: 1 if [off, off + len) is known to read as zeroes without
	 * being written (a hole of a sparse file), else 0.  A hint: 0 is
	 * always a correct answer. */
	int (*is_hole)(struct io_dev *dev, uint64_t off, uint64_t len);
	/* Optional: allocate [off, off + len) where it is a hole, so that a
	 * later write there costs less; contents unchanged (zeroes stay
	 * zeroes, and is_hole may still say so). */
	int (*prealloc)(struct io_dev *dev, uint64_t off, uint64_t len);
	/* Optional: io_sync_ranges (only called with valid ranges). */
	int (*sync_ranges)(struct io_dev *dev, const struct io_range *r,
			   size_t n, const struct io_range *barrier);
	/* Optional: io_drop_cache (len 0: to the end). */
	int (*drop_cache)(struct io_dev *dev, uint64_t off, uint64_t len);
	/* Optional: io_reserve. */
	int (*reserve)(struct io_dev *dev, uint64_t off, uint64_t len);
	/* Optional: io_dev_fd. */
	int (*fd)(struct io_dev *dev);
};

/* Flags describing a device (io_dev.flags). */
#define IO_DEV_BLOCKDEV (1u << 0) /* a block device, not a file */
#define IO_DEV_RDONLY	(1u << 1) /* opened read-only */
#define IO_DEV_DIRECT	(1u << 2) /* O_DIRECT: buffers must be aligned */
/* io_sync_ranges costs less than a flush: it leaves the other written
 * data where it is (in the page cache) */
#define IO_DEV_RANGED_SYNC (1u << 3)
/* a file on ext4 without a journal: after a power failure the filesystem
 * itself may lose the file's newest allocations or show other files' old
 * blocks in them, whatever was synced (its fsync does not write the block
 * bitmaps, nor on some kernels the inode); worth a warning */
#define IO_DEV_FS_NO_JOURNAL (1u << 4)
/* a file on a filesystem: a write into a hole needs room there, which a
 * full filesystem refuses (ENOSPC) unless io_reserve took it before */
#define IO_DEV_SPARSE (1u << 5)
/* a file that its filesystem copies on every overwrite (btrfs without
 * nocow): io_reserve cannot make later writes need no more room, so a
 * full filesystem can fail a commit; worth a warning */
#define IO_DEV_FS_COW (1u << 6)
/* a file whose blocks another file may share (XFS reflinks: cp makes
 * them), so that overwriting any of them can need new room until
 * io_reserve unshared it */
#define IO_DEV_FS_SHARING (1u << 7)

struct io_dev {
	const struct io_ops *ops;
	uint64_t size;	    /* bytes; updated by resize */
	unsigned int flags; /* IO_DEV_* */
	char name[64];	    /* for messages: path or backend name */
};

/* The checked front door: validates the range, then calls the backend. */
int io_read(struct io_dev *dev, void *buf, size_t len, uint64_t off);
int io_write(struct io_dev *dev, const void *buf, size_t len, uint64_t off);
int io_flush(struct io_dev *dev);
int io_discard(struct io_dev *dev, uint64_t off, uint64_t len);
int io_write_zeroes(struct io_dev *dev, uint64_t off, uint64_t len);
int io_resize(struct io_dev *dev, uint64_t new_size);
/*
 * A flush of part of the device.
 *
 * With barrier NULL: write the ranges back and wait for that, a
 * preparation that promises nothing (a later call with a barrier, or a
 * flush, still has to make them durable; it then has less to do).
 *
 * With a barrier: when it returns 0, these are durable:
 *   - the bytes of every range, as written before the call;
 *   - every discard and write_zeroes that completed before the call,
 *     wherever it was;
 *   - the barrier range, whose contents the call writes again: the caller
 *     makes sure nothing else writes there meanwhile.
 * Other writes may still be in the volatile cache.  The ranges lie inside
 * the device (else -EINVAL), in any order, and may overlap.
 *
 * A device without IO_DEV_RANGED_SYNC flushes instead (with a barrier),
 * which makes more durable than asked and is therefore correct.
 */
int io_sync_ranges(struct io_dev *dev, const struct io_range *r, size_t n,
		   const struct io_range *barrier);
/* Sort v[0, n) by offset and merge the ranges that overlap or touch;
 * returns how many are left (at the front of v). */
size_t io_ranges_merge(struct io_range *v, size_t n);
/* io_ops.prealloc: -EOPNOTSUPP where there is nothing to allocate
 * (memory, a block device) or the filesystem cannot. */
int io_prealloc(struct io_dev *dev, uint64_t off, uint64_t len);
/*
 * Drop what the kernel caches of [off, off + len) of the device (len 0:
 * to its end; clean pages of the page cache), so that reads come from
 * the device again: after a failed writeback, a page whose data never
 * reached the disk still reads as the lost data until it leaves the
 * cache.  Dirty pages stay (a later flush writes them).  Best effort:
 * pages in use stay.  0 where there is no such cache.
 */
int io_drop_cache(struct io_dev *dev, uint64_t off, uint64_t len);
/*
 * Make later writes into [off, off + len) need no more room from the
 * filesystem under a pool file (fallocate, KEEP_SIZE: where it is a hole
 * it becomes allocated, still reading as zeroes; with UNSHARE_RANGE where
 * the filesystem has it (XFS), so that blocks shared with a reflinked
 * copy get their own room too).  Not on a copy-on-write file
 * (IO_DEV_FS_COW), whose every overwrite needs new room.  For the metadata
 * chunks, so that a full filesystem refuses new data before it refuses a
 * commit.  0 where there is nothing to reserve (memory, a block device);
 * -ENOSPC, -EOPNOTSUPP etc. from the filesystem.
 */
int io_reserve(struct io_dev *dev, uint64_t off, uint64_t len);
/* 1 when the range is known to read as zeroes (see io_ops.is_hole). */
int io_is_hole(struct io_dev *dev, uint64_t off, uint64_t len);
/* NULL is allowed. */
void io_close(struct io_dev *dev);

/* ---- file / block device ---- */

#define IO_FILE_CREATE (1u << 0) /* create if missing (sparse, size bytes) */
#define IO_FILE_EXCL   (1u << 1) /* with CREATE: fail if it exists */
#define IO_FILE_RDONLY (1u << 2)
#define IO_FILE_DIRECT (1u << 3) /* O_DIRECT; callers align to 4096 */

/*
 * Open a regular file or a block device.  For a file created here, size
 * is its initial (sparse) length; for an existing file or a device, size
 * is ignored and the device's size is its current length.
 * Does not lock: locking belongs to the pool.  Returns the fd through
 * io_file_fd() for the caller's flock().
 */
int io_file_open(const char *path, unsigned int flags, uint64_t size,
		 struct io_dev **out);
/*
 * The same for a descriptor the caller opened (fd, read-write unless
 * IO_FILE_RDONLY, on path, which names it in messages), which the device
 * takes (closed on failure too).  With IO_FILE_CREATE, fd is a file the
 * caller has just created: it is sized to size bytes.  Nothing is removed
 * on failure: the caller created it.
 */
int io_file_open_fd(int fd, const char *path, unsigned int flags, uint64_t size,
		    struct io_dev **out);
/* The fd, borrowed until io_close; -EINVAL if dev is not a file device. */
int io_file_fd(struct io_dev *dev);
/*
 * Claim the storage of a pool opened with io_file_open, for as long as dev
 * is open (io-ident.c, rules 3-6): a block device is reopened O_EXCL and
 * the file or device is flock'ed; what lies under a loop device, a
 * partition or a device-mapper/md device is claimed too, and so is every
 * loop device over the file or device (found by device and inode, not by
 * name).  -EBUSY when another holder has any of it, with who in why
 * ("process 123 (thinvol)", "a filesystem mounted at /mnt, through
 * /dev/loop3 (a loop device over /srv/a.pool)", ...); other errors with
 * the reason in why.
 */
int io_file_claim(struct io_dev *dev, char *why, size_t whylen);
/* Tests: called by a regular file's is_hole between its SEEK_DATA and
 * recording the hole it found (to race writes against that window). */
extern void (*io_file_seek_hook)(void);

/*
 * The file descriptor of the file or block device under dev (through the
 * fault and power-cut wrappers), borrowed until io_close; -EINVAL when
 * there is none (memory).
 */
int io_dev_fd(struct io_dev *dev);

/* ---- paths that users name (io-path.c) ---- */

/* A user as messages name one: "mallory (uid 1001)", or "uid 1001" when
 * the password database does not know it.  Always NUL-terminates buf. */
void io_uid_name(uid_t uid, char *buf, size_t len);

/*
 * Open path as open(2) does (flags, mode: with O_CREAT, create it), except
 * that a symbolic link as its last component, in a sticky directory that
 * others may write into (/tmp), is followed only when it belongs to us or
 * to the directory's owner (io-path.c, rule 2, the kernel's
 * fs.protected_symlinks whatever it is set to).  Returns the descriptor,
 * or a negative errno with why set: -EPERM for another user's link there
 * ("a symbolic link owned by mallory (uid 1001) in /tmp, ...").
 */
int io_open_user_path(const char *path, int flags, mode_t mode, char *why,
		      size_t whylen);

/*
 * Whether what is open on fd may be written into on the user's behalf
 * (io-path.c, rule 3): 0, or -EPERM with why set for a regular file in a
 * sticky directory that others may write into that belongs to someone
 * other than us or the directory's owner, or has more than one link.
 */
int io_fd_user_target(int fd, char *why, size_t whylen);

/*
 * 1, with what set ("anyone may read the pool file (mode 0644): ..."),
 * when the regular file st describes, a pool, is exposed to others: it
 * belongs to someone other than us and root, or its group or others may
 * read or write it; 0 otherwise.  For a warning: pool create makes its
 * files private, a pool file made otherwise may not be.
 */
struct stat;
int io_pool_file_exposed(const struct stat *st, char *what, size_t len);

/* ---- storage identity (io-ident.c) ---- */

/*
 * What a descriptor is: a regular file (its filesystem's device and its
 * inode) or a block device (its number, and the sequence number the
 * kernel gave the disk when it appeared, which a new disk with a reused
 * number does not share; 0 where the kernel has none).
 */
struct io_ident {
	bool blk;
	dev_t dev;	  /* file */
	ino_t ino;	  /* file */
	dev_t rdev;	  /* block device */
	uint64_t diskseq; /* block device; 0: unknown */
};

/* Of an open descriptor, or of a path (symlinks followed): -EINVAL when
 * it is neither a regular file nor a block device. */
int io_ident_fd(int fd, struct io_ident *out);
int io_ident_path(const char *path, struct io_ident *out);
/* Same file, or same block device (and disk sequence where both know
 * it). */
bool io_ident_equal(const struct io_ident *a, const struct io_ident *b);

/*
 * 1 when writing through one of the two descriptors may change what the
 * other reads (io-ident.c, rule 1): the same file or device, a partition
 * and its disk, a loop device and its backing file (through any chain of
 * loops; the backing file by device and inode, whatever its names), a
 * device-mapper/md device and a device under it, a file and an overlayfs
 * mount's view of it (the layers in /proc/self/mountinfo).  how then says
 * which, as a phrase ("it is the pool itself"); pool names the first
 * descriptor in it.  0 when not (or not as far as can be seen: rule 2).
 */
int io_fd_overlap(int pool_fd, int other_fd, char *how, size_t howlen);

/*
 * Claim the file or block device open on fd, into which something is
 * about to be written on a user's behalf (an export), as a pool claims its
 * storage (io-ident.c, rules 3, 5 and 7): a block device is reopened
 * O_EXCL with the same access mode (*newfd, the caller's to write through
 * and close; else *newfd is fd), and it, what lies under it and every loop
 * device over it are held until io_claim_release.  -EBUSY, with who in
 * why ("a filesystem mounted at /mnt, through /dev/loop3 (a loop device
 * over /srv/fs.img)"), while anything of it is held by someone else: a
 * pool, a mount, a RAID or device-mapper device.  name is fd's path, for
 * messages.  fd stays the caller's and carries no lock afterwards.
 */
struct io_claim;
int io_fd_claim_target(int fd, const char *name, struct io_claim **out,
		       int *newfd, char *why, size_t whylen);
/* Drop the locks and close what the claim opened.  NULL is allowed. */
void io_claim_release(struct io_claim *c);

/* The process holding a flock on the inode (dev, ino) (/proc/locks), or
 * 0 when none is found. */
pid_t io_lock_holder(dev_t dev, ino_t ino);

/*
 * 1 when another open file description holds a lock on the file open on
 * fd (a flock, as every thinvol pool's storage has while open, or a POSIX
 * or OFD lock, as qemu takes on its images), with who in who ("process
 * 123 (thinvol)"); 0 when not, or when it cannot be told.
 */
int io_fd_locked(int fd, char *who, size_t wholen);

/* ---- memory ---- */

/* A zero-filled in-memory device of size bytes. */
int io_mem_create(uint64_t size, struct io_dev **out);
/* A memory device holding a copy of buf[0, size). */
int io_mem_create_from(const void *buf, uint64_t size, struct io_dev **out);
/* Borrowed pointer to the contents, valid until the next resize/close;
 * NULL if dev is not a memory device.
 * For tests that corrupt or inspect images. */
uint8_t *io_mem_data(struct io_dev *dev);

/* ---- fault injection ---- */

enum io_fault_kind {
	IO_FAULT_ERROR, /* the operation does nothing and fails */
	IO_FAULT_SHORT, /* a write applies a prefix (whole sectors), fails */
	IO_FAULT_TORN,	/* a write applies a random subset of its sectors
			 * and reports success (a lying device) */
};

/* Which operations count towards fail_at, and can fail. */
#define IO_OP_READ	   (1u << 0)
#define IO_OP_WRITE	   (1u << 1)
#define IO_OP_FLUSH	   (1u << 2)
#define IO_OP_DISCARD	   (1u << 3)
#define IO_OP_WRITE_ZEROES (1u << 4)
#define IO_OP_ALL	   0x1fu

struct io_fault_cfg {
	uint64_t fail_at; /* 1-based index of the first counted op to
			   * fail; 0 disarms */
	bool persistent;  /* true: every counted op from fail_at on fails;
			   * false: only that one */
	int error;	  /* negative errno returned, e.g. -EIO, -ENOSPC */
	enum io_fault_kind kind;
	unsigned int op_mask; /* IO_OP_*; 0 means IO_OP_ALL */
	uint64_t seed;	      /* for IO_FAULT_TORN's choice of sectors */
};

/*
 * Wrap lower.  If own_lower, closing the wrapper closes lower.  The wrapper
 * starts disarmed and counts every op matching the mask.
 */
int io_fault_wrap(struct io_dev *lower, bool own_lower, struct io_dev **out);
/* Arm (or re-arm) and reset the op counter to zero. */
void io_fault_arm(struct io_dev *dev, const struct io_fault_cfg *cfg);
void io_fault_disarm(struct io_dev *dev);
/* Ops counted since the last arm (or since creation). */
uint64_t io_fault_count(struct io_dev *dev);
/* Number of ops that were failed since the last arm. */
uint64_t io_fault_failed(struct io_dev *dev);

/* ---- a filesystem of limited room ---- */

/*
 * Wrap lower as a sparse file on a filesystem with room for bytes (a
 * tmpfs of that size): 4 KiB pages are allocated by the writes that first
 * touch them, and by io_reserve and io_prealloc (KEEP_SIZE fallocate);
 * discard and write_zeroes punch whole pages out again (as PUNCH_HOLE on
 * tmpfs).  A write, reservation or preallocation that needs more pages
 * than there is room for fails with -ENOSPC and changes nothing.  Adds
 * IO_DEV_SPARSE.  own_lower: closing the wrapper closes lower.
 */
int io_quota_wrap(struct io_dev *lower, bool own_lower, uint64_t bytes,
		  struct io_dev **out);
/* Change the room (the filesystem grown, or another file removed). */
void io_quota_set(struct io_dev *dev, uint64_t bytes);
/* Bytes of pages allocated now. */
uint64_t io_quota_used(struct io_dev *dev);

/* ---- power-cut simulation ---- */

/*
 * The wrapper keeps the "durable" image in lower and every write, discard
 * and write_zeroes issued since the last completed flush in a pending list
 * (reads see them: the cache is coherent while the power is on).  A flush
 * applies the pending list to lower in issue order and empties it.
 *
 * io_pc_set_cut_after(dev, n): once n more mutating operations (write,
 * flush, discard, write_zeroes; reads are not counted) have completed, the
 * power is cut: every later operation, reads included, fails with -EIO and
 * nothing reaches lower any more.  n == 0 disarms.
 */
int io_pc_wrap(struct io_dev *lower, bool own_lower, struct io_dev **out);
void io_pc_set_cut_after(struct io_dev *dev, uint64_t n);
/* Mutating ops (write, flush, discard, write_zeroes) seen so far. */
uint64_t io_pc_ops(struct io_dev *dev);
/* true once the power has been cut */
bool io_pc_is_cut(struct io_dev *dev);
/* Number of writes, discards and write_zeroes pending (issued since the
 * last completed flush). */
size_t io_pc_pending(struct io_dev *dev);

/*
 * A flush that fails as Linux's writeback does (io-powercut.c, rule 9):
 * the nth flush or barrier sync from now (1-based; 0 disarms) returns
 * error; each write pending then reached the device whole, not at all or
 * torn (chosen from seed), and none is written again by a later flush,
 * but reads still show them all, as the page cache keeps pages whose
 * writeback failed, until io_drop_cache (never, when sticky: pages in
 * use).  Later writes over them replace them.
 */
struct io_pc_flush_fail {
	uint64_t nth;
	int error; /* negative errno; 0: -EIO */
	uint64_t seed;
	bool sticky;
};
void io_pc_fail_flush(struct io_dev *dev, const struct io_pc_flush_fail *f);
/* Writes a failed flush lost that reads still show. */
size_t io_pc_lost(struct io_dev *dev);

enum io_pc_policy {
	IO_PC_DROP_ALL,	 /* every pending write is lost */
	IO_PC_APPLY_ALL, /* every pending write lands, in issue order */
	IO_PC_RANDOM,	 /* each pending write is applied, dropped or torn,
			  * and they land in a random order */
};

/*
 * Build the image the power cut leaves: a new memory device holding lower's
 * durable contents plus the pending writes treated per policy (seeded).
 * Works whether or not the power was cut already (a cut "now").
 * The wrapper is not changed.  Caller owns *out.
 */
int io_pc_crash_image(struct io_dev *dev, enum io_pc_policy policy,
		      uint64_t seed, struct io_dev **out);

#endif
