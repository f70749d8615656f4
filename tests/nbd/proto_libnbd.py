# The NBD protocol through libnbd (Debian's python3-libnbd): option mode,
# every command and flag, bad requests with libnbd's own checks off, a
# read-only export.  Run by test-nbdsh-proto.sh:
#   proto_libnbd.py SOCKET RW-EXPORT RO-EXPORT BLOCK-SIZE EXPORT...
# RW-EXPORT is a 64 MiB volume whose blocks 0-3 hold pat(4 * B, 1);
# RO-EXPORT is a read-only snapshot of it taken then; EXPORT... are every
# export the daemon must list.
#
# What libnbd 1.14 cannot send (proto_raw.py covers these with a socket of
# its own): unknown options and commands, NBD_OPT_SET_META_CONTEXT and
# NBD_OPT_STRUCTURED_REPLY on their own, EXPORT_NAME with or without
# NO_ZEROES, DISC with requests in flight.
import sys
import urllib.parse

import nbd

sock, RW, RO, B = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
EXPORTS = sys.argv[5:]
SIZE = 64 << 20
checks = 0


def uri(name):
    return "nbd+unix:///%s?socket=%s" % (urllib.parse.quote(name, safe=""), sock)


def pat(n, seed):
    """n bytes of pattern seed: byte i is (seed * 7 + i * 13) mod 256."""
    period = bytes((seed * 7 + i * 13) & 0xFF for i in range(256))
    return (period * (n // 256 + 1))[:n]


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


def server_error(errnames, fn, what):
    """fn must fail with an error the server sent (not one libnbd made up
    locally), whose errno is one of errnames."""
    global checks
    checks += 1
    try:
        r = fn()
    except nbd.Error as e:
        if "command failed" not in (e.string or ""):
            raise AssertionError("%s: libnbd refused it locally: %s" % (what, e.string))
        if e.errno not in errnames:
            raise AssertionError("%s: errno %s, want %s (%s)" % (what, e.errno, errnames, e.string))
        return
    raise AssertionError("%s: succeeded, want %s" % (what, errnames))


def extents(h, count, offset, flags=0):
    """block_status: a list of (offset, length, flags) for base:allocation."""
    out = []

    def cb(ctx, off, entries, err):
        check(ctx == nbd.CONTEXT_BASE_ALLOCATION, "block status context %s" % ctx)
        for i in range(0, len(entries), 2):
            out.append((off, entries[i], entries[i + 1]))
            off += entries[i]
        return 0

    h.block_status(count, offset, cb, flags)
    return out


def status_at(h, offset, length):
    """The base:allocation flags over [offset, offset + length): one value,
    or an AssertionError if they differ."""
    ex = extents(h, length, offset)
    pos, st = offset, set()
    for off, ln, fl in ex:
        if off >= offset + length:
            break
        st.add(fl)
        pos = off + ln
    check(pos >= offset + length, "block status stops at %d before %d" % (pos, offset + length))
    check(len(st) == 1, "block status over %d+%d is mixed: %s" % (offset, length, ex))
    return st.pop()


# ---------------------------------------------------------------- options
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri(RW))
check(h.aio_is_negotiating(), "opt mode: not negotiating after connect")
check(h.get_protocol() == "newstyle-fixed", "protocol %s" % h.get_protocol())

listed = {}
h.opt_list(lambda name, desc: listed.__setitem__(name, desc) or 0)
check(sorted(listed) == sorted(EXPORTS), "opt_list: %s, want %s" % (sorted(listed), sorted(EXPORTS)))
check(all(isinstance(d, str) and d for d in listed.values()), "opt_list: empty descriptions: %s" % listed)

ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
check("base:allocation" in ctxs, "opt_list_meta_context: %s" % ctxs)

# LIST_META_CONTEXT with a query: only base:allocation answers base:
h.add_meta_context("base:")
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
check(ctxs == ["base:allocation"], "list_meta_context base: -> %s" % ctxs)
h.clear_meta_contexts()
h.add_meta_context("nosuch:context")
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
check(ctxs == [], "list_meta_context nosuch: -> %s" % ctxs)
h.clear_meta_contexts()

h.set_full_info(True)
h.opt_info()
check(h.get_size() == SIZE, "opt_info size %d" % h.get_size())
check(not h.is_read_only(), "opt_info: %s is read-only" % RW)
check(h.get_canonical_export_name() == RW, "canonical name %r" % h.get_canonical_export_name())
check(h.get_export_description() == listed[RW], "description %r vs list %r" % (h.get_export_description(), listed[RW]))
bmin = h.get_block_size(nbd.SIZE_MINIMUM)
check(bmin in (1, 512), "minimum block size %d" % bmin)
bpref = h.get_block_size(nbd.SIZE_PREFERRED)
check(bpref & (bpref - 1) == 0 and 512 <= bpref <= B, "preferred block size %d" % bpref)
check(h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20, "maximum block size %d" % h.get_block_size(nbd.SIZE_MAXIMUM))

h.set_export_name(RO)
h.opt_info()
check(h.is_read_only(), "opt_info: %s is not read-only" % RO)
check(h.get_size() == SIZE, "opt_info %s size %d" % (RO, h.get_size()))

# a missing export is an error reply, and the negotiation goes on
for bad in ("nosuch", "#999999", "", "x" * 300):
    h.set_export_name(bad)
    try:
        h.opt_info()
        raise AssertionError("opt_info of %r succeeded" % bad)
    except nbd.Error:
        pass
    check(h.aio_is_negotiating(), "not negotiating after a failed opt_info(%r)" % bad)

# opt_go: with base:allocation
h.set_export_name(RW)
h.add_meta_context("base:allocation")
h.add_meta_context("nosuch:context")
h.opt_go()
check(h.aio_is_ready(), "not ready after opt_go")
check(h.get_structured_replies_negotiated(), "structured replies not negotiated")
check(h.can_meta_context("base:allocation"), "base:allocation not negotiated")
check(not h.can_meta_context("nosuch:context"), "nosuch:context negotiated")
for f in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_cache", "can_df"):
    check(getattr(h, f)(), "%s is false" % f)
check(not h.is_read_only(), "read-only")
check(h.pread(4 * B, 0) == pat(4 * B, 1), "blocks 0-3")
h.shutdown()

# opt_abort: a clean goodbye during negotiation
a = nbd.NBD()
a.set_opt_mode(True)
a.connect_uri(uri(RW))
a.opt_abort()
check(a.aio_is_closed(), "not closed after opt_abort")

# --------------------------------------------------------------- commands
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri(RW))

