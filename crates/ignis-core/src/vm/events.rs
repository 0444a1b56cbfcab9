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
            let paused = v.state() == VmState::Running && v.status.paused;
            let state = format!(
                "{}{}",
                v.state().as_str(),
                if paused { "/paused" } else { "" }
            );
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
                        let was_running = old.starts_with("running");
                        let kind = match (v.state(), was_running, paused) {
                            // Only the vCPUs' pause flag changed.
                            (VmState::Running, true, true) => "pause",
                            (VmState::Running, true, false) => "unpause",
                            _ => kind_of(v),
                        };
                        out.push(event(kind, &v.name, v.status.reason.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, state: &str, paused: bool, reason: Option<&str>) -> VmRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("vm-{id}"), "imageId": "sha256:00", "image": "i",
            "kernelId": "sha256:00", "created": "2026-01-01T00:00:00Z",
            "spec": {"cpus": 1, "memoryMib": 256, "diskSize": 1, "backend": "qemu", "accel": "tcg",
                     "mode": "app", "network": {"mode": "none"}},
            "status": {"state": state, "paused": paused, "reason": reason}
        }))
        .unwrap()
    }

    fn kinds(events: &[Event]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| (e.kind.clone(), e.name.clone()))
            .collect()
    }

    #[test]
    fn successive_lists_become_events() {
        let mut w = VmWatcher::new();
        // The first list is the baseline.
        assert!(w.diff(&[vm("a", "running", false, None)], 1).is_empty());
        let e = w.diff(
            &[
                vm("a", "running", true, None),
                vm("b", "running", false, None),
            ],
            2,
        );
        assert_eq!(
            kinds(&e),
            [
                ("pause".into(), "vm-a".into()),
                ("create".into(), "vm-b".into()),
                ("start".into(), "vm-b".into())
            ]
        );
        assert!(e.iter().all(|e| e.time == 2 && e.object == "vm"));
        let e = w.diff(
            &[
                vm("a", "running", false, None),
                vm("b", "exited", false, Some("stopped by ignis stop")),
            ],
            3,
        );
        assert_eq!(
            kinds(&e),
            [
                ("unpause".into(), "vm-a".into()),
                ("stop".into(), "vm-b".into())
            ]
        );
        let e = w.diff(
            &[vm("b", "exited", false, Some("stopped by ignis stop"))],
            4,
        );
        assert_eq!(kinds(&e), [("delete".into(), "vm-a".into())]);
        // Nothing changed: nothing to say.
        assert!(w
            .diff(
                &[vm("b", "exited", false, Some("stopped by ignis stop"))],
                5
            )
            .is_empty());
    }
}
