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

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/checked.h"
#include "util/log.h"

#define QPAGE 4096u

struct io_quota {
	struct io_dev dev; /* first: io_dev pointers convert back */
	struct io_dev *lower;
	bool own_lower;
	pthread_mutex_t lock;
	uint64_t *alloc; /* bit per page */
	uint64_t pages;
	uint64_t used, room; /* pages */
};

static const struct io_ops quota_ops;

static struct io_quota *to_q(struct io_dev *dev)
{
	assert(dev->ops == &quota_ops);
	return (struct io_quota *)((char *)dev - offsetof(struct io_quota, dev));
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

static int quota_read(struct io_dev *dev, void *buf, size_t len, uint64_t off)
{
	return io_read(to_q(dev)->lower, buf, len, off);
}

static int quota_write(struct io_dev *dev, const void *buf, size_t len,
		       uint64_t off)
{
	struct io_quota *q = to_q(dev);
	int r;

	pthread_mutex_lock(&q->lock);
	r = take(q, off, len);
	if (r == 0)
		r = io_write(q->lower, buf, len, off);
	pthread_mutex_unlock(&q->lock);
	return r;
}

static int quota_take(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_quota *q = to_q(dev);
	int r;

	pthread_mutex_lock(&q->lock);
	r = take(q, off, len);
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* Rule 3. */
static int quota_punch(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_quota *q = to_q(dev);
	uint64_t first = DIV_ROUND_UP(off, QPAGE), end = (off + len) / QPAGE;
	int r;

	pthread_mutex_lock(&q->lock);
	r = io_write_zeroes(q->lower, off, len);
	for (uint64_t pg = first; r == 0 && pg < end; pg++) {
		if (!is_alloc(q, pg))
			continue;
		q->alloc[pg / 64] &= ~(1ull << (pg % 64));
		q->used--;
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

static int quota_flush(struct io_dev *dev)
{
	return io_flush(to_q(dev)->lower);
}

static int quota_sync_ranges(struct io_dev *dev, const struct io_range *r,
			     size_t n, const struct io_range *barrier)
{
	return io_sync_ranges(to_q(dev)->lower, r, n, barrier);
}

static int quota_is_hole(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_quota *q = to_q(dev);
	uint64_t first = off / QPAGE, end = DIV_ROUND_UP(off + len, QPAGE);
	int hole = 1;

	pthread_mutex_lock(&q->lock);
	for (uint64_t pg = first; pg < end && hole; pg++)
		hole = !is_alloc(q, pg);
	pthread_mutex_unlock(&q->lock);
	return hole;
}

static int quota_resize(struct io_dev *dev, uint64_t new_size)
{
	struct io_quota *q = to_q(dev);
	uint64_t pages = DIV_ROUND_UP(new_size, QPAGE);
	int r;

	pthread_mutex_lock(&q->lock);
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
	r = io_resize(q->lower, new_size);
	if (r == 0) {
		for (uint64_t pg = pages; pg < q->pages; pg++)
			if (is_alloc(q, pg)) {
				q->alloc[pg / 64] &= ~(1ull << (pg % 64));
				q->used--;
			}
		q->pages = MAX(pages, q->pages);
		dev->size = q->lower->size;
	}
out:
	pthread_mutex_unlock(&q->lock);
	return r;
}

static void quota_close(struct io_dev *dev)
{
	struct io_quota *q = to_q(dev);

	if (q->own_lower)
		io_close(q->lower);
	pthread_mutex_destroy(&q->lock);
	free(q->alloc);
	free(q);
}

static int quota_fd(struct io_dev *dev)
{
	return io_dev_fd(to_q(dev)->lower);
}

static int quota_drop_cache(struct io_dev *dev, uint64_t off, uint64_t len)
{
	return io_drop_cache(to_q(dev)->lower, off, len);
}

static const struct io_ops quota_ops = {
	.read = quota_read,
	.write = quota_write,
	.flush = quota_flush,
	.sync_ranges = quota_sync_ranges,
	.discard = quota_punch,
	.write_zeroes = quota_punch,
	.resize = quota_resize,
	.close = quota_close,
	.is_hole = quota_is_hole,
	.prealloc = quota_take,
	.reserve = quota_take,
	.drop_cache = quota_drop_cache,
	.fd = quota_fd,
};

int io_quota_wrap(struct io_dev *lower, bool own_lower, uint64_t bytes,
		  struct io_dev **out)
{
	struct io_quota *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->pages = DIV_ROUND_UP(lower->size, QPAGE);
	q->alloc = calloc(DIV_ROUND_UP(q->pages, 64) + 1, 8);
	if (!q->alloc) {
		free(q);
		return -ENOMEM;
	}
	pthread_mutex_init(&q->lock, NULL);
	q->lower = lower;
	q->own_lower = own_lower;
	q->room = bytes / QPAGE;
	q->dev.ops = &quota_ops;
	q->dev.size = lower->size;
	q->dev.flags = lower->flags | IO_DEV_SPARSE;
	snprintf(q->dev.name, sizeof(q->dev.name), "quota:%.57s",
		 lower->name);
	*out = &q->dev;
	return 0;
}

void io_quota_set(struct io_dev *dev, uint64_t bytes)
{
	struct io_quota *q = to_q(dev);

	pthread_mutex_lock(&q->lock);
	q->room = bytes / QPAGE;
	pthread_mutex_unlock(&q->lock);
}

uint64_t io_quota_used(struct io_dev *dev)
{
	struct io_quota *q = to_q(dev);
	uint64_t n;

	pthread_mutex_lock(&q->lock);
	n = q->used * QPAGE;
	pthread_mutex_unlock(&q->lock);
	return n;
}
