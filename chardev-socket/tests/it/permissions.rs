//! `mode=` on unix server sockets (an extension: QEMU 7.2 has no such option, its socket
//! file is `0777 & ~umask` from bind(2)). The file gets exactly the bits asked for, set
//! between bind and listen; other users are let in by the file's write bit (checked here as
//! uid 65534 from a Python peer); without `mode=` the umask decides as in QEMU; misuse is
//! refused at parse time; and a mode that cannot be set fails creation and leaves no file.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chardev::{Event, LoopThread, Registry};
use chardev_testkit::*;

/// The user (and group) the unprivileged peer runs as: `nobody` on Debian.
const NOBODY: u32 = 65534;

/// Set for the helper test that a parent test runs in a child process of this binary.
const HELPER_SPEC: &str = "CHARDEV_PERMISSIONS_HELPER_SPEC";

/// How long a child process of ours may take (strace and a loaded machine are slow).
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// A loop and registry with the socket backends, and a temp dir that every user may search
/// (tempfile makes it 0700), so that the socket file's own mode is what decides.
fn setup() -> (LoopThread, Registry, tempfile::TempDir) {
    let (lp, reg, dir) = crate::support::setup();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (lp, reg, dir)
}

/// The permission bits (and setuid/setgid/sticky) of the socket file at `path`.
fn socket_mode(path: &Path) -> u32 {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    assert!(meta.file_type().is_socket(), "{} is not a socket", path.display());
    meta.permissions().mode() & 0o7777
}

/// This process's umask, read without changing it (umask(2) would, for every thread).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).expect("Umask: line");
    u32::from_str_radix(line.trim(), 8).unwrap()
}

fn server(reg: &Registry, id: &str, path: &Path, extra: &str) {
    add(reg, &format!("socket,id={id},path={},server=on,wait=off{extra}", path.display()));
}

/// Connects to each of `paths` as uid and gid [`NOBODY`] (no supplementary groups) and
/// returns, per path, "connected" or the errno's name.
fn connect_as_nobody(paths: &[&Path]) -> Vec<String> {
    const PEER: &str = r#"
import errno, os, socket, sys
os.setgroups([])
os.setgid(int(sys.argv[1]))
os.setuid(int(sys.argv[1]))
for path in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        print("connected")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
    finally:
        s.close()
"#;
    let out = output_within(
        python().arg("-c").arg(PEER).arg(NOBODY.to_string()).args(paths),
        "the uid 65534 peer",
    );
    assert!(out.status.success(), "the peer failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// Whether this process runs as root (effective uid 0), from /proc like [`umask`].
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("Uid: line");
    uids.split_whitespace().nth(1) == Some("0")
}

// ---------------------------------------------------------------------------------------

#[test]
fn mode_0600_makes_a_0600_socket_its_owner_can_use() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("s.sock");
    server(&reg, "s", &path, ",mode=0600");
    assert_eq!(socket_mode(&path), 0o600, "umask {:04o}", umask());
    // The filename is QEMU's: the mode is not part of it.
    let info = reg.query().into_iter().find(|c| c.label == "s").unwrap();
    assert_eq!(info.filename, format!("disconnected:unix:{},server=on", path.display()));

    let h = connect(&reg, "s");
    let rec = record(&h, 64);
    let mut client = connect_unix(&path);
    rec.expect_event(Event::Opened);
    std::io::Write::write_all(&mut client, b"hi").unwrap();
    assert_eq!(rec.data(2), b"hi");
    drop(client);
    rec.expect_event(Event::Closed);

    // Removing the chardev removes its socket file, as without a mode.
    h.detach();
    reg.remove("s").unwrap();
    assert!(!path.exists());
}

