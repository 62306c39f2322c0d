//! `stdio` on real ptys, files, pipes and sockets, in a binary of its own. Each test runs
//! this binary again as the child that owns those as its stdio (the test `stdio::child_main`,
//! with `CHARDEV_STDIO_CHILD` naming the scenario); the ptys it makes are inheritable for a
//! moment (openpty, then close-on-exec), so only this binary's own children may start
//! meanwhile, not other tests' peers.

mod stdio;