# pwrite (+FUA) and pread, aligned and not
h.pwrite(pat(B, 2), 8 * B, nbd.CMD_FLAG_FUA)
check(h.pread(B, 8 * B) == pat(B, 2), "FUA write reads back")
h.pwrite(pat(3 * B + 777, 3), 10 * B + 123)
check(h.pread(3 * B + 777, 10 * B + 123) == pat(3 * B + 777, 3), "unaligned write reads back")
check(h.pread(123, 10 * B) == bytes(123), "head of block 10 is zero")
tail = 14 * B - (13 * B + 900)
check(h.pread(tail, 13 * B + 900) == bytes(tail), "tail of block 13 is zero")
if bmin == 1:
    h.pwrite(b"\x5a", 20 * B + 3)
    check(h.pread(3, 20 * B + 2) == b"\0\x5a\0", "1-byte write")
h.flush()

# pread_structured: data chunks for data, hole chunks for unmapped ranges
# (blocks 4-7 were never written), chunks cover the request exactly once
def chunks(h, count, offset, flags=0):
    got = []

    def cb(buf, off, status, err):
        got.append((off, bytes(buf), status))
        return 0

    buf = h.pread_structured(count, offset, cb, flags)
    return bytes(buf), sorted(got)


buf, ch = chunks(h, 10 * B, 0)
check(buf == pat(4 * B, 1) + bytes(4 * B) + pat(B, 2) + bytes(B), "pread_structured data")
pos = 0
for off, data, st in ch:
    check(off == pos, "chunks overlap or leave a gap at %d: %s" % (pos, [(o, len(d), s) for o, d, s in ch]))
    check(st in (nbd.READ_DATA, nbd.READ_HOLE), "chunk status %d" % st)
    if st == nbd.READ_HOLE:
        check(data == bytes(len(data)), "hole chunk with data")
    pos += len(data)
