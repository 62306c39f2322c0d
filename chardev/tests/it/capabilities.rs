//! What only some backends do, reached through capabilities: a serial line
//! ([`Chardev::serial_line`]) answers a frontend's breaks, line settings and modem lines,
//! and [`Registry::with_backend`] hands management a backend of a known type.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use chardev::{
    Chardev, Error, FrontendHandle, Io, ModemLines, Parity, Registry, SerialLine, SerialParams,
};
use chardev_testkit::*;

/// What a [`Line`] was asked to do, in order.
type Log = Arc<Mutex<Vec<String>>>;

/// An embedder's backend on a serial line of its own: records what the frontend asks.
struct Line {
    log: Log,
    lines: ModemLines,
}

impl Line {
    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }
}

impl SerialLine for Line {
    fn send_break(&mut self) -> chardev::Result<()> {
        self.note("break".into());
        Ok(())
    }
    fn set_params(&mut self, params: &SerialParams) -> chardev::Result<()> {
        self.note(format!("{} {:?}", params.speed, params.parity));
        Ok(())
    }
    fn modem_lines(&mut self) -> chardev::Result<ModemLines> {
        Ok(self.lines)
    }
    fn set_modem_lines(&mut self, lines: ModemLines) -> chardev::Result<()> {
        self.lines = lines;
        Ok(())
    }
}

impl Chardev for Line {
    fn register(&mut self, _io: &mut Io<'_>) -> chardev::Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _registry: &mio::Registry) {}
    fn write(&mut self, buf: &[u8], _fds: &[BorrowedFd<'_>]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn serial_line(&mut self) -> Option<&mut dyn SerialLine> {
        Some(self)
    }
    fn kind(&self) -> &'static str {
        "line"
    }
}

fn add_line(reg: &Registry, id: &str) -> Log {
    let log = Log::default();
    let line = Line { log: Arc::clone(&log), lines: ModemLines::empty() };
    reg.add_chardev(id, Box::new(line)).expect("add the line");
    log
}

/// Every serial-line call of a frontend handle, and what it says.
fn serial_calls(h: &FrontendHandle) -> [chardev::Result<()>; 4] {
    [
        h.send_break(),
        h.set_serial_params(&SerialParams::default()),
        h.modem_lines().map(drop),
        h.set_modem_lines(ModemLines::DTR),
    ]
}

#[test]
fn a_backend_with_a_serial_line_gets_the_frontends_breaks_settings_and_modem_lines() {
    let (_lp, reg) = spawn_registry();
    let log = add_line(&reg, "l0");
    let h = connect(&reg, "l0");
    h.send_break().expect("break");
    let odd = SerialParams { speed: 9600, parity: Parity::Odd, ..SerialParams::default() };
    h.set_serial_params(&odd).expect("set params");
    assert_eq!(*log.lock().unwrap(), ["break", "9600 Odd"]);
    h.set_modem_lines(ModemLines::DTR | ModemLines::RTS).expect("set lines");
    assert_eq!(h.modem_lines().expect("lines"), ModemLines::DTR | ModemLines::RTS);
}

#[test]
fn a_backend_without_a_serial_line_refuses_each_call_naming_itself() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=n0");
    let h = connect(&reg, "n0");
    let what = ["send a break", "set serial parameters", "read modem lines", "set modem lines"];
    for (result, operation) in serial_calls(&h).into_iter().zip(what) {
        match result {
            Err(Error::Unsupported { what, operation: op }) => {
                assert_eq!((what.as_str(), op), ("null", operation));
            }
            other => panic!("{operation} on a null chardev: {other:?}"),
        }
    }
}

#[test]
fn a_hot_swap_takes_the_serial_line_away_with_the_backend() {
    let (_lp, reg) = spawn_registry();
    add_line(&reg, "l0");
    let h = connect(&reg, "l0");
    h.send_break().expect("break on the line");
    reg.change("l0", &"null,id=l0".parse().expect("spec")).expect("change");
    let err = h.send_break().expect_err("a null chardev has no serial line");
    assert!(err.to_string().contains("null"), "{err}");
}

#[test]
fn management_reaches_a_backend_of_its_own_type_by_id() {
    let (_lp, reg) = spawn_registry();
    let log = add_line(&reg, "l0");
    let noted = reg
        .with_backend("l0", |line: &mut Line| {
            line.lines = ModemLines::CTS;
            line.log.lock().unwrap().len()
        })
        .expect("a Line");
    assert_eq!(noted, 0);
    assert!(log.lock().unwrap().is_empty());
    assert_eq!(connect(&reg, "l0").modem_lines().expect("lines"), ModemLines::CTS);
}

#[test]
fn management_asking_for_the_wrong_type_is_told_what_the_chardev_is() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=n0");
    add(&reg, "null,id=m,mux=on");
    let err = reg.with_backend("n0", |_: &mut Line| ()).expect_err("a null chardev");
    assert!(
        matches!(&err, Error::WrongBackend { id, kind: "null", expected: "Line" } if id == "n0"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "chardev 'n0' is a null backend, not a Line");
    // The mux is no backend of its own; its base is the null one.
    let err = reg.with_backend("m", |_: &mut Line| ()).expect_err("a mux");
    assert_eq!(err.to_string(), "chardev 'm' is a mux backend, not a Line");
    let err = reg.with_backend("m-base", |_: &mut Line| ()).expect_err("a null base");
    assert_eq!(err.to_string(), "chardev 'm-base' is a null backend, not a Line");
    let err = reg.with_backend("nope", |_: &mut Line| ()).expect_err("no such chardev");
    assert!(matches!(&err, Error::NotFound(id) if id == "nope"), "{err:?}");
}
