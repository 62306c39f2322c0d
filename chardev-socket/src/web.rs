//! The web console's HTTP side: what a `websocket=on,clients=N` server answers a browser that
//! asks for a page rather than a websocket. Pure: bytes in, bytes out, no sockets.
//!
//! The server reads a connection's first bytes and asks [`parse_head`] what they are: a
//! websocket upgrade (handed on to [`crate::websocket`] with those bytes replayed), a `GET` or
//! `HEAD` of a page ([`respond`] makes the whole answer, then the connection closes), or
//! something refused ([`refusal`]). The mapping from paths to content is fixed: `/` is the
//! console page (built in), `/console.js` its script (built in), `/xterm.js` and `/xterm.css`
//! come from the `@xterm/xterm` npm package that `scripts/setup-web` installs; no part of a
//! request ever reaches the file system. The package's files are read at each request, so
//! installing them while a server runs is enough; without them the page still loads and
//! says what to run.
//!
//! ```
//! use chardev_socket::web::{self, Head};
//! let head = web::parse_head(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
//! let Head::Get { path, head_only } = head else { unreachable!() };
//! let answer = web::respond(&path, head_only, None, "serial0");
//! assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest request head accepted, request line and headers up to and including the
/// empty line: a head that has not ended within it is refused with 431.
pub const HEAD_MAX: usize = 8 * 1024;

/// The largest file served from the xterm.js package (its `xterm.js` is about 480 KiB): a
/// larger one is answered with 500 rather than read into memory.
pub const ASSET_MAX: u64 = 4 * 1024 * 1024;

/// Where `scripts/setup-web` installs the `@xterm/xterm` package, relative to the
/// repository's top: the folder to pass as `assets` to [`respond`].
pub const XTERM_PACKAGE: &str = ".web/node_modules/@xterm/xterm";

/// What the page says (and `/xterm.js` answers) when the xterm.js package is not installed.
pub const NOT_INSTALLED: &str = "xterm.js is not installed: run scripts/setup-web";

/// The console page; `{{title}}` and `{{notice}}` are filled in by [`respond`].
const PAGE: &str = include_str!("../web/console.html");

/// The page's script, a file of its own so that the CSP can forbid inline scripts.
const SCRIPT: &str = include_str!("../web/console.js");

/// What the page may load and where it may connect: only its own origin, scripts from files
/// (no inline script, no eval), inline styles (xterm.js writes its colours in a `<style>`
/// element), and no framing. `connect-src 'self'` covers `ws:`/`wss:` to the same host and
/// port (CSP level 3), which is how the page connects back.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the first bytes of a connection to a web console server are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The head has not ended yet (no empty line) and is under [`HEAD_MAX`]: read more.
    Incomplete,
    /// A `GET` with `Upgrade: websocket`: hand the connection, with every byte read so far,
    /// to the websocket handshake (which checks the rest of the request).
    Upgrade,
    /// A page request: answer it with [`respond`], then close.
    Get {
        /// The request target's path, without query or fragment (`/`, `/xterm.js`, ...).
        path: String,
        /// `HEAD` rather than `GET`: the same headers, no body.
        head_only: bool,
    },
    /// A request refused: answer it with [`refusal`], then close.
    Refuse {
        /// The HTTP status code (400, 405, 431, 505).
        status: u16,
        /// Why, in a few words, for the answer's body and the log.
        reason: &'static str,
    },
}

/// Reads an HTTP/1.x request head from the first bytes of a connection (`buf`, all bytes
/// read so far). Lines may end with CRLF or a bare LF; header names and the `Upgrade` token
/// list are case-insensitive. Only `GET` and `HEAD` are served (others get 405).
pub fn parse_head(buf: &[u8]) -> Head {
    let Some(end) = head_end(&buf[..buf.len().min(HEAD_MAX)]) else {
        return if buf.len() >= HEAD_MAX {
            Head::Refuse { status: 431, reason: "request head too large" }
        } else {
            Head::Incomplete
        };
    };
    let Ok(text) = std::str::from_utf8(&buf[..end]) else {
        return bad("request head is not UTF-8");
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("malformed request line");
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return if version.starts_with("HTTP/") {
            Head::Refuse { status: 505, reason: "HTTP version not supported" }
        } else {
            bad("malformed request line")
        };
    }
    let mut upgrade = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return bad("malformed header line");
        };
        // No whitespace before the colon (RFC 9112 5.1) and no obsolete line folding.
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return bad("malformed header line");
        }
        if name.eq_ignore_ascii_case("upgrade")
            && value.split(',').any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        {
            upgrade = true;
        }
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        // Methods are case-sensitive tokens: `get` is a method we do not serve either.
        m if !m.is_empty() && m.bytes().all(is_token_byte) => {
            return Head::Refuse { status: 405, reason: "only GET and HEAD are served" };
        }
        _ => return bad("malformed request line"),
    };
    let Some(path) = target_path(target) else {
        return bad("malformed request target");
    };
    if upgrade && !head_only {
        return Head::Upgrade;
    }
    Head::Get { path: path.to_owned(), head_only }
}

