#!/usr/bin/env bash
# Which pool a command reaches, by any name, and that no two processes
# use one pool's storage (issue 14, items 2, 4 and 7).  Loop devices
# stand in for real block devices.
#   1. export and import through the daemon refuse the pool's own file,
#      by any name, and the file of a loop device over it, and the reverse
#      (the pool on the loop device, the file as target); an export into
#      another pool, served by another daemon, too; nothing changes;
#   2. a pool file and a loop device over it: while a daemon serves one,
#      a second daemon, offline commands and pool create --force on the
#      other are refused (exit 8, the holder named), in both orders; a
#      loop over that loop too; the volumes made through the daemon are
#      all there afterwards;
#   3. partitions of a loop device: pools on two partitions are served at
#      once; the whole device and its backing file are refused meanwhile;
#      an export from one partition's pool to the whole device is refused,
#      to the other partition's (held by its daemon) too;
#   4. two loop devices reached as DIR1/data and DIR2/data (same basename):
#      with DIR1/data served, `delete DIR2/data prod-db` deletes from
#      DIR2's pool and not through DIR1's daemon; another symlink to the
#      served device (as /dev/disk/by-id has) reaches its daemon;
#   5. a file pool served: a symlink, a hard link and a relative path all
#      reach its daemon; a copy of the pool put in its place (same uuid,
#      another inode) does not: the command runs on the copy offline;
#   6. a mounted block device: pool create --force, serve and an export
#      into it are refused (exit 8, the mount named); the file system
#      stays clean;
#   7. a block device's sockets are /run/thinvol/block-MAJ:MIN.*.sock, and
#      the daemon refuses a /run/thinvol that others may write into (in a
#      mount namespace of its own, so the machine's is not touched).
#   8. a loop device over a pool file whose name was removed (the pool
#      lives on under a hard link), served or exported into by either
#      name in either order, also when the loop device is attached while
#      the file is served, and a pool file called "x (deleted)": one
#      holder at a time (exit 8), exports into the loop device refused
#      (exit 2), the volumes intact;
#   9. an image file mounted through a loop device, and a device under a
#      mounted loop over it: pool create --force, serve and export
#      refused (exit 8, the mount and the loop device named), the file
#      system clean; a loop device over a served pool cannot be mounted;
#  10. a pool file whose real path is too long for a socket beside it:
#      served, its sockets in /run/thinvol named after its device and
#      inode; the commands reach its daemon by the pool's path;
#  11. the pool seen through an overlayfs mount of its directory: import
#      refused (exit 2), offline and through the daemon; nothing changed.
. "$(dirname "$0")/lib.sh"
need losetup python3
[ "$(id -u)" -eq 0 ] || skip "needs root for loop devices"
losetup -f >/dev/null 2>&1 || skip "no free loop device"

# loop_attach [ARGS] FILE: $loop := a loop device over FILE, detached at
# the end (not in a subshell: the undo step must reach the EXIT trap)
loop_attach() {
	loop=$(losetup -f --show "$@") || fail "losetup $*"
	on_exit "losetup -d $loop"
}
# busy CMD...: CMD must fail with exit 8, naming the holder
busy() {
	local rc=0
	timeout 20 "$@" >"$dir/out" 2>"$dir/err" </dev/null || rc=$?
	[ "$rc" -eq 8 ] || fail "$*: exit $rc, want 8 (busy): $(cat "$dir/err")"
	grep -q "in use by process [0-9]* (thinvol)" "$dir/err" ||
		fail "$*: the holder is not named: $(cat "$dir/err")"
}
# refused STATUS TEXT CMD...: CMD exits STATUS and says TEXT
refused() {
	local want=$1 text=$2 rc=0
	shift 2
	timeout 20 "$@" >"$dir/out" 2>"$dir/err" </dev/null || rc=$?
	[ "$rc" -eq "$want" ] || fail "$*: exit $rc, want $want: $(cat "$dir/err")"
	grep -qF -- "$text" "$dir/err" || fail "$*: stderr lacks '$text': $(cat "$dir/err")"
}
names() { "$tv" list "$1" --json | "$PY" -c 'import json, sys; print(" ".join(sorted(v["name"] for v in json.load(sys.stdin))))'; }
# serve_dev DEV NAME: `thinvol serve DEV` in the background, ready;
# $sp := its pid (log in $dir/NAME.log)
serve_dev() {
	rm -f "$dir/$2.pid"
	"$tv" serve "$1" --foreground --pidfile "$dir/$2.pid" >"$dir/$2.log" 2>&1 </dev/null &
	sp=$!
	on_exit "kill -KILL $sp"
	wait_for 20 test -s "$dir/$2.pid" || fail "serve $1: not ready: $(cat "$dir/$2.log")"
}
stop_dev() { # stop_dev PID
	kill -TERM "$1"
	wait "$1" || fail "serve (pid $1) exited $? after SIGTERM"
}

