#!/usr/bin/env bash
# qemu and nbdcopy against the daemon: qemu-io pattern writes, reads,
# zeroes and discards (and a read-only snapshot opened with -r); qemu-img
# convert of a qcow2 image into a volume, qemu-img compare; nbdcopy of a
# sparse file into a volume and back, between volumes, with several
# connections: the data is equal, holes stay holes (the volume maps only
# the blocks that hold data, the copy back is sparse).
. "$(dirname "$0")/lib.sh"
need qemu-io qemu-img nbdcopy nbdinfo
B=65536

pool_create 2G --block-size 64K
start_serve
vol_create q 256M
vol_create q2 64M
vol_create q3 64M
vol_create sparse 256M
vol_create sparse2 256M

# qio [qemu-io ARG...]: run qemu-io; it must succeed and no pattern
# verification may fail
qio() {
	local out rc=0
	out=$(qemu-io "$@" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || fail "qemu-io $*: exit $rc: $out"
	! grep -qiE 'fail|error' <<<"$out" || fail "qemu-io $*: $out"
}
# mapped VOL: bytes of data blocks in nbdinfo --map
mapped() {
	nbdinfo --map --totals --json "$(uri "$1")" |
		"$PY" -c 'import json, sys; print(sum(t["size"] for t in json.load(sys.stdin) if t["type"] & 1 == 0))'
}

# ---- qemu-io ----
U=$(uri q)
qio -f raw "$U" -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
qio -f raw "$U" -c 'write -P 0xcd 5243392 4096' -c 'flush' \
	-c 'read -P 0xcd 5243392 4096' -c 'read -P 0 5242880 512' -c 'read -P 0 5247488 61440'
qio -f raw "$U" -c 'read -P 0xab 0 1M' -c 'read -P 0 1M 4M' -c 'read -P 0 200M 56M'
qio -f raw "$U" -c 'write -P 0x11 2M 1M' -c 'write -z 2M 512k' -c 'read -P 0 2M 512k' -c 'read -P 0x11 2621440 512k'
qio -f raw "$U" -c 'write -P 0x22 8M 1M' -c 'discard 8M 1M' -c 'read -P 0 8M 1M'
qio -f raw "$U" -c 'aio_write -P 0x33 12M 64k' -c 'aio_write -P 0x44 13M 64k' -c 'aio_flush' \
	-c 'read -P 0x33 12M 64k' -c 'read -P 0x44 13M 64k'
qio -f raw "$U" -c 'write -P 0x55 -f 16M 256k' -c 'read -P 0x55 16M 256k' # -f: FUA
# -z: WRITE_ZEROES with NO_HOLE; -u: may punch; -n: FAST_ZERO
qio -f raw "$U" -c 'write -P 0x77 24M 1M' -c 'write -z -u 24M 512k' -c 'write -z -u -n 25088k 512k' \
	-c 'read -P 0 24M 1M' -c 'write -z -u -n 26M 1M' -c 'read -P 0 26M 1M'
qio -f raw "$U" -c 'write -P 0x66 20M 32M' -c 'read -P 0x66 20M 32M'       # > max block size: split
[ "$(show_field q mapped)" -le $(((1 + 1 + 1 + 2 + 4 + 32) * 1048576 + B)) ] ||
	fail "q maps $(show_field q mapped) bytes after writing ~41 MiB"

"$tv" snapshot "$pool" q q-ro --read-only >/dev/null || fail "snapshot q-ro"
qio -f raw -r "$(uri q-ro)" -c 'read -P 0xab 0 1M' -c 'read -P 0x66 20M 32M'
! qemu-io -f raw "$(uri q-ro)" -c 'write -P 0 0 4k' >"$dir/ro.out" 2>&1 ||
	! grep -q "wrote" "$dir/ro.out" || fail "qemu-io wrote to a read-only snapshot: $(cat "$dir/ro.out")"
qemu-img info --output=json "$(uri q)" >"$dir/info.json" 2>&1 || fail "qemu-img info: $(cat "$dir/info.json")"
json_ok "$dir/info.json" 'd["virtual-size"] == 256 << 20'

# ---- qemu-img convert of a qcow2 image ----
qemu-img create -q -f qcow2 "$dir/src.qcow2" 64M || fail "qemu-img create"
qio -f qcow2 "$dir/src.qcow2" -c 'write -P 0x11 0 1M' -c 'write -P 0x22 10M 64k' \
	-c 'write -P 0x33 40M 3M' -c 'write -P 0x44 50M 1M' -c 'write -z 50M 1M' \
	-c 'write -P 0x55 63M 777'
# -n: the volume exists; qemu writes zeroes where the image has none
qemu-img convert -n -f qcow2 -O raw "$dir/src.qcow2" "$(uri q2)" || fail "qemu-img convert -n"
qemu-img compare -q -f qcow2 -F raw "$dir/src.qcow2" "$(uri q2)" || fail "qemu-img compare q2"
qemu-img convert -n --target-is-zero -f qcow2 -O raw "$dir/src.qcow2" "$(uri q3)" ||
	fail "qemu-img convert -n --target-is-zero"
qemu-img compare -q -f qcow2 -F raw "$dir/src.qcow2" "$(uri q3)" || fail "qemu-img compare q3"
data=$(((16 + 1 + 48 + 1) * B)) # the blocks the image's data touches
for v in q2 q3; do
	m=$(show_field "$v" mapped)
	[ "$m" -le "$data" ] || fail "$v maps $m bytes, the image holds data in $data (zeroes were allocated)"
	[ "$(mapped "$v")" -le "$data" ] || fail "$v: nbdinfo --map shows $(mapped "$v") bytes of data"
done
# and the other way: the volume back to qcow2
qemu-img convert -f raw -O qcow2 "$(uri q2)" "$dir/back.qcow2" || fail "qemu-img convert back"
qemu-img compare -q -f qcow2 -F qcow2 "$dir/src.qcow2" "$dir/back.qcow2" || fail "compare back"

# ---- nbdcopy of a sparse image ----
img=$dir/sparse.img
truncate -s 256M "$img"
"$PY" - "$img" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for off, n, seed in ((0, 4096, 1), (1 << 20, 3 << 20, 2), (100 << 20, 65536, 3),
                     ((200 << 20) + 12345, 100000, 4), ((256 << 20) - 512, 512, 5)):
    os.pwrite(fd, bytes([(seed * 31 + i) & 0xff for i in range(256)]) * (n // 256) + bytes(n % 256), off)
os.close(fd)
EOF
nbdcopy "$img" "$(uri sparse)" || fail "nbdcopy file -> sparse"
nbdcopy --flush -C 4 --requests 16 "$(uri sparse)" "$(uri sparse2)" || fail "nbdcopy sparse -> sparse2"
nbdcopy "$(uri sparse2)" "$dir/out.img" || fail "nbdcopy sparse2 -> file"
cmp "$img" "$dir/out.img" || fail "round trip through two volumes changed the image"
# data in blocks 0, 16-63, 1600, 3200-3201 (100000 bytes from 200M+12345), 4095
want=$(((1 + 48 + 1 + 2 + 1) * B))
for v in sparse sparse2; do
	m=$(show_field "$v" mapped)
	[ "$m" -le "$want" ] || fail "$v maps $m bytes, want at most $want (holes filled)"
	[ "$(mapped "$v")" -le "$want" ] || fail "$v: nbdinfo --map shows $(mapped "$v") bytes of data"
done
nbdinfo --map --json "$(uri sparse)" >"$dir/m1" && nbdinfo --map --json "$(uri sparse2)" >"$dir/m2" ||
	fail "nbdinfo --map"
cmp -s "$dir/m1" "$dir/m2" || fail "the copy's map differs: $(diff "$dir/m1" "$dir/m2" | head)"
du_k=$(du -k "$dir/out.img" | cut -f1)
[ "$du_k" -le 16384 ] || fail "the copy back takes $du_k KiB: holes not preserved"
# nbdcopy to qcow2 through qemu-nbd is not needed: qemu-img did that above.

stop_serve
check_clean
finish
