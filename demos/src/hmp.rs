//! The human monitor (HMP): QEMU's `(qemu) ` prompt on any chardev, with line editing and
//! history, and the commands that manage chardevs, the run state and passed fds.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use chardev::fdset::NamedFds;
use chardev::{ChardevSpec, Event, Frontend, FrontendHandle, OutputQueue};

use crate::machine::RunState;
use crate::services::Services;
use crate::PROGRAM;
use chardev::sync::lock;

/// The longest line the editor keeps, in bytes; what is typed past it is dropped, unechoed
/// (QEMU's `READLINE_CMD_BUF_SIZE`).
pub const MAX_LINE: usize = 4095;

/// How many lines the history keeps; the oldest go first (QEMU's `READLINE_MAX_CMDS`).
pub const MAX_HISTORY: usize = 64;

/// A line editor for a raw byte stream: what a terminal (or telnet client) types in, the
/// lines it completes, and what to echo back.
///
/// It is bounded as QEMU's readline is: a line holds at most [`MAX_LINE`] bytes and the
/// history at most [`MAX_HISTORY`] lines, so it never holds more than about 270 KB however
/// much a client types. The history belongs to the monitor, not to a client, as in QEMU.
#[derive(Debug, Default)]
pub struct LineEditor {
    line: Vec<u8>,
    cursor: usize,
    /// What the terminal shows after the prompt, and where its cursor is: an edit echoes
    /// only what differs from it, not the whole line.
    shown: Vec<u8>,
    shown_cursor: usize,
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
    /// Feeds typed bytes.
    pub fn feed(&mut self, data: &[u8]) -> Edited {
        let mut out = Edited::default();
        for &b in data {
            // The terminal shows the line here (`shown == line`); an edit that changes
            // nothing (a byte past the cap, an unknown key) echoes nothing and costs nothing.
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            if !self.escape.is_empty() || b == 0x1b {
                self.escape.push(b);
                if self.escape_sequence() {
                    self.update(&mut out.echo);
                }
                continue;
            }
            match b {
                b'\n' | 0 if after_cr => continue,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    out.echo.extend_from_slice(b"\r\n");
                    let line = std::mem::take(&mut self.line);
                    self.cursor = 0;
                    self.shown.clear();
                    self.shown_cursor = 0;
                    self.browsing = None;
                    out.lines.push(String::from_utf8_lossy(&line).into_owned());
                    self.remember(line);
                    continue;
                }
                // Backspace (DEL or BS); at the start of the line it does nothing, as in
                // QEMU's readline (and never falls through to insert a DEL).
                0x7f | 0x08 => {
                    if self.cursor == 0 {
                        continue;
                    }
                    self.cursor -= 1;
                    self.line.remove(self.cursor);
                }
                0x01 => self.cursor = 0,
                0x05 => self.cursor = self.line.len(),
                // Past the cap the byte is dropped, as QEMU's readline_insert_char does.
                b if b >= 0x20 && self.line.len() < MAX_LINE => {
                    self.line.insert(self.cursor, b);
                    self.cursor += 1;
                    if self.cursor == self.line.len() {
                        // Typed at the end: the terminal needs just the byte.
                        out.echo.push(b);
                        self.shown.push(b);
                        self.shown_cursor = self.cursor;
                        continue;
                    }
                }
                _ => continue,
            }
            self.update(&mut out.echo);
        }
        out
    }

    /// Adds a completed line to the history as QEMU's `readline_hist_add` does: a line
    /// already there moves to the end, and the oldest goes when the history is full.
    fn remember(&mut self, line: Vec<u8>) {
        if line.is_empty() {
            return;
        }
        if let Some(at) = self.history.iter().position(|l| *l == line) {
            self.history.remove(at);
        } else if self.history.len() == MAX_HISTORY {
            self.history.remove(0);
        }
        self.history.push(line);
    }

    /// Arrows: `ESC [ A/B/C/D` (and `ESC O x`); true if the line or cursor may have moved.
    fn escape_sequence(&mut self) -> bool {
        let seq = &self.escape;
        if seq.len() < 3 {
            if seq.len() == 2 && !matches!(seq[1], b'[' | b'O') {
                self.escape.clear();
            }
            return false;
        }
        let key = seq[2];
        self.escape.clear();
        match key {
            b'A' if !self.history.is_empty() => {
                let at = self.browsing.map_or(self.history.len() - 1, |i| i.saturating_sub(1));
                self.browsing = Some(at);
                self.recall(at);
            }
            b'B' => match self.browsing {
                Some(i) if i + 1 < self.history.len() => {
                    self.browsing = Some(i + 1);
                    self.recall(i + 1);
                }
                Some(_) => {
                    self.browsing = None;
                    self.line.clear();
                    self.cursor = 0;
                }
                None => return false,
            },
            b'C' if self.cursor < self.line.len() => self.cursor += 1,
            b'D' if self.cursor > 0 => self.cursor -= 1,
            _ => return false,
        }
        true
    }

    /// Makes history entry `at` the line being edited, the cursor at its end.
    fn recall(&mut self, at: usize) {
        self.line.clone_from(&self.history[at]);
        self.cursor = self.line.len();
    }

    /// Brings the terminal from what it shows to the line being edited, writing only what
    /// changed: the cursor moves to the first byte that differs, the line is written from
    /// there (cleared past its end if it got shorter), and the cursor moves to its place.
    /// Typing in the middle thus writes that byte and the rest of the line, never the whole
    /// line from the prompt.
    fn update(&mut self, echo: &mut Vec<u8>) {
        if self.shown != self.line {
            let same = self.shown.iter().zip(&self.line).take_while(|(a, b)| a == b).count();
            move_cursor(echo, self.shown_cursor, same);
            echo.extend_from_slice(&self.line[same..]);
            if self.line.len() < self.shown.len() {
                echo.extend_from_slice(b"\x1b[K");
            }
            self.shown.clone_from(&self.line);
            self.shown_cursor = self.line.len();
        }
        move_cursor(echo, self.shown_cursor, self.cursor);
        self.shown_cursor = self.cursor;
    }

    /// The line drawn in full, for a terminal that shows only the prompt (the mux gave the
    /// monitor its terminal back).
    pub fn redraw(&mut self) -> Vec<u8> {
        self.shown.clear();
        self.shown_cursor = 0;
        let mut echo = Vec::new();
        self.update(&mut echo);
        echo
    }

    /// Forgets the line being typed (a new client); the history stays, as in QEMU, whose
    /// `readline_restart` clears only the line.
    pub fn reset(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.shown.clear();
        self.shown_cursor = 0;
        self.browsing = None;
        self.escape.clear();
        self.after_cr = false;
    }
}

