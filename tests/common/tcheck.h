/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Minimal test support for plain test programs: each test is a program
 * that exits 0 (pass), 77 (skip) or anything else (fail).
 *
 * CHECK(cond)            fail unless cond
 * CHECK_OK(expr)         fail unless expr == 0 (prints the errno)
 * CHECK_ERR(expr, err)   fail unless expr == err (a negative errno)
 * CHECK_EQ(a, b)         fail unless a == b (as unsigned 64-bit)
 *
 * Randomized tests seed with tseed(): TV_SEED from the environment if set,
 * else the clock; the seed is printed so any run can be replayed with
 * TV_SEED=<seed>.  tpattern() fills a buffer with bytes a tag names.
 */
#ifndef TV_TESTS_TCHECK_H
#define TV_TESTS_TCHECK_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TEST_SKIP 77

_Noreturn static inline void tfail(const char *file, int line, const char *what)
{
	fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what);
	fflush(NULL);
	abort();
}

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			tfail(__FILE__, __LINE__, "CHECK(" #cond ")");         \
	} while (0)

#define CHECK_OK(expr)                                                         \
	do {                                                                   \
		long long _r = (long long) (expr);                             \
		if (_r != 0) {                                                 \
			fprintf(stderr, "  %s returned %lld (%s)\n", #expr,    \
				_r, _r < 0 ? strerror((int) -_r) : "");        \
			tfail(__FILE__, __LINE__, "CHECK_OK");                 \
		}                                                              \
	} while (0)

#define CHECK_ERR(expr, err)                                                   \
	do {                                                                   \
		long long _r = (long long) (expr);                             \
		if (_r != (long long) (err)) {                                 \
			fprintf(stderr, "  %s returned %lld, want %lld\n",     \
				#expr, _r, (long long) (err));                 \
			tfail(__FILE__, __LINE__, "CHECK_ERR");                \
		}                                                              \
	} while (0)

#define CHECK_EQ(a, b)                                                         \
	do {                                                                   \
		uint64_t _a = (uint64_t) (a), _b = (uint64_t) (b);             \
		if (_a != _b) {                                                \
			fprintf(stderr,                                        \
				"  %s == %" PRIu64 " (0x%" PRIx64 "), "        \
				"%s == %" PRIu64 " (0x%" PRIx64 ")\n",         \
				#a, _a, _a, #b, _b, _b);                       \
			tfail(__FILE__, __LINE__, "CHECK_EQ");                 \
		}                                                              \
	} while (0)

/* xoshiro256** seeded through splitmix64: fast, good enough, replayable */
struct trng {
	uint64_t s[4];
};

static inline uint64_t trng_splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static inline void trng_init(struct trng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = trng_splitmix(&seed);
}

static inline uint64_t trng_next(struct trng *r)
{
	uint64_t *s = r->s;
	uint64_t res = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = (s[3] << 45) | (s[3] >> 19);
	return res;
}

/* uniform in [0, n); n > 0 */
static inline uint64_t trng_below(struct trng *r, uint64_t n)
{
	return trng_next(r) % n;
}

/* Distinct, reproducible bytes for each tag: len bytes of a generator
 * seeded from tag (a test writes them and later checks what it reads). */
static inline void tpattern(uint8_t *buf, size_t len, uint64_t tag)
{
	struct trng r;

	trng_init(&r, tag * 0x100000001b3ull + 0x5bd1e995u);
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = trng_next(&r);

		memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
	}
}

/* The run's seed: $TV_SEED or the clock; printed for replay. */
static inline uint64_t tseed(const char *test)
{
	const char *e = getenv("TV_SEED");
	uint64_t seed;

	if (e && *e) {
		seed = strtoull(e, NULL, 0);
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t) ts.tv_sec * 1000000007ull ^
		       (uint64_t) ts.tv_nsec;
	}
	printf("%s: seed %" PRIu64 " (replay with TV_SEED=%" PRIu64 ")\n", test,
	       seed, seed);
	fflush(stdout);
	return seed;
}

/* true in sanitizer builds, which run 3-10x slower: tests do less there */
static inline int tsanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return 1;
#else
	return 0;
#endif
#else
	return 0;
#endif
}

/* Scale for long tests: $TV_SCALE (default 1). */
static inline uint64_t tscale(void)
{
	const char *e = getenv("TV_SCALE");
	uint64_t s = e && *e ? strtoull(e, NULL, 0) : 1;
	return s ? s : 1;
}

#endif
