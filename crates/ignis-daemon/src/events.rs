//! The event stream: VM state changes (observed by polling the records,
//! so changes made by the CLI show too) and reconciler results.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub time: i64,
    /// create, start, stop, exit, delete, reconcile, error.
    #[serde(rename = "type")]
    pub kind: String,
    pub object: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone)]
pub struct Bus(tokio::sync::broadcast::Sender<Event>);

impl Bus {
    pub fn new() -> Self {
        Self(tokio::sync::broadcast::channel(1024).0)
    }
    pub fn emit(&self, kind: &str, object: &str, name: &str, message: Option<String>) {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0);
        tracing::info!(kind, object, name, ?message, "event");
        let _ = self.0.send(Event {
            time,
            kind: kind.into(),
            object: object.into(),
            name: name.into(),
            message,
        });
    }
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}

/// Polls the VM records once a second and turns differences into events
/// (and the VM-count gauges).
pub fn watch_vms(shared: Arc<crate::Shared>) {
    std::thread::spawn(move || {
        let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new(); // id -> (name, state)
        let mut first = true;
        loop {
            if let Ok(vms) = shared.ignis.vm_list(true) {
                let mut now = BTreeMap::new();
                for v in &vms {
                    let state = v.state().as_str().to_string();
                    match seen.get(&v.id) {
                        None if !first => shared.events.emit("create", "vm", &v.name, None),
                        Some((_, old)) if *old != state && !first => {
                            let kind = match state.as_str() {
                                "running" => "start",
                                "exited"
                                    if v.status
                                        .reason
                                        .as_deref()
                                        .is_some_and(|r| r.starts_with("stopped")) =>
                                {
                                    "stop"
                                }
                                _ => "exit",
                            };
                            shared
                                .events
                                .emit(kind, "vm", &v.name, v.status.reason.clone());
                        }
                        _ => {}
                    }
                    now.insert(v.id.clone(), (v.name.clone(), state));
                }
                for (id, (name, _)) in &seen {
                    if !now.contains_key(id) {
                        shared.events.emit("delete", "vm", name, None);
                    }
                }
                shared.metrics.set_vm_counts(&vms);
                seen = now;
                first = false;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}
