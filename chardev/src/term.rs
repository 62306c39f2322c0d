//! Raw terminal mode, and the promise to undo it: a [`RawTerminal`] puts a terminal's saved
//! attributes back when it is dropped, when the process exits (`std::process::exit`, which
//! skips destructors, as a program's handler for `Ctrl-A x` may), when a thread panics, and
//! when a signal whose default action ends the process kills it (SIGTERM, SIGINT, SIGHUP,
//! SIGQUIT, SIGUSR1, SIGALRM, SIGABRT, ...; see [`FATAL_SIGNALS`]). Only SIGKILL and crashes
//! (SIGSEGV, SIGBUS) can leave the terminal raw; `stty sane` fixes it then.
//!
//! While it lives, SIGCONT puts raw mode back, as QEMU's stdio does: after Ctrl-Z (or
//! SIGSTOP) and `fg`, the shell has usually reset the terminal to its own cooked mode.
//!
//! ```no_run
//! use chardev::term::RawTerminal;
//!
//! let raw = RawTerminal::enter(std::io::stdin(), true)?; // keep Ctrl-C as SIGINT
//! // ... read keys one by one, no echo ...
//! drop(raw); // cooked again
//! # Ok::<(), chardev::Error>(())
//! ```
//!
//! Attributes belong to the terminal, not to a file descriptor, so any fd on the terminal
//! will do; the guard keeps a duplicate of its own so that the restore cannot hit a number
//! that was closed and reused. The exit paths read the saved attributes from a small static
//! table without locks or allocation, which is what makes the restore async-signal-safe.

use std::cell::UnsafeCell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU8, Ordering};
use std::sync::Once;

use nix::libc;
use nix::sys::termios::{
    tcgetattr, tcsetattr, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg,
    SpecialCharacterIndices, Termios,
};

use crate::error::{Error, Result};

/// How many terminals may be raw at once in one process (the stdio backend needs one).
pub const MAX_RAW_TERMINALS: usize = 8;

/// The signals whose default action ends the process, and which restore the terminal first
/// when their disposition is still the default. Not the faults (SIGSEGV, SIGBUS, SIGILL,
/// SIGFPE): a handler that returns would only fault again, and a crash should leave the
/// state as it was for the core dump.
pub const FATAL_SIGNALS: [libc::c_int; 15] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGABRT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGPIPE,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGIO,
    libc::SIGPWR,
];

/// Changes `termios` into QEMU's raw mode for a console (`term_init` in `char-stdio.c`).
///
/// Input bytes arrive one by one and unchanged (no echo, no line editing, no CR/NL mapping, no
/// XON/XOFF, 8 bits); output keeps `OPOST`, so a guest's `\n` still starts a new line.
/// With `signals`, Ctrl-C, Ctrl-\ and Ctrl-Z keep raising signals (`ISIG`, QEMU's
/// `signal=on`); without, they reach the guest as bytes.
pub fn make_raw(termios: &mut Termios, signals: bool) {
    termios.input_flags &= !(InputFlags::IGNBRK
        | InputFlags::BRKINT
        | InputFlags::PARMRK
        | InputFlags::ISTRIP
        | InputFlags::INLCR
        | InputFlags::IGNCR
        | InputFlags::ICRNL
        | InputFlags::IXON);
    termios.output_flags |= OutputFlags::OPOST;
    termios.local_flags &=
        !(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ICANON | LocalFlags::IEXTEN);
    if !signals {
        termios.local_flags &= !LocalFlags::ISIG;
    }
    termios.control_flags &= !(ControlFlags::CSIZE | ControlFlags::PARENB);
    termios.control_flags |= ControlFlags::CS8;
    termios.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    termios.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
}

/// A terminal in raw mode; its saved attributes come back when this is dropped, and on
/// process exit, panic and fatal signals while it lives (see the [module docs](self)).
#[derive(Debug)]
pub struct RawTerminal {
    /// Our own duplicate of the terminal fd: the exit paths use its number.
    fd: OwnedFd,
    saved: Termios,
    slot: usize,
}

impl RawTerminal {
    /// Puts the terminal behind `fd` into QEMU's raw mode ([`make_raw`]), keeping `ISIG` when
    /// `signals` is true. Fails if `fd` is not a terminal.
    pub fn enter(fd: impl AsFd, signals: bool) -> Result<RawTerminal> {
        Self::enter_with(fd, |t| make_raw(t, signals))
    }

