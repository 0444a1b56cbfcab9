//! The reconciler: level-based, idempotent convergence of the host to a
//! set of manifests. `ignis apply` runs it once; the daemon runs it on
//! every change and every interval. Each manifest converges on its own: one
//! that fails is reported and does not stop the others.

use std::collections::BTreeMap;

use ignis_api::manifest::{
    Manifest, ManifestNetwork, Metadata, VmManifest, VmManifestSpec, VmManifestStatus, API_VERSION,
};
use ignis_api::{VmRecord, VmState};
use serde::Serialize;

use crate::vm::VmSettings;
use crate::{Error, ErrorKind, Ignis};

/// VMs converged at once (each start waits for its guest to be ready).
const APPLY_PARALLELISM: usize = 8;

/// Label: who manages the VM (`cli`, `dir:<path>`, `git:<url>`).
pub const OWNER: &str = "ignis.dev/owner";
/// Label: digest of the manifest spec the VM was created from.
pub const SPEC_HASH: &str = "ignis.dev/spec-hash";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "message")]
pub enum Action {
    Created,
    Recreated,
    Started,
    Stopped,
    Unchanged,
    Removed,
    /// Image/kernel/snapshot already there, or made present.
    Present,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Applied {
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
}

fn spec_hash(spec: &VmManifestSpec) -> String {
    let mut s = spec.clone();
    s.running = true; // desired power state is not identity
                      // Nor is where it runs: a VM whose placement changed but that stays on
                      // this node is left alone.
    s.node_name = None;
    s.node_selector.clear();
    s.replicas = None;
    let json = serde_json::to_vec(&s).expect("json");
    ignis_image::import::sha256(&json)[7..23].to_string()
}

impl Ignis {
    fn vm_by_name(&self, name: &str) -> Result<Option<VmRecord>, Error> {
        Ok(self.vm_list(true)?.into_iter().find(|v| v.name == name))
    }

    /// Converges each manifest (kernels and images first, then VMs, then
    /// snapshots). VMs created here carry `owner`.
    pub fn apply(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        // `replicas: N` is N VMs (here: all on this host; the GitOps
        // daemon places them across nodes before calling this).
        let manifests = &super::placement::expand_here(manifests);
        let mut out = Vec::new();
        let order = |m: &Manifest| match m {
            Manifest::Kernel(_) => 0,
            Manifest::Image(_) => 1,
            Manifest::Vm(_) => 2,
            Manifest::Snapshot(_) => 3,
        };
        let mut sorted: Vec<&Manifest> = manifests.iter().collect();
        sorted.sort_by_key(|m| order(m));
        // Kernels and images first (VMs need them), then VMs in parallel
        // (each waits for its guest), then snapshots of them.
        for stage in 0..=3 {
            let batch: Vec<&Manifest> = sorted
                .iter()
                .copied()
                .filter(|m| order(m) == stage)
                .collect();
            let results: Vec<Applied> = if stage == 2 {
                let mut done = Vec::new();
                for chunk in batch.chunks(APPLY_PARALLELISM) {
                    done.extend(std::thread::scope(|scope| {
                        let handles: Vec<_> = chunk
                            .iter()
                            .map(|m| scope.spawn(move || self.apply_one(m, owner)))
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().expect("apply thread"))
                            .collect::<Vec<_>>()
                    }));
                }
                done
            } else {
                batch.iter().map(|m| self.apply_one(m, owner)).collect()
            };
            out.extend(results);
        }
        out
    }

