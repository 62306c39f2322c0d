//! The human monitor's line editor (`demos::hmp::LineEditor`), fed arbitrary keystrokes
//! byte by byte, and in two feeds split where the fuzzer says (whole at either end).
//! Checked:
//! - both feedings complete the same lines and echo the same bytes (the editor carries a
//!   half-read escape sequence and a CR waiting for its LF/NUL across feeds);
//! - the echo, played on a model terminal (`Term`), always leaves the terminal showing the
//!   line being edited with the cursor in its place (compared with `redraw`), each completed
//!   line is what the terminal showed at Enter, and no line is longer than `MAX_LINE` bytes;
//! - one byte never echoes more than `PER_BYTE` (see there), and a byte that echoes anything
//!   changes what the terminal shows (no needless output);
//! - completed lines hold no control bytes (DEL included);
//! - `reset` forgets the line, a half-read escape sequence and a pending CR;
//! - the history, read back with Up arrows, is exactly the last (at most) `MAX_HISTORY`
//!   distinct non-empty lines, oldest first, a repeated line moved to the end.
#![no_main]

use demos::hmp::{LineEditor, MAX_HISTORY, MAX_LINE};
use libfuzzer_sys::fuzz_target;

/// Input past this is ignored: it is enough to fill a line past its cap and still edit it
/// and browse the history, and keeps the worst case (every byte rewriting a full line,
/// about 4 KiB of echo and a 4 KiB compare each) near 25 MB of echo per feeding.
const MAX_INPUT: usize = 6_000;

/// The most one byte can echo, from `LineEditor::feed` and `update`: Enter echoes `\r\n`,
/// a byte typed at the end of the line echoes itself, anything else at most one `update`:
/// a cursor move back to the first changed byte (`ESC [ n D`, n <= MAX_LINE: at most
/// 4 digits, 7 bytes), the line from there (at most MAX_LINE bytes), `ESC [ K` (3 bytes)
/// and a cursor move to its place (7 bytes). So a feed of n bytes echoes at most
/// n * PER_BYTE. There is no tighter bound of the kind K * n + one line: a character typed
/// mid-line rewrites the rest of the line, so `Ctrl-A x` repeated echoes about a line per
/// two bytes, by design (QEMU's readline does the same).
const PER_BYTE: usize = MAX_LINE + 17;

/// A terminal as far as the editor drives it: one line after the prompt and a cursor.
#[derive(Debug, Default)]
struct Term {
    screen: Vec<u8>,
    col: usize,
    /// What the screen showed at each `\r\n`.
    entered: Vec<Vec<u8>>,
}

impl Term {
    /// Plays `echo`, which must consist of whole sequences the editor writes: data bytes,
    /// `\r\n`, `ESC [ n C`, `ESC [ n D` (n left out when 1) and `ESC [ K`. True if what
    /// the terminal shows (the line, the cursor, the lines entered) changed.
    fn play(&mut self, echo: &[u8]) -> bool {
        let (col, entered) = (self.col, self.entered.len());
        let mut changed = false;
        let mut i = 0;
        while i < echo.len() {
            match echo[i] {
                0x1b => {
                    assert_eq!(echo.get(i + 1), Some(&b'['), "ESC without [ in {echo:?}");
                    let mut j = i + 2;
                    let mut n = 0usize;
                    while let Some(d) = echo.get(j).filter(|d| d.is_ascii_digit()) {
                        n = n * 10 + usize::from(d - b'0');
                        assert!(j - i - 2 < 4, "a cursor move over 4 digits in {echo:?}");
                        j += 1;
                    }
                    let digits = j - i - 2;
                    let fin = *echo.get(j).unwrap_or_else(|| panic!("cut sequence: {echo:?}"));
                    match fin {
                        b'C' | b'D' => {
                            assert!(digits == 0 || n >= 2, "move of {n} spelt out in {echo:?}");
                            let n = if digits == 0 { 1 } else { n };
                            if fin == b'D' {
                                assert!(n <= self.col, "cursor moved into the prompt");
                                self.col -= n;
                            } else {
                                self.col += n;
                                assert!(self.col <= self.screen.len(), "cursor past the line");
                            }
                        }
                        b'K' => {
                            assert_eq!(digits, 0, "ESC [ n K in {echo:?}");
                            changed |= self.col < self.screen.len();
                            self.screen.truncate(self.col);
                        }
                        _ => panic!("unexpected sequence ending {fin:#x} in {echo:?}"),
                    }
                    i = j + 1;
                }
                b'\r' => {
                    assert_eq!(echo.get(i + 1), Some(&b'\n'), "CR without LF in {echo:?}");
                    self.entered.push(std::mem::take(&mut self.screen));
                    self.col = 0;
                    i += 2;
                }
                b => {
                    assert!(b >= 0x20, "control byte {b:#x} echoed as data");
                    if self.col < self.screen.len() {
                        changed |= self.screen[self.col] != b;
                        self.screen[self.col] = b;
                    } else {
                        changed = true;
                        self.screen.push(b);
                    }
                    self.col += 1;
                    i += 1;
                }
            }
            assert!(self.screen.len() <= MAX_LINE, "the terminal shows {} bytes", self.screen.len());
        }
        changed || self.col != col || self.entered.len() != entered
    }
}

