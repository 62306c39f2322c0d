//! Fds passed to a monitor: `getfd` and `add-fd` take the fd on their own message; fds belong
//! to the input and the connection they came with, and every one that no command keeps is
//! closed (a pipe's read end sees EOF only when every copy of its write end is closed).

use std::os::fd::AsFd;

use serde_json::json;

use crate::support::{Client, Pipe, Server};

#[test]
fn getfd_names_the_fd_on_its_own_message_and_closefd_closes_it() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let pipe = Pipe::new();
    chardev::fd::set_nonblocking(&pipe.write, true).unwrap();
    let reply = c.cmd_fds("getfd", json!({"fdname": "mig"}), &[pipe.write.as_fd()]);
    assert_eq!(reply, json!({"return": {}}));
    // The seed: what arrives is blocking, and the description is shared with the sender.
    assert!(!chardev::fd::is_nonblocking(&pipe.write).unwrap());
    assert_eq!(c.cmd("closefd", json!({"fdname": "mig"})), json!({"return": {}}));
    assert_eq!(
        c.error("closefd", json!({"fdname": "mig"}), &[]),
        "File descriptor named 'mig' not found"
    );
    pipe.assert_all_writers_close();
}

#[test]
fn an_fd_on_a_command_that_does_not_take_it_is_closed_after_that_command() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let pipe = Pipe::new();
    let reply = c.cmd_fds("query-version", json!({}), &[pipe.write.as_fd()]);
    assert!(reply["return"]["qemu"].is_object(), "{reply}");
    pipe.assert_all_writers_close();
    // QEMU 7.2 would hand it to this getfd; here it went with its command.
    assert_eq!(
        c.error("getfd", json!({"fdname": "stale"}), &[]),
        "No file descriptor supplied via SCM_RIGHTS"
    );
}

#[test]
fn an_fd_sent_with_whitespace_waits_for_the_next_command() {
    // qemu.qmp's send_fd_scm sends one space with the fd, then the command.
    let server = Server::start();
    let mut c = server.client("qmp0");
    let pipe = Pipe::new();
    chardev::fd::send_with_fds(c.sock.as_fd(), b" ", &[pipe.write.as_fd()]).unwrap();
    assert_eq!(c.cmd("getfd", json!({"fdname": "later"})), json!({"return": {}}));
    assert_eq!(c.cmd("closefd", json!({"fdname": "later"})), json!({"return": {}}));
    pipe.assert_all_writers_close();
}

#[test]
fn of_several_fds_on_one_message_getfd_keeps_the_first_and_closes_the_rest() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let (first, second) = (Pipe::new(), Pipe::new());
    let fds = [first.write.as_fd(), second.write.as_fd()];
    assert_eq!(c.cmd_fds("getfd", json!({"fdname": "one"}), &fds), json!({"return": {}}));
    second.assert_all_writers_close();
    assert_eq!(c.cmd("closefd", json!({"fdname": "one"})), json!({"return": {}}));
    first.assert_all_writers_close();
}

#[test]
fn fds_never_pass_from_one_connection_to_the_next() {
    let server = Server::start();
    let pipe = Pipe::new();
    {
        let c = server.client("qmp0");
        // Passed and never claimed; then the client leaves.
        chardev::fd::send_with_fds(c.sock.as_fd(), b" ", &[pipe.write.as_fd()]).unwrap();
    }
    // Closed with the connection, before any other client comes.
    pipe.assert_all_writers_close();
    let mut next = server.client("qmp0");
    assert_eq!(
        next.error("getfd", json!({"fdname": "theft"}), &[]),
        "No file descriptor supplied via SCM_RIGHTS"
    );
}

#[test]
fn two_thousand_connections_that_pass_fds_and_leave_leak_nothing() {
    let server = Server::start();
    let pipe = Pipe::new();
    for i in 0..2000 {
        let mut c = Client::connect(&server.path("qmp0"));
        let fd = [pipe.write.as_fd()];
        match i % 4 {
            // Before negotiation, on whitespace, on a command that takes none, on getfd.
            0 => drop(chardev::fd::send_with_fds(c.sock.as_fd(), b"\n", &fd)),
            1 => {
                c.negotiate();
                chardev::fd::send_with_fds(c.sock.as_fd(), b" ", &fd).unwrap();
            }
            2 => {
                c.negotiate();
                c.cmd_fds("query-commands", json!({}), &fd);
            }
            _ => {
                c.negotiate();
                // Named fds belong to the monitor (QEMU keeps them across its clients):
                // each name replaces the last, whose fd closes.
                assert_eq!(c.cmd_fds("getfd", json!({"fdname": "x"}), &fd), json!({"return": {}}));
            }
        }
    }
    let mut last = server.client("qmp0");
    assert_eq!(last.cmd("closefd", json!({"fdname": "x"})), json!({"return": {}}));
    pipe.assert_all_writers_close();
}
