#!/usr/bin/env bash
# nbdinfo against the daemon: --list --json names every volume with its
# size, read-only flag (read-only snapshots) and a description; --json of
# one export (by name and by #ID) gives the flags and block sizes the
# daemon advertises; --map (and --totals) shows data exactly at the blocks
# written and holes elsewhere, at block granularity, on the origin and on
# its snapshots after copy-on-write and trim.
. "$(dirname "$0")/lib.sh"
need nbdinfo nbdsh

B=65536
pool_create 1G --block-size 64K
start_serve --verbose

# no volumes: an empty list
nbdinfo --list --json "nbd+unix:///?socket=$nsock" >"$dir/list0.json" || fail "nbdinfo --list of an empty pool"
json_ok "$dir/list0.json" 'd["exports"] == []'

vol_create vm1 64M
vol_create "disk two" 16M
vol_create "név ünïcode=1" 1M

# Writes with known block footprints (B = 64 KiB blocks):
#   block 0; blocks 19-20; 4 KiB inside block 160 (unaligned); 20 bytes
#   straddling blocks 511/512; the last block 1023.
py "$(uri vm1)" <<'EOF' || fail "writing vm1"
import nbd, sys
B = 65536
h = nbd.NBD()
h.connect_uri(sys.argv[1])
def pat(n, seed):
    return bytes((seed * 7 + i * 13) & 0xff for i in range(n))
h.pwrite(pat(B, 1), 0)
h.pwrite(pat(2 * B, 2), (1 << 20) + 3 * B)
h.pwrite(pat(4096, 3), (10 << 20) + 100)
h.pwrite(pat(20, 4), (32 << 20) - 10)
h.pwrite(pat(B, 5), (64 << 20) - B)
h.flush()
h.shutdown()
EOF
data_blocks="0 19 20 160 511 512 1023"

"$tv" snapshot "$pool" vm1 snap-ro --read-only >/dev/null || fail "snapshot snap-ro"
"$tv" snapshot "$pool" vm1 snap-rw >/dev/null || fail "snapshot snap-rw"

# ---- --list --json: every volume ----
nbdinfo --list --json "nbd+unix:///?socket=$nsock" >"$dir/list.json" ||
	fail "nbdinfo --list failed"
"$tv" list "$pool" --json >"$dir/vols.json" || fail "thinvol list"
"$PY" - "$dir/list.json" "$dir/vols.json" <<'EOF' || fail "nbdinfo --list: $(cat "$dir/list.json")"
import json, sys
lst = json.load(open(sys.argv[1]))
vols = json.load(open(sys.argv[2]))
ex = {e["export-name"]: e for e in lst["exports"]}
want = {"vm1": (64 << 20, False), "disk two": (16 << 20, False),
        "snap-ro": (64 << 20, True), "snap-rw": (64 << 20, False),
        "név ünïcode=1": (1 << 20, False)}
assert lst["protocol"] == "newstyle-fixed", lst["protocol"]
assert lst["structured"] is True
assert sorted(ex) == sorted(want), "exports %s, want %s" % (sorted(ex), sorted(want))
assert sorted(ex) == sorted(v["name"] for v in vols), "exports differ from thinvol list"
for name, (size, ro) in want.items():
    e = ex[name]
    assert e["export-size"] == size, (name, e["export-size"])
    assert e["is_read_only"] is ro, (name, e["is_read_only"])
    assert isinstance(e.get("description"), str) and e["description"].strip(), \
        "%s: no description" % name
    assert "base:allocation" in e.get("contexts", []), (name, e.get("contexts"))
EOF
note "descriptions: $("$PY" -c 'import json,sys; print([e["description"] for e in json.load(open(sys.argv[1]))["exports"]])' "$dir/list.json")"

# ---- --json of one export, by name and by #ID ----
info() { # info URI FILE
	nbdinfo --json "$1" >"$2" || fail "nbdinfo --json $1"
}
info "$(uri vm1)" "$dir/vm1.json"
json_ok "$dir/vm1.json" 'len(d["exports"]) == 1 and d["exports"][0]["export-name"] == "vm1"'
json_ok "$dir/vm1.json" 'd["exports"][0]["export-size"] == 64 << 20'
for f in is_read_only; do
	json_ok "$dir/vm1.json" "d['exports'][0]['$f'] is False"
done
for f in can_flush can_fua can_trim can_zero can_fast_zero can_multi_conn can_cache can_df; do
	json_ok "$dir/vm1.json" "d['exports'][0]['$f'] is True"
done
# preferred: a power of two no larger than the pool's block size (the
# daemon says 4 KiB: below that writes are read-modify-write)
json_ok "$dir/vm1.json" 'p == (p & -p) and 512 <= p <= 65536 if (p := d["exports"][0]["block_size_preferred"]) else False'
json_ok "$dir/vm1.json" 'd["exports"][0]["block_size_maximum"] == 32 << 20'
json_ok "$dir/vm1.json" 'd["exports"][0]["block_size_minimum"] in (1, 512)'
json_ok "$dir/vm1.json" '"base:allocation" in d["exports"][0]["contexts"]'

