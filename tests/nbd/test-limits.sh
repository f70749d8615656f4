#!/usr/bin/env bash
# The daemon under hostile clients (issue 14, items 10, 17, 18), measured
# from /proc by limits.py:
#   - a flood of thousands of idle TCP and Unix connections: a new Unix
#     client, `thinvol list` and TCP clients (another address, and the
#     flooding one) are still served; the daemon holds no more than its
#     limits, and the handshake deadline closes the idle connections;
#   - clients that stall in the handshake, or trickle bytes, are closed
#     at the deadline;
#   - clients that never read their replies hold a bounded share of
#     memory and threads, and others keep their service;
#   - clients that leave: no work goes on for them, nothing leaks.
# The daemon starts with a low soft RLIMIT_NOFILE under a higher hard
# one: it must raise the soft limit, and keep its connection limit below
# it.
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}

pool_create 4G --block-size 64K
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" -c 'import socket; socket.create_connection(("127.0.0.1", '"$port"'), timeout=1)' 2>/dev/null &&
	fail "port $port is taken"
"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.2", 0))' 2>/dev/null ||
	skip "no 127.0.0.2 on the loopback interface"
# TCP without TLS, which is what is measured here; a build that wants
# that said explicitly gets it said
unauth=()
if "$tv" serve --help 2>&1 | grep -q -- '--allow-unauthenticated'; then
	unauth=(--allow-unauthenticated)
fi

# descriptors: soft 512 under a hard limit of 4096 (or what there is)
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -ge 1024 ] ||
	skip "RLIMIT_NOFILE hard limit $hard: too low for a flood"
ulimit -Sn 512
if [ "$hard" = unlimited ] || [ "$hard" -gt 4096 ]; then
	ulimit -Hn 4096
	hard=4096
fi

# the options refuse what makes no sense, before touching anything
for bad in "--max-connections 0" "--max-connections x" "--max-connections-per-peer 0" \
	"--handshake-timeout 0" "--handshake-timeout 3601" "--max-memory 100K" "--max-memory 1Q"; do
	rc=0
	"$tv" serve "$pool" --foreground $bad >"$dir/bad.out" 2>&1 </dev/null || rc=$?
	[ "$rc" -eq 2 ] || fail "serve $bad: exit $rc, want 2 (usage): $(cat "$dir/bad.out")"
	grep -q -- "${bad%% *}" "$dir/bad.out" || fail "serve $bad: the message does not name the option: $(cat "$dir/bad.out")"
done

# the connection limit follows the descriptors: asked for more than
# they allow, the daemon says so and takes fewer
start_serve --max-connections 100000
grep -q "at most $((hard - 256)) NBD connections, not 100000: the descriptor limit (RLIMIT_NOFILE) is $hard" "$serve_log" ||
	fail "no warning about the descriptor limit: $(tail -n 3 "$serve_log")"
soft=$(awk '/^Max open files/ { print $4 }' "/proc/$serve_pid/limits")
[ "$soft" = "$hard" ] || fail "the daemon's soft RLIMIT_NOFILE is $soft, not raised to the hard limit $hard"
stop_serve
note "RLIMIT_NOFILE raised from 512 to $hard; --max-connections 100000 lowered to $((hard - 256))"

max_conns=300 per_peer=32 handshake=3 max_mem=$((400 << 20))
start_serve --listen "127.0.0.1:$port" "${unauth[@]}" --max-connections $max_conns \
	--max-connections-per-peer $per_peer --handshake-timeout $handshake --max-memory $max_mem
vol_create vol 64M
"$PY" "$here/limits.py" "$serve_pid" "$nsock" "$port" "$pool" "$tv" \
	$max_conns $per_peer $handshake $max_mem || later_fail "limits.py (see above)"
# 600 clients that break the protocol (unknown client flags, a bad
# request magic, an unknown EXPORT_NAME) in a burst: a few log lines, not
# one each
before=$(wc -l <"$serve_log")
"$PY" - "$nsock" <<'EOF' || later_fail "the burst of bad clients"
import sys
from nbdwire import Conn, OPT_EXPORT_NAME
for i in range(200):
    for kind in range(3):
        c = Conn(path=sys.argv[1], cflags=0x80 if kind == 0 else 3)
        if kind == 1:
            c.go("vol")
            c.s.sendall(b"\xee" * 28)
        elif kind == 2:
            c.send_opt(OPT_EXPORT_NAME, b"nosuch%d" % i)
        assert c.closed()
