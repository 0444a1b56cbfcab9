//! The rest of the CLI's verbs over HTTP: create/run, pause, the streams
//! (logs -f as a chunked body; attach and the agent as HTTP upgrades to a
//! raw byte stream; exec to completion), images, kernels, snapshots,
//! networks and the system. Each handler is one service call, as in
//! `api.rs`; uploads (image, kernel, snapshot archives) are streamed to a
//! file next to the state first, downloads streamed from one.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::api::{call, text, ApiResult, BodyResult, Problem, Q};
use crate::Shared;

type R = Router<Arc<Shared>>;

fn f() -> bool {
    false
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    #[serde(default = "f")]
    start: bool,
    #[serde(default = "f")]
    wait: bool,
    #[serde(default = "f")]
    rm: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceQuery {
    #[serde(default = "f")]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefQuery {
    reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameQuery {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelQuery {
    source: Option<String>,
    name: Option<String>,
    #[serde(default = "f")]
    default: bool,
}

/// `POST /v1/system/prune/volumes`: `all` also removes named volumes no
/// VM mounts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumePruneQuery {
    #[serde(default)]
    all: bool,
}

/// `POST /v1/volumes`: a new volume.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeBody {
    name: Option<String>,
    /// Bytes.
    #[serde(deserialize_with = "whole_number")]
    size: u64,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// A JSON integer, also written as a number with a zero fraction
/// (`16777216.0`, as some JSON encoders write large numbers): JSON has one
/// number type, and JSON Schema's `integer` accepts both.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole and in range
        Some(f) if f.fract() == 0.0 && (0.0..1.8e19).contains(&f) => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!(
            "{n}: want a whole number of bytes, 0 or more"
        ))),
    }
}

/// `POST /v1/vms/{vm}/exec`: the command and its environment.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBody {
    cmd: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
}

