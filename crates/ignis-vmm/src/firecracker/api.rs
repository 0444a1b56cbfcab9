//! Firecracker's REST API over its unix socket, with hyper.
//!
//! Firecracker answers 204 No Content without a Content-Length and reports
//! errors as `{"fault_message": "..."}`; both are handled here.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::Value;

use crate::VmmError;

/// The most bytes of a response body read (Firecracker's are tiny).
const MAX_BODY: usize = 1 << 20;

pub struct ApiClient {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl ApiClient {
    pub fn new(socket: &Path) -> Result<Self, VmmError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            socket: socket.to_path_buf(),
            rt,
        })
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Option<Value>, VmmError> {
        self.request("PUT", path, Some(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Option<Value>, VmmError> {
        self.request("PATCH", path, Some(body))
    }

    pub fn get(&self, path: &str) -> Result<Option<Value>, VmmError> {
        self.request("GET", path, None)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, VmmError> {
        self.rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| VmmError::Connect {
                    path: self.socket.display().to_string(),
                    source,
                })?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| VmmError::Http {
                        method: method.to_string(),
                        path: path.to_string(),
                        source: e.into(),
                    })?;
            let conn = tokio::spawn(conn);
            let bytes = body
                .map(|b| serde_json::to_vec(b).expect("json"))
                .unwrap_or_default();
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header("Host", "localhost")
                .header("Accept", "application/json");
            if body.is_some() {
                req = req.header("Content-Type", "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(bytes)))
                .expect("valid request");
            let resp = sender.send_request(req).await.map_err(|e| VmmError::Http {
                method: method.to_string(),
                path: path.to_string(),
                source: e.into(),
            })?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|source| VmmError::Http {
                    method: method.to_string(),
                    path: path.to_string(),
                    source,
                })?
                .to_bytes();
            conn.abort();
            let json: Option<Value> = if body.is_empty() {
                None
            } else {
                serde_json::from_slice(&body).ok()
            };
            if (200..300).contains(&status) {
                return Ok(json);
            }
            let message = json
                .as_ref()
                .and_then(|j| j.get("fault_message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            Err(VmmError::Api {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener;

    /// A fake Firecracker API: one scripted raw response per connection;
    /// returns the requests it saw (request line + body).
    fn fake_api(
        path: &Path,
        responses: Vec<String>,
    ) -> std::thread::JoinHandle<Vec<(String, String)>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for resp in responses {
                let (s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut request_line = String::new();
                r.read_line(&mut request_line).unwrap();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                seen.push((
                    request_line.trim().to_string(),
                    String::from_utf8(body).unwrap(),
                ));
                let mut w = s;
                w.write_all(resp.as_bytes()).unwrap();
            }
            seen
        })
    }

    fn json_response(status: &str, body: &str) -> String {
        format!("HTTP/1.1 {status} \r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }

    #[test]
    fn no_content_without_length_and_json_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fc.sock");
        let server = fake_api(
            &sock,
            vec![
                // Firecracker's 204: no Content-Length header at all.
                "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
                    .to_string(),
                json_response("200", r#"{"id":"vm","state":"Running"}"#),
            ],
        );
        let c = ApiClient::new(&sock).unwrap();
        assert_eq!(
            c.put(
                "/machine-config",
                &json!({"vcpu_count": 2, "mem_size_mib": 256})
            )
            .unwrap(),
            None
        );
        let info = c.get("/").unwrap().unwrap();
        assert_eq!(info["state"], "Running");
        let seen = server.join().unwrap();
        assert_eq!(seen[0].0, "PUT /machine-config HTTP/1.1");
        assert_eq!(seen[0].1, r#"{"mem_size_mib":256,"vcpu_count":2}"#);
        assert_eq!(seen[1].0, "GET / HTTP/1.1");
    }

    #[test]
    fn fault_message_becomes_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fc.sock");
        let server = fake_api(
            &sock,
            vec![json_response(
                "400",
                r#"{"fault_message":"Invalid kernel path: No such file or dir."}"#,
            )],
        );
        let c = ApiClient::new(&sock).unwrap();
        let err = c
            .put("/boot-source", &json!({"kernel_image_path": "/nope"}))
            .unwrap_err();
        match &err {
            VmmError::Api {
                status,
                message,
                path,
                ..
            } => {
                assert_eq!(*status, 400);
                assert_eq!(path, "/boot-source");
                assert_eq!(message, "Invalid kernel path: No such file or dir.");
            }
            other => panic!("unexpected {other}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn control_pause_snapshot_resume_and_ctrl_alt_del_calls() {
        use crate::Control;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("firecracker.sock");
        let no_content = || "HTTP/1.1 204 \r\n\r\n".to_string();
        let server = fake_api(
            &sock,
            vec![no_content(), no_content(), no_content(), no_content()],
        );
        let c = crate::firecracker::FirecrackerControl::new(dir.path());
        // snapshot = pause + create; the VM stays paused until resume.
        let files = c.snapshot(Path::new("/snap")).unwrap();
        assert_eq!(files.memory, Path::new("/snap/memory"));
        c.resume().unwrap();
        c.shutdown().unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0],
            (
                "PATCH /vm HTTP/1.1".to_string(),
                r#"{"state":"Paused"}"#.to_string()
            )
        );
        assert_eq!(seen[1].0, "PUT /snapshot/create HTTP/1.1");
        let body: serde_json::Value = serde_json::from_str(&seen[1].1).unwrap();
        assert_eq!(body["snapshot_type"], "Full");
        assert_eq!(body["mem_file_path"], "/snap/memory");
        assert_eq!(seen[2].1, r#"{"state":"Resumed"}"#);
        assert_eq!(seen[3].1, r#"{"action_type":"SendCtrlAltDel"}"#);
    }

    #[test]
    fn missing_socket_is_a_connect_error() {
        let c = ApiClient::new(Path::new("/nonexistent/fc.sock")).unwrap();
        assert!(matches!(c.get("/"), Err(VmmError::Connect { .. })));
    }
}