/// Moves a terminal's cursor along the line from column `from` to column `to` (ANSI `CUB`,
/// `CUF`: `ESC [ n D`, `ESC [ n C`, the count left out when it is 1).
fn move_cursor(echo: &mut Vec<u8>, from: usize, to: usize) {
    let (n, dir) = match to.cmp(&from) {
        std::cmp::Ordering::Less => (from - to, 'D'),
        std::cmp::Ordering::Greater => (to - from, 'C'),
        std::cmp::Ordering::Equal => return,
    };
    let seq = if n == 1 { format!("\x1b[{dir}") } else { format!("\x1b[{n}{dir}") };
    echo.extend_from_slice(seq.as_bytes());
}

/// How much of what was typed an error message quotes, in characters.
const MAX_QUOTED: usize = 64;

/// How long an error message may be, in bytes (errors from the chardev layer quote option
/// values, which come from the line).
const MAX_ERROR: usize = 1024;

/// `text` as an error message quotes it: its first [`MAX_QUOTED`] characters, `...` after
/// them if there were more.
fn quoted(text: &str) -> String {
    clip(text, text.char_indices().nth(MAX_QUOTED).map_or(text.len(), |(at, _)| at))
}

/// `text` cut to at most `max` bytes on a character boundary, `...` marking the cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

const PROMPT: &str = "(qemu) ";

/// The human monitor, as a frontend of its chardev.
///
/// It answers from its callbacks through an [`OutputQueue`], so a client that types and
/// never reads stalls nobody: once 64 KiB of answers wait, the monitor stops reading it; past
/// 1 MiB (a client that asks for big answers and reads none) further answers are dropped with
/// a warning, as the client has not read the last megabyte either.
pub struct Hmp {
    /// Where answers go; `None` for `human-monitor-command`, whose caller takes the text.
    out: Option<OutputQueue>,
    services: Services,
    editor: LineEditor,
    fds: Arc<Mutex<NamedFds>>,
    /// The fds that came with input no completed line has used yet; `getfd` takes the first.
    /// They belong to this connection and close when a line completes or it ends.
    pending: Vec<OwnedFd>,
    /// Seen `Opened` for the current connection (the banner is out).
    open: bool,
    /// Output is being dropped (the queue is full): warned once, until output fits again.
    dropping: bool,
}

