//! The tiny machine: guest RAM, a run state, and a 16550 UART (vm-superio) that a guest
//! thread drives the way a driver does, running a small shell.
//!
//! The UART is the chardev's frontend: `can_receive` is the room in its 64-byte FIFO,
//! `receive` fills the FIFO and raises the interrupt. The guest thread waits on that
//! interrupt (a condvar, no spinning), reads RBR while LSR says data is ready, and writes THR;
//! what it writes is sent with `write_all`, outside the UART's lock, so a slow reader on the
//! host slows the guest down instead of losing bytes.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chardev::{Event, Frontend, FrontendHandle};
use vm_superio::{Serial, Trigger};

/// UART register offsets (from the port base), as a driver names them.
mod reg {
    pub const DATA: u8 = 0;
    pub const IER: u8 = 1;
    pub const LSR: u8 = 5;
    pub const IER_RDA: u8 = 0b0000_0001;
    pub const LSR_DATA_READY: u8 = 0b0000_0001;
}

/// The byte at position `i` of `flood N`'s output: a pattern a reader can check.
pub fn flood_pattern(i: u64) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

/// FNV-1a, 64 bits: what `sum ADDR LEN` prints for a range of guest RAM.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

use chardev::sync::lock;

/// Whether the guest runs (QEMU's run state, as `info status` and QMP show it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running.
    Running,
    /// Stopped by `stop` (or a migration).
    Paused,
    /// Not started yet (`-S`).
    Prelaunch,
    /// Waiting for an incoming migration.
    Inmigrate,
    /// Migration done; the guest stays stopped here.
    Postmigrate,
}

impl RunState {
    /// QEMU's name for it (`query-status`).
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Prelaunch => "prelaunch",
            RunState::Inmigrate => "inmigrate",
            RunState::Postmigrate => "postmigrate",
        }
    }
}

/// The machine's state that monitors and the guest share.
#[derive(Debug)]
pub struct Machine {
    /// `-name`.
    pub name: Option<String>,
    /// Guest RAM, zero-filled; the kernel allocates pages on first touch.
    pub ram: Mutex<Vec<u8>>,
    state: Mutex<RunState>,
    state_changed: Condvar,
    started: Instant,
    /// Uptime carried over from the machine this one was migrated from, in ms.
    uptime_before: std::sync::atomic::AtomicU64,
    /// Set once the machine is shutting down: the guest thread leaves.
    pub quitting: Arc<AtomicBool>,
}

