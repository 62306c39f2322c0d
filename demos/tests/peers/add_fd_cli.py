"""`-add-fd` on the command line, as libvirt starts QEMU: an inherited fd (a log file opened
by the parent) goes into fd set 2, the guest's serial port writes into it through
`-chardev file,path=/dev/fdset/2`, and QMP lists the set. Prints "ok".

usage: add_fd_cli.py SERIAL_CONSOLE WORKDIR
"""
import json
import os
import socket
import subprocess
import sys
import time

BIN, WORKDIR = sys.argv[1], sys.argv[2]
log = f"{WORKDIR}/serial.log"
sock = f"{WORKDIR}/qmp.sock"
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(fd, 7)
os.close(fd)
os.set_blocking(7, False)
child = subprocess.Popen(
    [BIN, "-nodefaults", "-add-fd", "fd=7,set=2,opaque=serial.log",
     "-chardev", "file,id=f,path=/dev/fdset/2,append=on", "-serial", "chardev:f",
     "-qmp", f"unix:{sock},server=on,wait=off"],
    pass_fds=[7], stdin=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(sock)
            break
        except OSError:
            assert time.monotonic() < deadline, "the QMP socket listens"
            time.sleep(0.01)
    f = s.makefile("rb")
    assert "QMP" in json.loads(f.readline())
    for cmd in ["qmp_capabilities", "query-fdsets"]:
        s.sendall(json.dumps({"execute": cmd}).encode() + b"\r\n")
        reply = json.loads(f.readline())
    sets = reply["return"]
    assert len(sets) == 1 and sets[0]["fdset-id"] == 2, sets
    assert sets[0]["fds"][0]["opaque"] == "serial.log", sets
    # The seed: the parent's copy (shared description) is blocking now, O_APPEND as asked.
    import fcntl
    flags = fcntl.fcntl(7, fcntl.F_GETFL)
    assert not flags & os.O_NONBLOCK and flags & os.O_APPEND, hex(flags)
    # The guest's shell greets its serial port; the greeting lands in the file.
    while os.path.getsize(log) == 0:
        assert time.monotonic() < deadline, "the guest writes to its serial port"
        time.sleep(0.01)
    print("ok")
finally:
    child.kill()
    child.wait()
