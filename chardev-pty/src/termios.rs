//! Terminal attributes and tty ioctls, shared by the `pty` and `serial` backends: the one
//! module of this crate with `unsafe` in it.
//!
//! - a new pty: `posix_openpt`, `grantpt`, `ptsname_r`, `unlockpt` (through nix);
//! - raw mode: `cfmakeraw` on a pty's slave, as QEMU does; QEMU's `tty_serial_init` on a
//!   serial line (raw, 115200 8N1 at open);
//! - line parameters (speed, parity, data bits, stop bits), `tcsendbreak`, the modem lines
//!   (`TIOCMGET`/`TIOCMSET`) and a pty master's packet mode (`TIOCPKT`).
//!
//! Every error names the device path and what was being done to it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chardev::error::{Error, Result};
use chardev::serial::{ModemLines, Parity, SerialParams};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::termios::{
    cfmakeraw, cfsetspeed, tcgetattr, tcsendbreak, tcsetattr, BaudRate, ControlFlags, InputFlags,
    LocalFlags, OutputFlags, SetArg, Termios,
};

/// Packet mode: the first byte of a master read when data follows.
pub(crate) const TIOCPKT_DATA: u8 = 0;
/// Packet mode: the slave's input queue was flushed (`tcflush(TCIFLUSH)`, `TCSAFLUSH`).
pub(crate) const TIOCPKT_FLUSHREAD: u8 = 0x01;

nix::ioctl_write_ptr_bad!(ioctl_tiocpkt, libc::TIOCPKT, libc::c_int);
nix::ioctl_read_bad!(ioctl_tiocmget, libc::TIOCMGET, libc::c_int);
nix::ioctl_write_ptr_bad!(ioctl_tiocmset, libc::TIOCMSET, libc::c_int);

/// A pty master whose slave exists but is still locked (nobody can open it yet).
pub(crate) struct LockedPty {
    /// Non-blocking and close-on-exec.
    pub(crate) master: PtyMaster,
    /// `/dev/pts/N`.
    pub(crate) slave: PathBuf,
}

/// Allocates a pty: the master non-blocking (QEMU fac6688, "Do not hang on full PTY") and
/// close-on-exec, the slave granted but not yet unlocked.
pub(crate) fn open_pty() -> Result<LockedPty> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).map_err(|e| Error::io_path("open", "/dev/ptmx", e.into()))?;
    // glibc passes the flags through; make sure of the two the loop relies on all the same.
    chardev::fd::set_nonblocking(&master, true)?;
    chardev::fd::set_cloexec(&master, true)?;
    grantpt(&master).map_err(|e| Error::io("grant access to a pty slave", e.into()))?;
    let slave = ptsname_r(&master).map_err(|e| Error::io("name a pty slave", e.into()))?;
    Ok(LockedPty { master, slave: slave.into() })
}

/// Lets the slave be opened.
pub(crate) fn unlock(pty: &LockedPty) -> Result<()> {
    unlockpt(&pty.master).map_err(|e| Error::io_path("unlock", &pty.slave, e.into()))
}

/// Opens a tty device for the loop: read-write, non-blocking, close-on-exec, and never as
/// our controlling terminal.
pub(crate) fn open_tty(path: &Path, op: &'static str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io_path(op, path, e))
}

/// The attributes of the terminal `fd`; `ENOTTY` becomes "not a terminal (tty) device".
fn attributes(fd: BorrowedFd<'_>, path: &Path, op: &'static str) -> Result<Termios> {
    tcgetattr(fd).map_err(|e| match e {
        Errno::ENOTTY => invalid(op, path, "not a terminal (tty) device"),
        e => Error::io_path(op, path, e.into()),
    })
}

fn set_attributes(fd: BorrowedFd<'_>, path: &Path, op: &'static str, t: &Termios) -> Result<()> {
    tcsetattr(fd, SetArg::TCSANOW, t).map_err(|e| Error::io_path(op, path, e.into()))
}

