/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-powercut.c - wraps another device and models a volatile write cache.
 * Contract in io.h.  For tests: simple rather than fast.
 *
 * Rules:
 *  1. lower holds the durable image.  Nothing reaches lower except by a
 *     flush (and resize, which is applied at once: it is not a cached
 *     write in this model).
 *  2. Every write, discard and write_zeroes is appended to the pending
 *     list: a copy of the data, or (data == NULL) a range of zeroes.
 *  3. A read returns lower's bytes with the pending list overlaid in issue
 *     order: what a coherent cache shows while the power is on.
 *  4. A flush applies the pending list to lower in issue order, flushes
 *     lower, and only then empties the list.  If lower fails midway the
 *     list is kept: lower then holds a prefix of it, which is one of the
 *     states a crash may leave, and re-applying the whole list later gives
 *     the same result (a sequence of overwrites is idempotent).
 *  5. Mutating operations (write, flush, discard, write_zeroes; not read
 *     or resize) are counted when they complete, successful or not.
 *     io_pc_set_cut_after(n) cuts the power once n more of them have
 *     completed: operation n itself completes normally; operation n + 1
 *     and everything after it, reads and resize included, fail with -EIO
 *     and change nothing.  The pending list is kept for
 *     io_pc_crash_image().
 *  6. Closing the wrapper loses the pending list, as if the power were
 *     cut at close: whoever wants data kept flushes first.
 *  7. A ranged sync with a barrier (io_sync_ranges; the wrapper has
 *     IO_DEV_RANGED_SYNC) applies to lower, in issue order, every pending
 *     discard and write_zeroes whole and the part of every pending write
 *     inside the ranges or the barrier.  What stays pending is the rest of
 *     each write, less what a later discard or write_zeroes covered (the
 *     page cache lost those bytes with it).  It is counted like a flush;
 *     without a barrier it only counts.
 *  8. is_hole: no pending or lost write touches the range and it reads
 *     as zeroes (so it is zero in lower or under a pending discard, which
 *     the next barrier makes durable).  Never when lower has
 *     IO_DEV_BLOCKDEV, as io-file answers for a block device: a device
 *     has no holes whose zeroes last through a crash by themselves.
 *  9. A failed flush (io_pc_fail_flush) is Linux's failed writeback: each
 *     pending write reaches lower whole, not at all or torn (seeded, as
 *     IO_PC_RANDOM picks), and then leaves the pending list for the lost
 *     list: never written again, but still what reads show (between
 *     lower and the pending list), as the page cache keeps pages whose
 *     writeback failed, until io_drop_cache drops them (unless sticky:
 *     pages in use).  A later write, discard or write_zeroes takes its
 *     range out of the lost list, as it replaces the cached bytes.
 *
 * One mutex serializes every operation, reads included, so that a read
 * never sees lower half-way through a flush.
 */
#include "io/io.h"
#include "io/io-internal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/checked.h"
#include "util/log.h"

#define COPY_CHUNK (1024u * 1024u)

struct pc_op {
	uint64_t off;
	uint64_t len;
	uint8_t *data; /* len bytes; NULL: the range becomes zeroes */
};

struct io_pc {
	/* first; w.lock protects everything below, and lower */
	struct io_wrap w;
	struct pc_op *ops; /* the pending list, in issue order */
	size_t nr_ops;
	size_t cap_ops;
	uint64_t nr_mutating; /* mutating ops completed */
	uint64_t cut_at;      /* cut when nr_mutating reaches it; 0: never */
	bool cut;
	/* rule 9: the flush that fails (ff.nth: 0 disarmed), the flushes
	 * counted since it was armed, and the lost writes, in issue order */
	struct io_pc_flush_fail ff;
	uint64_t nr_flushes;
	struct pc_op *lost;
	size_t nr_lost;
};

static const struct io_ops pc_ops;

