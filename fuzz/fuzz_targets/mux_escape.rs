//! The mux's escape filter (`Core::feed` with `mux::command`), reached through the public
//! API: a `mux=on` chardev whose backend is the fuzz input, on a real `EventLoop` stepped with
//! `poll_once`, and two frontends. The bytes the frontends get, in order, must be exactly
//! what QEMU's `Ctrl-A` rules leave of the input.
#![no_main]

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chardev::backend::{Chardev, Input, Io};
use chardev::frontend::{Event, Frontend};
use chardev::options::ChardevSpec;
use chardev::{EventLoop, Registry};
use libfuzzer_sys::fuzz_target;

const ESCAPE: u8 = 0x01;

/// A backend that hands the fuzz input to the loop, `chunk` bytes per read.
struct Feeder {
    input: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl Chardev for Feeder {
    fn register(&mut self, io: &mut Io<'_>) -> chardev::Result<()> {
        io.event(Event::Opened);
        io.input_ready();
        Ok(())
    }
    fn deregister(&mut self, _registry: &mio::Registry) {}
    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], _fds: &mut Vec<OwnedFd>) -> Input {
        if self.at == self.input.len() {
            return Input::End;
        }
        let n = self.chunk.min(buf.len()).min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        io.input_ready();
        Input::Data(n)
    }
    fn write(&mut self, buf: &[u8], _fds: &[BorrowedFd<'_>]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn kind(&self) -> &'static str {
        "feeder"
    }
}

/// A frontend with room for anything, appending what it gets to a log both share.
struct Recorder(Arc<Mutex<Vec<u8>>>);

impl Frontend for Recorder {
    fn can_receive(&mut self) -> usize {
        1 << 20
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        self.0.lock().unwrap().extend_from_slice(data);
    }
    fn event(&mut self, _event: Event) {}
}

/// What QEMU's mux passes on: `Ctrl-A Ctrl-A` is one `Ctrl-A`, `Ctrl-A` and any other byte
/// is a command (or swallowed), everything else is data.
fn expected(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut escape = false;
    for &b in input {
        if escape {
            escape = false;
            if b == ESCAPE {
                out.push(ESCAPE);
            }
        } else if b == ESCAPE {
            escape = true;
        } else {
            out.push(b);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else { return };
    let mut lp = EventLoop::new().expect("loop");
    let exited = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&exited);
    lp.set_exit_handler(move || flag.store(true, Ordering::Release));
    let registry = Registry::new(&lp.handle());
    let feeder = Mutex::new(Some(Feeder {
        input: input.to_vec(),
        at: 0,
        chunk: usize::from(chunk % 16) + 1,
    }));
    registry.register_backend("socket", move |_spec, _cx| {
        let feeder = feeder.lock().unwrap().take().expect("one chardev");
        Ok(Box::new(feeder) as Box<dyn Chardev>)
    });
    let spec = ChardevSpec::parse("socket,id=m,path=unused,server=on,wait=off,mux=on").unwrap();
    registry.add(&spec).expect("add the mux");
    let log = Arc::new(Mutex::new(Vec::new()));
    let fe0 = registry.connect("m").expect("first frontend");
    fe0.set_frontend(Recorder(Arc::clone(&log)));
    let fe1 = registry.connect("m").expect("second frontend");
    fe1.set_frontend(Recorder(Arc::clone(&log)));

    let want = expected(input);
    for _ in 0..(input.len() + 64) {
        lp.poll_once(Some(Duration::ZERO)).expect("poll");
        if log.lock().unwrap().len() >= want.len() {
            break;
        }
    }
    let got = log.lock().unwrap().clone();
    assert_eq!(got, want, "exited: {}", exited.load(Ordering::Acquire));
    // Let the loop run the detach requests: an EventLoop dropped with requests still queued
    // leaks their cells (regressions/mux_escape/, see chardev/tests/prop_parsers.rs).
    drop((fe0, fe1));
    registry.remove("m").expect("remove the mux");
    lp.poll_once(Some(Duration::ZERO)).expect("poll");
});
