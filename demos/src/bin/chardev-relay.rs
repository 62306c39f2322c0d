//! chardev-relay: joins two chardevs back to back, as socat joins two addresses.
//!
//! `chardev-relay [--keep-open] [-v] SPEC SPEC`, each SPEC in QEMU's `-chardev` syntax,
//! its `id` optional (`a` and `b` by default; it names the side in messages):
//! `chardev-relay pty socket,path=/tmp/s.sock,server=on,wait=off`.
//!
//! SIGTERM, SIGINT and SIGHUP end it as serial-console and QEMU end: one line on stderr,
//! `chardev-relay: terminating on signal 15 from pid 1234 (kill)`, then a clean shutdown
//! (the totals with `-v`, the chardevs removed and with them their socket files) and exit
//! status 0. One that comes before the relay runs (creating a chardev can wait for a client)
//! exits at once with status 0, and a second one during the shutdown exits at once with
//! status 1.

use std::process::ExitCode;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chardev::options::BacklogFull;
use chardev::sync::lock;
use chardev::{BackendSpec, ChardevSpec, EventLoop, Registry};
use demos::relay::{self, RelayEvent};
use demos::say;
use demos::signals::Taken;
use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: chardev-relay [--keep-open] [--no-fds] [--copy] [-v] [--object SPEC]... [--chardev SPEC]... SPEC SPEC

Joins two chardevs back to back, each given in QEMU's -chardev syntax (an id is
optional, a and b by default, and names the side in messages):
  chardev-relay pty unix:/tmp/s.sock,server=on        (legacy forms work too)
  chardev-relay socket,path=/tmp/a,server=on,wait=off socket,host=127.0.0.1,port=4000

Bytes flow both ways with flow control: a slow side slows the other, and nothing is
dropped (a pty with no terminal keeps its backlog, 64 KiB, then waits for one;
pty,backlog-full=drop drops the oldest output instead and says how much when a terminal
comes). Fds pass through when both sides are unix sockets. Where no fd can flow, bytes
between plain sockets move by splice(2) and never enter user space. The relay ends when
a side that was open closes.

  --chardev SPEC  make this chardev (with its id=) before the two sides, as QEMU's
                -chardev: for the members of a side that is a hub
                (--chardev socket,id=u,...  --chardev socket,id=w,... VM hub,chardevs.0=u,chardevs.1=w)
  --object SPEC  make this object first, as QEMU's -object: TLS credentials for a side
                with tls-creds=, an authz list for tls-authz=
                (--object tls-creds-x509,id=tls0,dir=/etc/pki/qemu,endpoint=server
                 socket,host=127.0.0.1,port=5000,server=on,tls-creds=tls0 pty)
  --keep-open   do not end when a side closes: wait for its next connection
  --no-fds      do not pass fds (close those that arrive, as socat does): splice everywhere
  --copy        never splice: copy every byte through the relay's buffer
  -v            report the rate each second on stderr, and the totals at the end
  -h, --help    this help
";

