//! serial-console: a tiny emulated machine driven by QEMU's command line.
//!
//! A 16550 UART (vm-superio) is the frontend of the `serial0` chardev; a guest thread runs a
//! small shell on it. Monitors (`-monitor`, `-mon`) run on any chardev. With no options it
//! behaves like `qemu-system-x86_64 -nographic`: the guest console and the monitor share the
//! terminal through a mux (`Ctrl-A c` switches, `Ctrl-A x` quits, `Ctrl-A h` helps).
//!
//! SIGTERM, SIGINT and SIGHUP end it as they end QEMU: one line on stderr, `serial-console:
//! terminating on signal 15 from pid 1234 (kill)` (or `terminating on signal 2` when the
//! kernel sent it, as for Ctrl-C on a `signal=on` terminal), then a clean shutdown (the
//! terminal restored, socket files removed) and exit status 0. One that comes before the
//! machine runs (creating a chardev can wait for a client) exits at once with status 0, and
//! a second one during the shutdown exits at once with status 1; the library's exit hook
//! restores the terminal then. A panic on any thread ends the program with status 101 and
//! the panic message, printed on a terminal restored first.
//!
//! TCP servers with no host listen on loopback only, unlike QEMU's; see
//! [`demos::cli::confine_listeners`].
//!
//! Test hook, not in `-h`: `CHARDEV_DEMO_PANIC_AFTER_MS=N` panics N ms after the machine
//! starts running, on the loop thread (which is the main thread), or on a thread of its own
//! with `CHARDEV_DEMO_PANIC_THREAD=worker`. The tests use it to check the terminal is restored.

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chardev::sync::lock;
use chardev::{EventLoop, LoopHandle, Registry};
use demos::cli::{self, AddFd, Command, Config, MonitorMode};
use demos::hmp::Hmp;
use demos::machine::{self, Guest, Machine, RunState};
use demos::services::{MigrationEndpoint, Services};
use demos::signals::Taken;
use demos::{say, PROGRAM};
use nix::sys::signal::{SigSet, Signal};

