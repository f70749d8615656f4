#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the seed corpus of fuzz-ctl (corpus/ctl/): one file per operation
of docs/control.md, with valid and refused variants, and a few sessions
of several lines.  The base pool (fuzz.h) holds alpha (#1), alpha-snap
(#2, read-only snapshot), beta (#3), delta2 (#5), v00..v09 (#6..#15),
blobs of 16 bytes.

usage: gen-ctl-corpus.py OUTDIR
"""
import json
import os
import sys


def rq(op, args=None, i=1, v=1):
    r = {"v": v, "id": i, "op": op}
    if args is not None:
        r["args"] = args
    return json.dumps(r, separators=(",", ":"))


B16 = "a1" * 16
SEEDS = {
    "hello": rq("hello"),
    "hello-v2": rq("hello", v=2),
    "pool-info": rq("pool.info"),
    "pool-resize": rq("pool.resize", {"size": 8 << 20}),
    "pool-resize-shrink": rq("pool.resize", {"size": 1 << 20}),
    "pool-check": rq("pool.check"),
    "pool-reopen": rq("pool.reopen"),
    "vol-list": rq("vol.list"),
    "vol-list-paged": "\n".join([rq("vol.list", {"max": 2}),
                                 rq("vol.list", {"cursor": 3, "max": 2}, 2)]),
    "vol-info": rq("vol.info", {"id": 1}),
    "vol-info-missing": rq("vol.info", {"id": 4}),
    "vol-usage": rq("vol.usage", {"id": 2}),
    "vol-resolve": rq("vol.resolve", {"spec": "alpha-snap"}),
    "vol-resolve-id": rq("vol.resolve", {"spec": "#5"}),
    "vol-resolve-hex": rq("vol.resolve", {"spec_hex": "62657461"}),
    "vol-get-blob": rq("vol.get_blob", {"id": 1, "len": 16}),
    "vol-find-blob": rq("vol.find_blob", {"prefix": "a1a1", "max": 4}),
    "batch-create": rq("batch", {"ops": [
        {"kind": "create", "name": "new", "size": 1 << 20, "blob": B16}]}),
    "batch-snapshot": rq("batch", {"ops": [
        {"kind": "snapshot", "id": 1, "name": "s2", "read_only": True}]}),
    "batch-delete": rq("batch", {"ops": [{"kind": "delete", "id": 3}]}),
    "batch-delete-claimed": rq("batch", {"ops": [{"kind": "delete",
                                                  "id": 2}]}),
    "batch-delete-force": rq("batch", {"ops": [{"kind": "delete", "id": 2}],
                                       "force": True}),
    "batch-rename": rq("batch", {"ops": [{"kind": "rename", "id": 5,
                                          "name": "d3"}]}),
    "batch-resize": rq("batch", {"ops": [{"kind": "resize", "id": 1,
                                          "size": 4096}]}),
    "batch-set-blob": rq("batch", {"ops": [{"kind": "set_blob", "id": 6,
                                            "blob": B16}]}),
    "batch-mixed": rq("batch", {"ops": [
        {"kind": "create", "name": "x", "size": 65536},
        {"kind": "snapshot", "id": 3, "name": "beta-s"},
        {"kind": "resize", "id": 5, "size": 1 << 30},
        {"kind": "rename", "id": 6, "name": "v00b"},
        {"kind": "delete", "id": 7}]}),
    "batch-fails-midway": rq("batch", {"ops": [
        {"kind": "create", "name": "y", "size": 65536},
        {"kind": "create", "name": "alpha", "size": 65536}]}),
    "vol-import": rq("vol.import", {"id": 3, "pool": "p", "volume": "beta",
                                    "file": "f"}),
    "vol-export": rq("vol.export", {"id": 3, "pool": "p", "volume": "beta",
                                    "file": "f", "stream": False}),
    "bad-not-json": "{\"v\":1,",
    "bad-not-object": "[1,2,3]",
    "bad-unknown-op": rq("frobnicate"),
    "bad-unknown-arg": rq("vol.info", {"id": 1, "x": 2}),
    "bad-dup-key": '{"v":1,"v":1,"op":"hello"}',
    "bad-wrong-type": rq("vol.info", {"id": "1"}),
    "bad-utf8": b'{"v":1,"op":"vol.resolve","args":{"spec":"\xff\xfe"}}',
    "session-create-use-delete": "\n".join([
        rq("batch", {"ops": [{"kind": "create", "name": "t",
                              "size": 1 << 20}]}, 1),
        rq("vol.resolve", {"spec": "t"}, 2),
        rq("vol.import", {"id": 16, "pool": "p", "volume": "t",
                          "file": "-"}, 3),
        rq("vol.usage", {"id": 16}, 4),
        rq("batch", {"ops": [{"kind": "snapshot", "id": 16,
                              "name": "t-s"}]}, 5),
        rq("batch", {"ops": [{"kind": "delete", "id": 16}]}, 6),
        rq("pool.check", None, 7)]),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, s in sorted(SEEDS.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(s if isinstance(s, bytes) else s.encode())
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
