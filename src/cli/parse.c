/* SPDX-License-Identifier: GPL-2.0-or-later */
/* parse.c - the parsers and formatters of parse.h (its contract). */
#include "cli/parse.h"
#include "util/hex.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		unsigned int d;

		if (*p < '0' || *p > '9')
			return -EINVAL;
		d = (unsigned int) (*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGTP";
	uint64_t v = 0;
	const char *p = s;
	int shift = 0;

	if (!s || *p < '0' || *p > '9')
		return -EINVAL;
	while (*p >= '0' && *p <= '9') {
		unsigned int d = (unsigned int) (*p++ - '0');
		if (v > (UINT64_MAX - d) / 10) {
			/* keep going: garbage after the digits is -EINVAL */
			while (*p >= '0' && *p <= '9')
				p++;
			return *p && !strchr(units, toupper((unsigned char) *p))
				   ? -EINVAL
				   : -ERANGE;
		}
		v = v * 10 + d;
	}
	if (*p) {
		const char *u = memchr(units, toupper((unsigned char) *p),
				       sizeof(units) - 1);
		if (!u)
			return -EINVAL;
		shift = 10 * (int) (u - units + 1);
		p++;
		if (p[0] == 'i' && p[1] == 'B')
			p += 2;
		else if (*p == 'B')
			p++;
		if (*p)
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

int parse_hex(const char *s, uint8_t *out, size_t max, size_t *len, char *why,
	      size_t whylen)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++) {
		if (hex_val(s[i]) >= 0)
			continue;
		if (isprint((unsigned char) s[i]))
			snprintf(why, whylen,
				 "character %zu ('%c') is not a hex digit",
				 i + 1, s[i]);
		else
			snprintf(why, whylen,
				 "character %zu (byte 0x%02x) is not a hex "
				 "digit",
				 i + 1, (unsigned char) s[i]);
		return -EINVAL;
	}
	if (n % 2) {
		snprintf(why, whylen, "odd number of hex digits (%zu)", n);
		return -EINVAL;
	}
	if (n / 2 > max) {
		snprintf(why, whylen, "longer than %zu bytes", max);
		return -EINVAL;
	}
	/* checked above, each with its reason */
	return hex_decode(s, n, out, max, len);
}

void fmt_hex(const uint8_t *b, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * len] = 0;
}

const char *fmt_size(uint64_t v, char *buf, unsigned int len)
{
	static const char *const u[] = {"B",   "KiB", "MiB", "GiB",
					"TiB", "PiB", "EiB"};
	int i = 0;
	double d = (double) v;

	while (d >= 1024 && i < 6) {
		d /= 1024;
		i++;
	}
	if (i == 0 || d >= 100 || d == (double) (uint64_t) d)
		snprintf(buf, len, "%.0f %s", d, u[i]);
	else
		snprintf(buf, len, "%.1f %s", d, u[i]);
	return buf;
}

void fmt_uuid(const uint8_t u[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int k = 0;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[k++] = '-';
		out[k++] = hex[u[i] >> 4];
		out[k++] = hex[u[i] & 15];
	}
	out[k] = 0;
}
