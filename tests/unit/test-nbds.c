/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-nbds - the NBD server (src/server/nbds.c) byte by byte, through a
 * socketpair: the option-phase errors and the bad requests that libnbd
 * refuses to send (unknown options and commands, malformed option data,
 * oversized options and requests, bad magic), and that the connection
 * stays usable after each refused request.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "server/nbd-proto.h"
#include "server/nbds.h"
#include "tcheck.h"
#include "util/checked.h"
#include "thin/thin-internal.h"
#include "util/endian.h"
#include "util/escape.h"
#include "util/log.h"

static struct nbds *srv;

struct served {
	int fd;
	pthread_t t;
};

static void *serve_thread(void *arg)
{
	struct served *s = arg;

	nbds_serve_fd(srv, s->fd);
	return NULL;
}

static void rd(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);
		CHECK(n > 0);
		p += n;
		len -= (size_t) n;
	}
}

static void wr(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		CHECK(n > 0);
		p += n;
		len -= (size_t) n;
	}
}

/* Connect a new client: returns its end, after the greeting. */
static int client(struct served *s)
{
	int sv[2];
	uint8_t g[18], f[4];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	s->fd = sv[0];
	CHECK(pthread_create(&s->t, NULL, serve_thread, s) == 0);
	rd(sv[1], g, sizeof(g));
	CHECK(get_be64(g) == NBDS_MAGIC);
	CHECK(get_be64(g + 8) == NBDS_IHAVEOPT);
	CHECK(get_be16(g + 16) & NBDS_FLAG_FIXED_NEWSTYLE);
	put_be32(f, NBDS_CFLAG_FIXED_NEWSTYLE | NBDS_CFLAG_NO_ZEROES);
	wr(sv[1], f, 4);
	return sv[1];
}

static void done(struct served *s, int fd)
{
	close(fd);
	pthread_join(s->t, NULL);
}

static void send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];

	put_be64(h, NBDS_IHAVEOPT);
	put_be32(h + 8, opt);
	put_be32(h + 12, len);
	wr(fd, h, 16);
	if (len)
		wr(fd, data, len);
}

/* Read one option reply; returns its type, data into buf (len out). */
static uint32_t get_reply(int fd, uint32_t opt, uint8_t *buf, uint32_t *len)
{
	uint8_t h[20];
	uint32_t n;

	rd(fd, h, 20);
	CHECK(get_be64(h) == NBDS_REP_MAGIC);
	CHECK(get_be32(h + 8) == opt);
	n = get_be32(h + 16);
	CHECK(n <= 65536);
	if (n)
		rd(fd, buf, n);
	if (len)
		*len = n;
	return get_be32(h + 12);
}

static uint32_t opt_error_of(int fd, uint32_t opt, const void *data,
			     uint32_t len)
{
	static uint8_t buf[65536];

	send_opt(fd, opt, data, len);
	return get_reply(fd, opt, buf, NULL);
}

/* GO to export name with no info requests; returns the size. */
static uint64_t go(int fd, const char *name, uint16_t *tflags)
{
	uint8_t d[4 + 256 + 2], buf[65536];
	size_t nl = strlen(name);
	uint64_t size = 0;
	uint32_t t, len;

	put_be32(d, (uint32_t) nl);
	memcpy(d + 4, name, nl);
	put_be16(d + 4 + nl, 0);
	send_opt(fd, NBDS_OPT_GO, d, (uint32_t) (4 + nl + 2));
	while ((t = get_reply(fd, NBDS_OPT_GO, buf, &len)) == NBDS_REP_INFO) {
		if (get_be16(buf) == NBDS_INFO_EXPORT) {
			CHECK(len == 12);
			size = get_be64(buf + 2);
			*tflags = get_be16(buf + 10);
		}
	}
	CHECK(t == NBDS_REP_ACK);
	return size;
}

static void request(int fd, uint16_t flags, uint16_t type, uint64_t cookie,
		    uint64_t off, uint32_t len)
{
	uint8_t h[28];

	put_be32(h, NBDS_REQUEST_MAGIC);
	put_be16(h + 4, flags);
	put_be16(h + 6, type);
	put_be64(h + 8, cookie);
	put_be64(h + 16, off);
	put_be32(h + 24, len);
	wr(fd, h, 28);
}

/* A simple reply: returns its error. */
static uint32_t simple(int fd, uint64_t cookie, void *data, size_t len)
{
	uint8_t h[16];
	uint32_t err;

	rd(fd, h, 16);
	CHECK(get_be32(h) == NBDS_SIMPLE_REPLY_MAGIC);
	CHECK(get_be64(h + 8) == cookie);
	err = get_be32(h + 4);
	if (!err && len)
		rd(fd, data, len);
	return err;
}

