/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl-path.c - where a pool's daemon listens (ctl.h): the socket path
 * that ctl_socket_path derives from the pool's path, and the control
 * socket that a given process listens on (ctl_socket_of).  Both the
 * daemon (serve.c) and the command (src/cli/client.c) use them, so that
 * they agree on the place.
 */
#include "server/ctl.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int ctl_socket_path(const char *pool_path, const char *suffix, char *out,
		    size_t outlen)
{
	struct stat st;
	size_t max = outlen < 108 ? outlen : 108;
	int n;

	if (stat(pool_path, &st) == 0 && S_ISBLK(st.st_mode)) {
		n = snprintf(out, max, CTL_RUN_DIR "/block-%u:%u%s",
			     major(st.st_rdev), minor(st.st_rdev), suffix);
	} else {
		char *real = realpath(pool_path, NULL);

		n = snprintf(out, max, "%s%s", real ? real : pool_path, suffix);
		free(real);
		/* too long to sit beside the file: in the run directory,
		 * named after what the file is, not after its path */
		if ((n < 0 || (size_t) n >= max) && stat(pool_path, &st) == 0 &&
		    S_ISREG(st.st_mode))
			n = snprintf(out, max, CTL_RUN_DIR "/file-%u:%u-%ju%s",
				     major(st.st_dev), minor(st.st_dev),
				     (uintmax_t) st.st_ino, suffix);
	}
	if (n < 0 || (size_t) n >= max)
		return -ENAMETOOLONG;
	return 0;
}

int ctl_socket_of(pid_t pid, char *out, size_t len)
{
	unsigned long inodes[256];
	size_t n = 0;
	char path[64], line[512];
	struct dirent *e;
	bool found = false;
	FILE *f;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%ld/fd", (long) pid);
	d = opendir(path);
	if (!d)
		return -errno;
	while (n < sizeof(inodes) / sizeof(inodes[0]) && (e = readdir(d))) {
		char link[96], target[64];
		ssize_t k;

		snprintf(link, sizeof(link), "%s/%.20s", path, e->d_name);
		k = readlink(link, target, sizeof(target) - 1);
		if (k <= 0)
			continue;
		target[k] = 0;
		if (sscanf(target, "socket:[%lu]", &inodes[n]) == 1)
			n++;
	}
	closedir(d);
	f = fopen("/proc/net/unix", "re");
	if (!f)
		return -errno;
	/* Num RefCount Protocol Flags Type St Inode Path */
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned int flags, type, st;
		unsigned long ino;
		int pos = 0;
		size_t pl;
		char *sp;

		if (sscanf(line, "%*s %*s %*s %x %x %x %lu %n", &flags, &type,
			   &st, &ino, &pos) != 4 ||
		    !pos || !(flags & 0x10000) /* __SO_ACCEPTCON */)
			continue;
		sp = line + pos;
		sp[strcspn(sp, "\n")] = 0;
		pl = strlen(sp);
		if (sp[0] != '/' || pl < 9 || strcmp(sp + pl - 9, ".ctl.sock"))
			continue;
		for (size_t i = 0; i < n && !found; i++)
			if (inodes[i] == ino && pl < len) {
				memcpy(out, sp, pl + 1);
				found = true;
			}
	}
	fclose(f);
	return found ? 0 : -ENOENT;
}
