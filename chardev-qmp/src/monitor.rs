//! The server ([`Qmp`]: commands, events, version, shared by every monitor of a process) and
//! the monitor ([`Monitor`]: the frontend of one chardev, speaking QMP to its clients).
//!
//! A monitor never blocks its loop. Replies and events go to a per-connection outbox that the
//! loop writes as the client reads; while more than [`OUTPUT_HIGH`] bytes wait there, the
//! monitor runs no further command and reads no further input (`can_receive` is 0), so a
//! client that sends and never reads is slowed down by its own socket, and nobody else is:
//! the other monitors, the guest's console and signals keep being served. A client that
//! lets events pile up past [`MAX_QUEUED_EVENTS`](crate::events::MAX_QUEUED_EVENTS) is
//! disconnected with a log line.
//!
//! Fds belong to the input they came with: the command whose message carried them (or, when
//! a message carried only whitespace, as `qemu.qmp`'s `send_fd_scm` sends, the next command)
//! may take one; what it does not take is closed when it finishes, and nothing survives the
//! connection, so one client can never take what another passed.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chardev::fdset::NamedFds;
use chardev::{Event, Frontend, FrontendHandle, Registry};
use serde_json::{json, Map, Value};

use crate::args::Args;
use crate::commands::{builtins, Call, CommandTable, Handler, Session};
use crate::error::{QmpError, QmpResult};
use crate::events::{lock, EventBus, Outbox};
use crate::json::{render, JsonStream};

/// While this much output waits for a client, its monitor runs no further command and reads
/// no further input.
pub const OUTPUT_HIGH: usize = 64 * 1024;

/// How much input a monitor takes at once.
const INPUT_CHUNK: usize = 64 * 1024;

struct Shared {
    registry: Registry,
    commands: CommandTable,
    events: Arc<EventBus>,
    version: Value,
    halted: Option<Arc<AtomicBool>>,
}

/// A QMP server: the command table, the events and the version that every monitor of a
/// process shares. Cheap to clone. Build one with [`Qmp::builder`], then put a [`Monitor`]
/// on each chardev that should speak QMP ([`Qmp::attach`]).
#[derive(Clone)]
pub struct Qmp {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").field("commands", &self.shared.commands).finish_non_exhaustive()
    }
}

/// Builds a [`Qmp`]: the built-in commands, plus the embedder's.
pub struct QmpBuilder {
    registry: Registry,
    commands: CommandTable,
    events: Arc<EventBus>,
    version: Value,
    halted: Option<Arc<AtomicBool>>,
    vendor: Option<String>,
}

impl std::fmt::Debug for QmpBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpBuilder").field("commands", &self.commands).finish_non_exhaustive()
    }
}

impl QmpBuilder {
    /// Adds a command of the embedder's machine (`stop`, `cont`, `quit`, ...), or replaces a
    /// built-in one. `query-commands` lists it.
    pub fn command(
        mut self,
        name: &str,
        handler: impl Fn(&mut Call<'_>) -> QmpResult + Send + Sync + 'static,
    ) -> QmpBuilder {
        let handler: Handler = Arc::new(handler);
        self.commands.add(name, handler);
        self
    }

    /// The version the greeting and `query-version` show, in QEMU's shape.
    pub fn version(mut self, major: u64, minor: u64, micro: u64, package: &str) -> QmpBuilder {
        self.version =
            json!({"qemu": {"major": major, "minor": minor, "micro": micro}, "package": package});
        self
    }

    /// Shares an event bus made beforehand (so that code the commands call can emit events).
    pub fn events(mut self, events: Arc<EventBus>) -> QmpBuilder {
        self.events = events;
        self
    }

    /// Adds the session-control and history commands, and the session events, under the
    /// downstream prefix `__{rfqdn}_` (see [`vendor`](crate::vendor) for the list):
    /// `rfqdn` is a reverse domain name the embedder controls, as QAPI asks.
    pub fn vendor(mut self, rfqdn: &str) -> QmpBuilder {
        crate::vendor::add_commands(&mut self.commands, rfqdn);
        self.vendor = Some(rfqdn.to_string());
        self
    }

    /// A flag that, once set, makes every monitor stop answering (the program is ending).
    pub fn halt_flag(mut self, flag: Arc<AtomicBool>) -> QmpBuilder {
        self.halted = Some(flag);
        self
    }

    /// The server.
    pub fn build(self) -> Qmp {
        if let Some(rfqdn) = &self.vendor {
            crate::vendor::forward_events(&self.registry, Arc::clone(&self.events), rfqdn);
        }
        Qmp {
            shared: Arc::new(Shared {
                registry: self.registry,
                commands: self.commands,
                events: self.events,
                version: self.version,
                halted: self.halted,
            }),
        }
    }
}

impl Qmp {
    /// A builder with the built-in commands, for chardevs of `registry`.
    pub fn builder(registry: &Registry) -> QmpBuilder {
        let mut commands = CommandTable::default();
        builtins(&mut commands);
        let mut parts = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse().unwrap_or(0u64));
        let mut next = || parts.next().unwrap_or(0);
        QmpBuilder {
            registry: registry.clone(),
            commands,
            events: Arc::default(),
            version: Value::Null,
            halted: None,
            vendor: None,
        }
        .version(next(), next(), next(), "chardev-qmp")
    }

