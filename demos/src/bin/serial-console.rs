//! serial-console: a tiny emulated machine driven by QEMU's command line.
//!
//! A 16550 UART (vm-superio) is the frontend of the `serial0` chardev; a guest thread runs a
//! small shell on it. Monitors (`-monitor`, `-mon`) run on any chardev. With no options it
//! behaves like `qemu-system-x86_64 -nographic`: the guest console and the monitor share the
//! terminal through a mux (`Ctrl-A c` switches, `Ctrl-A x` quits, `Ctrl-A h` helps).

use std::process::ExitCode;

use chardev::{EventLoop, Registry};
use demos::cli::{self, Command, Config, MonitorMode};
use demos::hmp::{Hmp, PROGRAM};
use demos::machine::{self, Guest, Machine, RunState};
use demos::qmp::Qmp;
use demos::services::{MigrationEndpoint, Services};

fn main() -> ExitCode {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match cli::parse(&args) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", cli::usage(PROGRAM));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!(
                "{PROGRAM} version {} (chardev {})",
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<(), String> {
    let mut event_loop = EventLoop::new().map_err(|e| e.to_string())?;
    let handle = event_loop.handle();
    let registry = Registry::new(&handle);
    chardev_socket::register(&registry);
    chardev_pty::register(&registry);

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
    for monitor in &config.monitors {
        let fe = registry
            .connect(&monitor.chardev)
            .map_err(|e| format!("-mon chardev={}: {e}", monitor.chardev))?;
        match monitor.mode {
            MonitorMode::Readline => fe.set_frontend(Hmp::new(fe.clone(), services.clone())),
            MonitorMode::Control { pretty } => {
                fe.set_frontend(Qmp::new(fe.clone(), services.clone(), pretty))
            }
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
