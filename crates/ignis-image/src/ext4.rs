//! Building the read-only ext4 image disk with e2fsprogs.
//!
//! `mkfs.ext4 -d DIR` (e2fsprogs ≥ 1.43) copies a directory tree into a new
//! filesystem image without mounting anything, no loop device, no
//! device-mapper, no root needed. Metadata the host tree could not carry
//! (ownership of an unprivileged unpack) is then set with `debugfs -w`.
//! No crate writes ext4 images, hence the external tools.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::unpack::Fixup;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{tool} not found; install e2fsprogs (apt-get install e2fsprogs)")]
    ToolMissing { tool: &'static str },
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("cannot read the unpacked tree at {path}")]
    Walk {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    pub label: String,
    /// Filesystem UUID; derived from the image ID so rebuilds are identical.
    pub uuid: String,
}

/// The built disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskInfo {
    /// Apparent size of the disk file.
    pub disk_size: u64,
    /// Bytes of file data in the tree.
    pub tree_bytes: u64,
}

/// Turns a directory tree into a filesystem image. Behind a trait so the
/// import pipeline can be tested without e2fsprogs.
pub trait DiskBuilder: Send + Sync {
    fn build(
        &self,
        tree: &Path,
        fixups: &BTreeMap<PathBuf, Fixup>,
        out: &Path,
        opts: &DiskOptions,
    ) -> Result<DiskInfo, DiskError>;
}

/// The real builder: `mkfs.ext4 -d` then `debugfs -w` for fixups.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mke2fs;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TreeSize {
    inodes: u64,
    data: u64,
    blocks: u64,
}

