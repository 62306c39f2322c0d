"""The qemu.qmp library's legacy synchronous client (QEMUMonitorProtocol), as older test
harnesses use it, with an fd passed by send_fd_scm. Prints "ok" at the end.
"""
import os
import sys

from qemu.qmp.legacy import QEMUMonitorProtocol

qmp = QEMUMonitorProtocol(sys.argv[1])
greeting = qmp.connect(negotiate=True)
assert "QMP" in greeting, greeting
assert qmp.cmd_raw("query-status")["return"]["status"] == "running"
r, w = os.pipe()
qmp.send_fd_scm(fd=w)
assert qmp.cmd_raw("getfd", {"fdname": "w"}) == {"return": {}}
assert qmp.cmd_raw("getfd", {"fdname": "again"})["error"]["desc"] == "No file descriptor supplied via SCM_RIGHTS"
assert qmp.cmd_raw("closefd", {"fdname": "w"}) == {"return": {}}
assert qmp.cmd_raw("migrate", {"uri": "fd:nope"})["error"]["desc"] == "File descriptor named 'nope' has not been found"
assert qmp.cmd_raw("quit") == {"return": {}}
try:
    qmp.close()
except EOFError:
    pass  # the machine is gone after quit; real QEMU behaves the same
print("ok")