#[test]
fn other_users_need_write_permission_on_the_socket_file() {
    if !is_root() {
        eprintln!("skipped: needs root to run a peer as uid {NOBODY}");
        return;
    }
    let (_lp, reg, dir) = setup();
    // (mode, what uid 65534 gets): write permission for "others" is what connect(2) checks.
    let cases = [
        (0o600, "EACCES"),
        (0o644, "EACCES"),
        (0o666, "connected"),
        (0o622, "connected"),
        (0o000, "EACCES"),
    ];
    let mut paths = Vec::new();
    let mut records = Vec::new();
    for (i, (mode, _)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("m{mode:03o}.sock"));
        let id = format!("m{i}");
        server(&reg, &id, &path, &format!(",mode={mode:04o}"));
        assert_eq!(socket_mode(&path), *mode);
        let h = connect(&reg, &id);
        records.push((record(&h, 64), h));
        paths.push(path);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let got = connect_as_nobody(&refs);
    let want: Vec<&str> = cases.iter().map(|(_, w)| *w).collect();
    assert_eq!(got, want, "modes {:?}", cases.map(|(m, _)| format!("{m:04o}")));
    // The ones that got in reached the chardev (and left again).
    for ((rec, _h), (_, what)) in records.iter().zip(cases) {
        if what == "connected" {
            rec.expect_event(Event::Opened);
            rec.expect_event(Event::Closed);
        }
    }
    // Root is not bound by the mode: even 0000 lets it in (so does QEMU's socket).
    let mut root_client = connect_unix(paths.last().unwrap());
    records.last().unwrap().0.expect_event(Event::Opened);
    std::io::Write::write_all(&mut root_client, b"r").unwrap();
    assert_eq!(records.last().unwrap().0.data(1), b"r");
}

#[test]
fn without_mode_the_umask_decides_and_a_mode_may_be_wider() {
    let (_lp, reg, dir) = setup();
    let plain = dir.path().join("plain.sock");
    server(&reg, "plain", &plain, "");
    assert_eq!(socket_mode(&plain), 0o777 & !umask(), "QEMU's bind(2) default");

    // Wider than the umask allows (a umask of 022 gives 0755 without it).
    let wide = dir.path().join("wide.sock");
    server(&reg, "wide", &wide, ",mode=777");
    assert_eq!(socket_mode(&wide), 0o777);

    // The process umask is left as it was.
    let before = umask();
    let narrow = dir.path().join("narrow.sock");
    server(&reg, "narrow", &narrow, ",mode=0640");
    assert_eq!(socket_mode(&narrow), 0o640);
    assert_eq!(umask(), before);
}

#[test]
fn a_stale_socket_file_is_replaced_and_gets_the_mode() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("stale.sock");
    // A socket file nobody listens on any more, with wide permissions.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    server(&reg, "s", &path, ",mode=0600");
    assert_eq!(socket_mode(&path), 0o600);
    let _client = connect_unix(&path);
}

