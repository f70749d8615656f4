#!/usr/bin/python3
# soak.py - the soak test: hours (or seconds) of random management and
# verified I/O against `thinvol serve`, with the daemon killed at random.
#
#   THINVOL=build/src/cli/thinvol SOAK_SECONDS=300 /usr/bin/python3 tests/soak/soak.py
#   (`make soak SOAK_SECONDS=...`; TV_SEED=N replays the same choices)
#
# One pool in a temporary directory.  Each round starts the daemon and
# then runs, until the daemon is killed:
#
#   - SOAK_CLIENTS client threads (default 3), each owning two volumes and
#     driving them through libnbd (one connection per volume): writes of
#     random data (1 B to 256 KiB, aligned and not, whole 64 KiB blocks),
#     write-zeroes, sector-aligned trims, flushes, reads compared with
#     the model, and through the command: snapshots of its own volumes
#     (whose content must then equal the model exactly, forever), deletes
#     of those snapshots, resizes of its volumes.  The model keeps every
#     byte as last written ("cur"), as of the last completed flush ("dur"),
#     and the writes since then ("pending").
#   - a management thread: thinvol create / snapshot / rename / resize /
#     delete / batch (2-4 operations at once) on volumes of its own, some of
#     which it fills with data through NBD before deleting them (so freed
#     blocks full of old data are handed to the clients' volumes, whose
#     fresh blocks must read as zeroes).
#
# After 0.5 to 6 s the daemon is SIGKILLed (one round in eight: SIGTERM,
# which must exit 0 and keep every acknowledged write).  Then, with the
# daemon gone, `thinvol check` of the pool must be clean; the daemon
# restarts; and
#   - every byte of every client volume is its flushed value, or one of
#     the values written since the last flush (after SIGTERM: exactly the
#     last value written);
#   - every snapshot is exactly what its volume held when it was taken;
#   - the volumes are exactly those of the model: every volume whose
#     operation succeeded exists with its id and size; an operation the
#     kill interrupted is there entirely or not at all (a batch too);
#   - a volume id is never seen twice (no reuse after delete or crash),
#     and the pool's next id is above every id ever seen.
#
# Management commands must never open the pool themselves while the
# daemon is being killed (the command falls back to opening the pool
# when the control socket does not answer): they name the pool through
# a symbolic link (with one for its control socket beside it), which is
# removed before each kill and put back after the check.
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import nbd
except ImportError:
    print("SKIP: soak: python3 has no nbd module (libnbd's Python binding)")
    sys.exit(77)

TV = os.path.abspath(os.environ["THINVOL"])
SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
NCLIENTS = int(os.environ.get("SOAK_CLIENTS", "3"))
SEED = int(os.environ.get("TV_SEED") or random.SystemRandom().getrandbits(32))
B = 65536
print("soak: seed %d (replay the choices with TV_SEED=%d), %g s, %d clients"
      % (SEED, SEED, SECONDS, NCLIENTS), flush=True)

stats_lock = threading.Lock()
stats = {}


def count(key, n=1):
    with stats_lock:
        stats[key] = stats.get(key, 0) + n


class Fail(Exception):
    pass


class Down(Exception):
    """An operation failed because the daemon was being killed."""


# ---- the pool, the daemon, the command ----

tmp = tempfile.mkdtemp(prefix="tv-soak.", dir=os.environ.get("TMPDIR", "/tmp"))
pool = os.path.join(tmp, "p.pool")
link = os.path.join(tmp, "l")  # what the commands call the pool
nsock = pool + ".nbd.sock"
log_path = os.path.join(tmp, "serve.log")
daemon = None
down = threading.Event()  # set just before a kill
ids_seen = set()  # every volume id ever seen
ids_lock = threading.Lock()


def put_links():
    for src, dst in ((pool, link), (pool + ".ctl.sock", link + ".ctl.sock")):
        if not os.path.lexists(dst):
            os.symlink(src, dst)


