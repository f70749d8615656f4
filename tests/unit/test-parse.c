/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The command's value parsers (sizes, integers, hex) and its strict JSON
 * parser: accepted forms, every rejected form with its exact message and
 * byte offset, limits, and random mutations of valid documents (no crash,
 * no leak under ASan, and an error always has a message inside the input).
 */
#include <errno.h>

#include "util/hex.h"
#include "util/json.h"
#include "cli/parse.h"
#include "tcheck.h"

static void size_ok(const char *s, uint64_t want)
{
	uint64_t v = 12345;

	if (parse_size(s, &v) != 0 || v != want) {
		fprintf(stderr, "parse_size(\"%s\") = %" PRIu64 "\n", s, v);
		CHECK(!"size");
	}
}

static void size_bad(const char *s, int err)
{
	uint64_t v = 12345;

	CHECK_ERR(parse_size(s, &v), err);
	CHECK_EQ(v, 12345); /* not written on error */
}

static void test_sizes(void)
{
	char buf[32];
	uint64_t v;

	size_ok("0", 0);
	size_ok("4096", 4096);
	size_ok("64K", 65536);
	size_ok("64k", 65536);
	size_ok("64KiB", 65536);
	size_ok("64KB", 65536);
	size_ok("1M", 1u << 20);
	size_ok("10G", 10ull << 30);
	size_ok("2T", 2ull << 40);
	size_ok("3P", 3ull << 50);
	size_ok("16383P", 16383ull << 50);
	size_ok("18446744073709551615", UINT64_MAX);
	size_bad("", -EINVAL);
	size_bad("K", -EINVAL);
	size_bad("-1", -EINVAL);
	size_bad("+1", -EINVAL);
	size_bad(" 1", -EINVAL);
	size_bad("1 ", -EINVAL);
	size_bad("1.5G", -EINVAL);
	size_bad("12Q", -EINVAL);
	size_bad("1E", -EINVAL);
	size_bad("1GG", -EINVAL);
	size_bad("1Gi", -EINVAL);
	size_bad("0x10", -EINVAL);
	size_bad("18446744073709551616", -ERANGE);
	size_bad("99999999999999999999", -ERANGE);
	size_bad("99999999999999999999Q", -EINVAL);
	size_bad("16384P", -ERANGE);
	size_bad("17179869184G", -ERANGE);

	CHECK_OK(parse_u64("0", &v));
	CHECK_EQ(v, 0);
	CHECK_OK(parse_u64("18446744073709551615", &v));
	CHECK_EQ(v, UINT64_MAX);
	CHECK_ERR(parse_u64("18446744073709551616", &v), -ERANGE);
	CHECK_ERR(parse_u64("", &v), -EINVAL);
	CHECK_ERR(parse_u64("1K", &v), -EINVAL);
	CHECK_ERR(parse_u64("-0", &v), -EINVAL);

	CHECK(!strcmp(fmt_size(0, buf, sizeof(buf)), "0 B"));
	CHECK(!strcmp(fmt_size(65536, buf, sizeof(buf)), "64 KiB"));
	CHECK(!strcmp(fmt_size(3ull << 29, buf, sizeof(buf)), "1.5 GiB"));
	CHECK(!strcmp(fmt_size(1000, buf, sizeof(buf)), "1000 B"));
}

static void test_hex(void)
{
	uint8_t out[8], big[4096];
	char why[80], hex[17], s[8194];
	size_t len = 99;

	CHECK_OK(parse_hex("", out, 8, &len, why, sizeof(why)));
	CHECK_EQ(len, 0);
	CHECK_OK(parse_hex("00aAfF19", out, 8, &len, why, sizeof(why)));
	CHECK_EQ(len, 4);
	CHECK(out[0] == 0 && out[1] == 0xaa && out[2] == 0xff &&
	      out[3] == 0x19);
	fmt_hex(out, 4, hex);
	CHECK(!strcmp(hex, "00aaff19"));

	len = 99;
	CHECK_ERR(parse_hex("0g", out, 8, &len, why, sizeof(why)), -EINVAL);
	CHECK(!strcmp(why, "character 2 ('g') is not a hex digit"));
	CHECK_EQ(len, 99);
	CHECK_ERR(parse_hex("00 11", out, 8, &len, why, sizeof(why)), -EINVAL);
	CHECK(!strcmp(why, "character 3 (' ') is not a hex digit"));
	CHECK_ERR(parse_hex("0\n", out, 8, &len, why, sizeof(why)), -EINVAL);
	CHECK(!strcmp(why, "character 2 (byte 0x0a) is not a hex digit"));
	CHECK_ERR(parse_hex("0x00", out, 8, &len, why, sizeof(why)), -EINVAL);
	CHECK_ERR(parse_hex("abc", out, 8, &len, why, sizeof(why)), -EINVAL);
	CHECK(!strcmp(why, "odd number of hex digits (3)"));
	CHECK_ERR(
	    parse_hex("000000000000000000", out, 8, &len, why, sizeof(why)),
	    -EINVAL);
	CHECK(!strcmp(why, "longer than 8 bytes"));
	memset(s, 'f', 8192);
	s[8192] = 0;
	CHECK_OK(parse_hex(s, big, sizeof(big), &len, why, sizeof(why)));
	CHECK_EQ(len, 4096);
	CHECK(big[4095] == 0xff);
	CHECK_ERR(parse_hex("+f", out, 8, &len, why, sizeof(why)), -EINVAL);
	CHECK(!strcmp(why, "character 1 ('+') is not a hex digit"));
}

