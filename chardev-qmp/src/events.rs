//! QMP events (`STOP`, `RESUME`, `SHUTDOWN`, ...) to every negotiated monitor, from any
//! thread, without ever blocking the caller: each monitor connection queues them in its own
//! bounded outbox and writes them out from the loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chardev::{FrontendHandle, OutputQueue};
use serde_json::{json, Value};

use crate::json::render;

/// Output for one monitor connection: the core's bounded queue (it stops reading a client at
/// [`OUTPUT_HIGH`](crate::monitor::OUTPUT_HIGH) waiting and refuses output at
/// [`MAX_QUEUED_EVENTS`]), and whether anyone is there to get it.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) queue: OutputQueue,
    /// A client is connected: output is kept for it.
    pub(crate) open: bool,
    /// Over its bound: the connection is being dropped.
    pub(crate) overflowed: bool,
}

impl Outbox {
    pub(crate) fn new(handle: FrontendHandle) -> Outbox {
        let queue =
            OutputQueue::with_bounds(handle, crate::monitor::OUTPUT_HIGH, MAX_QUEUED_EVENTS);
        Outbox { queue, open: false, overflowed: false }
    }

    /// Output past the bound: the client reads nothing, so it is disconnected (once) and
    /// what waits for it is dropped.
    pub(crate) fn overflow(&mut self) {
        if std::mem::replace(&mut self.overflowed, true) {
            return;
        }
        self.queue.clear();
        log::warn!(
            "QMP monitor '{}': the client reads no output ({} KiB queued); disconnected",
            self.queue.handle().label(),
            MAX_QUEUED_EVENTS / 1024
        );
        self.queue.handle().disconnect();
    }
}

pub(crate) use chardev::sync::lock;

/// Events queued for a client that reads nothing beyond this are not kept: the client is
/// disconnected (QEMU's monitor grows without bound instead).
pub const MAX_QUEUED_EVENTS: usize = 1 << 20;

struct Listener {
    id: u64,
    outbox: Arc<Mutex<Outbox>>,
    pretty: bool,
}

/// The monitors that get QMP events (those past capabilities negotiation).
#[derive(Default)]
pub struct EventBus {
    listeners: Mutex<Vec<Listener>>,
    next: AtomicU64,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").field("listeners", &lock(&self.listeners).len()).finish()
    }
}

impl EventBus {
    pub(crate) fn subscribe(&self, outbox: Arc<Mutex<Outbox>>, pretty: bool) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.listeners).push(Listener { id, outbox, pretty });
        id
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        lock(&self.listeners).retain(|l| l.id != id);
    }

    /// Sends an event to every negotiated monitor, with QEMU's timestamp; `data` if given.
    /// Never blocks: the event is queued, and the loop writes it when the client can take it.
    pub fn emit(&self, name: &str, data: Option<Value>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut event = json!({
            "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()},
            "event": name,
        });
        if let (Some(data), Some(obj)) = (data, event.as_object_mut()) {
            obj.insert("data".into(), data);
        }
        let (compact, pretty) = (render(&event, false), render(&event, true));
        for l in lock(&self.listeners).iter() {
            let mut outbox = lock(&l.outbox);
            if !outbox.open || outbox.overflowed {
                continue;
            }
            // Queued here, written by the loop (the queue asks it for `writable`).
            let text = if l.pretty { &pretty } else { &compact };
            if outbox.queue.push(text.as_bytes()).is_err() {
                outbox.overflow();
            }
        }
    }
}
