#!/usr/bin/env bash
# Security checks of the daemon:
#   1. both sockets are mode 0600, and another user (nobody, through
#      setpriv) cannot connect to them even where the directory lets it;
#   2. a read-only export refuses WRITE, TRIM and WRITE_ZEROES (with and
#      without FUA) with EPERM and its content does not change;
#   3. an export never reads outside its volume: at and past the end and
#      offset+length overflowing are EINVAL, and no byte of the
#      neighbouring volume appears at any edge;
#   4. a deleted volume's data is never readable through a new one, also
#      after kill -9 of the daemon: new volumes read as zeroes everywhere,
#      and 512-byte writes into fresh 64 KiB blocks leave the rest zero;
#   5. a volume id is never reused after a delete or a crash; what
#      restoring an old copy of the pool file does is reported (it is the
#      pool's past: the ids handed out since the copy come again);
#   6. with --tls require, every option before STARTTLS is
#      NBD_REP_ERR_TLS_REQD and EXPORT_NAME hangs up (Unix socket and TCP).
. "$(dirname "$0")/lib.sh"
need setpriv psktool
seed=${TV_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "$me: seed $seed (replay with TV_SEED=$seed)"
export TV_SEED=$seed

pool_create 1G --block-size 64K
start_serve

# ---- 1. socket permissions ----
for s in "$nsock" "$csock"; do
	m=$(stat -c %a "$s")
	[ "$m" = 600 ] || fail "$s: mode $m, expected 600"
	[ "$(stat -c %u "$s")" = "$(id -u)" ] || fail "$s: not owned by the daemon's user"
done
if [ "$(id -u)" -eq 0 ]; then
	# open the directory, so that only the socket's own mode protects it
	chmod 0755 "$dir"
	for s in "$nsock" "$csock"; do
		out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" -c '
import errno, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
print("CONNECTED")' "$s" 2>&1)
		[ "$out" = EACCES ] || fail "user nobody connecting to $s: $out (expected EACCES)"
	done
	chmod 0700 "$dir"
	note "sockets 0600; user nobody gets EACCES on both"
else
	note "not root: cannot switch to another user; only the modes were checked"
fi

# ---- 2..4: through libnbd, strict mode off ----
py <<'EOF' || fail "read-only exports, volume bounds, deleted data"
import json, os, random, subprocess, sys
import nbd

rng = random.Random(int(os.environ["TV_SEED"]))
TV, pool, sock = os.environ["THINVOL"], os.environ["TV_POOL"], os.environ["TV_NSOCK"]
B, MiB = 65536, 1 << 20
MARK = b"DELETED-VOLUME!!"  # 16 bytes: the data that must never reappear


def tv(*a):
    r = subprocess.run([TV] + list(a), capture_output=True, text=True)
    assert r.returncode == 0, "thinvol %s: %s" % (" ".join(a), r.stderr)
    return r.stdout.strip()


def conn(name):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def err(f):
    try:
        f()
    except nbd.Error as e:
        return e.errno
    return None


# 2. a read-only snapshot refuses every write path
tv("create", pool, "rw", "--size", "4M")
h = conn("rw")
content = rng.randbytes(4 * MiB)
h.pwrite(content, 0)
h.flush()
tv("snapshot", pool, "rw", "ro", "--read-only")
r = conn("ro")
assert r.is_read_only(), "the snapshot export is not read-only"
for what, f in (("WRITE", lambda: r.pwrite(b"x" * 4096, 0)),
                ("WRITE+FUA", lambda: r.pwrite(b"x" * 4096, B, nbd.CMD_FLAG_FUA)),
                ("WRITE unaligned", lambda: r.pwrite(b"x" * 100, 7)),
                ("TRIM", lambda: r.trim(B, 0)),
                ("TRIM+FUA", lambda: r.trim(2 * B, 0, nbd.CMD_FLAG_FUA)),
                ("WRITE_ZEROES", lambda: r.zero(B, 0)),
                ("WRITE_ZEROES NO_HOLE", lambda: r.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)),
                ("WRITE_ZEROES FAST_ZERO", lambda: r.zero(B, 0, nbd.CMD_FLAG_FAST_ZERO))):
    e = err(f)
    assert e == "EPERM", "%s on a read-only export: %s, expected EPERM" % (what, e)
