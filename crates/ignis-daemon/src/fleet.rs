//! `ignis fleet`: the fleet as the repository shows it. A bare cache clone
//! (the GitOps source's code) is fetched, and the node records, the status
//! files of every node and the manifests are read from the branch's head:
//! no node is asked anything, so a dead node shows as what it last wrote,
//! marked stale once it missed its heartbeats.

use std::collections::{BTreeMap, BTreeSet};

use ignis_api::manifest::{Manifest, VmManifestStatus};
use ignis_api::node::NodeRecord;
use ignis_core::manifest::placement::{self, Node, Placement};
use serde::Serialize;

use crate::git::{GitOptions, GitSource, StatusFile};

/// A node and how fresh its record is.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetNode {
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Seconds since its last heartbeat.
    pub heartbeat_age: i64,
    /// It missed more than the allowed number of heartbeats.
    pub stale: bool,
}

/// A VM of the fleet: what its node last reported, or where it should run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetVm {
    pub name: String,
    /// The node running it (`None`: no node matches its placement).
    pub node: Option<String>,
    /// As its node reported it; `pending` when placed there but not
    /// reported yet, `unschedulable` when no node matches.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Seconds since its node last confirmed the status (its heartbeat);
    /// `None` when the node has no record.
    pub status_age: Option<i64>,
    /// Its node is stale (or has no record): the status may be out of date.
    pub stale: bool,
    /// The manifests place it on this node (false: a status left by a node
    /// it moved away from, until that node removes it).
    pub desired: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    /// The commit read.
    pub commit: String,
    pub nodes: Vec<FleetNode>,
    pub vms: Vec<FleetVm>,
    /// Manifest files that did not parse (left out of placement).
    pub bad_files: Vec<String>,
}

