# The NBD spec's MUSTs (NetworkBlockDevice/nbd doc/proto.md), walked byte
# by byte against the daemon, with exact replies and a byte model of the
# volume as the oracle.  Run by test-spec.sh:
#
#   proto_spec.py plain SOCKET RW RO ID     RW: a fresh 64 MiB volume (it is
#                                           written here), RO: a read-only
#                                           snapshot, ID: RW's id
#   proto_spec.py tls-require SOCKET PKI RW  --tls require, X.509 in PKI
#   proto_spec.py tls-optional SOCKET PKI RW --tls optional
#
# Each section names the part of proto.md it checks.
import ssl
import struct
import sys

from nbdwire import *

checks = 0
failures = []


def check(cond, what):
    """A failed check is reported and the section goes on (so that one
    run shows every MUST missed); a reply out of step ends the section."""
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL: %s" % what, file=sys.stderr, flush=True)


def section(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # the section cannot go on; the next may
        failures.append("%s: stopped by %s: %s" % (fn.__name__, type(e).__name__, e))
        print("FAIL: %s" % failures[-1], file=sys.stderr, flush=True)


def err_is(r, want, what):
    check(error_of(r) == want, "%s: error %d, want %d (%s)" % (what, error_of(r), want, r if r[0] == "simple" else [(f, t) for f, t, p in r[2]]))


def string_ok(b, what):
    """A proto.md string: UTF-8, no NUL, at most 4096 bytes; and no
    control character that a log or a terminal would act on."""
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        check(False, "%s: not UTF-8: %r" % (what, b))
        s = b.decode("utf-8", "replace")
    check(len(b) <= 4096 and not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in s),
          "%s: control characters in %r" % (what, s))
    return s


SIZE = 64 << 20
mode, sock = sys.argv[1], sys.argv[2]


def conn(cflags=3, **kw):
    return Conn(path=sock, cflags=cflags, **kw)


# ---------------------------------------------------------------- plain --

def greeting():
    """"Newstyle negotiation", "Handshake flags": FIXED_NEWSTYLE and
    NO_ZEROES, no other flag; the server MUST close the connection on a
    client flag it does not know."""
    c = conn()
    check(c.hflags == 3, "handshake flags %#x" % c.hflags)
    c.close()
    for bad in (4, 1 << 31, 3 | 8):
        c = conn(cflags=bad)
        check(c.closed(), "client flags %#x: the server must close" % bad)


def options_unknown_and_sizes(rw):
    """"Baseline": an option the server does not implement MUST get
    ERR_UNSUP and the next one MUST still parse; option data too large to
    keep gets ERR_TOO_BIG where the option takes data, ERR_INVALID where
    it takes none, ERR_UNSUP when unknown (never TOO_BIG for an option
    the server does not know); EXPORT_NAME, which has no error reply,
    closes; a length the server will not even skip closes."""
    c = conn()
    for o in (0, OPT_PEEK, 11, 12, 13, 0x4242, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF):
        r = c.opt(o, b"some data")
        check(len(r) == 1 and r[0][0] == ERR_UNSUP, "option %#x: %s, want ERR_UNSUP" % (o, r))
        string_ok(r[0][1], "ERR_UNSUP message")
    big = b"\xa5" * 70000
    for o, want in ((OPT_LIST, ERR_INVALID), (OPT_STARTTLS, ERR_INVALID), (OPT_SR, ERR_INVALID),
                    (OPT_INFO, ERR_TOO_BIG), (OPT_GO, ERR_TOO_BIG), (OPT_LIST_META, ERR_TOO_BIG),
                    (OPT_SET_META, ERR_TOO_BIG), (OPT_PEEK, ERR_UNSUP), (0x4242, ERR_UNSUP)):
        r = c.opt(o, big)
        check(len(r) == 1 and r[0][0] == want, "option %d with 70000 bytes: %#x, want %#x" % (o, r[0][0], want))
    # the connection is still in sync: a real option works
    check(c.final(OPT_LIST) == REP_ACK, "LIST after the big options")
    c.send_opt(OPT_EXPORT_NAME, big)
    check(c.closed(), "EXPORT_NAME of 70000 bytes: the server must close")
    c = conn()
    c.send_opt(OPT_INFO, length=(64 << 20) + 1)
    check(c.closed(), "an option of 64 MiB + 1: the server closes (denial of service)")


def abort():
    """NBD_OPT_ABORT: "The server MUST reply with NBD_REP_ACK", and
    SHOULD ignore data sent with it; then the session ends."""
    for n in (0, 5, 70000):
        c = conn()
        r = c.opt(OPT_ABORT, b"x" * n)
        check(r == [(REP_ACK, b"")], "ABORT with %d bytes: %s" % (n, r))
        check(c.closed(), "ABORT with %d bytes: the session must end" % n)