    /// Applies `change` to the attributes of the terminal behind `fd`, with the same promise
    /// to restore them as [`enter`](Self::enter).
    pub fn enter_with(fd: impl AsFd, change: impl FnOnce(&mut Termios)) -> Result<RawTerminal> {
        let fd = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicate the terminal fd", e))?;
        let saved =
            tcgetattr(&fd).map_err(|e| Error::io("read the terminal attributes", e.into()))?;
        install_hooks();
        let mut raw = saved.clone();
        change(&mut raw);
        // Arm before changing anything: a signal in between then restores what is there
        // already, while the other order could leave the terminal raw.
        let slot = arm(&fd, &saved, &raw)?;
        let guard = RawTerminal { fd, saved, slot };
        tcsetattr(&guard.fd, SetArg::TCSANOW, &raw)
            .map_err(|e| Error::io("set the terminal attributes", e.into()))?;
        Ok(guard)
    }

    /// The attributes the terminal had before, which every restore puts back.
    pub fn saved(&self) -> &Termios {
        &self.saved
    }

    /// Puts the saved attributes back now; dropping the guard does it too.
    pub fn restore(&self) -> Result<()> {
        tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved)
            .map_err(|e| Error::io("restore the terminal attributes", e.into()))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // Restore, then disarm: a fatal signal in between restores a second time, harmlessly.
        if let Err(e) = self.restore() {
            log::warn!("{e}");
        }
        disarm(self.slot);
    }
}

const FREE: u8 = 0;
const FILLING: u8 = 1;
const ARMED: u8 = 2;

/// One raw terminal as the exit paths see it.
///
/// `saved` is written only while `state` is `FILLING` and no reader is inside (`readers` is
/// 0); readers count themselves in before they look at `state`, so a slot that is freed and
/// filled again never changes under a restore that is reading it.
struct Slot {
    state: AtomicU8,
    readers: AtomicU32,
    fd: AtomicI32,
    saved: UnsafeCell<MaybeUninit<libc::termios>>,
    /// The attributes the guard set, which SIGCONT puts back.
    raw: UnsafeCell<MaybeUninit<libc::termios>>,
}

// SAFETY: the only non-atomic fields, `saved` and `raw`, are written by one thread at a time (the one
// that moved `state` from FREE to FILLING) while no reader is counted in, and read only while
// `state` is ARMED, which is set with Release after the write; see `arm` and `restore_all`.
unsafe impl Sync for Slot {}

#[allow(clippy::declare_interior_mutable_const)] // a template for the array below only
const EMPTY_SLOT: Slot = Slot {
    state: AtomicU8::new(FREE),
    readers: AtomicU32::new(0),
    fd: AtomicI32::new(-1),
    saved: UnsafeCell::new(MaybeUninit::uninit()),
    raw: UnsafeCell::new(MaybeUninit::uninit()),
};

static SLOTS: [Slot; MAX_RAW_TERMINALS] = [EMPTY_SLOT; MAX_RAW_TERMINALS];

