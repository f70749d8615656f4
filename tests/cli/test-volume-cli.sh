#!/usr/bin/env bash
# The volume commands of thinvol on a pool that no daemon holds: create,
# snapshot, delete, rename, resize, set-blob, get-blob, list, show, find,
# batch, pool resize; every bad input gets one line on stderr and its exit
# status; `check` is clean after every change.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out() { cat "$dir/out"; }
# json PYTHON-EXPR: evaluate with d = the JSON on stdout; must be true
json() {
	python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
ok = eval(sys.argv[2])
sys.exit(0 if ok else 1)' "$dir/out" "$1" || fail "json: $1: $(out)"
}
clean() {
	expect 0 "$tv" check "$p" --json
	json 'd["clean"] is True'
}
# ids NAME...: the ids of the named volumes, from list --json
id_of() {
	"$tv" list "$p" --json | python3 -c 'import json, sys
print(next(v["id"] for v in json.load(sys.stdin) if v["name"] == sys.argv[1]))' "$1"
}
# newid VAR: VAR = the first line of stdout (removed from it), which must be
# a decimal number above $last; it becomes $last.
# Ids come from a counter that never goes below the microseconds since
# 2025-01-01 UTC (so they stay unique across a restore of an older copy of
# the pool): each is at least the clock when the test started.
last=$(python3 -c 'import time; print(int((time.time() - 1735689600) * 1e6) - 1)')
newid() {
	local id
	id=$(head -1 "$dir/out")
	[[ "$id" =~ ^[1-9][0-9]*$ ]] || fail "not an id: '$id'"
	[ "$id" -gt "$last" ] || fail "id $id is not above $last"
	last=$id
	printf -v "$1" '%s' "$id"
	sed -i 1d "$dir/out"
}
names() {
	"$tv" list "$p" --json |
		python3 -c 'import json, sys; print(" ".join(sorted(v["name"] for v in json.load(sys.stdin))))'
}

p=$dir/v.pool
expect 0 "$tv" pool create "$p" --size 256M --blob-size 8
grep -q "8-byte blobs" "$dir/out" || fail "pool create: $(out)"
expect 0 "$tv" pool info "$p" --json
json 'd["blob_size"] == 8 and d["volumes"] == 0 and d["next_id"] == 1'
json 'd["state"] == "rw" and d["reason"] == "" and len(d["uuid"]) == 36'
json 'd["reclaimable"] == 0 and d["free"] > 0 and d["used"] >= d["metadata"]'
clean

# ---- create ----
expect 0 "$tv" create "$p" vm1 --size 1G
[ "$(wc -l <"$dir/out")" -eq 1 ] || fail "create printed '$(out)'"
newid i1
expect 0 "$tv" create "$p" --size 64M vm2 --blob-hex 0102030405060708
newid i2
printf 'ABCDEFGH' >"$dir/blob8"
expect 0 "$tv" create "$p" vm3 --size 1048576 --blob-file "$dir/blob8"
newid i3
expect 0 "$tv" create "$p" "név ünïcode=1" --size 512 --blob-hex AABBCCDDEEFF0011
newid i4
clean

expect 0 "$tv" show "$p" vm1 --json
json "d['id'] == $i1 and d['name'] == 'vm1' and d['size'] == 1 << 30"
json 'd["mapped"] == 0 and d["parent"] is None and d["read_only"] is False'
json 'd["flags"] == [] and d["blob"] == "00" * 8 and d["ctime_ns"] > 0'
expect 0 "$tv" show "$p" "#$i2" --json
json 'd["name"] == "vm2" and d["blob"] == "0102030405060708"'
expect 0 "$tv" show "$p" vm3 --json
json 'd["blob"] == "4142434445464748" and d["size"] == 1048576'
expect 0 "$tv" show "$p" "név ünïcode=1" --json
json "d['id'] == $i4 and d['blob'] == 'aabbccddeeff0011' and d['size'] == 512"
expect 0 "$tv" show "$p" vm2
grep -q "^name: *vm2$" "$dir/out" || fail "show: $(out)"
grep -q "0102030405060708" "$dir/out" || fail "show blob: $(out)"

