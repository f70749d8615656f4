/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cmd-io.c - import and export: copy a raw image into or out of a volume
 * through the engine's I/O path (tv_vol_read, tv_vol_write,
 * tv_vol_discard).
 *
 * Zero regions stay unallocated both ways:
 *   - import looks at the image one pool block at a time; an all-zero
 *     block is discarded (unmapped), or skipped when the volume had
 *     nothing mapped when we started (we only ever move forwards, so what
 *     lies ahead of us is still unmapped).  Holes of a sparse file are
 *     found with SEEK_DATA and skipped without reading them.
 *   - export writes only the blocks that are not all zero and sets the
 *     file's size at the end, so that zero blocks are holes.  To anything
 *     but a regular file (a pipe, stdout, a device) every byte is written.
 *
 * Both copy in chunks of CHUNK bytes, or one pool block when blocks are
 * larger, so that every engine call covers whole blocks except at the
 * volume's end.  Neither is a transaction: an import that fails midway
 * leaves what it had written (flushed, like the rest).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

#define CHUNK (1u << 20)

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* What import and export share. */
struct copy {
	const char *path, *vol, *file; /* arguments */
	const char *what;	       /* "import" or "export" */
	struct tv_pool *pool;
	struct tv_pool_info in;
	struct tv_vol_info v;
	uint64_t id;
	uint32_t bs;	/* the pool's block size */
	size_t chunk;	/* bytes per engine call: a multiple of bs */
	uint8_t *buf;
	uint64_t copied, zero; /* bytes, for --verbose */
	bool verbose;
};

static bool all_zero(const uint8_t *p, size_t len)
{
	/* the first byte, then the buffer against itself shifted by one */
	return !len || (!p[0] && !memcmp(p, p + 1, len - 1));
}

/* The pool block size, the chunk and its buffer. */
static int copy_setup(struct copy *c)
{
	c->bs = c->in.block_size;
	c->chunk = c->bs > CHUNK ? c->bs : CHUNK;
	/* aligned for O_DIRECT pools and devices; CHUNK and bs are powers
	 * of two */
	if (posix_memalign((void **)&c->buf, 4096, c->chunk))
		return cli_error(EXIT_OTHER, "%s '%s': out of memory", c->what,
				 c->vol);
	return 0;
}