    /// A server with the built-in commands only.
    pub fn new(registry: &Registry) -> Qmp {
        Qmp::builder(registry).build()
    }

    /// The chardevs the commands manage.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The events, to emit one to every negotiated monitor.
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// The commands.
    pub fn commands(&self) -> &CommandTable {
        &self.shared.commands
    }

    /// `query-version`'s value.
    pub fn version(&self) -> &Value {
        &self.shared.version
    }

    fn halted(&self) -> bool {
        self.shared.halted.as_ref().is_some_and(|h| h.load(Ordering::Acquire))
    }

    /// A monitor that speaks through `handle` (install it with `handle.set_frontend`);
    /// `pretty` indents its JSON (`-qmp-pretty`).
    pub fn monitor(&self, handle: FrontendHandle, pretty: bool) -> Monitor {
        let outbox = Arc::new(Mutex::new(Outbox::new(handle.clone())));
        Monitor {
            qmp: self.clone(),
            handle,
            pretty,
            stream: JsonStream::default(),
            waiting_fds: Vec::new(),
            inputs: VecDeque::new(),
            session: Session {
                negotiated: false,
                fds: Vec::new(),
                named: Arc::default(),
                after_reply: None,
            },
            outbox,
            subscription: None,
            open: false,
            paused: false,
        }
    }

    /// Puts a monitor on the chardev `id` of the registry.
    pub fn attach(&self, id: &str, pretty: bool) -> chardev::Result<()> {
        let handle = self.registry().connect(id)?;
        handle.set_frontend(self.monitor(handle.clone(), pretty));
        Ok(())
    }
}

/// One parsed input waiting to run, with the fds that came with it.
struct Input {
    value: Result<Value, String>,
    fds: Vec<OwnedFd>,
}