fn invalid(op: &'static str, path: &Path, why: impl Into<String>) -> Error {
    Error::io_path(op, path, io::Error::new(io::ErrorKind::InvalidInput, why.into()))
}

/// Makes a pty's slave fully raw (`cfmakeraw`, as QEMU does): bytes pass unchanged both
/// ways and nothing is echoed back into the master. (The stdio backend's
/// [`chardev::term::make_raw`] keeps `OPOST` for a console; here a client's binary data must
/// not gain a `\r` before each `\n`.)
pub(crate) fn make_raw(fd: impl AsFd, path: &Path) -> Result<()> {
    let op = "put the pty into raw mode";
    let mut t = attributes(fd.as_fd(), path, op)?;
    cfmakeraw(&mut t);
    set_attributes(fd.as_fd(), path, op, &t)
}

/// Turns packet mode on a pty master on: every read then starts with a status byte,
/// [`TIOCPKT_DATA`] before data, or flags such as [`TIOCPKT_FLUSHREAD`] alone.
pub(crate) fn set_packet_mode(master: &impl AsFd, path: &Path) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: TIOCPKT reads one c_int through the pointer, which points at `on`, alive for
    // the call; the fd is open for as long as `master` is borrowed.
    unsafe { ioctl_tiocpkt(master.as_fd().as_raw_fd(), &on) }
        .map(drop)
        .map_err(|e| Error::io_path("set packet mode on the master of", path, e.into()))
}

/// Whether a pty master reports a hang-up: no process has its slave open (once one had).
pub(crate) fn hung_up(master: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(master.as_fd(), PollFlags::empty())];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => {
                return fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP));
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("cannot poll a pty master for a hang-up: {e}");
                return false;
            }
        }
    }
}

/// Checks that `fd` is a terminal and sets it up as QEMU's `tty_serial_init` does at open:
/// raw, 115200 bit/s, 8 data bits, no parity, 1 stop bit.
pub(crate) fn init_serial(fd: impl AsFd, path: &Path) -> Result<()> {
    // Name the open in the not-a-tty error: that is where a user went wrong.
    attributes(fd.as_fd(), path, "open serial device")?;
    set_serial_params(fd, path, &SerialParams::default())
}

/// Sets speed, parity and framing, and raw mode with them (QEMU re-applies it each time).
pub(crate) fn set_serial_params(fd: impl AsFd, path: &Path, params: &SerialParams) -> Result<()> {
    let op = "set the line parameters of";
    let mut t = attributes(fd.as_fd(), path, op)?;
    line_settings(&mut t, params).map_err(|why| invalid(op, path, why))?;
    set_attributes(fd.as_fd(), path, op, &t)
}

/// The standard speeds, slowest first.
const SPEEDS: [(u32, BaudRate); 30] = [
    (50, BaudRate::B50),
    (75, BaudRate::B75),
    (110, BaudRate::B110),
    (134, BaudRate::B134),
    (150, BaudRate::B150),
    (200, BaudRate::B200),
    (300, BaudRate::B300),
    (600, BaudRate::B600),
    (1200, BaudRate::B1200),
    (1800, BaudRate::B1800),
    (2400, BaudRate::B2400),
    (4800, BaudRate::B4800),
    (9600, BaudRate::B9600),
    (19200, BaudRate::B19200),
    (38400, BaudRate::B38400),
    (57600, BaudRate::B57600),
    (115_200, BaudRate::B115200),
    (230_400, BaudRate::B230400),
    (460_800, BaudRate::B460800),
    (500_000, BaudRate::B500000),
    (576_000, BaudRate::B576000),
    (921_600, BaudRate::B921600),
    (1_000_000, BaudRate::B1000000),
    (1_152_000, BaudRate::B1152000),
    (1_500_000, BaudRate::B1500000),
    (2_000_000, BaudRate::B2000000),
    (2_500_000, BaudRate::B2500000),
    (3_000_000, BaudRate::B3000000),
    (3_500_000, BaudRate::B3500000),
    (4_000_000, BaudRate::B4000000),
];

