//! The Firecracker driver: the VM boots from a `--config-file` (boot
//! source, machine config, drives, NIC, vsock: no API round trip per
//! setting); a clone is one `PUT /snapshot/load` on the API socket. The
//! serial console is Firecracker's stdout (a pipe of its own: it sets
//! O_NONBLOCK on it); its own log goes to a file. Stale sockets are
//! removed first: Firecracker never unlinks them itself. Under its jailer
//! where one is found (`jail.rs`).

mod api;
pub mod jail;
pub mod metrics;

pub use api::ApiClient;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::{
    Accel, AgentTransport, BackendKind, BootPlan, Capabilities, ConfineRequest, Confined, Control,
    Driver, HostError, VmSpec, VmmError,
};

pub const BINARY: &str = "firecracker";
/// Where the firecracker binary is when it is not on PATH.
pub const ENV_BINARY: &str = "IGNIS_FIRECRACKER";
/// Where the jailer is, when it is not next to firecracker or on PATH.
pub const ENV_JAILER: &str = "IGNIS_JAILER";

/// The Firecracker driver.
#[derive(Debug, Clone, Copy)]
pub struct FirecrackerDriver;

/// The firecracker binary: `$IGNIS_FIRECRACKER`, else on PATH.
pub fn binary() -> Option<PathBuf> {
    std::env::var_os(ENV_BINARY)
        .map(PathBuf::from)
        .or_else(|| crate::detect::find_in_path(BINARY))
}

fn require_binary() -> Result<PathBuf, VmmError> {
    binary().ok_or(VmmError::NotInstalled {
        binary: BINARY.to_string(),
        hint: "put firecracker >= 1.10 on PATH or set IGNIS_FIRECRACKER",
    })
}

/// The jailer: `$IGNIS_JAILER`, else next to the firecracker binary, else
/// on PATH.
pub fn find_jailer(firecracker: Option<&Path>) -> Option<PathBuf> {
    if let Some(j) = std::env::var_os(ENV_JAILER) {
        return Some(PathBuf::from(j)).filter(|p| p.is_file());
    }
    firecracker
        .and_then(|f| f.parent().map(|d| d.join(jail::BINARY)))
        .filter(|p| p.is_file())
        .or_else(|| crate::detect::find_in_path(jail::BINARY))
}

/// The API socket in the VM's directory.
pub const API_SOCKET: &str = "firecracker.sock";
/// Firecracker's hybrid vsock socket (the agent's channel).
pub const VSOCK_SOCKET: &str = "vsock.sock";
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
        .map_err(VmmError::file("create", path))
}

fn api_path(dir: &Path) -> PathBuf {
    dir.join(API_SOCKET)
}

impl Driver for FirecrackerDriver {
    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    fn capabilities(&self, _accel: Accel) -> Capabilities {
        Capabilities {
            max_vcpus: 32,
            even_vcpus: true,
            agent: Some(AgentTransport::Vsock),
            overhead_mib: 64,
            initramfs: true,
            host_tap_from_netns: false,
            tap_fd: false,
        }
    }

    fn host_check(&self, host: &crate::HostInfo, linux: bool) -> Result<Accel, HostError> {
        let Some((_, v)) = &host.firecracker else {
            return Err(HostError::new(
                "firecracker not found: put firecracker >= 1.10 on PATH or set IGNIS_FIRECRACKER",
            ));
        };
        if !crate::detect::firecracker_supported(v) {
            return Err(HostError::new(format!(
                "firecracker {v} is too old; ignis needs >= 1.10"
            )));
        }
        match &host.kvm {
            crate::detect::Kvm::Usable(_) => Ok(Accel::Kvm),
            crate::detect::Kvm::CannotRunLinux(_) if !linux => Ok(Accel::Kvm),
            other => Err(HostError::new(format!(
                "Firecracker needs KVM that can run Linux guests, and here it cannot ({}); use --backend qemu",
                other.describe()
            ))),
        }
    }