static void test_options(void)
{
	struct served s;
	uint8_t d[64], big[100000];
	int fd = client(&s);

	/* unknown options, and ones we don't do */
	CHECK(opt_error_of(fd, 99, NULL, 0) == NBDS_REP_ERR_UNSUP);
	CHECK(opt_error_of(fd, 4 /* PEEK_EXPORT */, NULL, 0) ==
	      NBDS_REP_ERR_UNSUP);
	/* data where none belongs */
	CHECK(opt_error_of(fd, NBDS_OPT_LIST, "x", 1) == NBDS_REP_ERR_INVALID);
	CHECK(opt_error_of(fd, NBDS_OPT_STRUCTURED_REPLY, "x", 1) ==
	      NBDS_REP_ERR_INVALID);
	CHECK(opt_error_of(fd, NBDS_OPT_STARTTLS, NULL, 0) ==
	      NBDS_REP_ERR_POLICY);
	/* INFO: name longer than the data; count of requests wrong */
	put_be32(d, 200);
	CHECK(opt_error_of(fd, NBDS_OPT_INFO, d, 8) == NBDS_REP_ERR_INVALID);
	put_be32(d, 3);
	memcpy(d + 4, "vol", 3);
	put_be16(d + 7, 2);
	CHECK(opt_error_of(fd, NBDS_OPT_INFO, d, 9) == NBDS_REP_ERR_INVALID);
	/* unknown export */
	put_be32(d, 4);
	memcpy(d + 4, "nope", 4);
	put_be16(d + 8, 0);
	CHECK(opt_error_of(fd, NBDS_OPT_INFO, d, 10) == NBDS_REP_ERR_UNKNOWN);
	put_be32(d, 0); /* the empty name: no default export */
	put_be16(d + 4, 0);
	CHECK(opt_error_of(fd, NBDS_OPT_GO, d, 6) == NBDS_REP_ERR_UNKNOWN);
	/* SET_META_CONTEXT needs structured replies first */
	put_be32(d, 3);
	memcpy(d + 4, "vol", 3);
	put_be32(d + 7, 0);
	CHECK(opt_error_of(fd, NBDS_OPT_SET_META_CONTEXT, d, 11) ==
	      NBDS_REP_ERR_INVALID);
	/* a big option is read, refused, and the connection goes on */
	memset(big, 'a', sizeof(big));
	CHECK(opt_error_of(fd, NBDS_OPT_INFO, big, sizeof(big)) ==
	      NBDS_REP_ERR_TOO_BIG);
	CHECK(opt_error_of(fd, NBDS_OPT_STRUCTURED_REPLY, NULL, 0) ==
	      NBDS_REP_ACK);
	/* a malformed meta-context query list */
	put_be32(d, 3);
	memcpy(d + 4, "vol", 3);
	put_be32(d + 7, 1);
	put_be32(d + 11, 50);
	CHECK(opt_error_of(fd, NBDS_OPT_LIST_META_CONTEXT, d, 15) ==
	      NBDS_REP_ERR_INVALID);
	/* ABORT is acknowledged and ends it */
	CHECK(opt_error_of(fd, NBDS_OPT_ABORT, NULL, 0) == NBDS_REP_ACK);
	done(&s, fd);

	/* a bad option magic ends the connection */
	fd = client(&s);
	memset(d, 0xee, 16);
	wr(fd, d, 16);
	CHECK(read(fd, d, 1) == 0);
	done(&s, fd);

	/* EXPORT_NAME of an unknown volume: closed (no error reply exists) */
	fd = client(&s);
	send_opt(fd, NBDS_OPT_EXPORT_NAME, "nope", 4);
	CHECK(read(fd, d, 1) == 0);
	done(&s, fd);
}

static void test_requests(void)
{
	static uint8_t buf[1 << 20], back[1 << 20];
	struct served s;
	uint16_t tf = 0;
	uint64_t size;
	int fd = client(&s);

	size = go(fd, "vol", &tf);
	CHECK(size == 64u << 20);
	CHECK(tf & NBDS_TF_CAN_MULTI_CONN);
	CHECK(!(tf & NBDS_TF_READ_ONLY));

	/* a write and a read back */
	for (size_t i = 0; i < 8192; i++)
		buf[i] = (uint8_t) (i * 7 + 1);
	request(fd, 0, NBDS_CMD_WRITE, 1, 65536, 8192);
	wr(fd, buf, 8192);
	CHECK(simple(fd, 1, NULL, 0) == 0);
	request(fd, 0, NBDS_CMD_READ, 2, 65536, 8192);
	CHECK(simple(fd, 2, back, 8192) == 0);
	CHECK(!memcmp(buf, back, 8192));

	/* unaligned write and read: read-modify-write of the edges */
	request(fd, 0, NBDS_CMD_WRITE, 3, 65536 + 5, 3);
	wr(fd, "xyz", 3);
	CHECK(simple(fd, 3, NULL, 0) == 0);
	request(fd, 0, NBDS_CMD_READ, 4, 65536 + 4, 5);
	CHECK(simple(fd, 4, back, 5) == 0);
	CHECK(back[0] == buf[4] && !memcmp(back + 1, "xyz", 3) &&
	      back[4] == buf[8]);

	/* refused requests; the connection stays usable after each */
	request(fd, 0, 42, 5, 0, 512);
	CHECK(simple(fd, 5, NULL, 0) == NBDS_EINVAL);
	request(fd, 0x100, NBDS_CMD_READ, 6, 0, 512);
	CHECK(simple(fd, 6, NULL, 0) == NBDS_EINVAL);
	request(fd, NBDS_CMD_FLAG_DF, NBDS_CMD_READ, 7, 0, 512);
	CHECK(simple(fd, 7, NULL, 0) == NBDS_EINVAL); /* DF unnegotiated */
	request(fd, 0, NBDS_CMD_READ, 8, size - 512, 1024);
	CHECK(simple(fd, 8, NULL, 0) == NBDS_EINVAL);
	request(fd, 0, NBDS_CMD_READ, 9, UINT64_MAX - 100, 512);
	CHECK(simple(fd, 9, NULL, 0) == NBDS_EINVAL);
	request(fd, 0, NBDS_CMD_WRITE, 10, size - 512, 1024);
	wr(fd, buf, 1024); /* the payload is consumed anyway */
	CHECK(simple(fd, 10, NULL, 0) == NBDS_ENOSPC);
	request(fd, 0, NBDS_CMD_TRIM, 11, size, 512);
	CHECK(simple(fd, 11, NULL, 0) == NBDS_EINVAL); /* proto.md */
	request(fd, 0, NBDS_CMD_READ, 12, 0, 33u << 20);
	CHECK(simple(fd, 12, NULL, 0) == NBDS_EINVAL); /* EOVERFLOW: no */
	request(fd, 0, NBDS_CMD_FLUSH, 13, 4096, 0);
	CHECK(simple(fd, 13, NULL, 0) == NBDS_EINVAL);
	request(fd, 0, NBDS_CMD_BLOCK_STATUS, 14, 0, 4096);
	CHECK(simple(fd, 14, NULL, 0) == NBDS_EINVAL); /* no context */
	request(fd, 0, NBDS_CMD_READ, 15, 0, 0);
	CHECK(simple(fd, 15, NULL, 0) == NBDS_EINVAL);
	request(fd, NBDS_CMD_FLAG_FAST_ZERO | NBDS_CMD_FLAG_NO_HOLE,
		NBDS_CMD_WRITE_ZEROES, 16, 0, 65536);
	CHECK(simple(fd, 16, NULL, 0) == NBDS_ENOTSUP);

	/* still fine: flush, zero, read zeroes */
	request(fd, 0, NBDS_CMD_FLUSH, 17, 0, 0);
	CHECK(simple(fd, 17, NULL, 0) == 0);
	/* FAST_ZERO: a whole pool block (64 KiB) is unmapped at once */
	request(fd, NBDS_CMD_FLAG_FAST_ZERO, NBDS_CMD_WRITE_ZEROES, 18, 65536,
		65536);
	CHECK(simple(fd, 18, NULL, 0) == 0);
	request(fd, 0, NBDS_CMD_READ, 19, 65536, 8192);
	CHECK(simple(fd, 19, back, 8192) == 0);
	for (size_t i = 0; i < 8192; i++)
		CHECK(back[i] == 0);
	request(fd, 0, NBDS_CMD_CACHE, 20, 0, 1 << 20);
	CHECK(simple(fd, 20, NULL, 0) == 0);

	/* a bad request magic ends it */
	memset(buf, 0xee, 28);
	wr(fd, buf, 28);
	CHECK(read(fd, buf, 1) == 0);
	done(&s, fd);

	/* DISC: requests sent before it are still answered */
	fd = client(&s);
	go(fd, "#1", &tf);
	request(fd, 0, NBDS_CMD_READ, 30, 0, 4096);
	request(fd, 0, NBDS_CMD_DISC, 31, 0, 0);
	CHECK(simple(fd, 30, back, 4096) == 0);
	CHECK(read(fd, buf, 1) == 0);
	done(&s, fd);
}