# bad creates: nothing is created by any of them
expect_in 4 "a volume of that name exists (#$i1)" "$tv" create "$p" vm1 --size 1G
expect_in 2 "size 0" "$tv" create "$p" x --size 0
expect_in 2 "multiple of 512" "$tv" create "$p" x --size 1000
expect_in 2 "too large" "$tv" create "$p" x --size 2000P
expect_in 2 "too large" "$tv" create "$p" x --size 99999999999999999999
expect_in 2 "not a size" "$tv" create "$p" x --size 12Q
expect_in 2 "not a size" "$tv" create "$p" x --size 1.5G
expect_in 2 "not a size" "$tv" create "$p" x --size -1
expect_in 2 "needs --size" "$tv" create "$p" x
expect_in 2 "needs a value" "$tv" create "$p" x --size
expect_in 2 "needs POOL and NAME" "$tv" create "$p"
expect_in 2 "unknown option '--bogus'" "$tv" create "$p" x --size 1M --bogus
expect_in 2 "'/'" "$tv" create "$p" a/b --size 1M
expect_in 2 "control characters" "$tv" create "$p" $'a\tb' --size 1M
expect_in 2 "control characters" "$tv" create "$p" $'a\x7fb' --size 1M
expect_in 2 "cannot start with '#'" "$tv" create "$p" '#5' --size 1M
expect_in 2 "cannot be empty" "$tv" create "$p" '' --size 1M
expect_in 2 "longer than 128" "$tv" create "$p" "$(printf 'n%.0s' {1..129})" --size 1M
expect_in 2 "not valid UTF-8" "$tv" create "$p" $'a\xffb' --size 1M
expect_in 2 "2 bytes, but the blobs of this pool are exactly 8 bytes" \
	"$tv" create "$p" x --size 1M --blob-hex 0102
expect_in 2 "9 bytes" "$tv" create "$p" x --size 1M --blob-hex 010203040506070809
expect_in 2 "malformed hex: character 15 ('z')" \
	"$tv" create "$p" x --size 1M --blob-hex 01020304050607zz
expect_in 2 "odd number of hex digits" "$tv" create "$p" x --size 1M --blob-hex 010
expect_in 2 "malformed hex" "$tv" create "$p" x --size 1M --blob-hex 0x01020304050607
expect_in 2 "malformed hex" "$tv" create "$p" x --size 1M --blob-hex '01:02:03:04:05:06:07:08'
printf 'short' >"$dir/blob5"
expect_in 2 "5 bytes" "$tv" create "$p" x --size 1M --blob-file "$dir/blob5"
expect_in 3 "No such file" "$tv" create "$p" x --size 1M --blob-file "$dir/missing"
expect_in 2 "exclude each other" "$tv" create "$p" x --size 1M \
	--blob-hex 0102030405060708 --blob-file "$dir/blob8"
expect_in 3 "No such file" "$tv" create "$dir/nopool" x --size 1M
[ "$(names)" = "név ünïcode=1 vm1 vm2 vm3" ] || fail "names: $(names)"
clean

# ---- volume references ----
expect_in 2 "'#0': not a volume id" "$tv" show "$p" '#0'
expect_in 2 "'#abc': not a volume id" "$tv" show "$p" '#abc'
expect_in 2 "not a volume id" "$tv" show "$p" '#'
expect_in 2 "not a volume id" "$tv" show "$p" '#-1'
expect_in 3 "no such volume" "$tv" show "$p" '#99'
expect_in 3 "volume 'nosuch': no such volume" "$tv" show "$p" nosuch
expect_in 3 "no such volume" "$tv" get-blob "$p" nosuch
expect_in 3 "no such volume" "$tv" rename "$p" nosuch x
expect_in 3 "no such volume" "$tv" resize "$p" nosuch 1M
expect_in 3 "no such volume" "$tv" set-blob "$p" nosuch --hex 0102030405060708
expect_in 3 "no such volume" "$tv" snapshot "$p" nosuch s
expect_in 2 "not a volume id" "$tv" delete "$p" '#0'

