"""A reader that stops reading: the peer a test kills in the middle of a transfer.

Usage: stalled_reader.py unix:PATH | tcp:PORT. Connects, reads 64 KiB of what the chardev
sends, prints "stalled", and then reads nothing more, so that the chardev's writer waits
on a full socket until the test SIGKILLs this process (or 60 s pass).
"""
import socket
import sys
import time

socket.setdefaulttimeout(10)  # every wait bounded, as the test's own
kind, where = sys.argv[1].split(":", 1)
if kind == "unix":
    chardev = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    chardev.connect(where)
else:
    chardev = socket.create_connection(("127.0.0.1", int(where)))
got = 0
while got < 65536:
    chunk = chardev.recv(65536 - got)
    if not chunk:
        sys.exit("the chardev hung up after %d bytes" % got)
    got += len(chunk)
print("stalled", flush=True)
time.sleep(60)
