#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# test-io on the filesystems a pool file meets in practice, each made here
# on a loop device: ext4 with its journal, without one, with
# data=writeback, and XFS.  test-io checks that a pool file gets ranged
# syncs exactly where the filesystem orders a new block's data before its
# allocation (the crash safety of ranged commits rests on it), then runs
# its ranged sync and preallocation tests there.
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

# mkfs_mount KIND SIZE_MB MOUNT_OPTS MKFS...
mkfs_mount() {
	local kind=$1 size=$2 opts=$3 dev
	shift 3
	truncate -s "${size}M" "$work/$kind.img"
	dev=$(losetup -f --show "$work/$kind.img") ||
		skip "losetup failed (no free loop device?)"
	loops+=("$dev")
	"$@" "$dev" >"$work/$kind.mkfs" 2>&1 || {
		cat "$work/$kind.mkfs"; echo "mkfs for $kind failed"; exit 1; }
	mkdir -p "$work/$kind"
	mount ${opts:+-o "$opts"} "$dev" "$work/$kind" ||
		skip "cannot mount $kind"
	mounts+=("$work/$kind")
	fs+=("$kind=$work/$kind")
}

fs=()
mkfs_mount ext4j 64 "" mkfs.ext4 -q -F
mkfs_mount ext4nj 64 "" mkfs.ext4 -q -F -O ^has_journal
mkfs_mount ext4wb 64 data=writeback mkfs.ext4 -q -F
if command -v mkfs.xfs >/dev/null; then
	mkfs_mount xfs 320 "" mkfs.xfs -q -f
else
	echo "test-io-fs: no mkfs.xfs (xfsprogs): XFS not tested"
fi
# the kinds are what we think they are
for k in ext4j ext4wb; do
	grep -q "^$(basename "$(findmnt -n -o SOURCE "$work/$k")")-8" \
		<(ls /proc/fs/jbd2) || { echo "$k: no journal"; exit 1; }
done
if ls /proc/fs/jbd2 | grep -q "^$(basename "$(findmnt -n -o SOURCE "$work/ext4nj")")-8"; then
	echo "ext4nj: has a journal"; exit 1
fi
findmnt -n -o OPTIONS "$work/ext4wb" | grep -q data=writeback ||
	{ echo "ext4wb: not data=writeback"; exit 1; }

TEST_IO_FS="${fs[*]}" "$TEST_IO"

# thinvol serve warns about a pool on ext4 without a journal, and only there
if [ -n "${THINVOL:-}" ]; then
	for k in ext4nj ext4j; do
		pool="$work/$k/pool"
		"$THINVOL" pool create "$pool" --size 256M >/dev/null
		timeout -s INT 2 "$THINVOL" serve "$pool" --foreground \
			>"$work/$k.log" 2>&1 || true
		grep -q 'serving' "$work/$k.log" ||
			{ cat "$work/$k.log"; echo "$k: serve did not start"; exit 1; }
		if grep -q 'warning: .*ext4 without a journal' "$work/$k.log"; then
			[ "$k" = ext4nj ] || { cat "$work/$k.log"; echo "$k: warned"; exit 1; }
		else
			[ "$k" != ext4nj ] || { cat "$work/$k.log"; echo "$k: no warning"; exit 1; }
		fi
		echo "$k: serve $( [ $k = ext4nj ] && echo warns || echo does not warn ) (ok)"
	done
fi