# ---- snapshot ----
expect 0 "$tv" snapshot "$p" vm1 snap1 --read-only
newid i5
expect 0 "$tv" show "$p" snap1 --json
json "d['parent'] == $i1" && json 'd["parent"] and d["read_only"] is True and d["flags"] == ["read-only"]'
json 'd["size"] == 1 << 30 and d["blob"] == "00" * 8'
expect 0 "$tv" snapshot "$p" "#$i2" snap2 --blob-hex 1111111111111111
newid i6
expect 0 "$tv" show "$p" snap2 --json
json "d['parent'] == $i2" && json 'd["parent"] and d["read_only"] is False and d["blob"] == "11" * 8'
# several at once: one id per line, in order
expect 0 "$tv" snapshot "$p" vm1=m1 "#$i3=m3" snap1=m5
[ "$(wc -l <"$dir/out")" -eq 3 ] || fail "multi snapshot: $(out)"
newid i7
newid i8
newid i9
expect 0 "$tv" list "$p" --json
json "[(v['name'], v['id'], v['parent']) for v in d if v['id'] >= $i7] == [('m1', $i7, $i1), ('m3', $i8, $i3), ('m5', $i9, $i5)]"
clean
# a bad one among several: none is taken
expect_in 4 "snapshot 'vm2' as 'vm1'" "$tv" snapshot "$p" vm1=n1 vm2=vm1
expect_in 3 "no such volume" "$tv" snapshot "$p" vm1=n1 nosuch=n2
expect_in 2 "'/'" "$tv" snapshot "$p" vm1=n1 vm2=a/b
expect_in 4 "exists" "$tv" snapshot "$p" vm1=n1 vm2=n1
expect_in 2 "needs POOL ORIGIN NAME" "$tv" snapshot "$p" vm1
expect_in 2 "needs POOL ORIGIN NAME" "$tv" snapshot "$p" vm1 a b
expect_in 2 "bytes, but the blobs" "$tv" snapshot "$p" vm1 n1 --blob-hex 00
expect_in 2 "not a volume id" "$tv" snapshot "$p" '#0' n1
! names | grep -qw n1 || fail "a refused snapshot was applied: $(names)"
expect 0 "$tv" pool info "$p" --json
json "d['volumes'] == 9 and d['next_id'] == $i9 + 1"
clean

# ---- rename, resize ----
expect 0 "$tv" rename "$p" m5 renamed
expect 0 "$tv" show "$p" "#$i9" --json
json 'd["name"] == "renamed"'
expect 0 "$tv" rename "$p" "#$i9" renamed         # to its own name: no-op
expect_in 4 "exists" "$tv" rename "$p" renamed vm1
expect_in 2 "'/'" "$tv" rename "$p" renamed a/b
expect_in 2 "cannot start with '#'" "$tv" rename "$p" renamed '#1'
expect_in 2 "needs POOL, VOL and NEWNAME" "$tv" rename "$p" renamed
expect_in 3 "no such volume" "$tv" show "$p" m5
expect 0 "$tv" resize "$p" renamed 2G
expect 0 "$tv" resize "$p" vm2 4K
expect 0 "$tv" list "$p" --json
json '{v["name"]: v["size"] for v in d}["renamed"] == 2 << 30'
json '{v["name"]: v["size"] for v in d}["vm2"] == 4096'
expect_in 2 "multiple of 512" "$tv" resize "$p" vm2 513
expect_in 2 "size 0" "$tv" resize "$p" vm2 0
expect_in 2 "too large" "$tv" resize "$p" vm2 2000P
expect_in 2 "not a size" "$tv" resize "$p" vm2 lots
expect 0 "$tv" show "$p" vm2 --json
json 'd["size"] == 4096'
clean

# ---- set-blob, get-blob, find ----
expect 0 "$tv" set-blob "$p" vm1 --hex AaBbCcDdEeFf0011
expect 0 "$tv" get-blob "$p" vm1 --hex
[ "$(out)" = aabbccddeeff0011 ] || fail "get-blob --hex: $(out)"
expect 0 "$tv" get-blob "$p" vm1
[ "$(od -An -tx1 "$dir/out" | tr -d ' \n')" = aabbccddeeff0011 ] ||
	fail "get-blob raw: $(od -An -tx1 "$dir/out")"
expect 0 "$tv" set-blob "$p" "#$i3" --file "$dir/blob8"
expect 0 "$tv" get-blob "$p" vm3
cmp -s "$dir/out" "$dir/blob8" || fail "get-blob raw after --file"
printf '12345678' | "$tv" set-blob "$p" m3 --file - || fail "set-blob --file -"
expect 0 "$tv" get-blob "$p" m3
[ "$(out)" = 12345678 ] || fail "set-blob from stdin: $(out)"
expect_in 2 "exactly one of --hex and --file" "$tv" set-blob "$p" vm1
expect_in 2 "exactly one of --hex and --file" "$tv" set-blob "$p" vm1 \
	--hex 0102030405060708 --file "$dir/blob8"
