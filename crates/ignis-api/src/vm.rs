use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::state::{Accel, BackendKind, Health, NetworkMode, VmState};

/// How the guest init runs the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// The OCI Entrypoint+Cmd (or the given command) is the workload.
    App,
    /// The image's /sbin/init boots as PID 1.
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyFileSpec {
    pub host: String,
    pub vm: String,
}

/// A published port (`-p`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub vm_port: u16,
    pub proto: String,
}

impl std::fmt::Display for PortSpec {
    /// Docker's PORTS column form: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.host_ip.as_deref() {
            Some(v6) if v6.contains(':') => format!("[{v6}]"),
            Some(v4) => v4.to_string(),
            None => "0.0.0.0".into(),
        };
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port, self.vm_port, self.proto
        )
    }
}

/// The VM's network: `bridge` (an address on the ignis bridge, NAT out,
/// published ports) or `none`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    pub mode: NetworkMode,
    /// Leased at create, stable across restarts, freed on rm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// IPv6 on the bridge (`--subnet6`): the leased address, its prefix
    /// length and the gateway (the bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Mode `cni`: the CNI network (the `name` of a conflist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<String>,
    /// Mode `macvtap`: the host interface the VM's macvtap sits on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The NICs after the first (`eth1`, ...), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<NicSpec>,
    /// `--dns`: the guest's nameservers (else the host's, see
    /// `ignis_net::dns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// `--dns-search`: the guest's search domains (else the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--add-host NAME:IP`: more /etc/hosts lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_hosts: Vec<String>,
}

/// One NIC of a VM: the first is [`NetworkSpec`]'s own fields, the others
/// are its `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicSpec {
    pub mode: NetworkMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<String>,
    /// Mode `macvtap`: the host interface it sits on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// IPv6 on the bridge (`--subnet6`): the leased address, its prefix
    /// length and the gateway (the bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
}

impl NicSpec {
    /// A NIC on `mode` with nothing chosen yet (address, MAC, ...).
    pub fn new(mode: NetworkMode) -> Self {
        Self {
            mode,
            cni: None,
            link: None,
            ip: None,
            prefix: None,
            gateway: None,
            mac: None,
            ip6: None,
            prefix6: None,
            gateway6: None,
        }
    }

    /// `bridge`, `cni:NAME` or `macvtap:LINK`, as `--network` takes it.
    pub fn network(&self) -> String {
        match (&self.mode, &self.cni, &self.link) {
            (NetworkMode::Cni, Some(n), _) => format!("cni:{n}"),
            (NetworkMode::Macvtap, _, Some(l)) => format!("macvtap:{l}"),
            (m, _, _) => m.as_str().to_string(),
        }
    }
}

impl NetworkSpec {
    /// Every NIC in order (none for `--network none`).
    pub fn nics(&self) -> Vec<NicSpec> {
        let mut v = Vec::new();
        if self.mode != NetworkMode::None {
            v.push(NicSpec {
                mode: self.mode,
                cni: self.cni.clone(),
                link: self.link.clone(),
                ip: self.ip.clone(),
                prefix: self.prefix,
                gateway: self.gateway.clone(),
                mac: self.mac.clone(),
                ip6: self.ip6.clone(),
                prefix6: self.prefix6,
                gateway6: self.gateway6.clone(),
            });
        }
        v.extend(self.interfaces.iter().cloned());
        v
    }

    /// Replaces the NICs (the first into the top-level fields).
    pub fn set_nics(&mut self, nics: Vec<NicSpec>) {
        let mut it = nics.into_iter();
        match it.next() {
            Some(first) => {
                self.mode = first.mode;
                self.cni = first.cni;
                self.link = first.link;
                self.ip = first.ip;
                self.prefix = first.prefix;
                self.gateway = first.gateway;
                self.mac = first.mac;
                self.ip6 = first.ip6;
                self.prefix6 = first.prefix6;
                self.gateway6 = first.gateway6;
            }
            None => {
                self.mode = NetworkMode::None;
                self.cni = None;
                self.link = None;
                self.ip = None;
                self.prefix = None;
                self.gateway = None;
                self.mac = None;
                self.ip6 = None;
                self.prefix6 = None;
                self.gateway6 = None;
            }
        }
        self.interfaces = it.collect();
    }

    /// Some NIC is on a CNI network.
    pub fn uses_cni(&self) -> bool {
        self.nics().iter().any(|n| n.mode == NetworkMode::Cni)
    }

    /// Some NIC is a macvtap on a host interface.
    pub fn uses_macvtap(&self) -> bool {
        self.nics().iter().any(|n| n.mode == NetworkMode::Macvtap)
    }

