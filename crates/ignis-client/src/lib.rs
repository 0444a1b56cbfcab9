//! A Rust client of the `ignis daemon` HTTP API: what the `ignis` CLI uses
//! for `--host`/`IGNIS_HOST`, and what other programs use to drive ignis
//! without the CLI.
//!
//! The client is blocking (it runs its own small tokio runtime), so it fits
//! in scripts, tests and synchronous tools alike. Every call opens one HTTP/1.1
//! connection to the daemon: a unix socket (`unix:///var/lib/ignis/daemon.sock`
//! or a plain path), TCP with a bearer token (`tcp://127.0.0.1:7070`), or
//! TLS (`https://host:7070`, trusting the PEM certificates of
//! [`Client::with_tls_ca`]).
//!
//! ```no_run
//! use ignis_client::Client;
//! use ignis_api::manifest::VmManifest;
//!
//! let c = Client::new("unix:///var/lib/ignis/daemon.sock", None)?;
//! // Run a VM (a manifest as `ignis apply` takes it; or build one in code).
//! let m: VmManifest = serde_yaml::from_str(
//!     "apiVersion: ignis.dev/v1\nkind: VM\nmetadata: {name: web}\nspec: {image: nginx:alpine}\n",
//! )?;
//! let vm = c.vm_create(&m, &ignis_client::CreateParams { start: true, ..Default::default() })?;
//! println!("{} is {}", vm.name, vm.state());
//! // Run a command in it (through the VM's guest agent).
//! let out = c.vm_exec(&vm.id, &["uname".into(), "-r".into()])?;
//! print!("{}", String::from_utf8_lossy(&out.stdout));
//! // Follow its console log.
//! let mut log = c.vm_logs(&vm.id, true)?;
//! std::io::copy(&mut log, &mut std::io::stdout())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Errors from the daemon are [`Error::Api`] carrying the RFC 9457 problem
//! details (status, title, detail, and the input field when there is one).

mod transport;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use ignis_api::manifest::VmManifest;
use ignis_api::{ImageRecord, KernelRecord, SnapshotRecord, VmRecord};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use ignis_api::ExecOutput;
pub use transport::Stream;

