#!/usr/bin/env bash
# Whom the command trusts, and what the daemon may remove or overwrite
# (issue 14, items 8, 11 and 16):
#   1. a fake daemon planted by another user (nobody) at POOL.ctl.sock in
#      a shared sticky directory gets nothing: root's import of a secret
#      file and create are refused before a byte is sent, exit 1, with
#      the socket and its owner named; so is a socket root owns on which
#      nobody listens (SO_PEERCRED), and a symlink or a file in the
#      socket's place; the daemon does not remove such a file either.
#      The daemon that the pool's owner (nobody) runs on its own pool is
#      trusted;
#   2. serve --socket PATH removes nothing but a stale socket: a regular
#      file, or a symlink (even to a stale socket), stays as it was and
#      the daemon refuses to start; a listener with a full backlog is live
#      (exit 8 at once, not a connect() that waits); of two daemons that
#      find one stale socket, one serves there and the other is refused
#      (exit 8), also when the first is slowed down between the check and
#      the removal (strace); another user's socket at POOL.nbd.sock, with
#      a full backlog, is refused at once (exit 4) and left alone;
#   3. --pidfile: a symlink is not followed, a FIFO not waited on; a
#      pidfile that a running daemon holds is neither truncated nor
#      rewritten by a second one;
#   4. --listen takes ports 1 to 65535 only (99999, 0, 65536, -1, a name:
#      exit 2, nothing started) and logs the address it bound;
#   5. an import from a pipe that never sends, and an export into one that
#      is never read, do not keep SIGTERM from stopping the daemon; such a
#      copy ends when its client is killed; nor do an import and an export
#      on a FUSE file whose reads and writes never return.
#   6. (before 2, while root's shared directory exists) what another user
#      (nobody) puts in a sticky directory where root makes a pool or
#      exports: nobody's empty file (mode 0666), nobody's symbolic link to
#      a root file, nobody's file and a file with two links as export
#      targets are refused (exit 1) and left unchanged; root's new pool
#      and export are mode 0600, root's own symbolic link is followed.
. "$(dirname "$0")/lib.sh"
need setpriv

# run STATUS CMD...: CMD (at most 20 s) exits STATUS; output in
# $dir/out and $dir/err
run() {
	local want=$1 rc=0
	shift
	timeout 20 "$@" >"$dir/out" 2>"$dir/err" </dev/null || rc=$?
	[ "$rc" -eq "$want" ] || fail "$*: exit $rc, want $want: $(cat "$dir/err")"
}
in_err() { grep -qF -- "$1" "$dir/err" || fail "stderr lacks '$1': $(cat "$dir/err")"; }

# hog.py PATH USER: listen at PATH with a backlog of 0 and fill it, so that
# a blocking connect() there waits for ever (as USER: nobody, or self)
cat >"$dir/hog.py" <<'EOF'
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
if sys.argv[2] == "nobody":
    os.chown(sys.argv[1], 65534, 65534)
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
s.listen(0)
cs = []
for i in range(4):
    c = socket.socket(socket.AF_UNIX)
    c.setblocking(False)
    try:
        c.connect(sys.argv[1])
    except BlockingIOError:
        pass
    cs.append(c)
print("ready", flush=True)
time.sleep(120)
EOF

# ---- 1. a planted fake daemon ----
if [ "$(id -u)" -eq 0 ]; then
	sh=$dir/shared
	mkdir -m 1777 "$sh"
	chmod 0755 "$dir"
	sp=$sh/p.pool
	"$tv" pool create "$sp" --size 64M >/dev/null 2>&1 || fail "pool create"
	"$tv" create "$sp" v --size 1M >/dev/null || fail "create v"
	echo "root's secret" >"$dir/secret"
	chmod 600 "$dir/secret"
	# the fake answers like a daemon of this very pool (it can stat the
	# file), reports made-up ids and reads any descriptor passed to it
	cat >"$dir/fake.py" <<'EOF'
