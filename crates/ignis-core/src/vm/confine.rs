//! Least privilege for a VM's VMM: its own uid/gid and a cgroup capping
//! CPU and memory (here), and what its driver adds (QEMU's seccomp
//! sandbox, Firecracker's jailer).
//! What was applied (and what could not be, with why) is recorded in the
//! VM's status, so `inspect` shows it.

use ignis_api::{CgroupLimits, Confinement, VmRecord};

use crate::Ignis;

/// VMM uids and gids are `UID_BASE` + 24 bits of the VM's ID: distinct per
/// VM (a clash needs two IDs sharing their first six hex digits) and far
/// above the ranges distributions and user namespaces hand out.
pub const UID_BASE: u32 = 1_000_000_000;

/// `IGNIS_CONFINE=off` runs VMMs as root without sandbox or cgroup (for
/// debugging a VMM; `inspect` says so).
pub const ENV_CONFINE: &str = "IGNIS_CONFINE";

pub fn vmm_uid(id: &str) -> u32 {
    let bits = id
        .get(..6)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    UID_BASE + bits
}

impl Ignis {
    /// Decides and prepares the confinement of `rec`'s VMM: what every
    /// VMM gets (its own uid, a cgroup capping CPU and memory) here, what
    /// differs between VMMs (sandbox, jail) from its driver.
    pub(crate) fn vmm_confinement(
        &self,
        rec: &VmRecord,
        driver: &dyn ignis_vmm::Driver,
    ) -> (ignis_vmm::Confinement, Option<Confinement>) {
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
        let dir = self.vm_dir(&rec.id);
        let confined = driver.confine(&ignis_vmm::ConfineRequest {
            id: &rec.id,
            dir: &dir,
            uid: vmm_uid(&rec.id),
        });
        let mut confine = confined.confine;
        status.sandbox = confined.sandbox.iter().map(|s| s.to_string()).collect();
        status.chroot = confined.chroot.map(|c| c.display().to_string());
        status.warnings = confined.warnings;
        if let Some((u, g)) = confine.user {
            status.user = Some(format!("{u}:{g}"));
        }
        if !confined.cgroup {
            return (confine, Some(status));
        }
        let limits = ignis_vmm::cgroup::Limits {
            cpus: rec.spec.cpus,
            memory_bytes: (u64::from(rec.spec.memory_mib)
                + driver.capabilities(rec.spec.accel).overhead_mib)
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

    /// Releases what a stopped VM held on the host: TAP, runtime files,
    /// what its VMM left (jail, RAM file), cgroup. Idempotent: every path
    /// that ends a VM calls it.
    pub(crate) fn release_host_resources(&self, rec: &VmRecord) {
        self.release_host_resources_but(rec, &[]);
    }

    /// [`Ignis::release_host_resources`] but the runtime files in `keep`
    /// (the sockets a restarting supervisor keeps serving).
    pub(crate) fn release_host_resources_but(&self, rec: &VmRecord, keep: &[&str]) {
        self.release_network(rec);
        let dir = self.vm_dir(&rec.id);
        for f in super::supervise::RUNTIME_FILES
            .iter()
            .filter(|f| !keep.contains(f))
        {
            let _ = std::fs::remove_file(dir.join(f));
        }
        if let Ok(d) = super::driver(rec.spec.backend) {
            d.release(&dir);
        }
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
