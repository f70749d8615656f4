#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# test-io on the filesystems a pool file meets in practice, each made here
# on a loop device: ext4 with its journal, without one, with
# data=writeback as a mount option and as a default mount option in the
# superblock (tune2fs -o journal_data_writeback: mountinfo does not show
# it), and XFS.  test-io checks that a pool file gets ranged
# syncs exactly where the filesystem orders a new block's data before its
# allocation (the crash safety of ranged commits rests on it), then runs
# its ranged sync and preallocation tests there.  Then `thinvol serve`
# ($THINVOL) must warn about a pool on ext4 without a journal, and not
# about one on journalled ext4.
# Needs root, loop devices and mkfs.ext4; XFS also mkfs.xfs (xfsprogs).
# Exit 77 (skip) where they are missing.
set -euo pipefail

skip() { echo "test-io-fs: skipped: $*"; exit 77; }
[ -n "${TEST_IO:-}" ] && [ -x "$TEST_IO" ] || { echo "TEST_IO unset"; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "not root"
command -v losetup >/dev/null || skip "no losetup"
command -v mkfs.ext4 >/dev/null || skip "no mkfs.ext4"
[ -e /dev/loop-control ] || skip "no /dev/loop-control"

work=$(mktemp -d "${TMPDIR:-/tmp}/test-io-fs.XXXXXX")
loops=()
mounts=()
cleanup() {
	local m l
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# mkfs_mount KIND SIZE_MB MOUNT_OPTS TUNE2FS_OPTS MKFS...
mkfs_mount() {
	local kind=$1 size=$2 opts=$3 tune=$4 dev
	shift 4
	truncate -s "${size}M" "$work/$kind.img"
	dev=$(losetup -f --show "$work/$kind.img") ||
		skip "losetup failed (no free loop device?)"
	loops+=("$dev")
	"$@" "$dev" >"$work/$kind.mkfs" 2>&1 || {
		cat "$work/$kind.mkfs"; echo "mkfs for $kind failed"; exit 1; }
	if [ -n "$tune" ]; then
		command -v tune2fs >/dev/null || skip "no tune2fs"
		tune2fs $tune "$dev" >>"$work/$kind.mkfs" 2>&1 || {
			cat "$work/$kind.mkfs"; echo "tune2fs for $kind failed"; exit 1; }
	fi
	mkdir -p "$work/$kind"
	mount ${opts:+-o "$opts"} "$dev" "$work/$kind" ||
		skip "cannot mount $kind"
	mounts+=("$work/$kind")
	fs+=("$kind=$work/$kind")
}

fs=()
mkfs_mount ext4j 64 "" "" mkfs.ext4 -q -F
mkfs_mount ext4nj 64 "" "" mkfs.ext4 -q -F -O ^has_journal
mkfs_mount ext4wb 64 data=writeback "" mkfs.ext4 -q -F
mkfs_mount ext4wbdef 64 "" "-o journal_data_writeback" mkfs.ext4 -q -F
if command -v mkfs.xfs >/dev/null; then
	mkfs_mount xfs 320 "" "" mkfs.xfs -q -f
else
	echo "test-io-fs: no mkfs.xfs (xfsprogs): XFS not tested"
fi
# the kinds are what we think they are
for k in ext4j ext4wb ext4wbdef; do
	grep -q "^$(basename "$(findmnt -n -o SOURCE "$work/$k")")-8" \
		<(ls /proc/fs/jbd2) || { echo "$k: no journal"; exit 1; }
done
if ls /proc/fs/jbd2 | grep -q "^$(basename "$(findmnt -n -o SOURCE "$work/ext4nj")")-8"; then
	echo "ext4nj: has a journal"; exit 1
fi
findmnt -n -o OPTIONS "$work/ext4wb" | grep -q data=writeback ||
	{ echo "ext4wb: not data=writeback"; exit 1; }
# ext4wbdef is data=writeback from the superblock's default mount options,
# which mountinfo leaves out (the bug this kind is here for): if a kernel
# ever lists it there, the case is no longer tested
wbdef_dev=$(basename "$(findmnt -n -o SOURCE "$work/ext4wbdef")")
grep -qx data=writeback "/proc/fs/ext4/$wbdef_dev/options" ||
	{ echo "ext4wbdef: /proc/fs/ext4/$wbdef_dev/options does not say data=writeback"; exit 1; }
if findmnt -n -o OPTIONS "$work/ext4wbdef" | grep -q data=writeback; then
	echo "test-io-fs: this kernel shows a default data=writeback in mountinfo too"
fi

# the kernel says "no journal" in /sys/fs/ext4/DEV/journal_task (5.1+)
nj_dev=$(basename "$(findmnt -n -o SOURCE "$work/ext4nj")")
if [ ! -e "/sys/fs/ext4/$nj_dev/journal_task" ]; then
	echo "test-io-fs: no /sys/fs/ext4/$nj_dev/journal_task (before Linux 5.1): the no-journal warning is not tested"
	export TEST_IO_NO_JOURNAL_TASK=1
fi

TEST_IO_FS="${fs[*]}" "$TEST_IO"

# thinvol pool create and thinvol serve warn about a pool on ext4 without a
# journal, and only there
[ -n "${THINVOL:-}" ] || { echo "THINVOL unset"; exit 1; }
[ -z "${TEST_IO_NO_JOURNAL_TASK:-}" ] || exit 0
# warns_on_nj_only KIND WHAT LOG: LOG has the warning if KIND is ext4nj,
# else not
warns_on_nj_only() {
	local k=$1 what=$2 log=$3
	if grep -q 'warning: .*ext4 without a journal' "$log"; then
		[ "$k" = ext4nj ] || { cat "$log"; echo "$k: $what warned"; exit 1; }
		echo "$k: $what warns (ok)"
	else
		[ "$k" != ext4nj ] || { cat "$log"; echo "$k: $what did not warn"; exit 1; }
		echo "$k: $what does not warn (ok)"
	fi
}
for k in ext4nj ext4j; do
	pool="$work/$k/pool"
	log="$work/$k.log"
	"$THINVOL" pool create "$pool" --size 256M >/dev/null 2>"$log.create" ||
		{ cat "$log.create"; echo "$k: pool create failed"; exit 1; }
	warns_on_nj_only "$k" "pool create" "$log.create"
	"$THINVOL" serve "$pool" --foreground --socket "$work/$k.sock" \
		>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		grep -q 'serving' "$log" && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	grep -q 'serving' "$log" ||
		{ cat "$log"; kill -9 "$pid" 2>/dev/null; echo "$k: serve did not start"; exit 1; }
	kill -INT "$pid"
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid"; echo "$k: serve did not stop on SIGINT"; exit 1
	fi
	rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$log"; echo "$k: serve exited with $rc"; exit 1; }
	warns_on_nj_only "$k" serve "$log"
done
