//! What this host can run, and which backend `auto` picks, with the reason
//! (`ignis info` prints it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::{Accel, BackendKind};

/// State of KVM on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "detail")]
pub enum Kvm {
    /// No /dev/kvm.
    Missing,
    /// /dev/kvm exists but cannot be opened (permissions).
    NoAccess(String),
    /// KVM that cannot run a stock Linux guest (PVM nested virtualization:
    /// kvm_pvm loaded, no vmx/svm).
    CannotRunLinux(String),
    /// Hardware KVM (kvm_intel or kvm_amd).
    Usable(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInfo {
    pub kvm: Kvm,
    pub firecracker: Option<(PathBuf, String)>,
    pub qemu: Option<PathBuf>,
}

/// The backend `auto` chose and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendChoice {
    pub kind: Option<BackendKind>,
    pub accel: Accel,
    pub reason: String,
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn kvm_state(dev: &Path, sys_module: &Path, cpuinfo: &str) -> Kvm {
    if !dev.exists() {
        return Kvm::Missing;
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Kvm::NoAccess(format!("{}: {e}", dev.display()));
    }
    let has = |m: &str| sys_module.join(m).exists();
    let hw = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    if has("kvm_intel") || has("kvm_amd") {
        return Kvm::Usable(if has("kvm_intel") {
            "kvm_intel".into()
        } else {
            "kvm_amd".into()
        });
    }
    if has("kvm_pvm") || !hw {
        return Kvm::CannotRunLinux(
            "KVM here is PVM nested virtualization (kvm_pvm, no vmx/svm): stock Linux guests die with KVM_EXIT_INTERNAL_ERROR"
                .into(),
        );
    }
    Kvm::Usable("kvm".into())
}

/// Where `--version` answers are cached (a state root's `cache/`), so the
/// hot path (`run`, `fork`) does not spawn the VMM binary to ask.
static VERSION_CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Caches `--version` answers in `dir` from now on (first call wins).
pub fn cache_versions_in(dir: &Path) {
    let _ = VERSION_CACHE.set(dir.to_path_buf());
}

/// The first line of `bin --version`, cached on disk under a key of the
/// binary's identity (path, inode, size, mtime, ctime): replacing or
/// rebuilding the binary changes the key.
pub fn binary_version(bin: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let key = std::fs::metadata(bin).ok().map(|m| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            bin,
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
            .hash(&mut h);
        format!("version-{:016x}", h.finish())
    });
    let cached = VERSION_CACHE
        .get()
        .zip(key.as_ref())
        .map(|(d, k)| d.join(k));
    if let Some(line) = cached
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        if !line.is_empty() {
            return Some(line);
        }
    }
    let out = Command::new(bin).arg("--version").output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())?;
    if let Some(p) = cached {
        // Best effort: a cache that cannot be written is only slower.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &line).is_ok() && std::fs::rename(&tmp, &p).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Some(line)
}

fn firecracker_version(bin: &Path) -> Option<String> {
    let text = binary_version(bin)?;
    let v = text
        .split_whitespace()
        .find(|w| w.starts_with('v'))?
        .trim_start_matches('v')
        .to_string();
    Some(v)
}

/// `major.minor` at least 1.10.
pub fn firecracker_supported(version: &str) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (1, 10)
}

pub fn detect() -> HostInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let kvm = kvm_state(Path::new("/dev/kvm"), Path::new("/sys/module"), &cpuinfo);
    let firecracker =
        crate::firecracker::binary().and_then(|b| firecracker_version(&b).map(|v| (b, v)));
    let qemu = find_in_path(crate::qemu::BINARY);
    HostInfo {
        kvm,
        firecracker,
        qemu,
    }
}

impl Kvm {
    /// The state in words.
    pub fn describe(&self) -> String {
        match self {
            Kvm::Missing => "no /dev/kvm".into(),
            Kvm::NoAccess(e) => format!("/dev/kvm not accessible ({e})"),
            Kvm::CannotRunLinux(e) => e.clone(),
            Kvm::Usable(m) => format!("usable ({m})"),
        }
    }
}

impl HostInfo {
    /// What `auto` picks here, and why.
    pub fn choose(&self) -> BackendChoice {
        match crate::choose(crate::BackendRequest::Auto, self, true) {
            Ok((kind, accel)) => BackendChoice {
                kind: Some(kind),
                accel,
                reason: match (kind, accel) {
                    (BackendKind::Firecracker, _) => format!(
                        "firecracker {} installed and KVM usable",
                        self.firecracker
                            .as_ref()
                            .map(|f| f.1.as_str())
                            .unwrap_or("?")
                    ),
                    (_, Accel::Kvm) => "QEMU with KVM (no Firecracker >= 1.10 found)".into(),
                    _ => format!("QEMU with TCG software emulation: {}", self.kvm.describe()),
                },
            },
            Err(e) => BackendChoice {
                kind: None,
                accel: Accel::Tcg,
                reason: e.message,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn host(kvm: Kvm, fc: Option<&str>, qemu: bool) -> HostInfo {
        HostInfo {
            kvm,
            firecracker: fc.map(|v| (PathBuf::from("/usr/bin/firecracker"), v.to_string())),
            qemu: qemu.then(|| PathBuf::from("/usr/bin/qemu-system-x86_64")),
        }
    }

    #[test]
    fn info_says_what_auto_picks_and_why() {
        let pvm = host(Kvm::CannotRunLinux("PVM".into()), Some("1.12.0"), true).choose();
        assert_eq!((pvm.kind, pvm.accel), (Some(BackendKind::Qemu), Accel::Tcg));
        assert!(pvm.reason.contains("PVM"), "{}", pvm.reason);
        let none = host(Kvm::Missing, None, false).choose();
        assert_eq!(none.kind, None);
        assert!(none.reason.contains("apt-get install qemu-system-x86"));
    }

    #[test]
    fn pvm_host_is_detected_as_unable_to_run_linux() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        std::fs::write(&dev, b"").unwrap();
        let modules = dir.path().join("module");
        std::fs::create_dir_all(modules.join("kvm_pvm")).unwrap();
        assert!(matches!(
            kvm_state(&dev, &modules, "flags : fpu sse"),
            Kvm::CannotRunLinux(_)
        ));
        std::fs::create_dir_all(modules.join("kvm_intel")).unwrap();
        assert!(matches!(
            kvm_state(&dev, &modules, "flags : fpu vmx"),
            Kvm::Usable(_)
        ));
        assert_eq!(
            kvm_state(&dir.path().join("none"), &modules, ""),
            Kvm::Missing
        );
    }

    #[test]
    fn firecracker_version_floor() {
        assert!(firecracker_supported("1.10.0"));
        assert!(firecracker_supported("1.16.1"));
        assert!(!firecracker_supported("1.9.9"));
        assert!(!firecracker_supported("garbage"));
    }
}
