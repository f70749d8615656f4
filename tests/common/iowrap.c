/* SPDX-License-Identifier: GPL-2.0-or-later */
/* iowrap - see iowrap.h */
#include "iowrap.h"

#include <errno.h>
#include <stdio.h>

void iowrap_init(struct iowrap *w, const struct io_ops *ops,
		 struct io_dev *lower, const char *name)
{
	w->dev.ops = ops;
	w->dev.size = lower->size;
	snprintf(w->dev.name, sizeof(w->dev.name), "%s", name);
	w->lower = lower;
}

int iowrap_read(struct io_dev *d, void *buf, size_t len, uint64_t off)
{
	return io_read(iowrap_lower(d), buf, len, off);
}

int iowrap_write(struct io_dev *d, const void *buf, size_t len, uint64_t off)
{
	return io_write(iowrap_lower(d), buf, len, off);
}

int iowrap_flush(struct io_dev *d)
{
	return io_flush(iowrap_lower(d));
}

int iowrap_discard(struct io_dev *d, uint64_t off, uint64_t len)
{
	return io_discard(iowrap_lower(d), off, len);
}

int iowrap_write_zeroes(struct io_dev *d, uint64_t off, uint64_t len)
{
	return io_write_zeroes(iowrap_lower(d), off, len);
}

int iowrap_no_resize(struct io_dev *d, uint64_t new_size)
{
	(void) d;
	(void) new_size;
	return -EOPNOTSUPP;
}
