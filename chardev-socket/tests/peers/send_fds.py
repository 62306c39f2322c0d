"""Sends messages with fds to a unix socket: each argument is COUNT:TEXT.

For COUNT fds it opens COUNT temporary files whose content is "TEXT#k", so the receiver
can tell which fd came with which message. Waits for the receiver's "." after each message
and for the receiver to close.

With --burst first: sends every message at once without waiting, so that they queue up
together in the socket, closes at once, and prints "sent".
"""
import os
import socket
import sys
import tempfile

socket.setdefaulttimeout(10)  # every wait bounded, as the test's own
args = sys.argv[1:]
burst = args[0] == "--burst"
if burst:
    args = args[1:]
chardev = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
chardev.connect(args[0])
for spec in args[1:]:
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
    if not burst:
        # Wait for the receiver's acknowledgement so messages stay separate.
        assert chardev.recv(1) == b"."
if burst:
    chardev.close()
    print("sent", flush=True)
else:
    chardev.shutdown(socket.SHUT_WR)
    chardev.recv(1)