pub fn add(r: R) -> R {
    r.route("/v1/vms", post(create))
        .route("/v1/vms/{name}/pause", post(pause))
        .route("/v1/vms/{name}/unpause", post(unpause))
        .route("/v1/vms/{name}/attach", get(attach))
        .route("/v1/vms/{name}/agent", get(agent))
        .route("/v1/vms/{name}/ssh", get(ssh_access))
        .route("/v1/vms/{name}/ssh/connect", get(ssh_connect))
        .route("/v1/vms/{name}/boot-plan", get(boot_plan))
        .route("/v1/vms/{name}/exec", post(exec))
        .route(
            "/v1/snapshots/{name}",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "snapshot_inspect", move |i| i.snapshot_inspect(&n)).await?))
            })
            .delete(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "snapshot_remove", move |i| i.snapshot_remove(&n)).await?))
            }),
        )
        .route(
            "/v1/snapshot-tree",
            get(|State(s): State<Arc<Shared>>| async move {
                ApiResult::Ok(Json(call(&s, "snapshot_tree", |i| i.snapshot_tree()).await?))
            }),
        )
        .route("/v1/snapshots/{name}/export", get(snapshot_export))
        .route("/v1/snapshots/import", post(snapshot_import))
        .route(
            "/v1/snapshots/{name}/push",
            post(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<RefQuery>| async move {
                    let digest =
                        call(&s, "snapshot_push", move |i| i.snapshot_push(&n, &q.reference)).await?;
                    ApiResult::Ok(Json(serde_json::json!({ "digest": digest })))
                },
            ),
        )
        .route(
            "/v1/snapshots/pull",
            post(
                |State(s): State<Arc<Shared>>, headers: axum::http::HeaderMap, Q(q): Q<RefQuery>| async move {
                    with_progress(&s, "snapshot_pull", &headers, (), move |i| {
                        i.snapshot_pull(&q.reference)
                    })
                    .await
                },
            ),
        )
        .route(
            "/v1/images/{name}",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "image_inspect", move |i| i.image_inspect(&n)).await?))
            })
            .delete(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<ForceQuery>| async move {
                    ApiResult::Ok(Json(
                        call(&s, "image_remove", move |i| i.image_remove(&n, q.force)).await?,
                    ))
                },
            ),
        )
        .route(
            "/v1/images/pull",
            post(
                |State(s): State<Arc<Shared>>, headers: axum::http::HeaderMap, Q(q): Q<RefQuery>| async move {
                    with_progress(&s, "image_pull", &headers, (), move |i| {
                        i.image_pull(&q.reference)
                    })
                    .await
                },
            ),
        )
        .route("/v1/images/import", post(image_import))
        .route(
            "/v1/kernels",
            get(|State(s): State<Arc<Shared>>| async move {
                ApiResult::Ok(Json(call(&s, "kernel_list", |i| i.kernel_list()).await?))
            }),
        )
        .route(
            "/v1/kernels/{name}",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "kernel_inspect", move |i| i.kernel_inspect(&n)).await?))
            })
            .delete(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<ForceQuery>| async move {
                    let id = call(&s, "kernel_remove", move |i| i.kernel_remove(&n, q.force)).await?;
                    ApiResult::Ok(Json(serde_json::json!({ "id": id })))
                },
            ),
        )
        .route("/v1/kernels/import", post(kernel_import))
        .route(
            "/v1/networks",
            get(|State(s): State<Arc<Shared>>| async move {
                let n = call(&s, "network_inspect", |i| i.network_inspect()).await?;
                ApiResult::Ok(Json(vec![n]))
            }),
        )
        .route(
            "/v1/networks/{name}",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                if n != "bridge" {
                    return Err(Problem::new(
                        StatusCode::NOT_FOUND,
                        "Not found",
                        format!("no network '{n}' (the networks are bridge and none)"),
                    ));
                }
                ApiResult::Ok(Json(call(&s, "network_inspect", |i| i.network_inspect()).await?))
            }),
        )
        .route(
            "/v1/volumes",
            get(|State(s): State<Arc<Shared>>| async move {
                ApiResult::Ok(Json(call(&s, "volume_list", |i| i.volume_list()).await?))
            })
            .post(|State(s): State<Arc<Shared>>, body: BodyResult| async move {
                let body = body.map_err(|e| bad(e.to_string()))?;
                let v: VolumeBody = serde_json::from_slice(&body)
                    .map_err(|e| bad(format!("the body is not a volume: {e}")))?;
                let rec = call(&s, "volume_create", move |i| {
                    i.volume_create(v.name.as_deref(), v.size, v.labels)
                })
                .await?;
                Ok::<_, Problem>((StatusCode::CREATED, Json(rec)))
            }),
        )
        .route(
            "/v1/volumes/{name}",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "volume_inspect", move |i| i.volume_inspect(&n)).await?))
            })
            .delete(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "volume_remove", move |i| i.volume_remove(&n)).await?))
            }),
        )
        .route(
            "/v1/info",
            get(|State(s): State<Arc<Shared>>| async move {
                ApiResult::Ok(Json(call(&s, "info", |i| i.info()).await?))
            }),
        )
        .route(
            "/v1/version",
            get(|| async {
                Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "api": "v1" }))
            }),
        )
        .route(
            "/v1/system/check",
            get(|State(s): State<Arc<Shared>>| async move {
                ApiResult::Ok(Json(call(&s, "system_check", |i| i.system_check()).await?))
            }),
        )
        .route(
            "/v1/system/prune/volumes",
            post(|State(s): State<Arc<Shared>>, Q(q): Q<VolumePruneQuery>| async move {
                ApiResult::Ok(Json(call(&s, "volume_prune", move |i| i.volume_prune(q.all)).await?))
            }),
        )
        .route(
            "/v1/system/prune",
            post(|State(s): State<Arc<Shared>>| async move {
                let (report, images) = call(&s, "system_prune", |i| i.system_prune()).await?;
                ApiResult::Ok(Json(serde_json::json!({ "imagesDeleted": images, "report": report })))
            }),
        )
}

