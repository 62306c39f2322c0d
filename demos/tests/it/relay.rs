//! chardev-relay against real peers: socat on both sides with checksummed transfers in both
//! directions at once, a stalled reader that must slow the writer without the relay
//! buffering the difference, and fds passed through from one unix socket to the other.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use chardev_testkit::KillOnDrop as Relay;
use chardev_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_chardev-relay");

fn relay(a: &str, b: &str) -> Relay {
    relay_with(&[], a, b)
}

fn relay_with(flags: &[&str], a: &str, b: &str) -> Relay {
    Relay(Command::new(BIN).args(flags).args([a, b]).stdin(Stdio::null()).spawn().unwrap())
}

/// Deterministic bytes (xorshift), different for each seed.
pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Opens the relay's pty through its link once it is there, raw, as a terminal program would.
fn open_terminal(link: &std::path::Path) -> std::fs::File {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    wait_until("the pty link", || link.exists());
    let tty = std::fs::OpenOptions::new().read(true).write(true).open(link).unwrap();
    let mut attrs = tcgetattr(&tty).unwrap();
    cfmakeraw(&mut attrs);
    tcsetattr(&tty, SetArg::TCSANOW, &attrs).unwrap();
    tty
}

fn server(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let spec = format!("socket,path={},server=on,wait=off", path.display());
    (path, spec)
}

#[test]
fn socat_in_socat_out_checksummed_and_everything_arrives_before_the_relay_ends() {
    require_program("socat", "socat");
    // Two unix sockets: fds may flow, so every byte is copied (none spliced).
    let totals = socat_through_relay(&[]);
    assert!(totals.contains("a->b 33554432 bytes (0 spliced)"), "{totals}");
}

#[test]
fn with_no_fds_the_bytes_move_by_splice_and_arrive_intact() {
    require_program("socat", "socat");
    let totals = socat_through_relay(&["--no-fds"]);
    assert!(totals.contains("a->b 33554432 bytes (33554432 spliced)"), "{totals}");
}

/// 32 MiB from a socat through `chardev-relay -v FLAGS` into another socat; returns the
/// relay's closing totals line.
fn socat_through_relay(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let r = Command::new(BIN)
        .arg("-v")
        .args(flags)
        .args([&sa, &sb])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let payload = data(32 << 20, 1);
    let input = dir.path().join("in");
    std::fs::write(&input, &payload).unwrap();
    let output = dir.path().join("out");
    // Not connect_unix: a probe connection would be the relay's client for good.
    wait_unix_listening(&pa);
    wait_unix_listening(&pb);
    let mut receiver = KillOnDrop(
        Command::new("socat")
            .args([
                "-u",
                &format!("UNIX-CONNECT:{}", pb.display()),
                &format!("CREATE:{}", output.display()),
            ])
            .spawn()
            .unwrap(),
    );
    let mut sender = KillOnDrop(
        Command::new("socat")
            .args([
                "-u",
                &format!("OPEN:{},rdonly", input.display()),
                &format!("UNIX-CONNECT:{}", pa.display()),
            ])
            .spawn()
            .unwrap(),
    );
    assert!(wait_exit(&mut sender.0, "the sending socat").success());
    // The sender's close ends the relay, after the last byte went on to the receiver.
    let out = wait_output(r, "the relay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the relay ends cleanly when a side closes: {stderr}");
    assert!(wait_exit(&mut receiver.0, "the receiving socat").success());
    assert!(std::fs::read(&output).unwrap() == payload, "a -> b differs");
    stderr.lines().find(|l| l.contains("done:")).unwrap_or_default().to_string()
}

#[test]
fn both_directions_at_once_checksummed() {
    both_directions(&[]);
}

#[test]
fn both_directions_at_once_spliced() {
    both_directions(&["--no-fds"]);
}

fn both_directions(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let _r = relay_with(flags, &sa, &sb);
    let (mut a, mut b) = (connect_unix(&pa), connect_unix(&pb));
    let (to_b, to_a) = (data(16 << 20, 2), data(16 << 20, 3));
    let exchange = |mut me: UnixStream, send: Vec<u8>, len: usize| {
        std::thread::spawn(move || {
            let mut writer = me.try_clone().unwrap();
            let w = std::thread::spawn(move || writer.write_all(&send).unwrap());
            let mut got = vec![0u8; len];
            me.read_exact(&mut got).unwrap();
            w.join().unwrap();
            got
        })
    };
    let ta = exchange(a.try_clone().unwrap(), to_b.clone(), to_a.len());
    let tb = exchange(b.try_clone().unwrap(), to_a.clone(), to_b.len());
    assert!(ta.join().unwrap() == to_a, "b -> a differs");
    assert!(tb.join().unwrap() == to_b, "a -> b differs");
    let _ = (a.flush(), b.flush());
}

