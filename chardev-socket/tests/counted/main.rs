//! Tests that count every fd of this process (`open_fds`): they must be alone in it, so they
//! have this binary, and each holds `chardev_testkit::alone()` for its whole run, so that
//! they take turns. A test added here holds it too; a test that does not count the whole
//! process belongs in `tests/it/`.

mod churn; // add, remove and change chardevs while data flows; fds back to the start
mod cycles; // 10,000 unix and 2,000 tcp clients in a row; no fd left behind
mod fd_faults; // fds on messages read in pieces or never read; none lost or leaked
mod fd_limit; // 253 fds in one message: 16 kept, the rest closed
