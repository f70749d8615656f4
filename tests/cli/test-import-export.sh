#!/usr/bin/env bash
# thinvol import and export: raw images in and out of volumes; zero
# regions stay unallocated both ways (the pool's used bytes grow by the
# data blocks only, the exported file is sparse); round trips through
# snapshots; a shorter file zeroes the rest; stdin and stdout; every error
# is one line with its exit status.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# verbose CMD...: CMD must succeed; its report (stderr) in $dir/err
verbose() {
	"$@" >"$dir/out" 2>"$dir/err" || fail "$* exited $?: $(cat "$dir/err")"
	drop_fs_warning "$dir/err"
	[ "$(wc -l <"$dir/err")" -eq 1 ] || fail "$*: stderr: $(cat "$dir/err")"
}
clean() {
	"$tv" check "$1" --json | grep -q '"clean":true' ||
		fail "check $1: $("$tv" check "$1" 2>&1)"
}
# info POOL FIELD: a number from pool info --json
info() {
	"$tv" pool info "$1" --json |
		python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
# data bytes of the pool: used minus metadata
data_used() { echo $(($(info "$1" used) - $(info "$1" metadata))); }
# nonzero_blocks FILE BS: how many BS-byte blocks of FILE hold a non-zero byte
nonzero_blocks() {
	python3 -c 'import sys
bs = int(sys.argv[2]); n = 0
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(bs)
        if not b:
            break
        n += b.count(0) != len(b)
print(n)' "$1" "$2"
}
# same_padded IMAGE EXPORTED SIZE: EXPORTED is IMAGE followed by zeroes up
# to SIZE bytes
same_padded() {
	local n
	n=$(stat -c %s "$1")
	[ "$(stat -c %s "$2")" -eq "$3" ] ||
		fail "$2: $(stat -c %s "$2") bytes, want $3"
	cmp -s -n "$n" "$1" "$2" || fail "$2 differs from $1"
	tail -c "$(($3 - n))" "$2" | cmp -s - <(head -c "$(($3 - n))" /dev/zero) ||
		fail "$2: not zero past the end of $1"
}
# is_sparse FILE: fewer bytes allocated than its size
is_sparse() {
	local alloc
	alloc=$(($(stat -c '%b * %B' "$1")))
	[ "$alloc" -lt "$(stat -c %s "$1")" ] ||
		fail "$1: not sparse: $alloc bytes allocated of $(stat -c %s "$1")"
}

bs=65536
p=$dir/a.pool
expect 0 "$tv" pool create "$p" --size 256M --block-size 64K
expect 0 "$tv" create "$p" vm --size 16M
vm_id=$(cat "$dir/out")

# A 10 MiB sparse image: data at the start (a partial block), random data
# across block boundaries, a written (not hole) run of zeroes, and a last
# partial sector.  The last 6 MiB of the volume lie past its end.
img=$dir/img
truncate -s 10M "$img"
head -c 4000 /dev/urandom | dd of="$img" conv=notrunc status=none
head -c 300000 /dev/urandom | dd of="$img" bs=1 seek=1000100 conv=notrunc status=none
dd if=/dev/zero of="$img" bs=64K seek=48 count=8 conv=notrunc status=none
printf 'the end' | dd of="$img" bs=1 seek=$((10 * 1048576 - 7)) conv=notrunc status=none
is_sparse "$img"
nz=$(nonzero_blocks "$img" $bs)
[ "$nz" -eq 7 ] || fail "the image has $nz data blocks, want 7"

# ---- import: only the data blocks are allocated ----
before=$(data_used "$p")
expect 0 "$tv" import "$p" vm "$img"
after=$(data_used "$p")
[ $((after - before)) -eq $((nz * bs)) ] ||
	fail "import allocated $((after - before)) bytes, want $((nz * bs))"
clean "$p"
verbose "$tv" import "$p" vm "$img" --verbose
grep -q "import 'vm': $((nz * bs)) bytes copied, $((16 * 1048576 - nz * bs)) bytes skipped as zero" \
	"$dir/err" || fail "import --verbose: $(cat "$dir/err")"
[ "$(data_used "$p")" -eq "$after" ] || fail "a second import allocated more"

# ---- export: the same bytes, sparse ----
expect 0 "$tv" export "$p" vm "$dir/out.img"
# a new file holds a volume: as private as the pool
[ "$(stat -c %a "$dir/out.img")" = 600 ] || fail "export made a file of mode $(stat -c %a "$dir/out.img")"
same_padded "$img" "$dir/out.img" $((16 * 1048576))
is_sparse "$dir/out.img"
alloc=$(($(stat -c '%b * %B' "$dir/out.img")))
[ "$alloc" -le $((nz * bs + 1048576)) ] ||
	fail "export allocated $alloc bytes for $nz data blocks"
# to stdout: every byte
"$tv" export "$p" "#$vm_id" - >"$dir/stdout.img" 2>"$dir/err" || fail "export -: $(cat "$dir/err")"
[ ! -s "$dir/err" ] || fail "export -: stderr: $(cat "$dir/err")"
cmp -s "$dir/out.img" "$dir/stdout.img" || fail "export to stdout differs"
# an existing larger file is replaced, not merged
head -c 20M /dev/urandom >"$dir/old.img"
verbose "$tv" export "$p" vm "$dir/old.img" --verbose
grep -q "export 'vm': $((nz * bs)) bytes copied" "$dir/err" ||
	fail "export --verbose: $(cat "$dir/err")"
cmp -s "$dir/out.img" "$dir/old.img" || fail "export over an old file differs"
is_sparse "$dir/old.img"

# ---- round trip through a snapshot ----
expect 0 "$tv" snapshot "$p" vm snap
expect 0 "$tv" export "$p" snap "$dir/snap.img"
cmp -s "$dir/out.img" "$dir/snap.img" || fail "the snapshot's export differs"
# a different image into the snapshot: zero where vm has data (shared
# blocks are unmapped from the snapshot only), data where vm has holes
img2=$dir/img2
truncate -s 12M "$img2"
head -c 131072 /dev/urandom | dd of="$img2" bs=64K seek=100 conv=notrunc status=none
expect 0 "$tv" import "$p" snap "$img2"
expect 0 "$tv" export "$p" snap "$dir/snap2.img"
same_padded "$img2" "$dir/snap2.img" $((16 * 1048576))
expect 0 "$tv" export "$p" vm "$dir/vm2.img"
cmp -s "$dir/out.img" "$dir/vm2.img" || fail "import into a snapshot changed its origin"
expect 0 "$tv" show "$p" snap --json
grep -q '"mapped":0,' "$dir/out" && fail "snap: nothing mapped after import"
clean "$p"
# and back: the snapshot's image into a new volume
expect 0 "$tv" create "$p" copy --size 16M
expect 0 "$tv" import "$p" copy "$dir/snap2.img"
expect 0 "$tv" export "$p" copy "$dir/copy.img"
cmp -s "$dir/snap2.img" "$dir/copy.img" || fail "round trip via snapshot differs"

# ---- a shorter file zeroes the rest and frees its blocks ----
before=$(data_used "$p")
head -c 1000 /dev/urandom >"$dir/short"    # not even a sector
expect 0 "$tv" import "$p" copy "$dir/short"
expect 0 "$tv" export "$p" copy "$dir/copy.img"
same_padded "$dir/short" "$dir/copy.img" $((16 * 1048576))
# copy held 2 blocks of its own, now 1 (freeing is in the background)
sleep 0.2
after=$(($(data_used "$p") - $(info "$p" reclaimable)))
[ "$after" -lt "$before" ] || fail "a shorter import freed nothing: $before -> $after"
clean "$p"

# ---- stdin; a volume that is not a multiple of the block size ----
expect 0 "$tv" create "$p" odd --size $((3 * bs + 1536))
head -c $((3 * bs + 1000)) /dev/urandom >"$dir/odd"
dd if=/dev/zero of="$dir/odd" bs=64K seek=1 count=1 conv=notrunc status=none
before=$(data_used "$p")
cat "$dir/odd" | "$tv" import "$p" odd - 2>"$dir/err" || fail "import -: $(cat "$dir/err")"
[ $(($(data_used "$p") - before)) -eq $((3 * bs)) ] ||
	fail "import from stdin allocated $(($(data_used "$p") - before)) bytes"
expect 0 "$tv" export "$p" odd "$dir/odd.out"
same_padded "$dir/odd" "$dir/odd.out" $((3 * bs + 1536))
# a stream longer than the volume
head -c $((3 * bs + 2048)) /dev/zero | {
	got=0
	"$tv" import "$p" odd - >/dev/null 2>"$dir/err" || got=$?
	[ "$got" -eq 2 ] || fail "over-long stdin: exit $got: $(cat "$dir/err")"
}
grep -q "larger than the volume" "$dir/err" || fail "$(cat "$dir/err")"
clean "$p"

# ---- errors ----
expect 0 "$tv" snapshot "$p" vm ro --read-only
expect_in 7 "volume 'ro' is read-only" "$tv" import "$p" ro "$img"
expect_in 7 "read-only" "$tv" import "$p" ro "$dir/short"
expect 0 "$tv" export "$p" ro "$dir/ro.img"        # export works
cmp -s "$dir/out.img" "$dir/ro.img" || fail "read-only snapshot export differs"
truncate -s 17M "$dir/big"
expect_in 2 "larger than the volume" "$tv" import "$p" vm "$dir/big"
truncate -s $((16 * 1048576 + 1)) "$dir/big"
expect_in 2 "larger than the volume" "$tv" import "$p" vm "$dir/big"
expect_in 3 "No such file" "$tv" import "$p" vm "$dir/missing"
expect_in 3 "no such volume" "$tv" import "$p" nosuch "$img"
expect_in 3 "no such volume" "$tv" export "$p" nosuch "$dir/x.img"
[ ! -e "$dir/x.img" ] || fail "a failed export left a file"
expect_in 3 "No such file" "$tv" import "$dir/nopool" vm "$img"
expect_in 3 "No such file" "$tv" export "$p" vm "$dir/nodir/x.img"
expect_in 1 "Not a directory" "$tv" export "$p" vm "$img/x.img"
expect_in 2 "is a directory" "$tv" import "$p" vm "$dir"
expect_in 2 "needs POOL, VOL and FILE" "$tv" import "$p" vm
expect_in 2 "needs POOL, VOL and FILE" "$tv" export "$p" vm a b
expect_in 2 "unknown option '--bogus'" "$tv" export "$p" vm x --bogus
expect_in 2 "not a volume id" "$tv" import "$p" '#0' "$img"
if [ -w /dev/full ]; then
	expect_in 1 "No space left" "$tv" export "$p" vm /dev/full
fi
# nothing changed by the refused imports
expect 0 "$tv" export "$p" vm "$dir/vm3.img"
cmp -s "$dir/out.img" "$dir/vm3.img" || fail "a refused import changed vm"
clean "$p"

# ---- out of space: exit 5 ----
q=$dir/small.pool
expect 0 "$tv" pool create "$q" --size 3M --block-size 64K
expect 0 "$tv" create "$q" v --size 8M
head -c 8M /dev/urandom >"$dir/rand8"
expect_in 5 "full" "$tv" import "$q" v "$dir/rand8"
clean "$q"

# ---- blocks larger than the copy chunk (1 MiB) ----
r=$dir/big.pool
expect 0 "$tv" pool create "$r" --size 64M --block-size 2M
expect 0 "$tv" create "$r" v --size 10M
truncate -s 9M "$dir/img3"
printf 'x' | dd of="$dir/img3" bs=1 seek=$((5 * 1048576)) conv=notrunc status=none
expect 0 "$tv" import "$r" v "$dir/img3"
[ "$(data_used "$r")" -eq $((2 * 1048576)) ] ||
	fail "2M blocks: $(data_used "$r") data bytes, want one block"
expect 0 "$tv" export "$r" v "$dir/img3.out"
same_padded "$dir/img3" "$dir/img3.out" $((10 * 1048576))
clean "$r"

# ---- never onto the pool itself (issue 14, item 2): export into the
# pool file, or import from it, by any name (a symlink, a hard link,
# /proc/self/fd, stdout or stdin redirected to it) is refused with exit
# status 2 before a byte is read or written; the pool does not change.
# An export into a file someone holds locked is exit 8 ----
s=$dir/self.pool
expect 0 "$tv" pool create "$s" --size 64M
expect 0 "$tv" create "$s" v --size 8M
head -c 3M /dev/urandom >"$dir/self.img"
expect 0 "$tv" import "$s" v "$dir/self.img"
ln -s self.pool "$dir/self-link"
ln "$s" "$dir/self-hard"
sum=$(sha256sum <"$s")
exec 9<"$s"
for f in "$s" "$dir/self-link" "$dir/self-hard" /proc/self/fd/9; do
	expect_in 2 "it is the pool itself" "$tv" export "$s" v "$f"
	expect_in 2 "it is the pool itself" "$tv" import "$s" v "$f"
done
exec 9<&-
# (through bash -c: expect sends the command's own stdout to a file)
expect_in 2 "it is the pool itself" bash -c '"$0" export "$1" v - 1<>"$1"' "$tv" "$s"
expect_in 2 "it is the pool itself" bash -c '"$0" import "$1" v - <"$1"' "$tv" "$s"
# nor into a file another process holds a lock on (another pool, an
# image qemu has open): flock(1) holds one here
echo keep >"$dir/held"
expect_in 8 "refusing to write into $dir/held: it is in use by process" \
	flock "$dir/held" "$tv" export "$s" v "$dir/held"
[ "$(cat "$dir/held")" = keep ] || fail "export wrote into a locked file"
[ "$(sha256sum <"$s")" = "$sum" ] || fail "a refused export or import changed the pool"
expect 0 "$tv" export "$s" v "$dir/self.out"
same_padded "$dir/self.img" "$dir/self.out" $((8 << 20))
clean "$s"

echo "test-import-export: ok"