# ---- 1. export/import through the daemon: never onto the pool ----
pool_create 256M
vol_create v 16M
head -c 4M /dev/urandom >"$dir/img"
"$tv" import "$pool" v "$dir/img" || fail "import"
ln -s p.pool "$dir/p-link"
ln "$pool" "$dir/p-hard"
sum=$(sha256sum <"$pool")
start_serve
exec 9<"$pool"
for f in "$pool" "$dir/p-link" "$dir/p-hard" /proc/self/fd/9; do
	refused 2 "it is the pool itself" "$tv" export "$pool" v "$f"
	refused 2 "it is the pool itself" "$tv" import "$pool" v "$f"
done
exec 9<&-
refused 2 "it is the pool itself" bash -c '"$0" export "$1" v - 1<>"$1"' "$tv" "$pool"
loop_attach "$pool"
lp=$loop
refused 2 "the pool is $pool, the backing file of $lp" "$tv" export "$pool" v "$lp"
refused 2 "the pool is $pool, the backing file of $lp" "$tv" import "$pool" v "$lp"
# nor into another pool that another daemon serves
"$tv" pool create "$dir/q.pool" --size 64M >/dev/null 2>&1 || fail "pool create q"
qsum=$(sha256sum <"$dir/q.pool")
serve_dev "$dir/q.pool" q
refused 8 "refusing to write into $dir/q.pool: it is in use by process $sp (thinvol)" \
	"$tv" export "$pool" v "$dir/q.pool"
stop_dev "$sp"
[ "$(sha256sum <"$dir/q.pool")" = "$qsum" ] || fail "an export wrote into another served pool"
alive "$serve_pid" || fail "the daemon died"
"$tv" export "$pool" v "$dir/back" || fail "export to a file"
cmp -s <(head -c 4M "$dir/back") "$dir/img" || fail "the volume changed"
stop_serve
[ "$(sha256sum <"$pool")" = "$sum" ] || fail "a refused export changed the pool file"
check_clean
note "export/import through the daemon: the pool by 4 names and a loop device over it refused"

# ---- 2. one pool, two names: the file and a loop device over it ----
start_serve
vol_create via-file 1M
busy "$tv" serve "$lp" --foreground --socket "$dir/x.sock"
busy "$tv" create "$lp" offline-loop --size 1M
busy "$tv" pool create "$lp" --force
[ ! -e "$dir/x.sock" ] || fail "a refused serve left its socket"
stop_serve
# the other way round: the loop device served, the file refused
serve_dev "$lp" loopd
w=$sp
"$tv" create "$lp" via-loop --size 1M >/dev/null || fail "create through the loop device's daemon"
busy "$tv" serve "$pool" --foreground
busy "$tv" create "$pool" offline-file --size 1M
busy "$tv" list "$pool"
busy "$tv" pool create "$pool" --force
refused 2 "it is $pool, the backing file of the pool $lp" "$tv" export "$lp" via-loop "$pool"
refused 2 "it is the pool itself" "$tv" export "$lp" via-loop "$lp"
# a loop over that loop device: every layer is taken
loop_attach "$lp"
lp2=$loop
busy "$tv" serve "$lp2" --foreground
busy "$tv" create "$lp2" offline-loop2 --size 1M
stop_dev "$w"
serve_dev "$lp2" loop2d
w=$sp
"$tv" create "$lp2" via-loop2 --size 1M >/dev/null || fail "create through the loop-over-loop daemon"
busy "$tv" serve "$lp" --foreground
busy "$tv" serve "$pool" --foreground
busy "$tv" create "$pool" offline-file2 --size 1M
stop_dev "$w"
check_clean
[ "$(names "$pool")" = "v via-file via-loop via-loop2" ] ||
	fail "volumes after serving the pool by three names: $(names "$pool")"