/*
 * Requests at the pace of a queue-depth-1 client (the server then polls
 * for the next header, read_header in nbds.c), with pauses of every
 * length around the polling window, headers split in pieces that land
 * during the poll and after it, and the end of the stream during a poll.
 */
static void pause_us_for(unsigned int us)
{
	struct timespec a, b;

	if (us >= 200) {
		usleep(us);
		return;
	}
	/* short ones by spinning: usleep sleeps 50 us more (timer slack) */
	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000000000L + b.tv_nsec - a.tv_nsec <
	       (long) us * 1000);
}

static void test_paced(void)
{
	static const unsigned int pause_us[] = {0,  1,	3,   10,  30,
						50, 70, 100, 300, 1000};
	static uint8_t buf[4096], back[4096];
	struct served s;
	uint16_t tf = 0;
	uint64_t cookie = 100;
	int fd = client(&s);

	go(fd, "vol", &tf);
	memset(buf, 0x3c, sizeof(buf));
	request(fd, 0, NBDS_CMD_WRITE, cookie, 0, 4096);
	wr(fd, buf, 4096);
	CHECK(simple(fd, cookie++, NULL, 0) == 0);
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < ARRAY_SIZE(pause_us); i++) {
			uint8_t h[28];
			size_t cut = (i * 5 + (size_t) round) % 28;

			/* a few quick ones, so that the window grows */
			for (int k = 0; k < 8; k++) {
				request(fd, 0, NBDS_CMD_READ, cookie, 0, 4096);
				CHECK(simple(fd, cookie++, back, 4096) == 0);
			}
			pause_us_for(pause_us[i]);
			put_be32(h, NBDS_REQUEST_MAGIC);
			put_be16(h + 4, 0);
			put_be16(h + 6, NBDS_CMD_READ);
			put_be64(h + 8, cookie);
			put_be64(h + 16, 0);
			put_be32(h + 24, 4096);
			wr(fd, h, cut);
			pause_us_for(pause_us[(i + 3) % ARRAY_SIZE(pause_us)]);
			wr(fd, h + cut, 28 - cut);
			CHECK(simple(fd, cookie++, back, 4096) == 0);
			CHECK(!memcmp(buf, back, 4096));
		}
	}
	/* the client goes away while the server polls for its next one */
	request(fd, 0, NBDS_CMD_READ, cookie, 0, 4096);
	CHECK(simple(fd, cookie++, back, 4096) == 0);
	done(&s, fd);
}

/*
 * Pipelined requests, as a deep queue sends them: one stream of 64 4 KiB
 * writes, a refused write (past the end) whose payload must be skipped,
 * a 1 MiB write (more than the read-ahead buffer keeps), 64 reads and a
 * 1 MiB read, written while the replies come back in any order.
 */
struct blob {
	int fd;
	const uint8_t *p;
	size_t len;
};

static void *send_blob(void *arg)
{
	struct blob *b = arg;

	wr(b->fd, b->p, b->len);
	return NULL;
}

static uint8_t *put_req(uint8_t *p, uint16_t type, uint64_t cookie,
			uint64_t off, uint32_t len)
{
	put_be32(p, NBDS_REQUEST_MAGIC);
	put_be16(p + 4, 0);
	put_be16(p + 6, type);
	put_be64(p + 8, cookie);
	put_be64(p + 16, off);
	put_be32(p + 24, len);
	return p + 28;
}

static void test_pipelined(void)
{
	const uint32_t big = 1u << 20;
	size_t cap = 64 * (28 + 4096) + (28 + 4096) + (28 + big) + 65 * 28;
	uint8_t *blob = malloc(cap), *p = blob, *want = calloc(1, 2 * big);
	uint8_t *got = malloc(big);
	bool seen[200] = {false};
	struct served s;
	struct blob b;
	pthread_t t;
	uint16_t tf = 0;
	uint64_t size;
	int fd = client(&s);

	CHECK(blob && want && got);
	size = go(fd, "vol", &tf);
	for (uint32_t i = 0; i < 64; i++) { /* cookies 0..63 */
		p = put_req(p, NBDS_CMD_WRITE, i, (uint64_t) i * 4096, 4096);
		memset(want + (size_t) i * 4096, (int) (i + 1), 4096);
		memcpy(p, want + (size_t) i * 4096, 4096);
		p += 4096;
	}
	p = put_req(p, NBDS_CMD_WRITE, 64, size, 4096); /* refused */
	memset(p, 0xee, 4096);
	p += 4096;
	p = put_req(p, NBDS_CMD_WRITE, 65, big, big);
	for (uint32_t i = 0; i < big; i++)
		want[big + i] = (uint8_t) (i * 7 + 3);
	memcpy(p, want + big, big);
	p += big;
	for (uint32_t i = 0; i < 64; i++) /* cookies 100..163 */
		p = put_req(p, NBDS_CMD_READ, 100 + i, (uint64_t) i * 4096,
			    4096);
	p = put_req(p, NBDS_CMD_READ, 199, big, big);
	b = (struct blob){fd, blob, (size_t) (p - blob)};
	/* the reads may overtake the writes they follow (no ordering in
	 * NBD without FLUSH): the 64 + 1 + 1 writes are checked first */
	b.len = (size_t) (p - blob) - 65 * 28;
	CHECK(pthread_create(&t, NULL, send_blob, &b) == 0);
	for (int n = 0; n < 66; n++) {
		uint8_t h[16];
		uint64_t ck;

		rd(fd, h, 16);
		CHECK(get_be32(h) == NBDS_SIMPLE_REPLY_MAGIC);
		ck = get_be64(h + 8);
		CHECK(ck <= 65 && !seen[ck]);
		seen[ck] = true;
		CHECK(get_be32(h + 4) == (ck == 64 ? NBDS_ENOSPC : 0));
	}
	pthread_join(t, NULL);
	b.p = p - 65 * 28;
	b.len = 65 * 28;
	CHECK(pthread_create(&t, NULL, send_blob, &b) == 0);
	for (int n = 0; n < 65; n++) {
		uint8_t h[16];
		uint64_t ck;

		rd(fd, h, 16);
		CHECK(get_be32(h) == NBDS_SIMPLE_REPLY_MAGIC);
		CHECK(get_be32(h + 4) == 0);
		ck = get_be64(h + 8);
		CHECK(((ck >= 100 && ck < 164) || ck == 199) && !seen[ck]);
		seen[ck] = true;
		if (ck == 199) {
			rd(fd, got, big);
			CHECK(!memcmp(got, want + big, big));
		} else {
			rd(fd, got, 4096);
			CHECK(!memcmp(got, want + (ck - 100) * 4096, 4096));
		}
	}
	pthread_join(t, NULL);
	done(&s, fd);
	free(blob);
	free(want);
	free(got);
}

