//! QMP's wire format: a stream of JSON values in, replies and events out with QEMU's spacing.

use serde::Serialize;
use serde_json::Value;

/// The largest QMP input value we buffer; beyond it the value is dropped with an error.
pub const MAX_INPUT: usize = 1 << 20;

/// QEMU's JSON parser nests at most this deep.
pub const MAX_NESTING: usize = 1024;

/// One top-level value out of a [`JsonStream`].
#[derive(Debug)]
pub struct Parsed {
    /// Which value of the stream this is: 1 for the first that started, and so on. Fds that
    /// came with the input are matched to values by it.
    pub ordinal: u64,
    /// The value, or the parse error that ended it.
    pub value: Result<Value, String>,
}

/// Splits a byte stream into top-level JSON values as their last byte arrives (a command runs
/// when its closing brace arrives, as in QEMU).
#[derive(Debug, Default)]
pub struct JsonStream {
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Inside a bare top-level token (a number, a keyword, or garbage).
    in_token: bool,
    /// Values started so far; the ordinal of the one in progress, if any.
    started: u64,
}

impl JsonStream {
    /// Feeds bytes; returns each complete top-level value, or the error that ended it.
    pub fn push(&mut self, data: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        for &b in data {
            if self.in_token
                && (b.is_ascii_whitespace() || matches!(b, b'{' | b'[' | b'"' | b'}' | b']'))
            {
                self.in_token = false;
                out.push(self.finish());
            }
            if self.buf.is_empty() && !self.in_token {
                if b.is_ascii_whitespace() {
                    continue;
                }
                self.started += 1;
            }
            self.buf.push(b);
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => {
                        self.in_string = false;
                        if self.depth == 0 {
                            out.push(self.finish());
                        }
                    }
                    _ => {}
                }
            } else if !self.in_token {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' if self.depth > 0 => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            out.push(self.finish());
                        }
                    }
                    b'}' | b']' => out.push(self.finish()),
                    _ if self.depth == 0 => self.in_token = true,
                    _ => {}
                }
            }
            if self.depth > MAX_NESTING || self.buf.len() > MAX_INPUT {
                self.reset();
                out.push(Parsed {
                    ordinal: self.started,
                    value: Err("JSON parse error, input too large or nested too deeply".into()),
                });
            }
        }
        out
    }

    /// How many values have started so far.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Whether a value has started and not yet ended.
    pub fn in_value(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Forgets a value in progress (a new connection starts clean).
    pub fn clear(&mut self) {
        self.reset();
    }

    fn finish(&mut self) -> Parsed {
        let text = std::mem::take(&mut self.buf);
        self.reset();
        let value = serde_json::from_slice(&text).map_err(|e| {
            let shown = String::from_utf8_lossy(&text);
            if text.first().is_some_and(|c| c.is_ascii_alphabetic()) {
                format!("JSON parse error, invalid keyword '{}'", shown.trim())
            } else {
                format!("JSON parse error, {e}")
            }
        });
        Parsed { ordinal: self.started, value }
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.in_token = false;
    }
}

/// A QMP reply or event as QEMU writes it: `{"return": {}}` with QEMU's spacing (or indented
/// for `-qmp-pretty`), CR LF after it.
pub fn render(value: &Value, pretty: bool) -> String {
    let mut out = Vec::new();
    let written = if pretty {
        value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(b"    "),
        ))
    } else {
        value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, QemuSpacing))
    };
    if let Err(e) = written {
        log::error!("QMP reply not rendered: {e}");
    }
    format!("{}\r\n", String::from_utf8_lossy(&out).replace('\n', "\r\n"))
}

/// QEMU's compact JSON: a space after every `:` and `,`.
struct QemuSpacing;

impl serde_json::ser::Formatter for QemuSpacing {
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(w, first)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(w, first)
    }
}

/// `, ` before every member or element but the first.
fn separator<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(out: Vec<Parsed>) -> Vec<Result<Value, String>> {
        out.into_iter().map(|p| p.value).collect()
    }

    #[test]
    fn objects_complete_at_their_closing_brace() {
        let mut s = JsonStream::default();
        assert!(s.push(br#"{"execute": "a", "arguments": {"x": "}"#).is_empty());
        let out = values(s.push(br#"{"}}{"execute":"b"} "#));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap()["arguments"]["x"], "}{");
        assert_eq!(out[1].as_ref().unwrap()["execute"], "b");
    }

    #[test]
    fn garbage_is_an_error_and_the_stream_recovers() {
        let mut s = JsonStream::default();
        let out = values(s.push(b"{bad}\n[1,2] \"str\" bad {\"execute\":\"ok\"}"));
        assert!(out[0].as_ref().unwrap_err().starts_with("JSON parse error"));
        assert_eq!(out[1].as_ref().unwrap(), &json!([1, 2]));
        assert_eq!(out[2].as_ref().unwrap(), &json!("str"));
        assert_eq!(out[3].as_ref().unwrap_err(), "JSON parse error, invalid keyword 'bad'");
        assert_eq!(out[4].as_ref().unwrap()["execute"], "ok");
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let mut s = JsonStream::default();
        let out = values(s.push(br#"{"a":"\"}"}"#));
        assert_eq!(out[0].as_ref().unwrap()["a"], "\"}");
    }

    #[test]
    fn values_are_numbered_as_they_start() {
        let mut s = JsonStream::default();
        assert!(s.push(b"  ").is_empty());
        assert_eq!(s.started(), 0);
        let out = s.push(b"{\"a\":1} {\"b\"");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ordinal, 1);
        assert_eq!(s.started(), 2);
        assert!(s.in_value());
        let out = s.push(b":2}");
        assert_eq!(out[0].ordinal, 2);
        assert!(!s.in_value());
    }

    #[test]
    fn replies_have_qemus_spacing() {
        assert_eq!(
            render(&json!({"return": {"a": [1, 2]}}), false),
            "{\"return\": {\"a\": [1, 2]}}\r\n"
        );
    }
}
