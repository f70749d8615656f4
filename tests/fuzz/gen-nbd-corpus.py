#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the hand-made part of fuzz-nbd's corpus (corpus/nbd/gen-*): what
real clients never send (the captured sessions, cap-*, come from
capture-nbd.py).  Each file is the client's side of one connection.

usage: gen-nbd-corpus.py OUTDIR
"""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513
FIXED, NO_ZEROES = 1, 2
EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, SR, LIST_META, SET_META = (
    1, 2, 3, 5, 6, 7, 8, 9, 10)


def flags(f=FIXED | NO_ZEROES):
    return struct.pack(">I", f)


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def go(name, infos=()):
    n = name.encode()
    return opt(GO, struct.pack(">I", len(n)) + n +
               struct.pack(">H", len(infos)) +
               b"".join(struct.pack(">H", i) for i in infos))


def meta(o, name, queries):
    n = name.encode()
    q = b"".join(struct.pack(">I", len(x)) + x.encode() for x in queries)
    return opt(o, struct.pack(">I", len(n)) + n +
               struct.pack(">I", len(queries)) + q)


def req(cmd, off=0, length=0, flags=0, handle=1, data=b""):
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, handle, off,
                       length) + data


SEEDS = {
    "gen-export-name-oldstyle": flags(FIXED) + opt(EXPORT_NAME, b"beta") +
    req(0, 0, 4096) + req(2),
    "gen-no-fixed-flag": flags(0) + opt(LIST),
    "gen-unknown-flags": flags(0xff) + opt(LIST),
    "gen-starttls-no-tls": flags() + opt(STARTTLS) + opt(ABORT),
    "gen-unknown-option": flags() + opt(0x7777, b"abc") + opt(LIST) +
    opt(ABORT),
    "gen-option-too-long": flags() + struct.pack(">QII", IHAVEOPT, GO,
                                                 0x7fffffff),
    "gen-bad-opt-magic": flags() + struct.pack(">QII", 1, LIST, 0),
    "gen-go-bad-lengths": flags() + opt(GO, struct.pack(">I", 1000)),
    "gen-meta-then-go": flags() + opt(SR) +
    meta(LIST_META, "alpha", ["base:", "qemu:x"]) +
    meta(SET_META, "alpha", ["base:allocation", "base:allocation"]) +
    go("alpha", [0, 1, 2, 3, 12]) +
    req(7, 0, 1 << 20, 0, 1) + req(7, 1 << 19, 1 << 20, 8, 2) +
    req(0, 0, 512, 4, 3) + req(2),
    "gen-bad-requests": flags() + go("beta") +
    req(0, 1 << 40, 512) + req(0, 0, 0) + req(0, 7, 13) +
    req(1, 0, 512, 0x8000, data=b"\x00" * 512) + req(99) +
    req(6, 0, 4096, 2) + req(4, 512 * 1023, 2048) +
    req(1, 0, 64 << 20) + req(2),
    "gen-bad-request-magic": flags() + go("beta") +
    struct.pack(">IHHQQI", 0x12345678, 0, 0, 1, 0, 512),
    "gen-write-truncated": flags() + go("delta2") + req(1, 0, 4096) +
    b"\x01" * 100,
    "gen-go-twice-and-list": flags() + opt(LIST) + opt(INFO, b"\0" * 6) +
    go("") + go("delta2"),
    # issue 14: ABORT with data; options too big for each code; a failed
    # SET_META_CONTEXT after a good one; "#ID" exports with block status;
    # FUA on every command; NOTLS mode; a write too large to skip
    "gen-abort-with-data": flags() + opt(ABORT, b"bye"),
    "gen-abort-big": flags() + opt(ABORT, b"\xaa" * 70000),
    "gen-big-options": flags() + b"".join(
        opt(o, b"\0" * 70000) for o in (LIST, STARTTLS, INFO, GO, SR,
                                        LIST_META, SET_META, 4, 0x4242)) +
    opt(LIST) + opt(EXPORT_NAME, b"x" * 70000),
    "gen-meta-failed-then-bs": flags() + opt(SR) +
    meta(SET_META, "alpha", ["base:allocation"]) +
    meta(SET_META, "nosuch", ["base:allocation"]) + go("alpha") +
    req(7, 0, 1 << 20, 0, 1) + req(2),
    "gen-meta-by-id": flags() + opt(SR) +
    meta(SET_META, "#1", ["base:allocation"]) + go("#1", [1, 3]) +
    req(7, 0, 1 << 20, 8, 1) + req(7, 0, 1 << 20, 1, 2) +
    req(0, 0, 8192, 5, 3) + req(2),
    "gen-fua-everywhere": flags() + go("beta") +
    b"".join(req(c, 0, 0 if c == 3 else 4096, 1, c + 10,
                 b"\x42" * 4096 if c == 1 else b"")
             for c in (0, 1, 3, 4, 5, 6, 7)) +
    req(4, 512 << 10, 4096) + req(6, 512 << 10, 4096, 16) + req(2, flags=1),
    "gen-notls-starttls": flags(NO_ZEROES) + opt(STARTTLS) + opt(LIST) +
    opt(EXPORT_NAME, b"alpha") + req(0, 0, 4096) + req(2),
    "gen-write-too-big": flags() + go("beta") + req(1, 0, (64 << 20) + 1) +
    b"\x01" * 4096,
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, b in sorted(SEEDS.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(b)
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
