"""The QEMU side of a differential test of fd sets and named fds, driven the way libvirt does.

Usage: python3 libvirt_fds.py QMP_SOCKET WORKDIR TARGET_PID

Connects to a QMP socket (real QEMU, or serial-console), negotiates, then runs a fixed
sequence of steps: add-fd / remove-fd / query-fdsets, /dev/fdset/N paths in file and ringbuf
chardevs, getfd/closefd names as socket chardev addresses (`addr.type = fd`). Each command goes
out as libvirt sends it: compact JSON with "id": "libvirt-N", then "\\r\\n", in one sendmsg that
also carries the fds (socket.send_fds). Every fd handed over is made O_NONBLOCK by the sender
first, so that "the target changed the flags of the shared description" shows on our copy.

One JSON line per step on stdout: {"step", "reply", "effects"}; events are skipped, the reply's
"id" is checked and left out, "reply" is null for a step that only observes. Normalization, so
that two programs compare equal: target fd numbers become "FD1", "FD2", ... (a number in a
successful add-fd reply is a new fd and gets a new token even if the target reused a closed
number; elsewhere a number keeps its token), WORKDIR becomes "$WORKDIR". Effects are what the
sender can see: flags of its copy of a passed fd (blocking, append), file contents, the
target's open fd count minus the count after negotiation, what a target fd points to
(/proc/PID/fd), whether a listener accepts, whether a socketpair/pipe peer is still open, and
the query-chardev entries of the chardevs made here.

A command that fails does not stop the sequence; a reply that does not come within
REPLY_TIMEOUT seconds ends the script with a message and status 1. Status 0: ran to the end.
WORKDIR must be short enough for unix socket paths (< 100 bytes).
"""
import fcntl
import json
import os
import re
import socket
import sys
import time

REPLY_TIMEOUT = 10.0


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(REPLY_TIMEOUT)
        self.sock.connect(path)
        self.buf, self.serial = b"", 0

    def line(self, what):
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                sys.exit(f"libvirt_fds: no reply to {what} within {REPLY_TIMEOUT} s")
            if not data:
                sys.exit(f"libvirt_fds: connection closed while waiting for {what}")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None, fds=()):
        self.serial += 1
        ident = f"libvirt-{self.serial}"
        msg = {"execute": name, **({"arguments": args} if args is not None else {}), "id": ident}
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\r\n"
        sent = socket.send_fds(self.sock, [data], list(fds)) if fds else 0
        self.sock.sendall(data[sent:])
        while True:
            reply = self.line(f"{ident} ({name})")
            if "event" in reply:
                continue
            if reply.get("id") != ident:
                sys.exit(f"libvirt_fds: reply {reply!r} does not answer {ident} ({name})")
            return reply


qmp_path, WORKDIR, PID = sys.argv[1], os.path.abspath(sys.argv[2]), int(sys.argv[3])
os.makedirs(WORKDIR, exist_ok=True)
tokens = {}  # target fd number -> token of the fd that has that number now
made_tokens = []


def token(n, fresh=False):
    if fresh or n not in tokens:
        made_tokens.append(n)
        tokens[n] = f"FD{len(made_tokens)}"
    return tokens[n]


def norm(v, fresh=False):
    if isinstance(v, dict):
        return {k: (token(x, fresh) if k == "fd" and isinstance(x, int) else norm(x, fresh))
                for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x, fresh) for x in v]
    if isinstance(v, str):
        v = re.sub(r"\bfd:(\d+)", lambda m: "fd:" + tokens.get(int(m.group(1)), m.group(1)), v)
        return v.replace(WORKDIR, "$WORKDIR")
    return v


def target_fds():
    return len(os.listdir(f"/proc/{PID}/fd"))


def target_points_to(n):
    """What the target's fd n is: a file name in WORKDIR, "pipe", "socket", or None."""
    try:
        link = os.readlink(f"/proc/{PID}/fd/{n}")
    except (OSError, TypeError):
        return None
    return re.sub(r":\[\d+\]$", "", link.replace(WORKDIR + "/", ""))


def flags(fd):
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    return {"blocking": os.get_blocking(fd), "append": bool(fl & os.O_APPEND)}


def file_state(path):
    with open(path, "rb") as f:
        data = f.read()
    return {"size": len(data), "contents": data.decode(errors="replace")}