static struct io_pc *to_pc(struct io_dev *dev)
{
	assert(dev->ops == &pc_ops);
	return (struct io_pc *) ((char *) dev - offsetof(struct io_pc, w.dev));
}

/* Rule 5, with the lock held: an operation has completed. */
static void count_op(struct io_pc *pc)
{
	pc->nr_mutating++;
	if (pc->cut_at && pc->nr_mutating >= pc->cut_at && !pc->cut) {
		pc->cut = true;
		log_debug("%s: power cut after op %" PRIu64, pc->w.dev.name,
			  pc->nr_mutating);
	}
}

static int power_is_off(struct io_pc *pc)
{
	if (!pc->cut)
		return 0;
	log_debug("%s: power is off", pc->w.dev.name);
	return -EIO;
}

static void free_pending(struct io_pc *pc)
{
	for (size_t i = 0; i < pc->nr_ops; i++)
		free(pc->ops[i].data);
	pc->nr_ops = 0;
}

static void free_lost(struct io_pc *pc)
{
	for (size_t i = 0; i < pc->nr_lost; i++)
		free(pc->lost[i].data);
	free(pc->lost);
	pc->lost = NULL;
	pc->nr_lost = 0;
}

/*
 * Rule 9, with the lock held: [off, off + len) is written again (or cut
 * off by a resize): take it out of the lost list.  Out of memory: the
 * whole list goes (shows less of the lost writes, never stale bytes).
 */
static void lost_clip(struct io_pc *pc, uint64_t off, uint64_t len)
{
	struct pc_op *v;
	size_t n = 0;

	if (!pc->nr_lost)
		return;
	v = calloc(2 * pc->nr_lost, sizeof(*v));
	if (!v) {
		free_lost(pc);
		return;
	}
	for (size_t i = 0; i < pc->nr_lost; i++) {
		struct pc_op *op = &pc->lost[i];
		uint64_t e = op->off + op->len;

		if (e <= off || op->off >= off + len) {
			v[n++] = *op;
			op->data = NULL;
			continue;
		}
		/* the part before the range, the part after it */
		for (int side = 0; side < 2; side++) {
			uint64_t s0 = side ? off + len : op->off;
			uint64_t e0 = side ? e : off;
			uint8_t *d = NULL;

			if (s0 >= e0 || s0 < op->off || e0 > e)
				continue;
			if (op->data) {
				d = malloc((size_t) (e0 - s0));
				if (!d)
					continue; /* shown as lower's bytes */
				memcpy(d, op->data + (s0 - op->off),
				       (size_t) (e0 - s0));
			}
			v[n++] = (struct pc_op){s0, e0 - s0, d};
		}
	}
	free_lost(pc);
	pc->lost = v;
	pc->nr_lost = n;
}

/* Rule 2, with the lock held; takes ownership of data. */
static int add_pending(struct io_pc *pc, uint64_t off, uint64_t len,
		       uint8_t *data)
{
	if (pc->nr_ops == pc->cap_ops) {
		size_t cap = pc->cap_ops ? pc->cap_ops * 2 : 16;
		size_t bytes;
		struct pc_op *p;

		if (mul_overflow_size(cap, sizeof(*p), &bytes) ||
		    !(p = realloc(pc->ops, bytes))) {
			free(data);
			log_error("%s: pending list: out of memory",
				  pc->w.dev.name);
			return -ENOMEM;
		}
		pc->ops = p;
		pc->cap_ops = cap;
	}
	pc->ops[pc->nr_ops++] = (struct pc_op){off, len, data};
	return 0;
}

/*
 * Overlay the part of op that falls inside [off, off + len) onto buf,
 * which holds the bytes of that range.
 */
static void overlay(uint8_t *buf, uint64_t off, uint64_t len,
		    const struct pc_op *op)
{
	uint64_t s = MAX(off, op->off);
	uint64_t e = MIN(off + len, op->off + op->len);

	if (s >= e)
		return;
	if (op->data)
		memcpy(buf + (s - off), op->data + (s - op->off),
		       (size_t) (e - s));
	else
		memset(buf + (s - off), 0, (size_t) (e - s));
}

