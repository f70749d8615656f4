#!/usr/bin/env bash
# The daemon's log and its TCP listener:
#   - stderr: one line per event ("DATE TIME thinvol serve[PID]: ..."),
#     the loud warning for TCP without TLS, per-connection lines only with
#     --verbose;
#   - --listen on IPv6 ([::1]:PORT), reached by nbdinfo, the peer logged
#     as [::1]:PORT (skipped where the machine has no ::1);
#   - --syslog: the detached daemon's lines go to /dev/log, as daemon.*
#     messages tagged thinvol[PID], nothing to stderr.  /dev/log is a
#     datagram socket of the test's own, in a mount namespace of the
#     daemon's own (unshare -m, a tmpfs on /dev), so the machine's logger
#     (if any) sees nothing; skipped where mount namespaces are not
#     allowed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need nbdinfo

free_port() { # FAMILY HOST
	"$PY" -c 'import socket, sys
s = socket.socket(getattr(socket, sys.argv[1]))
s.bind((sys.argv[2], 0))
print(s.getsockname()[1])' "$1" "$2"
}

pool_create 256M
vol_create v 64M

# ---- stderr, no --verbose: the start, the warning, the stop; no
# per-connection lines ----
port=$(free_port AF_INET 127.0.0.1)
: >"$serve_log"
start_serve --listen "127.0.0.1:$port" --allow-unauthenticated
nbdinfo "nbd://127.0.0.1:$port/v" >/dev/null || fail "nbdinfo over TCP"
nbdinfo --list "nbd+unix:///?socket=$nsock" >/dev/null || fail "nbdinfo --list"
stop_serve
grep -v '^== thinvol serve' "$serve_log" >"$dir/lines"
re='^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3} thinvol serve\[[0-9]+\]: .+'
if grep -Evq "$re" "$dir/lines"; then
	fail "a log line without the date, name and pid: $(grep -Ev "$re" "$dir/lines" | head -3)"
fi
grep -q "warning: listening on TCP 127.0.0.1:$port WITHOUT TLS" "$dir/lines" ||
	fail "no warning for TCP without TLS: $(cat "$dir/lines")"
grep -q "serving $pool (1 volume) on nbd+unix:///VOLUME?socket=$nsock and TCP 127.0.0.1:$port" "$dir/lines" ||
	fail "no start line: $(cat "$dir/lines")"
grep -q ": stopped$" "$dir/lines" || fail "no stop line: $(cat "$dir/lines")"
! grep -q "connected" "$dir/lines" ||
	fail "per-connection lines without --verbose: $(cat "$dir/lines")"
note "stderr: $(wc -l <"$dir/lines") lines, each dated and tagged; the TCP warning; no connection lines"

# ---- --verbose: each connection, its options and its export ----
: >"$serve_log"
start_serve --verbose
nbdinfo "$(uri v)" >/dev/null || fail "nbdinfo"
stop_serve
grep -Eq 'unix#[0-9]+: connected$' "$serve_log" || fail "--verbose: no connect line: $(cat "$serve_log")"
grep -Eq "unix#[0-9]+: serving volume 'v' \(#[0-9]+\)$" "$serve_log" ||
	fail "--verbose: no export line: $(cat "$serve_log")"
grep -Eq 'unix#[0-9]+: disconnected$' "$serve_log" || fail "--verbose: no disconnect line"
note "--verbose: $(grep -c 'unix#' "$serve_log") per-connection lines for one nbdinfo"

# ---- IPv6 ----
if "$PY" -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
	port=$(free_port AF_INET6 ::1)
	: >"$serve_log"
	start_serve --listen "[::1]:$port" --allow-unauthenticated --verbose
	nbdinfo --json "nbd://[::1]:$port/v" >"$dir/info6.json" || fail "nbdinfo over IPv6"
	json_ok "$dir/info6.json" 'd["exports"][0]["export-size"] == 64 << 20'
	stop_serve
	grep -q "TCP \[::1\]:$port" "$serve_log" || fail "IPv6: start line: $(cat "$serve_log")"
	grep -Eq '\[::1\]:[0-9]+: connected$' "$serve_log" || fail "IPv6: peer not logged as [::1]:PORT: $(cat "$serve_log")"
	note "IPv6: --listen [::1]:$port served nbdinfo"