/// `POST /v1/vms`: one VM manifest (JSON or YAML); `?start=true` runs it.
async fn create(
    State(s): State<Arc<Shared>>,
    Q(q): Q<CreateQuery>,
    body: BodyResult,
) -> Result<Response, Problem> {
    // Only the shape is checked here: the settings are validated by the
    // service, whose errors name the field (`memory`) as flags name it.
    let m: ignis_api::manifest::VmManifest = serde_yaml::from_str(text(&body)?)
        .map_err(|e| bad(format!("the body is not a VM manifest (JSON or YAML): {e}")))?;
    if m.kind != "VM" || m.api_version != ignis_api::manifest::API_VERSION {
        return Err(bad(format!(
            "want apiVersion {} and kind VM, got {} {} (Ignite manifests go to /v1/apply)",
            ignis_api::manifest::API_VERSION,
            m.api_version,
            m.kind
        )));
    }
    let rm = q.rm;
    let mut vm = call(&s, "vm_create", move |i| i.vm_create(&m, rm)).await?;
    if q.start {
        let id = vm.id.clone();
        let wait = q.wait;
        vm = call(&s, "vm_start", move |i| i.vm_start(&id, wait)).await?;
    }
    Ok((StatusCode::CREATED, Json(vm)).into_response())
}

async fn pause(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
) -> ApiResult<ignis_api::VmRecord> {
    Ok(Json(
        call(&s, "vm_pause", move |i| i.vm_pause(&n, true)).await?,
    ))
}

async fn unpause(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
) -> ApiResult<ignis_api::VmRecord> {
    Ok(Json(
        call(&s, "vm_unpause", move |i| i.vm_pause(&n, false)).await?,
    ))
}

