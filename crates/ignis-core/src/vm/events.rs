//! VM events from the records (`ignis events`, the daemon's `GET /events`):
//! a [`VmWatcher`] is shown the VM list again and again and says what
//! changed since it last looked. Changes made by any process (the CLI, the
//! daemon, a supervisor recording an exit) show, as nothing is hooked.

use std::collections::BTreeMap;

use ignis_api::{Event, VmRecord, VmState};

/// Turns successive VM lists into events. The first list is the baseline:
/// it yields nothing.
#[derive(Debug, Default)]
pub struct VmWatcher {
    /// id -> (name, state) as last seen; `None` before the first list.
    seen: Option<BTreeMap<String, (String, String)>>,
}

impl VmWatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The events between the last list and `vms` (all VMs, `vm_list(true)`),
    /// stamped `now` (unix seconds), in a stable order: by VM ID, then
    /// deletions.
    pub fn diff(&mut self, vms: &[VmRecord], now: i64) -> Vec<Event> {
        let mut out = Vec::new();
        let event = |kind: &str, name: &str, message: Option<String>| Event {
            time: now,
            kind: kind.into(),
            object: "vm".into(),
            name: name.into(),
            message,
        };
        let mut current = BTreeMap::new();
        for v in vms {
            let state = v.state().as_str().to_string();
            if let Some(seen) = &self.seen {
                match seen.get(&v.id) {
                    None => {
                        out.push(event("create", &v.name, None));
                        // Created and started between two looks.
                        if v.state() != VmState::Created {
                            out.push(event(kind_of(v), &v.name, v.status.reason.clone()));
                        }
                    }
                    Some((_, old)) if *old != state => {
                        out.push(event(kind_of(v), &v.name, v.status.reason.clone()));
                    }
                    _ => {}
                }
            }
            current.insert(v.id.clone(), (v.name.clone(), state));
        }
        if let Some(seen) = &self.seen {
            for (id, (name, _)) in seen {
                if !current.contains_key(id) {
                    out.push(event("delete", name, None));
                }
            }
        }
        self.seen = Some(current);
        out
    }
}

/// The event a VM's current state is the result of.
fn kind_of(v: &VmRecord) -> &'static str {
    match v.state() {
        VmState::Running => "start",
        VmState::Created => "create",
        _ if v
            .status
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("stopped")) =>
        {
            "stop"
        }
        _ => "exit",
    }
}