    fn apply_one(&self, m: &Manifest, owner: &str) -> Applied {
        {
            let action = match m {
                Manifest::Vm(vm) => self.apply_vm(vm, owner),
                Manifest::Image(i) => self
                    .image_inspect(&i.spec.reference)
                    .or_else(|_| self.image_pull(&i.spec.reference))
                    .map(|_| Action::Present),
                Manifest::Kernel(k) => self
                    .kernel_inspect(&k.metadata.name)
                    .map(|_| Action::Present)
                    .or_else(|_| {
                        self.kernel_import(&k.spec.source, Some(&k.metadata.name), k.spec.default)
                            .map(|_| Action::Created)
                    }),
                Manifest::Snapshot(s) => self
                    .snapshot_inspect(&s.metadata.name)
                    .map(|_| Action::Present)
                    .or_else(|_| {
                        self.vm_snapshot(&s.spec.vm, Some(&s.metadata.name))
                            .map(|_| Action::Created)
                    }),
            }
            .unwrap_or_else(|e| Action::Failed(e.to_string()));
            if let Action::Failed(why) = &action {
                tracing::warn!(kind = m.kind(), name = m.name(), why, "manifest failed");
            }
            Applied {
                kind: m.kind().into(),
                name: m.name().into(),
                action,
            }
        }
    }

    /// `apply`, then removes the VMs of `owner` that no manifest names any
    /// more (the reconciler's view: the manifests are the whole truth).
    pub fn converge(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        let manifests = &super::placement::expand_here(manifests);
        let mut out = self.apply(manifests, owner);
        let wanted: std::collections::BTreeSet<&str> = manifests
            .iter()
            .filter_map(|m| match m {
                Manifest::Vm(v) => Some(v.metadata.name.as_str()),
                _ => None,
            })
            .collect();
        if let Ok(vms) = self.vm_list(true) {
            for v in vms {
                if v.spec.labels.get(OWNER).map(String::as_str) == Some(owner)
                    && !wanted.contains(v.name.as_str())
                {
                    let action = match self.vm_remove(&v.id, true) {
                        Ok(_) => Action::Removed,
                        Err(e) => Action::Failed(e.to_string()),
                    };
                    out.push(Applied {
                        kind: "VM".into(),
                        name: v.name,
                        action,
                    });
                }
            }
        }
        out
    }

    /// `ignis delete -f`: removes the VMs (and snapshots) the manifests name.
    pub fn delete_manifests(&self, manifests: &[Manifest]) -> Vec<Applied> {
        super::placement::expand_here(manifests)
            .iter()
            .filter_map(|m| {
                let r = match m {
                    Manifest::Vm(v) => match self.vm_by_name(&v.metadata.name) {
                        Ok(Some(rec)) => self.vm_remove(&rec.id, true).map(|_| Action::Removed),
                        Ok(None) => Ok(Action::Unchanged),
                        Err(e) => Err(e),
                    },
                    Manifest::Snapshot(s) => self
                        .snapshot_remove(&s.metadata.name)
                        .map(|_| Action::Removed),
                    _ => return None, // images and kernels are shared: `image rm` them
                };
                Some(Applied {
                    kind: m.kind().into(),
                    name: m.name().into(),
                    action: r.unwrap_or_else(|e| Action::Failed(e.to_string())),
                })
            })
            .collect()
    }

    fn create_from(&self, m: &VmManifest, owner: &str, hash: &str) -> Result<VmRecord, Error> {
        // The one conversion every front end uses: environment defaults
        // < the manifest (< flags, for the CLI's --config).
        let mut settings = VmSettings::from_environment().overlay(VmSettings::from_manifest(m));
        settings.labels.insert(OWNER.into(), owner.into());
        settings.labels.insert(SPEC_HASH.into(), hash.into());
        let rec = self.vm_create(&settings.parse()?)?;
        crate::fault::point("apply:vm-created");
        if m.spec.running {
            return self.vm_start(&rec.id, true);
        }
        Ok(rec)
    }