check(pos == 10 * B, "chunks cover %d of %d" % (pos, 10 * B))
holes = sum(len(d) for o, d, s in ch if s == nbd.READ_HOLE)
check(holes >= 4 * B, "only %d bytes of holes reported over 4 unmapped blocks: %s" % (holes, [(o, len(d), s) for o, d, s in ch]))
check(all(s == nbd.READ_HOLE for o, d, s in ch if 4 * B <= o < 8 * B), "unmapped blocks 4-7 sent as data")
# DF: at most one content chunk, data and hole merged into data
buf, ch = chunks(h, 6 * B, 2 * B, nbd.CMD_FLAG_DF)
check(buf == pat(4 * B, 1)[2 * B:] + bytes(4 * B), "DF read data")
check(len(ch) == 1 and ch[0][2] == nbd.READ_DATA, "DF read sent %d chunks" % len(ch))

# block status: data, hole; REQ_ONE gives one extent
check(status_at(h, 0, 4 * B) == 0, "blocks 0-3 not data")
check(status_at(h, 4 * B, 4 * B) == nbd.STATE_HOLE | nbd.STATE_ZERO, "blocks 4-7 not hole|zero")
ex = extents(h, 8 * B, 0, nbd.CMD_FLAG_REQ_ONE)
check(len(ex) == 1, "REQ_ONE gave %d extents" % len(ex))
check(ex[0][0] == 0 and 0 < ex[0][1] <= 4 * B and ex[0][2] == 0, "REQ_ONE extent %s" % (ex,))
ex = extents(h, 3 * B, 5 * B, nbd.CMD_FLAG_REQ_ONE)
check(len(ex) == 1 and 0 < ex[0][1] <= 3 * B and ex[0][2] == 3, "REQ_ONE on a hole: %s" % (ex,))
ex = extents(h, SIZE, 0)
check(sum(e[1] for e in ex) <= SIZE and ex[0][0] == 0, "whole-volume block status: %s" % ex[:4])
ex = extents(h, 1000, SIZE - 1000)
check(len(ex) >= 1 and sum(e[1] for e in ex) <= 1000, "block status at the end: %s" % ex)

# trim: whole blocks become holes and read zeros; around them data stays
h.pwrite(pat(4 * B, 4), 30 * B)
h.trim(2 * B, 31 * B)
check(h.pread(4 * B, 30 * B) == pat(B, 4) + bytes(2 * B) + pat(4 * B, 4)[3 * B:], "trim")
check(status_at(h, 31 * B, 2 * B) == 3, "trimmed blocks not hole|zero")
h.trim(B, 30 * B, nbd.CMD_FLAG_FUA)
check(h.pread(B, 30 * B) == bytes(B), "trim+FUA")
# an unaligned trim: the whole sectors in it are discarded and read zeros
# (DESIGN: I/O semantics); the partial sectors at its edges read old or
# zero; nothing outside it changes
old = pat(4 * B, 4)[3 * B:]
h.trim(2000, 33 * B + 10)
got = h.pread(B, 33 * B)
check(got[:10] == old[:10] and got[2010:] == old[2010:], "unaligned trim changed bytes outside it")
check(got[512:1536] == bytes(1024), "unaligned trim: the sectors inside it do not read zeros")
for lo, hi in ((10, 512), (1536, 2010)):
    check(got[lo:hi] in (old[lo:hi], bytes(hi - lo)), "unaligned trim: edge %d-%d is neither old nor zero" % (lo, hi))