static void test_read_only(void)
{
	static uint8_t buf[4096];
	struct served s;
	uint16_t tf = 0;
	int fd = client(&s);

	go(fd, "ro", &tf);
	CHECK(tf & NBDS_TF_READ_ONLY);
	CHECK(!(tf & NBDS_TF_SEND_TRIM));
	request(fd, 0, NBDS_CMD_WRITE, 1, 0, 4096);
	wr(fd, buf, 4096);
	CHECK(simple(fd, 1, NULL, 0) == NBDS_EPERM);
	request(fd, 0, NBDS_CMD_TRIM, 2, 0, 4096);
	CHECK(simple(fd, 2, NULL, 0) == NBDS_EPERM);
	request(fd, 0, NBDS_CMD_WRITE_ZEROES, 3, 0, 4096);
	CHECK(simple(fd, 3, NULL, 0) == NBDS_EPERM);
	request(fd, 0, NBDS_CMD_READ, 4, 0, 4096);
	CHECK(simple(fd, 4, buf, 4096) == 0);
	done(&s, fd);
}

/* ---- limits (nbds-conn.c): admission, deadline, memory ---- */

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t) t.tv_sec * 1000 + (uint64_t) t.tv_nsec / 1000000;
}

/* A connection handed to s by nbds_accept, as the daemon does: returns
 * the client's end after the greeting and the flags, once the server has
 * read them (an option answered: it has come that far, which eviction
 * looks at), or -1 when it was refused (the server closed its end
 * without a word). */
static int accepted(struct nbds *s, const char *addr)
{
	int sv[2], r;
	uint8_t g[18], f[4];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	r = nbds_accept(s, sv[0], addr ? addr : "unix", addr);
	if (r < 0) {
		CHECK(r == -EAGAIN);
		CHECK(read(sv[1], g, 1) == 0); /* closed, nothing sent */
		close(sv[1]);
		return -1;
	}
	rd(sv[1], g, sizeof(g));
	CHECK(get_be64(g) == NBDS_MAGIC);
	put_be32(f, NBDS_CFLAG_FIXED_NEWSTYLE | NBDS_CFLAG_NO_ZEROES);
	wr(sv[1], f, 4);
	CHECK(opt_error_of(sv[1], 99, NULL, 0) == NBDS_REP_ERR_UNSUP);
	return sv[1];
}

/* A connection handed to s that sends nothing (a flood's). */
static int silent(struct nbds *s, const char *addr)
{
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CHECK(nbds_accept(s, sv[0], addr, addr) == 0);
	return sv[1];
}

/* Whether the server closed fd within ms (EOF after what it sent). */
static bool closed_within(int fd, unsigned int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000,
			     .tv_usec = (ms % 1000) * 1000};
	uint8_t junk[65536];
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while ((n = read(fd, junk, sizeof(junk))) > 0)
		;
	if (n < 0 && errno != ECONNRESET) /* a Unix socket closed with our
					   * bytes unread resets */
		fprintf(stderr, "not closed: %s\n", strerror(errno));
	return n == 0 || errno == ECONNRESET;
}

static void wait_connections(struct nbds *s, size_t n)
{
	for (int i = 0; i < 500 && nbds_connections(s, 0) != n; i++)
		usleep(10000);
	CHECK(nbds_connections(s, 0) == n);
}

/*
 * Admission (rule 1 of nbds-conn.c; all here have come as far in their
 * handshake): over the per-peer limit the oldest
 * connection of that address still in its handshake makes room; over
 * the total limit, the oldest of anyone's; established connections are
 * never closed for it, so when all are established a newcomer is
 * refused.
 */
static void test_admission(struct nbds_opts base)
{
	struct nbds *s;
	uint16_t tf;
	int a1, a2, a3, a4, a5, u1, u2, u3;

	base.max_connections = 4;
	base.max_per_peer = 2;
	CHECK(nbds_new(&base, &s) == 0);
	a1 = accepted(s, "192.0.2.1");
	a2 = accepted(s, "192.0.2.1");
	CHECK(a1 >= 0 && a2 >= 0);
	a3 = accepted(s, "192.0.2.1"); /* closes a1, the oldest */
	CHECK(a3 >= 0);
	CHECK(closed_within(a1, 2000));
	go(a2, "vol", &tf); /* established: never closed to make room */
	a4 = accepted(s, "192.0.2.1"); /* closes a3 */
	CHECK(a4 >= 0 && closed_within(a3, 2000));
	go(a4, "vol", &tf);
	CHECK(accepted(s, "192.0.2.1") == -1); /* both established */
	a5 = accepted(s, "198.51.100.7");      /* another address: its own */
	u1 = accepted(s, NULL);		       /* Unix: no per-peer limit */
	CHECK(a5 >= 0 && u1 >= 0);
	wait_connections(s, 4);
	u2 = accepted(s, NULL); /* the total: closes a5, the oldest */
	CHECK(u2 >= 0 && closed_within(a5, 2000));
	go(u1, "vol", &tf);
	u3 = accepted(s, NULL); /* closes u2 */
	CHECK(u3 >= 0 && closed_within(u2, 2000));
	go(u3, "vol", &tf);
	CHECK(accepted(s, NULL) == -1); /* four established */
	CHECK(accepted(s, "203.0.113.9") == -1);
	/* the established ones still work */
	request(a2, 0, NBDS_CMD_FLUSH, 5, 0, 0);
	CHECK(simple(a2, 5, NULL, 0) == 0);
	request(u3, 0, NBDS_CMD_FLUSH, 6, 0, 0);
	CHECK(simple(u3, 6, NULL, 0) == 0);
	/* one leaves: room for one more */
	close(u1);
	wait_connections(s, 3);
	u1 = accepted(s, NULL);
	CHECK(u1 >= 0);
	close(a1), close(a2), close(a3), close(a4), close(a5);
	close(u1), close(u2), close(u3);
	nbds_shutdown(s);
	nbds_free(s);
}

