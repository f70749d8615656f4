/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * thinvol - the command: argument dispatch, help, and the helpers every
 * subcommand shares (errors, exit statuses, opening pools, blobs, volume
 * output).  The subcommands are in cmd-pool.c, cmd-vol.c, cmd-io.c,
 * cmd-batch.c and cmd-serve.c.
 *
 * It works on a pool that no daemon holds through the engine API
 * (include/thinvol.h), and on one that a daemon holds through the
 * daemon's control socket (client.c): the same commands, output and
 * errors either way.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/json.h"
#include "cli/parse.h"

#ifndef THINVOL_VERSION
#define THINVOL_VERSION "unknown"
#endif

static const char prog[] = "thinvol";

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

int cli_fail(int err, const char *fmt, ...)
{
	const char *why = cli_last_error();
	va_list ap;

	fprintf(cli_err, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(cli_err, fmt, ap);
	va_end(ap);
	fprintf(cli_err, ": %s\n", why && why[0] ? why : strerror(-err));
	return cli_exit(err);
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

int cli_size(const struct cli_cmd *cmd, const char *what, const char *s,
	     uint64_t *out)
{
	int r = parse_size(s, out);

	if (r == -ERANGE)
		return cli_usage(cmd, "%s '%s': too large", what, s);
	if (r < 0)
		return cli_usage(cmd, "%s '%s': not a size (digits with an "
				      "optional K, M, G, T or P suffix)",
				 what, s);
	return 0;
}

static int blob_len_ok(const char *ctx, const char *opt, size_t len,
		       uint32_t blob_size)
{
	if (len == blob_size)
		return 0;
	return cli_error(EXIT_USAGE, "%s: %s: %zu bytes, but the blobs of "
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
		len += (size_t)n;
		if (len > max) {
			status = cli_error(EXIT_USAGE, "%s: larger than %zu "
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

/* ---- pools and volumes ---- */

int cli_resolve(struct cli_pool *pool, const char *ctx, const char *spec,
		uint64_t *id)
{
	int r = cli_vol_resolve(pool, spec, id);

	return r < 0 ? cli_fail(r, "%s", ctx) : 0;
}

static void put_time(FILE *f, uint64_t ns)
{
	time_t t = (time_t)(ns / 1000000000u);
	struct tm tm;
	char buf[40];

	if (!gmtime_r(&t, &tm) ||
	    !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, sizeof(buf), "?");
	fputs(buf, f);
}

int cli_put_vol_json(FILE *f, struct cli_pool *pool, uint32_t blob_size,
		     const struct tv_vol_info *v, const uint64_t *exclusive)
{
	uint8_t blob[TV_BLOB_MAX];
	char hex[2 * TV_BLOB_MAX + 1], uuid[37];
	int r;

	r = cli_vol_get_blob(pool, v->id, blob, blob_size);
	if (r < 0)
		return r;
	fmt_hex(blob, blob_size, hex);
	fmt_uuid(v->uuid, uuid);
	fprintf(f, "{\"id\":%" PRIu64 ",\"name\":", v->id);
	json_put_string(f, v->name, strlen(v->name));
	fprintf(f, ",\"uuid\":\"%s\",\"size\":%" PRIu64 ",\"mapped\":%" PRIu64,
		uuid, v->size, v->mapped);
	if (exclusive)
		fprintf(f, ",\"exclusive\":%" PRIu64, *exclusive);
	fputs(",\"parent\":", f);
	if (v->parent)
		fprintf(f, "%" PRIu64, v->parent);
	else
		fputs("null", f);
	fprintf(f, ",\"read_only\":%s,\"flags\":[%s],\"ctime\":\"",
		v->flags & TV_VOL_READ_ONLY ? "true" : "false",
		v->flags & TV_VOL_READ_ONLY ? "\"read-only\"" : "");
	put_time(f, v->ctime_ns);
	fprintf(f, "\",\"ctime_ns\":%" PRIu64 ",\"blob\":\"%s\"}", v->ctime_ns,
		hex);
	return 0;
}

/* Ids are at least the microseconds since 2025 (14 digits until 2028, 15
 * until 2056): the id columns fit them with the '#'. */
#define ID_COLUMN 16

void cli_put_vol_header(FILE *f)
{
	fprintf(f, "%*s  %-20s  %10s  %10s  %*s  %s\n", ID_COLUMN, "ID",
		"NAME", "SIZE", "MAPPED", ID_COLUMN, "PARENT", "FLAGS");
}

void cli_put_vol_row(FILE *f, const struct tv_vol_info *v)
{
	char id[24], parent[24], size[32], mapped[32];

	snprintf(id, sizeof(id), "#%" PRIu64, v->id);
	if (v->parent)
		snprintf(parent, sizeof(parent), "#%" PRIu64, v->parent);
	else
		snprintf(parent, sizeof(parent), "-");
	fprintf(f, "%*s  %-20s  %10s  %10s  %*s  %s\n", ID_COLUMN, id,
		v->name, fmt_size(v->size, size, sizeof(size)),
		fmt_size(v->mapped, mapped, sizeof(mapped)), ID_COLUMN, parent,
		v->flags & TV_VOL_READ_ONLY ? "ro" : "-");
}

/* ---- dispatch and help ---- */

static void usage(FILE *f)
{
	fprintf(f, "usage: %s COMMAND [ARGUMENT...] [OPTION...]\n"
		   "\n"
		   "Manage a thinvol pool, and serve its volumes over NBD.  While\n"
		   "'thinvol serve' holds a pool, every command runs through it.\n"
		   "\n"
		   "Pools:\n",
		prog);
	for (const struct cli_cmd *c = cli_pool_cmds; c->name; c++)
		fprintf(f, "  %s %s\n", prog, c->synopsis);
	fprintf(f, "\nVolumes (VOL is a volume's name or #ID):\n");
	for (const struct cli_cmd *c = cli_vol_cmds; c->name; c++)
		fprintf(f, "  %s %s\n", prog, c->synopsis);
	for (const struct cli_cmd *c = cli_io_cmds; c->name; c++)
		fprintf(f, "  %s %s\n", prog, c->synopsis);
	fprintf(f, "  %s %s\n", prog, cli_batch_cmd.synopsis);
	fprintf(f, "\nServing (the daemon):\n  %s %s\n", prog,
		cli_serve_cmd.synopsis);
	fprintf(f,
		"\n"
		"  %s COMMAND --help     everything about one command\n"
		"  %s --version          the version\n"
		"\n"
		"SIZE is a byte count with an optional K, M, G, T or P suffix\n"
		"(powers of 1024): 4096, 64K, 10G.  HEX is hex digits without\n"
		"separators, either case.  Volume sizes are multiples of 512.\n"
		"\n"
		"Exit status: 0 ok, 1 other error, 2 usage or bad value,\n"
		"3 not found, 4 exists, 5 no space, 6 corrupt pool or check\n"
		"failed, 7 read-only, 8 busy (the pool is in use).\n",
		prog, prog);
}

static const struct cli_cmd *find_cmd(const struct cli_cmd *table,
				      const char *name, size_t skip)
{
	for (const struct cli_cmd *c = table; c->name; c++)
		if (!strcmp(c->name + skip, name))
			return c;
	return NULL;
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return false;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return true;
	}
	return false;
}

static int run(const struct cli_cmd *c, int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		fputs(c->help, stdout);
		return 0;
	}
	return c->run(c, argc, argv);
}

static int dispatch(int argc, char **argv)
{
	const char *cmd = argv[1];
	const struct cli_cmd *c;

	if (!strcmp(cmd, "help") && argc > 2) {
		/* thinvol help COMMAND [SUBCOMMAND] */
		char *hv[5];
		int n = 0;

		hv[n++] = argv[0];
		hv[n++] = argv[2];
		if (argc > 3)
			hv[n++] = argv[3];
		hv[n++] = "--help";
		hv[n] = NULL;
		return dispatch(n, hv);
	}
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") ||
	    !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
		printf("%s %s\n", prog, THINVOL_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "pool")) {
		if (argc < 3)
			return cli_usage(NULL, "'pool' needs a subcommand: "
					       "create, info or resize");
		if (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
			for (c = cli_pool_cmds; c->name; c++)
				if (!strncmp(c->name, "pool ", 5))
					printf("usage: %s %s\n", prog,
					       c->synopsis);
			return 0;
		}
		c = find_cmd(cli_pool_cmds, argv[2], 5);
		if (!c || strncmp(c->name, "pool ", 5))
			return cli_usage(NULL, "unknown command 'pool %s'",
					 argv[2]);
		return run(c, argc - 2, argv + 2);
	}
	c = find_cmd(cli_vol_cmds, cmd, 0);
	if (!c)
		c = find_cmd(cli_io_cmds, cmd, 0);
	if (!c && !strcmp(cmd, "check"))
		c = find_cmd(cli_pool_cmds, cmd, 0);
	if (!c && !strcmp(cmd, cli_batch_cmd.name))
		c = &cli_batch_cmd;
	if (!c && !strcmp(cmd, cli_serve_cmd.name))
		c = &cli_serve_cmd;
	if (!c)
		return cli_usage(NULL, "unknown command '%s'", cmd);
	return run(c, argc - 1, argv + 1);
}

/*
 * The engine's layers log what they detect to file descriptor 2, and the
 * same error then reaches us with its message in tv_last_error(): one
 * error would print two or three lines.  So our messages go to a
 * duplicate of fd 2, and fd 2 itself goes to /dev/null, unless
 * THINVOL_DEBUG is set (then both are shown, for diagnosis).
 */
/* In sanitizer builds: their reports must reach the real stderr too. */
extern void __sanitizer_set_report_fd(void *fd) __attribute__((weak));

static void setup_stderr(void)
{
	int fd, null;

	cli_err = stderr;
	if (getenv("THINVOL_DEBUG"))
		return;
	fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return;
	cli_err = fdopen(fd, "w");
	null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (!cli_err || null < 0) {
		if (cli_err)
			fclose(cli_err);
		else
			close(fd);
		if (null >= 0)
			close(null);
		cli_err = stderr;
		return;
	}
	setvbuf(cli_err, NULL, _IOLBF, 0);
	if (__sanitizer_set_report_fd)
		__sanitizer_set_report_fd((void *)(intptr_t)fd);
	dup2(null, STDERR_FILENO);
	close(null);
}

int main(int argc, char **argv)
{
	int status;

	setup_stderr();
	if (argc < 2)
		return cli_usage(NULL, "no command given");
	status = dispatch(argc, argv);
	/* Output that did not reach its destination is a failure. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		int e = errno;
		fprintf(cli_err, "%s: writing the output: %s\n", prog,
			strerror(e ? e : EIO));
		if (!status)
			status = EXIT_OTHER;
	}
	fflush(cli_err);
	return status;
}
