#!/usr/bin/env bash
# fio's nbd engine against the daemon: random 4 KiB writes at queue depth
# 32 with crc32c verification; two jobs (two connections) writing mixed
# sizes, from 512 bytes to 1 MiB, to their own halves of a volume with
# verification; then, after a clean restart of the daemon, fio
# --verify_only finds every block as written.
. "$(dirname "$0")/lib.sh"
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"

pool_create 1G --block-size 64K
start_serve
vol_create f1 128M
vol_create f2 128M

# run_fio NAME [fio ARG...]: fio must exit 0 and report no errors
run_fio() {
	local name=$1; shift
	fio --name="$name" --ioengine=nbd --output="$dir/$name.out" "$@" 2>"$dir/$name.err" ||
		fail "fio $name: $(tail -n 20 "$dir/$name.out" "$dir/$name.err")"
	! grep -q 'err= *[1-9]' "$dir/$name.out" || fail "fio $name: $(cat "$dir/$name.out")"
	grep -q 'err= *0' "$dir/$name.out" || fail "fio $name: no result: $(cat "$dir/$name.out")"
}
job_a=(--uri="$(uri f1)" --rw=randwrite --bs=4k --size=64M --iodepth=32
	--verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=4242)
job_b=(--uri="$(uri f2)" --rw=randwrite --bssplit=512/10:4k/40:64k/30:1m/20
	--size=48M --offset_increment=64M --numjobs=2 --iodepth=8
	--verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=777)

SECONDS=0
run_fio a "${job_a[@]}" --end_fsync=1
run_fio b "${job_b[@]}" --end_fsync=1
note "write+verify: ${SECONDS}s"
for v in f1 f2; do
	m=$(show_field "$v" mapped)
	[ "$m" -gt 0 ] || fail "$v maps nothing after fio"
done

# the data survives a clean restart
stop_serve
check_clean
start_serve
run_fio a-again "${job_a[@]}" --verify_only
run_fio b-again "${job_b[@]}" --verify_only
# and fio notices when it does not: zero a range in f1 and verify again
py "$(uri f1)" <<'EOF' || fail "zeroing f1"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.zero(8 << 20, 16 << 20)
h.flush()
EOF
! fio --name=a-zeroed --ioengine=nbd "${job_a[@]}" --verify_only --output="$dir/z.out" 2>/dev/null ||
	fail "fio --verify_only passed over zeroed blocks: the verification proves nothing"
note "total: ${SECONDS}s"
stop_serve
check_clean
finish