note "a pool file, a loop device over it and a loop over that: one holder at a time, both orders"

# ---- 3. partitions of a loop device ----
if command -v sfdisk >/dev/null; then
	truncate -s 96M "$dir/disk.img"
	printf 'label: gpt\n,40M\n,40M\n' | sfdisk -q "$dir/disk.img" || fail "sfdisk"
	loop_attach -P "$dir/disk.img"
	ld=$loop
	[ -b "${ld}p2" ] || partx -a "$ld" 2>/dev/null || true
	if [ -b "${ld}p1" ] && [ -b "${ld}p2" ]; then
		"$tv" pool create "${ld}p1" >/dev/null && "$tv" pool create "${ld}p2" >/dev/null ||
			fail "pool create on the partitions"
		"$tv" create "${ld}p1" x --size 1M >/dev/null || fail "create on p1"
		serve_dev "${ld}p1" p1
		w1=$sp
		serve_dev "${ld}p2" p2
		w2=$sp
		"$tv" create "${ld}p2" y --size 1M >/dev/null || fail "create through p2's daemon"
		busy "$tv" serve "$ld" --foreground
		busy "$tv" serve "$dir/disk.img" --foreground
		busy "$tv" pool create "$dir/disk.img" --force
		refused 2 "it is $ld, the disk of the pool ${ld}p1" "$tv" export "${ld}p1" x "$ld"
		refused 8 "refusing to write into ${ld}p2: it is in use by process" \
			"$tv" export "${ld}p1" x "${ld}p2"
		stop_dev "$w1"
		stop_dev "$w2"
		[ "$(names "${ld}p1")" = x ] && [ "$(names "${ld}p2")" = y ] ||
			fail "partition pools: $(names "${ld}p1") / $(names "${ld}p2")"
		note "partitions: two pools served side by side; the disk and its file refused meanwhile"
	else
		note "no partitions on a loop device here: section 3 not run"
	fi
else
	note "no sfdisk: section 3 not run"
fi

# ---- 4. block devices with the same basename ----
mkdir "$dir/vg1" "$dir/vg2" "$dir/by-id"
truncate -s 64M "$dir/a.img" "$dir/b.img"
loop_attach "$dir/a.img"
la=$loop
loop_attach "$dir/b.img"
lb=$loop
ln -s "$la" "$dir/vg1/data"
ln -s "$lb" "$dir/vg2/data"
ln -s "$la" "$dir/by-id/virtio-thinvol-test"
for vg in vg1 vg2; do
	"$tv" pool create "$dir/$vg/data" >/dev/null || fail "pool create $vg/data"
	"$tv" create "$dir/$vg/data" prod-db --size 1M >/dev/null || fail "create prod-db in $vg"
done
serve_dev "$dir/vg1/data" vg1
w=$sp
"$tv" delete "$dir/vg2/data" prod-db || fail "delete vg2/data prod-db"
[ "$(names "$dir/vg1/data")" = prod-db ] || fail "vg1's prod-db is gone: $(names "$dir/vg1/data")"
rd=$(stat -L -c '%t %T' "$la" | { read -r a b; echo "$((16#$a)):$((16#$b))"; })
for s in ctl nbd; do
	[ -S "/run/thinvol/block-$rd.$s.sock" ] || fail "no /run/thinvol/block-$rd.$s.sock: $(cat "$dir/vg1.log")"