def info_go(rw, ro, vid):
    """NBD_OPT_INFO/GO: NBD_INFO_EXPORT always before ACK; unknown
    information requests MUST be ignored; SEND_DF MUST be clear unless
    structured replies were negotiated ("Transmission flags")."""
    c = conn()
    r = c.opt(OPT_INFO, name_data(rw, (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 0x1234, 0xFFFF)))
    check(r[-1][0] == REP_ACK, "INFO: %s" % r)
    infos = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in r[:-1] if t == REP_INFO}
    check(set(infos) == {INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE},
          "INFO replies %s (unknown requests must be ignored)" % sorted(infos))
    size, tf = struct.unpack(">QH", infos[INFO_EXPORT])
    check(size == SIZE, "INFO size %d" % size)
    check(tf & TF_HAS_FLAGS and not tf & TF_DF, "INFO flags %#x before STRUCTURED_REPLY: SEND_DF set" % tf)
    want = TF_FLUSH | TF_FUA | TF_TRIM | TF_ZEROES | TF_MULTI_CONN | TF_CACHE | TF_FAST_ZERO
    check(tf & want == want and not tf & TF_READ_ONLY, "INFO flags %#x" % tf)
    check(infos[INFO_NAME] == rw.encode(), "INFO_NAME %r" % infos[INFO_NAME])
    string_ok(infos[INFO_DESCRIPTION], "INFO_DESCRIPTION")
    check(struct.unpack(">III", infos[INFO_BLOCK_SIZE]) == (1, 4096, 32 << 20), "block sizes")
    # the same volume by "#ID", with the canonical name in INFO_NAME
    r = c.opt(OPT_INFO, name_data("#%d" % vid, (INFO_NAME,)))
    check(r[-1][0] == REP_ACK and (REP_INFO, struct.pack(">H", INFO_NAME) + rw.encode()) in r, "INFO #ID: %s" % r)
    for bad, what in ((struct.pack(">I", 100) + b"abc", "name longer than the data"),
                      (name_data(rw)[:-2], "no request count"),
                      (name_data(rw, (1,))[:-1], "half a request"),
                      (struct.pack(">I", 3) + b"v\0l" + struct.pack(">H", 0), "NUL in the name")):
        r = c.opt(OPT_INFO, bad)
        check(len(r) == 1 and r[0][0] == ERR_INVALID, "INFO, %s: %s" % (what, r))
    for name in ("nosuch", "", "#999999999", "#0", "#x"):
        r = c.opt(OPT_INFO, name_data(name))
        check(len(r) == 1 and r[0][0] == ERR_UNKNOWN, "INFO %r: %s (no NBD_REP_INFO for an unknown export)" % (name, r))
    r = c.opt(OPT_INFO, name_data(ro))
    size, tf = export_info(r)
    check(tf & TF_READ_ONLY and not tf & (TF_FUA | TF_TRIM | TF_ZEROES | TF_FAST_ZERO), "read-only flags %#x" % tf)
    c.sr()
    size, tf = export_info(c.opt(OPT_INFO, name_data(rw)))
    check(tf & TF_DF, "INFO flags %#x after STRUCTURED_REPLY: no SEND_DF" % tf)
    size, tf = c.go(rw)
    check(tf & TF_DF, "GO flags %#x after STRUCTURED_REPLY: no SEND_DF" % tf)
    c.close()
    c = conn()
    size, tf = c.go(rw)
    check(not tf & TF_DF, "GO flags %#x without STRUCTURED_REPLY: SEND_DF set" % tf)
    # "MUST NOT send any zero padding bytes after the NBD_REP_ACK": the
    # next bytes are the reply to our first request
    r = c.cmd(CMD_FLUSH, cookie=77)
    check(r == ("simple", 77, 0, b""), "first reply after GO: %s" % (r,))
    c.close()


