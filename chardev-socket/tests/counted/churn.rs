//! chardev-add, chardev-remove and chardev-change from another thread while data flows: a
//! peer streams a pattern into a unix socket server chardev and its frontend checks every
//! byte, while a churn thread adds, uses and removes ringbuf, null, file and unix socket
//! chardevs and hot-swaps the backend under a spare chardev's frontend, for 3 s times
//! `CHARDEV_SOAK`. No step may take longer than the deadline (a deadlock fails the test with
//! the step it hung in), the stream arrives intact, and once everything is removed the
//! process holds as many fds as before. It counts the whole process's fds: it holds
//! `alone()`, as every test of this binary does, so the count is its own.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chardev::{Event, Frontend, FrontendHandle, Registry};
use chardev_testkit::*;

/// How long the churn runs at `CHARDEV_SOAK=1`.
const CHURN: Duration = Duration::from_secs(3);

/// Churned chardevs stay this many rounds before they are removed, so several are live at once.
const LIVE_ROUNDS: usize = 3;

/// The stream's 8-byte word number `k` (splitmix64): a lost, repeated or reordered byte
/// anywhere changes what follows.
fn word(k: u64) -> [u8; 8] {
    let mut z = k.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_le_bytes()
}

/// What the data chardev's frontend saw when an event came: (event, bytes so far, first bad).
type Seen = (Event, u64, Option<u64>);

/// The data chardev's frontend: checks each byte against the stream, reports events.
struct Verifier {
    got: u64,
    word: [u8; 8],
    bad_at: Option<u64>,
    progress: Arc<AtomicU64>,
    tx: Sender<Seen>,
}

impl Frontend for Verifier {
    fn can_receive(&mut self) -> usize {
        64 << 10
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        for &b in data {
            if self.got % 8 == 0 {
                self.word = word(self.got / 8);
            }
            if b != self.word[(self.got % 8) as usize] && self.bad_at.is_none() {
                self.bad_at = Some(self.got);
            }
            self.got += 1;
        }
        self.progress.store(self.got, Ordering::Relaxed);
    }
    fn event(&mut self, event: Event) {
        let _ = self.tx.send((event, self.got, self.bad_at));
    }
}

/// Fails the test for a step that did not finish. If the loop itself is stuck, unwinding may
/// hang in a drop that waits for it: a watchdog then ends the process, saying why.
fn stuck(msg: String) -> ! {
    let note = msg.clone();
    std::thread::spawn(move || {
        std::thread::sleep(DEADLINE); // a watchdog's bound, not a synchronisation
        let _ = writeln!(std::io::stderr(), "{note}\n(unwinding hung too: aborting)");
        std::process::abort();
    });
    panic!("{msg}");
}

/// The chardevs one churn round made, kept until they are removed.
struct Round {
    n: usize,
    file: PathBuf,
    sock: PathBuf,
    sock_handle: FrontendHandle,
    sock_rec: Record,
    client: UnixStream,
}

/// The backends the spare chardev goes through, in turn (`null` never opens).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Spare {
    Ringbuf,
    File,
    Socket,
    Null,
}

/// Counts of what the churn did.
#[derive(Debug, Default)]
struct Churned {
    rounds: usize,
    added: usize,
    removed: usize,
    changed: usize,
}

