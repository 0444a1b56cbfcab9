//! The VMM driver boundary, in the spirit of Kata's `Hypervisor` trait and
//! Cloud Hypervisor's `hypervisor` crate: a driver answers "what can you
//! do" through methods, and the layer above never matches on which VMM it
//! drives.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use serde::Serialize;

use crate::detect::HostInfo;
use crate::{Accel, BackendKind, BackendRequest, Confinement, Control, VmSpec, VmmError};

/// How the guest agent's byte stream is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTransport {
    /// A virtio-serial port behind a chardev unix socket (QEMU).
    VirtioSerial,
    /// Hybrid vsock: a unix socket and a `CONNECT <port>` handshake
    /// (Firecracker).
    Vsock,
}

/// What a VMM can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub max_vcpus: u32,
    /// Counts above one must be even (Firecracker's SMT pairs).
    pub even_vcpus: bool,
    /// How the guest agent is reached; `None`: guests have no agent here.
    pub agent: Option<AgentTransport>,
    /// Memory the VMM needs beyond guest RAM (its cgroup's cap is both).
    pub overhead_mib: u64,
    /// The guest boots ignis's init from an initramfs (not the fake).
    pub initramfs: bool,
    /// Run in a VM's network namespace (CNI), it creates a TAP that the
    /// supervisor can move out to the host (for a bridge NIC next to CNI
    /// ones). Firecracker under its jailer opens TAPs made for it instead.
    pub host_tap_from_netns: bool,
    /// Takes a TAP as an open descriptor ([`crate::NetSpec::device`]): a
    /// macvtap. Firecracker opens TAPs by name only.
    pub tap_fd: bool,
}

/// A vCPU count the backend cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{count} is out of range: {backend} allows 1{}..{max}", if *.even { " or an even number 2" } else { "" })]
pub struct VcpuRange {
    pub count: u32,
    pub backend: BackendKind,
    pub max: u32,
    pub even: bool,
}

impl Capabilities {
    /// Refuses a vCPU count this backend cannot run.
    pub fn check_vcpus(&self, backend: BackendKind, count: u32) -> Result<(), VcpuRange> {
        if count == 0 || count > self.max_vcpus || (self.even_vcpus && count > 1 && count % 2 == 1)
        {
            return Err(VcpuRange {
                count,
                backend,
                max: self.max_vcpus,
                even: self.even_vcpus,
            });
        }
        Ok(())
    }
}

/// Why a host cannot run a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub message: String,
}

impl HostError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// What the layer above decided about a VMM's confinement.
#[derive(Debug, Clone)]
pub struct ConfineRequest<'a> {
    pub id: &'a str,
    /// The VM's runtime directory.
    pub dir: &'a Path,
    /// The VMM's own uid and gid (ignis picks them per VM).
    pub uid: u32,
}

/// What a driver applies to confine its VMM (the cgroup is the caller's:
/// every VMM gets one).
#[derive(Debug, Clone, Default)]
pub struct Confined {
    pub confine: Confinement,
    /// Names of what confines it (`seccomp`, `jailer`), for `inspect`.
    pub sandbox: Vec<&'static str>,
    /// The jail's root on the host.
    pub chroot: Option<PathBuf>,
    /// What could not be applied, and why.
    pub warnings: Vec<String>,
    /// The VMM gets the per-VM cgroup (CPU and memory caps).
    pub cgroup: bool,
}

/// How a VM would be started by hand (the "raw VMM" baseline of the
/// benchmarks, and `ignis __boot-plan`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootPlan {
    pub backend: BackendKind,
    /// The command line (QEMU).
    pub argv: Vec<String>,
    /// A `--config-file` document for the same boot (Firecracker).
    pub firecracker_config: Option<serde_json::Value>,
}

/// Everything that differs between VMMs.
pub trait Driver: Send + Sync {
    fn kind(&self) -> BackendKind;
    fn capabilities(&self, accel: Accel) -> Capabilities;
    /// Whether this host can run the backend, and with which acceleration;
    /// `linux` says whether the guest kernel is Linux (a KVM that cannot
    /// run Linux still runs the test guest).
    fn host_check(&self, host: &HostInfo, linux: bool) -> Result<Accel, HostError>;
    /// The first line of the VMM's `--version`: a snapshot resumes only
    /// on the version that wrote it.
    fn version(&self) -> Option<String>;
    /// Kernel command-line arguments the VMM's devices need.
    fn kernel_args(&self, accel: Accel) -> Vec<String>;
    /// Decides and prepares the VMM's confinement (uid, seccomp, jail).
    fn confine(&self, req: &ConfineRequest<'_>) -> Confined;
    /// Starts the VMM (booting, or resuming `spec.restore`); its serial
    /// console output goes to `console`, its input comes from `input`.
    fn launch(&self, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError>;
    /// Control of the VM whose runtime directory is `dir`.
    fn control(&self, dir: &Path) -> Box<dyn Control>;
    /// The guest agent's stream (fails while the guest is not listening
    /// yet: callers retry; [`VmmError::NoAgent`] without an agent).
    fn connect_agent(&self, dir: &Path) -> Result<UnixStream, VmmError>;
    fn boot_plan(&self, spec: &VmSpec) -> BootPlan;
    /// Files the VMM uses in the VM's directory while it runs.
    fn runtime_files(&self) -> &'static [&'static str];
    /// What a stopped VMM left on the host (a jail, a RAM file), for
    /// `system check`.
    fn leftovers(&self, dir: &Path) -> Vec<Leftover>;
    /// Removes what [`Driver::leftovers`] lists and the runtime files.
    fn release(&self, dir: &Path);
}

/// Something a stopped VMM left on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What it is, in a word (`jail`, `memory`).
    pub kind: &'static str,
    pub path: PathBuf,
}