done
"$tv" create "$dir/by-id/virtio-thinvol-test" via-by-id --size 1M >/dev/null ||
	fail "create through a by-id style symlink"
"$tv" create "$la" via-dev --size 1M >/dev/null || fail "create through $la"
[ "$(names "$dir/vg1/data")" = "prod-db via-by-id via-dev" ] ||
	fail "vg1 through its daemon: $(names "$dir/vg1/data")"
stop_dev "$w"
[ "$(names "$dir/vg2/data")" = "" ] || fail "vg2 after the delete: $(names "$dir/vg2/data")"
# offline, a block device pool and the same device by another name
"$tv" create "$dir/vg2/data" v2 --size 1M >/dev/null || fail "create v2"
refused 2 "it is the pool itself" "$tv" export "$dir/vg2/data" v2 "$lb"
refused 2 "it is the pool itself" "$tv" import "$lb" v2 "$dir/vg2/data"
[ ! -e "/run/thinvol/block-$rd.ctl.sock" ] || fail "the daemon left its control socket"
note "same basename: vg2/data prod-db deleted offline, vg1's daemon untouched; by-id and /dev paths reach it"

# ---- 5. a file pool by other names, and a copy in its place ----
start_serve
( cd "$dir" && "$tv" create p.pool rel --size 1M >/dev/null ) || fail "create through a relative path"
"$tv" create "$dir/p-link" sym --size 1M >/dev/null || fail "create through a symlink"
"$tv" create "$dir/p-hard" hard --size 1M >/dev/null || fail "create through a hard link"
[ "$(names "$pool")" = "hard rel sym v via-file via-loop via-loop2" ] ||
	fail "volumes through the daemon: $(names "$pool")"
# the pool file moved away, a copy of it (same uuid) in its place: the
# daemon keeps serving the original, whose socket is still at p.pool's
mv "$pool" "$dir/orig.pool"
cp --sparse=always "$dir/orig.pool" "$pool"
"$tv" create "$pool" on-copy --size 1M >/dev/null || fail "create on the copy"
[ "$(names "$dir/orig.pool")" = "hard rel sym v via-file via-loop via-loop2" ] ||
	fail "the copy's create reached the daemon of the original: $(names "$dir/orig.pool")"
stop_serve
"$tv" check "$pool" >/dev/null || fail "the copy does not check clean"
[ "$(names "$pool")" = "hard on-copy rel sym v via-file via-loop via-loop2" ] ||
	fail "the copy: $(names "$pool")"
note "a relative path, a symlink and a hard link reach the daemon; a copy in the pool's place does not"

# ---- 6. a mounted block device is nobody's pool ----
if command -v mkfs.ext4 >/dev/null; then
	truncate -s 64M "$dir/fs.img"
	mkfs.ext4 -q -F "$dir/fs.img" || fail "mkfs.ext4"
	loop_attach "$dir/fs.img"
	lf=$loop
	mkdir "$dir/mnt"
	mount "$lf" "$dir/mnt" || fail "mount $lf"
	on_exit "umount $dir/mnt"
	echo "kept" >"$dir/mnt/file"
	refused 8 "it is in use by a filesystem mounted at $dir/mnt" "$tv" pool create "$lf" --force
	refused 8 "the pool is in use by a filesystem mounted at $dir/mnt" "$tv" serve "$lf" --foreground
	refused 8 "refusing to write into $lf: it is in use by a filesystem mounted at $dir/mnt" \
		"$tv" export "$pool" v "$lf"
	umount "$dir/mnt"
	e2fsck -fn "$lf" >/dev/null 2>&1 || fail "the mounted file system was damaged"
	note "a mounted device: pool create --force, serve and export refused"
else
	note "no mkfs.ext4: section 6 not run"
