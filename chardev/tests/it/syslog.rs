//! `syslog`: each line of output as one record on a unix datagram socket. The framing bytes
//! as a socket of the test reads them; a collector that stops reading, goes away and comes
//! back; bad options; and a real `rsyslogd` (Debian's `rsyslog`) listening on sockets in a
//! temporary directory and writing what it parsed to a file.

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev::backends::syslog::{
    Syslog, SyslogStats, MAX_RECORD_TEXT, PARTIAL_LINE_DELAY, RECONNECT_INTERVAL,
};
use chardev::Registry;
use chardev_testkit::*;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A collector of the test's own: a datagram socket bound at `path`, reads bounded.
fn bind(path: &Path) -> UnixDatagram {
    let socket = UnixDatagram::bind(path).expect("bind the collector's socket");
    socket.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    socket
}

/// The next record the collector gets, as text.
fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a record within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn stats(reg: &Registry, id: &str) -> SyslogStats {
    reg.with_backend::<Syslog, _>(id, |s| s.stats()).expect("a syslog chardev")
}

/// Checks one RFC 3164 record as glibc's syslog(3) frames it, `<PRI>Mmm dd hh:mm:ss
/// TAG[PID]: TEXT`, and returns its text.
fn rfc3164_text(record: &str, pri: u8, tag: &str) -> String {
    let head = format!("<{pri}>");
    let rest = record.strip_prefix(&head).unwrap_or_else(|| panic!("{record:?}: not {head}"));
    let (stamp, rest) = rest.split_at(15);
    let months =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    assert!(months.contains(&&stamp[..3]), "{record:?}: a month first");
    let b = stamp.as_bytes();
    assert!(
        b[3] == b' '
            && (b[4] == b' ' || b[4].is_ascii_digit())
            && b[5].is_ascii_digit()
            && b[6] == b' '
            && b[9] == b':'
            && b[12] == b':',
        "{record:?}: the timestamp is Mmm dd hh:mm:ss"
    );
    let who = format!(" {tag}[{}]: ", std::process::id());
    rest.strip_prefix(&who).unwrap_or_else(|| panic!("{record:?}: then {who:?}")).to_string()
}

#[test]
fn lines_become_rfc3164_records_as_syslog3_frames_them() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let collector = bind(&path);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("syslog,id=vm0,path={}", path.display()));
    let h = connect(&reg, "vm0");
    assert_eq!(reg.query()[0].filename, format!("syslog:{}", path.display()));
    // Several lines in one write, CR LF and LF, an empty line, escapes kept, NUL dropped.
    let written = b"Booting\r\n\r\nLinux \x1b[1mversion\x1b[0m\tx\n\0ok\n";
    assert_eq!(h.write(written).expect("write"), written.len());
    // user.info: 1 * 8 + 6.
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "Booting");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "Linux \x1b[1mversion\x1b[0m\tx");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "ok");
    // A line in pieces is one record.
    h.write(b"one ").expect("write");
    h.write(b"line\r").expect("write");
    h.write(b"\n").expect("write");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "one line");
    assert_eq!(stats(&reg, "vm0").records_sent, 4);
}

#[test]
fn rfc5424_records_carry_the_facility_tag_host_and_pid() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let collector = bind(&path);
    let (_lp, reg) = spawn_registry();
    add(
        &reg,
        &format!(
            "syslog,id=vm0,path={},format=rfc5424,facility=local3,tag=console",
            path.display()
        ),
    );
    let h = connect(&reg, "vm0");
    h.write(b"hello\n").expect("write");
    let record = recv(&collector);
    // local3.info: 19 * 8 + 6; `1` is the version.
    let fields: Vec<&str> = record.splitn(8, ' ').collect();
    assert_eq!(fields[0], "<158>1", "{record:?}");
    let stamp = fields[1];
    assert!(
        stamp.len() == 32
            && &stamp[10..11] == "T"
            && &stamp[19..20] == "."
            && &stamp[29..30] == ":",
        "{record:?}: YYYY-MM-DDThh:mm:ss.uuuuuu+hh:mm"
    );
    let host = nix::unistd::gethostname().expect("hostname").into_string().expect("ASCII");
    assert_eq!(
        fields[2..],
        [&host[..], "console", &std::process::id().to_string(), "-", "-", "hello"]
    );
}

