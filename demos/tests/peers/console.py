"""Drives serial-console on a real terminal (pexpect), as a user would with no options.

Types a guest command, switches to the monitor with Ctrl-A c, runs `info chardev`, switches
back, quits with Ctrl-A x, and checks with `stty -a` that the terminal is cooked again.
Prints "ok" at the end; any failed expectation raises.
"""
import sys

import pexpect

binary = sys.argv[1]
child = pexpect.spawn("/bin/sh", ["-c", f"{binary}; echo EXIT=$?; stty -a"], timeout=10, encoding="utf-8")
child.expect_exact("guest$ ")
child.send("echo hello from the guest\r")
child.expect_exact("echo hello from the guest")  # the guest's echo of the typing
child.expect("\nhello from the guest\r")  # its output (the tty's OPOST adds a CR)
child.expect_exact("guest$ ")
child.send("\x01c")
child.expect("serial-console [0-9.]+ monitor - type 'help' for more information")
child.expect_exact("(qemu) ")
child.send("info chardev\r")
child.expect_exact("serial0: filename=mux")
child.expect_exact("serial0-base: filename=stdio")
child.expect_exact("(qemu) ")
child.send("info status\r")
child.expect_exact("VM status: running")
child.send("\x01c")
child.send("uptime\r")
child.expect("up [0-9.]+ s")
child.send("\x01h")
child.expect_exact("C-a x    exit emulator")
child.send("\x01x")
child.expect_exact("QEMU: Terminated")
child.expect_exact("EXIT=0")
child.expect(pexpect.EOF)
settings = child.before
assert " icanon" in settings and " echo " in settings, "terminal left raw: " + settings
print("ok")
