#!/usr/bin/env bash
# The thinvol command through the daemon's control socket: the same
# commands on the same pool, once offline and once while `thinvol serve`
# holds the pool, must print the same stdout and stderr and exit with the
# same status, byte for byte (only uuids and creation times, which are
# random or the clock's, are masked).  Then: the socket's mode, a stale
# socket left by a killed daemon, --force accepted offline, and a fake
# daemon's reply with a sign or a space in a hex field refused.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if ! "$tv" serve --help >/dev/null 2>&1 ||
	"$tv" serve --help 2>&1 | grep -q "not yet"; then
	echo "test-control: SKIP: 'thinvol serve' is not built yet"
	exit 77
fi

p=$dir/p.pool
sock=$p.ctl.sock
pid=
# stop_daemon: SIGTERM, and it must exit 0 (it must not have died before:
# the commands would then have opened the pool themselves)
stop_daemon() {
	local st=0
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null ||
		fail "the daemon died early: $(cat "$dir/serve.log")"
	wait "$pid" || st=$?
	pid=
	[ "$st" -eq 0 ] ||
		fail "the daemon exited $st: $(cat "$dir/serve.log")"
}
trap '[ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null; rm -rf "$dir"' EXIT

# start_daemon: start serve and wait until its control socket answers
# (a stale one may lie there before)
answers() {
	python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])' "$sock" 2>/dev/null
}
start_daemon() {
	"$tv" serve "$p" --foreground 2>>"$dir/serve.log" &
	pid=$!
	for _ in $(seq 200); do
		[ -S "$sock" ] && answers && return 0
		kill -0 "$pid" 2>/dev/null ||
			fail "serve exited: $(cat "$dir/serve.log")"
		sleep 0.05
	done
	fail "no control socket after 10 s: $(cat "$dir/serve.log")"
}

# t CMD...: run a thinvol command, append what it did to the transcript
t() {
	local st=0
	"$tv" "$@" >"$dir/o" 2>"$dir/e" || st=$?
	{
		printf '$ thinvol'
		printf ' %q' "$@"
		printf '\n'
		cat "$dir/o"
		printf '%s\n' "--- stderr"
		cat "$dir/e"
		printf '%s\n' "--- exit $st"
	} >>"$transcript"
}
# ti STDIN-FILE CMD...: as t, with stdin from a file (through a pipe)
ti() {
	local in=$1 st=0
	shift
	cat "$in" | "$tv" "$@" >"$dir/o" 2>"$dir/e" || st=$?
	{
		printf '$ thinvol'
		printf ' %q' "$@"
		printf ' < %s\n' "${in##*/}"
		cat "$dir/o"
		printf '%s\n' "--- stderr"
		cat "$dir/e"
		printf '%s\n' "--- exit $st"
	} >>"$transcript"
}

head -c 1M /dev/urandom >"$dir/img"
truncate -s 4M "$dir/img"                 # data, then a hole
head -c 3M /dev/urandom >"$dir/big"       # larger than a 2M volume
printf '[{"op":"create","name":"b1","size":"1M"},
 {"op":"snapshot","origin":"a","name":"a-snap2","read_only":true},
 {"op":"set-blob","volume":"b","blob_hex":"0101010101010101"}]' >"$dir/batch1"
printf '[{"op":"create","name":"b2","size":"1M"},
 {"op":"rename","volume":"b","name":"a"}]' >"$dir/batch2"
printf '[{"op":"delete","volume":"b1"},{"op":"resize","volume":"b2","size":"2M"}]' \
	>"$dir/batch3"
printf '[{"op":"resize","volume":"b2","size":"2M"}]' >"$dir/batch4"