/// A `tchar` of RFC 9110 5.6.2, what a method name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn bad(reason: &'static str) -> Head {
    Head::Refuse { status: 400, reason }
}

/// The index just past the head's empty line (`\r\n\r\n`, or `\n\n` with bare LFs).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// The path of an origin-form (`/a?b`) or absolute-form (`http://h/a`) request target.
fn target_path(target: &str) -> Option<&str> {
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            let n = scheme.len();
            let rest = target.get(..n)?.eq_ignore_ascii_case(scheme).then(|| &target[n..])?;
            Some(rest.find('/').map_or("/", |at| &rest[at..]))
        })
        .unwrap_or(target);
    if !rest.starts_with('/') || rest.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    Some(rest.split(['?', '#']).next().unwrap_or(rest))
}

/// The complete answer (status line, headers, body unless `head_only`) to a page request
/// for `path`: `/` is the console page titled `title` (HTML-escaped), `/console.js` its
/// script, `/xterm.js` and `/xterm.css` the files of the xterm.js package at `assets` (the
/// `@xterm/xterm` folder, see [`XTERM_PACKAGE`]; `None` when there is none), anything else
/// 404. Every answer carries `Connection: close`: the server closes after writing it.
pub fn respond(path: &str, head_only: bool, assets: Option<&Path>, title: &str) -> Vec<u8> {
    let asset = |relative: &str| assets.map(|dir| dir.join(relative));
    match path {
        "/" => {
            let installed = asset("lib/xterm.js").is_some_and(|p| p.is_file());
            let page = render_page(title, installed);
            response(200, "text/html; charset=utf-8", page.as_bytes(), head_only, &[])
        }
        "/console.js" => {
            response(200, "text/javascript; charset=utf-8", SCRIPT.as_bytes(), head_only, &[])
        }
        "/xterm.js" => {
            serve_file(asset("lib/xterm.js"), "text/javascript; charset=utf-8", head_only)
        }
        "/xterm.css" => serve_file(asset("css/xterm.css"), "text/css; charset=utf-8", head_only),
        _ => text_response(404, "not found", head_only, &[]),
    }
}

/// The terminal size in the page's resize message, `{"type":"resize","cols":C,"rows":R}`,
/// which it sends as a websocket text frame on open and whenever its size changes (keys in
/// any order, blanks allowed); `None` for any other text. A server can so tell the message
/// from input, which the page sends as binary frames only.
pub fn parse_resize(text: &str) -> Option<(u16, u16)> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let (mut kind, mut cols, mut rows) = (None, None, None);
    for member in body.split(',') {
        let (key, value) = member.split_once(':')?;
        let value = value.trim();
        match key.trim() {
            "\"type\"" if kind.is_none() => kind = Some(value == "\"resize\""),
            "\"cols\"" if cols.is_none() => cols = Some(value.parse::<u16>().ok()?),
            "\"rows\"" if rows.is_none() => rows = Some(value.parse::<u16>().ok()?),
            _ => return None,
        }
    }
    match (kind, cols, rows) {
        (Some(true), Some(cols), Some(rows)) if cols > 0 && rows > 0 => Some((cols, rows)),
        _ => None,
    }
}

/// The answer to a refused request ([`Head::Refuse`]): the status and `reason` as plain
/// text; a 405 says which methods are allowed.
pub fn refusal(status: u16, reason: &str) -> Vec<u8> {
    let allow: &[(&str, &str)] = if status == 405 { &[("Allow", "GET, HEAD")] } else { &[] };
    text_response(status, reason, false, allow)
}