/* Write [s, e) of op (absolute offsets inside it) to dev. */
static int apply_part(struct io_dev *dev, const struct pc_op *op, uint64_t s,
		      uint64_t e)
{
	if (op->data)
		return io_write(dev, op->data + (s - op->off), (size_t) (e - s),
				s);
	return io_write_zeroes(dev, s, e - s);
}

/* Rule 3, with the lock held. */
static int read_locked(struct io_pc *pc, void *buf, size_t len, uint64_t off)
{
	int r = power_is_off(pc);

	if (!r)
		r = io_read(pc->w.lower, buf, len, off);
	if (r)
		return r;
	for (size_t i = 0; i < pc->nr_lost; i++)
		overlay(buf, off, len, &pc->lost[i]);
	for (size_t i = 0; i < pc->nr_ops; i++)
		overlay(buf, off, len, &pc->ops[i]);
	return 0;
}

static int pc_read(struct io_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct io_pc *pc = to_pc(dev);
	int r;

	pthread_mutex_lock(&pc->w.lock);
	r = read_locked(pc, buf, len, off);
	pthread_mutex_unlock(&pc->w.lock);
	return r;
}

static int pc_mutate(struct io_pc *pc, const void *buf, uint64_t len,
		     uint64_t off)
{
	uint8_t *copy = NULL;
	int r;

	pthread_mutex_lock(&pc->w.lock);
	r = power_is_off(pc);
	if (r)
		goto out;
	if (buf) {
		copy = malloc((size_t) len);
		if (!copy) {
			log_error("%s: copying a write of %" PRIu64
				  " bytes: out of memory",
				  pc->w.dev.name, len);
			r = -ENOMEM;
			goto count;
		}
		memcpy(copy, buf, (size_t) len);
	}
	r = add_pending(pc, off, len, copy);
	if (!r)
		lost_clip(pc, off, len);
count:
	count_op(pc);
out:
	pthread_mutex_unlock(&pc->w.lock);
	return r;
}

static int pc_write(struct io_dev *dev, const void *buf, size_t len,
		    uint64_t off)
{
	return pc_mutate(to_pc(dev), buf, len, off);
}

static int pc_zero(struct io_dev *dev, uint64_t off, uint64_t len)
{
	return pc_mutate(to_pc(dev), NULL, len, off);
}

static int apply_torn(struct io_dev *img, const struct pc_op *op,
		      uint64_t *rng);

/* Rule 9, with the lock held: a flush or barrier sync comes; true when it
 * is the one armed to fail. */
static bool flush_fails(struct io_pc *pc)
{
	return pc->ff.nth && ++pc->nr_flushes == pc->ff.nth;
}

/* Rule 9, with the lock held: the flush fails.  Returns its error (or
 * lower's, which leaves everything pending). */
static int fail_flush_locked(struct io_pc *pc)
{
	uint64_t rng = pc->ff.seed;
	struct pc_op *v;
	int r = 0;

	pc->ff.nth = 0; /* once */
	for (size_t i = 0; i < pc->nr_ops && !r; i++) {
		const struct pc_op *op = &pc->ops[i];

		switch (io_splitmix64(&rng) % 3) {
		case 0:
			r = apply_part(pc->w.lower, op, op->off,
				       op->off + op->len);
			break;
		case 1:
			break; /* never reached the disk */
		default:
			r = apply_torn(pc->w.lower, op, &rng);
			break;
		}
	}
	if (!r)
		r = io_flush(pc->w.lower);
	if (r)
		return r;
	/* the pending writes are lost now, after those lost before (which
	 * they clipped when they were issued) */
	v = realloc(pc->lost, (pc->nr_lost + pc->nr_ops + 1) * sizeof(*v));
	if (!v) {
		free_pending(pc);
		free_lost(pc);
		return pc->ff.error;
	}
	memcpy(v + pc->nr_lost, pc->ops, pc->nr_ops * sizeof(*v));
	pc->lost = v;
	pc->nr_lost += pc->nr_ops;
	pc->nr_ops = 0;
	log_debug("%s: a flush failed: %zu writes lost", pc->w.dev.name,
		  pc->nr_lost);
	return pc->ff.error;
}