# write_zeroes: plain (may punch), NO_HOLE (allocates), FAST_ZERO
h.pwrite(pat(8 * B, 5), 40 * B)
h.zero(2 * B, 40 * B)
check(h.pread(3 * B, 40 * B) == bytes(2 * B) + pat(8 * B, 5)[2 * B:3 * B], "zero")
check(status_at(h, 40 * B, 2 * B) & nbd.STATE_ZERO, "zeroed blocks not ZERO")
h.zero(2 * B, 42 * B, nbd.CMD_FLAG_NO_HOLE)
check(h.pread(2 * B, 42 * B) == bytes(2 * B), "zero NO_HOLE")
check(not status_at(h, 42 * B, 2 * B) & nbd.STATE_HOLE, "NO_HOLE zeroes reported as a hole")
h.zero(2 * B, 44 * B, nbd.CMD_FLAG_FAST_ZERO)
check(h.pread(2 * B, 44 * B) == bytes(2 * B), "zero FAST_ZERO")
h.zero(B, 47 * B, nbd.CMD_FLAG_FUA)
check(h.pread(B, 47 * B) == bytes(B), "zero FUA")
try:  # may legitimately refuse with ENOTSUP: allocating zeroes is not fast
    h.zero(B, 46 * B, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    check(h.pread(B, 46 * B) == bytes(B), "zero FAST_ZERO|NO_HOLE")
except nbd.Error as e:
    check(e.errno == "ENOTSUP" and "command failed" in e.string, "FAST_ZERO|NO_HOLE: %s" % e.string)
    check(h.pread(B, 46 * B) == pat(8 * B, 5)[6 * B:7 * B], "a refused FAST_ZERO changed the data")
before = h.pread(B, 48 * B)
h.zero(100, 48 * B + 7)  # unaligned: exactly those bytes
check(h.pread(B, 48 * B) == before[:7] + bytes(100) + before[107:], "unaligned zero")

# cache and flush (with and without data around)
h.cache(4 * B, 0)
h.cache(SIZE, 0)
h.flush()

# ------------------------------------------------ bad requests, strict off
h.set_strict_mode(0)
E = ("EINVAL",)
server_error(E, lambda: h.pread(512, SIZE), "read past the end")
server_error(E, lambda: h.pread(1024, SIZE - 512), "read across the end")
server_error(E, lambda: h.pread(512, (1 << 63) - 1), "read at 2^63")
server_error(E, lambda: h.pread(512, (1 << 64) - 512), "read at 2^64-512 (wraps)")
server_error(E, lambda: h.pread_structured(512, SIZE, lambda *a: 0), "structured read past the end")
server_error(("ENOSPC", "EINVAL"), lambda: h.pwrite(b"x" * 512, SIZE), "write past the end")
server_error(("ENOSPC", "EINVAL"), lambda: h.pwrite(b"x" * 1024, SIZE - 512), "write across the end")
server_error(("ENOSPC", "EINVAL"), lambda: h.trim(512, SIZE), "trim past the end")
server_error(("ENOSPC", "EINVAL"), lambda: h.zero(512, SIZE), "zero past the end")
server_error(E, lambda: h.cache(512, SIZE), "cache past the end")
server_error(E, lambda: extents(h, 512, SIZE), "block status past the end")
# flags that do not apply to the command, and unknown flag bits
server_error(E, lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE), "read with NO_HOLE")
server_error(E, lambda: h.pread(512, 0, nbd.CMD_FLAG_REQ_ONE), "read with REQ_ONE")
server_error(E, lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_REQ_ONE), "write with REQ_ONE")
server_error(E, lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_DF), "write with DF")
server_error(E, lambda: h.trim(512, 0, nbd.CMD_FLAG_NO_HOLE), "trim with NO_HOLE")
server_error(E, lambda: h.pread(512, 0, 1 << 9), "read with flag bit 9")
server_error(E, lambda: h.pwrite(b"x" * 512, 0, 1 << 15), "write with flag bit 15")
check(h.pread(4 * B, 0) == pat(4 * B, 1), "a refused write changed blocks 0-3")
# larger than the maximum block size (32 MiB)
server_error(("EINVAL", "EOVERFLOW"), lambda: h.pread((32 << 20) + 512, 0), "read of 32 MiB + 512")
# zero-length requests: an error or a no-op, never a hang or a disconnect
for what, fn in (("read", lambda: h.pread(0, 0)), ("trim", lambda: h.trim(0, 0)),
                 ("zero", lambda: h.zero(0, 0)), ("write", lambda: h.pwrite(b"", 0))):
    try:
        fn()
    except nbd.Error as e:
        check("command failed" in e.string, "zero-length %s: %s" % (what, e.string))
check(h.aio_is_ready(), "connection not usable after bad requests")
check(h.pread(4 * B, 0) == pat(4 * B, 1), "read after bad requests")
check(h.pread(32 << 20, 0)[:4 * B] == pat(4 * B, 1), "read of exactly 32 MiB")
h.pwrite(pat(32 << 20, 6), 16 << 20)
check(h.pread(32 << 20, 16 << 20) == pat(32 << 20, 6), "write of exactly 32 MiB")
h.flush()
h.shutdown()

