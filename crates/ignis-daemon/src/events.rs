//! The event stream: VM state changes (observed by polling the records,
//! so changes made by the CLI show too) and reconciler results.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use ignis_api::Event;

/// How many past events the daemon keeps for `?since=` (Docker keeps
/// 256 per client log; the events of a busy hour fit).
const HISTORY: usize = 1024;

/// The daemon's events: a broadcast to live subscribers and the last
/// [`HISTORY`] events for subscribers that ask for the past.
#[derive(Clone)]
pub struct Bus {
    tx: tokio::sync::broadcast::Sender<Event>,
    history: Arc<Mutex<VecDeque<Event>>>,
}

impl Bus {
    pub fn new() -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(HISTORY).0,
            history: Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY))),
        }
    }

    pub fn emit(&self, kind: &str, object: &str, name: &str, message: Option<String>) {
        self.send(Event {
            time: now(),
            kind: kind.into(),
            object: object.into(),
            name: name.into(),
            message,
        });
    }

    pub fn send(&self, e: Event) {
        tracing::info!(kind = e.kind, object = e.object, name = e.name, message = ?e.message, "event");
        // Recorded and sent under one lock: a subscriber gets each event
        // once, from the history or live.
        let mut h = self.history.lock().expect("events");
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(e.clone());
        let _ = self.tx.send(e);
    }

    /// The kept events at or after `since` (none without it), and the live
    /// ones from now on.
    pub fn subscribe(
        &self,
        since: Option<i64>,
    ) -> (Vec<Event>, tokio::sync::broadcast::Receiver<Event>) {
        let h = self.history.lock().expect("events");
        let past = match since {
            Some(t) => h.iter().filter(|e| e.time >= t).cloned().collect(),
            None => Vec::new(),
        };
        (past, self.tx.subscribe())
    }
}

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// Polls the VM records once a second and turns differences into events
/// (and the VM-count gauges).
pub fn watch_vms(shared: Arc<crate::Shared>) {
    std::thread::spawn(move || {
        let mut watcher = ignis_core::vm::VmWatcher::new();
        loop {
            if let Ok(vms) = shared.ignis.vm_list(true) {
                for e in watcher.diff(&vms, now()) {
                    shared.events.send(e);
                }
                shared.metrics.set_vm_counts(&vms);
                shared.metrics.observe_starts(&vms);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}
