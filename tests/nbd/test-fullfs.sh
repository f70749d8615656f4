#!/usr/bin/env bash
# A full backing filesystem (issue 14, item 15; review 2, engine findings 3 and
# 5): the pool file on a tmpfs of 24 MiB, a pool of 256 MiB on it.  A
# full filesystem refuses new data with ENOSPC while commits pass:
# metadata chunks are allocated in the file when the pool takes them, and
# free blocks are reserved in it ahead of what the next commit may need
# (src/pdata/sm.c, rule 7); a change the reserved room does not cover is
# refused before it begins.
#
#   1. offline import of a 40 MiB image, pools of 64 KiB and of 4 KiB
#      blocks: it fails with "no space" (exit 5) and keeps what it wrote:
#      the volume maps at least 16 MiB, those bytes are the image's, the
#      pool is clean and read-write;
#   2. through the daemon: writes until ENOSPC, then FLUSH passes and the
#      pool stays read-write; a create passes or is refused (exit 5), an
#      overwrite in place and a FLUSH pass; the tmpfs grown (room again),
#      the same connection writes on, with no restart and no reopen, and
#      every byte acknowledged reads back;
#   3. a pool of 4 KiB blocks whose data filled the filesystem: 2000
#      single-block trims, a FLUSH every 100: each passes, the pool stays
#      read-write, no reopen;
#   4. the filesystem full before the pool has any metadata chunk: a
#      create is refused (exit 5, through the daemon and offline, saying
#      that the filesystem is full) and the pool stays read-write; once the
#      filler file is gone the create passes.
# Needs root (mount -t tmpfs); skips where a tmpfs cannot be mounted.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root to mount a tmpfs"
fs=$dir/fs
mkdir "$fs"
mount -t tmpfs -o size=24m tvfullfs "$fs" 2>/dev/null || skip "cannot mount a tmpfs here"
on_exit umount -l "$fs"
pool=$fs/p.pool
nsock=$pool.nbd.sock
csock=$pool.ctl.sock
export TV_NSOCK=$nsock TV_CSOCK=$csock TV_POOL=$pool

# ---- 1. offline import ----
head -c 40M /dev/urandom >"$dir/img.raw"
for bs in 64K 4K; do
	pool_create 256M --block-size $bs
	vol_create v 64M
	rc=0
	"$tv" import "$pool" v "$dir/img.raw" 2>"$dir/import.err" || rc=$?
	[ "$rc" -eq 5 ] || fail "import into a full filesystem ($bs blocks): exit $rc, not 5: $(cat "$dir/import.err")"
	grep -q 'No space left on device' "$dir/import.err" || fail "import: $(cat "$dir/import.err")"
	mapped=$(show_field v mapped)
	[ "$mapped" -ge $((16 << 20)) ] || fail "the failed import ($bs blocks) kept $mapped bytes, not what it wrote"
	check_clean
	"$tv" export "$pool" v "$dir/out.raw" || fail "export"
	cmp -n "$mapped" "$dir/out.raw" "$dir/img.raw" || fail "the kept bytes are not the image's"
	"$tv" pool info "$pool" | grep -q '^state: *rw$' || fail "the pool is not read-write after the import"
	note "1: the failed import into a pool of $bs blocks kept $mapped bytes, the image's"
	rm -f "$pool" "$dir/out.raw"
done

# ---- 2. the daemon: ENOSPC for data, commits pass, room again ----
pool_create 256M
start_serve
vol_create v 64M
py <<'EOF' || fail "2: writes on a full filesystem"
import json, os, socket, subprocess, nbd
pool, fs = os.environ["TV_POOL"], os.environ["TV_DIR"] + "/fs"
h = nbd.NBD()
h.connect_uri("nbd+unix:///v?socket=" + os.environ["TV_NSOCK"])
MiB = 1 << 20
data = {}
n = None
for i in range(40):
    buf = os.urandom(MiB)
    try:
        h.pwrite(buf, i * MiB)
    except nbd.Error as e:
        assert e.errno == "ENOSPC", "a write failed with %s, not ENOSPC" % e.errno
        n = i
        break
    data[i] = buf
assert n is not None and n >= 8, "no ENOSPC, or too early: %r" % n
h.flush()  # the data that was accepted, and its metadata: room enough
def state():
    return json.loads(subprocess.run([os.environ["THINVOL"], "pool", "info", pool, "--json"],
                                     capture_output=True, text=True, check=True).stdout)