expect_in 2 "3 bytes, but the blobs" "$tv" set-blob "$p" vm1 --hex 010203
expect_in 2 "malformed hex" "$tv" set-blob "$p" vm1 --hex 0102030405060g08
expect_in 2 "5 bytes" "$tv" set-blob "$p" vm1 --file "$dir/blob5"
expect 0 "$tv" get-blob "$p" vm1 --hex
[ "$(out)" = aabbccddeeff0011 ] || fail "a refused set-blob changed the blob"
clean

expect 0 "$tv" find "$p" --blob-hex AABBCCDDEEFF0011 --json
json '[v["name"] for v in d] == ["vm1", "név ünïcode=1"]'
json 'all(v["blob"] == "aabbccddeeff0011" for v in d)'
expect 0 "$tv" find "$p" --blob-prefix-hex aabb --json
json "[v['id'] for v in d] == [$i1, $i4]"
expect 0 "$tv" find "$p" --blob-prefix-hex 41424344 --json
json '[v["name"] for v in d] == ["vm3"]'
expect 0 "$tv" find "$p" --blob-prefix-hex 00 --json
json 'sorted(v["name"] for v in d) == ["m1", "renamed", "snap1"]'
expect 0 "$tv" find "$p" --blob-hex ffffffffffffffff --json
json 'd == []'
expect 0 "$tv" find "$p" --blob-prefix-hex aabb
grep -q "vm1" "$dir/out" || fail "find table: $(out)"
expect_in 2 "exactly one of" "$tv" find "$p"
expect_in 2 "exactly one of" "$tv" find "$p" --blob-hex 00 --blob-prefix-hex 00
expect_in 2 "4 bytes, but the blobs" "$tv" find "$p" --blob-hex aabbccdd
expect_in 2 "a prefix is 1 to 8 bytes" "$tv" find "$p" --blob-prefix-hex ''
expect_in 2 "a prefix is 1 to 8 bytes" "$tv" find "$p" --blob-prefix-hex 000000000000000000
expect_in 2 "malformed hex" "$tv" find "$p" --blob-prefix-hex xy

# ---- list ----
expect 0 "$tv" list "$p"
head -1 "$dir/out" | grep -q "ID *NAME *SIZE *MAPPED *PARENT *FLAGS" ||
	fail "list header: $(out)"
[ "$(wc -l <"$dir/out")" -eq 10 ] || fail "list rows: $(out)"
grep -q "#$i5 *snap1 .* #$i1 *ro\$" "$dir/out" || fail "list row: $(out)"
expect 0 "$tv" list "$p" --json
json 'len(d) == 9 and [v["id"] for v in d] == sorted(v["id"] for v in d)'
json 'all(set(v) >= {"id","name","size","mapped","parent","flags","blob","uuid"} for v in d)'

# ---- delete; ids are never reused ----
expect 0 "$tv" delete "$p" m1 "#$i8"
expect_in 3 "no such volume" "$tv" show "$p" m1
expect_in 3 "no such volume" "$tv" show "$p" "#$i8"
expect 0 "$tv" create "$p" after-delete --size 1M
newid i10   # (newid checks that it is above every id before it)
expect 0 "$tv" delete "$p" after-delete
expect 0 "$tv" create "$p" after-delete --size 1M
newid i11
expect_in 3 "no such volume" "$tv" delete "$p" vm3 nosuch
expect_in 2 "named twice" "$tv" delete "$p" vm3 "#$i3"
expect_in 2 "needs POOL and at least one VOL" "$tv" delete "$p"
expect 0 "$tv" show "$p" vm3            # the refused deletes kept it
# deleting an origin leaves its snapshots
expect 0 "$tv" delete "$p" vm2
expect 0 "$tv" show "$p" snap2 --json
json "d['parent'] == $i2"
expect 0 "$tv" show "$p" snap2
grep -q "parent: *#$i2 (deleted)" "$dir/out" || fail "show parent: $(out)"
expect 0 "$tv" pool info "$p" --json
json "d['volumes'] == 7 and d['next_id'] == $i11 + 1"
clean

