/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * thin-ext.h - what the daemon (src/server) may use of the engine beyond
 * include/thinvol.h.
 *
 * The daemon serves a pool's device and answers NBD: it needs the device
 * itself (its descriptor: to name the pool to clients, to stat it, and
 * to tell that a file to copy to or from is not the pool), a pool opened
 * on a device it built (the fault-injection device of its tests), and a
 * read that leaves holes unfilled.  None of that belongs to the public
 * API: struct io_dev is not part of it, and these calls are not exported
 * from libthinvol.so (the daemon links the static library).  The command
 * (src/cli) uses include/thinvol.h only; so does any outside program.
 *
 * Rules for the user:
 *   1. The device is borrowed for the pool's life (until tv_pool_close)
 *      and the engine owns its contents: identify or stat it through its
 *      descriptor, never read or write it.
 *   2. Every call here is O(1) and takes no lock, except
 *      vio_read_map_nofill, which costs what tv_vol_read_map costs, and
 *      pool_open_dev, which costs what tv_pool_open costs (it reads and
 *      checks the metadata and starts the committer thread).
 */
#ifndef TV_THIN_EXT_H
#define TV_THIN_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/io.h"
#include "thinvol.h"

/* The pool's device (rule 1). */
struct io_dev *pool_dev(struct tv_pool *p);
/* The path (or name) the pool was opened by; borrowed for its life. */
const char *pool_name(const struct tv_pool *p);
/* The pool's block size; fixed for its life (rule 2: no lock). */
uint32_t pool_block_size(const struct tv_pool *p);
/* Open a pool on a device (the daemon's fault injection; tests: memory,
 * fault and power-cut devices).  No lock is taken; own_dev: closing the
 * pool closes dev (also when the open fails). */
int pool_open_dev(struct io_dev *dev, bool own_dev, const char *name,
		  const struct tv_pool_open_opts *o, struct tv_pool **out);
/* tv_vol_read_map that leaves the bytes of the hole extents it reports
 * unwritten (holes it had to report as data are zeroed): for the NBD
 * server, which answers holes without payload. */
int vio_read_map_nofill(struct tv_pool *p, uint64_t id, void *buf, size_t len,
			uint64_t off, struct tv_extent *ext, size_t max,
			size_t *n);

#endif
