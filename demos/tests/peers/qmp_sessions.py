"""Session control over QMP with the qemu.qmp library: serial-console's serial port is a
unix server with clients=3,history=64k; two viewers connect; the vendor-prefixed commands
list them, read the history (twice, not drained), make the second the writer and end the
first; the session events arrive. argv: QMP socket, serial socket. Prints "ok" at the end.
"""
import asyncio
import os
import socket
import sys

from qemu.qmp import ExecuteError, QMPClient

P = "__com.example_"
OPENED = "__COM.EXAMPLE_CHARDEV_SESSION_OPENED"
CLOSED = "__COM.EXAMPLE_CHARDEV_SESSION_CLOSED"


def read_until(sock, needle, limit=5.0):
    sock.settimeout(limit)
    got = b""
    while needle not in got:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"closed before {needle!r}; got {got!r}")
        got += chunk
    return got


async def event(qmp, name):
    while True:
        ev = await asyncio.wait_for(qmp.events.get(), 5)
        if ev["event"] == name:
            return ev["data"]


async def main(qmp_path, serial_path):
    qmp = QMPClient("sessions")
    await qmp.connect(qmp_path)
    names = {c["name"] for c in await qmp.execute("query-commands")}
    for c in ("chardev-sessions", "chardev-session-disconnect", "chardev-session-set-writer", "chardev-history-read"):
        assert P + c in names, (c, sorted(names))

    v1 = socket.socket(socket.AF_UNIX)
    v1.connect(serial_path)
    first = await event(qmp, OPENED)
    assert first == {"id": "serial0", "session": 1, "peer": f"unix:pid={os.getpid()}", "role": "writer"}, first
    v2 = socket.socket(socket.AF_UNIX)
    v2.connect(serial_path)
    second = await event(qmp, OPENED)
    assert (second["session"], second["role"]) == (2, "viewer"), second

    # Both get the guest's prompt (the serial port opening wakes the guest).
    for v in (v1, v2):
        read_until(v, b"$ ")
    sessions = await qmp.execute(P + "chardev-sessions", {"id": "serial0"})
    assert [(s["session"], s["role"]) for s in sessions] == [(1, "writer"), (2, "viewer")], sessions
    for s in sessions:
        for key in ("peer", "since", "sent", "queued", "dropped", "input-dropped", "writes"):
            assert key in s, (key, s)
        assert s["sent"] > 0 and s["dropped"] == 0, s

    # The history: read twice, the same both times (not drained).
    h1 = await qmp.execute(P + "chardev-history-read", {"id": "serial0"})
    h2 = await qmp.execute(P + "chardev-history-read", {"id": "serial0"})
    assert "$ " in h1 and h1 == h2, (h1, h2)

    # The second viewer becomes the writer: the guest hears it, and both see the answer.
    await qmp.execute(P + "chardev-session-set-writer", {"id": "serial0", "session": 2})
    v1.sendall(b"echo not-heard\r")
    v2.sendall(b"echo heard-from-two\r")
    for v in (v1, v2):
        got = read_until(v, b"heard-from-two\r\n")
        assert b"not-heard" not in got, got

    # The first is ended: its peer sees the end, the event says why.
    await qmp.execute(P + "chardev-session-disconnect", {"id": "serial0", "session": 1})
    v1.settimeout(5)
    rest = b""
    while True:
        chunk = v1.recv(4096)
        if not chunk:
            break
        rest += chunk
    closed = await event(qmp, CLOSED)
    assert (closed["session"], closed["reason"]) == (1, "disconnect"), closed

    # Errors name what is wrong.
    try:
        await qmp.execute(P + "chardev-session-disconnect", {"id": "serial0", "session": 9})
        raise AssertionError("an unknown session was accepted")
    except ExecuteError as e:
        assert e.error.error.desc == "chardev 'serial0' has no session 9", e.error.error.desc
    await qmp.execute("chardev-add", {"id": "n0", "backend": {"type": "null", "data": {}}})
    try:
        await qmp.execute(P + "chardev-sessions", {"id": "n0"})
        raise AssertionError("a null chardev has no sessions")
    except ExecuteError as e:
        assert e.error.error.desc.startswith("chardev 'n0' cannot show or steer sessions"), e.error.error.desc
    # query-chardev carries the counters as a downstream member. qemu.qmp takes the reply
    # as it is; a strict QAPI-shaped reading (ChardevInfo's members, their types, and only
    # downstream-prefixed members besides, which QMP clients must ignore) accepts it too.
    infos = await qmp.execute("query-chardev")
    for info in infos:
        assert isinstance(info["label"], str) and isinstance(info["filename"], str), info
        assert isinstance(info["frontend-open"], bool), info
        extra = set(info) - {"label", "filename", "frontend-open"}
        assert all(k.startswith("__") for k in extra), extra
    serial = next(i for i in infos if i["label"] == "serial0")
    counters = serial[P + "counters"]
    for key in ("bytes-in", "bytes-out", "dropped-overflow", "dropped-viewers", "dropped-backlog",
                "dropped-log",
                "blocked-ns", "connections", "fds-received", "fds-closed"):
        assert isinstance(counters[key], int), (key, counters)
    assert counters["connections"] == 2 and counters["bytes-out"] > 0, counters
    assert counters["bytes-in"] >= len(b"echo heard-from-two\r"), counters
    await qmp.disconnect()
    print("ok")


asyncio.run(main(sys.argv[1], sys.argv[2]))
