/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Explicit-endian loads and stores. On-disk structures are little-endian;
 * btree keys are stored big-endian so that memcmp() order is numeric order.
 * Every helper works on unaligned memory.
 */
#ifndef TV_UTIL_ENDIAN_H
#define TV_UTIL_ENDIAN_H

#include <stdint.h>
#include <string.h>

static inline uint16_t get_le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t) (b[0] | (b[1] << 8));
}

static inline uint32_t get_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t) b[0] | ((uint32_t) b[1] << 8) |
	       ((uint32_t) b[2] << 16) | ((uint32_t) b[3] << 24);
}

static inline uint64_t get_le64(const void *p)
{
	const uint8_t *b = p;
	return (uint64_t) get_le32(b) | ((uint64_t) get_le32(b + 4) << 32);
}

static inline void put_le16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t) v;
	b[1] = (uint8_t) (v >> 8);
}

static inline void put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t) v;
	b[1] = (uint8_t) (v >> 8);
	b[2] = (uint8_t) (v >> 16);
	b[3] = (uint8_t) (v >> 24);
}

static inline void put_le64(void *p, uint64_t v)
{
	put_le32(p, (uint32_t) v);
	put_le32((uint8_t *) p + 4, (uint32_t) (v >> 32));
}

static inline uint64_t get_be64(const void *p)
{
	const uint8_t *b = p;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | b[i];
	return v;
}

static inline void put_be64(void *p, uint64_t v)
{
	uint8_t *b = p;
	for (int i = 7; i >= 0; i--) {
		b[i] = (uint8_t) v;
		v >>= 8;
	}
}

static inline uint16_t get_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t) (((uint16_t) b[0] << 8) | b[1]);
}

static inline void put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t) (v >> 8);
	b[1] = (uint8_t) v;
}

static inline uint32_t get_be32(const void *p)
{
	const uint8_t *b = p;
	return ((uint32_t) b[0] << 24) | ((uint32_t) b[1] << 16) |
	       ((uint32_t) b[2] << 8) | (uint32_t) b[3];
}

static inline void put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t) (v >> 24);
	b[1] = (uint8_t) (v >> 16);
	b[2] = (uint8_t) (v >> 8);
	b[3] = (uint8_t) v;
}

/*
 * Fields of struct disk_* hold little-endian values; read and write them
 * only through these (no-ops on little-endian hosts).
 */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define le16_to_cpu(x) __builtin_bswap16(x)
#define le32_to_cpu(x) __builtin_bswap32(x)
#define le64_to_cpu(x) __builtin_bswap64(x)
#else
#define le16_to_cpu(x) ((uint16_t) (x))
#define le32_to_cpu(x) ((uint32_t) (x))
#define le64_to_cpu(x) ((uint64_t) (x))
#endif
#define cpu_to_le16(x) le16_to_cpu(x)
#define cpu_to_le32(x) le32_to_cpu(x)
#define cpu_to_le64(x) le64_to_cpu(x)

#endif
