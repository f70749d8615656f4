#!/usr/bin/env bash
# The NBD spec's MUSTs, walked by proto_spec.py over a raw socket (every
# option, every command with every flag, edge lengths, the TLS modes),
# plus the clients that found the bugs of issue 14:
#   - `nbdinfo --map` and `qemu-img map` on an export named "#ID"
#     (BLOCK_STATUS failed: the meta context's export was compared by the
#     name sent, not by volume);
#   - what a client sends reaches the log escaped: an export name with a
#     newline forges no log line, even without --verbose (the logger's
#     own escaping, which covers a TLS identity too, is in test-nbds).
# Then --tls require and --tls optional with X.509 (CA, client
# certificates): FORCEDTLS and SELECTIVETLS, and clients without
# FIXED_NEWSTYLE, which the spec puts in NOTLS mode.
. "$(dirname "$0")/lib.sh"
need nbdinfo certtool
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}

pool_create 1G --block-size 64K
start_serve
vol_create vol 64M
"$tv" snapshot "$pool" vol ro --read-only >/dev/null || fail "snapshot ro"
id=$("$tv" show "$pool" vol --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])')

"$PY" "$here/proto_spec.py" plain "$nsock" vol ro "$id" || later_fail "proto_spec.py plain (see above)"

# ---- "#ID" with real clients (item 19) ----
py "$nsock" "$id" <<'EOF' || fail "writing vol"
import nbd, sys
h = nbd.NBD()
h.connect_uri("nbd+unix:///vol?socket=" + sys.argv[1])
h.pwrite(b"\x5a" * (1 << 20), 0)
h.flush()
h.shutdown()
EOF
idu="nbd+unix:///%23$id?socket=$nsock"
if nbdinfo --map --json "$idu" >"$dir/map.json"; then
	json_ok "$dir/map.json" 'd[0]["offset"] == 0 and d[0]["length"] >= 1 << 20 and d[0]["type"] == 0 and any(e["type"] == 3 for e in d) and sum(e["length"] for e in d) == 64 << 20'
else
	later_fail "nbdinfo --map on #$id"
fi
if ! command -v qemu-img >/dev/null; then
	note "no qemu-img: qemu-img map not tried"
elif qemu-img map --output=json "$idu" >"$dir/qmap.json"; then
	json_ok "$dir/qmap.json" 'd[0]["start"] == 0 and d[0]["data"] is True and any(not e["data"] for e in d)'
else
	later_fail "qemu-img map on #$id"
fi
note "nbdinfo --map and qemu-img map tried on #$id"

# ---- the log (item 21) ----
lines=$(grep -c . "$serve_log")
grep -n 'forged-line' "$serve_log" >"$dir/forged" || fail "the unknown EXPORT_NAME was not logged"
! grep -q '^2026-01-01' "$serve_log" || later_fail "a client forged a log line: $(grep '^2026-01-01' "$serve_log")"
grep -q "no export 'x\\\\x0a2026-01-01 00:00:00.000 thinvol serve\[1\]: forged-line': closing" "$serve_log" ||
	later_fail "the export name was not logged escaped: $(cat "$dir/forged")"
stop_serve
note "an export name with a newline is logged as \\x0a ($lines log lines)"

# ---- TLS: X.509 with a CA and client certificates ----
pki=$dir/pki
mkdir -p "$pki/client"
printf 'cn = thinvol test CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$pki/ca.info"
printf 'cn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$pki/server.info"
printf 'cn = client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$pki/client.info"
make_pki "$pki"
x509=(--tls-cert "$pki/server-cert.pem" --tls-key "$pki/server-key.pem" --tls-ca "$pki/ca-cert.pem")

start_serve "${x509[@]}" --tls require
"$PY" "$here/proto_spec.py" tls-require "$nsock" "$pki" vol || later_fail "proto_spec.py tls-require (see above)"
stop_serve
start_serve "${x509[@]}" --tls optional
"$PY" "$here/proto_spec.py" tls-optional "$nsock" "$pki" vol || later_fail "proto_spec.py tls-optional (see above)"
stop_serve

check_clean
finish