#[test]
fn a_partial_line_goes_out_after_the_delay_and_a_long_line_in_pieces() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let collector = bind(&path);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("syslog,id=vm0,path={}", path.display()));
    let h = connect(&reg, "vm0");
    let start = Instant::now();
    h.write(b"login: ").expect("write");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "login: ");
    let waited = start.elapsed();
    assert!(
        waited >= PARTIAL_LINE_DELAY && waited < PARTIAL_LINE_DELAY + Duration::from_secs(2),
        "the prompt came after {waited:?}"
    );
    // The rest of that line is a record of its own; its end alone sends nothing.
    h.write(b"root\r\n").expect("write");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "root");
    h.write(b"\r\n").expect("write");
    // 2.5 records' worth of text with a 2-byte character across the first cut.
    let long = format!("{}é{}", "a".repeat(MAX_RECORD_TEXT - 1), "b".repeat(1500));
    h.write(format!("{long}\nnext\n").as_bytes()).expect("write");
    let parts: Vec<String> = (0..3).map(|_| rfc3164_text(&recv(&collector), 14, "vm0")).collect();
    assert_eq!(parts[0], "a".repeat(MAX_RECORD_TEXT - 1));
    assert_eq!(parts[1].len(), MAX_RECORD_TEXT);
    assert_eq!(parts.concat(), long);
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "next");
}

/// The text of a gap marker record: how many bytes it says were dropped.
fn gap_bytes(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("[chardev: ")?;
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn a_collector_that_stops_reading_never_stalls_the_writer_and_the_loss_is_counted_and_marked() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let collector = bind(&path);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("syslog,id=vm0,path={}", path.display()));
    let h = connect(&reg, "vm0");
    // Far more than the socket's queue and ours hold, while the collector reads nothing.
    let lines = 20_000;
    let text_len = format!("line {:06} {}", 0, "x".repeat(80)).len() as u64;
    let start = Instant::now();
    for i in 0..lines {
        let line = format!("line {i:06} {}\n", "x".repeat(80));
        assert_eq!(h.write(line.as_bytes()).expect("write never fails"), line.len());
    }
    assert!(start.elapsed() < DEADLINE, "the writer was held up");
    let s = stats(&reg, "vm0");
    assert!(s.records_dropped > 0 && s.queued > 0, "{s:?}");
    // Now read: what waited comes without another write (the socket's writable edge), in
    // order, with one marker where the gap is, which counts exactly what is missing.
    let mut last = None;
    let (mut got, mut got_bytes, mut markers) = (0u64, 0u64, Vec::new());
    while last != Some(lines - 1) {
        let text = rfc3164_text(&recv(&collector), 14, "vm0");
        if let Some(n) = gap_bytes(&text) {
            markers.push(n);
            continue;
        }
        let n: u64 = text[5..11].parse().expect("a numbered line");
        assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
        if last.is_some_and(|l| n != l + 1) {
            assert_eq!(markers.len(), 1, "a gap before line {n} has its marker");
        }
        last = Some(n);
        got += 1;
        got_bytes += text.len() as u64;
    }
    let s = stats(&reg, "vm0");
    assert_eq!(markers, [s.bytes_dropped], "one marker with the count");
    assert_eq!(got + s.records_dropped, lines);
    assert_eq!(got_bytes + s.bytes_dropped, lines * text_len);
    assert_eq!(s.queued, 0);
    // The common counters say the same (query-chardev, info chardev).
    let counters = reg.counters("vm0").expect("counters");
    assert_eq!(counters.dropped_backlog, s.bytes_dropped, "dropped_backlog = the marker's count");
}

#[test]
fn a_collector_that_goes_away_gets_what_waited_when_it_comes_back() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let collector = bind(&path);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("syslog,id=vm0,path={}", path.display()));
    let h = connect(&reg, "vm0");
    h.write(b"before\n").expect("write");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "before");
    // The collector restarts: its socket closes, and a new one takes the path later.
    drop(collector);
    std::fs::remove_file(&path).expect("remove the old socket");
    h.write(b"while away 1\nwhile away 2\n").expect("write while away");
    assert!(!stats(&reg, "vm0").connected);
    let collector = bind(&path);
    let back = Instant::now();
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "while away 1");
    assert!(back.elapsed() < RECONNECT_INTERVAL + Duration::from_secs(2));
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "while away 2");
    h.write(b"after\n").expect("write");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "after");
    let s = stats(&reg, "vm0");
    assert!(s.connected && s.records_dropped == 0, "{s:?}");
}