def can_connect(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def peer_open(s):
    """True if the other end of socketpair end s is still open somewhere."""
    try:
        return s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True


def pipe_eof(r):
    try:
        return os.read(r, 4096) == b""
    except BlockingIOError:
        return False


def has_reader(w):
    try:
        os.write(w, b"x")
        return True
    except BrokenPipeError:
        return False


def nonblocking(fd):
    os.set_blocking(fd, False)
    return fd


def wfile(name, mode):
    path = os.path.join(WORKDIR, name)
    with open(path, "w") as f:
        f.write("old contents\n")
    return path, nonblocking(os.open(path, mode))


q = Qmp(qmp_path)
if "QMP" not in q.line("the greeting"):
    sys.exit("libvirt_fds: no QMP greeting")
if "return" not in q.cmd("qmp_capabilities"):
    sys.exit("libvirt_fds: qmp_capabilities failed")
BASE = target_fds()
made = set()  # chardev ids this script asked for


def chardevs():
    """query-chardev's entries, without downstream extension members ("__RFQDN_..."), which
    QMP clients ignore and QEMU does not have."""
    r = q.cmd("query-chardev").get("return", [])
    r = [{k: v for k, v in c.items() if not k.startswith("__")} for c in r]
    return sorted((norm(c) for c in r if c.get("label") in made), key=lambda c: c["label"])


def step(name, cmd, args=None, fds=(), effects=None, chardev=False):
    """Send cmd (nothing if None) with fds, print the step. Returns the raw reply."""
    reply = q.cmd(cmd, args, fds) if cmd else None
    added = cmd == "add-fd" and "return" in reply
    shown = reply and norm({k: v for k, v in reply.items() if k != "id"}, fresh=added)
    try:
        eff = effects() if effects else {}  # first: some of them wait for the target
        eff["target_fds"] = target_fds() - BASE
        if added:
            eff["target_fd_is"] = target_points_to(reply["return"].get("fd"))
        if chardev:
            eff["chardevs"] = chardevs()
    except OSError as e:
        eff = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps({"step": name, "reply": shown, "effects": eff}, sort_keys=True), flush=True)
    return reply


def fdsets(name):
    step(name, "query-fdsets")


def fd_of(reply):
    return reply.get("return", {}).get("fd")


step("query-status", "query-status")

# 1. add-fd: errors, automatic ids, explicit ids, opaque, two fds on one message, ordering.
step("add-fd-no-fd", "add-fd")
_, a0 = wfile("a0.txt", os.O_RDONLY)
step("add-fd-auto-1", "add-fd", None, [a0], lambda: {"sender": flags(a0)})
_, a1 = wfile("a1.txt", os.O_RDONLY)
step("add-fd-auto-2", "add-fd", None, [a1])
_, a5 = wfile("a5.txt", os.O_WRONLY)
r5a = step("add-fd-set5-opaque", "add-fd", {"fdset-id": 5, "opaque": "rdonly:/some/path"}, [a5])
_, a5b = wfile("a5b.txt", os.O_RDONLY)
step("add-fd-set5-again", "add-fd", {"fdset-id": 5}, [a5b])
_, an = wfile("neg.txt", os.O_RDONLY)
step("add-fd-negative-id", "add-fd", {"fdset-id": -1}, [an])
_, a7a = wfile("two-first.txt", os.O_RDONLY)
_, a7b = wfile("two-second.txt", os.O_RDONLY)
r7 = step("add-fd-two-fds", "add-fd", {"fdset-id": 7}, [a7a, a7b])
_, a3 = wfile("a3.txt", os.O_RDONLY)
step("add-fd-set3-between", "add-fd", {"fdset-id": 3, "opaque": ""}, [a3])
fdsets("query-fdsets-after-add")
for fd in (a0, a1, a5, a5b, an, a7a, a7b, a3):
    os.close(fd)

# 2. remove-fd: one fd, a whole set, errors, id reuse.
step("remove-fd-one", "remove-fd", {"fdset-id": 5, "fd": fd_of(r5a)})
fdsets("query-fdsets-after-remove-one")
step("remove-fd-set", "remove-fd", {"fdset-id": 0})
fdsets("query-fdsets-after-remove-set")
step("remove-fd-unknown-set", "remove-fd", {"fdset-id": 42})
step("remove-fd-unknown-fd", "remove-fd", {"fdset-id": 1, "fd": 12345})
step("remove-fd-fd-of-other-set", "remove-fd", {"fdset-id": 1, "fd": fd_of(r7)})
step("remove-fd-already-removed", "remove-fd", {"fdset-id": 5, "fd": fd_of(r5a)})
_, ar = wfile("reuse.txt", os.O_RDONLY)
step("add-fd-auto-after-free", "add-fd", None, [ar])
os.close(ar)
fdsets("query-fdsets-before-cleanup")
for s in (0, 1, 3, 5, 7):
    step(f"remove-fd-set{s}", "remove-fd", {"fdset-id": s})
fdsets("query-fdsets-empty")