r.flush()
assert r.pread(4 * MiB, 0) == content, "the read-only export changed"
print("# read-only export: 8 write requests refused with EPERM, content unchanged")

# 3. never outside the volume: A full of 0xAA beside B
tv("create", pool, "A", "--size", "3M")
tv("create", pool, "Bv", "--size", "%d" % (3 * MiB - 512))  # ends inside a block
tv("create", pool, "C", "--size", "3M")
for name, byte in (("A", 0xAA), ("C", 0xCC)):
    x = conn(name)
    x.pwrite(bytes([byte]) * 3 * MiB, 0)
    x.flush()
b = conn("Bv")
size = b.get_size()
assert size == 3 * MiB - 512
b.pwrite(b"\xbb" * 4096, 0)  # some of B's blocks mapped, some not
b.pwrite(b"\xbb" * 512, size - 512)
b.flush()
checks = 0
for off, n in ((size, 1), (size, 512), (size - 512, 1024), (size - 1, 2), (size + B, 512),
               (2**63, 512), (2**64 - 512, 512), (2**64 - 512, 1024), (size - 512, 33 * MiB)):
    e = err(lambda: b.pread(n, off))
    assert e in ("EINVAL", "EOVERFLOW"), "read %d+%d of a %d-byte volume: %s" % (off, n, size, e)
    checks += 1
e = err(lambda: b.pread(1024, 2**64 - 512))
assert e == "EINVAL", "offset+length overflowing 2^64: %s" % e
for off in (size, 2**64 - 512):
    e = err(lambda: b.block_status(1024, off, lambda *a: 0))
    assert e in ("EINVAL",), "block status at %d: %s" % (off, e)
    checks += 1
for off, n in ((size, 512), (size - 512, 1024), (2**64 - 512, 1024)):
    e = err(lambda: b.pwrite(b"w" * n, off))
    assert e in ("ENOSPC", "EINVAL"), "write %d+%d past the end: %s" % (off, n, e)
    checks += 1
# every edge of B: first and last bytes, each block boundary, the partial
# last block; and all of it
whole = b.pread(size, 0)
assert b"\xaa" not in whole and b"\xcc" not in whole, "a neighbour's bytes in B"
for off in list(range(0, size, B)) + [size - 512, size - 1]:
    for n in (1, 512, min(B, size - off)):
        if off + n <= size:
            d = b.pread(n, off)
            assert d == whole[off:off + n], "read %d+%d differs from the whole read" % (off, n)
            checks += 1
assert whole[:4096] == b"\xbb" * 4096 and whole[size - 512:] == b"\xbb" * 512
assert whole[4096:size - 512] == bytes(size - 4608), "B reads non-zero where never written"
print("# volume bounds: %d out-of-range and edge requests; no neighbour's byte in B" % checks)