/// Largest non-streamed reply body.
const MAX_BODY: usize = 64 << 20;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon answered with an error (a problem+json body).
    #[error("{detail}")]
    Api {
        status: u16,
        title: String,
        detail: String,
        /// The input field the error is about, by its API name (`memory`,
        /// `network.ip`), when the daemon named one.
        field: Option<String>,
        /// The error's kind: `not-found`, `ambiguous`, `conflict`,
        /// `invalid`, `unavailable` or `internal` (when the daemon gave one).
        code: Option<String>,
    },
    /// The daemon could not be reached.
    #[error("cannot reach the daemon at {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else on the way: TLS set-up, HTTP framing, a reply that is
    /// not what the API documents.
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn protocol(what: impl std::fmt::Display) -> Self {
        Self::Protocol(what.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How `vm_create` creates.
#[derive(Debug, Clone, Default)]
pub struct CreateParams {
    /// Start it too (`ignis run -d`).
    pub start: bool,
    /// Wait for the guest (agent or init) to report ready when starting.
    pub wait: bool,
    /// Remove it when it exits (`--rm`).
    pub auto_remove: bool,
}

/// A reply: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The problem detail of an error reply (else the body as text).
    pub fn problem(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// A fork's or restore's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forked {
    pub snapshot: SnapshotRecord,
    pub clones: Vec<VmRecord>,
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client of one daemon.
#[derive(Clone)]
pub struct Client {
    transport: Arc<transport::Transport>,
}

impl Client {
    /// `host`: `unix:///PATH`, `/PATH`, `tcp://HOST:PORT` or
    /// `https://HOST:PORT` (TLS: the CA comes from `IGNIS_TLS_CA`, or
    /// [`Client::with_tls_ca`]). `token`: the bearer token TCP needs.
    pub fn new(host: &str, token: Option<String>) -> Result<Self> {
        let ca = std::env::var_os("IGNIS_TLS_CA").map(std::path::PathBuf::from);
        Self::with_tls_ca(host, token, ca.as_deref())
    }

    /// As [`Client::new`], trusting the certificates in `ca` (PEM) for
    /// `https://`.
    pub fn with_tls_ca(host: &str, token: Option<String>, ca: Option<&Path>) -> Result<Self> {
        Ok(Self {
            transport: Arc::new(transport::Transport::new(host, token, ca)?),
        })
    }

    /// The address this client talks to.
    pub fn host(&self) -> &str {
        self.transport.host()
    }

    // ---- the generic calls (every endpoint of `api/openapi.json`) ----

    /// One request; a 2xx reply's body, or the problem as [`Error::Api`].
    pub fn call(&self, method: &str, path: &str, body: Option<(Vec<u8>, &str)>) -> Result<Vec<u8>> {
        let r = self.request(method, path, body)?;
        check(r.status, r.body)
    }

    /// One request, its reply whatever the status (for tests and tools
    /// that look at statuses themselves).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Reply> {
        let t = &self.transport;
        t.block_on(async {
            let resp = t
                .send(method, path, body.map(|(b, ct)| (Bytes::from(b), ct)), &[])
                .await?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Error::protocol(format!("reading the reply: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(Reply { status, body })
        })
    }

    /// `GET path` as JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        json(&self.call("GET", path, None)?)
    }

    /// `POST path` (no body) as JSON.
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        json(&self.call("POST", path, None)?)
    }

    /// `POST path` with a JSON body, as JSON.
    pub fn post_json<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        let b = serde_json::to_vec(body).map_err(Error::protocol)?;
        json(&self.call("POST", path, Some((b, "application/json")))?)
    }

    /// `DELETE path` as JSON.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        json(&self.call("DELETE", path, None)?)
    }

    /// A request whose reply body is read as it arrives (logs, archives).
    pub fn stream(&self, method: &str, path: &str) -> Result<Box<dyn Read + Send>> {
        self.transport.stream(method, path)
    }

    /// `POST path` with the file at `file` streamed as the body, as JSON.
    pub fn upload<T: DeserializeOwned>(&self, path: &str, file: &Path) -> Result<T> {
        json(&self.transport.upload(path, file)?)
    }

    /// An HTTP upgrade of `path` to a raw two-way byte stream.
    pub fn upgrade(&self, path: &str, protocol: &str) -> Result<Stream> {
        self.transport.upgrade(path, protocol)
    }

    // ---- VMs ----

    pub fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>> {
        self.get(&format!("/v1/vms?all={all}"))
    }

    pub fn vm_inspect(&self, vm: &str) -> Result<VmRecord> {
        self.get(&format!("/v1/vms/{}", enc(vm)))
    }

    /// One sample of a VM's CPU, memory, network and block I/O counters.
    pub fn vm_stats(&self, vm: &str) -> Result<ignis_api::VmStats> {
        self.get(&format!("/v1/vms/{}/stats", enc(vm)))
    }

    /// Creates a VM from a manifest (`spec.image` required; the name from
    /// `metadata.name`, generated when empty).
    pub fn vm_create(&self, m: &VmManifest, p: &CreateParams) -> Result<VmRecord> {
        self.post_json(
            &format!(
                "/v1/vms?start={}&wait={}&rm={}",
                p.start, p.wait, p.auto_remove
            ),
            m,
        )
    }

    pub fn vm_start(&self, vm: &str, wait: bool) -> Result<VmRecord> {
        self.post(&format!("/v1/vms/{}/start?wait={wait}", enc(vm)))
    }

    /// Stops a VM: its guest shuts down, killed after `timeout_secs`
    /// (none: the VM's stop timeout, 10 s unless it was created with one).
    pub fn vm_stop(&self, vm: &str, timeout_secs: Option<u64>) -> Result<VmRecord> {
        match timeout_secs {
            Some(t) => self.post(&format!("/v1/vms/{}/stop?time={t}", enc(vm))),
            None => self.post(&format!("/v1/vms/{}/stop", enc(vm))),
        }
    }

    pub fn vm_kill(&self, vm: &str) -> Result<VmRecord> {
        self.post(&format!("/v1/vms/{}/kill", enc(vm)))
    }

    pub fn vm_pause(&self, vm: &str, pause: bool) -> Result<VmRecord> {
        let op = if pause { "pause" } else { "unpause" };
        self.post(&format!("/v1/vms/{}/{op}", enc(vm)))
    }

    /// Removes a VM; its ID.
    pub fn vm_remove(&self, vm: &str, force: bool) -> Result<String> {
        #[derive(Deserialize)]
        struct Removed {
            id: String,
        }
        let r: Removed = self.delete(&format!("/v1/vms/{}?force={force}", enc(vm)))?;
        Ok(r.id)
    }

    /// `rm -v`: the VM and its anonymous volumes.
    pub fn vm_remove_volumes(&self, vm: &str, force: bool) -> Result<String> {
        #[derive(Deserialize)]
        struct Removed {
            id: String,
        }
        let r: Removed = self.delete(&format!("/v1/vms/{}?force={force}&volumes=true", enc(vm)))?;
        Ok(r.id)
    }

    pub fn volume_list(&self) -> Result<Vec<ignis_api::VolumeRecord>> {
        self.get("/v1/volumes")
    }

    pub fn volume_create(
        &self,
        name: Option<&str>,
        size: u64,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<ignis_api::VolumeRecord> {
        self.post_json(
            "/v1/volumes",
            &serde_json::json!({ "name": name, "size": size, "labels": labels }),
        )
    }

    pub fn volume_inspect(&self, v: &str) -> Result<ignis_api::VolumeRecord> {
        self.get(&format!("/v1/volumes/{}", enc(v)))
    }

    pub fn volume_remove(&self, v: &str) -> Result<ignis_api::VolumeRecord> {
        self.delete(&format!("/v1/volumes/{}", enc(v)))
    }

    /// `volume prune [-a]`: the unused anonymous volumes (with `all`, the
    /// unused named ones too) removed.
    pub fn volume_prune(&self, all: bool) -> Result<ignis_api::VolumePruneReport> {
        self.post(&format!("/v1/system/prune/volumes?all={all}"))
    }

    /// The console log; with `follow`, a stream that ends when the VM does.
    pub fn vm_logs(&self, vm: &str, follow: bool) -> Result<Box<dyn Read + Send>> {
        self.vm_logs_with(vm, follow, None, None, false)
    }

    /// [`Client::vm_logs`]: the last `tail` lines, those written since
    /// `since_ns` (Unix nanoseconds), each prefixed with its time.
    pub fn vm_logs_with(
        &self,
        vm: &str,
        follow: bool,
        tail: Option<usize>,
        since_ns: Option<i64>,
        timestamps: bool,
    ) -> Result<Box<dyn Read + Send>> {
        let mut q = format!("/v1/vms/{}/logs?follow={follow}", enc(vm));
        if let Some(n) = tail {
            q.push_str(&format!("&tail={n}"));
        }
        if let Some(t) = since_ns {
            q.push_str(&format!("&since={t}"));
        }
        if timestamps {
            q.push_str("&timestamps=true");
        }
        self.stream("GET", &q)
    }

    /// The VM's serial console, both ways (`ignis attach`).
    pub fn vm_attach(&self, vm: &str) -> Result<Stream> {
        self.upgrade(&format!("/v1/vms/{}/attach", enc(vm)), "ignis-console")
    }

    /// A session with the VM's guest agent (exec with a TTY, signals and
    /// resizes, cp as tar), speaking `ignis-agent-proto` through the daemon.
    pub fn vm_agent(&self, vm: &str) -> Result<ignis_agent_proto::client::Client> {
        let s = self.upgrade(&format!("/v1/vms/{}/agent", enc(vm)), "ignis-agent")?;
        ignis_agent_proto::client::Client::connect(s.reader, s.writer)
            .map_err(|e| Error::protocol(format!("the agent of {vm}: {e}")))
    }

    /// What `ssh` needs to log in to the VM: its address, its host keys
    /// (read through its agent: pin them) and its generated private key.
    pub fn vm_ssh_access(&self, vm: &str) -> Result<ignis_api::SshAccess> {
        self.get(&format!("/v1/vms/{}/ssh", enc(vm)))
    }

    /// A TCP connection to the VM's sshd, opened by the daemon (which
    /// reaches the VM's address): `ignis ssh`'s `ProxyCommand`.
    pub fn vm_ssh_connect(&self, vm: &str) -> Result<Stream> {
        self.upgrade(&format!("/v1/vms/{}/ssh/connect", enc(vm)), "ignis-ssh")
    }

    /// Runs a command to completion and returns its output (no stdin, no
    /// TTY; for interactive sessions use [`Client::vm_agent`]).
    pub fn vm_exec(&self, vm: &str, argv: &[String]) -> Result<ExecOutput> {
        self.post_json(
            &format!("/v1/vms/{}/exec", enc(vm)),
            &serde_json::json!({ "cmd": argv }),
        )
    }

    /// The VM's manifest (`ignis get vm`).
    pub fn vm_manifest(&self, vm: &str) -> Result<VmManifest> {
        self.get(&format!("/v1/manifests/vms/{}", enc(vm)))
    }

    // ---- snapshots ----

    pub fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>> {
        self.get("/v1/snapshots")
    }

    pub fn snapshot_inspect(&self, s: &str) -> Result<SnapshotRecord> {
        self.get(&format!("/v1/snapshots/{}", enc(s)))
    }

    pub fn snapshot_create(&self, vm: &str, name: Option<&str>) -> Result<SnapshotRecord> {
        let q = name
            .map(|n| format!("?name={}", enc(n)))
            .unwrap_or_default();
        self.post(&format!("/v1/vms/{}/snapshot{q}", enc(vm)))
    }

    pub fn snapshot_remove(&self, s: &str) -> Result<SnapshotRecord> {
        self.delete(&format!("/v1/snapshots/{}", enc(s)))
    }

    /// `count` running clones of a snapshot (or of a VM's new snapshot).
    pub fn snapshot_fork(
        &self,
        s: &str,
        count: u32,
        prefix: Option<&str>,
        name: Option<&str>,
        auto_remove: bool,
    ) -> Result<Forked> {
        if let Some(n) = name {
            // One clone, named: a restore.
            return self.post(&format!(
                "/v1/snapshots/{}/restore?vm={}&rm={auto_remove}",
                enc(s),
                enc(n)
            ));
        }
        let mut q = format!("?count={count}&rm={auto_remove}");
        if let Some(p) = prefix {
            q.push_str(&format!("&prefix={}", enc(p)));
        }
        self.post(&format!("/v1/snapshots/{}/fork{q}", enc(s)))
    }

    /// The snapshot as one file (zstd tar), streamed into `out`.
    pub fn snapshot_export(&self, s: &str, out: &mut dyn Write) -> Result<u64> {
        let mut r = self.stream("GET", &format!("/v1/snapshots/{}/export", enc(s)))?;
        std::io::copy(&mut r, out).map_err(|e| Error::protocol(format!("export: {e}")))
    }

    pub fn snapshot_import(&self, file: &Path) -> Result<SnapshotRecord> {
        self.upload("/v1/snapshots/import", file)
    }

    /// Pushes to an OCI registry; the manifest digest.
    pub fn snapshot_push(&self, s: &str, reference: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Pushed {
            digest: String,
        }
        let p: Pushed = self.post(&format!(
            "/v1/snapshots/{}/push?reference={}",
            enc(s),
            enc(reference)
        ))?;
        Ok(p.digest)
    }

    pub fn snapshot_pull(&self, reference: &str) -> Result<SnapshotRecord> {
        self.post(&format!("/v1/snapshots/pull?reference={}", enc(reference)))
    }

    /// [`Client::snapshot_pull`], its progress handed to `on` as it moves.
    pub fn snapshot_pull_progress(
        &self,
        reference: &str,
        on: &mut OnProgress<'_>,
    ) -> Result<SnapshotRecord> {
        let path = format!("/v1/snapshots/pull?reference={}", enc(reference));
        progress(self.transport.stream_with("POST", &path, &accept())?, on)
    }

    // ---- images and kernels ----

    pub fn image_list(&self) -> Result<Vec<ImageRecord>> {
        self.get("/v1/images")
    }

    pub fn image_inspect(&self, i: &str) -> Result<ImageRecord> {
        self.get(&format!("/v1/images/{}", enc(i)))
    }

    pub fn image_pull(&self, reference: &str) -> Result<ImageRecord> {
        self.post(&format!("/v1/images/pull?reference={}", enc(reference)))
    }

    /// [`Client::image_pull`], its progress handed to `on` as it moves
    /// (the bars `ignis image pull` draws).
    pub fn image_pull_progress(
        &self,
        reference: &str,
        on: &mut OnProgress<'_>,
    ) -> Result<ImageRecord> {
        let path = format!("/v1/images/pull?reference={}", enc(reference));
        progress(self.transport.stream_with("POST", &path, &accept())?, on)
    }

    /// [`Client::image_import`], its progress handed to `on`.
    pub fn image_import_progress(
        &self,
        archive: &Path,
        name: Option<&str>,
        on: &mut OnProgress<'_>,
    ) -> Result<Vec<ImageRecord>> {
        let q = name
            .map(|n| format!("?name={}", enc(n)))
            .unwrap_or_default();
        let path = format!("/v1/images/import{q}");
        progress(self.transport.upload_with(&path, archive, &accept())?, on)
    }

    /// [`Client::kernel_upload`] (`source` a file here) or
    /// [`Client::kernel_import`], its progress handed to `on`.
    pub fn kernel_import_progress(
        &self,
        source: KernelSourceArg<'_>,
        name: Option<&str>,
        default: bool,
        on: &mut OnProgress<'_>,
    ) -> Result<KernelRecord> {
        let mut q = format!("?default={default}");
        if let Some(n) = name {
            q.push_str(&format!("&name={}", enc(n)));
        }
        let r = match source {
            KernelSourceArg::File(f) => {
                self.transport
                    .upload_with(&format!("/v1/kernels/import{q}"), f, &accept())?
            }
            KernelSourceArg::Fetched(s) => self.transport.stream_with(
                "POST",
                &format!("/v1/kernels/import{q}&source={}", enc(s)),
                &accept(),
            )?,
        };
        progress(r, on)
    }

    /// Imports a docker-save or OCI-layout tar archive from this machine.
    pub fn image_import(&self, archive: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        let q = name
            .map(|n| format!("?name={}", enc(n)))
            .unwrap_or_default();
        self.upload(&format!("/v1/images/import{q}"), archive)
    }

    pub fn kernel_list(&self) -> Result<Vec<KernelRecord>> {
        self.get("/v1/kernels")
    }

    pub fn kernel_inspect(&self, k: &str) -> Result<KernelRecord> {
        self.get(&format!("/v1/kernels/{}", enc(k)))
    }

    /// Imports a kernel file (ELF vmlinux, bzImage, linux-image .deb) from
    /// this machine.
    pub fn kernel_upload(
        &self,
        file: &Path,
        name: Option<&str>,
        default: bool,
    ) -> Result<KernelRecord> {
        let mut q = format!("?default={default}");
        if let Some(n) = name {
            q.push_str(&format!("&name={}", enc(n)));
        }
        self.upload(&format!("/v1/kernels/import{q}"), file)
    }

    /// Imports a kernel the daemon fetches itself: `apt:PACKAGE` or an OCI
    /// image in Ignite's kernel layout.
    pub fn kernel_import(
        &self,
        source: &str,
        name: Option<&str>,
        default: bool,
    ) -> Result<KernelRecord> {
        let mut q = format!("?source={}&default={default}", enc(source));
        if let Some(n) = name {
            q.push_str(&format!("&name={}", enc(n)));
        }
        self.post(&format!("/v1/kernels/import{q}"))
    }

    /// The daemon's events matching `filter`, as they happen (with
    /// `since`, the kept past ones first; with `until`, ending then).
    pub fn events(&self, filter: &ignis_api::EventFilter) -> Result<Events> {
        let mut q = Vec::new();
        for (key, values) in [
            ("type", &filter.kinds),
            ("object", &filter.objects),
            ("name", &filter.names),
        ] {
            if !values.is_empty() {
                q.push(format!("{key}={}", enc(&values.join(","))));
            }
        }
        if let Some(t) = filter.since {
            q.push(format!("since={t}"));
        }
        if let Some(t) = filter.until {
            q.push(format!("until={t}"));
        }
        let path = if q.is_empty() {
            "/events".to_string()
        } else {
            format!("/events?{}", q.join("&"))
        };
        Ok(Events {
            lines: std::io::BufReader::new(self.stream("GET", &path)?),
        })
    }

    /// Removes a kernel; its ID.
    pub fn kernel_remove(&self, k: &str, force: bool) -> Result<String> {
        #[derive(Deserialize)]
        struct Removed {
            id: String,
        }
        let r: Removed = self.delete(&format!("/v1/kernels/{}?force={force}", enc(k)))?;
        Ok(r.id)
    }
}

/// The event stream of [`Client::events`]: an iterator that blocks for
/// the next event and ends with the stream.
///
/// Server-sent events are parsed here by hand: the daemon sends one
/// `data:` line of JSON per event, and the SSE crates are async (this
/// client is blocking).
pub struct Events {
    lines: std::io::BufReader<Box<dyn Read + Send>>,
}

impl Iterator for Events {
    type Item = Result<ignis_api::Event>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        let mut data = String::new();
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(Error::Protocol(format!("the event stream: {e}")))),
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if line.is_empty() && !data.is_empty() {
                return Some(serde_json::from_str(&data).map_err(|e| {
                    Error::Protocol(format!("an event that is not JSON ({e}): {data}"))
                }));
            }
            // Comments (keep-alives), `event:` and `id:` lines: skipped.
        }
    }
}

