#!/usr/bin/env bash
# The NBD protocol as the daemon speaks it.  proto_libnbd.py drives it
# through libnbd: option mode (LIST, INFO, GO, LIST_META_CONTEXT, ABORT),
# every command and flag (READ with hole chunks and DF, WRITE+FUA, FLUSH,
# TRIM, WRITE_ZEROES with NO_HOLE/FAST_ZERO, BLOCK_STATUS with REQ_ONE,
# CACHE), bad requests with libnbd's checks off (EINVAL, ENOSPC, EPERM on
# the read-only snapshot; the connection stays usable), simple replies, old
# handshakes, 64 requests in flight.  proto_raw.py speaks the protocol over
# a plain socket for what libnbd 1.14 cannot send (unknown options and
# commands, SET_META_CONTEXT and STRUCTURED_REPLY on their own,
# EXPORT_NAME, bad client flags and magic).  Then multi-conn: a write
# acknowledged on one connection and a FLUSH on another survive kill -9.
. "$(dirname "$0")/lib.sh"
need nbdsh
here=$(cd "$(dirname "$0")" && pwd)

B=65536
pool_create 1G --block-size 64K
start_serve
vol_create vol 64M
vol_create other 8M
py "$(uri vol)" <<'EOF' || fail "writing vol"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes((7 + i * 13) & 0xff for i in range(4 * 65536)), 0)
h.flush()
h.shutdown()
EOF
"$tv" snapshot "$pool" vol vol-ro --read-only >/dev/null || fail "snapshot vol-ro"

# nbdsh itself, as a user would run it
out=$(nbdsh -u "$(uri vol)" -c 'print(h.get_size(), h.can_multi_conn(), h.pread(4, 0).hex())') ||
	fail "nbdsh: $out"
[ "$out" = "67108864 True 0714212e" ] || fail "nbdsh printed '$out'"

# (a failure here is reported at the end, after the multi-conn check)
"$PY" "$here/proto_raw.py" "$nsock" vol "$B" vol other vol-ro || later_fail "proto_raw.py (see above)"
"$PY" "$here/proto_libnbd.py" "$nsock" vol vol-ro "$B" vol other vol-ro || later_fail "proto_libnbd.py (see above)"
# the daemon is still serving after all that
nbdinfo --size "$(uri other)" >/dev/null || fail "the daemon stopped serving"

# ---- multi-conn: FLUSH on B makes the writes acknowledged on A durable ----
py "$(uri vol)" >"$dir/mc.out" 2>&1 <<'EOF' &
import nbd, sys, time
a, b = nbd.NBD(), nbd.NBD()
a.connect_uri(sys.argv[1]); b.connect_uri(sys.argv[1])
assert a.can_multi_conn() and b.can_multi_conn()
for i in range(16):  # 16 blocks from block 200 on, plus odd bytes
    a.pwrite(bytes([i + 1]) * 65536, (200 + i) * 65536)
a.pwrite(b"multi-conn!", 300 * 65536 + 5)
b.flush()
print("written", flush=True)
time.sleep(60)  # both connections stay open until the daemon is killed
EOF
mc=$!
on_exit "kill $mc"
wait_for 30 grep -qs written "$dir/mc.out" || fail "multi-conn writes: $(cat "$dir/mc.out")"
kill9_serve
kill "$mc" 2>/dev/null || true
{ wait "$mc"; } 2>/dev/null || true
start_serve
py "$(uri vol)" <<'EOF' || fail "multi-conn: flushed writes lost after kill -9"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(16):
    assert h.pread(65536, (200 + i) * 65536) == bytes([i + 1]) * 65536, "block %d" % (200 + i)
assert h.pread(11, 300 * 65536 + 5) == b"multi-conn!"
assert h.pread(65536, 0)[:4] == bytes.fromhex("0714212e")
EOF
stop_serve
check_clean
finish
