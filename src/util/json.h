/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * json - a small, strict JSON (RFC 8259) parser for hostile input, and
 * the string writer that the command's --json output and the control
 * protocol (src/server/ctl.c) use.
 *
 * Strict means: one value with only whitespace (space, tab, LF, CR)
 * around it; no comments, no trailing commas, no byte-order mark, no
 * NaN/Infinity, no leading zeros; strings are valid UTF-8 without raw
 * control characters, escapes are the eight of the RFC plus \uXXXX with
 * surrogates paired; "\u0000" is refused (our strings are C strings);
 * an object may not repeat a key.  Limits (nesting depth, number of
 * values, members per object, string length) bound the memory and the
 * stack that an input can make us use; exceeding one is an error.
 *
 * Errors carry the byte offset where the parser stopped and a message
 * ("expected ':' after an object key").  Cost: O(n) in the input, except
 * the duplicate-key check, O(m^2) in the members of one object (bounded
 * by max_members).
 */
#ifndef TV_UTIL_JSON_H
#define TV_UTIL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum json_type {
	JSON_NULL,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};

struct json_member;

struct json_value {
	enum json_type type;
	size_t offset; /* of the value's first byte in the input */
	union {
		bool b;
		struct {
			bool is_uint; /* no sign, fraction or exponent, and
				       * fits 64 bits */
			uint64_t u;   /* the value when is_uint */
		} num;
		struct {
			char *s; /* NUL-terminated, no NUL inside */
			size_t len;
		} str;
		struct {
			struct json_value **items;
			size_t n;
		} arr;
		struct {
			struct json_member *m;
			size_t n;
		} obj;
	};
};

struct json_member {
	char *key; /* NUL-terminated, no NUL inside */
	size_t key_len;
	size_t offset; /* of the key */
	struct json_value *val;
};

struct json_limits {
	size_t max_depth;   /* arrays and objects nested at most this deep */
	size_t max_values;  /* values in the whole document */
	size_t max_members; /* members of one object */
	size_t max_string;  /* bytes of one decoded string */
};

/* 32 levels, 2^21 values, 256 members, 64 KiB strings. */
extern const struct json_limits json_default_limits;

struct json_error {
	size_t offset;
	char msg[160];
};

/*
 * Parse buf[0, len) (NUL bytes in it are just bad input).  On success
 * *out is the document, owned by the caller (json_free).  On error
 * returns -EINVAL (bad or over-limit input: err says where and why) or
 * -ENOMEM.  lim NULL means json_default_limits.
 */
int json_parse(const char *buf, size_t len, const struct json_limits *lim,
	       struct json_value **out, struct json_error *err);

void json_free(struct json_value *v);

/* The member called key of an object, or NULL; borrowed from obj. */
const struct json_value *json_get(const struct json_value *obj,
				  const char *key);

/* "null", "a boolean", "a number", "a string", "an array", "an object" */
const char *json_type_name(enum json_type t);

/* Write s[0, len) as a JSON string literal with its quotes.  Bytes that
 * are not valid UTF-8 become U+FFFD, so the output is always valid. */
void json_put_string(FILE *f, const char *s, size_t len);

/* Write b[0, len) as a JSON string of lower-case hex digits. */
void json_put_hex(FILE *f, const void *b, size_t len);

/* Whether s[0, len) is valid UTF-8 without NUL bytes: what a JSON string
 * can carry unchanged (json_put_string would alter anything else). */
bool json_utf8_valid(const char *s, size_t len);

#endif