static int copy_parse(const struct cli_cmd *cmd, int argc, char **argv,
		      struct copy *c)
{
	static const struct option opts[] = {
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	while ((o = cli_getopt(cmd, argc, argv, ":v", opts)) != -1) {
		if (o != 'v')
			return EXIT_USAGE;
		c->verbose = true;
	}
	if (argc - optind != 3)
		return cli_usage(cmd, "needs POOL, VOL and FILE");
	c->path = argv[optind];
	c->vol = argv[optind + 1];
	c->file = argv[optind + 2];
	c->what = cmd->name;
	return 0;
}

static void copy_report(const struct copy *c)
{
	if (c->verbose)
		fprintf(cli_err, "thinvol: %s '%s': %" PRIu64 " bytes copied, "
				 "%" PRIu64 " bytes skipped as zero\n",
			c->what, c->vol, c->copied, c->zero);
}

/* ---- import ---- */

/* Read up to len bytes at off (or sequentially when !seekable); *got is
 * how many, fewer only at the end of the file. */
static int read_full(struct copy *c, int fd, bool seekable, uint8_t *buf,
		     size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = seekable ? pread(fd, buf + done, len - done,
					     (off_t)(off + done))
				     : read(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cli_error(EXIT_OTHER, "%s '%s': %s: read: %s",
					 c->what, c->vol, c->file,
					 strerror(errno));
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

/* [off, off + len) of the volume reads zero from now on. */
static int import_zero(struct copy *c, bool unmapped, uint64_t off,
		       uint64_t len)
{
	int r;

	c->zero += len;
	if (unmapped || !len)
		return 0;
	r = tv_vol_discard(c->pool, c->id, len, off);
	if (r < 0)
		return cli_fail(r, "%s '%s': discard at %" PRIu64, c->what,
				c->vol, off);
	return 0;
}

/* Write buf[0, len) at off: the non-zero blocks, and discard the others.
 * off is block-aligned; len is a multiple of 512. */
static int import_chunk(struct copy *c, bool unmapped, uint64_t off,
			size_t len)
{
	size_t pos = 0;
	int r;

	while (pos < len) {
		size_t end = pos;
		bool zero = all_zero(c->buf + pos, MIN(c->bs, len - pos));

		/* the run of blocks of the same kind */
		while (end < len) {
			size_t n = MIN(c->bs, len - end);

			if (all_zero(c->buf + end, n) != zero)
				break;
			end += n;
		}
		if (zero) {
			r = import_zero(c, unmapped, off + pos, end - pos);
		} else {
			r = tv_vol_write(c->pool, c->id, c->buf + pos,
					 end - pos, off + pos, 0);
			if (r < 0)
				r = cli_fail(r, "%s '%s': write at %" PRIu64,
					     c->what, c->vol, off + pos);
			else
				c->copied += end - pos;
		}
		if (r)
			return r;
		pos = end;
	}
	return 0;
}

static int import_run(struct copy *c, int fd, const struct stat *st)
{
	bool is_reg = S_ISREG(st->st_mode);
	bool seekable = is_reg || S_ISBLK(st->st_mode);
	bool seek_data = is_reg;
	/* nothing mapped yet: zeroes need no discard (we move forwards) */
	bool unmapped = c->v.mapped == 0;
	uint64_t vsize = c->v.size, fsize = UINT64_MAX, off = 0;
	size_t got;
	int r;

	if (is_reg) {
		fsize = (uint64_t)st->st_size;
	} else if (seekable) {
		off_t end = lseek(fd, 0, SEEK_END);

		if (end < 0)
			return cli_error(EXIT_OTHER, "%s '%s': %s: %s", c->what,
					 c->vol, c->file, strerror(errno));
		fsize = (uint64_t)end;
	}
	if (fsize != UINT64_MAX && fsize > vsize)
		return cli_error(EXIT_USAGE, "%s '%s': %s is %" PRIu64 " bytes, "
					     "larger than the volume (%" PRIu64
					     " bytes); resize the volume first",
				 c->what, c->vol, c->file, fsize, vsize);
	while (off < vsize) {
		uint64_t n = MIN((uint64_t)c->chunk, vsize - off);

		if (off >= fsize)
			return import_zero(c, unmapped, off, vsize - off);
		if (seek_data) {
			/* skip the hole at off, in whole blocks */
			off_t d = lseek(fd, (off_t)off, SEEK_DATA);
			uint64_t data;

			if (d < 0 && errno == ENXIO) {
				data = fsize; /* a hole up to the end */
			} else if (d < 0) {
				seek_data = false; /* not supported here */
				data = off;
			} else {
				data = (uint64_t)d;
			}
			data -= data % c->bs;
			if (data > off) {
				r = import_zero(c, unmapped, off, data - off);
				if (r)
					return r;
				off = data;
				continue;
			}
		}
		r = read_full(c, fd, seekable, c->buf, (size_t)n, off, &got);
		if (r)
			return r;
		/* past the end of the file: zeroes */
		memset(c->buf + got, 0, (size_t)n - got);
		if (got < n)
			fsize = off + got;
		r = import_chunk(c, unmapped, off, (size_t)n);
		if (r)
			return r;
		off += n;
	}
	if (fsize == UINT64_MAX) {
		/* a stream as long as the volume: it must end here */
		uint8_t extra;

		r = read_full(c, fd, false, &extra, 1, 0, &got);
		if (r)
			return r;
		if (got)
			return cli_error(EXIT_USAGE, "%s '%s': %s is larger "
						     "than the volume (%" PRIu64
						     " bytes); the volume "
						     "holds its first "
						     "%" PRIu64 " bytes",
					 c->what, c->vol, c->file, vsize,
					 vsize);
	}
	return 0;
}

static int cmd_import(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct copy c = { 0 };
	bool is_stdin;
	struct stat st;
	int fd, r;

	r = copy_parse(cmd, argc, argv, &c);
	if (r)
		return r;
	is_stdin = !strcmp(c.file, "-");
	fd = is_stdin ? STDIN_FILENO : open(c.file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cli_error(errno == ENOENT ? EXIT_NOTFOUND : EXIT_OTHER,
				 "%s '%s': %s: %s", c.what, c.vol, c.file,
				 strerror(errno));
	if (is_stdin)
		c.file = "<stdin>";
	if (fstat(fd, &st) < 0) {
		r = cli_error(EXIT_OTHER, "%s '%s': %s: %s", c.what, c.vol,
			      c.file, strerror(errno));
		goto out_file;
	}
	if (S_ISDIR(st.st_mode)) {
		r = cli_error(EXIT_USAGE, "%s '%s': %s: is a directory",
			      c.what, c.vol, c.file);
		goto out_file;
	}
	r = cli_open(c.path, CLI_RW, &c.pool, &c.in);
	if (r)
		goto out_file;
	r = cli_resolve(c.pool, c.what, c.vol, &c.id);
	if (!r && (r = tv_vol_info(c.pool, c.id, &c.v)) < 0)
		r = cli_fail(r, "%s '%s'", c.what, c.vol);
	if (r)
		goto out_pool;
	/* said at once, even when the image is all zero and the volume
	 * empty, so nothing would be written */
	if (c.in.state != TV_POOL_RW) {
		r = cli_error(EXIT_ROFS, "%s '%s': %s: the pool is read-only%s%s",
			      c.what, c.vol, c.path, c.in.reason[0] ? ": " : "",
			      c.in.reason);
		goto out_pool;
	}
	if (c.v.flags & TV_VOL_READ_ONLY) {
		r = cli_error(EXIT_ROFS, "%s '%s': volume '%s' is read-only",
			      c.what, c.vol, c.v.name);
		goto out_pool;
	}
	r = copy_setup(&c);
	if (r)
		goto out_pool;
	r = import_run(&c, fd, &st);
	/* what was written is made durable, also after a failure */
	{
		int f = tv_pool_flush(c.pool);

		if (f < 0 && !r)
			r = cli_fail(f, "%s '%s': flush", c.what, c.vol);
	}
	if (!r)
		copy_report(&c);
	free(c.buf);
out_pool:
	r = cli_close(c.pool, c.path, r);
out_file:
	if (!is_stdin)
		close(fd);
	return r;
}

/* ---- export ---- */

static int write_full(struct copy *c, int fd, bool seekable,
		      const uint8_t *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = seekable ? pwrite(fd, buf + done, len - done,
					      (off_t)(off + done))
				     : write(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return cli_error(EXIT_OTHER, "%s '%s': %s: write: %s",
					 c->what, c->vol, c->file,
					 n < 0 ? strerror(errno)
					       : "no progress");
		done += (size_t)n;
	}
	return 0;
}

static int export_run(struct copy *c, int fd, bool sparse, bool seekable)
{
	uint64_t vsize = c->v.size, off = 0;
	int r;

	while (off < vsize) {
		size_t n = (size_t)MIN((uint64_t)c->chunk, vsize - off);
		size_t pos = 0;

		r = tv_vol_read(c->pool, c->id, c->buf, n, off);
		if (r < 0)
			return cli_fail(r, "%s '%s': read at %" PRIu64, c->what,
					c->vol, off);
		while (pos < n) {
			size_t end = pos;
			bool zero = all_zero(c->buf + pos, MIN(c->bs, n - pos));

			while (end < n) {
				size_t k = MIN(c->bs, n - end);

				if (all_zero(c->buf + end, k) != zero)
					break;
				end += k;
			}
			if (zero && sparse) {
				c->zero += end - pos;
			} else {
				r = write_full(c, fd, seekable, c->buf + pos,
					       end - pos, off + pos);
				if (r)
					return r;
				c->copied += end - pos;
			}
			pos = end;
		}
		off += n;
	}
	/* the zero blocks at the end are a hole too: the size says it */
	if (sparse && ftruncate(fd, (off_t)vsize) < 0)
		return cli_error(EXIT_OTHER, "%s '%s': %s: truncate: %s",
				 c->what, c->vol, c->file, strerror(errno));
	if (seekable && fsync(fd) < 0)
		return cli_error(EXIT_OTHER, "%s '%s': %s: sync: %s", c->what,
				 c->vol, c->file, strerror(errno));
	return 0;
}

static int cmd_export(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct copy c = { 0 };
	bool is_stdout, sparse, seekable;
	struct stat st;
	int fd = -1, r;

	r = copy_parse(cmd, argc, argv, &c);
	if (r)
		return r;
	is_stdout = !strcmp(c.file, "-");
	r = cli_open(c.path, CLI_RO, &c.pool, &c.in);
	if (r)
		return r;
	r = cli_resolve(c.pool, c.what, c.vol, &c.id);
	if (!r && (r = tv_vol_info(c.pool, c.id, &c.v)) < 0)
		r = cli_fail(r, "%s '%s'", c.what, c.vol);
	if (r)
		goto out_pool;
	r = copy_setup(&c);
	if (r)
		goto out_pool;
	/* the file only once the volume is known: a failed export of an
	 * unknown volume leaves no empty file behind */
	if (is_stdout) {
		fflush(stdout);
		fd = STDOUT_FILENO;
		c.file = "<stdout>";
	} else {
		fd = open(c.file, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
	}
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = cli_error(errno == ENOENT ? EXIT_NOTFOUND : EXIT_OTHER,
			      "%s '%s': %s: %s", c.what, c.vol, c.file,
			      strerror(errno));
		goto out_file;
	}
	sparse = !is_stdout && S_ISREG(st.st_mode);
	seekable = !is_stdout && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
	/* a regular file starts empty, so that skipped blocks are holes */
	if (sparse && ftruncate(fd, 0) < 0) {
		r = cli_error(EXIT_OTHER, "%s '%s': %s: truncate: %s", c.what,
			      c.vol, c.file, strerror(errno));
		goto out_file;
	}
	r = export_run(&c, fd, sparse, seekable);
	if (!r)
		copy_report(&c);
out_file:
	if (fd >= 0 && !is_stdout && close(fd) < 0 && !r)
		r = cli_error(EXIT_OTHER, "%s '%s': %s: close: %s", c.what,
			      c.vol, c.file, strerror(errno));
	free(c.buf);
out_pool:
	return cli_close(c.pool, c.path, r);
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
	{ NULL, NULL, NULL, NULL },
};
