# The NBD protocol on the wire, for the tests that speak it byte by byte
# (proto_spec.py, limits.py): a client connection, option haggling,
# requests and replies, simple and structured, over a Unix or TCP socket,
# optionally upgraded to TLS after NBD_OPT_STARTTLS.  Imported, not run.
import socket
import struct

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003E889045565A9
REQMAGIC = 0x25609513
SIMPLE = 0x67446698
STRUCT = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_PEEK, OPT_STARTTLS = 1, 2, 3, 4, 5
OPT_INFO, OPT_GO, OPT_SR, OPT_LIST_META, OPT_SET_META = 6, 7, 8, 9, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_PLATFORM = ERR | 1, ERR | 2, ERR | 3, ERR | 4
ERR_TLS_REQD, ERR_UNKNOWN, ERR_SHUTDOWN, ERR_TOO_BIG = ERR | 5, ERR | 6, ERR | 7, ERR | 9
INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3

TF_HAS_FLAGS, TF_READ_ONLY, TF_FLUSH, TF_FUA = 1, 2, 4, 8
TF_TRIM, TF_ZEROES, TF_DF, TF_MULTI_CONN, TF_CACHE, TF_FAST_ZERO = 32, 64, 128, 256, 1024, 2048

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WZ, CMD_BS = range(8)
F_FUA, F_NO_HOLE, F_DF, F_REQ_ONE, F_FAST_ZERO = 1, 2, 4, 8, 16
EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN = 1, 5, 12, 22, 28, 75, 95, 108
T_NONE, T_DATA, T_HOLE, T_BS, T_ERROR = 0, 1, 2, 5, 0x8001


class Closed(Exception):
    """The server closed the connection."""


def name_data(name, infos=()):
    n = name if isinstance(name, bytes) else name.encode()
    return (struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) +
            b"".join(struct.pack(">H", i) for i in infos))


def meta_data(name, queries):
    n = name if isinstance(name, bytes) else name.encode()
    d = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        q = q if isinstance(q, bytes) else q.encode()
        d += struct.pack(">I", len(q)) + q
    return d


def unix_connect(path, timeout):
    """Connect to a Unix socket, waiting up to timeout seconds for room
    in its backlog as a blocking client (libnbd, qemu) would: a
    non-blocking connect fails at once with EAGAIN when it is full."""
    import time
    end = time.time() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except BlockingIOError:
            s.close()
            if time.time() > end:
                raise
            time.sleep(0.01)


class Conn:
    """A client connection, after the greeting and the client flags."""

    def __init__(self, path=None, tcp=None, cflags=3, timeout=20, source=None, greet=True):
        if tcp:
            self.s = socket.create_connection(tcp, timeout=timeout,
                                              source_address=(source, 0) if source else None)
        else:
            self.s = unix_connect(path, timeout)
        self.structured = False
        if greet:
            magic, opt, self.hflags = struct.unpack(">QQH", self.recvn(18))
            if magic != NBDMAGIC or opt != IHAVEOPT:
                raise AssertionError("greeting magic %x %x" % (magic, opt))
            self.s.sendall(struct.pack(">I", cflags))

    def close(self):
        self.s.close()

    def recvn(self, n):
        out = bytearray()
        while len(out) < n:
            try:
                b = self.s.recv(min(n - len(out), 1 << 20))
            except ConnectionResetError:
                b = b""
            if not b:
                raise Closed("connection closed after %d of %d bytes" % (len(out), n))
            out += b
        return bytes(out)

    def closed(self):
        """True if the server closes the connection (EOF or reset) within
        the timeout without sending anything more."""
        try:
            return self.s.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def send_opt(self, opt, data=b"", length=None):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data) if length is None else length) + data)

    def replies(self, opt):
        """The replies to option opt, up to the final one (ACK or error):
        [(type, data)]."""
        out = []
        while True:
            magic, o, typ, ln = struct.unpack(">QIII", self.recvn(20))
            if magic != REPMAGIC:
                raise AssertionError("option reply magic %x" % magic)
            if o != opt:
                raise AssertionError("reply to option %d, sent %d" % (o, opt))
            out.append((typ, self.recvn(ln)))
            if typ == REP_ACK or typ & ERR:
                return out

    def opt(self, opt, data=b""):
        self.send_opt(opt, data)
        return self.replies(opt)

    def final(self, opt, data=b""):
        """The type of the final reply to an option."""
        return self.opt(opt, data)[-1][0]

    def sr(self):
        if self.final(OPT_SR) != REP_ACK:
            raise AssertionError("STRUCTURED_REPLY refused")
        self.structured = True

    def go(self, name, infos=()):
        """GO: returns (size, transmission flags); raises on an error."""
        r = self.opt(OPT_GO, name_data(name, infos))
        if r[-1][0] != REP_ACK:
            raise AssertionError("GO %r: %s" % (name, r))
        return export_info(r)

    def starttls(self, ctx):
        r = self.opt(OPT_STARTTLS)
        if r != [(REP_ACK, b"")]:
            raise AssertionError("STARTTLS: %s" % r)
        self.s = ctx.wrap_socket(self.s)
        self.structured = False

    def req(self, typ, offset=0, length=0, flags=0, cookie=1, data=b""):
        self.s.sendall(struct.pack(">IHHQQI", REQMAGIC, flags, typ, cookie, offset, length) + data)

    def reply(self, read_len=0):
        """One reply: ("simple", cookie, error, data) — data is read_len
        bytes when the error is 0 — or ("structured", cookie, chunks) with
        chunks [(flags, type, payload)] up to the one marked DONE."""
        magic = struct.unpack(">I", self.recvn(4))[0]
        if magic == SIMPLE:
            err, cookie = struct.unpack(">IQ", self.recvn(12))
            return ("simple", cookie, err, self.recvn(read_len) if not err and read_len else b"")
        if magic != STRUCT:
            raise AssertionError("reply magic %x" % magic)
        if not self.structured:
            raise AssertionError("a structured reply without negotiating it")
        chunks, cookie = [], None
        while True:
            if chunks:
                magic = struct.unpack(">I", self.recvn(4))[0]
                if magic != STRUCT:
                    raise AssertionError("chunk magic %x" % magic)
            fl, ty, ck, ln = struct.unpack(">HHQI", self.recvn(16))
            if cookie is not None and ck != cookie:
                raise AssertionError("chunks of two replies interleaved (cookies %d, %d)" % (cookie, ck))
            cookie = ck
            chunks.append((fl, ty, self.recvn(ln)))
            if fl & 1:
                return ("structured", cookie, chunks)

    def cmd(self, typ, offset=0, length=0, flags=0, cookie=1, data=b""):
        """Send a request, return its reply (the one with its cookie)."""
        self.req(typ, offset, length, flags, cookie, data)
        r = self.reply(length if typ == CMD_READ else 0)
        if r[1] != cookie:
            raise AssertionError("reply cookie %d, want %d" % (r[1], cookie))
        return r


