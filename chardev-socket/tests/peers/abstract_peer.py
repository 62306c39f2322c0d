"""Talks to a chardev listening on a Linux abstract unix socket name.

Usage: abstract_peer.py NAME tight|padded. "tight" connects to "\\0NAME" (abstract=on,
tight=on); "padded" to "\\0NAME" padded with NULs to the whole 108-byte sun_path
(tight=off). First it tries the other form and reports whether that was refused (the two
are different names). Then it sends "ping", reads until "pong" and reports what it read.
"""
import socket
import sys

SUN_PATH = 108
socket.setdefaulttimeout(10)  # every wait bounded, as the test's own
name, form = sys.argv[1].encode(), sys.argv[2]
tight = b"\0" + name
padded = tight.ljust(SUN_PATH, b"\0")
address, other = (tight, padded) if form == "tight" else (padded, tight)

probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    probe.connect(other)
    print("other-form=connected", flush=True)
except ConnectionRefusedError:
    print("other-form=refused", flush=True)
probe.close()

chardev = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
chardev.connect(address)
chardev.sendall(b"ping")
got = b""
while not got.endswith(b"pong"):
    chunk = chardev.recv(64)
    if not chunk:
        break
    got += chunk
print("got=%s" % got.decode(), flush=True)
chardev.close()