/// Why the fleet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot open the cache clone {0}")]
    Open(String, #[source] git2::Error),
    #[error("cannot fetch branch {branch} of {url}")]
    Fetch {
        url: String,
        branch: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read the commit")]
    Read(#[source] git2::Error),
}

/// Reads the fleet at the head of `opts.branch`. A node is stale after
/// `stale_after` missed heartbeats; `now` is Unix seconds.
pub fn read(opts: &GitOptions, now: i64, stale_after: u32) -> Result<Fleet, FleetError> {
    let src =
        GitSource::open(opts).map_err(|e| FleetError::Open(opts.cache.display().to_string(), e))?;
    let head = src.fetch().map_err(|e| FleetError::Fetch {
        url: crate::git::redact_url(&opts.url),
        branch: opts.branch.clone(),
        source: git2::Error::from_str(&crate::git::redact_message(e.message(), &opts.url)),
    })?;
    let records = src.node_records(head).map_err(FleetError::Read)?;
    let files = src.manifests(head).map_err(FleetError::Read)?;
    let status = src.status_files(head).map_err(FleetError::Read)?;
    let mut bad_files = Vec::new();
    let mut manifests = Vec::new();
    for (file, parsed) in files {
        match parsed {
            Ok(ms) => manifests.extend(ms),
            Err(_) => bad_files.push(file),
        }
    }
    // Status files of the daemons of this --path only, when one is given.
    let path = opts.path.trim_matches('/');
    let status: Vec<StatusFile> = status
        .into_iter()
        .filter(|f| path.is_empty() || f.path.as_deref().is_none_or(|p| p == path))
        .collect();
    let mut fleet = view(records, &manifests, status, now, stale_after);
    fleet.commit = head.to_string();
    fleet.bad_files = bad_files;
    Ok(fleet)
}

/// The fleet from what the repository holds (pure: the unit tests' entry).
pub fn view(
    records: Vec<NodeRecord>,
    manifests: &[Manifest],
    status: Vec<StatusFile>,
    now: i64,
    stale_after: u32,
) -> Fleet {
    let mut nodes: Vec<FleetNode> = records
        .into_iter()
        .map(|r| FleetNode {
            heartbeat_age: r.heartbeat_age(now),
            stale: r.is_stale(now, stale_after),
            record: r,
        })
        .collect();
    nodes.sort_by(|a, b| a.record.metadata.name.cmp(&b.record.metadata.name));
    let by_name: BTreeMap<&str, &FleetNode> = nodes
        .iter()
        .map(|n| (n.record.metadata.name.as_str(), n))
        .collect();
    let refs: Vec<Node<'_>> = nodes
        .iter()
        .map(|n| Node {
            name: &n.record.metadata.name,
            labels: &n.record.metadata.labels,
        })
        .collect();
    // Where the manifests put each VM: (vm, node), or no node.
    let mut desired: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unschedulable: Vec<String> = Vec::new();
    for m in manifests {
        let Manifest::Vm(vm) = m else { continue };
        for (copy, p) in placement::place(vm, &refs) {
            match p {
                Placement::On(n) => {
                    desired.insert((copy.metadata.name, n));
                }
                Placement::Everywhere => {
                    for n in &refs {
                        desired.insert((copy.metadata.name.clone(), n.name.to_string()));
                    }
                }
                Placement::Nowhere => unschedulable.push(copy.metadata.name),
            }
        }
    }
    let freshness = |node: &str| match by_name.get(node) {
        Some(n) => (Some(n.heartbeat_age), n.stale),
        None => (None, true),
    };
    let mut vms = Vec::new();
    let mut reported = BTreeSet::new();
    for f in status {
        let key = (f.vm.clone(), f.node.clone());
        let (age, stale) = freshness(&f.node);
        let (state, s) = match serde_yaml::from_str::<VmManifestStatus>(&f.text) {
            Ok(s) => (s.state.clone().unwrap_or_else(|| "unknown".into()), s),
            Err(_) => (
                "error".into(),
                VmManifestStatus {
                    message: Some(f.text.lines().skip(1).collect::<Vec<_>>().join(" ")),
                    ..Default::default()
                },
            ),
        };
        vms.push(FleetVm {
            name: f.vm,
            node: Some(f.node),
            state,
            ip: s.ip,
            health: s.health,
            message: s.message,
            status_age: age,
            stale,
            desired: desired.contains(&key),
        });
        reported.insert(key);
    }
    for (vm, node) in desired.iter().filter(|k| !reported.contains(*k)) {
        let (age, stale) = freshness(node);
        vms.push(FleetVm {
            name: vm.clone(),
            node: Some(node.clone()),
            state: "pending".into(),
            ip: None,
            health: None,
            message: None,
            status_age: age,
            stale,
            desired: true,
        });
    }
    for vm in unschedulable {
        vms.push(FleetVm {
            name: vm,
            node: None,
            state: "unschedulable".into(),
            ip: None,
            health: None,
            message: Some("no node matches its placement".into()),
            status_age: None,
            stale: false,
            desired: true,
        });
    }
    vms.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
    Fleet {
        commit: String::new(),
        nodes,
        vms,
        bad_files: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_api::node::{NodeMetadata, NodeStatus};

    fn node(name: &str, zone: &str, heartbeat: i64) -> NodeRecord {
        NodeRecord {
            api_version: "ignis.dev/v1alpha1".into(),
            kind: "Node".into(),
            metadata: NodeMetadata {
                name: name.into(),
                labels: [("zone".to_string(), zone.to_string())].into(),
            },
            status: NodeStatus {
                heartbeat,
                heartbeat_seconds: 10,
                ..Default::default()
            },
        }
    }

    fn file(node: &str, vm: &str, state: &str) -> StatusFile {
        StatusFile {
            node: node.into(),
            vm: vm.into(),
            path: Some("/".into()),
            text: format!("# ignis-gitops path=/\nid: x\nstate: {state}\nip: 10.61.0.2\n"),
        }
    }

    #[test]
    fn the_view_joins_records_status_and_placement() {
        let ms = ignis_core::manifest::parse(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: web}\nspec: {image: x, nodeSelector: {zone: east}, replicas: 2}\n---\napiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: db}\nspec: {image: x, nodeName: a}\n---\napiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: gpu}\nspec: {image: x, nodeSelector: {gpu: 'yes'}}\n",
            "t",
        )
        .unwrap();
        let now = 10_000;
        let f = view(
            vec![
                node("c", "east", now - 5),
                node("a", "west", now - 100),
                node("b", "east", now),
            ],
            &ms,
            vec![
                file("b", "web-1", "running"),
                file("a", "db", "running"),
                file("a", "web-2", "exited"), // moved away from a
            ],
            now,
            3,
        );
        let names: Vec<&str> = f
            .nodes
            .iter()
            .map(|n| n.record.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let stale: Vec<bool> = f.nodes.iter().map(|n| n.stale).collect();
        assert_eq!(stale, [true, false, false], "a missed 3 heartbeats of 10 s");
        let rows: Vec<(String, Option<String>, String, bool, bool)> = f
            .vms
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.node.clone(),
                    v.state.clone(),
                    v.stale,
                    v.desired,
                )
            })
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            rows,
            vec![
                (s("db"), Some(s("a")), s("running"), true, true),
                (s("gpu"), None, s("unschedulable"), false, true),
                (s("web-1"), Some(s("b")), s("running"), false, true),
                (s("web-2"), Some(s("a")), s("exited"), true, false),
                (s("web-2"), Some(s("c")), s("pending"), false, true),
            ]
        );
        let web1 = f.vms.iter().find(|v| v.name == "web-1").unwrap();
        assert_eq!(
            (web1.ip.as_deref(), web1.status_age),
            (Some("10.61.0.2"), Some(0))
        );
        let json = serde_json::to_value(&f.nodes[0]).unwrap();
        assert_eq!(json["metadata"]["name"], "a");
        assert_eq!(json["stale"], true);
    }
}