assert state()["state"] == "rw", state()
# metadata on the full filesystem: it passes or is refused, never a
# failed commit (review 2, engine finding 5)
r = subprocess.run([os.environ["THINVOL"], "create", pool, "w", "--size", "1M"],
                   capture_output=True, text=True)
assert r.returncode in (0, 5), (r.returncode, r.stderr)
assert state()["state"] == "rw", state()
data[0] = b"\1" * 4096 + data[0][4096:]
h.pwrite(b"\1" * 4096, 0)  # an overwrite in place needs no room
h.flush()
assert state()["state"] == "rw", state()
subprocess.run(["mount", "-o", "remount,size=64m", fs], check=True)
for i in range(n, n + 4):  # room again: the same connection writes on
    data[i] = os.urandom(MiB)
    h.pwrite(data[i], i * MiB)
h.flush()
for i, buf in data.items():
    assert h.pread(MiB, i * MiB) == buf, "MiB %d reads wrong" % i
print("# 2: ENOSPC after %d MiB, FLUSH passed, the pool stayed rw; create exit %d; room again: "
      "%d MiB more on the same connection" % (n, r.returncode, 4))
EOF
grep -q 'reopened' "$serve_log" && fail "2: the pool was reopened: it should never have gone read-only"
stop_serve
check_clean
rm -f "$pool"
mount -o remount,size=24m "$fs" || fail "remount"

# ---- 3. trims on a pool of 4 KiB blocks that filled the filesystem ----
pool_create 256M --block-size 4K
start_serve
vol_create v 64M
py <<'EOF' || fail "3: trims on a full filesystem"
import json, os, subprocess, nbd
pool = os.environ["TV_POOL"]
h = nbd.NBD()
h.connect_uri("nbd+unix:///v?socket=" + os.environ["TV_NSOCK"])
MiB = 1 << 20
n = None
for i in range(64):
    try:
        h.pwrite(os.urandom(MiB), i * MiB)
    except nbd.Error as e:
        assert e.errno == "ENOSPC", e
        n = i
        break
assert n, "no ENOSPC"
h.flush()
for k in range(2000):
    h.trim(4096, ((k * 7919) % (n * MiB // 4096)) * 4096)
    if k % 100 == 99:
        h.flush()
info = json.loads(subprocess.run([os.environ["THINVOL"], "pool", "info", pool, "--json"],
                                 capture_output=True, text=True, check=True).stdout)
assert info["state"] == "rw", info
print("# 3: 2000 trims and 20 FLUSHes on the full filesystem passed; the pool stayed rw")
EOF
grep -q 'reopened\|read-only' "$serve_log" && fail "3: the pool went read-only: $(grep 'read-only' "$serve_log")"
stop_serve
check_clean
rm -f "$pool"

# ---- 4. full before the pool has a metadata chunk: refused, stays rw ----
pool_create 256M
start_serve
dd if=/dev/zero of="$fs/filler" bs=64k 2>/dev/null || true # until full
rc=0
"$tv" create "$pool" w --size 8M 2>"$dir/create.err" || rc=$?
[ "$rc" -eq 5 ] || fail "4: create on a full filesystem: exit $rc: $(cat "$dir/create.err")"
# the message names what is full: the filesystem, not the pool, which has
# nearly all its 256 MiB free (review 3, finding 3)
grep -q "the filesystem under the pool file is full" "$dir/create.err" ||
	fail "4: the refusal does not say the filesystem is full: $(cat "$dir/create.err")"
# offline too
stop_serve
rc=0
"$tv" create "$pool" w --size 8M 2>"$dir/create.err" || rc=$?
[ "$rc" -eq 5 ] || fail "4: offline create on a full filesystem: exit $rc: $(cat "$dir/create.err")"
grep -q "the filesystem under the pool file is full" "$dir/create.err" ||
	fail "4: offline, the refusal does not say the filesystem is full: $(cat "$dir/create.err")"
start_serve
"$tv" pool info "$pool" | grep -q '^state: *rw$' || fail "4: pool info: $("$tv" pool info "$pool")"
rm -f "$fs/filler"
vol_create w 8M
grep -q 'reopened\|read-only' "$serve_log" && fail "4: the pool went read-only"
stop_serve
check_clean
note "4: a create on a full filesystem refused (exit 5), the pool stayed rw; with room it passed"
finish
