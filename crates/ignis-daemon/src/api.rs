//! The REST API (axum). The HTTP layer only parses and maps: every
//! operation is one call of the service layer, run on a blocking thread.
//! Errors are RFC 9457 problem details.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use ignis_core::{Error, ErrorKind};

use crate::service::Service;
use serde::Deserialize;

use crate::Shared;

/// The API description, kept in the repository (`api/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../api/openapi.json");
/// Largest request body (manifests).
const MAX_BODY: usize = 1 << 20;

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    /// The input field (API name) the problem is about.
    field: Option<&'static str>,
    /// The error's kind, machine-readable (`not-found`, `ambiguous`,
    /// `conflict`, `invalid`, `unavailable`, `internal`): two kinds share
    /// 409, and a client's exit code tells them apart.
    code: Option<&'static str>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            field: None,
            code: None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.title,
            self.detail
        )
    }
}

impl std::error::Error for Problem {}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        let (status, title) = match e.kind {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            ErrorKind::Ambiguous => (StatusCode::CONFLICT, "Ambiguous name or ID"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "Conflict"),
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "Invalid request"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable on this host"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        };
        // The field travels on its own (clients name it their way: a
        // flag, a manifest path); the detail is the message alone.
        // The causes follow the message, as the CLI prints them: a client
        // sees why (`pull failed: cannot resolve ...`), not only what.
        let mut detail = e.message.clone();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            detail.push_str(&format!(": {c}"));
            cause = c.source();
        }
        let mut p = Self::new(status, title, detail);
        p.field = e.field.map(|f| f.name());
        p.code = Some(match e.kind {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Ambiguous => "ambiguous",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        });
        p
    }
}

impl Problem {
    /// Its problem+json document.
    pub(crate) fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        if let Some(c) = self.code {
            body["code"] = c.into();
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            self.body().to_string(),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, Problem>;

/// Runs one service-layer call off the async threads, timing it.
pub(crate) async fn call<T: Send + 'static>(
    s: &Arc<Shared>,
    op: &'static str,
    f: impl FnOnce(&dyn Service) -> Result<T, Error> + Send + 'static,
) -> Result<T, Problem> {
    let shared = s.clone();
    let t = Instant::now();
    let r = tokio::task::spawn_blocking(move || f(shared.ignis.as_ref()))
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                e.to_string(),
            )
        })?;
    s.metrics.observe(op, t.elapsed().as_secs_f64(), r.is_ok());
    r.map_err(Problem::from)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
struct StartQuery {
    #[serde(default = "yes")]
    wait: bool,
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct StopQuery {
    /// None: the VM's stop timeout.
    #[serde(default)]
    time: Option<u64>,
}
/// The longest grace period of a stop (`time`): a day.
const MAX_STOP_SECS: u64 = ignis_core::vm::MAX_STOP_TIMEOUT as u64;

#[derive(Deserialize)]
struct SnapshotQuery {
    name: Option<String>,
}

#[derive(Deserialize)]
struct ForkQuery {
    #[serde(default = "one")]
    count: u32,
    prefix: Option<String>,
    #[serde(default)]
    rm: bool,
}

#[derive(Deserialize)]
struct RestoreQuery {
    /// The new VM's name.
    vm: Option<String>,
    #[serde(default)]
    rm: bool,
}
fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// The last N lines.
    #[serde(default)]
    tail: Option<usize>,
    /// Lines written since this Unix time in nanoseconds.
    #[serde(default)]
    since: Option<i64>,
    /// Prefix lines with when they were written.
    #[serde(default)]
    timestamps: bool,
}

impl LogsQuery {
    fn options(&self) -> ignis_core::vm::LogOptions {
        ignis_core::vm::LogOptions {
            tail: self.tail,
            since_ns: self.since,
            timestamps: self.timestamps,
        }
    }
}

#[derive(Deserialize)]
struct RmQuery {
    #[serde(default)]
    force: bool,
    /// `rm -v`: its anonymous volumes too.
    #[serde(default)]
    volumes: bool,
}

pub(crate) type BodyResult = Result<bytes::Bytes, axum::extract::rejection::BytesRejection>;

/// axum's `Query`, with a bad query string answered as problem+json (axum
/// answers plain text) naming what was wrong.
pub struct Q<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Q<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Invalid query", e.body_text()))
    }
}

/// A request body as UTF-8 text; every way it can be unusable (too large,
/// unreadable, not UTF-8) is a problem+json with the right status.
pub(crate) fn text(body: &BodyResult) -> Result<&str, Problem> {
    match body {
        Ok(b) => std::str::from_utf8(b).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "Bad request",
                format!("the body is not UTF-8: {e}"),
            )
        }),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "at most 1 MiB of manifests",
        )),
        Err(r) => Err(Problem::new(r.status(), "Bad request", r.body_text())),
    }
}

