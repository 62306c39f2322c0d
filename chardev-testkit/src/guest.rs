//! A real Linux guest on a serial line, for tests of consoles: QEMU (`qemu-system-x86_64`,
//! TCG) boots Debian's cloud kernel ([`kernel`]) with a busybox initramfs ([`initramfs`]) that
//! says which boot it is and runs a shell on `ttyS0`, and the test reads the guest's serial
//! console wherever QEMU's `-serial` puts it ([`Guest::boot`], read with a [`Console`]).
//!
//! What it takes, from Debian: `qemu-system-x86` (QEMU), `linux-image-cloud-amd64` (the
//! kernel), `busybox-static` and `cpio` (the initramfs; `gzip` is always there). A test that
//! misses one fails at once naming the package, never skips: the continuous integration
//! installs them all (`.ci/run`).
//!
//! Checked once on this kernel (6.1.0-57-cloud-amd64, `/boot/config-*`): the 8250 UART and its
//! console are built in (`CONFIG_SERIAL_8250=y`, `CONFIG_SERIAL_8250_CONSOLE=y`), so
//! `console=ttyS0` works without modules, and the initramfs can be busybox alone
//! (`CONFIG_DEVTMPFS=y`, `CONFIG_RD_GZIP=y`); [`kernel`] checks the two serial options again
//! where the config file is there. QEMU runs with `-accel tcg`, never KVM: these machines are
//! virtual themselves, and a nested KVM boot hangs here. Under TCG the guest reaches its
//! shell prompt in about 4.5 s on an idle machine (QEMU started to `guest# ` seen, with
//! the kernel's full boot log of about 21 KB and 320 lines on the console); allow several
//! times that on a loaded one.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{require_program, KillOnDrop};

/// The guest shell's prompt (`PS1`), distinctive enough that no kernel message contains it.
pub const PROMPT: &str = "guest# ";

/// The line the guest's init prints on its console once per boot, before the first shell:
/// `chardev-guest boot ID`, ID being the `boot_id` given to [`Guest::boot`]. A console's
/// history or logfile shows which boots it saw by these lines.
pub fn boot_line(boot_id: &str) -> String {
    format!("chardev-guest boot {boot_id}")
}

/// Debian's cloud kernel: the newest `/boot/vmlinuz-*-cloud-amd64` (by version, not by
/// name). Fails the test, naming the package to install, if there is none, and, where its
/// `/boot/config-*` is there, if it lacks the built-in serial console the guest needs.
pub fn kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(find_kernel).clone()
}

/// The release of [`kernel`] (`6.1.0-57-cloud-amd64`), which `uname -r` prints in the guest.
pub fn kernel_release() -> String {
    let kernel = kernel();
    let name = kernel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_prefix("vmlinuz-").unwrap_or(name).to_string()
}

fn find_kernel() -> PathBuf {
    let missing = "this test boots a real Linux guest and needs Debian's cloud kernel, \
                   /boot/vmlinuz-*-cloud-amd64: apt-get install linux-image-cloud-amd64";
    let entries = std::fs::read_dir("/boot").unwrap_or_else(|e| panic!("{missing} ({e})"));
    let newest = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
        .max_by_key(|n| version_key(n))
        .unwrap_or_else(|| panic!("{missing}"));
    let path = Path::new("/boot").join(&newest);
    if let Err(e) = std::fs::File::open(&path) {
        panic!("cannot read the guest's kernel {}: {e} (QEMU must read it)", path.display());
    }
    let release = newest.trim_start_matches("vmlinuz-");
    if let Ok(config) = std::fs::read_to_string(format!("/boot/config-{release}")) {
        for option in ["CONFIG_SERIAL_8250=y", "CONFIG_SERIAL_8250_CONSOLE=y"] {
            assert!(
                config.lines().any(|l| l == option),
                "the kernel {} lacks {option}: the guest's console on ttyS0 needs the 8250 \
                 UART built in (Debian's linux-image-cloud-amd64 has it)",
                path.display()
            );
        }
    }
    path
}

