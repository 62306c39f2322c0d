//! TLS on a server with many clients (issue 19 with issue 17's viewers): the web console over
//! `https://` and `wss://` in headless Chromium, and viewers over TLS from Python's `ssl`
//! (a real TLS stack we did not write): history, one writer, refusals without a byte.

use std::process::Command;

use chardev_testkit::certs::{Dn, Pki};
use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;

use crate::web_console::{free_port, listening, Browser};

/// What the demo guest prints when it boots.
const GREETING: &str = "chardev demo guest: type 'help'";

/// serial-console with its serial port on a TLS server at `port` with `extra` keys, the
/// credentials in `dir` (`verify-peer` as given).
fn start_machine(dir: &std::path::Path, verify_peer: bool, port: u16, extra: &str) -> Machine {
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer={}",
        dir.display(),
        if verify_peer { "on" } else { "off" }
    );
    let spec = format!(
        "socket,id=w,host=127.0.0.1,port={port},server=on,wait=off,clients=4,history=1M,\
         tls-creds=tls0{extra}"
    );
    listening(&["-object", &object, "-chardev", &spec, "-serial", "chardev:w"], port)
}

/// The base64 SHA-256 of a certificate's public key: what Chromium's
/// `--ignore-certificate-errors-spki-list` trusts (this key only, not any certificate).
fn spki_hash(cert: &std::path::Path) -> String {
    require_program("openssl", "openssl");
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = output_within(Command::new("sh").args(["-c", &script]), "openssl spki hash");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("base64").trim().to_string()
}

#[test]
fn a_browser_uses_the_web_console_over_https_and_wss() {
    require_python_module("selenium", "selenium");
    require_program("chromium", "chromium");
    require_program("chromedriver", "chromium-driver");
    let xterm = workspace_root().join(chardev_socket::web::XTERM_PACKAGE).join("lib/xterm.js");
    assert!(xterm.exists(), "{} is missing: run scripts/setup-web", xterm.display());
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let server = pki.server_dir("web");
    // Browsers bring no client certificate: the server authenticates itself only.
    let port = free_port();
    let _machine = start_machine(&server, false, port, ",websocket=on");

    // Plain HTTP on the TLS port gets no page (and no console byte).
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain.set_read_timeout(Some(DEADLINE)).expect("timeout");
    std::io::Write::write_all(&mut plain, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("HTTP/1.1") && !text.contains(GREETING), "clear text: {text:?}");

    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_hash(&server.join("server-cert.pem"))
    );
    let mut browser = Browser::start_with_args(&trust);
    let url = format!("https://127.0.0.1:{port}/");
    browser.ok(&format!("open {url}"));
    browser.ok("wait_status connected 10");
    browser.ok(&format!("wait_text 10 {GREETING}"));
    let word = format!("wss-{}", std::process::id());
    browser.ok(&format!("type echo {word}\\n"));
    browser.ok(&format!("wait_line 10 {word}"));
    // A second tab over TLS too gets the history: the greeting and the answer.
    assert_eq!(browser.ok(&format!("new_tab {url}")), "1");
    browser.ok("wait_status connected 10");
    browser.ok(&format!("wait_line 10 {word}"));
}

/// A Python `ssl` client script: connects with the kit's client certificate (or none),
/// sends `send` after reading until `first`, then reads until `until`; prints what it read
/// as one line of repr, or `refused: WHY`.
const CLIENT: &str = r#"
import socket, ssl, sys, time
port, ca, cert, key, first, send, until = sys.argv[1:8]
unescape = lambda t: t.encode().decode("unicode_escape").encode()
first, send, until = unescape(first), unescape(send), unescape(until)
ctx = ssl.create_default_context(cafile=ca)
if cert:
    ctx.load_cert_chain(cert, key)
got = b""
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=10),
                        server_hostname="127.0.0.1")
    s.settimeout(10)
    deadline = time.time() + 8
    while first not in got and time.time() < deadline:
        data = s.recv(65536)
        if not data:
            break
        got += data
    if send:
        s.sendall(send)
    while until not in got and time.time() < deadline:
        data = s.recv(65536)
        if not data:
            break
        got += data
    print(repr(got))
except (ssl.SSLError, OSError) as e:
    print("refused: %s %r" % (type(e).__name__, got))
"#;

fn python_client(
    port: u16,
    ca: &std::path::Path,
    client: Option<&std::path::Path>,
    steps: [&str; 3],
) -> String {
    let (cert, key) = match client {
        Some(dir) => (
            dir.join("client-cert.pem").display().to_string(),
            dir.join("client-key.pem").display().to_string(),
        ),
        None => (String::new(), String::new()),
    };
    let out = output_within(
        python()
            .args(["-c", CLIENT, &port.to_string(), &ca.display().to_string(), &cert, &key])
            .args(steps),
        "the python ssl client",
    );
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn viewers_over_tls_get_the_history_and_live_output_and_a_client_without_a_certificate_gets_nothing(
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let server = pki.server_dir("viewers");
    let client = pki.client_dir("c1", &Dn::cn("viewer.example"));
    let port = free_port();
    let _machine = start_machine(&server, true, port, "");
    let ca = pki.ca_cert();

    // The first client is the writer: it gets the greeting (history), types, sees the answer.
    let word = format!("tls-viewers-{}", std::process::id());
    let first = python_client(
        port,
        &ca,
        Some(&client),
        ["guest$ ", &format!("echo {word}\\r"), &format!("{word}\\r\\n")],
    );
    assert!(first.contains(GREETING) && first.contains(&format!("{word}\\r\\n")), "{first}");
    // A later viewer gets the history: the greeting and the answer, over TLS too.
    let later = python_client(port, &ca, Some(&client), [&word, "", &word]);
    assert!(later.contains(GREETING) && later.contains(&word), "{later}");
    // No client certificate (verify-peer=on): refused, and not one byte of the console.
    let refused = python_client(port, &ca, None, [GREETING, "", GREETING]);
    assert!(refused.starts_with("refused") || refused == "b''", "{refused}");
    assert!(!refused.contains("guest") && !refused.contains("chardev"), "{refused}");
    // The server still serves the next good client.
    let again = python_client(port, &ca, Some(&client), [&word, "", &word]);
    assert!(again.contains(&word), "{again}");
}