import array, json, os, socket, sys
path, log, drop = sys.argv[1], sys.argv[2], sys.argv[3] == "drop"
st = os.stat(path[:-len(".ctl.sock")])
s = socket.socket(socket.AF_UNIX)
s.bind(path)
if drop:  # bound as root, listening as nobody
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
s.listen(8)
open(log, "a").close()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    with open(log, "a") as f:
        f.write("connection\n")
    buf = b""
    while True:
        msg, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(16))
        if not msg:
            break
        for lvl, typ, data in anc:
            fds = array.array("i", data[:len(data) - len(data) % 4])
            for fd in fds:
                with open(log, "a") as f:
                    f.write("stole: %r\n" % os.read(fd, 100))
        buf += msg
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            q = json.loads(line)
            with open(log, "a") as f:
                f.write("request %s\n" % q["op"])
            res = {"proto": 1, "pool": {"type": "file", "dev": "%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev)), "ino": st.st_ino}}
            if q["op"] == "batch":
                res = {"ids": [4242]}
            elif q["op"] == "vol.resolve":
                res = {"id": 1}
            elif q["op"] in ("vol.import", "vol.export"):
                res = {"copied": 0, "zero": 0}
            elif q["op"] == "pool.info":
                res = {"format_version": 1, "uuid": "00" * 16, "block_size": 65536, "blob_size": 256, "size": 1 << 26, "used": 0, "free": 0, "metadata": 0, "reclaimable": 0, "nr_volumes": 1, "next_id": 2, "transaction": 1, "state": "rw", "reason": ""}
            c.sendall(json.dumps({"v": 1, "id": q.get("id"), "result": res}).encode() + b"\n")
EOF
	# fake PATH LOG MODE: start it (as nobody, or as root dropping to
	# nobody before listen), wait until it listens
	fake() {
		local pre=()
		[ "$3" = drop ] || pre=(setpriv --reuid=65534 --regid=65534 --clear-groups)
		: >"$dir/fake.out"
		"${pre[@]}" "$PY" "$dir/fake.py" "$1" "$2" "$3" >"$dir/fake.out" 2>&1 &
		fake_pid=$!
		on_exit "kill -KILL $fake_pid"
		wait_for 10 grep -q ready "$dir/fake.out" || fail "the fake daemon: $(cat "$dir/fake.out")"
	}
	fake "$sp.ctl.sock" "$sh/fake.log" plant
	[ "$(stat -c %U "$sp.ctl.sock")" = nobody ] || fail "the fake's socket is not nobody's"
	run 1 "$tv" import "$sp" v "$dir/secret"
	in_err "control socket $sp.ctl.sock is owned by nobody (uid 65534)"
	run 1 "$tv" create "$sp" x --size 1M
	[ ! -s "$dir/out" ] || fail "create printed an id: $(cat "$dir/out")"
	run 1 "$tv" list "$sp"
	[ ! -s "$sh/fake.log" ] || fail "the fake daemon was talked to: $(cat "$sh/fake.log")"
	kill -KILL "$fake_pid"
	wait "$fake_pid" 2>/dev/null || true
	rm -f "$sp.ctl.sock"
	# root owns the socket, but nobody listens on it
	fake "$sp.ctl.sock" "$sh/fake2.log" drop
	[ "$(stat -c %U "$sp.ctl.sock")" = root ] || fail "the second fake's socket is not root's"
	run 1 "$tv" import "$sp" v "$dir/secret"
	in_err "the process listening on $sp.ctl.sock runs as nobody (uid 65534)"
	# it was connected to (to learn who listens), and sent nothing
	! grep -q "request\|stole" "$sh/fake2.log" || fail "the second fake daemon got: $(cat "$sh/fake2.log")"
	kill -KILL "$fake_pid"
	wait "$fake_pid" 2>/dev/null || true
	rm -f "$sp.ctl.sock"
	# a symlink or a file in the socket's place
	ln -s "$dir/elsewhere.sock" "$sp.ctl.sock"
	run 1 "$tv" create "$sp" x --size 1M
	in_err "is not a socket (a symbolic link"
	rm "$sp.ctl.sock"
	echo planted >"$sp.ctl.sock"
	chown nobody "$sp.ctl.sock"
	run 1 "$tv" create "$sp" x --size 1M
	in_err "owned by nobody"
	run 4 "$tv" serve "$sp" --foreground --socket "$dir/x.sock"
	in_err "a regular file (owned by nobody, uid 65534) is in the way"
	[ "$(cat "$sp.ctl.sock")" = planted ] || fail "serve changed the file in its socket's place"
	rm "$sp.ctl.sock"
	# with it gone, the pool is as it was: one volume, nothing stolen
	[ "$("$tv" list "$sp" --json | "$PY" -c 'import json, sys; print([v["name"] for v in json.load(sys.stdin)])')" = "['v']" ] ||
		fail "the pool changed"
	# but the daemon of the pool's owner, on the owner's pool, is trusted
	asnobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	if "${asnobody[@]}" "$tv" --version >/dev/null 2>&1; then
		np=$sh/n.pool
		"${asnobody[@]}" "$tv" pool create "$np" --size 64M >/dev/null 2>&1 ||
			fail "pool create as nobody"
		"${asnobody[@]}" "$tv" serve "$np" --foreground --pidfile "$sh/n.pid" \
			>"$dir/n.log" 2>&1 </dev/null &
		npid=$!
		on_exit "kill -KILL $npid"
		wait_for 20 test -s "$sh/n.pid" || fail "serve as nobody: $(cat "$dir/n.log")"
		run 0 "$tv" create "$np" by-root --size 1M
		in_err "warning: $np: the pool file belongs to nobody (uid 65534)"
		"${asnobody[@]}" "$tv" list "$np" | grep -q by-root ||
			fail "root's create did not reach nobody's daemon"
		kill -TERM "$npid"
		wait "$npid" || fail "nobody's daemon exited $?"
		note "root reaches the daemon that the pool's owner (nobody) runs"
	else
		note "user nobody cannot run $tv: the owner's daemon not tried"
	fi
	# another user's listener with a full backlog at POOL.nbd.sock: serve
	# neither connects to it (a connect would wait for ever) nor removes
	# it, and fails at once (exit 4) without keeping the pool
	"$PY" "$dir/hog.py" "$sp.nbd.sock" nobody >"$dir/hog.out" 2>&1 &
	hog_pid=$!
	on_exit "kill -KILL $hog_pid"
	wait_for 10 grep -q ready "$dir/hog.out" || fail "the hog: $(cat "$dir/hog.out")"
	SECONDS=0
	run 4 "$tv" serve "$sp" --foreground
	in_err "a socket (owned by nobody, uid 65534) is in the way: refusing to use or replace another user's socket"
	[ "$SECONDS" -lt 10 ] || fail "serve took ${SECONDS}s to refuse another user's socket"
	[ -S "$sp.nbd.sock" ] || fail "serve removed another user's socket"
	run 0 "$tv" list "$sp"
	kill -KILL "$hog_pid"
	wait "$hog_pid" 2>/dev/null || true
	rm -f "$sp.nbd.sock"
	chmod 0700 "$dir"
	note "a fake daemon of another user, a root-owned socket it listens on, a symlink, a file, another user's socket with a full backlog: all refused"
else
	note "not root: cannot plant a socket as another user; section 1 not run"
fi

# ---- 6. what another user puts where root writes ----
if [ "$(id -u)" -eq 0 ]; then
	sh=$dir/shared6
	mkdir -m 1777 "$sh"
	chmod 0755 "$dir"
	asnobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	mkdir -m 0700 "$dir/private"
	echo "root's precious file" >"$dir/private/precious"
	# a file that nobody made (mode 0666) where root makes a pool: refused,
	# with --force too; the file stays nobody's and empty
	"${asnobody[@]}" bash -c "umask 0; : >$sh/planted.pool"
	for f in "" --force; do
		run 1 "$tv" pool create "$sh/planted.pool" --size 64M $f
		in_err "$sh/planted.pool: it is another user's file (owner nobody (uid 65534)"
	done
	[ "$(stat -c %U:%s "$sh/planted.pool")" = nobody:0 ] || fail "pool create changed nobody's file"
	# nobody's symbolic link to root's file: not followed
	"${asnobody[@]}" ln -s "$dir/private/precious" "$sh/link.pool"
	run 1 "$tv" pool create "$sh/link.pool" --size 64M --force
	in_err "a symbolic link owned by nobody (uid 65534) in $sh, a sticky directory that others may write into: refusing to follow it"
	# export: nobody's symbolic link, nobody's file (0666), a file with
	# another hard link: refused, nothing written
	"$tv" pool create "$sh/r.pool" --size 64M >/dev/null 2>&1 || fail "pool create r"
	[ "$(stat -c %a "$sh/r.pool")" = 600 ] || fail "root's new pool in $sh is mode $(stat -c %a "$sh/r.pool")"
	"$tv" create "$sh/r.pool" v --size 1M >/dev/null || fail "create v"
	echo "root's secret volume" | "$tv" import "$sh/r.pool" v - || fail "import v"
	"${asnobody[@]}" ln -s "$dir/private/precious" "$sh/out1.img"
	run 1 "$tv" export "$sh/r.pool" v "$sh/out1.img"
	in_err "a symbolic link owned by nobody (uid 65534) in $sh"
	[ "$(cat "$dir/private/precious")" = "root's precious file" ] || fail "export wrote through nobody's symlink"
	"${asnobody[@]}" bash -c "umask 0; : >$sh/out2.img"
	run 1 "$tv" export "$sh/r.pool" v "$sh/out2.img"
	in_err "a file owned by nobody (uid 65534) in $sh, a sticky directory that others may write into: refusing to write into another user's file there"
	[ ! -s "$sh/out2.img" ] || fail "export wrote into nobody's file"
	echo "root's" >"$sh/mine.img"
	ln "$sh/mine.img" "$sh/mine-too.img"
	run 1 "$tv" export "$sh/r.pool" v "$sh/mine.img"
	in_err "a file with 2 hard links in $sh"
	# root's own names there still work: a new file (0600, which nobody
	# cannot read), and root's own symbolic link
	run 0 "$tv" export "$sh/r.pool" v "$sh/new.img"
	[ "$(stat -c %U:%a "$sh/new.img")" = root:600 ] || fail "export made $(stat -c %U:%a "$sh/new.img")"
	! "${asnobody[@]}" cat "$sh/new.img" >/dev/null 2>&1 || fail "nobody reads root's export"
	[ "$(head -c 20 "$sh/new.img")" = "root's secret volume" ] || fail "the export's bytes"
	ln -s "$dir/private/out.img" "$sh/root-link.img"
	run 0 "$tv" export "$sh/r.pool" v "$sh/root-link.img"
	cmp -s "$sh/new.img" "$dir/private/out.img" || fail "export through root's own symlink"
	chmod 0700 "$dir"
	note "another user's file, symlink or hard link where root makes a pool or exports: refused; root's own names work"
else
	note "not root: cannot act as another user; section 6 not run"
fi

# ---- 2. serve --socket removes only a stale socket ----
pool_create 256M
vol_create v 16M
echo "precious" >"$dir/victim"
run 4 "$tv" serve "$pool" --foreground --socket "$dir/victim"
in_err "a regular file is in the way"
[ "$(cat "$dir/victim")" = precious ] || fail "serve --socket removed or changed a regular file"
"$PY" -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$dir/stale.sock"
ln -s "$dir/stale.sock" "$dir/link.sock"
run 4 "$tv" serve "$pool" --foreground --socket "$dir/link.sock"
in_err "a symbolic link is in the way"
[ -L "$dir/link.sock" ] && [ -S "$dir/stale.sock" ] || fail "serve --socket removed a symlink or its target"
[ ! -e "$csock" ] || fail "a refused serve left its control socket"
nsock=$dir/stale.sock # what start_serve and stop_serve look at
start_serve --socket "$nsock"
[ "$(stat -c %a "$nsock")" = 600 ] || fail "the stale socket was not replaced"
stop_serve
nsock=$pool.nbd.sock
# our own listener with a full backlog is live: refused at once (exit 8),
# not waited on in connect()
# (its own output file: section 1's hog.out says "ready" already)
"$PY" "$dir/hog.py" "$dir/full.sock" self >"$dir/hog2.out" 2>&1 &
hog_pid=$!
on_exit "kill -KILL $hog_pid"
wait_for 10 grep -q ready "$dir/hog2.out" || fail "the hog: $(cat "$dir/hog2.out")"
SECONDS=0
run 8 "$tv" serve "$pool" --foreground --socket "$dir/full.sock"
in_err "in use by a running server"
[ "$SECONDS" -lt 10 ] || fail "serve took ${SECONDS}s to find a live socket"
kill -KILL "$hog_pid"
wait "$hog_pid" 2>/dev/null || true
# two daemons for one stale socket: the first one's removal of it is slowed
# down (strace) while the second one starts; the second waits for the
# directory's lock, finds the first one's socket live and is refused
if command -v strace >/dev/null; then
	"$tv" pool create "$dir/b.pool" --size 64M >/dev/null 2>&1 || fail "pool create b"
	"$tv" create "$dir/b.pool" only-in-b --size 1M >/dev/null || fail "create only-in-b"
	"$PY" -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$dir/race.sock"
	# (LeakSanitizer cannot run under ptrace: an ASan build's daemon
	# would exit 1 at the end)
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
	strace -f -o /dev/null -e trace=unlink,unlinkat -e inject=unlink,unlinkat:delay_enter=1500000 \
		"$tv" serve "$dir/b.pool" --foreground --socket "$dir/race.sock" --pidfile "$dir/b.pid" \
		>"$dir/b.log" 2>&1 </dev/null &
	bpid=$!
	on_exit "pkill -KILL -P $bpid"
	# wait until it is in the slowed unlink of the stale socket
	# (/proc/PID/syscall: 87 unlink, 263 unlinkat)
	in_unlink() {
		local c
		c=$(pgrep -P "$bpid") && [ -n "$c" ] &&
			grep -Eq '^(87|263) ' "/proc/$c/syscall" 2>/dev/null
	}
	wait_for 20 in_unlink || fail "the first daemon never removed the stale socket: $(cat "$dir/b.log")"
	run 8 "$tv" serve "$pool" --foreground --socket "$dir/race.sock"
	in_err "$dir/race.sock: in use by a running server"
	wait_for 20 test -s "$dir/b.pid" || fail "the first daemon did not start: $(cat "$dir/b.log")"
	[ "$(nbdinfo --list --json "nbd+unix:///?socket=$dir/race.sock" |
		"$PY" -c 'import json, sys; print(" ".join(e["export-name"] for e in json.load(sys.stdin)["exports"]))')" = only-in-b ] ||
		fail "$dir/race.sock does not lead to the daemon that serves there"
	kill -TERM "$(cat "$dir/b.pid")"
	wait "$bpid" || fail "the first daemon exited $?"
	[ ! -e "$dir/race.sock" ] || fail "the first daemon left its socket"
	note "two daemons for one stale socket: the second is refused (exit 8)"
else
	note "no strace: the race for a stale socket not tried"
fi
# another user who may only read the socket's directory cannot hold up
# serve: nobody holds an flock on the directory (what the lock was until
# review 3, finding 2) and cannot open the lock file, while root's daemon
# starts, serves and stops (each at once, sockets removed); in a sticky
# directory, nobody's file at the lock file's name is not used, yet a
# fresh socket is bound and removed at exit
if [ "$(id -u)" -eq 0 ]; then
	chmod 0755 "$dir"
	pub=$dir/pub
	mkdir -m 0755 "$pub"
	"$tv" pool create "$pub/p.pool" --size 64M >/dev/null || fail "pool create pub"
	"$tv" create "$pub/p.pool" in-pub --size 1M >/dev/null || fail "create in-pub"
	setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
for f in ("p.pool.ctl.sock.lock", "p.pool.nbd.sock.lock"):
    try:
        os.open(os.path.join(sys.argv[1], f), os.O_RDONLY | os.O_CREAT)
        print("nobody opened", f, flush=True)
    except OSError:
        pass
print("locked", flush=True)
time.sleep(60)' "$pub" >"$dir/dirlock.out" 2>&1 &
	lk_pid=$!
	on_exit "kill -KILL $lk_pid"
	wait_for 10 grep -q locked "$dir/dirlock.out" || fail "the directory locker: $(cat "$dir/dirlock.out")"
	SECONDS=0
	"$tv" serve "$pub/p.pool" --foreground --pidfile "$pub/p.pid" >"$dir/pub.log" 2>&1 </dev/null &
	ppid_=$!
	wait_for 20 test -S "$pub/p.pool.nbd.sock" || fail "serve did not start beside a locked directory: $(cat "$dir/pub.log")"
	wait_for 20 test -s "$pub/p.pid" || fail "serve wrote no pidfile: $(cat "$dir/pub.log")"
	[ "$SECONDS" -lt 4 ] || fail "serve took ${SECONDS}s to start beside a locked directory"
	nbdinfo --list "nbd+unix:///?socket=$pub/p.pool.nbd.sock" | grep -q in-pub || fail "no in-pub on the socket"
	SECONDS=0
	kill -TERM "$ppid_"
	wait "$ppid_" || fail "serve exited $? beside a locked directory: $(cat "$dir/pub.log")"
	[ "$SECONDS" -lt 4 ] || fail "serve took ${SECONDS}s to stop beside a locked directory"
	[ ! -e "$pub/p.pool.nbd.sock" ] && [ ! -e "$pub/p.pool.ctl.sock" ] ||
		fail "serve left its sockets beside a locked directory"
	! grep -q "nobody opened" "$dir/dirlock.out" || fail "nobody could open a lock file: $(cat "$dir/dirlock.out")"
	ls "$pub" | grep -q '\.lock$' && fail "lock files left: $(ls "$pub")"
	kill -KILL "$lk_pid"
	wait "$lk_pid" 2>/dev/null || true
	# nobody's file at the lock file's name in a sticky directory
	st=$dir/sticky2
	mkdir -m 1777 "$st"
	"$tv" pool create "$st/q.pool" --size 64M >/dev/null || fail "pool create sticky2"
	setpriv --reuid=65534 --regid=65534 --clear-groups bash -c "umask 0; : >$st/q.pool.nbd.sock.lock"
	"$tv" serve "$st/q.pool" --foreground --pidfile "$st/q.pid" >"$dir/q.log" 2>&1 </dev/null &
	qpid=$!
	wait_for 20 test -s "$st/q.pid" || fail "serve beside nobody's lock file: $(cat "$dir/q.log")"
	kill -TERM "$qpid"
	wait "$qpid" || fail "serve beside nobody's lock file exited $?: $(cat "$dir/q.log")"
	[ ! -e "$st/q.pool.nbd.sock" ] || fail "serve left its socket beside nobody's lock file"
	[ "$(stat -c %U:%s "$st/q.pool.nbd.sock.lock")" = nobody:0 ] || fail "nobody's lock file was changed"
	chmod 0700 "$dir"
	note "another user who locks the directory or plants a lock file holds up nothing"
fi
note "serve --socket: a file and a symlink stay, a stale socket is replaced, a full backlog is live"

# ---- 3. pidfiles ----
echo "not a pidfile" >"$dir/target"
ln -s "$dir/target" "$dir/pid-link"
run 1 "$tv" serve "$pool" --foreground --pidfile "$dir/pid-link"
in_err "a symbolic link: refusing to follow it"
[ "$(cat "$dir/target")" = "not a pidfile" ] || fail "serve wrote through a symlinked pidfile"
mkfifo "$dir/pid-fifo" # no reader: opening it must not wait
run 1 "$tv" serve "$pool" --foreground --pidfile "$dir/pid-fifo"
in_err "not a regular file"
start_serve
first=$(cat "$dir/serve.pid")
"$tv" pool create "$dir/other.pool" --size 64M >/dev/null 2>&1 || fail "pool create other"
run 8 "$tv" serve "$dir/other.pool" --foreground --pidfile "$dir/serve.pid"
in_err "locked by a running daemon (process $first)"
[ "$(cat "$dir/serve.pid")" = "$first" ] || fail "a second daemon rewrote the pidfile: $(cat "$dir/serve.pid")"
[ ! -e "$dir/other.pool.ctl.sock" ] || fail "the refused daemon left a socket"
stop_serve
note "pidfiles: a symlink is not followed, a FIFO refused, a locked one is left alone"

# ---- 4. --listen ports ----
for p in 99999 0 65536 -1 nbd 00 ""; do
	run 2 "$tv" serve "$pool" --foreground --listen "127.0.0.1:$p" --allow-unauthenticated
	in_err "the port must be a number from 1 to 65535"
done
[ ! -e "$csock" ] && [ ! -e "$nsock" ] || fail "a refused --listen left sockets"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
: >"$serve_log"
start_serve --listen ":$port" --allow-unauthenticated
grep -Eq "and TCP (0\.0\.0\.0|\[::\]):$port; control socket" "$serve_log" ||
	fail "the bound address is not logged: $(cat "$serve_log")"
stop_serve
note "--listen: 7 bad ports refused; :$port logged as the address bound"

# ---- 5. a copy waiting on a pipe does not hold up SIGTERM ----
start_serve
mkfifo "$dir/in.fifo" "$dir/out.fifo"
exec 8<>"$dir/in.fifo" 7<>"$dir/out.fifo" # writers and readers that never act
"$tv" import "$pool" v - <"$dir/in.fifo" >"$dir/imp.out" 2>&1 &
imp=$!
on_exit "kill -KILL $imp"
"$tv" export "$pool" v - >"$dir/out.fifo" 2>"$dir/exp.out" &
exp=$!
on_exit "kill -KILL $exp"
# both requests are in the daemon once it holds both FIFOs
wait_for 10 eval '[ "$(ls -l /proc/$serve_pid/fd 2>/dev/null | grep -c "\.fifo$")" -eq 2 ]' ||
	fail "the daemon did not get both FIFOs: $(ls -l "/proc/$serve_pid/fd")"
# a client that goes away (killed) takes its copy with it
"$tv" import "$pool" v - <"$dir/in.fifo" >/dev/null 2>&1 &
gone=$!
on_exit "kill -KILL $gone"
wait_for 10 eval '[ "$(ls -l /proc/$serve_pid/fd 2>/dev/null | grep -c "\.fifo$")" -eq 3 ]' ||
	fail "the daemon did not get the third FIFO"
kill -KILL "$gone"
wait "$gone" 2>/dev/null || true
wait_for 10 eval '[ "$(ls -l /proc/$serve_pid/fd 2>/dev/null | grep -c "\.fifo$")" -eq 2 ]' ||
	fail "the import of a client that was killed goes on: $(ls -l "/proc/$serve_pid/fd")"
SECONDS=0
kill -TERM "$serve_pid"
_wait_serve 15
serve_pid=
[ "$serve_rc" -eq 0 ] || fail "SIGTERM with an import and an export waiting on pipes: exit $serve_rc after ${SECONDS}s"
rc=0
wait "$imp" || rc=$?
[ "$rc" -ne 0 ] && grep -q "the daemon is stopping" "$dir/imp.out" || fail "import: exit $rc: $(cat "$dir/imp.out")"
rc=0
wait "$exp" || rc=$?
[ "$rc" -ne 0 ] && grep -q "the daemon is stopping" "$dir/exp.out" || fail "export: exit $rc: $(cat "$dir/exp.out")"
exec 8>&- 7>&-
check_clean
note "a killed client's import ends; SIGTERM with an import and an export waiting on pipes: stopped in ${SECONDS}s"

# ... nor an import from a regular file whose reads never return (a FUSE
# file: nbdfuse over nbdkit's delay filter, reads answered after 120 s;
# a hung NFS mount does the same), nor an export into one whose writes
# never return (review 2, access finding 7)
if command -v nbdfuse >/dev/null && command -v nbdkit >/dev/null &&
	command -v fusermount3 >/dev/null && [ -c /dev/fuse ] &&
	nbdkit --dump-plugin memory >/dev/null 2>&1 && nbdkit --filter=delay null --dump-plugin >/dev/null 2>&1; then
	mkdir "$dir/fmnt"
	nbdfuse -P "$dir/nbdfuse.pid" "$dir/fmnt/hang" \
		--command nbdkit -s --filter=delay memory 1M rdelay=120 wdelay=120 \
		>"$dir/nbdfuse.log" 2>&1 &
	on_exit "fusermount3 -u '$dir/fmnt' || fusermount3 -u -z '$dir/fmnt'; sleep 0.2"
	wait_for 20 test -s "$dir/nbdfuse.pid" || fail "nbdfuse not ready: $(cat "$dir/nbdfuse.log")"
	# gone first at the end, so that nothing waits for its answers
	fuse_pid=$(cat "$dir/nbdfuse.pid")
	on_exit "kill -KILL \$(pgrep -P $fuse_pid) $fuse_pid; sleep 0.2"
	start_serve
	"$tv" import "$pool" v "$dir/fmnt/hang" >"$dir/imp.out" 2>&1 &
	imp=$!
	on_exit "kill -KILL $imp"
	# (as a stream: nbdfuse's files cannot be truncated)
	"$tv" export "$pool" v - 1<>"$dir/fmnt/hang" 2>"$dir/exp.out" &
	exp=$!
	on_exit "kill -KILL $exp"
	# both files are in the daemon, and in their reads and writes
	wait_for 10 eval '[ "$(ls -l /proc/$serve_pid/fd 2>/dev/null | grep -c "fmnt/hang$")" -ge 2 ]' ||
		fail "the daemon did not get both FUSE files: $(ls -l "/proc/$serve_pid/fd")"
	sleep 0.5
	SECONDS=0
	kill -TERM "$serve_pid"
	# the copies' clients are answered, the pool is closed and its lock
	# free at once (a check runs offline meanwhile); the process itself
	# ends once the FUSE server is gone (Linux waits for a FUSE request
	# that was taken, even through SIGKILL)
	wait_for 10 grep -q "thinvol serve\[$serve_pid\]: stopped" "$serve_log" ||
		fail "SIGTERM with copies stuck on a FUSE file: not stopped after ${SECONDS}s: $(tail -5 "$serve_log")"
	t=$SECONDS
	"$tv" check "$pool" >"$dir/check.out" 2>&1 || fail "check while the daemon's FUSE reads hang: $(cat "$dir/check.out")"
	kill -KILL $(pgrep -P "$fuse_pid") "$fuse_pid" 2>/dev/null
	_wait_serve 30
	serve_pid=
	[ "$serve_rc" -eq 0 ] || fail "SIGTERM with copies stuck on a FUSE file: exit $serve_rc after ${SECONDS}s"
	SECONDS=$t
	for c in imp exp; do
		rc=0
		wait "${!c}" || rc=$?
		[ "$rc" -ne 0 ] && grep -q "the daemon is stopping" "$dir/$c.out" || fail "$c: exit $rc: $(cat "$dir/$c.out")"
	done
	check_clean
	note "SIGTERM with an import and an export stuck on a FUSE file that never answers: stopped in ${SECONDS}s"
else
	note "no nbdfuse, nbdkit (memory plugin, delay filter) or FUSE: copies stuck on a FUSE file not tried"
fi
finish