/// The churn thread's body: rounds of add/use/change/remove until `until`, then removes what
/// is left. `beat` hears of each step before it starts.
fn churn(reg: &Registry, dir: &Path, until: Instant, beat: &Sender<String>) -> Churned {
    let step = |what: String| beat.send(what).expect("the test stopped listening");
    let mut done = Churned::default();
    let mut live: VecDeque<Round> = VecDeque::new();

    step("connect the spare".into());
    let spare = connect(reg, "spare");
    let spare_rec = record(&spare, 4096);
    spare_rec.expect_event(Event::Opened);
    let (mut spare_kind, mut spare_open) = (Spare::Ringbuf, true);
    let mut spare_file: Option<(PathBuf, Vec<u8>)> = None;
    let mut spare_client: Option<UnixStream> = None;

    let mut n = 0;
    while Instant::now() < until {
        // Add one of each kind, and use it.
        step(format!("round {n}: add ringbuf rb{n}"));
        add(reg, &format!("ringbuf,id=rb{n},size=1024"));
        let text = format!("ringbuf {n}");
        reg.ringbuf_write(&format!("rb{n}"), text.as_bytes()).expect("ringbuf-write");
        assert_eq!(
            reg.ringbuf_read(&format!("rb{n}"), 1024).expect("ringbuf-read"),
            text.as_bytes()
        );

        step(format!("round {n}: add null nl{n}, change it to a ringbuf"));
        add(reg, &format!("null,id=nl{n}"));
        let to = format!("ringbuf,id=nl{n},size=64").parse().expect("spec");
        reg.change(&format!("nl{n}"), &to).expect("change a chardev without a frontend");
        reg.ringbuf_write(&format!("nl{n}"), b"now a ringbuf").expect("ringbuf-write");

        step(format!("round {n}: add file f{n}, write to it"));
        let file = dir.join(format!("f{n}.out"));
        add(reg, &format!("file,id=f{n},path={}", file.display()));
        let h = connect(reg, &format!("f{n}"));
        h.write_all(format!("file {n}").as_bytes()).expect("write to a file chardev");
        h.detach();

        step(format!("round {n}: add unix socket server s{n}, a client talks to it"));
        let sock = dir.join(format!("s{n}.sock"));
        add(reg, &format!("socket,id=s{n},path={},server=on,wait=off", sock.display()));
        let sock_handle = connect(reg, &format!("s{n}"));
        let sock_rec = record(&sock_handle, 4096);
        let mut client = connect_unix(&sock);
        sock_rec.expect_event(Event::Opened);
        client.write_all(format!("socket {n}").as_bytes()).expect("client write");
        assert_eq!(sock_rec.data(format!("socket {n}").len()), format!("socket {n}").as_bytes());
        done.added += 4;
        live.push_back(Round { n, file, sock, sock_handle, sock_rec, client });

        step(format!("round {n}: query-chardev"));
        let ids = reg.ids();
        for id in ["data", "spare", &format!("rb{n}"), &format!("s{n}")] {
            assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
        }
        let _ = reg.query();

        // Hot-swap the spare's backend under its frontend.
        let next = [Spare::Ringbuf, Spare::File, Spare::Socket, Spare::Null][(n + 1) % 4];
        step(format!("round {n}: change spare from {spare_kind:?} to {next:?}"));
        let spec = match next {
            Spare::Ringbuf => "ringbuf,id=spare,size=4096".to_string(),
            Spare::File => {
                format!("file,id=spare,path={}", dir.join(format!("spare{n}.out")).display())
            }
            Spare::Socket => format!(
                "socket,id=spare,path={},server=on,wait=off",
                dir.join(format!("spare{n}.sock")).display()
            ),
            Spare::Null => "null,id=spare".to_string(),
        };
        reg.change("spare", &spec.parse().expect("spec")).expect("chardev-change");
        done.changed += 1;
        if spare_open {
            spare_rec.expect_event(Event::Closed);
        }
        if let Some((path, want)) = spare_file.take() {
            assert_eq!(std::fs::read(&path).expect("read the spare's old file"), want);
            assert_eq!(fds_open_under(&path), 0, "the spare's old file is still open");
        }
        if let Some(mut old) = spare_client.take() {
            let mut buf = [0u8; 16];
            match old.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => {
                    panic!("the swapped-out socket's client should see the end, got {other:?}")
                }
            }
        }
        spare_open = !matches!(next, Spare::Socket | Spare::Null);
        if spare_open {
            spare_rec.expect_event(Event::Opened);
        }
        let text = format!("spare {n}");
        match next {
            Spare::Ringbuf => {
                spare.write_all(text.as_bytes()).expect("write to the spare");
                assert_eq!(reg.ringbuf_read("spare", 4096).expect("ringbuf-read"), text.as_bytes());
            }
            Spare::File => {
                spare.write_all(text.as_bytes()).expect("write to the spare");
                spare_file = Some((dir.join(format!("spare{n}.out")), text.into_bytes()));
            }
            Spare::Socket => {
                let mut c = connect_unix(&dir.join(format!("spare{n}.sock")));
                spare_rec.expect_event(Event::Opened);
                spare_open = true;
                c.write_all(text.as_bytes()).expect("client write");
                assert_eq!(spare_rec.data(text.len()), text.as_bytes());
                spare.write_all(b"back").expect("write to the spare's client");
                let mut back = [0u8; 4];
                c.read_exact(&mut back).expect("the spare's client reads");
                assert_eq!(&back, b"back");
                spare_client = Some(c);
            }
            Spare::Null => spare.write_all(text.as_bytes()).expect("write to the spare"),
        }
        spare_kind = next;

        // Remove what an earlier round made.
        while live.len() > LIVE_ROUNDS || (Instant::now() >= until && !live.is_empty()) {
            let round = live.pop_front().expect("a live round");
            remove_round(reg, round, &step);
            done.removed += 4;
        }
        n += 1;
    }
    while let Some(round) = live.pop_front() {
        remove_round(reg, round, &step);
        done.removed += 4;
    }
    step("detach the spare".into());
    spare.detach();
    drop(spare_client);
    done.rounds = n;
    done
}