/// `GET /v1/vms/{vm}/logs?follow=true`: the log as a chunked body that
/// ends when the VM stops (or the client goes away).
pub(crate) async fn follow_logs(
    s: Arc<Shared>,
    n: String,
    opts: ignis_core::vm::LogOptions,
) -> Result<Response, Problem> {
    // A VM that does not exist is a 404 before any byte streams.
    let q = n.clone();
    call(&s, "vm_inspect", move |i| i.vm_inspect(&q)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let shared = s.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter(tx);
        if let Err(e) = shared.ignis.vm_follow_logs(&n, &opts, &mut w) {
            let _ = w.0.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Whether the client asked for a progress stream (`Accept:
/// application/x-ndjson`).
fn wants_progress(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(ignis_api::NDJSON))
}

/// Runs a pull or import: its JSON result, or with `Accept:
/// application/x-ndjson` a stream of its progress (a line per bar move,
/// then `{"result": ...}` or `{"problem": ...}`). `keep` lives until the
/// operation ends (an uploaded file).
async fn with_progress<T, K>(
    s: &Arc<Shared>,
    op: &'static str,
    headers: &axum::http::HeaderMap,
    keep: K,
    f: impl FnOnce(&dyn crate::service::Service) -> Result<T, ignis_core::Error> + Send + 'static,
) -> Result<Response, Problem>
where
    T: serde::Serialize + Send + 'static,
    K: Send + 'static,
{
    if !wants_progress(headers) {
        let r = call(s, op, f).await;
        drop(keep);
        return Ok(Json(r?).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<bytes::Bytes, std::io::Error>>();
    let line = |v: &dyn erased::Line| -> bytes::Bytes {
        let mut b = v.json();
        b.push(b'\n');
        b.into()
    };
    let shared = s.clone();
    tokio::task::spawn_blocking(move || {
        let events = tx.clone();
        let progress = ignis_core::Progress::reporting(Box::new(move |e| {
            let _ = events.send(Ok(line(e)));
        }));
        let t = std::time::Instant::now();
        let r = ignis_core::with_progress(&progress, || f(shared.ignis.as_ref()));
        progress.flush();
        drop(keep);
        shared
            .metrics
            .observe(op, t.elapsed().as_secs_f64(), r.is_ok());
        let end = match r {
            Ok(v) => ignis_api::ProgressEnd::Result(v),
            Err(e) => ignis_api::ProgressEnd::Problem(Problem::from(e).body()),
        };
        let _ = tx.send(Ok(line(&end)));
    });
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    Ok((
        [(header::CONTENT_TYPE, ignis_api::NDJSON)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// One JSON line of a progress stream, whatever it carries.
mod erased {
    pub trait Line {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Line for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// A blocking writer feeding a response body.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(b)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Answers an upgrade request with 101 and joins the upgraded connection to
/// the unix socket `sock` (connected first, so a VM that is not running is
/// a problem reply, not a dead stream).
async fn bridge(
    sock: PathBuf,
    protocol: &'static str,
    req: axum::extract::Request,
) -> Result<Response, Problem> {
    let on_upgrade = upgrade_of(protocol, req)?;
    let unix = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable on this host",
            format!("cannot reach {}: {e}", sock.display()),
        )
    })?;
    Ok(splice(on_upgrade, unix, protocol))
}

/// The pending upgrade of a request that asks for `protocol`.
fn upgrade_of(
    protocol: &'static str,
    mut req: axum::extract::Request,
) -> Result<hyper::upgrade::OnUpgrade, Problem> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(protocol));
    if !wants {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Upgrade required",
            format!(
                "this endpoint is a stream: send `Connection: Upgrade` and `Upgrade: {protocol}`"
            ),
        ));
    }
    req.extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| bad("this connection cannot be upgraded"))
}

/// The 101 answer; once the client has it, its connection and `peer`
/// are joined both ways until either side closes.
fn splice<S>(on_upgrade: hyper::upgrade::OnUpgrade, mut peer: S, protocol: &'static str) -> Response
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut io, &mut peer).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .body(Body::empty())
        .expect("static response")
}

/// `GET /v1/vms/{vm}/ssh`: what `ignis ssh` needs from another machine:
/// the VM's address, its host keys read through the agent (to pin), and
/// its generated private key. Served to API clients only (the socket's
/// permissions, the token, TLS): whoever may exec in the VM may log in.
async fn ssh_access(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
) -> ApiResult<ignis_api::SshAccess> {
    Ok(Json(
        call(&s, "vm_ssh", move |i| i.vm_ssh_access(&n)).await?,
    ))
}

/// `GET /v1/vms/{vm}/ssh/connect` (upgrade `ignis-ssh`): a TCP connection
/// from the daemon to the VM's sshd (on the daemon's bridge), for `ssh`'s
/// `ProxyCommand` on a machine that cannot reach the VM.
async fn ssh_connect(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, Problem> {
    let addr = call(&s, "vm_ssh_connect", move |i| i.vm_ssh_address(&n)).await?;
    let on_upgrade = upgrade_of("ignis-ssh", req)?;
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    .and_then(|r| r)
    .map_err(|e| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable on this host",
            format!("cannot connect to the VM's sshd at {addr}: {e}"),
        )
    })?;
    Ok(splice(on_upgrade, tcp, "ignis-ssh"))
}

/// `GET /v1/vms/{vm}/boot-plan`: how the VM would be booted by hand.
async fn boot_plan(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
) -> ApiResult<ignis_core::vm::BootPlan> {
    Ok(Json(
        call(&s, "vm_boot_plan", move |i| i.vm_boot_plan(&n)).await?,
    ))
}