/// One line of `info chardev-sessions`.
fn session_line(s: &chardev::SessionInfo) -> String {
    let age = s.since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    format!(
        "session {}: {} {} for {age}s, sent {} queued {} dropped {} input-dropped {} writes {}\r\n",
        s.id,
        s.role.as_str(),
        s.peer,
        s.sent,
        s.queued,
        s.dropped,
        s.input_dropped,
        s.writes
    )
}

/// HMP's commands: name, arguments, help.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("help|?", "[cmd]", "show the help"),
    ("info", "[subcommand]", "show various information about the system state"),
    ("chardev-add", "args", "add chardev"),
    ("chardev-change", "id args", "change chardev"),
    ("chardev-remove", "id", "remove chardev"),
    ("chardev-send-break", "id", "send a break on chardev"),
    ("chardev-session-disconnect", "id session", "end one session of a chardev with clients="),
    ("chardev-session-writer", "id session", "make a session the one whose input is heard"),
    ("chardev-history", "id [size]", "show a chardev's history= (without draining it)"),
    ("ringbuf_write", "device data", "Write to a ring buffer character device"),
    ("ringbuf_read", "device size", "Read from a ring buffer character device"),
    ("object_add", "[qom-type=]type,id=str[,prop=value][,...]", "create QOM object"),
    ("object_del", "id", "destroy QOM object"),
    ("getfd", "getfd name", "receive a file descriptor via SCM rights and assign it a name"),
    ("closefd", "closefd name", "close a file descriptor previously passed via SCM rights"),
    ("stop", "", "stop emulation"),
    ("cont|c", "", "resume emulation"),
    ("quit|q", "", "quit the emulator"),
];

const INFO: &[(&str, &str)] = &[
    ("chardev", "show the character devices"),
    ("chardev-sessions", "show the sessions of a chardev (info chardev-sessions id)"),
    ("name", "show the current VM name"),
    ("status", "show the current VM status (running|paused)"),
    ("version", "show the version of QEMU"),
];

impl Hmp {
    /// A monitor that talks through `handle`.
    pub fn new(handle: FrontendHandle, services: Services) -> Hmp {
        Hmp {
            out: Some(OutputQueue::new(handle)),
            services,
            editor: LineEditor::default(),
            fds: Arc::default(),
            pending: Vec::new(),
            open: false,
            dropping: false,
        }
    }

    /// A monitor with no chardev of its own, for QMP's `human-monitor-command`; it shares
    /// the QMP monitor's named fds and takes the fd that came with the QMP command.
    pub fn detached(services: Services, fds: Arc<Mutex<NamedFds>>, pending: Vec<OwnedFd>) -> Hmp {
        Hmp {
            out: None,
            services,
            editor: LineEditor::default(),
            fds,
            pending,
            open: false,
            dropping: false,
        }
    }

    fn say(&mut self, text: &str) {
        self.say_bytes(text.as_bytes());
    }

    /// Writes to the client without ever blocking the loop (see [`Hmp`]).
    fn say_bytes(&mut self, bytes: &[u8]) {
        let Some(out) = &mut self.out else { return };
        match out.write(bytes) {
            Ok(()) => self.dropping = false,
            Err(e) if !std::mem::replace(&mut self.dropping, true) => {
                log::warn!(
                    "monitor '{}': output dropped until the client reads: {e}",
                    out.handle().label()
                );
            }
            Err(_) => {}
        }
    }

