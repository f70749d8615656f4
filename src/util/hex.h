/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * hex.h - the one decoder of hex strings, for every parser of them (CLI
 * blobs, control requests and replies, PSK files).
 *
 * Strict, because the strings are hostile: hex digits of either case and
 * nothing else (no sign, no space, no "0x"), an even number of them, and
 * no more bytes than the caller has room for.  scanf's "%2x" is not such
 * a decoder: it takes "+f", "-f" and " f" as bytes.
 */
#ifndef TV_UTIL_HEX_H
#define TV_UTIL_HEX_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

/* 0..15, or -1 when c is not a hex digit (either case). */
static inline int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * The slen hex digits at s (no NUL needed) into out, which has room for
 * max bytes; *len is the number of bytes (slen / 2).  -EINVAL when slen
 * is odd, over 2 * max, or a character is not a hex digit; out may then
 * hold some bytes (a caller that decodes a secret wipes it), *len is not
 * written.
 */
static inline int hex_decode(const char *s, size_t slen, uint8_t *out,
			     size_t max, size_t *len)
{
	if (slen % 2 || slen / 2 > max)
		return -EINVAL;
	for (size_t i = 0; i < slen; i += 2) {
		int hi = hex_val(s[i]), lo = hex_val(s[i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i / 2] = (uint8_t) (hi << 4 | lo);
	}
	*len = slen / 2;
	return 0;
}

#endif