EOF
burst=$(($(wc -l <"$serve_log") - before))
[ "$burst" -le 30 ] || later_fail "$burst log lines for 600 bad clients: not rate-limited"
grep -q 'such lines left out' "$serve_log" || later_fail "no count of the lines left out"
note "600 bad clients: $burst log lines"
# the daemon logged what it refused and closed, and not a line per
# connection of the flood
grep -q 'refused: 32 connections from 127.0.0.1 already\|closing .*, still in its handshake (it has sent nothing)' "$serve_log" ||
	later_fail "no log line about the per-peer limit"
grep -q 'handshake not finished after 3.0 s' "$serve_log" || later_fail "no log line about the handshake timeout"
n=$(wc -l <"$serve_log")
[ "$n" -lt 200 ] || later_fail "$n log lines for the flood: not rate-limited"
note "$n log lines for all that"
stop_serve

# ---- under a task limit (review 2, NBD finding 3) ----
# The daemon in a pids cgroup of 300 tasks: it keeps 64 for the rest of
# the daemon, lowers its connection limit to half of what is left, and
# gives the helpers of deep queues the other half.  40 connections with
# 64 requests queued each, unread, then want 320 threads: they used to
# get them until thread creation failed, and the control socket with
# it.  Now `thinvol list` and a new client are served meanwhile.
cg=
if [ "$(id -u)" = 0 ] && [ -w /sys/fs/cgroup/pids ] && [ -e /sys/fs/cgroup/pids/pids.max -o -d /sys/fs/cgroup/pids ]; then
	cg=/sys/fs/cgroup/pids/tv-test-limits.$$
elif [ "$(id -u)" = 0 ] && grep -qw pids /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
	cg=/sys/fs/cgroup/tv-test-limits.$$
fi
if [ -n "$cg" ] && mkdir "$cg" 2>/dev/null; then
	on_exit rmdir "$cg"
	echo 300 >"$cg/pids.max"
	serve_prefix=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg")
	start_serve
	serve_prefix=()
	grep -q "at most [0-9]* NBD connections, not 1024: [0-9]* threads may be started" "$serve_log" ||
		later_fail "no warning about the task limit: $(tail -n 3 "$serve_log")"
	"$PY" - "$serve_pid" "$nsock" "$tv" "$pool" <<'EOF' || later_fail "deep queues under a task limit (see above)"
import struct, subprocess, sys, time
from nbdwire import *
pid, nsock, tv, pool = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def threads():
    return int([l for l in open("/proc/%d/status" % pid) if l.startswith("Threads:")][0].split()[1])
hogs = []
for i in range(40):
    c = Conn(path=nsock)
    c.go("vol")
    c.s.sendall(b"".join(struct.pack(">IHHQQI", REQMAGIC, 0, CMD_READ, k, k * 65536, 65536) for k in range(64)))
    hogs.append(c)
time.sleep(1)
th = threads()
p = subprocess.run([tv, "list", pool], capture_output=True, timeout=20)
c = Conn(path=nsock, timeout=10)
c.go("vol")
r = c.cmd(CMD_READ, 0, 4096, 0, 1)
print("# task limit 300: 40 deep queues, the daemon has %d threads; thinvol list: exit %d" % (th, p.returncode))
assert p.returncode == 0, "thinvol list: %s" % p.stderr.decode(errors="replace")
assert r[2] == 0, "a new client's read: error %d" % r[2]
assert th <= 300 - 64, "%d threads under a task limit of 300" % th
EOF
	stop_serve
	! grep -q 'cannot start a thread' "$serve_log" || later_fail "a thread could not be started: $(grep -m1 'cannot start' "$serve_log")"
else
	note "no pids cgroup to make (not root, or no pids controller): the task limit not tried"
fi
check_clean
finish
