//! The QemuOpts syntax every option string uses: `key=value` elements split on single
//! commas (`,,` is a literal comma), implied keys, booleans, sizes and numbers.

use crate::error::{Error, Result};

/// Splits a QemuOpts-style string into `(key, value)` pairs, in order, repeats kept.
///
/// Elements are separated by `,`, and `,,` inside a value is a literal comma. When the first
/// element has no `=`, it is the value of `implied_key` (unless `implied_key` is empty);
/// any later bare element `flag` means `flag=on` and `noflag` means `flag=off` (QEMU's
/// deprecated short form, logged as a warning). A single trailing `,` is ignored, as QEMU
/// does; an empty key (`=x`, or an empty element after a bare flag) is an error.
pub fn split_options(s: &str, implied_key: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = s;
    let mut first = true;
    while !rest.is_empty() {
        let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        let after_name = &rest[name_end..];
        let (pair, next) = if let Some(value_start) = after_name.strip_prefix('=') {
            let (value, next) = take_value(value_start);
            (named_option(name, value)?, next)
        } else if first && !implied_key.is_empty() {
            let (value, next) = take_value(rest);
            ((implied_key.to_string(), value), next)
        } else {
            (short_form_flag(name)?, after_name)
        };
        pairs.push(pair);
        // `next` is empty or starts with the single ',' that ended the element.
        rest = next.strip_prefix(',').unwrap_or(next);
        first = false;
    }
    Ok(pairs)
}

/// Reads a value up to the next single `,`, turning each `,,` into `,`; returns the value and
/// the rest, which is empty or starts with that `,`.
fn take_value(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut rest = s;
    loop {
        match rest.find(',') {
            None => {
                value.push_str(rest);
                return (value, "");
            }
            Some(comma) => {
                value.push_str(&rest[..comma]);
                let after = &rest[comma..];
                match after.strip_prefix(",,") {
                    Some(tail) => {
                        value.push(',');
                        rest = tail;
                    }
                    None => return (value, after),
                }
            }
        }
    }
}

/// A `key=value` element; the key must not be empty.
fn named_option(key: &str, value: String) -> Result<(String, String)> {
    if key.is_empty() {
        return Err(Error::option(key, &value, "empty option name before '='"));
    }
    Ok((key.to_string(), value))
}

/// A bare element after the first: `flag` is `flag=on`, `noflag` is `flag=off`.
fn short_form_flag(name: &str) -> Result<(String, String)> {
    let (key, value) = match name.strip_prefix("no") {
        Some(key) => (key, "off"),
        None => (name, "on"),
    };
    if key.is_empty() {
        return Err(Error::option(name, "", "empty option (a stray ',' or a bare 'no')"));
    }
    log::warn!("short-form boolean option '{name}' is deprecated, write '{key}={value}'");
    Ok((key.to_string(), value.to_string()))
}

/// Parses a QEMU boolean: `on`/`yes`/`true`/`y` or `off`/`no`/`false`/`n` (case matters, as in QEMU).
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(Error::option(key, value, "expects 'on' or 'off'")),
    }
}

/// Parses a QEMU size: a decimal number of bytes, optionally followed by one binary suffix
/// `B`, `K`, `M`, `G`, `T`, `P` or `E` (either case), so `64K` is 65536.
pub fn parse_size(key: &str, value: &str) -> Result<u64> {
    let bad =
        || Error::option(key, value, "expects a size: bytes, or a number with suffix K, M, G or T");
    let digits_end = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (digits, suffix) = value.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad());
    }
    let shift = match suffix {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(bad()),
    };
    let too_large = || Error::option(key, value, "is too large");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// Parses a plain unsigned decimal number (QEMU's `QEMU_OPT_NUMBER`).
pub(super) fn parse_number(key: &str, value: &str) -> Result<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::option(key, value, "expects a non-negative number"));
    }
    value.parse().map_err(|_| Error::option(key, value, "is too large"))
}
