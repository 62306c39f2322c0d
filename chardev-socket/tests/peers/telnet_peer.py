"""A raw-socket telnet peer for a `telnet=on` server chardev.

Usage: telnet_peer.py PORT. Reads the server's 15-byte opening negotiation (QEMU's 12 and IAC DO NAWS) and prints it in
hex. Then sends, waiting for a "k" from the chardev between steps:
  1. b"ab" IAC BREAK b"cd" IAC IAC b"e"  (a break between data, an escaped 0xFF)
  2. b"x" IAC                            (a command cut in two by the network)
  3. BREAK b"y"                          (its second half)
Finally reads the 4 bytes the chardev sends for b"z\\xffz" and prints them in hex.
"""
import socket
import sys

IAC, BREAK = b"\xff", b"\xf3"
socket.setdefaulttimeout(10)  # every wait bounded, as the test's own
chardev = socket.create_connection(("127.0.0.1", int(sys.argv[1])))


def read_exactly(n):
    got = b""
    while len(got) < n:
        chunk = chardev.recv(n - len(got))
        if not chunk:
            sys.exit("the chardev hung up after %r" % got)
        got += chunk
    return got


negotiation = read_exactly(15)
print("negotiation=%s" % negotiation.hex(), flush=True)
assert negotiation == bytes.fromhex("fffb01fffb03fffb00fffd00fffd1f"), negotiation
for step in [b"ab" + IAC + BREAK + b"cd" + IAC + IAC + b"e", b"x" + IAC, BREAK + b"y"]:
    chardev.sendall(step)
    assert read_exactly(1) == b"k"
print("escaped=%s" % read_exactly(4).hex(), flush=True)
chardev.close()