    fn fds(&self) -> MutexGuard<'_, NamedFds> {
        lock(&self.fds)
    }

    /// Runs one command line; returns its output or its error text, which quotes at most
    /// `MAX_ERROR` bytes of it.
    pub fn run_line(&mut self, line: &str) -> Result<String, String> {
        self.run(line).map_err(|e| clip(&e, MAX_ERROR))
    }

    fn run(&mut self, line: &str) -> Result<String, String> {
        let line = line.trim();
        let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let args: Vec<&str> = rest.split_whitespace().collect();
        let reg = &self.services.registry;
        let e = |e: chardev::Error| e.to_string();
        match command {
            "" => Ok(String::new()),
            "help" | "?" => Ok(help(args.first().copied())),
            "info" if args.first() == Some(&"chardev-sessions") => {
                let id =
                    args.get(1).ok_or("info chardev-sessions: usage: info chardev-sessions id")?;
                let list = reg.sessions(id).map_err(e)?;
                Ok(list.iter().map(session_line).collect())
            }
            "info" => self.info(args.first().copied()),
            "chardev-session-disconnect" | "chardev-session-writer" => {
                let usage = || format!("{command}: usage: {command} id session");
                let (id, sid) = match args[..] {
                    [id, sid] => (id, sid.parse::<u64>().map_err(|_| usage())?),
                    _ => return Err(usage()),
                };
                let done = if command == "chardev-session-writer" {
                    reg.set_session_writer(id, sid)
                } else {
                    reg.disconnect_session(id, sid)
                };
                done.map(|()| String::new()).map_err(e)
            }
            "chardev-history" => {
                let id = args.first().ok_or("chardev-history: usage: chardev-history id [size]")?;
                let size = match args.get(1) {
                    Some(s) => Some(
                        s.parse::<usize>()
                            .map_err(|_| format!("Invalid parameter 'size': '{}'", quoted(s)))?,
                    ),
                    None => None,
                };
                let data = reg.history(id, size).map_err(e)?;
                Ok(String::from_utf8_lossy(&data).replace('\n', "\r\n").replace("\r\r\n", "\r\n"))
            }
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
            "object_add" => {
                let object = chardev_qmp::parse_object_arg(rest)?;
                reg.add_object(object).map(|_| String::new()).map_err(e)
            }
            "object_del" => reg.remove_object(one(&args, "id")?).map(|_| String::new()).map_err(e),
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
                let size: usize = size
                    .parse()
                    .map_err(|_| format!("Invalid parameter 'size': '{}'", quoted(size)))?;
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
            other => Err(format!("unknown command: '{}'", quoted(other))),
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
                .map(|c| {
                    // QEMU's line, then the counters on one of their own.
                    let counters = self.services.registry.counters(&c.label).unwrap_or_default();
                    format!(
                        "{}: filename={}\r\n  in {} out {} dropped overflow {} viewers {} \
                         backlog {} log {} blocked {} ms connections {} fds {} ({} closed)\r\n",
                        c.label,
                        c.filename,
                        counters.bytes_in,
                        counters.bytes_out,
                        counters.dropped_overflow,
                        counters.dropped_viewers,
                        counters.dropped_backlog,
                        counters.dropped_log,
                        counters.blocked_ns / 1_000_000,
                        counters.connections,
                        counters.fds_received,
                        counters.fds_closed
                    )
                })
                .collect(),
            Some("version") => format!("{} ({PROGRAM})\r\n", env!("CARGO_PKG_VERSION")),
            Some("name") => m.name.as_ref().map(|n| format!("{n}\r\n")).unwrap_or_default(),
            Some("status") => match m.state() {
                RunState::Running => "VM status: running\r\n".into(),
                RunState::Paused => "VM status: paused\r\n".into(),
                other => format!("VM status: paused ({})\r\n", other.name()),
            },
            Some(other) => return Err(format!("unknown command: 'info {}'", quoted(other))),
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
        match &mut self.out {
            Some(out) => out.can_receive(4096),
            None => 4096,
        }
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        if !fds.is_empty() {
            // Newer fds replace unclaimed older ones (closed), as in QEMU.
            self.pending = fds;
        }
        let edited = self.editor.feed(data);
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
            Event::MuxIn if self.open => {
                // The terminal shows the prompt alone: draw the line typed so far after it.
                let line = self.editor.redraw();
                self.say_bytes(&[PROMPT.as_bytes(), &line].concat());
            }
            Event::Closed => {
                self.open = false;
                self.editor.reset();
                self.pending.clear();
                // What the client left unread was for it alone.
                if let Some(out) = &mut self.out {
                    out.clear();
                }
            }
            _ => {}
        }
    }

    fn writable(&mut self) {
        if let Some(out) = &mut self.out {
            if let Err(e) = out.flush() {
                log::debug!("monitor output lost: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_echoes_and_completes_lines() {
        let mut ed = LineEditor::default();
        let out = ed.feed(b"info status\r");
        assert_eq!(out.lines, ["info status"]);
        assert_eq!(out.echo, b"info status\r\n");
    }

    #[test]
    fn telnet_cr_nul_and_cr_lf_are_one_enter() {
        let mut ed = LineEditor::default();
        assert_eq!(ed.feed(b"a\r\0b\r\nc\n").lines, ["a", "b", "c"]);
    }

    #[test]
    fn backspace_home_end_and_arrows_edit_the_line() {
        let mut ed = LineEditor::default();
        // "helo", left, insert 'l', end, backspace 'o', type 'o'
        assert_eq!(ed.feed(b"helo\x1b[Dl\x05\x7fo\r").lines, ["hello"]);
        assert_eq!(ed.feed(b"X\x01Y\r").lines, ["YX"]);
    }

    /// Fuzz finding `fuzz/regressions/hmp_line_editor/del-at-line-start` (`00 7f 0d`).
    #[test]
    fn backspace_at_the_start_of_the_line_does_nothing() {
        let mut ed = LineEditor::default();
        let out = ed.feed(b"\x7f\r");
        assert_eq!(out.lines, [""]);
        assert_eq!(out.echo, b"\r\n");
        assert_eq!(ed.feed(b"ab\x01\x08\x7f\r").lines, ["ab"]);
    }

    #[test]
    fn history_with_up_and_down() {
        let mut ed = LineEditor::default();
        ed.feed(b"first\rsecond\r");
        assert_eq!(ed.feed(b"\x1b[A\x1b[A\r").lines, ["first"]);
        assert_eq!(ed.feed(b"\x1b[A\x1b[B\x1b[Bnew\r").lines, ["new"]);
    }

    #[test]
    fn a_line_keeps_4095_bytes_and_drops_the_rest_unechoed() {
        let mut ed = LineEditor::default();
        let out = ed.feed(&[b'a'; 10_000]);
        assert_eq!(out.echo.len(), MAX_LINE, "only the bytes kept are echoed");
        assert_eq!(ed.feed(b"\r").lines, ["a".repeat(MAX_LINE)]);
        // Editing still works at the cap: delete one, and one more fits.
        let out = ed.feed(&[b'b'; MAX_LINE + 1]);
        assert_eq!(out.echo.len(), MAX_LINE);
        assert_eq!(ed.feed(b"\x7fc\r").lines, [format!("{}c", "b".repeat(MAX_LINE - 1))]);
    }

    #[test]
    fn history_keeps_the_last_64_lines() {
        let mut ed = LineEditor::default();
        for i in 0..1000 {
            ed.feed(format!("line {i}\r").as_bytes());
        }
        assert_eq!(ed.history.len(), MAX_HISTORY);
        let up = b"\x1b[A".repeat(1000);
        let oldest = format!("line {}", 1000 - MAX_HISTORY);
        assert_eq!(ed.feed(&[&up[..], b"\r"].concat()).lines, [oldest.as_str()]);
        // A line run again moves to the end (QEMU's readline_hist_add) rather than repeat.
        assert_eq!(ed.history.len(), MAX_HISTORY);
        assert_eq!(ed.history.last().map(|l| &l[..]), Some(oldest.as_bytes()));
    }

    #[test]
    fn typing_in_the_middle_writes_the_rest_of_the_line_only() {
        let mut ed = LineEditor::default();
        ed.feed(&[b'a'; 1000]);
        assert_eq!(ed.feed(b"\x01").echo, b"\x1b[1000D", "home only moves the cursor");
        let typed = ed.feed(b"b").echo;
        let want = [&b"b"[..], &[b'a'; 1000], b"\x1b[1000D"].concat();
        assert_eq!(typed, want, "the character, the rest after it, the cursor back");
        // Backspace in the middle: back one, the rest, clear the old last byte, cursor back.
        let mut ed = LineEditor::default();
        ed.feed(b"abcdef\x01\x1b[C\x1b[C\x1b[C");
        assert_eq!(ed.feed(b"\x7f").echo, b"\x1b[Ddef\x1b[K\x1b[3D");
        // 300 keystrokes before the end of a full line echo at most the line each.
        let mut ed = LineEditor::default();
        ed.feed(&[b'a'; MAX_LINE - 300]);
        let echoed: usize = (0..300).map(|_| ed.feed(b"\x01b").echo.len()).sum();
        assert!(echoed <= 300 * (MAX_LINE + 16), "300 keystrokes echoed {echoed} bytes");
        assert_eq!(
            ed.feed(b"\r").lines,
            [format!("{}{}", "b".repeat(300), "a".repeat(MAX_LINE - 300))]
        );
    }

    #[test]
    fn an_error_quotes_only_the_start_of_the_line() {
        assert_eq!(quoted("help"), "help");
        let long = "é".repeat(10_000);
        let q = quoted(&long);
        assert!(q.len() < 200 && q.ends_with("..."), "{q:?}");
    }
}