pub fn manifests(body: &str) -> Result<Vec<ignis_api::manifest::Manifest>, Problem> {
    if body.len() > MAX_BODY {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "at most 1 MiB of manifests",
        ));
    }
    let ms = ignis_core::manifest::parse(body, "request body").map_err(Problem::from)?;
    if ms.is_empty() {
        // An empty body is a mistake, not "nothing to apply".
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "the body holds no manifest (YAML or JSON, one or more documents)",
        ));
    }
    Ok(ms)
}

pub fn router(shared: Arc<Shared>) -> Router {
    crate::routes::add(Router::new())
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move {
                // The per-VM series are read at the scrape (cgroup and
                // /proc reads, off the async threads).
                let shared = s.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Ok(vms) = shared.ignis.vm_list(true) {
                        shared
                            .metrics
                            .set_vms(&vms, &|v| shared.ignis.vmm_metrics(v));
                    }
                })
                .await;
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
            }),
        )
        .route("/events", get(events))
        .route(
            "/v1/vms",
            get(|State(s): State<Arc<Shared>>, Q(q): Q<ListQuery>| async move {
                ApiResult::Ok(Json(call(&s, "vm_list", move |i| i.vm_list(q.all)).await?))
            }),
        )
        .route(
            "/v1/vms/{name}",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "vm_inspect", move |i| i.vm_inspect(&n)).await?))
            })
            .delete(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<RmQuery>| async move {
                    let id = if q.volumes {
                        call(&s, "vm_remove", move |i| i.vm_remove_with_volumes(&n, q.force)).await?
                    } else {
                        call(&s, "vm_remove", move |i| i.vm_remove(&n, q.force)).await?
                    };
                    ApiResult::Ok(Json(serde_json::json!({ "id": id })))
                },
            ),
        )
        .route(
            "/v1/vms/{name}/start",
            post(|State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<StartQuery>| async move {
                ApiResult::Ok(Json(call(&s, "vm_start", move |i| i.vm_start(&n, q.wait)).await?))
            }),
        )
        .route(
            "/v1/vms/{name}/stop",
            post(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<StopQuery>| async move {
                    if q.time.is_some_and(|t| t > MAX_STOP_SECS) {
                        return Err(Problem::new(
                            StatusCode::BAD_REQUEST,
                            "Invalid query",
                            format!("time: at most {MAX_STOP_SECS} seconds (a day)"),
                        ));
                    }
                    ApiResult::Ok(Json(
                        call(&s, "vm_stop", move |i| i.vm_stop(&n, q.time.map(std::time::Duration::from_secs))).await?,
                    ))
                },
            ),
        )
        .route(
            "/v1/vms/{name}/stats",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "vm_stats", move |i| i.vm_stats(&n)).await?))
            }),
        )
        .route(
            "/v1/vms/{name}/kill",
            post(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "vm_kill", move |i| i.vm_kill(&n)).await?))
            }),
        )
        .route(
            "/v1/vms/{name}/logs",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<LogsQuery>| async move {
                let opts = q.options();
                if q.follow {
                    return crate::routes::follow_logs(s, n, opts).await;
                }
                let log = call(&s, "vm_logs", move |i| i.vm_logs(&n, &opts)).await?;
                Ok::<_, Problem>(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response())
            }),
        )
        .route(
            "/v1/vms/{name}/snapshot",
            post(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<SnapshotQuery>| async move {
                    ApiResult::Ok(Json(
                        call(&s, "vm_snapshot", move |i| i.vm_snapshot(&n, q.name.as_deref())).await?,
                    ))
                },
            ),
        )
        .route(
            "/v1/snapshots/{name}/fork",
            post(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<ForkQuery>| async move {
                    let opts = ignis_core::snapshot::ForkOptions {
                        count: q.count,
                        name_prefix: q.prefix,
                        name: None,
                        auto_remove: q.rm,
                    };
                    let (snap, clones) = call(&s, "vm_fork", move |i| i.vm_fork(&n, &opts)).await?;
                    ApiResult::Ok(Json(serde_json::json!({ "snapshot": snap, "clones": clones })))
                },
            ),
        )
        .route(
            "/v1/snapshots/{name}/restore",
            post(
                |State(s): State<Arc<Shared>>, Path(n): Path<String>, Q(q): Q<RestoreQuery>| async move {
                    let opts = ignis_core::snapshot::ForkOptions {
                        count: 1,
                        name_prefix: None,
                        name: q.vm,
                        auto_remove: q.rm,
                    };
                    let (snap, clones) = call(&s, "vm_fork", move |i| i.vm_fork(&n, &opts)).await?;
                    ApiResult::Ok(Json(serde_json::json!({ "snapshot": snap, "clones": clones })))
                },
            ),
        )
        .route(
            "/v1/manifests/vms/{name}",
            get(|State(s): State<Arc<Shared>>, Path(n): Path<String>| async move {
                ApiResult::Ok(Json(call(&s, "vm_manifest", move |i| i.vm_manifest(&n)).await?))
            }),
        )
        .route(
            "/v1/apply",
            post(|State(s): State<Arc<Shared>>, body: BodyResult| async move {
                let ms = manifests(text(&body)?)?;
                ApiResult::Ok(Json(call(&s, "apply", move |i| Ok(i.apply(&ms, "api"))).await?))
            }),
        )
        .route(
            "/v1/delete",
            post(|State(s): State<Arc<Shared>>, body: BodyResult| async move {
                let ms = manifests(text(&body)?)?;
                ApiResult::Ok(Json(call(&s, "delete", move |i| Ok(i.delete_manifests(&ms))).await?))
            }),
        )
        .route(
            "/v1/snapshots",
            get(|State(s): State<Arc<Shared>>| async move {
                ApiResult::Ok(Json(call(&s, "snapshot_list", |i| i.snapshot_list()).await?))
            }),
        )
        .route(
            "/v1/images",
            get(|State(s): State<Arc<Shared>>| async move {
                ApiResult::Ok(Json(call(&s, "image_list", |i| i.image_list()).await?))
            }),
        )
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "Not found", "no such endpoint; see /openapi.json") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// `GET /events` query: Docker's filters, each repeatable as a
/// comma-separated list (`?type=start,stop&name=web`).
#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    name: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
}

