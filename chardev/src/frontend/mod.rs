//! The frontend side: the device model that consumes a chardev, and the handle it holds.
//!
//! A frontend (a UART, a monitor) implements [`Frontend`]; its callbacks run on the loop
//! thread. It talks back through a [`FrontendHandle`] (QEMU's `CharBackend`), which any
//! thread may use: a vCPU thread writes guest output while the loop delivers input.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::cell::{Cell, LogAs};
use crate::error::Result;
use crate::serial::{ModemLines, SerialParams};

pub(crate) mod callbacks; // the Frontend trait and Event: a leaf, used by the backend side and the cell
pub use callbacks::{Event, Frontend};

/// A device's link to its chardev (QEMU's `CharBackend`): write output, control the line.
///
/// Cheap to clone and `Send + Sync`, so a vCPU thread can write while the loop reads. The
/// link survives a hot swap of the backend (`chardev-change`). [`detach`] gives the chardev
/// up (so does dropping the last clone); after that no clone can act on it any more, even
/// once another frontend has claimed the same chardev.
///
/// [`detach`]: FrontendHandle::detach
#[derive(Clone)]
pub struct FrontendHandle {
    claim: Arc<Claim>,
}

/// One claim of one frontend slot; released when the last handle clone goes.
struct Claim {
    cell: Arc<Cell>,
    slot: usize,
    id: u32,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.cell.detach(self.slot, self.id);
    }
}

// A vCPU thread writes while the loop thread reads: the handle must cross threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FrontendHandle>();
    assert_send_sync::<crate::LoopHandle>();
    assert_send_sync::<crate::Registry>();
};

impl std::fmt::Debug for FrontendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendHandle")
            .field("label", &self.claim.cell.label)
            .field("slot", &self.claim.slot)
            .field("attached", &self.is_attached())
            .finish()
    }
}