fn main() -> ExitCode {
    demos::init_logging();
    install_panic_exit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match cli::parse(&args) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => return print_out(&cli::usage(PROGRAM)),
        Ok(Command::Version) => {
            return print_out(&format!(
                "{PROGRAM} version {} (chardev {})\n",
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_VERSION")
            ));
        }
        Err(e) => {
            say!("{PROGRAM}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for notice in &config.notices {
        say!("{PROGRAM}: {notice}");
    }
    // Inherited fds are claimed first, before this process opens anything that could take
    // a number it does not own.
    let inherited = match take_add_fds(&config.add_fds) {
        Ok(fds) => fds,
        Err(e) => {
            say!("{PROGRAM}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before any thread starts: they all inherit the blocked mask.
    let shutdown = Shutdown::catch_signals();
    match run(&config, inherited, &shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` on stdout: status 0, or 1 if it cannot (print! would panic on a closed
/// pipe, as in `serial-console -h | head -1`).
fn print_out(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// `-add-fd`: each inherited number is taken once (a number named twice is duplicated, as
/// QEMU duplicates every one).
fn take_add_fds(add_fds: &[AddFd]) -> Result<Vec<(OwnedFd, &AddFd)>, String> {
    let mut taken: Vec<(OwnedFd, &AddFd)> = Vec::new();
    for add in add_fds {
        let fail =
            |e: &dyn std::fmt::Display| format!("-add-fd fd={},set={}: {e}", add.fd, add.set);
        let fd = match taken.iter().find(|(_, a)| a.fd == add.fd) {
            Some((first, _)) => chardev::fd::dup(first).map_err(|e| fail(&e))?,
            None => chardev::fd::take_inherited(add.fd).map_err(|e| fail(&e))?,
        };
        taken.push((fd, add));
    }
    Ok(taken)
}

fn run(
    config: &Config,
    inherited: Vec<(OwnedFd, &AddFd)>,
    shutdown: &Shutdown,
) -> Result<(), String> {
    let mut event_loop = EventLoop::new().map_err(|e| e.to_string())?;
    let handle = event_loop.handle();
    let registry = Registry::new(&handle);
    for (fd, add) in inherited {
        registry
            .fd_sets()
            .add(fd, Some(add.set), add.opaque.clone())
            .map_err(|e| format!("-add-fd fd={},set={}: {e}", add.fd, add.set))?;
    }
    chardev_socket::register_with_web_assets(&registry, Some(demos::web_assets()));
    chardev_pty::register(&registry);
    demos::say_build_notices(&registry);

    // Files for -device loader are read before anything opens.
    let mut images = Vec::new();
    for loader in &config.loaders {
        let data = std::fs::read(&loader.file)
            .map_err(|e| format!("-device loader,file={}: {e}", loader.file.display()))?;
        images.push((loader.addr, data));
    }
    let state = if config.incoming.is_some() {
        RunState::Inmigrate
    } else if config.start_stopped {
        RunState::Prelaunch
    } else {
        RunState::Running
    };
    let machine = Machine::new(config.name.clone(), config.ram_size, state);
    for (addr, data) in &images {
        machine.load(*addr, data).map_err(|e| format!("-device loader: {e}"))?;
    }

    for object in &config.objects {
        let id = object.id.clone();
        registry.add_object(object.clone()).map_err(|e| format!("-object id={id}: {e}"))?;
    }
    for spec in &config.chardevs {
        registry.add(spec).map_err(|e| format!("-chardev {}: {e}", spec.id))?;
    }
    let (uart, irq, uart_frontend) = machine::uart();
    let services = Services {
        registry: registry.clone(),
        machine: machine.clone(),
        event_loop: handle.clone(),
        events: Default::default(),
        uart: uart.clone(),
        irq: irq.clone(),
        machine_type: config.machine.as_str().into(),
        migration: Default::default(),
        failed: Default::default(),
    };
    // -incoming: read before anything runs (`defer` waits for migrate-incoming).
    let incoming = match &config.incoming {
        Some(uri) => MigrationEndpoint::from_command_line(uri)
            .map_err(|e| format!("-incoming {uri}: {e}"))?,
        None => None,
    };
    let quit = services.clone();
    event_loop.set_exit_handler(move || quit.quit());

    // Monitors first, then the serial port: on a shared mux the serial port ends up with the
    // focus and only it greets the user, as with QEMU's -nographic.
    let qmp = demos::qmp::server(&services);
    for monitor in &config.monitors {
        let fe = registry
            .connect(&monitor.chardev)
            .map_err(|e| format!("-mon chardev={}: {e}", monitor.chardev))?;
        match monitor.mode {
            MonitorMode::Readline => fe.set_frontend(Hmp::new(fe.clone(), services.clone())),
            MonitorMode::Control { pretty } => fe.set_frontend(qmp.monitor(fe.clone(), pretty)),
        }
    }
    let serial = match &config.serial {
        Some(id) => {
            let fe = registry.connect(id).map_err(|e| format!("-serial chardev:{id}: {e}"))?;
            fe.set_frontend(uart_frontend);
            Some(fe)
        }
        None => None,
    };
    let guest = Guest::new(machine.clone(), uart, irq, serial)
        .spawn()
        .map_err(|e| format!("cannot start the guest: {e}"))?;

    if let Some(source) = incoming {
        services.migrate_incoming(source)?;
    }

    // From here a signal stops the loop (before, it exits at once: creating a chardev can
    // wait for a client, with no loop to stop).
    shutdown.arm(services.clone());
    test_panic_hook(&handle)?;
    event_loop.run().map_err(|e| e.to_string())?;
    machine.quit();
    drop(event_loop);
    // Removing the chardevs closes sockets, removes socket files and restores the terminal.
    for id in registry.ids() {
        let _ = registry.remove_forced(&id);
    }
    let _ = guest.join();
    if services.failed.load(std::sync::atomic::Ordering::Acquire) {
        return Err("stopped after an error".into());
    }
    Ok(())
}

/// A panic on any thread ends the program, as one on the main thread does: a guest, loop or
/// migration thread that is gone leaves a machine that cannot go on. The message comes
/// first (the library's hook, chained in front of this one once a terminal is raw, has
/// restored the terminal before it).
fn install_panic_exit() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        if std::thread::current().name() != Some("main") {
            // exit(3) runs the library's atexit hook too; other threads are not unwound.
            std::process::exit(101);
        }
    }));
}

/// `CHARDEV_DEMO_PANIC_AFTER_MS=N` (and `CHARDEV_DEMO_PANIC_THREAD=worker`): see the module
/// docs. Does nothing without the variable.
fn test_panic_hook(event_loop: &LoopHandle) -> Result<(), String> {
    let Some(ms) = std::env::var_os("CHARDEV_DEMO_PANIC_AFTER_MS") else { return Ok(()) };
    let ms: u64 = ms
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or("CHARDEV_DEMO_PANIC_AFTER_MS: a number of milliseconds, please")?;
    let on_worker = std::env::var("CHARDEV_DEMO_PANIC_THREAD").is_ok_and(|t| t == "worker");
    let event_loop = event_loop.clone();
    std::thread::Builder::new()
        .name("test-panic".into())
        .spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            if on_worker {
                panic!("CHARDEV_DEMO_PANIC_AFTER_MS: test panic on a worker thread");
            }
            event_loop.run_on_loop(|| {
                panic!("CHARDEV_DEMO_PANIC_AFTER_MS: test panic on the loop thread")
            });
        })
        .map(drop)
        .map_err(|e| format!("cannot start the test panic thread: {e}"))
}

/// QEMU's handling of SIGTERM, SIGINT and SIGHUP (`termsig_handler`, `qemu_kill_report`):
/// the signals are blocked in every thread and taken by one thread with sigwaitinfo(2), which
/// reports the sender and stops the machine (see the module docs); but a SIGHUP that a
/// process sends (logrotate's `postrotate`) reopens the logfiles instead.
struct Shutdown {
    /// What stops the machine, once it runs.
    services: Arc<Mutex<Option<Services>>>,
}

/// The signals that end the program cleanly. SIGQUIT keeps its default (a core dump), with
/// the library's terminal restore in front.
const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGHUP, Signal::SIGTERM];

impl Shutdown {
    /// Blocks the signals in this thread (every thread started later inherits that) and
    /// starts the thread that takes them. If that thread cannot start, the signals stay
    /// unblocked and kill the process as before (the library restores the terminal then).
    fn catch_signals() -> Shutdown {
        let services: Arc<Mutex<Option<Services>>> = Arc::default();
        let set: SigSet = TERMINATING.into_iter().collect();
        if let Err(e) = set.thread_block() {
            log::warn!("cannot block the terminating signals: {e}");
            return Shutdown { services };
        }
        let target = Arc::clone(&services);
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || take_signals(&set, &target));
        if let Err(e) = spawned {
            log::warn!("cannot start the signal thread: {e}");
            let _ = set.thread_unblock();
        }
        Shutdown { services }
    }

    /// From now on the first signal stops `services`' loop rather than exiting at once.
    fn arm(&self, services: Services) {
        *lock(&self.services) = Some(services);
    }
}

fn take_signals(set: &SigSet, target: &Mutex<Option<Services>>) {
    let mut stopping = false;
    loop {
        match demos::signals::next_signal(set, PROGRAM) {
            None => return,
            Some(Taken::ReopenLogs) => {
                // Before the machine runs there is nothing to reopen yet.
                if let Some(services) = lock(target).clone() {
                    if let Err(e) = services.registry.reopen_logs() {
                        say!("{PROGRAM}: SIGHUP: cannot reopen a logfile: {e}");
                    }
                }
                continue;
            }
            Some(Taken::Terminate(_)) => {}
        }
        let services = lock(target).clone();
        match services {
            Some(services) if !stopping => {
                stopping = true;
                services.quit();
            }
            // exit(3) runs the library's atexit hook, which restores the terminal.
            _ => std::process::exit(if stopping { 1 } else { 0 }),
        }
    }
}
