/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * CRC-32C (Castagnoli), as used by iSCSI, ext4, btrfs: reflected polynomial
 * 0x82F63B78, initial value ~0, final xor ~0. Uses the SSE4.2 crc32
 * instruction when the CPU has it (checked once at first use; buffers of
 * 4080 bytes and more as three interleaved chains, see crc32c.c), else a
 * slicing-by-8 table. crc32c("123456789") == 0xE3069283.
 */
#ifndef TV_UTIL_CRC32C_H
#define TV_UTIL_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc32c(0, buf, len) computes a fresh checksum. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable version, exported for tests that compare the two. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* true when the hardware path is in use */
bool crc32c_hw_available(void);

#endif
