//! The demos run as users run them (serial-console, chardev-relay), against real peers and,
//! in the differential tests, QEMU 7.2 itself; a module per subject, in one binary. What is
//! measured (RSS, fds) is the demo's, in /proc/PID of the child, never this process's.
//! Shared helpers come from the `chardev-testkit` crate.

mod collector; // backlog=: a collector away for 3 s loses nothing, no busy loop (strace)
mod hmp_bounds; // the human monitor's line editor is bounded as QEMU's readline
mod libvirt_fds; // fd sets and getfd as libvirt uses them, against QEMU 7.2 too
mod logs; // the console log under the real logrotate, create mode, SIGHUP from postrotate
mod many_viewers; // a hub over unix, telnet, pty and websocket viewers, all real, one stopped
mod migration; // migrate fd:NAME end to end, a slow reader, getfd/closefd cycles
mod overflow; // overflow=drop: a stopped socat never stalls the guest, drops add up
mod qmp; // QMP against the qemu.qmp library and raw sockets, against QEMU 7.2 too
mod real_guest; // chardev-relay serving a real Linux guest's console under QEMU (TCG)
mod relay; // chardev-relay between socat peers, stalled readers, ptys, signals
mod security; // TCP servers with no host listen on loopback only
mod serial_console; // serial-console through pexpect, socat and telnet on its sockets
mod signals; // serial-console on a real terminal ended by signals and panics
mod tls; // TLS against QEMU 7.2 both ways, gnutls-cli, openssl s_client, socat, wss, telnet
mod tls_web; // TLS with viewers: the web console over https/wss in Chromium, Python ssl viewers
mod web_console; // the web console page in headless Chromium, through selenium
mod websocket_abuse; // hostile websocket clients, against QEMU 7.2 too
