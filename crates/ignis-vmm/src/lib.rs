//! VMM backends.
//!
//! A [`Backend`] launches a VMM process for a [`VmSpec`] with the serial
//! console on a pipe the supervisor reads, and returns the child. Control
//! of a running VM (graceful shutdown, pause, resume) goes through the VMM's
//! own control socket in the VM's runtime directory, so any ignis process
//! can do it, not only the supervisor that launched it.

pub mod cgroup;
pub mod detect;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod firecracker;
pub mod qemu;
pub mod reaper;
pub mod tap;

use std::path::PathBuf;
use std::process::Child;

pub use detect::{detect, BackendChoice, HostInfo};

/// Which VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Firecracker,
    Qemu,
    #[cfg(any(test, feature = "fake"))]
    Fake,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firecracker => "firecracker",
            Self::Qemu => "qemu",
            #[cfg(any(test, feature = "fake"))]
            Self::Fake => "fake",
        }
    }
}

/// QEMU acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Everything a VMM needs to boot one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub id: String,
    /// Runtime directory: control sockets live here.
    pub dir: PathBuf,
    /// ELF vmlinux (both backends: QEMU boots it through PVH).
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disks: Vec<DiskSpec>,
    /// QEMU only.
    pub accel: Accel,
    /// One NIC on a TAP the VMM creates (and that goes away with it).
    pub net: Option<NetSpec>,
    /// Start from a snapshot instead of booting.
    pub restore: Option<RestoreSpec>,
    /// The least privilege the VMM runs with.
    pub confine: Confinement,
}

/// How a VMM is confined. Default: not at all (tests, non-root users).
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Run the VMM as this uid and gid: QEMU drops to it after opening its
    /// files (`-runas`); Firecracker's jailer starts it as that user.
    pub user: Option<(u32, u32)>,
    /// QEMU's seccomp sandbox (no spawning, no obsolete or
    /// resource-control syscalls).
    pub sandbox: bool,
    /// Firecracker: start it through this jailer (chroot, own uid/gid).
    pub jailer: Option<PathBuf>,
    /// The VMM's cgroup (the supervisor moves it in once it runs).
    pub cgroup: Option<std::sync::Arc<cgroup::VmCgroup>>,
}

/// What [`Control::snapshot`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFiles {
    pub state: PathBuf,
    pub memory: PathBuf,
}

/// A snapshot to resume: the VMM's device state and the guest memory
/// (mapped copy-on-write: clones of one snapshot share its pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSpec {
    pub state: PathBuf,
    pub memory: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    pub tap: String,
    pub mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{binary} not found; {hint}")]
    NotInstalled { binary: String, hint: &'static str },
    #[error("cannot start {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the VMM control socket {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Firecracker API {method} {path} failed ({status}): {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },
    #[error("VMM protocol error: {0}")]
    Protocol(String),
    #[error("VMM control I/O")]
    Io(#[from] std::io::Error),
}

/// Makes a VMM child die with its parent (the supervisor): if the
/// supervisor is SIGKILLed, no VMM is left running unmanaged.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// Spawns a VMM command that dies with its parent (see
/// [`die_with_parent`]), mapping a failure to [`VmmError::Spawn`]. The
/// caller moves it into its cgroup ([`cgroup::VmCgroup::add`]).
pub(crate) fn spawn_vmm(
    mut cmd: std::process::Command,
    _confine: &Confinement,
) -> Result<Child, VmmError> {
    die_with_parent(&mut cmd);
    let binary = cmd.get_program().to_string_lossy().into_owned();
    cmd.spawn()
        .map_err(|source| VmmError::Spawn { binary, source })
}

/// Launches VMMs.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Starts the VMM; its serial console output goes to `console` (the
    /// write end of a pipe) and its serial input comes from `input`.
    /// Returns once the guest is booting.
    fn launch(
        &self,
        spec: &VmSpec,
        input: std::process::Stdio,
        console: std::process::Stdio,
    ) -> Result<Child, VmmError>;
}

/// Control of a running VM through its control socket.
pub trait Control {
    /// Asks the guest to shut down (Ctrl-Alt-Del or ACPI power button).
    fn shutdown(&self) -> Result<(), VmmError>;
    fn pause(&self) -> Result<(), VmmError>;
    fn resume(&self) -> Result<(), VmmError>;
    /// Pauses the VM and saves its device state under `dir`; returns where
    /// the state and the guest memory are. The memory may be the VM's live
    /// RAM file (QEMU): read it before `resume`, which the caller calls.
    fn snapshot(&self, dir: &std::path::Path) -> Result<SnapshotFiles, VmmError>;
}

/// QEMU's end of the agent's virtio-serial port (a chardev socket).
pub const AGENT_VMM_SOCKET: &str = "agent.vmm.sock";
/// Firecracker's hybrid vsock socket.
pub const VSOCK_SOCKET: &str = "vsock.sock";

/// Connects to the guest agent's stream through the VMM of the VM in
/// `dir`: QEMU's chardev socket, or Firecracker's vsock socket with its
/// `CONNECT <port>` handshake. Fails while the guest is not listening yet
/// (callers retry); the fake backend has no agent.
pub fn connect_agent(
    kind: BackendKind,
    dir: &std::path::Path,
) -> Result<std::os::unix::net::UnixStream, VmmError> {
    use std::os::unix::net::UnixStream;
    let connect = |name: &str| {
        let path = dir.join(name);
        UnixStream::connect(&path).map_err(|source| VmmError::Connect {
            path: path.display().to_string(),
            source,
        })
    };
    match kind {
        BackendKind::Qemu => connect(AGENT_VMM_SOCKET),
        BackendKind::Firecracker => {
            let mut s = connect(VSOCK_SOCKET)?;
            firecracker::vsock_handshake(&mut s, ignis_agent_proto::VSOCK_PORT)?;
            Ok(s)
        }
        #[cfg(any(test, feature = "fake"))]
        BackendKind::Fake => Err(VmmError::Protocol("no agent in the fake backend".into())),
    }
}

/// The control handle of a VM of `kind` whose runtime directory is `dir`.
pub fn control(kind: BackendKind, dir: &std::path::Path) -> Box<dyn Control> {
    match kind {
        BackendKind::Firecracker => Box::new(firecracker::FirecrackerControl::new(dir)),
        BackendKind::Qemu => Box::new(qemu::QemuControl::new(dir)),
        #[cfg(any(test, feature = "fake"))]
        BackendKind::Fake => Box::new(fake::FakeControl::new(dir)),
    }
}