#[test]
fn removing_the_chardev_sends_the_partial_line_at_once() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let collector = bind(&path);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("syslog,id=vm0,path={}", path.display()));
    let h = connect(&reg, "vm0");
    h.write(b"last words").expect("write");
    drop(h);
    reg.remove("vm0").expect("remove");
    assert_eq!(rfc3164_text(&recv(&collector), 14, "vm0"), "last words");
}

#[test]
fn bad_options_and_unreachable_sockets_are_errors_naming_the_key_and_nothing_is_made() {
    let dir = tempdir();
    let stream = dir.path().join("stream.sock");
    let _listener = UnixListener::bind(&stream).expect("a stream socket");
    let stale = dir.path().join("stale.sock");
    drop(UnixDatagram::bind(&stale).expect("a socket nobody will listen on"));
    let file = dir.path().join("file");
    std::fs::write(&file, b"").expect("a file");
    let missing = dir.path().join("missing.sock");
    let good = dir.path().join("log.sock");
    let _collector = bind(&good);
    let (_lp, reg) = spawn_registry();
    let cases: Vec<(String, &str)> = vec![
        (format!("syslog,id=s,path={},facility=local8", good.display()), "'facility=local8'"),
        (format!("syslog,id=s,path={},facility=kern", good.display()), "'facility=kern'"),
        (format!("syslog,id=s,path={},format=json", good.display()), "'format=json': must be"),
        (format!("syslog,id=s,path={},tag=", good.display()), "'tag': must not be empty"),
        (format!("syslog,id=s,path={},tag=a:b", good.display()), "'tag=a:b'"),
        (format!("syslog,id=s,path={},tag={}", good.display(), "t".repeat(49)), "longer than 48"),
        ("syslog,id=s,path=".to_string(), "'path': must not be empty"),
        (format!("syslog,id=s,path={}", stream.display()), "is a stream socket"),
        (format!("syslog,id=s,path={}", stale.display()), "nobody listens"),
        (format!("syslog,id=s,path={}", file.display()), "is not a socket"),
        (format!("syslog,id=s,path={}", missing.display()), "no such socket"),
        (format!("syslog,id=s,path={},size=4", good.display()), "size"),
    ];
    for (spec, want) in cases {
        let e = reg.add_str(&spec).expect_err(&spec).to_string();
        assert!(e.contains(want), "{spec}: {e}");
        assert!(reg.query().is_empty(), "{spec}: nothing is made");
    }
    // The id is the tag when it can be, cut to 48 characters.
    let long_id = format!("v{}", "m".repeat(60));
    add(&reg, &format!("syslog,id={long_id},path={}", good.display()));
    connect(&reg, &long_id).write(b"x\n").expect("write");
    assert_eq!(rfc3164_text(&recv(&_collector), 14, &long_id[..48]), "x");
}

// ---- against a real rsyslogd ----

/// An `rsyslogd` of the test's own, in a temporary directory: `log.sock` with imuxsock's
/// default parser (the one for syslog(3)'s RFC 3164), `log5424.sock` with the regular parser
/// chain (RFC 5424), and every record it parsed written to `out.log` as
/// `programname|facility|severity|procid|msg`. Killed and reaped when dropped.
struct Rsyslogd {
    dir: PathBuf,
    child: Option<KillOnDrop>,
}

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

impl Rsyslogd {
    fn start(dir: &Path) -> Rsyslogd {
        require_program(RSYSLOGD, "rsyslog");
        let d = dir.display();
        let config = format!(
            r#"global(workDirectory="{d}")
module(load="imuxsock" sysSock.use="off")
input(type="imuxsock" socket="{d}/log.sock")
input(type="imuxsock" socket="{d}/log5424.sock" useSpecialParser="off")
template(name="fields" type="string"
         string="%programname%|%syslogfacility-text%|%syslogseverity-text%|%procid%|%msg%\n")
action(type="omfile" file="{d}/out.log" template="fields")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), config).expect("write the config");
        let mut r = Rsyslogd { dir: dir.to_path_buf(), child: None };
        r.restart();
        r
    }

    /// Starts it (again), and waits until both sockets are there and take records.
    fn restart(&mut self) {
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run rsyslogd (apt-get install rsyslog)");
        self.child = Some(KillOnDrop(child));
        let probe = UnixDatagram::unbound().expect("a probe socket");
        wait_until("rsyslogd's sockets", || {
            ["log.sock", "log5424.sock"].iter().all(|s| probe.connect(self.dir.join(s)).is_ok())
        });
    }

    /// Kills it (a crash: its sockets stay behind as files nobody listens on).
    fn kill(&mut self) {
        self.child = None;
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The records it wrote, once there are at least `n`.
    fn records(&self, n: usize) -> Vec<Vec<String>> {
        let mut lines = Vec::new();
        let out = self.dir.join("out.log");
        wait_until(&format!("{n} records from rsyslogd"), || {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            lines = text.lines().map(|l| l.splitn(5, '|').map(str::to_string).collect()).collect();
            lines.len() >= n
        });
        lines
    }
}

