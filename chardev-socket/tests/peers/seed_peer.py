"""The seed's peer, as libvirt was: pass one end of a socketpair with O_NONBLOCK set.

Connects to the chardev's unix socket, sends one byte with the fd (socket.send_fds), waits
for the chardev's "got it", reports whether its own copy is still non-blocking (O_NONBLOCK
lives on the shared open file description), then reads slowly from the other end and
checks every byte of the stream the frontend writes into the passed fd.
"""
import os
import socket
import sys
import time

path, total = sys.argv[1], int(sys.argv[2])
ours, theirs = socket.socketpair()
os.set_blocking(theirs.fileno(), False)
chardev = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
chardev.connect(path)
socket.send_fds(chardev, [b"F"], [theirs.fileno()])
assert chardev.recv(6) == b"got it"
print("nonblocking-after=%s" % (not os.get_blocking(theirs.fileno())), flush=True)
theirs.close()

expected = bytes((i % 251) ^ ((i >> 16) & 0xFF) for i in range(65536 * 2))
got = 0
bad = -1
while got < total:
    chunk = ours.recv(4096)
    if not chunk:
        break
    for j, b in enumerate(chunk):
        i = got + j
        if b != (i % 251) ^ ((i >> 16) & 0xFF) and bad < 0:
            bad = i
    got += len(chunk)
    if got % (1 << 20) < 4096:
        time.sleep(0.002)  # a slow reader: the writer must wait, not fail
print("received=%d first-bad=%d" % (got, bad), flush=True)