# ---- batch ----
cat >"$dir/ops.json" <<JSON
[
  {"op": "create", "name": "b1", "size": "1G", "blob_hex": "B1B1B1B1B1B1B1B1"},
  {"op": "create", "name": "b2", "size": 1048576},
  {"op": "snapshot", "origin": "vm1", "name": "b3", "read_only": true},
  {"op": "snapshot", "origin": "#$i3", "name": "b4", "blob_hex": "b4b4b4b4b4b4b4b4"},
  {"op": "rename", "volume": "renamed", "name": "renamed2"},
  {"op": "resize", "volume": "vm3", "size": "2M"},
  {"op": "set-blob", "volume": "snap1", "blob_hex": "5151515151515151"},
  {"op": "delete", "volume": "after-delete"}
]
JSON
expect 0 "$tv" batch "$p" <"$dir/ops.json"
[ "$(wc -l <"$dir/out")" -eq 4 ] || fail "batch ids: $(out)"
newid i12
newid i13
newid i14
newid i15
expect 0 "$tv" list "$p" --json
json "[{v['name']: v['id'] for v in d}[n] for n in ('b1', 'b2', 'b3', 'b4')] == [$i12, $i13, $i14, $i15]"
json '"after-delete" not in [v["name"] for v in d]'
json '{v["name"]: v["blob"] for v in d}["b1"] == "b1" * 8'
json '{v["name"]: v["blob"] for v in d}["snap1"] == "51" * 8'
json "{v['name']: (v['parent'], v['read_only']) for v in d}['b3'] == ($i1, True)"
json '{v["name"]: v["size"] for v in d}["vm3"] == 2 << 20'
json '"renamed2" in [v["name"] for v in d] and "renamed" not in [v["name"] for v in d]'
clean
printf '[{"op":"create","name":"j1","size":"1M"},{"op":"delete","volume":"b2"}]' >"$dir/ops2.json"
expect 0 "$tv" batch "$p" "$dir/ops2.json" --json
json "d == [{'op': 'create', 'id': d[0]['id'], 'name': 'j1'}, {'op': 'delete', 'id': $i13}]"
json "d[0]['id'] > $i15"
expect 0 "$tv" batch "$p" <<<'[]'
[ ! -s "$dir/out" ] || fail "empty batch printed $(out)"

# a batch with one bad operation applies nothing
before=$("$tv" list "$p" --json)
# (the ids a refused batch would have taken are not used up either)
next_id() {
	"$tv" pool info "$p" --json |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["next_id"])'
}
info_before=$(next_id)
bad_batch() { # STATUS TEXT JSON
	printf '%s' "$3" >"$dir/bad.json"
	expect_in "$1" "$2" "$tv" batch "$p" "$dir/bad.json"
	[ "$("$tv" list "$p" --json)" = "$before" ] ||
		fail "a refused batch changed the pool: $3"
}
ok1='{"op":"create","name":"new1","size":"1M"}'
bad_batch 4 "operation 2 (create): volume 'vm1': a volume of that name exists" \
	"[$ok1,{\"op\":\"create\",\"name\":\"vm1\",\"size\":\"1M\"}]"
bad_batch 4 "operation 2 (create)" "[$ok1,$ok1]"
bad_batch 3 "operation 2: volume 'nosuch': no such volume" \
	"[$ok1,{\"op\":\"delete\",\"volume\":\"nosuch\"}]"
bad_batch 3 "no such volume" "[$ok1,{\"op\":\"delete\",\"volume\":\"#999\"}]"
bad_batch 3 "operation 3 (delete)" \
	"[$ok1,{\"op\":\"delete\",\"volume\":\"j1\"},{\"op\":\"delete\",\"volume\":\"j1\"}]"
bad_batch 3 "operation 2: volume 'new1': no such volume" \
	"[$ok1,{\"op\":\"delete\",\"volume\":\"new1\"}]"
bad_batch 2 "not a volume id" "[$ok1,{\"op\":\"rename\",\"volume\":\"#0\",\"name\":\"x\"}]"
bad_batch 2 "size 0" "[$ok1,{\"op\":\"resize\",\"volume\":\"vm1\",\"size\":0}]"
bad_batch 2 "multiple of 512" "[$ok1,{\"op\":\"create\",\"name\":\"x\",\"size\":\"1000\"}]"
bad_batch 2 "too large" "[$ok1,{\"op\":\"create\",\"name\":\"x\",\"size\":\"2000P\"}]"
bad_batch 2 "\"size\": '12Q' is not a size" "[$ok1,{\"op\":\"create\",\"name\":\"x\",\"size\":\"12Q\"}]"
bad_batch 2 "non-negative integer" "[$ok1,{\"op\":\"create\",\"name\":\"x\",\"size\":-512}]"
bad_batch 2 "non-negative integer" "[$ok1,{\"op\":\"create\",\"name\":\"x\",\"size\":1.5}]"
bad_batch 2 "\"size\" must be a string or a number, not an array" \
	"[$ok1,{\"op\":\"create\",\"name\":\"x\",\"size\":[]}]"
