/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * node.h - the header every 4 KiB metadata node starts with.
 *
 * Metadata lives in 4 KiB nodes addressed by node number (byte offset of the
 * node divided by 4096).  Every node, superblocks included, starts with
 * struct disk_node_header, which lets a reader prove that the bytes it got
 * are the node it asked for:
 *
 *   csum      CRC-32C of bytes [4, 4096): catches torn and flipped writes
 *   magic     what kind of node this is: catches a pointer into the wrong
 *             kind of structure
 *   blocknr   where the node was written: catches misdirected writes and
 *             reads
 *   gen       the generation of the transaction attempt that wrote it:
 *             (txn << TM_GEN_RAND_BITS) | random bits, new for every
 *             attempt (a superblock's is its txn); parents record it next
 *             to the child's location (struct disk_ref), which catches a
 *             stale older copy left by a lost write, also one an aborted
 *             attempt at the same txn left
 *   pool_tag  first 8 bytes of the pool uuid: catches a node left in the
 *             file by an earlier pool
 *
 * See docs/format.md for the byte-by-byte layout.
 */
#ifndef TV_PDATA_NODE_H
#define TV_PDATA_NODE_H

#include <stdint.h>

#include "util/endian.h"

#define PD_NODE_SIZE  4096u
#define PD_NODE_SHIFT 12

/* Node kinds (disk_node_header.magic), ASCII for hexdump readers. */
#define PD_MAGIC_SUPER 0x42535654u /* "TVSB" */
#define PD_MAGIC_BTREE 0x54425654u /* "TVBT" */

/* The low bits of a node's gen that are random (tm.c: new_node_gen). */
#define TM_GEN_RAND_BITS 20
#define TM_GEN_RAND_MASK ((1ull << TM_GEN_RAND_BITS) - 1)

struct disk_node_header {
	uint32_t csum;	   /* le32: crc32c(bytes 4..4095) */
	uint32_t magic;	   /* le32: PD_MAGIC_* */
	uint64_t blocknr;  /* le64: own node number */
	uint64_t gen;	   /* le64: generation of the attempt that wrote it */
	uint64_t pool_tag; /* le64: identifies the pool */
};
_Static_assert(sizeof(struct disk_node_header) == 32, "node header size");

/* A pointer to a node: its location and the generation that wrote it. */
struct disk_ref {
	uint64_t blocknr; /* le64; 0 = no node (empty tree) */
	uint64_t gen;	  /* le64 */
};
_Static_assert(sizeof(struct disk_ref) == 16, "disk_ref size");

/* The in-memory form of a struct disk_ref. */
struct tm_ref {
	uint64_t blocknr; /* 0: none */
	uint64_t gen;
};

static inline void ref_to_disk(struct disk_ref *d, const struct tm_ref *r)
{
	d->blocknr = cpu_to_le64(r->blocknr);
	d->gen = cpu_to_le64(r->gen);
}

static inline void ref_from_disk(struct tm_ref *r, const struct disk_ref *d)
{
	r->blocknr = le64_to_cpu(d->blocknr);
	r->gen = le64_to_cpu(d->gen);
}

/* Unaligned-safe variants for refs stored inside node payloads. */
static inline void ref_store(void *p, const struct tm_ref *r)
{
	put_le64(p, r->blocknr);
	put_le64((uint8_t *) p + 8, r->gen);
}

static inline void ref_load(struct tm_ref *r, const void *p)
{
	r->blocknr = get_le64(p);
	r->gen = get_le64((const uint8_t *) p + 8);
}

static inline const struct disk_node_header *node_hdr(const void *data)
{
	return (const struct disk_node_header *) data;
}

#endif