    /// Some NIC is on the ignis bridge.
    pub fn uses_bridge(&self) -> bool {
        self.nics().iter().any(|n| n.mode == NetworkMode::Bridge)
    }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            mode: NetworkMode::None,
            ip: None,
            prefix: None,
            gateway: None,
            mac: None,
            ip6: None,
            prefix6: None,
            gateway6: None,
            bridge: None,
            ports: vec![],
            cni: None,
            link: None,
            interfaces: vec![],
            dns: vec![],
            dns_search: vec![],
            add_hosts: vec![],
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSpec {
    pub cpus: u32,
    pub memory_mib: u32,
    /// Size of the writable disk in bytes.
    pub disk_size: u64,
    pub backend: BackendKind,
    pub accel: Accel,
    pub mode: RunMode,
    /// The workload command (app mode), Entrypoint+Cmd resolved at create.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub kernel_args: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub copy_files: Vec<CopyFileSpec>,
    /// Remove the VM when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub network: NetworkSpec,
    /// Lineage: the snapshot this VM was restored (forked) from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotOrigin>,
    /// `--ssh`: the public key installed as root's authorized key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
    /// `--restart`: what the supervisor does when the VM ends on its own.
    #[serde(default, skip_serializing_if = "crate::RestartPolicy::is_no")]
    pub restart: crate::RestartPolicy,
    /// Volumes mounted in the guest, in the order of their disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::VolumeMount>,
    /// `--stop-timeout`: seconds a stop waits for the guest to shut down
    /// before the VM is killed, when the stop names none (Docker's
    /// StopTimeout; none: 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// `--user-data`: cloud-init user-data (text), delivered on a NoCloud
    /// seed disk (label `cidata`) with `meta-data` and `network-config`.
    /// The seed is attached only when this or `meta_data` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// `--meta-data`: cloud-init meta-data (a YAML mapping) merged over
    /// the seed's own (`instance-id`, `local-hostname`, `public-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<String>,
}

impl VmSpec {
    /// Whether the VM gets a cloud-init NoCloud seed disk.
    pub fn has_seed(&self) -> bool {
        self.user_data.is_some() || self.meta_data.is_some()
    }
}

/// The snapshot a fork resumes: its ID and the blobs the VM keeps
/// referenced (so removing the snapshot does not pull them from under it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotOrigin {
    pub id: String,
    pub state: String,
    pub memory: String,
    /// The snapshot's guest runs the ignis agent.
    #[serde(default = "yes")]
    pub agent: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshSpec {
    /// One `authorized_keys` line.
    pub authorized_key: String,
    /// ignis generated the key pair (its private half is in the VM's
    /// directory, used by `ignis ssh`).
    pub generated: bool,
}

/// What is observed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmStatus {
    pub state: Option<VmState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
    /// Start time of the supervisor process (clock ticks since boot, from
    /// /proc/PID/stat), so a reused PID is not mistaken for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm_pid: Option<u32>,
    /// The host's boot ID when it started: after a reboot it is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339::option"
    )]
    pub started_at: Option<i64>,
    /// Milliseconds from start to the guest init reporting ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339::option"
    )]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The guest agent's health; absent without an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Milliseconds from start to the agent's first greeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ms: Option<u64>,
    /// The next start resumes the snapshot in `spec.snapshot` instead of
    /// booting (a fork that has not run yet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_pending: bool,
    /// Running but its vCPUs are paused (`ignis pause`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// How the running VMM is confined (set when it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<Confinement>,
    /// Where the time of the latest start went (`run`, `start`, `fork`,
    /// `restore`), phase by phase, on one clock that begins when the
    /// command did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<PhaseTiming>,
    /// How often the supervisor restarted the VM since its last start
    /// (restart policy, guest reboots).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// Exited, and its supervisor starts it again after a back-off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting: bool,
    /// Its last run ended by `ignis stop` or `ignis kill` (an
    /// `unless-stopped` VM stays down after a host reboot).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_by_user: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One phase of a start: `create`, `disk`, `initramfs`, `spawn`,
/// `vmm-configured`, `guest-ready`, ... (see ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseTiming {
    pub phase: String,
    /// Microseconds from the start of the command to the start of the phase.
    pub at_us: u64,
    /// How long the phase took, in microseconds.
    pub took_us: u64,
}

/// The least privilege a VMM runs with, as applied (read back from the
/// kernel where it holds it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Confinement {
    /// `uid:gid` the VMM runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `seccomp` (QEMU's -sandbox), `jailer` (Firecracker's chroot jail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox: Vec<String>,
    /// The jail's root on the host (Firecracker under its jailer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chroot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupLimits>,
    /// What could not be applied, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CgroupLimits {
    /// `v1` or `v2`.
    pub version: String,
    pub paths: Vec<String>,
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub memory_max_bytes: u64,
}

/// A VM: identity, what it runs, what was asked, what is observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmRecord {
    /// 16 hex digits.
    pub id: String,
    pub name: String,
    pub image_id: String,
    /// The image reference the user gave, for display.
    pub image: String,
    pub kernel_id: String,
    #[serde(with = "crate::time::rfc3339")]
    pub created: i64,
    pub spec: VmSpec,
    pub status: VmStatus,
}

impl VmRecord {
    pub fn state(&self) -> VmState {
        self.status.state.unwrap_or(VmState::Created)
    }

    pub fn run_state(&self) -> crate::state::RunState {
        self.status.run_state()
    }
}
