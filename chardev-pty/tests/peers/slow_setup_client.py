"""A terminal program that takes its time to set the line up: opens PATH, works on
something else for DELAY_MS, then makes the line raw with TCSAFLUSH (discarding the pty's
pending input, as picocom does), and copies the next EXPECT bytes to stdout.

usage: slow_setup_client.py PATH EXPECT DELAY_MS
"""
import os
import select
import sys
import termios
import time
import tty

path, expect, delay_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
time.sleep(delay_ms / 1000)  # the slow set-up being modelled
tty.setraw(fd, termios.TCSAFLUSH)
got = bytearray()
deadline = time.monotonic() + 10
while len(got) < expect:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        break
    got += os.read(fd, expect - len(got))
sys.stdout.buffer.write(bytes(got))
os.close(fd)
sys.exit(0 if len(got) == expect else 1)
