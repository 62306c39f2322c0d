//! Session control, history and logfile reopening over QMP: commands QEMU does not have, so they carry a
//! downstream prefix as QAPI reserves it ("Names starting with a downstream prefix of the
//! form `__RFQDN_` are reserved for the downstream who controls the valid, reverse fully
//! qualified domain name RFQDN", docs/devel/qapi-code-gen.rst). The embedder chooses its
//! RFQDN with [`QmpBuilder::vendor`](crate::QmpBuilder::vendor); the demos use
//! `com.example` (reserved by IANA, so no real downstream collides). With `com.example`:
//!
//! | command | arguments | returns |
//! |---|---|---|
//! | `__com.example_chardev-sessions` | `id` | `[{session, peer, role, since, sent, queued, dropped, input-dropped, writes, size?}]` (`size`: `{cols, rows}` a web console page reported) |
//! | `__com.example_chardev-session-disconnect` | `id`, `session` | `{}` |
//! | `__com.example_chardev-session-set-writer` | `id`, `session` | `{}` |
//! | `__com.example_chardev-history-read` | `id`, `size`?, `format`? (`utf8`, `base64`) | the bytes, as `ringbuf-read` returns them, not drained |
//! | `__com.example_chardev-log-reopen` | `id`? | `{}`: the logfile of chardev `id`, or of every chardev that has one, opened again by its path (logrotate's `create` mode) |
//!
//! `query-chardev` gains one member per chardev, `__com.example_counters`: `bytes-in`,
//! `bytes-out`, `dropped-overflow`, `queued-overflow`, `dropped-viewers`, `dropped-backlog`, `dropped-log`, `blocked-ns`,
//! `connections`, `fds-received`, `fds-closed` (see `chardev::Counters`);
//! and the events `__COM.EXAMPLE_CHARDEV_SESSION_OPENED` `{id, session, peer, role}` and
//! `__COM.EXAMPLE_CHARDEV_SESSION_CLOSED` `{id, session, peer, role, reason}` (QAPI's event
//! names are upper case; `reason` is `peer`, `disconnect` or `removed`).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use base64::Engine;
use chardev::sessions::SessionChange;
use chardev::Registry;
use serde_json::{json, Value};

use crate::commands::{Call, CommandTable, Handler};
use crate::error::{QmpError, QmpResult};
use crate::events::EventBus;

/// The names of the commands under `rfqdn`, in the order of the table above.
pub fn command_names(rfqdn: &str) -> [String; 5] {
    [
        "chardev-sessions",
        "chardev-session-disconnect",
        "chardev-session-set-writer",
        "chardev-history-read",
        "chardev-log-reopen",
    ]
    .map(|c| format!("__{rfqdn}_{c}"))
}

/// The names of the session events under `rfqdn`: opened, closed.
pub fn event_names(rfqdn: &str) -> [String; 2] {
    let up = rfqdn.to_uppercase();
    [format!("__{up}_CHARDEV_SESSION_OPENED"), format!("__{up}_CHARDEV_SESSION_CLOSED")]
}

/// The member `query-chardev` gains under `rfqdn`: each chardev's counters.
pub fn counters_member(rfqdn: &str) -> String {
    format!("__{rfqdn}_counters")
}

/// A chardev's counters as QMP shows them (QAPI's dashed names).
pub fn counters_json(c: &chardev::Counters) -> Value {
    json!({
        "bytes-in": c.bytes_in,
        "bytes-out": c.bytes_out,
        "dropped-overflow": c.dropped_overflow,
        "queued-overflow": c.queued_overflow,
        "dropped-viewers": c.dropped_viewers,
        "dropped-backlog": c.dropped_backlog,
        "dropped-log": c.dropped_log,
        "blocked-ns": c.blocked_ns,
        "connections": c.connections,
        "fds-received": c.fds_received,
        "fds-closed": c.fds_closed,
    })
}