static int pc_flush(struct io_dev *dev)
{
	struct io_pc *pc = to_pc(dev);
	int r = 0;

	pthread_mutex_lock(&pc->w.lock);
	r = power_is_off(pc);
	if (r)
		goto out;
	if (flush_fails(pc)) {
		r = fail_flush_locked(pc);
		count_op(pc);
		goto out;
	}
	/* rule 4: in issue order, then a flush of lower, then forget */
	for (size_t i = 0; i < pc->nr_ops && !r; i++) {
		const struct pc_op *op = &pc->ops[i];

		r = apply_part(pc->w.lower, op, op->off, op->off + op->len);
	}
	if (!r)
		r = io_flush(pc->w.lower);
	if (!r)
		free_pending(pc);
	count_op(pc);
out:
	pthread_mutex_unlock(&pc->w.lock);
	return r;
}

/* A set of disjoint byte intervals, sorted. */
struct ivals {
	struct io_range *v;
	size_t n, cap;
};

static int ivals_push(struct ivals *s, uint64_t off, uint64_t len)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		struct io_range *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = (struct io_range){off, len};
	return 0;
}

/* Sort and merge s in place. */
static void ivals_norm(struct ivals *s)
{
	s->n = io_ranges_merge(s->v, s->n);
}

/* out := [off, off + len) less every interval of sub (sorted, disjoint). */
static int ivals_minus(uint64_t off, uint64_t len, const struct ivals *sub,
		       struct ivals *out)
{
	uint64_t pos = off, end = off + len;
	int r = 0;

	out->n = 0;
	for (size_t i = 0; i < sub->n && pos < end && !r; i++) {
		uint64_t s = sub->v[i].off, e = s + sub->v[i].len;

		if (e <= pos)
			continue;
		if (s >= end)
			break;
		if (s > pos)
			r = ivals_push(out, pos, s - pos);
		pos = MAX(pos, e);
	}
	if (!r && pos < end)
		r = ivals_push(out, pos, end - pos);
	return r;
}