fn measure(path: &Path, acc: &mut TreeSize) -> Result<(), DiskError> {
    let walk = |source| DiskError::Walk {
        path: path.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(path).map_err(walk)? {
        let entry = entry.map_err(walk)?;
        let meta = entry.metadata().map_err(walk)?;
        acc.inodes += 1;
        if meta.is_dir() {
            acc.blocks += 1;
            measure(&entry.path(), acc)?;
        } else if meta.is_file() {
            acc.data += meta.len();
            acc.blocks += meta.len().div_ceil(4096);
        } else if meta.file_type().is_symlink() && meta.len() >= 60 {
            acc.blocks += 1;
        }
    }
    Ok(())
}

/// Size in bytes and inode count for a tree: data blocks plus inode tables
/// plus metadata slack, with a floor for tiny images.
fn plan(size: TreeSize) -> (u64, u64) {
    let inodes = size.inodes + size.inodes / 5 + 512;
    let data = size.blocks * 4096;
    let bytes = data + data / 8 + inodes * 256 + (16 << 20);
    (bytes.div_ceil(1 << 20) << 20, inodes)
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<String, DiskError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DiskError::ToolMissing { tool }
        } else {
            DiskError::Spawn { tool, source }
        }
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(DiskError::ToolFailed {
            tool,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(stderr)
}

/// Quotes a path for debugfs's argument parser, or `None` when debugfs
/// cannot express it.
fn debugfs_quote(rel: &Path) -> Option<String> {
    let bytes = rel.as_os_str().as_bytes();
    let s = std::str::from_utf8(bytes).ok()?;
    if s.contains(['"', '\n', '\\']) {
        return None;
    }
    Some(format!("\"/{s}\""))
}

impl DiskBuilder for Mke2fs {
    fn build(
        &self,
        tree: &Path,
        fixups: &BTreeMap<PathBuf, Fixup>,
        out: &Path,
        opts: &DiskOptions,
    ) -> Result<DiskInfo, DiskError> {
        let mut size = TreeSize::default();
        measure(tree, &mut size)?;
        let (mut bytes, inodes) = plan(size);
        // The estimate is generous; if mke2fs still runs out of room, grow.
        let mut attempt = 0;
        loop {
            let _ = std::fs::remove_file(out);
            let res = run(
                "mkfs.ext4",
                Command::new("mkfs.ext4")
                    .args([
                        "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0",
                    ])
                    .args(["-O", "^has_journal"])
                    .arg("-N")
                    .arg(inodes.to_string())
                    .arg("-L")
                    .arg(&opts.label)
                    .arg("-U")
                    .arg(&opts.uuid)
                    .arg("-E")
                    .arg(format!("root_owner=0:0,hash_seed={}", opts.uuid))
                    .arg("-d")
                    .arg(tree)
                    .arg(out)
                    .arg(format!("{}k", bytes / 1024))
                    .env("E2FSPROGS_FAKE_TIME", "1")
                    .env("MKE2FS_CONFIG", "/etc/mke2fs.conf"),
            );
            match res {
                Ok(_) => break,
                Err(DiskError::ToolFailed { ref stderr, .. })
                    if attempt < 3
                        && (stderr.contains("Could not allocate")
                            || stderr.contains("No space")) =>
                {
                    attempt += 1;
                    bytes *= 2;
                    tracing::debug!(bytes, "image disk too small, retrying larger");
                }
                Err(e) => {
                    let _ = std::fs::remove_file(out);
                    return Err(e);
                }
            }
        }
        if !fixups.is_empty() {
            if let Err(e) = apply_fixups(fixups, out) {
                let _ = std::fs::remove_file(out);
                return Err(e);
            }
        }
        Ok(DiskInfo {
            disk_size: bytes,
            tree_bytes: size.data,
        })
    }
}

fn apply_fixups(fixups: &BTreeMap<PathBuf, Fixup>, disk: &Path) -> Result<(), DiskError> {
    let mut script = Vec::new();
    for (rel, f) in fixups {
        let Some(p) = (if rel.as_os_str().is_empty() {
            Some("/".to_string())
        } else {
            debugfs_quote(rel)
        }) else {
            tracing::warn!(path = %rel.display(), "cannot set ownership of this path in the image; it keeps the importing user's");
            continue;
        };
        let _ = writeln!(
            script,
            "sif {p} uid {}\nsif {p} gid {}\nsif {p} mode 0{:o}",
            f.uid, f.gid, f.mode
        );
    }
    let mut child = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg("-")
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => DiskError::ToolMissing { tool: "debugfs" },
            _ => DiskError::Spawn {
                tool: "debugfs",
                source,
            },
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&script));
    let out = child
        .wait_with_output()
        .map_err(|source| DiskError::Spawn {
            tool: "debugfs",
            source,
        })?;
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // debugfs prints its banner on stderr and exits 0 even when a command
    // fails, so any other stderr line is a failure.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(DiskError::ToolFailed {
            tool: "debugfs",
            status: out.status.to_string(),
            stderr: errors.join("\n"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_has_a_floor_and_grows_with_content() {
        let (small, small_inodes) = plan(TreeSize::default());
        assert!(small >= 16 << 20);
        assert!(small_inodes >= 512);
        let (big, _) = plan(TreeSize {
            inodes: 10_000,
            data: 300 << 20,
            blocks: (300 << 20) / 4096,
        });
        assert!(big > 300 << 20);
        assert_eq!(big % (1 << 20), 0);
    }

    #[test]
    fn debugfs_quote_refuses_what_it_cannot_express() {
        assert_eq!(debugfs_quote(Path::new("a b/c")).unwrap(), "\"/a b/c\"");
        assert!(debugfs_quote(Path::new("a\"b")).is_none());
        assert!(debugfs_quote(Path::new("a\nb")).is_none());
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;
    use ignis_testkit::ext4::{assert_fsck_clean, debugfs};

    #[test]
    fn builds_an_ext4_with_content_and_applies_fixups() {
        if Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("skipped: mkfs.ext4 not installed (apt-get install e2fsprogs)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hostname"), b"ignis\n").unwrap();
        let mut fixups = BTreeMap::new();
        fixups.insert(
            PathBuf::from("etc/hostname"),
            Fixup {
                uid: 1234,
                gid: 4321,
                mode: 0o104711,
            },
        );
        fixups.insert(
            PathBuf::new(),
            Fixup {
                uid: 0,
                gid: 0,
                mode: 0o040755,
            },
        );
        let out = dir.path().join("disk.ext4");
        let opts = DiskOptions {
            label: "t".into(),
            uuid: "01234567-89ab-cdef-0123-456789abcdef".into(),
        };
        let info = Mke2fs.build(&tree, &fixups, &out, &opts).unwrap();
        assert_eq!(info.tree_bytes, 6);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), info.disk_size);
        assert_eq!(debugfs(&out, "cat /etc/hostname"), "ignis\n");
        let stat = debugfs(&out, "stat /etc/hostname");
        assert!(
            stat.contains("User:  1234") && stat.contains("Group:  4321"),
            "{stat}"
        );
        assert!(stat.contains("Mode:  04711"), "{stat}");
        assert_fsck_clean(&out, "fsck");
    }
}