fi

# ---- 8. a loop device whose backing file has no name left ----
# The loop device is known to read the pool by device and inode (what
# LOOP_GET_STATUS64 says), not by the name sysfs shows (review 2, access finding
# 1): here that name is removed while the pool lives on under a hard link,
# and then a pool file is literally called "... (deleted)".
"$tv" pool create "$dir/n.pool" --size 64M >/dev/null 2>&1 || fail "pool create n"
"$tv" create "$dir/n.pool" base --size 4M >/dev/null || fail "create base"
head -c 4M /dev/urandom >"$dir/nimg"
"$tv" import "$dir/n.pool" base "$dir/nimg" || fail "import base"
ln "$dir/n.pool" "$dir/n2.pool"
loop_attach "$dir/n.pool"
ln=$loop
rm "$dir/n.pool"
grep -q ' (deleted)$' "/sys/block/${ln#/dev/}/loop/backing_file" || fail "the backing file's name is still there"
# the file served first: the loop device is refused (exit 8), and an
# export into it is the pool itself (exit 2)
serve_dev "$dir/n2.pool" n2
w=$sp
"$tv" create "$dir/n2.pool" via-file --size 1M >/dev/null || fail "create through the file's daemon"
busy "$tv" serve "$ln" --foreground
busy "$tv" create "$ln" offline-loop --size 1M
refused 2 "the backing file of $ln" "$tv" export "$dir/n2.pool" base "$ln"
refused 2 "the backing file of $ln" "$tv" import "$dir/n2.pool" base "$ln"
stop_dev "$w"
# offline too
refused 2 "the backing file of $ln" "$tv" export "$dir/n2.pool" base "$ln"
# the loop device served first: the file is refused
serve_dev "$ln" nloop
w=$sp
"$tv" create "$ln" via-loop --size 1M >/dev/null || fail "create through the loop device's daemon"
busy "$tv" serve "$dir/n2.pool" --foreground
busy "$tv" list "$dir/n2.pool"
busy "$tv" pool create "$dir/n2.pool" --force
refused 2 "the backing file of the pool $ln" "$tv" export "$ln" base "$dir/n2.pool"
stop_dev "$w"
# a loop device attached (and its name removed) while the file is served:
# its daemon finds the file's lock by device and inode (/proc/locks)
serve_dev "$dir/n2.pool" n2b
w=$sp
ln "$dir/n2.pool" "$dir/n3.pool"
loop_attach "$dir/n3.pool"
ln3=$loop
rm "$dir/n3.pool"
busy "$tv" serve "$ln3" --foreground
busy "$tv" create "$ln3" offline-loop3 --size 1M
stop_dev "$w"
check_one() { "$tv" check "$1" >/dev/null || fail "check $1"; }
check_one "$dir/n2.pool"
[ "$(names "$dir/n2.pool")" = "base via-file via-loop" ] ||
	fail "volumes after serving the pool by two names: $(names "$dir/n2.pool")"
"$tv" export "$dir/n2.pool" base "$dir/nout" || fail "export base"
cmp -s "$dir/nout" "$dir/nimg" || fail "the pool's volume changed"
# a pool file whose own name ends in " (deleted)", both orders
"$tv" pool create "$dir/x (deleted)" --size 64M >/dev/null 2>&1 || fail "pool create 'x (deleted)'"
"$tv" create "$dir/x (deleted)" xv --size 1M >/dev/null || fail "create xv"
loop_attach "$dir/x (deleted)"
lx=$loop
serve_dev "$dir/x (deleted)" xd
w=$sp
busy "$tv" serve "$lx" --foreground
stop_dev "$w"
serve_dev "$lx" xl
w=$sp
busy "$tv" serve "$dir/x (deleted)" --foreground
refused 2 "it is $dir/x (deleted), the backing file of the pool $lx" "$tv" export "$lx" xv "$dir/x (deleted)"
stop_dev "$w"
note "a loop device over a pool file whose name is gone (or ends in ' (deleted)'): one holder, every order; exports refused"