/// The standard rate a UART's `speed` maps to, as QEMU maps it: 10% slack (a divisor rarely
/// gives an exact rate), then the next standard rate up. `None` for 0 and for anything
/// beyond 4 Mbit/s (where QEMU silently picks 115200).
pub(crate) fn baud_rate(speed: u32) -> Option<BaudRate> {
    if speed == 0 {
        return None;
    }
    let scaled = u64::from(speed) * 10 / 11;
    SPEEDS.iter().find(|(s, _)| scaled <= u64::from(*s)).map(|(_, b)| *b)
}

/// Applies `params` and QEMU's raw flags to `t` (`tty_serial_init`); says what is wrong with
/// `params` if they cannot be set.
pub(crate) fn line_settings(t: &mut Termios, params: &SerialParams) -> Result<(), String> {
    let speed = baud_rate(params.speed).ok_or_else(|| match params.speed {
        0 => "a speed of 0 bit/s is not a line speed".to_string(),
        s => format!("{s} bit/s is not supported (the fastest standard speed is 4000000)"),
    })?;
    let size = match params.data_bits {
        5 => ControlFlags::CS5,
        6 => ControlFlags::CS6,
        7 => ControlFlags::CS7,
        8 => ControlFlags::CS8,
        n => return Err(format!("{n} data bits are not possible (5 to 8)")),
    };
    let two_stop_bits = match params.stop_bits {
        1 => false,
        2 => true,
        n => return Err(format!("{n} stop bits are not possible (1 or 2)")),
    };
    cfsetspeed(t, speed).map_err(|e| format!("cannot set the speed: {e}"))?;
    t.input_flags &= !(InputFlags::IGNBRK
        | InputFlags::BRKINT
        | InputFlags::PARMRK
        | InputFlags::ISTRIP
        | InputFlags::INLCR
        | InputFlags::IGNCR
        | InputFlags::ICRNL
        | InputFlags::IXON);
    t.output_flags &= !OutputFlags::OPOST;
    t.local_flags &= !(LocalFlags::ECHO
        | LocalFlags::ECHONL
        | LocalFlags::ICANON
        | LocalFlags::IEXTEN
        | LocalFlags::ISIG);
    t.control_flags &= !(ControlFlags::CSIZE
        | ControlFlags::PARENB
        | ControlFlags::PARODD
        | ControlFlags::CRTSCTS
        | ControlFlags::CSTOPB);
    t.control_flags |= size;
    match params.parity {
        Parity::None => {}
        Parity::Even => t.control_flags |= ControlFlags::PARENB,
        Parity::Odd => t.control_flags |= ControlFlags::PARENB | ControlFlags::PARODD,
    }
    if two_stop_bits {
        t.control_flags |= ControlFlags::CSTOPB;
    }
    Ok(())
}

/// Sends a break (`tcsendbreak(fd, 0)`: 0.25 to 0.5 s of zero bits). It blocks for that long,
/// as in QEMU.
pub(crate) fn send_break(fd: impl AsFd, path: &Path) -> Result<()> {
    let fd = fd.as_fd();
    attributes(fd, path, "send a break on")?;
    tcsendbreak(fd, 0).map_err(|e| Error::io_path("send a break on", path, e.into()))
}

/// Reads the modem lines (`TIOCMGET`).
pub(crate) fn modem_lines(fd: impl AsFd, path: &Path) -> Result<ModemLines> {
    let mut bits: libc::c_int = 0;
    // SAFETY: TIOCMGET writes one c_int through the pointer, which points at `bits`, alive
    // and writable for the call; the fd is borrowed, so open.
    unsafe { ioctl_tiocmget(fd.as_fd().as_raw_fd(), &mut bits) }
        .map_err(|e| modem_error("read the modem lines of", path, e))?;
    Ok(ModemLines::from_bits_truncate(bits as u32))
}