    fn apply_vm(&self, m: &VmManifest, owner: &str) -> Result<Action, Error> {
        let hash = spec_hash(&m.spec);
        let Some(rec) = self.vm_by_name(&m.metadata.name)? else {
            self.create_from(m, owner, &hash)?;
            return Ok(Action::Created);
        };
        let Some(their_owner) = rec.spec.labels.get(OWNER) else {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM {} exists and was not created from a manifest; remove it or rename the manifest",
                    rec.name
                ),
            ));
        };
        if their_owner != owner {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("VM {} is managed by {their_owner}", rec.name),
            ));
        }
        if rec.spec.labels.get(SPEC_HASH) != Some(&hash) {
            self.vm_remove(&rec.id, true)?;
            self.create_from(m, owner, &hash)?;
            return Ok(Action::Recreated);
        }
        match (m.spec.running, rec.state()) {
            (true, VmState::Running) | (false, VmState::Created | VmState::Exited) => {
                Ok(Action::Unchanged)
            }
            (true, _) => self.vm_start(&rec.id, true).map(|_| Action::Started),
            (false, VmState::Running) => self.vm_stop(&rec.id, None).map(|_| Action::Stopped),
        }
    }

    /// A VM as a manifest with its observed status (`ignis get vm`).
    pub fn vm_manifest(&self, query: &str) -> Result<VmManifest, Error> {
        let rec = self.vm_inspect(query)?;
        let s = &rec.spec;
        let mut labels = s.labels.clone();
        labels.remove(SPEC_HASH);
        Ok(VmManifest {
            api_version: API_VERSION.into(),
            kind: "VM".into(),
            metadata: Metadata {
                name: rec.name.clone(),
                labels,
                annotations: BTreeMap::new(),
            },
            spec: VmManifestSpec {
                image: rec.image.clone(),
                kernel: None,
                kernel_args: s.kernel_args.clone(),
                cpus: Some(s.cpus),
                memory: Some(format!("{}MB", s.memory_mib)),
                disk_size: Some(format!("{}MB", s.disk_size >> 20)),
                command: s.command.clone(),
                env: s.env.clone(),
                backend: Some(s.backend.to_string()),
                network: Some(manifest_network(&s.network)),
                ssh: s.ssh.as_ref().map(|k| {
                    if k.generated {
                        String::new()
                    } else {
                        k.authorized_key.clone()
                    }
                }),
                copy_files: s
                    .copy_files
                    .iter()
                    .map(|c| format!("{}:{}", c.host, c.vm))
                    .collect(),
                restart: (!s.restart.is_no()).then(|| s.restart.to_string()),
                volumes: s
                    .volumes
                    .iter()
                    .map(|v| {
                        let ro = if v.read_only { ":ro" } else { "" };
                        format!("{}:{}{ro}", v.source, v.target)
                    })
                    .collect(),
                volume_size: None,
                stop_timeout: s.stop_timeout,
                user_data: s.user_data.clone(),
                meta_data: s.meta_data.clone(),
                running: rec.state() == VmState::Running,
                node_name: None,
                node_selector: BTreeMap::new(),
                replicas: None,
            },
            status: Some(VmManifestStatus {
                id: Some(rec.id.clone()),
                state: Some(rec.state().as_str().into()),
                ip: s.network.ip.clone(),
                health: rec.status.health.map(|h| h.as_str().to_string()),
                exit_code: rec.status.exit_code,
                message: rec.status.reason.clone(),
            }),
        })
    }
}

/// A VM's network as a manifest writes it: `mode` for one NIC (or none),
/// `interfaces` for several.
fn manifest_network(n: &ignis_api::NetworkSpec) -> ManifestNetwork {
    let dns = ManifestNetwork {
        dns: n.dns.clone(),
        dns_search: n.dns_search.clone(),
        add_hosts: n.add_hosts.clone(),
        ..Default::default()
    };
    let nics = n.nics();
    let ports = n.ports.iter().map(|p| p.to_string()).collect();
    if nics.len() > 1 {
        return ManifestNetwork {
            ports,
            interfaces: nics
                .iter()
                .map(|nic| ignis_api::manifest::ManifestInterface {
                    network: nic.network(),
                })
                .collect(),
            ..dns
        };
    }
    ManifestNetwork {
        mode: Some(
            nics.first()
                .map(|nic| nic.network())
                .unwrap_or_else(|| "none".into()),
        ),
        ports,
        ..dns
    }
}