/*
 * Review 2, NBD finding 4 (rule 1 of nbds-conn.c): the connection closed
 * to make room is the one that has come least far, of those one of the
 * address that holds the most, then the oldest.  b1, the oldest, has
 * sent its flags: kept (age alone closed it); of the silent ones, x1 of
 * the address with two goes before n1, older but alone; then n1.
 */
static void test_eviction_order(struct nbds_opts base)
{
	struct nbds *s;
	uint16_t tf;
	int b1, n1, x1, x2, y, z;

	base.max_connections = 4;
	base.max_per_peer = 8;
	CHECK(nbds_new(&base, &s) == 0);
	b1 = accepted(s, "192.0.2.1");
	n1 = silent(s, "192.0.2.2");
	x1 = silent(s, "192.0.2.3");
	x2 = silent(s, "192.0.2.3");
	CHECK(b1 >= 0);
	y = silent(s, "192.0.2.4"); /* closes x1 */
	CHECK(closed_within(x1, 2000));
	go(b1, "vol", &tf);
	request(b1, 0, NBDS_CMD_FLUSH, 1, 0, 0);
	CHECK(simple(b1, 1, NULL, 0) == 0);
	z = silent(s, "192.0.2.5"); /* closes n1, the oldest left */
	CHECK(closed_within(n1, 2000));
	close(b1), close(n1), close(x1), close(x2), close(y), close(z);
	nbds_shutdown(s);
	nbds_free(s);
}

/* The handshake deadline (rule 2): a client that says nothing is closed
 * after it; one that entered transmission in time is not. */
static void test_deadline(struct nbds_opts base)
{
	struct nbds *s;
	uint64_t t0;
	uint16_t tf;
	int quiet, fast;

	base.handshake_ms = 300;
	CHECK(nbds_new(&base, &s) == 0);
	t0 = now_ms();
	quiet = accepted(s, NULL);
	fast = accepted(s, NULL);
	go(fast, "vol", &tf);
	CHECK(closed_within(quiet, 3000));
	CHECK(now_ms() - t0 >= 250 && now_ms() - t0 < 2000);
	usleep(400000); /* past the deadline, in transmission */
	request(fast, 0, NBDS_CMD_FLUSH, 1, 0, 0);
	CHECK(simple(fast, 1, NULL, 0) == 0);
	close(quiet);
	close(fast);
	nbds_shutdown(s);
	nbds_free(s);
}

/* A connection to vol that sends n READs of len (at i * len) in one
 * write, so that all wait in its socket when the server reads the first
 * (and starts threads for the others), and reads nothing. */
static int hog_reads(struct nbds *s, unsigned int n, uint32_t len)
{
	uint8_t reqs[32 * 28];
	uint16_t tf;
	int fd = accepted(s, NULL);

	CHECK(fd >= 0 && n <= 32);
	go(fd, "vol", &tf);
	for (unsigned int i = 0; i < n; i++) {
		uint8_t *h = reqs + 28 * i;

		put_be32(h, NBDS_REQUEST_MAGIC);
		put_be16(h + 4, 0);
		put_be16(h + 6, NBDS_CMD_READ);
		put_be64(h + 8, i);
		put_be64(h + 16, (uint64_t) i * len);
		put_be32(h + 24, len);
	}
	wr(fd, reqs, 28 * n);
	return fd;
}

/*
 * Memory (rules 3, 4): a client that does not read its replies holds
 * what the budget lets it, no more; alone it keeps its connection; once
 * another client waits for memory, its stalled connection is closed
 * and the other is served.
 */
