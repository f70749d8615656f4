# Shared by the daemon's test scripts (sourced, not run).
#
# Each test gets its own temporary directory $dir holding a pool $pool, and
# starts `thinvol serve` on it with start_serve.  Everything a test sets up
# (the daemon, fuse mounts, loop devices, mounts, background writers) is
# undone by the EXIT trap, in reverse order, whether the test passes or
# not: register an undo step with `on_exit CMD...`.
#
#   fail MSG              print FAIL: MSG (and the daemon's log) and exit 1
#   later_fail MSG        a failure reported by `finish`, the test goes on
#   finish                the last line of a test: pass, or fail with the
#                         later_fail messages
#   skip MSG              print SKIP: MSG and exit 77
#   need CMD...           skip unless every command exists
#   pool_create SIZE [ARG...]      thinvol pool create $pool --size SIZE ARG...
#   start_serve [ARG...]  start `thinvol serve $pool --foreground` and wait
#                         until both sockets listen ($serve_pid, $nsock, $csock);
#                         through the command in the array serve_prefix if set
#   stop_serve            SIGTERM; it must exit 0 and remove its sockets
#   kill9_serve           SIGKILL, as a crash
#   vol_create NAME SIZE  thinvol create (through the daemon when serving)
#   uri NAME              nbd+unix:///NAME?socket=$nsock, NAME percent-encoded
#   py [ARG...]           /usr/bin/python3 (Debian's, which has `import nbd`)
#                         with the script on stdin; TV_NSOCK etc. in its env
#   json_ok FILE EXPR     a Python expression on d = the JSON in FILE
#   check_clean           offline `thinvol check` reports a clean pool
#   alive PID, wait_for SECONDS CMD..., on_exit CMD...
set -euo pipefail

