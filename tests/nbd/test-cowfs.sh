#!/usr/bin/env bash
# A full filesystem that copies on write (review 3, finding 1): a commit
# must not fail where overwriting a block needs new room.
#   1. XFS with reflink (mkfs's default): the pool file is copied with
#      `cp --reflink=always` while closed (a backup; coreutils' cp
#      reflinks by default), so every block of it is shared; then served,
#      new data and an overwrite acknowledged, the filesystem filled, and
#      a FLUSH must pass (the open unshared the superblocks and the
#      metadata chunks, io_reserve), the pool stays read-write and every
#      acknowledged byte reads back; check clean; and a pool of metadata
#      only (full chunks among them), copied so: once open, no block of it
#      is shared;
#   2. btrfs (where mkfs.btrfs and the module are): `pool create` gives
#      the file the nocow attribute and says nothing; the same run as 1
#      without the copy; a pool file that already had data gets no nocow
#      and the warning that a full filesystem can fail its commits.
# Needs root and loop devices; each part skips where its filesystem
# cannot be made or mounted.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root to mount a filesystem image"
export PATH=/usr/bin:$PATH

# run_full FS: the scenario on $mnt; pool at $mnt/p.pool (made already)
run_full() {
	local fsname=$1 p=$mnt/p.pool
	pool=$p nsock=$p.nbd.sock csock=$p.ctl.sock
	export TV_NSOCK=$nsock TV_CSOCK=$csock TV_POOL=$pool
	"$tv" create "$p" a --size 64M >/dev/null || fail "$fsname: create a"
	head -c 16M /dev/urandom >"$dir/img"
	"$tv" import "$p" a "$dir/img" >/dev/null || fail "$fsname: import"
	if [ "$fsname" = xfs ]; then
		cp --reflink=always "$p" "$mnt/backup.pool" || fail "xfs: no reflink copy"
	fi
	start_serve --commit-interval 600000
	head -c 1M /dev/urandom >"$dir/new"
	head -c 1M /dev/urandom >"$dir/over"
	py "$nsock" "$dir/new" "$dir/over" <<'PY' || fail "$fsname: writes before the fill"
import nbd, sys
h = nbd.NBD(); h.set_export_name("a"); h.connect_unix(sys.argv[1])
h.pwrite(open(sys.argv[2], "rb").read(), 32 << 20)
h.pwrite(open(sys.argv[3], "rb").read(), 1 << 20)
h.shutdown()
PY
	dd if=/dev/zero of="$mnt/fill" bs=1M status=none 2>/dev/null || true
	dd if=/dev/zero of="$mnt/fill2" bs=4k status=none 2>/dev/null || true
	sync
	py "$nsock" <<'PY' || fail "$fsname: FLUSH on the full filesystem failed: $(tail -5 "$serve_log")"
import nbd, sys
h = nbd.NBD(); h.set_export_name("a"); h.connect_unix(sys.argv[1])
h.flush()
h.shutdown()
PY
	"$tv" pool info "$p" >"$dir/info" || fail "$fsname: pool info"
	grep -q "^state: *rw" "$dir/info" || fail "$fsname: the pool is not read-write: $(cat "$dir/info")"
	# what was acknowledged and flushed reads back
	cp "$dir/img" "$dir/model"
	truncate -s 64M "$dir/model"
	dd if="$dir/new" of="$dir/model" bs=1M seek=32 conv=notrunc status=none
	dd if="$dir/over" of="$dir/model" bs=1M seek=1 conv=notrunc status=none
	nbdcopy "nbd+unix:///a?socket=$nsock" "$dir/out" || fail "$fsname: nbdcopy"
	cmp "$dir/model" "$dir/out" || fail "$fsname: the volume is not what was written"
	stop_serve
	rm -f "$dir/out"
	"$tv" check "$p" >"$dir/check" 2>&1 || fail "$fsname: check: $(cat "$dir/check")"
}

mnt=$dir/mnt
mkdir "$mnt"
img=/var/tmp/tv-cowfs-$$.img
on_exit rm -f "$img"

# ---- 1. XFS, reflinked copy ----
if command -v mkfs.xfs >/dev/null && truncate -s 512M "$img" &&
	mkfs.xfs -q -f -m reflink=1 "$img" 2>/dev/null &&
	mount -o loop "$img" "$mnt" 2>/dev/null; then
	on_exit umount -l "$mnt"
	"$tv" pool create "$mnt/p.pool" --size 256M >/dev/null || fail "xfs: pool create"
	run_full xfs
	# metadata only (150 volumes with blobs: full chunks among them),
	# copied with reflinks while closed: once the daemon has opened it, no
	# block of the pool file is shared any more (every commit may write
	# into any of its chunks and its superblocks)
	rm -f "$mnt/fill" "$mnt/fill2" "$mnt/backup.pool"
	"$tv" pool create "$mnt/m.pool" --size 128M >/dev/null || fail "xfs: pool create m"
	"$PY" -c "import json, os; print(json.dumps([{'op': 'create', 'name': 'v%d' % i, 'size': '1M', 'blob_hex': os.urandom(256).hex()} for i in range(150)]))" >"$dir/batch"
	"$tv" batch "$mnt/m.pool" "$dir/batch" >/dev/null || fail "xfs: batch"
	cp --reflink=always "$mnt/m.pool" "$mnt/m-copy.pool" || fail "xfs: reflink copy m"
	filefrag -v "$mnt/m.pool" | grep -q shared || fail "xfs: the reflinked copy shares nothing: $(filefrag -v "$mnt/m.pool")"
	pool=$mnt/m.pool nsock=$mnt/m.pool.nbd.sock csock=$mnt/m.pool.ctl.sock
	export TV_NSOCK=$nsock TV_CSOCK=$csock TV_POOL=$pool
	start_serve
	! filefrag -v "$mnt/m.pool" | grep shared ||
		fail "xfs: blocks of the open pool are still shared with the copy"
	stop_serve
	umount "$mnt"
	note "xfs: a FLUSH on the full filesystem passes after a reflinked copy"
else
	note "xfs: cannot make or mount an XFS image here: part 1 not run"
fi
rm -f "$img"

# ---- 2. btrfs ----
if command -v mkfs.btrfs >/dev/null && truncate -s 512M "$img" &&
	mkfs.btrfs -q -f "$img" >/dev/null 2>&1 &&
	mount -o loop "$img" "$mnt" 2>/dev/null; then
	on_exit umount -l "$mnt"
	"$tv" pool create "$mnt/p.pool" --size 256M >/dev/null 2>"$dir/err" || fail "btrfs: pool create"
	! grep -q nocow "$dir/err" || fail "btrfs: pool create warned: $(cat "$dir/err")"
	lsattr "$mnt/p.pool" | grep -q '^[^ ]*C' || fail "btrfs: the new pool file has no nocow: $(lsattr "$mnt/p.pool")"
	run_full btrfs
	# a file that had data before: no nocow, and said so
	head -c 1M /dev/urandom >"$mnt/old.img"
	rm -f "$mnt/fill" "$mnt/fill2"
	"$tv" pool create "$mnt/old.img" --size 64M --force >/dev/null 2>"$dir/err" || fail "btrfs: pool create --force: $(cat "$dir/err")"
	grep -q "without the nocow attribute" "$dir/err" || fail "btrfs: no warning for a copy-on-write pool file: $(cat "$dir/err")"
	umount "$mnt"
	note "btrfs: pool create sets nocow, a FLUSH on the full filesystem passes, a cow file is warned about"
else
	note "btrfs: cannot make or mount a btrfs image here: part 2 not run"
fi
finish
