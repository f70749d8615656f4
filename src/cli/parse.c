/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "cli/parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGTP";
	uint64_t v = 0;
	const char *p = s;
	int shift = 0;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	while (isdigit((unsigned char)*p)) {
		unsigned int d = (unsigned int)(*p++ - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (*p) {
		const char *u = strchr(units, toupper((unsigned char)*p));
		if (!u || !*u)
			return -EINVAL;
		shift = 10 * (int)(u - units + 1);
		p++;
		if (*p == 'i' && p[1] == 'B')
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

const char *fmt_size(uint64_t v, char *buf, unsigned int len)
{
	static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB",
					  "PiB", "EiB" };
	int i = 0;
	double d = (double)v;

	while (d >= 1024 && i < 6) {
		d /= 1024;
		i++;
	}
	if (i == 0 || d >= 100 || d == (double)(uint64_t)d)
		snprintf(buf, len, "%.0f %s", d, u[i]);
	else
		snprintf(buf, len, "%.1f %s", d, u[i]);
	return buf;
}