# ---- 9. a file or device under a mounted loop device ----
# A loop device holds nothing of its backing file, so a claim looks up
# for loop devices over it (review 2, access finding 2).
if command -v mkfs.ext4 >/dev/null; then
	mkdir -p "$dir/mnt9"
	truncate -s 64M "$dir/fs9.img"
	mkfs.ext4 -q -F "$dir/fs9.img" || fail "mkfs.ext4"
	loop_attach "$dir/fs9.img"
	l9=$loop
	mount "$l9" "$dir/mnt9" || fail "mount $l9"
	on_exit "umount $dir/mnt9"
	echo kept >"$dir/mnt9/file"
	sync
	want="a filesystem mounted at $dir/mnt9, through $l9 (a loop device over $dir/fs9.img)"
	refused 8 "$want" "$tv" pool create "$dir/fs9.img" --force
	refused 8 "$want" "$tv" export "$pool" v "$dir/fs9.img"
	refused 8 "$want" "$tv" serve "$dir/fs9.img" --foreground
	umount "$dir/mnt9"
	e2fsck -fn "$dir/fs9.img" >"$dir/fsck9" 2>&1 || fail "the mounted file system was damaged: $(cat "$dir/fsck9")"
	# a loop device over a loop device, the upper one mounted
	truncate -s 64M "$dir/base9.img"
	loop_attach "$dir/base9.img"
	la9=$loop
	loop_attach "$la9"
	lb9=$loop
	mkfs.ext4 -q -F "$lb9" || fail "mkfs.ext4 $lb9"
	mount "$lb9" "$dir/mnt9" || fail "mount $lb9"
	echo kept >"$dir/mnt9/file"
	sync
	want="a filesystem mounted at $dir/mnt9, through $lb9 (a loop device over $la9)"
	refused 8 "$want" "$tv" pool create "$la9" --force
	refused 8 "$want" "$tv" pool create "$dir/base9.img" --force
	refused 8 "$want" "$tv" export "$pool" v "$la9"
	umount "$dir/mnt9"
	e2fsck -fn "$lb9" >"$dir/fsck9" 2>&1 || fail "the file system on $lb9 was damaged: $(cat "$dir/fsck9")"
	# unmounted, the loop devices are held while the pool is: a mount
	# of one of them is refused meanwhile
	"$tv" pool create "$dir/base9.img" --force >/dev/null 2>&1 || fail "pool create base9.img once unmounted"
	serve_dev "$dir/base9.img" b9
	w=$sp
	! mount "$lb9" "$dir/mnt9" 2>/dev/null || { umount "$dir/mnt9"; fail "mounted $lb9 while its backing pool is served"; }
	stop_dev "$w"
	note "a filesystem mounted through a loop device (and a loop over a loop): pool create --force, serve and export refused"
else
	note "no mkfs.ext4: section 9 not run"
fi

# ---- 10. a pool file whose real path is too long for a socket beside it ----
# (review 2, access finding 9): its sockets are /run/thinvol/file-MAJ:MIN-INO.*,
# and the commands find the daemon there from the pool's path alone
d10=$dir/$(printf 'd%.0s' {1..60})/$(printf 'e%.0s' {1..30})
mkdir -p "$d10"
"$tv" pool create "$d10/p.pool" --size 64M >/dev/null 2>&1 || fail "pool create with a long path"
s10=/run/thinvol/$("$PY" -c 'import os, sys; s = os.stat(sys.argv[1]); print("file-%d:%d-%d" % (os.major(s.st_dev), os.minor(s.st_dev), s.st_ino))' "$d10/p.pool")
serve_dev "$d10/p.pool" long10
w=$sp
grep -qF "control socket $s10.ctl.sock" "$dir/long10.log" || fail "serve of a long path: $(cat "$dir/long10.log")"
[ -S "$s10.ctl.sock" ] && [ -S "$s10.nbd.sock" ] || fail "no sockets at $s10.*"
(cd "$d10" && "$tv" create p.pool v10 --size 4M >/dev/null) || fail "create through the daemon of a long path"
# through the daemon: the NBD socket serves what the command made
nbdinfo --list "nbd+unix://?socket=$s10.nbd.sock" 2>/dev/null | grep -q "v10" ||
	fail "v10 not served on $s10.nbd.sock"
