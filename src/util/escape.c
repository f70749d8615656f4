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

/* Characters that are well-formed but move, hide or break lines of text
 * on a terminal or in a log viewer: shown as \uXXXX. */
static bool invisible(unsigned int cp)
{
	return (cp >= 0x80 && cp <= 0x9f) ||	 /* C1 controls (NEL...) */
	       cp == 0x061c ||			 /* arabic letter mark */
	       (cp >= 0x200b && cp <= 0x200f) || /* zero-width, LRM, RLM */
	       cp == 0x2028 || cp == 0x2029 ||	 /* line/para separator */
	       (cp >= 0x202a && cp <= 0x202e) || /* bidi embeddings */
	       (cp >= 0x2066 && cp <= 0x2069) || /* bidi isolates */
	       cp == 0xfeff;			 /* zero-width no-break */
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
		piece[0] = (char)cp;
		return 1;
	}
	if (len <= 1) /* malformed, C0 or DEL */
		return (size_t)snprintf(piece, 12, "\\x%02x", p[0]);
	if (invisible(cp))
		return (size_t)snprintf(piece, 12, "\\u%04x", cp);
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
		unsigned char c = (unsigned char)s[i];
		char piece[8];
		size_t plen = 1;

		if (c < 0x20 || c == 0x7f)
			plen = (size_t)snprintf(piece, sizeof(piece), "\\x%02x",
						c);
		else
			piece[0] = (char)c;
		if (!put(out, outlen, &o, piece, plen, i + 1 == n))
			break;
	}
	return out;
}
