//! Applying OCI layer tarballs to a directory, safely.
//!
//! The tar crate's own `unpack` follows symlinks inside the destination and
//! knows nothing of OCI whiteouts, so entries are applied here one by one:
//!
//! - Paths must be relative and free of `..`; a leading `./` is fine.
//! - No entry is written through a symlink: every parent component is
//!   `lstat`ed, and a symlink there is refused (legitimate layer tarballs
//!   list real directory paths; a link-then-write pair is the classic
//!   breakout). The final component is unlinked and recreated, never
//!   opened through.
//! - Hard links must name an earlier non-directory entry inside the tree,
//!   checked the same way.
//! - Character and block devices are never created on the host: under
//!   `dev/` they are skipped (the guest's devtmpfs provides them), anywhere
//!   else the layer is refused.
//! - `.wh.<name>` removes `<name>` from lower layers; `.wh..wh..opq` hides
//!   every lower-layer entry of its directory, while entries of the same
//!   layer stay whatever their order in the tarball.
//!
//! The destination is a private scratch directory (mode 0700) that only this
//! process writes, so checking with `lstat` before acting cannot race with
//! another writer.
//!
//! Ownership and modes: as root, `lchown`/`chmod` apply them on the host and
//! `mkfs.ext4 -d` copies them. Without root, what the host refuses is kept
//! as a [`Fixup`] for the disk builder to set inside the ext4 image.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry '{entry}' has an absolute path; layer paths must be relative to the image root")]
    AbsolutePath { entry: String },
    #[error(
        "layer entry '{entry}' contains '..'; paths that climb out of the image root are refused"
    )]
    DotDot { entry: String },
    #[error(
        "layer entry '{entry}' goes through symlink '{link}'; writing through symlinks is refused"
    )]
    ThroughSymlink { entry: String, link: String },
    #[error("layer entry '{entry}' needs '{parent}' to be a directory, but it is not")]
    NotADirectory { entry: String, parent: String },
    #[error("layer entry '{entry}' is a hard link to '{target}', which {why}")]
    BadHardlink {
        entry: String,
        target: String,
        why: &'static str,
    },
    #[error(
        "layer entry '{entry}' is a device node outside /dev; device nodes from images are refused"
    )]
    DeviceNode { entry: String },
    #[error("layer entry '{entry}' has an empty or invalid name")]
    BadName { entry: String },
    #[error("the image unpacks to more than {limit} bytes (a tar bomb?); raise IGNIS_MAX_IMAGE_BYTES if it is genuine")]
    TooLarge { limit: u64 },
    #[error("the image has more than {limit} files (a tar bomb?); raise IGNIS_MAX_IMAGE_FILES if it is genuine")]
    TooManyEntries { limit: u64 },
    #[error("layer entry '{entry}' is nested deeper than {limit} directories")]
    TooDeep { entry: String, limit: usize },
    #[error("cannot read the layer tarball")]
    Read(#[source] std::io::Error),
    #[error("cannot write '{entry}' into the image tree")]
    Write {
        entry: String,
        #[source]
        source: std::io::Error,
    },
}

/// Metadata that must be set inside the disk image because the host would
/// not take it (an unprivileged unpack cannot `chown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixup {
    pub uid: u64,
    pub gid: u64,
    /// Full `st_mode` including the file type bits.
    pub mode: u32,
}

/// Counters of one unpack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    pub skipped_devices: u64,
    pub xattrs_skipped: u64,
}

/// Bounds on what an image may unpack to: a hostile image (a tar bomb, a
/// huge sparse file, millions of entries, absurd nesting) fails with a
/// clear error instead of filling the disk. Sizes count the bytes files
/// declare (a sparse file counts its full length: the disk image would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
        Self {
            max_bytes: env("IGNIS_MAX_IMAGE_BYTES").unwrap_or(64 << 30),
            max_entries: env("IGNIS_MAX_IMAGE_FILES").unwrap_or(4_000_000),
            max_depth: 256,
        }
    }
}

/// Applies layers, in order, to one directory tree.
pub struct Unpacker {
    root: PathBuf,
    privileged: bool,
    limits: Limits,
    /// Directory modes and mtimes are applied once all layers are in, so a
    /// read-only directory does not block later writes.
    dirs: BTreeMap<PathBuf, (u32, i64)>,
    fixups: BTreeMap<PathBuf, Fixup>,
    stats: UnpackStats,
}

/// Result of unpacking all layers.
#[derive(Debug)]
pub struct Unpacked {
    pub fixups: BTreeMap<PathBuf, Fixup>,
    pub stats: UnpackStats,
}