/// Where a pull or import hands its progress.
pub type OnProgress<'a> = dyn FnMut(&ignis_api::ProgressEvent) + 'a;

/// A kernel to import: a file on this machine (uploaded) or a source the
/// daemon fetches (`apt:PACKAGE`, an OCI image).
#[derive(Debug, Clone, Copy)]
pub enum KernelSourceArg<'a> {
    File(&'a Path),
    Fetched(&'a str),
}

fn accept() -> [(&'static str, String); 1] {
    [("Accept", ignis_api::NDJSON.to_string())]
}

/// Reads a progress stream: each bar's move to `on`, then the result (or
/// the problem, as an error).
fn progress<T: DeserializeOwned>(body: Box<dyn Read + Send>, on: &mut OnProgress<'_>) -> Result<T> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(body);
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines
            .read_line(&mut line)
            .map_err(|e| Error::protocol(format!("the progress stream: {e}")))?;
        if n == 0 {
            return Err(Error::protocol(
                "the progress stream ended before the result (the daemon went away?)",
            ));
        }
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ignis_api::ProgressLine<T>>(&line) {
            Ok(ignis_api::ProgressLine::Event(e)) => on(&e),
            Ok(ignis_api::ProgressLine::End(ignis_api::ProgressEnd::Result(v))) => return Ok(v),
            Ok(ignis_api::ProgressLine::End(ignis_api::ProgressEnd::Problem(p))) => {
                let status = p["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(500);
                return Err(problem(status, p.to_string().as_bytes()));
            }
            Err(e) => {
                return Err(Error::protocol(format!(
                    "a progress line the API does not document ({e}): {}",
                    line.trim()
                )))
            }
        }
    }
}

/// A 2xx body, or the problem as an error.
fn check(status: u16, body: Vec<u8>) -> Result<Vec<u8>> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(problem(status, &body))
}

fn problem(status: u16, body: &[u8]) -> Error {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let s = |k: &str| v[k].as_str().map(str::to_string);
    Error::Api {
        status,
        title: s("title").unwrap_or_default(),
        detail: s("detail").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        field: s("field"),
        code: s("code"),
    }
}

fn json<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b)
        .map_err(|e| Error::protocol(format!("a reply the API does not document: {e}")))
}
