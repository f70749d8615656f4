/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * volume-table.c - the volume table and its name and blob indexes: a
 * volume's record (lookup, store), its name (checks, the NAMES index),
 * its blob (BLOBS and the BLOBIDX index), the queries of the public API
 * (resolve, info, usage, get-blob, list, find by blob), and the check
 * that the table and its indexes agree.  The operations that change
 * them are volume.c's.
 *
 * Invariants 1 and 2 of the volume table (volume.c has 3 to 6; the
 * checker and tests verify them all):
 *
 *   1. Every volume has exactly one NAMES entry {hash(name), id} and one
 *      BLOBIDX entry {blob prefix, id} (when blob_size > 0); no others
 *      exist.
 *   2. BLOBS holds a volume's chunks only when its blob is not all zero.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm.h"
#include "thin/thin-internal.h"
#include "util/checked.h"
#include "util/endian.h"

/* ---- names ---- */

/* 1..TV_NAME_MAX bytes of valid UTF-8; no '/', no control characters, not
 * starting with '#' (which names an id). */
int vol_check_name(const char *name)
{
	const uint8_t *s = (const uint8_t *) name;
	size_t len = strlen(name);

	if (!len)
		return tv_err(-EINVAL, "a volume name cannot be empty");
	if (len > TV_NAME_MAX)
		return tv_err(-EINVAL,
			      "volume name '%.40s...': longer than "
			      "%d bytes",
			      name, TV_NAME_MAX);
	if (name[0] == '#')
		return tv_err(-EINVAL,
			      "volume name '%s': cannot start with "
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
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
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
		h ^= (uint8_t) name[i];
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
int vol_name_find_locked(struct tv_pool *p, const char *name, uint64_t *id)
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
		r = btree_cursor_seek(&p->names, tm_root(p->tm, SLOT_NAMES), k,
				      &c);
	}
	btree_cursor_close(&c);
	if (r < 0)
		return tv_err(r, "name index: %s", strerror(-r));
	return -ENOENT;
}

/* Index trees have empty values; the btree copies value.size bytes. */
static const uint8_t no_value[1];

int vol_names_add(struct tv_pool *p, const char *name, uint64_t id)
{
	uint8_t k[16];

	name_key(k, name, strlen(name), id);
	return btree_insert(&p->names, tm_root(p->tm, SLOT_NAMES), k, no_value);
}

