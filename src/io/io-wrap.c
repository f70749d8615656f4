/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-wrap.c - the head of a device that wraps another (io-internal.h):
 * making and freeing it, and the operations that pass a request on to the
 * lower device unchanged.  Used by the test backends io-fault.c,
 * io-powercut.c and io-quota.c; each keeps its own state and its own
 * rules after the head.
 *
 * The pass-through operations take no lock: the lower device is
 * thread-safe itself (io.h), and a wrapper that has to order a kind of
 * request against its own state does not pass that kind through here.
 */
#include "io/io-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int io_wrap_new(size_t size, const struct io_ops *ops, const char *prefix,
		struct io_dev *lower, bool own_lower, unsigned int flags,
		void **out)
{
	struct io_wrap *w;
	/* the precision keeps prefix, ':' and lower's name inside dev.name */
	int keep = (int) (sizeof(w->dev.name) - 2 - strlen(prefix));
	int r;

	w = calloc(1, size);
	if (!w) {
		log_error("%s:%s: out of memory", prefix, lower->name);
		return -ENOMEM;
	}
	r = pthread_mutex_init(&w->lock, NULL);
	if (r) {
		log_error("%s:%s: pthread_mutex_init: %s", prefix, lower->name,
			  strerror(r));
		free(w);
		return -r;
	}
	w->lower = lower;
	w->own_lower = own_lower;
	w->dev.ops = ops;
	w->dev.size = lower->size;
	w->dev.flags = lower->flags | flags;
	snprintf(w->dev.name, sizeof(w->dev.name), "%s:%.*s", prefix,
		 keep > 0 ? keep : 0, lower->name);
	*out = w;
	return 0;
}

void io_wrap_free(struct io_wrap *w)
{
	if (w->own_lower)
		io_close(w->lower);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

int io_wrap_read(struct io_dev *dev, void *buf, size_t len, uint64_t off)
{
	return io_read(io_wrap_of(dev)->lower, buf, len, off);
}

int io_wrap_flush(struct io_dev *dev)
{
	return io_flush(io_wrap_of(dev)->lower);
}

int io_wrap_sync_ranges(struct io_dev *dev, const struct io_range *r, size_t n,
			const struct io_range *barrier)
{
	return io_sync_ranges(io_wrap_of(dev)->lower, r, n, barrier);
}

int io_wrap_is_hole(struct io_dev *dev, uint64_t off, uint64_t len)
{
	return io_is_hole(io_wrap_of(dev)->lower, off, len);
}

int io_wrap_prealloc(struct io_dev *dev, uint64_t off, uint64_t len)
{
	return io_prealloc(io_wrap_of(dev)->lower, off, len);
}

int io_wrap_reserve(struct io_dev *dev, uint64_t off, uint64_t len)
{
	return io_reserve(io_wrap_of(dev)->lower, off, len);
}

int io_wrap_drop_cache(struct io_dev *dev, uint64_t off, uint64_t len)
{
	return io_drop_cache(io_wrap_of(dev)->lower, off, len);
}

int io_wrap_fd(struct io_dev *dev)
{
	return io_dev_fd(io_wrap_of(dev)->lower);
}
