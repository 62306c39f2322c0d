"""A websocket client (the `websockets` library) against a `websocket=on` chardev.

Checks QEMU's handshake headers, sends a binary and a text message, pings, reads what the
chardev's frontend wrote, then closes. Prints one line per check for the Rust test.
"""
import sys

from websockets.sync.client import connect

with connect(sys.argv[1], subprotocols=["binary"], open_timeout=10, close_timeout=10) as ws:
    print("server=%s" % ws.response.headers.get("Server"), flush=True)
    print("subprotocol=%s" % ws.subprotocol, flush=True)
    ws.send(b"world")
    ws.send("text!")
    pong = ws.ping(b"hello")
    print("pong=%s" % pong.wait(timeout=10), flush=True)
    print("got=%s" % ws.recv(timeout=10).decode(), flush=True)
    big = ws.recv(timeout=10)
    print("big=%d" % len(big), flush=True)
print("closed", flush=True)
