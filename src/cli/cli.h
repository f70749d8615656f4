/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cli.h - what the thinvol command's files share: exit statuses, error
 * reporting, opening pools, option parsing and volume output.
 *
 * The command talks to the engine only through include/thinvol.h.
 * Every error is reported once, as one line on stderr that names the
 * object and the reason, and turned into an exit status by cli_exit().
 */
#ifndef TV_CLI_CLI_H
#define TV_CLI_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "thinvol.h"

/* Exit statuses: stable, scripts rely on them (docs/cli.md). */
#define EXIT_OK 0
#define EXIT_OTHER 1
#define EXIT_USAGE 2	/* bad arguments or input, -EINVAL */
#define EXIT_NOTFOUND 3 /* -ENOENT */
#define EXIT_EXISTS 4	/* -EEXIST */
#define EXIT_NOSPACE 5	/* -ENOSPC */
#define EXIT_CORRUPT 6	/* -EUCLEAN, or check found damage */
#define EXIT_ROFS 7	/* -EROFS */
#define EXIT_BUSY 8	/* -EBUSY */

/*
 * Where the command's own messages go: the process's stderr.  The engine's
 * internal log (which also writes to file descriptor 2) is discarded
 * unless THINVOL_DEBUG is set, so that every error is the one line built
 * from tv_last_error(); see main().
 */
extern FILE *cli_err;

struct cli_cmd {
	const char *name;     /* "create", "pool create" */
	const char *synopsis; /* one line for thinvol --help */
	const char *help;     /* the whole of thinvol NAME --help */
	int (*run)(const struct cli_cmd *cmd, int argc, char **argv);
};

extern const struct cli_cmd cli_pool_cmds[];
extern const struct cli_cmd cli_vol_cmds[];
extern const struct cli_cmd cli_io_cmds[]; /* import, export */
extern const struct cli_cmd cli_batch_cmd;

/* The exit status for a negative errno (0 for 0). */
int cli_exit(int err);

/* "thinvol CMD: MESSAGE (see 'thinvol CMD --help')"; returns EXIT_USAGE. */
int cli_usage(const struct cli_cmd *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* "thinvol: CONTEXT: REASON" where REASON is tv_last_error() (or
 * strerror(-err) when the engine left none); returns cli_exit(err). */
int cli_fail(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* "thinvol: MESSAGE"; returns status. */
int cli_error(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * getopt_long with our messages: returns the option's value, -1 at the
 * end of the options, or '?' after printing a usage error (unknown
 * option, missing value).  shortopts must start with ':'.  The
 * positional arguments are then argv[optind .. argc).
 */
int cli_getopt(const struct cli_cmd *cmd, int argc, char **argv,
	       const char *shortopts, const struct option *longopts);

enum cli_open_mode {
	CLI_RO,	  /* read-only: listings, check */
	CLI_RW,	  /* metadata changes */
	CLI_INFO, /* read-write when possible (to report the pool's real
		   * state), with no background commits; else read-only */
};

/* Open the pool at path and read its info; reports the error itself and
 * returns the exit status (0 on success). */
int cli_open(const char *path, enum cli_open_mode mode, struct tv_pool **pool,
	     struct tv_pool_info *info);

/* Close the pool; reports a failed final commit.  Returns status, or the
 * close's exit status when status is 0 and the close failed. */
int cli_close(struct tv_pool *pool, const char *path, int status);

/* A SIZE value of option or argument `what`: reports and returns
 * EXIT_USAGE when it is not one. */
int cli_size(const struct cli_cmd *cmd, const char *what, const char *s,
	     uint64_t *out);

/*
 * A blob from --...-hex HEX or --...-file FILE ("-" is stdin) of exactly
 * blob_size bytes, into buf (TV_BLOB_MAX bytes).  ctx names the object
 * for messages, opt the option.  Returns 0 or an exit status (reported).
 */
int cli_blob_hex(const char *ctx, const char *opt, const char *hex,
		 uint32_t blob_size, uint8_t *buf);
int cli_blob_file(const char *ctx, const char *opt, const char *path,
		  uint32_t blob_size, uint8_t *buf);

/* Resolve a VOL argument (name or #ID); reports and returns the exit
 * status, 0 on success. */
int cli_resolve(struct tv_pool *pool, const char *ctx, const char *spec,
		uint64_t *id);

/* One volume as a JSON object (no newline), with its blob in hex. */
int cli_put_vol_json(FILE *f, struct tv_pool *pool, uint32_t blob_size,
		     const struct tv_vol_info *v, const uint64_t *exclusive);
/* The header and one row of the volume table. */
void cli_put_vol_header(FILE *f);
void cli_put_vol_row(FILE *f, const struct tv_vol_info *v);

/* Read all of a file (or stdin for "-") of at most max bytes into a
 * malloc'd buffer (NUL-terminated); reports errors, returns 0 or an exit
 * status. */
int cli_read_all(const char *path, size_t max, char **buf, size_t *len);

#endif
