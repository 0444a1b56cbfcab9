//! What happened to an object (`GET /events`, `ignis events`), as Docker's
//! events: one record per change, newest last.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub time: i64,
    /// create, start, pause, unpause, stop, exit, delete (VMs); reconcile, error
    /// (reconcilers).
    #[serde(rename = "type")]
    pub kind: String,
    /// vm, or the reconciler's source (manifests, git).
    pub object: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which events a client wants (`--filter`, `--since`, `--until`): every
/// key given must match; a key given twice matches either value, as
/// Docker's filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Event types (`type=start`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Object kinds (`object=vm`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// Object names (`name=web`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Only events at or after this time (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Stop at this time (unix seconds): events after it are not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        let any = |set: &[String], v: &str| set.is_empty() || set.iter().any(|s| s == v);
        any(&self.kinds, &e.kind)
            && any(&self.objects, &e.object)
            && any(&self.names, &e.name)
            && self.since.is_none_or(|t| e.time >= t)
            && self.until.is_none_or(|t| e.time <= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, name: &str, time: i64) -> Event {
        Event {
            time,
            kind: kind.into(),
            object: "vm".into(),
            name: name.into(),
            message: None,
        }
    }

    #[test]
    fn filters_match_every_key_and_any_value_of_one() {
        let f = EventFilter {
            kinds: vec!["start".into(), "stop".into()],
            names: vec!["web".into()],
            since: Some(10),
            until: Some(20),
            ..Default::default()
        };
        assert!(f.matches(&ev("start", "web", 10)));
        assert!(f.matches(&ev("stop", "web", 20)));
        assert!(!f.matches(&ev("exit", "web", 15)));
        assert!(!f.matches(&ev("start", "db", 15)));
        assert!(!f.matches(&ev("start", "web", 9)));
        assert!(!f.matches(&ev("start", "web", 21)));
        assert!(EventFilter::default().matches(&ev("delete", "x", 0)));
    }
}
