//! `clients=N`, `history=`, `queue=`: one console, many viewers, on real unix and tcp
//! sockets. Streams are checked byte for byte against a pattern whose every byte says where
//! it stands (position mod 251), so that any gap or duplicate shows.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::support::*;
use chardev::{Event, FrontendHandle};
use chardev_testkit::*;

/// The pattern's byte at stream position `pos`.
fn at(pos: usize) -> u8 {
    (pos % 251) as u8
}

/// The pattern from `from` to `to`.
fn pattern(from: usize, to: usize) -> Vec<u8> {
    (from..to).map(at).collect()
}

/// A viewer: a unix client that reads with a deadline.
fn viewer(path: &std::path::Path) -> UnixStream {
    let s = connect_unix(path);
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads exactly `n` bytes, or fails the test at the deadline.
fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Reads until the peer closes (or the deadline).
fn read_to_end(s: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to the end");
    out
}

/// A viewer that reads `n` bytes on a thread of its own, publishing how many it has so far
/// (so that a test can pace the output to what its readers take: `queue=` is how far a
/// viewer may fall behind, and a reader that falls further loses output, as it should).
fn reading_viewer(
    mut s: UnixStream,
    n: usize,
) -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, std::thread::JoinHandle<Vec<u8>>) {
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&progress);
    let thread = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0; 65536];
        while got.len() < n {
            let k = s.read(&mut buf).expect("a reading viewer");
            assert!(k > 0, "closed early after {} bytes", got.len());
            got.extend_from_slice(&buf[..k]);
            seen.store(got.len(), std::sync::atomic::Ordering::SeqCst);
        }
        got
    });
    (progress, thread)
}

/// Waits until every reader has `n` bytes.
fn wait_read(readers: &[&std::sync::atomic::AtomicUsize], n: usize) {
    wait_until("the viewers to read", || {
        readers.iter().all(|r| r.load(std::sync::atomic::Ordering::SeqCst) >= n)
    });
}

fn server(dir: &tempfile::TempDir, keys: &str) -> (std::path::PathBuf, String) {
    let path = dir.path().join("con.sock");
    (path.clone(), format!("socket,id=con,path={},server=on,wait=off,{keys}", path.display()))
}

#[test]
fn every_viewer_gets_the_same_output_and_only_the_writer_is_heard() {
    let (lp, reg, _dir) = setup();
    reg.add_str("socket,id=con,host=127.0.0.1,port=0,server=on,wait=off,clients=4").unwrap();
    let f = filename(&reg, "con");
    let port: u16 = f.trim_end_matches(",server=on").rsplit(':').next().unwrap().parse().unwrap();
    let h = reg.connect("con").unwrap();
    let rec = record(&h, 4096);
    let tcp = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s
    };
    let mut a = tcp();
    rec.expect_event(Event::Opened);
    let mut b = tcp();
    let mut c = tcp();
    settle(lp.handle());
    h.write_all(&pattern(0, 100_000)).unwrap();
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(read_n(s, 100_000), pattern(0, 100_000));
    }
    // The filename names the writer's connection: the first to connect.
    let names =
        |s: &std::net::TcpStream| format!("<-> 127.0.0.1:{}", s.local_addr().unwrap().port());
    assert!(filename(&reg, "con").ends_with(&names(&a)), "{}", filename(&reg, "con"));
    // Viewers are heard by nobody.
    b.write_all(b"from b, a viewer").unwrap();
    c.write_all(b"from c, a viewer").unwrap();
    a.write_all(b"from a").unwrap();
    assert_eq!(rec.data(6), b"from a");
    // The writer leaves: the oldest one left (b) takes over, and the frontend sees no
    // Closed while viewers remain.
    drop(a);
    wait_until("b to become the writer", || filename(&reg, "con").ends_with(&names(&b)));
    b.write_all(b"from b, now the writer").unwrap();
    assert_eq!(rec.data(22), b"from b, now the writer");
    h.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut c, 10), b"still here");
    drop(b);
    drop(c);
    rec.expect_event(Event::Closed);
    rec.quiet(QUIET);
}

