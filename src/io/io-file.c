/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-file.c - a regular file or a block device.  Contract in io.h.
 *
 * Reads and writes are pread/pwrite loops (short transfers and EINTR are
 * retried); flush is fdatasync.  pread/pwrite/fallocate/ioctl on one fd are
 * safe from several threads; the only lock is the known holes' (see
 * file_is_hole).
 *
 * Zeroing, in order of preference (each step falls back to the next when
 * the kernel or the filesystem says "not supported"):
 *
 *   regular file   discard:      PUNCH_HOLE          -> write zeroes
 *                  write_zeroes: ZERO_RANGE -> PUNCH_HOLE -> write zeroes
 *   block device   discard:      PUNCH_HOLE -> BLKZEROOUT -> write zeroes
 *                  write_zeroes: BLKZEROOUT          -> write zeroes
 *
 * Why not BLKDISCARD on a block device: the contract says a discarded range
 * reads as zeroes, and BLKDISCARD promises nothing about what a later read
 * returns (the kernel no longer even reports discard_zeroes_data).  On a
 * block device fallocate(PUNCH_HOLE|KEEP_SIZE) is "zero this range, and
 * you may unmap it to do so, but never by writing zeroes"
 * (BLKDEV_ZERO_NOFALLBACK): exactly a discard that guarantees zeroes, and
 * it still deallocates on thin-provisioned storage or a loop device over a
 * sparse file.  Where the device cannot do that, BLKZEROOUT zeroes the
 * range (possibly by writing), and writing zeroes ourselves is the last
 * resort.  -EINVAL from the ioctls (an alignment the device rejects) also
 * falls back to writing, which handles any range the caller may use.
 *
 * The zero buffer used by the last resort is at most 1 MiB and aligned for
 * O_DIRECT.
 */
#include "io/io.h"
#include "io/io-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/checked.h"
#include "util/log.h"

#define ZERO_BUF_MAX (1024u * 1024u)
/* statfs f_type values (linux/magic.h) */
#define FS_EXT4	     0xef53u /* also ext2/3 through the ext4 driver */
#define FS_XFS	     0x58465342u
#define FS_TMPFS     0x01021994u
#define FS_BTRFS     0x9123683eu
#define DIRECT_ALIGN 4096u

/* Ranges of a regular file known to be holes (file_is_hole). */
#define HOLES_MAX 64

struct io_file {
	struct io_dev dev; /* first: io_dev pointers convert back */
	int fd;

	/* Known holes: what SEEK_DATA found, less every range written
	 * since.  [lo, hi) bounds every range ever asked about since the
	 * set was last empty, so that a write outside it need not take
	 * hlock. */
	pthread_mutex_t hlock;
	struct hole {
		uint64_t start, end;
	} holes[HOLES_MAX];
	unsigned int nholes;
	_Atomic uint64_t lo, hi;

	/* A discard or write_zeroes fell back to writing zero bytes: those
	 * need a whole flush, which the next barrier does (file_sync_ranges).
	 */
	atomic_bool zero_bytes_written;
	atomic_bool no_dsync;	/* RWF_DSYNC failed as unsupported */
	bool prealloc;		/* ext4 or XFS: file_prealloc pays */
	atomic_bool unshare;	/* file_reserve tries FALLOC_FL_UNSHARE_RANGE */
	struct io_claim *claim; /* io_file_claim: what it holds, or NULL */
};

static const struct io_ops file_ops;

void (*io_file_seek_hook)(void);

static struct io_file *to_file(struct io_dev *dev)
{
	return (struct io_file *) ((char *) dev -
				   offsetof(struct io_file, dev));
}

/* The fallback-worthy answers of fallocate and the zeroing ioctls. */
static bool unsupported(int err, bool blockdev)
{
	return err == -EOPNOTSUPP || err == -ENOSYS || err == -ENOTTY ||
	       (blockdev && err == -EINVAL);
}

/*
 * pread (write false) or pwrite (write true: buf is only read) of
 * [off, off + len), until all of it is done or an error occurs; short
 * transfers continue, EINTR retries.  A transfer of nothing is an error:
 * a read past the end of the file, and a write that pwrite never reports
 * for len > 0 on a file or a device (do not spin if it does).
 */