    fn version(&self) -> Option<String> {
        crate::detect::binary_version(&binary()?)
    }

    fn kernel_args(&self, _accel: Accel) -> Vec<String> {
        // Firecracker's i8042 carries Ctrl-Alt-Del (its graceful stop).
        ["pci=off", "i8042.noaux", "i8042.nomux", "i8042.dumbkbd"]
            .map(String::from)
            .to_vec()
    }

    fn confine(&self, req: &ConfineRequest<'_>) -> Confined {
        let mut c = Confined {
            cgroup: true,
            ..Default::default()
        };
        // Firecracker installs its own seccomp filters.
        c.sandbox.push("seccomp");
        match find_jailer(binary().as_deref()) {
            Some(j) => {
                c.confine.user = Some((req.uid, req.uid));
                c.confine.jailer = Some(j);
                c.sandbox.push("jailer");
                c.chroot = Some(req.dir.join(jail::JAIL_DIR));
            }
            None => c.warnings.push(format!(
                "jailer not found (next to firecracker, on PATH or in {ENV_JAILER}): Firecracker runs as root without a chroot"
            )),
        }
        c
    }

    fn launch(&self, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError> {
        launch(&require_binary()?, spec, input, console)
    }

    fn control(&self, dir: &Path) -> Box<dyn Control> {
        Box::new(FirecrackerControl::new(dir))
    }

    fn connect_agent(&self, dir: &Path) -> Result<std::os::unix::net::UnixStream, VmmError> {
        let path = dir.join(VSOCK_SOCKET);
        let mut s =
            std::os::unix::net::UnixStream::connect(&path).map_err(|source| VmmError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        vsock_handshake(&mut s, ignis_agent_proto::VSOCK_PORT)?;
        Ok(s)
    }

    fn boot_plan(&self, spec: &VmSpec) -> BootPlan {
        BootPlan {
            backend: BackendKind::Firecracker,
            argv: vec![],
            firecracker_config: Some(config(spec)),
        }
    }

    fn runtime_files(&self) -> &'static [&'static str] {
        &[
            API_SOCKET,
            VSOCK_SOCKET,
            CONFIG_FILE,
            metrics::METRICS_FIFO,
            metrics::TOTALS_FILE,
        ]
    }

    fn leftovers(&self, dir: &Path) -> Vec<crate::Leftover> {
        jail::root_of(dir)
            .map(|_| crate::Leftover {
                kind: "jail",
                path: dir.join(jail::JAIL_DIR),
            })
            .into_iter()
            .collect()
    }

    fn release(&self, dir: &Path) {
        jail::remove(dir);
        for f in self.runtime_files() {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
}

/// Names files in the VM's directory relative to it (Firecracker runs
/// there), so a snapshot's device state names no VM: a clone restored in
/// its own directory opens its own disk and vsock socket.
fn local(spec: &VmSpec, p: &Path) -> PathBuf {
    p.strip_prefix(&spec.dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The `--config-file` document that boots `spec`: Firecracker
/// configures and starts the VM from it as it starts, without a round
/// trip per setting over its API.
pub fn config(spec: &VmSpec) -> serde_json::Value {
    let local = |p: &Path| local(spec, p);
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
        "vsock": {"guest_cid": 3, "uds_path": VSOCK_SOCKET},
    });
    if !spec.net.is_empty() {
        config["network-interfaces"] = spec
            .net
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"iface_id": format!("eth{i}"), "host_dev_name": n.tap, "guest_mac": n.mac}))
            .collect();
    }
    config
}

/// The API call that resumes `spec.restore`: the snapshot's memory
/// mapped from its file (copy-on-write, shared page cache), the VM's
/// own TAP.
pub fn load_call(spec: &VmSpec, r: &crate::RestoreSpec) -> serde_json::Value {
    let local = |p: &Path| local(spec, p);
    let mut load = json!({
        "snapshot_path": local(&r.state),
        "mem_backend": {"backend_type": "File", "backend_path": local(&r.memory)},
        "enable_diff_snapshots": false,
        "resume_vm": true,
    });
    if !spec.net.is_empty() {
        load["network_overrides"] = spec
            .net
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"iface_id": format!("eth{i}"), "host_dev_name": n.tap}))
            .collect();
    }
    load
}

