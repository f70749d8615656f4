/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * iowrap - a test device stacked on another that passes every call down.
 *
 * A test that watches or changes some calls of the engine's device embeds
 * struct iowrap first in its own device, points its io_ops at its own
 * functions for those calls and at these for the rest, and sets it up
 * with iowrap_init.  The wrapper does not own lower.
 */
#ifndef TV_TESTS_IOWRAP_H
#define TV_TESTS_IOWRAP_H

#include "io/io.h"

struct iowrap {
	struct io_dev dev;
	struct io_dev *lower; /* borrowed */
};

static inline struct io_dev *iowrap_lower(struct io_dev *d)
{
	return ((struct iowrap *) d)->lower;
}

/* d's size is lower's; flags are none (the device looks like memory). */
void iowrap_init(struct iowrap *w, const struct io_ops *ops,
		 struct io_dev *lower, const char *name);

int iowrap_read(struct io_dev *d, void *buf, size_t len, uint64_t off);
int iowrap_write(struct io_dev *d, const void *buf, size_t len, uint64_t off);
int iowrap_flush(struct io_dev *d);
int iowrap_discard(struct io_dev *d, uint64_t off, uint64_t len);
int iowrap_write_zeroes(struct io_dev *d, uint64_t off, uint64_t len);
/* -EOPNOTSUPP: the tests' pools never grow. */
int iowrap_no_resize(struct io_dev *d, uint64_t new_size);

#endif
