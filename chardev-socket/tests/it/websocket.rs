//! `websocket=on` against the Python `websockets` client: QEMU's handshake headers, binary
//! and text messages, ping/pong, a message larger than the frontend's room, and close.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use chardev::{Event, EventLoop, Registry};
use chardev_testkit::*;

#[test]
fn a_websocket_client_talks_to_a_websocket_server_chardev() {
    require_python_module("websockets", "websockets");
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    reg.add_str("socket,id=ws,host=127.0.0.1,port=0,server=on,wait=off,websocket=on").unwrap();
    let f = reg.query()[0].filename.clone();
    let port: u16 = f.trim_end_matches(",server=on").rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(f, format!("disconnected:websocket:127.0.0.1:{port},server=on"));
    let h = reg.connect("ws").unwrap();
    // Room for 3 bytes at a time: messages arrive whole, in pieces.
    let rec = record(&h, 3);

    let mut child = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ws_peer.py"))
            .arg(format!("ws://127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(TimedPipe(child.0.stdout.take().unwrap())).lines();
    let mut line = move || lines.next().expect("the peer said nothing more").unwrap();

    rec.expect_event(Event::Opened);
    let f = reg.query()[0].filename.clone();
    assert!(f.starts_with(&format!("websocket:127.0.0.1:{port},server=on <-> 127.0.0.1:")), "{f}");
    assert_eq!(line(), "server=QEMU VNC");
    assert_eq!(line(), "subprotocol=binary");
    assert_eq!(rec.data(10), b"worldtext!");
    assert_eq!(line(), "pong=True");
    h.write_all(b"hello from chardev").unwrap();
    assert_eq!(line(), "got=hello from chardev");
    h.write_all(&vec![b'x'; 200_000]).unwrap();
    assert_eq!(line(), "big=200000");
    assert_eq!(line(), "closed");
    rec.expect_event(Event::Closed);
    assert!(wait_exit(&mut child.0, "ws_peer.py").success());
}
