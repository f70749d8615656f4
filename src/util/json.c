/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * json.c - strict recursive-descent JSON parser (see json.h).
 *
 * Recursion depth is bounded by lim->max_depth, so hostile nesting
 * cannot exhaust the stack.  Every allocation is reachable from the
 * value tree being built, so json_free of the partial tree cleans up
 * after an error at any point.
 */
#include "util/json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const struct json_limits json_default_limits = {
    .max_depth = 32,
    .max_values = 1u << 21,
    .max_members = 256,
    .max_string = 64u << 10,
};

struct parser {
	const uint8_t *s;
	size_t len, pos;
	size_t depth, values;
	const struct json_limits *lim;
	struct json_error *err;
};

static int fail(struct parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct parser *p, size_t at, const char *fmt, ...)
{
	va_list ap;

	p->err->offset = at;
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Name the byte at pos for a message: "'x'", "byte 0x01", "end of input". */
static int unexpected(struct parser *p, const char *what)
{
	if (p->pos >= p->len)
		return fail(p, p->pos, "unexpected end of input%s%s",
			    what ? ": " : "", what ? what : "");
	if (p->s[p->pos] > 0x20 && p->s[p->pos] < 0x7f)
		return fail(p, p->pos, "unexpected character '%c'%s%s",
			    p->s[p->pos], what ? ": " : "", what ? what : "");
	return fail(p, p->pos, "unexpected byte 0x%02x%s%s", p->s[p->pos],
		    what ? ": " : "", what ? what : "");
}

static void skip_ws(struct parser *p)
{
	while (p->pos < p->len &&
	       (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
		p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
		p->pos++;
}

/* When the byte at pos is c: step over it and say so. */
static bool take(struct parser *p, uint8_t c)
{
	if (p->pos >= p->len || p->s[p->pos] != c)
		return false;
	p->pos++;
	return true;
}

/* Whether the byte at pos is a decimal digit. */
static bool at_digit(const struct parser *p)
{
	return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9';
}

/* Length of the valid UTF-8 sequence at s[0, n) (1..4), or 0. */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
	uint32_t cp;
	size_t k;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		k = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		k = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		k = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (k > n)
		return 0;
	for (size_t i = 1; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) ||
	    (k == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return k;
}

static size_t put_utf8(uint8_t *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (uint8_t) cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t) (0xc0 | cp >> 6);
		o[1] = (uint8_t) (0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t) (0xe0 | cp >> 12);
		o[1] = (uint8_t) (0x80 | ((cp >> 6) & 0x3f));
		o[2] = (uint8_t) (0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (uint8_t) (0xf0 | cp >> 18);
	o[1] = (uint8_t) (0x80 | ((cp >> 12) & 0x3f));
	o[2] = (uint8_t) (0x80 | ((cp >> 6) & 0x3f));
	o[3] = (uint8_t) (0x80 | (cp & 0x3f));
	return 4;
}

/* Four hex digits at pos (pos is after "\u"). */
static int hex4(struct parser *p, uint32_t *out)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		uint8_t c = p->pos < p->len ? p->s[p->pos] : 0;
		int d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return p->pos >= p->len
				   ? unexpected(p, "in a \\u escape")
				   : fail(p, p->pos,
					  "\\u escape needs four hex "
					  "digits");
		v = v << 4 | (uint32_t) d;
		p->pos++;
	}
	*out = v;
	return 0;
}

/*
 * A string at pos (which is at the opening quote).  The decoded bytes
 * are never longer than the encoded ones, so one buffer of the encoded
 * length is enough.
 */
static int parse_string(struct parser *p, char **out, size_t *out_len)
{
	/* the one-letter escapes after '\\', and the bytes they stand for */
	static const char esc_name[] = "\"\\/bfnrt";
	static const char esc_byte[] = "\"\\/\b\f\n\r\t";
	size_t start = p->pos, end, n = 0;
	const char *esc;
	uint8_t *o;
	int r;

	p->pos++;
	/* find the closing quote first: it bounds the buffer */
	for (end = p->pos; end < p->len && p->s[end] != '"'; end++)
		if (p->s[end] == '\\')
			end++;
	if (end >= p->len)
		return fail(p, p->len,
			    "unexpected end of input: string "
			    "starting at byte %zu is not closed",
			    start);
	o = malloc(end - p->pos + 1);
	if (!o)
		return -ENOMEM;
	while (p->pos < end) {
		uint8_t c = p->s[p->pos];

		if (n >= p->lim->max_string) {
			r = fail(p, start, "string longer than %zu bytes",
				 p->lim->max_string);
			goto fail;
		}
		if (c < 0x20) {
			r = fail(p, p->pos,
				 "control character 0x%02x in a "
				 "string (escape it)",
				 c);
			goto fail;
		}
		if (c >= 0x80) {
			size_t k = utf8_seq(p->s + p->pos, end - p->pos);
			if (!k) {
				r = fail(p, p->pos,
					 "invalid UTF-8 in a string");
				goto fail;
			}
			memcpy(o + n, p->s + p->pos, k);
			n += k;
			p->pos += k;
			continue;
		}
		if (c != '\\') {
			o[n++] = c;
			p->pos++;
			continue;
		}
		p->pos++;
		c = p->s[p->pos++];
		esc = c ? strchr(esc_name, c) : NULL;
		if (esc) {
			o[n++] = (uint8_t) esc_byte[esc - esc_name];
			continue;
		}
		switch (c) {
		case 'u': {
			size_t at = p->pos - 2;
			uint32_t cp, lo;

			r = hex4(p, &cp);
			if (r < 0)
				goto fail;
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				r = fail(p, at,
					 "unpaired surrogate in a \\u "
					 "escape");
				goto fail;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (p->pos + 1 >= end || p->s[p->pos] != '\\' ||
				    p->s[p->pos + 1] != 'u') {
					r = fail(p, at,
						 "unpaired surrogate "
						 "in a \\u escape");
					goto fail;
				}
				p->pos += 2;
				r = hex4(p, &lo);
				if (r < 0)
					goto fail;
				if (lo < 0xdc00 || lo > 0xdfff) {
					r = fail(p, at,
						 "unpaired surrogate "
						 "in a \\u escape");
					goto fail;
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			if (!cp) {
				r = fail(p, at,
					 "\\u0000 is not allowed in a "
					 "string");
				goto fail;
			}
			n += put_utf8(o + n, cp);
			break;
		}
		default:
			if (c > 0x20 && c < 0x7f)
				r = fail(p, p->pos - 2, "invalid escape '\\%c'",
					 c);
			else
				r = fail(p, p->pos - 2, "invalid escape");
			goto fail;
		}
	}
	if (n > p->lim->max_string) {
		r = fail(p, start, "string longer than %zu bytes",
			 p->lim->max_string);
		goto fail;
	}
	p->pos = end + 1;
	o[n] = 0;
	*out = (char *) o;
	*out_len = n;
	return 0;
fail:
	free(o);
	return r;
}

static int parse_number(struct parser *p, struct json_value *v)
{
	size_t start = p->pos;
	bool neg = false, integer = true, overflow = false;
	uint64_t u = 0;

	if (p->s[p->pos] == '-') {
		neg = true;
		p->pos++;
	}
	if (!at_digit(p))
		return unexpected(p, "expected a digit");
	if (p->s[p->pos] == '0' && p->pos + 1 < p->len &&
	    p->s[p->pos + 1] >= '0' && p->s[p->pos + 1] <= '9')
		return fail(p, p->pos, "leading zeros are not allowed");
	while (at_digit(p)) {
		unsigned int d = (unsigned int) (p->s[p->pos++] - '0');
		if (u > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			u = u * 10 + d;
	}
	if (take(p, '.')) {
		integer = false;
		if (!at_digit(p))
			return unexpected(p, "expected a digit after '.'");
		while (at_digit(p))
			p->pos++;
	}
	if (take(p, 'e') || take(p, 'E')) {
		integer = false;
		if (!take(p, '+'))
			take(p, '-');
		if (!at_digit(p))
			return unexpected(p, "expected a digit in the "
					     "exponent");
		while (at_digit(p))
			p->pos++;
	}
	v->type = JSON_NUMBER;
	v->offset = start;
	v->num.is_uint = integer && !neg && !overflow;
	v->num.u = v->num.is_uint ? u : 0;
	return 0;
}

static int parse_value(struct parser *p, struct json_value **out);

static int new_value(struct parser *p, struct json_value **out)
{
	if (p->values >= p->lim->max_values)
		return fail(p, p->pos, "too many values (more than %zu)",
			    p->lim->max_values);
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	p->values++;
	(*out)->offset = p->pos;
	return 0;
}

/* A key for a message: printable ASCII kept, the rest as '?'. */
static const char *key_for_msg(const char *k, char *buf, size_t len)
{
	size_t i;

	for (i = 0; k[i] && i + 1 < len; i++)
		buf[i] = k[i] >= 0x20 && k[i] < 0x7f ? k[i] : '?';
	buf[i] = 0;
	return buf;
}

/*
 * Room for one more item in v[0, n) (items of size bytes, room for *cap):
 * v itself, or v moved to twice the room (8 at first); NULL when out of
 * memory, and v is still the caller's.
 */
static void *grow(void *v, size_t n, size_t *cap, size_t size)
{
	size_t nc = *cap ? *cap * 2 : 8;
	void *nv;

	if (n < *cap)
		return v;
	nv = realloc(v, nc * size);
	if (nv)
		*cap = nc;
	return nv;
}

/*
 * An array's or an object's opening bracket is at pos: step over it and
 * the blanks after it; true when close follows at once (an empty one,
 * stepped over too).
 */
static bool open_empty(struct parser *p, uint8_t close)
{
	p->pos++;
	skip_ws(p);
	return take(p, close);
}

/*
 * After an element of an array or a member of an object: 1 when a ','
 * says another follows, 0 at the closing bracket close, or the error
 * (what: what was expected).  Steps over what it found.
 */
static int next_or_close(struct parser *p, uint8_t close, const char *what)
{
	skip_ws(p);
	if (take(p, ','))
		return 1;
	if (take(p, close))
		return 0;
	return unexpected(p, what);
}

static int parse_array(struct parser *p, struct json_value *v)
{
	size_t cap = 0;
	int r;

	v->type = JSON_ARRAY;
	if (open_empty(p, ']'))
		return 0;
	do {
		struct json_value *item = NULL, **ni;

		ni = grow(v->arr.items, v->arr.n, &cap, sizeof(*ni));
		if (!ni)
			return -ENOMEM;
		v->arr.items = ni;
		skip_ws(p);
		r = parse_value(p, &item);
		if (item)
			v->arr.items[v->arr.n++] = item;
		if (r < 0)
			return r;
		r = next_or_close(p, ']',
				  "expected ',' or ']' after an array element");
	} while (r > 0);
	return r;
}

static int parse_object(struct parser *p, struct json_value *v)
{
	size_t cap = 0;
	int r;

	v->type = JSON_OBJECT;
	if (open_empty(p, '}'))
		return 0;
	do {
		struct json_member *m, *nm;
		char kb[48];

		skip_ws(p);
		if (p->pos >= p->len || p->s[p->pos] != '"')
			return unexpected(p, "expected a string (an object "
					     "key)");
		if (v->obj.n >= p->lim->max_members)
			return fail(p, p->pos,
				    "too many members in an "
				    "object (more than %zu)",
				    p->lim->max_members);
		nm = grow(v->obj.m, v->obj.n, &cap, sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		v->obj.m = nm;
		m = &v->obj.m[v->obj.n];
		memset(m, 0, sizeof(*m));
		m->offset = p->pos;
		r = parse_string(p, &m->key, &m->key_len);
		if (r < 0)
			return r;
		v->obj.n++;
		for (size_t i = 0; i + 1 < v->obj.n; i++)
			if (v->obj.m[i].key_len == m->key_len &&
			    !memcmp(v->obj.m[i].key, m->key, m->key_len))
				return fail(
				    p, m->offset, "duplicate key \"%s\"",
				    key_for_msg(m->key, kb, sizeof(kb)));
		skip_ws(p);
		if (!take(p, ':'))
			return unexpected(p, "expected ':' after an object "
					     "key");
		skip_ws(p);
		r = parse_value(p, &m->val);
		if (r < 0)
			return r;
		r = next_or_close(p, '}',
				  "expected ',' or '}' after an object member");
	} while (r > 0);
	return r;
}

static int literal(struct parser *p, const char *word)
{
	size_t n = strlen(word);

	if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n))
		return fail(p, p->pos, "invalid literal (expected %s)", word);
	p->pos += n;
	return 0;
}

/* On error *out may still be set: the caller frees it. */
static int parse_value(struct parser *p, struct json_value **out)
{
	struct json_value *v = NULL;
	int r;

	*out = NULL;
	if (p->pos >= p->len)
		return unexpected(p, "expected a value");
	r = new_value(p, &v);
	if (r < 0)
		return r;
	*out = v;
	switch (p->s[p->pos]) {
	case '{':
	case '[':
		if (p->depth >= p->lim->max_depth)
			return fail(p, p->pos,
				    "nesting deeper than %zu "
				    "levels",
				    p->lim->max_depth);
		p->depth++;
		r = p->s[p->pos] == '{' ? parse_object(p, v)
					: parse_array(p, v);
		p->depth--;
		return r;
	case '"':
		v->type = JSON_STRING;
		return parse_string(p, &v->str.s, &v->str.len);
	case 't':
		v->type = JSON_BOOL;
		v->b = true;
		return literal(p, "true");
	case 'f':
		v->type = JSON_BOOL;
		return literal(p, "false");
	case 'n':
		v->type = JSON_NULL;
		return literal(p, "null");
	case '-':
	case '0':
	case '1':
	case '2':
	case '3':
	case '4':
	case '5':
	case '6':
	case '7':
	case '8':
	case '9':
		return parse_number(p, v);
	default:
		return unexpected(p, "expected a value");
	}
}

int json_parse(const char *buf, size_t len, const struct json_limits *lim,
	       struct json_value **out, struct json_error *err)
{
	struct json_error dummy;
	struct parser p = {
	    .s = (const uint8_t *) buf,
	    .len = len,
	    .lim = lim ? lim : &json_default_limits,
	    .err = err ? err : &dummy,
	};
	struct json_value *v = NULL;
	int r;

	p.err->offset = 0;
	p.err->msg[0] = 0;
	skip_ws(&p);
	r = parse_value(&p, &v);
	if (r == 0) {
		skip_ws(&p);
		if (p.pos < p.len)
			r = fail(&p, p.pos,
				 "trailing characters after the "
				 "JSON value");
	}
	if (r < 0) {
		if (r == -ENOMEM)
			fail(&p, p.pos, "out of memory");
		json_free(v);
		return r;
	}
	*out = v;
	return 0;
}

void json_free(struct json_value *v)
{
	if (!v)
		return;
	switch (v->type) {
	case JSON_STRING:
		free(v->str.s);
		break;
	case JSON_ARRAY:
		for (size_t i = 0; i < v->arr.n; i++)
			json_free(v->arr.items[i]);
		free(v->arr.items);
		break;
	case JSON_OBJECT:
		for (size_t i = 0; i < v->obj.n; i++) {
			free(v->obj.m[i].key);
			json_free(v->obj.m[i].val);
		}
		free(v->obj.m);
		break;
	default:
		break;
	}
	free(v);
}

const struct json_value *json_get(const struct json_value *obj, const char *key)
{
	if (!obj || obj->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < obj->obj.n; i++)
		if (!strcmp(obj->obj.m[i].key, key))
			return obj->obj.m[i].val;
	return NULL;
}

const char *json_type_name(enum json_type t)
{
	switch (t) {
	case JSON_NULL:
		return "null";
	case JSON_BOOL:
		return "a boolean";
	case JSON_NUMBER:
		return "a number";
	case JSON_STRING:
		return "a string";
	case JSON_ARRAY:
		return "an array";
	case JSON_OBJECT:
		return "an object";
	}
	return "?";
}

void json_put_string(FILE *f, const char *s, size_t len)
{
	const uint8_t *u = (const uint8_t *) s;

	putc('"', f);
	for (size_t i = 0; i < len;) {
		uint8_t c = u[i];
		size_t k;

		if (c == '"' || c == '\\') {
			putc('\\', f);
			putc(c, f);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\u%04x", c);
			i++;
		} else if (c < 0x80) {
			putc(c, f);
			i++;
		} else if ((k = utf8_seq(u + i, len - i))) {
			fwrite(u + i, 1, k, f);
			i += k;
		} else {
			fputs("\\ufffd", f);
			i++;
		}
	}
	putc('"', f);
}

bool json_utf8_valid(const char *s, size_t len)
{
	const uint8_t *u = (const uint8_t *) s;

	for (size_t i = 0; i < len;) {
		size_t k = utf8_seq(u + i, len - i);

		if (!k || !u[i])
			return false;
		i += k;
	}
	return true;
}

void json_put_hex(FILE *f, const void *b, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = b;

	putc('"', f);
	for (size_t i = 0; i < len; i++) {
		putc(digits[p[i] >> 4], f);
		putc(digits[p[i] & 15], f);
	}
	putc('"', f);
}
