//! QMP events (`STOP`, `RESUME`, `SHUTDOWN`, ...) to every negotiated monitor, from any
//! thread, without ever blocking the caller: each monitor connection queues them in its own
//! bounded outbox and writes them out from the loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use chardev::FrontendHandle;
use serde_json::{json, Value};

use crate::json::render;

/// Output queued for one monitor connection and not yet written.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) buf: Vec<u8>,
    /// How much of `buf` is written.
    pub(crate) sent: usize,
    /// A client is connected: output is kept for it.
    pub(crate) open: bool,
    /// Over its bound: the connection is being dropped.
    pub(crate) overflowed: bool,
}

impl Outbox {
    /// Bytes queued and not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.sent = 0;
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Events queued for a client that reads nothing beyond this are not kept: the client is
/// disconnected (QEMU's monitor grows without bound instead).
pub const MAX_QUEUED_EVENTS: usize = 1 << 20;

struct Listener {
    id: u64,
    outbox: Arc<Mutex<Outbox>>,
    handle: FrontendHandle,
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
    pub(crate) fn subscribe(
        &self,
        outbox: Arc<Mutex<Outbox>>,
        handle: FrontendHandle,
        pretty: bool,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.listeners).push(Listener { id, outbox, handle, pretty });
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
            if outbox.pending() > MAX_QUEUED_EVENTS {
                outbox.overflowed = true;
                outbox.clear();
                log::warn!(
                    "QMP monitor '{}': the client reads no output ({} KiB queued); disconnected",
                    l.handle.label(),
                    MAX_QUEUED_EVENTS / 1024
                );
                l.handle.disconnect();
                continue;
            }
            outbox.buf.extend_from_slice(if l.pretty { &pretty } else { &compact }.as_bytes());
            drop(outbox);
            l.handle.notify_writable();
        }
    }
}
