/* SPDX-License-Identifier: GPL-2.0-or-later */
/* parse - command-line value parsers.  Input is hostile: every parser
 * validates fully and returns 0 or -EINVAL/-ERANGE, writing *out only on
 * success. */
#ifndef TV_CLI_PARSE_H
#define TV_CLI_PARSE_H

#include <stdint.h>

/* "4096", "64K", "1.5G" is not accepted; suffixes K M G T P (powers of
 * 1024), optional "iB"/"B".  Rejects overflow, empty, negative. */
int parse_size(const char *s, uint64_t *out);

/* Human-readable size into buf ("64 KiB", "1.5 GiB"). */
const char *fmt_size(uint64_t v, char *buf, unsigned int len);

#endif
