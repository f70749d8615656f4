/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl-internal.h - what ctl.c (requests) and ctl-server.c (the socket)
 * share.
 */
#ifndef TV_SERVER_CTL_INTERNAL_H
#define TV_SERVER_CTL_INTERNAL_H

#include <stddef.h>

/* An error reply without a request id (the request could not be read):
 * malloc'd line with its newline into *reply.  Returns 0 or -ENOMEM. */
int ctl_error_reply(int err, const char *msg, char **reply, size_t *reply_len);

/* The name of an errno ("ENOENT"), or "EUNKNOWN". */
const char *ctl_errno_name(int err);

#endif
