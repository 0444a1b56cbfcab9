//! One level-based loop for both sources: on every trigger (a file event
//! in the manifest directory, or the interval) read the whole desired
//! state, keep what is placed on this node, and converge. Bad files are
//! reported (event + log) and skipped; while any file is bad nothing is
//! removed, so a typo never deletes VMs. VMs placed elsewhere are removed
//! like VMs no manifest names any more.
//!
//! Placement needs the fleet's nodes: for Git, the node records at the
//! fetched commit (so every node decides from the same data without
//! talking to the others); for a directory, only this node.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ignis_api::manifest::Manifest;
use ignis_api::node::NodeRecord;
use ignis_core::manifest::placement::{self, Node};
use ignis_core::manifest::{Action, Applied};

use crate::git::{BadFile, FileManifests, GitSource, Heartbeat};
use crate::node::{Host, NodeOptions};
use crate::{DaemonOptions, Shared};

fn report(shared: &Shared, owner: &str, results: &[Applied]) {
    for r in results {
        match &r.action {
            Action::Unchanged | Action::Present => {}
            Action::Failed(why) => shared.events.emit(
                "error",
                &r.kind.to_ascii_lowercase(),
                &r.name,
                Some(why.clone()),
            ),
            a => shared.events.emit(
                "reconcile",
                &r.kind.to_ascii_lowercase(),
                &r.name,
                Some(format!(
                    "{} by {owner}",
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| v["action"].as_str().map(str::to_string))
                        .unwrap_or_default()
                )),
            ),
        }
    }
}

/// What node `me` runs of `manifests`, the fleet being `nodes`.
fn placed(manifests: Vec<Manifest>, nodes: &[NodeRecord], me: &str) -> Vec<Manifest> {
    let nodes: Vec<Node<'_>> = nodes
        .iter()
        .map(|n| Node {
            name: &n.metadata.name,
            labels: &n.metadata.labels,
        })
        .collect();
    placement::for_node(&manifests, &nodes, me)
}

/// This node alone, as a directory of manifests knows the fleet.
fn only(node: &NodeOptions) -> Vec<NodeRecord> {
    let mut r = NodeRecord {
        api_version: ignis_api::manifest::API_VERSION.into(),
        kind: ignis_api::node::NODE_KIND.into(),
        metadata: Default::default(),
        status: Default::default(),
    };
    r.metadata.name.clone_from(&node.name);
    r.metadata.labels.clone_from(&node.labels);
    vec![r]
}

/// Applies the good files' manifests that `place` keeps; prunes only when
/// every file was good. Returns the results and whether every file was
/// good.
fn converge_files(
    shared: &Shared,
    owner: &str,
    files: Vec<FileManifests>,
    place: impl FnOnce(Vec<Manifest>) -> Vec<Manifest>,
) -> (Vec<Applied>, bool) {
    let mut good: Vec<Manifest> = Vec::new();
    let mut bad = 0;
    for (file, parsed) in files {
        match parsed {
            Ok(ms) => good.extend(ms),
            Err(why) => {
                bad += 1;
                let why = why.to_string();
                tracing::warn!(file, why, "bad manifest skipped");
                shared.events.emit("error", "manifest", &file, Some(why));
            }
        }
    }
    let good = place(good);
    let t = std::time::Instant::now();
    let results = if bad == 0 {
        shared.ignis.converge(&good, owner)
    } else {
        shared.ignis.apply(&good, owner)
    };
    shared.metrics.observe(
        "reconcile",
        t.elapsed().as_secs_f64(),
        results
            .iter()
            .all(|r| !matches!(r.action, Action::Failed(_))),
    );
    report(shared, owner, &results);
    (results, bad == 0)
}

fn dir_files(dir: &std::path::Path) -> Vec<FileManifests> {
    match ignis_core::manifest::manifest_files(dir) {
        Ok(files) => files
            .into_iter()
            .map(|f| {
                let name = f.display().to_string();
                let parsed = std::fs::read_to_string(&f)
                    .map_err(BadFile::from)
                    .and_then(|t| ignis_core::manifest::parse(&t, &name).map_err(BadFile::from));
                (name, parsed)
            })
            .collect(),
        Err(e) => vec![(dir.display().to_string(), Err(BadFile::from(e)))],
    }
}

