//! Frontends shared by the socket tests.
#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::sync::mpsc::Sender;

use chardev::{Event, Frontend, FrontendHandle};

/// Records bytes and fds; acknowledges each byte with "." as the peer expects.
pub struct Acking {
    pub handle: FrontendHandle,
    pub tx: Sender<(Vec<u8>, Vec<OwnedFd>)>,
}

impl Frontend for Acking {
    fn can_receive(&mut self) -> usize {
        4096
    }
    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        for _ in data {
            self.handle.write_all(b".").unwrap();
        }
        self.tx.send((data.to_vec(), fds)).unwrap();
    }
    fn event(&mut self, event: Event) {
        if event == Event::Closed {
            self.tx.send((b"<closed>".to_vec(), Vec::new())).unwrap();
        }
    }
}
