"""libvirt's chardev hotplug and unplug, eight rounds, against a QMP socket; then 2,000 monitor
connections that pass fds and leave. Prints one JSON line: the target's open fd counts before
and after each part, read from /proc/PID/fd.

usage: libvirt_hotplug.py QMP_SOCKET WORKDIR TARGET_PID
Each round, as libvirt does it: a file chardev whose output and log are fds passed in fd sets
(add-fd, then chardev-add with /dev/fdset/N, chardev-remove, remove-fd), and a socket chardev
on a listening socket libvirt opened itself (getfd, chardev-add with an fd address, a client,
chardev-remove). Every command and its fds go on one sendmsg, with ids libvirt-N and CR LF.
"""
import json
import os
import socket
import sys

SOCK, WORKDIR, PID = sys.argv[1], sys.argv[2], int(sys.argv[3])
TIMEOUT = 10.0


def target_fds():
    return len(os.listdir(f"/proc/{PID}/fd"))


class Monitor:
    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(SOCK)
        self.file = self.sock.makefile("rb")
        self.n = 0
        assert "QMP" in self.line()
        self.cmd("qmp_capabilities")

    def line(self):
        line = self.file.readline()
        if not line:
            raise SystemExit("libvirt_hotplug: the monitor closed the connection")
        return json.loads(line)

    def cmd(self, execute, args=None, fds=()):
        self.n += 1
        msg = {"execute": execute, "id": f"libvirt-{self.n}"}
        if args is not None:
            msg["arguments"] = args
        data = (json.dumps(msg) + "\r\n").encode()
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)
        while True:
            reply = self.line()
            if "event" in reply:
                continue
            assert reply.get("id") == msg["id"], reply
            if "error" in reply:
                raise SystemExit(f"libvirt_hotplug: {execute}: {reply['error']['desc']}")
            return reply["return"]

    def close(self):
        self.file.close()
        self.sock.close()


def file_round(mon, i):
    out = os.open(f"{WORKDIR}/console-{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.open(f"{WORKDIR}/serial-{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.set_blocking(out, False)
    a = mon.cmd("add-fd", {"opaque": f"console-{i}.log"}, [out])["fdset-id"]
    b = mon.cmd("add-fd", {"opaque": f"serial-{i}.log"}, [log])["fdset-id"]
    os.close(out)
    os.close(log)
    mon.cmd("chardev-add", {"id": "charserial0", "backend": {"type": "file", "data": {
        "out": f"/dev/fdset/{a}", "append": True,
        "logfile": f"/dev/fdset/{b}", "logappend": True}}})
    mon.cmd("chardev-remove", {"id": "charserial0"})
    mon.cmd("remove-fd", {"fdset-id": a})
    mon.cmd("remove-fd", {"fdset-id": b})


def socket_round(mon, i):
    path = f"{WORKDIR}/s{i}.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    mon.cmd("getfd", {"fdname": "charserial1-source"}, [listener.fileno()])
    listener.close()
    mon.cmd("chardev-add", {"id": "charserial1", "backend": {"type": "socket", "data": {
        "addr": {"type": "fd", "data": {"str": "charserial1-source"}},
        "server": True, "wait": False}}})
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(TIMEOUT)
    client.connect(path)
    client.sendall(b"hello\r\n")
    mon.cmd("chardev-remove", {"id": "charserial1"})
    client.close()
    os.unlink(path)


def main():
    mon = Monitor()
    before = target_fds()
    for i in range(8):
        file_round(mon, i)
        socket_round(mon, i)
    after = target_fds()
    sets = mon.cmd("query-fdsets")
    mon.close()

    r, w = os.pipe()
    for i in range(2000):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(TIMEOUT)
        s.connect(SOCK)
        if i % 2:
            socket.send_fds(s, [b" "], [w])
        else:
            s.recv(4096)
            socket.send_fds(s, [b'{"execute": "qmp_capabilities"}\r\n'], [w])
        s.close()
    os.close(w)
    mon = Monitor()
    after_connections = target_fds()
    mon.close()
    print(json.dumps({"before": before, "after": after, "fdsets": sets,
                      "after_connections": after_connections}))


main()