/// Adds the commands to `table`, and the counters to `query-chardev`.
pub(crate) fn add_commands(table: &mut CommandTable, rfqdn: &str) {
    let member = counters_member(rfqdn);
    // query-chardev as QEMU answers it, each chardev with one more member: a downstream
    // extension to an existing struct, named as QAPI reserves (clients ignore members
    // they do not know; qemu.qmp and a strict QAPI-shaped client are checked in tests).
    table.add(
        "query-chardev",
        Arc::new(move |c: &mut Call<'_>| {
            let registry = c.registry().clone();
            Ok(Value::Array(
                registry
                    .query()
                    .into_iter()
                    .map(|i| {
                        let mut entry = json!({
                            "label": i.label, "filename": i.filename,
                            "frontend-open": i.frontend_open,
                        });
                        if let Ok(counters) = registry.counters(&i.label) {
                            entry[&member] = counters_json(&counters);
                        }
                        entry
                    })
                    .collect(),
            ))
        }),
    );
    let [list, disconnect, writer, history, log_reopen] = command_names(rfqdn);
    let handler = |f: fn(&mut Call<'_>) -> QmpResult| -> Handler { Arc::new(f) };
    table.add(&list, handler(sessions));
    table.add(
        &disconnect,
        handler(|c| {
            let (id, session) = (c.args.string("id")?, session_arg(c)?);
            c.registry().disconnect_session(&id, session)?;
            Ok(json!({}))
        }),
    );
    table.add(
        &writer,
        handler(|c| {
            let (id, session) = (c.args.string("id")?, session_arg(c)?);
            c.registry().set_session_writer(&id, session)?;
            Ok(json!({}))
        }),
    );
    table.add(&history, handler(history_read));
    table.add(
        &log_reopen,
        handler(|c| {
            match c.args.opt_string("id")? {
                Some(id) => c.registry().reopen_log(&id)?,
                None => c.registry().reopen_logs()?,
            }
            Ok(json!({}))
        }),
    );
}

/// Emits the session events of `registry`'s chardevs on `events`.
pub(crate) fn forward_events(registry: &Registry, events: Arc<EventBus>, rfqdn: &str) {
    let [opened, closed] = event_names(rfqdn);
    registry.on_session_event(move |e| {
        let mut data = json!({
            "id": e.chardev, "session": e.session, "peer": e.peer, "role": e.role.as_str(),
        });
        let name = match e.change {
            SessionChange::Opened => &opened,
            SessionChange::Closed { reason } => {
                data["reason"] = json!(reason);
                &closed
            }
        };
        events.emit(name, Some(data));
    });
}

fn session_arg(c: &mut Call<'_>) -> Result<u64, QmpError> {
    let n = c.args.integer("session")?;
    u64::try_from(n).map_err(|_| QmpError::generic(format!("no session {n}")))
}

fn sessions(c: &mut Call<'_>) -> QmpResult {
    let id = c.args.string("id")?;
    let list = c.registry().sessions(&id)?;
    Ok(Value::Array(
        list.into_iter()
            .map(|s| {
                let since = s.since.duration_since(UNIX_EPOCH).unwrap_or_default();
                let mut session = json!({
                    "session": s.id,
                    "peer": s.peer,
                    "role": s.role.as_str(),
                    "since": {"seconds": since.as_secs(), "microseconds": since.subsec_micros()},
                    "sent": s.sent,
                    "queued": s.queued,
                    "dropped": s.dropped,
                    "input-dropped": s.input_dropped,
                    "writes": s.writes,
                });
                // Optional, as QAPI leaves out an absent optional member.
                if let Some((cols, rows)) = s.size {
                    session["size"] = json!({"cols": cols, "rows": rows});
                }
                session
            })
            .collect(),
    ))
}

fn history_read(c: &mut Call<'_>) -> QmpResult {
    let id = c.args.string("id")?;
    let size = match c.args.opt_int("size")? {
        Some(n) if n <= 0 => return Err(QmpError::generic("size must be greater than zero")),
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let format = c.args.opt_string("format")?;
    let data = c.registry().history(&id, size)?;
    match format.as_deref() {
        None | Some("utf8") => Ok(Value::String(String::from_utf8_lossy(&data).into_owned())),
        Some("base64") => {
            Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(&data)))
        }
        Some(other) => {
            Err(QmpError::generic(format!("Parameter 'format' does not accept value '{other}'")))
        }
    }
}
