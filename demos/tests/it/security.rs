//! serial-console's listening policy: a TCP server with no host (QEMU's `tcp::4444,server=on`,
//! every interface there) listens on loopback only, with a note on stderr saying so and how to
//! ask for every interface; an address other machines can reach stays as asked, with a
//! warning. One run checks where the sockets really are (in /proc/net/tcp); the rest is
//! parsing only, so that no test ever listens on a non-loopback address.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Instant;

use chardev::options::{BackendSpec, SocketAddrSpec};
use chardev_testkit::{wait_exit, KillOnDrop, TimedPipe, DEADLINE};
use demos::cli::{self, Config, Exposure};

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

fn parse(args: &[&str]) -> Config {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match cli::parse(&args) {
        Ok(cli::Command::Run(config)) => *config,
        other => panic!("{args:?}: {other:?}"),
    }
}

/// The host of chardev `id`'s TCP address.
fn host_of(config: &Config, id: &str) -> String {
    let spec = config.chardevs.iter().find(|c| c.id == id).expect("the chardev");
    match &spec.backend {
        BackendSpec::Socket(s) => match &s.addr {
            SocketAddrSpec::Inet { host, .. } => host.clone(),
            other => panic!("{id}: not tcp: {other:?}"),
        },
        other => panic!("{id}: not a socket: {other:?}"),
    }
}

/// The local addresses of the TCP sockets process `pid` listens on, from /proc.
fn listening(pid: u32) -> Vec<(IpAddr, u16)> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the demo's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_str()?;
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
                continue;
            }
            let (addr, port) = f[1].split_once(':').expect("ADDR:PORT");
            found.push((proc_addr(addr), u16::from_str_radix(port, 16).expect("port")));
        }
    }
    found
}

/// /proc/net/tcp's hex address: 32-bit words in host (little-endian here) order.
fn proc_addr(hex: &str) -> IpAddr {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).expect("hex").swap_bytes())
        .collect();
    match words[..] {
        [v4] => IpAddr::V4(Ipv4Addr::from(v4)),
        [a, b, c, d] => IpAddr::V6(Ipv6Addr::from(
            (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d),
        )),
        _ => panic!("bad /proc address {hex}"),
    }
}

