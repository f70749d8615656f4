/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-quota.c - wraps another device as a sparse file on a filesystem of
 * limited room (a tmpfs), for tests of a full filesystem.  Contract in
 * io.h.
 *
 * Rules:
 *   1. The device is 4 KiB pages, each allocated or a hole; lower holds
 *      the bytes (a hole's are zero).  A bitmap says which are allocated,
 *      and used counts them; used never exceeds room.
 *   2. write allocates the pages it touches, reserve and prealloc those
 *      of their range, all or none: -ENOSPC when the room would not hold
 *      them, and then lower is not touched.
 *   3. discard and write_zeroes punch the pages they cover whole (and
 *      zero the rest through lower), as fallocate(PUNCH_HOLE) does on
 *      tmpfs, where ZERO_RANGE is not supported.
 *   4. Everything else passes through; one mutex serialises rules 1-3.
 */
#include "io/io.h"
#include "io/io-internal.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "util/checked.h"
#include "util/log.h"

#define QPAGE 4096u

struct io_quota {
	struct io_wrap w; /* first; w.lock serialises rules 1-3 */
	uint64_t *alloc;  /* bit per page */
	uint64_t pages;
	uint64_t used, room; /* pages */
};

static const struct io_ops quota_ops;

static struct io_quota *to_q(struct io_dev *dev)
{
	assert(dev->ops == &quota_ops);
	return (struct io_quota *) ((char *) dev -
				    offsetof(struct io_quota, w.dev));
}

static bool is_alloc(const struct io_quota *q, uint64_t pg)
{
	return q->alloc[pg / 64] >> (pg % 64) & 1;
}

/* Rule 2, lock held: allocate the pages of [off, off + len). */
static int take(struct io_quota *q, uint64_t off, uint64_t len)
{
	uint64_t first = off / QPAGE, end = DIV_ROUND_UP(off + len, QPAGE);
	uint64_t need = 0;

	for (uint64_t pg = first; pg < end; pg++)
		need += !is_alloc(q, pg);
	if (q->used + need > q->room)
		return -ENOSPC;
	for (uint64_t pg = first; pg < end; pg++)
		q->alloc[pg / 64] |= 1ull << (pg % 64);
	q->used += need;
	return 0;
}

static int quota_write(struct io_dev *dev, const void *buf, size_t len,
		       uint64_t off)
{
	struct io_quota *q = to_q(dev);
	int r;

	pthread_mutex_lock(&q->w.lock);
	r = take(q, off, len);
	if (r == 0)
		r = io_write(q->w.lower, buf, len, off);
	pthread_mutex_unlock(&q->w.lock);
	return r;
}

static int quota_take(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_quota *q = to_q(dev);
	int r;

	pthread_mutex_lock(&q->w.lock);
	r = take(q, off, len);
	pthread_mutex_unlock(&q->w.lock);
	return r;
}

/* Rule 3. */
static int quota_punch(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_quota *q = to_q(dev);
	uint64_t first = DIV_ROUND_UP(off, QPAGE), end = (off + len) / QPAGE;
	int r;

	pthread_mutex_lock(&q->w.lock);
	r = io_write_zeroes(q->w.lower, off, len);
	for (uint64_t pg = first; r == 0 && pg < end; pg++) {
		if (!is_alloc(q, pg))
			continue;
		q->alloc[pg / 64] &= ~(1ull << (pg % 64));
		q->used--;
	}
	pthread_mutex_unlock(&q->w.lock);
	return r;
}

static int quota_is_hole(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_quota *q = to_q(dev);
	uint64_t first = off / QPAGE, end = DIV_ROUND_UP(off + len, QPAGE);
	int hole = 1;

	pthread_mutex_lock(&q->w.lock);
	for (uint64_t pg = first; pg < end && hole; pg++)
		hole = !is_alloc(q, pg);
	pthread_mutex_unlock(&q->w.lock);
	return hole;
}

static int quota_resize(struct io_dev *dev, uint64_t new_size)
{
	struct io_quota *q = to_q(dev);
	uint64_t pages = DIV_ROUND_UP(new_size, QPAGE);
	int r;

	pthread_mutex_lock(&q->w.lock);
	if (pages > q->pages) {
		uint64_t *a = realloc(q->alloc, DIV_ROUND_UP(pages, 64) * 8);

		if (!a) {
			r = -ENOMEM;
			goto out;
		}
		memset(a + DIV_ROUND_UP(q->pages, 64), 0,
		       (DIV_ROUND_UP(pages, 64) - DIV_ROUND_UP(q->pages, 64)) *
			   8);
		q->alloc = a;
	}
	r = io_resize(q->w.lower, new_size);
	if (r == 0) {
		for (uint64_t pg = pages; pg < q->pages; pg++)
			if (is_alloc(q, pg)) {
				q->alloc[pg / 64] &= ~(1ull << (pg % 64));
				q->used--;
			}
		q->pages = MAX(pages, q->pages);
		dev->size = q->w.lower->size;
	}
out:
	pthread_mutex_unlock(&q->w.lock);
	return r;
}

static void quota_close(struct io_dev *dev)
{
	struct io_quota *q = to_q(dev);

	free(q->alloc);
	io_wrap_free(&q->w);
}

/* Rule 4: read, flush, sync_ranges, drop_cache and fd pass through. */
static const struct io_ops quota_ops = {
    .read = io_wrap_read,
    .write = quota_write,
    .flush = io_wrap_flush,
    .sync_ranges = io_wrap_sync_ranges,
    .discard = quota_punch,
    .write_zeroes = quota_punch,
    .resize = quota_resize,
    .close = quota_close,
    .is_hole = quota_is_hole,
    .prealloc = quota_take,
    .reserve = quota_take,
    .drop_cache = io_wrap_drop_cache,
    .fd = io_wrap_fd,
};

int io_quota_wrap(struct io_dev *lower, bool own_lower, uint64_t bytes,
		  struct io_dev **out)
{
	struct io_quota *q;
	void *w;
	int r;

	r = io_wrap_new(sizeof(*q), &quota_ops, "quota", lower, own_lower,
			IO_DEV_SPARSE, &w);
	if (r)
		return r;
	q = w;
	q->pages = DIV_ROUND_UP(lower->size, QPAGE);
	q->alloc = calloc(DIV_ROUND_UP(q->pages, 64) + 1, 8);
	if (!q->alloc) {
		/* lower stays the caller's on failure */
		q->w.own_lower = false;
		io_wrap_free(&q->w);
		return -ENOMEM;
	}
	q->room = bytes / QPAGE;
	*out = &q->w.dev;
	return 0;
}

void io_quota_set(struct io_dev *dev, uint64_t bytes)
{
	struct io_quota *q = to_q(dev);

	pthread_mutex_lock(&q->w.lock);
	q->room = bytes / QPAGE;
	pthread_mutex_unlock(&q->w.lock);
}

uint64_t io_quota_used(struct io_dev *dev)
{
	struct io_quota *q = to_q(dev);
	uint64_t n;

	pthread_mutex_lock(&q->w.lock);
	n = q->used * QPAGE;
	pthread_mutex_unlock(&q->w.lock);
	return n;
}