static int file_rw(struct io_dev *dev, bool write, void *buf, size_t len,
		   uint64_t off)
{
	struct io_file *f = to_file(dev);
	const char *how = write ? "pwrite" : "pread";
	uint8_t *p = buf;
	ssize_t n;
	int r;

	while (len) {
		size_t chunk = MIN(len, (size_t) SSIZE_MAX);

		n = write ? pwrite(f->fd, p, chunk, (off_t) off)
			  : pread(f->fd, p, chunk, (off_t) off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			log_error("%s: %s of %zu bytes at %" PRIu64 ": %s",
				  dev->name, how, len, off, strerror(-r));
			return r;
		}
		if (n == 0) {
			log_error(
			    "%s: %s at %" PRIu64 ": %s", dev->name, how, off,
			    write ? "no progress" : "unexpected end of file");
			return -EIO;
		}
		p += n;
		off += (uint64_t) n;
		len -= (size_t) n;
	}
	return 0;
}

static int file_read(struct io_dev *dev, void *buf, size_t len, uint64_t off)
{
	return file_rw(dev, false, buf, len, off);
}

/* [lo, hi) := the span of the known holes (hlock held, no SEEK_DATA in
 * progress). */
static void holes_bound(struct io_file *f)
{
	uint64_t lo = UINT64_MAX, hi = 0;

	for (unsigned int i = 0; i < f->nholes; i++) {
		lo = MIN(lo, f->holes[i].start);
		hi = MAX(hi, f->holes[i].end);
	}
	atomic_store(&f->lo, lo);
	atomic_store(&f->hi, hi);
}

/* The smallest known hole (the set is not empty; hlock held). */
static struct hole *smallest_hole(struct io_file *f)
{
	struct hole *m = &f->holes[0];

	for (unsigned int k = 1; k < f->nholes; k++)
		if (f->holes[k].end - f->holes[k].start < m->end - m->start)
			m = &f->holes[k];
	return m;
}

/* [off, off + len) was written: it is no hole. */
static void holes_forget(struct io_file *f, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	unsigned int i;

	/* After the write, so that file_is_hole either saw its data or had
	 * widened [lo, hi) before its SEEK_DATA (see there). */
	if (end <= atomic_load(&f->lo) || off >= atomic_load(&f->hi))
		return;
	pthread_mutex_lock(&f->hlock);
	for (i = 0; i < f->nholes;) {
		struct hole *h = &f->holes[i];

		if (end <= h->start || off >= h->end) {
			i++;
		} else if (off > h->start && end < h->end) {
			/* in the middle: split; when the set is full, the
			 * tail takes the place of the smallest range if it
			 * is bigger (partial writes into fresh blocks leave
			 * small pieces that are never asked about again,
			 * while the tail often runs to the end of the file) */
			struct hole tail = {end, h->end};

			h->end = off;
			if (f->nholes < HOLES_MAX) {
				f->holes[f->nholes++] = tail;
			} else {
				struct hole *m = smallest_hole(f);

				if (m->end - m->start < tail.end - tail.start)
					*m = tail;
			}
			i++;
		} else if (off > h->start) {
			h->end = off;
			i++;
		} else if (end < h->end) {
			h->start = end;
			i++;
		} else {
			*h = f->holes[--f->nholes];
		}
	}
	holes_bound(f);
	pthread_mutex_unlock(&f->hlock);
}

static int file_write(struct io_dev *dev, const void *buf, size_t len,
		      uint64_t off)
{
	int r = file_rw(dev, true, (void *) buf, len, off);

	/* also after a failure: part of it may have landed */
	if (!(dev->flags & IO_DEV_BLOCKDEV))
		holes_forget(to_file(dev), off, len);
	return r;
}

static int file_flush(struct io_dev *dev)
{
	struct io_file *f = to_file(dev);
	int r;

	if (fdatasync(f->fd) == 0)
		return 0;
	r = -errno;
	log_error("%s: fdatasync: %s", dev->name, strerror(-r));
	return r;
}

