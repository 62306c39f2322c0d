"""A well-behaved websocket client (the `websockets` library) that may wait in a server's
listen queue: prints "connecting", then "got=" and the first message once it is served.
Arguments: URL [OPEN_TIMEOUT_SECONDS, default 15]."""
import sys

from websockets.sync.client import connect

print("connecting", flush=True)
with connect(sys.argv[1], subprotocols=["binary"], open_timeout=float(sys.argv[2]) if len(sys.argv) > 2 else 15, close_timeout=5) as ws:
    first = ws.recv(timeout=15)
    if isinstance(first, bytes):
        first = first.decode(errors="replace")
    print("got=%s" % first.splitlines()[0], flush=True)
