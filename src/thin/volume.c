/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * volume.c - the volume table, its name and blob indexes, blobs, and the
 * metadata operations (create, snapshot, delete, rename, resize,
 * set-blob), applied in batches that are one transaction each.
 *
 * Invariants (the checker and tests verify them):
 *   1. Every volume has exactly one NAMES entry {hash(name), id} and one
 *      BLOBIDX entry {blob prefix, id} (when blob_size > 0); no others
 *      exist.
 *   2. BLOBS holds a volume's chunks only when its blob is not all zero.
 *   3. The user area's nr_volumes equals the number of VOLS entries; every
 *      id is below next_id, which only grows.  A new id is at least the
 *      microseconds since TV_ID_EPOCH (thin-internal.h), so that ids stay
 *      unique even across a restore of an older copy of the pool.
 *   4. A VOLS value holds one reference to its mapping tree; a DEFERRED
 *      value holds one reference to a mapping tree being freed (a deleted
 *      volume's, the part a shrink cut off, or a subtree of one of those
 *      that reclaim split off: pool.c, rule 3).
 *   5. An operation writes no byte that the committed state shows: every
 *      change is in the transaction, so a failed batch or a crash before
 *      the commit leaves every volume as it was.  So a shrink writes
 *      nothing: a volume maps no block wholly past its end, but the last
 *      block it keeps may hold, past the end, bytes from before a shrink.
 *      Nothing reads there (I/O stays inside the size), and a grow zeroes
 *      them first (grow_locked), in place only where the committed state
 *      cannot show them.
 *   6. The user area's reclaimable is at most the data blocks that reclaim
 *      will still free (pool.c, rule 3): a delete or shrink adds the
 *      blocks that the tree it hands to DEFERRED holds alone (no other
 *      mapping, live or deferred, shares them: tree_alone), and reclaim
 *      takes off every block it frees, down to 0.  Nothing can share a
 *      deferred tree's blocks later, so what was counted is freed; what
 *      others shared at the time and reclaim frees when they are gone
 *      too was never counted (it may take off more than the tree added,
 *      hence the floor at 0).  So the figure never exceeds what is to
 *      come, and never counts a block twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pdata/sm.h"
#include "thin/thin-internal.h"
#include "util/checked.h"
#include "util/endian.h"
#include "util/log.h"

/* ---- value types ---- */

static void maptree_check(void *ctx, const void *value, struct check *ck)
{
	struct tv_pool *p = ctx;
	struct tm_ref r;

	ref_load(&r, value);
	if (r.blocknr)
		check_tree(ck, &p->map, &r);
}

/*
 * A volume record (and a DEFERRED entry) holds one reference to a mapping
 * tree, but the btree is not asked to count it: the tables are never
 * cloned, and the record is rewritten after every change to its mapping
 * tree, which has already moved the reference to the tree's new root
 * (shadowing decrements the old one).  The operations own the reference:
 * snapshot clones, delete moves it to DEFERRED, reclaim deletes the tree.
 * The checker is still told about it.
 */
#define MAPROOT_OFF offsetof(struct disk_volume, map_root)

static void vol_check(void *ctx, const void *value, struct check *ck)
{
	const struct disk_volume *v = value;
	uint32_t nl = le32_to_cpu(v->name_len);

	if (!nl || nl > TV_NAME_MAX || !le64_to_cpu(v->id) ||
	    le64_to_cpu(v->size) % TV_SECTOR)
		check_error(ck, "volume %" PRIu64 ": malformed record",
			    (uint64_t)le64_to_cpu(v->id));
	maptree_check(ctx, (const uint8_t *)value + MAPROOT_OFF, ck);
}

static int map_inc(void *ctx, const void *value)
{
	struct tv_pool *p = ctx;

	return sm_inc_block(tm_sm(p->tm), get_le64(value));
}

static int map_dec(void *ctx, const void *value)
{
	struct tv_pool *p = ctx;

	return sm_dec_block(tm_sm(p->tm), get_le64(value), NULL);
}

static void map_check(void *ctx, const void *value, struct check *ck)
{
	(void)ctx;
	check_data_ref(ck, get_le64(value));
}

/*
 * What the tree at root holds alone from key lo on (lo NULL: all of it):
 * the nodes no other tree shares, and in them the mappings of blocks no
 * other mapping shares: what removing that part frees, once reclaim has
 * done it (btree_release_walk).  Looks at limit counts at most, and
 * stops once nodes + blocks * (nodes a block holds) reach enough (0: no
 * such stop); the figures are lower bounds then.  Reads what it counts:
 * O(limit).
 */
#define ALONE_LIMIT 16384 /* counts a delete or shrink looks at (rule 6) */

struct alone {
	struct tv_pool *p;
	uint64_t nodes, blocks;
	uint64_t refs, limit, enough;
};

static int alone_count(void *ctx, uint64_t node, const void *value,
		       bool alone)
{
	struct alone *a = ctx;
	uint32_t count;
	int r;

	(void)node;
	if (a->refs >= a->limit)
		return 1;
	a->refs++;
	if (!value) {
		a->nodes += alone;
	} else {
		r = sm_block_count(tm_sm(a->p->tm), get_le64(value), &count);
		if (r < 0)
			return r;
		a->blocks += count == 1;
	}
	if (a->enough &&
	    a->nodes + a->blocks * (a->p->block_size / PD_NODE_SIZE) >=
		    a->enough)
		return 1;
	return 0;
}

static int tree_alone(struct tv_pool *p, const struct tm_ref *root,
		      const uint8_t *lo, uint64_t limit, uint64_t enough,
		      struct alone *out)
{
	int r;

	memset(out, 0, sizeof(*out));
	out->p = p;
	out->limit = limit;
	out->enough = enough;
	r = btree_release_walk(&p->map, root, lo, alone_count, out);
	return r < 0 ? r : 0;
}

/*
 * Rule 6: what a tree handed to DEFERRED adds to reclaimable: the blocks
 * of v's tree from lo on (NULL: all) that it holds alone.  A volume never
 * snapshotted holds all its blocks alone: mapped, which the caller knows
 * (a delete: v.mapped; a shrink: what it cut).  Else they are counted, a
 * delete's up to ALONE_LIMIT counts (a delete stays a bounded step; the
 * rest of a big tree is not counted), a shrink's all (it reads what it
 * cuts anyway, to count the mappings the volume loses).
 */
