#!/usr/bin/env bash
# kill -9 of the daemon in the middle of a write+flush workload, again and
# again: two writers (two connections, halves of a volume; crash_io.py)
# send batches of writes, write-zeroes and trims, each followed by a
# FLUSH, and record what was flushed.  After each kill the daemon restarts
# on the pool and every flushed byte reads back exactly; bytes of the batch
# in flight read old or new, and the pool checks clean offline before the
# restart (snapshots are being created and deleted through the control
# socket at the same time).  A snapshot taken at the start must never
# change.  At the end the daemon stops cleanly and `thinvol check` finds
# the pool clean.  TV_SEED replays a run; TV_SCALE=n runs n times as many
# rounds.
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
seed=${TV_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
rounds=$((6 * ${TV_SCALE:-1}))
echo "$me: seed $seed (replay with TV_SEED=$seed)"
RANDOM=$seed

pool_create 1G --block-size 64K
start_serve
vol_create c 64M
vol_create other 16M
half=$((32 << 20))
U=$(uri c)

# a snapshot with known content, which the workload must never disturb
py "$(uri c)" <<'EOF' || fail "initial content"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(0, 64 << 20, 4 << 20):
    h.pwrite(bytes([i >> 22 | 0x80]) * (1 << 20), i)
h.flush()
EOF
"$tv" snapshot "$pool" c c-snap --read-only >/dev/null || fail "snapshot c-snap"
nbdcopy "$(uri c-snap)" "$dir/snap.img" || fail "nbdcopy c-snap"
# the model starts from the same content
"$PY" - "$dir" <<'EOF'
import sys
img = open(sys.argv[1] + "/snap.img", "rb").read()
open(sys.argv[1] + "/w1.model", "wb").write(img[:32 << 20])
open(sys.argv[1] + "/w2.model", "wb").write(img[32 << 20:])
EOF

for ((r = 1; r <= rounds; r++)); do
	"$PY" "$here/crash_io.py" write "$U" "$dir/w1" 0 $half $((seed + r)) >>"$dir/w1.log" 2>&1 &
	w1=$!
	"$PY" "$here/crash_io.py" write "$U" "$dir/w2" $half $((2 * half)) $((seed + 1000 + r)) >>"$dir/w2.log" 2>&1 &
	w2=$!
	# and metadata changes through the control socket at the same time
	# (until told to stop: once the daemon is gone the command would open
	# the pool itself)
	rm -f "$dir/meta-stop"
	(
		set +e
		for ((i = 0; ; i++)); do
			[ ! -e "$dir/meta-stop" ] || exit 0
			"$tv" snapshot "$pool" other "o$r-$i" >/dev/null 2>&1 || exit 0
			[ $((i % 2)) -eq 0 ] || "$tv" delete "$pool" "o$r-$((i - 1))" >/dev/null 2>&1 || exit 0
		done
	) &
	meta=$!
	on_exit "kill $w1 $w2 $meta"
	# kill after 0.3-2 s, at a random point of the workload
	sleep "$((RANDOM % 2)).$((RANDOM % 10))"
	sleep 0.3
	alive "$w1" && alive "$w2" || fail "round $r: a writer died before the kill: $(tail -n 5 "$dir"/w?.log)"
	kill9_serve
	touch "$dir/meta-stop"
	wait "$w1" "$w2" "$meta" 2>/dev/null || true
	# the crashed pool is consistent before anything reopens it
	check_clean
	start_serve
	"$PY" "$here/crash_io.py" verify "$U" "$dir/w1" 0 $half || fail "round $r: first half"
	"$PY" "$here/crash_io.py" verify "$U" "$dir/w2" $half $((2 * half)) || fail "round $r: second half"
	nbdcopy "$(uri c-snap)" "$dir/snap2.img" || fail "nbdcopy c-snap"
	cmp -s "$dir/snap.img" "$dir/snap2.img" || fail "round $r: the snapshot changed"
	rm -f "$dir/snap2.img"
done
grep -c '^done' "$dir/w1.journal" "$dir/w2.journal" | sed 's/^/# batches flushed: /'

stop_serve
check_clean
# the pool opens offline with the same content
"$tv" export "$pool" c-snap "$dir/snap3.img" >/dev/null || fail "thinvol export c-snap"
cmp -s "$dir/snap.img" "$dir/snap3.img" || fail "offline export of c-snap differs"
finish