/* sync_file_range over every range: start all, then wait for each. */
static int write_back(struct io_dev *dev, const struct io_range *r, size_t n)
{
	struct io_file *f = to_file(dev);
	static const unsigned int how[2] = {
	    SYNC_FILE_RANGE_WRITE,
	    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
		SYNC_FILE_RANGE_WAIT_AFTER,
	};

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			if (!r[i].len)
				continue;
			if (sync_file_range(f->fd, (off64_t) r[i].off,
					    (off64_t) r[i].len,
					    how[pass]) < 0) {
				int e = -errno;

				log_error("%s: sync_file_range of %" PRIu64
					  " bytes at %" PRIu64 ": %s",
					  dev->name, r[i].len, r[i].off,
					  strerror(-e));
				return e;
			}
		}
	}
	return 0;
}

/*
 * io_sync_ranges on a regular file of a filesystem where it is sound
 * (IO_DEV_RANGED_SYNC; see is_ranged_fs): the ranges are written back
 * with sync_file_range, which waits for the data to reach the device
 * but neither commits the file's allocation nor flushes the device's
 * cache.  Then the barrier range is written again with RWF_DSYNC, a
 * data sync of that range: it commits the filesystem's journal up to
 * the file's last allocation or hole punch (ext4 and XFS track that per
 * inode, for all of the file) and flushes the device's cache, which
 * makes the ranges written back before durable too.  The page cache's
 * other dirty data of the file stays where it is.
 */
static int file_sync_ranges(struct io_dev *dev, const struct io_range *r,
			    size_t n, const struct io_range *barrier)
{
	struct io_file *f = to_file(dev);
	struct iovec iov;
	void *buf;
	int e;

	e = write_back(dev, r, n);
	if (e || !barrier)
		return e;
	if (atomic_load(&f->no_dsync))
		return file_flush(dev);
	if (atomic_exchange(&f->zero_bytes_written, false)) {
		e = file_flush(dev);
		if (e)
			atomic_store(&f->zero_bytes_written, true);
		return e;
	}
	if (barrier->len > ZERO_BUF_MAX) {
		log_error("%s: sync barrier of %" PRIu64 " bytes too large",
			  dev->name, barrier->len);
		return -EINVAL;
	}
	e = posix_memalign(&buf, DIRECT_ALIGN, (size_t) barrier->len);
	if (e) {
		log_error("%s: sync barrier: %s", dev->name, strerror(e));
		return -e;
	}
	e = file_read(dev, buf, (size_t) barrier->len, barrier->off);
	iov = (struct iovec){buf, (size_t) barrier->len};
	while (e == 0) {
		ssize_t w =
		    pwritev2(f->fd, &iov, 1, (off_t) barrier->off, RWF_DSYNC);

		if (w == (ssize_t) barrier->len)
			break;
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EOPNOTSUPP || errno == ENOSYS ||
			      errno == EINVAL)) {
			/* no RWF_DSYNC here (a kernel before 4.7): flush,
			 * now and from now on */
			atomic_store(&f->no_dsync, true);
			e = file_flush(dev);
			break;
		}
		/* a short data-sync write: the simple way is a flush */
		e = w < 0 ? -errno : file_flush(dev);
		if (w < 0)
			log_error("%s: pwritev2(RWF_DSYNC) of %" PRIu64
				  " bytes at %" PRIu64 ": %s",
				  dev->name, barrier->len, barrier->off,
				  strerror(-e));
		break;
	}
	holes_forget(f, barrier->off, barrier->len);
	free(buf);
	return e;
}

/*
 * The last resort: write zeroes from a buffer of at most ZERO_BUF_MAX.
 * They are in the page cache now, and a barrier does not write back
 * what it is not told of: the next one is a whole flush
 * (file_sync_ranges).
 */
static int write_zero_bytes(struct io_dev *dev, uint64_t off, uint64_t len)
{
	size_t bsz = (size_t) MIN(len, (uint64_t) ZERO_BUF_MAX);
	void *zero;
	int r;

	atomic_store(&to_file(dev)->zero_bytes_written, true);
	r = posix_memalign(&zero, DIRECT_ALIGN, bsz);
	if (r) {
		log_error("%s: allocating %zu bytes of zeroes: %s", dev->name,
			  bsz, strerror(r));
		return -r;
	}
	memset(zero, 0, bsz);
	while (len) {
		size_t n = (size_t) MIN(len, (uint64_t) bsz);

		r = file_write(dev, zero, n, off);
		if (r)
			break;
		off += n;
		len -= n;
	}
	free(zero);
	return r;
}