bad_batch 2 "'/'" "[$ok1,{\"op\":\"create\",\"name\":\"a/b\",\"size\":\"1M\"}]"
bad_batch 2 "control characters" "[$ok1,{\"op\":\"create\",\"name\":\"a\\u0001\",\"size\":\"1M\"}]"
bad_batch 2 "cannot start with '#'" "[$ok1,{\"op\":\"rename\",\"volume\":\"vm1\",\"name\":\"#7\"}]"
bad_batch 2 "3 bytes, but the blobs" "[$ok1,{\"op\":\"set-blob\",\"volume\":\"vm1\",\"blob_hex\":\"010203\"}]"
bad_batch 2 "malformed hex" "[$ok1,{\"op\":\"create\",\"name\":\"x\",\"size\":\"1M\",\"blob_hex\":\"zz\"}]"
bad_batch 2 "operation 2 (byte 58): unknown field \"nam\" for \"create\"" \
	"[$ok1,{\"op\":\"create\",\"nam\":\"x\",\"size\":\"1M\"}]"
bad_batch 2 "unknown field \"origin\" for \"delete\"" "[{\"op\":\"delete\",\"volume\":\"vm1\",\"origin\":\"vm1\"}]"
bad_batch 2 "\"create\" needs \"size\"" "[$ok1,{\"op\":\"create\",\"name\":\"x\"}]"
bad_batch 2 "\"snapshot\" needs \"origin\"" "[{\"op\":\"snapshot\",\"name\":\"x\"}]"
bad_batch 2 "needs \"op\"" "[{\"name\":\"x\"}]"
bad_batch 2 "unknown op \"frob\"" "[$ok1,{\"op\":\"frob\"}]"
bad_batch 2 "\"op\" must be a string, not a number" "[{\"op\":1}]"
bad_batch 2 "\"read_only\" must be true or false, not a string" \
	"[{\"op\":\"snapshot\",\"origin\":\"vm1\",\"name\":\"x\",\"read_only\":\"yes\"}]"
bad_batch 2 "\"name\" must be a string, not null" "[{\"op\":\"create\",\"name\":null,\"size\":\"1M\"}]"
bad_batch 2 "must be an object, not an array" "[$ok1,[]]"
bad_batch 2 "byte 0: the input must be an array of operations, not an object" "$ok1"
bad_batch 2 "byte 69: duplicate key \"name\"" \
	"[$ok1,{\"op\":\"create\",\"name\":\"x\",\"name\":\"y\",\"size\":\"1M\"}]"
bad_batch 2 "byte 43: unexpected character ']': expected a value" "[$ok1,]"
bad_batch 2 "byte 42: unexpected end of input" "[$ok1"
bad_batch 2 "byte 44: trailing characters after the JSON value" "[$ok1] x"
bad_batch 2 "byte 1: unexpected character '/'" "[// comment
]"
bad_batch 2 "byte 0: unexpected end of input: expected a value" ""
bad_batch 2 "nesting deeper than 32 levels" "$(printf '[%.0s' {1..40})"
bad_batch 2 "invalid UTF-8" $'[{"op":"create","name":"\xff","size":"1M"}]'
bad_batch 2 "\\u0000 is not allowed" '[{"op":"create","name":"a\u0000b","size":"1M"}]'
bad_batch 2 "too many members" "[{$(for i in $(seq 300); do printf '"k%d":1,' "$i"; done)\"z\":1}]"
# input size limit: 16 MiB
head -c $((16 * 1024 * 1024 + 1)) /dev/zero | tr '\0' ' ' >"$dir/huge.json"
expect_in 2 "larger than 16777216 bytes" "$tv" batch "$p" "$dir/huge.json"
expect_in 3 "No such file" "$tv" batch "$p" "$dir/missing.json"
[ "$info_before" = "$(next_id)" ] ||
	fail "refused batches used up ids: next id $info_before -> $(next_id)"
clean