/* util/hex.h, the decoder of the control protocol and the PSK file too:
 * exactly the hex digits, no sign and no space where scanf takes one. */
static void test_hex_decode(void)
{
	static const char *const bad[] = {"+f",	 "-f", " f", "f ", "0x",
					  "\tf", "g0", "0",  "abc"};
	uint8_t out[4] = {0};
	size_t len = 99;

	CHECK_OK(hex_decode("00aAfF19", 8, out, 4, &len));
	CHECK_EQ(len, 4);
	CHECK(out[0] == 0 && out[1] == 0xaa && out[2] == 0xff &&
	      out[3] == 0x19);
	CHECK_OK(hex_decode("", 0, out, 0, &len));
	CHECK_EQ(len, 0);
	/* slen bounds it, not a NUL: the digits after it are not read */
	CHECK_OK(hex_decode("12zz", 2, out, 4, &len));
	CHECK(len == 1 && out[0] == 0x12);
	len = 99;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_ERR(hex_decode(bad[i], strlen(bad[i]), out, 4, &len),
			  -EINVAL);
	CHECK_ERR(hex_decode("0011223344", 10, out, 4, &len), -EINVAL);
	CHECK_EQ(len, 99); /* not written on error */
}

/* Parse and expect an error at offset off with exactly msg. */
static void json_bad(const char *doc, size_t off, const char *msg)
{
	struct json_value *v = NULL;
	struct json_error e;
	int r = json_parse(doc, strlen(doc), NULL, &v, &e);

	if (r != -EINVAL || e.offset != off || strcmp(e.msg, msg)) {
		fprintf(stderr,
			"json %s: r %d, byte %zu: %s\n  want byte %zu: "
			"%s\n",
			doc, r, e.offset, e.msg, off, msg);
		CHECK(!"json error");
	}
	CHECK(v == NULL);
}

static struct json_value *json_ok(const char *doc, size_t len)
{
	struct json_value *v = NULL;
	struct json_error e;

	if (json_parse(doc, len, NULL, &v, &e) != 0) {
		fprintf(stderr, "json %s: byte %zu: %s\n", doc, e.offset,
			e.msg);
		CHECK(!"json ok");
	}
	return v;
}

static void test_json_values(void)
{
	const char *doc = " [ {\"op\" : \"create\", \"size\":1073741824,"
			  "\"n\":-1.5e3, \"b\":true, \"f\":false, \"z\":null,"
			  "\"s\":\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d"
			  "\\ude00\xc3\xa9\"}, [], {} ]\r\n";
	struct json_value *v = json_ok(doc, strlen(doc)), *o;
	const struct json_value *f;

	CHECK(v->type == JSON_ARRAY && v->arr.n == 3);
	CHECK_EQ(v->offset, 1);
	o = v->arr.items[0];
	CHECK(o->type == JSON_OBJECT && o->obj.n == 7);
	CHECK_EQ(o->offset, 3);
	f = json_get(o, "op");
	CHECK(f && f->type == JSON_STRING && !strcmp(f->str.s, "create"));
	f = json_get(o, "size");
	CHECK(f && f->type == JSON_NUMBER && f->num.is_uint &&
	      f->num.u == 1073741824);
	f = json_get(o, "n");
	CHECK(f && f->type == JSON_NUMBER && !f->num.is_uint);
	CHECK(json_get(o, "b")->b && !json_get(o, "f")->b);
	CHECK(json_get(o, "z")->type == JSON_NULL);
	f = json_get(o, "s");
	CHECK(f && !strcmp(f->str.s, "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80"
				     "\xc3\xa9"));
	CHECK_EQ(f->str.len, strlen(f->str.s));
	CHECK(json_get(o, "missing") == NULL);
	CHECK(json_get(v, "op") == NULL); /* not an object */
	CHECK(v->arr.items[1]->type == JSON_ARRAY && !v->arr.items[1]->arr.n);
	CHECK(v->arr.items[2]->type == JSON_OBJECT);
	json_free(v);

	v = json_ok("18446744073709551615", 20);
	CHECK(v->num.is_uint && v->num.u == UINT64_MAX);
	json_free(v);
	v = json_ok("18446744073709551616", 20);
	CHECK(v->type == JSON_NUMBER && !v->num.is_uint);
	json_free(v);
	v = json_ok("-0", 2);
	CHECK(!v->num.is_uint);
	json_free(v);
	v = json_ok("0", 1);
	CHECK(v->num.is_uint && v->num.u == 0);
	json_free(v);
	v = json_ok("\"\"", 2);
	CHECK(v->type == JSON_STRING && v->str.len == 0);
	json_free(v);
	CHECK(!strcmp(json_type_name(JSON_OBJECT), "an object"));
}