/* fallocate, retried on EINTR; returns 0 or -errno and does not log. */
static int do_fallocate(struct io_file *f, int mode, uint64_t off, uint64_t len)
{
	while (fallocate(f->fd, mode, (off_t) off, (off_t) len) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* BLKZEROOUT; returns 0 or -errno and does not log. */
static int do_blkzeroout(struct io_file *f, uint64_t off, uint64_t len)
{
	uint64_t range[2] = {off, len};

	while (ioctl(f->fd, BLKZEROOUT, range) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/*
 * One way of zeroing [off, off + len) (how: its name) has answered r
 * (blk: on a block device).  Returns 0 when it zeroed the range, the
 * error (logged) when it failed, or 1 when the kernel or the filesystem
 * does not support it (see unsupported): try the next way.
 */
static int zeroed(struct io_dev *dev, const char *how, uint64_t off,
		  uint64_t len, bool blk, int r)
{
	if (r == 0)
		return 0;
	if (unsupported(r, blk))
		return 1;
	log_error("%s: %s of %" PRIu64 " bytes at %" PRIu64 ": %s", dev->name,
		  how, len, off, strerror(-r));
	return r;
}

static int file_write_zeroes(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_file *f = to_file(dev);
	int r;

	if (dev->flags & IO_DEV_BLOCKDEV) {
		r = zeroed(dev, "BLKZEROOUT", off, len, true,
			   do_blkzeroout(f, off, len));
		return r <= 0 ? r : write_zero_bytes(dev, off, len);
	}
	r = zeroed(dev, "fallocate(ZERO_RANGE)", off, len, false,
		   do_fallocate(f, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
				off, len));
	if (r <= 0)
		return r;
	r = zeroed(dev, "fallocate(PUNCH_HOLE)", off, len, false,
		   do_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				off, len));
	return r <= 0 ? r : write_zero_bytes(dev, off, len);
}

static int file_discard(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_file *f = to_file(dev);
	bool blk = dev->flags & IO_DEV_BLOCKDEV;
	int r;

	r = zeroed(dev, "fallocate(PUNCH_HOLE)", off, len, blk,
		   do_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				off, len));
	if (r <= 0)
		return r;
	if (blk)
		return file_write_zeroes(dev, off, len);
	return write_zero_bytes(dev, off, len);
}

/* fallocate(KEEP_SIZE) of a regular file: unwritten extents where it
 * had holes.  They read as zeroes, so the known holes stay known. */
static int file_prealloc(struct io_dev *dev, uint64_t off, uint64_t len)
{
	if ((dev->flags & IO_DEV_BLOCKDEV) || !to_file(dev)->prealloc)
		return -EOPNOTSUPP;
	return do_fallocate(to_file(dev), FALLOC_FL_KEEP_SIZE, off, len);
}

static int file_resize(struct io_dev *dev, uint64_t new_size)
{
	struct io_file *f = to_file(dev);
	int r;

	if (dev->flags & IO_DEV_BLOCKDEV) {
		if (new_size == dev->size)
			return 0;
		log_error("%s: cannot resize a block device from %" PRIu64
			  " to %" PRIu64 " bytes",
			  dev->name, dev->size, new_size);
		return -EOPNOTSUPP;
	}
	if (new_size > (uint64_t) INT64_MAX) {
		log_error("%s: size %" PRIu64 " too large", dev->name,
			  new_size);
		return -EFBIG;
	}
	while (ftruncate(f->fd, (off_t) new_size) < 0) {
		if (errno == EINTR)
			continue;
		r = -errno;
		log_error("%s: ftruncate to %" PRIu64 ": %s", dev->name,
			  new_size, strerror(-r));
		return r;
	}
	dev->size = new_size;
	return 0;
}

static void file_close(struct io_dev *dev)
{
	struct io_file *f = to_file(dev);

	/* close(2) may report a deferred write error; whoever cared about
	 * durability has flushed before closing, so there is no one left to
	 * tell but the log */
	if (close(f->fd) < 0)
		log_warn("%s: close: %s", dev->name, strerror(errno));
	io_claim_release(f->claim);
	pthread_mutex_destroy(&f->hlock);
	free(f);
}

/*
 * A hole of a regular file reads as zeroes: SEEK_DATA from off finds no
 * data before off + len.  (Dirty page-cache data counts as data: the
 * filesystems we run on look at the page cache too.)  Block devices have
 * no holes we can trust.
 *
 * SEEK_DATA takes the file's inode lock, which every buffered write holds,
 * and the pool asks once per block it provisions: so the holes it finds
 * (from off up to the next data) are remembered, less every range written
 * since (file_write), and a range inside one is answered from memory.
 * Why a write racing with the SEEK_DATA cannot be missed: [lo, hi) is
 * widened to cover off before the lseek, under hlock, and held until the
 * hole is recorded; a write checks [lo, hi) after its pwrite returned.
 * Either its data was in the page cache when SEEK_DATA looked (then no
 * hole is recorded there), or its check came after the widening and it
 * waits for hlock, then takes its range out.
 */
static int file_is_hole(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_file *f = to_file(dev);
	uint64_t end = off + len, hole_end;
	bool hole;
	off_t d;

	if (dev->flags & IO_DEV_BLOCKDEV)
		return 0;
	pthread_mutex_lock(&f->hlock);
	for (unsigned int i = 0; i < f->nholes; i++) {
		if (f->holes[i].start <= off && end <= f->holes[i].end) {
			pthread_mutex_unlock(&f->hlock);
			return 1;
		}
	}
	if (off < atomic_load(&f->lo))
		atomic_store(&f->lo, off);
	atomic_store(&f->hi, UINT64_MAX);
	d = lseek(f->fd, (off_t) off, SEEK_DATA);
	if (d < 0) {
		hole = errno == ENXIO; /* no data after off at all */
		hole_end = dev->size;
	} else {
		hole = (uint64_t) d >= end;
		hole_end = (uint64_t) d;
	}
	if (io_file_seek_hook)
		io_file_seek_hook();
	if (hole && hole_end > off) {
		/* when full, in place of the smallest */
		struct hole *h = f->nholes < HOLES_MAX ? &f->holes[f->nholes++]
						       : smallest_hole(f);

		*h = (struct hole){off, hole_end};
	}
	holes_bound(f);
	pthread_mutex_unlock(&f->hlock);
	return hole;
}

/* fallocate(KEEP_SIZE) on any regular file (io_prealloc only where it
 * pays); nothing to do on a block device.  With UNSHARE_RANGE first,
 * while the filesystem takes it: on XFS a block shared with a reflinked
 * copy of the pool (cp makes one by default) would need new room at its
 * next write, KEEP_SIZE alone leaves it shared, and a commit writing there
 * on a full filesystem would fail. */
static int file_reserve(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_file *f = to_file(dev);
	int r;

	if (dev->flags & IO_DEV_BLOCKDEV)
		return 0;
	if (atomic_load(&f->unshare)) {
		r = do_fallocate(
		    f, FALLOC_FL_KEEP_SIZE | FALLOC_FL_UNSHARE_RANGE, off, len);
		if (r != -EOPNOTSUPP && r != -EINVAL)
			return r;
		atomic_store(&f->unshare, false);
	}
	return do_fallocate(f, FALLOC_FL_KEEP_SIZE, off, len);
}

/* POSIX_FADV_DONTNEED: clean pages of the file (or the device) leave the
 * page cache; the known holes stay right (dropping data changes none). */
static int file_drop_cache(struct io_dev *dev, uint64_t off, uint64_t len)
{
	int r = posix_fadvise(to_file(dev)->fd, (off_t) off, (off_t) len,
			      POSIX_FADV_DONTNEED);

	if (r)
		log_warn("%s: posix_fadvise(DONTNEED): %s", dev->name,
			 strerror(r));
	return -r;
}

static int file_fd(struct io_dev *dev)
{
	return to_file(dev)->fd;
}

static const struct io_ops file_ops = {
    .drop_cache = file_drop_cache,
    .reserve = file_reserve,
    .fd = file_fd,
    .is_hole = file_is_hole,
    .sync_ranges = file_sync_ranges,
    .prealloc = file_prealloc,
    .read = file_read,
    .write = file_write,
    .flush = file_flush,
    .discard = file_discard,
    .write_zeroes = file_write_zeroes,
    .resize = file_resize,
    .close = file_close,
};

enum ext4_mode {
	EXT4_UNKNOWN,	/* anything we cannot tell for sure */
	EXT4_NOJOURNAL, /* no journal at all */
	EXT4_ORDERED,	/* its own journal, data=ordered */
	EXT4_WRITEBACK, /* a journal, data=writeback */
};

/* Read the first line of path into line (newline dropped); false if it
 * cannot be read. */
static bool read_line(const char *path, char *line, size_t len)
{
	FILE *fp = fopen(path, "re");
	bool ok;

	if (!fp)
		return false;
	ok = fgets(line, (int) len, fp) != NULL;
	fclose(fp);
	if (ok)
		line[strcspn(line, "\n")] = 0;
	return ok;
}

/* The kernel's name of block device maj:min ("sda1", "loop0", "dm-2"),
 * from /sys/dev/block/MAJ:MIN/uevent; false if there is none. */
static bool blockdev_name(dev_t d, char *name, size_t len)
{
	char path[96], line[256];
	bool found = false;
	FILE *fp;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/uevent", major(d),
		 minor(d));
	fp = fopen(path, "re");
	if (!fp)
		return false;
	while (!found && fgets(line, sizeof(line), fp)) {
		size_t n = strcspn(line + 8, "\n");

		if (strncmp(line, "DEVNAME=", 8) || !n || n >= len ||
		    memchr(line + 8, '/', n))
			continue;
		memcpy(name, line + 8, n);
		name[n] = 0;
		found = true;
	}
	fclose(fp);
	return found;
}

/*
 * How fd's ext4 filesystem keeps its metadata.  The data mode comes from
 * /proc/fs/ext4/DEV/options, which lists every option in force, defaults
 * included; /proc/self/mountinfo does not: it leaves out what equals the
 * default, and a data mode set as a default mount option in the
 * superblock (tune2fs -o journal_data_writeback) is such a default.  The
 * journal must be the filesystem's own (/proc/fs/jbd2/DEV-8): the options
 * file says nothing about an external one.  No journal at all is
 * /sys/fs/ext4/DEV/journal_task reading "<none>" (Linux 5.1 and later).
 * Anything else (data=journal, an external journal, an older kernel, a
 * file we cannot read) is unknown.  In data=writeback a journal commit
 * may name blocks whose data has not reached the disk; without a journal
 * nothing orders or commits the allocations at all.
 */
static enum ext4_mode ext4_mode(int fd)
{
	char dev[64], path[160], line[256];
	bool ordered = false, writeback = false;
	struct stat st;
	FILE *fp;

	if (fstat(fd, &st) < 0 || !blockdev_name(st.st_dev, dev, sizeof(dev)))
		return EXT4_UNKNOWN;
	snprintf(path, sizeof(path), "/proc/fs/ext4/%s/options", dev);
	fp = fopen(path, "re");
	if (fp) {
		while (fgets(line, sizeof(line), fp)) {
			line[strcspn(line, "\n")] = 0;
			ordered |= !strcmp(line, "data=ordered");
			writeback |= !strcmp(line, "data=writeback");
		}
		fclose(fp);
	}
	if (writeback)
		return EXT4_WRITEBACK;
	snprintf(path, sizeof(path), "/proc/fs/jbd2/%s-8", dev);
	if (ordered && access(path, F_OK) == 0)
		return EXT4_ORDERED;
	snprintf(path, sizeof(path), "/sys/fs/ext4/%s/journal_task", dev);
	if (!ordered && read_line(path, line, sizeof(line)) &&
	    !strcmp(line, "<none>"))
		return EXT4_NOJOURNAL;
	return EXT4_UNKNOWN;
}

/* TV_IO_NO_RANGED_SYNC=1 in the environment: every barrier a flush. */
static bool ranged_sync_off(void)
{
	const char *off = getenv("TV_IO_NO_RANGED_SYNC");

	return off && *off && strcmp(off, "0");
}

/*
 * A file on btrfs is copied on every overwrite unless it has the nocow
 * attribute (chattr +C), which only an empty file can be given: then no
 * reservation holds and a full filesystem fails commits.  A pool file we
 * create gets it (as qemu-img and libvirt do for images; btrfs then keeps
 * no checksums of the file's data, while thinvol checks its metadata
 * itself).  Returns whether fd is such a copy-on-write file.
 */
static bool btrfs_cow(int fd, bool set)
{
	int attr = 0;

	if (ioctl(fd, FS_IOC_GETFLAGS, &attr) < 0)
		return true; /* cannot tell: take the worse case */
	if (!(attr & FS_NOCOW_FL) && set) {
		attr |= FS_NOCOW_FL;
		if (ioctl(fd, FS_IOC_SETFLAGS, &attr) < 0 ||
		    ioctl(fd, FS_IOC_GETFLAGS, &attr) < 0)
			return true;
	}
	return !(attr & FS_NOCOW_FL);
}

/*
 * Whether file_sync_ranges is sound on fd's filesystem.  It relies on a
 * data sync of one range committing every allocation and hole punch of
 * the whole file made before it, and on no committed allocation naming a
 * block whose data is not on the disk yet: journalled ext4 in ordered
 * mode (the inode's datasync transaction, which fallocate and block
 * allocation both advance; ordered data is written before the commit)
 * and XFS (the inode's last log sequence) do so; tmpfs has nothing to
 * make durable.
 * Elsewhere (btrfs, NFS, ...) a barrier is a whole fdatasync.
 *
 * A block device needs neither: it has no allocation to commit, and its
 * data sync (blkdev_fsync: the range written back, then a cache flush
 * of the whole device) makes every write that completed before it
 * durable, the ranges written back by sync_file_range included.  It has
 * no holes either (file_is_hole), so the engine syncs every new block's
 * data before a commit names it (docs/format.md "Ranged commits").
 */
static bool is_ranged_fs(const struct statfs *sfs, enum ext4_mode mode)
{
	if (ranged_sync_off())
		return false;
	switch ((unsigned long) sfs->f_type) {
	case FS_EXT4:
		return mode == EXT4_ORDERED;
	case FS_XFS:
	case FS_TMPFS:
		return true;
	default:
		return false;
	}
}

static int open_fd(const char *path, unsigned int flags, bool *created)
{
	int oflags = O_CLOEXEC;
	int fd;

	oflags |= (flags & IO_FILE_RDONLY) ? O_RDONLY : O_RDWR;
	if (flags & IO_FILE_DIRECT)
		oflags |= O_DIRECT;
	*created = false;
	if (flags & IO_FILE_CREATE) {
		/* O_EXCL first even without IO_FILE_EXCL, to learn whether
		 * the file is ours to size (and to remove on failure) */
		fd = open(path, oflags | O_CREAT | O_EXCL, 0600);
		if (fd >= 0) {
			*created = true;
			return fd;
		}
		if (errno != EEXIST || (flags & IO_FILE_EXCL))
			return -errno;
	}
	fd = open(path, oflags);
	return fd >= 0 ? fd : -errno;
}

/*
 * The device for fd, open on path (see io.h); created: fd is a file made
 * just now, to be sized to size bytes.  Takes fd: closed on failure.
 */
static int file_dev(int fd, const char *path, unsigned int flags, bool created,
		    uint64_t size, struct io_dev **out)
{
	struct io_file *f;
	unsigned int dflags = 0;
	bool prealloc = false, cow = false, have_sfs = false;
	struct statfs sfs;
	struct stat st;
	uint64_t dsize;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		log_error("%s: fstat: %s", path, strerror(-r));
		goto err_close;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &dsize) < 0) {
			r = -errno;
			log_error("%s: BLKGETSIZE64: %s", path, strerror(-r));
			goto err_close;
		}
		dflags |= IO_DEV_BLOCKDEV;
		if (!ranged_sync_off())
			dflags |= IO_DEV_RANGED_SYNC; /* see is_ranged_fs */
	} else if (S_ISREG(st.st_mode)) {
		dflags |= IO_DEV_SPARSE;
		dsize = (uint64_t) st.st_size;
		have_sfs = fstatfs(fd, &sfs) == 0;
		if (created) {
			/* while the file is empty: the only time btrfs
			 * takes nocow */
			if (have_sfs && sfs.f_type == FS_BTRFS)
				cow = btrfs_cow(fd, true);
			if (size > (uint64_t) INT64_MAX) {
				r = -EFBIG;
				log_error("%s: size %" PRIu64 " too large",
					  path, size);
				goto err_close;
			}
			if (ftruncate(fd, (off_t) size) < 0) {
				r = -errno;
				log_error("%s: ftruncate to %" PRIu64 ": %s",
					  path, size, strerror(-r));
				goto err_close;
			}
			dsize = size;
		}
	} else {
		r = -EINVAL;
		log_error("%s: neither a regular file nor a block device",
			  path);
		goto err_close;
	}
	if (flags & IO_FILE_RDONLY)
		dflags |= IO_DEV_RDONLY;
	if (flags & IO_FILE_DIRECT)
		dflags |= IO_DEV_DIRECT;
	if (have_sfs) {
		enum ext4_mode mode =
		    sfs.f_type == FS_EXT4 ? ext4_mode(fd) : EXT4_UNKNOWN;

		if (is_ranged_fs(&sfs, mode))
			dflags |= IO_DEV_RANGED_SYNC;
		if (mode == EXT4_NOJOURNAL)
			dflags |= IO_DEV_FS_NO_JOURNAL;
		prealloc = sfs.f_type == FS_EXT4 || sfs.f_type == FS_XFS;
		/* a file made here was asked before it had a size */
		if (sfs.f_type == FS_BTRFS &&
		    (created ? cow : btrfs_cow(fd, false)))
			dflags |= IO_DEV_FS_COW;
		if (sfs.f_type == FS_XFS)
			dflags |= IO_DEV_FS_SHARING;
	}

	f = calloc(1, sizeof(*f));
	if (!f) {
		r = -ENOMEM;
		log_error("%s: out of memory", path);
		goto err_close;
	}
	f->fd = fd;
	f->prealloc = prealloc;
	atomic_init(&f->unshare, S_ISREG(st.st_mode));
	pthread_mutex_init(&f->hlock, NULL);
	atomic_init(&f->lo, UINT64_MAX);
	atomic_init(&f->hi, 0);
	f->dev.ops = &file_ops;
	f->dev.size = dsize;
	f->dev.flags = dflags;
	if (snprintf(f->dev.name, sizeof(f->dev.name), "%s", path) >=
	    (int) sizeof(f->dev.name)) {
		/* a long path is cut short in messages; no harm done */
	}
	*out = &f->dev;
	return 0;

