//! Firecracker backend: spawn `firecracker --api-sock`, configure it over
//! the REST API (boot source, machine config, drives), InstanceStart.
//! The serial console is Firecracker's stdout (a pipe of its own: it sets
//! O_NONBLOCK on it). Stale sockets are removed first: Firecracker never
//! unlinks them itself.

mod api;
pub mod jail;

pub use api::ApiClient;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Backend, BackendKind, Control, VmSpec, VmmError};

pub const BINARY: &str = "firecracker";

#[derive(Debug, Clone)]
pub struct FirecrackerBackend {
    binary: PathBuf,
}

/// The API socket in the VM's directory.
pub const API_SOCKET: &str = "firecracker.sock";
/// Firecracker's own log (warnings and errors): not on stdout, which is
/// the guest's serial console (interleaved, it splits the init's report
/// lines).
pub const LOG_FILE: &str = "firecracker.log";
const LOG_LEVEL: &str = "Warning";

/// Creates (empties) the log file Firecracker writes to: it writes from
/// offset 0 without truncating.
fn fresh_log(path: &Path) -> Result<(), VmmError> {
    std::fs::File::create(path)
        .map(drop)
        .map_err(|e| VmmError::Protocol(format!("create {}: {e}", path.display())))
}

fn api_path(dir: &Path) -> PathBuf {
    dir.join(API_SOCKET)
}

impl FirecrackerBackend {
    pub fn new(binary: PathBuf) -> Self {
        Self { binary }
    }

    /// Names files in the VM's directory relative to it (Firecracker runs
    /// there), so a snapshot's device state names no VM: a clone restored
    /// in its own directory opens its own disk and vsock socket.
    fn local(spec: &VmSpec, p: &Path) -> PathBuf {
        p.strip_prefix(&spec.dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf())
    }

    /// The `--config-file` document that boots `spec`: Firecracker
    /// configures and starts the VM from it as it starts, without a round
    /// trip per setting over its API.
    pub fn config(spec: &VmSpec) -> serde_json::Value {
        let local = |p: &Path| Self::local(spec, p);
        let drives: Vec<serde_json::Value> = spec
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                json!({"drive_id": format!("d{i}"), "path_on_host": local(&d.path), "is_root_device": false, "is_read_only": d.read_only})
            })
            .collect();
        let mut config = json!({
            "boot-source": {
                "kernel_image_path": local(&spec.vmlinux),
                "initrd_path": local(&spec.initrd),
                "boot_args": spec.cmdline,
            },
            "machine-config": {"vcpu_count": spec.vcpus, "mem_size_mib": spec.memory_mib},
            "drives": drives,
            // The agent's channel: hybrid vsock, host side a unix socket.
            "vsock": {"guest_cid": 3, "uds_path": crate::VSOCK_SOCKET},
        });
        if let Some(n) = &spec.net {
            config["network-interfaces"] =
                json!([{"iface_id": "eth0", "host_dev_name": n.tap, "guest_mac": n.mac}]);
        }
        config
    }

    /// The API call that resumes `spec.restore`: the snapshot's memory
    /// mapped from its file (copy-on-write, shared page cache), the VM's
    /// own TAP.
    pub fn load_call(spec: &VmSpec, r: &crate::RestoreSpec) -> serde_json::Value {
        let local = |p: &Path| Self::local(spec, p);
        let mut load = json!({
            "snapshot_path": local(&r.state),
            "mem_backend": {"backend_type": "File", "backend_path": local(&r.memory)},
            "enable_diff_snapshots": false,
            "resume_vm": true,
        });
        if let Some(n) = &spec.net {
            load["network_overrides"] = json!([{"iface_id": "eth0", "host_dev_name": n.tap}]);
        }
        load
    }
}

/// The boot configuration file, in the directory Firecracker runs in.
pub const CONFIG_FILE: &str = "vm-config.json";

