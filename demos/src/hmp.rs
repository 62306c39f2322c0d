//! The human monitor (HMP): QEMU's `(qemu) ` prompt on any chardev, with line editing and
//! history, and the commands that manage chardevs, the run state and passed fds.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chardev::fdset::NamedFds;
use chardev::{ChardevSpec, Event, Frontend, FrontendHandle};

use crate::machine::RunState;
use crate::services::Services;
use crate::PROGRAM;

/// A line editor for a raw byte stream: what a terminal (or telnet client) types in, the
/// lines it completes, and what to echo back.
#[derive(Debug, Default)]
pub struct LineEditor {
    line: Vec<u8>,
    cursor: usize,
    history: Vec<Vec<u8>>,
    /// Position while browsing the history (`None`: editing a new line).
    browsing: Option<usize>,
    escape: Vec<u8>,
    /// The last byte was CR: a following LF or NUL belongs to it (telnet sends CR NUL).
    after_cr: bool,
}

/// What feeding bytes to a [`LineEditor`] produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edited {
    /// Bytes to echo to the terminal.
    pub echo: Vec<u8>,
    /// Lines completed with Enter.
    pub lines: Vec<String>,
}

impl LineEditor {
    /// Feeds typed bytes; `prompt` is what the line is drawn after.
    pub fn feed(&mut self, data: &[u8], prompt: &str) -> Edited {
        let mut out = Edited::default();
        for &b in data {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            if !self.escape.is_empty() || b == 0x1b {
                self.escape.push(b);
                self.escape_sequence(prompt, &mut out.echo);
                continue;
            }
            match b {
                b'\n' | 0 if after_cr => {}
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    out.echo.extend_from_slice(b"\r\n");
                    let line = std::mem::take(&mut self.line);
                    self.cursor = 0;
                    self.browsing = None;
                    if !line.is_empty() && self.history.last() != Some(&line) {
                        self.history.push(line.clone());
                    }
                    out.lines.push(String::from_utf8_lossy(&line).into_owned());
                }
                0x7f | 0x08 if self.cursor > 0 => {
                    self.cursor -= 1;
                    self.line.remove(self.cursor);
                    self.redraw(prompt, &mut out.echo);
                }
                0x01 => {
                    self.cursor = 0;
                    self.redraw(prompt, &mut out.echo);
                }
                0x05 => {
                    self.cursor = self.line.len();
                    self.redraw(prompt, &mut out.echo);
                }
                b if b >= 0x20 => {
                    self.line.insert(self.cursor, b);
                    self.cursor += 1;
                    if self.cursor == self.line.len() {
                        out.echo.push(b);
                    } else {
                        self.redraw(prompt, &mut out.echo);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Arrows: `ESC [ A/B/C/D` (and `ESC O x`).
    fn escape_sequence(&mut self, prompt: &str, echo: &mut Vec<u8>) {
        let seq = &self.escape;
        if seq.len() < 3 {
            if seq.len() == 2 && !matches!(seq[1], b'[' | b'O') {
                self.escape.clear();
            }
            return;
        }
        let key = seq[2];
        self.escape.clear();
        match key {
            b'A' if !self.history.is_empty() => {
                let at = self.browsing.map_or(self.history.len() - 1, |i| i.saturating_sub(1));
                self.browsing = Some(at);
                self.line = self.history[at].clone();
                self.cursor = self.line.len();
            }
            b'B' => match self.browsing {
                Some(i) if i + 1 < self.history.len() => {
                    self.browsing = Some(i + 1);
                    self.line = self.history[i + 1].clone();
                    self.cursor = self.line.len();
                }
                Some(_) => {
                    self.browsing = None;
                    self.line.clear();
                    self.cursor = 0;
                }
                None => return,
            },
            b'C' if self.cursor < self.line.len() => self.cursor += 1,
            b'D' if self.cursor > 0 => self.cursor -= 1,
            _ => return,
        }
        self.redraw(prompt, echo);
    }

    /// Draws the line again: prompt, text, clear to the end, cursor back in place.
    fn redraw(&self, prompt: &str, echo: &mut Vec<u8>) {
        echo.push(b'\r');
        echo.extend_from_slice(prompt.as_bytes());
        echo.extend_from_slice(&self.line);
        echo.extend_from_slice(b"\x1b[K");
        for _ in self.cursor..self.line.len() {
            echo.extend_from_slice(b"\x1b[D");
        }
    }

    /// Forgets the line being typed (a new client).
    pub fn reset(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.browsing = None;
        self.escape.clear();
        self.after_cr = false;
    }
}

const PROMPT: &str = "(qemu) ";

/// The human monitor, as a frontend of its chardev.
pub struct Hmp {
    handle: Option<FrontendHandle>,
    services: Services,
    editor: LineEditor,
    fds: Arc<Mutex<NamedFds>>,
    /// The fds that came with input no completed line has used yet; `getfd` takes the first.
    /// They belong to this connection and close when a line completes or it ends.
    pending: Vec<OwnedFd>,
    /// Seen `Opened` for the current connection (the banner is out).
    open: bool,
}

/// HMP's commands: name, arguments, help.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("help|?", "[cmd]", "show the help"),
    ("info", "[subcommand]", "show various information about the system state"),
    ("chardev-add", "args", "add chardev"),
    ("chardev-change", "id args", "change chardev"),
    ("chardev-remove", "id", "remove chardev"),
    ("chardev-send-break", "id", "send a break on chardev"),
    ("ringbuf_write", "device data", "Write to a ring buffer character device"),
    ("ringbuf_read", "device size", "Read from a ring buffer character device"),
    ("getfd", "getfd name", "receive a file descriptor via SCM rights and assign it a name"),
    ("closefd", "closefd name", "close a file descriptor previously passed via SCM rights"),
    ("stop", "", "stop emulation"),
    ("cont|c", "", "resume emulation"),
    ("quit|q", "", "quit the emulator"),
];

const INFO: &[(&str, &str)] = &[
    ("chardev", "show the character devices"),
    ("name", "show the current VM name"),
    ("status", "show the current VM status (running|paused)"),
    ("version", "show the version of QEMU"),
];

impl Hmp {
    /// A monitor that talks through `handle`.
    pub fn new(handle: FrontendHandle, services: Services) -> Hmp {
        Hmp {
            handle: Some(handle),
            services,
            editor: LineEditor::default(),
            fds: Arc::default(),
            pending: Vec::new(),
            open: false,
        }
    }

    /// A monitor with no chardev of its own, for QMP's `human-monitor-command`; it shares
    /// the QMP monitor's named fds and takes the fd that came with the QMP command.
    pub fn detached(services: Services, fds: Arc<Mutex<NamedFds>>, pending: Vec<OwnedFd>) -> Hmp {
        Hmp { handle: None, services, editor: LineEditor::default(), fds, pending, open: false }
    }

    fn say(&self, text: &str) {
        self.say_bytes(text.as_bytes());
    }

    fn say_bytes(&self, bytes: &[u8]) {
        if let Some(handle) = &self.handle {
            if let Err(e) = handle.write_all(bytes) {
                log::debug!("monitor output lost: {e}");
            }
        }
    }

    fn fds(&self) -> MutexGuard<'_, NamedFds> {
        self.fds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one command line; returns its output or its error text.
    pub fn run_line(&mut self, line: &str) -> Result<String, String> {
        let line = line.trim();
        let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let args: Vec<&str> = rest.split_whitespace().collect();
        let reg = &self.services.registry;
        let e = |e: chardev::Error| e.to_string();
        match command {
            "" => Ok(String::new()),
            "help" | "?" => Ok(help(args.first().copied())),
            "info" => self.info(args.first().copied()),
            "chardev-add" => {
                let spec = ChardevSpec::parse(rest).map_err(e)?;
                let added = reg.add_with_fds(&spec, &self.fds).map_err(e)?;
                Ok(added.pty.map(|p| format!("{}\r\n", p.display())).unwrap_or_default())
            }
            "chardev-change" => {
                let [id, spec] =
                    split2(rest).ok_or("chardev-change: usage: chardev-change id args")?;
                let spec = ChardevSpec::parse_with_id(spec, id).map_err(e)?;
                reg.change_with_fds(id, &spec, &self.fds).map_err(e)?;
                Ok(String::new())
            }
            "chardev-remove" => reg.remove(one(&args, "id")?).map(|_| String::new()).map_err(e),
            "chardev-send-break" => {
                reg.send_break(one(&args, "id")?).map(|_| String::new()).map_err(e)
            }
            "ringbuf_write" => {
                let [id, data] =
                    split2(rest).ok_or("ringbuf_write: usage: ringbuf_write device data")?;
                reg.ringbuf_write(id, data.as_bytes()).map_err(e)?;
                Ok(String::new())
            }
            "ringbuf_read" => {
                let [id, size] =
                    [args.first(), args.get(1)].map(|a| a.copied().unwrap_or_default());
                let size: usize =
                    size.parse().map_err(|_| format!("Invalid parameter 'size': '{size}'"))?;
                let data = reg.ringbuf_read(id, size).map_err(e)?;
                Ok(format!("{}\r\n", String::from_utf8_lossy(&data)))
            }
            "getfd" => {
                let name = one(&args, "fdname")?;
                if self.pending.is_empty() {
                    return Err("No file descriptor supplied via SCM_RIGHTS".into());
                }
                // The first fd; the others of its input close (QEMU's get_msgfd).
                let fd = self.pending.remove(0);
                self.pending.clear();
                self.fds().insert(name, fd).map(|()| String::new()).map_err(e)
            }
            "closefd" => self.fds().close(one(&args, "fdname")?).map(|()| String::new()).map_err(e),
            "stop" => {
                self.services.stop();
                Ok(String::new())
            }
            "cont" | "c" => self.services.cont().map(|()| String::new()),
            "quit" | "q" => {
                self.services.quit();
                Ok(String::new())
            }
            other => Err(format!("unknown command: '{other}'")),
        }
    }

    fn info(&self, what: Option<&str>) -> Result<String, String> {
        let m = &self.services.machine;
        Ok(match what {
            None => INFO.iter().map(|(n, h)| format!("info {n}  -- {h}\r\n")).collect(),
            Some("chardev") => self
                .services
                .registry
                .query()
                .iter()
                .map(|c| format!("{}: filename={}\r\n", c.label, c.filename))
                .collect(),
            Some("version") => format!("{} ({PROGRAM})\r\n", env!("CARGO_PKG_VERSION")),
            Some("name") => m.name.as_ref().map(|n| format!("{n}\r\n")).unwrap_or_default(),
            Some("status") => match m.state() {
                RunState::Running => "VM status: running\r\n".into(),
                RunState::Paused => "VM status: paused\r\n".into(),
                other => format!("VM status: paused ({})\r\n", other.name()),
            },
            Some(other) => return Err(format!("unknown command: 'info {other}'")),
        })
    }
}

fn one<'a>(args: &[&'a str], name: &str) -> Result<&'a str, String> {
    args.first().copied().ok_or_else(|| format!("Parameter '{name}' is missing"))
}

