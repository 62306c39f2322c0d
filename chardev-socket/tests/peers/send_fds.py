"""Sends messages with fds to a unix socket: each argument is COUNT:TEXT.

For COUNT fds it opens COUNT temporary files whose content is "TEXT#k", so the receiver
can tell which fd came with which message. Waits for the receiver to close.
"""
import os
import socket
import sys
import tempfile

chardev = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
chardev.connect(sys.argv[1])
for spec in sys.argv[2:]:
    count, text = spec.split(":", 1)
    fds = []
    for k in range(int(count)):
        f = tempfile.TemporaryFile()
        f.write(b"%s#%d" % (text.encode(), k))
        f.flush()
        fds.append(os.dup(f.fileno()))
        f.close()
    if fds:
        socket.send_fds(chardev, [text.encode()], fds)
    else:
        chardev.sendall(text.encode())
    for fd in fds:
        os.close(fd)
    # Wait for the receiver's acknowledgement so messages stay separate.
    assert chardev.recv(1) == b"."
chardev.shutdown(socket.SHUT_WR)
chardev.recv(1)
