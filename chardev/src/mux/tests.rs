//! The mux on its own: escape keys, focus moves, carry buffers and timestamps, with no
//! loop and no I/O.

use std::time::Duration;

use super::*;

/// What the mux did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Data(usize, Vec<u8>),
    Fds(usize, usize),
    Out(usize),
    In(usize),
    Command(Command, usize),
    Dropped(usize, usize),
}

/// Frontends with a given room each (`None`: no frontend in that slot).
#[derive(Default)]
struct Slots {
    room: [Option<usize>; MAX_MUX],
    seen: Vec<Seen>,
}

impl Slots {
    fn with(room: [Option<usize>; MAX_MUX]) -> Slots {
        Slots { room, seen: Vec::new() }
    }

    fn take(&mut self) -> Vec<Seen> {
        std::mem::take(&mut self.seen)
    }

    /// All data slot `slot` got, concatenated.
    fn data(&self, slot: usize) -> Vec<u8> {
        let mut all = Vec::new();
        for s in &self.seen {
            if let Seen::Data(at, d) = s {
                if *at == slot {
                    all.extend_from_slice(d);
                }
            }
        }
        all
    }
}

impl MuxFrontends for Slots {
    fn present(&mut self, slot: usize) -> bool {
        self.room[slot].is_some()
    }
    fn can_receive(&mut self, slot: usize) -> usize {
        self.room[slot].expect("asked a slot without a frontend")
    }
    fn receive(&mut self, slot: usize, data: &[u8], fds: Vec<OwnedFd>) {
        let room = self.room[slot].as_mut().expect("gave to a slot without a frontend");
        assert!(data.len() <= *room, "{} bytes for room {room}", data.len());
        *room -= data.len();
        if !data.is_empty() {
            self.seen.push(Seen::Data(slot, data.to_vec()));
        }
        if !fds.is_empty() {
            self.seen.push(Seen::Fds(slot, fds.len()));
        }
    }
    fn dropped(&mut self, slot: usize, len: usize) {
        self.seen.push(Seen::Dropped(slot, len));
    }
    fn focus_out(&mut self, slot: usize) {
        self.seen.push(Seen::Out(slot));
    }
    fn focus_in(&mut self, slot: usize) {
        self.seen.push(Seen::In(slot));
    }
    fn command(&mut self, command: Command, focus: usize) {
        self.seen.push(Seen::Command(command, focus));
    }
}

const ROOMY: Option<usize> = Some(usize::MAX);

fn feed(mux: &mut Mux, fe: &mut Slots, data: &[u8]) {
    mux.feed(data, &mut Vec::new(), fe);
}

#[test]
fn plain_bytes_go_to_the_focus_in_one_piece() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([ROOMY, ROOMY, None, None]));
    feed(&mut mux, &mut fe, b"hello");
    assert_eq!(fe.take(), [Seen::Data(0, b"hello".to_vec())]);
}

#[test]
fn escape_keys_act_and_are_not_input() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([ROOMY, None, None, None]));
    feed(&mut mux, &mut fe, b"a\x01hb\x01?\x01xc\x01bd\x01te\x01sf\x01\x01g");
    assert_eq!(
        fe.take(),
        [
            Seen::Data(0, b"a".to_vec()),
            Seen::Command(Command::Help, 0),
            Seen::Data(0, b"b".to_vec()),
            Seen::Command(Command::Help, 0),
            Seen::Command(Command::Exit, 0),
            Seen::Data(0, b"c".to_vec()),
            Seen::Command(Command::Break, 0),
            Seen::Data(0, b"d".to_vec()),
            Seen::Command(Command::Timestamps, 0),
            Seen::Data(0, b"e".to_vec()),
            // `s` (and any unknown key) is swallowed.
            Seen::Data(0, b"f".to_vec()),
            Seen::Data(0, b"\x01".to_vec()),
            Seen::Data(0, b"g".to_vec()),
        ]
    );
}