# 4. deleted data: D full of MARK, deleted; new volumes read zero
def fill_and_delete(name, mib):
    tv("create", pool, name, "--size", "%dM" % mib)
    x = conn(name)
    x.pwrite(MARK * (mib * MiB // len(MARK)), 0)
    x.flush()
    x.shutdown()
    tv("delete", pool, name)


def scan_new(prefix, n, mib, partial):
    found = 0
    for i in range(n):
        name = "%s%d" % (prefix, i)
        tv("create", pool, name, "--size", "%dM" % mib)
        x = conn(name)
        data = x.pread(mib * MiB, 0)
        assert data == bytes(mib * MiB), "new volume %s is not all zero (deleted data: %s)" % (name, MARK in data)
        if partial:
            # 512 bytes into fresh blocks: the rest of each block reads zero
            for blk in range(0, mib * MiB // B, 3):
                o = blk * B + rng.randrange(0, B // 512) * 512
                x.pwrite(b"\x5a" * 512, o)
                got = x.pread(B, blk * B)
                want = bytearray(B)
                want[o - blk * B:o - blk * B + 512] = b"\x5a" * 512
                assert got == want, "%s block %d: a 512-byte write exposed old data" % (name, blk)
                found += 1
        x.flush()
        x.shutdown()
    return found

fill_and_delete("D1", 16)
n = scan_new("N", 3, 8, True)
print("# deleted volume: 3 new volumes all zero; %d partially written fresh blocks zero elsewhere" % n)
open(os.environ["TV_DIR"] + "/ids", "w").write(tv("list", pool, "--json"))
EOF

# ... and after kill -9: fill, delete, crash; then new volumes.  Once more
# with the partial writes unflushed at the crash.
py <<'EOF' || fail "deleted data before a crash"
import os, subprocess, nbd
TV, pool, sock = os.environ["THINVOL"], os.environ["TV_POOL"], os.environ["TV_NSOCK"]
MARK = b"DELETED-VOLUME!!"
subprocess.run([TV, "create", pool, "D2", "--size", "16M"], check=True, capture_output=True)
h = nbd.NBD()
h.connect_uri("nbd+unix:///D2?socket=" + sock)
h.pwrite(MARK * (16 << 20 >> 4), 0)
h.flush()
h.shutdown()
subprocess.run([TV, "delete", pool, "D2"], check=True, capture_output=True)
EOF
kill9_serve
check_clean
start_serve
py <<'EOF' || fail "deleted data after a crash"
import os, subprocess, nbd
TV, pool, sock = os.environ["THINVOL"], os.environ["TV_POOL"], os.environ["TV_NSOCK"]
B = 65536
for i in range(3):
    subprocess.run([TV, "create", pool, "K%d" % i, "--size", "8M"], check=True, capture_output=True)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///K%d?socket=%s" % (i, sock))
    assert h.pread(8 << 20, 0) == bytes(8 << 20), "K%d after the crash: not all zero" % i
    for blk in range(0, 128, 2):  # unflushed partial writes, then a crash
        h.pwrite(b"\x5a" * 512, blk * B + 1024)
print("# after kill -9: 3 new volumes all zero")
EOF
kill9_serve
check_clean
start_serve
py <<'EOF' || fail "unflushed partial writes after a crash"
import os, nbd
sock = os.environ["TV_NSOCK"]
B = 65536
for i in range(3):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///K%d?socket=%s" % (i, sock))
    d = h.pread(8 << 20, 0)
    for blk in range(128):
        blkd = d[blk * B:(blk + 1) * B]
        want_new = bytearray(B)
        if blk % 2 == 0:
            want_new[1024:1536] = b"\x5a" * 512
        assert blkd in (bytes(B), bytes(want_new)), "K%d block %d after the crash: old data" % (i, blk)
print("# unflushed 512-byte writes into fresh blocks, then kill -9: each block zero, or zero but the write")
EOF

# ---- 5. ids ----
maxid() { "$tv" list "$pool" --json | "$PY" -c 'import json, sys; print(max([v["id"] for v in json.load(sys.stdin)] + [0]))'; }
next_id() { "$tv" pool info "$pool" --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["next_id"])'; }
newid() { "$tv" create "$pool" "$1" --size 1M || fail "create $1"; }
i1=$(newid id1)
"$tv" delete "$pool" id1 || fail "delete id1"
i2=$(newid id2)
[ "$i2" -gt "$i1" ] || fail "after a delete: id $i2 not above $i1"
i3=$(newid id3)
"$tv" delete "$pool" id3 || fail "delete id3"
kill9_serve # right after a committed create and delete
start_serve
i4=$(newid id4)
[ "$i4" -gt "$i3" ] || fail "after kill -9: id $i4 not above $i3 (reused)"
# a crash with a batch of creates committed just before
echo '[{"op":"create","name":"b1","size":"1M"},{"op":"create","name":"b2","size":"1M"}]' |
	"$tv" batch "$pool" >"$dir/batch.out" || fail "batch"
ib=$(tail -n 1 "$dir/batch.out")
kill9_serve
start_serve
i5=$(newid id5)
[ "$i5" -gt "$ib" ] && [ "$i5" -gt "$i4" ] || fail "after kill -9 after a batch: id $i5 not above $ib"
note "ids: $i1 deleted -> $i2; $i3 deleted + kill -9 -> $i4; batch $ib + kill -9 -> $i5"

# restore: a copy of the pool file taken while no daemon runs is a backup;
# after it, a volume and a batch of 200 (ids handed out as fast as the
# engine can); the backup copied back must still hand out ids above all of
# them (each id is at least the microseconds since 2025-01-01)
stop_serve
cp --sparse=always "$pool" "$dir/backup.pool"
bnext=$(next_id)
start_serve
i6=$(newid after-backup)
u6=$(show_field after-backup uuid)
"$PY" -c 'import json; print(json.dumps([{"op": "create", "name": "burst%d" % i, "size": "1M"} for i in range(200)]))' |
	"$tv" batch "$pool" >"$dir/burst.out" || fail "batch of 200 creates"
iburst=$(sort -n "$dir/burst.out" | tail -n 1)
[ "$(sort -nu "$dir/burst.out" | wc -l)" -eq 200 ] && [ "$(head -n 1 "$dir/burst.out")" -gt "$i6" ] ||
	fail "batch ids not unique and increasing: $(head -3 "$dir/burst.out")"
stop_serve
cp --sparse=always "$dir/backup.pool" "$pool"
rm -f "$dir/backup.pool"
check_clean
start_serve
! "$tv" show "$pool" after-backup >/dev/null 2>&1 || fail "the restored pool has a volume created after the backup"
[ "$(next_id)" -eq "$bnext" ] || fail "the restored pool's next id $(next_id), the backup's $bnext"
i7=$(newid after-restore)
u7=$(show_field after-restore uuid)
[ "$i7" -gt "$iburst" ] && [ "$i7" -gt "$i6" ] ||
	fail "after a restore: id $i7 reused (handed out after the backup: $i6 .. $iburst)"
[ "$u7" != "$u6" ] || fail "after a restore: uuid $u7 reused"
note "restore of a copy taken at next id $bnext, after ids $i6 .. $iburst were handed out: new id $i7 above them"

# ---- 6. TLS required: nothing before STARTTLS ----
stop_serve
psktool -u alice -p "$dir/keys.psk" >/dev/null 2>&1 || fail "psktool"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_serve --tls-psk "$dir/keys.psk" --tls require --listen "127.0.0.1:$port"
py "$port" <<'EOF' || fail "plaintext options with --tls require"
import os, socket, struct, sys
IHAVEOPT, TLS_REQD = 0x49484156454F5054, (1 << 31) | 5
port = int(sys.argv[1])


def name(n, infos=()):
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)


def meta(exp, queries):
    return struct.pack(">I", len(exp)) + exp + struct.pack(">I", len(queries)) + \
        b"".join(struct.pack(">I", len(q)) + q for q in queries)


OPTS = [("LIST", 3, b""), ("INFO", 6, name(b"rw", (0, 1, 2, 3))), ("GO", 7, name(b"rw")),
        ("GO (default export)", 7, name(b"")), ("STRUCTURED_REPLY", 8, b""),
        ("LIST_META_CONTEXT", 9, meta(b"rw", [b"base:allocation"])),
        ("SET_META_CONTEXT", 10, meta(b"rw", [b"base:allocation"])),
        ("EXTENDED_HEADERS", 11, b""), ("unknown", 0x4242, b"x" * 10)]
n = 0
for family, addr in ((socket.AF_UNIX, os.environ["TV_NSOCK"]), (socket.AF_INET, ("127.0.0.1", port))):
    for cflags in (3, 1):  # with and without NO_ZEROES
        s = socket.socket(family)
        s.settimeout(10)
        s.connect(addr)

        def rn(k):
            b = b""
            while len(b) < k:
                x = s.recv(k - len(b))
                assert x, "closed"
                b += x
            return b
        rn(18)
        s.sendall(struct.pack(">I", cflags))
        for what, opt, data in OPTS:
            s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
            magic, o, typ, ln = struct.unpack(">QIII", rn(20))
            rn(ln)
            assert o == opt and typ == TLS_REQD, "%s before STARTTLS: reply %#x, want ERR_TLS_REQD" % (what, typ)
            n += 1
        # EXPORT_NAME cannot be answered with an error: the server hangs up
        s.sendall(struct.pack(">QII", IHAVEOPT, 1, 2) + b"rw")
        try:
            assert s.recv(1) == b"", "EXPORT_NAME before STARTTLS was answered"
        except ConnectionResetError:
            pass
        n += 1
print("# --tls require: %d plaintext options refused (Unix socket and TCP)" % n)
EOF
stop_serve
check_clean
finish