id=$(show_field vm1 id)
info "$(uri "#$id")" "$dir/byid.json"
json_ok "$dir/byid.json" 'd["exports"][0]["export-size"] == 64 << 20'
info "$(uri "név ünïcode=1")" "$dir/uni.json"
json_ok "$dir/uni.json" 'd["exports"][0]["export-name"] == "név ünïcode=1"'
info "$(uri "disk two")" "$dir/two.json"
json_ok "$dir/two.json" 'd["exports"][0]["export-size"] == 16 << 20'
info "$(uri snap-ro)" "$dir/ro.json"
json_ok "$dir/ro.json" 'd["exports"][0]["is_read_only"] is True'
nbdinfo --is read-only "$(uri snap-ro)" || fail "snap-ro is not read-only"
! nbdinfo --is read-only "$(uri snap-rw)" || fail "snap-rw is read-only"
[ "$(nbdinfo --size "$(uri vm1)")" = $((64 << 20)) ] || fail "nbdinfo --size vm1"
# no such export: nbdinfo fails
! nbdinfo --json "$(uri nosuch)" >/dev/null 2>&1 || fail "nbdinfo of a missing export succeeded"
! nbdinfo --json "$(uri "#999")" >/dev/null 2>&1 || fail "nbdinfo of #999 succeeded"

# ---- --map ----
# check_map VOL "DATA BLOCKS": the map must cover the volume with extents
# at block boundaries, type 0 (data) exactly on DATA BLOCKS and 3
# (hole,zero) everywhere else.
check_map() {
	local vol=$1 blocks=$2
	nbdinfo --map --json "$(uri "$vol")" >"$dir/map.json" || fail "nbdinfo --map $vol"
	"$PY" - "$dir/map.json" "$blocks" "$B" "$(show_field "$vol" size)" <<'EOF' ||
import json, sys
m = json.load(open(sys.argv[1]))
want = set(int(b) for b in sys.argv[2].split())
B, size = int(sys.argv[3]), int(sys.argv[4])
pos, got = 0, set()
for e in m:
    assert e["offset"] == pos, "gap or overlap at %d: %s" % (pos, e)
    assert e["offset"] % B == 0 and e["length"] % B == 0, "extent not at block granularity: %s" % e
    assert e["type"] in (0, 3), "unexpected extent type: %s" % e
    if e["type"] == 0:
        got |= set(range(e["offset"] // B, (e["offset"] + e["length"]) // B))
    pos += e["length"]
assert pos == size, "map covers %d of %d bytes" % (pos, size)
assert got == want, "data blocks %s, want %s" % (sorted(got), sorted(want))
EOF
		fail "map of $vol: $(cat "$dir/map.json")"
}
check_map vm1 "$data_blocks"
check_map snap-ro "$data_blocks"
check_map snap-rw "$data_blocks"
check_map "disk two" ""
[ "$(show_field vm1 mapped)" = $((7 * B)) ] || fail "vm1 mapped $(show_field vm1 mapped), want $((7 * B))"

nbdinfo --map --totals --json "$(uri vm1)" >"$dir/totals.json" || fail "nbdinfo --map --totals"
json_ok "$dir/totals.json" 'sum(t["size"] for t in d if t["type"] == 0) == 7 * 65536'
json_ok "$dir/totals.json" 'sum(t["size"] for t in d) == 64 << 20'

# Trim block 19 of vm1 and overwrite block 200 of snap-rw: the origin
# loses block 19, snap-rw gains block 200, snap-ro is unchanged; the
# data of each reads back as it should.
py "$(uri vm1)" "$(uri snap-ro)" "$(uri snap-rw)" <<'EOF' || fail "trim/CoW step"
import nbd, sys
B = 65536
def pat(n, seed):
    return bytes((seed * 7 + i * 13) & 0xff for i in range(n))
vm1, ro, rw = (nbd.NBD() for _ in range(3))
vm1.connect_uri(sys.argv[1]); ro.connect_uri(sys.argv[2]); rw.connect_uri(sys.argv[3])
vm1.trim(B, 19 * B)
rw.pwrite(pat(B, 9), 200 * B)
vm1.flush(); rw.flush()
off2 = (1 << 20) + 3 * B
assert vm1.pread(B, 19 * B) == bytes(B), "trimmed block 19 does not read zeros"
assert vm1.pread(B, 20 * B) == pat(2 * B, 2)[B:], "vm1 block 20 changed"
for h, name in ((ro, "snap-ro"), (rw, "snap-rw")):
    assert h.pread(2 * B, off2) == pat(2 * B, 2), name + ": blocks 19-20 changed"
    assert h.pread(B, 0) == pat(B, 1), name + ": block 0 changed"
    assert h.pread(4096, (10 << 20) + 100) == pat(4096, 3), name + ": block 160"
    assert h.pread(20, (32 << 20) - 10) == pat(20, 4), name + ": blocks 511/512"
assert rw.pread(B, 200 * B) == pat(B, 9)
assert ro.pread(B, 200 * B) == bytes(B)
assert vm1.pread(B, 200 * B) == bytes(B), "a write to snap-rw shows in vm1"
for h in (vm1, ro, rw):
    h.shutdown()
EOF
check_map vm1 "0 20 160 511 512 1023"
check_map snap-ro "$data_blocks"
check_map snap-rw "$data_blocks 200"

stop_serve
check_clean
finish
