/* SPDX-License-Identifier: GPL-2.0-or-later */
/* crc32c.c - CRC-32C: the SSE4.2 and the table paths; contract in
 * crc32c.h. */
#include "util/crc32c.h"

#include <string.h>

#define CRC32C_POLY 0x82F63B78u

static uint32_t table[8][256];
static int table_ready;

static void build_table(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^
				      table[0][table[t - 1][i] & 0xff];
	__atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE))
		build_table(); /* idempotent: racing builders write the same */
	crc = ~crc;
	while (len && ((uintptr_t) p & 7)) {
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
		len--;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		w = __builtin_bswap64(w);
#endif
		w ^= crc;
		crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^
		      table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
		      table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
		      table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

#if defined(__x86_64__)
/*
 * The crc32 instruction has a latency of 3 cycles but a throughput of one
 * a cycle, so one chain over a 4 KiB metadata node runs at a third of the
 * speed the unit allows.  Long buffers are therefore cut into pieces of
 * 3 * STREAM bytes, each checksummed as three independent chains, which
 * are then joined: the CRC register is linear over GF(2), so the register
 * after A || B, starting from x, is Z(x) ^ R(0, B), where Z(x) is x after
 * |B| zero bytes (a fixed linear map, kept as four byte tables) and
 * R(0, B) is the register after B starting from 0.  STREAM is chosen so
 * that a node's checksummed bytes (4092, from offset 4) are one piece
 * plus a few bytes: 3 * 1360 = 4080.
 */
#define STREAM 1360u
_Static_assert(STREAM % 8 == 0, "whole words per stream");

static uint32_t zshift[4][256]; /* Z for STREAM zero bytes, by byte */
static int zshift_ready;

__attribute__((target("sse4.2"))) static void build_zshift(void)
{
	uint32_t basis[32];

	/* Z is linear: its image of each single bit, then of each byte */
	for (int i = 0; i < 32; i++) {
		uint64_t c = 1u << i;

		for (unsigned int k = 0; k < STREAM / 8; k++)
			c = __builtin_ia32_crc32di(c, 0);
		basis[i] = (uint32_t) c;
	}
	for (int b = 0; b < 4; b++)
		for (uint32_t v = 0; v < 256; v++) {
			uint32_t z = 0;

			for (int i = 0; i < 8; i++)
				if (v & (1u << i))
					z ^= basis[b * 8 + i];
			zshift[b][v] = z;
		}
	/* idempotent: racing builders write the same */
	__atomic_store_n(&zshift_ready, 1, __ATOMIC_RELEASE);
}

static inline uint32_t zero_shift(uint32_t c)
{
	return zshift[0][c & 0xff] ^ zshift[1][(c >> 8) & 0xff] ^
	       zshift[2][(c >> 16) & 0xff] ^ zshift[3][c >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	while (len && ((uintptr_t) p & 7)) {
		c = __builtin_ia32_crc32qi((uint32_t) c, *p++);
		len--;
	}
	if (len >= 3 * STREAM &&
	    !__atomic_load_n(&zshift_ready, __ATOMIC_ACQUIRE))
		build_zshift();
	while (len >= 3 * STREAM) {
		uint64_t c1 = 0, c2 = 0;

		for (size_t i = 0; i < STREAM; i += 8) {
			uint64_t w0, w1, w2;

			memcpy(&w0, p + i, 8);
			memcpy(&w1, p + STREAM + i, 8);
			memcpy(&w2, p + 2 * STREAM + i, 8);
			c = __builtin_ia32_crc32di(c, w0);
			c1 = __builtin_ia32_crc32di(c1, w1);
			c2 = __builtin_ia32_crc32di(c2, w2);
		}
		c = zero_shift((uint32_t) c) ^ (uint32_t) c1;
		c = zero_shift((uint32_t) c) ^ (uint32_t) c2;
		p += 3 * STREAM;
		len -= 3 * STREAM;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t) c, *p++);
	return ~(uint32_t) c;
}

static int hw_state; /* 0 unknown, 1 yes, 2 no */

bool crc32c_hw_available(void)
{
	int s = __atomic_load_n(&hw_state, __ATOMIC_RELAXED);

	if (!s) {
		__builtin_cpu_init();
		s = __builtin_cpu_supports("sse4.2") ? 1 : 2;
		__atomic_store_n(&hw_state, s, __ATOMIC_RELAXED);
	}
	return s == 1;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	if (crc32c_hw_available())
		return crc32c_hw(crc, buf, len);
	return crc32c_sw(crc, buf, len);
}
#else
bool crc32c_hw_available(void)
{
	return false;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	return crc32c_sw(crc, buf, len);
}
#endif