# pool create on a pool in use changes nothing, not even the file's mode
# (review 2, access finding 3: the group and other bits go only once it is ours)
chmod 0640 "$d10/p.pool"
busy "$tv" pool create "$d10/p.pool" --force
[ "$(stat -c %a "$d10/p.pool")" = 640 ] || fail "a refused pool create changed the served pool's mode to $(stat -c %a "$d10/p.pool")"
chmod 0600 "$d10/p.pool"
stop_dev "$w"
[ ! -e "$s10.ctl.sock" ] && [ ! -e "$s10.nbd.sock" ] || fail "sockets left at $s10.*"
[ "$(names "$d10/p.pool")" = v10 ] || fail "long path: volumes $(names "$d10/p.pool")"
note "a pool file with a long path: served with its sockets in /run/thinvol, found by its path"

# ---- 11. the pool seen through overlayfs (review 2, access finding 8) ----
mkdir -p "$dir/ov/low" "$dir/ov/up" "$dir/ov/wk" "$dir/ov/mg"
"$tv" pool create "$dir/ov/low/p.pool" --size 64M >/dev/null 2>&1 || fail "pool create ov"
# (as large as the pool file, so that nothing but the identity refuses)
"$tv" create "$dir/ov/low/p.pool" v --size 64M >/dev/null || fail "create ov v"
head -c 4M /dev/urandom >"$dir/ov.img"
"$tv" import "$dir/ov/low/p.pool" v "$dir/ov.img" || fail "import ov"
if mount -t overlay overlay -o "lowerdir=$dir/ov/low,upperdir=$dir/ov/up,workdir=$dir/ov/wk" "$dir/ov/mg" 2>/dev/null; then
	on_exit "umount '$dir/ov/mg'"
	sum=$(md5sum <"$dir/ov/low/p.pool")
	refused 2 "it is the pool itself" "$tv" import "$dir/ov/low/p.pool" v "$dir/ov/mg/p.pool"
	serve_dev "$dir/ov/low/p.pool" ov
	w=$sp
	refused 2 "seen through the overlayfs" "$tv" import "$dir/ov/low/p.pool" v "$dir/ov/mg/p.pool"
	stop_dev "$w"
	[ "$(md5sum <"$dir/ov/low/p.pool")" = "$sum" ] || fail "the pool changed under a refused import"
	"$tv" export "$dir/ov/low/p.pool" v "$dir/ov.out" || fail "export ov"
	cp "$dir/ov.img" "$dir/ov.want"
	truncate -s 64M "$dir/ov.want"
	cmp "$dir/ov.want" "$dir/ov.out" || fail "the volume changed under a refused import"
	note "the pool seen through overlayfs: import refused (exit 2), offline and through the daemon"
else
	note "no overlayfs here: section 11 not run"
fi

# ---- 7. /run/thinvol that others may write into ----
if unshare -m true 2>/dev/null; then
	rc=0
	timeout 20 unshare -m bash -c 'mount -t tmpfs tvrun /run && mkdir -m 1777 /run/thinvol &&
		exec "$0" serve "$1" --foreground' "$tv" "$la" >"$dir/run.out" 2>&1 </dev/null || rc=$?
	[ "$rc" -ne 0 ] || fail "serve with a world-writable /run/thinvol started"
	grep -q "/run/thinvol: others may write into it" "$dir/run.out" ||
		fail "serve with a world-writable /run/thinvol: $(cat "$dir/run.out")"
	note "a /run/thinvol others may write into is refused"
else
	note "no mount namespaces here: section 7 not run"
fi
finish
