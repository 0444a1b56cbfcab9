//! A QMP client (JSON lines over a unix socket): read the greeting,
//! negotiate capabilities, then one command at a time, skipping
//! asynchronous events. Hand-written: QMP is a few JSON lines and the QMP
//! crates pull in a full async stack for it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::VmmError;

/// The longest QMP line accepted (responses are small; this bounds what a
/// misbehaving peer can make us buffer).
const MAX_LINE: usize = 1 << 20;

pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QmpClient {
    pub fn connect(path: &Path) -> Result<Self, VmmError> {
        let stream = UnixStream::connect(path).map_err(|source| VmmError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        let mut c = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = c.read()?;
        if greeting.get("QMP").is_none() {
            return Err(VmmError::QmpGreeting(greeting.to_string()));
        }
        c.execute("qmp_capabilities", None)?;
        Ok(c)
    }

    fn read(&mut self) -> Result<Value, VmmError> {
        let mut line = String::new();
        let n = std::io::Read::take(&mut self.reader, MAX_LINE as u64).read_line(&mut line)?;
        if n == 0 {
            return Err(VmmError::QmpProtocol("connection closed"));
        }
        if !line.ends_with('\n') {
            return Err(VmmError::QmpProtocol("line too long"));
        }
        serde_json::from_str(&line).map_err(VmmError::QmpJson)
    }

    /// Polls `query-migrate` until the migration `command` started ends:
    /// done, or its error. The one migration wait of snapshot and restore.
    pub fn wait_migration(&mut self, command: &str, what: &'static str) -> Result<(), VmmError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let st = self.execute("query-migrate", None)?;
            match st["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    return Err(VmmError::Qmp {
                        command: command.into(),
                        class: "MigrationFailed".into(),
                        desc: st["error-desc"]
                            .as_str()
                            .unwrap_or("no reason given")
                            .to_string(),
                    })
                }
                _ if std::time::Instant::now() > deadline => {
                    return Err(VmmError::Timeout {
                        what,
                        waited: Duration::from_secs(60),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Starts `migrate` (to) or `migrate-incoming` (from) the file `fd`,
    /// passed as a descriptor: a sandboxed QEMU may neither spawn `cat`
    /// nor open host files. With `ignore_shared`, RAM in a shared file is
    /// left out of the stream (the file is the memory).
    pub fn migrate_fd(
        &mut self,
        command: &str,
        fd: std::os::fd::BorrowedFd<'_>,
        ignore_shared: bool,
    ) -> Result<(), VmmError> {
        self.execute(
            "migrate-set-capabilities",
            Some(serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": ignore_shared}]})),
        )?;
        let name = if command == "migrate" {
            "snapshot-out"
        } else {
            "snapshot-in"
        };
        self.send_fd(name, fd)?;
        self.execute(
            command,
            Some(serde_json::json!({ "uri": format!("fd:{name}") })),
        )?;
        Ok(())
    }

    /// Hands QEMU an open file as `name` (QMP `getfd` with the descriptor
    /// attached as SCM_RIGHTS), for `fd:NAME` migration URIs: a QEMU that
    /// dropped its privileges (`-runas`) and may not spawn (`-sandbox`)
    /// still reads and writes snapshot files the host opened for it.
    pub fn send_fd(&mut self, name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), VmmError> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut bytes =
            serde_json::to_vec(&json!({"execute": "getfd", "arguments": {"fdname": name}}))
                .expect("json");
        bytes.push(b'\n');
        let fds = [fd];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        anc.push(SendAncillaryMessage::ScmRights(&fds));
        let sent = sendmsg(
            &self.writer,
            &[std::io::IoSlice::new(&bytes)],
            &mut anc,
            SendFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        if sent < bytes.len() {
            // The descriptor went with the first bytes; send the rest.
            self.writer.write_all(&bytes[sent..])?;
        }
        self.answer("getfd").map(drop)
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, VmmError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(b'\n');
        self.writer.write_all(&bytes)?;
        self.answer(command)
    }

    fn answer(&mut self, command: &str) -> Result<Value, VmmError> {
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(VmmError::Qmp {
                    command: command.to_string(),
                    class: e["class"].as_str().unwrap_or("?").to_string(),
                    desc: e["desc"].as_str().unwrap_or("?").to_string(),
                });
            }
            // An event ({"event": ...}): not our answer.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QMP server: greeting, capabilities, an event before each
    /// answer, and scripted answers.
    fn fake_qmp(path: &Path, answers: Vec<&'static str>) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            seen.push(line.trim().to_string());
            w.write_all(b"{\"return\": {}}\n").unwrap();
            for a in answers {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(line.trim().to_string());
                w.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\n")
                    .unwrap();
                w.write_all(a.as_bytes()).unwrap();
                w.write_all(b"\n").unwrap();
            }
            seen
        })
    }

    /// [`fake_qmp`] at `dir`/qmp.sock answering a snapshot: `stop`,
    /// `migrate-set-capabilities`, `getfd` and `migrate` succeed, then each
    /// `query-migrate` gets the next of `migration`.
    fn fake_snapshot_qmp(
        dir: &Path,
        migration: &[&'static str],
    ) -> std::thread::JoinHandle<Vec<String>> {
        let mut answers = vec![r#"{"return": {}}"#; 4];
        answers.extend_from_slice(migration);
        fake_qmp(&dir.join("qmp.sock"), answers)
    }

    #[test]
    fn negotiates_skips_events_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let server = fake_qmp(
            &sock,
            vec![
                r#"{"return": {"status": "running", "running": true}}"#,
                r#"{"error": {"class": "GenericError", "desc": "no such thing"}}"#,
            ],
        );
        let mut c = QmpClient::connect(&sock).unwrap();
        let status = c.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
        let err = c.execute("bogus", Some(json!({"a": 1}))).unwrap_err();
        assert!(
            matches!(&err, VmmError::Qmp { class, desc, .. } if class == "GenericError" && desc == "no such thing"),
            "{err}"
        );
        drop(c);
        let seen = server.join().unwrap();
        assert_eq!(seen[0], r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(seen[2], r#"{"arguments":{"a":1},"execute":"bogus"}"#);
    }

    #[test]
    fn snapshot_migrates_to_a_file_and_waits_for_completion() {
        use crate::Control;
        let dir = tempfile::tempdir().unwrap();
        let server = fake_snapshot_qmp(
            dir.path(),
            &[
                r#"{"return": {"status": "active"}}"#,
                r#"{"return": {"status": "completed"}}"#,
            ],
        );
        let vm_dir = dir.path().join("0123456789abcdef");
        std::fs::create_dir(&vm_dir).unwrap();
        std::os::unix::fs::symlink(dir.path().join("qmp.sock"), vm_dir.join("qmp.sock")).unwrap();
        let snap = dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        let files = crate::qemu::QemuControl::new(&vm_dir)
            .snapshot(&snap)
            .unwrap();
        assert_eq!(files.state, snap.join("vmstate"));
        assert!(files.state.exists(), "the host created the state file");
        // Guest RAM is the VM's shared memory file, read while paused.
        assert_eq!(
            files.memory,
            Path::new("/dev/shm/ignis-0123456789abcdef.mem")
        );
        let seen = server.join().unwrap();
        assert_eq!(seen[1], r#"{"execute":"stop"}"#);
        assert_eq!(
            seen[2],
            r#"{"arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true}]},"execute":"migrate-set-capabilities"}"#
        );
        // The state file goes to QEMU as a descriptor (no exec: a
        // sandboxed QEMU may not spawn).
        assert_eq!(
            seen[3],
            r#"{"arguments":{"fdname":"snapshot-out"},"execute":"getfd"}"#
        );
        assert_eq!(
            seen[4],
            r#"{"arguments":{"uri":"fd:snapshot-out"},"execute":"migrate"}"#
        );
        assert_eq!(seen[5], r#"{"execute":"query-migrate"}"#);
    }

    /// `send_fd` attaches the descriptor to the `getfd` command: the peer
    /// receives it with the line and can write through it.
    #[test]
    fn send_fd_passes_the_descriptor_with_getfd() {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\": {}}\n").unwrap();
            let mut line = [0u8; 256];
            let n = std::io::Read::read(&mut s, &mut line).unwrap();
            assert!(String::from_utf8_lossy(&line[..n]).contains("qmp_capabilities"));
            s.write_all(b"{\"return\": {}}\n").unwrap();
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut anc = RecvAncillaryBuffer::new(&mut space);
            let mut buf = [0u8; 256];
            let r = recvmsg(
                &s,
                &mut [std::io::IoSliceMut::new(&mut buf)],
                &mut anc,
                RecvFlags::empty(),
            )
            .unwrap();
            let text = String::from_utf8_lossy(&buf[..r.bytes]).into_owned();
            let mut got = None;
            for m in anc.drain() {
                if let RecvAncillaryMessage::ScmRights(mut fds) = m {
                    got = fds.next();
                }
            }
            let mut f = std::fs::File::from(got.expect("a descriptor came with getfd"));
            f.write_all(b"through the passed fd").unwrap();
            s.write_all(b"{\"return\": {}}\n").unwrap();
            text
        });
        let mut c = QmpClient::connect(&sock).unwrap();
        let path = dir.path().join("out");
        let f = std::fs::File::create(&path).unwrap();
        c.send_fd("x", std::os::fd::AsFd::as_fd(&f)).unwrap();
        let text = t.join().unwrap();
        assert_eq!(
            text.trim(),
            r#"{"arguments":{"fdname":"x"},"execute":"getfd"}"#
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "through the passed fd"
        );
    }

    #[test]
    fn failed_migration_is_an_error() {
        use crate::Control;
        let dir = tempfile::tempdir().unwrap();
        let server = fake_snapshot_qmp(
            dir.path(),
            &[r#"{"return": {"status": "failed", "error-desc": "disk full"}}"#],
        );
        let err = crate::qemu::QemuControl::new(dir.path())
            .snapshot(dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn a_peer_that_is_not_qmp_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        });
        assert!(matches!(
            QmpClient::connect(&sock),
            Err(VmmError::QmpJson(_) | VmmError::QmpGreeting(_))
        ));
        t.join().unwrap();
    }
}
