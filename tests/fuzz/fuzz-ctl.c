/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz-ctl - the control protocol: request lines into ctl_handle()
 * (src/server/ctl.c), the real handler the daemon runs for each line of
 * its control socket, on a real pool.
 *
 * An input is one or more request lines separated by '\n' (at most
 * MAX_LINES are run), so that one input can create a volume and then
 * resize, export or delete it.  The pool is the base pool of fuzz.h in a
 * temporary file, restored before every input: a run depends on its
 * input alone.  A request naming "vol.import" gets a pipe holding
 * 12 KiB of data as its descriptor; others get none (-1): an export
 * could be asked to write a huge thin volume, which is slow, not wrong.
 *
 * The hooks refuse to claim volume #2 unless forced (the EBUSY path).
 *
 * Oracle: besides the sanitizers, every reply must be one line of valid
 * JSON (an object with "v" and exactly one of "result" and "error"),
 * ending in its only newline.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "server/ctl.h"
#include "util/json.h"

#define MAX_LINES 16

static int claim(void *ctx, uint64_t id, bool force, char *msg, size_t msglen)
{
	(void) ctx;
	if (id == 2 && !force) {
		snprintf(msg, msglen, "volume #2 is exported to 1 NBD client");
		return -EBUSY;
	}
	return 0;
}

static void release(void *ctx, uint64_t id)
{
	(void) ctx;
	(void) id;
}

static const struct ctl_hooks hooks = {NULL, claim, release};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fuzz_quiet();
	return 0;
}

static bool contains(const char *s, size_t len, const char *w)
{
	size_t wl = strlen(w);

	for (size_t i = 0; i + wl <= len; i++)
		if (!memcmp(s + i, w, wl))
			return true;
	return false;
}

/* A pipe holding 12 KiB (fits its buffer), write end closed. */
static int data_fd(void)
{
	static uint8_t b[12288];
	int p[2];

	memset(b, 0xc3, sizeof(b));
	if (pipe(p) < 0)
		fuzz_die("pipe: %m");
	if (write(p[1], b, sizeof(b)) != (ssize_t) sizeof(b))
		fuzz_die("pipe write: %m");
	close(p[1]);
	return p[0];
}

static void check_reply(const char *reply, size_t len)
{
	struct json_value *doc;
	struct json_error err;
	const struct json_value *res, *e;

	if (!len || reply[len - 1] != '\n' ||
	    memchr(reply, '\n', len - 1) != NULL)
		fuzz_die("reply is not one line: %.*s", (int) len, reply);
	if (json_parse(reply, len - 1, NULL, &doc, &err) < 0)
		fuzz_die("reply is not JSON (byte %zu: %s): %.*s", err.offset,
			 err.msg, (int) len, reply);
	res = json_get(doc, "result");
	e = json_get(doc, "error");
	if (doc->type != JSON_OBJECT || !json_get(doc, "v") ||
	    (res == NULL) == (e == NULL))
		fuzz_die("malformed reply: %.*s", (int) len, reply);
	json_free(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *) data, *end = s + size;
	struct tv_pool *p = fuzz_pool_file_open();

	for (int i = 0; i < MAX_LINES && s <= end; i++) {
		const char *nl = memchr(s, '\n', (size_t) (end - s));
		size_t len = nl ? (size_t) (nl - s) : (size_t) (end - s);
		int fd = contains(s, len, "vol.import") ? data_fd() : -1;
		size_t rlen;
		char *reply;

		if (ctl_handle(p, &hooks, NULL, s, len, fd, &reply, &rlen) ==
		    0) {
			check_reply(reply, rlen);
			if (fuzz_verbose)
				fprintf(stderr, "%s", reply);
			free(reply);
		}
		if (fd >= 0)
			close(fd);
		if (!nl)
			break;
		s = nl + 1;
	}
	tv_pool_close(p);
	return 0;
}