/* Rule 7, with the lock held. */
static int ranged_sync(struct io_pc *pc, const struct io_range *rg, size_t n,
		       const struct io_range *barrier)
{
	struct ivals sync = {0}, later = {0}, rest = {0};
	struct pc_op *ops = NULL;
	size_t nops = 0, cap = pc->nr_ops + 1;
	int r = 0;

	for (size_t i = 0; i < n && !r; i++)
		if (rg[i].len)
			r = ivals_push(&sync, rg[i].off, rg[i].len);
	if (!r)
		r = ivals_push(&sync, barrier->off, barrier->len);
	if (r)
		goto out;
	ivals_norm(&sync);
	/* the durable part, in issue order */
	for (size_t i = 0; i < pc->nr_ops && !r; i++) {
		const struct pc_op *op = &pc->ops[i];

		if (!op->data) {
			r = apply_part(pc->w.lower, op, op->off,
				       op->off + op->len);
			continue;
		}
		for (size_t k = 0; k < sync.n && !r; k++) {
			uint64_t s = MAX(op->off, sync.v[k].off);
			uint64_t e = MIN(op->off + op->len,
					 sync.v[k].off + sync.v[k].len);

			if (s < e)
				r = apply_part(pc->w.lower, op, s, e);
		}
	}
	if (!r)
		r = io_flush(pc->w.lower);
	if (r)
		goto out; /* the list is kept: re-applying it is harmless */
	/* what stays pending: newest first, to know the later zeroings */
	ops = calloc(cap, sizeof(*ops));
	if (!ops) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = pc->nr_ops; i-- > 0 && !r;) {
		const struct pc_op *op = &pc->ops[i];
		struct ivals sub = {0};

		if (!op->data) {
			r = ivals_push(&later, op->off, op->len);
			if (!r)
				ivals_norm(&later);
			continue;
		}
		/* sub := sync + later */
		for (size_t k = 0; k < sync.n && !r; k++)
			r = ivals_push(&sub, sync.v[k].off, sync.v[k].len);
		for (size_t k = 0; k < later.n && !r; k++)
			r = ivals_push(&sub, later.v[k].off, later.v[k].len);
		if (!r) {
			ivals_norm(&sub);
			r = ivals_minus(op->off, op->len, &sub, &rest);
		}
		free(sub.v);
		for (size_t k = 0; k < rest.n && !r; k++) {
			struct pc_op *o;

			if (nops == cap) {
				struct pc_op *b =
				    realloc(ops, cap * 2 * sizeof(*ops));
				if (!b) {
					r = -ENOMEM;
					break;
				}
				ops = b;
				cap *= 2;
			}
			o = &ops[nops];
			o->off = rest.v[k].off;
			o->len = rest.v[k].len;
			o->data = malloc((size_t) o->len);
			if (!o->data) {
				r = -ENOMEM;
				break;
			}
			memcpy(o->data, op->data + (o->off - op->off),
			       (size_t) o->len);
			nops++;
		}
	}
	if (r) {
		while (nops--)
			free(ops[nops].data);
		free(ops);
		goto out;
	}
	/* ops holds the pieces newest first: the list is oldest first */
	free_pending(pc);
	for (size_t i = 0; i < nops && !r; i++) {
		r = add_pending(pc, ops[nops - 1 - i].off,
				ops[nops - 1 - i].len, ops[nops - 1 - i].data);
		ops[nops - 1 - i].data = NULL;
	}
	for (size_t i = 0; i < nops; i++)
		free(ops[i].data);
	free(ops);
out:
	free(sync.v);
	free(later.v);
	free(rest.v);
	return r;
}

static int pc_sync_ranges(struct io_dev *dev, const struct io_range *rg,
			  size_t n, const struct io_range *barrier)
{
	struct io_pc *pc = to_pc(dev);
	int r;

	pthread_mutex_lock(&pc->w.lock);
	r = power_is_off(pc);
	if (r)
		goto out;
	if (barrier)
		r = flush_fails(pc) ? fail_flush_locked(pc)
				    : ranged_sync(pc, rg, n, barrier);
	count_op(pc);
out:
	pthread_mutex_unlock(&pc->w.lock);
	return r;
}

/* Preallocation changes no byte: nothing to model. */
static int pc_prealloc(struct io_dev *dev, uint64_t off, uint64_t len)
{
	(void) off;
	(void) len;
	return power_is_off(to_pc(dev));
}

/* Rule 8. */
static int pc_is_hole(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_pc *pc = to_pc(dev);
	uint8_t *buf;
	int hole = 0;

	if (len > COPY_CHUNK || (pc->w.lower->flags & IO_DEV_BLOCKDEV))
		return 0;
	buf = malloc((size_t) len);
	if (!buf)
		return 0;
	pthread_mutex_lock(&pc->w.lock);
	for (size_t i = 0; i < pc->nr_ops + pc->nr_lost; i++) {
		const struct pc_op *op =
		    i < pc->nr_ops ? &pc->ops[i] : &pc->lost[i - pc->nr_ops];

		if (op->data && op->off < off + len && off < op->off + op->len)
			goto out;
	}
	if (read_locked(pc, buf, (size_t) len, off))
		goto out;
	hole = 1;
	for (uint64_t i = 0; i < len; i++)
		if (buf[i]) {
			hole = 0;
			break;
		}
out:
	pthread_mutex_unlock(&pc->w.lock);
	free(buf);
	return hole;
}

