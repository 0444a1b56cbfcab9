//! One HTTP/1.1 connection per call, over a unix socket, TCP or TLS; the
//! blocking faces of streamed bodies and upgraded connections.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use crate::{problem, Error, Result};

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

enum Addr {
    Unix(std::path::PathBuf),
    Tcp(String),
    Tls(String, tokio_rustls::TlsConnector),
}

pub(crate) struct Transport {
    host: String,
    addr: Addr,
    token: Option<String>,
    rt: Arc<tokio::runtime::Runtime>,
}

/// A two-way byte stream (an upgraded connection): the two halves work
/// from two threads at once.
pub struct Stream {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
}

/// Keeps the runtime that drives `inner` alive as long as it is used.
struct Kept<T> {
    inner: T,
    _rt: Arc<tokio::runtime::Runtime>,
}

impl<T: Read> Read for Kept<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<T: Write> Write for Kept<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Transport {
    pub(crate) fn new(host: &str, token: Option<String>, ca: Option<&Path>) -> Result<Self> {
        let addr = if let Some(p) = host.strip_prefix("unix://") {
            Addr::Unix(p.into())
        } else if host.starts_with('/') {
            Addr::Unix(host.into())
        } else if let Some(a) = host.strip_prefix("https://") {
            let ca = ca.ok_or_else(|| {
                Error::protocol(format!(
                    "{host} is TLS: set IGNIS_TLS_CA to the daemon's certificate or its CA (PEM)"
                ))
            })?;
            Addr::Tls(a.trim_end_matches('/').to_string(), connector(ca)?)
        } else if let Some(a) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Addr::Tcp(a.trim_end_matches('/').to_string())
        } else {
            return Err(Error::protocol(format!(
                "--host {host}: use unix:///PATH, tcp://HOST:PORT or https://HOST:PORT"
            )));
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ignis-client")
            .enable_all()
            .build()
            .map_err(|e| Error::protocol(format!("cannot start the client runtime: {e}")))?;
        Ok(Self {
            host: host.to_string(),
            addr,
            token,
            rt: Arc::new(rt),
        })
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    async fn connect(&self) -> Result<Box<dyn IoStream>> {
        let unreachable = |source| Error::Connect {
            host: self.host.clone(),
            source,
        };
        Ok(match &self.addr {
            Addr::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(unreachable)?,
            ),
            Addr::Tcp(a) => Box::new(
                tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(unreachable)?,
            ),
            Addr::Tls(a, connector) => {
                let tcp = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(unreachable)?;
                Box::new(connector.connect(server_name(a)?, tcp).await.map_err(|e| {
                    Error::protocol(format!("TLS with the daemon at {} failed: {e}", self.host))
                })?)
            }
        })
    }