#[test]
fn misuse_of_mode_is_refused_before_anything_is_made() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("never.sock");
    let p = path.display();
    let range = "expects octal permission bits as for chmod, from 0 to 0777 (e.g. 0600 or 660)";
    let cases = [
        (format!("socket,id=s,path={p},server=on,wait=off,mode=999"), "'mode=999'", range),
        (format!("socket,id=s,path={p},server=on,wait=off,mode=abc"), "'mode=abc'", range),
        (format!("socket,id=s,path={p},server=on,wait=off,mode=1777"), "'mode=1777'", range),
        (
            "socket,id=s,host=127.0.0.1,port=0,server=on,wait=off,mode=0600".to_string(),
            "'mode=0600'",
            "only valid with 'path'",
        ),
        (
            format!("socket,id=s,path={p},mode=0600"),
            "'mode=0600'",
            "'mode' option is incompatible with socket in client connect mode",
        ),
        (
            format!("socket,id=s,path={p},abstract=on,server=on,wait=off,mode=0600"),
            "'mode=0600'",
            "'mode' option is incompatible with 'abstract'",
        ),
    ];
    for (spec, names, reason) in cases {
        let e = reg.add_str(&spec).expect_err(&spec).to_string();
        assert!(e.contains(names) && e.contains(reason), "{spec}: {e}");
        assert!(!reg.contains("s"), "{spec}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "something was made");
}

#[test]
fn a_built_spec_with_a_misplaced_mode_is_refused_by_the_backend() {
    let (_lp, reg, _dir) = setup();
    let mut spec =
        chardev::ChardevSpec::parse("socket,id=t,host=127.0.0.1,port=0,server=on,wait=off")
            .unwrap();
    let chardev::BackendSpec::Socket(s) = &mut spec.backend else { unreachable!() };
    s.mode = Some(0o600);
    let e = reg.add(&spec).expect_err("mode on tcp").to_string();
    assert!(e.contains("'mode=0600'") && e.contains("only valid with 'path'"), "{e}");
}

// ---- in a child process: the syscall order, and a chmod that fails ---------------------

/// Not a test of its own: a parent test runs this binary with [`HELPER_SPEC`] set to make
/// the chardev in a fresh process (under strace, or with /proc hidden), and reads what it
/// prints.
#[test]
#[ignore = "run by the tests below in a child process"]
fn helper_add_one_chardev() {
    let Ok(spec) = std::env::var(HELPER_SPEC) else { return };
    let (_lp, reg) = spawn_registry();
    chardev_socket::register(&reg);
    match reg.add_str(&spec) {
        Ok(_) => println!("helper: ok"),
        Err(e) => println!("helper: error: {e}"),
    }
}

/// Runs [`helper_add_one_chardev`] for `spec` in a child process, behind `wrapper` (a
/// command and its arguments, to which the test binary and its arguments are appended).
fn run_helper(wrapper: &[&str], spec: &str, what: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(exe)
        .args(["permissions::helper_add_one_chardev", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(HELPER_SPEC, spec);
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let out = wait_output_for(child, what, CHILD_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        // libtest prints "test NAME ... " before the helper's line, on the same line.
        .find_map(|l| l.split_once("helper: ").map(|(_, said)| said))
        .unwrap_or_else(|| panic!("{what} said nothing:\n{stdout}"))
        .to_string()
}

/// The file is chmod'ed after bind(2) and before listen(2), on the socket just bound: until
/// listen every connect is refused, so no client ever sees the umask's permissions.
#[test]
fn the_mode_is_set_between_bind_and_listen() {
    require_program("strace", "strace");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traced.sock");
    let trace = dir.path().join("strace.out");
    let trace_arg = trace.display().to_string();
    let spec = format!("socket,id=s,path={},server=on,wait=off,mode=0640", path.display());
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "signal=none",
        "-e",
        "trace=bind,listen,chmod,fchmodat,fchmod",
        "-o",
        &trace_arg,
    ];
    assert_eq!(run_helper(&wrapper, &spec, "the helper under strace"), "ok");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let path_text = format!("sun_path=\"{}\"", path.display());
    let find = |what: &str, pred: &dyn Fn(&str) -> bool| {
        lines.iter().position(|l| pred(l)).unwrap_or_else(|| panic!("no {what} in:\n{trace}"))
    };
    let bind = find("bind of the path", &|l| l.contains("bind(") && l.contains(&path_text));
    // "PID bind(FD, ..." : the fd the socket has.
    let fd = lines[bind].split("bind(").nth(1).unwrap().split(',').next().unwrap().to_string();
    let chmod = find("chmod to 0640", &|l| {
        l.contains("chmod") && l.contains(", 0640)") && l.ends_with("= 0")
    });
    let listen = find("listen on the socket", &|l| l.contains(&format!("listen({fd},")));
    assert!(
        bind < chmod && chmod < listen,
        "order bind {bind}, chmod {chmod}, listen {listen}:\n{trace}"
    );
    assert!(lines[bind].ends_with("= 0") && lines[listen].ends_with("= 0"), "{trace}");
    // Only once: no other chmod of anything, no fchmod (that would change the socket inode).
    assert_eq!(lines.iter().filter(|l| l.contains("chmod")).count(), 1, "{trace}");
    assert!(!path.exists(), "the helper's chardev is gone with it");
}

/// If the mode cannot be set, creation fails with an error naming the path, and the socket
/// file bind(2) made is removed. Made to fail by hiding /proc (through which the mode is set
/// without following symlinks) in a mount namespace of the child's own.
#[test]
fn a_mode_that_cannot_be_set_fails_creation_and_removes_the_file() {
    if !is_root() {
        eprintln!("skipped: needs root for a mount namespace");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failed.sock");
    let spec = format!("socket,id=s,path={},server=on,wait=off,mode=0600", path.display());
    let hide_proc = r#"mount -t tmpfs none /proc && exec "$0" "$@""#;
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide_proc];
    let said = run_helper(&wrapper, &spec, "the helper without /proc");
    assert!(
        said.starts_with("error: ")
            && said.contains(&format!("cannot set the permissions of '{}'", path.display())),
        "{said}"
    );
    assert!(said.contains("/proc"), "the error says why: {said}");
    assert!(!path.exists(), "the socket file was left behind");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
