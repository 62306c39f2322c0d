//! A binary of its own for the test that sets SIGPIPE back to its default action (the Rust
//! runtime ignores it) for the whole process, to show that the library never needs it
//! ignored: in a process shared with other tests, a write of theirs to a closed pipe or
//! socket would kill them all.

mod peer_killed;
