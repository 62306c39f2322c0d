"""picocom on a pty, driven like a person at a terminal: waits for "Terminal ready" and the
output the guest wrote before anybody was attached (BACKLOG), types LINE and a carriage
return, waits for the guest's answer "echo: LINE", then quits with Ctrl-A Ctrl-X.

usage: picocom_session.py PATH BACKLOG LINE
"""
import io
import sys

import pexpect

path, backlog, line = sys.argv[1], sys.argv[2], sys.argv[3]
child = pexpect.spawn("picocom", ["-b", "115200", path], timeout=10, encoding="utf-8")
# What picocom showed, printed only if the session goes wrong.
screen = io.StringIO()
child.logfile_read = screen
try:
    child.expect_exact("Terminal ready")
    child.expect_exact(backlog)
    child.send(line + "\r")
    child.expect_exact("echo: " + line)
    child.sendcontrol("a")
    child.sendcontrol("x")
    child.expect(pexpect.EOF)
    child.close()
except pexpect.ExceptionPexpect:
    sys.stderr.write("picocom showed:\n" + screen.getvalue() + "\n")
    raise
print("picocom session ok")
