#!/usr/bin/env bash
# A volume as a block device with an ext4 file system on it: nbdfuse turns
# the export into a file, losetup --direct-io=on into /dev/loopN; mkfs,
# mount, write files, fstrim, umount, e2fsck -fn clean, checksums equal
# after a remount.  Then, with the file system mounted and a writer
# creating and fsyncing files, `thinvol snapshot` through the daemon: the
# snapshot is crash-consistent — mounted (which replays the journal) and
# unmounted, e2fsck -fn finds it clean, and every file fsynced before the
# snapshot was requested is in it with its content.
. "$(dirname "$0")/lib.sh"
need nbdfuse losetup mkfs.ext4 e2fsck mount umount fusermount3 sha256sum
[ "$(id -u)" -eq 0 ] || skip "needs root for losetup and mount"
[ -c /dev/fuse ] || skip "no /dev/fuse on this machine"
[ -e /dev/loop-control ] || skip "no loop device support (/dev/loop-control missing)"
losetup -f >/dev/null 2>&1 || skip "no free loop device"
grep -qw ext4 /proc/filesystems || modprobe ext4 2>/dev/null || true
grep -qw ext4 /proc/filesystems || skip "the kernel has no ext4"

pool_create 2G --block-size 64K
start_serve
vol_create fs 512M

# attach VOL: nbdfuse + loop device; sets $loop.  Undone at exit (and by
# detach) in the right order: fusermount only after losetup -d.
attach() {
	local vol=$1 m=$dir/fuse-$1
	mkdir -p "$m"
	nbdfuse -P "$dir/nbdfuse-$vol.pid" "$m" "$(uri "$vol")" 2>>"$dir/nbdfuse.log" &
	on_exit "fusermount3 -u '$m' || fusermount3 -u -z '$m'; sleep 0.2"
	wait_for 20 test -s "$dir/nbdfuse-$vol.pid" || fail "nbdfuse $vol not ready: $(cat "$dir/nbdfuse.log")"
	loop=$(losetup --direct-io=on -f --show "$m/nbd") || fail "losetup of $m/nbd"
	on_exit "loop_detach '$loop' '$m/nbd'"
	[ "$(blockdev --getsize64 "$loop")" = "$(show_field "$vol" size)" ] || fail "$loop has the wrong size"
}
# loop_detach LOOP FILE: detach LOOP if it is still ours (the number may
# have gone to another user since)
loop_detach() {
	[ "$(losetup -l -n -O BACK-FILE "$1" 2>/dev/null | sed 's/ *$//')" = "$(realpath -m "$2")" ] || return 0
	losetup -d "$1"
}
detach() { # detach VOL LOOP
	loop_detach "$2" "$dir/fuse-$1/nbd" || fail "losetup -d $2"
	fusermount3 -u "$dir/fuse-$1" || fail "fusermount3 -u $dir/fuse-$1"
	local i
	for ((i = 0; i < 100; i++)); do # nbdfuse exits once unmounted
		mountpoint -q "$dir/fuse-$1" || return 0
		sleep 0.1
	done
	fail "fuse-$1 still mounted"
}
mnt=$dir/mnt
mkdir -p "$mnt"
do_mount() {
	mount "$1" "$mnt" || fail "mount $1"
	on_exit "! mountpoint -q '$mnt' || umount '$mnt' || umount -l '$mnt'"
}
do_umount() { umount "$mnt" || fail "umount $mnt"; }

attach fs
fsloop=$loop
mkfs.ext4 -q -F -E nodiscard "$fsloop" || fail "mkfs.ext4"
do_mount "$fsloop"
mkdir "$mnt/d"
for i in $(seq 1 40); do
	head -c $(((i * 37 % 17 + 1) * 65536 + i * 333)) /dev/urandom >"$mnt/d/f$i"
done
dd if=/dev/urandom of="$mnt/big" bs=1M count=24 status=none
(cd "$mnt" && find . -type f | sort | xargs sha256sum) >"$dir/sums"
rm "$mnt/d/f1" "$mnt/d/f2" && sed -i '/ \.\/d\/f[12]$/d' "$dir/sums"
fstrim "$mnt" 2>/dev/null || true # discard through loop -> fuse -> NBD TRIM, if passed on
do_umount
e2fsck -fn "$fsloop" >"$dir/fsck.out" 2>&1 || fail "e2fsck -fn after umount: $(cat "$dir/fsck.out")"
m1=$(show_field fs mapped)
[ "$m1" -ge $((24 << 20)) ] || fail "fs maps only $m1 bytes after writing 24+ MiB"
do_mount "$fsloop"
(cd "$mnt" && sha256sum --quiet -c "$dir/sums") || fail "checksums differ after remount"

# ---- a snapshot of the mounted file system under a write load ----
: >"$dir/synced"
(
	set +e
	i=0
	while [ ! -e "$dir/stop" ]; do
		i=$((i + 1))
		dd if=/dev/urandom of="$mnt/d/w$i" bs=64k count=$((i % 8 + 1)) conv=fsync status=none || break
		(cd "$mnt" && sha256sum "./d/w$i") >>"$dir/synced"
	done
) &
writer=$!
on_exit "touch '$dir/stop'; kill $writer"
sleep 2
cp "$dir/synced" "$dir/synced-before" # every file here was fsynced before the snapshot
"$tv" snapshot "$pool" fs snap >/dev/null || fail "thinvol snapshot while mounted and written"
sleep 1
touch "$dir/stop"
wait "$writer" || true
[ "$(wc -l <"$dir/synced-before")" -ge 3 ] || fail "the writer wrote only $(wc -l <"$dir/synced-before") files in 2 s"
note "$(wc -l <"$dir/synced-before") files fsynced before the snapshot, $(wc -l <"$dir/synced") in all"
(cd "$mnt" && sha256sum --quiet -c "$dir/synced") || fail "origin: written files differ"
do_umount
e2fsck -fn "$fsloop" >"$dir/fsck.out" 2>&1 || fail "origin: e2fsck -fn: $(cat "$dir/fsck.out")"

attach snap
snaploop=$loop
# The snapshot is a crash image: the journal needs replaying (mount does
# it); after that the file system must be clean.
do_mount "$snaploop"
(cd "$mnt" && sha256sum --quiet -c "$dir/sums") || fail "snapshot: files written before the load differ"
(cd "$mnt" && sha256sum --quiet -c "$dir/synced-before") ||
	fail "snapshot: a file fsynced before the snapshot is missing or differs"
do_umount
e2fsck -fn "$snaploop" >"$dir/fsck.out" 2>&1 || fail "snapshot: e2fsck -fn after journal replay: $(cat "$dir/fsck.out")"

detach snap "$snaploop"
detach fs "$fsloop"
stop_serve
check_clean
finish