static void test_json_errors(void)
{
	struct json_value *v = NULL;
	struct json_error e;

	json_bad("", 0, "unexpected end of input: expected a value");
	json_bad("   ", 3, "unexpected end of input: expected a value");
	json_bad("[1,]", 3, "unexpected character ']': expected a value");
	json_bad("[1 2]", 3,
		 "unexpected character '2': expected ',' or ']' "
		 "after an array element");
	json_bad("[1", 2,
		 "unexpected end of input: expected ',' or ']' after "
		 "an array element");
	json_bad("{\"a\":1,}", 7,
		 "unexpected character '}': expected a "
		 "string (an object key)");
	json_bad("{\"a\" 1}", 5,
		 "unexpected character '1': expected ':' "
		 "after an object key");
	json_bad("{\"a\":1 \"b\":2}", 7,
		 "unexpected character '\"': "
		 "expected ',' or '}' after an "
		 "object member");
	json_bad("{a:1}", 1,
		 "unexpected character 'a': expected a string "
		 "(an object key)");
	json_bad("{\"op\":1,\"x\":2,\"op\":3}", 14, "duplicate key \"op\"");
	json_bad("{\"\\u0061\":1,\"a\":2}", 12, "duplicate key \"a\"");
	json_bad("[1] x", 4, "trailing characters after the JSON value");
	json_bad("[1][2]", 3, "trailing characters after the JSON value");
	json_bad("\xef\xbb\xbf[]", 0, "unexpected byte 0xef: expected a value");
	json_bad("// c\n[]", 0, "unexpected character '/': expected a value");
	json_bad("tru", 0, "invalid literal (expected true)");
	json_bad("nul", 0, "invalid literal (expected null)");
	json_bad("[fals]", 1, "invalid literal (expected false)");
	json_bad("NaN", 0, "unexpected character 'N': expected a value");
	json_bad("01", 0, "leading zeros are not allowed");
	json_bad("-", 1, "unexpected end of input: expected a digit");
	json_bad("-a", 1, "unexpected character 'a': expected a digit");
	json_bad("1.", 2,
		 "unexpected end of input: expected a digit after "
		 "'.'");
	json_bad("1.e5", 2,
		 "unexpected character 'e': expected a digit "
		 "after '.'");
	json_bad("1e+", 3,
		 "unexpected end of input: expected a digit in the "
		 "exponent");
	json_bad("+1", 0, "unexpected character '+': expected a value");
	json_bad(".5", 0, "unexpected character '.': expected a value");
	json_bad("\"abc", 4,
		 "unexpected end of input: string starting at "
		 "byte 0 is not closed");
	json_bad("[\"a\nb\"]", 3,
		 "control character 0x0a in a string "
		 "(escape it)");
	json_bad("\"\\x\"", 1, "invalid escape '\\x'");
	json_bad("\"\\u12\"", 5, "\\u escape needs four hex digits");
	json_bad("\"\\u12", 5,
		 "unexpected end of input: string starting at "
		 "byte 0 is not closed");
	json_bad("\"\\ud800\"", 1, "unpaired surrogate in a \\u escape");
	json_bad("\"\\udc00\"", 1, "unpaired surrogate in a \\u escape");
	json_bad("\"\\ud800\\u0041\"", 1,
		 "unpaired surrogate in a \\u "
		 "escape");
	json_bad("\"\\u0000\"", 1, "\\u0000 is not allowed in a string");
	json_bad("\"\xff\"", 1, "invalid UTF-8 in a string");
	json_bad("\"\xc0\xaf\"", 1, "invalid UTF-8 in a string"); /* overlong */
	json_bad("\"\xed\xa0\x80\"", 1, "invalid UTF-8 in a string");
	json_bad("\"\xf4\x90\x80\x80\"", 1, "invalid UTF-8 in a string");
	json_bad("\"\xe2\x82\"", 1, "invalid UTF-8 in a string");

	/* a NUL byte in the input is bad input, not the end of it */
	CHECK_ERR(json_parse("[1]\0", 4, NULL, &v, &e), -EINVAL);
	CHECK_EQ(e.offset, 3);
	CHECK(!strcmp(e.msg, "trailing characters after the JSON value"));
	CHECK_ERR(json_parse("\"a\0\"", 4, NULL, &v, &e), -EINVAL);
	CHECK(!strcmp(e.msg, "control character 0x00 in a string (escape "
			     "it)"));
}

