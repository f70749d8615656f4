#!/usr/bin/env bash
# Stopping the daemon: SIGTERM while a client writes (4 writes in flight,
# no flush) exits 0, removes both sockets and the pidfile, and keeps every
# acknowledged write (the pool is committed on the way out); SIGINT with
# an idle client likewise; the pool checks clean offline after each.  A
# second `thinvol serve` on a pool that one holds fails at once with one
# line naming the holder, and leaves the first one serving.  Without
# --foreground the daemon detaches once ready and writes its pidfile;
# --socket puts the NBD socket elsewhere, --listen adds TCP.  A client
# that never reads its replies does not keep SIGTERM from stopping the
# daemon.  Stale sockets of a killed daemon are replaced.
. "$(dirname "$0")/lib.sh"
need nbdinfo
here=$(cd "$(dirname "$0")" && pwd)

pool_create 1G --block-size 64K
start_serve
vol_create busy 64M

# ---- SIGTERM with a writer ----
mkdir "$dir/w"
"$PY" "$here/live_writer.py" write "$(uri busy)" "$dir/w" 1024 >"$dir/writer.out" 2>&1 &
writer=$!
on_exit "kill $writer"
wait_for 20 eval '[ "$(cat "$dir/w/log" 2>/dev/null | grep -c "^C")" -gt 200 ]' ||
	fail "the writer does not write: $(cat "$dir/writer.out")"
stop_serve TERM
wait "$writer" && fail "the writer did not notice the shutdown" || true
note "writer: $(tail -n 1 "$dir/writer.out" | cut -c1-200)"
check_clean
# every acknowledged write is there, and nothing issued later
start_serve
"$PY" "$here/live_writer.py" snap "$(uri busy)" "$dir/w" 1024 "$dir/w/log" "$dir/w/log" ||
	fail "writes acknowledged before SIGTERM lost"

# ---- a second daemon on the same pool ----
first=$serve_pid
rc=0
timeout 20 "$tv" serve "$pool" --foreground --socket "$dir/other.sock" >"$dir/second.out" 2>&1 </dev/null || rc=$?
# exit status 8: "busy (the pool is in use)", as for every other command
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "a second thinvol serve on the pool: exit $rc: $(cat "$dir/second.out")"
[ "$rc" -eq 8 ] || later_fail "a second thinvol serve on the pool: exit $rc, want 8: $(cat "$dir/second.out")"
[ "$(wc -l <"$dir/second.out")" -eq 1 ] || fail "second serve: want one line: $(cat "$dir/second.out")"
grep -q "$first" "$dir/second.out" || fail "second serve does not name the holder (pid $first): $(cat "$dir/second.out")"
note "second serve: exit $rc: $(cat "$dir/second.out")"
[ ! -e "$dir/other.sock" ] || fail "the second serve left $dir/other.sock"
alive "$first" || fail "the first daemon died"
[ "$(nbdinfo --size "$(uri busy)")" = $((64 << 20)) ] || fail "the first daemon stopped serving"
# offline commands that write are refused or go through the daemon
expect_create=0
"$tv" create "$pool" via-ctl --size 1M >/dev/null 2>"$dir/err" || expect_create=$?
[ "$expect_create" -eq 0 ] || fail "create while serving: exit $expect_create: $(cat "$dir/err")"
[ "$(nbdinfo --size "$(uri via-ctl)")" = 1048576 ] || fail "via-ctl not exported"

# ---- SIGINT with an idle client ----
"$PY" - "$(uri busy)" >"$dir/idle.out" 2>&1 <<'EOF' &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"idle" * 16384, 1 << 20)
print("connected", flush=True)
time.sleep(60)
EOF
idle=$!
on_exit "kill $idle"
wait_for 20 grep -qs connected "$dir/idle.out" || fail "idle client: $(cat "$dir/idle.out")"
stop_serve INT
kill "$idle" 2>/dev/null || true
check_clean