impl Backend for FirecrackerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    fn launch(&self, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError> {
        let sock = api_path(&spec.dir);
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(spec.dir.join(crate::VSOCK_SOCKET));
        let (cmd, spec) = match &spec.confine.jailer {
            Some(jailer) => {
                let (cmd, jailed) = jail::command(jailer, &self.binary, spec)?;
                (cmd, std::borrow::Cow::Owned(jailed))
            }
            None => {
                let log = spec.dir.join(LOG_FILE);
                fresh_log(&log)?;
                let mut cmd = Command::new(&self.binary);
                cmd.current_dir(&spec.dir)
                    .arg("--api-sock")
                    .arg(&sock)
                    .arg("--id")
                    .arg(&spec.id)
                    .arg("--log-path")
                    .arg(&log)
                    .arg("--level")
                    .arg(LOG_LEVEL);
                (cmd, std::borrow::Cow::Borrowed(spec))
            }
        };
        let mut cmd = cmd;
        if spec.restore.is_none() {
            // A boot: the whole configuration in a file, read at start.
            let config = serde_json::to_vec(&Self::config(&spec)).expect("json");
            let path = spec.dir.join(CONFIG_FILE);
            std::fs::write(&path, config)
                .map_err(|e| VmmError::Protocol(format!("write {}: {e}", path.display())))?;
            cmd.arg("--config-file")
                .arg(if spec.confine.jailer.is_some() {
                    PathBuf::from("/").join(CONFIG_FILE)
                } else {
                    PathBuf::from(CONFIG_FILE)
                });
        }
        cmd.stdin(input).stdout(console).stderr(Stdio::inherit());
        let mut child = crate::spawn_vmm(cmd, &spec.confine)?;
        let Some(restore) = &spec.restore else {
            return Ok(child);
        };
        let mut load = || -> Result<(), VmmError> {
            // The socket file appears at bind(), before listen(): until
            // then a connection is refused. Retry both.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::os::unix::net::UnixStream::connect(&sock) {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(VmmError::Protocol(format!(
                            "Firecracker's API socket did not answer within 5 s: {e}"
                        )))
                    }
                    Err(_) => {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Err(VmmError::Protocol(format!(
                                "firecracker exited before serving its API ({status})"
                            )));
                        }
                        std::thread::sleep(Duration::from_micros(500))
                    }
                }
            }
            ApiClient::new(&sock)?.put("/snapshot/load", &Self::load_call(&spec, restore))?;
            Ok(())
        };
        if let Err(e) = load() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&sock);
            return Err(e);
        }
        Ok(child)
    }
}

/// Firecracker's host-initiated vsock handshake: `CONNECT <port>\n`,
/// answered `OK <host port>\n` once the guest accepts (the connection is
/// closed when nothing listens on the port).
pub fn vsock_handshake(s: &mut std::os::unix::net::UnixStream, port: u32) -> Result<(), VmmError> {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        match s.read(&mut b)? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    s.set_read_timeout(None)?;
    if line.starts_with(b"OK ") {
        Ok(())
    } else {
        Err(VmmError::Protocol(format!(
            "vsock CONNECT {port} refused: {:?}",
            String::from_utf8_lossy(&line)
        )))
    }
}

pub struct FirecrackerControl {
    socket: PathBuf,
}

impl FirecrackerControl {
    pub fn new(dir: &Path) -> Self {
        Self {
            socket: api_path(dir),
        }
    }
}