/// `GET /v1/vms/{vm}/attach` (upgrade `ignis-console`): the serial console.
async fn attach(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, Problem> {
    let sock = call(&s, "vm_attach", move |i| i.vm_console_socket(&n)).await?;
    bridge(sock, "ignis-console", req).await
}

/// `GET /v1/vms/{vm}/agent` (upgrade `ignis-agent`): the guest agent's
/// protocol (exec with a TTY, signals, resizes; cp as tar).
async fn agent(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, Problem> {
    let sock = call(&s, "vm_agent", move |i| i.vm_agent_socket(&n)).await?;
    bridge(sock, "ignis-agent", req).await
}

/// `POST /v1/vms/{vm}/exec`: runs a command to completion (no stdin, no
/// TTY); its exit code and output (16 MiB per stream at most).
async fn exec(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
    body: BodyResult,
) -> ApiResult<ignis_api::ExecOutput> {
    let b: ExecBody = serde_json::from_str(text(&body)?)
        .map_err(|e| bad(format!("the body is not an exec request: {e}")))?;
    if b.cmd.is_empty() {
        return Err(bad("cmd: give the command to run"));
    }
    let req = ignis_agent_proto::ExecRequest {
        argv: b.cmd,
        env: b.env,
        workdir: b.workdir,
        user: b.user,
        tty: false,
        rows: 0,
        cols: 0,
        stdin: false,
    };
    Ok(Json(
        call(&s, "vm_exec", move |i| i.vm_exec(&n, req)).await?,
    ))
}

/// A file in the service's upload directory, removed when dropped.
struct Upload(PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn upload_path(s: &Shared, what: &str) -> Result<Upload, Problem> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = s.ignis.upload_dir();
    std::fs::create_dir_all(&dir).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    Ok(Upload(dir.join(format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))))
}

/// Streams a request body into `path`.
async fn receive(body: Body, path: &FsPath) -> Result<u64, Problem> {
    let internal = |e: std::io::Error| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            format!("cannot store the upload: {e}"),
        )
    };
    let mut f = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut n = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad(format!("reading the body: {e}")))?;
        n += chunk.len() as u64;
        f.write_all(&chunk).await.map_err(internal)?;
    }
    f.flush().await.map_err(internal)?;
    if n == 0 {
        return Err(bad(
            "the body is empty: send the archive as the request body",
        ));
    }
    Ok(n)
}

/// `POST /v1/images/import[?name=N]`: a docker-save or OCI-layout tar as
/// the body.
async fn image_import(
    State(s): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    Q(q): Q<NameQuery>,
    body: Body,
) -> Result<Response, Problem> {
    let up = upload_path(&s, "image-import")?;
    receive(body, &up.0).await?;
    let path = up.0.clone();
    with_progress(&s, "image_import", &headers, up, move |i| {
        i.image_import(&path, q.name.as_deref())
    })
    .await
}

/// `POST /v1/kernels/import`: `?source=apt:PKG` (or an OCI image) fetched
/// by the daemon, or a kernel file (vmlinux, bzImage, .deb) as the body.
async fn kernel_import(
    State(s): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    Q(q): Q<KernelQuery>,
    body: Body,
) -> Result<Response, Problem> {
    if let Some(source) = q.source {
        if FsPath::new(&source).is_absolute() || source.starts_with('.') {
            return Err(bad(
                "source: a path names a file on the daemon's host; upload the file as the body instead",
            ));
        }
        return with_progress(&s, "kernel_import", &headers, (), move |i| {
            i.kernel_import(&source, q.name.as_deref(), q.default)
        })
        .await;
    }
    let up = upload_path(&s, "kernel-import")?;
    receive(body, &up.0).await?;
    let path = up.0.display().to_string();
    with_progress(&s, "kernel_import", &headers, up, move |i| {
        i.kernel_import(&path, q.name.as_deref(), q.default)
    })
    .await
}

/// `POST /v1/snapshots/import`: a file written by `snapshot export` as the
/// body.
async fn snapshot_import(
    State(s): State<Arc<Shared>>,
    body: Body,
) -> ApiResult<ignis_api::SnapshotRecord> {
    let up = upload_path(&s, "snapshot-import")?;
    receive(body, &up.0).await?;
    let path = up.0.clone();
    let r = call(&s, "snapshot_import", move |i| i.snapshot_import(&path)).await;
    drop(up);
    Ok(Json(r?))
}

/// `GET /v1/snapshots/{name}/export`: the snapshot as one file (zstd tar).
async fn snapshot_export(
    State(s): State<Arc<Shared>>,
    Path(n): Path<String>,
) -> Result<Response, Problem> {
    let up = upload_path(&s, "snapshot-export")?;
    let path = up.0.clone();
    call(&s, "snapshot_export", move |i| i.snapshot_export(&n, &path)).await?;
    let file = tokio::fs::File::open(&up.0).await.map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            format!("cannot read the export: {e}"),
        )
    })?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    // Unlinked now; the open file streams to the end.
    drop(up);
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}
