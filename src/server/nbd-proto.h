/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * nbd-proto.h - the constants of the NBD protocol, fixed newstyle
 * (NetworkBlockDevice/nbd, doc/proto.md).  All integers on the wire are
 * big-endian.
 */
#ifndef TV_SERVER_NBD_PROTO_H
#define TV_SERVER_NBD_PROTO_H

#include <stdint.h>

/* handshake */
#define NBDS_MAGIC     0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBDS_IHAVEOPT  0x49484156454f5054ull /* "IHAVEOPT" */
#define NBDS_REP_MAGIC 0x0003e889045565a9ull

#define NBDS_FLAG_FIXED_NEWSTYLE  (1u << 0) /* handshake flags */
#define NBDS_FLAG_NO_ZEROES	  (1u << 1)
#define NBDS_CFLAG_FIXED_NEWSTYLE (1u << 0) /* client flags */
#define NBDS_CFLAG_NO_ZEROES	  (1u << 1)

/* options */
#define NBDS_OPT_EXPORT_NAME	   1
#define NBDS_OPT_ABORT		   2
#define NBDS_OPT_LIST		   3
#define NBDS_OPT_STARTTLS	   5
#define NBDS_OPT_INFO		   6
#define NBDS_OPT_GO		   7
#define NBDS_OPT_STRUCTURED_REPLY  8
#define NBDS_OPT_LIST_META_CONTEXT 9
#define NBDS_OPT_SET_META_CONTEXT  10

/* option replies */
#define NBDS_REP_ACK		     1
#define NBDS_REP_SERVER		     2
#define NBDS_REP_INFO		     3
#define NBDS_REP_META_CONTEXT	     4
#define NBDS_REP_ERR(n)		     ((1u << 31) | (n))
#define NBDS_REP_ERR_UNSUP	     NBDS_REP_ERR(1)
#define NBDS_REP_ERR_POLICY	     NBDS_REP_ERR(2)
#define NBDS_REP_ERR_INVALID	     NBDS_REP_ERR(3)
#define NBDS_REP_ERR_PLATFORM	     NBDS_REP_ERR(4)
#define NBDS_REP_ERR_TLS_REQD	     NBDS_REP_ERR(5)
#define NBDS_REP_ERR_UNKNOWN	     NBDS_REP_ERR(6)
#define NBDS_REP_ERR_SHUTDOWN	     NBDS_REP_ERR(7)
#define NBDS_REP_ERR_BLOCK_SIZE_REQD NBDS_REP_ERR(8)
#define NBDS_REP_ERR_TOO_BIG	     NBDS_REP_ERR(9)

/* NBD_REP_INFO types */
#define NBDS_INFO_EXPORT      0
#define NBDS_INFO_NAME	      1
#define NBDS_INFO_DESCRIPTION 2
#define NBDS_INFO_BLOCK_SIZE  3

/* transmission flags */
#define NBDS_TF_HAS_FLAGS	  (1u << 0)
#define NBDS_TF_READ_ONLY	  (1u << 1)
#define NBDS_TF_SEND_FLUSH	  (1u << 2)
#define NBDS_TF_SEND_FUA	  (1u << 3)
#define NBDS_TF_SEND_TRIM	  (1u << 5)
#define NBDS_TF_SEND_WRITE_ZEROES (1u << 6)
#define NBDS_TF_SEND_DF		  (1u << 7)
#define NBDS_TF_CAN_MULTI_CONN	  (1u << 8)
#define NBDS_TF_SEND_CACHE	  (1u << 10)
#define NBDS_TF_SEND_FAST_ZERO	  (1u << 11)

/* requests */
#define NBDS_REQUEST_MAGIC	    0x25609513u
#define NBDS_SIMPLE_REPLY_MAGIC	    0x67446698u
#define NBDS_STRUCTURED_REPLY_MAGIC 0x668e33efu

#define NBDS_CMD_READ	      0
#define NBDS_CMD_WRITE	      1
#define NBDS_CMD_DISC	      2
#define NBDS_CMD_FLUSH	      3
#define NBDS_CMD_TRIM	      4
#define NBDS_CMD_CACHE	      5
#define NBDS_CMD_WRITE_ZEROES 6
#define NBDS_CMD_BLOCK_STATUS 7

#define NBDS_CMD_FLAG_FUA	(1u << 0)
#define NBDS_CMD_FLAG_NO_HOLE	(1u << 1)
#define NBDS_CMD_FLAG_DF	(1u << 2)
#define NBDS_CMD_FLAG_REQ_ONE	(1u << 3)
#define NBDS_CMD_FLAG_FAST_ZERO (1u << 4)

/* structured reply chunks */
#define NBDS_REPLY_FLAG_DONE	     (1u << 0)
#define NBDS_REPLY_TYPE_NONE	     0
#define NBDS_REPLY_TYPE_OFFSET_DATA  1
#define NBDS_REPLY_TYPE_OFFSET_HOLE  2
#define NBDS_REPLY_TYPE_BLOCK_STATUS 5
#define NBDS_REPLY_TYPE_ERROR	     ((1u << 15) | 1)

/* base:allocation */
#define NBDS_STATE_HOLE (1u << 0)
#define NBDS_STATE_ZERO (1u << 1)

/* error values */
#define NBDS_EPERM     1
#define NBDS_EIO       5
#define NBDS_ENOMEM    12
#define NBDS_EINVAL    22
#define NBDS_ENOSPC    28
#define NBDS_EOVERFLOW 75
#define NBDS_ENOTSUP   95
#define NBDS_ESHUTDOWN 108

#define NBDS_MAX_REQUEST (32u << 20) /* largest READ or WRITE payload */
#define NBDS_MAX_STRING	 4096	     /* names, queries */

#endif
