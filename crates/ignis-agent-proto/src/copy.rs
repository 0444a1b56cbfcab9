//! `docker cp` placement of a tar stream, shared by the agent (copy into a
//! VM) and the CLI (copy out of one).

use std::path::{Component, Path, PathBuf};

/// Why a copy (`docker cp` placement of a tar, or archiving a path) failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{} has no file name", .0.display())]
    NoFileName(PathBuf),
    #[error("directory {} does not exist", .0.display())]
    NoParent(PathBuf),
    /// `path` could not be looked up (stat, canonicalize).
    #[error("{}", .path.display())]
    Lookup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read the archive")]
    Read(#[source] std::io::Error),
    #[error("bad entry name")]
    EntryName(#[source] std::io::Error),
    #[error("archive entry {} leaves the destination", .0.display())]
    Escapes(PathBuf),
    #[error("archive has more than one top-level entry")]
    ManyTopLevel,
    #[error("archive entry {} is a hard link", .0.display())]
    HardLink(PathBuf),
    #[error("archive entry {} would be written through a symlink out of {}", .entry.display(), .dir.display())]
    ThroughSymlink { entry: PathBuf, dir: PathBuf },
    #[error("cannot overwrite directory {} with a non-directory", .0.display())]
    OverDirectory(PathBuf),
    #[error("create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("replace {}", .path.display())]
    Replace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unpack {}", .path.display())]
    Unpack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("archive {}", .path.display())]
    Pack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn lookup(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Lookup {
        path: path.to_path_buf(),
        source,
    }
}

/// Unpacks `tar` at `target`: into it when it is an existing directory,
/// otherwise as `target` itself (the archive's single top-level entry is
/// renamed), in `target`'s existing parent. Modes and mtimes are kept,
/// ownership too when running as root. Entries that would leave the
/// destination are refused by the tar crate (`unpack_in`).
pub fn unpack_at(tar: impl std::io::Read, target: &Path) -> Result<(), CopyError> {
    let mut ar = tar::Archive::new(tar);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    // Ownership is kept only where we can set it.
    ar.set_preserve_ownerships(is_root());
    if target.is_dir() {
        return unpack_entries(&mut ar, target, None);
    }
    let name = target
        .file_name()
        .ok_or_else(|| CopyError::NoFileName(target.to_path_buf()))?;
    let parent = match target.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    if !parent.is_dir() {
        return Err(CopyError::NoParent(parent.to_path_buf()));
    }
    unpack_entries(&mut ar, parent, Some(Path::new(name)))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The entry path with its first component replaced by `rename`; `None`
/// for paths that are absolute or climb (`..`).
fn place(path: &Path, rename: Option<&Path>) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::Normal(_) if i == 0 && rename.is_some() => out.push(rename?),
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn unpack_entries<R: std::io::Read>(
    ar: &mut tar::Archive<R>,
    dir: &Path,
    rename: Option<&Path>,
) -> Result<(), CopyError> {
    let root = dir.canonicalize().map_err(lookup(dir))?;
    let entries = ar.entries().map_err(CopyError::Read)?;
    let mut top: Option<std::ffi::OsString> = None;
    for entry in entries {
        let mut entry = entry.map_err(CopyError::Read)?;
        let path = entry.path().map_err(CopyError::EntryName)?.into_owned();
        let Some(rel) = place(&path, rename) else {
            return Err(CopyError::Escapes(path));
        };
        // One top-level entry when renaming: a second one would land
        // beside the target, which `cp` never does.
        if rename.is_some() {
            let first = rel.components().next().map(|c| c.as_os_str().to_owned());
            if top.is_none() {
                top = first;
            } else if top != first {
                return Err(CopyError::ManyTopLevel);
            }
        }
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            // ignis's own archives never hold hard links; a link target
            // would be resolved outside our checks.
            return Err(CopyError::HardLink(path));
        }
        let full = dir.join(&rel);
        let parent = full.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|source| CopyError::Create {
            path: parent.to_path_buf(),
            source,
        })?;
        // A symlink already in the destination must not lead the entry out.
        let real = parent.canonicalize().map_err(lookup(parent))?;
        if !real.starts_with(&root) {
            return Err(CopyError::ThroughSymlink {
                entry: path,
                dir: dir.to_path_buf(),
            });
        }
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() && !kind.is_dir() => return Err(CopyError::OverDirectory(full)),
            // Replace, never write through whatever is there (a symlink).
            Ok(m) if !m.is_dir() => {
                std::fs::remove_file(&full).map_err(|source| CopyError::Replace {
                    path: full.clone(),
                    source,
                })?
            }
            _ => {}
        }
        entry.unpack(&full).map_err(|source| CopyError::Unpack {
            path: full.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Writes a tar of `path` to `out`, its top-level entry named after the
/// last component of `path` (symlinks archived as links).
pub fn pack(path: &Path, out: impl std::io::Write) -> Result<(), CopyError> {
    pack_with(path, false, out)
}

/// [`pack`]; with `follow_link`, a symlink at `path` itself is archived as
/// what it points to (`cp -L`), under the link's name.
pub fn pack_with(
    path: &Path,
    follow_link: bool,
    out: impl std::io::Write,
) -> Result<(), CopyError> {
    let meta = match follow_link {
        true => std::fs::metadata(path),
        false => std::fs::symlink_metadata(path),
    }
    .map_err(lookup(path))?;
    let name = path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut b = tar::Builder::new(out);
    append(&mut b, path, &name, &meta)
        .and_then(|()| b.finish())
        .map_err(|source| CopyError::Pack {
            path: path.to_path_buf(),
            source,
        })
}

/// Files whose metadata may not tell their size (procfs and sysfs say 0 or
/// 4096) are read whole up to this size, and archived with the real one.
const READ_WHOLE: u64 = 1 << 20;

/// Appends `path` (with `meta`) as `name`, directories recursively, with
/// sizes that match what is written: a file's content is read first when
/// its size on disk cannot be trusted (procfs, sysfs), and a file that
/// changes while it is read is cut or padded to the size in its header,
/// so the archive stays valid.
fn append<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    meta: &std::fs::Metadata,
) -> std::io::Result<()> {
    use std::io::Read;
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    let ft = meta.file_type();
    if ft.is_dir() {
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty())?;
        let mut children: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let p = c.path();
            append(
                b,
                &p,
                &name.join(c.file_name()),
                &std::fs::symlink_metadata(&p)?,
            )?;
        }
        Ok(())
    } else if ft.is_symlink() {
        h.set_size(0);
        b.append_link(&mut h, name, std::fs::read_link(path)?)
    } else if ft.is_file() {
        let mut f = std::fs::File::open(path)?;
        if meta.len() <= READ_WHOLE {
            // Small or pseudo files: the bytes there are now, whatever
            // stat said.
            let mut data = Vec::new();
            f.read_to_end(&mut data)?;
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, &data[..])
        } else {
            let len = meta.len();
            h.set_size(len);
            let body = f.take(len).chain(std::io::repeat(0)).take(len);
            b.append_data(&mut h, name, body)
        }
    } else {
        // Devices, FIFOs, sockets: the header alone.
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(d: &Path) {
        std::fs::create_dir_all(d.join("src/sub")).unwrap();
        std::fs::write(d.join("src/a.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("src/a.sh"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        std::fs::write(d.join("src/sub/b"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("a.sh", d.join("src/link")).unwrap();
    }

    /// procfs says 0 bytes for /proc/version: the archive holds what the
    /// file reads, and stays valid.
    #[test]
    fn files_whose_stat_size_lies_archive_what_they_read() {
        let d = tempfile::tempdir().unwrap();
        let want = std::fs::read("/proc/version").unwrap();
        assert_eq!(std::fs::metadata("/proc/version").unwrap().len(), 0);
        let mut tar = vec![];
        pack(Path::new("/proc/version"), &mut tar).unwrap();
        unpack_at(&tar[..], &d.path().join("v")).unwrap();
        assert_eq!(std::fs::read(d.path().join("v")).unwrap(), want);
        // A directory of them too.
        let mut tar = vec![];
        pack(Path::new("/proc/self/net"), &mut tar).unwrap();
        let entries = tar::Archive::new(&tar[..]).entries().unwrap().count();
        assert!(entries > 3, "{entries}");
    }

    #[test]
    fn follow_link_archives_the_target_under_the_link_name() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let mut tar = vec![];
        pack_with(&d.path().join("src/link"), true, &mut tar).unwrap();
        unpack_at(&tar[..], &d.path().join("out")).unwrap();
        let m = std::fs::symlink_metadata(d.path().join("out")).unwrap();
        assert!(m.is_file());
        assert_eq!(std::fs::read(d.path().join("out")).unwrap(), b"#!/bin/sh\n");
        let mut tar = vec![];
        pack(&d.path().join("src/link"), &mut tar).unwrap();
        unpack_at(&tar[..], &d.path().join("out2")).unwrap();
        assert!(std::fs::symlink_metadata(d.path().join("out2"))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn directories_land_inside_existing_dirs_or_take_the_new_name() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let mut tar = vec![];
        pack(&d.path().join("src"), &mut tar).unwrap();
        std::fs::create_dir(d.path().join("into")).unwrap();
        unpack_at(&tar[..], &d.path().join("into")).unwrap();
        let m = std::fs::metadata(d.path().join("into/src/a.sh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o751);
        assert_eq!(
            std::fs::read(d.path().join("into/src/sub/b"))
                .unwrap()
                .len(),
            100_000
        );
        assert_eq!(
            std::fs::read_link(d.path().join("into/src/link")).unwrap(),
            Path::new("a.sh")
        );
        unpack_at(&tar[..], &d.path().join("renamed")).unwrap();
        assert!(d.path().join("renamed/sub/b").is_file());
        // A single file onto a new name, then over an existing file.
        let mut one = vec![];
        pack(&d.path().join("src/a.sh"), &mut one).unwrap();
        unpack_at(&one[..], &d.path().join("copy.sh")).unwrap();
        unpack_at(&one[..], &d.path().join("copy.sh")).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("copy.sh")).unwrap(),
            b"#!/bin/sh\n"
        );
        let err = unpack_at(&one[..], &d.path().join("missing/x")).unwrap_err();
        assert!(matches!(err, CopyError::NoParent(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "directory {} does not exist",
                d.path().join("missing").display()
            )
        );
    }

    #[test]
    fn escapes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink("/etc", out.join("evil")).unwrap();
        for name in ["../x", "/abs", "evil/passwd-copy"] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name like a hostile tar.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            let tar = b.into_inner().unwrap();
            let err = unpack_at(&tar[..], &out).unwrap_err();
            assert!(
                matches!(
                    err,
                    CopyError::Escapes(_) | CopyError::ThroughSymlink { .. }
                ),
                "{name}: {err}"
            );
        }
        assert!(!d.path().join("x").exists());
    }
}