/* Resize lower at once (rule 1) and clip pending ops to the new size. */
static int pc_resize(struct io_dev *dev, uint64_t new_size)
{
	struct io_pc *pc = to_pc(dev);
	size_t i, j;
	int r;

	pthread_mutex_lock(&pc->w.lock);
	r = power_is_off(pc);
	if (r)
		goto out;
	r = io_resize(pc->w.lower, new_size);
	dev->size = pc->w.lower->size;
	if (r)
		goto out;
	for (i = 0, j = 0; i < pc->nr_ops; i++) {
		struct pc_op op = pc->ops[i];

		if (op.off >= new_size) {
			free(op.data);
			continue;
		}
		op.len = MIN(op.len, new_size - op.off);
		pc->ops[j++] = op;
	}
	pc->nr_ops = j;
	lost_clip(pc, new_size, UINT64_MAX - new_size);
out:
	pthread_mutex_unlock(&pc->w.lock);
	return r;
}

static void pc_close(struct io_dev *dev)
{
	struct io_pc *pc = to_pc(dev);

	free_pending(pc);
	free(pc->ops);
	free_lost(pc);
	io_wrap_free(&pc->w);
}

/* Rule 9: the lost writes leave the cache, unless sticky. */
static int pc_drop_cache(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_pc *pc = to_pc(dev);
	int r;

	pthread_mutex_lock(&pc->w.lock);
	r = power_is_off(pc);
	if (!r && !pc->ff.sticky)
		lost_clip(pc, off, len ? len : dev->size - off);
	pthread_mutex_unlock(&pc->w.lock);
	return r;
}

static const struct io_ops pc_ops = {
    .read = pc_read,
    .write = pc_write,
    .flush = pc_flush,
    .sync_ranges = pc_sync_ranges,
    .is_hole = pc_is_hole,
    .prealloc = pc_prealloc,
    .discard = pc_zero,
    .write_zeroes = pc_zero,
    .resize = pc_resize,
    .close = pc_close,
    .fd = io_wrap_fd,
    .drop_cache = pc_drop_cache,
};

int io_pc_wrap(struct io_dev *lower, bool own_lower, struct io_dev **out)
{
	void *w;
	int r;

	r = io_wrap_new(sizeof(struct io_pc), &pc_ops, "pc", lower, own_lower,
			IO_DEV_RANGED_SYNC, &w);
	if (r)
		return r;
	*out = &((struct io_pc *) w)->w.dev;
	return 0;
}

void io_pc_set_cut_after(struct io_dev *dev, uint64_t n)
{
	struct io_pc *pc = to_pc(dev);

	pthread_mutex_lock(&pc->w.lock);
	pc->cut_at = n ? pc->nr_mutating + n : 0;
	pthread_mutex_unlock(&pc->w.lock);
}

void io_pc_fail_flush(struct io_dev *dev, const struct io_pc_flush_fail *f)
{
	struct io_pc *pc = to_pc(dev);

	pthread_mutex_lock(&pc->w.lock);
	pc->ff = *f;
	if (!pc->ff.error)
		pc->ff.error = -EIO;
	pc->nr_flushes = 0;
	pthread_mutex_unlock(&pc->w.lock);
}

/* The counters, read together under the lock. */
struct pc_counts {
	uint64_t mutating;
	size_t pending, lost;
	bool cut;
};

static struct pc_counts pc_counts(struct io_dev *dev)
{
	struct io_pc *pc = to_pc(dev);
	struct pc_counts c;

	pthread_mutex_lock(&pc->w.lock);
	c = (struct pc_counts){pc->nr_mutating, pc->nr_ops, pc->nr_lost,
			       pc->cut};
	pthread_mutex_unlock(&pc->w.lock);
	return c;
}

size_t io_pc_lost(struct io_dev *dev)
{
	return pc_counts(dev).lost;
}