def tv(*args, inp=None, check=True):
    """Run a command on the pool (through the link); returns stdout.
    A failure while the daemon is being killed raises Down."""
    args = [a if a != "@" else link for a in args]
    r = subprocess.run([TV] + list(args), input=inp, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        if down.is_set():
            raise Down()
        if check:
            raise Fail("thinvol %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r.stdout


def start_daemon():
    global daemon
    pidfile = os.path.join(tmp, "serve.pid")
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    logf = open(log_path, "a")
    logf.write("== start %s\n" % time.strftime("%T"))
    logf.flush()
    daemon = subprocess.Popen([TV, "serve", pool, "--foreground", "--pidfile", pidfile],
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    logf.close()
    t = time.time()
    while not (os.path.exists(pidfile) and os.path.exists(nsock) and os.path.exists(pool + ".ctl.sock")):
        if daemon.poll() is not None:
            raise Fail("thinvol serve exited %d at start" % daemon.returncode)
        if time.time() - t > 30:
            raise Fail("thinvol serve: not ready after 30 s")
        time.sleep(0.02)
    count("daemon starts")


def stop_daemon(sig):
    """Kill the daemon: the commands first lose their way to the pool."""
    global daemon
    down.set()
    os.unlink(link)
    daemon.send_signal(sig)
    try:
        rc = daemon.wait(60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        raise Fail("thinvol serve did not exit 60 s after signal %d" % sig)
    daemon = None
    if sig == signal.SIGTERM:
        if rc != 0:
            raise Fail("thinvol serve exited %d after SIGTERM" % rc)
        for p in (nsock, pool + ".ctl.sock"):
            if os.path.exists(p):
                raise Fail("SIGTERM: %s left behind" % p)
        count("SIGTERM stops")
    else:
        count("SIGKILL crashes")


def check_offline():
    r = subprocess.run([TV, "check", pool, "--json"], capture_output=True, text=True, timeout=600)
    try:
        rep = json.loads(r.stdout)
    except ValueError:
        rep = {}
    if r.returncode != 0 or rep.get("clean") is not True:
        raise Fail("thinvol check: exit %d: %s %s" % (r.returncode, r.stdout.strip(), r.stderr.strip()))
    count("offline checks (clean)")


def list_volumes():
    vols = json.loads(tv("list", "@", "--json"))
    return {v["name"]: (v["id"], v["size"]) for v in vols}


def new_id(i, what):
    with ids_lock:
        if i in ids_seen:
            raise Fail("%s: volume id %d was seen before (reused)" % (what, i))
        ids_seen.add(i)
    count("ids checked new")


def uri(name):
    return "nbd+unix:///%s?socket=%s" % (name, nsock)


def connect(name):
    h = nbd.NBD()
    h.connect_uri(uri(name))
    return h


def read_all(name, size):
    h = connect(name)
    out = bytearray()
    for off in range(0, size, 4 << 20):
        out += h.pread(min(4 << 20, size - off), off)
    h.shutdown()
    count("bytes verified", size)
    return out


# ---- a client: two volumes with a byte model ----

class Vol:
    def __init__(self, name, size):
        self.name, self.size = name, size
        self.cur = bytearray(size)  # as last written
        self.dur = bytearray(size)  # as of the last completed flush
        self.pending = []  # (off, bytes) written since, in order
        self.resize_to = None  # a resize the kill interrupted
        self.snaps = {}  # name -> expected content (committed)
        self.snap_pending = None  # (name, content) the kill interrupted
        self.snap_deleting = None  # a snapshot delete the kill interrupted
        self.inflight = None  # (off, bytes) of a request not answered
        self.h = None

    def set_size(self, size):
        for a in ("cur", "dur"):
            b = getattr(self, a)
            if size < len(b):
                del b[size:]
            else:
                b.extend(bytes(size - len(b)))
        self.size = size


class Client:
    def __init__(self, k):
        self.name = "client%d" % k
        self.k = k
        self.vols = []
        self.error = None
        self.rng = random.Random(SEED * 1000 + k)
        self.nsnap = 0

    def setup(self):
        for j in range(2):
            size = self.rng.choice((4, 6, 8)) << 20
            v = Vol("c%d-%d" % (self.k, j), size)
            i = int(tv("create", "@", v.name, "--size", str(size)))
            new_id(i, "create " + v.name)
            v.id = i
            self.vols.append(v)

    # -- after a restart --
    def verify(self, vols, clean):
        for v in self.vols:
            if v.name not in vols:
                raise Fail("volume %s is gone" % v.name)
            vid, size = vols[v.name]
            if vid != v.id:
                raise Fail("volume %s: id %d, was %d" % (v.name, vid, v.id))
            if size != v.size:
                if v.resize_to != size:
                    raise Fail("volume %s: size %d, expected %d" % (v.name, size, v.size))
                v.set_size(size)
            v.resize_to = None
            got = read_all(v.name, v.size)
            want = v.cur if clean else v.dur
            if clean:
                v.pending = [v.inflight] if v.inflight else []
            v.inflight = None
            if got != want:
                self.explain(v, got, want, clean)
            v.cur[:] = got
            v.dur[:] = got
            v.pending = []
            count("volume verifications")
            if v.snap_pending:
                name, content = v.snap_pending
                v.snap_pending = None
                if name in vols:
                    new_id(vols[name][0], "snapshot " + name + " (interrupted)")
                    v.snaps[name] = (vols[name][0], content)
                    count("interrupted snapshots found committed")
                else:
                    count("interrupted snapshots found absent")
            if v.snap_deleting:
                name = v.snap_deleting
                v.snap_deleting = None
                if name not in vols:
                    del v.snaps[name]
                    count("interrupted snapshot deletes found done")
            for name, (sid, content) in v.snaps.items():
                if name not in vols or vols[name][0] != sid:
                    raise Fail("snapshot %s (#%d) is gone or changed id: %s" % (name, sid, vols.get(name)))
                if read_all(name, len(content)) != content:
                    raise Fail("snapshot %s: content differs from its origin when it was taken" % name)
                count("snapshot verifications")

    def explain(self, v, got, want, clean):
        """got != want: fine if every differing byte is one of the values
        written since the last flush (unless the stop was clean)."""
        allowed = {}
        for off, data in v.pending:
            for i in range(off, min(off + len(data), v.size)):
                allowed.setdefault(i, set()).add(data[i - off])
        bad = first = 0
        for c in range(0, v.size, 4096):
            if got[c:c + 4096] == want[c:c + 4096]:
                continue
            for i in range(c, min(c + 4096, v.size)):
                if got[i] != want[i] and got[i] not in allowed.get(i, ()):
                    if not bad:
                        first = i
                    bad += 1
        if bad:
            raise Fail("volume %s: %d bytes are neither flushed nor written since (first at %d: got %#x, "
                       "flushed %#x, written since %s, cur %#x)%s"
                       % (v.name, bad, first, got[first], v.dur[first], sorted(allowed.get(first, ())),
                          v.cur[first], " after a clean stop" if clean else ""))
        count("unflushed bytes found old or new", sum(1 for i in allowed if got[i] != want[i]))

    # -- a round --
    def run(self):
        try:
            for v in self.vols:
                v.h = connect(v.name)
            while True:
                self.step()
        except Down:
            pass
        except nbd.Error as e:
            if not down.is_set():
                self.error = "%s: %s" % (self.name, e)
        except Exception as e:
            self.error = "%s: %s\n%s" % (self.name, e, traceback.format_exc())
        for v in self.vols:
            if v.h is not None:
                try:
                    v.h.shutdown()
                except nbd.Error:
                    pass
                v.h = None

    def step(self):
        rng = self.rng
        v = rng.choice(self.vols)
        r = rng.random()
        if r < 0.45:  # write
            n = rng.choice((rng.randint(1, 4096), 4096, B, rng.randint(1, 256 << 10), 512 * rng.randint(1, 64)))
            n = min(n, v.size)
            off = rng.randrange(0, v.size - n + 1)
            if rng.random() < 0.5:
                off -= off % 512
            data = rng.randbytes(n)
            v.pending.append((off, data))
            v.inflight = (off, data)
            v.h.pwrite(data, off)
            v.inflight = None
            v.cur[off:off + n] = data
            count("writes")
            count("bytes written", n)
        elif r < 0.53:  # write zeroes
            n = min(rng.randint(1, 300000), v.size)
            off = rng.randrange(0, v.size - n + 1)
            v.pending.append((off, bytes(n)))
            v.inflight = (off, bytes(n))
            v.h.zero(n, off)
            v.inflight = None
            v.cur[off:off + n] = bytes(n)
            count("write-zeroes")
        elif r < 0.58:  # trim, sector-aligned (so it reads as zeroes)
            n = 512 * rng.randint(1, 600)
            n = min(n, v.size)
            off = rng.randrange(0, (v.size - n) // 512 + 1) * 512
            v.pending.append((off, bytes(n)))
            v.inflight = (off, bytes(n))
            v.h.trim(n, off)
            v.inflight = None
            v.cur[off:off + n] = bytes(n)
            count("trims")
        elif r < 0.72:  # flush
            v.h.flush()
            # a flush covers every write on every connection: all volumes
            for w in self.vols:
                w.dur[:] = w.cur
                w.pending = []
            count("flushes")
        elif r < 0.92:  # read and compare
            n = min(rng.choice((rng.randint(1, 8192), B, 1 << 20)), v.size)
            off = rng.randrange(0, v.size - n + 1)
            got = v.h.pread(n, off)
            if got != v.cur[off:off + n]:
                raise Fail("%s: read %d+%d differs from what was written" % (v.name, off, n))
            count("reads compared")
            count("bytes verified", n)
        elif r < 0.955:  # snapshot of my volume, through the command
            if len(v.snaps) >= 3:
                name = rng.choice(sorted(v.snaps))
                v.snap_deleting = name
                tv("delete", "@", name)
                v.snap_deleting = None
                del v.snaps[name]
                count("snapshot deletes")
                return
            self.nsnap += 1
            name = "%s-s%d" % (v.name, self.nsnap)
            content = bytes(v.cur)
            v.snap_pending = (name, content)
            args = ["snapshot", "@", v.name, name] + (["--read-only"] if rng.random() < 0.5 else [])
            out = tv(*args)
            sid = int(out)
            new_id(sid, "snapshot " + name)
            v.snaps[name] = (sid, content)
            v.snap_pending = None
            count("snapshots")
            if rng.random() < 0.3:
                if read_all(name, v.size) != content:
                    raise Fail("snapshot %s differs from its origin" % name)
                count("snapshot verifications")
        else:  # resize my volume (disconnect, resize, reconnect)
            size = rng.choice((4, 6, 8, 10)) << 20
            v.h.shutdown()
            v.h = None
            v.resize_to = size
            tv("resize", "@", v.name, str(size))
            v.set_size(size)
            # pending writes past the end are gone with it
            v.pending = [(o, d[:max(0, size - o)]) for o, d in v.pending if o < size]
            v.resize_to = None
            count("resizes")
            v.h = connect(v.name)


# ---- the management thread: volumes of its own ----

class Manager:
    def __init__(self):
        self.name = "manager"
        self.rng = random.Random(SEED * 1000 + 999)
        self.vols = {}  # name -> [id, size]
        self.n = 0
        self.error = None
        self.uncertain = None  # (description, the model if it happened)

    def fresh(self):
        self.n += 1
        return "m%d" % self.n

    def verify(self, vols):
        mine = {k: list(v) for k, v in vols.items() if k.startswith("m")}
        if self.uncertain:
            what, after = self.uncertain
            self.uncertain = None
            if mine == {k: list(v) for k, v in self.vols.items()}:
                count("interrupted management ops found undone")
            else:
                # it happened: all of it (new ids unknown before: take them)
                for k, v in after.items():
                    if v[0] is None and k in mine:
                        v[0] = mine[k][0]
                        new_id(v[0], what + " (interrupted)")
                if mine != after:
                    raise Fail("after the kill during %s: volumes %s, expected %s or %s (not atomic?)"
                               % (what, mine, self.vols, after))
                self.vols = after
                count("interrupted management ops found done")
        if mine != {k: list(v) for k, v in self.vols.items()}:
            raise Fail("management volumes: %s, expected %s" % (mine, self.vols))

    def run(self):
        try:
            while True:
                self.step()
        except Down:
            pass
        except nbd.Error as e:
            if not down.is_set():
                self.error = "manager: %s" % e
        except Exception as e:
            self.error = "manager: %s\n%s" % (e, traceback.format_exc())

    def attempt(self, what, after, fn):
        self.uncertain = (what, after)
        fn()
        self.uncertain = None
        self.vols = after

    def step(self):
        rng = self.rng
        r = rng.random()
        after = {k: list(v) for k, v in self.vols.items()}
        names = sorted(self.vols)
        if r < 0.25 or len(names) < 2:
            name = self.fresh()
            size = rng.randint(1, 1 << 14) * B
            after[name] = [None, size]

            def do():
                i = int(tv("create", "@", name, "--size", str(size)))
                new_id(i, "create " + name)
                after[name][0] = i
            self.attempt("create " + name, after, do)
            count("creates")
        elif r < 0.40:
            origin = rng.choice(names)
            name = self.fresh()
            after[name] = [None, after[origin][1]]

            def do():
                i = int(tv("snapshot", "@", origin, name))
                new_id(i, "snapshot " + name)
                after[name][0] = i
            self.attempt("snapshot %s of %s" % (name, origin), after, do)
            count("snapshots")
        elif r < 0.55:
            name = rng.choice(names)
            del after[name]
            self.attempt("delete " + name, after, lambda: tv("delete", "@", name, "--force"))
            count("deletes")
        elif r < 0.65:
            name = rng.choice(names)
            size = rng.randint(1, 1 << 14) * B
            after[name][1] = size
            self.attempt("resize %s %d" % (name, size), after, lambda: tv("resize", "@", name, str(size), "--force"))
            count("resizes")
        elif r < 0.72:
            old = rng.choice(names)
            new = self.fresh()
            after[new] = after.pop(old)
            self.attempt("rename %s %s" % (old, new), after, lambda: tv("rename", "@", old, new))
            count("renames")
        elif r < 0.87:
            ops, created, touched = [], [], set()
            for _ in range(rng.randint(2, 4)):
                k = rng.random()
                avail = [x for x in names if x not in touched]
                if k < 0.4 or not avail:
                    name = self.fresh()
                    size = rng.randint(1, 1 << 12) * B
                    ops.append({"op": "create", "name": name, "size": size})
                    after[name] = [None, size]
                    created.append(name)
                else:
                    name = rng.choice(avail)
                    touched.add(name)
                    if k < 0.6:
                        ops.append({"op": "delete", "volume": name})
                        del after[name]
                    elif k < 0.8:
                        size = rng.randint(1, 1 << 12) * B
                        ops.append({"op": "resize", "volume": name, "size": size})
                        after[name][1] = size
                    else:
                        new = self.fresh()
                        ops.append({"op": "rename", "volume": name, "name": new})
                        after[new] = after.pop(name)

            def do():
                res = json.loads(tv("batch", "@", "--json", "--force", inp=json.dumps(ops)))
                for o in res:
                    if o["op"] == "create":
                        new_id(o["id"], "batch create " + o["name"])
                        after[o["name"]][0] = o["id"]
            self.attempt("batch %s" % json.dumps(ops), after, do)
            count("batches")
            count("batch operations", len(ops))
        else:
            # fill a volume with data (to be freed and handed out later)
            name = rng.choice(names)
            size = self.vols[name][1]
            try:
                h = connect(name)
                for _ in range(rng.randint(1, 8)):
                    off = rng.randrange(0, size // B) * B
                    h.pwrite(bytes([rng.randint(1, 255)]) * B, off)
                h.flush()
                h.shutdown()
            except nbd.Error:
                if down.is_set():
                    raise Down()
                raise
            count("management volumes filled")


# ---- the rounds ----

def main():
    rng = random.Random(SEED)
    subprocess.run([TV, "pool", "create", pool, "--size", "4G"], check=True, stdout=subprocess.DEVNULL)
    put_links()
    start_daemon()
    clients = [Client(k) for k in range(NCLIENTS)]
    for c in clients:
        c.setup()
    mgr = Manager()
    t_end = time.time() + SECONDS
    rounds = 0
    clean = False
    while True:
        # verify what the last round left (the first: nothing yet)
        vols = list_volumes()
        for c in clients:
            c.verify(vols, clean)
        mgr.verify(vols)
        known = set()
        for c in clients:
            for v in c.vols:
                known.add(v.name)
                known.update(v.snaps)
        known.update(mgr.vols)
        extra = set(vols) - known
        if extra:
            raise Fail("volumes nobody created: %s" % sorted(extra))
        info = json.loads(tv("pool", "info", "@", "--json"))
        if info["next_id"] <= max(ids_seen):
            raise Fail("pool next_id %d, but id %d exists(ed)" % (info["next_id"], max(ids_seen)))
        if info["state"] != "rw":
            raise Fail("the pool is %s: %s" % (info["state"], info["reason"]))
        if time.time() >= t_end:
            break
        rounds += 1
        # a round: clients and the manager until the kill
        workers = clients + [mgr]
        for w in workers:
            w.error = None
        threads = [threading.Thread(target=w.run, name=w.name) for w in workers]
        down.clear()
        for t in threads:
            t.start()
        time.sleep(min(0.5 + rng.random() * 5.5, max(0.2, t_end - time.time())))
        sig = signal.SIGTERM if rng.random() < 0.125 else signal.SIGKILL
        clean = sig == signal.SIGTERM
        stop_daemon(sig)
        for t, w in zip(threads, workers):
            t.join(120)
            if t.is_alive():
                raise Fail("%s did not stop after the daemon died" % t.name)
            if w.error:
                raise Fail(w.error)
        check_offline()
        put_links()
        start_daemon()
    stop_daemon(signal.SIGTERM)
    check_offline()
    return rounds


rc = 1
t0 = time.time()
try:
    rounds = main()
    rc = 0
except Fail as e:
    print("FAIL: soak (seed %d): %s" % (SEED, e), flush=True)
except Exception:
    print("FAIL: soak (seed %d):" % SEED, flush=True)
    traceback.print_exc()
finally:
    if daemon is not None:
        daemon.kill()
        daemon.wait()
    if rc and os.path.exists(log_path):
        print("---- daemon log (last 30 lines) ----")
        with open(log_path) as f:
            print("".join(f.readlines()[-30:]), end="")
    st = os.statvfs(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
el = time.time() - t0
print("soak: %s after %.0f s (seed %d)" % ("ok" if rc == 0 else "FAILED", el, SEED))
for k in sorted(stats):
    print("  %-40s %d" % (k, stats[k]))
sys.exit(rc)