fn split2(rest: &str) -> Option<[&str; 2]> {
    let (a, b) = rest.split_once(char::is_whitespace)?;
    Some([a, b.trim()])
}

fn help(command: Option<&str>) -> String {
    let line = |(name, args, help): &(&str, &str, &str)| format!("{name} {args} -- {help}\r\n");
    match command {
        Some(c) => COMMANDS
            .iter()
            .filter(|(name, ..)| name.split('|').any(|n| n == c))
            .map(line)
            .chain(
                INFO.iter().filter(|_| c == "info").map(|(n, h)| format!("info {n}  -- {h}\r\n")),
            )
            .collect(),
        None => COMMANDS.iter().map(line).collect(),
    }
}

impl Frontend for Hmp {
    fn can_receive(&mut self) -> usize {
        4096
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        if !fds.is_empty() {
            // Newer fds replace unclaimed older ones (closed), as in QEMU.
            self.pending = fds;
        }
        let edited = self.editor.feed(data, PROMPT);
        if !edited.echo.is_empty() {
            self.say_bytes(&edited.echo);
        }
        let completed = !edited.lines.is_empty();
        for line in edited.lines {
            let reply = match self.run_line(&line) {
                Ok(text) => text,
                Err(e) => format!("Error: {e}\r\n"),
            };
            if self.services.machine.quitting.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            self.say(&format!("{reply}{PROMPT}"));
        }
        if completed {
            // Fds belong to the input they came with: unclaimed, they close now.
            self.pending.clear();
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => {
                // A new client starts fresh: banner and prompt again.
                self.open = true;
                self.editor.reset();
                self.pending.clear();
                self.say(&format!(
                    "{PROGRAM} {} monitor - type 'help' for more information\r\n{PROMPT}",
                    env!("CARGO_PKG_VERSION")
                ));
            }
            Event::MuxIn if self.open => self.say(PROMPT),
            Event::Closed => {
                self.open = false;
                self.editor.reset();
                self.pending.clear();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_echoes_and_completes_lines() {
        let mut ed = LineEditor::default();
        let out = ed.feed(b"info status\r", PROMPT);
        assert_eq!(out.lines, ["info status"]);
        assert_eq!(out.echo, b"info status\r\n");
    }

    #[test]
    fn telnet_cr_nul_and_cr_lf_are_one_enter() {
        let mut ed = LineEditor::default();
        assert_eq!(ed.feed(b"a\r\0b\r\nc\n", PROMPT).lines, ["a", "b", "c"]);
    }

    #[test]
    fn backspace_home_end_and_arrows_edit_the_line() {
        let mut ed = LineEditor::default();
        // "helo", left, insert 'l', end, backspace 'o', type 'o'
        assert_eq!(ed.feed(b"helo\x1b[Dl\x05\x7fo\r", PROMPT).lines, ["hello"]);
        assert_eq!(ed.feed(b"X\x01Y\r", PROMPT).lines, ["YX"]);
    }

    #[test]
    fn history_with_up_and_down() {
        let mut ed = LineEditor::default();
        ed.feed(b"first\rsecond\r", PROMPT);
        assert_eq!(ed.feed(b"\x1b[A\x1b[A\r", PROMPT).lines, ["first"]);
        assert_eq!(ed.feed(b"\x1b[A\x1b[B\x1b[Bnew\r", PROMPT).lines, ["new"]);
    }
}
