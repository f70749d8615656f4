# The daemon from a test's Python: a control request, a `thinvol`
# command, an NBD connection to an export, with the daemon and pool that
# lib.sh exported (TV_CSOCK, TV_NSOCK, THINVOL).  Imported, not run
# (PYTHONPATH holds tests/nbd).
import json
import os
import socket
import subprocess

import nbd


class CtlClosed(Exception):
    """The daemon closed the control socket before replying."""


def ctl(op, args=None, timeout=30):
    """One control request (docs/control.md); its reply, parsed."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(os.environ["TV_CSOCK"])
    req = {"v": 1, "id": 1, "op": op}
    if args is not None:
        req["args"] = args
    s.sendall((json.dumps(req) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(1 << 16)
        if not d:
            s.close()
            raise CtlClosed("control socket closed during %s" % op)
        buf += d
    s.close()
    return json.loads(buf)


def tv(*args):
    """`thinvol ARGS`: the CompletedProcess, output as text."""
    return subprocess.run([os.environ["THINVOL"]] + list(args),
                          capture_output=True, text=True, timeout=60)


def connect(name, strict=True):
    """An NBD connection to export name on the daemon's Unix socket;
    strict False: libnbd's client-side checks off (set_strict_mode(0)),
    so that the server's answer to what they refuse is seen."""
    h = nbd.NBD()
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, os.environ["TV_NSOCK"]))
    return h
