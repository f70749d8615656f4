/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-internal.h - what the files of src/io share:
 *   - claiming the storage a pool is on (io-ident.c, rules 3-6), for
 *     io-file.c;
 *   - the head of a device that wraps another (io-wrap.c), for the test
 *     backends io-fault.c, io-powercut.c and io-quota.c, with the
 *     operations that only pass a request on to the lower device;
 *   - the seeded generator those test backends draw their choices from.
 */
#ifndef TV_IO_INTERNAL_H
#define TV_IO_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/io.h"

/*
 * Claim the storage open on fd (name: its path, for messages).  A block
 * device is opened again O_EXCL: *newfd is that descriptor (owned by the
 * caller, who closes fd and uses it instead), or fd itself for a file.
 * *out holds the locks on everything under it, and on the loop devices
 * over it (rule 5), until io_claim_release.
 * Returns 0, -EBUSY with who holds it in why, or another negative errno
 * with the reason in why.
 */
int io_claim(int fd, const char *name, struct io_claim **out, int *newfd,
	     char *why, size_t whylen);

/*
 * The first member of every wrapping device: the device it presents, the
 * one under it, and the mutex each wrapper uses for its own state (its
 * file says what the mutex protects).  A wrapper's io_dev pointer
 * converts back to its struct io_wrap and to the wrapper itself.
 */
struct io_wrap {
	struct io_dev dev; /* first: io_dev pointers convert back */
	struct io_dev *lower;
	bool own_lower; /* closing the wrapper closes lower */
	pthread_mutex_t lock;
};

/*
 * A zeroed wrapper of size bytes (a struct that starts with struct
 * io_wrap) over lower, with ops, lower's size, lower's flags plus flags,
 * and the name "prefix:<lower's name>" (cut to fit).  The caller owns
 * *out until it hands it out as a device; io_wrap_free undoes this.
 * Returns 0 or a negative errno (logged).
 */
int io_wrap_new(size_t size, const struct io_ops *ops, const char *prefix,
		struct io_dev *lower, bool own_lower, unsigned int flags,
		void **out);
/* Close lower if the wrapper owns it, destroy the mutex and free w: the
 * last step of a wrapper's close, after it freed what it owns itself. */
void io_wrap_free(struct io_wrap *w);

/* The io_wrap at the head of a wrapping device. */
static inline struct io_wrap *io_wrap_of(struct io_dev *dev)
{
	return (struct io_wrap *) ((char *) dev -
				   offsetof(struct io_wrap, dev));
}

/*
 * Operations that pass the request on to lower unchanged, without the
 * wrapper's mutex: for a wrapper that neither counts, fails nor changes
 * that kind of request.
 */
int io_wrap_read(struct io_dev *dev, void *buf, size_t len, uint64_t off);
int io_wrap_flush(struct io_dev *dev);
int io_wrap_sync_ranges(struct io_dev *dev, const struct io_range *r, size_t n,
			const struct io_range *barrier);
int io_wrap_is_hole(struct io_dev *dev, uint64_t off, uint64_t len);
int io_wrap_prealloc(struct io_dev *dev, uint64_t off, uint64_t len);
int io_wrap_reserve(struct io_dev *dev, uint64_t off, uint64_t len);
int io_wrap_drop_cache(struct io_dev *dev, uint64_t off, uint64_t len);
int io_wrap_fd(struct io_dev *dev);

/*
 * splitmix64: the next number of the sequence whose state is *x.  The
 * test backends seed it from their configuration, so that a run replays
 * exactly.
 */
static inline uint64_t io_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

#endif
