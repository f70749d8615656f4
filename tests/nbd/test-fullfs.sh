#!/usr/bin/env bash
# A full backing filesystem (issue 14, item 15): the pool file on a tmpfs
# of 24 MiB, a pool of 256 MiB on it.
#
#   1. offline import of a 40 MiB image: it fails with "no space" (exit
#      5) and keeps what it wrote: the volume maps at least 16 MiB, those
#      bytes are the image's, the pool is clean and read-write (the
#      metadata chunks were allocated in the file when the pool took
#      them, so the commit still had room when the data had none);
#   2. through the daemon: writes until ENOSPC, then FLUSH passes and the
#      pool stays read-write; the tmpfs grown (room again), the same
#      connection writes on, with no restart and no reopen, and every
#      byte acknowledged reads back;
#   3. the filesystem full before the pool has any metadata chunk: a
#      create fails, the pool goes read-only, `pool info` says why and
#      names `thinvol pool reopen`; a reopen is refused while there is no
#      room (and the pool stays read-only); once the filler file is gone
#      the daemon reopens the pool by itself (it probes every 2 s), and
#      the create passes.
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
pool_create 256M
vol_create v 64M
rc=0
"$tv" import "$pool" v "$dir/img.raw" 2>"$dir/import.err" || rc=$?
[ "$rc" -eq 5 ] || fail "import into a full filesystem: exit $rc, not 5: $(cat "$dir/import.err")"
grep -q 'No space left on device' "$dir/import.err" || fail "import: $(cat "$dir/import.err")"
mapped=$(show_field v mapped)
[ "$mapped" -ge $((16 << 20)) ] || fail "the failed import kept $mapped bytes, not what it wrote"
check_clean
"$tv" export "$pool" v "$dir/out.raw" || fail "export"
cmp -n "$mapped" "$dir/out.raw" "$dir/img.raw" || fail "the kept bytes are not the image's"
"$tv" pool info "$pool" | grep -q '^state: *rw$' || fail "the pool is not read-write after the import"
note "1: the failed import kept $mapped bytes, the image's"
rm -f "$pool" "$dir/out.raw"

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
info = json.loads(subprocess.run([os.environ["THINVOL"], "pool", "info", pool, "--json"],
                                 capture_output=True, text=True, check=True).stdout)
assert info["state"] == "rw", info
subprocess.run(["mount", "-o", "remount,size=64m", fs], check=True)
for i in range(n, n + 4):  # room again: the same connection writes on
    data[i] = os.urandom(MiB)
    h.pwrite(data[i], i * MiB)
h.flush()
for i, buf in data.items():
    assert h.pread(MiB, i * MiB) == buf, "MiB %d reads wrong" % i
print("# 2: ENOSPC after %d MiB, FLUSH passed, the pool stayed rw; room again: "
      "%d MiB more on the same connection" % (n, 4))
EOF
grep -q 'reopened' "$serve_log" && fail "2: the pool was reopened: it should never have gone read-only"
stop_serve
check_clean
rm -f "$pool"
mount -o remount,size=24m "$fs" || fail "remount"

# ---- 3. read-only for want of room; the daemon recovers by itself ----
pool_create 256M
start_serve
dd if=/dev/zero of="$fs/filler" bs=64k 2>/dev/null || true # until full
rc=0
"$tv" create "$pool" w --size 8M 2>"$dir/create.err" || rc=$?
[ "$rc" -ne 0 ] || fail "3: create on a full filesystem passed"
"$tv" pool info "$pool" >"$dir/info.txt"
grep -q '^state: *read-only: .*No space left on device' "$dir/info.txt" ||
	fail "3: pool info: $(cat "$dir/info.txt")"
grep -q "thinvol pool reopen $pool" "$dir/info.txt" || fail "3: pool info does not name the command: $(cat "$dir/info.txt")"
rc=0
"$tv" pool reopen "$pool" 2>"$dir/reopen.err" || rc=$?
[ "$rc" -eq 5 ] || fail "3: pool reopen without room: exit $rc: $(cat "$dir/reopen.err")"
"$tv" pool info "$pool" | grep -q '^state: *read-only' || fail "3: a refused reopen changed the state"
sleep 2.5 # a probe or two of the daemon's own: still no room
"$tv" pool info "$pool" | grep -q '^state: *read-only' || fail "3: reopened without room"
rm -f "$fs/filler"
_rw() { "$tv" pool info "$pool" | grep -q '^state: *rw$'; }
wait_for 10 _rw || fail "3: the daemon did not reopen the pool once there was room"
grep -q "the pool's device takes writes again" "$serve_log" || fail "3: the recovery is not logged"
vol_create w 8M
stop_serve
check_clean
note "3: read-only on a full filesystem, reopen refused without room, recovered by the daemon once room came back"
finish
