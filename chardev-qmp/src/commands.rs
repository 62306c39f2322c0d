//! One command table for dispatch and for `query-commands`, so the two cannot drift apart;
//! what a command's handler sees ([`Call`]); and the commands every monitor has: negotiation,
//! the chardev commands, ringbufs, `getfd`/`closefd` and fd sets.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use base64::Engine;
use chardev::fdset::NamedFds;
use chardev::Registry;
use serde_json::{json, Value};

use crate::args::Args;
use crate::error::{QmpError, QmpResult};
use crate::events::{lock, EventBus};
use crate::monitor::Qmp;
use crate::qapi::{backend_spec, is_input_error};

/// A command's code: it takes its arguments from the [`Call`] and returns the `return`
/// value or an error.
pub type Handler = Arc<dyn Fn(&mut Call<'_>) -> QmpResult + Send + Sync>;

/// The commands of a QMP server, in the order they were added (`query-commands` lists them
/// so); a later command of the same name replaces the earlier.
#[derive(Clone, Default)]
pub struct CommandTable {
    order: Vec<String>,
    handlers: BTreeMap<String, Handler>,
}

impl std::fmt::Debug for CommandTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.order).finish()
    }
}

impl CommandTable {
    /// Adds (or replaces) a command.
    pub fn add(&mut self, name: &str, handler: Handler) {
        if self.handlers.insert(name.to_string(), handler).is_none() {
            self.order.push(name.to_string());
        }
    }

    /// The handler of a command.
    pub fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }

    /// The command names, as `query-commands` lists them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }
}

/// What one monitor connection keeps between commands and lends to each.
pub(crate) struct Session {
    pub(crate) negotiated: bool,
    /// The fds that came with the input being run; the first is the one a command takes.
    pub(crate) fds: Vec<OwnedFd>,
    /// Names given with `getfd` on this monitor (kept across its clients, as QEMU does).
    pub(crate) named: Arc<Mutex<NamedFds>>,
    /// What to do once the reply is written (`quit` ends the program then).
    pub(crate) after_reply: Option<Box<dyn FnOnce() + Send>>,
}

/// One command being run: its arguments, and what it may reach.
pub struct Call<'a> {
    /// The command's arguments; whatever the handler leaves is "unexpected".
    pub args: Args,
    pub(crate) qmp: &'a Qmp,
    pub(crate) session: &'a mut Session,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("args", &self.args)
            .field("passed_fds", &self.session.fds.len())
            .finish_non_exhaustive()
    }
}

impl Call<'_> {
    /// The chardevs.
    pub fn registry(&self) -> &Registry {
        self.qmp.registry()
    }

    /// The server's events, to emit one.
    pub fn events(&self) -> &EventBus {
        self.qmp.events()
    }

    /// Takes the fd that came with this command (SCM_RIGHTS on the same message, or on an
    /// earlier one that carried no command); other fds of the same input are closed, as
    /// QEMU's `qemu_chr_fe_get_msgfd` does.
    pub fn take_passed_fd(&mut self) -> Option<OwnedFd> {
        if self.session.fds.is_empty() {
            return None;
        }
        let first = self.session.fds.remove(0);
        self.session.fds.clear();
        Some(first)
    }

    /// This monitor's named fds (`getfd`): `migrate fd:NAME` and `fd` socket addresses take
    /// them from here.
    pub fn named_fds(&self) -> &Arc<Mutex<NamedFds>> {
        &self.session.named
    }

    /// Runs `f` once the reply to this command is written (or the client is gone): `quit`
    /// ends the program then, so that the client sees its reply.
    pub fn after_reply(&mut self, f: impl FnOnce() + Send + 'static) {
        self.session.after_reply = Some(Box::new(f));
    }
}

fn ok() -> QmpResult {
    Ok(json!({}))
}

fn no_fd() -> QmpError {
    QmpError::generic("No file descriptor supplied via SCM_RIGHTS")
}