/// Every driver built in (for what a VM directory without a record left:
/// its VMM is unknown).
pub fn drivers() -> Vec<Box<dyn Driver>> {
    vec![
        Box::new(crate::firecracker::FirecrackerDriver),
        Box::new(crate::qemu::QemuDriver),
        #[cfg(any(test, feature = "fake"))]
        Box::new(crate::fake::FakeDriver),
    ]
}

/// The driver of `kind`. Binaries are looked up when they are needed
/// (launch, version), so a driver exists for cleanup even where its VMM is
/// not installed.
pub fn driver(kind: BackendKind) -> Result<Box<dyn Driver>, VmmError> {
    Ok(match kind {
        BackendKind::Firecracker => Box::new(crate::firecracker::FirecrackerDriver),
        BackendKind::Qemu => Box::new(crate::qemu::QemuDriver),
        #[cfg(any(test, feature = "fake"))]
        BackendKind::Fake => Box::new(crate::fake::FakeDriver),
        #[cfg(not(any(test, feature = "fake")))]
        BackendKind::Fake => return Err(VmmError::NotBuiltIn(kind)),
    })
}

/// The backends `auto` considers, in order of preference.
const PREFERENCE: [BackendKind; 2] = [BackendKind::Firecracker, BackendKind::Qemu];

/// The backend and acceleration for `req` on `host` (`auto`: the first of
/// Firecracker, QEMU that the host can run).
pub fn choose(
    req: BackendRequest,
    host: &HostInfo,
    linux: bool,
) -> Result<(BackendKind, Accel), HostError> {
    match req {
        BackendRequest::Kind(kind) => {
            let d = driver(kind).map_err(|e| HostError::new(e.to_string()))?;
            d.host_check(host, linux).map(|a| (kind, a))
        }
        BackendRequest::Auto => {
            let mut why = Vec::new();
            for kind in PREFERENCE {
                let checked = driver(kind)
                    .map_err(|e| HostError::new(e.to_string()))
                    .and_then(|d| d.host_check(host, linux));
                match checked {
                    Ok(accel) => return Ok((kind, accel)),
                    Err(e) => why.push(format!("{kind}: {e}")),
                }
            }
            Err(HostError::new(format!("no usable VMM: {}", why.join("; "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Kvm;

    use crate::detect::tests::host;

    #[test]
    fn auto_prefers_firecracker_then_qemu_kvm_then_tcg() {
        let ok = Kvm::Usable("kvm_intel".into());
        let auto = |h: &HostInfo| choose(BackendRequest::Auto, h, true);
        assert_eq!(
            auto(&host(ok.clone(), Some("1.12.0"), true)),
            Ok((BackendKind::Firecracker, Accel::Kvm))
        );
        assert_eq!(
            auto(&host(ok.clone(), Some("1.4.1"), true)),
            Ok((BackendKind::Qemu, Accel::Kvm))
        );
        let pvm = host(Kvm::CannotRunLinux("PVM".into()), Some("1.12.0"), true);
        assert_eq!(auto(&pvm), Ok((BackendKind::Qemu, Accel::Tcg)));
        // The test guest (not Linux) runs on Firecracker even there.
        assert_eq!(
            choose(BackendRequest::Kind(BackendKind::Firecracker), &pvm, false),
            Ok((BackendKind::Firecracker, Accel::Kvm))
        );
        let e = choose(BackendRequest::Kind(BackendKind::Firecracker), &pvm, true).unwrap_err();
        assert!(e.message.contains("use --backend qemu"), "{e}");
        let none = auto(&host(Kvm::Missing, None, false)).unwrap_err();
        assert!(
            none.message.contains("apt-get install qemu-system-x86"),
            "{none}"
        );
    }

    #[test]
    fn vcpu_limits_come_from_the_driver() {
        let f = BackendKind::Firecracker;
        let fc = driver(f).unwrap().capabilities(Accel::Kvm);
        assert!(
            fc.check_vcpus(f, 1).is_ok()
                && fc.check_vcpus(f, 2).is_ok()
                && fc.check_vcpus(f, 32).is_ok()
        );
        assert!(
            fc.check_vcpus(f, 3).is_err()
                && fc.check_vcpus(f, 0).is_err()
                && fc.check_vcpus(f, 34).is_err()
        );
        assert_eq!(
            fc.check_vcpus(f, 3).unwrap_err().to_string(),
            "3 is out of range: firecracker allows 1 or an even number 2..32"
        );
        let q = BackendKind::Qemu;
        let qc = driver(q).unwrap().capabilities(Accel::Tcg);
        assert!(
            qc.check_vcpus(q, 3).is_ok()
                && qc.check_vcpus(q, 64).is_ok()
                && qc.check_vcpus(q, 65).is_err()
        );
        assert!(qc.overhead_mib > fc.overhead_mib, "TCG's code cache");
    }
}
