"""A human monitor on a unix socket: passes a pipe's write end with socket.send_fds on the
same sendmsg as `getfd pipe0`, then `closefd pipe0`, and checks the monitor's copy is closed
(the read end sees EOF). Prints "ok".
"""
import os
import socket
import sys

s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])


def until(marker):
    data = b""
    while marker not in data:
        chunk = s.recv(4096)
        assert chunk, "monitor closed; got %r" % data
        data += chunk
    return data.decode(errors="replace")


assert "monitor - type 'help' for more information" in until(b"(qemu) ")
r, w = os.pipe()
socket.send_fds(s, [b"getfd pipe0\r"], [w])
os.close(w)
reply = until(b"(qemu) ")
assert "Error" not in reply, reply
s.sendall(b"getfd again\r")
assert "Error: No file descriptor supplied via SCM_RIGHTS" in until(b"(qemu) ")
s.sendall(b"closefd pipe0\r")
assert "Error" not in until(b"(qemu) ")
assert os.read(r, 1) == b"", "the monitor still holds the pipe"
s.sendall(b"closefd pipe0\r")
assert "Error: File descriptor named 'pipe0' not found" in until(b"(qemu) ")
print("ok")
