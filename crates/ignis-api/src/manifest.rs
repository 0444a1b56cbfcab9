//! Declarative manifests: `apiVersion: ignis.dev/v1alpha1`, Kubernetes-style
//! metadata/spec/status. Unknown fields are errors (with their path).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "ignis.dev/v1alpha1";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Required, except in a `run --config` file (then --name or a
    /// generated name).
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `kind: VM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmManifest {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: VmManifestSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VmManifestStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmManifestSpec {
    /// Required by `apply`; a `run --config` file may leave it to the
    /// command line.
    #[serde(default)]
    pub image: String,
    /// Kernel name, ID or import source (e.g. an Ignite kernel image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// e.g. `512MB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Writable disk, e.g. `4GB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ManifestNetwork>,
    /// Authorize SSH: `""` generates a key pair, otherwise a public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    /// `HOST_PATH:VM_PATH`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_files: Vec<String>,
    /// Restart policy: `no` (default), `on-failure[:N]`, `always`,
    /// `unless-stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// `[SOURCE:]VM_PATH[:ro|rw]`, as `-v`: SOURCE a volume name, a disk
    /// image file or a block device; none: an anonymous volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The size of a volume created on first use (`--volume-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<String>,
    /// Seconds a stop waits for the guest before killing it
    /// (`--stop-timeout`; default 10, at most 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// cloud-init user-data, the content itself (`--user-data FILE`
    /// reads the file into it): delivered on a NoCloud seed disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// cloud-init meta-data, the content itself (a YAML mapping merged
    /// over ignis's `instance-id`, `local-hostname`, `public-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<String>,
    /// Desired state: running (default) or stopped.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub running: bool,
    /// Placement (GitOps fleets): run on exactly this node (`ignis daemon
    /// --node NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Placement: run on the first node, by name, whose labels
    /// (`--node-label`) include all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Run N copies named NAME-1..NAME-N, spread round-robin over the
    /// matching nodes sorted by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

impl VmManifestSpec {
    /// Whether the manifest says where it runs (otherwise: everywhere).
    pub fn is_placed(&self) -> bool {
        self.node_name.is_some() || !self.node_selector.is_empty() || self.replicas.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestNetwork {
    /// `bridge` (default), `none`, `cni[:NAME]` or `macvtap:LINK[,...]`,
    /// as `--network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Docker's `-p` syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A fixed IPv6 address on the bridge (`--ip6`; IPv6 on, `--subnet6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// A fixed MAC, e.g. `02:00:00:aa:bb:cc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Several NICs in order, eth0 first; with `mode` set, the NICs after
    /// the one `mode` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<ManifestInterface>,
    /// Nameservers for the guest (`--dns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Search domains (`--dns-search`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `NAME:IP` lines for /etc/hosts (`--add-host`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_hosts: Vec<String>,
}

/// One NIC of `spec.network.interfaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestInterface {
    /// `bridge`, `cni:NAME` or `macvtap:LINK[,ip=..][,gateway=..][,mac=..]`,
    /// as `--network` (`ip` and `mac` above are the first NIC's).
    pub network: String,
}

/// What is observed (written by `get`, and back to Git with
/// `--write-status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmManifestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `kind: Image`: the image must be present (pulled when missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ImageManifestSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageManifestSpec {
    /// A registry reference.
    pub reference: String,
}

/// `kind: Kernel`: imported when missing, named `metadata.name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: KernelManifestSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelManifestSpec {
    /// What `ignis kernel import` takes (file, .deb, `apt:`, OCI image).
    pub source: String,
    #[serde(default)]
    pub default: bool,
}

/// `kind: Snapshot`: a snapshot of a running VM, taken when missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: SnapshotManifestSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotManifestSpec {
    pub vm: String,
}

/// Any manifest.
#[allow(clippy::large_enum_variant)] // a handful per apply
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Manifest {
    Vm(VmManifest),
    Image(ImageManifest),
    Kernel(KernelManifest),
    Snapshot(SnapshotManifest),
}

impl Manifest {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Vm(_) => "VM",
            Self::Image(_) => "Image",
            Self::Kernel(_) => "Kernel",
            Self::Snapshot(_) => "Snapshot",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Self::Vm(m) => &m.metadata.name,
            Self::Image(m) => &m.metadata.name,
            Self::Kernel(m) => &m.metadata.name,
            Self::Snapshot(m) => &m.metadata.name,
        }
    }
}
