/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * hex.h - the value of one hex digit, for the parsers of hex strings (CLI
 * blobs, control requests, PSK files).
 */
#ifndef TV_UTIL_HEX_H
#define TV_UTIL_HEX_H

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

#endif
