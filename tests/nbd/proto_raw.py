# The NBD protocol byte by byte, for what libnbd will not send: unknown
# options and commands, bad option lengths, NBD_OPT_STRUCTURED_REPLY and
# NBD_OPT_SET_META_CONTEXT on their own, NBD_OPT_EXPORT_NAME with and
# without NO_ZEROES, bad client flags, a bad request magic, a huge option
# length, pipelined requests, NBD_CMD_DISC.  Run by test-nbdsh-proto.sh:
#   proto_raw.py SOCKET RW-EXPORT BLOCK-SIZE EXPORT...
# (RW-EXPORT: 64 MiB, blocks 0-3 hold pat(4 * B, 1), as for proto_libnbd.py)
# The wire format (constants, connection, option replies) is nbdwire.py's.
import struct
import sys

import nbdwire
from nbdwire import (ERR, ERR_INVALID, ERR_POLICY, ERR_UNKNOWN, ERR_UNSUP,
                     IHAVEOPT, NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO,
                     OPT_INFO, OPT_LIST, OPT_LIST_META, OPT_SET_META, OPT_SR,
                     OPT_STARTTLS, REP_ACK, REP_INFO, REP_META, REP_SERVER,
                     REQMAGIC, SIMPLE, STRUCT, CMD_BS, CMD_DISC, CMD_FLUSH,
                     CMD_READ, CMD_WRITE, EINVAL, EOVERFLOW, meta_data,
                     name_data)

sock_path, RW, B = sys.argv[1], sys.argv[2], int(sys.argv[3])
EXPORTS = sys.argv[4:]
SIZE = 64 << 20
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