/// The boot configuration file, in the directory Firecracker runs in.
pub const CONFIG_FILE: &str = "vm-config.json";

/// Spawns firecracker (under its jailer when confined so) for `spec`: a
/// boot reads its configuration file as it starts; a restore waits for the
/// API socket and loads the snapshot.
fn launch(binary: &Path, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError> {
    let sock = api_path(&spec.dir);
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(spec.dir.join(VSOCK_SOCKET));
    let (mut cmd, spec) = match &spec.confine.jailer {
        Some(jailer) => {
            let (cmd, jailed) = jail::command(jailer, binary, spec)?;
            (cmd, std::borrow::Cow::Owned(jailed))
        }
        None => {
            let log = spec.dir.join(LOG_FILE);
            fresh_log(&log)?;
            let mut cmd = Command::new(binary);
            cmd.current_dir(&spec.dir)
                .arg("--api-sock")
                .arg(&sock)
                .arg("--id")
                .arg(&spec.id)
                .arg("--log-path")
                .arg(&log)
                .arg("--level")
                .arg(LOG_LEVEL);
            if spec.dir.join(metrics::METRICS_FIFO).exists() {
                // The supervisor reads it (`metrics::Collector`).
                cmd.arg("--metrics-path").arg(metrics::METRICS_FIFO);
            }
            if let Some(ns) = &spec.netns {
                crate::in_netns(&mut cmd, ns)?;
            }
            (cmd, std::borrow::Cow::Borrowed(spec))
        }
    };
    if spec.restore.is_none() {
        // A boot: the whole configuration in a file, read at start.
        let config = serde_json::to_vec(&config(&spec)).expect("json");
        let path = spec.dir.join(CONFIG_FILE);
        std::fs::write(&path, config).map_err(VmmError::file("write", &path))?;
        cmd.arg("--config-file")
            .arg(if spec.confine.jailer.is_some() {
                PathBuf::from("/").join(CONFIG_FILE)
            } else {
                PathBuf::from(CONFIG_FILE)
            });
    }
    cmd.stdin(input).stdout(console).stderr(Stdio::inherit());
    let mut child = crate::spawn_vmm(cmd)?;
    let Some(restore) = &spec.restore else {
        return Ok(child);
    };
    let loaded = crate::wait_for_socket(&sock, Some(&mut child), Duration::from_secs(5))
        .and_then(|()| ApiClient::new(&sock))
        .and_then(|api| api.put("/snapshot/load", &load_call(&spec, restore)));
    if let Err(e) = loaded {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&sock);
        return Err(e);
    }
    Ok(child)
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
        Err(VmmError::VsockRefused {
            port,
            reply: String::from_utf8_lossy(&line).into_owned(),
        })
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
                    serial: None,
                },
                crate::DiskSpec {
                    path: "/run/x/data.ext4".into(),
                    read_only: false,
                    serial: None,
                },
            ],
            accel: crate::Accel::Kvm,
            netns: None,
            net: vec![
                crate::NetSpec {
                    tap: "ig-1".into(),
                    mac: "02:00:00:00:00:02".into(),
                    device: None,
                },
                crate::NetSpec {
                    tap: "tap1".into(),
                    mac: "02:00:00:00:00:03".into(),
                    device: None,
                },
            ],
            restore: None,
            confine: Default::default(),
        };
        let c = config(&spec);
        assert_eq!(c["network-interfaces"][0]["host_dev_name"], "ig-1");
        assert_eq!(c["network-interfaces"][0]["guest_mac"], "02:00:00:00:00:02");
        assert_eq!(c["network-interfaces"][1]["iface_id"], "eth1");
        assert_eq!(c["network-interfaces"][1]["host_dev_name"], "tap1");
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
        let load = load_call(&spec, &r);
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
