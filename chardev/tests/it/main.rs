//! The chardev core's integration tests, a module per subject, in one binary: its tests run
//! side by side on the harness's threads, so none may count or change what belongs to the
//! whole process (fds, signal dispositions); stdio's tests have a binary of their own
//! (`tests/stdio/`). Shared helpers come from the `chardev-testkit` crate.

mod backends; // null, file, pipe, ringbuf/memory, and logfile= on top of any of them
mod capabilities; // serial lines offered by a backend; typed backends for management
mod embedding; // the loop nested in a plain epoll loop: its fd, stepped with poll_once
mod event_loop; // stepping, loops side by side, timers, custom backends, write_all
mod examples; // chardev/examples/, each run to its checkable end
mod fd; // the fd contract helpers on every fd kind, with their error paths
mod flow_control; // 64 MiB to a frontend that takes a byte at a time; no spinning meanwhile
mod hub; // hub: output to every member through its own queue, input from any, QEMU's errors
mod logfile; // O_APPEND, rotation by size, reopen, timestamps; the real logrotate, both modes
mod mux; // mux=on driven with Ctrl-A keys through real fifos
mod options; // -chardev option strings and what they parse into
mod prop_parsers; // property tests: the option parsers never panic and round-trip
mod registry; // chardev-add, -remove, -change, query-chardev, send-break, frontends
mod smoke; // file in, file out
mod syslog; // syslog: lines as records, a collector that stalls or restarts, a real rsyslogd