tv=${THINVOL:?THINVOL must name the thinvol binary}
case $tv in /*) ;; *) tv=$PWD/$tv ;; esac
# nbdsh is a python script run by the first python3 in PATH, and only
# Debian's python3 has the nbd module; the clients are all in /usr/bin.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
PY=/usr/bin/python3
me=$(basename "$0" .sh)

dir=$(mktemp -d "${TMPDIR:-/tmp}/tv-$me.XXXXXX")
pool=$dir/p.pool
nsock=$pool.nbd.sock
csock=$pool.ctl.sock
serve_pid=
serve_wrap=
serve_log=$dir/serve.log
: >"$serve_log"
[ ${#csock} -lt 100 ] || { echo "FAIL: temporary directory path too long for a socket: $dir" >&2; exit 1; }

_undo=()
on_exit() { _undo+=("$*"); }
_cleanup() {
	local rc=$? i
	set +e
	for ((i = ${#_undo[@]} - 1; i >= 0; i--)); do
		eval "${_undo[$i]}" >/dev/null 2>&1
	done
	if [ -n "$serve_wrap" ] && kill -0 "$serve_wrap" 2>/dev/null; then
		# a daemon still running (or still starting): kill it, by pid
		[ -n "$serve_pid" ] || serve_pid=$(cat "$dir/serve.pid" 2>/dev/null)
		[ -z "$serve_pid" ] || kill -KILL "$serve_pid" 2>/dev/null
		pkill -KILL -P "$serve_wrap" 2>/dev/null
		wait "$serve_wrap" 2>/dev/null
	fi
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -s "$serve_log" ]; then
		echo "---- daemon log (last 40 lines) ----" >&2
		tail -n 40 "$serve_log" >&2
	fi
	rm -rf "$dir"
	exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $me: $*" >&2; exit 1; }
# later_fail MSG: a failure that does not stop the test, so that the rest
# still runs; `finish` (the last line of every test) fails with them all
_later=()
later_fail() { echo "FAIL (reported at the end): $me: $*" >&2; _later+=("$*"); }
finish() {
	[ ${#_later[@]} -eq 0 ] || fail "${#_later[@]} failure(s): $(printf '%s; ' "${_later[@]}")"
	echo "ok: $me"
}
skip() { echo "SKIP: $me: $*" >&2; exit 77; }
note() { echo "# $*"; }
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
	done
}

py() { "$PY" - "$@"; }
export TV_NSOCK=$nsock TV_CSOCK=$csock TV_POOL=$pool TV_DIR=$dir

pool_create() {
	local size=$1; shift
	"$tv" pool create "$pool" --size "$size" "$@" >/dev/null ||
		fail "pool create $size $*"
}

# make_pki DIR: an X.509 CA, a server and a client certificate (in
# DIR/client/) made by certtool from the templates the test wrote,
# DIR/ca.info, DIR/server.info and DIR/client.info; keys mode 600.
make_pki() {
	local pki=$1
	(
		cd "$pki" &&
			certtool --generate-privkey --outfile ca-key.pem &&
			certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem &&
			certtool --generate-privkey --outfile server-key.pem &&
			certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
				--load-privkey server-key.pem --template server.info --outfile server-cert.pem &&
			certtool --generate-privkey --outfile client/client-key.pem &&
			certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
				--load-privkey client/client-key.pem --template client.info --outfile client/client-cert.pem
	) >"$dir/certtool.log" 2>&1 || fail "certtool: $(tail -n 5 "$dir/certtool.log")"
	chmod 600 "$pki"/*key.pem "$pki"/client/*key.pem
}

# wait_for TIMEOUT_S CMD...: poll CMD every 50 ms until it succeeds
wait_for() {
	local t=$(($1 * 20)); shift
	while ! "$@"; do
		t=$((t - 1))
		[ "$t" -gt 0 ] || return 1
		sleep 0.05
	done
}

# alive PID: the process exists and is not a zombie
alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st%% *}" != Z ]
}

# The daemon runs under a wrapper shell that records its exit status in
# $dir/serve.rc (so that a kill -9 is not reported by bash as a killed
# job); $serve_pid is the daemon's own pid, from its pidfile.
_serve_ready() {
	[ -e "$dir/serve.rc" ] && return 0 # exited: stop waiting
	[ -s "$dir/serve.pid" ] && [ -S "$nsock" ] && [ -S "$csock" ]
}

# start_serve [ARG...]: the daemon in the foreground (its stderr goes to
# $serve_log), ready when its pidfile is written and both sockets exist.
# serve_prefix (an array, empty by default) is a command that runs it,
# and must exec it in the end (a wrapper that moves it into a cgroup).
serve_prefix=()
start_serve() {
	[ -z "$serve_pid" ] || fail "start_serve: a daemon is running already"
	rm -f "$dir/serve.pid" "$dir/serve.rc"
	echo "== thinvol serve $* ($(date +%T.%N))" >>"$serve_log"
	(
		rc=0
		"${serve_prefix[@]}" "$tv" serve "$pool" --foreground --pidfile "$dir/serve.pid" "$@" || rc=$?
		echo "$rc" >"$dir/serve.rc"
	) </dev/null >>"$serve_log" 2>&1 &
	serve_wrap=$!
	wait_for 20 _serve_ready || fail "thinvol serve $*: not ready after 20 s"
	if [ -e "$dir/serve.rc" ]; then
		wait "$serve_wrap" || true
		fail "thinvol serve $* exited $(cat "$dir/serve.rc") at start"
	fi
	serve_pid=$(cat "$dir/serve.pid")
	alive "$serve_pid" || fail "the pidfile names $serve_pid, which is not running"
	[ "$(readlink "/proc/$serve_pid/exe")" = "$(readlink -f "$tv")" ] ||
		fail "the pidfile names $serve_pid, which is $(readlink "/proc/$serve_pid/exe")"
}

# _wait_serve TIMEOUT: wait for the daemon to exit (SIGKILL after TIMEOUT
# seconds); sets serve_rc
_wait_serve() {
	local t=$(($1 * 20))
	while [ ! -e "$dir/serve.rc" ] && [ "$t" -gt 0 ]; do
		sleep 0.05
		t=$((t - 1))
	done
	if [ ! -e "$dir/serve.rc" ]; then
		echo "# the daemon is still running after $1 s: SIGKILL" >&2
		kill -KILL "$serve_pid"
	fi
	wait "$serve_wrap" || true
	serve_rc=$(cat "$dir/serve.rc")
}

# stop_serve [SIGNAL]: a clean shutdown must exit 0 within 20 s and remove
# both sockets and the pidfile.
stop_serve() {
	local sig=${1:-TERM}
	[ -n "$serve_pid" ] || fail "stop_serve: no daemon"
	kill -"$sig" "$serve_pid"
	_wait_serve 20
	serve_pid=
	[ "$serve_rc" -eq 0 ] || fail "thinvol serve exited $serve_rc after SIG$sig"
	[ ! -e "$nsock" ] || fail "SIG$sig: $nsock left behind"
	[ ! -e "$csock" ] || fail "SIG$sig: $csock left behind"
	[ ! -e "$dir/serve.pid" ] || fail "SIG$sig: pidfile left behind"
}

kill9_serve() {
	[ -n "$serve_pid" ] || fail "kill9_serve: no daemon"
	kill -KILL "$serve_pid"
	_wait_serve 10
	serve_pid=
}

vol_create() {
	"$tv" create "$pool" "$1" --size "$2" >/dev/null || fail "create $1 --size $2"
}

urlenc() { "$PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
uri() { echo "nbd+unix:///$(urlenc "$1")?socket=$nsock"; }

# check_clean: thinvol check (offline: no daemon) reports a clean pool
check_clean() {
	local out
	out=$("$tv" check "$pool" --json 2>&1) || fail "check: $out"
	echo "$out" | "$PY" -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["clean"] is True else 1)' ||
		fail "check not clean: $out"
}

# json_ok JSON-FILE PYTHON-EXPR: evaluate with d = the JSON; must be true
json_ok() {
	"$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" || fail "json: $2: $(head -c 2000 "$1")"
}

# show_field VOL FIELD: one field of `thinvol show --json`
show_field() {
	"$tv" show "$pool" "$1" --json |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
