//! `ignis daemon`: the service layer behind a REST API (axum on a unix
//! socket, or TCP guarded by a bearer token), Prometheus metrics, an SSE
//! event stream, and the reconcilers (a manifest directory watched with
//! inotify, a Git repository polled) sharing one level-based loop. Hosts
//! running the daemon on one repository form a fleet: each is a node that
//! runs what the manifests place on it (`node.rs`, and the placement rule
//! in `ignis_core::manifest::placement`); `fleet.rs` reads the fleet back.
//! Stopping the daemon leaves VMs running: each has its own supervisor.

mod api;
mod events;
pub mod fleet;
mod git;
mod metrics;
pub mod node;
mod reconciler;
mod routes;
pub mod service;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use api::Problem;
pub use events::Event;
pub use git::{redact_url, GitOptions};
pub use node::NodeOptions;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Unix socket of the API (mode 0600).
    pub socket: PathBuf,
    /// A group (name or gid) that may use the socket (mode 0660).
    pub socket_group: Option<String>,
    /// Also listen on TCP (`127.0.0.1:8080`); needs `token`.
    pub listen: Option<String>,
    pub token: Option<String>,
    /// TLS for the TCP listener: certificate chain and key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Reconcile the manifests in this directory (inotify + interval).
    pub manifests: Option<PathBuf>,
    pub gitops: Option<GitOptions>,
    /// Resync interval of the reconcilers.
    pub interval: Duration,
    /// This daemon as a node of a fleet (placement, status directory,
    /// node record).
    pub node: NodeOptions,
}

pub(crate) struct Shared {
    pub ignis: Arc<dyn service::Service>,
    pub events: events::Bus,
    pub metrics: metrics::Metrics,
}

/// Runs until SIGTERM/SIGINT.
pub fn run(ignis: ignis_core::Ignis, opts: DaemonOptions) -> anyhow::Result<()> {
    if opts.listen.is_some() && opts.token.as_deref().unwrap_or("").len() < 16 {
        anyhow::bail!(
            "--listen needs --token (at least 16 characters): the TCP API runs VMs as root"
        );
    }
    let socket_gid = opts.socket_group.as_deref().map(group_id).transpose()?;
    if opts.tls_cert.is_some() && opts.listen.is_none() {
        anyhow::bail!("--tls-cert applies to the TCP listener: add --listen HOST:PORT");
    }
    // Read the certificate now: a bad one is an error before anything runs.
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some(tls::server_config(c, k)?),
        _ => None,
    };
    let ignis = Arc::new(ignis);
    // Boot persistence: the VMs the host's reboot stopped come back
    // (restart policy always/unless-stopped), while the API starts.
    {
        let ignis = ignis.clone();
        std::thread::spawn(move || match ignis.vm_start_after_boot() {
            Ok(started) => {
                for (vm, r) in started {
                    if r.is_ok() {
                        tracing::info!(vm, "started after the host reboot");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the VMs to start after a reboot"),
        });
    }
    let shared = Arc::new(Shared {
        ignis: ignis as Arc<dyn service::Service>,
        events: events::Bus::new(),
        metrics: metrics::Metrics::new(),
    });
    events::watch_vms(shared.clone());
    if opts.manifests.is_some() || opts.gitops.is_some() {
        reconciler::start(shared.clone(), &opts)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(api::serve(shared, &opts, tls, socket_gid))
}

/// What the API does with an `apply`/`delete` body (size bound, YAML or
/// JSON, strict validation), for the fuzz targets: `Err` carries the
/// problem the client would get.
pub fn parse_manifest_body(body: &str) -> Result<Vec<ignis_api::manifest::Manifest>, Problem> {
    api::manifests(body)
}

/// The API router over any [`service::Service`] (no reconciler, no
/// listeners): for tests of the HTTP layer against a fake service.
pub fn api_router(svc: Arc<dyn service::Service>) -> axum::Router {
    api::router(Arc::new(Shared {
        ignis: svc,
        events: events::Bus::new(),
        metrics: metrics::Metrics::new(),
    }))
}

/// A group name (from /etc/group) or a numeric gid.
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--socket-group {group}: no such group (give a name from /etc/group or a gid)"
            )
        })
}