/// The console page with its title and, when xterm.js is missing, a notice saying what to
/// run (shown without script, so it reads the same in any browser).
fn render_page(title: &str, installed: bool) -> String {
    let notice = if installed {
        String::new()
    } else {
        format!("<p id=\"notice\" class=\"notice\">{}</p>", html_escape(NOT_INSTALLED))
    };
    PAGE.replace("{{title}}", &html_escape(title)).replace("{{notice}}", &notice)
}

/// `text` with the five characters that HTML gives meaning to replaced by references,
/// safe in element content and quoted attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A file of the xterm.js package, read now (so that installing it needs no restart).
fn serve_file(path: Option<PathBuf>, content_type: &str, head_only: bool) -> Vec<u8> {
    let Some(path) = path else {
        return text_response(404, NOT_INSTALLED, head_only, &[]);
    };
    match read_capped(&path) {
        Ok(Some(body)) => response(200, content_type, &body, head_only, &[]),
        Ok(None) => {
            log::warn!(
                "web console: {} is larger than {ASSET_MAX} bytes: not served",
                path.display()
            );
            text_response(500, "asset too large", head_only, &[])
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            text_response(404, NOT_INSTALLED, head_only, &[])
        }
        Err(e) => {
            log::warn!("web console: cannot read {}: {e}", path.display());
            text_response(500, "asset unreadable", head_only, &[])
        }
    }
}

/// The file's bytes, or `None` when it is larger than [`ASSET_MAX`].
fn read_capped(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    File::open(path)?.take(ASSET_MAX + 1).read_to_end(&mut body)?;
    Ok((body.len() as u64 <= ASSET_MAX).then_some(body))
}

