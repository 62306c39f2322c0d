//! The demos' shared parts: QEMU's command line, the tiny machine, and the human monitor.
//! The binaries in `src/bin` put them together.

pub mod cli; // qemu-system-x86_64's options -> Config
pub mod hmp; // the (qemu) prompt: line editing and commands
pub mod machine; // guest RAM, run state, a 16550 UART and the guest's shell
pub mod qmp; // the machine's QMP commands on the chardev-qmp server
pub mod relay; // two chardevs back to back, flow control end to end
pub mod services; // what monitors reach: chardevs, run state, migration
pub mod signals; // ending signals as QEMU announces them; stderr lines that never panic

use std::io::Write as _;

/// The program name the banner, `info version` and `query-version` show.
pub const PROGRAM: &str = "serial-console";

/// Sets up logging for a demo binary: `RUST_LOG` as usual, and warnings shown by default,
/// as QEMU prints its warnings (a deprecated option, a client that cannot connect, output a
/// pty dropped) on stderr without being asked.
pub fn init_logging() {
    // rustls warns of peers' harmless habits (socat sends an IP address as the TLS server
    // name); our own lines say what failed and why. RUST_LOG still sets anything.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,rustls=error"),
    )
    .init();
}

/// Prints what QEMU prints while chardevs are created (`char device redirected to /dev/pts/N
/// (label ID)` for a pty, on stdout; `QEMU waiting for connection on:
/// ...` before a `wait=on` server waits for its first client), for every chardev that
/// `registry` creates: from the command line, the monitor or QMP.
pub fn say_build_notices(registry: &chardev::Registry) {
    registry.on_build_notice(|notice| match notice {
        chardev::BuildNotice::WaitingForClient { filename, .. } => {
            say!("QEMU waiting for connection on: {filename}");
        }
        // On stdout, where QEMU prints it and scripts look for the slave. Not println!,
        // which panics when stdout is a closed pipe.
        chardev::BuildNotice::PtyOpened { id, path } => {
            let banner = format!("char device redirected to {} (label {id})", path.display());
            if let Err(e) = writeln!(std::io::stdout().lock(), "{banner}") {
                log::warn!("{banner} (cannot print it: {e})");
            }
        }
        _ => {}
    });
}

/// Where the demos' web consoles find xterm.js: `CHARDEV_WEB_ASSETS` if set, else the
/// `@xterm/xterm` package that `scripts/setup-web` installs in the workspace's `.web/`.
pub fn web_assets() -> std::path::PathBuf {
    match std::env::var_os("CHARDEV_WEB_ASSETS") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(chardev_socket::web::XTERM_PACKAGE),
    }
}
