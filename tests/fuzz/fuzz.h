/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fuzz.h - what the fuzz targets of tests/fuzz share.
 *
 * Each target defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize).  Built with -Dfuzz=true it links libFuzzer
 * (clang -fsanitize=fuzzer); otherwise it links driver.c, whose main()
 * runs the target once per file (the suite's smoke run over the corpus,
 * and AFL++: afl-fuzz ... -- fuzz-x @@).
 *
 * The base pool: a small, real pool built in memory with the engine's own
 * calls (fuzz_base_build): 4 KiB blocks, 16-byte blobs, a few volumes with
 * data, a snapshot of one, blobs, a renamed and resized volume and a
 * deleted one.  Its image is what fuzz-pool damages and what fuzz-ctl and
 * fuzz-nbd serve (restored before every input, so that a run depends on
 * its input alone and every crash reproduces from its file).
 */
#ifndef TV_TESTS_FUZZ_FUZZ_H
#define TV_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "thinvol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Silence the engine's log, unless FUZZ_VERBOSE=1: then the engine logs
 * and the targets say what they did (for writing seeds). */
void fuzz_quiet(void);
extern int fuzz_verbose;

/* Abort with a message: a harness invariant broke (not an input error). */
void fuzz_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#define FUZZ_BLOCK     4096u
#define FUZZ_BLOB      16u
#define FUZZ_POOL_SIZE (4u << 20)

/*
 * The base pool's image: FUZZ_POOL_SIZE bytes, malloc'd, owned by the
 * caller.  Aborts on failure (the engine is broken, not the input).  The
 * image differs between calls only in uuids and creation times.
 */
uint8_t *fuzz_base_build(void);

/*
 * A pool file holding the base image, in a private temporary directory
 * removed at exit: fuzz_pool_file_open restores the image (only its
 * nonzero 4 KiB pages are written: cheap) and opens the pool read-write
 * with a small cache.  Aborts on failure.
 */
struct tv_pool *fuzz_pool_file_open(void);

/*
 * The same pool file (the one file of this process) holding size bytes
 * of img instead, opened as a file device (io_file_open) for a target to
 * open a pool on: the file backend's paths (holes, preallocation,
 * fdatasync) under hostile images.  Returns 0 or a negative errno.
 */
struct io_dev;
int fuzz_file_dev(const uint8_t *img, size_t size, struct io_dev **out);

#endif
