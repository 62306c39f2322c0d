"""Sends messages with fds to a unix socket all at once, then closes: each argument is
COUNT:TEXT, as for send_fds.py (COUNT temporary files whose content is "TEXT#k").

Nothing waits for the receiver, so the messages queue up together in the socket and a slow
reader meets them in pieces; the close comes right after the last one. Prints "sent" once
every message is in the socket.
"""
import os
import socket
import sys
import tempfile

socket.setdefaulttimeout(10)  # every wait bounded, as the test's own
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
chardev.close()
print("sent", flush=True)