#[test]
fn an_escape_at_the_end_of_one_read_acts_on_the_first_byte_of_the_next() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([ROOMY, None, None, None]));
    feed(&mut mux, &mut fe, b"ab\x01");
    feed(&mut mux, &mut fe, b"\x01cd");
    feed(&mut mux, &mut fe, b"\x01");
    feed(&mut mux, &mut fe, b"x");
    assert_eq!(
        fe.take(),
        [
            Seen::Data(0, b"ab".to_vec()),
            Seen::Data(0, b"\x01".to_vec()),
            Seen::Data(0, b"cd".to_vec()),
            Seen::Command(Command::Exit, 0),
        ]
    );
}

#[test]
fn ctrl_a_c_cycles_through_the_present_frontends() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([ROOMY, None, ROOMY, ROOMY]));
    feed(&mut mux, &mut fe, b"0\x01c2\x01c3\x01c0");
    assert_eq!(
        fe.take(),
        [
            Seen::Data(0, b"0".to_vec()),
            Seen::Out(0),
            Seen::In(2),
            Seen::Data(2, b"2".to_vec()),
            Seen::Out(2),
            Seen::In(3),
            Seen::Data(3, b"3".to_vec()),
            Seen::Out(3),
            Seen::In(0),
            Seen::Data(0, b"0".to_vec()),
        ]
    );
}

#[test]
fn ctrl_a_c_with_one_frontend_keeps_the_focus_and_says_so() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([None, ROOMY, None, None]));
    mux.take_focus(1, &mut fe);
    assert_eq!(fe.take(), [Seen::Out(0), Seen::In(1)]);
    feed(&mut mux, &mut fe, b"\x01c");
    assert_eq!(fe.take(), [Seen::In(1)]);
    let mut none = Slots::default();
    feed(&mut mux, &mut none, b"\x01c");
    assert_eq!(none.take(), [], "no frontend: no move");
    mux.take_focus(MAX_MUX, &mut fe);
    assert_eq!((mux.focus(), fe.take()), (1, vec![]), "no such slot");
}

#[test]
fn input_for_an_empty_slot_is_dropped() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([None, ROOMY, None, None]));
    feed(&mut mux, &mut fe, b"lost");
    assert_eq!(fe.take(), [Seen::Dropped(0, 4)]);
    assert_eq!(mux.carried(), 0);
    assert_eq!(mux.room(&mut fe), MUX_BUFFER, "escapes are still read");
}

#[test]
fn what_the_focus_cannot_take_is_carried_in_order_and_escapes_still_work() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([Some(3), ROOMY, None, None]));
    assert_eq!(mux.room(&mut fe), MUX_BUFFER, "a small room still reads escapes");
    feed(&mut mux, &mut fe, b"abcdef");
    assert_eq!(fe.take(), [Seen::Data(0, b"abc".to_vec())]);
    assert_eq!(mux.carried(), 3);
    assert_eq!(mux.room(&mut fe), MUX_BUFFER - 3);
    // More input queues behind the carried bytes; a command still acts at once.
    feed(&mut mux, &mut fe, b"g\x01bh");
    assert_eq!(fe.take(), [Seen::Command(Command::Break, 0)]);
    assert_eq!(mux.carried(), 5);
    assert!(!mux.can_deliver_carried(&mut fe), "no room");
    fe.room[0] = Some(2);
    assert!(mux.can_deliver_carried(&mut fe));
    mux.deliver_carried(&mut fe);
    assert_eq!(fe.take(), [Seen::Data(0, b"de".to_vec())]);
    fe.room[0] = ROOMY;
    mux.deliver_carried(&mut fe);
    assert_eq!(fe.take(), [Seen::Data(0, b"fgh".to_vec())]);
    assert_eq!(mux.carried(), 0);
    assert_eq!(mux.room(&mut fe), usize::MAX - 3, "what the frontend takes now");
}