static void test_json_limits(void)
{
	struct json_limits lim = {
	    .max_depth = 3, .max_values = 5, .max_members = 2, .max_string = 4};
	struct json_value *v = NULL;
	struct json_error e;
	char deep[200];

	CHECK_OK(json_parse("[[[1]]]", 7, &lim, &v, &e));
	json_free(v);
	CHECK_ERR(json_parse("[[[[1]]]]", 9, &lim, &v, &e), -EINVAL);
	CHECK_EQ(e.offset, 3);
	CHECK(!strcmp(e.msg, "nesting deeper than 3 levels"));
	CHECK_ERR(json_parse("[1,2,3,4,5]", 11, &lim, &v, &e), -EINVAL);
	CHECK_EQ(e.offset, 9);
	CHECK(!strcmp(e.msg, "too many values (more than 5)"));
	CHECK_ERR(json_parse("{\"a\":1,\"b\":2,\"c\":3}", 19, &lim, &v, &e),
		  -EINVAL);
	CHECK_EQ(e.offset, 13);
	CHECK(!strcmp(e.msg, "too many members in an object (more than 2)"));
	CHECK_OK(json_parse("\"abcd\"", 6, &lim, &v, &e));
	json_free(v);
	CHECK_ERR(json_parse("\"abcde\"", 7, &lim, &v, &e), -EINVAL);
	CHECK_EQ(e.offset, 0);
	CHECK(!strcmp(e.msg, "string longer than 4 bytes"));

	/* the default depth limit: 32 levels */
	memset(deep, '[', 33);
	memset(deep + 33, ']', 33);
	CHECK_ERR(json_parse(deep, 66, NULL, &v, &e), -EINVAL);
	CHECK(!strcmp(e.msg, "nesting deeper than 32 levels"));
	CHECK_OK(json_parse(deep + 1, 64, NULL, &v, &e));
	json_free(v);
}

static void test_json_writer(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CHECK(f);
	json_put_string(f, "a\"b\\c\n\x01\x7f\xc3\xa9\xff", 11);
	fclose(f);
	CHECK(!strcmp(buf,
		      "\"a\\\"b\\\\c\\u000a\\u0001\\u007f\xc3\xa9\\ufffd\""));
	free(buf);
}

/* Mutated documents: never a crash; an error is always inside the input
 * with a message. */
static void test_json_fuzz(void)
{
	static const char seed[] =
	    "[{\"op\":\"create\",\"name\":\"vm\\u00e9\",\"size\":\"1G\","
	    "\"blob_hex\":\"00ff\"},{\"op\":\"snapshot\",\"origin\":\"#1\","
	    "\"name\":\"s\",\"read_only\":true},{\"op\":\"resize\","
	    "\"volume\":\"vm\",\"size\":1048576e0}]";
	static const char alphabet[] = "[]{}\",:\\0123456789.eE+-tfnu \t\n\x80"
				       "\xc3\xff";
	struct trng rng;
	char doc[sizeof(seed) + 16];

	trng_init(&rng, tseed("test-parse"));
	for (int iter = 0; iter < 20000; iter++) {
		struct json_value *v = NULL;
		struct json_error e;
		size_t len = sizeof(seed) - 1;
		int nmut = 1 + (int) trng_below(&rng, 4);

		memcpy(doc, seed, len);
		for (int m = 0; m < nmut; m++) {
			size_t at = trng_below(&rng, len);
			char c =
			    alphabet[trng_below(&rng, sizeof(alphabet) - 1)];

			switch (trng_below(&rng, 3)) {
			case 0:
				doc[at] = c;
				break;
			case 1:
				memmove(doc + at, doc + at + 1, len - at - 1);
				len--;
				break;
			default:
				if (len + 1 < sizeof(doc)) {
					memmove(doc + at + 1, doc + at,
						len - at);
					doc[at] = c;
					len++;
				}
			}
		}
		if (json_parse(doc, len, NULL, &v, &e) == 0) {
			json_free(v);
			continue;
		}
		CHECK(e.offset <= len);
		CHECK(e.msg[0]);
	}
}

int main(void)
{
	test_sizes();
	test_hex();
	test_hex_decode();
	test_json_values();
	test_json_errors();
	test_json_limits();
	test_json_writer();
	test_json_fuzz();
	printf("test-parse: ok\n");
	return 0;
}
