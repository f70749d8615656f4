/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-internal.h - what io-file.c and io-ident.c share: claiming the
 * storage a pool is on (io-ident.c, rules 3-6).
 */
#ifndef TV_IO_INTERNAL_H
#define TV_IO_INTERNAL_H

#include <stddef.h>

#include "io/io.h"

/*
 * Claim the storage open on fd (name: its path, for messages).  A block
 * device is opened again O_EXCL: *newfd is that descriptor (owned by the
 * caller, who closes fd and uses it instead), or fd itself for a file.
 * *out holds the locks on everything under it, and on the loop devices
 * over it (rule 5), until io_claim_release.
 * Returns 0, -EBUSY with who holds it in why, or another negative errno
 * with the reason in why.
 */
int io_claim(int fd, const char *name, struct io_claim **out, int *newfd,
	     char *why, size_t whylen);

#endif
