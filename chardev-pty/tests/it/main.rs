//! chardev-pty's integration tests, a module per backend, in one binary, against real
//! terminal programs (pyserial, picocom through pexpect, strace). Tests that need a process
//! to themselves run this binary again in a child with an exact test-name filter
//! (`pty::idle_child`, `serial::break_child`, ...): the idle pty's whole-process CPU is
//! measured there, not in this process. Shared helpers come from the `chardev-testkit` crate.

mod examples; // the pty_console example, run and driven through a real terminal
mod pty; // pty: output kept until a terminal comes, Opened/Closed, a MiB each way, idle cost
mod serial; // serial/tty on a pty pair's slave: line settings, modem lines, breaks