/// Removes the chardevs of one round and checks that they let go of their files.
fn remove_round(reg: &Registry, mut round: Round, step: &impl Fn(String)) {
    let n = round.n;
    step(format!("round {n}: remove rb{n}, nl{n}, f{n}"));
    for id in [format!("rb{n}"), format!("nl{n}"), format!("f{n}")] {
        reg.remove(&id).unwrap_or_else(|e| panic!("remove {id}: {e}"));
    }
    assert_eq!(
        std::fs::read(&round.file).expect("read a removed file chardev's file"),
        format!("file {n}").as_bytes()
    );
    assert_eq!(fds_open_under(&round.file), 0, "f{n}'s file is still open");

    step(format!("round {n}: remove s{n} under its frontend"));
    let busy = reg.remove(&format!("s{n}")).expect_err("a chardev with a frontend is busy");
    assert!(busy.to_string().contains("busy"), "{busy}");
    reg.remove_forced(&format!("s{n}")).expect("chardev-remove, forced");
    round.sock_rec.expect_event(Event::Closed);
    assert!(round.sock_handle.write(b"x").is_err(), "s{n}'s handle still writes after removal");
    let mut buf = [0u8; 16];
    match round.client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("s{n}'s client should see the end, got {other:?}"),
    }
    assert!(!round.sock.exists(), "s{n}'s socket file outlived it");
    assert!(!reg.contains(&format!("s{n}")));
}

