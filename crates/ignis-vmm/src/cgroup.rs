//! Per-VM cgroups: the VMM runs in `ignis/<vm id>` with its CPU and memory
//! capped. cgroup v2 (`cpu.max`, `memory.max`) where the unified hierarchy
//! has the controllers; cgroup v1 (`cpu.cfs_quota_us`,
//! `memory.limit_in_bytes`) on hosts that still mount the controllers
//! there. Hand-written: the cgroup crates either target only v2 or pull in
//! a full container runtime's configuration model for four files.
//!
//! The supervisor moves the VMM into its cgroup right after spawning it
//! ([`VmCgroup::add`]), in a thread, while the guest boots: a migration
//! waits for an RCU grace period (cgroup_threadgroup_rwsem; 5 to 16 ms
//! measured here, on cgroup v1 and v2 alike), which would otherwise sit on
//! every start's critical path, as it did when the VMM joined between fork
//! and exec. On cgroup v1 the memory charged before the move moves with it
//! (`memory.move_charge_at_immigrate`); the start returns only once the
//! VMM is inside.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The CFS period used for CPU caps (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// Where cgroups are created on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// v2: the unified mount. v1: the directory holding the controller
    /// mounts (`cpu/`, `memory/`).
    pub mount: PathBuf,
}

/// CPU and memory caps of one VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU time per period, in whole CPUs (the VM's vCPU count).
    pub cpus: u32,
    pub memory_bytes: u64,
}

/// What a VM's cgroup enforces, read back from the kernel's files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub version: Version,
    /// One path per hierarchy the VMM is in (v1: cpu and memory).
    pub paths: Vec<PathBuf>,
    /// CPU quota and period in µs.
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub memory_max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: neither cgroup v2 with the cpu and memory controllers nor cgroup v1 cpu and memory mounts under {0}")]
    Unavailable(String),
    #[error("cgroup {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io(path))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(io(path))
}

