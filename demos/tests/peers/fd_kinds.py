"""Every fd kind libvirt passes (a listening socket, a connected socket, a pipe, an append-mode
file), each sent O_NONBLOCK, through getfd and through add-fd, both ways clients pass fds: on
the same sendmsg as the command (libvirt, ids libvirt-N, CR LF), and with the qemu.qmp
library's send_fd_scm before the command. The seed: each arrives blocking, and since the open
file description is shared, the sender's copy shows O_NONBLOCK cleared. Prints one JSON object
of the sender's blocking state per case, so that QEMU and serial-console can be compared.

usage: fd_kinds.py QMP_SOCKET WORKDIR
"""
import json
import os
import socket
import sys

from qemu.qmp.legacy import QEMUMonitorProtocol

SOCK, WORKDIR = sys.argv[1], sys.argv[2]
COMMANDS = ["getfd", "add-fd"]
serial = 0


def kinds():
    """One fd of each kind, O_NONBLOCK, and what keeps their other ends alive."""
    global serial
    serial += 1
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(f"{WORKDIR}/l{serial}.sock")
    listener.listen(1)
    a, b = socket.socketpair()
    r, w = os.pipe()
    f = os.open(f"{WORKDIR}/append{serial}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    fds = {"listening socket": listener.fileno(), "connected socket": a.fileno(), "pipe": w,
           "append file": f}
    for fd in fds.values():
        os.set_blocking(fd, False)
    return fds, [listener, a, b, r]


def args(command, n, kind):
    return {"fdname": f"fd{n}"} if command == "getfd" else {"opaque": kind}


def libvirt_way(result):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(SOCK)
    f = s.makefile("rb")
    n = 0

    def call(execute, arguments=None, fds=()):
        nonlocal n
        n += 1
        msg = {"execute": execute, "id": f"libvirt-{n}"}
        if arguments is not None:
            msg["arguments"] = arguments
        socket.send_fds(s, [json.dumps(msg).encode() + b"\r\n"], list(fds))
        while True:
            reply = json.loads(f.readline())
            if "event" not in reply:
                return reply

    assert "QMP" in json.loads(f.readline())
    call("qmp_capabilities")
    for command in COMMANDS:
        fds, keep = kinds()
        for kind, fd in fds.items():
            reply = call(command, args(command, n, kind), [fd])
            assert "return" in reply, (command, kind, reply)
            result[f"{command}, same sendmsg, {kind}"] = os.get_blocking(fd)
    f.close()
    s.close()


def qemu_qmp_way(result):
    qmp = QEMUMonitorProtocol(SOCK)
    qmp.connect(negotiate=True)
    n = 100
    for command in COMMANDS:
        fds, keep = kinds()
        for kind, fd in fds.items():
            n += 1
            qmp.send_fd_scm(fd=fd)
            reply = qmp.cmd_raw(command, args(command, n, kind))
            assert "return" in reply, (command, kind, reply)
            result[f"{command}, send_fd_scm, {kind}"] = os.get_blocking(fd)
    qmp.close()


result = {}
libvirt_way(result)
qemu_qmp_way(result)
print(json.dumps(result, sort_keys=True))