static int reclaimable_of(struct tv_pool *p, const struct disk_volume *v,
			  const uint8_t *lo, uint64_t mapped, uint64_t *out)
{
	struct tm_ref root;
	struct alone a;
	int r;

	if (!le64_to_cpu(v->snap_epoch)) {
		*out = mapped;
		return 0;
	}
	ref_from_disk(&root, &v->map_root);
	r = tree_alone(p, &root, lo, lo ? UINT64_MAX : ALONE_LIMIT, 0, &a);
	if (r == 0)
		*out = a.blocks;
	return r;
}

static void add_reclaimable(struct tv_pool *p, uint64_t blocks)
{
	struct disk_pool_user *u = pool_user(p);

	u->reclaimable = cpu_to_le64(le64_to_cpu(u->reclaimable) + blocks);
}

void pool_init_infos(struct tv_pool *p)
{
	struct btree_info base = { .tm = p->tm };

	p->blobidx_prefix = MIN(p->blob_size, BLOBIDX_PREFIX_MAX);
	p->blob_chunk = MIN(p->blob_size, BLOB_CHUNK_MAX);

	p->vols = base;
	p->vols.tag = TAG_VOLS;
	p->vols.key_size = 8;
	p->vols.value = (struct btree_vtype){ sizeof(struct disk_volume), p,
					      NULL, NULL, vol_check };
	p->names = base;
	p->names.tag = TAG_NAMES;
	p->names.key_size = 16;
	p->blobidx = base;
	p->blobidx.tag = TAG_BLOBIDX;
	p->blobidx.key_size = p->blobidx_prefix + 8;
	p->blobs = base;
	p->blobs.tag = TAG_BLOBS;
	p->blobs.key_size = 10;
	p->blobs.value.size = p->blob_chunk;
	p->deferred = base;
	p->deferred.tag = TAG_DEFERRED;
	p->deferred.key_size = 8;
	p->deferred.value = (struct btree_vtype){ sizeof(struct disk_ref), p,
						  NULL, NULL, maptree_check };
	p->map = base;
	p->map.tag = TAG_MAP;
	p->map.key_size = 8;
	p->map.value = (struct btree_vtype){ sizeof(struct disk_mapping), p,
					     map_inc, map_dec, map_check };
}

int vol_check_roots(struct tv_pool *p, struct check_root *roots,
		    unsigned int *nr)
{
	unsigned int n = 0;

	roots[n++] = (struct check_root){ SLOT_VOLS, &p->vols, "volumes" };
	roots[n++] = (struct check_root){ SLOT_NAMES, &p->names, "names" };
	if (p->blob_size) {
		roots[n++] = (struct check_root){ SLOT_BLOBIDX, &p->blobidx,
						  "blob index" };
		roots[n++] = (struct check_root){ SLOT_BLOBS, &p->blobs,
						  "blobs" };
	}
	roots[n++] = (struct check_root){ SLOT_DEFERRED, &p->deferred,
					  "deferred deletes" };
	*nr = n;
	return 0;
}

/* ---- names ---- */

/* 1..TV_NAME_MAX bytes of valid UTF-8; no '/', no control characters, not
 * starting with '#' (which names an id). */
static int check_name(const char *name)
{
	const uint8_t *s = (const uint8_t *)name;
	size_t len = strlen(name);

	if (!len)
		return tv_err(-EINVAL, "a volume name cannot be empty");
	if (len > TV_NAME_MAX)
		return tv_err(-EINVAL, "volume name '%.40s...': longer than "
				       "%d bytes",
			      name, TV_NAME_MAX);
	if (name[0] == '#')
		return tv_err(-EINVAL, "volume name '%s': cannot start with "
				       "'#' (that names an id)",
			      name);
	for (size_t i = 0; i < len;) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t n;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f || c == '/')
				return tv_err(-EINVAL, "volume name: '/' and "
						       "control characters "
						       "are not allowed");
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			n = 2;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 3;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 4;
			cp = c & 0x07;
		} else {
			goto bad;
		}
		if (i + n > len)
			goto bad;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				goto bad;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* overlong forms, surrogates, beyond Unicode, C1 controls */
		if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
		    (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff) ||
		    (cp >= 0x80 && cp < 0xa0))
			goto bad;
		i += n;
	}
	return 0;
bad:
	return tv_err(-EINVAL, "volume name: not valid UTF-8");
}