#[test]
fn tcp_servers_without_a_host_listen_on_loopback_only_and_say_so() {
    let mut child = Command::new(BIN)
        .args([
            "-nodefaults",
            "-serial",
            "stdio",
            "-monitor",
            "tcp::0,server=on,wait=off",
            "-qmp",
            "tcp::0,server=on,wait=off",
            "-chardev",
            "socket,id=extra,host=,port=0,server=on,wait=off,telnet=on",
            "-chardev",
            "socket,id=local,host=127.0.0.1,port=0,server=on,wait=off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);
    // The guest greets once every chardev exists, listening.
    let mut seen = Vec::new();
    let end = Instant::now() + DEADLINE;
    while !String::from_utf8_lossy(&seen).contains("guest$ ") {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            chardev::fd::wait_readable(out.as_fd(), Some(left)).unwrap(),
            "no prompt within {DEADLINE:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut buf = [0u8; 256];
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "stdout closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let listeners = listening(child.0.id());
    assert_eq!(listeners.len(), 4, "four servers: {listeners:?}");
    for (addr, port) in &listeners {
        assert_eq!(*addr, IpAddr::V4(Ipv4Addr::LOCALHOST), "port {port} listens on {addr}");
        assert_ne!(*port, 0);
    }
    child.0.kill().unwrap();
    wait_exit(&mut child.0, "the killed serial-console");
    let mut stderr = String::new();
    TimedPipe(err).read_to_string(&mut stderr).unwrap();
    let notes: Vec<&str> = stderr.lines().collect();
    let hint = "(QEMU would listen on every interface); to ask for that, name the address: \
                host=0.0.0.0, or tcp:0.0.0.0:0";
    assert_eq!(
        notes,
        [
            format!("serial-console: note: the monitor on chardev 'compat_monitor0' listens on 127.0.0.1:0 only {hint}"),
            format!("serial-console: note: the QMP monitor on chardev 'compat_monitor1' listens on 127.0.0.1:0 only {hint}"),
            format!("serial-console: note: chardev 'extra' listens on 127.0.0.1:0 only {hint}"),
        ],
        "one note per server with no host, none for the one on 127.0.0.1"
    );
}

#[test]
fn no_host_becomes_loopback_in_every_form() {
    let config = parse(&[
        "-nodefaults",
        "-serial",
        "telnet::4444,server=on,wait=off",
        "-monitor",
        "tcp::4445,server=on",
        "-qmp",
        "websocket::4446,server=on",
        "-chardev",
        "socket,id=v6,host=,port=4447,server=on,ipv6=on",
        "-chardev",
        "socket,id=not4,host=,port=4448,server=on,ipv4=off",
        "-chardev",
        "socket,id=both,host=,port=4449,server=on,ipv4=on,ipv6=on",
        "-incoming",
        "tcp::4451",
    ]);
    assert_eq!(host_of(&config, "serial0"), "127.0.0.1");
    assert_eq!(host_of(&config, "compat_monitor0"), "127.0.0.1");
    assert_eq!(host_of(&config, "compat_monitor1"), "127.0.0.1");
    assert_eq!(host_of(&config, "v6"), "::1");
    assert_eq!(host_of(&config, "not4"), "::1");
    assert_eq!(host_of(&config, "both"), "127.0.0.1");
    assert_eq!(config.incoming.as_deref(), Some("tcp:127.0.0.1:4451"));
    let notes = &config.notices;
    assert_eq!(notes.len(), 7, "{notes:#?}");
    assert!(notes.iter().all(|n| n.starts_with("note: ")), "{notes:#?}");
    assert_eq!(
        notes[0],
        "note: the serial port on chardev 'serial0' listens on 127.0.0.1:4444 only (QEMU would \
         listen on every interface); to ask for that, name the address: host=0.0.0.0, or \
         tcp:0.0.0.0:4444"
    );
    assert!(notes[1].starts_with(
        "note: the monitor on chardev 'compat_monitor0' listens on 127.0.0.1:4445 only"
    ));
    assert!(notes[2].starts_with("note: the QMP monitor on chardev 'compat_monitor1'"));
    assert!(notes[3].ends_with("listens on [::1]:4447 only (QEMU would listen on every interface); to ask for that, name the address: host=::, or tcp:[::]:4447"));
    assert!(notes[6].starts_with("note: the incoming migration listens on 127.0.0.1:4451 only"));
}

#[test]
fn named_network_addresses_stay_with_a_warning() {
    let config = parse(&[
        "-nodefaults",
        "-monitor",
        "tcp:0.0.0.0:4444,server=on,wait=off",
        "-qmp",
        "tcp:[::]:4445,server=on,wait=off",
        "-chardev",
        "socket,id=lan,host=192.0.2.7,port=4446,server=on",
        "-mon",
        "chardev=lan,mode=control",
        "-serial",
        "telnet:[2001:db8::1]:4447,server=on",
        "-chardev",
        "socket,id=other,host=0.0.0.0,port=4448,server=on",
        "-incoming",
        "tcp:0.0.0.0:4449",
    ]);
    assert_eq!(host_of(&config, "compat_monitor0"), "0.0.0.0");
    assert_eq!(host_of(&config, "compat_monitor1"), "::");
    assert_eq!(host_of(&config, "lan"), "192.0.2.7");
    assert_eq!(host_of(&config, "serial0"), "2001:db8::1");
    assert_eq!(config.incoming.as_deref(), Some("tcp:0.0.0.0:4449"));
    let monitor = "reachable from the network: anyone who connects controls the machine, \
                   without a password";
    assert_eq!(
        config.notices,
        [
            format!("warning: the monitor on chardev 'compat_monitor0' listens on 0.0.0.0:4444, {monitor}"),
            format!("warning: the QMP monitor on chardev 'compat_monitor1' listens on [::]:4445, {monitor}"),
            format!("warning: the QMP monitor on chardev 'lan' listens on 192.0.2.7:4446, {monitor}"),
            "warning: the serial port on chardev 'serial0' listens on [2001:db8::1]:4447, reachable \
             from the network: anyone who connects gets the guest's console"
                .to_string(),
            "warning: chardev 'other' listens on 0.0.0.0:4448, reachable from the network: anyone \
             who connects can talk to it"
                .to_string(),
            "warning: the incoming migration listens on 0.0.0.0:4449, reachable from the network: \
             anyone who connects first replaces the machine's memory"
                .to_string(),
        ]
    );
}

#[test]
fn loopback_clients_unix_sockets_and_the_terminal_are_left_alone() {
    let config = parse(&[
        "-nodefaults",
        "-monitor",
        "tcp:127.0.0.1:4444,server=on",
        "-qmp",
        "tcp:[::1]:4445,server=on",
        "-chardev",
        "socket,id=mapped,host=::ffff:127.0.0.1,port=4446,server=on",
        "-chardev",
        "socket,id=other127,host=127.0.0.2,port=4447,server=on",
        // Clients connect; an empty host means localhost there.
        "-serial",
        "tcp::4448",
        "-chardev",
        "socket,id=client,host=192.0.2.7,port=4449",
        "-chardev",
        "socket,id=unix,path=/tmp/never-made.sock,server=on,wait=off",
        "-incoming",
        "tcp:127.0.0.1:4450",
    ]);
    assert_eq!(config.notices, Vec::<String>::new());
    assert_eq!(host_of(&config, "serial0"), "");
    assert_eq!(host_of(&config, "client"), "192.0.2.7");
    // The default -nographic console has no socket at all.
    assert_eq!(parse(&[]).notices, Vec::<String>::new());
}

#[test]
fn host_names_are_judged_by_what_they_resolve_to() {
    let table = |name: &str| -> Vec<IpAddr> {
        match name {
            "localhost" => vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            "lan-host" => vec!["192.0.2.7".parse().unwrap()],
            "mixed" => vec!["127.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap()],
            _ => vec![],
        }
    };
    assert_eq!(cli::exposure("localhost", None, None, table), Exposure::Loopback);
    assert_eq!(cli::exposure("lan-host", None, None, table), Exposure::Network);
    assert_eq!(cli::exposure("mixed", None, None, table), Exposure::Network);
    // Nothing to listen on: creating the chardev fails with the resolver's error instead.
    assert_eq!(cli::exposure("no-such-host", None, None, table), Exposure::Loopback);
    // Literal addresses are never looked up.
    let never = |name: &str| -> Vec<IpAddr> { panic!("resolved {name}") };
    assert_eq!(cli::exposure("0.0.0.0", None, None, never), Exposure::Network);
    assert_eq!(cli::exposure("[::]", None, None, never), Exposure::Network);
    assert_eq!(cli::exposure("[::1]", None, None, never), Exposure::Loopback);
    assert_eq!(cli::exposure("", None, None, never), Exposure::Confined("127.0.0.1"));
    assert_eq!(cli::exposure("", None, Some(true), never), Exposure::Confined("::1"));
}

#[test]
fn proc_net_addresses_decode() {
    assert_eq!(proc_addr("0100007F"), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(proc_addr("00000000000000000000000001000000"), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(proc_addr("00000000"), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
}
