/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io.c - the checked front door of the device seam.  Contract in io.h.
 *
 * Every request is validated here, once, before it reaches a backend:
 * len == 0 succeeds without calling the backend, a range that does not
 * lie inside the device (overflow-checked) is -EINVAL, and a mutating
 * request on a read-only device is -EROFS.  Backends may therefore assume
 * well-formed ranges.
 */
#include "io/io.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "util/checked.h"
#include "util/log.h"

static int check_range(struct io_dev *dev, const char *what, uint64_t off,
		       uint64_t len)
{
	if (!range_outside(off, len, dev->size))
		return 0;
	log_error("%s: %s of %" PRIu64 " bytes at %" PRIu64
		  " outside device of %" PRIu64 " bytes",
		  dev->name, what, len, off, dev->size);
	return -EINVAL;
}

static int check_writable(struct io_dev *dev, const char *what)
{
	if (!(dev->flags & IO_DEV_RDONLY))
		return 0;
	log_error("%s: %s on a read-only device", dev->name, what);
	return -EROFS;
}

/* The front door of a change to [off, off + len): < 0 an error, 1 nothing
 * to do (len 0, on a writable device), 0 go on. */
static int check_change(struct io_dev *dev, const char *what, uint64_t off,
			uint64_t len)
{
	int r = check_writable(dev, what);

	if (r)
		return r;
	return len ? check_range(dev, what, off, len) : 1;
}

/*
 * A change to [off, off + len) without a buffer, through the front door:
 * op, or none where the backend has no such operation (the optional
 * ones), in which case absent is the answer.  Callers assert dev before
 * they read its ops.
 */
static int change(struct io_dev *dev, const char *what, uint64_t off,
		  uint64_t len,
		  int (*op)(struct io_dev *dev, uint64_t off, uint64_t len),
		  int absent)
{
	int r = check_change(dev, what, off, len);

	if (r)
		return r < 0 ? r : 0;
	return op ? op(dev, off, len) : absent;
}

int io_read(struct io_dev *dev, void *buf, size_t len, uint64_t off)
{
	int r;

	assert(dev && (buf || !len));
	if (!len)
		return 0;
	r = check_range(dev, "read", off, len);
	if (r)
		return r;
	return dev->ops->read(dev, buf, len, off);
}

int io_write(struct io_dev *dev, const void *buf, size_t len, uint64_t off)
{
	int r;

	assert(dev && (buf || !len));
	r = check_change(dev, "write", off, len);
	if (r)
		return r < 0 ? r : 0;
	return dev->ops->write(dev, buf, len, off);
}

int io_flush(struct io_dev *dev)
{
	assert(dev);
	return dev->ops->flush(dev);
}

static int cmp_range(const void *a, const void *b)
{
	uint64_t x = ((const struct io_range *) a)->off;
	uint64_t y = ((const struct io_range *) b)->off;

	return x < y ? -1 : x > y;
}

size_t io_ranges_merge(struct io_range *v, size_t n)
{
	size_t k = 0;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_range);
	for (size_t i = 1; i < n; i++) {
		if (v[i].off <= v[k].off + v[k].len) {
			uint64_t end =
			    MAX(v[k].off + v[k].len, v[i].off + v[i].len);
			v[k].len = end - v[k].off;
		} else {
			v[++k] = v[i];
		}
	}
	return k + 1;
}

int io_sync_ranges(struct io_dev *dev, const struct io_range *r, size_t n,
		   const struct io_range *barrier)
{
	int e;

	assert(dev && (r || !n));
	e = check_writable(dev, "sync");
	if (e)
		return e;
	for (size_t i = 0; i < n; i++) {
		e = check_range(dev, "sync", r[i].off, r[i].len);
		if (e)
			return e;
	}
	if (barrier) {
		e = check_range(dev, "sync barrier", barrier->off,
				barrier->len);
		if (e)
			return e;
		if (!barrier->len) {
			log_error("%s: sync with an empty barrier", dev->name);
			return -EINVAL;
		}
		if (!(dev->flags & IO_DEV_RANGED_SYNC) ||
		    !dev->ops->sync_ranges)
			return dev->ops->flush(dev);
	}
	if (!dev->ops->sync_ranges || !(dev->flags & IO_DEV_RANGED_SYNC))
		return 0;
	if (!barrier && !n)
		return 0;
	return dev->ops->sync_ranges(dev, r, n, barrier);
}

int io_prealloc(struct io_dev *dev, uint64_t off, uint64_t len)
{
	assert(dev);
	return change(dev, "prealloc", off, len, dev->ops->prealloc,
		      -EOPNOTSUPP);
}

int io_discard(struct io_dev *dev, uint64_t off, uint64_t len)
{
	assert(dev);
	return change(dev, "discard", off, len, dev->ops->discard, 0);
}

int io_reserve(struct io_dev *dev, uint64_t off, uint64_t len)
{
	assert(dev);
	return change(dev, "reserve", off, len, dev->ops->reserve, 0);
}

int io_drop_cache(struct io_dev *dev, uint64_t off, uint64_t len)
{
	assert(dev);
	if (off > dev->size || (len && range_outside(off, len, dev->size)))
		return -EINVAL;
	return dev->ops->drop_cache ? dev->ops->drop_cache(dev, off, len) : 0;
}

int io_is_hole(struct io_dev *dev, uint64_t off, uint64_t len)
{
	assert(dev);
	if (!dev->ops->is_hole || !len || check_range(dev, "is_hole", off, len))
		return 0;
	return dev->ops->is_hole(dev, off, len) == 1;
}

int io_write_zeroes(struct io_dev *dev, uint64_t off, uint64_t len)
{
	assert(dev);
	return change(dev, "write_zeroes", off, len, dev->ops->write_zeroes, 0);
}

int io_resize(struct io_dev *dev, uint64_t new_size)
{
	int r;

	assert(dev);
	r = check_writable(dev, "resize");
	if (r)
		return r;
	return dev->ops->resize(dev, new_size);
}

void io_close(struct io_dev *dev)
{
	if (dev)
		dev->ops->close(dev);
}

int io_dev_fd(struct io_dev *dev)
{
	return dev->ops->fd ? dev->ops->fd(dev) : -EINVAL;
}
