"""Two websocket viewers of one chardev (clients=2,history=): both get the history, pings
are answered, only the first one's input is heard, both get live output. argv: URL.
Prints one line per step; the Rust test checks them and writes the live output."""
import asyncio
import sys

import websockets


async def until(ws, needle):
    got = b""
    while needle not in got:
        msg = await asyncio.wait_for(ws.recv(), 10)
        got += msg if isinstance(msg, bytes) else msg.encode()
    return got


async def main(url):
    v1 = await websockets.connect(url, subprotocols=["binary"])
    v2 = await websockets.connect(url, subprotocols=["binary"])
    for name, v in (("v1", v1), ("v2", v2)):
        got = await until(v, b"boot-output\r\n")
        print(f"history {name} {got.startswith(b'boot-output')}", flush=True)
    pong = await v2.ping()
    await asyncio.wait_for(pong, 10)
    print("pong", flush=True)
    await v2.send(b"from-v2")
    # The web console page's size message: taken as the session's size, not as input.
    await v1.send('{"type":"resize","cols":100,"rows":30}')
    await v1.send(b"from-v1")
    for name, v in (("v1", v1), ("v2", v2)):
        await until(v, b"live-output")
        print(f"live {name}", flush=True)
    await v1.close()
    await v2.close()
    print("ok", flush=True)


asyncio.run(main(sys.argv[1]))
