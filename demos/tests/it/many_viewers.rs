//! One console, many viewers, all real peers at once (issue 17, "How it is checked"):
//! serial-console's serial port is a `hub` over a unix server (`clients=4`), a telnet server,
//! a pty and a websocket server, with a logfile on the hub. Viewers: three `socat`s and a
//! plain unix client on the unix server, the Debian `telnet` client, a Python pty reader, the
//! Python `websockets` client and Chromium showing the web console page. One `socat` is SIGSTOPped while the guest floods 8 MiB:
//! every other viewer and the logfile get the flood byte for byte, and the stopped one, once
//! resumed, sees exactly one gap marker whose count is exactly what it missed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;
use demos::machine::flood_pattern;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

/// The flood: far more than the stopped viewer's queue (4 MiB) and its socket buffers.
const FLOOD: u64 = 8 << 20;

/// What every viewer waits for after the flood: the answer to `echo flood-done`.
const DONE: &[u8] = b"\r\nflood-done\r\n";

/// How long the whole flood may take to reach every viewer, on a loaded 2-core machine.
const FLOOD_WITHIN: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The flood as the guest writes it.
fn flood_bytes() -> Vec<u8> {
    (0..FLOOD).map(flood_pattern).collect()
}

/// The flood in a viewer's stream: the bytes after the command's echo (`flood N\r\n`) up to
/// the guest's `\r\n` after it; fails the test if either is missing.
fn flood_region<'a>(stream: &'a [u8], who: &str) -> &'a [u8] {
    let echo = format!("flood {FLOOD}\r\n");
    let start = find(stream, echo.as_bytes())
        .unwrap_or_else(|| panic!("{who}: no flood command echo in {} bytes", stream.len()))
        + echo.len();
    let end = rfind(stream, b"guest$ echo flood-done")
        .unwrap_or_else(|| panic!("{who}: no 'echo flood-done' after the flood"));
    // The guest ends the flood with "\r\n" and a prompt before the next command's echo.
    let tail = &stream[start..end];
    let cut = rfind(tail, b"\r\n").unwrap_or_else(|| panic!("{who}: no end of the flood"));
    &tail[..cut]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Waits until `path` holds `needle` (a viewer writing its stream to a file).
fn wait_file_has(path: &Path, needle: &[u8], who: &str, within: Duration) -> Vec<u8> {
    let end = Instant::now() + within;
    loop {
        let got = std::fs::read(path).unwrap_or_default();
        if rfind(&got, needle).is_some() {
            return got;
        }
        assert!(Instant::now() < end, "{who}: {needle:?} not seen within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `socat` that reads the unix server into `file` (it never writes).
fn socat_viewer(server: &Path, file: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new("socat")
            .args(["-u", &format!("UNIX-CONNECT:{}", server.display())])
            .arg(format!("CREATE:{}", file.display()))
            .spawn()
            .expect("run socat"),
    )
}

/// Reads a unix stream on a thread until `DONE`, then hands back all it read.
fn reader_thread(mut s: UnixStream) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        s.set_read_timeout(Some(FLOOD_WITHIN)).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 65536];
        while rfind(&got[got.len().saturating_sub(buf.len() + DONE.len())..], DONE).is_none() {
            let n = s.read(&mut buf).expect("the writer's connection");
            assert!(n > 0, "the writer's connection closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        got
    })
}

