#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the seed corpus of fuzz-pool (corpus/pool/).

usage: gen-pool-corpus.py FUZZ_POOL_BINARY OUTDIR

The binary (any build of fuzz-pool) dumps the base pool image
(FUZZ_POOL_DUMP=FILE, see fuzz-pool.c); this script finds its metadata
nodes by their magic and writes patch inputs ("TVFZ" MODE PATCH...)
that damage them the ways test-corrupt does: the pool as is, each
superblock destroyed, a bit flipped (checksum left bad), forged header
and btree fields with the checksum recomputed (so the validators and the
checker must refuse them), a node zeroed, one node's bytes over another
(misdirected write), a data block overwritten, and the pool's size and
counters in the superblock forged.  Plus two raw (non-patch) inputs: a
truncated image and a few garbage bytes.  The base image is built
deterministically, so node numbers are stable across builds.

The hostile-* seeds are crafted images with every node resealed, as an
attacker would write them (docs/reliability.md, issue 14 item 12): a
volume's mapping of a block it owns onto the superblocks' block, onto a
block number whose byte offset wraps round to 0, past the pool's end,
onto the metadata chunk holding the mapping itself; a volume's mapping
tree root, and the space map's root, pointing at a well-formed copy of
the real node placed in a volume's data block.  fuzz-pool's guard fails
the run if the engine writes a client's bytes into the superblocks or a
metadata chunk, and its oracle if the check calls such a pool clean.
"""
import os
import struct
import subprocess
import sys
import tempfile

XOR, RESEAL, COPY = 1, 2, 4


def patch(off, data, flags=0):
    out = b""
    while data:  # one record holds at most 255 bytes
        chunk, data = data[:255], data[255:]
        out += struct.pack("<IBB", off, flags, len(chunk)) + chunk
        off += len(chunk)
    return out


def seed(mode, *patches):
    return b"TVFZ" + bytes([mode]) + b"".join(patches)


def u16(img, off):
    return struct.unpack_from("<H", img, off)[0]


def u64(img, off):
    return struct.unpack_from("<Q", img, off)[0]


def copy(dst, src, n):
    """patches copying n bytes of the image (as fuzz-pool builds it: with
    that run's pool tag) from offset src to dst"""
    out = b""
    while n:
        k = min(n, 255)
        out += struct.pack("<IBBI", dst, COPY, k, src)
        dst, src, n = dst + k, src + k, n - k
    return out


def forge(src, dst):
    """patches moving node src to node dst, as a node of its own there
    (its location in the header; the checksum resealed)"""
    return (copy(dst * 4096, src * 4096, 4096) +
            patch(dst * 4096 + 8, struct.pack("<Q", dst), RESEAL))


def hostile(img, new_sb, data, seeds):
    """the hostile-* seeds (see the top); the nodes patched are the live
    ones, found from the newest superblock (the image also holds older
    copies that no root names)"""
    tag = lambda n: img[n * 4096 + 32:n * 4096 + 36]
    leaf = lambda n: img[n * 4096 + 36] & 1
    nr = lambda n: u16(img, n * 4096 + 40)
    sb = new_sb * 4096
    vols = u64(img, sb + 136)  # roots[0]: the volume table
    if not data or tag(vols) != b"VOLS" or not leaf(vols):
        return
    for i in range(nr(vols)):
        root = vols * 4096 + 64 + 15 * 8 + i * 256 + 72  # its map_root
        maps = u64(img, root)
        if maps and tag(maps) == b"MAPS" and leaf(maps) and nr(maps):
            break
    else:
        return
    # the entry written last (highest epoch): a block the volume owns, so
    # that a write through the mapping goes in place, not to a copy
    values = maps * 4096 + 64 + u16(img, maps * 4096 + 42) * 8
    first = max((values + i * 16 for i in range(nr(maps))),
                key=lambda v: (u64(img, v + 8), v))
    nr_blocks = u64(img, sb + 80)
    for name, block in (("superblock", 0),
                        ("overflow", 1 << 52),  # * 4 KiB == 2^64
                        ("past-end", nr_blocks),
                        ("metadata", maps)):  # 4 KiB blocks: node == block
        seeds["hostile-map-" + name] = seed(1, patch(
            first, struct.pack("<Q", block), RESEAL))
    # the volume's mapping tree root, and the space map's, at a copy of
    # the node placed in a data block
    seeds["hostile-maproot-in-data"] = seed(
        1, forge(maps, data[0]),
        patch(root, struct.pack("<Q", data[0]), RESEAL))
    sm_root = sb + 120
    seeds["hostile-smroot-in-data"] = seed(
        1, forge(u64(img, sm_root), data[0]),
        patch(sm_root, struct.pack("<Q", data[0]), RESEAL))


def main():
    binary, outdir = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        img_path = os.path.join(tmp, "base.img")
        subprocess.run([binary], env=dict(os.environ,
                       FUZZ_POOL_DUMP=img_path), check=True)
        img = open(img_path, "rb").read()
    pages = len(img) // 4096
    btree = [n for n in range(2, pages)
             if img[n * 4096 + 4:n * 4096 + 8] == b"TVBT"]
    data = [n for n in range(2, pages)
            if any(img[n * 4096:(n + 1) * 4096]) and n not in btree]
    leaves = [n for n in btree if img[n * 4096 + 36] & 1]
    inner = [n for n in btree if not img[n * 4096 + 36] & 1]
    seeds = {}
    seeds["base-ro"] = seed(0)
    seeds["base-rw"] = seed(1)
    # superblocks: the newer one is the one with the higher txn (offset 72)
    txn = [struct.unpack_from("<Q", img, s * 4096 + 72)[0] for s in (0, 1)]
    new = 0 if txn[0] > txn[1] else 1
    seeds["sb-new-zeroed"] = seed(1, patch(new * 4096, bytes(255)))
    seeds["sb-both-zeroed"] = seed(0, patch(0, bytes(64)),
                                   patch(4096, bytes(64)))
    seeds["sb-bitflip"] = seed(0, patch(new * 4096 + 100, b"\x04", XOR))
    seeds["sb-forge-nr-blocks"] = seed(1, patch(
        new * 4096 + 80, struct.pack("<Q", 1 << 40), RESEAL))
    seeds["sb-forge-first-block"] = seed(1, patch(
        new * 4096 + 88, struct.pack("<Q", 3), RESEAL))
    seeds["sb-forge-block-size"] = seed(0, patch(
        new * 4096 + 48, struct.pack("<I", 512), RESEAL))
    seeds["sb-forge-sm-root"] = seed(0, patch(
        new * 4096 + 120, struct.pack("<Q", 1), RESEAL))
    seeds["sb-forge-root0"] = seed(1, patch(
        new * 4096 + 136, struct.pack("<Q", btree[-1]), RESEAL))
    seeds["sb-forge-next-id"] = seed(1, patch(
        new * 4096 + 264 + 8, struct.pack("<Q", 2), RESEAL))
    for i, n in enumerate(leaves[:3] + inner[:2]):
        base = n * 4096
        kind = "leaf" if n in leaves else "inner"
        seeds[f"node{n}-{kind}-bitflip"] = seed(0, patch(base + 300,
                                                        b"\x10", XOR))
        seeds[f"node{n}-{kind}-nr-entries"] = seed(
            i & 1, patch(base + 40, struct.pack("<H", 0xffff), RESEAL))
        seeds[f"node{n}-{kind}-key-size"] = seed(
            1, patch(base + 44, struct.pack("<H", 300), RESEAL))
        seeds[f"node{n}-{kind}-level"] = seed(
            0, patch(base + 36, struct.pack("<HH", 0, 7), RESEAL))
        seeds[f"node{n}-{kind}-keys-unsorted"] = seed(
            1, patch(base + 64, b"\xff" * 8, RESEAL))
    if btree:
        n = btree[0]
        seeds[f"node{n}-zeroed"] = seed(1, patch(n * 4096, bytes(32)))
    if len(btree) > 1:
        a, b = btree[0], btree[1]
        seeds[f"node{a}-misdirect-from-{b}"] = seed(
            1, patch(a * 4096, img[b * 4096:b * 4096 + 64]))
        seeds[f"node{a}-blocknr-forged"] = seed(0, patch(
            a * 4096 + 8, struct.pack("<Q", b), RESEAL))
    if data:
        seeds["data-overwritten"] = seed(1, patch(data[0] * 4096,
                                                 b"\xee" * 64))
    hostile(img, new, data, seeds)
    # raw images, not patches
    seeds["raw-truncated"] = img[:16384]
    seeds["raw-garbage"] = bytes(range(256)) * 4
    os.makedirs(outdir, exist_ok=True)
    for name, b in sorted(seeds.items()):
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(b)
    print(f"{len(seeds)} seeds in {outdir} ({len(btree)} btree nodes, "
          f"{len(data)} data pages in the base image)")


if __name__ == "__main__":
    main()