# ---- detached, with --socket; then stale sockets after kill -9 ----
rm -f "$dir/d.pid"
rc=0
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
timeout 20 "$tv" serve "$pool" --pidfile "$dir/d.pid" --socket "$dir/custom.sock" \
	--listen "127.0.0.1:$port" --allow-unauthenticated >"$dir/detach.out" 2>&1 </dev/null || rc=$?
[ "$rc" -eq 0 ] || fail "thinvol serve (detached) exited $rc: $(cat "$dir/detach.out")"
[ -s "$dir/d.pid" ] || fail "detached: no pidfile"
dpid=$(cat "$dir/d.pid")
on_exit "kill -KILL $dpid"
alive "$dpid" || fail "detached daemon $dpid is not running"
[ -S "$dir/custom.sock" ] && [ -S "$csock" ] || fail "detached: sockets missing"
[ ! -e "$nsock" ] || fail "--socket given, yet $nsock exists"
[ "$(stat -c %a "$dir/custom.sock")" = 600 ] && [ "$(stat -c %a "$csock")" = 600 ] ||
	fail "socket modes $(stat -c %a "$dir/custom.sock") $(stat -c %a "$csock"), want 600"
[ "$(nbdinfo --size "nbd+unix:///busy?socket=$dir/custom.sock")" = $((64 << 20)) ] || fail "detached: not serving"
[ "$(nbdinfo --size "nbd://127.0.0.1:$port/busy")" = $((64 << 20)) ] || fail "detached: not serving on TCP"
"$tv" list "$pool" >/dev/null || fail "list through the detached daemon"
kill -TERM "$dpid"
for ((i = 0; i < 200; i++)); do alive "$dpid" || break; sleep 0.05; done
! alive "$dpid" || fail "detached daemon still running 10 s after SIGTERM"
[ ! -e "$dir/custom.sock" ] && [ ! -e "$csock" ] && [ ! -e "$dir/d.pid" ] ||
	fail "detached: sockets or pidfile left behind"
check_clean

# ---- SIGTERM while a client sends reads and never reads the replies ----
# (its socket buffers fill up, the daemon's sends to it block): the
# daemon must still stop, promptly
start_serve
"$PY" - "$nsock" >"$dir/stuck.out" 2>&1 <<'EOF' &
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.recv(18)
s.sendall(struct.pack(">I", 3))
d = struct.pack(">I", 4) + b"busy" + struct.pack(">H", 0)
s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(d)) + d)
time.sleep(0.3)
s.recv(4096)  # the GO replies
s.setblocking(False)
n = 0
try:
    for i in range(4000):
        s.send(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0, 1 << 20))
        n += 1
except BlockingIOError:
    pass
print("stuck after", n, "reads", flush=True)
time.sleep(60)
EOF
stuck=$!
on_exit "kill $stuck"
wait_for 20 grep -qs stuck "$dir/stuck.out" || fail "stuck client: $(cat "$dir/stuck.out")"
sleep 0.5
[ "$(nbdinfo --size "$(uri busy)")" = $((64 << 20)) ] || fail "a stuck client blocks the others"
SECONDS=0
kill -TERM "$serve_pid"
_wait_serve 15
serve_pid=
[ "$serve_rc" -eq 0 ] || later_fail "SIGTERM with a client that does not read its replies: not stopped after 15 s (exit $serve_rc after SIGKILL)"
note "SIGTERM with a stuck client: ${SECONDS}s, exit $serve_rc"
kill "$stuck" 2>/dev/null || true
check_clean

start_serve
kill9_serve
[ -S "$nsock" ] && [ -S "$csock" ] || note "kill -9 left no stale sockets to replace"
start_serve # replaces the stale sockets
nbdinfo --size "$(uri busy)" >/dev/null || fail "not serving after a restart over stale sockets"
stop_serve
check_clean
finish
