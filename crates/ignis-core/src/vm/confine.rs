//! Least privilege for a VM's VMM: its own uid/gid, QEMU's seccomp
//! sandbox or Firecracker's jailer, and a cgroup capping CPU and memory.
//! What was applied (and what could not be, with why) is recorded in the
//! VM's status, so `inspect` shows it.

use std::path::{Path, PathBuf};

use ignis_api::{CgroupLimits, Confinement, VmRecord};
use ignis_vmm::{Accel, BackendKind};

use crate::Ignis;

/// VMM uids and gids are `UID_BASE` + 24 bits of the VM's ID: distinct per
/// VM (a clash needs two IDs sharing their first six hex digits) and far
/// above the ranges distributions and user namespaces hand out.
pub const UID_BASE: u32 = 1_000_000_000;

/// `IGNIS_CONFINE=off` runs VMMs as root without sandbox or cgroup (for
/// debugging a VMM; `inspect` says so).
pub const ENV_CONFINE: &str = "IGNIS_CONFINE";
/// Where the jailer is, when it is not next to firecracker or on PATH.
pub const ENV_JAILER: &str = "IGNIS_JAILER";

pub fn vmm_uid(id: &str) -> u32 {
    let bits = id
        .get(..6)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    UID_BASE + bits
}

/// The jailer: `$IGNIS_JAILER`, else next to the firecracker binary, else
/// on PATH.
pub fn find_jailer(firecracker: Option<&Path>) -> Option<PathBuf> {
    if let Some(j) = std::env::var_os(ENV_JAILER) {
        return Some(PathBuf::from(j)).filter(|p| p.is_file());
    }
    firecracker
        .and_then(|f| {
            f.parent()
                .map(|d| d.join(ignis_vmm::firecracker::jail::BINARY))
        })
        .filter(|p| p.is_file())
        .or_else(|| ignis_vmm::detect::find_in_path(ignis_vmm::firecracker::jail::BINARY))
}

/// Every directory from `/` down to `dir` lets other users through
/// (o+x): the VMM's own uid must reach its files by path.
fn reachable_by_others(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors() {
        let mode = std::fs::metadata(d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!("{} is not searchable by other users", d.display()));
        }
    }
    Ok(())
}

impl Ignis {
    /// Decides and prepares (cgroup) the confinement of `rec`'s VMM.
    pub(crate) fn vmm_confinement(
        &self,
        rec: &VmRecord,
        kind: BackendKind,
        accel: Accel,
        firecracker: Option<&Path>,
    ) -> (ignis_vmm::Confinement, Option<Confinement>) {
        #[cfg(feature = "fake-vmm")]
        if kind == BackendKind::Fake {
            return (Default::default(), None);
        }
        let mut status = Confinement::default();
        if std::env::var(ENV_CONFINE).is_ok_and(|v| v == "off") {
            status
                .warnings
                .push(format!("confinement disabled by {ENV_CONFINE}=off: the VMM runs as root, unsandboxed, without limits"));
            return (Default::default(), Some(status));
        }
        if !rustix::process::geteuid().is_root() {
            status.warnings.push(
                "not root: the VMM runs as the calling user, without its own uid or cgroup limits"
                    .into(),
            );
            return (Default::default(), Some(status));
        }
        let mut confine = ignis_vmm::Confinement::default();
        let uid = vmm_uid(&rec.id);
        match kind {
            BackendKind::Qemu => {
                confine.sandbox = true;
                status.sandbox.push("seccomp".into());
                // QEMU reopens the VM's disks by path when it resumes after
                // a snapshot or restore, as the dropped user: it must reach
                // them, and own the writable one.
                let dir = self.vm_dir(&rec.id);
                match reachable_by_others(&dir) {
                    Ok(()) => {
                        match std::os::unix::fs::chown(dir.join("data.ext4"), Some(uid), Some(uid)) {
                            Ok(()) => confine.user = Some((uid, uid)),
                            Err(e) => status.warnings.push(format!(
                                "QEMU runs as root: cannot hand the writable disk to uid {uid}: {e}"
                            )),
                        }
                    }
                    Err(why) => status.warnings.push(format!(
                        "QEMU runs as root: {why}; make the state directory's parents world-searchable (chmod o+x) for -runas"
                    )),
                }
            }
            BackendKind::Firecracker => {
                // Firecracker installs its own seccomp filters.
                status.sandbox.push("seccomp".into());
                match find_jailer(firecracker) {
                    Some(j) => {
                        confine.user = Some((uid, uid));
                        confine.jailer = Some(j);
                        status.sandbox.push("jailer".into());
                        status.chroot = Some(
                            self.vm_dir(&rec.id)
                                .join(ignis_vmm::firecracker::jail::JAIL_DIR)
                                .display()
                                .to_string(),
                        );
                    }
                    None => status.warnings.push(format!(
                        "jailer not found (next to firecracker, on PATH or in {ENV_JAILER}): Firecracker runs as root without a chroot"
                    )),
                }
            }
            #[cfg(feature = "fake-vmm")]
            BackendKind::Fake => {}
        }
        if let Some((u, g)) = confine.user {
            status.user = Some(format!("{u}:{g}"));
        }
        let limits = ignis_vmm::cgroup::Limits {
            cpus: rec.spec.cpus,
            memory_bytes: (u64::from(rec.spec.memory_mib)
                + ignis_vmm::cgroup::vmm_overhead_mib(kind, accel))
                << 20,
        };
        match ignis_vmm::cgroup::Hierarchy::detect().and_then(|h| h.create(&rec.id, limits)) {
            Ok(cg) => {
                match cg.applied() {
                    Ok(a) => {
                        status.cgroup = Some(CgroupLimits {
                            version: match a.version {
                                ignis_vmm::cgroup::Version::V1 => "v1".into(),
                                ignis_vmm::cgroup::Version::V2 => "v2".into(),
                            },
                            paths: a.paths.iter().map(|p| p.display().to_string()).collect(),
                            cpu_quota_us: a.cpu_quota_us,
                            cpu_period_us: a.cpu_period_us,
                            memory_max_bytes: a.memory_max_bytes,
                        })
                    }
                    Err(e) => status
                        .warnings
                        .push(format!("cannot read the cgroup back: {e}")),
                }
                confine.cgroup = Some(std::sync::Arc::new(cg));
            }
            Err(e) => status.warnings.push(format!("no CPU or memory caps: {e}")),
        }
        (confine, Some(status))
    }

    /// Releases what a stopped VM held on the host: TAP, RAM file, runtime
    /// sockets, jail, cgroup. Idempotent: every path that ends a VM calls it.
    pub(crate) fn release_host_resources(&self, rec: &VmRecord) {
        self.release_network(rec);
        let dir = self.vm_dir(&rec.id);
        let _ = std::fs::remove_file(ignis_vmm::qemu::memory_path(&dir));
        for f in super::supervise::RUNTIME_FILES {
            let _ = std::fs::remove_file(dir.join(f));
        }
        ignis_vmm::firecracker::jail::remove(&dir);
        if let Ok(h) = ignis_vmm::cgroup::Hierarchy::detect() {
            h.remove(&rec.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_uids_are_per_vm_and_above_the_usual_ranges() {
        assert_eq!(vmm_uid("000000aa"), UID_BASE);
        assert_eq!(vmm_uid("ffffff00"), UID_BASE + 0xff_ffff);
        assert_ne!(vmm_uid("1c1cb353e841f20d"), vmm_uid("2a10c1ebd9af7d0c"));
        assert!(UID_BASE + 0xff_ffff < i32::MAX as u32);
    }
}
