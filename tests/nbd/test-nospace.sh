#!/usr/bin/env bash
# A full pool through the daemon (DESIGN: I/O semantics, out of space):
# writes that need a new block fail with ENOSPC (never EIO), the
# connection stays usable, overwrites of owned blocks and reads keep
# working; trimming, deleting a volume and `thinvol pool resize` (through
# the control socket) each make room again without a restart; the pool
# stays read-write and checks clean.
. "$(dirname "$0")/lib.sh"
need nbdinfo

pool_create 64M --block-size 64K
start_serve
vol_create big 256M
vol_create other 16M
vol_create spare 16M

py "$(uri big)" "$(uri other)" "$(uri spare)" "$tv" "$pool" <<'EOF' || fail "out of space"
import nbd, subprocess, sys, time
B = 1 << 20
big, other, spare = nbd.NBD(), nbd.NBD(), nbd.NBD()
big.connect_uri(sys.argv[1]); other.connect_uri(sys.argv[2]); spare.connect_uri(sys.argv[3])
tv, pool = sys.argv[4], sys.argv[5]

def chunk(i):
    return bytes([i & 0xff]) * B

def fill(h, start):
    """write 1 MiB chunks from chunk start on until ENOSPC; the index of
    the first that failed"""
    i = start
    while True:
        try:
            h.pwrite(chunk(i), i * B)
        except nbd.Error as e:
            assert e.errno == "ENOSPC", "chunk %d: %s (want ENOSPC)" % (i, e.string)
            return i
        i += 1
        assert i < 256, "256 MiB written into a 64 MiB pool"

def enospc(h, off, what):
    try:
        h.pwrite(b"x" * 65536, off)
    except nbd.Error as e:
        assert e.errno == "ENOSPC", "%s: %s (want ENOSPC)" % (what, e.string)
        return
    raise AssertionError("%s: a write to a new block succeeded on a full pool" % what)

def retry_write(h, off, what):
    """freed space may become usable only at the next commit"""
    for _ in range(50):
        try:
            h.pwrite(b"y" * 65536, off)
            return
        except nbd.Error as e:
            assert e.errno == "ENOSPC", "%s: %s" % (what, e.string)
            time.sleep(0.1)
    raise AssertionError("%s: still ENOSPC 5 s later" % what)

spare.pwrite(b"s" * (4 * B), 0)  # 4 MiB to free later by deleting spare
spare.flush()
spare.shutdown()
n = fill(big, 0)
assert 30 <= n <= 64, "the 64 MiB pool took %d MiB" % n
print("full after %d MiB" % n)
# usable after ENOSPC: reads, overwrites, flush
for i in range(n):
    assert big.pread(4096, i * B) == chunk(i)[:4096], "chunk %d changed" % i
big.pwrite(b"o" * B, 0)
assert big.pread(B, 0) == b"o" * B
big.flush()
enospc(other, 0, "other volume")
enospc(big, 200 * B, "big, far block")
# zeroing an owned block keeps working too; a trim gives space back
big.zero(65536, B)
big.trim(4 * B, 2 * B)
retry_write(other, 0, "after a 4 MiB trim")
n2 = fill(other, 1)
enospc(other, 15 * B, "other after refill")
# deleting a volume gives its space back
r = subprocess.run([tv, "delete", pool, "spare"], capture_output=True, text=True)
assert r.returncode == 0, "delete spare: %s" % r.stderr
retry_write(other, 15 * B, "after deleting a 4 MiB volume")
fill(big, 100)
# growing the pool through the daemon
r = subprocess.run([tv, "pool", "resize", pool, "128M"], capture_output=True, text=True)
assert r.returncode == 0, "pool resize: %s" % r.stderr
retry_write(big, 200 * B, "after growing the pool")
for i in range(150, 182):  # 32 MiB more fit in the 64 MiB added
    big.pwrite(chunk(i), i * B)
for h in (big, other):
    h.flush()
    h.shutdown()
EOF
"$tv" pool info "$pool" --json >"$dir/info.json" || fail "pool info"
json_ok "$dir/info.json" 'd["state"] == "rw" and d["reason"] == "" and d["size"] >= 120 << 20'
stop_serve
check_clean
finish