impl FrontendHandle {
    /// Claims a free frontend slot of `cell`.
    pub(crate) fn claim(cell: Arc<Cell>) -> crate::Result<FrontendHandle> {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed).max(1);
        let slot = cell.claim(id)?;
        Ok(FrontendHandle { claim: Arc::new(Claim { cell, slot, id }) })
    }

    /// The cell, while this handle still owns its slot.
    fn cell(&self) -> Option<&Arc<Cell>> {
        let c = &self.claim;
        c.cell.owns(c.slot, c.id).then_some(&c.cell)
    }

    fn detached(&self) -> io::Error {
        crate::Error::NotConnected(format!("{} (handle detached)", self.claim.cell.label)).into()
    }

    /// The chardev's id.
    pub fn label(&self) -> &str {
        &self.claim.cell.label
    }

    /// Whether this handle still holds its chardev (not detached, not force-removed).
    pub fn is_attached(&self) -> bool {
        self.cell().is_some_and(|cell| !cell.retired.load(Ordering::Acquire))
    }

    /// Installs the callbacks that receive input and events. If the chardev is open the
    /// frontend gets `Opened` at once, so late subscribers learn the state. Replaces a
    /// frontend installed earlier, which gets nothing more from the moment this returns
    /// (it is dropped on the loop thread).
    pub fn set_frontend(&self, frontend: impl Frontend + 'static) {
        match self.cell() {
            Some(cell) => cell.set_frontend(self.claim.slot, Some(Box::new(frontend))),
            None => {
                log::warn!("chardev '{}': a detached handle cannot set a frontend", self.label())
            }
        }
    }

    /// Removes the callbacks: input stops being read, events stop, from the moment this
    /// returns. The chardev stays claimed.
    pub fn clear_frontend(&self) {
        if let Some(cell) = self.cell() {
            cell.set_frontend(self.claim.slot, None);
        }
    }

    /// Writes what the backend takes now, without blocking; may be partial. Fails with
    /// `WouldBlock` when nothing fits, `NotConnected` when there is no peer.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.cell().ok_or_else(|| self.detached())?.write(buf, &[], LogAs::Output)
    }

    /// Writes all of `buf`, waiting for the backend to drain when it is full. Returns when
    /// every byte is written, or with the error that stopped it (the peer went away). For
    /// threads other than the loop's (a vCPU thread writing guest output): the wait is a
    /// poll(2) on the backend's fd, not a sleep, and does not need the loop.
    ///
    /// On the loop thread (in a [`Frontend`] callback) it refuses at once with
    /// `Unsupported`, writing nothing: waiting there for one peer that does not read would
    /// hold up every chardev of the loop. A frontend that answers from its callbacks queues
    /// its output with an [`OutputQueue`](crate::OutputQueue); one that means to wait there
    /// says so with [`write_all_blocking`](Self::write_all_blocking).
    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let cell = self.cell().ok_or_else(|| self.detached())?;
        if cell.lp.is_loop_thread() {
            return Err(crate::Error::Unsupported {
                what: self.label().to_owned(),
                operation: "write_all on its event loop's thread, where waiting for one peer \
                            stalls every chardev of the loop: queue the output with \
                            chardev::OutputQueue, or call write_all_blocking to wait anyway",
            }
            .into());
        }
        cell.write_all(buf)
    }

    /// Writes all of `buf` as [`write_all`](Self::write_all) does, on any thread, the loop's
    /// included: there it holds up every other chardev of the loop until this peer has
    /// taken everything. For embedders that want exactly that (one chardev on its own loop,
    /// a test); a frontend that answers from its callbacks uses an
    /// [`OutputQueue`](crate::OutputQueue) instead.
    pub fn write_all_blocking(&self, buf: &[u8]) -> io::Result<()> {
        self.cell().ok_or_else(|| self.detached())?.write_all(buf)
    }

    /// Writes up to `len` bytes out of `pipe` (the read end of a pipe) with splice(2), without
    /// blocking and without the bytes entering user space: `WouldBlock` when nothing fits,
    /// `NotConnected` with no peer, `Unsupported` for backends that cannot (all but plain
    /// sockets). For relays; see [`Frontend::splice_pipe`].
    pub fn write_from_pipe(&self, pipe: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        self.cell().ok_or_else(|| self.detached())?.write_from_pipe(pipe, len)
    }

    /// Writes `buf` with `fds` attached to its first byte (SCM_RIGHTS on unix sockets). The
    /// fds stay the caller's; the peer gets copies. Backends that cannot pass fds refuse with
    /// `Unsupported`, writing nothing.
    ///
    /// Output that fails with `NotConnected` (no peer) goes to the chardev's logfile at
    /// once, as QEMU logs what its backend refuses: a guest's frontend drops it. A frontend
    /// that keeps it to write again later uses [`write_retrying`](Self::write_retrying).
    pub fn write_with_fds(&self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        self.cell().ok_or_else(|| self.detached())?.write(buf, fds, LogAs::Output)
    }

    /// As [`write_with_fds`](Self::write_with_fds), for a frontend that keeps what a backend
    /// with no peer refuses (`NotConnected`) and writes it again once the chardev is open,
    /// as a relay does: the logfile gets those bytes when they are written, not also when
    /// they were refused, so that it has each byte once.
    pub fn write_retrying(&self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        self.cell().ok_or_else(|| self.detached())?.write(buf, fds, LogAs::Retried)
    }

    /// As [`write`](Self::write), for output this frontend wrote before and now sends again
    /// to a peer that just came (a history replay, as a hub gives a member's new client):
    /// the chardev's logfile has those bytes already and does not get them again.
    pub fn write_replay(&self, buf: &[u8]) -> io::Result<usize> {
        self.cell().ok_or_else(|| self.detached())?.write(buf, &[], LogAs::Replay)
    }

    /// The terminal size (columns, rows) the other end last reported ([`Event::Resize`]),
    /// or `None` if it never did (most backends have no terminal to report).
    pub fn size(&self) -> Option<(u16, u16)> {
        self.cell().and_then(|cell| cell.size())
    }

    /// Asks for one [`Frontend::writable`] call once the backend can take output again (at
    /// once if it can now): the non-blocking way to wait after a partial write.
    pub fn notify_writable(&self) {
        if let Some(cell) = self.cell() {
            cell.notify_writable(self.claim.slot);
        }
    }

    /// Tells the loop that the frontend can take input again after `can_receive()` was 0.
    pub fn accept_input(&self) {
        if let Some(cell) = self.cell() {
            cell.accept_input();
        }
    }

    /// Sends a serial break to the other side (real serial lines).
    pub fn send_break(&self) -> Result<()> {
        self.cell().ok_or_else(|| crate::Error::NotConnected(self.label().into()))?.send_break()
    }

    /// Sets speed, parity and framing on a real serial line.
    pub fn set_serial_params(&self, params: &SerialParams) -> Result<()> {
        self.cell()
            .ok_or_else(|| crate::Error::NotConnected(self.label().into()))?
            .set_serial_params(params)
    }

    /// Reads the modem control lines (DTR, RTS out; CTS, CAR, RI, DSR in) of a real serial
    /// line; other backends answer `Unsupported`.
    pub fn modem_lines(&self) -> Result<ModemLines> {
        self.cell().ok_or_else(|| crate::Error::NotConnected(self.label().into()))?.modem_lines()
    }

    /// Sets the modem control lines of a real serial line (DTR and RTS; input lines in
    /// `lines` are ignored, as the kernel ignores them).
    pub fn set_modem_lines(&self, lines: ModemLines) -> Result<()> {
        self.cell()
            .ok_or_else(|| crate::Error::NotConnected(self.label().into()))?
            .set_modem_lines(lines)
    }

    /// Drops the current connection: a socket server listens again, a client reconnects if
    /// it was told to. The frontend gets `Closed`.
    pub fn disconnect(&self) {
        if let Some(cell) = self.cell() {
            cell.disconnect();
        }
    }

    /// Whether the chardev is open (`Opened` seen, `Closed` not since).
    pub fn is_open(&self) -> bool {
        self.cell().is_some_and(|c| c.is_open())
    }

    /// Whether the backend can carry fds ([`write_with_fds`](Self::write_with_fds)).
    pub fn can_pass_fds(&self) -> bool {
        self.cell().is_some_and(|c| c.can_pass_fds())
    }

    /// On a mux, gives this frontend the focus (the others see `MuxOut`, this one `MuxIn`).
    pub fn take_focus(&self) {
        if let Some(cell) = self.cell() {
            cell.take_focus(self.claim.slot);
        }
    }

    /// Gives the chardev up: callbacks are removed and the chardev can be removed or claimed
    /// again. Every clone of this handle is detached with it.
    pub fn detach(self) {
        self.claim.cell.detach(self.claim.slot, self.claim.id);
    }
}