def meta_contexts(rw, ro, vid):
    """NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT, "Metadata querying"."""
    c = conn()
    c.sr()
    for qs, want in (([], [b"base:allocation"]), (["base:"], [b"base:allocation"]),
                     (["base:allocation"], [b"base:allocation"]), (["nosuch:x", "x-foo:"], []),
                     (["base:nosuch"], [])):
        r = c.opt(OPT_LIST_META, meta_data(rw, qs))
        check(r[-1][0] == REP_ACK, "LIST_META_CONTEXT %s: %s" % (qs, r))
        got = [d[4:] for t, d in r[:-1] if t == REP_META]
        check(got == want, "LIST_META_CONTEXT %s: %s, want %s" % (qs, got, want))
    # "If the option request is syntactically invalid ... MUST fail with
    # NBD_REP_ERR_INVALID"
    for bad in (meta_data(rw, ["base:allocation"])[:-3], meta_data(rw, []) + b"x",
                struct.pack(">I", 50) + b"vol"):
        for o in (OPT_LIST_META, OPT_SET_META):
            r = c.opt(o, bad)
            check(len(r) == 1 and r[0][0] == ERR_INVALID, "meta context option %d, malformed: %s" % (o, r))
    c.close()

    def selection_after(steps, go_name, want_ok, what, cookie=9):
        """Run option steps (opt, data) on a fresh connection with
        structured replies, GO to go_name, and see whether BLOCK_STATUS
        works (a context is selected for this export) or gets EINVAL."""
        c = conn()
        c.sr()
        ids = []
        for o, d in steps:
            r = c.opt(o, d)
            ids += [struct.unpack(">I", x[:4])[0] for t, x in r if t == REP_META]
        c.go(go_name)
        r = c.cmd(CMD_BS, 0, 1 << 20, cookie=cookie)
        if want_ok:
            err_is(r, 0, what)
            bs = block_status(r)
            check(list(bs) == ids[-1:], "%s: block status contexts %s, want the last id of %s" % (what, list(bs), ids))
        else:
            err_is(r, EINVAL, what)
        c.close()

    ok = (OPT_SET_META, meta_data(rw, ["base:allocation"]))
    selection_after([ok], rw, True, "SET_META_CONTEXT then GO")
    # "#ID": the same export as its name (the bug of issue 14, item 19)
    selection_after([(OPT_SET_META, meta_data("#%d" % vid, ["base:allocation"]))], "#%d" % vid, True,
                    "SET_META_CONTEXT #ID then GO #ID")
    selection_after([(OPT_SET_META, meta_data(rw, ["base:allocation"]))], "#%d" % vid, True,
                    "SET_META_CONTEXT by name then GO #ID")
    selection_after([(OPT_SET_META, meta_data("#%d" % vid, ["base:allocation"]))], rw, True,
                    "SET_META_CONTEXT #ID then GO by name")
    selection_after([(OPT_SET_META, meta_data(ro, ["base:allocation"]))], rw, False,
                    "SET_META_CONTEXT for another export")
    # "If zero queries are sent, the server MUST select no metadata
    # contexts"; "base:" MUST be ignored by SET
    selection_after([ok, (OPT_SET_META, meta_data(rw, []))], rw, False, "SET_META_CONTEXT with no query")
    selection_after([ok, (OPT_SET_META, meta_data(rw, ["base:"]))], rw, False, "SET_META_CONTEXT base:")
    # "Issuing this command replaces all previously-set metadata contexts
    # (including when this command fails)"
    for bad, what in ((meta_data("nosuch", ["base:allocation"]), "unknown export"),
                      (meta_data(rw, ["base:allocation"])[:-1], "malformed"),
                      (b"\0" * 70000, "too big")):
        selection_after([ok, (OPT_SET_META, bad)], rw, False, "a failed SET_META_CONTEXT (%s) after a good one" % what)
    selection_after([ok, (OPT_SET_META, meta_data(rw, ["base:allocation"]))], rw, True, "SET_META_CONTEXT twice")
    # SET before STRUCTURED_REPLY: "a server SHOULD send ERR_INVALID"
    c = conn()
    r = c.opt(OPT_SET_META, meta_data(rw, ["base:allocation"]))
    check(len(r) == 1 and r[0][0] == ERR_INVALID, "SET_META_CONTEXT before STRUCTURED_REPLY: %s" % r)
    c.close()
    # EXPORT_NAME "#ID" keeps a selection made for that volume
    c = conn()
    c.sr()
    c.opt(OPT_SET_META, meta_data("#%d" % vid, ["base:allocation"]))
    c.send_opt(OPT_EXPORT_NAME, ("#%d" % vid).encode())
    size, tf = struct.unpack(">QH", c.recvn(10))
    r = c.cmd(CMD_BS, 0, 4096, flags=F_REQ_ONE, cookie=3)
    err_is(r, 0, "BLOCK_STATUS after EXPORT_NAME #ID")
    if not error_of(r):
        ext = list(block_status(r).values())[0]
        check(len(ext) == 1 and 0 < ext[0][0] <= 4096, "REQ_ONE: one extent within the length: %s" % ext)
    c.close()