static uint64_t name_hash(const char *name, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */

	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)name[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static void name_key(uint8_t k[16], const char *name, size_t len, uint64_t id)
{
	put_be64(k, name_hash(name, len));
	put_be64(k + 8, id);
}

int vol_lookup_locked(struct tv_pool *p, uint64_t id, struct disk_volume *v)
{
	uint8_t k[8];
	int r;

	put_be64(k, id);
	r = btree_lookup(&p->vols, tm_root(p->tm, SLOT_VOLS), k, v);
	if (r == -ENOENT)
		return tv_err(-ENOENT, "volume #%" PRIu64 ": no such volume",
			      id);
	if (r < 0)
		return tv_err(r, "volume #%" PRIu64 ": %s", id, strerror(-r));
	if (le64_to_cpu(v->id) != id || !le32_to_cpu(v->name_len) ||
	    le32_to_cpu(v->name_len) > TV_NAME_MAX)
		return tv_err(-EUCLEAN, "volume #%" PRIu64 ": damaged record",
			      id);
	return 0;
}

int vol_store_locked(struct tv_pool *p, const struct disk_volume *v)
{
	uint8_t k[8];

	put_be64(k, le64_to_cpu(v->id));
	p->dirty = true; /* even an unchanged record shadows its leaf */
	return btree_put(&p->vols, tm_root(p->tm, SLOT_VOLS), k, v, NULL);
}

/* Find the id of the volume called name (-ENOENT). */
static int name_find_locked(struct tv_pool *p, const char *name, uint64_t *id)
{
	size_t len = strlen(name);
	uint64_t h = name_hash(name, len);
	struct btree_cursor c;
	uint8_t k[16];
	int r;

	put_be64(k, h);
	put_be64(k + 8, 0);
	r = btree_cursor_seek(&p->names, tm_root(p->tm, SLOT_NAMES), k, &c);
	while (r == 0 && c.valid) {
		const uint8_t *key = btree_cursor_key(&c);
		struct disk_volume v;
		uint64_t cand;

		if (get_be64(key) != h)
			break;
		cand = get_be64(key + 8);
		btree_cursor_close(&c); /* the lookup pins nodes of its own */
		r = vol_lookup_locked(p, cand, &v);
		if (r < 0)
			return r == -ENOENT ? tv_err(-EUCLEAN,
						     "name index names volume "
						     "#%" PRIu64
						     ", which does not exist",
						     cand)
					    : r;
		if (le32_to_cpu(v.name_len) == len &&
		    !memcmp(v.name, name, len)) {
			*id = cand;
			return 0;
		}
		put_be64(k + 8, cand + 1);
		if (cand == UINT64_MAX)
			break;
		r = btree_cursor_seek(&p->names, tm_root(p->tm, SLOT_NAMES),
				      k, &c);
	}
	btree_cursor_close(&c);
	if (r < 0)
		return tv_err(r, "name index: %s", strerror(-r));
	return -ENOENT;
}

/* Index trees have empty values; the btree copies value.size bytes. */
static const uint8_t no_value[1];

static int names_add(struct tv_pool *p, const char *name, uint64_t id)
{
	uint8_t k[16];

	name_key(k, name, strlen(name), id);
	return btree_insert(&p->names, tm_root(p->tm, SLOT_NAMES), k,
			    no_value);
}

static int names_del(struct tv_pool *p, const struct disk_volume *v)
{
	uint8_t k[16];

	name_key(k, (const char *)v->name, le32_to_cpu(v->name_len),
		 le64_to_cpu(v->id));
	return btree_remove(&p->names, tm_root(p->tm, SLOT_NAMES), k, NULL);
}

/* ---- blobs ---- */

static bool all_zero(const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (b[i])
			return false;
	return true;
}

static void blobidx_key(struct tv_pool *p, uint8_t *k, const uint8_t *blob,
			uint64_t id)
{
	memcpy(k, blob, p->blobidx_prefix);
	put_be64(k + p->blobidx_prefix, id);
}

static uint32_t nr_chunks(const struct tv_pool *p)
{
	return p->blob_chunk ? DIV_ROUND_UP(p->blob_size, p->blob_chunk) : 0;
}

static void blobs_key(uint8_t k[10], uint64_t id, uint32_t chunk)
{
	put_be64(k, id);
	k[8] = (uint8_t)(chunk >> 8);
	k[9] = (uint8_t)chunk;
}

static int blob_load_locked(struct tv_pool *p, uint64_t id, uint8_t *blob)
{
	uint8_t k[10], buf[BLOB_CHUNK_MAX];

	memset(blob, 0, p->blob_size);
	for (uint32_t i = 0; i < nr_chunks(p); i++) {
		size_t off = (size_t)i * p->blob_chunk;
		int r;

		blobs_key(k, id, i);
		r = btree_lookup(&p->blobs, tm_root(p->tm, SLOT_BLOBS), k, buf);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			return tv_err(r, "volume #%" PRIu64 ": blob: %s", id,
				      strerror(-r));
		memcpy(blob + off, buf, MIN(p->blob_chunk, p->blob_size - off));
	}
	return 0;
}

/* Replace a volume's blob (old may be NULL for a new volume). */
static int blob_set_locked(struct tv_pool *p, uint64_t id,
			   const uint8_t *old, const uint8_t *blob)
{
	uint8_t k[BTREE_MAX_KEY], buf[BLOB_CHUNK_MAX];
	bool zero = all_zero(blob, p->blob_size);
	int r;

	if (!p->blob_size)
		return 0;
	if (old) {
		blobidx_key(p, k, old, id);
		r = btree_remove(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k,
				 NULL);
		if (r < 0)
			return r;
	}
	blobidx_key(p, k, blob, id);
	r = btree_insert(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k,
			 no_value);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < nr_chunks(p); i++) {
		size_t off = (size_t)i * p->blob_chunk;
		size_t n = MIN(p->blob_chunk, p->blob_size - off);

		blobs_key(k, id, i);
		if (zero) {
			if (old && !all_zero(old, p->blob_size)) {
				r = btree_remove(&p->blobs,
						 tm_root(p->tm, SLOT_BLOBS), k,
						 NULL);
				if (r < 0)
					return r;
			}
			continue;
		}
		memset(buf, 0, sizeof(buf));
		memcpy(buf, blob + off, n);
		r = btree_put(&p->blobs, tm_root(p->tm, SLOT_BLOBS), k, buf,
			      NULL);
		if (r < 0)
			return r;
	}
	return 0;
}