/// The numbers in a kernel's file name, in order: `6.1.0-57` sorts below `6.1.0-128`.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
}

/// The guest's `/init`. It finds the boot id on the kernel command line (`chardev.boot=ID`,
/// which the kernel ignores and keeps in /proc/cmdline), says [`boot_line`], and runs a login
/// shell on the console for ever: `setsid cttyhack` makes ttyS0 the shell's controlling
/// terminal (job control, Ctrl-C), and the loop gives a new shell after an `exit`.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/ TERM=vt100
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
boot=$(sed -n 's/.*chardev\.boot=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "chardev-guest boot $boot"
export PS1='guest# '
while :; do setsid cttyhack sh; done
"#;

/// Where Debian's `busybox-static` puts its binary.
const BUSYBOX: &str = "/bin/busybox";

/// The guest's initramfs: a gzip'ed newc cpio of Debian's static busybox and an `/init`
/// script that mounts proc, sys and devtmpfs, says [`boot_line`] with the id from the kernel
/// command line, and runs a shell on the console (prompt [`PROMPT`]) again after each exit.
///
/// Built once per test process, and kept between runs in `target/test-guest/` (the cargo
/// target directory of the test binary), named after the busybox binary's size and mtime
/// and the init script, so that an upgraded busybox or a changed script makes a new one. It
/// is written under a temporary name and renamed into place: test processes that build it
/// at the same time each rename a whole file. Fails the test naming the package if busybox
/// (static: a dynamic one cannot run without its libraries) or cpio is missing.
pub fn initramfs() -> PathBuf {
    static INITRAMFS: OnceLock<PathBuf> = OnceLock::new();
    INITRAMFS.get_or_init(build_initramfs).clone()
}

fn build_initramfs() -> PathBuf {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let busybox = std::fs::metadata(BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "this test boots a guest whose userland is busybox, and {BUSYBOX} is missing \
             ({e}): apt-get install busybox-static"
        )
    });
    assert!(
        is_static(Path::new(BUSYBOX)),
        "{BUSYBOX} is dynamically linked (Debian's busybox package): the guest has no \
         libraries, so it needs the static one: apt-get install busybox-static"
    );
    require_program("cpio", "cpio");
    require_program("gzip", "gzip");
    let mut script = std::collections::hash_map::DefaultHasher::new();
    INIT.hash(&mut script);
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let name = format!(
        "initramfs-{}-{}-{:016x}.cpio.gz",
        busybox.size(),
        busybox.mtime(),
        script.finish()
    );
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    let unique = format!("{}-{:?}", std::process::id(), std::thread::current().id());
    let stage = dir.join(format!("stage-{unique}"));
    let partial = dir.join(format!("partial-{unique}.cpio.gz"));
    let _ = std::fs::remove_dir_all(&stage);
    let made = (|| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(stage.join("bin"))?;
        std::fs::copy(BUSYBOX, stage.join("bin/busybox"))?;
        std::fs::write(stage.join("init"), INIT)?;
        std::fs::set_permissions(stage.join("init"), std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    })();
    if let Err(e) = made {
        panic!("stage the initramfs in {}: {e}", stage.display());
    }
    pack(&stage, &partial);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::rename(&partial, &path)
        .unwrap_or_else(|e| panic!("rename {} into place: {e}", partial.display()));
    path
}

/// `target/test-guest`, beside `target/<profile>/` of the running test binary (as
/// [`crate::example`] finds it); the system's temporary directory if the binary is elsewhere.
fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    match exe.ancestors().nth(3) {
        Some(target) if exe.parent().is_some_and(|d| d.ends_with("deps")) => {
            target.join("test-guest")
        }
        _ => std::env::temp_dir().join("chardev-test-guest"),
    }
}