#[test]
fn a_client_beyond_the_limit_is_told_why_and_closed_at_once() {
    let (_lp, reg, dir) = setup();
    let (path, spec) = server(&dir, "clients=2");
    reg.add_str(&spec).unwrap();
    let h = reg.connect("con").unwrap();
    let rec = record(&h, 4096);
    let _a = viewer(&path);
    rec.expect_event(Event::Opened);
    let _b = viewer(&path);
    let mut third = viewer(&path);
    assert_eq!(read_to_end(&mut third), b"chardev 'con': too many clients (clients=2)\r\n");
    // Not queued: when a place frees (once the server has seen the viewer go), the next
    // connection is served.
    drop(_b);
    let mut fourth = loop {
        let mut s = viewer(&path);
        s.set_read_timeout(Some(QUIET)).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => assert!(buf.starts_with(b"chardev 'con': too many")),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break s,
            other => panic!("{other:?}"),
        }
    };
    fourth.set_read_timeout(Some(DEADLINE)).unwrap();
    h.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut fourth, 5), b"hello");
}

#[test]
fn history_is_replayed_to_each_new_viewer_then_live_output_without_gap_or_duplicate() {
    let (lp, reg, dir) = setup();
    let (path, spec) = server(&dir, "clients=4,history=64k");
    reg.add_str(&spec).unwrap();
    let h = reg.connect("con").unwrap();
    let _rec = record(&h, 4096);
    // 200 KiB of boot output before anyone connects; writes never wait for a viewer.
    let boot = 200 * 1024;
    h.write_all(&pattern(0, boot)).unwrap();
    let mut first = viewer(&path);
    assert_eq!(read_n(&mut first, 64 * 1024), pattern(boot - 64 * 1024, boot));
    h.write_all(&pattern(boot, boot + 1000)).unwrap();
    assert_eq!(read_n(&mut first, 1000), pattern(boot, boot + 1000));

    // A viewer that connects while output flows gets a contiguous stream: history, then
    // live, with no gap and no duplicate at the seam.
    let start = boot + 1000;
    let total = start + 2_000_000;
    let (progress, first) = reading_viewer(first, total - start);
    let writer = {
        let h: FrontendHandle = h.clone();
        std::thread::spawn(move || {
            let mut pos = start;
            while pos < total {
                let end = (pos + 4096).min(total);
                h.write_all(&pattern(pos, end)).unwrap();
                pos = end;
                wait_read(&[&progress], pos - start - 4096.min(pos - start));
            }
        })
    };
    let mut second = viewer(&path);
    let got = read_n(&mut second, 64 * 1024 + 100_000);
    for (i, w) in got.windows(2).enumerate() {
        assert_eq!(w[1], ((w[0] as usize + 1) % 251) as u8, "gap or duplicate at byte {i}");
    }
    drop(second);
    writer.join().unwrap();
    assert!(first.join().unwrap() == pattern(start, total), "the first viewer's live stream");
    settle(lp.handle());
}

#[test]
fn a_stalled_viewer_stalls_nobody_and_sees_one_gap_marker_with_the_count() {
    let (lp, reg, dir) = setup();
    let (path, spec) = server(&dir, "clients=4,queue=64k");
    reg.add_str(&spec).unwrap();
    let h = reg.connect("con").unwrap();
    let rec = record(&h, 4096);
    let mut stalled = viewer(&path);
    rec.expect_event(Event::Opened);
    let total = 8 << 20;
    let readers: Vec<_> = (0..2).map(|_| reading_viewer(viewer(&path), total)).collect();
    settle(lp.handle());
    // 8 MiB while one viewer reads nothing, paced by the two that read: the writes never
    // wait for the stalled one.
    for chunk in (0..total).step_by(65536) {
        h.write_all(&pattern(chunk, chunk + 65536)).unwrap();
        let progress: Vec<_> = readers.iter().map(|r| &*r.0).collect();
        wait_read(&progress, chunk);
    }
    for (_, r) in readers {
        assert!(r.join().unwrap() == pattern(0, total), "a reading viewer lost bytes");
    }
    // The stalled viewer now reads: what its socket took, one marker, then the last of the
    // output, and the marker's count is exactly what is missing.
    h.write_all(b"").unwrap();
    let mut got = Vec::new();
    stalled.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = vec![0; 65536];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if got.len() >= 64 * 1024 {
                    break;
                }
            }
            Err(e) => panic!("stalled viewer: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("[chardev: ").count(), 1, "exactly one gap marker");
    let start = got.windows(12).position(|w| w == b"\r\n[chardev: ").expect("marker");
    let rest = &got[start + 2..];
    let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
    let marker = std::str::from_utf8(&rest[..end]).unwrap();
    let lost: usize = marker
        .strip_prefix("[chardev: ")
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("marker {marker:?}"));
    assert!(marker.ends_with("bytes of output dropped: this viewer fell behind]"), "{marker}");
    let before = &got[..start];
    let after = &rest[end + 2..];
    assert_eq!(before, &pattern(0, before.len())[..], "what came before the gap");
    assert_eq!(before.len() + lost + after.len(), total, "the marker counts what is missing");
    assert_eq!(after, &pattern(total - after.len(), total)[..], "the tail after the gap");
    assert!(after.len() <= 64 * 1024, "at most queue= bytes after the gap");
}