else
	note "no IPv6 loopback here: --listen [::1] not tested"
fi

# ---- --syslog ----
syslog_test() {
	local sockp=$dir/log.sock out=$dir/syslog.txt
	[ "$(id -u)" -eq 0 ] || { note "not root: --syslog not tested"; return 0; }
	command -v unshare >/dev/null || { note "no unshare: --syslog not tested"; return 0; }
	unshare -m true 2>/dev/null || { note "no mount namespaces here: --syslog not tested"; return 0; }
	# the logger: every datagram on a line; stops 1 s after the daemon
	# is gone (the file $dir/syslog.stop) or after 60 s
	"$PY" - "$sockp" "$out" "$dir/syslog.stop" <<'EOF' &
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.2)
end = time.time() + 60
with open(sys.argv[2], "ab", buffering=0) as f:
    while time.time() < end:
        if os.path.exists(sys.argv[3]):
            end = min(end, time.time() + 1)
        try:
            f.write(s.recv(65536) + b"\n")
        except socket.timeout:
            pass
EOF
	local logger=$!
	on_exit "touch $dir/syslog.stop; wait $logger 2>/dev/null || true"
	wait_for 10 test -S "$sockp" || fail "syslog listener did not start"
	touch "$dir/null"
	# detached (no --foreground): the parent returns once the daemon
	# serves; inside the namespace /dev is a tmpfs with null and log only
	rm -f "$dir/serve.pid"
	unshare -m bash -c '
		set -e
		mount --bind /dev/null "$1/null"
		mount -t tmpfs tvdev /dev
		touch /dev/null
		mount --bind "$1/null" /dev/null
		ln -s "$2" /dev/log
		exec "$3" serve "$4" --syslog --verbose --pidfile "$1/serve.pid"
	' sh "$dir" "$sockp" "$tv" "$pool" >"$dir/syslog.stdout" 2>"$dir/syslog.stderr" ||
		fail "serve --syslog exited $?: $(cat "$dir/syslog.stderr")"
	[ ! -s "$dir/syslog.stderr" ] || fail "serve --syslog wrote to stderr: $(cat "$dir/syslog.stderr")"
	local pid
	pid=$(cat "$dir/serve.pid")
	alive "$pid" || fail "the --syslog daemon is not running"
	nbdinfo "$(uri v)" >/dev/null || fail "nbdinfo with --syslog"
	"$tv" create "$pool" via-daemon --size 1M >/dev/null || fail "create through the --syslog daemon"
	kill -TERM "$pid"
	wait_for 20 eval '! alive "$pid"' || fail "the --syslog daemon did not stop"
	[ ! -e "$nsock" ] && [ ! -e "$csock" ] || fail "sockets left by the --syslog daemon"
	touch "$dir/syslog.stop"
	wait "$logger" 2>/dev/null || true
	# <30>: facility daemon (3), level info (6); <31> debug
	local tag="^<(2[4-9]|3[01])>[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} thinvol\[$pid\]: "
	grep -Eq "${tag}serving $pool \(1 volume\)" "$out" || fail "syslog: no start line: $(cat "$out")"
	grep -Eq "${tag}unix#[0-9]+: serving volume 'v'" "$out" || fail "syslog: no --verbose line: $(cat "$out")"
	grep -Eq "${tag}stopped$" "$out" || fail "syslog: no stop line: $(cat "$out")"
	if grep -Evq "$tag" "$out"; then
		fail "syslog: a line not from daemon.* thinvol[$pid]: $(grep -Ev "$tag" "$out" | head -3)"
	fi
	note "--syslog: $(wc -l <"$out") lines to /dev/log as daemon.* thinvol[$pid], none on stderr"
}
syslog_test

check_clean
finish