/// `GET /events`: server-sent events, one JSON object each; with `since`,
/// the kept past events first; with `until`, the stream ends at that time.
async fn events(
    State(s): State<Arc<Shared>>,
    Q(q): Q<EventsQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let list = |key: &str, v: Option<String>| -> Result<Vec<String>, Problem> {
        let Some(v) = v else { return Ok(Vec::new()) };
        let items: Vec<String> = v.split(',').map(String::from).collect();
        if items.iter().any(String::is_empty) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Invalid query",
                format!("{key}: a comma-separated list of values, none empty"),
            ));
        }
        Ok(items)
    };
    let filter = ignis_api::EventFilter {
        kinds: list("type", q.kind)?,
        objects: list("object", q.object)?,
        names: list("name", q.name)?,
        since: q.since,
        until: q.until,
    };
    let (past, rx) = s.events.subscribe(q.since);
    let live =
        tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|e| async move { e.ok() });
    let until = q.until;
    let stream = futures_util::stream::iter(past)
        .chain(live)
        // Past `until` the stream ends (checked as events come, and by a
        // timer so a quiet stream ends too).
        .take_until(async move {
            if let Some(t) = until {
                let wait = u64::try_from(t.saturating_sub(crate::events::now())).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_secs(wait + 1)).await;
            } else {
                std::future::pending::<()>().await;
            }
        })
        .take_while(move |e| {
            let go = until.is_none_or(|t| e.time <= t);
            async move { go }
        })
        .filter(move |e| {
            let keep = filter.matches(e);
            async move { keep }
        })
        .map(|e| {
            Ok(SseEvent::default()
                .event(e.kind.clone())
                .json_data(&e)
                .unwrap_or_default())
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Refuses TCP clients without the bearer token (compared in constant time).
async fn require_token(
    State(token): State<Arc<String>>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !ok {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a bearer token is required (IGNIS_TOKEN)",
        )
        .into_response();
    }
    next.run(req).await
}

pub async fn serve(
    shared: Arc<Shared>,
    opts: &crate::DaemonOptions,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    socket_gid: Option<u32>,
) -> anyhow::Result<()> {
    let app = router(shared.clone());
    let _ = std::fs::remove_file(&opts.socket);
    if let Some(parent) = opts.socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let unix = tokio::net::UnixListener::bind(&opts.socket)?;
    // Root only, or root and one group.
    if let Some(gid) = socket_gid {
        std::os::unix::fs::chown(&opts.socket, None, Some(gid))?;
    }
    std::fs::set_permissions(
        &opts.socket,
        std::os::unix::fs::PermissionsExt::from_mode(if socket_gid.is_some() {
            0o660
        } else {
            0o600
        }),
    )?;
    tracing::info!(socket = %opts.socket.display(), "API listening");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down; VMs keep running");
    };
    let unix_server = axum::serve(unix, app.clone()).with_graceful_shutdown(shutdown);
    match (&opts.listen, &opts.token) {
        (Some(addr), Some(token)) => {
            let tcp = tokio::net::TcpListener::bind(addr).await?;
            let guarded = app.layer(axum::middleware::from_fn_with_state(
                Arc::new(token.clone()),
                require_token,
            ));
            match tls {
                Some(cfg) => {
                    tracing::info!(%addr, "API listening on TCP with TLS (token required)");
                    let tcp_server = axum::serve(crate::tls::TlsListener::new(tcp, cfg), guarded);
                    tokio::select! {
                        r = unix_server => r?,
                        r = tcp_server => r?,
                    }
                }
                None => {
                    tracing::info!(%addr, "API listening on TCP (token required)");
                    let tcp_server = axum::serve(tcp, guarded);
                    tokio::select! {
                        r = unix_server => r?,
                        r = tcp_server => r?,
                    }
                }
            }
        }
        _ => unix_server.await?,
    }
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}