impl Hierarchy {
    /// The host's hierarchy under `/sys/fs/cgroup`.
    pub fn detect() -> Result<Self, CgroupError> {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    pub fn detect_at(mount: &Path) -> Result<Self, CgroupError> {
        if let Ok(c) = std::fs::read_to_string(mount.join("cgroup.controllers")) {
            let has = |n: &str| c.split_whitespace().any(|w| w == n);
            if has("cpu") && has("memory") {
                return Ok(Self {
                    version: Version::V2,
                    mount: mount.to_path_buf(),
                });
            }
        }
        if mount.join("cpu/cpu.cfs_quota_us").exists()
            && mount.join("memory/memory.limit_in_bytes").exists()
        {
            return Ok(Self {
                version: Version::V1,
                mount: mount.to_path_buf(),
            });
        }
        Err(CgroupError::Unavailable(mount.display().to_string()))
    }

    /// The directories of VM `id` (v2: one; v1: cpu, memory).
    pub fn paths(&self, id: &str) -> Vec<PathBuf> {
        match self.version {
            Version::V2 => vec![self.mount.join("ignis").join(id)],
            Version::V1 => ["cpu", "memory"]
                .iter()
                .map(|c| self.mount.join(c).join("ignis").join(id))
                .collect(),
        }
    }

    /// Creates (or resets) the cgroup of VM `id` with `limits` and returns
    /// it, ready to be joined by the VMM. A failure removes what it made.
    pub fn create(&self, id: &str, limits: Limits) -> Result<VmCgroup, CgroupError> {
        let paths = self.paths(id);
        let made = || -> Result<VmCgroup, CgroupError> {
            let quota = u64::from(limits.cpus.max(1)) * CPU_PERIOD_US;
            match self.version {
                Version::V2 => {
                    let parent = self.mount.join("ignis");
                    std::fs::create_dir_all(&paths[0]).map_err(io(&paths[0]))?;
                    // Controllers must be enabled top-down for the leaf to
                    // have the files.
                    for dir in [&self.mount, &parent] {
                        let ctl = dir.join("cgroup.subtree_control");
                        let now = read(&ctl).unwrap_or_default();
                        for c in ["cpu", "memory"] {
                            if !now.split_whitespace().any(|w| w == c) {
                                write(&ctl, &format!("+{c}"))?;
                            }
                        }
                    }
                    write(
                        &paths[0].join("cpu.max"),
                        &format!("{quota} {CPU_PERIOD_US}"),
                    )?;
                    write(
                        &paths[0].join("memory.max"),
                        &limits.memory_bytes.to_string(),
                    )?;
                    // Past the cap the VMM is killed rather than swapped to a
                    // crawl.
                    let _ = write(&paths[0].join("memory.swap.max"), "0");
                }
                Version::V1 => {
                    for p in &paths {
                        std::fs::create_dir_all(p).map_err(io(p))?;
                    }
                    write(
                        &paths[0].join("cpu.cfs_period_us"),
                        &CPU_PERIOD_US.to_string(),
                    )?;
                    write(&paths[0].join("cpu.cfs_quota_us"), &quota.to_string())?;
                    write(
                        &paths[1].join("memory.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    )?;
                    let _ = write(
                        &paths[1].join("memory.memsw.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    );
                    // What the VMM touched before it was moved in moves
                    // along (anonymous and file pages).
                    let _ = write(&paths[1].join("memory.move_charge_at_immigrate"), "3");
                }
            }
            let procs = paths
                .iter()
                .map(|p| {
                    let f = p.join("cgroup.procs");
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&f)
                        .map(OwnedFd::from)
                        .map_err(io(&f))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(VmCgroup {
                version: self.version,
                paths: paths.clone(),
                procs,
            })
        };
        made().inspect_err(|_| self.remove(id))
    }

    /// Removes the cgroup of VM `id` (after its VMM exited; a cgroup with
    /// live processes is left and the error ignored: the next cleanup
    /// retries).
    pub fn remove(&self, id: &str) {
        for p in self.paths(id) {
            // A VMM just killed may still be leaving the cgroup (EBUSY for a
            // moment); wait up to a second for it.
            for _ in 0..50 {
                match std::fs::remove_dir(&p) {
                    Err(e) if e.raw_os_error() == Some(16) => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
    }

    /// VM IDs that have a cgroup here (for `system check`).
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .paths("")
            .iter()
            .filter_map(|p| std::fs::read_dir(p).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// A VM's cgroup, with `cgroup.procs` open for the VMM to join.
#[derive(Debug)]
pub struct VmCgroup {
    pub version: Version,
    pub paths: Vec<PathBuf>,
    procs: Vec<OwnedFd>,
}

impl VmCgroup {
    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        let text = pid.to_string();
        for (fd, p) in self.procs.iter().zip(&self.paths) {
            rustix::io::write(fd, text.as_bytes())
                .map_err(std::io::Error::from)
                .map_err(io(p))?;
        }
        Ok(())
    }

    /// The limits as the kernel holds them.
    pub fn applied(&self) -> Result<Applied, CgroupError> {
        let (quota, period, mem) = match self.version {
            Version::V2 => {
                let cpu = read(&self.paths[0].join("cpu.max"))?;
                let mut it = cpu.split_whitespace();
                let q = it.next().unwrap_or("max");
                let p = it.next().unwrap_or("100000");
                let mem = read(&self.paths[0].join("memory.max"))?;
                (
                    q.parse().unwrap_or(u64::MAX),
                    p.parse().unwrap_or(CPU_PERIOD_US),
                    mem.parse().unwrap_or(u64::MAX),
                )
            }
            Version::V1 => {
                let q: i64 = read(&self.paths[0].join("cpu.cfs_quota_us"))?
                    .parse()
                    .unwrap_or(-1);
                let p = read(&self.paths[0].join("cpu.cfs_period_us"))?
                    .parse()
                    .unwrap_or(CPU_PERIOD_US);
                let mem = read(&self.paths[1].join("memory.limit_in_bytes"))?
                    .parse()
                    .unwrap_or(u64::MAX);
                (u64::try_from(q).unwrap_or(u64::MAX), p, mem)
            }
        };
        Ok(Applied {
            version: self.version,
            paths: self.paths.clone(),
            cpu_quota_us: quota,
            cpu_period_us: period,
            memory_max_bytes: mem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_tree(d: &Path) {
        std::fs::create_dir_all(d.join("cpu")).unwrap();
        std::fs::create_dir_all(d.join("memory")).unwrap();
        std::fs::write(d.join("cpu/cpu.cfs_quota_us"), "-1").unwrap();
        std::fs::write(d.join("memory/memory.limit_in_bytes"), "max").unwrap();
    }

    #[test]
    fn detects_v2_only_with_both_controllers_else_v1_else_says_why() {
        let d = tempfile::tempdir().unwrap();
        let err = Hierarchy::detect_at(d.path()).unwrap_err().to_string();
        assert!(err.contains("cgroup v2") && err.contains("v1"), "{err}");
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset io pids").unwrap();
        assert!(Hierarchy::detect_at(d.path()).is_err());
        v1_tree(d.path());
        assert_eq!(Hierarchy::detect_at(d.path()).unwrap().version, Version::V1);
        std::fs::write(d.path().join("cgroup.controllers"), "cpu io memory pids").unwrap();
        assert_eq!(Hierarchy::detect_at(d.path()).unwrap().version, Version::V2);
    }

    /// On a plain directory the kernel's files do not exist until written,
    /// so this checks what is written where (the live QEMU test checks the
    /// kernel enforces it).
    #[test]
    fn v2_writes_cpu_max_and_memory_max_and_enables_controllers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let h = Hierarchy::detect_at(d.path()).unwrap();
        let dir = d.path().join("ignis/vm1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        let cg = h
            .create(
                "vm1",
                Limits {
                    cpus: 2,
                    memory_bytes: 512 << 20,
                },
            )
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "200000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap(),
            "+memory"
        );
        let a = cg.applied().unwrap();
        assert_eq!(a.cpu_quota_us, 200_000);
        assert_eq!(a.memory_max_bytes, 512 << 20);
        assert_eq!(h.list(), ["vm1"]);
    }

    #[test]
    fn v1_writes_cfs_quota_and_limit_in_bytes_and_cleans_up_on_failure() {
        let d = tempfile::tempdir().unwrap();
        v1_tree(d.path());
        let h = Hierarchy::detect_at(d.path()).unwrap();
        // No cgroup.procs in the memory cgroup: creation fails and leaves
        // nothing behind (the kernel would have made it; here it is missing).
        let err = h
            .create(
                "vm2",
                Limits {
                    cpus: 1,
                    memory_bytes: 1 << 30,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("cgroup.procs"), "{err}");
        for c in ["cpu", "memory"] {
            std::fs::create_dir_all(d.path().join(c).join("ignis/vm2")).unwrap();
            std::fs::write(d.path().join(c).join("ignis/vm2/cgroup.procs"), "").unwrap();
        }
        let cg = h
            .create(
                "vm2",
                Limits {
                    cpus: 1,
                    memory_bytes: 1 << 30,
                },
            )
            .unwrap();
        let a = cg.applied().unwrap();
        assert_eq!((a.cpu_quota_us, a.cpu_period_us), (100_000, 100_000));
        assert_eq!(a.memory_max_bytes, 1 << 30);
        assert_eq!(a.paths.len(), 2);
    }
}