static int blob_del_locked(struct tv_pool *p, uint64_t id, const uint8_t *old)
{
	uint8_t k[BTREE_MAX_KEY];
	int r;

	if (!p->blob_size)
		return 0;
	blobidx_key(p, k, old, id);
	r = btree_remove(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k, NULL);
	if (r < 0 || all_zero(old, p->blob_size))
		return r;
	for (uint32_t i = 0; i < nr_chunks(p); i++) {
		blobs_key(k, id, i);
		r = btree_remove(&p->blobs, tm_root(p->tm, SLOT_BLOBS), k,
				 NULL);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- queries ---- */

void vol_to_info(const struct tv_pool *p, const struct disk_volume *v,
		 struct tv_vol_info *info)
{
	uint32_t nl = MIN(le32_to_cpu(v->name_len), TV_NAME_MAX);

	memset(info, 0, sizeof(*info));
	info->id = le64_to_cpu(v->id);
	memcpy(info->uuid, v->uuid, 16);
	memcpy(info->name, v->name, nl);
	info->size = le64_to_cpu(v->size);
	info->flags = le32_to_cpu(v->flags);
	info->parent = le64_to_cpu(v->parent);
	info->ctime_ns = le64_to_cpu(v->ctime_ns);
	info->mapped = le64_to_cpu(v->mapped) * p->block_size;
}

static int parse_id(const char *s, uint64_t *id)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*id = v;
	return 0;
}

int tv_vol_resolve(struct tv_pool *p, const char *spec, uint64_t *id)
{
	struct disk_volume v;
	uint64_t i;
	int r;

	if (spec[0] == '#') {
		if (parse_id(spec + 1, &i) < 0 || !i)
			return tv_err(-EINVAL, "'%s': not a volume id", spec);
		pthread_mutex_lock(&p->meta_lock);
		r = vol_lookup_locked(p, i, &v);
		pthread_mutex_unlock(&p->meta_lock);
		if (r == 0)
			*id = i;
		return r;
	}
	r = check_name(spec);
	if (r < 0)
		return r;
	pthread_mutex_lock(&p->meta_lock);
	r = name_find_locked(p, spec, &i);
	pthread_mutex_unlock(&p->meta_lock);
	if (r == -ENOENT)
		return tv_err(-ENOENT, "volume '%s': no such volume", spec);
	if (r == 0)
		*id = i;
	return r;
}

int tv_vol_info(struct tv_pool *p, uint64_t id, struct tv_vol_info *out)
{
	struct disk_volume v;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	r = vol_lookup_locked(p, id, &v);
	pthread_mutex_unlock(&p->meta_lock);
	if (r == 0)
		vol_to_info(p, &v, out);
	return r;
}

struct usage {
	struct tv_pool *p;
	uint64_t mapped, exclusive;
};

static int usage_one(void *ctx, const void *key, const void *value,
		     bool shared)
{
	struct usage *u = ctx;
	uint32_t count;
	int r;

	(void)key;
	u->mapped++;
	if (shared)
		return 0;
	r = sm_block_count(tm_sm(u->p->tm), get_le64(value), &count);
	if (r == 0 && count == 1)
		u->exclusive++;
	return r;
}

int tv_vol_usage(struct tv_pool *p, uint64_t id, uint64_t *mapped,
		 uint64_t *exclusive)
{
	struct usage u = { .p = p };
	struct disk_volume v;
	struct tm_ref root;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	r = vol_lookup_locked(p, id, &v);
	if (r == 0) {
		ref_from_disk(&root, &v.map_root);
		r = btree_walk(&p->map, &root, usage_one, &u);
		if (r < 0)
			r = tv_err(r, "volume #%" PRIu64 ": %s", id,
				   strerror(-r));
	}
	pthread_mutex_unlock(&p->meta_lock);
	if (r == 0) {
		*mapped = u.mapped * p->block_size;
		*exclusive = u.exclusive * p->block_size;
	}
	return r;
}

int tv_vol_get_blob(struct tv_pool *p, uint64_t id, void *blob, size_t len)
{
	struct disk_volume v;
	uint8_t buf[TV_BLOB_MAX];
	int r;

	if (len != p->blob_size)
		return tv_err(-EINVAL, "the pool's blobs are %u bytes, not %zu",
			      p->blob_size, len);
	pthread_mutex_lock(&p->meta_lock);
	r = vol_lookup_locked(p, id, &v);
	if (r == 0)
		r = blob_load_locked(p, id, buf);
	pthread_mutex_unlock(&p->meta_lock);
	if (r == 0)
		memcpy(blob, buf, len);
	return r;
}

int tv_vol_list(struct tv_pool *p, uint64_t *cursor, struct tv_vol_info *out,
		size_t max)
{
	struct btree_cursor c;
	uint8_t k[8];
	size_t n = 0;
	int r;

	if (*cursor == UINT64_MAX)
		return 0;
	put_be64(k, *cursor);
	pthread_mutex_lock(&p->meta_lock);
	r = btree_cursor_seek(&p->vols, tm_root(p->tm, SLOT_VOLS), k, &c);
	while (r == 0 && c.valid && n < max) {
		const struct disk_volume *v = btree_cursor_value(&c);
		vol_to_info(p, v, &out[n++]);
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	pthread_mutex_unlock(&p->meta_lock);
	if (r < 0)
		return tv_err(r, "listing volumes: %s", strerror(-r));
	if (n)
		*cursor = out[n - 1].id == UINT64_MAX ? UINT64_MAX
						      : out[n - 1].id + 1;
	return (int)n;
}

int tv_vol_find_blob(struct tv_pool *p, const void *prefix, size_t len,
		     uint64_t *ids, size_t max)
{
	uint8_t k[BTREE_MAX_KEY], blob[TV_BLOB_MAX];
	size_t plen = MIN(len, p->blobidx_prefix);
	struct btree_cursor c;
	uint64_t *cand = NULL;
	size_t nc = 0, cap = 0, found = 0;
	int r;

	if (len > p->blob_size)
		return tv_err(-EINVAL, "%zu bytes is longer than the pool's "
				       "%u-byte blobs",
			      len, p->blob_size);
	if (!p->blob_size)
		return tv_err(-EINVAL, "this pool has no blobs");
	memset(k, 0, sizeof(k));
	memcpy(k, prefix, plen);
	pthread_mutex_lock(&p->meta_lock);
	/* Candidates from the index: every key starting with the prefix
	 * (as much of it as the keys hold). */
	r = btree_cursor_seek(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k,
			      &c);
	while (r == 0 && c.valid) {
		const uint8_t *key = btree_cursor_key(&c);

		if (memcmp(key, prefix, plen))
			break;
		if (nc == cap) {
			uint64_t *v;
			cap = cap ? cap * 2 : 64;
			v = realloc(cand, cap * sizeof(*v));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			cand = v;
		}
		cand[nc++] = get_be64(key + p->blobidx_prefix);
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	/* Longer prefixes than the index holds: check the stored blobs. */
	for (size_t i = 0; r == 0 && i < nc; i++) {
		if (len > plen) {
			r = blob_load_locked(p, cand[i], blob);
			if (r < 0 || memcmp(blob, prefix, len))
				continue;
		}
		cand[found++] = cand[i];
	}
	pthread_mutex_unlock(&p->meta_lock);
	if (r < 0) {
		free(cand);
		return tv_err(r, "blob index: %s", strerror(-r));
	}
	/* index order is blob order; callers get id order */
	for (size_t i = 1; i < found; i++)
		for (size_t j = i; j > 0 && cand[j - 1] > cand[j]; j--) {
			uint64_t t = cand[j];
			cand[j] = cand[j - 1];
			cand[j - 1] = t;
		}
	if (found && max)
		memcpy(ids, cand, MIN(found, max) * sizeof(*ids));
	free(cand);
	return (int)MIN(found, (size_t)INT32_MAX);
}

/* ---- operations ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t volume_id_clock_real(void)
{
	uint64_t ns = now_ns();

	if (ns < TV_ID_EPOCH * 1000000000ull)
		return 0; /* a clock this wrong gives no floor at all */
	return (ns - TV_ID_EPOCH * 1000000000ull) / 1000;
}

uint64_t (*volume_id_clock)(void) = volume_id_clock_real;

static int check_size(uint64_t size)
{
	if (!size || size % TV_SECTOR)
		return tv_err(-EINVAL, "size %" PRIu64 ": must be a non-zero "
				       "multiple of 512",
			      size);
	if (size > (1ull << 60))
		return tv_err(-EINVAL, "size %" PRIu64 ": too large (at most "
				       "1 EiB)",
			      size);
	return 0;
}

static int check_blob(struct tv_pool *p, const void *blob, size_t len)
{
	if (blob && len != p->blob_size)
		return tv_err(-EINVAL, "blob of %zu bytes: this pool's blobs "
				       "are exactly %u bytes",
			      len, p->blob_size);
	return 0;
}

static int new_volume(struct tv_pool *p, const char *name, uint64_t size,
		      struct disk_volume *v)
{
	struct disk_pool_user *u = pool_user(p);
	uint64_t id = le64_to_cpu(u->next_id), least = volume_id_clock ? volume_id_clock() : 0;
	uint64_t other;
	int r;

	r = check_name(name);
	if (r < 0)
		return r;
	r = name_find_locked(p, name, &other);
	if (r == 0)
		return tv_err(-EEXIST, "volume '%s': a volume of that name "
				       "exists (#%" PRIu64 ")",
			      name, other);
	if (r != -ENOENT)
		return r;
	id = MAX(id, least);
	if (id == UINT64_MAX)
		return tv_err(-EOVERFLOW, "volume ids are exhausted");
	memset(v, 0, sizeof(*v));
	v->id = cpu_to_le64(id);
	if (getrandom(v->uuid, 16, 0) != 16)
		return tv_err(-EIO, "no random bytes for a uuid");
	v->uuid[6] = (v->uuid[6] & 0x0f) | 0x40;
	v->uuid[8] = (v->uuid[8] & 0x3f) | 0x80;
	v->size = cpu_to_le64(size);
	v->name_len = cpu_to_le32((uint32_t)strlen(name));
	memcpy(v->name, name, strlen(name));
	v->ctime_ns = cpu_to_le64(now_ns());
	u->next_id = cpu_to_le64(id + 1);
	u->nr_volumes = cpu_to_le64(le64_to_cpu(u->nr_volumes) + 1);
	r = names_add(p, name, id);
	return r;
}

static int op_create(struct tv_pool *p, struct tv_op *op)
{
	uint8_t zero[TV_BLOB_MAX] = { 0 };
	struct disk_volume v;
	int r;

	r = check_size(op->size);
	if (r == 0)
		r = check_blob(p, op->blob, op->blob_len);
	if (r == 0)
		r = new_volume(p, op->name, op->size, &v);
	if (r == 0)
		r = blob_set_locked(p, le64_to_cpu(v.id), NULL,
				    op->blob ? op->blob : zero);
	if (r == 0)
		r = vol_store_locked(p, &v);
	if (r == 0)
		op->result_id = le64_to_cpu(v.id);
	return r;
}

static int op_snapshot(struct tv_pool *p, struct tv_op *op)
{
	uint8_t zero[TV_BLOB_MAX] = { 0 };
	struct disk_pool_user *u = pool_user(p);
	struct disk_volume o, v;
	struct tm_ref root, clone;
	uint64_t epoch;
	int r;

	if (op->flags & ~TV_VOL_READ_ONLY)
		return tv_err(-EINVAL, "unknown snapshot flags %#x", op->flags);
	r = check_blob(p, op->blob, op->blob_len);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &o);
	if (r == 0)
		r = new_volume(p, op->name, le64_to_cpu(o.size), &v);
	if (r < 0)
		return r;
	/*
	 * The snapshot shares the origin's mapping tree (O(1)).  Both get a
	 * new snapshot epoch: every mapping written before it is possibly
	 * shared, so the next write to it breaks the sharing first.
	 */
	/* Writes in flight on the origin finish first (their data is then
	 * in the snapshot); later ones see the new epoch and copy. */
	p->io->snapshot_locked(p, op->id);
	epoch = le64_to_cpu(u->epoch) + 1;
	u->epoch = cpu_to_le64(epoch);
	ref_from_disk(&root, &o.map_root);
	r = btree_clone(&p->map, &root, &clone);
	if (r < 0)
		return r;
	ref_to_disk(&v.map_root, &clone);
	v.parent = o.id;
	v.flags = cpu_to_le32(op->flags);
	v.snap_epoch = cpu_to_le64(epoch);
	v.mapped = o.mapped;
	o.snap_epoch = cpu_to_le64(epoch);
	r = blob_set_locked(p, le64_to_cpu(v.id), NULL,
			    op->blob ? op->blob : zero);
	if (r == 0)
		r = vol_store_locked(p, &o);
	if (r == 0)
		r = vol_store_locked(p, &v);
	if (r == 0)
		op->result_id = le64_to_cpu(v.id);
	return r;
}

static int op_delete(struct tv_pool *p, struct tv_op *op)
{
	struct disk_pool_user *u = pool_user(p);
	uint8_t k[8], blob[TV_BLOB_MAX];
	struct disk_volume v;
	uint64_t seq, alone;
	int r;

	r = vol_lookup_locked(p, op->id, &v);
	if (r == 0)
		r = blob_load_locked(p, op->id, blob);
	if (r < 0)
		return r;
	p->io->invalidate_locked(p, op->id);
	r = names_del(p, &v);
	if (r == 0)
		r = blob_del_locked(p, op->id, blob);
	if (r < 0)
		return r;
	/* Take the record out: its mapping tree reference becomes ours, and
	 * moves to DEFERRED, which frees it a bounded piece at a time. */
	put_be64(k, op->id);
	r = btree_remove(&p->vols, tm_root(p->tm, SLOT_VOLS), k, &v);
	if (r < 0)
		return r;
	u->nr_volumes = cpu_to_le64(le64_to_cpu(u->nr_volumes) - 1);
	if (!v.map_root.blocknr)
		return 0;
	r = reclaimable_of(p, &v, NULL, le64_to_cpu(v.mapped), &alone);
	if (r < 0)
		return r;
	add_reclaimable(p, alone);
	seq = le64_to_cpu(u->deferred_seq);
	u->deferred_seq = cpu_to_le64(seq + 1);
	put_be64(k, seq);
	return btree_insert(&p->deferred, tm_root(p->tm, SLOT_DEFERRED), k,
			    &v.map_root);
}

static int op_rename(struct tv_pool *p, struct tv_op *op)
{
	struct disk_volume v;
	uint64_t other;
	int r;

	r = check_name(op->name);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &v);
	if (r < 0)
		return r;
	r = name_find_locked(p, op->name, &other);
	if (r == 0 && other == op->id)
		return 0;
	if (r == 0)
		return tv_err(-EEXIST, "volume '%s': a volume of that name "
				       "exists (#%" PRIu64 ")",
			      op->name, other);
	if (r != -ENOENT)
		return r;
	r = names_del(p, &v);
	if (r == 0)
		r = names_add(p, op->name, op->id);
	if (r < 0)
		return r;
	memset(v.name, 0, sizeof(v.name));
	memcpy(v.name, op->name, strlen(op->name));
	v.name_len = cpu_to_le32((uint32_t)strlen(op->name));
	return vol_store_locked(p, &v);
}

