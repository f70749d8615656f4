#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the seed corpus of fuzz-cli (corpus/cli/): batch documents (the
examples of docs/cli.md and refused variants), and 'S' size, 'H' hex and
'J' JSON inputs (see fuzz-cli.c for the first byte's meaning).  The
stubbed pool has volumes alpha (#1) .. epsilon (#5), 16-byte blobs.

usage: gen-cli-corpus.py OUTDIR
"""
import json
import os
import sys

B16 = "00ff" * 8
SEEDS = {
    "batch-all-ops": json.dumps([
        {"op": "create", "name": "n1", "size": "1G", "blob_hex": B16},
        {"op": "snapshot", "origin": "alpha", "name": "s1",
         "read_only": True, "blob_hex": B16},
        {"op": "delete", "volume": "#3"},
        {"op": "rename", "volume": "beta", "name": "b2"},
        {"op": "resize", "volume": "#4", "size": 1073741824},
        {"op": "set-blob", "volume": "gamma", "blob_hex": B16}]),
    "batch-empty": "[]",
    "batch-engine-refuses": json.dumps([{"op": "delete",
                                         "volume": "epsilon"}]),
    "batch-bad-op": json.dumps([{"op": "frob"}]),
    "batch-unknown-field": json.dumps([{"op": "delete", "volume": "#1",
                                        "x": 1}]),
    "batch-missing-field": json.dumps([{"op": "create", "name": "a"}]),
    "batch-bad-size": json.dumps([{"op": "create", "name": "a",
                                   "size": "1X"}]),
    "batch-size-range": json.dumps([{"op": "create", "name": "a",
                                     "size": "99999999999P"}]),
    "batch-negative-size": '[{"op":"create","name":"a","size":-1}]',
    "batch-bad-blob": json.dumps([{"op": "set-blob", "volume": "#1",
                                   "blob_hex": "abc"}]),
    "batch-short-blob": json.dumps([{"op": "set-blob", "volume": "#1",
                                     "blob_hex": "ab"}]),
    "batch-no-volume": json.dumps([{"op": "delete", "volume": "zeta"}]),
    "batch-not-array": '{"op":"delete"}',
    "batch-not-object": "[1]",
    "batch-read-only-type": json.dumps([{"op": "snapshot", "origin": "#1",
                                         "name": "s", "read_only": 1}]),
    "size-plain": "S1048576",
    "size-suffix": "S64KiB",
    "size-max": "S16E",
    "size-overflow": "S18446744073709551616",
    "size-p": "S15P",
    "hex-ok": "H00ff10AB",
    "hex-odd": "H0ff",
    "hex-bad": "H0g",
    "json-nested": 'J{"a":[1,2.5e-3,true,false,null,{"b":"\\u00e9\\ud83d\\ude00"}]}',
    "json-escapes": 'J"\\n\\t\\"\\\\\\/\\b\\f\\r"',
    "json-bad-surrogate": 'J"\\ud800"',
    "json-deep": "J" + "[" * 40 + "]" * 40,
    "json-numbers": "J[0,-0,1e400,18446744073709551615,18446744073709551616]",
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, s in sorted(SEEDS.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(s.encode())
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
