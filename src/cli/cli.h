/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cli.h - what the thinvol command's files share: exit statuses, error
 * reporting, option parsing and values (cli-util.c), opening pools
 * (client-open.c), the pool calls (client.c), and a command's preamble
 * and volume output (cmd-common.c).  Calls between these files go one
 * way (cli-util.c says the order).
 *
 * The command talks to the engine only through include/thinvol.h, and
 * only through the cli_pool_* / cli_vol_* calls below (client.c): they
 * run on a pool this process opened, or, when a daemon holds the pool,
 * as requests on its control socket (docs/control.md), with the same
 * results and the same error messages.  Every error is reported once, as
 * one line on stderr that names the object and the reason, and turned
 * into an exit status by cli_exit().
 */
#ifndef TV_CLI_CLI_H
#define TV_CLI_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "thinvol.h"

/* The name in every message. */
#define CLI_PROG "thinvol"

/* Exit statuses: stable, scripts rely on them (docs/cli.md). */
#define EXIT_OK	      0
#define EXIT_OTHER    1
#define EXIT_USAGE    2 /* bad arguments or input, -EINVAL */
#define EXIT_NOTFOUND 3 /* -ENOENT */
#define EXIT_EXISTS   4 /* -EEXIST */
#define EXIT_NOSPACE  5 /* -ENOSPC */
#define EXIT_CORRUPT  6 /* -EUCLEAN, or check found damage */
#define EXIT_ROFS     7 /* -EROFS */
#define EXIT_BUSY     8 /* -EBUSY */

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
extern const struct cli_cmd cli_serve_cmd;

/* The exit status for a negative errno (0 for 0). */
int cli_exit(int err);