impl Unpacker {
    /// `root` must be an existing, empty, private directory.
    pub fn new(root: &Path) -> Self {
        Self::with_privilege(root, rustix::process::geteuid().is_root())
    }

    /// As [`Unpacker::new`], choosing whether to `chown` on the host
    /// (`true`) or to keep ownership as fixups for the disk builder.
    pub fn with_privilege(root: &Path, privileged: bool) -> Self {
        Self {
            root: root.to_path_buf(),
            privileged,
            limits: Limits::default(),
            dirs: BTreeMap::new(),
            fixups: BTreeMap::new(),
            stats: UnpackStats::default(),
        }
    }

    /// Replaces the default [`Limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Applies one uncompressed layer tarball.
    pub fn apply_layer(&mut self, reader: impl Read) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(reader);
        let mut touched: HashSet<PathBuf> = HashSet::new();
        let mut opaque: Vec<PathBuf> = Vec::new();
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            let raw = entry.path_bytes().into_owned();
            let display = String::from_utf8_lossy(&raw).into_owned();
            let Some(rel) = clean_path(&raw, &display)? else {
                // The root directory itself ("./"): take its metadata.
                let (mode, uid, gid, mtime) = header_meta(&mut entry)?;
                self.record_dir(PathBuf::new(), mode, mtime);
                self.own(
                    Path::new(""),
                    uid,
                    gid,
                    libc_mode(rustix::fs::FileType::Directory, mode),
                    &display,
                )?;
                continue;
            };
            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            if rel.components().count() > self.limits.max_depth {
                return Err(UnpackError::TooDeep {
                    entry: display,
                    limit: self.limits.max_depth,
                });
            }
            // The logical size (a GNU sparse entry unpacks to its full length).
            let declared = entry.size();
            if self.stats.bytes.saturating_add(declared) > self.limits.max_bytes {
                return Err(UnpackError::TooLarge {
                    limit: self.limits.max_bytes,
                });
            }
            let name = rel
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            self.ensure_parents(&parent, &display)?;
            for anc in rel.ancestors().skip(1) {
                touched.insert(anc.to_path_buf());
            }

