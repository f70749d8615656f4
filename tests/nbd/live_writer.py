# A writer for test-live.sh, and the checker of a snapshot taken while it
# ran.
#   live_writer.py write URI DIR BLOCKS   until DIR/stop exists, then
#       flush and read every block back; exit 1 on a difference
#   live_writer.py snap URI DIR BLOCKS BEFORE AFTER
#       the snapshot at URI holds, for every block, a write that completed
#       at or after the last one logged as complete in BEFORE (the log as
#       it was just before the snapshot was requested) and none issued
#       after the ones logged in AFTER (the log just after it returned);
#       each block is whole (one write's content)
# Each write is one 64 KiB block: an 16-byte header (block, sequence
# number) and bytes derived from both.  4 writes are in flight at once,
# to distinct blocks.  DIR/log gets "I seq block" before a write is sent
# and "C seq block" once it completed.
import os
import random
import struct
import sys

import nbd

B = 65536
mode, uri, d, blocks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def content(block, seq):
    r = random.Random(block * 1000003 + seq)
    return struct.pack(">QQ", block, seq) + r.randbytes(B - 16)


def parse(buf, block):
    """The sequence number of the write whose content buf is (0: never
    written), or an AssertionError."""
    if buf == bytes(B):
        return 0
    b, seq = struct.unpack(">QQ", buf[:16])
    assert b == block and buf == content(block, seq), "block %d is not one write's content (header %d/%d)" % (block, b, seq)
    return seq


def write():
    log = open(os.path.join(d, "log"), "a", buffering=1)
    h = nbd.NBD()
    h.connect_uri(uri)
    rng = random.Random(1)
    last = {}  # block -> seq of its last completed write
    seq = 0
    inflight = {}  # cookie -> (seq, block)
    while not os.path.exists(os.path.join(d, "stop")):
        busy = {b for s, b in inflight.values()}
        while len(inflight) < 4:
            block = rng.randrange(blocks)
            if block in busy:
                continue
            seq += 1
            log.write("I %d %d\n" % (seq, block))
            c = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(content(block, seq))), block * B)
            inflight[c] = (seq, block)
            busy.add(block)
        h.poll(-1)
        for c in list(inflight):
            if h.aio_command_completed(c):
                s, b = inflight.pop(c)
                last[b] = max(last.get(b, 0), s)
                log.write("C %d %d\n" % (s, b))
    while inflight:
        h.poll(-1)
        for c in list(inflight):
            if h.aio_command_completed(c):
                s, b = inflight.pop(c)
                last[b] = max(last.get(b, 0), s)
    h.flush()
    for b in range(blocks):
        got = parse(h.pread(B, b * B), b)
        assert got == last.get(b, 0), "block %d holds write %d, the last was %d" % (b, got, last.get(b, 0))
    h.shutdown()
    print("writer: %d writes to %d blocks, all read back" % (seq, len(last)))


def snap():
    before, after = sys.argv[5], sys.argv[6]
    done_before = {}
    for line in open(before):
        if not line.endswith("\n"):  # a line being written when copied
            continue
        w = line.split()
        if len(w) == 3 and w[0] == "C":
            done_before[int(w[2])] = max(done_before.get(int(w[2]), 0), int(w[1]))
    issued_after = 0
    for line in open(after):
        if not line.endswith("\n"):  # a line being written when copied
            continue
        w = line.split()
        if len(w) == 3 and w[0] == "I":
            issued_after = max(issued_after, int(w[1]))
    h = nbd.NBD()
    h.connect_uri(uri)
    for b in range(blocks):
        seq = parse(h.pread(B, b * B), b)
        assert seq >= done_before.get(b, 0), \
            "block %d: the snapshot holds write %d, but write %d completed before it was requested" % (b, seq, done_before[b])
        assert seq <= issued_after, \
            "block %d: the snapshot holds write %d, issued after it returned (last issued before: %d)" % (b, seq, issued_after)
    print("snapshot: consistent (%d writes completed before, %d issued by the end)" % (max(done_before.values(), default=0), issued_after))


write() if mode == "write" else snap()