/* "thinvol CMD: MESSAGE (see 'thinvol CMD --help')"; returns EXIT_USAGE. */
int cli_usage(const struct cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "thinvol: CONTEXT: REASON" where REASON is cli_last_error() (or
 * strerror(-err) when there is none); returns cli_exit(err).  In
 * client.c, beside the last error it prints. */
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

/*
 * The options of a command whose only option is one flag (its short
 * option alone in shortopts, after the ':'): *flag is set when it is
 * given.  flag NULL: the command takes no option (but --help).  Returns
 * 0, or EXIT_USAGE after reporting.
 */
int cli_flag_opt(const struct cli_cmd *cmd, int argc, char **argv,
		 const char *shortopts, const struct option *longopts,
		 bool *flag);

enum cli_open_mode {
	CLI_RO,	  /* read-only: listings, check */
	CLI_RW,	  /* metadata changes */
	CLI_INFO, /* read-write when possible (to report the pool's real
		   * state), with no background commits; else read-only */
};

/* A pool this process opened, or one that a daemon holds (remote). */
struct cli_pool;

/*
 * Open the pool at path and read its info: through the daemon's control
 * socket when one answers there (mode does not matter then), else here.
 * Reports the error itself and returns the exit status (0 on success).
 */
int cli_open(const char *path, enum cli_open_mode mode, struct cli_pool **pool,
	     struct tv_pool_info *info);

/* Close the pool (or the connection); reports a failed final commit.
 * Returns status, or the close's exit status when status is 0 and the
 * close failed. */
int cli_close(struct cli_pool *pool, const char *path, int status);

/* The message of the last failed cli_* call: the daemon's (the engine's
 * message there), or tv_last_error() on a local pool. */
const char *cli_last_error(void);

/*
 * The engine calls of include/thinvol.h, on a local or remote pool: same
 * arguments, results and errors.  Through a daemon, create, snapshot,
 * delete, rename, resize and set-blob are a one-op batch (which is what
 * the engine does too).  force: disconnect the NBD clients of a volume
 * that a delete or a shrinking resize takes away (else such a change is
 * refused with -EBUSY); no effect on a local pool.
 */
int cli_pool_info(struct cli_pool *p, struct tv_pool_info *out);
/* True if p is a local pool in a file on ext4 without a journal, where
 * the filesystem itself is not crash-safe (serve.h). */
bool cli_pool_fs_no_journal(const struct cli_pool *p);
/* The pool file is copied on every overwrite (IO_DEV_FS_COW). */
bool cli_pool_fs_cow(const struct cli_pool *p);
int cli_pool_resize(struct cli_pool *p, uint64_t size);
/* tv_pool_reopen (through a daemon: pool.reopen, which disconnects every
 * NBD client first); *transaction: the one it reopened at. */
int cli_pool_reopen(struct cli_pool *p, uint64_t *transaction);
/* The checker's messages go to out. */
int cli_pool_check(struct cli_pool *p, FILE *out, struct tv_check_report *rep);
int cli_vol_list(struct cli_pool *p, uint64_t *cursor, struct tv_vol_info *out,
		 size_t max);
int cli_vol_info(struct cli_pool *p, uint64_t id, struct tv_vol_info *out);
int cli_vol_usage(struct cli_pool *p, uint64_t id, uint64_t *mapped,
		  uint64_t *exclusive);
int cli_vol_resolve(struct cli_pool *p, const char *spec, uint64_t *id);
int cli_vol_get_blob(struct cli_pool *p, uint64_t id, void *blob, size_t len);
int cli_vol_find_blob(struct cli_pool *p, const void *prefix, size_t len,
		      uint64_t *ids, size_t max);
int cli_batch(struct cli_pool *p, struct tv_op *ops, size_t n, size_t *failed,
	      bool force);
int cli_vol_create(struct cli_pool *p, const char *name, uint64_t size,
		   const void *blob, size_t blob_len, uint64_t *id);
int cli_vol_rename(struct cli_pool *p, uint64_t id, const char *name);
int cli_vol_resize(struct cli_pool *p, uint64_t id, uint64_t size, bool force);
int cli_vol_set_blob(struct cli_pool *p, uint64_t id, const void *blob,
		     size_t len);

/*
 * Import from / export to the file open on fd (src/server/ctl-copy.h):
 * the copy runs here or in the daemon, which gets fd passed.  On error
 * c->msg is the whole message (cli_last_error() too).
 */
struct ctl_copy;
int cli_import(struct cli_pool *p, uint64_t id, int fd, struct ctl_copy *c);
int cli_export(struct cli_pool *p, uint64_t id, int fd, bool stream,
	       struct ctl_copy *c);

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
int cli_resolve(struct cli_pool *pool, const char *ctx, const char *spec,
		uint64_t *id);

/*
 * The preamble of a command on one volume: cli_open the pool at path,
 * then cli_resolve vol, with ctx ("show 'x'") naming the command in
 * messages.  Returns 0, or the exit status (reported) with nothing open.
 */
int cli_open_vol(const char *path, enum cli_open_mode mode, const char *ctx,
		 const char *vol, struct cli_pool **pool,
		 struct tv_pool_info *info, uint64_t *id);

/* The end of a command: r < 0 (the last call's -errno) is reported as
 * "thinvol: CTX: REASON" (cli_fail), then cli_close.  r >= 0 is an exit
 * status already.  Returns the exit status. */
int cli_finish(struct cli_pool *pool, const char *path, const char *ctx, int r);

/* One volume as a JSON object (no newline), with its blob in hex. */
int cli_put_vol_json(FILE *f, struct cli_pool *pool, uint32_t blob_size,
		     const struct tv_vol_info *v, const uint64_t *exclusive);
/* The header and one row of the volume table. */
void cli_put_vol_header(FILE *f);
void cli_put_vol_row(FILE *f, const struct tv_vol_info *v);

/* Read all of a file (or stdin for "-") of at most max bytes into a
 * malloc'd buffer (NUL-terminated); reports errors, returns 0 or an exit
 * status. */
int cli_read_all(const char *path, size_t max, char **buf, size_t *len);

#endif