            if name == OPAQUE_WHITEOUT {
                self.stats.whiteouts += 1;
                opaque.push(parent);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(UnpackError::BadName { entry: display });
                }
                self.stats.whiteouts += 1;
                let target = parent.join(OsStr::from_bytes(hidden));
                if !touched.contains(&target) {
                    self.remove(&target, &display)?;
                }
                continue;
            }
            touched.insert(rel.clone());
            self.apply_entry(&mut entry, &rel, &display)?;
        }
        for dir in opaque {
            self.clear_lower(&dir, &touched)?;
        }
        Ok(())
    }

    /// Sets directory modes and mtimes and returns what the disk builder
    /// still has to set.
    pub fn finish(self) -> Result<Unpacked, UnpackError> {
        // Deepest first, so setting a parent's mtime is the last change in it.
        for (rel, (mode, mtime)) in self.dirs.iter().rev() {
            let path = self.root.join(rel);
            let display = rel.display().to_string();
            let w = |source| UnpackError::Write {
                entry: display.clone(),
                source,
            };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode & 0o7777))
                .map_err(w)?;
            set_mtime(&path, *mtime).map_err(|source| UnpackError::Write {
                entry: display.clone(),
                source,
            })?;
        }
        Ok(Unpacked {
            fixups: self.fixups,
            stats: self.stats,
        })
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Makes every component of `parent` an existing real directory,
    /// creating missing ones, refusing symlinks and non-directories.
    fn ensure_parents(&mut self, parent: &Path, entry: &str) -> Result<(), UnpackError> {
        let mut cur = PathBuf::new();
        for comp in parent.components() {
            cur.push(comp);
            let path = self.abs(&cur);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::ThroughSymlink {
                        entry: entry.to_string(),
                        link: cur.display().to_string(),
                    })
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: entry.to_string(),
                        parent: cur.display().to_string(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&path).map_err(|source| UnpackError::Write {
                        entry: entry.to_string(),
                        source,
                    })?;
                    self.record_dir(cur.clone(), 0o755, 0);
                }
                Err(source) => {
                    return Err(UnpackError::Write {
                        entry: entry.to_string(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn record_dir(&mut self, rel: PathBuf, mode: u32, mtime: i64) {
        // Keep the directory writable and searchable for us until finish().
        let _ = std::fs::set_permissions(
            self.abs(&rel),
            std::fs::Permissions::from_mode(0o755 | (mode & 0o700)),
        );
        self.dirs.insert(rel, (mode, mtime));
    }

    fn remove(&mut self, rel: &Path, entry: &str) -> Result<(), UnpackError> {
        let path = self.abs(rel);
        let w = |source| UnpackError::Write {
            entry: entry.to_string(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                make_tree_writable(&path);
                std::fs::remove_dir_all(&path).map_err(w)?;
                let prefix = rel.to_path_buf();
                self.dirs.retain(|k, _| !k.starts_with(&prefix));
                self.fixups.retain(|k, _| !k.starts_with(&prefix));
            }
            Ok(_) => {
                std::fs::remove_file(&path).map_err(w)?;
                self.fixups.remove(rel);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(w(e)),
        }
        Ok(())
    }

    /// Opaque whiteout: removes everything below `dir` that this layer did
    /// not itself add or pass through.
    fn clear_lower(&mut self, dir: &Path, touched: &HashSet<PathBuf>) -> Result<(), UnpackError> {
        let abs = self.abs(dir);
        let entries = match std::fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(UnpackError::Write {
                    entry: dir.display().to_string(),
                    source,
                })
            }
        };
        let mut children = Vec::new();
        for e in entries {
            let e = e.map_err(|source| UnpackError::Write {
                entry: dir.display().to_string(),
                source,
            })?;
            children.push((
                dir.join(e.file_name()),
                e.file_type().map(|t| t.is_dir()).unwrap_or(false),
            ));
        }
        for (child, is_dir) in children {
            if touched.contains(&child) {
                if is_dir {
                    self.clear_lower(&child, touched)?;
                }
            } else {
                self.remove(&child, &child.display().to_string())?;
            }
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        display: &str,
    ) -> Result<(), UnpackError> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        let (mode, uid, gid, mtime) = header_meta(entry)?;
        let path = self.abs(rel);
        let w = |source| UnpackError::Write {
            entry: display.to_string(),
            source,
        };
        let existing = std::fs::symlink_metadata(&path).ok();
        let ftype = match kind {
            T::Directory => {
                if let Some(m) = &existing {
                    if !m.is_dir() {
                        self.remove(rel, display)?;
                        std::fs::create_dir(&path).map_err(w)?;
                    }
                } else {
                    std::fs::create_dir(&path).map_err(w)?;
                }
                self.record_dir(rel.to_path_buf(), mode, mtime);
                rustix::fs::FileType::Directory
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                if existing.is_some() {
                    self.remove(rel, display)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(w)?;
                let n = std::io::copy(entry, &mut f).map_err(UnpackError::Read)?;
                self.stats.bytes += n;
                drop(f);
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(w)?;
                rustix::fs::FileType::RegularFile
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::BadName {
                        entry: display.to_string(),
                    })?
                    .into_owned();
                if existing.is_some() {
                    self.remove(rel, display)?;
                }
                std::os::unix::fs::symlink(OsString::from_vec(target), &path).map_err(w)?;
                rustix::fs::FileType::Symlink
            }
            T::Link => {
                let raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::BadName {
                        entry: display.to_string(),
                    })?
                    .into_owned();
                let tdisplay = String::from_utf8_lossy(&raw).into_owned();
                let bad = |why| UnpackError::BadHardlink {
                    entry: display.to_string(),
                    target: tdisplay.clone(),
                    why,
                };
                let target_rel = match clean_path(&raw, &tdisplay) {
                    Ok(Some(t)) => t,
                    Ok(None) => return Err(bad("is the image root")),
                    Err(UnpackError::DotDot { .. }) => {
                        return Err(bad("climbs out of the image root"))
                    }
                    Err(UnpackError::AbsolutePath { .. }) => {
                        return Err(bad("is an absolute path"))
                    }
                    Err(e) => return Err(e),
                };
                if let Some(p) = target_rel.parent() {
                    let mut cur = PathBuf::new();
                    for comp in p.components() {
                        cur.push(comp);
                        let m = std::fs::symlink_metadata(self.abs(&cur))
                            .map_err(|_| bad("does not exist"))?;
                        if m.file_type().is_symlink() {
                            return Err(bad("goes through a symlink"));
                        }
                    }
                }
                let target = self.abs(&target_rel);
                let tm = std::fs::symlink_metadata(&target).map_err(|_| bad("does not exist"))?;
                if tm.is_dir() {
                    return Err(bad("is a directory"));
                }
                if target_rel == rel {
                    return Ok(());
                }
                if existing.is_some() {
                    self.remove(rel, display)?;
                }
                std::fs::hard_link(&target, &path).map_err(w)?;
                // A hard link shares the inode: its metadata is the target's.
                if let Some(f) = self.fixups.get(&target_rel).copied() {
                    self.fixups.insert(rel.to_path_buf(), f);
                }
                return Ok(());
            }
            T::Char | T::Block => {
                if rel.starts_with("dev") {
                    self.stats.skipped_devices += 1;
                    let name = display;
                    tracing::debug!(entry = %name, "skipping device node under /dev");
                    return Ok(());
                }
                return Err(UnpackError::DeviceNode {
                    entry: display.to_string(),
                });
            }
            T::Fifo => {
                if existing.is_some() {
                    self.remove(rel, display)?;
                }
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(mode & 0o777),
                    0,
                )
                .map_err(|e| w(e.into()))?;
                rustix::fs::FileType::Fifo
            }
            // PAX/GNU headers are folded into entries by the tar crate;
            // anything else carries no file.
            _ => return Ok(()),
        };
        self.apply_xattrs(entry, &path)?;
        if ftype != rustix::fs::FileType::Directory {
            set_mtime(&path, mtime).map_err(w)?;
        }
        self.own(rel, uid, gid, libc_mode(ftype, mode), display)
    }

    fn own(
        &mut self,
        rel: &Path,
        uid: u64,
        gid: u64,
        full_mode: u32,
        display: &str,
    ) -> Result<(), UnpackError> {
        let path = self.abs(rel);
        if self.privileged {
            let (Ok(u), Ok(g)) = (u32::try_from(uid), u32::try_from(gid)) else {
                return Err(UnpackError::BadName {
                    entry: display.to_string(),
                });
            };
            rustix::fs::chownat(
                rustix::fs::CWD,
                &path,
                Some(rustix::fs::Uid::from_raw(u)),
                Some(rustix::fs::Gid::from_raw(g)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| UnpackError::Write {
                entry: display.to_string(),
                source: e.into(),
            })?;
            // chown clears setuid/setgid: put the mode back.
            if full_mode & 0o6000 != 0 && full_mode & 0o170000 != 0o120000 {
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(full_mode & 0o7777),
                )
                .map_err(|source| UnpackError::Write {
                    entry: display.to_string(),
                    source,
                })?;
            }
        } else {
            self.fixups.insert(
                rel.to_path_buf(),
                Fixup {
                    uid,
                    gid,
                    mode: full_mode,
                },
            );
        }
        Ok(())
    }

    fn apply_xattrs<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(UnpackError::Read)?;
            let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if let Err(e) = xattr::set(path, OsStr::from_bytes(name), ext.value_bytes()) {
                self.stats.xattrs_skipped += 1;
                tracing::debug!(path = %path.display(), xattr = %String::from_utf8_lossy(name), error = %e, "xattr not supported here; skipped");
            }
        }
        Ok(())
    }
}