/// The editor's line and cursor as `redraw` draws them (the terminal then shows them), the
/// same as what the terminal shows already (`term`), which is left as the redraw leaves it.
fn check_shown(ed: &mut LineEditor, term: &mut Term) {
    let drawn = ed.redraw();
    assert!(drawn.len() <= MAX_LINE + 7, "redraw of {} bytes", drawn.len());
    let mut fresh = Term::default();
    fresh.play(&drawn);
    assert!(fresh.entered.is_empty());
    assert_eq!(
        (&term.screen, term.col),
        (&fresh.screen, fresh.col),
        "the echo left the terminal showing something else than the line"
    );
    *term = fresh;
}

/// Completed lines hold what was typed and no control byte.
fn check_line(line: &[u8]) {
    assert!(line.len() <= MAX_LINE, "a line of {} bytes", line.len());
    if let Some(b) = line.iter().find(|&&b| b < 0x20 || b == 0x7f) {
        panic!("control byte {b:#x} in the line {:?}", String::from_utf8_lossy(line));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let data = &data[..data.len().min(MAX_INPUT)];

    // Byte by byte, on a model terminal.
    let mut ed = LineEditor::default();
    let mut term = Term::default();
    let (mut echo, mut lines) = (Vec::new(), Vec::new());
    for &b in data {
        let out = ed.feed(&[b]);
        assert!(out.echo.len() <= PER_BYTE, "byte {b:#x} echoed {} bytes", out.echo.len());
        let changed = term.play(&out.echo);
        assert!(
            changed || out.echo.is_empty(),
            "byte {b:#x} echoed {:?}, which changes nothing on the terminal",
            out.echo
        );
        echo.extend_from_slice(&out.echo);
        lines.extend(out.lines);
    }
    assert_eq!(lines.len(), term.entered.len(), "lines completed without CR LF echoed");
    for (line, shown) in lines.iter().zip(&term.entered) {
        check_line(shown);
        assert_eq!(*line, String::from_utf8_lossy(shown), "completed another line than shown");
        assert!(line.chars().count() <= MAX_LINE);
    }
    // The completed lines' bytes (`lines` has them lossily converted).
    let entered = std::mem::take(&mut term.entered);
    check_shown(&mut ed, &mut term);

    // In two feeds (split byte 0 or 255: whole): the same lines and echo. Each pass costs
    // up to a line compare per byte in `update`, slow under coverage instrumentation, so
    // there are two, not three.
    let at = usize::from(split) * data.len() / 255;
    let mut halves = LineEditor::default();
    let mut fed = halves.feed(&data[..at]);
    let second = halves.feed(&data[at..]);
    assert!(fed.echo.len() <= at * PER_BYTE && second.echo.len() <= (data.len() - at) * PER_BYTE);
    fed.echo.extend_from_slice(&second.echo);
    fed.lines.extend(second.lines);
    assert_eq!(fed.lines, lines, "fed in two at {at}, other lines than byte by byte");
    assert!(fed.echo == echo, "fed in two at {at}, another echo than byte by byte");

    // Reset forgets the line and any half-read sequence or CR, but not the history.
    ed.reset();
    let mut term = Term::default();
    check_shown(&mut ed, &mut term);
    assert!(term.screen.is_empty(), "reset kept the line");
    let out = ed.feed(b"\n");
    assert_eq!(out.lines, [""], "after reset, LF is not an Enter of its own");
    assert_eq!(out.echo, b"\r\n");

    // The history, oldest first, as QEMU's readline_hist_add keeps it.
    let mut want: Vec<&Vec<u8>> = Vec::new();
    for line in &entered {
        if line.is_empty() {
            continue;
        }
        if let Some(at) = want.iter().position(|l| *l == line) {
            want.remove(at);
        } else if want.len() == MAX_HISTORY {
            want.remove(0);
        }
        want.push(line);
    }
    // Up walks from the newest entry to the oldest, then stays there; entries are distinct
    // and not empty, so the walk ends when a line comes back twice (or none comes).
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut term = Term::default();
    for _ in 0..=MAX_HISTORY + 1 {
        let out = ed.feed(b"\x1b[A");
        assert!(out.lines.is_empty());
        term.play(&out.echo);
        check_shown(&mut ed, &mut term);
        if term.screen.is_empty() || got.last() == Some(&term.screen) {
            break;
        }
        assert_eq!(term.col, term.screen.len(), "a recalled line with the cursor inside");
        got.push(term.screen.clone());
    }
    assert!(got.len() <= MAX_HISTORY, "a history of {} lines", got.len());
    got.reverse();
    if !got.iter().eq(want.iter().copied()) {
        let show = |h: &[&Vec<u8>]| -> Vec<String> {
            h.iter().map(|l| String::from_utf8_lossy(l).chars().take(80).collect()).collect()
        };
        panic!("history {:?}, want {:?}", show(&got.iter().collect::<Vec<_>>()), show(&want));
    }
});