/// Whether the ELF file at `path` has no program interpreter (PT_INTERP): a static binary.
fn is_static(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = std::fs::read(path) else { return false };
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at =
        |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at =
        |at: usize| elf.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    // A 64-bit little-endian ELF: the program headers' offset, entry size and count.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

/// `cd stage && printf 'bin\nbin/busybox\ninit\n' | cpio -o -H newc -R 0:0 | gzip -9n > out`.
fn pack(stage: &Path, out: &Path) {
    let file =
        std::fs::File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let mut cpio = KillOnDrop(
        Command::new("cpio")
            .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
            .current_dir(stage)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run cpio (apt-get install cpio): {e}")),
    );
    let archive = cpio.0.stdout.take().expect("cpio's stdout is piped");
    let mut gzip = KillOnDrop(
        Command::new("gzip")
            .arg("-9n")
            .stdin(archive)
            .stdout(file)
            .spawn()
            .unwrap_or_else(|e| panic!("run gzip: {e}")),
    );
    let mut list = cpio.0.stdin.take().expect("cpio's stdin is piped");
    list.write_all(b"bin\nbin/busybox\ninit\n").expect("give cpio the file list");
    drop(list);
    assert!(crate::wait_exit(&mut cpio.0, "cpio").success(), "cpio failed");
    assert!(crate::wait_exit(&mut gzip.0, "gzip").success(), "gzip failed");
}

/// A QEMU process running the test guest, killed (and reaped) when dropped. What QEMU prints
/// (on stdout and stderr) is collected for failure messages ([`Guest::qemu_output`]).
#[derive(Debug)]
pub struct Guest {
    qemu: Option<Captured>,
    boot_id: String,
}

impl Guest {
    /// Boots the guest with its console on `serial`, QEMU's `-serial` argument
    /// (`unix:/tmp/vm.sock,server=on,wait=off`), and `boot_id` (no spaces) in its
    /// [`boot_line`]. Returns as soon as QEMU is started; the guest reaches its [`PROMPT`]
    /// some seconds later. Fails the test, naming the package, if QEMU, the kernel, busybox or cpio is
    /// missing.
    ///
    /// The machine: TCG (never KVM, see the module docs), 256 MiB, no default devices (no
    /// VGA, no network, no monitor), and `-no-reboot` with `panic=-1`, so that a guest that
    /// panics (no init, say) ends QEMU at once rather than looping.
    pub fn boot(serial: &str, boot_id: &str) -> Guest {
        assert!(
            !boot_id.is_empty() && !boot_id.contains(char::is_whitespace),
            "a boot id is one word on the kernel command line, not {boot_id:?}"
        );
        require_program("qemu-system-x86_64", "qemu-system-x86");
        let (kernel, initramfs) = (kernel(), initramfs());
        let append = format!("console=ttyS0 panic=-1 chardev.boot={boot_id}");
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none"])
            .arg("-no-reboot")
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initramfs)
            .args(["-append", &append, "-serial", serial]);
        Guest { qemu: Some(Captured::spawn(qemu, "qemu-system-x86_64")), boot_id: boot_id.into() }
    }

    /// The boot id this guest was booted with.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// Kills QEMU (SIGKILL: the guest has no say, as with a host crash) and reaps it.
    pub fn kill(&mut self) {
        drop(self.qemu.take());
    }

    /// What QEMU printed so far, for a failure message.
    pub fn qemu_output(&self) -> String {
        self.qemu.as_ref().map(Captured::output).unwrap_or_else(|| "(killed)".into())
    }

    /// Fails the test with QEMU's exit status and what it printed if QEMU has ended (a bad
    /// argument, a guest panic); does nothing while it runs or after [`Guest::kill`].
    pub fn check_running(&mut self) {
        if let Some(qemu) = &mut self.qemu {
            qemu.check_running();
        }
    }
}

