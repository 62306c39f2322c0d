//! A first end-to-end check: file input to a frontend, frontend output to a file.

use std::io::Write;

use chardev::{Event, EventLoop, Registry};
use chardev_testkit::*;

#[test]
fn file_input_reaches_frontend_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in");
    std::fs::File::create(&inp).unwrap().write_all(b"hello world").unwrap();
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    reg.add_str(&format!(
        "file,id=f0,path={},input-path={}",
        dir.path().join("out").display(),
        inp.display()
    ))
    .unwrap();
    let h = reg.connect("f0").unwrap();
    let rec = record(&h, 3);
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(11), b"hello world");
    rec.expect_event(Event::Closed);
    h.write_all(b"out!").unwrap();
    assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"out!");
}
