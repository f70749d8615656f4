# A write+flush workload that can be killed at any moment, and its checker.
# Run by test-crash.sh:
#   crash_io.py write  URI STATE LO HI SEED   (runs until the server dies)
#   crash_io.py verify URI STATE LO HI
# The writer owns bytes [LO, HI) of the export.  Each batch is 1-4
# non-overlapping requests (writes of random data at random offsets and
# lengths, write-zeroes, block-aligned trims) in flight at once, then a
# FLUSH.  STATE.journal gets "intent" (fsynced) before the batch is sent
# and "done" after the flush completed and STATE.model (the expected
# content of [LO, HI)) was updated.  The checker, after a restart: every
# byte equals the model, except in the ranges of a batch with an intent
# and no "done", where each byte is its old or its new content; it then
# records what it found there as the model, so the next round goes on
# from the real state.
import os
import random
import sys

import nbd

B = 65536
mode, uri, state, LO, HI = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
journal, model = state + ".journal", state + ".model"


def data_of(op):
    kind, off, n, seed = op
    if kind == "w":
        return random.Random(seed).randbytes(n)
    return bytes(n)  # zero, trim: reads as zeros


def log(line):
    with open(journal, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_journal():
    """(pending ops of an unfinished batch or [], number of done batches)"""
    pending, done = [], 0
    if not os.path.exists(journal):
        return pending, done
    for line in open(journal):
        w = line.split()
        if w[0] == "intent":
            pending = [(k, int(o), int(n), int(s)) for k, o, n, s in (x.split(",") for x in w[1:])]
        elif w[0] in ("done", "resolved"):
            pending = []
            done += w[0] == "done"
    return pending, done


def write():
    rng = random.Random(int(sys.argv[6]))
    if not os.path.exists(model):
        with open(model, "wb") as f:
            f.truncate(HI - LO)
    mf = os.open(model, os.O_RDWR)
    h = nbd.NBD()
    h.connect_uri(uri)
    batches = 0
    while True:
        n = rng.randint(1, 4)
        span = (HI - LO) // n
        ops = []
        for i in range(n):
            lo = LO + i * span
            r = rng.random()
            if r < 0.8:
                ln = rng.choice((rng.randint(1, 4096), rng.randint(1, 256 << 10), B))
                off = lo + rng.randrange(0, span - ln)
                ops.append(("w", off, ln, rng.getrandbits(48)))
            else:  # block-aligned zeroes or trim inside [lo, lo + span)
                ln = rng.randint(1, 8) * B
                first = (lo + B - 1) // B
                last = (lo + span - ln) // B
                off = rng.randint(first, last) * B
                ops.append(("z" if r < 0.9 else "t", off, ln, 0))
        log("intent " + " ".join("%s,%d,%d,%d" % op for op in ops))
        cookies = []
        for op in ops:
            kind, off, ln, seed = op
            if kind == "w":
                cookies.append(h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data_of(op))), off))
            elif kind == "z":
                cookies.append(h.aio_zero(ln, off))
            else:
                cookies.append(h.aio_trim(ln, off))
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c in cookies:
            h.aio_command_completed(c)  # raises on an error reply
        h.flush()
        for op in ops:
            os.pwrite(mf, data_of(op), op[1] - LO)
        os.fsync(mf)
        log("done")
        batches += 1
        if batches % 50 == 0:
            print("writer %s: %d batches" % (state, batches), flush=True)


def verify():
    pending, done = load_journal()
    h = nbd.NBD()
    h.connect_uri(uri)
    got = bytearray()
    for off in range(LO, HI, 8 << 20):
        got += h.pread(min(8 << 20, HI - off), off)
    want = bytearray(open(model, "rb").read())
    assert len(want) == HI - LO
    allowed_new = {}
    for op in pending:
        d = data_of(op)
        for i in range(op[2]):
            allowed_new[op[1] - LO + i] = d[i]
    bad = 0
    first = None
    C = 65536
    for c in range(0, HI - LO, C):
        if got[c:c + C] == want[c:c + C]:
            continue
        for i in range(c, min(c + C, HI - LO)):
            if got[i] != want[i] and allowed_new.get(i) != got[i]:
                bad += 1
                if first is None:
                    first = i
    if bad:
        raise SystemExit("verify %s: %d bytes differ, the first at offset %d (got %#x, flushed %#x, pending %s); "
                         "%d batches done, pending batch %s" % (state, bad, LO + first, got[first], want[first],
                                                                 allowed_new.get(first), done, pending))
    landed = sum(1 for i in allowed_new if got[i] == allowed_new[i] and got[i] != want[i])
    if pending:  # what the unflushed batch left is the state from now on
        with open(model, "wb") as f:
            f.write(got)
            f.flush()
            os.fsync(f.fileno())
        log("resolved")
    h.shutdown()
    print("verify %s: %d batches flushed, %d bytes match; unflushed batch: %d ops, %d new bytes landed"
          % (state, done, HI - LO, len(pending), landed))


write() if mode == "write" else verify()
