/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * parse - command-line value parsers and formatters.
 *
 * Input is hostile: every parser validates fully and returns 0 or a
 * negative errno, writing its out-parameters only on success.  None of
 * them allocates; all are pure functions of their arguments.
 */
#ifndef TV_CLI_PARSE_H
#define TV_CLI_PARSE_H

#include <stddef.h>
#include <stdint.h>

/*
 * A byte count: decimal digits, then optionally one of K M G T P (powers
 * of 1024, either case), optionally followed by "iB" or "B" ("64K",
 * "64KiB", "64KB").  No sign, no fraction, no spaces.  -EINVAL for
 * anything else, -ERANGE when it does not fit 64 bits.
 */
int parse_size(const char *s, uint64_t *out);

/* A plain decimal unsigned integer (no sign, no spaces): -EINVAL, or
 * -ERANGE when it does not fit 64 bits. */
int parse_u64(const char *s, uint64_t *out);

/*
 * Hex digits (either case, no separators, no "0x") into at most max
 * bytes of out; *len is the number of bytes.  On error returns -EINVAL
 * and writes the reason into why (e.g. "character 3 ('x') is not a hex
 * digit", "odd number of hex digits (7)", "longer than 4096 bytes").
 * The empty string is 0 bytes.
 */
int parse_hex(const char *s, uint8_t *out, size_t max, size_t *len, char *why,
	      size_t whylen);

/* len bytes as lower-case hex into out, which holds 2 * len + 1 bytes. */
void fmt_hex(const uint8_t *b, size_t len, char *out);

/* Human-readable size into buf ("64 KiB", "1.5 GiB"); returns buf. */
const char *fmt_size(uint64_t v, char *buf, unsigned int len);

/* A uuid in the canonical 8-4-4-4-12 form; out holds 37 bytes. */
void fmt_uuid(const uint8_t u[16], char out[37]);

#endif
