/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * escape.c - untrusted bytes as printable text (escape.h).
 */
#include "util/escape.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The length of the well-formed UTF-8 sequence at p (n bytes left) and
 * its code point; 0 when malformed (RFC 3629: shortest form only, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *p, size_t n, unsigned int *cp)
{
	unsigned int c = p[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		c &= 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		lo = c == 0xe0 ? 0xa0 : 0x80; /* overlong */
		hi = c == 0xed ? 0x9f : 0xbf; /* surrogates */
		c &= 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		lo = c == 0xf0 ? 0x90 : 0x80; /* overlong */
		hi = c == 0xf4 ? 0x8f : 0xbf; /* above U+10FFFF */
		c &= 0x07;
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	c = c << 6 | (p[1] & 0x3fu);
	for (size_t i = 2; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3fu);
	}
	*cp = c;
	return len;
}

/*
 * Characters that are well-formed but control, hide or move text rather
 * than show it, on a terminal or in a log viewer: shown as \uXXXX (or
 * \UXXXXXXXX beyond the BMP).  The union, in Unicode 15.1 (the UCD's
 * UnicodeData.txt and DerivedCoreProperties.txt), of:
 *   - general category Cc beyond ASCII: the C1 controls (NEL, CSI...);
 *   - Cf, format: bidirectional controls, zero-width characters, the
 *     invisible operators, interlinear annotation, the tag characters
 *     (invisible copies of ASCII), prepended concatenation marks;
 *   - Zl and Zp, the line and paragraph separators;
 *   - Co, private use: no meaning a reader could check;
 *   - Default_Ignorable_Code_Point, what a renderer shows as nothing:
 *     variation selectors, the Hangul fillers (U+115F, U+1160, U+3164,
 *     U+FFA0), the combining grapheme joiner, and the unassigned code
 *     points the standard keeps for more of them (U+2065, U+FFF0-FFF8,
 *     U+E0000-E0FFF).
 * Sorted, merged where adjacent, both ends included.  Unicode releases
 * add to these sets rarely; the sources name where to look.
 */
static const struct {
	unsigned int first, last;
} hidden[] = {
    {0x0080, 0x009f},	{0x00ad, 0x00ad},     {0x034f, 0x034f},
    {0x0600, 0x0605},	{0x061c, 0x061c},     {0x06dd, 0x06dd},
    {0x070f, 0x070f},	{0x0890, 0x0891},     {0x08e2, 0x08e2},
    {0x115f, 0x1160},	{0x17b4, 0x17b5},     {0x180b, 0x180f},
    {0x200b, 0x200f},	{0x2028, 0x202e},     {0x2060, 0x206f},
    {0x3164, 0x3164},	{0xe000, 0xf8ff},     {0xfe00, 0xfe0f},
    {0xfeff, 0xfeff},	{0xffa0, 0xffa0},     {0xfff0, 0xfffb},
    {0x110bd, 0x110bd}, {0x110cd, 0x110cd},   {0x13430, 0x1343f},
    {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a},   {0xe0000, 0xe0fff},
    {0xf0000, 0xffffd}, {0x100000, 0x10fffd},
};

static bool invisible(unsigned int cp)
{
	size_t lo = 0, hi = sizeof(hidden) / sizeof(hidden[0]);

	while (lo < hi) { /* the first range that ends at or after cp */
		size_t mid = lo + (hi - lo) / 2;

		if (hidden[mid].last < cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < sizeof(hidden) / sizeof(hidden[0]) &&
	       hidden[lo].first <= cp;
}

/*
 * Append piece[0, plen) to out at *o, keeping room for "..." and the NUL
 * unless it is the last piece.  False when it does not fit: then out
 * ends in "..." (the room for it was kept by every earlier piece).
 */
static bool put(char *out, size_t outlen, size_t *o, const char *piece,
		size_t plen, bool last)
{
	if (*o + plen + (last ? 1 : 4) > outlen) {
		memcpy(out + *o, "...", 4);
		return false;
	}
	memcpy(out + *o, piece, plen);
	*o += plen;
	out[*o] = 0;
	return true;
}

/* How the character at p (n bytes left) is shown: into piece (12
 * bytes), its length; *used is how many input bytes it took. */
static size_t show_char(const unsigned char *p, size_t n, char *piece,
			size_t *used)
{
	unsigned int cp = 0;
	size_t len = utf8_seq(p, n, &cp);

	*used = len ? len : 1;
	if (len == 1 && cp == '\\') {
		memcpy(piece, "\\\\", 2);
		return 2;
	}
	if (len == 1 && cp >= 0x20 && cp < 0x7f) {
		piece[0] = (char) cp;
		return 1;
	}
	if (len <= 1) /* malformed, C0 or DEL */
		return (size_t) snprintf(piece, 12, "\\x%02x", p[0]);
	if (invisible(cp))
		return (size_t) snprintf(
		    piece, 12, cp > 0xffff ? "\\U%08x" : "\\u%04x", cp);
	memcpy(piece, p, len);
	return len;
}

char *esc_text(char *out, size_t outlen, const void *in, size_t inlen)
{
	const unsigned char *p = in;
	char piece[12];
	size_t o = 0, i, n, total = 0;
	bool fits;

	/* a first pass: when all of it fits, no room for "..." is kept */
	for (i = 0; i < inlen; i += n)
		total += show_char(p + i, inlen - i, piece, &n);
	fits = total < outlen;
	out[0] = 0;
	for (i = 0; i < inlen; i += n) {
		size_t plen = show_char(p + i, inlen - i, piece, &n);

		if (!put(out, outlen, &o, piece, plen, fits || i + n == inlen))
			break;
	}
	return out;
}

char *esc_str(char *out, size_t outlen, const char *s)
{
	return esc_text(out, outlen, s, strlen(s));
}

char *esc_controls(char *out, size_t outlen, const char *s)
{
	size_t o = 0, n = strlen(s);

	out[0] = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char) s[i];
		char piece[8];
		size_t plen = 1;

		if (c < 0x20 || c == 0x7f)
			plen = (size_t) snprintf(piece, sizeof(piece),
						 "\\x%02x", c);
		else
			piece[0] = (char) c;
		if (!put(out, outlen, &o, piece, plen, i + 1 == n))
			break;
	}
	return out;
}