err_close:
	close(fd);
	return r;
}

/*
 * Open path (see io.h).  A file created here has mode 0600: it will hold
 * other people's volumes.  On failure a file created here is removed again.
 */
int io_file_open(const char *path, unsigned int flags, uint64_t size,
		 struct io_dev **out)
{
	bool created;
	int fd, r;

	if ((flags & IO_FILE_CREATE) && (flags & IO_FILE_RDONLY)) {
		log_error("%s: cannot create a file read-only", path);
		return -EINVAL;
	}
	fd = open_fd(path, flags, &created);
	if (fd < 0) {
		r = fd;
		log_error("%s: open: %s", path, strerror(-r));
		return r;
	}
	r = file_dev(fd, path, flags, created, size, out);
	if (r < 0 && created)
		unlink(path);
	return r;
}

int io_file_open_fd(int fd, const char *path, unsigned int flags, uint64_t size,
		    struct io_dev **out)
{
	return file_dev(fd, path, flags & ~IO_FILE_CREATE,
			(flags & IO_FILE_CREATE) != 0, size, out);
}

int io_file_fd(struct io_dev *dev)
{
	if (dev->ops != &file_ops)
		return -EINVAL;
	return to_file(dev)->fd;
}

int io_file_claim(struct io_dev *dev, char *why, size_t whylen)
{
	struct io_file *f;
	int fd, r;

	if (dev->ops != &file_ops) {
		snprintf(why, whylen, "not a file device");
		return -EINVAL;
	}
	f = to_file(dev);
	if (f->claim) {
		snprintf(why, whylen, "claimed already");
		return -EINVAL;
	}
	r = io_claim(f->fd, dev->name, &f->claim, &fd, why, whylen);
	if (r < 0)
		return r;
	/* a block device's exclusive descriptor replaces the plain one
	 * (io-ident.c, rule 4): same device, same access mode */
	if (fd != f->fd) {
		close(f->fd);
		f->fd = fd;
	}
	return 0;
}