/* The size the committed state gives volume id (0 when it has none: a
 * volume made in this transaction). */
static int committed_size_locked(struct tv_pool *p, uint64_t id,
				 uint64_t *size)
{
	struct disk_volume cv;
	uint8_t k[8];
	int r;

	put_be64(k, id);
	r = btree_lookup(&p->vols, tm_committed_root(p->tm, SLOT_VOLS), k, &cv);
	if (r == -ENOENT) {
		*size = 0;
		return 0;
	}
	if (r == 0)
		*size = le64_to_cpu(cv.size);
	return r;
}

/*
 * Shrink v to size (rule 5): the mappings of the blocks wholly past the
 * new end move, as a tree of their own, to DEFERRED, which frees them a
 * bounded piece at a time as for a deleted volume.  The volume's tree is
 * split in two: a clone (O(1)) loses everything below the cut, the
 * original everything from it on; each copies only the path to the cut
 * and hands over the subtrees on the other side by reference counts, so
 * the transaction changes O(height) reference counts however much is
 * cut, and its commit stays small, also on a full pool.  Nothing is
 * written to any block: what the last kept block holds past the end
 * stays there, unseen (rule 5), and the old state is whole for a
 * rollback or a crash.
 */
static int shrink_locked(struct tv_pool *p, struct disk_volume *v,
			 uint64_t size)
{
	struct disk_pool_user *u = pool_user(p);
	uint64_t first = DIV_ROUND_UP(size, p->block_size), cut_n = 0, seq;
	uint64_t alone = 0;
	struct tm_ref root, cut;
	struct btree_cursor c;
	struct disk_ref dref;
	uint8_t lo[8], k[8];
	bool any;
	int r;

	ref_from_disk(&root, &v->map_root);
	put_be64(lo, first);
	r = btree_cursor_seek(&p->map, &root, lo, &c);
	any = r == 0 && c.valid;
	btree_cursor_close(&c);
	if (r < 0 || !any)
		return r;
	/* rule 6, before the split (after it the two trees share the path
	 * to the cut) */
	r = reclaimable_of(p, v, lo, 0, &alone);
	if (r == 0)
		r = btree_clone(&p->map, &root, &cut);
	if (r == 0)
		r = btree_remove_range(&p->map, &cut, NULL, lo, NULL);
	if (r == 0)
		r = btree_remove_range(&p->map, &root, lo, NULL, &cut_n);
	if (r < 0)
		return r;
	add_reclaimable(p, le64_to_cpu(v->snap_epoch) ? alone : cut_n);
	ref_to_disk(&v->map_root, &root);
	v->mapped = cpu_to_le64(le64_to_cpu(v->mapped) - cut_n);
	seq = le64_to_cpu(u->deferred_seq);
	u->deferred_seq = cpu_to_le64(seq + 1);
	put_be64(k, seq);
	ref_to_disk(&dref, &cut);
	return btree_insert(&p->deferred, tm_root(p->tm, SLOT_DEFERRED), k,
			    &dref);
}