impl Control for FirecrackerControl {
    fn shutdown(&self) -> Result<(), VmmError> {
        ApiClient::new(&self.socket)?
            .put("/actions", &json!({"action_type": "SendCtrlAltDel"}))
            .map(drop)
    }
    fn pause(&self) -> Result<(), VmmError> {
        ApiClient::new(&self.socket)?
            .patch("/vm", &json!({"state": "Paused"}))
            .map(drop)
    }
    fn resume(&self) -> Result<(), VmmError> {
        ApiClient::new(&self.socket)?
            .patch("/vm", &json!({"state": "Resumed"}))
            .map(drop)
    }
    fn snapshot(&self, dir: &Path) -> Result<crate::SnapshotFiles, VmmError> {
        let api = ApiClient::new(&self.socket)?;
        api.patch("/vm", &json!({"state": "Paused"}))?;
        let state = dir.join("vmstate");
        let memory = dir.join("memory");
        match jail::root_of(self.socket.parent().unwrap_or(Path::new("."))) {
            // A jailed Firecracker writes inside its chroot (paths are
            // relative to it); the files then move to `dir`.
            Some(root) => {
                let body = json!({
                    "snapshot_type": "Full",
                    "snapshot_path": "snapshot.vmstate",
                    "mem_file_path": "snapshot.memory",
                });
                api.put("/snapshot/create", &body)?;
                jail::take_out(&root.join("snapshot.vmstate"), &state)?;
                jail::take_out(&root.join("snapshot.memory"), &memory)?;
            }
            None => {
                let body = json!({
                    "snapshot_type": "Full",
                    "snapshot_path": state,
                    "mem_file_path": memory,
                });
                api.put("/snapshot/create", &body)?;
            }
        }
        Ok(crate::SnapshotFiles { state, memory })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_boots_and_a_clone_loads_its_snapshot() {
        let spec = VmSpec {
            id: "vm1".into(),
            dir: "/run/x".into(),
            vmlinux: "/k/vmlinux".into(),
            initrd: "/k/initrd".into(),
            cmdline: "console=ttyS0 reboot=k".into(),
            vcpus: 1,
            memory_mib: 128,
            disks: vec![
                crate::DiskSpec {
                    path: "/d/img".into(),
                    read_only: true,
                },
                crate::DiskSpec {
                    path: "/run/x/data.ext4".into(),
                    read_only: false,
                },
            ],
            accel: crate::Accel::Kvm,
            net: Some(crate::NetSpec {
                tap: "ig-1".into(),
                mac: "02:00:00:00:00:02".into(),
            }),
            restore: None,
            confine: Default::default(),
        };
        let c = FirecrackerBackend::config(&spec);
        assert_eq!(c["network-interfaces"][0]["host_dev_name"], "ig-1");
        assert_eq!(c["network-interfaces"][0]["guest_mac"], "02:00:00:00:00:02");
        // Files in the VM's directory are relative (Firecracker runs there).
        assert_eq!(c["drives"][1]["path_on_host"], "data.ext4");
        assert_eq!(c["drives"][0]["path_on_host"], "/d/img");
        assert_eq!(c["drives"][0]["is_read_only"], true);
        assert_eq!(c["drives"][1]["is_read_only"], false);
        assert_eq!(c["boot-source"]["boot_args"], "console=ttyS0 reboot=k");
        assert_eq!(c["machine-config"]["mem_size_mib"], 128);
        assert_eq!(c["vsock"]["uds_path"], "vsock.sock");
        // A clone: one snapshot load, memory mapped from the file, its own TAP.
        let r = crate::RestoreSpec {
            state: "/s/vmstate".into(),
            memory: "/s/memory".into(),
        };
        let load = FirecrackerBackend::load_call(&spec, &r);
        assert_eq!(load["mem_backend"]["backend_type"], "File");
        assert_eq!(load["mem_backend"]["backend_path"], "/s/memory");
        assert_eq!(load["resume_vm"], true);
        assert_eq!(load["network_overrides"][0]["host_dev_name"], "ig-1");
    }

    /// The hybrid-vsock handshake against a fake Firecracker vsock socket:
    /// accepted (`OK <port>`), and refused (closed: nothing listens yet).
    #[test]
    fn vsock_connect_handshake() {
        use std::io::{BufRead, Write};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vsock.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            for accept in [true, false] {
                let (c, _) = l.accept().unwrap();
                let mut line = String::new();
                std::io::BufReader::new(&c).read_line(&mut line).unwrap();
                assert_eq!(line, "CONNECT 1024\n");
                if accept {
                    (&c).write_all(b"OK 1073741824\n").unwrap();
                }
            }
        });
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        vsock_handshake(&mut s, 1024).unwrap();
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(vsock_handshake(&mut s, 1024).is_err());
        t.join().unwrap();
    }
}