pub fn start(shared: Arc<Shared>, opts: &DaemonOptions) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = None;
    if let Some(dir) = &opts.manifests {
        use notify::Watcher;
        let tx = tx.clone();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reading the files ourselves raises access events: only
            // changes trigger a reconcile.
            if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                let _ = tx.send(());
            }
        })?;
        w.watch(dir, notify::RecursiveMode::Recursive)?;
        watcher = Some(w);
    }
    let interval = opts.interval;
    let dir = opts.manifests.clone();
    let git = opts.gitops.clone();
    let node = opts.node.clone();
    // The heartbeat is checked once a round: never more often than that.
    let every = node.heartbeat.max(interval);
    std::thread::spawn(move || {
        let host = Host::detect();
        let mut last_beat: Option<std::time::Instant> = None;
        let _watcher = watcher; // lives as long as the loop
        let git_source = git.as_ref().and_then(|g| match GitSource::open(g) {
            Ok(s) => Some(s),
            Err(e) => {
                shared.events.emit(
                    "error",
                    "gitops",
                    &crate::git::redact_url(&g.url),
                    Some(crate::git::redact_message(e.message(), &g.url)),
                );
                None
            }
        });
        loop {
            if let Some(d) = &dir {
                converge_files(
                    &shared,
                    &format!("dir:{}", d.display()),
                    dir_files(d),
                    |ms| placed(ms, &only(&node), &node.name),
                );
            }
            if let (Some(g), Some(src)) = (&git, &git_source) {
                // Never the credentials: the owner is a label (inspect,
                // status commits), events are public to API clients.
                let shown = crate::git::redact_url(&g.url);
                let owner = format!("git:{shown}");
                let beat = |due: bool| Heartbeat {
                    record: serde_yaml::to_string(&host.record(&node, every, crate::node::now()))
                        .unwrap_or_default(),
                    due,
                };
                if g.write_status && last_beat.is_none() {
                    // The record first: nodeSelector placement counts only
                    // nodes with a record, this one included.
                    if write_status(
                        &shared,
                        src,
                        &shown,
                        &g.url,
                        &node.name,
                        &[],
                        false,
                        &beat(true),
                    ) {
                        last_beat = Some(std::time::Instant::now());
                    }
                }
                match src
                    .fetch()
                    .and_then(|head| Ok((src.manifests(head)?, src.node_records(head)?)))
                {
                    Ok((files, nodes)) => {
                        let (results, all_good) = converge_files(&shared, &owner, files, |ms| {
                            placed(ms, &nodes, &node.name)
                        });
                        if g.write_status {
                            let due = last_beat.is_none_or(|t| t.elapsed() >= every);
                            let wrote = write_status(
                                &shared,
                                src,
                                &shown,
                                &g.url,
                                &node.name,
                                &results,
                                all_good,
                                &beat(due),
                            );
                            if wrote {
                                last_beat = Some(std::time::Instant::now());
                            }
                        }
                    }
                    Err(e) => {
                        let why = crate::git::redact_message(e.message(), &g.url);
                        tracing::warn!(url = %shown, error = %why, "gitops fetch failed");
                        shared.metrics.observe("gitops_fetch", 0.0, false);
                        shared.events.emit("error", "gitops", &shown, Some(why));
                    }
                }
            }
            // Debounce file events; resync at least every interval.
            let _ = rx.recv_timeout(interval);
            std::thread::sleep(Duration::from_millis(100));
            while rx.try_recv().is_ok() {}
        }
    });
    Ok(())
}

/// Commits and pushes the observed status with the node record (on the
/// remote's current head, retried when another push lands first); a
/// failure is logged at warn, counted
/// (`ignis_operations_total{op="gitops_status",result="error"}`) and sent
/// as an event, and the next round tries again. Returns whether a commit
/// (which carries the node record: a heartbeat) was pushed.
#[allow(clippy::too_many_arguments)]
fn write_status(
    shared: &Shared,
    src: &GitSource,
    shown: &str,
    url: &str,
    node: &str,
    results: &[Applied],
    all_good: bool,
    beat: &Heartbeat,
) -> bool {
    let status = statuses(shared, results);
    let t = std::time::Instant::now();
    match src.write_status(node, &status, all_good, Some(beat)) {
        Ok(Some(c)) => {
            shared
                .metrics
                .observe("gitops_status", t.elapsed().as_secs_f64(), true);
            tracing::info!(url = %shown, commit = %c, "status committed");
            shared.events.emit(
                "reconcile",
                "gitops",
                shown,
                Some(format!("status committed {c}")),
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            let why = crate::git::redact_message(&e.to_string(), url);
            shared
                .metrics
                .observe("gitops_status", t.elapsed().as_secs_f64(), false);
            tracing::warn!(url = %shown, error = %why, "status not written");
            shared.events.emit(
                "error",
                "gitops",
                shown,
                Some(format!("status not written: {why}")),
            );
            false
        }
    }
}

/// `name -> status YAML` of the VMs the repository describes.
fn statuses(shared: &Shared, results: &[Applied]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in results
        .iter()
        .filter(|r| r.kind == "VM" && r.action != Action::Removed)
    {
        let text = match shared.ignis.vm_manifest(&r.name) {
            Ok(m) => serde_yaml::to_string(&m.status).unwrap_or_default(),
            Err(e) => format!("error: {:?}\n", e.to_string()),
        };
        out.insert(r.name.clone(), text);
    }
    out
}
