//! QMP's wire format: a stream of JSON values in, replies and events out with QEMU's spacing.

use serde::Serialize;
use serde_json::Value;

/// The largest QMP input value we buffer (QEMU's `MAX_TOKEN_SIZE`); a longer one is skipped
/// to its end with one error, and the stream goes on with the next.
pub const MAX_INPUT: usize = 64 << 20;

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
///
/// The split follows the lexical state (depth, inside a string, after a backslash) of every
/// byte, also of a value that went over a limit: such a value is skipped to its real end with
/// one error, so that a string holding braces cannot flip the parity of what follows.
#[derive(Debug, Default)]
pub struct JsonStream {
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Inside a bare top-level token (a number, a keyword, or garbage).
    in_token: bool,
    /// The value in progress went over a limit: its bytes are dropped until it ends.
    skipping: bool,
    /// Values started so far; the ordinal of the one in progress, if any.
    started: u64,
    /// The size limit of one value; [`MAX_INPUT`] when 0.
    limit: usize,
}

impl JsonStream {
    /// A stream whose values may be at most `max_input` bytes long (default [`MAX_INPUT`]).
    pub fn with_limit(max_input: usize) -> JsonStream {
        JsonStream { limit: max_input, ..JsonStream::default() }
    }

    /// Feeds bytes; returns each complete top-level value, or the error that ended it.
    pub fn push(&mut self, data: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        for &b in data {
            if self.in_token
                && (b.is_ascii_whitespace() || matches!(b, b'{' | b'[' | b'"' | b'}' | b']'))
            {
                self.in_token = false;
                out.extend(self.finish());
            }
            if !self.in_value() {
                if b.is_ascii_whitespace() {
                    continue;
                }
                self.started += 1;
            }
            if !self.skipping {
                self.buf.push(b);
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => {
                        self.in_string = false;
                        if self.depth == 0 {
                            out.extend(self.finish());
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
                            out.extend(self.finish());
                        }
                    }
                    b'}' | b']' => out.extend(self.finish()),
                    _ if self.depth == 0 => self.in_token = true,
                    _ => {}
                }
            }
            let limit = if self.limit == 0 { MAX_INPUT } else { self.limit };
            if !self.skipping && (self.depth > MAX_NESTING || self.buf.len() > limit) {
                let what = if self.depth > MAX_NESTING { "nesting depth" } else { "token size" };
                out.push(Parsed {
                    ordinal: self.started,
                    value: Err(format!("JSON parse error, {what} limit exceeded")),
                });
                self.skipping = true;
                self.buf = Vec::new();
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
        !self.buf.is_empty() || self.skipping
    }

    /// Forgets a value in progress (a new connection starts clean).
    pub fn clear(&mut self) {
        self.reset();
    }

    /// Ends the value in progress: parsed, or nothing for one that was skipped (its error is
    /// out already).
    fn finish(&mut self) -> Option<Parsed> {
        let skipped = self.skipping;
        let text = std::mem::take(&mut self.buf);
        self.reset();
        if skipped {
            return None;
        }
        let value = parse(&text).map_err(|e| {
            let shown = String::from_utf8_lossy(&text);
            if text.first().is_some_and(|c| c.is_ascii_alphabetic()) {
                format!("JSON parse error, invalid keyword '{}'", shown.trim())
            } else {
                format!("JSON parse error, {e}")
            }
        });
        Some(Parsed { ordinal: self.started, value })
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.in_token = false;
        self.skipping = false;
    }
}

/// Parses one JSON text, refusing an object with the same key twice, as QEMU does ("duplicate
/// key"): `{"execute": "query-status", "execute": "quit"}` must not quit, and a filter that
/// reads the first `execute` must agree with the server.
fn parse(text: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Unique>(text).map(|u| u.0)
}

/// A JSON value whose objects have no key twice.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key '{key}'")));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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
    fn a_value_over_the_limit_is_skipped_to_its_real_end_and_the_stream_goes_on() {
        let mut s = JsonStream::with_limit(4096);
        // A string full of braces and quotes (escaped) longer than the limit: after it, the
        // next commands are found, not parsed from the middle of the string.
        let mut big = br#"{"execute": "ringbuf-write", "arguments": {"data": ""#.to_vec();
        while big.len() <= 4096 {
            big.extend_from_slice(br#"}}{\"x\":[\" "#);
        }
        big.extend_from_slice(br#""}}"#);
        let mut out = s.push(&big);
        out.extend(s.push(br#" {"execute": "query-status", "id": 1}{"execute": "b"}"#));
        let values: Vec<_> = out.into_iter().map(|p| p.value).collect();
        assert_eq!(
            values.len(),
            3,
            "{:?}",
            values.iter().map(|v| v.as_ref().map(|_| ())).collect::<Vec<_>>()
        );
        assert_eq!(values[0].as_ref().unwrap_err(), "JSON parse error, token size limit exceeded");
        assert_eq!(values[1].as_ref().unwrap()["id"], 1);
        assert_eq!(values[2].as_ref().unwrap()["execute"], "b");
    }

    #[test]
    fn an_object_with_a_key_twice_is_refused() {
        let mut s = JsonStream::default();
        let out = values(s.push(br#"{"execute": "query-status", "execute": "quit"}"#));
        assert!(out[0].as_ref().unwrap_err().contains("duplicate key 'execute'"), "{out:?}");
        let out = values(s.push(br#"{"a": {"b": 1, "b": 2}}"#));
        assert!(out[0].as_ref().unwrap_err().contains("duplicate key 'b'"), "{out:?}");
        let out = values(s.push(br#"{"a": [{"b": 1}, {"b": 2}], "c": 1.5}"#));
        assert_eq!(out[0].as_ref().unwrap()["c"], 1.5);
    }

    #[test]
    fn replies_have_qemus_spacing() {
        assert_eq!(
            render(&json!({"return": {"a": [1, 2]}}), false),
            "{\"return\": {\"a\": [1, 2]}}\r\n"
        );
    }
}