#[test]
fn every_real_viewer_gets_the_flood_byte_for_byte_and_a_stopped_one_sees_one_exact_gap() {
    require_program("socat", "socat");
    require_program("telnet", "telnet");
    require_python_module("websockets", "websockets");
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (unix, log) = (p("console.sock"), p("console.log"));
    let (telnet_port, ws_port) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["-nodefaults", "-display", "none"])
        .args(["-chardev", &format!("socket,id=u,path={},server=on,wait=off,clients=4,history=64k,queue=4M", unix.display())])
        .args(["-chardev", &format!("socket,id=t,host=127.0.0.1,port={telnet_port},server=on,wait=off,telnet=on,history=64k")])
        .args(["-chardev", "pty,id=p,history=64k"])
        .args(["-chardev", &format!("socket,id=w,host=127.0.0.1,port={ws_port},server=on,wait=off,websocket=on,clients=2,history=64k,queue=16M")])
        .args(["-chardev", &format!("hub,id=h,chardevs.0=u,chardevs.1=t,chardevs.2=p,chardevs.3=w,queue=16M,logfile={}", log.display())])
        .args(["-serial", "chardev:h"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The pty's slave, from QEMU's banner on stdout.
    let mut banner = BufReader::new(TimedPipe(child.stdout.take().unwrap()));
    let _machine = Machine(child);
    let mut line = String::new();
    banner.read_line(&mut line).expect("the pty banner");
    let pty: PathBuf = line
        .strip_prefix("char device redirected to ")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no pty banner: {line:?}"))
        .into();

    // The writer: a plain unix client, first on the unix server.
    let mut writer = connect_unix(&unix);
    writer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut first = [0u8; 1];
    writer.read_exact(&mut first).expect("the guest's prompt");
    let writer_stream = reader_thread(writer.try_clone().unwrap());

    // Three socat viewers; the third will be stopped.
    let files: Vec<PathBuf> = (0..3).map(|i| p(&format!("socat{i}.out"))).collect();
    let socats: Vec<KillOnDrop> = files.iter().map(|f| socat_viewer(&unix, f)).collect();
    // The telnet client, its output to a file through its stdout.
    let telnet_out = p("telnet.out");
    let telnet = KillOnDrop(
        Command::new("telnet")
            .args(["127.0.0.1", &telnet_port.to_string()])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&telnet_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("run telnet"),
    );
    // The pty reader and the websocket viewer, in Python, each writing its stream to a file.
    let (pty_out, ws_out) = (p("pty.out"), p("ws.out"));
    let script = format!(
        r#"
import asyncio, os, sys, termios, tty, websockets
DONE = {DONE:?}
def pty_reader():
    fd = os.open("{pty}", os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    with open("{pty_out}", "wb") as out:
        got = b""
        while DONE not in got[-65536:]:
            chunk = os.read(fd, 65536)
            got += chunk
            out.write(chunk); out.flush()
async def ws_reader():
    async with websockets.connect("ws://127.0.0.1:{ws_port}/", subprotocols=["binary"], max_size=None) as ws:
        with open("{ws_out}", "wb") as out:
            got = b""
            while DONE not in got[-65536:]:
                chunk = await asyncio.wait_for(ws.recv(), 60)
                got += chunk
                out.write(chunk); out.flush()
async def main():
    loop = asyncio.get_running_loop()
    pty_task = loop.run_in_executor(None, pty_reader)
    await ws_reader()
    await asyncio.wait_for(pty_task, 60)
    print("done", flush=True)
asyncio.run(main())
"#,
        DONE = String::from_utf8_lossy(DONE),
        pty = pty.display(),
        pty_out = pty_out.display(),
        ws_out = ws_out.display(),
    )
    .replace("DONE = \"\\r\\nflood-done\\r\\n\"", "DONE = b\"\\r\\nflood-done\\r\\n\"");
    let mut py =
        KillOnDrop(python().arg("-c").arg(&script).stdout(Stdio::piped()).spawn().unwrap());
    let mut py_out = BufReader::new(TimedPipe(py.0.stdout.take().unwrap()));

    // And Chromium, showing the web console page on the websocket server.
    let mut browser = crate::web_console::Browser::start();
    browser.ok(&format!("open http://127.0.0.1:{ws_port}/"));
    browser.ok("wait_status connected 10");

    // Everyone is attached and reading: each sees the answer to one echo (the servers keep
    // 64 KiB of history, so one that connects after it still gets it).
    writer.write_all(b"echo all-attached\r").unwrap();
    let synced: Vec<(&Path, &str)> = vec![
        (&files[0], "socat 0"),
        (&files[1], "socat 1"),
        (&files[2], "socat 2"),
        (&telnet_out, "telnet"),
        (&pty_out, "the pty reader"),
        (&ws_out, "the websocket viewer"),
    ];
    for (file, who) in synced {
        wait_file_has(file, b"\r\nall-attached\r\n", who, DEADLINE);
    }
    browser.ok("wait_line 10 all-attached");

    // Stop the third socat, flood, and tell everyone when it is over.
    let stopped = socats[2].0.id() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(stopped), nix::sys::signal::Signal::SIGSTOP)
        .unwrap();
    writer.write_all(format!("flood {FLOOD}\r").as_bytes()).unwrap();
    writer.write_all(b"echo flood-done\r").unwrap();
    let seen_by_writer = writer_stream.join().unwrap();

    let want = flood_bytes();
    let check = |stream: &[u8], who: &str| {
        let region = flood_region(stream, who);
        assert!(
            region.len() == want.len() && region == &want[..],
            "{who}: the flood differs ({} bytes, {} expected)",
            region.len(),
            want.len()
        );
    };
    check(&seen_by_writer, "the unix writer");
    for (i, f) in files.iter().enumerate().take(2) {
        check(&wait_file_has(f, DONE, &format!("socat {i}"), FLOOD_WITHIN), &format!("socat {i}"));
    }
    let mut said = String::new();
    py_out.read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "done", "the pty and websocket readers did not finish");
    check(&std::fs::read(&pty_out).unwrap(), "the pty reader");
    check(&std::fs::read(&ws_out).unwrap(), "the websocket viewer");
    check(&wait_file_has(&telnet_out, DONE, "telnet", FLOOD_WITHIN), "the telnet client");
    check(&wait_file_has(&log, DONE, "the logfile", FLOOD_WITHIN), "the logfile");

    // The stopped one resumes: what it had, one marker, the rest; the count is exact.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(stopped), nix::sys::signal::Signal::SIGCONT)
        .unwrap();
    let got = wait_file_has(&files[2], DONE, "the stopped socat", FLOOD_WITHIN);
    let region = flood_region(&got, "the stopped socat");
    let text = String::from_utf8_lossy(region);
    assert_eq!(text.matches("[chardev: ").count(), 1, "exactly one gap marker");
    let at = find(region, b"\r\n[chardev: ").expect("the marker");
    let rest = &region[at + 2..];
    let end = find(rest, b"\r\n").expect("the marker's end");
    let marker = std::str::from_utf8(&rest[..end]).unwrap();
    let lost: usize = marker
        .strip_prefix("[chardev: ")
        .and_then(|m| m.strip_suffix(" bytes of output dropped: this viewer fell behind]"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("marker {marker:?}"));
    let (before, after) = (&region[..at], &rest[end + 2..]);
    assert_eq!(before, &want[..before.len()], "what came before the gap");
    assert_eq!(after, &want[want.len() - after.len()..], "what came after the gap");
    assert_eq!(before.len() + lost + after.len(), want.len(), "the marker counts what is missing");
    // Chromium rendered the whole flood and the answer after it, and kept its connection.
    browser.ok("wait_line 60 flood-done");
    browser.ok("wait_status connected 1");
    let shot = crate::web_console::artifact("many-viewers.png");
    browser.ok(&format!("screenshot {}", shot.display()));
    println!("the web console after the flood: {}", shot.display());
    drop(telnet);
    drop(socats);
}
