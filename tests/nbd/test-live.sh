#!/usr/bin/env bash
# Management through the daemon while a volume is being written over NBD
# (live_writer.py: 4 writes in flight, self-checking): create (visible in
# nbdinfo --list at once), snapshot (consistent with the writes around it),
# list, show, find, rename, resize (a grown volume has its new size on the
# next connection; shrinking an exported one is refused), delete (an
# exported volume: exit 8 without --force; with --force its client is
# disconnected and the volume goes).  At the end the writer reads back
# every block it wrote, the pool checks clean offline, and the offline
# listing matches.
. "$(dirname "$0")/lib.sh"
need nbdinfo
here=$(cd "$(dirname "$0")" && pwd)
B=65536

pool_create 2G --block-size 64K --blob-size 8
start_serve
vol_create busy 64M
names() { nbdinfo --list --json "nbd+unix:///?socket=$nsock" |
	"$PY" -c 'import json, sys; print(" ".join(sorted(e["export-name"] for e in json.load(sys.stdin)["exports"])))'; }
size_of() { nbdinfo --size "$(uri "$1")"; }
# expect_rc STATUS CMD...: exit status STATUS; a failure says so in one line
expect_rc() {
	local want=$1 got=0; shift
	"$@" >"$dir/out" 2>"$dir/err" || got=$?
	[ "$got" -eq "$want" ] || fail "$* exited $got, want $want: $(cat "$dir/err")"
	[ "$want" -eq 0 ] || [ "$(wc -l <"$dir/err")" -eq 1 ] || fail "$*: want one line on stderr: $(cat "$dir/err")"
}

mkdir "$dir/w"
"$PY" "$here/live_writer.py" write "$(uri busy)" "$dir/w" 1024 >"$dir/writer.out" 2>&1 &
writer=$!
on_exit "touch '$dir/w/stop'; kill $writer"
wait_for 20 grep -qs '^C' "$dir/w/log" || fail "the writer does not write: $(cat "$dir/writer.out")"

# ---- create: at once an export ----
expect_rc 0 "$tv" create "$pool" new1 --size 1G
[ "$(names)" = "busy new1" ] || fail "exports after create: $(names)"
[ "$(size_of new1)" = $((1 << 30)) ] || fail "new1 size $(size_of new1)"

# ---- snapshot while written ----
sleep 0.5
cp "$dir/w/log" "$dir/log-before"
expect_rc 0 "$tv" snapshot "$pool" busy snapA
cp "$dir/w/log" "$dir/log-after"
"$PY" "$here/live_writer.py" snap "$(uri snapA)" "$dir/w" 1024 "$dir/log-before" "$dir/log-after" ||
	fail "snapshot taken during writes"
expect_rc 0 "$tv" snapshot "$pool" busy snapRO --read-only
nbdinfo --is read-only "$(uri snapRO)" || fail "snapRO is not read-only"
ro_sum=$(nbdcopy "$(uri snapRO)" - | sha256sum)

# ---- list, show, find ----
expect_rc 0 "$tv" list "$pool" --json
json_ok "$dir/out" 'sorted(v["name"] for v in d) == ["busy", "new1", "snapA", "snapRO"]'
json_ok "$dir/out" '[v["parent"] for v in d if v["name"] == "snapA"] == [[v["id"] for v in d if v["name"] == "busy"][0]]'
expect_rc 0 "$tv" show "$pool" busy --json
json_ok "$dir/out" 'd["mapped"] > 0 and d["size"] == 64 << 20'
expect_rc 0 "$tv" create "$pool" tagged --size 8M --blob-hex 0123456789abcdef
expect_rc 0 "$tv" find "$pool" --blob-hex 0123456789ABCDEF --json
json_ok "$dir/out" '[v["name"] for v in d] == ["tagged"]'
expect_rc 0 "$tv" find "$pool" --blob-hex 0000000000000001 --json
json_ok "$dir/out" 'd == []'
expect_rc 4 "$tv" create "$pool" busy --size 1M # exists

# ---- rename: the export follows the name ----
expect_rc 0 "$tv" rename "$pool" tagged tagged2
[ "$(names)" = "busy new1 snapA snapRO tagged2" ] || fail "exports after rename: $(names)"

# ---- grow and shrink ----
vol_create grow 64M
# holder OUT: a client of grow that reads until it is disconnected
holder() {
	"$PY" - "$(uri grow)" >"$dir/$1" 2>&1 <<'EOF' &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"g" * 65536, 0)