/// Mode, uid, gid, mtime of an entry, PAX overrides applied.
fn header_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<(u32, u64, u64, i64), UnpackError> {
    let h = entry.header();
    let mode = h.mode().unwrap_or(0o644);
    let mut uid = h.uid().unwrap_or(0);
    let mut gid = h.gid().unwrap_or(0);
    let mut mtime = h
        .mtime()
        .map(|m| i64::try_from(m).unwrap_or(0))
        .unwrap_or(0);
    if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? {
        for ext in exts.flatten() {
            let val = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.split('.').next())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            match ext.key_bytes() {
                b"uid" => uid = val().unwrap_or(uid),
                b"gid" => gid = val().unwrap_or(gid),
                b"mtime" => {
                    mtime = val()
                        .map(|v| i64::try_from(v).unwrap_or(0))
                        .unwrap_or(mtime)
                }
                _ => {}
            }
        }
    }
    Ok((mode, uid, gid, mtime))
}

fn libc_mode(t: rustix::fs::FileType, mode: u32) -> u32 {
    t.as_raw_mode() | (mode & 0o7777)
}

/// Validates a tar path: relative, no `..`, no NUL. Returns `None` for the
/// root itself (`.`, `./`).
fn clean_path(raw: &[u8], display: &str) -> Result<Option<PathBuf>, UnpackError> {
    if raw.is_empty() || raw.contains(&0) {
        return Err(UnpackError::BadName {
            entry: display.to_string(),
        });
    }
    if raw[0] == b'/' {
        return Err(UnpackError::AbsolutePath {
            entry: display.to_string(),
        });
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(UnpackError::DotDot {
                    entry: display.to_string(),
                })
            }
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

fn set_mtime(path: &Path, mtime: i64) -> std::io::Result<()> {
    let ts = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(Into::into)
}

fn make_tree_writable(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = std::fs::read_dir(path) {
                for e in rd.flatten() {
                    make_tree_writable(&e.path());
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