def pat(n, seed):
    """n bytes of pattern seed: byte i is (seed * 7 + i * 13) mod 256."""
    period = bytes((seed * 7 + i * 13) & 0xFF for i in range(256))
    return (period * (n // 256 + 1))[:n]


class Conn(nbdwire.Conn):
    """nbdwire's connection (option replies checked there), with the
    greeting checked here, and replies as this test reads them."""

    def __init__(self, cflags=3):
        super().__init__(sock_path, cflags=cflags, greet=False)
        magic, opt, hflags = struct.unpack(">QQH", self.recvn(18))
        check(magic == NBDMAGIC and opt == IHAVEOPT, "greeting magic %x %x" % (magic, opt))
        check(hflags & 3 == 3, "handshake flags %x lack FIXED_NEWSTYLE|NO_ZEROES" % hflags)
        self.s.sendall(struct.pack(">I", cflags))

    def req(self, typ, offset=0, length=0, flags=0, handle=1, data=b""):
        super().req(typ, offset, length, flags, handle, data)

    def reply(self, structured):
        """One reply: ("simple", handle, error) or a list of chunks
        [(flags, type, handle, payload)] up to the one marked DONE."""
        magic = struct.unpack(">I", self.recvn(4))[0]
        if magic == SIMPLE:
            err, handle = struct.unpack(">IQ", self.recvn(12))
            return ("simple", handle, err)
        check(magic == STRUCT, "reply magic %x" % magic)
        check(structured, "a structured reply without negotiating it")
        chunks = []
        while True:
            if chunks:
                magic = struct.unpack(">I", self.recvn(4))[0]
                check(magic == STRUCT, "chunk magic %x" % magic)
            fl, ty, h, ln = struct.unpack(">HHQI", self.recvn(16))
            chunks.append((fl, ty, h, self.recvn(ln)))
            if fl & 1:
                return chunks


def chunk_error(chunks):
    """The error of a structured reply (0 if none)."""
    for fl, ty, h, p in chunks:
        if ty & 0x8000:
            err, mlen = struct.unpack(">IH", p[:6])
            check(mlen <= len(p) - 6, "error message length %d in a %d-byte chunk" % (mlen, len(p)))
            return err
    return 0


def reply_error(r):
    return r[2] if r[0] == "simple" else chunk_error(r)


def read_data(chunks, offset, length):
    buf = bytearray(length)
    covered = 0
    for fl, ty, h, p in chunks:
        if ty == 1:  # OFFSET_DATA
            off = struct.unpack(">Q", p[:8])[0] - offset
            buf[off:off + len(p) - 8] = p[8:]
            covered += len(p) - 8
        elif ty == 2:  # OFFSET_HOLE
            off, ln = struct.unpack(">QI", p)
            covered += ln
        elif ty != 0:
            raise AssertionError("read reply chunk type %d" % ty)
    check(covered == length, "read chunks cover %d of %d bytes" % (covered, length))
    return bytes(buf)


# ---- option haggling ----
c = Conn()
r = c.opt(0x4242, b"abc")
check(r == [(ERR_UNSUP, r[0][1])], "unknown option: %s" % r)
r = c.opt(OPT_LIST, b"x")
check(len(r) == 1 and r[0][0] == ERR_INVALID, "LIST with data: %s" % r)
r = c.opt(OPT_LIST)
check(r[-1][0] == REP_ACK and all(t == REP_SERVER for t, d in r[:-1]), "LIST replies %s" % [t for t, d in r])
names = []
for t, d in r[:-1]:
    n = struct.unpack(">I", d[:4])[0]
    check(4 + n <= len(d), "LIST reply name length %d in %d bytes" % (n, len(d)))
    names.append(d[4:4 + n].decode())
check(sorted(names) == sorted(EXPORTS), "LIST: %s, want %s" % (sorted(names), sorted(EXPORTS)))
r = c.opt(OPT_INFO, name_data("nosuch"))
check(len(r) == 1 and r[0][0] == ERR_UNKNOWN, "INFO nosuch: %s" % r)
r = c.opt(OPT_INFO, struct.pack(">I", 100) + b"abc")
check(len(r) == 1 and r[0][0] == ERR_INVALID, "INFO with a name longer than the option: %s" % r)
r = c.opt(OPT_STARTTLS)
check(len(r) == 1 and r[0][0] in (ERR_UNSUP, ERR_POLICY), "STARTTLS without TLS: %s" % r)
r = c.opt(OPT_SET_META, name_data(RW)[:-2] + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation")
check(len(r) == 1 and r[0][0] & ERR, "SET_META_CONTEXT before STRUCTURED_REPLY: %s" % r)
r = c.opt(OPT_SR, b"x")
check(len(r) == 1 and r[0][0] == ERR_INVALID, "STRUCTURED_REPLY with data: %s" % r)
r = c.opt(OPT_SR)
check(r == [(REP_ACK, b"")], "STRUCTURED_REPLY: %s" % r)


r = c.opt(OPT_LIST_META, meta_data(RW, []))
ctx = [d[4:].decode() for t, d in r[:-1]]
check(r[-1][0] == REP_ACK and "base:allocation" in ctx, "LIST_META_CONTEXT: %s" % r)
r = c.opt(OPT_SET_META, meta_data(RW, ["nosuch:x", "base:allocation"]))
check(len(r) == 2 and r[0][0] == REP_META and r[1][0] == REP_ACK, "SET_META_CONTEXT: %s" % r)
check(r[0][1][4:] == b"base:allocation", "SET_META_CONTEXT context %r" % r[0][1])
ctx_id = struct.unpack(">I", r[0][1][:4])[0]
r = c.opt(OPT_SET_META, meta_data("nosuch", ["base:allocation"]))
check(r[-1][0] & ERR, "SET_META_CONTEXT on a missing export: %s" % r)
r = c.opt(OPT_SET_META, meta_data(RW, ["base:allocation"]))  # set again: the last one counts
check(r[-1][0] == REP_ACK, "SET_META_CONTEXT again: %s" % r)
ctx_id = struct.unpack(">I", r[0][1][:4])[0]

r = c.opt(OPT_INFO, name_data(RW, (1, 2, 3)))
check(r[-1][0] == REP_ACK, "INFO: %s" % r)
infos = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in r[:-1] if t == REP_INFO}
check(0 in infos and len(infos[0]) == 10, "INFO without NBD_INFO_EXPORT: %s" % r)
size, tflags = struct.unpack(">QH", infos[0])
check(size == SIZE, "INFO size %d" % size)
want = 1 | 4 | 8 | 32 | 64 | 128 | 256 | 1024 | 2048  # flags, flush, fua, trim, zeroes, df, multi-conn, cache, fast zero
check(tflags & want == want and not tflags & 2, "transmission flags %#x, want %#x" % (tflags, want))
check(3 in infos and len(infos[3]) == 12, "no NBD_INFO_BLOCK_SIZE: %s" % sorted(infos))
bmin, bpref, bmax = struct.unpack(">III", infos[3])
check(bmin in (1, 512) and bpref & (bpref - 1) == 0 and 512 <= bpref <= B and bmax == 32 << 20,
      "block sizes %d %d %d" % (bmin, bpref, bmax))
check(2 in infos and len(infos[2]) > 0, "no description")

r = c.opt(OPT_GO, name_data(RW))
check(r[-1][0] == REP_ACK, "GO: %s" % r)

# ---- transmission ----
c.req(CMD_READ, 0, 2 * B, handle=7)
ch = c.reply(True)
check(all(h == 7 for fl, ty, h, p in ch), "read reply handle")
check(chunk_error(ch) == 0 and read_data(ch, 0, 2 * B) == pat(2 * B, 1), "read of blocks 0-1")
c.req(CMD_READ, 4 * B, 2 * B, handle=8)  # never written: a hole chunk
ch = c.reply(True)
check(read_data(ch, 4 * B, 2 * B) == bytes(2 * B), "read of a hole")
check(any(ty == 2 for fl, ty, h, p in ch), "no OFFSET_HOLE chunk for an unmapped range: %s" % [ty for fl, ty, h, p in ch])
for typ, fl, what in ((42, 0, "unknown command 42"), (CMD_READ, 1 << 10, "read with flag bit 10"),
                      (CMD_FLUSH, 1 << 3, "flush with REQ_ONE")):
    c.req(typ, 0, 512 if typ == CMD_READ else 0, flags=fl, handle=9)
    r = c.reply(True)
    check(reply_error(r) == EINVAL, "%s: error %d, want EINVAL" % (what, reply_error(r)))
    if typ == CMD_READ:
        check(r[0] != "simple", "%s: a simple reply to a read with structured replies" % what)
c.req(CMD_READ, 0, (32 << 20) + 1, handle=10)
r = c.reply(True)
check(reply_error(r) in (EINVAL, EOVERFLOW), "read of 32 MiB + 1: error %d" % reply_error(r))
check(not any(ty in (1, 2) for fl, ty, h, p in r), "read of 32 MiB + 1 sent data")
# a write larger than the maximum: refused, its payload skipped, the
# connection goes on (the spec also allows a disconnect; this daemon does
# not, and should not)
c.req(CMD_WRITE, 0, (32 << 20) + 512, handle=13, data=b"z" * ((32 << 20) + 512))
r = c.reply(True)
check(reply_error(r) in (EINVAL, EOVERFLOW), "write of 32 MiB + 512: error %d" % reply_error(r))
c.req(CMD_READ, 0, B, handle=14)
ch = c.reply(True)
check(read_data(ch, 0, B) == pat(B, 1), "read after an oversized write (was it written?)")
c.req(CMD_BS, 0, 8 * B, handle=11)
ch = c.reply(True)
check(chunk_error(ch) == 0, "block status error %d" % chunk_error(ch))
bs = [p for fl, ty, h, p in ch if ty == 5]
check(len(bs) == 1 and struct.unpack(">I", bs[0][:4])[0] == ctx_id, "block status chunk for context %d: %s" % (ctx_id, ch))
ext = [struct.unpack(">II", bs[0][i:i + 8]) for i in range(4, len(bs[0]), 8)]
check(ext and ext[0][1] == 0 and sum(e[0] for e in ext) <= 8 * B, "block status extents %s" % ext)
# 32 reads in flight at once, answered with the right handles
for i in range(32):
    c.req(CMD_READ, (i % 4) * B + i, 4096, handle=1000 + i)
seen = {}
for i in range(32):
    ch = c.reply(True)
    seen[ch[0][2]] = ch
check(sorted(seen) == list(range(1000, 1032)), "pipelined handles %s" % sorted(seen))
for i in range(32):
    check(read_data(seen[1000 + i], (i % 4) * B + i, 4096) == pat(4 * B, 1)[(i % 4) * B + i:(i % 4) * B + i + 4096], "pipelined read %d" % i)
c.req(CMD_DISC, handle=12)
check(c.closed(), "the server did not close the connection after DISC")

# DISC right behind 8 writes not yet answered: the server must handle the
# outstanding requests before closing (blocks 60-67)
c = Conn()
c.opt(OPT_GO, name_data(RW))
c.s.sendall(b"".join(struct.pack(">IHHQQI", REQMAGIC, 0, CMD_WRITE, 100 + i, (60 + i) * B, B) + pat(B, 60 + i)
                     for i in range(8)) + struct.pack(">IHHQQI", REQMAGIC, 0, CMD_DISC, 200, 0, 0))
try:
    while c.s.recv(1 << 16):
        pass
except ConnectionResetError:
    pass
c = Conn()
c.opt(OPT_GO, name_data(RW))
for i in range(8):
    c.req(CMD_READ, (60 + i) * B, B, handle=300 + i)
    check(c.reply(False) == ("simple", 300 + i, 0), "read after DISC")
    check(c.recvn(B) == pat(B, 60 + i), "a write sent just before DISC was dropped (block %d)" % (60 + i))
c.req(CMD_DISC)

# ---- old ways in: EXPORT_NAME, with and without NO_ZEROES ----
def export_name(cflags):
    c = Conn(cflags)
    c.send_opt(OPT_EXPORT_NAME, RW.encode())
    size, tflags = struct.unpack(">QH", c.recvn(10))
    check(size == SIZE, "EXPORT_NAME size %d" % size)
    if not cflags & 2:
        check(c.recvn(124) == bytes(124), "124 zero bytes after EXPORT_NAME")
    c.req(CMD_READ, B, B, handle=5)
    r = c.reply(False)
    check(r == ("simple", 5, 0), "simple read reply %s" % (r,))
    check(c.recvn(B) == pat(2 * B, 1)[B:], "EXPORT_NAME read data")
    c.req(CMD_READ, SIZE, 512, handle=6)
    check(c.reply(False) == ("simple", 6, EINVAL), "simple read past the end")
    c.req(CMD_DISC)
    check(c.closed(), "no close after DISC")


export_name(1)
export_name(3)
c = Conn()
c.send_opt(OPT_EXPORT_NAME, b"nosuch")
check(c.closed(), "EXPORT_NAME of a missing export: the server must close the connection")

# ---- misbehaving clients: the server drops them and keeps serving ----
c = Conn(cflags=1 | 2 | 1 << 7)
check(c.closed(), "unknown client flags: the server must close the connection")
c = Conn()
c.send_opt(OPT_LIST, length=0x7FFFFFFF)  # claims 2 GiB of option data
c.s.close()
c = Conn()
c.opt(OPT_SR)
c.opt(OPT_GO, name_data(RW))
c.s.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 1, 0, 512))
check(c.closed(), "bad request magic: the server must close the connection")
c = Conn()
r = c.opt(OPT_ABORT)
check(r == [(REP_ACK, b"")] or r[0][0] & ERR, "ABORT reply %s" % r)
c.s.close()
c = Conn()
r = c.opt(OPT_GO, name_data(RW))
check(r[-1][0] == REP_ACK, "GO after the bad clients")
c.req(CMD_READ, 0, B, handle=1)
r = c.reply(False)
check(r == ("simple", 1, 0) and c.recvn(B) == pat(B, 1), "read after the bad clients")
c.req(CMD_DISC)
# a plain newstyle client (client flags 0: no FIXED_NEWSTYLE) can still go
# in with EXPORT_NAME; the spec has the server drop only unknown flags
try:
    export_name(0)
except (OSError, nbdwire.Closed) as e:
    raise AssertionError("a plain newstyle client (client flags 0, EXPORT_NAME) was refused: %s" % e)

print("proto_raw: %d checks passed" % checks)
