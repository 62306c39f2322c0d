"""Both ends of an fd pass-through test: connects to the relay's two unix sockets, sends a
pipe's write end into one with socket.send_fds, receives it from the other with
socket.recv_fds, writes through the received copy and reads it from the pipe. Prints "ok".
"""
import os
import socket
import sys
import time


def connect(path):
    for _ in range(200):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.settimeout(10)
            return s
        except OSError:
            time.sleep(0.02)
    raise SystemExit("cannot connect to " + path)


a, b = connect(sys.argv[1]), connect(sys.argv[2])
r, w = os.pipe()
socket.send_fds(a, [b"F"], [w])
os.close(w)
msg, fds, _, _ = socket.recv_fds(b, 16, 4)
assert msg == b"F" and len(fds) == 1, (msg, fds)
os.write(fds[0], b"through the relay")
os.close(fds[0])
assert os.read(r, 100) == b"through the relay"
print("ok")