fn main() -> ExitCode {
    demos::init_logging();
    let mut keep_open = false;
    let mut verbose = false;
    let mut options = relay::Options::default();
    let mut specs = Vec::new();
    let mut before = Before::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--chardev" => match args.next() {
                Some(spec) => before.chardevs.push(spec),
                None => {
                    say!("chardev-relay: --chardev needs a SPEC\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--object" => match args.next() {
                Some(spec) => before.objects.push(spec),
                None => {
                    say!("chardev-relay: --object needs a SPEC\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--keep-open" => keep_open = true,
            "-v" => verbose = true,
            "--no-fds" => options.pass_fds = false,
            "--copy" => options.splice = false,
            "-h" | "--help" => return print_out(USAGE),
            s if s.starts_with('-') => {
                say!("chardev-relay: {s}: unknown option\n\n{USAGE}");
                return ExitCode::from(2);
            }
            s => specs.push(s.to_string()),
        }
    }
    if specs.len() != 2 {
        say!("chardev-relay: two chardevs are needed, {} given\n\n{USAGE}", specs.len());
        return ExitCode::from(2);
    }
    // Before any thread starts: they all inherit the blocked mask.
    let shutdown = Shutdown::catch_signals();
    match run(&before, &specs[0], &specs[1], keep_open, verbose, options, &shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("chardev-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` on stdout: status 0, or 1 if it cannot (print! would panic on a closed
/// pipe).
fn print_out(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// What wakes the main thread.
enum Wake {
    /// News from the relay.
    Relay(RelayEvent),
    /// SIGTERM, SIGINT or a terminal's hang-up: shut down (the signal thread has said so on
    /// stderr).
    Signal,
    /// SIGHUP from a process (logrotate's `postrotate`): reopen the logfiles.
    ReopenLogs,
}

impl From<RelayEvent> for Wake {
    fn from(event: RelayEvent) -> Wake {
        Wake::Relay(event)
    }
}

/// A spec in -chardev syntax, or in the legacy form (`pty`, `unix:PATH,server=on`).
///
/// A pty waits for a terminal when its backlog is full (`backlog-full=wait`): the relay
/// promises that a slow side slows the other and nothing is dropped, and a pty with nobody
/// attached is the slowest side there is. `backlog-full=drop` asks for the pty's own
/// default (drop the oldest output, counted and logged when a terminal attaches).
fn parse(spec: &str, id: &str) -> Result<ChardevSpec, String> {
    let mut parsed = match ChardevSpec::parse_with_id(spec, id) {
        Ok(s) => s,
        Err(first) => match chardev::compat::parse_compat(spec, id) {
            Ok((chardev::compat::Compat::New(s), false)) => s,
            _ => return Err(format!("{spec}: {first}")),
        },
    };
    if let BackendSpec::Pty { when_full, .. } = &mut parsed.backend {
        let explicit = chardev::options::split_options(spec, "backend")
            .is_ok_and(|pairs| pairs.iter().any(|(key, _)| key == "backlog-full"));
        if !explicit {
            *when_full = BacklogFull::Wait;
        }
    }
    Ok(parsed)
}

/// What the command line makes before the two sides: `--object`s, then `--chardev`s.
#[derive(Default)]
struct Before {
    objects: Vec<String>,
    chardevs: Vec<String>,
}

fn run(
    before: &Before,
    a: &str,
    b: &str,
    keep_open: bool,
    verbose: bool,
    options: relay::Options,
    shutdown: &Shutdown,
) -> Result<(), String> {
    let specs = [parse(a, "a")?, parse(b, "b")?];
    // A spec's own id= names its chardev (`socket,id=vm,...`: messages say 'vm').
    let ids = [specs[0].id.clone(), specs[1].id.clone()];
    if ids[0] == ids[1] {
        return Err(format!("both chardevs have the id '{}': give them different ones", ids[0]));
    }
    let lp = EventLoop::spawn().map_err(|e| e.to_string())?;
    let registry = Registry::new(lp.handle());
    chardev_socket::register_with_web_assets(&registry, Some(demos::web_assets()));
    chardev_pty::register(&registry);
    demos::say_build_notices(&registry);
    for spec in &before.objects {
        let object =
            chardev_qmp::parse_object_arg(spec).map_err(|e| format!("--object {spec}: {e}"))?;
        registry.add_object(object).map_err(|e| format!("--object {spec}: {e}"))?;
    }
    // --chardev first, in order: a side may be a hub over them.
    for spec in &before.chardevs {
        let spec = ChardevSpec::parse(spec).map_err(|e| format!("--chardev {spec}: {e}"))?;
        if ids.contains(&spec.id) {
            return Err(format!("--chardev {}: the id '{}' is a side's", spec.id, spec.id));
        }
        registry.add(&spec).map_err(|e| format!("--chardev {}: {e}", spec.id))?;
    }
    for spec in &specs {
        registry.add(spec).map_err(|e| e.to_string())?;
    }
    let (tx, rx) = channel();
    // Ctrl-A x on a `mux=on` side ends the relay as a signal does (the library leaves the
    // exit to the program): chardevs removed, socket files gone, status 0.
    let quit = tx.clone();
    lp.handle().set_exit_handler(move || {
        let _ = quit.send(Wake::Signal);
    });
    // From here a signal ends the loop below (before, it exits at once: creating a chardev
    // can wait for a client). Armed before the relay joins the sides, so that bytes flowing
    // mean signals are taken.
    shutdown.arm(tx.clone());
    let handles = [
        registry.connect(&ids[0]).map_err(|e| e.to_string())?,
        registry.connect(&ids[1]).map_err(|e| e.to_string())?,
    ];
    let relay = relay::join_with(handles[0].clone(), handles[1].clone(), tx, options);
    for (side, name) in ids.iter().enumerate() {
        if relay.splices(side) {
            log::info!("{name}: bytes move by splice(2)");
        }
    }
    let counters = relay.counters();
    // A side closed: what it sent must still reach the other side before the relay ends.
    let mut closing: Option<usize> = None;

    let mut last = (Instant::now(), [0u64; 2]);
    let [one, two] = &ids;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Wake::Signal) => break,
            Ok(Wake::ReopenLogs) => {
                if let Err(e) = registry.reopen_logs() {
                    say!("chardev-relay: SIGHUP: cannot reopen a logfile: {e}");
                }
            }
            Ok(Wake::Relay(RelayEvent::Closed(side))) if !keep_open => {
                log::info!("side {side} closed");
                if relay.pending(side) == 0 {
                    break;
                }
                closing = Some(side);
            }
            Ok(Wake::Relay(RelayEvent::Drained(side))) if closing == Some(side) => break,
            Ok(Wake::Relay(event)) => log::info!("{event:?}"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if verbose && last.0.elapsed() >= Duration::from_secs(1) {
            let now = [counters.moved(0), counters.moved(1)];
            let secs = last.0.elapsed().as_secs_f64();
            say!(
                "chardev-relay: {one}->{two} {:.1} MB/s, {two}->{one} {:.1} MB/s ({} and {} bytes \
                 in all)",
                (now[0] - last.1[0]) as f64 / secs / 1e6,
                (now[1] - last.1[1]) as f64 / secs / 1e6,
                now[0],
                now[1]
            );
            last = (Instant::now(), now);
        }
    }
    if verbose {
        say!(
            "chardev-relay: done: {one}->{two} {} bytes ({} spliced), {two}->{one} {} bytes ({} \
             spliced)",
            counters.moved(0),
            counters.spliced(0),
            counters.moved(1),
            counters.spliced(1)
        );
    }
    // Removing the chardevs closes their sockets and removes their socket files.
    for id in &ids {
        let _ = registry.remove_forced(id);
    }
    lp.stop().map_err(|e| e.to_string())
}

/// QEMU's handling of SIGTERM, SIGINT and SIGHUP, as serial-console has it: the signals are
/// blocked in every thread and taken by one thread with sigwaitinfo(2), which reports the
/// sender and wakes the main thread (see the module docs); a SIGHUP that a process sends
/// reopens the logfiles instead.
struct Shutdown {
    /// Where a signal goes, once the relay runs.
    main: Arc<Mutex<Option<Sender<Wake>>>>,
}

/// The signals that end the relay cleanly.
const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGHUP, Signal::SIGTERM];

impl Shutdown {
    /// Blocks the signals in this thread (every thread started later inherits that) and
    /// starts the thread that takes them. If that thread cannot start, the signals stay
    /// unblocked and kill the process as before.
    fn catch_signals() -> Shutdown {
        let main: Arc<Mutex<Option<Sender<Wake>>>> = Arc::default();
        let set: SigSet = TERMINATING.into_iter().collect();
        if let Err(e) = set.thread_block() {
            log::warn!("cannot block the terminating signals: {e}");
            return Shutdown { main };
        }
        let target = Arc::clone(&main);
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || take_signals(&set, &target));
        if let Err(e) = spawned {
            log::warn!("cannot start the signal thread: {e}");
            let _ = set.thread_unblock();
        }
        Shutdown { main }
    }

    /// From now on the first signal goes to `main` rather than exiting at once.
    fn arm(&self, main: Sender<Wake>) {
        *lock(&self.main) = Some(main);
    }
}

fn take_signals(set: &SigSet, target: &Mutex<Option<Sender<Wake>>>) {
    let mut stopping = false;
    loop {
        match demos::signals::next_signal(set, "chardev-relay") {
            None => return,
            Some(Taken::ReopenLogs) => {
                // Before the relay runs there is nothing to reopen yet.
                if let Some(main) = lock(target).clone() {
                    let _ = main.send(Wake::ReopenLogs);
                }
                continue;
            }
            Some(Taken::Terminate(_)) => {}
        }
        let main = lock(target).clone();
        match main {
            Some(main) if !stopping && main.send(Wake::Signal).is_ok() => stopping = true,
            _ => std::process::exit(if stopping { 1 } else { 0 }),
        }
    }
}