script() {
	t pool info "$p"
	t pool info "$p" --json
	t create "$p" a --size 4M
	t create "$p" b --size 2M --blob-hex 0011223344556677
	bid=$(cat "$dir/o")
	t create "$p" a --size 1M
	t create "$p" x --size 1000
	t create "$p" $'bad\xffname' --size 1M
	t create "$p" x --size 1M --blob-hex 00
	t snapshot "$p" a a-snap
	t snapshot "$p" a=s1 b=s2 --read-only --blob-hex aaaaaaaaaaaaaaaa
	t snapshot "$p" a=s3 nosuch=s4
	t snapshot "$p" a s1
	t list "$p"
	t list "$p" --json
	t show "$p" a
	t show "$p" "#$bid" --json
	t show "$p" s2
	t show "$p" nosuch
	t show "$p" $'no\xffsuch'
	t show "$p" '#999'
	t find "$p" --blob-hex aaaaaaaaaaaaaaaa
	t find "$p" --blob-prefix-hex 00 --json
	t find "$p" --blob-prefix-hex 0011
	t set-blob "$p" a --hex 0102030405060708
	t set-blob "$p" a --hex 01
	t set-blob "$p" nosuch --hex 0102030405060708
	t get-blob "$p" a --hex
	t get-blob "$p" a
	t rename "$p" a-snap renamed
	t rename "$p" renamed b
	t rename "$p" renamed 'x/y'
	t resize "$p" b 8M
	t resize "$p" b 1M
	t resize "$p" b 1000
	t resize "$p" b 1M --force
	t resize "$p" nosuch 1M
	ti "$dir/batch1" batch "$p"
	ti "$dir/batch2" batch "$p"
	ti "$dir/batch3" batch "$p" --json
	t batch "$p" "$dir/batch4" --json
	t batch "$p" "$dir/missing"
	t import "$p" a "$dir/img" --verbose
	t import "$p" b "$dir/big"
	t import "$p" s1 "$dir/img"
	t import "$p" nosuch "$dir/img"
	t import "$p" a "$dir/missing"
	t import "$p" a "$dir"
	ti "$dir/img" import "$p" a - --verbose
	t export "$p" a "$dir/out.img" --verbose
	cmp "$dir/img" "$dir/out.img" >>"$transcript" 2>&1 ||
		echo "export differs" >>"$transcript"
	t export "$p" a - --verbose
	t export "$p" nosuch "$dir/nofile"
	[ ! -e "$dir/nofile" ] || echo "nofile exists" >>"$transcript"
	t export "$p" a "$dir/nodir/x"
	t delete "$p" s2 nosuch
	t delete "$p" s2 s2
	t delete "$p" s2 a-snap2 --force
	t delete "$p" --bogus
	t pool resize "$p" 512M
	t pool resize "$p" 128M
	t list "$p" --json
	t check "$p"
	t check "$p" --json
	t pool info "$p"
}

"$tv" pool create "$p" --size 256M --blob-size 8 >/dev/null
cp --sparse=always "$p" "$dir/fresh.pool"

# offline
transcript=$dir/offline
: >"$transcript"
script
[ ! -e "$sock" ] || fail "a control socket appeared offline"

# the same through the daemon, on the same pool path
cp --sparse=always "$dir/fresh.pool" "$p"
rm -f "$dir/out.img"
start_daemon
[ "$(stat -c %a "$sock")" = 600 ] || fail "socket mode $(stat -c %a "$sock")"
transcript=$dir/daemon
: >"$transcript"
script
stop_daemon
[ ! -e "$sock" ] || fail "the control socket outlived the daemon"

# uuids are random, creation times the clock's, and volume ids too (each is
# at least the microseconds since 2025-01-01): mask them, ids as ID1, ID2,
# ... in the order they first appear.  And the
# metadata space: every offline command opens and closes the pool, which
# takes metadata chunks the daemon (one open) does not; so the bytes used
# by metadata, and the block references that the checker counts, differ
# by history, not by protocol.
mask() {
	sed -E -e 's/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/UUID/g' \
		-e 's/"ctime":"[^"]*","ctime_ns":[0-9]+/"ctime":T/g' \
		-e 's/^created:  .*/created:  T/' \
		-e 's/^(used|free): .*/\1: M/' \
		-e 's/"(used|free|metadata)":[0-9]+/"\1":M/g' \
		-e 's/[0-9]+ block references/N block references/' \
		-e 's/"data_refs":[0-9]+/"data_refs":N/' "$1" |
		python3 -c 'import re, sys
ids = {}
def sub(m):
	return ids.setdefault(m.group(0), "ID%d" % (len(ids) + 1))
sys.stdout.write(re.sub(r"(?<![0-9])[0-9]{13,16}(?![0-9])", sub, sys.stdin.read()))'
}
mask "$dir/offline" >"$dir/offline.m"
mask "$dir/daemon" >"$dir/daemon.m"
if ! cmp -s "$dir/offline.m" "$dir/daemon.m"; then
	diff -u "$dir/offline.m" "$dir/daemon.m" | head -60 >&2
	fail "offline and daemon runs differ"
fi
# the transcript must have exercised both successes and failures
grep -q -- "--- exit 0" "$dir/offline" || fail "no success in the script"
for st in 2 3 4 7; do
	grep -q -- "--- exit $st" "$dir/offline" ||
		fail "no exit status $st in the script"
done