/*
 * Grow v from old (rule 5): the bytes of the block old falls in, from
 * old on, may hold what the volume had there before a shrink; they must
 * read as zeroes now.  When the committed state cannot show them (its
 * size of the volume is at most old) they are zeroed in place; else in
 * a copy of the block, so that a rollback or a crash before the commit
 * finds them as they were.
 */
static int grow_locked(struct tv_pool *p, struct disk_volume *v, uint64_t old)
{
	uint64_t csize;
	int r;

	if (!(old % p->block_size))
		return 0;
	r = committed_size_locked(p, le64_to_cpu(v->id), &csize);
	if (r == 0)
		r = p->io->zero_tail_locked(p, v, old, csize <= old);
	return r;
}

static int op_resize(struct tv_pool *p, struct tv_op *op)
{
	struct disk_volume v;
	uint64_t old;
	int r;

	r = check_size(op->size);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &v);
	if (r < 0)
		return r;
	if (le32_to_cpu(v.flags) & TV_VOL_READ_ONLY)
		return tv_err(-EROFS, "volume '%.*s' is read-only",
			      (int)MIN(le32_to_cpu(v.name_len), TV_NAME_MAX),
			      v.name);
	old = le64_to_cpu(v.size);
	if (op->size == old)
		return 0;
	/* rule 2 of vio-cache.c: no fast-path I/O uses a block we change */
	p->io->invalidate_locked(p, op->id);
	r = op->size < old ? shrink_locked(p, &v, op->size)
			   : grow_locked(p, &v, old);
	if (r < 0)
		return r;
	v.size = cpu_to_le64(op->size);
	return vol_store_locked(p, &v);
}

static int op_set_blob(struct tv_pool *p, struct tv_op *op)
{
	uint8_t old[TV_BLOB_MAX];
	struct disk_volume v;
	int r;

	if (!op->blob)
		return tv_err(-EINVAL, "set-blob needs a blob");
	r = check_blob(p, op->blob, op->blob_len);
	if (r == 0)
		r = vol_lookup_locked(p, op->id, &v);
	if (r == 0)
		r = blob_load_locked(p, op->id, old);
	if (r == 0)
		r = blob_set_locked(p, op->id, old, op->blob);
	return r;
}

static int apply_op(struct tv_pool *p, struct tv_op *op);

/*
 * Pool.c, rule 2: whether op fits what the transaction can still commit.
 * A batch is one transaction and cannot commit a part of itself first:
 * no room is -ENOSPC, before the op changes anything.  A delete frees
 * space, and so does a shrink whose cut holds at least what it takes
 * alone: they may use the reserve down to the free floor (*freeing: run
 * them in reserve mode); a shrink whose cut others share (a snapshot's)
 * leaves the reserve, as metadata does.  The tables' changes are bounded
 * from their heights (probe_table); a shrink's split of the mapping tree
 * (shrink_locked) is read from its path, every node on it counted as
 * shared (it is, after the clone); a grow that must copy its tail block
 * is checked where it allocates it (vio.c, rule 9).
 */