def error_strings():
    """Strings: error replies are UTF-8 (proto.md, "strings"); what the
    client sent comes back escaped, never raw (issue 14, item 21)."""
    # a name that reaches the log (tests/nbd/test-spec.sh looks at it;
    # the daemon logs ten lines a second about misbehaving clients, and
    # fewer than that come before this one)
    c = conn()
    c.send_opt(OPT_EXPORT_NAME, b"x\n2026-01-01 00:00:00.000 thinvol serve[1]: forged-line")
    check(c.closed(), "EXPORT_NAME of an unknown export: the server must close")
    c = conn()
    for name in (b"bad\nname\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", "e\u202egnp.exe".encode(), b"a\\b", b"x" * 4000):
        r = c.opt(OPT_INFO, name_data(name))
        check(len(r) == 1 and r[0][0] == ERR_UNKNOWN, "INFO %r: %s" % (name[:20], r))
        s = string_ok(r[0][1], "error message for %r" % name[:20])
        check("\u202e" not in s and len(r[0][1]) < 600, "error message %r" % s[:80])
    r = c.opt(OPT_INFO, name_data(b"bad\nname\xff"))
    check("bad\\x0aname\\xff" in r[0][1].decode(), "escaped name in %r" % r[0][1])
    r = c.opt(OPT_INFO, name_data("e\u202egnp".encode()))
    check("e\\u202egnp" in r[0][1].decode(), "bidi control shown as \\u202e: %r" % r[0][1])
    # characters that hide text (review 2, NBD finding 8): word joiner, tag
    # characters (an invisible "evil"), interlinear annotation, soft
    # hyphen, Mongolian vowel separator, Hangul filler, private use
    for ch in ("\u2060", "\U000E0065", "\uFFF9", "\u00AD", "\u180E", "\u3164", "\uE000", "\U0010FFFD"):
        r = c.opt(OPT_INFO, name_data(("v" + ch + "l").encode()))
        s = string_ok(r[0][1], "error message for U+%04X" % ord(ch))
        esc = ("\\u%04x" if ord(ch) <= 0xFFFF else "\\U%08x") % ord(ch)
        check(ch not in s and ("v" + esc + "l") in s, "U+%04X not shown as %s: %r" % (ord(ch), esc, s))
    c.close()


class Model:
    """The volume's bytes as the client wrote them."""

    def __init__(self):
        self.b = bytearray(SIZE)


