/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cli-util.c - what every file of the command uses and that needs no
 * pool: the one-line error messages and exit statuses, option parsing,
 * SIZE and blob values, reading a whole file.
 *
 * Calls go one way in src/cli: thinvol.c (main) -> cmd-*.c ->
 * cmd-common.c -> client-open.c -> client.c -> cli-util.c -> parse.c
 * (a file may skip a step down, never go up).  So nothing here calls a
 * cli_pool or cli_vol function (cli_fail, which prints the last pool
 * call's message, is in client.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/parse.h"

static const char prog[] = CLI_PROG;

FILE *cli_err;

/* ---- errors ---- */

int cli_exit(int err)
{
	switch (err) {
	case 0:
		return EXIT_OK;
	case -EINVAL:
	case -ERANGE:
		return EXIT_USAGE;
	case -ENOENT:
		return EXIT_NOTFOUND;
	case -EEXIST:
		return EXIT_EXISTS;
	case -ENOSPC:
		return EXIT_NOSPACE;
	case -EUCLEAN:
		return EXIT_CORRUPT;
	case -EROFS:
		return EXIT_ROFS;
	case -EBUSY:
		return EXIT_BUSY;
	default:
		return EXIT_OTHER;
	}
}

int cli_usage(const struct cli_cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(cli_err, "%s%s%s: ", prog, cmd ? " " : "",
		cmd ? cmd->name : "");
	va_start(ap, fmt);
	vfprintf(cli_err, fmt, ap);
	va_end(ap);
	fprintf(cli_err, " (see '%s%s%s --help')\n", prog, cmd ? " " : "",
		cmd ? cmd->name : "");
	return EXIT_USAGE;
}

int cli_error(int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(cli_err, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(cli_err, fmt, ap);
	va_end(ap);
	fputc('\n', cli_err);
	return status;
}

/* ---- options and values ---- */

int cli_getopt(const struct cli_cmd *cmd, int argc, char **argv,
	       const char *shortopts, const struct option *longopts)
{
	int c;

	opterr = 0;
	c = getopt_long(argc, argv, shortopts, longopts, NULL);
	if (c == '?' || c == ':') {
		const char *arg = argv[optind - 1];
		bool is_long = !strncmp(arg, "--", 2);

		if (c == ':')
			cli_usage(cmd, "option '%s' needs a value", arg);
		else if (is_long || !optopt)
			cli_usage(cmd, "unknown option '%s'", arg);
		else
			cli_usage(cmd, "unknown option '-%c'", optopt);
		return '?';
	}
	return c;
}

int cli_flag_opt(const struct cli_cmd *cmd, int argc, char **argv,
		 const char *shortopts, const struct option *longopts,
		 bool *flag)
{
	int c;

	while ((c = cli_getopt(cmd, argc, argv, shortopts, longopts)) != -1) {
		/* '?' was reported; anything else is the one flag */
		if (c == '?' || !flag)
			return EXIT_USAGE;
		*flag = true;
	}
	return 0;
}

int cli_size(const struct cli_cmd *cmd, const char *what, const char *s,
	     uint64_t *out)
{
	int r = parse_size(s, out);

	if (r == -ERANGE)
		return cli_usage(cmd, "%s '%s': too large", what, s);
	if (r < 0)
		return cli_usage(cmd,
				 "%s '%s': not a size (digits with an "
				 "optional K, M, G, T or P suffix)",
				 what, s);
	return 0;
}

static int blob_len_ok(const char *ctx, const char *opt, size_t len,
		       uint32_t blob_size)
{
	if (len == blob_size)
		return 0;
	return cli_error(EXIT_USAGE,
			 "%s: %s: %zu bytes, but the blobs of "
			 "this pool are exactly %u bytes",
			 ctx, opt, len, blob_size);
}

int cli_blob_hex(const char *ctx, const char *opt, const char *hex,
		 uint32_t blob_size, uint8_t *buf)
{
	char why[80];
	size_t len;

	if (parse_hex(hex, buf, TV_BLOB_MAX, &len, why, sizeof(why)) < 0)
		return cli_error(EXIT_USAGE, "%s: %s: malformed hex: %s", ctx,
				 opt, why);
	return blob_len_ok(ctx, opt, len, blob_size);
}

int cli_read_all(const char *path, size_t max, char **out, size_t *out_len)
{
	bool is_stdin = !strcmp(path, "-");
	int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	size_t len = 0, cap = 0;
	char *buf = NULL;
	int status = 0;

	if (fd < 0)
		return cli_error(errno == ENOENT ? EXIT_NOTFOUND : EXIT_OTHER,
				 "%s: %s", path, strerror(errno));
	for (;;) {
		ssize_t n;

		if (len + 1 >= cap) {
			/* room for max + 1 bytes, to tell "too large" */
			size_t nc = cap ? cap * 2 : 65536;
			char *nb;

			if (nc > max + 2)
				nc = max + 2;
			nb = realloc(buf, nc);
			if (!nb) {
				status = cli_error(EXIT_OTHER, "out of memory");
				goto out;
			}
			buf = nb;
			cap = nc;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			status = cli_error(EXIT_OTHER, "%s: read: %s",
					   is_stdin ? "<stdin>" : path,
					   strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t) n;
		if (len > max) {
			status = cli_error(EXIT_USAGE,
					   "%s: larger than %zu "
					   "bytes",
					   is_stdin ? "<stdin>" : path, max);
			goto out;
		}
	}
	if (!buf && !(buf = malloc(1))) {
		status = cli_error(EXIT_OTHER, "out of memory");
		goto out;
	}
	buf[len] = 0;
	*out = buf;
	*out_len = len;
	buf = NULL;
out:
	free(buf);
	if (!is_stdin)
		close(fd);
	return status;
}

int cli_blob_file(const char *ctx, const char *opt, const char *path,
		  uint32_t blob_size, uint8_t *buf)
{
	size_t len;
	char *data;
	int r;

	r = cli_read_all(path, TV_BLOB_MAX, &data, &len);
	if (r)
		return r;
	r = blob_len_ok(ctx, opt, len, blob_size);
	if (!r)
		memcpy(buf, data, len);
	free(data);
	return r;
}
