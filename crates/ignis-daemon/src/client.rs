//! A small client of the daemon's API for the CLI (`--host` /
//! `IGNIS_HOST`): `unix:///run/ignis.sock` or `tcp://127.0.0.1:7070` (with
//! `IGNIS_TOKEN`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

const MAX_BODY: usize = 64 << 20;

pub struct Client {
    host: String,
    token: Option<String>,
    rt: tokio::runtime::Runtime,
}

/// A response: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The problem detail of an error reply.
    pub fn problem(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

impl Client {
    pub fn new(host: &str, token: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            host: host.to_string(),
            token,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> anyhow::Result<Reply> {
        self.rt.block_on(async {
            let io: Box<dyn IoStream> = if let Some(p) = self.host.strip_prefix("unix://") {
                Box::new(tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    anyhow::anyhow!("cannot reach the daemon at {}: {e}", self.host)
                })?)
            } else if self.host.starts_with('/') {
                Box::new(
                    tokio::net::UnixStream::connect(&self.host)
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!("cannot reach the daemon at {}: {e}", self.host)
                        })?,
                )
            } else if let Some(addr) = self.host.strip_prefix("https://") {
                let addr = addr.trim_end_matches('/');
                let ca = std::env::var_os("IGNIS_TLS_CA").ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} is TLS: set IGNIS_TLS_CA to the daemon's certificate or its CA (PEM)",
                        self.host
                    )
                })?;
                let connector = crate::tls::connector(std::path::Path::new(&ca))?;
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot reach the daemon at {}: {e}", self.host)
                })?;
                Box::new(
                    connector
                        .connect(crate::tls::server_name(addr)?, tcp)
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!("TLS with the daemon at {} failed: {e}", self.host)
                        })?,
                )
            } else {
                let addr = self
                    .host
                    .trim_start_matches("tcp://")
                    .trim_start_matches("http://");
                Box::new(tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot reach the daemon at {}: {e}", self.host)
                })?)
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
            let conn = tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("Host", "ignis");
            if let Some(t) = &self.token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let bytes = match body {
                Some((b, ct)) => {
                    req = req.header("Content-Type", ct);
                    b
                }
                None => Vec::new(),
            };
            let resp = sender
                .send_request(req.body(Full::new(Bytes::from(bytes)))?)
                .await?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the reply: {e}"))?
                .to_bytes()
                .to_vec();
            conn.abort();
            Ok(Reply { status, body })
        })
    }
}

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}
