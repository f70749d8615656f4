/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl-copy - import and export: copy a raw image between a file
 * descriptor and a volume through the engine's I/O path.
 *
 * The same code runs in the thinvol command on a pool it opened itself
 * and in the daemon for a control request (vol.import, vol.export) whose
 * file the client opened and passed: so both print the same messages,
 * and the daemon never opens a path a user named.
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
 * Neither reads or writes the pool's own storage: a file that is the pool,
 * or shares storage with it (a loop device over the pool file, the disk
 * of a partition the pool is on, ...: io_fd_overlap), is refused with
 * -EINVAL before anything is read or written.  An export does not
 * write into a file or device that another process holds a lock on
 * (another pool's storage, an image qemu has open), and it opens a
 * block device again O_EXCL: one that is mounted, part of a RAID or
 * device-mapper device, or another pool's storage is refused with -EBUSY.
 *
 * A pipe or socket that never sends (import) or never reads (export)
 * keeps a copy waiting; with cancel_fd set (the daemon) the wait ends
 * when cancel_fd turns readable or the client's connection (peer_fd)
 * hangs up.
 *
 * Neither is a transaction: an import that fails midway leaves what it
 * had written (flushed, like the rest).  Cost: O(volume size); may block
 * for a long time on a slow file: never on the NBD I/O path.
 */
#ifndef TV_SERVER_CTL_COPY_H
#define TV_SERVER_CTL_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "thinvol.h"

struct ctl_copy {
	const char *pool; /* the pool as the user named it (messages) */
	const char *vol;  /* the volume as the user named it (messages) */
	const char *file; /* the file as the user named it, "<stdin>" ... */
	int cancel_fd;	  /* -1, or readable once the copy must give up
			   * waiting for a pipe or socket (the daemon
			   * stops): it then fails with -ECANCELED */
	int peer_fd;	  /* -1, or the connection of the client that
			   * asked: its hangup cancels too */
	uint64_t copied;  /* out: bytes written */
	uint64_t zero;	  /* out: bytes skipped as zero */
	char msg[1024];	  /* out: on error, the whole one-line message
			   * ("import 'vm': f.img: read: ..."), without the
			   * program name */
};

/*
 * Copy the file open on fd (read from its start, or sequentially for a
 * pipe) into volume id.  fd stays owned by the caller.  Returns 0 or a
 * negative errno whose exit status (docs/cli.md) fits the message: -EINVAL
 * (the file is larger than the volume, or it is the pool's storage),
 * -EROFS, -ENOENT, -EIO (the file failed), -ECANCELED, or the engine's
 * error.  The data is flushed before it returns,
 * also after a failure.
 */
int ctl_import(struct tv_pool *pool, uint64_t id, int fd, struct ctl_copy *c);

/*
 * Copy volume id into the file open for writing on fd.  stream: fd is the
 * command's stdout, written byte by byte even if it is a regular file;
 * otherwise a regular file is truncated and written sparse, and a
 * seekable file is synced at the end.  Errors as ctl_import, and -EBUSY
 * (a block device in use).
 */
int ctl_export(struct tv_pool *pool, uint64_t id, int fd, bool stream,
	       struct ctl_copy *c);

#endif