/// QMP on one chardev: the greeting, negotiation, commands and events, one client at a
/// time (a new connection starts over). It is the chardev's [`Frontend`].
pub struct Monitor {
    qmp: Qmp,
    handle: FrontendHandle,
    pretty: bool,
    stream: JsonStream,
    /// Fds that arrived, by the ordinal of the input value they belong to.
    waiting_fds: Vec<(u64, Vec<OwnedFd>)>,
    inputs: VecDeque<Input>,
    session: Session,
    outbox: Arc<Mutex<Outbox>>,
    subscription: Option<u64>,
    /// A client is connected (`Opened` seen, `Closed` not since).
    open: bool,
    /// `can_receive` said 0: the loop waits for `accept_input`.
    paused: bool,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("handle", &self.handle)
            .field("pretty", &self.pretty)
            .field("open", &self.open)
            .field("paused", &self.paused)
            .field("inputs", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// This monitor's named fds (`getfd`), for other code that uses them (`migrate fd:NAME`
    /// on a human monitor that shares them, say).
    pub fn named_fds(&self) -> Arc<Mutex<NamedFds>> {
        Arc::clone(&self.session.named)
    }

    /// Sends a reply (or the greeting): what the client takes now goes at once, the rest
    /// waits in the outbox.
    fn enqueue(&self, value: &Value) {
        let mut out = lock(&self.outbox);
        if out.open && out.queue.write(render(value, self.pretty).as_bytes()).is_err() {
            // Events from other threads filled the outbox while the command ran.
            out.overflow();
        }
    }

    /// Handles one input value; returns the reply.
    fn dispatch(&mut self, input: Input) -> Value {
        let value = match input.value {
            Ok(v) => v,
            Err(desc) => return json!({"error": {"class": "GenericError", "desc": desc}}),
        };
        self.session.fds = input.fds;
        let id = value.get("id").cloned();
        let reply = self.request(value);
        // Fds the command did not take are closed now (QEMU keeps them for a later getfd).
        self.session.fds.clear();
        let mut reply = match reply {
            Ok(value) => json!({ "return": value }),
            Err(e) => e.to_json(),
        };
        if let (Some(id), Some(obj)) = (id, reply.as_object_mut()) {
            obj.insert("id".into(), id);
        }
        if self.session.negotiated && self.subscription.is_none() {
            self.subscription =
                Some(self.qmp.shared.events.subscribe(Arc::clone(&self.outbox), self.pretty));
        }
        reply
    }

    fn request(&mut self, input: Value) -> QmpResult {
        let Value::Object(mut req) = input else {
            return Err(QmpError::generic("QMP input must be a JSON object"));
        };
        req.remove("id");
        if let Some(key) = req.keys().find(|k| !matches!(k.as_str(), "execute" | "arguments")) {
            return Err(QmpError::generic(format!("QMP input member '{key}' is unexpected")));
        }
        let command = match req.remove("execute") {
            Some(Value::String(c)) => c,
            Some(_) => {
                return Err(QmpError::generic("QMP input member 'execute' must be a string"))
            }
            None => return Err(QmpError::generic("QMP input lacks member 'execute'")),
        };
        let args = match req.remove("arguments") {
            None => Map::new(),
            Some(Value::Object(a)) => a,
            Some(_) => {
                return Err(QmpError::generic("QMP input member 'arguments' must be an object"))
            }
        };
        if !self.session.negotiated && command != "qmp_capabilities" {
            return Err(QmpError::command_not_found(
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ));
        }
        let Some(handler) = self.qmp.commands().get(&command).cloned() else {
            return Err(QmpError::command_not_found(format!(
                "The command {command} has not been found"
            )));
        };
        let qmp = self.qmp.clone();
        let mut call = Call { args: Args::new(args), qmp: &qmp, session: &mut self.session };
        let result = handler(&mut call)?;
        call.args.done()?;
        Ok(result)
    }

    /// Runs queued commands while their replies fit, writes, and repeats while both make
    /// progress; then lets input in again if it was held back.
    fn pump(&mut self) {
        loop {
            while self.open
                && self.session.after_reply.is_none()
                && !lock(&self.outbox).queue.is_backed_up()
            {
                if self.qmp.halted() {
                    self.inputs.clear();
                    return;
                }
                let Some(input) = self.inputs.pop_front() else { break };
                let reply = self.dispatch(input);
                self.enqueue(&reply);
            }
            let drained = self.flush();
            if !drained || self.inputs.is_empty() || self.session.after_reply.is_some() {
                break;
            }
        }
        if self.paused && self.ready() {
            self.paused = false;
            self.handle.accept_input();
        }
    }

    fn ready(&self) -> bool {
        self.inputs.is_empty()
            && self.session.after_reply.is_none()
            && !lock(&self.outbox).queue.is_backed_up()
    }

    /// Writes what the client takes now; true when the outbox is empty.
    fn flush(&mut self) -> bool {
        let mut out = lock(&self.outbox);
        if let Err(e) = out.queue.flush() {
            // The client is gone; `Closed` follows.
            log::debug!("QMP output lost: {e}");
        }
        let empty = out.queue.is_empty();
        drop(out);
        if empty {
            if let Some(after) = self.session.after_reply.take() {
                after();
            }
        }
        empty
    }

    /// Matches the fds of one read to the input value they belong to. The kernel hands a
    /// message's fds to the read holding its first byte and ends that read with the message,
    /// so they belong to the last value that starts in the read; if none starts there, to
    /// the value in progress; if none is in progress (a message of whitespace carried them),
    /// to the next value to start.
    fn place_fds(&mut self, before: u64, was_in_value: bool, fds: Vec<OwnedFd>) {
        if fds.is_empty() {
            return;
        }
        let after = self.stream.started();
        let target = if after > before {
            after
        } else if was_in_value {
            before
        } else {
            after + 1
        };
        // Newer fds for the same input replace older ones (closed), as in QEMU.
        self.waiting_fds.retain(|(t, _)| *t != target);
        self.waiting_fds.push((target, fds));
    }

    fn reset_connection(&mut self) {
        self.stream.clear();
        self.waiting_fds.clear();
        self.inputs.clear();
        self.session.fds.clear();
        self.session.negotiated = false;
        if let Some(id) = self.subscription.take() {
            self.qmp.shared.events.unsubscribe(id);
        }
        let mut out = lock(&self.outbox);
        out.queue.clear();
        out.overflowed = false;
    }
}

impl Frontend for Monitor {
    fn can_receive(&mut self) -> usize {
        if self.ready() {
            INPUT_CHUNK
        } else {
            self.paused = true;
            0
        }
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        let before = self.stream.started();
        let was_in_value = self.stream.in_value();
        let parsed = self.stream.push(data);
        self.place_fds(before, was_in_value, fds);
        for p in parsed {
            let mut fds = Vec::new();
            self.waiting_fds.retain_mut(|(target, waiting)| {
                if *target == p.ordinal {
                    fds = std::mem::take(waiting);
                }
                // Fds of an input that is over (taken now, or lost to a parse error) go.
                *target > p.ordinal
            });
            self.inputs.push_back(Input { value: p.value, fds });
        }
        self.pump();
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => {
                if self.open {
                    self.reset_connection();
                } else {
                    self.open = true;
                    self.qmp.registry().fd_sets().monitor_opened();
                }
                lock(&self.outbox).open = true;
                let greeting = json!({"QMP": {"version": self.qmp.version(), "capabilities": []}});
                self.enqueue(&greeting);
                self.pump();
            }
            Event::Closed => {
                self.reset_connection();
                lock(&self.outbox).open = false;
                if std::mem::take(&mut self.open) {
                    self.qmp.registry().fd_sets().monitor_closed();
                }
                if let Some(after) = self.session.after_reply.take() {
                    after();
                }
                if std::mem::take(&mut self.paused) {
                    self.handle.accept_input();
                }
            }
            _ => {}
        }
    }

    fn writable(&mut self) {
        self.pump();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(id) = self.subscription.take() {
            self.qmp.shared.events.unsubscribe(id);
        }
        if self.open {
            self.qmp.registry().fd_sets().monitor_closed();
        }
    }
}