static int op_room_locked(struct tv_pool *p, const struct tv_op *op,
			  bool *freeing)
{
	uint32_t blob = p->blob_size ? 1 : 0, chunks = nr_chunks(p);
	enum sm_room kind = SM_ROOM_META;
	struct room_probe q;
	struct disk_volume v;
	bool fits;
	int r = 0;

	*freeing = false;
	probe_init(&q, p);
	switch (op->kind) {
	case TV_OP_CREATE:
	case TV_OP_SNAPSHOT:
		r = probe_table(&q, SLOT_NAMES, 1);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBIDX, blob);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBS, chunks);
		if (r == 0)
			r = probe_table(&q, SLOT_VOLS, 2);
		probe_add(&q, 0, 1); /* a snapshot's clone: the root's count */
		break;
	case TV_OP_DELETE:
		r = probe_table(&q, SLOT_NAMES, 1);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBIDX, blob);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBS, chunks);
		if (r == 0)
			r = probe_table(&q, SLOT_VOLS, 1);
		if (r == 0)
			r = probe_table(&q, SLOT_DEFERRED, 1);
		kind = SM_ROOM_FREE;
		break;
	case TV_OP_RENAME:
		r = probe_table(&q, SLOT_NAMES, 2);
		if (r == 0)
			r = probe_table(&q, SLOT_VOLS, 1);
		break;
	case TV_OP_SET_BLOB:
		r = probe_table(&q, SLOT_BLOBIDX, 2 * blob);
		if (r == 0)
			r = probe_table(&q, SLOT_BLOBS, chunks);
		break;
	case TV_OP_RESIZE:
		r = probe_table(&q, SLOT_VOLS, 1);
		if (r < 0 || check_size(op->size) < 0 ||
		    vol_lookup_locked(p, op->id, &v) < 0 ||
		    (le32_to_cpu(v.flags) & TV_VOL_READ_ONLY) ||
		    op->size >= le64_to_cpu(v.size)) {
			tv_err(0, "%s", ""); /* the op says what is wrong */
			break;
		}
		{
			uint8_t k[8];
			struct tm_ref root;

			ref_from_disk(&root, &v.map_root);
			put_be64(k, DIV_ROUND_UP(op->size, p->block_size));
			/* the clone's two ends, the original's one */
			r = probe_path(&q, &p->map, &root, NULL, true, true);
			if (r == 0)
				r = probe_path(&q, &p->map, &root, k, true,
					       true);
			if (r == 0)
				r = probe_path(&q, &p->map, &root, k, true,
					       true);
			if (r == 0)
				r = probe_table(&q, SLOT_DEFERRED, 1);
			/* Into the reserve only if what the shrink cuts off
			 * frees at least the nodes it may take, once reclaim
			 * has done it (pool.c, rule 2).  A volume never
			 * snapshotted holds everything alone; a snapshot's
			 * cut, shared with its origin, frees nothing. */
			kind = SM_ROOM_FREE;
			if (r == 0 && le64_to_cpu(v.snap_epoch)) {
				struct alone a;

				r = tree_alone(p, &root, k, ALONE_LIMIT,
					       q.nodes, &a);
				if (r == 0 &&
				    a.nodes + a.blocks * (p->block_size /
							  PD_NODE_SIZE) <
					    q.nodes)
					kind = SM_ROOM_META;
			}
		}
		break;
	}
	fits = r == 0 && probe_room(&q, kind, 0);
	probe_free(&q);
	if (r < 0)
		return r;
	if (!fits)
		return tv_err(-ENOSPC, "%s: %s: no room to commit this "
				       "operation",
			      p->path, pool_full_what(p));
	*freeing = kind == SM_ROOM_FREE;
	return 0;
}

static int apply(struct tv_pool *p, struct tv_op *op)
{
	bool freeing;
	int r = op_room_locked(p, op, &freeing);

	if (r < 0)
		return r;
	if (freeing)
		sm_set_reserve_mode(tm_sm(p->tm), true);
	r = apply_op(p, op);
	if (freeing)
		sm_set_reserve_mode(tm_sm(p->tm), false);
	return r;
}

static int apply_op(struct tv_pool *p, struct tv_op *op)
{
	switch (op->kind) {
	case TV_OP_CREATE:
		return op_create(p, op);
	case TV_OP_SNAPSHOT:
		return op_snapshot(p, op);
	case TV_OP_DELETE:
		return op_delete(p, op);
	case TV_OP_RENAME:
		return op_rename(p, op);
	case TV_OP_RESIZE:
		return op_resize(p, op);
	case TV_OP_SET_BLOB:
		return op_set_blob(p, op);
	}
	return tv_err(-EINVAL, "unknown operation %d", (int)op->kind);
}

