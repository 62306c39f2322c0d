//! What a device model implements to consume a chardev: [`Frontend`]'s callbacks, and the
//! [`Event`]s they are told. A leaf of the crate: it depends on nothing else in it, so the
//! backend side (which raises events) and the cell (which holds frontends) can both use it.

use std::os::fd::{BorrowedFd, OwnedFd};

/// Something that happened to a chardev, told to its frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A connection opened (a client connected, a terminal attached, a file opened). Sent
    /// once per connection, and to a frontend that attaches while the chardev is open.
    Opened,
    /// The connection closed, after every byte that arrived before the hang-up was delivered.
    Closed,
    /// A serial break arrived (telnet IAC BREAK, mux `Ctrl-A b`, `chardev-send-break`).
    Break,
    /// This frontend got the mux's focus: input goes to it now.
    MuxIn,
    /// This frontend is about to lose the mux's focus.
    MuxOut,
    /// The terminal at the other end has this size (**an extension**; QEMU has no such
    /// event): from telnet NAWS, the web console page's resize message, or the terminal of
    /// `stdio` (at start and on SIGWINCH). The last one is kept: see
    /// [`FrontendHandle::size`](crate::FrontendHandle::size).
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// A device that consumes a chardev's input (QEMU's frontend handlers).
///
/// All methods run on the loop thread, never two at once, and never while a backend lock is
/// held: a callback may write through its [`FrontendHandle`](crate::FrontendHandle).
pub trait Frontend: Send {
    /// How many bytes the device can take now. While it is 0 the backend is not read (the
    /// bytes wait in the kernel, the peer is slowed) until [`FrontendHandle::accept_input`](crate::FrontendHandle::accept_input).
    fn can_receive(&mut self) -> usize;

    /// Input: at most the last `can_receive()` bytes, and the fds that came with them. Fds
    /// the device does not keep are closed when `fds` is dropped. Received fds are blocking
    /// and close-on-exec (the fd contract).
    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>);

    /// An [`Event`].
    fn event(&mut self, event: Event);

    /// The backend can take output again, after [`FrontendHandle::notify_writable`](crate::FrontendHandle::notify_writable). A
    /// frontend that relays data uses it to resume after a partial write without blocking.
    fn writable(&mut self) {}

    /// A relay's way around copying: a pipe that input may be moved into inside the kernel
    /// (splice(2)), and how many bytes it may take now. When the backend can
    /// ([`Splice::splice_input`]: a plain socket connection), the loop moves input into the
    /// pipe and calls [`spliced`](Frontend::spliced) instead of [`receive`](Frontend::receive);
    /// the frontend empties the pipe with [`FrontendHandle::write_from_pipe`](crate::FrontendHandle::write_from_pipe). Fds that come
    /// with such input are lost, as splice cannot carry them: offer a pipe only when no fd
    /// can flow. Default: no pipe.
    ///
    /// [`Splice::splice_input`]: crate::backend::Splice::splice_input
    fn splice_pipe(&mut self) -> Option<(BorrowedFd<'_>, usize)> {
        None
    }

    /// `n` bytes were moved into the pipe [`splice_pipe`](Frontend::splice_pipe) gave.
    fn spliced(&mut self, n: usize) {
        let _ = n;
    }
}