/// Adds the commands every monitor has to `table`.
pub(crate) fn builtins(table: &mut CommandTable) {
    let mut add = |name: &str, f: fn(&mut Call<'_>) -> QmpResult| table.add(name, Arc::new(f));
    add("qmp_capabilities", qmp_capabilities);
    add("query-version", |c| Ok(c.qmp.version().clone()));
    add("query-commands", |c| {
        Ok(Value::Array(c.qmp.commands().names().map(|n| json!({ "name": n })).collect()))
    });
    add("query-chardev", query_chardev);
    add("query-chardev-backends", |c| {
        let mut names = c.registry().backends();
        names.push("memory".into());
        names.push("tty".into());
        Ok(Value::Array(names.into_iter().map(|n| json!({ "name": n })).collect()))
    });
    add("chardev-add", chardev_add);
    add("chardev-change", chardev_change);
    add("chardev-remove", |c| {
        let id = c.args.string("id")?;
        c.registry().remove(&id)?;
        ok()
    });
    add("chardev-send-break", |c| {
        let id = c.args.string("id")?;
        c.registry().send_break(&id)?;
        ok()
    });
    add("ringbuf-write", ringbuf_write);
    add("ringbuf-read", ringbuf_read);
    add("getfd", getfd);
    add("closefd", |c| {
        let name = c.args.string("fdname")?;
        lock(&c.session.named).close(&name)?;
        ok()
    });
    add("add-fd", add_fd);
    add("remove-fd", |c| {
        let id = c.args.integer("fdset-id")?;
        let fd = c.args.opt_int("fd")?;
        c.registry().fd_sets().remove(id, fd)?;
        ok()
    });
    add("query-fdsets", query_fdsets);
    add("object-add", |c| {
        let args = c.args.take_all();
        let object = crate::objects::object_from_json(&args).map_err(QmpError::generic)?;
        // QEMU's texts stand alone ("attempt to add duplicate property ..."), without the
        // option prefix the command line shows.
        c.registry().add_object(object).map_err(|e| match e {
            chardev::Error::Option { key, value, reason } if key == "id" || key == "dir" => {
                QmpError::generic(if key == "dir" { format!("{value}: {reason}") } else { reason })
            }
            other => QmpError::from(other),
        })?;
        ok()
    });
    add("object-del", |c| {
        let id = c.args.string("id")?;
        c.registry().remove_object(&id)?;
        ok()
    });
}

fn qmp_capabilities(c: &mut Call<'_>) -> QmpResult {
    if c.session.negotiated {
        return Err(QmpError::command_not_found(
            "Capabilities negotiation is already complete, command ignored",
        ));
    }
    if let Some(enable) = c.args.opt_array("enable")? {
        if let Some(cap) = enable.first() {
            let cap = cap.as_str().unwrap_or("?");
            return Err(QmpError::generic(format!("Capability '{cap}' not available")));
        }
    }
    c.session.negotiated = true;
    ok()
}

fn query_chardev(c: &mut Call<'_>) -> QmpResult {
    Ok(Value::Array(
        c.registry()
            .query()
            .into_iter()
            .map(|i| json!({"label": i.label, "filename": i.filename, "frontend-open": i.frontend_open}))
            .collect(),
    ))
}

fn chardev_add(c: &mut Call<'_>) -> QmpResult {
    let id = c.args.string("id")?;
    let backend = c.args.value("backend")?;
    let fail = |e: String| QmpError::generic(format!("Failed to add chardev '{id}': {e}"));
    let spec = backend_spec(&id, &backend).map_err(|e| {
        if is_input_error(&e) {
            QmpError::generic(e)
        } else {
            fail(e)
        }
    })?;
    if c.registry().contains(&id) {
        return Err(QmpError::generic(format!("Chardev with id '{id}' already exists")));
    }
    let added =
        c.registry().add_with_fds(&spec, &c.session.named).map_err(|e| fail(e.to_string()))?;
    Ok(added.pty.map_or(json!({}), |p| json!({ "pty": p })))
}

fn chardev_change(c: &mut Call<'_>) -> QmpResult {
    let id = c.args.string("id")?;
    let backend = c.args.value("backend")?;
    let spec = backend_spec(&id, &backend).map_err(QmpError::generic)?;
    let added = c.registry().change_with_fds(&id, &spec, &c.session.named)?;
    Ok(added.pty.map_or(json!({}), |p| json!({ "pty": p })))
}

fn bad_format(other: &str) -> QmpError {
    QmpError::generic(format!("Parameter 'format' does not accept value '{other}'"))
}

fn ringbuf_write(c: &mut Call<'_>) -> QmpResult {
    let device = c.args.string("device")?;
    let data = c.args.string("data")?;
    let bytes = match c.args.opt_string("format")?.as_deref() {
        None | Some("utf8") => data.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|e| QmpError::generic(format!("base64 decode: {e}")))?,
        Some(other) => return Err(bad_format(other)),
    };
    c.registry().ringbuf_write(&device, &bytes)?;
    ok()
}

fn ringbuf_read(c: &mut Call<'_>) -> QmpResult {
    let device = c.args.string("device")?;
    let size = c.args.integer("size")?;
    if size <= 0 {
        return Err(QmpError::generic("size must be greater than zero"));
    }
    let format = c.args.opt_string("format")?;
    let data = c.registry().ringbuf_read(&device, usize::try_from(size).unwrap_or(usize::MAX))?;
    match format.as_deref() {
        None | Some("utf8") => Ok(Value::String(String::from_utf8_lossy(&data).into_owned())),
        Some("base64") => {
            Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(&data)))
        }
        Some(other) => Err(bad_format(other)),
    }
}

fn getfd(c: &mut Call<'_>) -> QmpResult {
    let name = c.args.string("fdname")?;
    let fd = c.take_passed_fd().ok_or_else(no_fd)?;
    lock(&c.session.named).insert(&name, fd)?;
    ok()
}

fn add_fd(c: &mut Call<'_>) -> QmpResult {
    let fdset_id = c.args.opt_int("fdset-id")?;
    let opaque = c.args.opt_string("opaque")?;
    let fd = c.take_passed_fd().ok_or_else(no_fd)?;
    let added = c.registry().fd_sets().add(fd, fdset_id, opaque)?;
    Ok(json!({"fdset-id": added.fdset_id, "fd": added.fd}))
}

fn query_fdsets(c: &mut Call<'_>) -> QmpResult {
    let sets = c.registry().fd_sets().query();
    Ok(Value::Array(
        sets.into_iter()
            .map(|s| {
                let fds: Vec<Value> = s
                    .fds
                    .into_iter()
                    .map(|f| match f.opaque {
                        Some(o) => json!({"fd": f.fd, "opaque": o}),
                        None => json!({ "fd": f.fd }),
                    })
                    .collect();
                json!({"fdset-id": s.fdset_id, "fds": fds})
            })
            .collect(),
    ))
}