int tv_batch(struct tv_pool *p, struct tv_op *ops, size_t n, size_t *failed)
{
	size_t i = 0;
	int r = 0;

	tv_err(0, "%s", "");
	pthread_mutex_lock(&p->meta_lock);
	if (p->read_only) {
		r = tv_err(-EROFS, "%s: the pool is read-only%s%s", p->path,
			   p->reason[0] ? ": " : "", p->reason);
		goto out;
	}
	/* Commit what the I/O path changed first, so that a failed batch
	 * rolls back only itself. */
	if (p->dirty) {
		r = pool_commit_locked(p);
		if (r < 0)
			goto out;
	}
	for (unsigned int tries = 0;; tries++) {
		for (i = 0; i < n; i++) {
			r = apply(p, &ops[i]);
			if (r < 0)
				break;
		}
		/* Full, while deleted volumes still hold blocks (pool.c,
		 * rule 3): free some of them and try the batch again. */
		if (r != -ENOSPC || tries >= 8 ||
		    !tm_committed_root(p->tm, SLOT_DEFERRED)->blocknr)
			break;
		{
			char msg[256];
			int rm;

			snprintf(msg, sizeof(msg), "%s", tv_last_error());
			pool_abort_locked(p);
			rm = pool_make_room_locked(p);
			if (rm == -ENOSPC) {
				/* nothing more to free: the op's error */
				tv_err(r, "%s", msg);
				if (failed)
					*failed = i;
				goto out;
			}
			if (rm < 0) {
				r = rm;
				goto out;
			}
		}
		tv_err(0, "%s", "");
	}
	if (r < 0) {
		/* A refused op leaves its message; a store error gets one */
		if (!tv_last_error()[0] || tm_state(p->tm))
			tv_err(r, "operation %zu: %s", i + 1, strerror(-r));
		if (failed)
			*failed = i;
		pool_abort_locked(p);
		/* A metadata I/O error or damage (not a refused request):
		 * stop writing until the pool is reopened and checked. */
		if (r == -EIO || r == -EUCLEAN)
			pool_set_read_only(p, r, "metadata I/O failed");
		goto out;
	}
	p->dirty = true;
	r = pool_commit_locked(p);
	if (r < 0 && failed)
		*failed = n; /* no op failed: the commit did */
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

static int one(struct tv_pool *p, struct tv_op *op)
{
	tv_err(0, "%s", "");
	return tv_batch(p, op, 1, NULL);
}

int tv_vol_create(struct tv_pool *p, const char *name, uint64_t size,
		  const void *blob, size_t blob_len, uint64_t *id)
{
	struct tv_op op = { .kind = TV_OP_CREATE, .name = name, .size = size,
			    .blob = blob, .blob_len = blob_len };
	int r = one(p, &op);

	if (r == 0 && id)
		*id = op.result_id;
	return r;
}

int tv_vol_snapshot(struct tv_pool *p, uint64_t origin, const char *name,
		    uint32_t flags, const void *blob, size_t blob_len,
		    uint64_t *id)
{
	struct tv_op op = { .kind = TV_OP_SNAPSHOT, .id = origin, .name = name,
			    .flags = flags, .blob = blob,
			    .blob_len = blob_len };
	int r = one(p, &op);

	if (r == 0 && id)
		*id = op.result_id;
	return r;
}

int tv_vol_delete(struct tv_pool *p, uint64_t id)
{
	struct tv_op op = { .kind = TV_OP_DELETE, .id = id };

	return one(p, &op);
}

int tv_vol_rename(struct tv_pool *p, uint64_t id, const char *name)
{
	struct tv_op op = { .kind = TV_OP_RENAME, .id = id, .name = name };

	return one(p, &op);
}

int tv_vol_resize(struct tv_pool *p, uint64_t id, uint64_t size)
{
	struct tv_op op = { .kind = TV_OP_RESIZE, .id = id, .size = size };

	return one(p, &op);
}

int tv_vol_set_blob(struct tv_pool *p, uint64_t id, const void *blob,
		    size_t len)
{
	struct tv_op op = { .kind = TV_OP_SET_BLOB, .id = id, .blob = blob,
			    .blob_len = len };

	return one(p, &op);
}

/* ---- consistency of the table and its indexes (for check) ---- */

static void idx_err(FILE *out, uint64_t *errors, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void idx_err(FILE *out, uint64_t *errors, const char *fmt, ...)
{
	va_list ap;

	(*errors)++;
	if (!out || *errors > 50)
		return;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
}

/*
 * Invariants 1-3 at the top of this file: every volume has its name and
 * blob index entries (and no index entry lacks its volume), blobs are
 * stored only when not zero, the counters agree.  meta_lock held; reads
 * only.  O(volumes log volumes).
 */
int vol_check_indexes_locked(struct tv_pool *p, FILE *out, uint64_t *errors)
{
	struct disk_pool_user *u = pool_user(p);
	uint8_t blob[TV_BLOB_MAX], k[BTREE_MAX_KEY];
	uint64_t nvols = 0, next = le64_to_cpu(u->next_id);
	struct btree_cursor c;
	int r;

	/* table -> indexes */
	r = btree_cursor_seek(&p->vols, tm_root(p->tm, SLOT_VOLS), NULL, &c);
	while (r == 0 && c.valid) {
		struct disk_volume v;
		uint64_t id;

		memcpy(&v, btree_cursor_value(&c), sizeof(v));
		id = get_be64(btree_cursor_key(&c));
		r = btree_cursor_next(&c);
		if (r < 0)
			break;
		nvols++;
		if (le64_to_cpu(v.id) != id || id >= next)
			idx_err(out, errors, "volume #%" PRIu64 ": id %" PRIu64
					     " in its record, next id %" PRIu64,
				id, (uint64_t)le64_to_cpu(v.id), next);
		if (!le32_to_cpu(v.name_len) ||
		    le32_to_cpu(v.name_len) > TV_NAME_MAX)
			continue; /* vol_check reported it */
		name_key(k, (const char *)v.name, le32_to_cpu(v.name_len), id);
		if (btree_lookup(&p->names, tm_root(p->tm, SLOT_NAMES), k,
				 NULL))
			idx_err(out, errors, "volume #%" PRIu64
					     ": missing from the name index",
				id);
		if (!p->blob_size)
			continue;
		if (blob_load_locked(p, id, blob) < 0) {
			idx_err(out, errors, "volume #%" PRIu64
					     ": blob unreadable", id);
			continue;
		}
		blobidx_key(p, k, blob, id);
		if (btree_lookup(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k,
				 NULL))
			idx_err(out, errors, "volume #%" PRIu64
					     ": missing from the blob index",
				id);
	}
	btree_cursor_close(&c);
	if (r < 0)
		return r;
	if (nvols != le64_to_cpu(u->nr_volumes))
		idx_err(out, errors, "%" PRIu64 " volumes, the pool counts %"
				     PRIu64,
			nvols, (uint64_t)le64_to_cpu(u->nr_volumes));

	/* indexes -> table: every entry names a volume that matches it */
	r = btree_cursor_seek(&p->names, tm_root(p->tm, SLOT_NAMES), NULL, &c);
	while (r == 0 && c.valid) {
		const uint8_t *key = btree_cursor_key(&c);
		uint64_t h = get_be64(key), id = get_be64(key + 8);
		uint8_t vk[8];
		struct disk_volume v;

		put_be64(vk, id);
		if (btree_lookup(&p->vols, tm_root(p->tm, SLOT_VOLS), vk, &v) ||
		    le32_to_cpu(v.name_len) > TV_NAME_MAX ||
		    name_hash((const char *)v.name, le32_to_cpu(v.name_len)) !=
			    h)
			idx_err(out, errors, "name index entry for #%" PRIu64
					     " matches no volume",
				id);
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	if (r < 0 || !p->blob_size)
		return r;
	r = btree_cursor_seek(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), NULL,
			      &c);
	while (r == 0 && c.valid) {
		uint64_t id = get_be64((const uint8_t *)btree_cursor_key(&c) +
				       p->blobidx_prefix);
		uint8_t vk[8];

		memcpy(k, btree_cursor_key(&c), p->blobidx_prefix);
		put_be64(vk, id);
		if (btree_lookup(&p->vols, tm_root(p->tm, SLOT_VOLS), vk,
				 NULL) ||
		    blob_load_locked(p, id, blob) ||
		    memcmp(blob, k, p->blobidx_prefix))
			idx_err(out, errors, "blob index entry for #%" PRIu64
					     " matches no volume's blob",
				id);
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	return r;
}