#[test]
fn one_client_with_history_gets_the_replay_and_a_second_is_refused() {
    let (_lp, reg, dir) = setup();
    let (path, spec) = server(&dir, "history=1k");
    reg.add_str(&spec).unwrap();
    let h = reg.connect("con").unwrap();
    let rec = record(&h, 4096);
    h.write_all(&pattern(0, 5000)).unwrap();
    let mut first = viewer(&path);
    rec.expect_event(Event::Opened);
    assert_eq!(read_n(&mut first, 1024), pattern(5000 - 1024, 5000));
    let mut second = viewer(&path);
    assert_eq!(read_to_end(&mut second), b"chardev 'con': too many clients (clients=1)\r\n");
    // History read through the API leaves it in place.
    drop(first);
    rec.expect_event(Event::Closed);
    let mut again = viewer(&path);
    assert_eq!(read_n(&mut again, 1024), pattern(5000 - 1024, 5000));
}

#[test]
fn tcp_and_telnet_viewers_share_the_stream() {
    let (_lp, reg, _dir) = setup();
    reg.add_str(
        "socket,id=t,host=127.0.0.1,port=0,server=on,wait=off,telnet=on,clients=3,history=4k",
    )
    .unwrap();
    let f = filename(&reg, "t");
    let port: u16 = f.trim_end_matches(",server=on").rsplit(':').next().unwrap().parse().unwrap();
    let h = reg.connect("t").unwrap();
    let _rec = record(&h, 4096);
    h.write_all(b"boot\xffline\r\n").unwrap();
    let mut clients: Vec<_> = (0..2)
        .map(|_| {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s
        })
        .collect();
    for c in &mut clients {
        // The telnet negotiation, then the history with 0xff escaped as telnet wants.
        let mut got = Vec::new();
        let want: &[u8] = b"boot\xff\xffline\r\n";
        while !got.ends_with(want) {
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed; got {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(&[0xff]), "telnet negotiation first: {got:?}");
    }
}

#[test]
fn sessions_are_listed_steered_and_reported_and_the_history_reads_without_draining() {
    let (lp, reg, dir) = setup();
    let (tx, events) = std::sync::mpsc::channel();
    reg.on_session_event(move |e| {
        let _ = tx.send(e.clone());
    });
    let (path, spec) = server(&dir, "clients=3,history=1k");
    reg.add_str(&spec).unwrap();
    let h = reg.connect("con").unwrap();
    let rec = record(&h, 4096);
    h.write_all(b"boot line\r\n").unwrap();
    let next_event = || events.recv_timeout(DEADLINE).expect("a session event");
    let mut a = viewer(&path);
    let opened = next_event();
    assert_eq!(
        (opened.chardev.as_str(), opened.session, opened.role, &opened.change),
        ("con", 1, chardev::SessionRole::Writer, &chardev::sessions::SessionChange::Opened)
    );
    assert_eq!(opened.peer, format!("unix:pid={}", std::process::id()));
    let mut b = viewer(&path);
    assert_eq!(next_event().session, 2);
    for s in [&mut a, &mut b] {
        assert_eq!(read_n(s, 11), b"boot line\r\n");
    }
    rec.expect_event(Event::Opened);
    b.write_all(b"ignored").unwrap();
    wait_until("b's input to be counted", || {
        reg.sessions("con").unwrap().iter().any(|s| s.id == 2 && s.input_dropped == 7)
    });
    let list = reg.sessions("con").unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].id, list[0].role), (1, chardev::SessionRole::Writer));
    assert_eq!((list[1].id, list[1].role), (2, chardev::SessionRole::Viewer));
    assert!(list.iter().all(|s| s.sent == 11 && s.queued == 0 && s.dropped == 0 && s.writes >= 1));

    // b becomes the writer: its input reaches the frontend, a's no longer does.
    reg.set_session_writer("con", 2).unwrap();
    a.write_all(b"from a").unwrap();
    b.write_all(b"from b").unwrap();
    assert_eq!(rec.data(6), b"from b");
    wait_until("a's input to be counted as dropped", || {
        reg.sessions("con").unwrap()[0].input_dropped == 6
    });

    // Session 1 is ended: its peer sees the end, the others stay, the event says why.
    reg.disconnect_session("con", 1).unwrap();
    assert_eq!(read_to_end(&mut a), b"");
    let closed = next_event();
    assert_eq!(
        (closed.session, &closed.change),
        (1, &chardev::sessions::SessionChange::Closed { reason: "disconnect" })
    );
    let err = reg.disconnect_session("con", 1).unwrap_err();
    assert_eq!(err.to_string(), "chardev 'con' has no session 1");

    // The history is read as often as wanted, and a new viewer still gets it.
    assert_eq!(reg.history("con", None).unwrap(), b"boot line\r\n");
    assert_eq!(reg.history("con", Some(6)).unwrap(), b"line\r\n");
    assert_eq!(reg.history("con", None).unwrap(), b"boot line\r\n");
    let mut c = viewer(&path);
    assert_eq!(read_n(&mut c, 11), b"boot line\r\n");
    settle(lp.handle());

    // A chardev without sessions says so, naming it.
    reg.add_str("null,id=n0").unwrap();
    let err = reg.sessions("n0").unwrap_err();
    assert!(err.to_string().contains("chardev 'n0' cannot show or steer sessions"), "{err}");
    let err = reg.history("n0", None).unwrap_err();
    assert!(err.to_string().contains("chardev 'n0' cannot read its history"), "{err}");
}