# 3. /dev/fdset/N in chardevs
def fdset_chardev(tag, setid, path, fd, cid, backend, extra=None, after_add=None):
    """add-fd fd to set setid, chardev-add cid, remove-fd the set, chardev-remove cid."""
    made.add(cid)

    def seen():
        return {"sender": flags(fd), **({"file": file_state(path)} if path else {}),
                **(extra() if extra else {})}
    step(f"{tag}-add-fd", "add-fd", {"fdset-id": setid}, [fd], seen)
    step(f"{tag}-chardev-add", "chardev-add", {"id": cid, "backend": backend}, (), seen, True)
    if after_add:
        after_add()
    step(f"{tag}-remove-fd", "remove-fd", {"fdset-id": setid}, (), seen)
    fdsets(f"{tag}-query-fdsets-while-open")
    step(f"{tag}-chardev-remove", "chardev-remove", {"id": cid}, (), seen, True)
    fdsets(f"{tag}-query-fdsets-after-remove")
    os.close(fd)


def file_backend(setid, append):
    return {"type": "file", "data": {"out": f"/dev/fdset/{setid}", "append": append}}


for tag, setid, mode, append in (("file-append", 10, os.O_WRONLY, True),
                                 ("file-rdwr-append", 11, os.O_RDWR, True),
                                 ("file-trunc", 12, os.O_WRONLY, False),
                                 ("file-rdonly", 13, os.O_RDONLY, True)):
    p, fd = wfile(f"f{setid - 10}.log", mode)
    fdset_chardev(tag, setid, p, fd, f"f{setid - 10}", file_backend(setid, append))

# A set with an O_RDONLY fd, then an O_WRONLY one: the open takes the first whose mode fits.
made.update(("f4", "f5", "f8"))
_, m_ro = wfile("m-ro.log", os.O_RDONLY)
_, m_wo = wfile("m-wo.log", os.O_WRONLY)
mixed = lambda: {"sender_ro": flags(m_ro), "sender_wo": flags(m_wo)}  # noqa: E731
step("mixed-add-fd-rdonly", "add-fd", {"fdset-id": 18}, [m_ro])
step("mixed-add-fd-wronly", "add-fd", {"fdset-id": 18}, [m_wo])
step("mixed-chardev-add", "chardev-add", {"id": "f8", "backend": file_backend(18, True)}, (),
     mixed, True)
step("mixed-chardev-remove", "chardev-remove", {"id": "f8"}, (), mixed, True)
step("mixed-remove-fd", "remove-fd", {"fdset-id": 18})
fdsets("mixed-query-fdsets")
os.close(m_ro)
os.close(m_wo)

step("file-unknown-set", "chardev-add", {"id": "f4", "backend": file_backend(99, True)},
     chardev=True)
step("file-malformed-set", "chardev-add",
     {"id": "f5", "backend": {"type": "file", "data": {"out": "/dev/fdset/abc"}}}, chardev=True)

# libvirt's virtlogd case: a pipe's write end as the file chardev's out.
pr, pw = os.pipe()
nonblocking(pr)
fdset_chardev("pipe-out", 16, None, nonblocking(pw), "f6", file_backend(16, True),
              extra=lambda: {"pipe_eof": pipe_eof(pr)})
step("pipe-out-after-sender-close", None, effects=lambda: {"pipe_eof": pipe_eof(pr)})
os.close(pr)

for tag, setid, cid, append in (("log-append", 14, "r1", True), ("log-trunc", 15, "r2", False)):
    p, fd = wfile(f"{cid}.log", os.O_WRONLY)
    backend = {"type": "ringbuf", "data": {"size": 64, "logfile": f"/dev/fdset/{setid}",
                                           "logappend": append}}
    fdset_chardev(tag, setid, p, fd, cid, backend, after_add=lambda: step(
        f"{tag}-ringbuf-write", "ringbuf-write", {"device": cid, "data": "hello\n"},
        effects=lambda: {"file": file_state(p)}))
# QEMU 7.2 closes a logfile dup with close(), not qemu_close(): those sets never go away, and
# their stale dup numbers catch a later dup that gets the same number.
p, fd = wfile("f7.log", os.O_WRONLY)
fdset_chardev("file-after-logfiles", 17, p, fd, "f7", file_backend(17, True))


# 4. named fds (getfd) as socket chardev addresses
def sock_backend(name, server, wait=None):
    data = {"addr": {"type": "fd", "data": {"str": name}}, "server": server}
    if server or wait is not None:  # libvirt sends "wait" for servers only
        data["wait"] = False if wait is None else wait
    return {"type": "socket", "data": data}


