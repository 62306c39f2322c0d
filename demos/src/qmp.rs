//! The machine's QMP commands, on top of the `chardev-qmp` server (which brings negotiation,
//! the chardev commands, `getfd` and fd sets): run state, `quit`, migration, and
//! `human-monitor-command`.

use std::sync::Arc;

use chardev_qmp::{Call, Qmp, QmpError, QmpResult};
use serde_json::{json, Value};

use crate::hmp::Hmp;
use crate::machine::RunState;
use crate::services::{MigrationEndpoint, Services};
use crate::PROGRAM;
use chardev::sync::lock;

/// The reverse domain name of the demos' QMP extensions (`__com.example_chardev-sessions`
/// and the rest, see `chardev_qmp::vendor`).
pub const VENDOR: &str = "com.example";

/// The QMP server of the machine: the built-in commands plus the machine's own.
pub fn server(services: &Services) -> Qmp {
    let mut parts = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    let (major, minor, micro) = (next(), next(), next());
    let s = services.clone();
    let builder = Qmp::builder(&s.registry)
        .version(major, minor, micro, PROGRAM)
        .events(Arc::clone(&s.events))
        .halt_flag(Arc::clone(&s.machine.quitting))
        // Session control and history (not QEMU's): under a reverse domain that no real
        // downstream uses, as QAPI's downstream prefix asks.
        .vendor(VENDOR);
    let with = |f: fn(&Services, &mut Call<'_>) -> QmpResult| {
        let s = s.clone();
        move |call: &mut Call<'_>| f(&s, call)
    };
    builder
        .command("query-status", with(query_status))
        .command(
            "query-name",
            with(|s, _| Ok(s.machine.name.as_ref().map_or(json!({}), |n| json!({ "name": n })))),
        )
        .command(
            "stop",
            with(|s, _| {
                s.stop();
                Ok(json!({}))
            }),
        )
        .command("cont", with(|s, _| s.cont().map(|()| json!({})).map_err(QmpError::generic)))
        .command("quit", with(quit))
        .command("migrate", with(migrate))
        .command("query-migrate", with(|s, _| Ok(s.query_migrate())))
        .command(
            "migrate_cancel",
            with(|s, _| {
                s.migrate_cancel();
                Ok(json!({}))
            }),
        )
        .command(
            "migrate-incoming",
            with(|s, call| {
                let uri = call.args.string("uri")?;
                let source = migration_endpoint(call, &uri)?;
                s.migrate_incoming(source).map(|()| json!({})).map_err(QmpError::generic)
            }),
        )
        .command("human-monitor-command", with(human_monitor_command))
        .build()
}

fn query_status(s: &Services, _: &mut Call<'_>) -> QmpResult {
    let state = s.machine.state();
    Ok(json!({"status": state.name(), "singlestep": false, "running": state == RunState::Running}))
}

fn quit(s: &Services, call: &mut Call<'_>) -> QmpResult {
    s.events.emit("SHUTDOWN", Some(json!({"guest": false, "reason": "host-qmp-quit"})));
    // The reply goes out first; then the program ends.
    let s = s.clone();
    call.after_reply(move || s.quit());
    Ok(json!({}))
}

fn migrate(s: &Services, call: &mut Call<'_>) -> QmpResult {
    let uri = call.args.string("uri")?;
    for ignored in ["blk", "inc", "detach", "resume"] {
        call.args.opt_bool(ignored)?;
    }
    let target = migration_endpoint(call, &uri)?;
    s.migrate(target).map(|()| json!({})).map_err(QmpError::generic)
}

/// `fd:NAME` (taken from this monitor's `getfd` names), `unix:PATH`, `tcp:HOST:PORT`.
fn migration_endpoint(call: &Call<'_>, uri: &str) -> Result<MigrationEndpoint, QmpError> {
    let mut named = lock(call.named_fds());
    MigrationEndpoint::parse(uri, &mut named).map_err(QmpError::generic)
}

fn human_monitor_command(s: &Services, call: &mut Call<'_>) -> QmpResult {
    let line = call.args.string("command-line")?;
    call.args.opt_int("cpu-index")?;
    // As in QEMU, the human monitor runs as this QMP monitor: its names and passed fd.
    let pending = call.take_passed_fd().into_iter().collect();
    let mut hmp = Hmp::detached(s.clone(), Arc::clone(call.named_fds()), pending);
    hmp.run_line(&line).map(Value::String).map_err(QmpError::generic)
}
