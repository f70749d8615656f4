/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cmd-io.c - import and export: the command's side.  It opens the file
 * (so that a daemon never opens a path a user named) and resolves the
 * volume; the copy itself (src/server/ctl-copy.c) runs here on a pool we
 * opened, or in the daemon that holds the pool, which gets the file's
 * descriptor passed with the request.  Either way the same code prints
 * the same messages.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "io/io.h"
#include "server/ctl-copy.h"

static int copy_parse(const struct cli_cmd *cmd, int argc, char **argv,
		      struct ctl_copy *c, bool *verbose)
{
	static const struct option opts[] = {
	    {"verbose", no_argument, NULL, 'v'},
	    {NULL, 0, NULL, 0},
	};
	if (cli_flag_opt(cmd, argc, argv, ":v", opts, verbose))
		return EXIT_USAGE;
	if (argc - optind != 3)
		return cli_usage(cmd, "needs POOL, VOL and FILE");
	c->pool = argv[optind];
	c->vol = argv[optind + 1];
	c->file = argv[optind + 2];
	return 0;
}

static void copy_report(const char *what, const struct ctl_copy *c,
			bool verbose)
{
	if (verbose)
		fprintf(cli_err,
			"thinvol: %s '%s': %" PRIu64 " bytes copied, "
			"%" PRIu64 " bytes skipped as zero\n",
			what, c->vol, c->copied, c->zero);
}

/* ---- import ---- */

static int cmd_import(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct ctl_copy c = {.cancel_fd = -1, .peer_fd = -1};
	struct tv_pool_info in;
	struct cli_pool *pool;
	bool is_stdin, verbose = false;
	struct stat st;
	uint64_t id;
	int fd, r;

	r = copy_parse(cmd, argc, argv, &c, &verbose);
	if (r)
		return r;
	is_stdin = !strcmp(c.file, "-");
	fd = is_stdin ? STDIN_FILENO : open(c.file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cli_error(errno == ENOENT ? EXIT_NOTFOUND : EXIT_OTHER,
				 "%s '%s': %s: %s", cmd->name, c.vol, c.file,
				 strerror(errno));
	if (is_stdin)
		c.file = "<stdin>";
	if (fstat(fd, &st) < 0) {
		r = cli_error(EXIT_OTHER, "%s '%s': %s: %s", cmd->name, c.vol,
			      c.file, strerror(errno));
		goto out_file;
	}
	if (S_ISDIR(st.st_mode)) {
		r = cli_error(EXIT_USAGE, "%s '%s': %s: is a directory",
			      cmd->name, c.vol, c.file);
		goto out_file;
	}
	r = cli_open_vol(c.pool, CLI_RW, cmd->name, c.vol, &pool, &in, &id);
	if (r)
		goto out_file;
	r = cli_import(pool, id, fd, &c);
	if (r < 0)
		r = cli_error(cli_exit(r), "%s", c.msg);
	else
		copy_report(cmd->name, &c, verbose);
	r = cli_close(pool, c.pool, r);
out_file:
	if (!is_stdin)
		close(fd);
	return r;
}

/* ---- export ---- */

/*
 * The export's FILE, opened for writing.  A new file is made with O_EXCL
 * and mode 0600 (it holds a volume: as private as the pool).  An existing
 * one is written into (a device, or a regular file that ctl_export
 * replaces), except where another user may have put it there for us to
 * write (io-path.c): another user's symbolic link in a sticky directory
 * is not followed, and another user's file there (or one with other hard
 * links) is not written.  Returns the descriptor or -errno, why set.
 */
static int open_target(const char *file, char *why, size_t whylen)
{
	int fd, r;

	fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
		  0600);
	if (fd >= 0)
		return fd;
	if (errno != EEXIST) {
		r = -errno;
		snprintf(why, whylen, "%s", strerror(-r));
		return r;
	}
	/* O_CREAT again: an allowed symbolic link to nowhere makes its
	 * target, as it always did */
	fd = io_open_user_path(file, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY,
			       0600, why, whylen);
	if (fd < 0)
		return fd;
	r = io_fd_user_target(fd, why, whylen);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

static int cmd_export(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct ctl_copy c = {.cancel_fd = -1, .peer_fd = -1};
	struct tv_pool_info in;
	struct tv_vol_info v;
	struct cli_pool *pool;
	bool is_stdout, verbose = false;
	char why[512] = "";
	uint64_t id;
	int fd = -1, r;

	r = copy_parse(cmd, argc, argv, &c, &verbose);
	if (r)
		return r;
	is_stdout = !strcmp(c.file, "-");
	r = cli_open_vol(c.pool, CLI_RO, cmd->name, c.vol, &pool, &in, &id);
	if (r)
		return r;
	r = cli_vol_info(pool, id, &v);
	if (r < 0) {
		r = cli_fail(r, "%s '%s'", cmd->name, c.vol);
		goto out_pool;
	}
	/* the file only once the volume is known: a failed export of an
	 * unknown volume leaves no empty file behind */
	if (is_stdout) {
		fflush(stdout);
		fd = STDOUT_FILENO;
		c.file = "<stdout>";
	} else {
		fd = open_target(c.file, why, sizeof(why));
	}
	if (fd < 0) {
		r = cli_error(fd == -ENOENT ? EXIT_NOTFOUND : EXIT_OTHER,
			      "%s '%s': %s: %s", cmd->name, c.vol, c.file, why);
		goto out_pool;
	}
	r = cli_export(pool, id, fd, is_stdout, &c);
	if (r < 0)
		r = cli_error(cli_exit(r), "%s", c.msg);
	else
		copy_report(cmd->name, &c, verbose);
	if (!is_stdout && close(fd) < 0 && !r)
		r = cli_error(EXIT_OTHER, "%s '%s': %s: close: %s", cmd->name,
			      c.vol, c.file, strerror(errno));
out_pool:
	return cli_close(pool, c.pool, r);
}

const struct cli_cmd cli_io_cmds[] = {
    {
	"import",
	"import POOL VOL FILE [--verbose]",
	"usage: thinvol import POOL VOL FILE [--verbose]\n"
	"\n"
	"Copy a raw image from FILE ('-' reads stdin) into the volume\n"
	"VOL, from its first byte.  All-zero blocks (and the holes of a\n"
	"sparse FILE) are not written: they are discarded, so they stay\n"
	"or become unallocated.  A FILE shorter than the volume leaves\n"
	"the rest of the volume zero (discarded); a FILE longer than the\n"
	"volume is refused (exit status 2: resize the volume first).\n"
	"The data is flushed before the command returns.  A failed\n"
	"import keeps what it had written.\n"
	"\n"
	"  -v, --verbose   report the bytes copied and the bytes skipped\n"
	"                  as zero on stderr\n"
	"  -h, --help      this text\n",
	cmd_import,
    },
    {
	"export",
	"export POOL VOL FILE [--verbose]",
	"usage: thinvol export POOL VOL FILE [--verbose]\n"
	"\n"
	"Copy the whole volume VOL into FILE ('-' writes stdout) as a raw\n"
	"image of the volume's size.  A regular FILE is replaced and\n"
	"written sparse: all-zero blocks are left as holes.  To stdout or\n"
	"a device every byte is written.\n"
	"\n"
	"  -v, --verbose   report the bytes copied and the bytes skipped\n"
	"                  as zero on stderr\n"
	"  -h, --help      this text\n",
	cmd_export,
    },
    {NULL, NULL, NULL, NULL},
};