# ---- pool resize ----
expect 0 "$tv" pool resize "$p" 512M
expect 0 "$tv" pool info "$p" --json
json 'd["size"] > 500 << 20'
[ "$(stat -c %s "$p")" -eq $((512 << 20)) ] || fail "pool file size"
expect_in 2 "can only grow" "$tv" pool resize "$p" 100M
expect_in 2 "not a size" "$tv" pool resize "$p" big
expect_in 2 "needs PATH and SIZE" "$tv" pool resize "$p"
clean

# ---- a pool with no blobs, and a full-size blob ----
q=$dir/noblob.pool
expect 0 "$tv" pool create "$q" --size 64M --blob-size 0
expect 0 "$tv" create "$q" a --size 1M
expect 0 "$tv" show "$q" a --json
json 'd["blob"] == ""'
expect_in 2 "1 bytes, but the blobs of this pool are exactly 0 bytes" \
	"$tv" create "$q" b --size 1M --blob-hex 00
expect_in 2 "no blobs" "$tv" find "$q" --blob-hex ''
expect_in 2 "--blob-size 4097: at most 4096" "$tv" pool create "$dir/x.pool" --size 64M --blob-size 4097

# ---- help and version ----
expect 0 "$tv" --version
grep -q "^thinvol [0-9]" "$dir/out" || fail "version: $(out)"
expect 0 "$tv" --help
cp "$dir/out" "$dir/help"
for c in "pool create" "pool info" "pool resize" create snapshot delete \
	rename resize set-blob get-blob list show find import export batch \
	check; do
	grep -q "thinvol $c" "$dir/help" || fail "--help lacks $c"
	# shellcheck disable=SC2086
	expect 0 "$tv" $c --help
	grep -q "^usage: thinvol $c" "$dir/out" || fail "$c --help: $(out)"
	grep -q -- "--help" "$dir/out" || fail "$c --help lacks --help"
done
expect 0 "$tv" help snapshot
grep -q "^usage: thinvol snapshot" "$dir/out" || fail "help snapshot"
for o in --size --blob-hex --blob-file; do
	"$tv" create --help | grep -q -- "$o" || fail "create --help lacks $o"
done
for o in --read-only --blob-hex --blob-file; do
	"$tv" snapshot --help | grep -q -- "$o" || fail "snapshot --help lacks $o"
done
for o in --size --block-size --blob-size --force; do
	"$tv" pool create --help | grep -q -- "$o" || fail "pool create --help lacks $o"
done
expect_in 2 "unknown command 'frob'" "$tv" frob
expect_in 2 "unknown command 'pool frob'" "$tv" pool frob

# ---- write errors on stdout are failures ----
if [ -w /dev/full ]; then
	got=0
	"$tv" list "$p" >/dev/full 2>"$dir/err" || got=$?
	[ "$got" -eq 1 ] || fail "list >/dev/full exited $got"
	grep -q "writing the output" "$dir/err" || fail "$(cat "$dir/err")"
fi

# ---- a busy pool: exit status 8 ----
if command -v flock >/dev/null; then
	got=0
	flock "$p" -c "\"$tv\" create \"$p\" busy --size 1M" \
		>"$dir/out" 2>"$dir/err" || got=$?
	[ "$got" -eq 8 ] || fail "busy pool: exit $got, want 8: $(cat "$dir/err")"
	grep -q "in use by" "$dir/err" || fail "$(cat "$dir/err")"
fi

# ---- a pool file we may not write: listings work, changes do not ----
# (root may write anyway)
if [ "$(id -u)" -ne 0 ]; then
	chmod a-w "$p"
	expect 0 "$tv" list "$p"
	expect 0 "$tv" pool info "$p" --json
	json 'd["state"] == "read-only"'
	expect_in 1 "Permission denied" "$tv" create "$p" x --size 1M
	chmod u+w "$p"
fi
clean
# ---- the largest blobs: 4 KiB, stored in several chunks ----
r=$dir/big.pool
expect 0 "$tv" pool create "$r" --size 64M --blob-size 4K
big=$(head -c 4096 /dev/urandom | od -An -tx1 -v | tr -d ' \n')
expect 0 "$tv" create "$r" big --size 1M --blob-hex "$big"
expect 0 "$tv" get-blob "$r" big --hex
[ "$(out)" = "$big" ] || fail "4 KiB blob round trip"
expect 0 "$tv" find "$r" --blob-hex "$big" --json
json '[v["name"] for v in d] == ["big"]'
echo "test-volume-cli: ok"