impl Machine {
    /// A machine with `ram_size` bytes of RAM, in `state`.
    pub fn new(name: Option<String>, ram_size: u64, state: RunState) -> Arc<Machine> {
        Arc::new(Machine {
            name,
            ram: Mutex::new(vec![0; usize::try_from(ram_size).unwrap_or(usize::MAX)]),
            state: Mutex::new(state),
            state_changed: Condvar::new(),
            started: Instant::now(),
            uptime_before: std::sync::atomic::AtomicU64::new(0),
            quitting: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The run state now.
    pub fn state(&self) -> RunState {
        *lock(&self.state)
    }

    /// Changes the run state; returns the old one.
    pub fn set_state(&self, state: RunState) -> RunState {
        let old = std::mem::replace(&mut *lock(&self.state), state);
        self.state_changed.notify_all();
        old
    }

    /// Blocks the calling (guest) thread while the machine is not running; false when quitting.
    fn wait_running(&self) -> bool {
        let mut state = lock(&self.state);
        while *state != RunState::Running && !self.quitting.load(Ordering::Acquire) {
            state = self.state_changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        !self.quitting.load(Ordering::Acquire)
    }

    /// Tells the guest thread to leave.
    pub fn quit(&self) {
        self.quitting.store(true, Ordering::Release);
        self.state_changed.notify_all();
    }

    /// Time since power-on, counting the time on the machine this one migrated from.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed() + Duration::from_millis(self.uptime_before.load(Ordering::Relaxed))
    }

    /// Adds the source machine's uptime after an incoming migration.
    pub fn add_uptime(&self, before: Duration) {
        self.uptime_before.fetch_add(before.as_millis() as u64, Ordering::Relaxed);
    }

    /// Copies `data` into RAM at `addr`; fails if it does not fit.
    pub fn load(&self, addr: u64, data: &[u8]) -> Result<(), String> {
        let mut ram = lock(&self.ram);
        let start =
            usize::try_from(addr).map_err(|_| format!("address {addr:#x} is beyond RAM"))?;
        let end = start.checked_add(data.len()).filter(|&e| e <= ram.len()).ok_or_else(|| {
            format!("{} bytes at {addr:#x} do not fit in {} bytes of RAM", data.len(), ram.len())
        })?;
        ram[start..end].copy_from_slice(data);
        Ok(())
    }
}

/// The UART's interrupt line: the guest thread sleeps on it.
#[derive(Debug, Clone, Default)]
pub struct Irq(Arc<(Mutex<bool>, Condvar)>);

impl Trigger for Irq {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        *lock(&self.0 .0) = true;
        self.0 .1.notify_all();
        Ok(())
    }
}

impl Irq {
    /// Waits for the interrupt (or `timeout`), then clears it.
    fn wait(&self, timeout: Duration) {
        let mut raised = lock(&self.0 .0);
        if !*raised {
            raised =
                self.0 .1.wait_timeout(raised, timeout).unwrap_or_else(PoisonError::into_inner).0;
        }
        *raised = false;
    }
}

/// What the UART transmits, collected under its lock and sent after.
#[derive(Debug, Default)]
pub struct TxBuffer(Vec<u8>);

impl Write for TxBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The 16550 UART model.
pub type Uart = Serial<Irq, vm_superio::serial::NoEvents, TxBuffer>;

/// The UART as the chardev's frontend (runs on the loop thread).
pub struct UartFrontend {
    uart: Arc<Mutex<Uart>>,
    irq: Irq,
}

impl Frontend for UartFrontend {
    fn can_receive(&mut self) -> usize {
        lock(&self.uart).fifo_capacity()
    }

    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        if let Err(e) = lock(&self.uart).enqueue_raw_bytes(data) {
            log::warn!("uart: input lost: {e:?}");
        }
    }

    fn event(&mut self, event: Event) {
        log::debug!("serial0: {event:?}");
        if event == Event::Opened {
            // Wake the guest: a new terminal gets a fresh prompt.
            let _ = self.irq.trigger();
        }
    }
}

/// The guest: a thread that drives the UART and runs a shell.
pub struct Guest {
    machine: Arc<Machine>,
    uart: Arc<Mutex<Uart>>,
    irq: Irq,
    serial: Option<FrontendHandle>,
}

/// Creates the UART, and its frontend to install on the serial chardev.
pub fn uart() -> (Arc<Mutex<Uart>>, Irq, UartFrontend) {
    let irq = Irq::default();
    let uart = Arc::new(Mutex::new(Serial::new(irq.clone(), TxBuffer::default())));
    let frontend = UartFrontend { uart: Arc::clone(&uart), irq: irq.clone() };
    (uart, irq, frontend)
}

impl Guest {
    /// A guest on `uart`, writing through `serial` (no serial port: `None`).
    pub fn new(
        machine: Arc<Machine>,
        uart: Arc<Mutex<Uart>>,
        irq: Irq,
        serial: Option<FrontendHandle>,
    ) -> Guest {
        Guest { machine, uart, irq, serial }
    }

    /// Runs the guest on a thread of its own.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("guest".into()).spawn(move || self.run())
    }

    fn run(mut self) {
        // The driver enables the receive interrupt, as Linux's 8250 driver does.
        if let Err(e) = lock(&self.uart).write(reg::IER, reg::IER_RDA) {
            log::warn!("uart: {e:?}");
        }
        if !self.machine.wait_running() {
            return;
        }
        self.print("\r\nchardev demo guest: type 'help'\r\n");
        while !self.machine.quitting.load(Ordering::Acquire) {
            self.print("guest$ ");
            let Some(line) = self.read_line() else { return };
            self.execute(line.trim());
        }
    }

