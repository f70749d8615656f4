#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Record real NBD client sessions for fuzz-nbd's corpus (corpus/nbd/).

usage: capture-nbd.py THINVOL OUTDIR

Creates a pool shaped like fuzz.h's base pool (4 KiB blocks, 16-byte
blobs, volumes alpha, alpha-snap (read-only snapshot), beta, delta2), runs
`thinvol serve` on it, and puts a proxy in front of its NBD socket that
writes every byte a client sends on a connection to OUTDIR/cap-NAME-N:
the input fuzz-nbd replays.  Then it runs real clients through the proxy:
nbdinfo (--list, --map, --can), nbdsh/libnbd (GO with structured replies
and meta contexts; pread, pwrite, flush, trim, zero, block_status, cache,
and FUA), and qemu-io.  Needs /usr/bin/nbdinfo, nbdsh, qemu-io.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

tv, outdir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
tmp = tempfile.mkdtemp(prefix="tvcap.")
pool = os.path.join(tmp, "p.pool")
upstream = pool + ".nbd.sock"
proxy = os.path.join(tmp, "proxy.sock")
env = dict(os.environ, PATH="/usr/bin:/bin:" + os.environ["PATH"])
current = ["none"]
counter = {}


def run(*args, check=True):
    return subprocess.run(list(args), env=env, check=check,
                          stdout=subprocess.DEVNULL)


def pump(src, dst, record):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if record is not None:
                record.append(b)
            dst.sendall(b)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve_proxy(ls):
    while True:
        c, _ = ls.accept()
        u = socket.socket(socket.AF_UNIX)
        u.connect(upstream)
        name = current[0]
        counter[name] = counter.get(name, 0) + 1
        path = os.path.join(outdir, f"cap-{name}-{counter[name]}")
        rec = []

        def conn(c=c, u=u, rec=rec, path=path):
            t = threading.Thread(target=pump, args=(u, c, None))
            t.start()
            pump(c, u, rec)
            t.join()
            c.close()
            u.close()
            with open(path, "wb") as f:
                f.write(b"".join(rec))
        threading.Thread(target=conn, daemon=True).start()


def uri(name):
    return f"nbd+unix:///{name}?socket={proxy}"


def nbdsh(name, export, script):
    current[0] = name
    # h starts unconnected; a script that needs no setup connects here
    pre = "URI = %r\n" % uri(export)
    subprocess.run(["/usr/bin/nbdsh", "-c", pre + script], env=env,
                   check=True)


def main():
    os.makedirs(outdir, exist_ok=True)
    run(tv, "pool", "create", pool, "--size", "4M", "--block-size", "4K",
        "--blob-size", "16")
    run(tv, "create", pool, "alpha", "--size", "1M")
    run(tv, "snapshot", pool, "alpha", "alpha-snap", "--read-only")
    run(tv, "create", pool, "beta", "--size", "512K")
    run(tv, "create", pool, "gamma", "--size", "256K")
    run(tv, "delete", pool, "gamma")
    run(tv, "create", pool, "delta2", "--size", "2M")
    srv = subprocess.Popen([tv, "serve", pool, "--foreground"], env=env)
    for _ in range(100):
        if os.path.exists(upstream):
            break
        time.sleep(0.1)
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(proxy)
    ls.listen(8)
    threading.Thread(target=serve_proxy, args=(ls,), daemon=True).start()
    try:
        current[0] = "nbdinfo-list"
        run("/usr/bin/nbdinfo", "--list", uri(""))
        current[0] = "nbdinfo-map"
        run("/usr/bin/nbdinfo", "--map", uri("alpha"))
        current[0] = "nbdinfo-map-snap"
        run("/usr/bin/nbdinfo", "--map", uri("alpha-snap"))
        current[0] = "nbdinfo-info"
        run("/usr/bin/nbdinfo", "--json", uri("beta"))
        current[0] = "nbdinfo-nonexistent"
        run("/usr/bin/nbdinfo", uri("nosuch"), check=False)
        nbdsh("rw-all-cmds", "alpha", """
h.add_meta_context("base:allocation")
h.connect_uri(URI)
buf = b"\\x5a" * 8192
h.pwrite(buf, 0)
h.pwrite(buf, 65536, nbd.CMD_FLAG_FUA)
h.flush()
assert h.pread(8192, 0) == buf
h.trim(4096, 0)
h.zero(8192, 16384)
h.zero(4096, 65536, nbd.CMD_FLAG_NO_HOLE)
if h.can_cache():
    h.cache(4096, 0)
def cb(ctx, off, ents, err):
    pass
h.block_status(1 << 20, 0, cb)
h.block_status(65536, 0, cb, nbd.CMD_FLAG_REQ_ONE)
h.shutdown()
""")
        nbdsh("old-replies", "beta", """
h.set_request_structured_replies(False)
h.connect_uri(URI)
h.pwrite(b"\\x11" * 512, 512)
h.pread(4096, 0)
h.flush()
h.shutdown()
""")
        nbdsh("meta-contexts", "delta2", """
h.add_meta_context("base:allocation")
h.add_meta_context("qemu:dirty-bitmap:x")
h.set_opt_mode(True)
h.connect_uri(URI)
h.opt_list_meta_context(lambda name: 0)
h.opt_info()
h.opt_go()
h.block_status(2 << 20, 0, lambda *a: 0)
h.shutdown()
""")
        nbdsh("opt-mode", "", """
h.set_opt_mode(True)
h.connect_uri(URI)
h.opt_list(lambda n, d: 0)
h.set_export_name("alpha-snap")
h.opt_info()
h.set_export_name("nosuch")
try:
    h.opt_info()
except nbd.Error:
    pass
h.opt_abort()
""")
        nbdsh("read-only-writes", "alpha-snap", """
h.connect_uri(URI)
for f in (lambda: h.pwrite(b"x" * 512, 0), lambda: h.trim(4096, 0),
          lambda: h.zero(4096, 0)):
    try:
        f()
    except nbd.Error:
        pass
h.pread(512, (1 << 20) - 512)
try:
    h.pread(512, 1 << 20)
except nbd.Error:
    pass
h.shutdown()
""")
        current[0] = "qemu-io"
        run("/usr/bin/qemu-io", "-f", "raw", "-c", "write -P 0xab 0 64k",
            "-c", "read -P 0xab 0 64k", "-c", "discard 0 4k", "-c",
            "write -z 8k 8k", "-c", "flush", "-c", "map", uri("beta"))
        time.sleep(0.5)
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    for f in sorted(os.listdir(outdir)):
        print(f, os.path.getsize(os.path.join(outdir, f)))


if __name__ == "__main__":
    main()