/// Sets the modem lines (`TIOCMSET`; the kernel changes only the output lines, DTR and RTS).
pub(crate) fn set_modem_lines(fd: impl AsFd, path: &Path, lines: ModemLines) -> Result<()> {
    // The CHR_TIOCM_* bits are Linux's TIOCM_* values; the cast keeps every bit.
    let bits = lines.bits() as libc::c_int;
    // SAFETY: TIOCMSET reads one c_int through the pointer, which points at `bits`, alive for
    // the call; the fd is borrowed, so open.
    unsafe { ioctl_tiocmset(fd.as_fd().as_raw_fd(), &bits) }
        .map(drop)
        .map_err(|e| modem_error("set the modem lines of", path, e))
}

/// ENOTTY from a modem-line ioctl means the tty has no such lines (a pty, a console).
fn modem_error(op: &'static str, path: &Path, e: Errno) -> Error {
    match e {
        Errno::ENOTTY => Error::io_path(
            op,
            path,
            io::Error::new(io::ErrorKind::Unsupported, "the device has no modem lines"),
        ),
        e => Error::io_path(op, path, e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::cfgetospeed;

    #[test]
    fn speeds_map_like_qemu() {
        assert_eq!(baud_rate(115_200), Some(BaudRate::B115200));
        assert_eq!(baud_rate(9600), Some(BaudRate::B9600));
        // A 16550 with divisor 7 asks for 16457 bit/s: QEMU gives it 19200.
        assert_eq!(baud_rate(115_200 / 7), Some(BaudRate::B19200));
        assert_eq!(baud_rate(1), Some(BaudRate::B50));
        assert_eq!(baud_rate(4_000_000), Some(BaudRate::B4000000));
        assert_eq!(baud_rate(4_400_000), Some(BaudRate::B4000000));
        assert_eq!(baud_rate(4_400_012), None);
        assert_eq!(baud_rate(0), None);
    }

    fn termios() -> Termios {
        // Attributes of a real terminal to edit: a fresh pty slave's.
        let pty = nix::pty::openpty(None, None).expect("openpty");
        tcgetattr(&pty.slave).expect("tcgetattr")
    }

    #[test]
    fn line_settings_are_qemu_raw_with_the_framing_asked_for() {
        let mut t = termios();
        let params = SerialParams { speed: 9600, parity: Parity::Odd, data_bits: 7, stop_bits: 2 };
        line_settings(&mut t, &params).unwrap();
        assert_eq!(cfgetospeed(&t), BaudRate::B9600);
        assert_eq!(t.control_flags & ControlFlags::CSIZE, ControlFlags::CS7);
        assert!(t.control_flags.contains(ControlFlags::PARENB | ControlFlags::PARODD));
        assert!(t.control_flags.contains(ControlFlags::CSTOPB));
        assert!(!t.local_flags.intersects(LocalFlags::ECHO | LocalFlags::ICANON));
        assert!(!t.output_flags.contains(OutputFlags::OPOST));

        let even = SerialParams { parity: Parity::Even, data_bits: 5, stop_bits: 1, ..params };
        line_settings(&mut t, &even).unwrap();
        assert_eq!(t.control_flags & ControlFlags::CSIZE, ControlFlags::CS5);
        assert!(t.control_flags.contains(ControlFlags::PARENB));
        assert!(!t.control_flags.intersects(ControlFlags::PARODD | ControlFlags::CSTOPB));
    }

    #[test]
    fn impossible_framing_is_refused_and_says_why() {
        let mut t = termios();
        let base = SerialParams::default();
        for (params, why) in [
            (SerialParams { data_bits: 9, ..base }, "9 data bits"),
            (SerialParams { data_bits: 4, ..base }, "4 data bits"),
            (SerialParams { stop_bits: 3, ..base }, "3 stop bits"),
            (SerialParams { speed: 0, ..base }, "0 bit/s"),
            (SerialParams { speed: 10_000_000, ..base }, "10000000 bit/s is not supported"),
        ] {
            let e = line_settings(&mut t, &params).unwrap_err();
            assert!(e.contains(why), "{params:?}: {e}");
        }
    }
}