    /// Writes through THR, then sends what the UART transmitted.
    fn print(&self, text: &str) {
        self.transmit(text.as_bytes());
    }

    fn transmit(&self, bytes: &[u8]) {
        let out = {
            let mut uart = lock(&self.uart);
            for &b in bytes {
                let _ = uart.write(reg::DATA, b);
            }
            std::mem::take(&mut uart.writer_mut().0)
        };
        if let Some(serial) = &self.serial {
            // Output to a chardev without a peer is lost, as on QEMU.
            let _ = serial.write_all(&out);
        }
    }

    /// One byte from RBR, waiting on the interrupt; `None` when the machine quits.
    fn read_byte(&self) -> Option<u8> {
        loop {
            if !self.machine.wait_running() {
                return None;
            }
            {
                let mut uart = lock(&self.uart);
                if uart.read(reg::LSR) & reg::LSR_DATA_READY != 0 {
                    let byte = uart.read(reg::DATA);
                    let room = uart.fifo_capacity();
                    drop(uart);
                    if room > 0 {
                        if let Some(serial) = &self.serial {
                            serial.accept_input();
                        }
                    }
                    return Some(byte);
                }
            }
            // The timeout only bounds how late a stop or quit is noticed.
            self.irq.wait(Duration::from_millis(200));
        }
    }

    /// A line, echoed as a terminal driver would; `None` when the machine quits.
    fn read_line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        loop {
            match self.read_byte()? {
                b'\r' | b'\n' => {
                    self.print("\r\n");
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                0x7f | 0x08 if line.pop().is_some() => self.print("\x08 \x08"),
                0 => {} // telnet sends CR NUL
                b if b >= 0x20 => {
                    line.push(b);
                    self.transmit(&[b]);
                }
                _ => {}
            }
        }
    }

    fn execute(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let Some(command) = words.next() else { return };
        let args: Vec<&str> = words.collect();
        match (command, args.as_slice()) {
            ("help", _) => self.print(
                "help              this list\r\n\
                 echo TEXT         print TEXT\r\n\
                 uptime            seconds since power-on\r\n\
                 cat               echo input until Ctrl-D\r\n\
                 flood N           write N bytes of a checkable pattern\r\n\
                 lines N MS        print N numbered lines, one every MS milliseconds\r\n\
                 size              the console's terminal size, as its chardev reports it\r\n\
                 sum ADDR LEN      FNV-1a of guest RAM\r\n\
                 peek ADDR [LEN]   show guest RAM\r\n\
                 poke ADDR BYTE    change guest RAM\r\n",
            ),
            ("echo", rest) => self.print(&format!("{}\r\n", rest.join(" "))),
            ("uptime", _) => {
                self.print(&format!("up {:.1} s\r\n", self.machine.uptime().as_secs_f64()))
            }
            ("cat", _) => self.cat(),
            ("flood", [n]) => match crate::cli::parse_number(n) {
                Some(n) => self.flood(n),
                None => self.print("flood: N must be a number\r\n"),
            },
            ("size", _) => match self.serial.as_ref().and_then(|s| s.size()) {
                Some((cols, rows)) => self.print(&format!("{cols}x{rows}\r\n")),
                None => self.print("size unknown\r\n"),
            },
            ("lines", [n, ms]) => {
                match (crate::cli::parse_number(n), crate::cli::parse_number(ms)) {
                    (Some(n), Some(ms)) => self.lines(n, ms),
                    _ => self.print("lines: N and MS must be numbers\r\n"),
                }
            }
            ("sum", [addr, len]) => {
                self.with_ram(addr, len, |ram| format!("{:016x}\r\n", fnv1a(ram)))
            }
            ("peek", [addr]) => self.with_ram(addr, "1", |ram| format!("{:02x}\r\n", ram[0])),
            ("peek", [addr, len]) => self.peek(addr, len),
            ("poke", [addr, byte]) => self.poke(addr, byte),
            _ => self.print(&format!("{command}: unknown command (try 'help')\r\n")),
        }
    }

