#!/usr/bin/env bash
# The thinvol command on a pool that no daemon holds: pool create, pool
# info, check, and their errors and exit statuses.
set -euo pipefail
tv=${THINVOL:?THINVOL must name the thinvol binary}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# expect STATUS CMD...: run CMD, require exit STATUS, keep stderr in $dir/err
expect() {
	local want=$1; shift
	local got=0
	"$@" >"$dir/out" 2>"$dir/err" || got=$?
	[ "$got" -eq "$want" ] ||
		fail "$* exited $got, want $want: $(cat "$dir/err")"
}

p=$dir/a.pool
expect 0 "$tv" pool create "$p" --size 1G
[ "$(stat -c %s "$p")" -eq $((1 << 30)) ] || fail "size"
[ "$(du -k "$p" | cut -f1)" -lt 1024 ] || fail "not sparse"
expect 0 "$tv" pool info "$p"
grep -q "block size:     64 KiB" "$dir/out" || fail "info: $(cat "$dir/out")"
expect 0 "$tv" pool info "$p" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
assert d["format_version"] == 1 and d["block_size"] == 65536, d
assert d["size"] == (1 << 30) - 65536 and d["transaction"] == 1, d' "$dir/out" ||
	fail "json: $(cat "$dir/out")"
expect 0 "$tv" check "$p"
grep -q clean "$dir/out" || fail "check: $(cat "$dir/out")"
expect 0 "$tv" check "$p" --json
grep -q '"clean":true' "$dir/out" || fail "check json"

# refuses to overwrite a pool or a filesystem without --force
expect 4 "$tv" pool create "$p" --size 1G
grep -q "already holds a thinvol pool" "$dir/err" || fail "$(cat "$dir/err")"
expect 0 "$tv" pool create "$p" --size 1G --force --block-size 1M
expect 0 "$tv" pool info "$p" --json
grep -q '"block_size":1048576' "$dir/out" || fail "force"
if command -v mkfs.ext4 >/dev/null; then
	truncate -s 64M "$dir/fs.img"
	mkfs.ext4 -q -F "$dir/fs.img"
	expect 4 "$tv" pool create "$dir/fs.img"
	grep -q "ext2/3/4" "$dir/err" || fail "$(cat "$dir/err")"
fi

# usage errors: exit 2 with one line naming the problem
expect 2 "$tv"
expect 2 "$tv" frobnicate
expect 2 "$tv" pool create "$dir/b.pool"            # no size
expect 2 "$tv" pool create "$dir/b.pool" --size 0
expect 2 "$tv" pool create "$dir/b.pool" --size 12Q
expect 2 "$tv" pool create "$dir/b.pool" --size 99999999999999999999
expect 2 "$tv" pool create "$dir/b.pool" --size 1G --block-size 3K
expect 2 "$tv" pool create "$dir/b.pool" --size 1G --block-size 2G
[ ! -e "$dir/b.pool" ] || fail "a refused create left a file"
expect 0 "$tv" --help
grep -q "pool create" "$dir/out" || fail "help"

# not found, not a pool, damaged pool
expect 3 "$tv" pool info "$dir/missing.pool"
truncate -s 16M "$dir/zero.img"
expect 6 "$tv" pool info "$dir/zero.img"
grep -q "not a thinvol pool" "$dir/err" || fail "$(cat "$dir/err")"
# damage both superblocks: corrupt; damage one: still opens
expect 0 "$tv" pool create "$dir/c.pool" --size 64M
printf 'X' | dd of="$dir/c.pool" bs=1 seek=200 conv=notrunc status=none
expect 0 "$tv" check "$dir/c.pool"
printf 'X' | dd of="$dir/c.pool" bs=1 seek=4296 conv=notrunc status=none
expect 6 "$tv" check "$dir/c.pool"

# the pool is locked while open
expect 0 "$tv" pool create "$dir/d.pool" --size 64M
if command -v flock >/dev/null; then
	# exit status 8 (busy), and the message names the holder
	got=0
	flock "$dir/d.pool" -c "\"$tv\" pool info \"$dir/d.pool\"" \
		>"$dir/out" 2>"$dir/err" || got=$?
	[ "$got" -eq 8 ] || fail "locked pool: exit $got, want 8"
	grep -q "in use by process [0-9]* (flock)" "$dir/err" ||
		fail "$(cat "$dir/err")"
fi
echo "test-pool-cli: ok"