#[test]
fn a_stalled_reader_slows_the_writer_and_nothing_is_lost() {
    stalled_reader(&[]);
}

#[test]
fn a_stalled_reader_slows_a_splicing_relay_too() {
    stalled_reader(&["--no-fds"]);
}

fn stalled_reader(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let r = relay_with(flags, &sa, &sb);
    let mut writer = connect_unix(&pa);
    let mut reader = connect_unix(&pb);
    let payload = data(64 << 20, 3);
    writer.set_nonblocking(true).unwrap();
    // Write until the whole chain is full: the reader reads nothing yet.
    let mut sent = 0;
    loop {
        match writer.write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Full for 200 ms on end: the chain is stalled, not just slow.
                if !chardev::fd::wait_writable(
                    std::os::fd::AsFd::as_fd(&writer),
                    Some(Duration::from_millis(200)),
                )
                .unwrap()
                {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(sent < payload.len(), "the relay swallowed all 64 MiB with nobody reading");
    }
    // Kernel buffers on both sockets plus one relay read of 1 MiB: far below 64 MiB.
    assert!(sent < 16 << 20, "the relay buffered {sent} bytes for a stalled reader");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", r.0.id())).unwrap();
    let vm_rss: u64 = rss
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(vm_rss < 64 * 1024, "relay RSS {vm_rss} kB while stalled");
    // Now read everything: the writer finishes, every byte arrives in order.
    let feeder = std::thread::spawn(move || {
        writer.set_nonblocking(false).unwrap();
        writer.write_all(&payload[sent..]).unwrap();
        payload
    });
    let mut got = vec![0u8; 64 << 20];
    reader.read_exact(&mut got).unwrap();
    let payload = feeder.join().unwrap();
    assert!(got == payload, "data differs after the stall");
}

#[test]
fn fds_pass_through_from_one_unix_socket_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let _r = relay(&sa, &sb);
    wait_until("the relay's sockets", || pa.exists() && pb.exists());
    let out = output_within(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/fd_relay_peer.py"))
            .args([&pa, &pb]),
        "fd_relay_peer.py",
    );
    assert_said_ok(&out);
}

#[test]
fn usage_errors() {
    let out = output_within(Command::new(BIN).arg("null"), "chardev-relay null");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("two chardevs are needed, 1 given"));
    let out = output_within(Command::new(BIN).args(["bogus,x=1", "null"]), "chardev-relay bogus");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn a_spec_with_its_own_id_names_that_side_and_bytes_flow() {
    // `socket,id=vm,...` used to fail with "Chardev 'a' not found": the relay looked its
    // sides up by the default ids whatever the specs said.
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let _r = relay(
        &sa.replace("socket,", "socket,id=vm,"),
        &sb.replace("socket,", "socket,id=viewers,"),
    );
    let (mut a, mut b) = (connect_unix(&pa), connect_unix(&pb));
    a.write_all(b"to the viewers\n").unwrap();
    let mut got = [0u8; 15];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to the viewers\n");
    b.write_all(b"to the vm\n").unwrap();
    let mut got = [0u8; 10];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to the vm\n");
}

#[test]
fn two_specs_with_one_id_are_refused_before_anything_starts() {
    let out = output_within(
        Command::new(BIN).args(["null,id=same", "null,id=same"]),
        "chardev-relay with one id twice",
    );
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("both chardevs have the id 'same'"), "{said}");
}

#[test]
fn pty_and_unix_socket_both_ways_where_the_pty_cannot_splice() {
    // No fd can reach a pty, so the relay sets up splicing both ways; the pty can neither
    // be spliced from nor into, and the relay must notice and copy, losing nothing.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("pty");
    let (pb, sb) = server(dir.path(), "b.sock");
    let r = Command::new(BIN)
        .args(["-v", &format!("pty,path={}", link.display()), &sb])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tty = open_terminal(&link);
    let mut sock = connect_unix(&pb);

    let (to_pty, to_sock) = (data(1 << 20, 7), data(256 << 10, 8));
    let mut tty_w = tty.try_clone().unwrap();
    let mut sock_w = sock.try_clone().unwrap();
    let writers = {
        let (to_pty, to_sock) = (to_pty.clone(), to_sock.clone());
        std::thread::spawn(move || {
            let w = std::thread::spawn(move || tty_w.write_all(&to_sock).unwrap());
            sock_w.write_all(&to_pty).unwrap();
            w.join().unwrap();
        })
    };
    let mut got_sock = vec![0u8; to_sock.len()];
    let reader = std::thread::spawn(move || {
        sock.read_exact(&mut got_sock).unwrap();
        (sock, got_sock)
    });
    let mut got_pty = vec![0u8; to_pty.len()];
    let mut tty_r = TimedPipe(tty);
    tty_r.read_exact(&mut got_pty).unwrap();
    let (sock, got_sock) = reader.join().unwrap();
    writers.join().unwrap();
    assert!(got_pty == to_pty, "unix -> pty differs");
    assert!(got_sock == to_sock, "pty -> unix differs");

    drop(sock); // the socket side closes: the relay ends
    let out = wait_output(r, "the relay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("a->b 262144 bytes (0 spliced), b->a 1048576 bytes (0 spliced)"),
        "{stderr}"
    );
}

