//! A client that sends and never reads stalls nobody else: the monitor stops reading it while
//! its replies wait, the other monitors and chardevs on the same loop keep answering, and a
//! client that lets events pile up past the bound is disconnected.

use std::io::{Read, Write};
use std::time::Instant;

use serde_json::json;

use crate::support::{Server, DEADLINE};

#[test]
fn a_client_that_never_reads_stalls_no_other_monitor_and_is_dropped_when_events_pile_up() {
    let server = Server::start();
    server.monitor("qmp1");
    server.registry.add_str("ringbuf,id=rb0,size=4096").unwrap();
    let console = server.registry.connect("rb0").unwrap();

    let mut stuck = server.client("qmp0");
    let commands = "{\"execute\": \"query-commands\"}\r\n".repeat(5000);
    // The monitor reads until its replies fill the socket, then stops reading: our writes
    // fill our send buffer and stop too. Write from a thread that gives up at the deadline.
    let mut writer = stuck.sock.try_clone().unwrap();
    writer.set_write_timeout(Some(DEADLINE)).unwrap();
    let flood = std::thread::spawn(move || writer.write_all(commands.as_bytes()).is_ok());

    // Meanwhile another monitor, and another chardev on the same loop, answer at once.
    let mut other = server.client("qmp1");
    for _ in 0..20 {
        let start = Instant::now();
        let reply = other.cmd("query-chardev", json!({}));
        assert!(reply["return"].is_array(), "{reply}");
        assert!(start.elapsed() < DEADLINE / 4);
        console.write_all(b"guest output\r\n").unwrap();
    }
    assert!(server.registry.ringbuf_read("rb0", 4096).unwrap().starts_with(b"guest output"));

    // Events for a client that reads nothing are bounded: it is disconnected.
    let data = json!({"padding": "x".repeat(4096)});
    let events = std::thread::scope(|s| {
        let emitter = s.spawn(|| {
            for _ in 0..2000 {
                server.qmp.events().emit("TEST_PADDING", Some(data.clone()));
            }
        });
        emitter.join().is_ok()
    });
    assert!(events);
    // Reading now, the client finds the end of its connection after what was written.
    let mut sink = Vec::new();
    stuck.sock.set_read_timeout(Some(DEADLINE)).unwrap();
    // (Closed with our commands unread, the kernel resets the connection.)
    let end = stuck.sock.read_to_end(&mut sink);
    assert!(
        end.as_ref().map_or_else(|e| e.kind() == std::io::ErrorKind::ConnectionReset, |_| true),
        "the monitor closes the connection of a client that reads nothing: {end:?}"
    );
    assert!(sink.len() < 16 << 20, "{} bytes reached it", sink.len());
    let _ = flood.join();
    // The monitor is ready for the next client.
    let mut next = server.client("qmp0");
    assert!(next.cmd("query-version", json!({}))["return"].is_object());
}
