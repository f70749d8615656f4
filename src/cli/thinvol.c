/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * thinvol - the command's main: argument dispatch and help.  The
 * subcommands are in cmd-pool.c, cmd-vol.c, cmd-io.c, cmd-batch.c and
 * cmd-serve.c; what they share in cmd-common.c (a command's preamble,
 * volume output), client-open.c and client.c (opening pools, the pool
 * calls) and cli-util.c (messages, options, values).  Nothing calls into
 * this file.
 *
 * It works on a pool that no daemon holds through the engine API
 * (include/thinvol.h), and on one that a daemon holds through the
 * daemon's control socket (client.c): the same commands, output and
 * errors either way.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#ifndef THINVOL_VERSION
#define THINVOL_VERSION "unknown"
#endif

static const char prog[] = CLI_PROG;

/* ---- dispatch and help ---- */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: %s COMMAND [ARGUMENT...] [OPTION...]\n"
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
		__sanitizer_set_report_fd((void *) (intptr_t) fd);
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