#[test]
fn carry_buffers_are_per_frontend() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([Some(0), ROOMY, None, None]));
    feed(&mut mux, &mut fe, b"for 0\x01cfor 1");
    assert_eq!(
        fe.take(),
        [Seen::Out(0), Seen::In(1), Seen::Data(1, b"for 1".to_vec())],
        "slot 0's bytes wait for slot 0"
    );
    assert_eq!(mux.carried(), 0, "nothing waits for slot 1");
    feed(&mut mux, &mut fe, b"\x01c");
    assert_eq!(mux.carried(), 5);
    fe.room[0] = ROOMY;
    mux.deliver_carried(&mut fe);
    assert_eq!(fe.take(), [Seen::Out(1), Seen::In(0), Seen::Data(0, b"for 0".to_vec())]);
    feed(&mut mux, &mut fe, b"x");
    fe.room[0] = Some(0);
    feed(&mut mux, &mut fe, b"y");
    mux.clear_carried();
    assert_eq!(mux.carried(), 0, "a hot swap forgets them");
    assert_eq!(fe.data(0), b"x");
}

#[test]
fn fds_go_with_the_first_bytes_delivered() {
    let (mut mux, mut fe) = (Mux::new(), Slots::with([ROOMY, None, None, None]));
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut fds = vec![OwnedFd::from(a)];
    mux.feed(b"\x01\x01ab", &mut fds, &mut fe);
    assert_eq!(
        fe.take(),
        [Seen::Data(0, b"\x01".to_vec()), Seen::Data(0, b"ab".to_vec()), Seen::Fds(0, 1)],
        "a literal Ctrl-A carries no fds"
    );
    assert!(fds.is_empty());
    let (c, _d) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut fds = vec![OwnedFd::from(c)];
    mux.feed(b"\x01h", &mut fds, &mut fe);
    assert_eq!(fds.len(), 1, "all filtered out: the caller hands them on");
}

#[test]
fn the_fuzz_regression_input_leaves_what_qemu_leaves() {
    // fuzz/regressions/mux_escape/leak-337a9838...: its first byte was the read size.
    let input = include_bytes!(
        "../../../fuzz/regressions/mux_escape/leak-337a9838ab058f574b8d2517ce5f3d202d7ed4ae"
    );
    let (&chunk, input) = input.split_first().expect("not empty");
    let (mut mux, mut fe) = (Mux::new(), Slots::with([ROOMY, ROOMY, None, None]));
    for piece in input.chunks(usize::from(chunk % 16) + 1) {
        feed(&mut mux, &mut fe, piece);
    }
    // `ab`, a literal Ctrl-A, `c`; help; Ctrl-A c moves to slot 1, which gets `de`.
    assert_eq!(fe.data(0), b"ab\x01c", "{:?}", fe.seen);
    assert_eq!(fe.data(1), b"de", "{:?}", fe.seen);
    let commands: Vec<_> = fe
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Command(c, _) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        [Command::Help, Command::Timestamps, Command::Break, Command::Exit],
        "{:?}",
        fe.seen
    );
}

#[test]
fn timestamps_stamp_each_line_from_the_first_output() {
    let mut ts = Timestamps::default();
    assert!(!ts.is_on());
    ts.toggle();
    assert!(ts.is_on());
    let t0 = Instant::now();
    let mut out = Vec::new();
    ts.stamp(b"one\ntw", t0, &mut out);
    ts.stamp(b"o\nthree\n", t0 + Duration::from_millis(3_723_456), &mut out);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "[00:00:00.000] one\n[00:00:00.000] two\n[01:02:03.456] three\n"
    );
    ts.toggle();
    ts.toggle();
    out.clear();
    ts.stamp(b"x", t0 + Duration::from_secs(10), &mut out);
    assert_eq!(out, b"[00:00:00.000] x", "the clock starts again after a toggle");
}