fn text_response(status: u16, text: &str, head_only: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{text}\n");
    response(status, "text/plain; charset=utf-8", body.as_bytes(), head_only, extra)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         Cache-Control: no-cache\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n",
        reason_phrase(status),
        body.len(),
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response split into its status code, headers (lower-case names) and body.
    fn split(resp: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let end = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
        let head = std::str::from_utf8(&resp[..end]).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().expect("a status code");
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").expect("name: value");
                (n.to_ascii_lowercase(), v.to_owned())
            })
            .collect();
        (status, headers, resp[end..].to_vec())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn get(path: &str) -> Head {
        Head::Get { path: path.into(), head_only: false }
    }

    /// A folder laid out as the `@xterm/xterm` package is.
    fn fake_package() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir_all(dir.path().join("lib")).expect("lib/");
        std::fs::create_dir_all(dir.path().join("css")).expect("css/");
        std::fs::write(dir.path().join("lib/xterm.js"), "var Terminal = 1;").expect("xterm.js");
        std::fs::write(dir.path().join("css/xterm.css"), ".xterm {}").expect("xterm.css");
        dir
    }

    #[test]
    fn a_head_is_incomplete_until_its_empty_line() {
        let full = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        for n in 0..full.len() {
            assert_eq!(parse_head(&full[..n]), Head::Incomplete, "after {n} bytes");
        }
        assert_eq!(parse_head(full), get("/"));
    }

    #[test]
    fn bytes_after_the_head_do_not_matter() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n\r\nrest of the stream"), get("/"));
    }

    #[test]
    fn bare_line_feeds_end_lines_too() {
        assert_eq!(parse_head(b"GET /xterm.js HTTP/1.0\nHost: h\n\n"), get("/xterm.js"));
    }

    #[test]
    fn a_head_longer_than_the_maximum_is_refused_with_431() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() < HEAD_MAX {
            head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(parse_head(&head), Head::Refuse { status: 431, .. }));
        // Ending just past the maximum is too late as well.
        head.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&head), Head::Refuse { status: 431, .. }));
        // One that ends just within it is read.
        let mut fits = b"GET / HTTP/1.1\r\nX-Padding: ".to_vec();
        fits.resize(HEAD_MAX - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(fits.len(), HEAD_MAX);
        assert_eq!(parse_head(&fits), get("/"));
    }

    #[test]
    fn methods_other_than_get_and_head_are_refused_with_405() {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH", "get"] {
            let head = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert!(
                matches!(parse_head(head.as_bytes()), Head::Refuse { status: 405, .. }),
                "{method}"
            );
        }
        let (status, headers, body) = split(&refusal(405, "only GET and HEAD are served"));
        assert_eq!(status, 405);
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
        assert_eq!(body, b"only GET and HEAD are served\n");
    }

    #[test]
    fn head_is_get_without_a_body() {
        let head = parse_head(b"HEAD / HTTP/1.1\r\n\r\n");
        assert_eq!(head, Head::Get { path: "/".into(), head_only: true });
        let full = respond("/", false, None, "t");
        let bare = respond("/", true, None, "t");
        let (status, headers, body) = split(&bare);
        assert_eq!(status, 200);
        assert!(body.is_empty());
        let (_, full_headers, full_body) = split(&full);
        assert_eq!(headers, full_headers);
        assert_eq!(header(&headers, "content-length"), Some(full_body.len().to_string().as_str()));
    }

    #[test]
    fn malformed_heads_are_refused_with_400_or_505() {
        for (head, want) in [
            (&b"GET /\r\n\r\n"[..], 400),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / SPDY/3\r\n\r\n", 400),
            (b"GET relative HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
            (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
            (b"\r\n\r\n", 400),
        ] {
            match parse_head(head) {
                Head::Refuse { status, .. } => {
                    assert_eq!(status, want, "{:?}", String::from_utf8_lossy(head))
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
            }
        }
    }

    #[test]
    fn query_fragment_and_absolute_form_leave_the_path() {
        assert_eq!(parse_head(b"GET /?x=1 HTTP/1.1\r\n\r\n"), get("/"));
        assert_eq!(parse_head(b"GET /xterm.css#a HTTP/1.1\r\n\r\n"), get("/xterm.css"));
        assert_eq!(parse_head(b"GET HTTP://h:80/xterm.js HTTP/1.1\r\n\r\n"), get("/xterm.js"));
        assert_eq!(parse_head(b"GET http://h:80 HTTP/1.1\r\n\r\n"), get("/"));
    }

    #[test]
    fn upgrade_websocket_is_found_whatever_the_case_and_list() {
        for headers in [
            "Upgrade: websocket\r\nConnection: Upgrade\r\n",
            "upgrade: WebSocket\r\n",
            "UPGRADE:websocket\r\n",
            "Upgrade: h2c, websocket\r\n",
            "X-Other: 1\r\nuPgRaDe:  foo ,WEBSOCKET \r\n",
        ] {
            let head = format!("GET / HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
            assert_eq!(parse_head(head.as_bytes()), Head::Upgrade, "{headers:?}");
        }
        // Another protocol, or the word elsewhere, is a page request.
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"), get("/"));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n"), get("/"));
        assert_eq!(parse_head(b"GET /websocket HTTP/1.1\r\n\r\n"), get("/websocket"));
        // Not an upgrade unless the head is complete, and never for another method.
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n"), Head::Incomplete);
        assert!(matches!(
            parse_head(b"POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Head::Refuse { status: 405, .. }
        ));
    }

    #[test]
    fn every_answer_has_the_protective_headers() {
        let package = fake_package();
        for (path, status, content_type) in [
            ("/", 200, "text/html; charset=utf-8"),
            ("/console.js", 200, "text/javascript; charset=utf-8"),
            ("/xterm.js", 200, "text/javascript; charset=utf-8"),
            ("/xterm.css", 200, "text/css; charset=utf-8"),
            ("/nothing", 404, "text/plain; charset=utf-8"),
        ] {
            let (got, headers, body) = split(&respond(path, false, Some(package.path()), "t"));
            assert_eq!(got, status, "{path}");
            assert_eq!(header(&headers, "content-type"), Some(content_type), "{path}");
            assert_eq!(header(&headers, "content-length"), Some(body.len().to_string().as_str()));
            assert_eq!(header(&headers, "connection"), Some("close"));
            assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
            assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
            let csp = header(&headers, "content-security-policy").expect("a CSP");
            assert!(csp.starts_with("default-src 'none'"), "{csp}");
            assert!(csp.contains("connect-src 'self'"), "{csp}");
            assert!(csp.contains("script-src 'self';"), "no inline script: {csp}");
        }
        let (_, headers, _) = split(&refusal(431, "request head too large"));
        assert_eq!(header(&headers, "connection"), Some("close"));
    }

    #[test]
    fn the_assets_are_the_package_files_read_at_request_time() {
        let package = fake_package();
        let (_, _, body) = split(&respond("/xterm.js", false, Some(package.path()), "t"));
        assert_eq!(body, b"var Terminal = 1;");
        let (_, _, body) = split(&respond("/xterm.css", false, Some(package.path()), "t"));
        assert_eq!(body, b".xterm {}");
        // A newer install is served without a restart.
        std::fs::write(package.path().join("lib/xterm.js"), "var Terminal = 2;").expect("write");
        let (_, _, body) = split(&respond("/xterm.js", false, Some(package.path()), "t"));
        assert_eq!(body, b"var Terminal = 2;");
    }

    #[test]
    fn no_request_path_reaches_the_file_system() {
        let package = fake_package();
        std::fs::write(package.path().join("secret"), "secret").expect("write");
        for path in
            ["/secret", "/lib/xterm.js", "/../secret", "/xterm.js/../../secret", "//etc/passwd"]
        {
            let (status, _, body) = split(&respond(path, false, Some(package.path()), "t"));
            assert_eq!(status, 404, "{path}");
            assert_eq!(body, b"not found\n");
        }
    }

    #[test]
    fn an_asset_above_the_cap_is_not_served() {
        let package = fake_package();
        let big = File::create(package.path().join("lib/xterm.js")).expect("create");
        big.set_len(ASSET_MAX + 1).expect("grow");
        let (status, _, body) = split(&respond("/xterm.js", false, Some(package.path()), "t"));
        assert_eq!(status, 500);
        assert_eq!(body, b"asset too large\n");
        big.set_len(ASSET_MAX).expect("shrink");
        let (status, headers, _) = split(&respond("/xterm.js", true, Some(package.path()), "t"));
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-length"), Some(ASSET_MAX.to_string().as_str()));
    }

    #[test]
    fn without_xterm_the_page_loads_and_says_what_to_run() {
        let empty = tempfile::tempdir().expect("a temporary folder");
        for assets in [None, Some(empty.path())] {
            let (status, _, body) = split(&respond("/", false, assets, "t"));
            assert_eq!(status, 200);
            let page = String::from_utf8(body).expect("UTF-8");
            assert!(
                page.contains("xterm.js is not installed: run scripts/setup-web"),
                "the page says what to run"
            );
            let (status, _, body) = split(&respond("/xterm.js", false, assets, "t"));
            assert_eq!(status, 404);
            assert_eq!(body, format!("{NOT_INSTALLED}\n").as_bytes());
        }
        let package = fake_package();
        let (_, _, body) = split(&respond("/", false, Some(package.path()), "t"));
        let page = String::from_utf8(body).expect("UTF-8");
        assert!(!page.contains(NOT_INSTALLED), "no notice once installed");
        assert!(!page.contains("{{"), "every placeholder filled");
    }

    #[test]
    fn the_resize_message_is_told_from_other_text() {
        assert_eq!(parse_resize(r#"{"type":"resize","cols":110,"rows":29}"#), Some((110, 29)));
        assert_eq!(parse_resize(r#" { "rows" : 1 , "type":"resize", "cols":2 } "#), Some((2, 1)));
        for other in [
            "ls -l\r",
            "{}",
            r#"{"type":"resize","cols":110}"#,
            r#"{"type":"paste","cols":1,"rows":1}"#,
            r#"{"type":"resize","cols":0,"rows":29}"#,
            r#"{"type":"resize","cols":-1,"rows":29}"#,
            r#"{"type":"resize","cols":70000,"rows":29}"#,
            r#"{"type":"resize","cols":1,"rows":1,"x":2}"#,
            r#"{"type":"resize","cols":1,"cols":2,"rows":1}"#,
        ] {
            assert_eq!(parse_resize(other), None, "{other}");
        }
    }

    #[test]
    fn the_title_is_escaped() {
        let (_, _, body) = split(&respond("/", false, None, "<script>alert('x')</script> & \"q\""));
        let page = String::from_utf8(body).expect("UTF-8");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains(
            "<title>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;</title>"
        ));
        assert_eq!(html_escape("plain-id_0"), "plain-id_0");
    }

    #[test]
    fn the_page_loads_its_script_and_xterm_from_its_own_paths() {
        let (_, _, body) = split(&respond("/", false, None, "t"));
        let page = String::from_utf8(body).expect("UTF-8");
        for path in ["\"/xterm.js\"", "\"/xterm.css\"", "\"/console.js\""] {
            assert!(page.contains(path), "{path}");
        }
        // No inline script: the CSP forbids it.
        assert_eq!(page.matches("<script").count(), page.matches("<script src=").count());
    }
}