def export_info(replies):
    for t, d in replies:
        if t == REP_INFO and struct.unpack(">H", d[:2])[0] == INFO_EXPORT:
            if len(d) != 12:
                raise AssertionError("NBD_INFO_EXPORT of %d bytes" % len(d))
            return struct.unpack(">QH", d[2:])
    raise AssertionError("no NBD_INFO_EXPORT in %s" % replies)


def error_of(r):
    """The error of a reply (0 if none)."""
    if r[0] == "simple":
        return r[2]
    err = 0
    for fl, ty, p in r[2]:
        if ty & 0x8000:
            e, mlen = struct.unpack(">IH", p[:6])
            if mlen > len(p) - 6:
                raise AssertionError("error message length %d in a %d-byte chunk" % (mlen, len(p)))
            p[6:6 + mlen].decode("utf-8")  # MUST be a string
            if not e:
                raise AssertionError("an error chunk with error 0")
            err = err or e
    return err


def read_data(r, offset, length):
    """The bytes a successful READ reply carries, checked for coverage."""
    if r[0] == "simple":
        return r[3]
    buf = bytearray(length)
    seen = bytearray(length)
    for fl, ty, p in r[2]:
        if ty == T_DATA:
            off = struct.unpack(">Q", p[:8])[0] - offset
            n = len(p) - 8
        elif ty == T_HOLE:
            off, n = struct.unpack(">QI", p)
            off -= offset
        elif ty == T_NONE:
            continue
        else:
            raise AssertionError("READ reply chunk type %d" % ty)
        if n <= 0 or off < 0 or off + n > length or any(seen[off:off + n]):
            raise AssertionError("READ chunk at %d+%d outside or overlapping %d+%d" % (off + offset, n, offset, length))
        seen[off:off + n] = b"\1" * n
        if ty == T_DATA:
            buf[off:off + n] = p[8:]
    if not all(seen):
        raise AssertionError("READ chunks cover %d of %d bytes" % (sum(seen), length))
    return bytes(buf)


def content_chunks(r):
    return [c for c in r[2] if c[1] in (T_DATA, T_HOLE)] if r[0] == "structured" else []


def block_status(r):
    """{context id: [(length, flags)]} of a BLOCK_STATUS reply."""
    out = {}
    for fl, ty, p in r[2]:
        if ty == T_BS:
            if (len(p) - 4) % 8 or len(p) < 12:
                raise AssertionError("BLOCK_STATUS chunk of %d bytes" % len(p))
            out[struct.unpack(">I", p[:4])[0]] = [struct.unpack(">II", p[i:i + 8]) for i in range(4, len(p), 8)]
    return out