uint64_t io_pc_ops(struct io_dev *dev)
{
	return pc_counts(dev).mutating;
}

bool io_pc_is_cut(struct io_dev *dev)
{
	return pc_counts(dev).cut;
}

size_t io_pc_pending(struct io_dev *dev)
{
	return pc_counts(dev).pending;
}

/* Copy lower's durable contents into img, a memory device of its size. */
static int copy_durable(struct io_pc *pc, struct io_dev *img)
{
	uint8_t *data = io_mem_data(img);
	uint64_t off, n;
	int r;

	for (off = 0; off < img->size; off += n) {
		n = MIN(img->size - off, (uint64_t) COPY_CHUNK);
		r = io_read(pc->w.lower, data + off, (size_t) n, off);
		if (r)
			return r;
	}
	return 0;
}

/* Apply a random subset of op's sectors (cut at absolute boundaries). */
static int apply_torn(struct io_dev *img, const struct pc_op *op, uint64_t *rng)
{
	uint64_t end = op->off + op->len;
	uint64_t s, e;
	int r;

	for (s = op->off; s < end; s = e) {
		e = MIN(end, (s / IO_SECTOR + 1) * IO_SECTOR);
		if (io_splitmix64(rng) & 1) {
			r = apply_part(img, op, s, e);
			if (r)
				return r;
		}
	}
	return 0;
}

/*
 * IO_PC_RANDOM: the pending ops land in a random order (a seeded
 * Fisher-Yates shuffle), each one applied whole, dropped or torn with
 * equal odds.  Order matters where ops overlap: a later write may be
 * found under an earlier one.
 */
static int apply_random(struct io_pc *pc, struct io_dev *img, uint64_t seed)
{
	uint64_t rng = seed;
	size_t *order, i, j, t;
	int r = 0;

	if (!pc->nr_ops)
		return 0;
	order = calloc(pc->nr_ops, sizeof(*order));
	if (!order) {
		log_error("%s: crash image: out of memory", pc->w.dev.name);
		return -ENOMEM;
	}
	for (i = 0; i < pc->nr_ops; i++)
		order[i] = i;
	for (i = pc->nr_ops - 1; i > 0; i--) {
		j = (size_t) (io_splitmix64(&rng) % (i + 1));
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (i = 0; i < pc->nr_ops && !r; i++) {
		const struct pc_op *op = &pc->ops[order[i]];

		switch (io_splitmix64(&rng) % 3) {
		case 0:
			r = apply_part(img, op, op->off, op->off + op->len);
			break;
		case 1:
			break; /* dropped */
		default:
			r = apply_torn(img, op, &rng);
			break;
		}
	}
	free(order);
	return r;
}

int io_pc_crash_image(struct io_dev *dev, enum io_pc_policy policy,
		      uint64_t seed, struct io_dev **out)
{
	struct io_pc *pc = to_pc(dev);
	struct io_dev *img;
	int r;

	pthread_mutex_lock(&pc->w.lock);
	r = io_mem_create(pc->w.lower->size, &img);
	if (r)
		goto out_unlock;
	r = copy_durable(pc, img);
	if (r)
		goto err_img;
	switch (policy) {
	case IO_PC_DROP_ALL:
		break;
	case IO_PC_APPLY_ALL:
		for (size_t i = 0; i < pc->nr_ops && !r; i++) {
			const struct pc_op *op = &pc->ops[i];

			r = apply_part(img, op, op->off, op->off + op->len);
		}
		break;
	case IO_PC_RANDOM:
		r = apply_random(pc, img, seed);
		break;
	default:
		r = -EINVAL;
		break;
	}
	if (r)
		goto err_img;
	pthread_mutex_unlock(&pc->w.lock);
	*out = img;
	return 0;

err_img:
	io_close(img);
out_unlock:
	pthread_mutex_unlock(&pc->w.lock);
	return r;
}