print("connected", h.get_size(), flush=True)
for i in range(600):  # reads until the daemon disconnects it
    try:
        h.pread(4096, 0)
    except nbd.Error as e:
        print("disconnected:", e.string, flush=True)
        sys.exit(0)
    time.sleep(0.1)
EOF
	on_exit "kill $!"
	wait_for 20 grep -qs connected "$dir/$1" || fail "holder: $(cat "$dir/$1")"
}
holder hold1.out
expect_rc 0 "$tv" resize "$pool" grow 128M
[ "$(size_of grow)" = $((128 << 20)) ] || fail "a new connection sees $(size_of grow) bytes after the grow"
py "$(uri grow)" <<'EOF' || fail "grown volume"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.pread(65536, 0) == b"g" * 65536
assert h.pread(65536, 100 << 20) == bytes(65536)
h.pwrite(b"h" * 65536, 127 << 20)
assert h.pread(65536, 127 << 20) == b"h" * 65536
EOF
expect_rc 8 "$tv" resize "$pool" grow 32M # shrinking an exported volume
grep -q grow "$dir/err" || fail "the refusal does not name the volume: $(cat "$dir/err")"
[ "$(size_of grow)" = $((128 << 20)) ] || fail "a refused shrink changed the size"
sleep 0.3
! grep -q disconnected "$dir/hold1.out" || fail "a refused shrink disconnected the client"
expect_rc 0 "$tv" resize "$pool" grow 96M --force
wait_for 10 grep -q disconnected "$dir/hold1.out" || fail "the client of a force-shrunk volume is still connected"
[ "$(size_of grow)" = $((96 << 20)) ] || fail "a new connection sees $(size_of grow) bytes after the shrink"
expect_rc 0 "$tv" resize "$pool" grow 128M # and back: the cut-off part reads zeros
py "$(uri grow)" <<'EOF' || fail "shrunk and grown volume"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.pread(65536, 0) == b"g" * 65536
assert h.pread(65536, 127 << 20) == bytes(65536), "data past a shrink came back"
EOF

# ---- delete ----
expect_rc 0 "$tv" delete "$pool" new1 # nobody has it open
[ "$(names)" = "busy grow snapA snapRO tagged2" ] || fail "exports after delete: $(names)"
holder hold2.out
expect_rc 8 "$tv" delete "$pool" grow
grep -q grow "$dir/err" || fail "the refusal does not name the volume: $(cat "$dir/err")"
sleep 0.3
! grep -q disconnected "$dir/hold2.out" || fail "a refused delete disconnected the client"
expect_rc 0 "$tv" delete "$pool" grow --force
wait_for 10 grep -q disconnected "$dir/hold2.out" || fail "the client of a force-deleted volume is still connected"
! nbdinfo --size "$(uri grow)" >/dev/null 2>&1 || fail "grow is still exported"
[ "$(names)" = "busy snapA snapRO tagged2" ] || fail "exports after delete --force: $(names)"
expect_rc 8 "$tv" delete "$pool" busy # the writer has it
# a snapshot can go while its origin is written
expect_rc 0 "$tv" delete "$pool" snapA

# ---- no data of deleted volumes shows through a new one ----
sleep 1.2 # past a commit, so that the freed blocks can be handed out again
vol_create fresh 64M
py "$(uri fresh)" <<'EOF' || fail "a new volume shows old data"
import nbd, sys
B = 65536
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(512):  # first writes of 512 bytes into 512 fresh blocks
    h.pwrite(b"F" * 512, i * B + 1024)
h.flush()
want = bytes(1024) + b"F" * 512 + bytes(B - 1536)
for i in range(512):
    assert h.pread(B, i * B) == want, "block %d of a new volume holds other data" % i
assert h.pread(B, 600 * B) == bytes(B)
EOF

# ---- the writer checks everything it wrote ----
sleep 0.5
touch "$dir/w/stop"
wait "$writer" || fail "writer: $(cat "$dir/writer.out")"
note "$(cat "$dir/writer.out")"
[ "$(nbdcopy "$(uri snapRO)" - | sha256sum)" = "$ro_sum" ] || fail "snapRO changed while its origin was written"

expect_rc 0 "$tv" list "$pool" --json
cp "$dir/out" "$dir/online.json"
stop_serve
check_clean
expect_rc 0 "$tv" list "$pool" --json
cmp -s "$dir/out" "$dir/online.json" || fail "offline list differs: $(diff "$dir/online.json" "$dir/out")"
finish