/// A child process whose stdout and stderr are collected (by two threads) for failure
/// messages, killed and reaped when dropped: QEMU, a relay.
pub struct Captured {
    child: KillOnDrop,
    what: String,
    output: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured").field("what", &self.what).field("pid", &self.id()).finish()
    }
}

impl Captured {
    /// Spawns `cmd` with stdin from /dev/null, stdout and stderr collected; `what` names it in
    /// messages.
    pub fn spawn(mut cmd: Command, what: &str) -> Captured {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {what}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let collect = |pipe: Option<Box<dyn Read + Send>>| {
            let output = Arc::clone(&output);
            if let Some(mut pipe) = pipe {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = pipe.read(&mut buf) {
                        chardev::sync::lock(&output).extend_from_slice(&buf[..n]);
                    }
                });
            }
        };
        collect(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        collect(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        Captured { child: KillOnDrop(child), what: what.into(), output }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.0.id()
    }

    /// What the child printed so far (stdout and stderr interleaved as they came).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&chardev::sync::lock(&self.output)).into_owned()
    }

    /// Fails the test with the exit status and what the child printed if it has ended.
    pub fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.0.try_wait() {
            panic!("{} ended ({status}); it printed:\n{}", self.what, self.output());
        }
    }
}

/// A connection to a console served on a unix socket (a viewer), read with explicit
/// deadlines: a guest's boot takes longer than the kit's [`crate::DEADLINE`].
#[derive(Debug)]
pub struct Console {
    stream: UnixStream,
    /// Everything read so far that [`Console::read_until`] has not handed out.
    pending: Vec<u8>,
    /// Everything read since the connection opened.
    seen: Vec<u8>,
}

impl Console {
    /// Connects to the console's socket at `path`, retrying until it listens or `within`
    /// has passed.
    pub fn connect(path: &Path, within: Duration) -> Console {
        let end = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= end => {
                    panic!("no console listens on {} within {within:?}: {e}", path.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Console { stream, pending: Vec::new(), seen: Vec::new() }
    }

    /// Types `text` into the console.
    pub fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("write to the console");
    }

    /// Everything up to and including the first `needle` not yet handed out; on timeout (or
    /// an end of the connection) an error that says what was seen meanwhile (its last 2000
    /// bytes), for the test to fail with along with what else it knows (QEMU's output).
    pub fn read_until(&mut self, needle: &str, within: Duration) -> Result<Vec<u8>, String> {
        let needle = needle.as_bytes();
        let end = Instant::now() + within;
        loop {
            if let Some(at) = self.pending.windows(needle.len()).position(|w| w == needle) {
                let rest = self.pending.split_off(at + needle.len());
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            let left = end.saturating_duration_since(Instant::now());
            let why = if left.is_zero() {
                format!("not within {within:?}")
            } else {
                // A zero read timeout means none: `left` is at least a nanosecond here.
                self.stream.set_read_timeout(Some(left)).expect("set a read timeout");
                let mut buf = [0u8; 65536];
                match self.stream.read(&mut buf) {
                    Ok(0) => "the console closed".to_string(),
                    Ok(n) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        self.seen.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(e) => format!("reading the console failed: {e}"),
                }
            };
            let tail = &self.pending[self.pending.len().saturating_sub(2000)..];
            return Err(format!(
                "expected {:?} on the console: {why}; the console showed:\n{}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(tail)
            ));
        }
    }

    /// Everything read since the connection opened.
    pub fn seen(&self) -> &[u8] {
        &self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sort_by_version_not_by_name() {
        let mut names = ["vmlinuz-6.1.0-128-cloud-amd64", "vmlinuz-6.1.0-57-cloud-amd64"];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names[1], "vmlinuz-6.1.0-128-cloud-amd64");
    }

    #[test]
    fn a_dynamic_binary_is_not_taken_for_a_static_one() {
        // The test binary itself is dynamically linked (it has an interpreter).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static(&me));
        assert!(!is_static(Path::new("/nonexistent")));
    }
}