def pat(n, seed):
    period = bytes((seed * 7 + i * 13 + 1) & 0xFF for i in range(251))
    return (period * (n // 251 + 1))[:n]


def commands(rw, ro):
    """Every command with every flag bit ("Command flags", "Request
    types", "Error values"): FUA MUST be accepted on every command; a flag
    not defined for the command, EINVAL, and a refused write MUST NOT
    write; DF and REQ_ONE as specified; edge lengths; a read-only export
    answers EPERM to anything that writes, past the end too."""
    m = Model()
    defined = {CMD_READ: F_FUA | F_DF, CMD_WRITE: F_FUA, CMD_FLUSH: F_FUA, CMD_TRIM: F_FUA,
               CMD_CACHE: F_FUA, CMD_WZ: F_FUA | F_NO_HOLE | F_FAST_ZERO, CMD_BS: F_FUA | F_REQ_ONE}
    c = conn()
    c.sr()
    c.opt(OPT_SET_META, meta_data(rw, ["base:allocation"]))
    size, tf = c.go(rw)
    check(size == SIZE and tf & TF_DF, "GO %d %#x" % (size, tf))
    cookie = 100
    for typ, ok_flags in defined.items():
        for bit in range(16):
            fl = 1 << bit
            cookie += 1
            off = (1 << 20) + bit * 4096  # a block of its own per flag
            data = pat(4096, bit + 10 * typ)
            if typ == CMD_WRITE:
                r = c.cmd(typ, off, 4096, fl, cookie, data)
            elif typ == CMD_FLUSH:
                r = c.cmd(typ, 0, 0, fl, cookie)
            else:
                r = c.cmd(typ, off, 4096, fl, cookie)
            what = "command %d with flag %#x" % (typ, fl)
            if typ == CMD_WZ and fl == F_FAST_ZERO:
                # 4 KiB inside a mapped pool block would take a write of
                # zeroes: not fast (see fast_zero), nothing changed
                err_is(r, ENOTSUP, what)
            elif fl & ok_flags:
                err_is(r, 0, what)
                if error_of(r):
                    continue
                if typ == CMD_WRITE:
                    m.b[off:off + 4096] = data
                elif typ in (CMD_TRIM, CMD_WZ):
                    m.b[off:off + 4096] = bytes(4096)
                elif typ == CMD_READ:
                    check(read_data(r, off, 4096) == bytes(m.b[off:off + 4096]), "%s: data" % what)
                    if fl == F_DF:
                        check(len(content_chunks(r)) == 1, "%s: DF allows one content chunk" % what)
                elif typ == CMD_BS:
                    ext = list(block_status(r).values())
                    check(len(ext) == 1 and ext[0], "%s: one context, extents %s" % (what, ext))
                    if fl == F_REQ_ONE:
                        check(len(ext[0]) == 1 and ext[0][0][0] <= 4096, "%s: %s" % (what, ext))
            else:
                err_is(r, EINVAL, what)
                if typ == CMD_READ:
                    check(r[0] == "structured" and not content_chunks(r),
                          "%s: MUST NOT be a simple reply, nor carry data, with structured replies" % what)
    # FAST_ZERO with NO_HOLE: writing zeroes is not fast, MUST fail quickly with ENOTSUP
    m.b[5 << 20:(5 << 20) + 8192] = pat(8192, 3)
    err_is(c.cmd(CMD_WRITE, 5 << 20, 8192, 0, 1, pat(8192, 3)), 0, "write")
    err_is(c.cmd(CMD_WZ, 5 << 20, 8192, F_FAST_ZERO | F_NO_HOLE, 2), ENOTSUP, "WRITE_ZEROES FAST_ZERO|NO_HOLE")
    for typ in (8, 9, 42, 0x7FFF, 0xFFFF):
        err_is(c.cmd(typ, 0, 512, 0, 3), EINVAL, "unknown command %d" % typ)
    # every range command at the edges
    past = [(SIZE, 1), (SIZE - 512, 1024), ((1 << 64) - 512, 1024), (SIZE + 4096, 4096)]
    for typ, want in ((CMD_READ, EINVAL), (CMD_CACHE, EINVAL), (CMD_BS, EINVAL), (CMD_TRIM, EINVAL),
                      (CMD_WRITE, ENOSPC), (CMD_WZ, ENOSPC)):
        for off, ln in past:
            data = b"\xee" * ln if typ == CMD_WRITE else b""
            err_is(c.cmd(typ, off, ln, 0, 4, data), want, "command %d at %d+%d (past the end)" % (typ, off, ln))
        data = b"\0" * 0
        err_is(c.cmd(typ, 4096, 0, 0, 5, data), EINVAL, "command %d of length 0" % typ)
        data = pat(512, typ) if typ == CMD_WRITE else b""
        r = c.cmd(typ, SIZE - 512, 512, 0, 6, data)
        err_is(r, 0, "command %d of the last 512 bytes" % typ)
        if typ == CMD_WRITE:
            m.b[SIZE - 512:] = data
        elif typ in (CMD_TRIM, CMD_WZ):
            m.b[SIZE - 512:] = bytes(512)
    for off, ln in ((0, 512), (512, 0), (1, 1)):
        err_is(c.cmd(CMD_FLUSH, off, ln, 0, 7), EINVAL, "FLUSH with offset %d length %d" % (off, ln))
    # lengths beyond the maximum payload: a structured READ MAY get
    # EOVERFLOW (and no content); a WRITE, EINVAL with its payload skipped
    r = c.cmd(CMD_READ, 0, (32 << 20) + 1, 0, 8)
    err_is(r, EOVERFLOW, "READ of 32 MiB + 1 with structured replies")
    check(not content_chunks(r), "READ of 32 MiB + 1 sent content")
    err_is(c.cmd(CMD_WRITE, 0, (32 << 20) + 1, F_FUA, 9, b"\xee" * ((32 << 20) + 1)), EINVAL, "WRITE of 32 MiB + 1")
    r = c.cmd(CMD_READ, 0, 32 << 20, F_DF, 10)
    check(read_data(r, 0, 32 << 20) == bytes(m.b[:32 << 20]), "READ of 32 MiB with DF (after an oversized WRITE)")
    check(len(content_chunks(r)) == 1, "READ with DF: one content chunk")
    # commands without payload MAY exceed the maximum payload
    err_is(c.cmd(CMD_BS, 0, 0xFFFFFFFF & ~511, 0, 11), EINVAL, "BLOCK_STATUS past the end")
    r = c.cmd(CMD_BS, 0, SIZE, 0, 12)
    err_is(r, 0, "BLOCK_STATUS of the whole export")
    ext = list(block_status(r).values())[0]
    check(all(n for n, f in ext) and sum(n for n, f in ext[:-1]) < SIZE, "BLOCK_STATUS extents %s" % ext[:8])
    err_is(c.cmd(CMD_WZ, 8 << 20, 40 << 20, F_FUA, 13), 0, "WRITE_ZEROES of 40 MiB")
    m.b[8 << 20:48 << 20] = bytes(40 << 20)
    err_is(c.cmd(CMD_CACHE, 0, SIZE, 0, 14), 0, "CACHE of the whole export")
    # the model: everything written, zeroed, refused, reads back
    for off in range(0, SIZE, 16 << 20):
        r = c.cmd(CMD_READ, off, 16 << 20, 0, 15)
        check(read_data(r, off, 16 << 20) == bytes(m.b[off:off + (16 << 20)]), "the volume at %d differs from the model" % off)
    c.close()

    # simple replies: DF is not defined without structured replies
    c = conn()
    c.go(rw)
    r = c.cmd(CMD_READ, 1 << 20, 4096, F_DF, 20)
    check(r[0] == "simple" and r[2] == EINVAL, "READ with DF without structured replies: %s" % (r,))
    r = c.cmd(CMD_READ, 1 << 20, 4096, F_FUA, 21)
    check(r[0] == "simple" and r[2] == 0 and r[3] == bytes(m.b[1 << 20:(1 << 20) + 4096]), "simple READ with FUA")
    r = c.cmd(CMD_READ, 0, (32 << 20) + 1, 0, 22)
    check(r == ("simple", 22, EINVAL, b""), "simple READ of 32 MiB + 1: %s" % (r[:3],))
    err_is(c.cmd(CMD_BS, 0, 4096, 0, 23), EINVAL, "BLOCK_STATUS without a context")
    c.req(CMD_DISC, flags=F_FUA)
    check(c.closed(), "DISC")

    # read-only: EPERM for what writes, past the end too ("Error values")
    c = conn()
    c.sr()
    c.go(ro)
    for typ in (CMD_WRITE, CMD_TRIM, CMD_WZ):
        for off, ln in ((0, 4096), (SIZE, 4096), ((1 << 64) - 512, 1024)):
            data = b"\xee" * ln if typ == CMD_WRITE else b""
            err_is(c.cmd(typ, off, ln, 0, 30, data), EPERM, "command %d at %d+%d on a read-only export" % (typ, off, ln))
    err_is(c.cmd(CMD_WZ, 0, 4096, F_FAST_ZERO, 31), EPERM, "WRITE_ZEROES FAST_ZERO on a read-only export")
    for typ in (CMD_READ, CMD_FLUSH, CMD_CACHE):
        err_is(c.cmd(typ, 0, 0 if typ == CMD_FLUSH else 4096, F_FUA, 32), 0, "command %d with FUA, read-only" % typ)
    c.close()

    # a write too large to skip: the server may hang up ("Size constraints")
    c = conn(timeout=5)
    c.go(rw)
    c.req(CMD_WRITE, 0, (64 << 20) + 1, 0, 16, b"\xee" * 4096)
    check(c.closed(), "WRITE of 64 MiB + 1: the connection is closed")


def fast_zero(rw):
    """NBD_CMD_WRITE_ZEROES with NBD_CMD_FLAG_FAST_ZERO: "the server MUST
    fail quickly with NBD_ENOTSUP unless the request can be serviced in
    less time than a corresponding NBD_CMD_WRITE", and then change
    nothing (review 2, NBD finding 7).  Fast: whole pool blocks unmapped, and
    the edges of a range in blocks that are holes already; slow: any part
    of a mapped block that would need zeroes written (a sector's
    read-modify-write, 4 KiB inside a block).  The pool's blocks are
    64 KiB (test-spec.sh)."""
    B, base = 64 << 10, 50 << 20
    c = conn()
    c.sr()
    c.opt(OPT_SET_META, meta_data(rw, ["base:allocation"]))
    c.go(rw)
    m = bytearray(pat(4 * B, 77)) + bytearray(4 * B)  # blocks 0-3 data, 4-7 holes
    err_is(c.cmd(CMD_WRITE, base, 4 * B, 0, 1, bytes(m[:4 * B])), 0, "write blocks 0-3")
    err_is(c.cmd(CMD_TRIM, base + 4 * B, 4 * B, 0, 2), 0, "trim blocks 4-7")

    def mapped():
        r = c.cmd(CMD_BS, base, 8 * B, 0, 3)
        out, pos = [], 0
        for n, f in list(block_status(r).values())[0]:
            out += [not f & 1] * (n // B)
            pos += n
        return out[:8]

    for off, ln, want, what in (
            (1, 1, ENOTSUP, "1 byte at offset 1 of a mapped block (a sector's read-modify-write)"),
            (100, 700, ENOTSUP, "700 bytes at 100 in a mapped block"),
            (4096, 4096, ENOTSUP, "4 KiB inside a mapped block"),
            (B - 512, B + 1024, ENOTSUP, "a whole block with mapped edges: nothing may change"),
            (3 * B, B + 512, 0, "a whole mapped block and an edge in a hole"),
            (4 * B + 1, 1, 0, "1 byte in a hole"),
            (4 * B + 100, 3 * B, 0, "holes, whole and in part"),
            (B, B, 0, "a whole mapped block")):
        r = c.cmd(CMD_WZ, base + off, ln, F_FAST_ZERO, 4)
        err_is(r, want, "WRITE_ZEROES FAST_ZERO, %s" % what)
        if not error_of(r):
            m[off:off + ln] = bytes(ln)
        r = c.cmd(CMD_READ, base, 8 * B, 0, 5)
        check(read_data(r, base, 8 * B) == bytes(m), "after WRITE_ZEROES FAST_ZERO, %s: the data differs" % what)
    # blocks 1 and 3 unmapped; the holes got nothing allocated
    got = mapped()
    check(got == [True, False, True, False, False, False, False, False],
          "mapped blocks after the FAST_ZERO requests: %s" % got)
    # without FAST_ZERO the slow cases are done, the slow way
    err_is(c.cmd(CMD_WZ, base + 1, 1, 0, 6), 0, "WRITE_ZEROES of 1 byte without FAST_ZERO")
    m[1] = 0
    r = c.cmd(CMD_READ, base, 8 * B, 0, 7)
    check(read_data(r, base, 8 * B) == bytes(m), "after WRITE_ZEROES of 1 byte: the data differs")
    c.close()


def no_tls():
    """Without TLS configured, STARTTLS is refused (NOTLS mode: never
    TLS_REQD), whatever the client flags."""
    for cf in (0, 1, 3):
        c = conn(cflags=cf)
        r = c.opt(OPT_STARTTLS)
        check(len(r) == 1 and r[0][0] in (ERR_POLICY, ERR_UNSUP), "STARTTLS without TLS (client flags %d): %s" % (cf, r))
        check(c.final(OPT_LIST) == REP_ACK, "LIST, client flags %d" % cf)
        c.close()


def plain(rw, ro, vid):
    section(greeting)
    section(options_unknown_and_sizes, rw)
    section(abort)
    section(info_go, rw, ro, int(vid))
    section(meta_contexts, rw, ro, int(vid))
    section(error_strings)
    section(commands, rw, ro)
    section(fast_zero, rw)
    section(no_tls)


# ------------------------------------------------------------------ TLS --

def tls_ctx(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki + "/ca-cert.pem")
    ctx.load_cert_chain(pki + "/client/client-cert.pem", pki + "/client/client-key.pem")
    return ctx


def tls_require(pki, rw):
    """FORCEDTLS: every option but STARTTLS and ABORT gets ERR_TLS_REQD
    before TLS, whatever it is and however large; EXPORT_NAME closes;
    after STARTTLS no TLS_REQD, a second STARTTLS is ERR_INVALID.  A
    client without FIXED_NEWSTYLE is in NOTLS mode: never TLS_REQD."""
    c = conn()
    for o, d in ((OPT_LIST, b""), (OPT_SR, b""), (OPT_INFO, name_data(rw)), (OPT_GO, name_data(rw)),
                 (OPT_LIST_META, meta_data(rw, [])), (OPT_SET_META, meta_data(rw, ["base:allocation"])),
                 (OPT_PEEK, b""), (0x4242, b"x"), (OPT_INFO, b"\0" * 70000), (0x4242, b"\0" * 70000),
                 (OPT_LIST, b"\0" * 70000)):
        r = c.opt(o, d)
        check(len(r) == 1 and r[0][0] == ERR_TLS_REQD, "option %d (%d bytes) before STARTTLS: %s" % (o, len(d), [t for t, x in r]))
    r = c.opt(OPT_STARTTLS, b"x")
    check(len(r) == 1 and r[0][0] == ERR_INVALID, "STARTTLS with data: %s" % r)
    c.starttls(tls_ctx(pki))
    r = c.opt(OPT_STARTTLS)
    check(len(r) == 1 and r[0][0] == ERR_INVALID, "STARTTLS twice: %s" % r)
    for o in (OPT_PEEK, 0x4242):
        r = c.opt(o)
        check(len(r) == 1 and r[0][0] == ERR_UNSUP, "option %d over TLS: %s (no TLS_REQD after TLS)" % (o, r))
    r = c.opt(OPT_INFO, b"\0" * 70000)
    check(len(r) == 1 and r[0][0] == ERR_TOO_BIG, "a big INFO over TLS: %s" % r)
    c.sr()
    c.opt(OPT_SET_META, meta_data(rw, ["base:allocation"]))
    c.go(rw)
    data = pat(200000, 9)
    err_is(c.cmd(CMD_WRITE, 12345, len(data), F_FUA, 1, data), 0, "WRITE over TLS")
    check(read_data(c.cmd(CMD_READ, 12345, len(data), 0, 2), 12345, len(data)) == data, "READ over TLS")
    err_is(c.cmd(CMD_BS, 0, 1 << 20, 0, 3), 0, "BLOCK_STATUS over TLS")
    c.req(CMD_DISC)
    check(c.closed(), "DISC over TLS")
    for n in (0, 70000):
        c = conn()
        check(c.opt(OPT_ABORT, b"y" * n) == [(REP_ACK, b"")], "ABORT with %d bytes before STARTTLS" % n)
        check(c.closed(), "ABORT")
    c = conn()
    c.send_opt(OPT_EXPORT_NAME, rw.encode())
    check(c.closed(), "EXPORT_NAME before STARTTLS: the server must close")
    # "The server MUST operate in NOTLS mode unless ... the client replied
    # with NBD_FLAG_C_FIXED_NEWSTYLE"; NOTLS: "MUST NOT respond to any
    # option request with NBD_REP_ERR_TLS_REQD"
    c = conn(cflags=2)
    for o, d in ((OPT_LIST, b""), (OPT_STARTTLS, b""), (OPT_GO, name_data(rw)), (0x4242, b""),
                 (OPT_INFO, b"\0" * 70000)):
        r = c.opt(o, d)
        check(len(r) == 1 and r[0][0] == ERR_POLICY, "client without FIXED_NEWSTYLE, TLS required, option %d: %s" % (o, [t for t, x in r]))
    check(c.opt(OPT_ABORT) == [(REP_ACK, b"")], "ABORT, no FIXED_NEWSTYLE")
    c = conn(cflags=0)
    c.send_opt(OPT_EXPORT_NAME, rw.encode())
    check(c.closed(), "EXPORT_NAME without FIXED_NEWSTYLE, TLS required: the server must close")


def tls_optional(pki, rw):
    """SELECTIVETLS with every export available both ways: STARTTLS
    forgets what was negotiated before it ("the server MUST NOT preserve
    any negotiation state"); a client without FIXED_NEWSTYLE (NOTLS
    mode) is refused STARTTLS and served in clear."""
    c = conn()
    c.sr()
    r = c.opt(OPT_SET_META, meta_data(rw, ["base:allocation"]))
    check(r[-1][0] == REP_ACK and len(r) == 2, "SET_META_CONTEXT in clear: %s" % r)
    c.starttls(tls_ctx(pki))
    size, tf = c.go(rw)
    check(not tf & TF_DF, "after STARTTLS, structured replies were kept (SEND_DF in %#x)" % tf)
    r = c.cmd(CMD_READ, 0, 4096, 0, 1)
    check(r[0] == "simple" and r[2] == 0, "READ after STARTTLS: a structured reply without renegotiating")
    r = c.cmd(CMD_BS, 0, 4096, 0, 2)
    check(r == ("simple", 2, EINVAL, b""), "BLOCK_STATUS after STARTTLS: the old context was kept: %s" % (r[:3],))
    c.close()
    for cf in (0, 2):
        c = conn(cflags=cf)
        r = c.opt(OPT_STARTTLS)
        check(len(r) == 1 and r[0][0] == ERR_POLICY, "STARTTLS without FIXED_NEWSTYLE (client flags %d): %s" % (cf, r))
        check(c.final(OPT_LIST) == REP_ACK, "LIST in NOTLS mode")
        size, tf = c.go(rw)
        r = c.cmd(CMD_READ, 0, 512, 0, 3)
        check(r[0] == "simple" and r[2] == 0, "READ in NOTLS mode")
        c.close()


if mode == "plain":
    plain(*sys.argv[3:6])
elif mode == "tls-require":
    section(tls_require, *sys.argv[3:5])
elif mode == "tls-optional":
    section(tls_optional, *sys.argv[3:5])
else:
    raise SystemExit("usage: proto_spec.py plain|tls-require|tls-optional ...")
if failures:
    raise SystemExit("proto_spec %s: %d of %d checks failed" % (mode, len(failures), checks))
print("proto_spec %s: %d checks passed" % (mode, checks))