def wait_chardev(cid, connected):
    """Poll query-chardev (bounded) until cid's filename says (dis)connected; its entries."""
    for _ in range(50):
        cur = [c for c in chardevs() if c["label"] == cid]
        if cur and cur[0]["filename"].startswith("disconnected:") != connected:
            break
        time.sleep(0.1)
    return cur


def named_socket(tag, name, fd, cid, server, effects=None):
    made.add(cid)
    step(f"{tag}-getfd", "getfd", {"fdname": name}, [fd], effects)
    step(f"{tag}-chardev-add", "chardev-add", {"id": cid, "backend": sock_backend(name, server)},
         (), effects, True)


lpath = os.path.join(WORKDIR, "l0.sock")
lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lsock.bind(lpath)
lsock.listen(4)
lsock.setblocking(False)
named_socket("listener", "serial0-source", lsock.fileno(), "s0", True,
             lambda: {"sender": flags(lsock.fileno())})
lsock.close()
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.settimeout(2)
step("listener-connected", None, effects=lambda: {
    "connects": client.connect_ex(lpath) == 0, "chardevs": wait_chardev("s0", True)})
client.close()
step("listener-client-gone", None, effects=lambda: {"chardevs": wait_chardev("s0", False)})
step("listener-closefd", "closefd", {"fdname": "serial0-source"})

ours, theirs = socket.socketpair()
theirs.setblocking(False)
step("client-wait-rejected", "chardev-add",
     {"id": "s1", "backend": sock_backend("serial1-source", False, False)})
named_socket("connected", "serial1-source", theirs.fileno(), "s1", False,
             lambda: {"sender": flags(theirs.fileno())})
theirs.close()
step("connected-peer", None, effects=lambda: {"peer_open": peer_open(ours)}, chardev=True)
step("connected-closefd", "closefd", {"fdname": "serial1-source"})

made.update(("s2", "s4"))
step("unknown-name-chardev-add", "chardev-add",
     {"id": "s2", "backend": sock_backend("nosuch", False)}, chardev=True)
step("unknown-name-closefd", "closefd", {"fdname": "nosuch"})
xr, xw = os.pipe()
named_socket("pipe-name", "pipe-source", nonblocking(xr), "s3", False)
step("pipe-name-closefd", "closefd", {"fdname": "pipe-source"})
os.close(xr)
nonblocking(xw)
step("pipe-name-after-sender-close", None, effects=lambda: {"pipe_read_end_open": has_reader(xw)})
os.close(xw)
step("digit-name-chardev-add", "chardev-add", {"id": "s4", "backend": sock_backend("3", False)},
     chardev=True)
step("digit-name-closefd", "closefd", {"fdname": "3"})
ours2, theirs2 = socket.socketpair()
theirs2.setblocking(False)
named_socket("connected-as-server", "conn-source", theirs2.fileno(), "s5", True)
theirs2.close()
step("connected-as-server-closefd", "closefd", {"fdname": "conn-source"},
     effects=lambda: {"peer_open": peer_open(ours2)})
ours2.close()
step("listener-chardev-remove", "chardev-remove", {"id": "s0"},
     effects=lambda: {"connects": can_connect(lpath)}, chardev=True)
step("connected-chardev-remove", "chardev-remove", {"id": "s1"},
     effects=lambda: {"peer_open": peer_open(ours)}, chardev=True)
ours.close()

# 5. getfd corner cases: no fd, a stale fd from an earlier command, digit names, replacement.
step("getfd-no-fd", "getfd", {"fdname": "nothing"})
sr, sw = os.pipe()
nonblocking(sr)
step("unclaimed-fd-on-query-status", "query-status", fds=[nonblocking(sw)],
     effects=lambda: {"sender": flags(sw)})
os.close(sw)
step("getfd-takes-stale-fd", "getfd", {"fdname": "stale"},
     effects=lambda: {"pipe_eof": pipe_eof(sr)})
step("closefd-stale", "closefd", {"fdname": "stale"}, effects=lambda: {"pipe_eof": pipe_eof(sr)})
os.close(sr)
gr, gw = os.pipe()
nonblocking(gr)
step("getfd-digit-name", "getfd", {"fdname": "0abc"}, [nonblocking(gw)])
step("getfd-name", "getfd", {"fdname": "again"}, [gw])
step("getfd-same-name-replaces", "getfd", {"fdname": "again"}, [gw])
os.close(gw)
step("closefd-again", "closefd", {"fdname": "again"}, effects=lambda: {"pipe_eof": pipe_eof(gr)})
os.close(gr)
step("closefd-unknown", "closefd", {"fdname": "never-given"})

# 6. ringbuf without data
made.add("r")
step("ringbuf-no-data", "chardev-add", {"id": "r", "backend": {"type": "ringbuf"}}, chardev=True)

step("final", "query-fdsets", chardev=True)