# a socket left by a daemon that was killed: commands open the pool
# themselves, and the next daemon replaces it
start_daemon
{ kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
pid=
[ -S "$sock" ] || fail "SIGKILL removed the socket?"
expect 0 "$tv" list "$p"
grep -q "renamed" "$dir/out" || fail "list after SIGKILL: $(cat "$dir/out")"
start_daemon
expect 0 "$tv" create "$p" after-restart --size 1M
expect 0 "$tv" show "$p" after-restart --json
stop_daemon
expect 0 "$tv" show "$p" after-restart

# the sockets are 0600 whatever the daemon's umask, even one that takes
# the owner's own bits (a service manager's UMask=0277): a socket of
# mode 0400 or 0000 shuts out the pool owner's own commands and NBD
# clients (root's DAC override hides it from root, not the mode)
for um in 0177 0277 0777; do
	(umask "$um" && exec "$tv" serve "$p" --foreground) 2>>"$dir/serve.log" &
	pid=$!
	# a node can be seen between its bind and the end of its set-up:
	# wait (up to 10 s) for both to be there at 0600
	for _ in $(seq 200); do
		[ "$(stat -c %a "$sock" "$p.nbd.sock" 2>/dev/null)" = \
			"$(printf '600\n600')" ] && break
		sleep 0.05
	done
	for s in "$sock" "$p.nbd.sock"; do
		[ "$(stat -c %a "$s")" = 600 ] ||
			fail "umask $um: $s is mode $(stat -c %a "$s"), not 600"
	done
	stop_daemon
done

# a volume that an NBD client has open is neither deleted nor shrunk
# without --force (exit status 8, the daemon's message); growing is fine
if command -v qemu-io >/dev/null; then
	start_daemon
	expect 0 "$tv" create "$p" inuse --size 4M
	# qemu-io keeps the export open until its input (a fifo) ends
	mkfifo "$dir/qemu.in"
	qemu-io -f raw "nbd+unix:///inuse?socket=$p.nbd.sock" \
		<"$dir/qemu.in" >"$dir/qemu.out" 2>&1 &
	qpid=$!
	exec 3>"$dir/qemu.in"
	echo "read 0 512" >&3
	for _ in $(seq 200); do
		grep -q "read 512/512" "$dir/qemu.out" && break
		sleep 0.05
	done
	grep -q "read 512/512" "$dir/qemu.out" ||
		fail "qemu-io: $(cat "$dir/qemu.out")"
	expect 0 "$tv" resize "$p" inuse 8M
	expect_in 8 "exported to 1 NBD client" "$tv" resize "$p" inuse 1M
	expect_in 8 "thinvol: delete 'inuse': volume 'inuse' is exported" \
		"$tv" delete "$p" inuse
	printf '[{"op":"delete","volume":"inuse"}]' >"$dir/b-inuse"
	expect_in 8 "use --force" "$tv" batch "$p" "$dir/b-inuse"
	expect 0 "$tv" show "$p" inuse --json
	grep -q '"size":8388608' "$dir/out" || fail "changed: $(cat "$dir/out")"
	expect 0 "$tv" delete "$p" inuse --force
	expect_in 3 "no such volume" "$tv" show "$p" inuse
	exec 3>&-
	wait "$qpid" 2>/dev/null || true
	stop_daemon
else
	echo "test-control: qemu-io not found: NBD clients vs delete not tested"
fi

# --force is accepted offline and changes nothing there
expect 0 "$tv" resize "$p" after-restart 512K --force
expect 0 "$tv" delete "$p" after-restart --force
expect 0 "$tv" check "$p"
# a hex field of a daemon's reply is strict (util/hex.h): a sign or a
# space among its digits is a malformed reply, not a byte.  A daemon of
# our own that names this pool in its hello, then answers pool.info with
# such a uuid.
fake_daemon() { # UUID-HEX: serve one connection, hello then pool.info
	python3 - "$p" "$sock" "$1" >/dev/null <<'PY' &
import json, os, socket, sys
pool, path, uuid = sys.argv[1:]
st = os.stat(pool)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
c, _ = s.accept()
f = c.makefile("rwb")
for line in f:
    q = json.loads(line)
    if q["op"] == "hello":
        res = {"proto": 1, "versions": [1], "max_line": 1048576, "ops": [],
               "pool": {"type": "file", "ino": st.st_ino,
                        "dev": "%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev))}}
    else:
        res = {"format_version": 1, "uuid": uuid, "block_size": 65536,
               "blob_size": 16, "size": 1 << 30, "used": 0, "free": 0,
               "metadata": 0, "reclaimable": 0, "nr_volumes": 0,
               "next_id": 1, "transaction": 1, "state": "rw", "reason": "",
               "error": None}
    f.write((json.dumps({"v": 1, "id": q["id"], "result": res}) + "\n").encode())
    f.flush()
c.close()
os.unlink(path)
PY
	fpid=$!
	for _ in $(seq 200); do
		[ -S "$sock" ] && return 0
		sleep 0.05
	done
	fail "the fake daemon did not start"
}
good=00112233445566778899aabbccddeeff
fake_daemon "$good"
expect 0 "$tv" pool info "$p" --json
grep -q '"uuid":"00112233-4455-6677-8899-aabbccddeeff"' "$dir/out" ||
	fail "the fake daemon was not used: $(cat "$dir/out")"
wait "$fpid"
for bad in "+f112233445566778899aabbccddeeff" " f112233445566778899aabbccddeeff" \
	"0-112233445566778899aabbccddeeff"; do
	fake_daemon "$bad"
	expect_in 1 "malformed reply from the daemon (uuid)" "$tv" pool info "$p"
	wait "$fpid"
done

echo "test-control: ok"
