//! Ignite's `ignite.weave.works/v1alpha4` VM manifests, converted to ours:
//! a migration path for Ignite users (their GitOps repositories work as
//! they are). `spec.storage` (block device volumes and their mounts)
//! becomes `spec.volumes`; the Ignite-only `sandbox` is accepted and
//! ignored; anything else unknown is an error, as in our own manifests.

use std::collections::BTreeMap;

use ignis_api::manifest::{
    ManifestNetwork, Metadata, VmManifest, VmManifestSpec, API_VERSION as OURS,
};
use serde::Deserialize;

use crate::Error;

pub const API_VERSION: &str = "ignite.weave.works/v1alpha4";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IgniteVm {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: IgniteMeta,
    spec: IgniteSpec,
    #[serde(default)]
    status: Option<IgniteStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteMeta {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    uid: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    created: Option<serde_yaml::Value>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Oci {
    oci: String,
    #[serde(default)]
    cmd_line: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteSpec {
    image: Oci,
    #[serde(default)]
    kernel: Option<Oci>,
    #[serde(default)]
    #[allow(dead_code)]
    sandbox: Option<serde_yaml::Value>,
    #[serde(default)]
    cpus: Option<u32>,
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    disk_size: Option<String>,
    #[serde(default)]
    network: Option<IgniteNetwork>,
    #[serde(default)]
    storage: Option<IgniteStorage>,
    #[serde(default)]
    copy_files: Vec<IgniteFile>,
    /// `true` (generate a key) or a public key path.
    #[serde(default)]
    ssh: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteNetwork {
    #[serde(default)]
    ports: Vec<IgnitePort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgnitePort {
    #[serde(default)]
    bind_address: Option<String>,
    host_port: u16,
    vm_port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

/// Ignite's `VMStorageSpec`: volumes (block devices) and where each is
/// mounted.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteStorage {
    #[serde(default)]
    volumes: Vec<IgniteVolume>,
    #[serde(default)]
    volume_mounts: Vec<IgniteVolumeMount>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteVolume {
    name: String,
    #[serde(default)]
    block_device: Option<IgniteBlockDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteBlockDevice {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteVolumeMount {
    name: String,
    mount_path: String,
}

/// `spec.storage` as `-v` values: each mount's block device at its path.
fn storage_volumes(st: &IgniteStorage, origin: &str) -> Result<Vec<String>, Error> {
    let bad = |m: String| Error::new(crate::ErrorKind::Invalid, format!("{origin}: {m}"));
    let mut out = Vec::new();
    for (i, m) in st.volume_mounts.iter().enumerate() {
        let v = st
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| {
                bad(format!(
                    "spec.storage.volumeMounts[{i}]: no volume named '{}' in spec.storage.volumes",
                    m.name
                ))
            })?;
        let dev = v.block_device.as_ref().ok_or_else(|| {
            bad(format!(
                "spec.storage.volumes '{}': only blockDevice volumes are supported",
                v.name
            ))
        })?;
        out.push(format!("{}:{}", dev.path, m.mount_path));
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgniteFile {
    host_path: String,
    vm_path: String,
}

/// Ignite keeps the observed state in `status`; in GitOps mode
/// `status.running` is the wish.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IgniteStatus {
    #[serde(default)]
    running: Option<bool>,
}

/// Ignite sizes are `800MB`, `4GB` or raw byte counts.
fn size(v: &Option<String>) -> Option<String> {
    v.clone()
}

pub fn convert(vm: IgniteVm, origin: &str) -> Result<VmManifest, Error> {
    let ssh = match &vm.spec.ssh {
        None | Some(serde_yaml::Value::Bool(false)) => None,
        Some(serde_yaml::Value::Bool(true)) => Some(String::new()),
        Some(serde_yaml::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(Error::new(
                crate::ErrorKind::Invalid,
                format!("{origin}: spec.ssh: want true or a public key path, got {other:?}"),
            ))
        }
    };
    let ports = vm
        .spec
        .network
        .map(|n| n.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let proto = p
                .protocol
                .unwrap_or_else(|| "tcp".into())
                .to_ascii_lowercase();
            match p.bind_address.filter(|a| !a.is_empty() && a != "0.0.0.0") {
                Some(a) => format!("{a}:{}:{}/{proto}", p.host_port, p.vm_port),
                None => format!("{}:{}/{proto}", p.host_port, p.vm_port),
            }
        })
        .collect::<Vec<_>>();
    let volumes = match &vm.spec.storage {
        Some(st) => storage_volumes(st, origin)?,
        None => vec![],
    };
    let mut annotations = vm.metadata.annotations;
    annotations.insert("ignis.dev/converted-from".into(), API_VERSION.into());
    Ok(VmManifest {
        api_version: OURS.into(),
        kind: "VM".into(),
        metadata: Metadata {
            name: vm.metadata.name,
            labels: vm.metadata.labels,
            annotations,
        },
        spec: VmManifestSpec {
            image: vm.spec.image.oci,
            kernel: vm.spec.kernel.as_ref().map(|k| k.oci.clone()),
            kernel_args: vm.spec.kernel.and_then(|k| k.cmd_line),
            cpus: vm.spec.cpus,
            memory: size(&vm.spec.memory),
            disk_size: size(&vm.spec.disk_size),
            network: (!ports.is_empty()).then(|| ManifestNetwork {
                ports,
                ..Default::default()
            }),
            ssh,
            copy_files: vm
                .spec
                .copy_files
                .into_iter()
                .map(|f| format!("{}:{}", f.host_path, f.vm_path))
                .collect(),
            volumes,
            running: vm.status.and_then(|s| s.running).unwrap_or(true),
            node_name: None,
            node_selector: BTreeMap::new(),
            replicas: None,
            ..Default::default()
        },
        status: None,
    })
}
