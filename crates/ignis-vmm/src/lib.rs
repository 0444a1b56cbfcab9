//! VMM drivers: everything that differs between VMMs sits behind
//! [`Driver`] (capabilities, host check, kernel arguments, confinement,
//! launch, control, the agent's transport, the boot plan, version, files
//! and cleanup). ignis-core drives a `dyn Driver` from [`driver`] and never
//! asks which VMM it is; a new VMM is one new module implementing it (the
//! checklist is in ARCHITECTURE.md).
//!
//! A driver launches a VMM process for a [`VmSpec`] with the serial
//! console on a pipe the supervisor reads. Control of a running VM
//! (graceful shutdown, pause, resume, snapshot) goes through the VMM's own
//! control socket in the VM's runtime directory, so any ignis process can
//! do it, not only the supervisor that launched it.

pub mod cgroup;
pub mod detect;
mod driver;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod firecracker;
pub mod qemu;
pub mod reaper;
pub mod tap;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub use detect::{detect, HostInfo};
pub use driver::{
    choose, driver, drivers, AgentTransport, BootPlan, Capabilities, ConfineRequest, Confined,
    Driver, HostError, Leftover, VcpuRange,
};
pub use ignis_api::{Accel, BackendKind, BackendRequest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub read_only: bool,
    /// The disk's virtio-blk serial where the VMM sets one (QEMU): how
    /// the guest finds a volume's disk (`/sys/block/vdX/serial`).
    pub serial: Option<String>,
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
    /// The NICs in order (eth0 first), each on a TAP: one the VMM creates
    /// by name (and that goes away with it), or one that exists in `netns`.
    pub net: Vec<NetSpec>,
    /// Run the VMM in this network namespace (a VM on a CNI network): its
    /// TAPs are there.
    pub netns: Option<PathBuf>,
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
    /// A macvtap's character device: the VMM gets it open instead of a
    /// TAP by name (backends with [`Capabilities::tap_fd`]).
    pub device: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{binary} not found; {hint}")]
    NotInstalled { binary: String, hint: &'static str },
    #[error("the {0} backend is not built into this ignis")]
    NotBuiltIn(BackendKind),
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
    #[error("{path} did not answer within {} s", .waited.as_secs())]
    SocketTimeout { path: String, waited: Duration },
    #[error("the VMM exited before serving its control socket ({0})")]
    ExitedEarly(std::process::ExitStatus),
    #[error("Firecracker API {method} {path} failed ({status}): {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("Firecracker API {method} {path}")]
    Http {
        method: String,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP: {0}")]
    QmpProtocol(&'static str),
    #[error("QMP: expected a greeting, got {0}")]
    QmpGreeting(String),
    #[error("QMP: unreadable JSON")]
    QmpJson(#[source] serde_json::Error),
    #[error("{what} did not complete within {} s", .waited.as_secs())]
    Timeout {
        what: &'static str,
        waited: Duration,
    },
    #[error("vsock CONNECT {port} refused: {reply:?}")]
    VsockRefused { port: u32, reply: String },
    #[error("cannot {what} {}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the jailer needs a uid and gid for the VMM")]
    NoJailUser,
    #[error("this backend has no guest agent")]
    NoAgent,
    #[error("the fake VMM's pid file is unreadable")]
    FakePid,
    #[error("VMM control I/O")]
    Io(#[from] std::io::Error),
}

impl VmmError {
    pub(crate) fn file(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::File { what, path, source }
    }
}

/// Waits until the unix socket `path` accepts a connection (a VMM binds
/// its socket before it listens: connections are refused until then),
/// failing early if `child` exits. The one retry loop of every driver.
pub(crate) fn wait_for_socket(
    path: &Path,
    child: Option<&mut Child>,
    timeout: Duration,
) -> Result<(), VmmError> {
    let deadline = Instant::now() + timeout;
    let mut child = child;
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() > deadline => {
                return Err(VmmError::SocketTimeout {
                    path: path.display().to_string(),
                    waited: timeout,
                })
            }
            Err(_) => {
                if let Some(c) = child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        return Err(VmmError::ExitedEarly(status));
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
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

/// Makes `cmd` run in the network namespace at `path` (a `setns` between
/// fork and exec).
#[allow(unsafe_code)]
pub(crate) fn in_netns(cmd: &mut std::process::Command, path: &Path) -> Result<(), VmmError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let ns =
        std::fs::File::open(path).map_err(VmmError::file("open the network namespace", path))?;
    // SAFETY: the closure runs between fork and exec and only calls setns,
    // which is async-signal-safe, on a descriptor the closure owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Lets `cmd` inherit `fds` (open here, close-on-exec) at their numbers:
/// the flag is cleared between fork and exec, so no other child gets them.
#[allow(unsafe_code)]
pub(crate) fn inherit_fds(cmd: &mut std::process::Command, fds: Vec<std::os::fd::RawFd>) {
    use std::os::unix::process::CommandExt;
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure runs between fork and exec and only calls fcntl,
    // which is async-signal-safe, on descriptors open in the parent (so
    // at the same numbers in the child).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Spawns a VMM command that dies with its parent (see
/// [`die_with_parent`]), mapping a failure to [`VmmError::Spawn`]. The
/// caller moves it into its cgroup ([`cgroup::VmCgroup::add`]).
pub(crate) fn spawn_vmm(mut cmd: std::process::Command) -> Result<Child, VmmError> {
    die_with_parent(&mut cmd);
    let binary = cmd.get_program().to_string_lossy().into_owned();
    cmd.spawn()
        .map_err(|source| VmmError::Spawn { binary, source })
}

/// Control of a running VM through its control socket.
pub trait Control: Send + Sync {
    /// Asks the guest to shut down (Ctrl-Alt-Del or ACPI power button).
    fn shutdown(&self) -> Result<(), VmmError>;
    fn pause(&self) -> Result<(), VmmError>;
    fn resume(&self) -> Result<(), VmmError>;
    /// Pauses the VM and saves its device state under `dir`; returns where
    /// the state and the guest memory are. The memory may be the VM's live
    /// RAM file (QEMU): read it before `resume`, which the caller calls.
    fn snapshot(&self, dir: &std::path::Path) -> Result<SnapshotFiles, VmmError>;
}