#[test]
fn add_remove_and_change_from_another_thread_while_data_flows() {
    let _alone = alone();
    let churn_for = CHURN * u32::try_from(soak_scale()).expect("CHARDEV_SOAK fits in u32");
    let dir = tempfile::tempdir().unwrap();
    let (lp, reg) = spawn_registry();
    chardev_socket::register(&reg);
    settle(lp.handle());
    let fds_before = open_fds();

    // The stream: a peer writes it into a unix socket server until told to stop.
    let data_sock = dir.path().join("data.sock");
    add(&reg, &format!("socket,id=data,path={},server=on,wait=off", data_sock.display()));
    add(&reg, "ringbuf,id=spare,size=4096");
    let data = connect(&reg, "data");
    let progress = Arc::new(AtomicU64::new(0));
    let (tx, seen) = channel();
    data.set_frontend(Verifier {
        got: 0,
        word: [0; 8],
        bad_at: None,
        progress: Arc::clone(&progress),
        tx,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (written_tx, written) = channel();
    let mut peer = connect_unix(&data_sock);
    peer.set_write_timeout(Some(DEADLINE)).unwrap();
    std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            const WORDS: u64 = 8 << 10; // 64 KiB a write
            let mut chunk = Vec::with_capacity(WORDS as usize * 8);
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                chunk.clear();
                (k..k + WORDS).for_each(|w| chunk.extend_from_slice(&word(w)));
                if let Err(e) = peer.write_all(&chunk) {
                    let _ =
                        written_tx.send(Err(format!("the peer's write at byte {}: {e}", k * 8)));
                    return;
                }
                k += WORDS;
            }
            let _ = written_tx.send(Ok(k * 8)); // and the stream closes
        }
    });
    match seen.recv_timeout(DEADLINE) {
        Ok((Event::Opened, 0, None)) => {}
        other => panic!("the data chardev should open first, got {other:?}"),
    }
    let until_bytes = |n: u64| {
        wait_until("the stream to flow", || progress.load(Ordering::Relaxed) >= n);
    };
    until_bytes(1 << 20);

    // The churn, on its own thread; each of its steps must finish within the deadline, and
    // the stream must keep moving meanwhile.
    let (beat, beats) = channel();
    let start = Instant::now();
    let at_start = progress.load(Ordering::Relaxed);
    let churner = std::thread::spawn({
        let (reg, dir) = (reg.clone(), dir.path().to_path_buf());
        move || churn(&reg, &dir, start + churn_for, &beat)
    });
    let (mut last_step, mut steps, mut longest) =
        (String::from("(none yet)"), 0usize, Duration::ZERO);
    let (mut last_bytes, mut moved_at, mut beat_at) = (at_start, Instant::now(), Instant::now());
    loop {
        match beats.recv_timeout(DEADLINE) {
            Ok(step) => {
                longest = longest.max(beat_at.elapsed());
                beat_at = Instant::now();
                last_step = step;
                steps += 1;
            }
            Err(RecvTimeoutError::Timeout) => stuck(format!(
                "churn step {last_step:?} did not finish within {DEADLINE:?}: a deadlock?"
            )),
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = progress.load(Ordering::Relaxed);
        if now > last_bytes {
            (last_bytes, moved_at) = (now, Instant::now());
        } else if moved_at.elapsed() > DEADLINE {
            stuck(format!(
                "the stream stopped at byte {now} for {DEADLINE:?}, at churn step {last_step:?}"
            ));
        }
    }
    let churned = match churner.join() {
        Ok(c) => c,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let churn_took = start.elapsed();
    let during = progress.load(Ordering::Relaxed) - at_start;
    assert!(during > 0, "no data flowed during the churn");

    // The peer stops and closes: every byte it wrote arrives intact, then one Closed.
    stop.store(true, Ordering::Relaxed);
    let total = match written.recv_timeout(DEADLINE) {
        Ok(Ok(total)) => total,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => stuck(format!("the peer did not stop within {DEADLINE:?}")),
    };
    let mut last = progress.load(Ordering::Relaxed);
    let (event, got, bad_at) = loop {
        match seen.recv_timeout(DEADLINE) {
            Ok(s) => break s,
            Err(RecvTimeoutError::Timeout) => {
                let now = progress.load(Ordering::Relaxed);
                if now == last {
                    stuck(format!("the stream stopped at byte {now} of {total} for {DEADLINE:?}"));
                }
                last = now;
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the data frontend was dropped"),
        }
    };
    eprintln!(
        "churn: {} rounds in {churn_took:.2?}: {} chardevs added, {} removed, {} changes of the \
         spare; {steps} steps, the longest {longest:.2?}",
        churned.rounds, churned.added, churned.removed, churned.changed
    );
    eprintln!(
        "stream: {got} bytes ({during} during the churn, {:.0} MB/s), first bad byte {bad_at:?}",
        during as f64 / churn_took.as_secs_f64() / 1e6
    );
    assert_eq!(event, Event::Closed, "after {got} bytes");
    assert_eq!(bad_at, None, "the first byte of the stream that was wrong");
    assert_eq!(got, total, "bytes the frontend got of those the peer wrote");
    assert!(seen.recv_timeout(QUIET).is_err(), "an event after Closed");
    assert!(churned.rounds > 0 && churned.added == churned.removed, "{churned:?}");

    // Everything removed: the fds are back, no socket file is left.
    data.detach();
    reg.remove("data").expect("remove the data chardev");
    reg.remove("spare").expect("remove the spare");
    assert!(reg.ids().is_empty(), "left: {:?}", reg.ids());
    settle(lp.handle());
    let fds_after = open_fds();
    eprintln!("fds: {fds_before} before, {fds_after} after");
    assert_eq!(fds_after, fds_before, "fds open once every chardev is removed");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sock"))
        .collect();
    assert!(left.is_empty(), "socket files left behind: {left:?}");
}