# ------------------------------------------------------ read-only export
r = nbd.NBD()
r.add_meta_context("base:allocation")
r.connect_uri(uri(RO))
check(r.is_read_only(), "%s not read-only" % RO)
check(r.pread(4 * B, 0) == pat(4 * B, 1), "snapshot content")
check(r.pread(B, 8 * B) == bytes(B), "snapshot sees a write made after it")
check(status_at(r, 0, 4 * B) == 0 and status_at(r, 4 * B, 4 * B) == 3, "snapshot block status")
r.set_strict_mode(0)
P = ("EPERM",)
server_error(P, lambda: r.pwrite(b"x" * 512, 0), "write to read-only")
server_error(P, lambda: r.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA), "FUA write to read-only")
server_error(P, lambda: r.trim(B, 0), "trim of read-only")
server_error(P, lambda: r.zero(B, 0), "zero of read-only")
server_error(P, lambda: r.zero(B, 0, nbd.CMD_FLAG_NO_HOLE), "NO_HOLE zero of read-only")
check(r.aio_is_ready(), "read-only connection not usable after EPERM")
check(r.pread(4 * B, 0) == pat(4 * B, 1), "read-only export changed")
r.shutdown()

# ------------------------------------- simple replies, old handshakes
s = nbd.NBD()
s.set_request_structured_replies(False)
s.connect_uri(uri(RW))
check(not s.get_structured_replies_negotiated(), "structured replies without asking")
check(s.pread(8 * B, 0) == pat(4 * B, 1) + bytes(4 * B), "simple-reply read")
s.set_strict_mode(0)
server_error(E, lambda: s.pread(512, SIZE), "simple-reply read past the end")
check(s.pread(B, 0) == pat(B, 1), "simple-reply read after an error")
s.shutdown()


def old_handshake(flags):
    o = nbd.NBD()
    o.set_handshake_flags(flags)
    o.connect_uri(uri(RW))
    check(o.get_size() == SIZE, "handshake flags %d: size" % flags)
    check(o.pread(B, 0) == pat(B, 1), "handshake flags %d: read" % flags)
    o.shutdown()


old_handshake(nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE)  # no NO_ZEROES

# many requests in flight on one connection, replies in any order
m = nbd.NBD()
m.connect_uri(uri(RW))
cookies = []
bufs = []
for i in range(64):
    cookies.append(m.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(pat(B, 100 + i))), (100 + i) * B))
while m.aio_in_flight() > 0:
    m.poll(-1)
for c in cookies:
    check(m.aio_command_completed(c), "aio write %d" % c)
for i in range(64):
    bufs.append((i, nbd.Buffer(B)))
    cookies.append(m.aio_pread(bufs[-1][1], (100 + i) * B))
while m.aio_in_flight() > 0:
    m.poll(-1)
for c in cookies[64:]:
    check(m.aio_command_completed(c), "aio read %d" % c)
for i, b in bufs:
    check(b.to_bytearray() == bytearray(pat(B, 100 + i)), "aio read %d" % i)
m.shutdown()

# sub-sector writes (read-modify-write in the daemon) from 4 connections
# to the same sectors at once: none may undo another
hs = [nbd.NBD() for _ in range(4)]
for x in hs:
    x.connect_uri(uri(RW))
BASE, N = 56 << 20, 1024
for rnd in range(2):
    cookies = []
    for sec in range(N):
        for k, x in enumerate(hs):
            buf = nbd.Buffer.from_bytearray(bytearray([rnd * 4 + k + 1]) * 100)
            cookies.append((x, x.aio_pwrite(buf, BASE + sec * 512 + k * 100 + rnd)))
        if sec % 64 == 63:
            for x in hs:
                while x.aio_in_flight() > 16:
                    x.poll(-1)
    for x in hs:
        while x.aio_in_flight() > 0:
            x.poll(-1)
    for x, c in cookies:
        check(x.aio_command_completed(c), "sub-sector write")
    data = hs[0].pread(N * 512, BASE)
    lost = [(sec, k) for sec in range(N) for k in range(4)
            if data[sec * 512 + k * 100 + rnd:sec * 512 + k * 100 + rnd + 100] != bytes([rnd * 4 + k + 1]) * 100]
    check(not lost, "round %d: %d sub-sector writes lost, e.g. sector %s" % (rnd, len(lost), lost[:3]))
for x in hs:
    x.shutdown()

# plain newstyle (no FIXED_NEWSTYLE): EXPORT_NAME only
try:
    old_handshake(0)
except nbd.Error as e:
    raise AssertionError("a plain newstyle client (set_handshake_flags(0)) was refused: %s" % e.string)

print("proto_libnbd: %d checks passed" % checks)
