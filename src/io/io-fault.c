/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-fault.c - wraps another device and fails the Nth operation.
 * Contract in io.h.
 *
 * Every operation whose type is in cfg.op_mask is counted (1-based, under
 * the mutex, so concurrent callers each get a distinct index).  Operation
 * number idx fails when the wrapper is armed and idx == fail_at (once) or
 * idx >= fail_at (persistent).  A failing operation:
 *
 *   IO_FAULT_ERROR  does nothing and returns cfg.error.
 *   IO_FAULT_SHORT  a write applies a strict prefix of its sectors
 *                   (possibly none) and returns cfg.error; other
 *                   operations behave as IO_FAULT_ERROR.
 *   IO_FAULT_TORN   a write applies a random non-empty strict subset of
 *                   its sectors and returns 0; a write that touches a
 *                   single sector has no such subset and is dropped
 *                   instead (still returning 0).  Other operations behave
 *                   as IO_FAULT_ERROR.
 *
 * "Sectors" are the pieces of [off, off + len) cut at absolute multiples
 * of IO_SECTOR, i.e. the units a real device tears at.  The prefix length
 * and the subset are drawn from a generator seeded by cfg.seed + idx, so
 * a run replays exactly.
 *
 * resize and close pass through; resize is not counted.
 */
#include "io/io.h"
#include "io/io-internal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>

#include "util/checked.h"
#include "util/log.h"

struct io_fault {
	struct io_wrap w;	 /* first; w.lock protects everything below */
	struct io_fault_cfg cfg; /* cfg.fail_at == 0: disarmed */
	uint64_t count;
	uint64_t failed;
};

static const struct io_ops fault_ops;

static struct io_fault *to_fault(struct io_dev *dev)
{
	assert(dev->ops == &fault_ops);
	return (struct io_fault *) ((char *) dev -
				    offsetof(struct io_fault, w.dev));
}

/*
 * Count an operation of type op.  Returns true if it must fail, with the
 * configuration to fail it by in *cfg and its index in *idx.
 */
static bool fault_hit(struct io_fault *f, unsigned int op,
		      struct io_fault_cfg *cfg, uint64_t *idx)
{
	bool hit = false;

	pthread_mutex_lock(&f->w.lock);
	if (f->cfg.op_mask & op) {
		*idx = ++f->count;
		if (f->cfg.fail_at &&
		    (f->cfg.persistent ? *idx >= f->cfg.fail_at
				       : *idx == f->cfg.fail_at)) {
			hit = true;
			f->failed++;
			*cfg = f->cfg;
		}
	}
	pthread_mutex_unlock(&f->w.lock);
	if (hit)
		log_debug("%s: injecting fault %d (kind %d) into op %" PRIu64,
			  f->w.dev.name, cfg->error, (int) cfg->kind, *idx);
	return hit;
}

/* The pieces of [off, off + len) cut at absolute sector boundaries. */
static uint64_t nr_pieces(uint64_t off, uint64_t len)
{
	return DIV_ROUND_UP(off + len, IO_SECTOR) - off / IO_SECTOR;
}

/* End (exclusive) of piece i of [off, off + len). */
static uint64_t piece_end(uint64_t off, uint64_t len, uint64_t i)
{
	uint64_t e = (off / IO_SECTOR + i + 1) * IO_SECTOR;

	return MIN(e, off + len);
}

static int short_write(struct io_fault *f, const struct io_fault_cfg *cfg,
		       uint64_t idx, const void *buf, size_t len, uint64_t off)
{
	uint64_t rng = cfg->seed + idx;
	uint64_t n = nr_pieces(off, len);
	uint64_t keep = io_splitmix64(&rng) % n; /* strict prefix: < n */
	uint64_t end = keep ? piece_end(off, len, keep - 1) : off;
	int r;

	r = io_write(f->w.lower, buf, (size_t) (end - off), off);
	return r ? r : cfg->error;
}

static int torn_write(struct io_fault *f, const struct io_fault_cfg *cfg,
		      uint64_t idx, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	uint64_t rng = cfg->seed + idx;
	uint64_t n = nr_pieces(off, len);
	uint64_t in, out, i, start, run = off, pos = off;
	bool take, in_run = false;
	int r;

	if (n < 2)
		return 0; /* no non-empty strict subset: lose it all */
	/* one piece forced in and another forced out keep the subset
	 * non-empty and strict; the others are coin flips */
	in = io_splitmix64(&rng) % n;
	out = (in + 1 + io_splitmix64(&rng) % (n - 1)) % n;
	for (i = 0; i <= n; i++) {
		if (i < n)
			take =
			    i == in || (i != out && (io_splitmix64(&rng) & 1));
		else
			take = false;
		start = pos;
		if (take && !in_run) {
			run = start;
			in_run = true;
		} else if (!take && in_run) {
			r = io_write(f->w.lower, p + (run - off),
				     (size_t) (start - run), run);
			if (r)
				return r;
			in_run = false;
		}
		if (i < n)
			pos = piece_end(off, len, i);
	}
	return 0;
}

/* Count an operation of type op that fails whole or not at all: its
 * error if it must fail, else 0 (a configured error is never 0). */