#[test]
fn a_stalled_terminal_slows_the_socket_writer_and_each_stall_ends_when_it_reads() {
    // The relay writes into a pty whose terminal reads nothing: its writes come back short,
    // then it waits for the pty's next writable edge (it does not look for room first, see
    // `Chardev::output_always_watched`). Each time the terminal reads again that edge must
    // come, or the transfer hangs.
    const LEN: usize = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("pty");
    let (pb, sb) = server(dir.path(), "b.sock");
    let _r = relay(&format!("pty,path={}", link.display()), &sb);
    let tty = open_terminal(&link);
    let mut writer = connect_unix(&pb);
    writer.set_nonblocking(true).unwrap();
    let payload = data(LEN, 11);
    let mut tty = TimedPipe(tty);
    let mut got = Vec::with_capacity(LEN);
    let mut sent = 0;
    let mut stalls = 0;
    while got.len() < LEN {
        // Write until the chain is full for 200 ms on end (or all is sent)...
        while sent < LEN {
            match writer.write(&payload[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let room = chardev::fd::wait_writable(
                        std::os::fd::AsFd::as_fd(&writer),
                        Some(Duration::from_millis(200)),
                    )
                    .unwrap();
                    if !room {
                        stalls += 1;
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            sent - got.len() < 4 << 20,
            "{} bytes in flight to a stalled terminal",
            sent - got.len()
        );
        // ...then the terminal reads half of what is in flight, or the rest at the end.
        let take = if sent == LEN { LEN - got.len() } else { ((sent - got.len()) / 2).max(1) };
        let mut buf = vec![0u8; take];
        tty.read_exact(&mut buf).unwrap();
        got.extend_from_slice(&buf);
    }
    assert!(got == payload, "data differs after the stalls");
    eprintln!("{stalls} stalls");
    assert!(stalls >= 3, "the terminal never stalled the writer ({stalls} stalls)");
}

/// Two unix socket servers with a client each, joined (a byte went through), then `signal`:
/// the relay says so as QEMU does, shuts down cleanly, removes its socket files and exits 0
/// (issue 15, point 8; it died by the signal's default action and left both files).
fn ended_by(signal: nix::sys::signal::Signal) {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let mut r = Relay(
        Command::new(BIN)
            .args([&sa, &sb])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = r.0.stderr.take().unwrap();
    let (mut a, mut b) = (connect_unix(&pa), connect_unix(&pb));
    // Bytes flow: the relay runs, and takes signals rather than exiting at once.
    a.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    let pid = nix::unistd::Pid::from_raw(r.0.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let status = wait_exit(&mut r.0, "the relay");
    // It has exited: the pipe ends where its output does.
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    let me = std::env::args().next().unwrap();
    let line = format!(
        "chardev-relay: terminating on signal {} from pid {} ({me})",
        signal as i32,
        std::process::id()
    );
    assert_eq!(status.code(), Some(0), "{status:?}; stderr {said:?}");
    assert!(!pa.exists() && !pb.exists(), "socket files left behind: {said:?}");
    assert!(said.contains(&line), "no {line:?} in {said:?}");
}

#[test]
fn sigterm_ends_the_relay_cleanly_and_removes_its_socket_files() {
    ended_by(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn sigint_ends_the_relay_cleanly_and_removes_its_socket_files() {
    ended_by(nix::sys::signal::Signal::SIGINT);
}

/// Issue 15, point 7: `chardev-relay pty socket` with no terminal on the pty kept the newest
/// 64 KiB of 8 MiB and dropped the rest. Now the pty keeps its backlog and then slows the
/// socket's writer; a terminal that comes later gets every byte, in order.
#[test]
fn a_pty_with_no_terminal_slows_the_other_side_and_loses_nothing() {
    const LEN: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("pty");
    let (pb, sb) = server(dir.path(), "b.sock");
    let r = relay(&format!("pty,path={}", link.display()), &sb);
    wait_until("the pty link", || link.exists());
    let mut writer = connect_unix(&pb);
    writer.set_nonblocking(true).unwrap();
    let payload = data(LEN, 21);
    // Write until nothing more is taken for 500 ms: the relay has stopped reading.
    let mut sent = 0;
    while sent < LEN {
        match writer.write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = std::os::fd::AsFd::as_fd(&writer);
                if !chardev::fd::wait_writable(fd, Some(Duration::from_millis(500))).unwrap() {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("taken with no terminal: {sent} of {LEN} bytes");
    assert!(sent < LEN, "the relay took all {LEN} bytes with no terminal to give them to");
    let rss = vm_rss(r.0.id());
    assert!(rss < 32 << 20, "the relay holds {rss} bytes resident");

    // A terminal comes: the rest flows, and every byte arrives.
    let mut tty = TimedPipe(open_terminal(&link));
    let rest = payload[sent..].to_vec();
    let mut w = writer.try_clone().unwrap();
    w.set_nonblocking(false).unwrap();
    w.set_write_timeout(Some(DEADLINE)).unwrap();
    let feeder = std::thread::spawn(move || w.write_all(&rest));
    let mut got = vec![0u8; LEN];
    tty.read_exact(&mut got).unwrap();
    feeder.join().unwrap().unwrap();
    assert!(got == payload, "the terminal got other bytes than were sent");
}

/// With `backlog-full=drop` asked for explicitly, the pty drops the oldest output while no
/// terminal is there, the relay takes everything, and it says on stderr that it drops and,
/// when a terminal comes, how much it dropped: exactly what the terminal did not get.
#[test]
fn a_pty_with_backlog_full_drop_keeps_the_newest_and_says_how_much_it_dropped() {
    const LEN: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("pty");
    let (pb, sb) = server(dir.path(), "b.sock");
    let mut r = Relay(
        Command::new(BIN)
            .args([&format!("pty,path={},backlog-full=drop", link.display()), &sb])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until("the pty link", || link.exists());
    let mut writer = connect_unix(&pb);
    writer.set_write_timeout(Some(DEADLINE)).unwrap();
    // The stream ends with the only '!' in it.
    let mut payload: Vec<u8> =
        data(LEN, 22).into_iter().map(|b| if b == b'!' { b'?' } else { b }).collect();
    payload.push(b'!');
    writer.write_all(&payload).unwrap();
    let mut stderr = std::io::BufReader::new(TimedPipe(r.0.stderr.take().unwrap()));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("backlog is full (65536 bytes): dropping the oldest output"), "{line}");

    let mut tty = TimedPipe(open_terminal(&link));
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.last() != Some(&b'!') {
        let n = tty.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.len() >= 64 << 10, "the terminal got {} bytes, less than the backlog", got.len());
    assert!(payload.ends_with(&got), "the terminal's bytes are not the end of the stream");
    line.clear();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let dropped = payload.len() - got.len();
    assert!(line.contains(&format!(": {dropped} bytes of output were dropped")), "{line}");
}

fn vm_rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

nix::ioctl_read_bad!(unix_outq, nix::libc::TIOCOUTQ, nix::libc::c_int);

/// Bytes a unix stream socket has sent that its peer has not read yet (`SIOCOUTQ`).
fn unread_by_peer(sock: &UnixStream) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: the fd is open for the call, and the ioctl writes one int into `n`.
    unsafe { unix_outq(std::os::fd::AsRawFd::as_raw_fd(sock), &mut n) }.unwrap();
    n as usize
}

/// A chardev's `logfile=` holds what the relay wrote into it once, also when the bytes had
/// to wait for a client: the relay used to log them when the write found no client (as QEMU
/// logs output its backend refuses), and again when it wrote them after the client came.
#[test]
fn output_that_waits_for_a_client_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let _r = relay(&format!("{sa},logfile={}", log.display()), &sb);
    let mut b = connect_unix(&pb);
    b.write_all(b"before the client\n").unwrap();
    // The relay has read it (and found side a with no client) once b's bytes are all read.
    wait_until("the relay to read side b", || unread_by_peer(&b) == 0);
    let mut a = TimedPipe(connect_unix(&pa));
    let mut got = [0u8; 18];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"before the client\n");
    b.write_all(b"after it\n").unwrap();
    let mut got = [0u8; 9];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after it\n");
    let want = b"before the client\nafter it\n";
    wait_until("the log to have the second line", || {
        std::fs::read(&log).is_ok_and(|l| l.ends_with(b"after it\n"))
    });
    let logged = std::fs::read(&log).unwrap();
    assert_eq!(String::from_utf8_lossy(&logged), String::from_utf8_lossy(want));
}