static void test_memory(struct nbds_opts base, struct tv_pool *pool)
{
	static uint8_t want[1 << 20], got[1 << 20];
	struct nbds *s;
	uint16_t tf;
	uint64_t t0;
	int hog, other;

	base.max_memory = 4u << 20;
	base.stall_ms = 300;
	CHECK(nbds_new(&base, &s) == 0);
	hog = hog_reads(s, 16, 1 << 20);
	usleep(1300000); /* stalled, nobody else waits: it stays */
	CHECK(nbds_connections(s, 0) == 1);
	other = accepted(s, NULL);
	go(other, "vol", &tf);
	t0 = now_ms();
	{
		/* without rule 4 the read below waits for ever */
		struct timeval tv = {.tv_sec = 5};
		setsockopt(other, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	request(other, 0, NBDS_CMD_READ, 99, 0, 1 << 20);
	CHECK(simple(other, 99, got, sizeof(got)) == 0);
	CHECK(now_ms() - t0 < 3000);
	CHECK(tv_vol_read(pool, 1, want, sizeof(want), 0) == 0);
	CHECK(!memcmp(want, got, sizeof(got)));
	CHECK(closed_within(hog, 3000));
	close(hog);
	close(other);
	nbds_shutdown(s);
	nbds_free(s);
}

/* A reply within ms, or the test fails (rd() checks every read). */
static void answer_within(int fd, unsigned int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000,
			     .tv_usec = (ms % 1000) * 1000};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* A new client's 4 KiB READ, 4 KiB WRITE (the same bytes back) and
 * FLUSH, each answered within ms, the data right. */
static void small_requests_served(struct nbds *s, struct tv_pool *pool,
				  unsigned int ms)
{
	static uint8_t want[4096], got[4096];
	uint8_t h[28];
	uint16_t tf;
	uint64_t t0 = now_ms();
	int fd = accepted(s, NULL);

	CHECK(fd >= 0);
	go(fd, "vol", &tf);
	answer_within(fd, ms);
	CHECK(tv_vol_read(pool, 1, want, sizeof(want), 8192) == 0);
	request(fd, 0, NBDS_CMD_READ, 1, 8192, 4096);
	CHECK(simple(fd, 1, got, sizeof(got)) == 0);
	CHECK(!memcmp(want, got, sizeof(got)));
	put_be32(h, NBDS_REQUEST_MAGIC);
	put_be16(h + 4, 0);
	put_be16(h + 6, NBDS_CMD_WRITE);
	put_be64(h + 8, 2);
	put_be64(h + 16, 8192);
	put_be32(h + 24, 4096);
	wr(fd, h, 28);
	wr(fd, want, sizeof(want));
	CHECK(simple(fd, 2, NULL, 0) == 0);
	request(fd, 0, NBDS_CMD_FLUSH, 3, 0, 0);
	CHECK(simple(fd, 3, NULL, 0) == 0);
	CHECK(now_ms() - t0 < ms);
	close(fd);
}

/* Read 32 KiB every 50 ms (640 KiB/s) until EOF or 8 s. */
struct trickle {
	int fd;
	bool closed;
};

static void *trickle_main(void *arg)
{
	struct trickle *t = arg;
	uint8_t buf[32768];
	uint64_t t0 = now_ms();

	while (now_ms() - t0 < 8000) {
		ssize_t n = read(t->fd, buf, sizeof(buf));

		if (n <= 0) {
			t->closed = n == 0;
			break;
		}
		usleep(50000);
	}
	return NULL;
}

/*
 * Review 2, NBD finding 1 (nbds-conn.c, rules 3 and 4).  (a) With the
 * shared budget held by clients that never read, and no stall rule at
 * all, another client's small READ, WRITE and FLUSH are answered at once
 * from its slot (they waited for ever).  (b) A client that sends a WRITE
 * header without its payload holds the shared budget: a 1 MiB READ of
 * another waits, and it is closed after stall_ms (nothing moved).
 * (c) A client that reads its replies at 640 KiB/s, a piece of 256 KiB
 * at a time (so a byte moves more often than stall_ms), is closed too:
 * judged by its rate, not by the last byte.
 */
static void test_fair_memory(struct nbds_opts base, struct tv_pool *pool)
{
	static uint8_t want[1 << 20], got[1 << 20];
	struct nbds *s;
	uint16_t tf;
	int hogs[2], other;

	CHECK(tv_vol_read(pool, 1, want, sizeof(want), 0) == 0);

	/* (a) slots */
	base.max_memory = 4u << 20;
	base.stall_ms = 0;
	CHECK(nbds_new(&base, &s) == 0);
	hogs[0] = hog_reads(s, 16, 1 << 20);
	hogs[1] = hog_reads(s, 16, 1 << 20);
	usleep(300000); /* they hold the 4 MiB */
	small_requests_served(s, pool, 2000);
	close(hogs[0]);
	close(hogs[1]);
	nbds_shutdown(s);
	nbds_free(s);

	/* (b) a payload that does not come: 3 MiB of the 4 (its read-ahead
	 * buffer takes 256 KiB, the other's too) */
	base.stall_ms = 1000;
	CHECK(nbds_new(&base, &s) == 0);
	{
		static const uint8_t some[1000];
		uint8_t h[28];

		hogs[0] = accepted(s, NULL);
		CHECK(hogs[0] >= 0);
		go(hogs[0], "vol", &tf);
		put_be32(h, NBDS_REQUEST_MAGIC);
		put_be16(h + 4, 0);
		put_be16(h + 6, NBDS_CMD_WRITE);
		put_be64(h + 8, 1);
		put_be64(h + 16, 0);
		put_be32(h + 24, 3u << 20);
		wr(hogs[0], h, 28);
		wr(hogs[0], some, sizeof(some));
	}
	usleep(200000);
	other = accepted(s, NULL);
	go(other, "vol", &tf);
	answer_within(other, 5000);
	request(other, 0, NBDS_CMD_READ, 9, 0, 1 << 20);
	CHECK(simple(other, 9, got, sizeof(got)) == 0);
	CHECK(!memcmp(want, got, sizeof(got)));
	CHECK(closed_within(hogs[0], 3000));
	close(hogs[0]);
	close(other);
	nbds_shutdown(s);
	nbds_free(s);

	/* (c) a trickle reader */
	CHECK(nbds_new(&base, &s) == 0);
	{
		struct trickle t = {.fd = hog_reads(s, 16, 1 << 20)};
		pthread_t th;
		uint64_t t0;

		CHECK(pthread_create(&th, NULL, trickle_main, &t) == 0);
		usleep(300000);
		other = accepted(s, NULL);
		go(other, "vol", &tf);
		t0 = now_ms();
		answer_within(other, 5000);
		request(other, 0, NBDS_CMD_READ, 9, 0, 1 << 20);
		CHECK(simple(other, 9, got, sizeof(got)) == 0);
		CHECK(!memcmp(want, got, sizeof(got)));
		printf("trickle reader: the other client answered after "
		       "%llu ms\n",
		       (unsigned long long) (now_ms() - t0));
		pthread_join(th, NULL);
		CHECK(t.closed); /* by the server: EOF */
		close(t.fd);
	}
	close(other);
	nbds_shutdown(s);
	nbds_free(s);
}

/* Threads of this process, from /proc. */
static unsigned int threads_now(void)
{
	char line[256];
	unsigned int n = 0;
	FILE *f = fopen("/proc/self/status", "r");

	CHECK(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %u", &n) == 1)
			break;
	fclose(f);
	return n;
}

static char warned[1024];

static void capture_warning(enum log_level lvl, const char *msg, void *ctx)
{
	(void) ctx;
	if (lvl == LOG_LVL_WARN && strstr(msg, "NBD connections"))
		snprintf(warned, sizeof(warned), "%s", msg);
}

/*
 * Review 2, NBD finding 3 (nbds-conn.c, rule 7): the helpers of all
 * connections come from one budget.  With max_threads 8 and no
 * connection limit, four connections with deep queues that nobody reads
 * get 4 helpers in all (they took 7 each); a connection limit above
 * half of max_threads is lowered, with a warning.
 */
static void test_thread_budget(struct nbds_opts base)
{
	struct nbds *s;
	unsigned int t0, t1;
	int hogs[4];

	base.max_threads = 8;
	CHECK(nbds_new(&base, &s) == 0);
	t0 = threads_now();
	for (int i = 0; i < 4; i++)
		hogs[i] = hog_reads(s, 16, 1 << 20);
	usleep(500000);
	t1 = threads_now();
	printf("thread budget 8: 4 connections with deep queues, %u threads "
	       "more\n",
	       t1 - t0);
	CHECK(t1 - t0 >= 4 && t1 - t0 <= 4 + 4);
	for (int i = 0; i < 4; i++)
		close(hogs[i]);
	nbds_shutdown(s);
	nbds_free(s);

	base.max_threads = 20;
	base.max_connections = 100;
	log_set_sink(capture_warning, NULL);
	CHECK(nbds_new(&base, &s) == 0);
	log_set_sink(NULL, NULL);
	CHECK(strstr(warned, "at most 10 NBD connections, not 100"));
	nbds_free(s);
}

/* ---- escaping what clients send (util/escape.h) ---- */

static char logged[8192];

static void capture(enum log_level lvl, const char *msg, void *ctx)
{
	(void) lvl;
	(void) ctx;
	snprintf(logged, sizeof(logged), "%s", msg);
}

/* The UTF-8 of code point cp into b (4 bytes at most): its length. */
static size_t utf8_put(uint8_t *b, unsigned int cp)
{
	if (cp < 0x80) {
		b[0] = (uint8_t) cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (uint8_t) (0xc0 | cp >> 6);
		b[1] = (uint8_t) (0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (uint8_t) (0xe0 | cp >> 12);
		b[1] = (uint8_t) (0x80 | ((cp >> 6) & 0x3f));
		b[2] = (uint8_t) (0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (uint8_t) (0xf0 | cp >> 18);
	b[1] = (uint8_t) (0x80 | ((cp >> 12) & 0x3f));
	b[2] = (uint8_t) (0x80 | ((cp >> 6) & 0x3f));
	b[3] = (uint8_t) (0x80 | (cp & 0x3f));
	return 4;
}

/* Whether esc_text shows code point cp as an escape rather than as it
 * is (it must be one or the other). */
static bool escaped(unsigned int cp)
{
	uint8_t b[4];
	char out[32], want[16];
	size_t n = utf8_put(b, cp);

	esc_text(out, sizeof(out), b, n);
	snprintf(want, sizeof(want), cp > 0xffff ? "\\U%08x" : "\\u%04x", cp);
	if (!strcmp(out, want))
		return true;
	if (strlen(out) != n || memcmp(out, b, n)) {
		fprintf(stderr, "esc_text U+%04X: '%s'\n", cp, out);
		CHECK(0);
	}
	return false;
}

/*
 * The characters that hide or move text (issue 14 review 2, NBD finding 8):
 * the ranges of Unicode 15.1's general categories Cf, Zl, Zp and Co, the
 * C1 controls, and DerivedCoreProperties' Default_Ignorable_Code_Point,
 * written out from the standard's files here, apart from escape.c's
 * table.  Every listed code point is escaped, both ends of each range
 * checked and the neighbours outside shown as they are; then a sweep of
 * every code point counts exactly these as escaped.
 */
static void test_escape_hidden(void)
{
	static const struct {
		unsigned int first, last;
		const char *what;
	} ranges[] = {
	    {0x0080, 0x009f, "C1 controls (Cc)"},
	    {0x00ad, 0x00ad, "soft hyphen (Cf)"},
	    {0x034f, 0x034f, "combining grapheme joiner (DI)"},
	    {0x0600, 0x0605, "Arabic number signs (Cf)"},
	    {0x061c, 0x061c, "Arabic letter mark (Cf)"},
	    {0x06dd, 0x06dd, "Arabic end of ayah (Cf)"},
	    {0x070f, 0x070f, "Syriac abbreviation mark (Cf)"},
	    {0x0890, 0x0891, "Arabic pound/piastre mark above (Cf)"},
	    {0x08e2, 0x08e2, "Arabic disputed end of ayah (Cf)"},
	    {0x115f, 0x1160, "Hangul choseong/jungseong fillers (DI)"},
	    {0x17b4, 0x17b5, "Khmer inherent vowels (DI)"},
	    {0x180b, 0x180d, "Mongolian variation selectors (DI)"},
	    {0x180e, 0x180e, "Mongolian vowel separator (Cf)"},
	    {0x180f, 0x180f, "Mongolian variation selector four (DI)"},
	    {0x200b, 0x200f, "zero-width, LRM, RLM (Cf)"},
	    {0x2028, 0x2028, "line separator (Zl)"},
	    {0x2029, 0x2029, "paragraph separator (Zp)"},
	    {0x202a, 0x202e, "bidi embeddings and overrides (Cf)"},
	    {0x2060, 0x2064, "word joiner, invisible operators (Cf)"},
	    {0x2065, 0x2065, "reserved (DI)"},
	    {0x2066, 0x206f, "bidi isolates, deprecated formats (Cf)"},
	    {0x3164, 0x3164, "Hangul filler (DI)"},
	    {0xe000, 0xf8ff, "private use (Co)"},
	    {0xfe00, 0xfe0f, "variation selectors (DI)"},
	    {0xfeff, 0xfeff, "zero-width no-break space (Cf)"},
	    {0xffa0, 0xffa0, "halfwidth Hangul filler (DI)"},
	    {0xfff0, 0xfff8, "reserved (DI)"},
	    {0xfff9, 0xfffb, "interlinear annotation (Cf)"},
	    {0x110bd, 0x110bd, "Kaithi number sign (Cf)"},
	    {0x110cd, 0x110cd, "Kaithi number sign above (Cf)"},
	    {0x13430, 0x1343f, "Egyptian hieroglyph format (Cf)"},
	    {0x1bca0, 0x1bca3, "shorthand format controls (Cf)"},
	    {0x1d173, 0x1d17a, "musical symbol beams (Cf)"},
	    {0xe0000, 0xe0000, "reserved (DI)"},
	    {0xe0001, 0xe0001, "language tag (Cf)"},
	    {0xe0002, 0xe001f, "reserved (DI)"},
	    {0xe0020, 0xe007f, "tag characters (Cf)"},
	    {0xe0080, 0xe00ff, "reserved (DI)"},
	    {0xe0100, 0xe01ef, "variation selectors 17-256 (DI)"},
	    {0xe01f0, 0xe0fff, "reserved (DI)"},
	    {0xf0000, 0xffffd, "supplementary private use A (Co)"},
	    {0x100000, 0x10fffd, "supplementary private use B (Co)"},
	};
	uint64_t want = 0, got = 0;

	for (size_t i = 0; i < ARRAY_SIZE(ranges); i++) {
		unsigned int a = ranges[i].first, b = ranges[i].last;
		bool in_before = i && ranges[i - 1].last + 1 == a;
		bool in_after =
		    i + 1 < ARRAY_SIZE(ranges) && ranges[i + 1].first == b + 1;

		if (!escaped(a) || !escaped(b) || !escaped(a + (b - a) / 2)) {
			fprintf(stderr, "U+%04X..U+%04X (%s) not escaped\n", a,
				b, ranges[i].what);
			CHECK(0);
		}
		/* the neighbours (surrogates have no UTF-8) */
		if (!in_before && a - 1 >= 0x80 &&
		    !(a - 1 >= 0xd800 && a - 1 <= 0xdfff))
			CHECK(!escaped(a - 1));
		if (!in_after && b < 0x10ffff)
			CHECK(!escaped(b + 1));
		want += b - a + 1;
	}
	for (unsigned int cp = 0x80; cp <= 0x10ffff; cp++)
		if ((cp < 0xd800 || cp > 0xdfff) && escaped(cp))
			got++;
	if (got != want) {
		fprintf(stderr, "%llu code points escaped, %llu listed\n",
			(unsigned long long) got, (unsigned long long) want);
		CHECK(0);
	}
}

static void test_escape(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} cases[] = {
	    {"plain name", 10, "plain name"},
	    {"a\nb", 3, "a\\x0ab"},
	    {"back\\slash", 10, "back\\\\slash"},
	    {"\xff\xfe", 2, "\\xff\\xfe"},
	    {"\xc0\xaf", 2, "\\xc0\\xaf"},	    /* overlong '/' */
	    {"\xed\xa0\x80", 3, "\\xed\\xa0\\x80"}, /* surrogate */
	    {"\xf4\x90\x80\x80", 4, "\\xf4\\x90\\x80\\x80"},
	    {"caf\xc3\xa9", 5, "caf\xc3\xa9"}, /* UTF-8 stays */
	    {"\xf0\x9f\x92\xbe", 4, "\xf0\x9f\x92\xbe"},
	    {"e\xe2\x80\xaegnp", 7, "e\\u202egnp"}, /* bidi override */
	    {"\xc2\x85x", 3, "\\u0085x"},	    /* NEL */
	    {"\xe2\x80\xa8", 3, "\\u2028"},	    /* line separator */
	    {"nul\0in", 6, "nul\\x00in"},
	    {"\x7f\x1b[31m", 6, "\\x7f\\x1b[31m"},
	    {"\xe2\x82", 2, "\\xe2\\x82"}, /* cut short */
	};
	char out[64], small[12];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		esc_text(out, sizeof(out), cases[i].in, cases[i].len);
		if (strcmp(out, cases[i].out)) {
			fprintf(stderr, "esc_text case %zu: '%s', want '%s'\n",
				i, out, cases[i].out);
			CHECK(0);
		}
	}
	/* cut at a character boundary, with "..." */
	esc_text(small, sizeof(small), "abcdefghijklmnop", 16);
	CHECK(!strcmp(small, "abcdefgh..."));
	esc_text(small, sizeof(small), "abcdefg\xc3\xa9xyz", 12);
	CHECK(!strcmp(small, "abcdefg...")); /* not half of the e acute */
	esc_text(small, sizeof(small), "abcdef\xc3\xa9wxyz", 12);
	CHECK(!strcmp(small, "abcdef\xc3\xa9..."));
	esc_text(small, sizeof(small), "abcdefg\n", 8);
	CHECK(!strcmp(small, "abcdefg\\x0a")); /* fits exactly */
	esc_text(small, sizeof(small), "abcdefgh\n", 9);
	CHECK(!strcmp(small, "abcdefgh..."));
	esc_text(small, sizeof(small), "abcdefghijk", 11);
	CHECK(!strcmp(small, "abcdefghijk"));
	esc_text(small, sizeof(small), "", 0);
	CHECK(!strcmp(small, ""));
	/* the logger's net: one line whatever a caller formats into it */
	log_set_sink(capture, NULL);
	log_warn("tls: unknown PSK identity '%s'", "mallory\nforged\r\x7f");
	log_set_sink(NULL, NULL);
	CHECK(!strcmp(logged, "tls: unknown PSK identity "
			      "'mallory\\x0aforged\\x0d\\x7f'"));
}

int main(void)
{
	char path[] = "/tmp/test-nbds-XXXXXX";
	struct tv_pool_create_opts co = {
	    .size = 256u << 20, .block_size = 0, .blob_size = -1};
	struct nbds_opts no = {0};
	struct tv_pool *pool;
	uint64_t id, ro;
	int fd = mkstemp(path);

	volume_id_clock = NULL; /* plain counter: ids 1, 2, ... */
	CHECK(fd >= 0);
	close(fd);
	co.force = true;
	CHECK(tv_pool_create(path, &co) == 0);
	CHECK(tv_pool_open(path, NULL, &pool) == 0);
	CHECK(tv_vol_create(pool, "vol", 64u << 20, NULL, 0, &id) == 0);
	CHECK(id == 1);
	CHECK(tv_vol_snapshot(pool, id, "ro", TV_VOL_READ_ONLY, NULL, 0, &ro) ==
	      0);
	no.pool = pool;
	CHECK(nbds_new(&no, &srv) == 0);

	test_escape();
	test_escape_hidden();
	test_admission(no);
	test_eviction_order(no);
	test_deadline(no);
	test_memory(no, pool);
	test_fair_memory(no, pool);
	test_thread_budget(no);
	test_options();
	test_paced();
	test_requests();
	test_pipelined();
	test_read_only();

	nbds_shutdown(srv);
	nbds_free(srv);
	CHECK(tv_pool_close(pool) == 0);
	unlink(path);
	printf("test-nbds: ok\n");
	return 0;
}