static int fault_op(struct io_dev *dev, unsigned int op)
{
	struct io_fault_cfg cfg;
	uint64_t idx;

	return fault_hit(to_fault(dev), op, &cfg, &idx) ? cfg.error : 0;
}

static int fault_read(struct io_dev *dev, void *buf, size_t len, uint64_t off)
{
	int r = fault_op(dev, IO_OP_READ);

	return r ? r : io_wrap_read(dev, buf, len, off);
}

static int fault_write(struct io_dev *dev, const void *buf, size_t len,
		       uint64_t off)
{
	struct io_fault *f = to_fault(dev);
	struct io_fault_cfg cfg;
	uint64_t idx;

	if (!fault_hit(f, IO_OP_WRITE, &cfg, &idx))
		return io_write(f->w.lower, buf, len, off);
	switch (cfg.kind) {
	case IO_FAULT_SHORT:
		return short_write(f, &cfg, idx, buf, len, off);
	case IO_FAULT_TORN:
		return torn_write(f, &cfg, idx, buf, len, off);
	case IO_FAULT_ERROR:
		break;
	}
	return cfg.error;
}

static int fault_flush(struct io_dev *dev)
{
	int r = fault_op(dev, IO_OP_FLUSH);

	return r ? r : io_wrap_flush(dev);
}

/* Counted as a flush. */
static int fault_sync_ranges(struct io_dev *dev, const struct io_range *rg,
			     size_t n, const struct io_range *barrier)
{
	int r = fault_op(dev, IO_OP_FLUSH);

	return r ? r : io_wrap_sync_ranges(dev, rg, n, barrier);
}

static int fault_discard(struct io_dev *dev, uint64_t off, uint64_t len)
{
	int r = fault_op(dev, IO_OP_DISCARD);

	return r ? r : io_discard(to_fault(dev)->w.lower, off, len);
}

static int fault_write_zeroes(struct io_dev *dev, uint64_t off, uint64_t len)
{
	int r = fault_op(dev, IO_OP_WRITE_ZEROES);

	return r ? r : io_write_zeroes(to_fault(dev)->w.lower, off, len);
}

static int fault_resize(struct io_dev *dev, uint64_t new_size)
{
	struct io_fault *f = to_fault(dev);
	int r;

	r = io_resize(f->w.lower, new_size);
	dev->size = f->w.lower->size;
	return r;
}

static void fault_close(struct io_dev *dev)
{
	io_wrap_free(&to_fault(dev)->w);
}

/*
 * Not counted, never failed: is_hole, prealloc and reserve change no
 * contents (a reservation is a preallocation), drop_cache and fd neither
 * read nor write.
 */
static const struct io_ops fault_ops = {
    .read = fault_read,
    .write = fault_write,
    .flush = fault_flush,
    .sync_ranges = fault_sync_ranges,
    .drop_cache = io_wrap_drop_cache,
    .reserve = io_wrap_reserve,
    .is_hole = io_wrap_is_hole,
    .prealloc = io_wrap_prealloc,
    .discard = fault_discard,
    .write_zeroes = fault_write_zeroes,
    .resize = fault_resize,
    .close = fault_close,
    .fd = io_wrap_fd,
};

int io_fault_wrap(struct io_dev *lower, bool own_lower, struct io_dev **out)
{
	struct io_fault *f;
	void *w;
	int r;

	r = io_wrap_new(sizeof(*f), &fault_ops, "fault", lower, own_lower, 0,
			&w);
	if (r)
		return r;
	f = w;
	f->cfg.op_mask = IO_OP_ALL;
	f->cfg.error = -EIO;
	*out = &f->w.dev;
	return 0;
}

void io_fault_arm(struct io_dev *dev, const struct io_fault_cfg *cfg)
{
	struct io_fault *f = to_fault(dev);

	pthread_mutex_lock(&f->w.lock);
	f->cfg = *cfg;
	if (!f->cfg.op_mask)
		f->cfg.op_mask = IO_OP_ALL;
	if (!f->cfg.error)
		f->cfg.error = -EIO; /* a failure must look like one */
	f->count = 0;
	f->failed = 0;
	pthread_mutex_unlock(&f->w.lock);
}

void io_fault_disarm(struct io_dev *dev)
{
	struct io_fault *f = to_fault(dev);

	pthread_mutex_lock(&f->w.lock);
	f->cfg.fail_at = 0;
	pthread_mutex_unlock(&f->w.lock);
}

/* The counters, read together under the lock. */
struct fault_counts {
	uint64_t count, failed;
};

static struct fault_counts fault_counts(struct io_dev *dev)
{
	struct io_fault *f = to_fault(dev);
	struct fault_counts c;

	pthread_mutex_lock(&f->w.lock);
	c = (struct fault_counts){f->count, f->failed};
	pthread_mutex_unlock(&f->w.lock);
	return c;
}

uint64_t io_fault_count(struct io_dev *dev)
{
	return fault_counts(dev).count;
}

uint64_t io_fault_failed(struct io_dev *dev)
{
	return fault_counts(dev).failed;
}
