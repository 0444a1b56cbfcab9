//! `ignis fleet ps|nodes`: the fleet as its repository shows it (through
//! `ignis_daemon::fleet`, which reads a bare cache clone with the GitOps
//! source's code), printed as `ps` prints; and the daemon's node identity
//! flags.

use std::collections::BTreeMap;

use crate::cli::{FleetCmd, FleetRepo};
use crate::output;
use ignis_core::{Error, ErrorKind};

pub fn run(cmd: FleetCmd) -> anyhow::Result<()> {
    match cmd {
        FleetCmd::Ps { repo, list } => {
            let f = read(&repo)?;
            let rows = f
                .vms
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        v.node.clone().unwrap_or_else(|| "<none>".into()),
                        v.state.clone(),
                        v.ip.clone().unwrap_or_default(),
                        match (v.status_age, v.stale) {
                            (Some(a), false) => format!("{} ago", age(a)),
                            (Some(a), true) => format!("{} ago (STALE)", age(a)),
                            (None, _) if v.node.is_none() => "-".into(),
                            (None, _) => "no node record (STALE)".into(),
                        },
                    ]
                })
                .collect();
            let ids = f.vms.iter().map(|v| v.name.clone()).collect();
            output::list(
                &list,
                &["NAME", "NODE", "STATE", "IP", "STATUS AGE"],
                rows,
                &f.vms,
                ids,
            )
        }
        FleetCmd::Nodes { repo, list } => {
            let f = read(&repo)?;
            let rows = f
                .nodes
                .iter()
                .map(|n| {
                    let r = &n.record;
                    let c = &r.status.capacity;
                    vec![
                        r.metadata.name.clone(),
                        if n.stale { "STALE" } else { "Ready" }.into(),
                        c.cpus.to_string(),
                        output::size(c.memory_bytes),
                        output::size(c.disk_free_bytes),
                        r.status.backends.join(","),
                        r.status.kvm.clone(),
                        r.status.ignis_version.clone(),
                        format!("{} ago", age(n.heartbeat_age)),
                        r.metadata
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            let ids = f
                .nodes
                .iter()
                .map(|n| n.record.metadata.name.clone())
                .collect();
            output::list(
                &list,
                &[
                    "NAME",
                    "STATUS",
                    "CPUS",
                    "MEMORY",
                    "DISK FREE",
                    "BACKENDS",
                    "KVM",
                    "VERSION",
                    "HEARTBEAT",
                    "LABELS",
                ],
                rows,
                &f.nodes,
                ids,
            )
        }
    }
}

fn read(repo: &FleetRepo) -> anyhow::Result<ignis_daemon::fleet::Fleet> {
    let opts = ignis_daemon::GitOptions {
        cache: cache_dir(&repo.repo),
        url: repo.repo.clone(),
        branch: repo.branch.clone(),
        path: repo.path.clone(),
        write_status: false,
        ssh_key: repo.ssh_key.clone(),
    };
    let now = ignis_daemon::node::now();
    let f = ignis_daemon::fleet::read(&opts, now, repo.stale_after).map_err(|e| {
        let kind = match e {
            ignis_daemon::fleet::FleetError::Fetch { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Error::with_source(
            kind,
            format!("--repo {}", ignis_daemon::redact_url(&repo.repo)),
            e,
        )
    })?;
    for file in &f.bad_files {
        eprintln!("ignis: warning: {file} does not parse: left out of placement");
    }
    Ok(f)
}

/// The bare cache clone of `url`: `$XDG_CACHE_HOME/ignis/fleet/<url>` (or
/// `~/.cache/...`; the temp directory without a home), named after the URL
/// without its credentials.
fn cache_dir(url: &str) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ignis").join("fleet").join(
        ignis_daemon::redact_url(url)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>(),
    )
}

/// `4s`, `3m`, `2h`, `5d`: heartbeats are seconds apart, so seconds count.
fn age(secs: i64) -> String {
    match secs.max(0) {
        s @ 0..=119 => format!("{s}s"),
        s @ 120..=7199 => format!("{}m", s / 60),
        s @ 7200..=172_799 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `--node` (default: the hostname) and `--node-label`s, checked.
pub fn node_identity(
    node: Option<String>,
    labels: &[String],
) -> anyhow::Result<(String, BTreeMap<String, String>)> {
    use ignis_core::manifest::placement;
    let name = match node {
        Some(n) => n,
        None => ignis_daemon::node::hostname().ok_or_else(|| {
            Error::new(
                ErrorKind::Invalid,
                "--node: the hostname is unknown; name this node with --node NAME".to_string(),
            )
        })?,
    };
    if !placement::valid_node_name(&name) {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!(
                "--node '{name}': use letters, digits, '_', '.', '-', starting with a letter or digit (at most 64)"
            ),
        )
        .into());
    }
    let mut out = BTreeMap::new();
    for kv in labels {
        let (k, v) = placement::parse_label(kv)
            .map_err(|e| Error::new(ErrorKind::Invalid, format!("--node-label: {}", e.message)))?;
        out.insert(k, v);
    }
    Ok((name, out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_keep_seconds_where_heartbeats_are() {
        assert_eq!(super::age(4), "4s");
        assert_eq!(super::age(119), "119s");
        assert_eq!(super::age(180), "3m");
        assert_eq!(super::age(3 * 3600), "3h");
        assert_eq!(super::age(3 * 86_400), "3d");
        assert_eq!(super::age(-5), "0s");
    }
}
