#!/usr/bin/env bash
# A full pool through the daemon (DESIGN: I/O semantics, out of space):
# writes that need a new block fail with ENOSPC (never EIO), the
# connection stays usable, overwrites of owned blocks and reads keep
# working; trimming, deleting a volume and `thinvol pool resize` (through
# the control socket) each make room again without a restart; the pool
# stays read-write and checks clean.
#
# Then issue 14, item 13: a 512 MiB pool of 4 KiB blocks filled by a
# client, and a storm of 5000 single-block trims from it with no
# background commit in between (--commit-interval of 10 minutes): every
# trim succeeds, the pool stays read-write for every client, the space
# comes back, and the data is right.  (Before the fix the trims used up
# the metadata reserve after ~1500 and the pool went read-only.)
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

# ---- single-block trims on a full pool of 4 KiB blocks ----
rm -f "$pool"
pool_create 512M --block-size 4K
start_serve --commit-interval 600000
vol_create fill 1G
vol_create other 64M
py "$(uri fill)" "$(uri other)" "$tv" "$pool" <<'EOF' || fail "trims on a full pool"
import json, nbd, subprocess, sys, time
B = 1 << 20
fill, other = nbd.NBD(), nbd.NBD()
fill.connect_uri(sys.argv[1]); other.connect_uri(sys.argv[2])
tv, pool = sys.argv[3], sys.argv[4]

def info():
    r = subprocess.run([tv, "pool", "info", pool, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, "pool info: %s" % r.stderr
    return json.loads(r.stdout)

def state_rw(what):
    d = info()
    assert d["state"] == "rw" and d["reason"] == "", "%s: pool %s (%s)" % (what, d["state"], d["reason"])
    return d

def byte_at(off):
    """what the fill wrote into the block at off"""
    return (off - off % B if off < big_end else off) % 251 + 1

# fill: 1 MiB writes, then 4 KiB ones, until ENOSPC
n = 0
big_end = None
for size in (B, 4096):
    while True:
        try:
            fill.pwrite(bytes([n % 251 + 1]) * size, n)
        except nbd.Error as e:
            assert e.errno == "ENOSPC", "fill at %d: %s (want ENOSPC)" % (n, e.string)
            break
        n += size
    if big_end is None:
        big_end = n
assert n > 400 * B, "the 512 MiB pool took only %d MiB" % (n >> 20)
fill.flush()  # commits the fill: the trims start from a full, committed pool
full = state_rw("full")
print("full after %d MiB, %d KiB free" % (n >> 20, full["free"] >> 10))
# 5000 single-block trims spread over the volume, as fast as the
# client sends them: no background commit comes in between
step = n // 4096 // 5000
trimmed = [k * step * 4096 for k in range(5000)]
t0 = time.time()
for off in trimmed:
    fill.trim(4096, off)
print("5000 trims in %.2f s" % (time.time() - t0))
state_rw("after the trims")
# the other client keeps working, and the space comes back: a flush
# commits the trims, then 4 KiB writes fill what they freed
other.pwrite(b"o" * 4096, 0)
fill.flush()
d = state_rw("after the flush")
assert d["free"] >= full["free"] + 5000 * 4096 * 3 // 4, \
    "free %d KiB after 5000 trims, %d KiB before" % (d["free"] >> 10, full["free"] >> 10)
for off in trimmed[:4000]:
    fill.pwrite(b"t" * 4096, off)
for off in trimmed[:4000:97]:
    assert fill.pread(4096, off) == b"t" * 4096, "block at %d" % off
for off in trimmed[4000::97]:
    assert fill.pread(4096, off) == bytes(4096), "trimmed block at %d not zero" % off
for k in range(0, 5000, 97):
    off = trimmed[k] + 4096
    assert fill.pread(4096, off) == bytes([byte_at(off)]) * 4096, "untrimmed block at %d" % off
for h in (fill, other):
    h.flush()
    h.shutdown()
EOF
"$tv" pool info "$pool" --json >"$dir/info.json" || fail "pool info"
json_ok "$dir/info.json" 'd["state"] == "rw" and d["reason"] == ""'
stop_serve
check_clean
finish
