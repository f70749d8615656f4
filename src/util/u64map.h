/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * u64map - open-addressing hash map from uint64_t keys to uint64_t values
 * (linear probing, backward-shift deletion, grows at 1/2 load).  For
 * in-memory indexes: block number -> slot, node number -> chunk.
 * Not thread-safe.
 */
#ifndef TV_UTIL_U64MAP_H
#define TV_UTIL_U64MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct u64map {
	uint64_t *keys;
	uint64_t *vals;
	uint8_t *used;
	size_t cap; /* power of two, or 0 */
	size_t len;
};

void u64map_init(struct u64map *m);
void u64map_free(struct u64map *m);
void u64map_clear(struct u64map *m);
/* Returns a pointer to the value, or NULL. Valid until the next change. */
uint64_t *u64map_find(const struct u64map *m, uint64_t key);
/* Insert or overwrite.  -ENOMEM on allocation failure. */
int u64map_put(struct u64map *m, uint64_t key, uint64_t val);
/* true if the key was present */
bool u64map_del(struct u64map *m, uint64_t key);
/* Iterate: start with *pos = 0; returns false at the end. */
bool u64map_next(const struct u64map *m, size_t *pos, uint64_t *key,
		 uint64_t *val);

#endif
