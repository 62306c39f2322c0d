"""A terminal program on a pty: opens PATH with pyserial (which flushes the input as it
opens, like most terminal programs), reads exactly EXPECT bytes and copies them to stdout,
sends SEND, then waits for b"bye" before it closes the port.

usage: pyserial_client.py PATH EXPECT SEND
"""
import sys
import time

import serial

path, expect, send = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
deadline = time.monotonic() + 10
port = serial.Serial(path, baudrate=115200, timeout=0.2)
got = bytearray()
while len(got) < expect and time.monotonic() < deadline:
    got += port.read(expect - len(got))
sys.stdout.buffer.write(bytes(got))
sys.stdout.buffer.flush()
port.write(send)
port.flush()
tail = bytearray()
while b"bye" not in tail and time.monotonic() < deadline:
    tail += port.read(64)
port.close()
sys.exit(0 if len(got) == expect and b"bye" in tail else 1)