fn arm(fd: &OwnedFd, saved: &Termios, raw: &Termios) -> Result<usize> {
    let (index, slot) = SLOTS
        .iter()
        .enumerate()
        .find(|(_, s)| {
            s.state.compare_exchange(FREE, FILLING, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        })
        .ok_or_else(|| {
            Error::io(
                "put a terminal into raw mode",
                io::Error::other(format!(
                    "more than {MAX_RAW_TERMINALS} terminals are raw in this process"
                )),
            )
        })?;
    // A restore that counted itself in before we took the slot may still read the old
    // attributes; it is done within a tcsetattr.
    while slot.readers.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
    let (saved, raw) = (to_libc(saved), to_libc(raw));
    // SAFETY: this thread moved the slot to FILLING and no reader is inside, so nothing else
    // reads or writes `saved` or `raw` until the ARMED store below publishes them.
    unsafe {
        (*slot.saved.get()).write(saved);
        (*slot.raw.get()).write(raw);
    }
    slot.fd.store(fd.as_raw_fd(), Ordering::SeqCst);
    slot.state.store(ARMED, Ordering::SeqCst);
    Ok(index)
}

/// The C struct with `t`'s public fields in it: nix's `From` hands out its inner struct as
/// it was last read or written, without the changes made to the fields since.
fn to_libc(t: &Termios) -> libc::termios {
    let mut c: libc::termios = t.clone().into();
    c.c_iflag = t.input_flags.bits();
    c.c_oflag = t.output_flags.bits();
    c.c_cflag = t.control_flags.bits();
    c.c_lflag = t.local_flags.bits();
    c.c_cc = t.control_chars;
    c.c_line = t.line_discipline;
    c
}

fn disarm(index: usize) {
    SLOTS[index].state.store(FREE, Ordering::SeqCst);
}

/// Puts back the saved attributes of every raw terminal. Async-signal-safe: atomics and
/// tcsetattr(3) only, no locks, no allocation.
fn restore_all() {
    for slot in &SLOTS {
        slot.readers.fetch_add(1, Ordering::SeqCst);
        if slot.state.load(Ordering::SeqCst) == ARMED {
            let fd = slot.fd.load(Ordering::SeqCst);
            // SAFETY: the slot is ARMED and we are counted in `readers`, so `saved` was
            // fully written (published by the ARMED store) and cannot be rewritten until we
            // leave; `fd` stays open while the slot is armed (the guard owns it and disarms
            // before closing). tcsetattr is async-signal-safe and only reads the struct.
            unsafe {
                libc::tcsetattr(fd, libc::TCSANOW, (*slot.saved.get()).as_ptr());
            }
        }
        slot.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Puts raw mode back on every raw terminal (after SIGCONT). Async-signal-safe, as
/// [`restore_all`].
fn reapply_all() {
    for slot in &SLOTS {
        slot.readers.fetch_add(1, Ordering::SeqCst);
        if slot.state.load(Ordering::SeqCst) == ARMED {
            let fd = slot.fd.load(Ordering::SeqCst);
            // SAFETY: as in `restore_all`, for `raw`, which is published with `saved`.
            unsafe {
                libc::tcsetattr(fd, libc::TCSANOW, (*slot.raw.get()).as_ptr());
            }
        }
        slot.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Installs the process-wide restore hooks once: atexit, the panic hook, fatal signals,
/// and SIGCONT's return to raw mode.
fn install_hooks() {
    static HOOKS: Once = Once::new();
    HOOKS.call_once(|| {
        // SAFETY: `restore_at_exit` is an `extern "C" fn()` that never unwinds and touches
        // only statics; atexit just records the pointer.
        if unsafe { libc::atexit(restore_at_exit) } != 0 {
            log::warn!("cannot register the terminal restore for process exit");
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Before the message, so that it is printed on a cooked terminal. With
            // panic=abort this is the last chance: no destructor or atexit runs after it.
            restore_all();
            previous(info);
        }));
        for signal in FATAL_SIGNALS {
            install_signal_handler(signal, restore_and_reraise);
        }
        install_signal_handler(libc::SIGCONT, reapply_after_stop);
    });
}

extern "C" fn reapply_after_stop(_signal: libc::c_int) {
    // SAFETY: __errno_location is async-signal-safe and returns this thread's errno, which
    // the interrupted code may be about to read: tcsetattr must not change it.
    let errno = unsafe { *libc::__errno_location() };
    reapply_all();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

extern "C" fn restore_at_exit() {
    restore_all();
}

extern "C" fn restore_and_reraise(signal: libc::c_int) {
    restore_all();
    // SAFETY: signal(2) and raise(3) are async-signal-safe. The signal is blocked while this
    // handler runs, so the raised one stays pending and, with the default action back in
    // place, kills the process by that signal as soon as the handler returns.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Installs `handler` for `signal` if its disposition is the default: an embedder's own
/// handler (or SIG_IGN) stays as it is.
pub(crate) fn install_signal_handler(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct (SIG_DFL, no
    // flags, empty mask).
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries the disposition into `current`, which is valid
    // for writes.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } != 0 {
        log::warn!(
            "cannot read the disposition of signal {signal}: {}",
            io::Error::last_os_error()
        );
        return;
    }
    if current.sa_sigaction != libc::SIG_DFL {
        return;
    }
    // SAFETY: as above, zeroed is a valid starting value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised and both handlers are async-signal-safe (atomics,
    // errno, tcsetattr, signal, raise); the old action is not needed.
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        log::warn!("cannot handle signal {signal}: {}", io::Error::last_os_error());
    }
}
