/* SPDX-License-Identifier: GPL-2.0-or-later */
/* u64map.c - contract in u64map.h. */
#include "util/u64map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t slot_of(uint64_t key, size_t cap)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	key ^= key >> 33;
	return (size_t) key & (cap - 1);
}

void u64map_init(struct u64map *m)
{
	memset(m, 0, sizeof(*m));
}

void u64map_free(struct u64map *m)
{
	free(m->keys);
	free(m->vals);
	free(m->used);
	u64map_init(m);
}

void u64map_clear(struct u64map *m)
{
	if (m->cap && m->len) /* an empty map costs nothing to clear */
		memset(m->used, 0, m->cap);
	m->len = 0;
}

uint64_t *u64map_find(const struct u64map *m, uint64_t key)
{
	size_t i;

	if (!m->len)
		return NULL;
	for (i = slot_of(key, m->cap); m->used[i]; i = (i + 1) & (m->cap - 1))
		if (m->keys[i] == key)
			return &m->vals[i];
	return NULL;
}

static void raw_put(struct u64map *m, uint64_t key, uint64_t val)
{
	size_t i = slot_of(key, m->cap);

	while (m->used[i]) {
		if (m->keys[i] == key) {
			m->vals[i] = val;
			return;
		}
		i = (i + 1) & (m->cap - 1);
	}
	m->used[i] = 1;
	m->keys[i] = key;
	m->vals[i] = val;
	m->len++;
}

static int grow(struct u64map *m)
{
	struct u64map n;
	size_t cap = m->cap ? m->cap * 2 : 64;

	u64map_init(&n);
	n.keys = malloc(cap * sizeof(*n.keys));
	n.vals = malloc(cap * sizeof(*n.vals));
	n.used = calloc(cap, 1);
	if (!n.keys || !n.vals || !n.used) {
		u64map_free(&n);
		return -ENOMEM;
	}
	n.cap = cap;
	for (size_t i = 0; i < m->cap; i++)
		if (m->used[i])
			raw_put(&n, m->keys[i], m->vals[i]);
	u64map_free(m);
	*m = n;
	return 0;
}

int u64map_put(struct u64map *m, uint64_t key, uint64_t val)
{
	uint64_t *v = u64map_find(m, key);

	if (v) {
		*v = val;
		return 0;
	}
	if ((m->len + 1) * 2 > m->cap) {
		int r = grow(m);
		if (r < 0)
			return r;
	}
	raw_put(m, key, val);
	return 0;
}

bool u64map_del(struct u64map *m, uint64_t key)
{
	size_t i, j, mask;

	if (!m->len)
		return false;
	mask = m->cap - 1;
	for (i = slot_of(key, m->cap); m->used[i]; i = (i + 1) & mask)
		if (m->keys[i] == key)
			break;
	if (!m->used[i])
		return false;
	/* Backward-shift: move later members of the cluster into the hole
	 * when their home slot does not lie cyclically in (i, j]. */
	j = i;
	for (;;) {
		size_t home;

		m->used[i] = 0;
		for (;;) {
			j = (j + 1) & mask;
			if (!m->used[j])
				goto done;
			home = slot_of(m->keys[j], m->cap);
			if (i <= j ? (home <= i || home > j)
				   : (home <= i && home > j))
				break;
		}
		m->keys[i] = m->keys[j];
		m->vals[i] = m->vals[j];
		m->used[i] = 1;
		i = j;
	}
done:
	m->len--;
	return true;
}

bool u64map_next(const struct u64map *m, size_t *pos, uint64_t *key,
		 uint64_t *val)
{
	for (size_t i = *pos; i < m->cap; i++) {
		if (m->used[i]) {
			*key = m->keys[i];
			*val = m->vals[i];
			*pos = i + 1;
			return true;
		}
	}
	*pos = m->cap;
	return false;
}
