/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * driver.c - main() for a fuzz target built without libFuzzer.
 *
 *   fuzz-x FILE|DIR...   run the target once on each file (a directory:
 *                        each regular file in it, in name order) and
 *                        print how many: the suite's smoke run
 *   fuzz-x               run it once on stdin; built with AFL++'s
 *                        afl-clang-fast, the AFL++ persistent loop
 *                        instead (inputs in shared memory, up to 10000
 *                        per process): afl-fuzz -i corpus -o out -- fuzz-x
 *                        (`@@` also works, one process per input)
 *
 * A crash is the target's own (a sanitizer report or abort); the driver
 * exits 0 when every input ran, 1 when an input could not be read.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

#define DRIVER_MAX_INPUT (16u << 20)

#ifdef __AFL_FUZZ_TESTCASE_LEN
__AFL_FUZZ_INIT();

/* AFL++ persistent mode: every target restores its state before each
 * input (fuzz.h), so one process may run many. */
static int run_afl(void)
{
	const uint8_t *shm;

	__AFL_INIT();
	shm = __AFL_FUZZ_TESTCASE_BUF;
	while (__AFL_LOOP(10000)) {
		size_t len = (size_t) __AFL_FUZZ_TESTCASE_LEN;
		/* an exact-size copy, so ASan sees reads past the end */
		uint8_t *buf = malloc(len ? len : 1);

		if (!buf)
			return 1;
		memcpy(buf, shm, len);
		LLVMFuzzerTestOneInput(buf, len);
		free(buf);
	}
	return 0;
}
#endif

static int run_stream(FILE *f, const char *name)
{
	size_t len = 0, cap = 4096;
	uint8_t *buf = malloc(cap), *nb;
	size_t n;

	if (!buf)
		return -ENOMEM;
	while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			if (cap >= DRIVER_MAX_INPUT) {
				fprintf(stderr, "%s: larger than %u bytes\n",
					name, DRIVER_MAX_INPUT);
				free(buf);
				return -EFBIG;
			}
			cap *= 2;
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
		}
	}
	if (ferror(f)) {
		fprintf(stderr, "%s: read error\n", name);
		free(buf);
		return -EIO;
	}
	/* an exact-size copy, so ASan sees reads past the input's end */
	nb = malloc(len ? len : 1);
	if (!nb) {
		free(buf);
		return -ENOMEM;
	}
	memcpy(nb, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(nb, len);
	free(nb);
	return 0;
}

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	int r;

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -errno;
	}
	if (getenv("FUZZ_SHOW"))
		fprintf(stderr, "running %s\n", path);
	r = run_stream(f, path);
	fclose(f);
	return r;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static int run_dir(const char *dir, size_t *count)
{
	struct dirent *e;
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0;
	DIR *d = opendir(dir);
	int r = 0;

	if (!d) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -errno;
	}
	while ((e = readdir(d))) {
		char **nn;

		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				r = -ENOMEM;
				goto out;
			}
			names = nn;
		}
		if (!(names[n] = strdup(e->d_name))) {
			r = -ENOMEM;
			goto out;
		}
		n++;
	}
	if (n)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n && !r; i++) {
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		r = run_file(path);
		if (!r)
			(*count)++;
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

int main(int argc, char **argv)
{
	size_t count = 0;
	int r = 0;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	if (argc < 2) {
#ifdef __AFL_FUZZ_TESTCASE_LEN
		return run_afl();
#else
		return run_stream(stdin, "<stdin>") ? 1 : 0;
#endif
	}
	for (int i = 1; i < argc && !r; i++) {
		struct stat st;

		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			r = run_dir(argv[i], &count);
		} else {
			r = run_file(argv[i]);
			if (!r)
				count++;
		}
	}
	if (r)
		return 1;
	fprintf(stderr, "%s: %zu inputs ran\n", argv[0], count);
	/* An empty corpus is a broken checkout, not a pass. */
	return count ? 0 : 1;
}