#[test]
fn websocket_viewers_get_the_history_answer_pings_and_only_the_writer_is_heard() {
    use std::io::BufRead;
    require_python_module("websockets", "websockets");
    let (_lp, reg, _dir) = setup();
    reg.add_str(
        "socket,id=ws,host=127.0.0.1,port=0,server=on,wait=off,websocket=on,clients=2,history=4k",
    )
    .unwrap();
    let f = filename(&reg, "ws");
    let port: u16 = f.trim_end_matches(",server=on").rsplit(':').next().unwrap().parse().unwrap();
    let h = reg.connect("ws").unwrap();
    let rec = record(&h, 4096);
    h.write_all(b"boot-output\r\n").unwrap();
    let mut child = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ws_viewers.py"))
            .arg(format!("ws://127.0.0.1:{port}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(TimedPipe(child.0.stdout.take().unwrap())).lines();
    let mut line = move || lines.next().expect("the peer said nothing more").unwrap();
    rec.expect_event(Event::Opened);
    assert_eq!(line(), "history v1 True");
    assert_eq!(line(), "history v2 True");
    assert_eq!(line(), "pong");
    // The writer's page size message is an event (issue 18), not input.
    rec.expect_event(Event::Resize { cols: 100, rows: 30 });
    assert_eq!(rec.data(7), b"from-v1", "only the writer (the first) is heard");
    let sizes: Vec<_> = reg.sessions("ws").unwrap().iter().map(|s| s.size).collect();
    assert_eq!(sizes, [Some((100, 30)), None], "the resize message is the session's size");
    h.write_all(b"live-output").unwrap();
    assert_eq!(line(), "live v1");
    assert_eq!(line(), "live v2");
    assert_eq!(line(), "ok");
    rec.expect_event(Event::Closed);
    assert!(wait_exit(&mut child.0, "ws_viewers.py").success());
}

#[test]
fn a_web_console_answers_page_requests_even_when_full_and_refuses_a_websocket_beyond_the_limit() {
    let (_lp, reg, _dir) = setup();
    reg.add_str(
        "socket,id=web0,host=127.0.0.1,port=0,server=on,wait=off,websocket=on,clients=1,history=1k",
    )
    .unwrap();
    let f = filename(&reg, "web0");
    let port: u16 = f.trim_end_matches(",server=on").rsplit(':').next().unwrap().parse().unwrap();
    let h = reg.connect("web0").unwrap();
    let rec = record(&h, 4096);
    let get = |request: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("the answer, then the end");
        String::from_utf8_lossy(&answer).into_owned()
    };
    let page = get("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("<title>web0"), "titled by the chardev's id: {page}");
    assert!(get("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(get("POST / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    rec.quiet(QUIET);

    // One websocket client takes the only place; the page is still served, and a second
    // websocket is refused with the reason.
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut first = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    first.set_read_timeout(Some(DEADLINE)).unwrap();
    first.write_all(upgrade.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf[..n]));
    rec.expect_event(Event::Opened);
    assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    let refused = get(upgrade);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("chardev 'web0': too many clients (clients=1)"), "{refused}");
}