    /// Echoes input until Ctrl-D.
    fn cat(&mut self) {
        loop {
            match self.read_byte() {
                None | Some(0x04) => break,
                Some(b'\r') => self.print("\r\n"),
                Some(b) => self.transmit(&[b]),
            }
        }
        self.print("\r\n");
    }

    /// Writes `n` bytes of [`flood_pattern`], then a newline.
    fn flood(&mut self, n: u64) {
        let mut chunk = Vec::with_capacity(64 * 1024);
        let mut i = 0;
        while i < n {
            chunk.clear();
            let end = (i + 64 * 1024).min(n);
            chunk.extend((i..end).map(flood_pattern));
            self.transmit(&chunk);
            i = end;
            if !self.machine.wait_running() {
                return;
            }
        }
        self.print("\r\n");
    }

    /// `lines N MS`: `line 000001` to `line N`, one every MS milliseconds (a guest that
    /// logs steadily, for the tests of consoles that go away and come back).
    fn lines(&mut self, n: u64, ms: u64) {
        for i in 1..=n {
            self.print(&format!("line {i:06}\r\n"));
            if !self.machine.wait_running() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    fn with_ram(&self, addr: &str, len: &str, show: impl FnOnce(&[u8]) -> String) {
        let (Some(addr), Some(len)) =
            (crate::cli::parse_number(addr), crate::cli::parse_number(len))
        else {
            return self.print("usage: ADDR and LEN are numbers (0x.. for hex)\r\n");
        };
        let text = {
            let ram = lock(&self.machine.ram);
            let range = usize::try_from(addr)
                .ok()
                .zip(usize::try_from(len).ok())
                .and_then(|(a, l)| Some(a..a.checked_add(l)?))
                .filter(|r| r.end <= ram.len() && !r.is_empty());
            match range {
                Some(r) => show(&ram[r]),
                None => {
                    format!("{addr:#x}+{len:#x} is outside guest RAM ({} bytes)\r\n", ram.len())
                }
            }
        };
        self.print(&text);
    }

    /// `peek ADDR LEN`: the bytes in hex, streamed a 4 KiB piece of RAM at a time, so that
    /// the host never holds more than one piece's text whatever LEN a user asks for.
    fn peek(&self, addr: &str, len: &str) {
        const PIECE: u64 = 4096;
        let (Some(start), Some(len)) =
            (crate::cli::parse_number(addr), crate::cli::parse_number(len))
        else {
            return self.print("usage: ADDR and LEN are numbers (0x.. for hex)\r\n");
        };
        let ram_len = lock(&self.machine.ram).len() as u64;
        let end = start.checked_add(len).filter(|&e| e <= ram_len && len > 0);
        let Some(end) = end else {
            return self
                .print(&format!("{start:#x}+{len:#x} is outside guest RAM ({ram_len} bytes)\r\n"));
        };
        let mut at = start;
        while at < end {
            let next = end.min(at + PIECE);
            let text = {
                let ram = lock(&self.machine.ram);
                let mut text = String::with_capacity(3 * PIECE as usize + 2);
                for (i, b) in ram[at as usize..next as usize].iter().enumerate() {
                    if at > start || i > 0 {
                        text.push(' ');
                    }
                    let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{b:02x}"));
                }
                text
            };
            self.print(&text);
            at = next;
        }
        self.print("\r\n");
    }

    fn poke(&self, addr: &str, byte: &str) {
        let (Some(addr), Some(byte)) =
            (crate::cli::parse_number(addr), crate::cli::parse_number(byte))
        else {
            return self.print("usage: poke ADDR BYTE\r\n");
        };
        let Ok(byte) = u8::try_from(byte) else { return self.print("poke: BYTE is 0 to 255\r\n") };
        match self.machine.load(addr, &[byte]) {
            Ok(()) => {}
            Err(e) => self.print(&format!("poke: {e}\r\n")),
        }
    }
}