int vol_names_del(struct tv_pool *p, const struct disk_volume *v)
{
	uint8_t k[16];

	name_key(k, (const char *) v->name, le32_to_cpu(v->name_len),
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

uint32_t vol_blob_chunks(const struct tv_pool *p)
{
	return p->blob_chunk ? DIV_ROUND_UP(p->blob_size, p->blob_chunk) : 0;
}

static void blobs_key(uint8_t k[10], uint64_t id, uint32_t chunk)
{
	put_be64(k, id);
	k[8] = (uint8_t) (chunk >> 8);
	k[9] = (uint8_t) chunk;
}

int vol_blob_load_locked(struct tv_pool *p, uint64_t id, uint8_t *blob)
{
	uint8_t k[10], buf[BLOB_CHUNK_MAX];

	memset(blob, 0, p->blob_size);
	for (uint32_t i = 0; i < vol_blob_chunks(p); i++) {
		size_t off = (size_t) i * p->blob_chunk;
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
int vol_blob_set_locked(struct tv_pool *p, uint64_t id, const uint8_t *old,
			const uint8_t *blob)
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
	for (uint32_t i = 0; i < vol_blob_chunks(p); i++) {
		size_t off = (size_t) i * p->blob_chunk;
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

int vol_blob_del_locked(struct tv_pool *p, uint64_t id, const uint8_t *old)
{
	uint8_t k[BTREE_MAX_KEY];
	int r;

	if (!p->blob_size)
		return 0;
	blobidx_key(p, k, old, id);
	r = btree_remove(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k, NULL);
	if (r < 0 || all_zero(old, p->blob_size))
		return r;
	for (uint32_t i = 0; i < vol_blob_chunks(p); i++) {
		blobs_key(k, id, i);
		r = btree_remove(&p->blobs, tm_root(p->tm, SLOT_BLOBS), k,
				 NULL);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The error of a change refused because v is read-only. */
int vol_read_only_err(const struct disk_volume *v)
{
	return tv_err(-EROFS, "volume '%.*s' is read-only",
		      (int) MIN(le32_to_cpu(v->name_len), TV_NAME_MAX),
		      v->name);
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
		v = v * 10 + (uint64_t) (*s - '0');
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
	r = vol_check_name(spec);
	if (r < 0)
		return r;
	pthread_mutex_lock(&p->meta_lock);
	r = vol_name_find_locked(p, spec, &i);
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

static int usage_one(void *ctx, const void *key, const void *value, bool shared)
{
	struct usage *u = ctx;
	uint32_t count;
	int r;

	(void) key;
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
	struct usage u = {.p = p};
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
		r = vol_blob_load_locked(p, id, buf);
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
	return (int) n;
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
		return tv_err(-EINVAL,
			      "%zu bytes is longer than the pool's "
			      "%u-byte blobs",
			      len, p->blob_size);
	if (!p->blob_size)
		return tv_err(-EINVAL, "this pool has no blobs");
	memset(k, 0, sizeof(k));
	memcpy(k, prefix, plen);
	pthread_mutex_lock(&p->meta_lock);
	/* Candidates from the index: every key starting with the prefix
	 * (as much of it as the keys hold). */
	r = btree_cursor_seek(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k, &c);
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
			r = vol_blob_load_locked(p, cand[i], blob);
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
	return (int) MIN(found, (size_t) INT32_MAX);
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
			idx_err(out, errors,
				"volume #%" PRIu64 ": id %" PRIu64
				" in its record, next id %" PRIu64,
				id, (uint64_t) le64_to_cpu(v.id), next);
		if (!le32_to_cpu(v.name_len) ||
		    le32_to_cpu(v.name_len) > TV_NAME_MAX)
			continue; /* vol_check reported it */
		name_key(k, (const char *) v.name, le32_to_cpu(v.name_len), id);
		if (btree_lookup(&p->names, tm_root(p->tm, SLOT_NAMES), k,
				 NULL))
			idx_err(out, errors,
				"volume #%" PRIu64
				": missing from the name index",
				id);
		if (!p->blob_size)
			continue;
		if (vol_blob_load_locked(p, id, blob) < 0) {
			idx_err(out, errors,
				"volume #%" PRIu64 ": blob unreadable", id);
			continue;
		}
		blobidx_key(p, k, blob, id);
		if (btree_lookup(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k,
				 NULL))
			idx_err(out, errors,
				"volume #%" PRIu64
				": missing from the blob index",
				id);
	}
	btree_cursor_close(&c);
	if (r < 0)
		return r;
	if (nvols != le64_to_cpu(u->nr_volumes))
		idx_err(out, errors,
			"%" PRIu64 " volumes, the pool counts %" PRIu64, nvols,
			(uint64_t) le64_to_cpu(u->nr_volumes));

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
		    name_hash((const char *) v.name, le32_to_cpu(v.name_len)) !=
			h)
			idx_err(out, errors,
				"name index entry for #%" PRIu64
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
		uint64_t id = get_be64((const uint8_t *) btree_cursor_key(&c) +
				       p->blobidx_prefix);
		uint8_t vk[8];

		memcpy(k, btree_cursor_key(&c), p->blobidx_prefix);
		put_be64(vk, id);
		if (btree_lookup(&p->vols, tm_root(p->tm, SLOT_VOLS), vk,
				 NULL) ||
		    vol_blob_load_locked(p, id, blob) ||
		    memcmp(blob, k, p->blobidx_prefix))
			idx_err(out, errors,
				"blob index entry for #%" PRIu64
				" matches no volume's blob",
				id);
		r = btree_cursor_next(&c);
	}
	btree_cursor_close(&c);
	return r;
}