    /// Sends one request; the reply with its body still to read (the
    /// connection is driven on the runtime until the body ends).
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Body,
        headers: &[(&str, String)],
        upgrade: bool,
    ) -> Result<hyper::Response<Incoming>> {
        let io = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(Error::protocol)?;
        if upgrade {
            tokio::spawn(conn.with_upgrades());
        } else {
            tokio::spawn(conn);
        }
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "ignis");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        sender
            .send_request(req.body(body).map_err(Error::protocol)?)
            .await
            .map_err(|e| Error::protocol(format!("the daemon at {}: {e}", self.host)))
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(Bytes, &str)>,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<Incoming>> {
        let mut h = headers.to_vec();
        let body = match body {
            Some((b, ct)) => {
                h.push(("Content-Type", ct.to_string()));
                b
            }
            None => Bytes::new(),
        };
        self.exchange(
            method,
            path,
            Full::new(body).map_err(|e| match e {}).boxed(),
            &h,
            false,
        )
        .await
    }

    async fn failed(resp: hyper::Response<Incoming>) -> Error {
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        problem(status, &body)
    }

    pub(crate) fn stream(&self, method: &str, path: &str) -> Result<Box<dyn Read + Send>> {
        self.stream_with(method, path, &[])
    }

    /// A 2xx reply's body as it comes.
    pub(crate) fn stream_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Box<dyn Read + Send>> {
        let resp = self.block_on(async {
            let resp = self.send(method, path, None, headers).await?;
            if !resp.status().is_success() {
                return Err(Self::failed(resp).await);
            }
            Ok(resp)
        })?;
        Ok(self.reader(resp))
    }

    /// The blocking face of a reply's body.
    fn reader(&self, resp: hyper::Response<Incoming>) -> Box<dyn Read + Send> {
        let data = http_body_util::BodyDataStream::new(resp.into_body())
            .map_err(|e| std::io::Error::other(e.to_string()));
        let reader =
            SyncIoBridge::new_with_handle(StreamReader::new(data), self.rt.handle().clone());
        Box::new(Kept {
            inner: reader,
            _rt: self.rt.clone(),
        })
    }

    pub(crate) fn upload(&self, path: &str, file: &Path) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        self.upload_with(path, file, &[])?
            .take(crate::MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| Error::protocol(format!("reading the reply: {e}")))?;
        if body.len() > crate::MAX_BODY {
            return Err(Error::protocol("the reply is too large"));
        }
        Ok(body)
    }

    /// Sends `file` as the body; a 2xx reply's body as it comes.
    pub(crate) fn upload_with(
        &self,
        path: &str,
        file: &Path,
        headers: &[(&str, String)],
    ) -> Result<Box<dyn Read + Send>> {
        let f = std::fs::File::open(file).map_err(|e| Error::Api {
            status: 404,
            title: "Not found".into(),
            detail: format!("cannot read {}: {e}", file.display()),
            field: None,
            code: Some("not-found".into()),
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let resp = self.block_on(async {
            let stream =
                ReaderStream::new(tokio::fs::File::from_std(f)).map_ok(hyper::body::Frame::data);
            let body = http_body_util::StreamBody::new(stream).boxed();
            let mut h = vec![
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Length", len.to_string()),
            ];
            h.extend(headers.iter().cloned());
            let resp = self.exchange("POST", path, body, &h, false).await?;
            if !resp.status().is_success() {
                return Err(Self::failed(resp).await);
            }
            Ok(resp)
        })?;
        Ok(self.reader(resp))
    }

    pub(crate) fn upgrade(&self, path: &str, protocol: &str) -> Result<Stream> {
        let upgraded = self.block_on(async {
            let resp = self
                .exchange(
                    "GET",
                    path,
                    Full::new(Bytes::new()).map_err(|e| match e {}).boxed(),
                    &[
                        ("Connection", "Upgrade".into()),
                        ("Upgrade", protocol.to_string()),
                    ],
                    true,
                )
                .await?;
            if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
                return Err(Self::failed(resp).await);
            }
            hyper::upgrade::on(resp)
                .await
                .map_err(|e| Error::protocol(format!("upgrading {path}: {e}")))
        })?;
        let (r, w) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let h = self.rt.handle().clone();
        Ok(Stream {
            reader: Box::new(Kept {
                inner: SyncIoBridge::new_with_handle(r, h.clone()),
                _rt: self.rt.clone(),
            }),
            writer: Box::new(Kept {
                inner: SyncIoBridge::new_with_handle(w, h),
                _rt: self.rt.clone(),
            }),
        })
    }
}

/// The client side of TLS: trusts only the certificates in `ca` (PEM).
pub fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector> {
    let bad =
        |e: &dyn std::fmt::Display| Error::protocol(format!("IGNIS_TLS_CA {}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        let c = c.map_err(|e| bad(&e))?;
        roots.add(c).map_err(|e| bad(&e))?;
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// The name the daemon's certificate must carry for `hostport` (an IP or
/// a DNS name, without the port).
pub fn server_name(hostport: &str) -> Result<ServerName<'static>> {
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| Error::protocol(format!("{host} is not a host name or address: {e}")))
}
