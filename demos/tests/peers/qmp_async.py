"""The qemu.qmp library's async QMPClient against serial-console's QMP monitor.

Checks commands, errors, events and an fd passed with send_fd_scm (the library sends it as
a one-byte message before the getfd command). Prints "ok" at the end.
"""
import asyncio
import os
import sys

from qemu.qmp import ExecuteError, QMPClient


async def main(path):
    qmp = QMPClient("test")
    await qmp.connect(path)
    version = await qmp.execute("query-version")
    assert "qemu" in version and "package" in version, version
    assert (await qmp.execute("query-status"))["status"] == "running"
    names = [c["name"] for c in await qmp.execute("query-commands")]
    for needed in ("getfd", "closefd", "migrate", "query-chardev", "ringbuf-read"):
        assert needed in names, needed

    # Events: stop and cont are announced.
    await qmp.execute("stop")
    await qmp.execute("cont")
    seen = [(await asyncio.wait_for(qmp.events.get(), 5))["event"] for _ in range(2)]
    assert seen == ["STOP", "RESUME"], seen

    # Chardevs from QMP's JSON form.
    await qmp.execute("chardev-add", {"id": "rb0", "backend": {"type": "ringbuf", "data": {"size": 8}}})
    await qmp.execute("ringbuf-write", {"device": "rb0", "data": "abcdefghij"})
    assert await qmp.execute("ringbuf-read", {"device": "rb0", "size": 100}) == "cdefghij"
    labels = {c["label"]: c for c in await qmp.execute("query-chardev")}
    assert labels["rb0"]["filename"] == "ringbuf" and labels["rb0"]["frontend-open"] is False
    await qmp.execute("chardev-remove", {"id": "rb0"})
    try:
        await qmp.execute("chardev-remove", {"id": "rb0"})
        raise AssertionError("removing twice must fail")
    except ExecuteError as e:
        assert e.error.error.desc == "Chardev 'rb0' not found", e.error.error.desc

    # An unknown command and a bad argument keep the session alive.
    try:
        await qmp.execute("no-such-command")
        raise AssertionError("unknown command accepted")
    except ExecuteError as e:
        assert e.error_class == "CommandNotFound", e.error_class
    try:
        await qmp.execute("query-status", {"bogus": 1})
        raise AssertionError("unexpected argument accepted")
    except ExecuteError as e:
        assert e.error.error.desc == "Parameter 'bogus' is unexpected", e.error.error.desc

    # An fd, the library's way: a one-byte message with SCM_RIGHTS, then getfd.
    r, w = os.pipe()
    os.set_blocking(w, False)
    qmp.send_fd_scm(w)
    await qmp.execute("getfd", {"fdname": "pipe0"})
    os.close(w)
    assert not os.get_blocking(r) or True  # the read end was never passed
    await qmp.execute("closefd", {"fdname": "pipe0"})
    try:
        await qmp.execute("closefd", {"fdname": "pipe0"})
        raise AssertionError("closefd twice")
    except ExecuteError as e:
        assert e.error.error.desc == "File descriptor named 'pipe0' not found", e.error.error.desc
    # With every copy of the write end closed (ours, and the monitor's after closefd), the
    # read end sees EOF: the monitor did not leak it.
    assert os.read(r, 1) == b""

    result = await qmp.execute("human-monitor-command", {"command-line": "info status"})
    assert result.strip() == "VM status: running", result
    await qmp.execute("quit")
    try:
        await qmp.disconnect()
    except EOFError:
        pass  # the machine is gone after quit; real QEMU behaves the same
    print("ok")


asyncio.run(main(sys.argv[1]))
