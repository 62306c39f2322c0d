"""Receives a byte stream with fds from a chardev (socket.recv_fds) and proves the fds work.

Usage: recv_fds.py PATH TOTAL. Connects to the chardev's unix socket and waits for a line
on stdin before reading, so that the chardev's first sendmsg finds the socket buffer small
and sends only part of its buffer. Then reads TOTAL bytes with recv_fds, noting the byte
offset at which each batch of fds arrived, and checks the bytes (i % 251). With the fds: the
first (a pipe's write end) gets "written by the peer", the second (a file) is read from its
start. Prints its findings, one per line, closes everything and exits.
"""
import os
import socket
import sys

socket.setdefaulttimeout(10)  # every wait bounded, as the test's own
path, total = sys.argv[1], int(sys.argv[2])
chardev = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
chardev.connect(path)
sys.stdin.readline()

expected = bytes(range(251)) * (total // 251 + 1)
got = 0
bad = -1
batches = []
fds = []
truncated = False
while got < total:
    data, new_fds, flags, _ = socket.recv_fds(chardev, 1 << 16, 16)
    if not data:
        break
    if new_fds:
        batches.append("%d:%d" % (got, len(new_fds)))
        fds.extend(new_fds)
    truncated |= bool(flags & socket.MSG_CTRUNC)
    if bad < 0 and data != expected[got:got + len(data)]:
        bad = got + next(i for i, (a, b) in enumerate(zip(data, expected[got:])) if a != b)
    got += len(data)

print("bytes=%d first-bad=%d truncated=%s" % (got, bad, truncated))
print("fd-batches=%s" % ",".join(batches))
if len(fds) >= 2:
    os.write(fds[0], b"written by the peer")
    print("file=%s" % os.pread(fds[1], 100, 0).decode())
for fd in fds:
    os.close(fd)
chardev.close()