/// A record as `Rsyslogd::records` gives it, for comparisons.
fn rec(tag: &str, facility: &str, msg: &str) -> Vec<String> {
    let pid = std::process::id().to_string();
    [tag, facility, "info", &pid, msg].iter().map(|s| s.to_string()).collect()
}

#[test]
fn rsyslogd_takes_the_lines_as_records_with_tag_facility_and_order_in_both_formats() {
    let dir = tempdir();
    let rsyslogd = Rsyslogd::start(dir.path());
    let (_lp, reg) = spawn_registry();
    add(
        &reg,
        &format!("syslog,id=vm0,path={},facility=local3", rsyslogd.socket("log.sock").display()),
    );
    add(
        &reg,
        &format!(
            "syslog,id=vm1,path={},format=rfc5424,facility=daemon,tag=guest-1",
            rsyslogd.socket("log5424.sock").display()
        ),
    );
    let (h0, h1) = (connect(&reg, "vm0"), connect(&reg, "vm1"));
    for i in 0..50 {
        h0.write(format!("line {i}\r\n").as_bytes()).expect("write");
    }
    h1.write(b"5424 one\n5424\ttwo\n").expect("write");
    let mut got = rsyslogd.records(52);
    // rsyslog's RFC 3164 `msg` keeps the space after the colon.
    let (v0, v1): (Vec<_>, Vec<_>) = got.drain(..).partition(|r| r[0] == "vm0");
    let want0: Vec<_> = (0..50).map(|i| rec("vm0", "local3", &format!(" line {i}"))).collect();
    assert_eq!(v0, want0);
    // Control characters reach rsyslog, which escapes them as it does by default.
    assert_eq!(v1, [rec("guest-1", "daemon", "5424 one"), rec("guest-1", "daemon", "5424#011two")]);

    // A prompt arrives after the delay; a long line as several records, in order.
    let start = Instant::now();
    h0.write(b"login: ").expect("write");
    let got = rsyslogd.records(53);
    assert!(start.elapsed() >= PARTIAL_LINE_DELAY, "the prompt waited for its delay");
    assert_eq!(got[52], rec("vm0", "local3", " login: "));
    let long: String = (0..2500).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    h1.write(format!("{long}\n").as_bytes()).expect("write");
    let got = rsyslogd.records(56);
    let parts: Vec<&str> = got[53..].iter().map(|r| r[4].as_str()).collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [1024, 1024, 452]);
    assert_eq!(parts.concat(), long);
}

#[test]
fn a_restarted_rsyslogd_gets_the_lines_written_while_it_was_down() {
    let dir = tempdir();
    let mut rsyslogd = Rsyslogd::start(dir.path());
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("syslog,id=vm0,path={}", rsyslogd.socket("log.sock").display()));
    let h = connect(&reg, "vm0");
    h.write(b"up 1\n").expect("write");
    rsyslogd.records(1);
    rsyslogd.kill();
    for i in 0..20 {
        h.write(format!("down {i}\n").as_bytes()).expect("write while rsyslogd is down");
    }
    rsyslogd.restart();
    h.write(b"up 2\n").expect("write");
    let got = rsyslogd.records(22);
    let msgs: Vec<&str> = got.iter().map(|r| r[4].as_str()).collect();
    let mut want = vec![" up 1".to_string()];
    want.extend((0..20).map(|i| format!(" down {i}")));
    want.push(" up 2".to_string());
    assert_eq!(msgs, want);
    assert_eq!(stats(&reg, "vm0").records_dropped, 0);
}
