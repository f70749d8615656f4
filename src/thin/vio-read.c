/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vio-read.c - the read path: tv_vol_read, tv_vol_read_map (and the NBD
 * server's vio_read_map_nofill), and the allocation map, tv_vol_extents.
 *
 * A read takes the cached blocks under its volume's lock, shared, for the
 * whole device I/O (vio-cache.c, rules 1 and 2), a few blocks a hold; a
 * block the cache does not know is looked up under meta_lock together
 * with the blocks after it (read_window_locked), every mapping checked
 * before it is used or cached (rule 10).  A block in flight reads as
 * before the write (vio.c, rule 3: that write has not completed).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm.h"
#include "thin/vio-internal.h"
#include "util/checked.h"
#include "util/endian.h"
/* blocks a read that misses the cache looks up at once (aligned) */
#define READ_WINDOW 256u
/* cached blocks a read serves under one hold of vs->lock */
#define READ_HOLD_BLOCKS 16u

/* ---- the API ---- */

/* The holes and data a read met, for tv_vol_read_map (NULL: not wanted).
 * When max runs out, the last extent absorbs the rest as data: the buffer
 * holds the zeroes of any hole in it, so that is still the truth.  With
 * nofill (vio_read_map_nofill), the bytes of a hole are written only when
 * it ends up inside a data extent that way. */
struct ext_acc {
	struct tv_extent *e;
	size_t max, n;
	bool nofill;
};

/* Account len bytes at out (hole or data); fills a hole with zeroes
 * unless the accumulator says it need not. */
static void acc_add(struct ext_acc *a, uint8_t *out, uint64_t len, uint32_t fl)
{
	bool hole = fl & TV_EXTENT_HOLE;

	if (hole && !(a && a->nofill))
		memset(out, 0, len);
	if (!a)
		return;
	if (a->n && a->e[a->n - 1].flags == fl) {
		a->e[a->n - 1].len += len;
	} else if (a->n < a->max) {
		a->e[a->n].len = len;
		a->e[a->n].flags = fl;
		a->n++;
	} else {
		struct tv_extent *last = &a->e[a->n - 1];

		if (a->nofill) {
			/* holes become data: their zeroes go in the buffer
			 * (the last extent's bytes end where out begins) */
			if (last->flags & TV_EXTENT_HOLE)
				memset(out - last->len, 0, last->len);
			if (hole)
				memset(out, 0, len);
		}
		last->len += len;
		last->flags = 0;
	}
}

/*
 * The slow path of a read (meta_lock held): the mapping of vblock into *m
 * (-ENOENT: a hole), and into the cache the mappings and holes of the
 * blocks after it up to the next multiple of READ_WINDOW, found with one
 * walk of the tree: the reads that follow (sequential, or random over a
 * volume that is mostly holes) then find their blocks in the cache
 * instead of taking meta_lock each.
 */
static int read_window_locked(struct tv_pool *p, struct vstate *vs,
			      const struct disk_volume *v, uint64_t vblock,
			      struct disk_mapping *m)
{
	uint64_t end = MIN((vblock / READ_WINDOW + 1) * READ_WINDOW,
			   DIV_ROUND_UP(le64_to_cpu(v->size), p->block_size));
	uint64_t vbs[READ_WINDOW], blocks[READ_WINDOW], at = vblock;
	struct disk_mapping dms[READ_WINDOW];
	uint32_t counts[READ_WINDOW];
	const char *why = NULL;
	struct btree_cursor c;
	struct tm_ref root;
	size_t n = 0, ok;
	uint8_t k[8];
	int r, found = -ENOENT;

	/* the window's mappings (end - vblock <= READ_WINDOW of them) */
	ref_from_disk(&root, &v->map_root);
	put_be64(k, vblock);
	r = btree_cursor_seek(&p->map, &root, k, &c);
	while (r == 0 && c.valid && n < READ_WINDOW) {
		vbs[n] = get_be64(btree_cursor_key(&c));
		if (vbs[n] >= end)
			break;
		memcpy(&dms[n], btree_cursor_value(&c), sizeof(dms[n]));
		blocks[n] = le64_to_cpu(dms[n].block);
		n++;
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	if (r < 0)
		return vio_map_failed_locked(p, v, r);
	/* rule 10: which are data blocks in use (the counts in one walk of
	 * the space map: a volume's blocks mostly ascend); what comes
	 * before the first that is not is cached, that one is refused */
	for (ok = 0; ok < n && !(why = vio_map_block_place(p, blocks[ok]));
	     ok++)
		;
	r = sm_block_counts(tm_sm(p->tm), blocks, ok, counts);
	if (r < 0)
		return vio_map_failed_locked(p, v, r);
	for (size_t i = 0; i < ok; i++) {
		if (!counts[i]) {
			ok = i;
			why = "a free block";
		}
	}
	pthread_rwlock_wrlock(&vs->lock);
	for (size_t i = 0; i < ok; i++) {
		for (; at < vbs[i]; at++)
			cache_put_locked(vs, at, C_HOLE);
		if (vbs[i] == vblock) {
			*m = dms[i];
			found = 0;
		}
		/* own: see vio_mapping_use_locked */
		cache_put_locked(vs, vbs[i],
				 mapping_own(v, &dms[i]) && counts[i] == 1
				     ? own_val(vs, blocks[i])
				     : blocks[i]);
		at = vbs[i] + 1;
	}
	for (; at < (ok < n ? vbs[ok] : end); at++)
		cache_put_locked(vs, at, C_HOLE);
	pthread_rwlock_unlock(&vs->lock);
	if (ok < n)
		return vio_bad_mapping_locked(p, v, vbs[ok], blocks[ok], why);
	return found;
}

static int vol_read(struct tv_pool *p, uint64_t id, void *buf, size_t len,
		    uint64_t off, struct ext_acc *acc)
{
	struct vstate *vs = vio_vstate_get(p, id);
	uint32_t bs = p->block_size;
	uint8_t *out = buf;
	bool checked = false;
	int r = 0;

	if (!vs)
		return tv_err(-ENOMEM, "out of memory");
	while (len) {
		uint64_t vblock, in, n;
		uint64_t *cv;
		unsigned int k;

		/* fast path: the range is fine; the blocks in a row that
		 * the cache knows, several in one hold of vs->lock */
		pthread_rwlock_rdlock(&vs->lock);
		k = 0;
		if (checked || fast_ok(vs, len, off, false)) {
			checked = true;
			/* at most READ_HOLD_BLOCKS per hold: a stream of long
			 * reads must not keep a writer (who may hold meta_lock)
			 * waiting for the lock */
			for (; len && k < READ_HOLD_BLOCKS &&
			       (cv = u64map_find(&vs->cache, off / bs)) &&
			       fast_val_ok(p, *cv);
			     k++) {
				in = off % bs;
				n = MIN(len, bs - in);
				if (*cv == C_HOLE) {
					acc_add(acc, out, n, TV_EXTENT_HOLE);
				} else {
					r = io_read(
					    p->dev, out, n,
					    dev_off(p, c_block(*cv), in));
					if (r < 0)
						break;
					acc_add(acc, out, n, 0);
				}
				out += n;
				off += n;
				len -= n;
			}
		}
		pthread_rwlock_unlock(&vs->lock);
		if (r < 0)
			return tv_err(r, "volume #%" PRIu64 ": read: %s", id,
				      strerror(-r));
		if (!len)
			break;
		if (k == READ_HOLD_BLOCKS)
			continue; /* more cached blocks: take the lock again */
		vblock = off / bs;
		in = off % bs;
		n = MIN(len, bs - in);
		{
			struct disk_volume v;
			struct disk_mapping m = {0};

			pthread_mutex_lock(&p->meta_lock);
			r = vol_lookup_locked(p, id, &v);
			if (r == 0 && !checked)
				r = vio_check_range(p, &v, len, off);
			if (r < 0) {
				pthread_mutex_unlock(&p->meta_lock);
				return r;
			}
			vio_vstate_fill(p, vs, &v);
			checked = true;
			r = read_window_locked(p, vs, &v, vblock, &m);
			if (r == -ENOENT) {
				acc_add(acc, out, n, TV_EXTENT_HOLE);
				r = 0;
			} else if (r == 0) {
				acc_add(acc, out, n, 0);
				r = io_read(
				    p->dev, out, n,
				    dev_off(p, le64_to_cpu(m.block), in));
			}
			pthread_mutex_unlock(&p->meta_lock);
			if (r < 0)
				return tv_err(r,
					      "volume #%" PRIu64 ": read: %s",
					      id, strerror(-r));
		}
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

int tv_vol_read(struct tv_pool *p, uint64_t id, void *buf, size_t len,
		uint64_t off)
{
	return vol_read(p, id, buf, len, off, NULL);
}

static int read_map(struct tv_pool *p, uint64_t id, void *buf, size_t len,
		    uint64_t off, struct tv_extent *ext, size_t max, size_t *n,
		    bool nofill)
{
	struct ext_acc acc = {.e = ext, .max = max, .n = 0, .nofill = nofill};
	int r;

	if (!max)
		return tv_err(-EINVAL, "no room for extents");
	r = vol_read(p, id, buf, len, off, &acc);
	if (r == 0)
		*n = acc.n;
	return r;
}

int tv_vol_read_map(struct tv_pool *p, uint64_t id, void *buf, size_t len,
		    uint64_t off, struct tv_extent *ext, size_t max, size_t *n)
{
	return read_map(p, id, buf, len, off, ext, max, n, false);
}

int vio_read_map_nofill(struct tv_pool *p, uint64_t id, void *buf, size_t len,
			uint64_t off, struct tv_extent *ext, size_t max,
			size_t *n)
{
	return read_map(p, id, buf, len, off, ext, max, n, true);
}

/*
 * The allocation map of [off, off + len): mapped and unmapped runs.  One
 * cursor walk over the mapping tree under meta_lock: O(log n + mapped
 * blocks in the range).  Mapped blocks in the cache are not consulted —
 * the tree is the truth, and the cache never holds a mapping the tree
 * lacks.
 */
int tv_vol_extents(struct tv_pool *p, uint64_t id, uint64_t off, uint64_t len,
		   struct tv_extent *out, size_t max, size_t *n)
{
	uint32_t bs = p->block_size;
	struct btree_cursor c;
	struct disk_volume v;
	struct tm_ref root;
	uint64_t pos = off, end, size;
	uint8_t k[8];
	size_t cnt = 0;
	int r;

	if (!max)
		return tv_err(-EINVAL, "no room for extents");
	pthread_mutex_lock(&p->meta_lock);
	r = vol_lookup_locked(p, id, &v);
	if (r < 0)
		goto out;
	size = le64_to_cpu(v.size);
	if (!len || range_outside(off, len, size)) {
		r = tv_err(-EINVAL,
			   "volume '%.*s': range %" PRIu64 "+%" PRIu64
			   " is not inside its %" PRIu64 " bytes",
			   (int) MIN(le32_to_cpu(v.name_len), TV_NAME_MAX),
			   v.name, off, len, size);
		goto out;
	}
	end = off + len;
	ref_from_disk(&root, &v.map_root);
	put_be64(k, off / bs);
	r = btree_cursor_seek(&p->map, &root, k, &c);
	while (r == 0 && pos < end && cnt < max) {
		uint64_t mstart = end, mend = end; /* next mapped block */
		uint32_t fl;
		uint64_t stop;

		if (c.valid) {
			uint64_t vb = get_be64(btree_cursor_key(&c));
			if (vb <= (end - 1) / bs) {
				mstart = MAX(vb * bs, pos);
				mend = MIN((vb + 1) * bs, end);
			}
		}
		if (pos < mstart) {
			fl = TV_EXTENT_HOLE;
			stop = mstart;
		} else {
			fl = 0;
			stop = mend;
			r = btree_cursor_next(&c);
		}
		if (cnt && out[cnt - 1].flags == fl) {
			out[cnt - 1].len += stop - pos;
		} else {
			out[cnt].len = stop - pos;
			out[cnt].flags = fl;
			cnt++;
		}
		pos = stop;
	}
	btree_cursor_close(&c);
	if (r == 0)
		*n = cnt;
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}
