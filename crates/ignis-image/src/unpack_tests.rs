//! One test per whiteout rule and per path-escape trick.

use super::*;
use ignis_testkit::LayerBuilder;
use std::os::unix::fs::MetadataExt;

struct Fixture {
    _dir: tempfile::TempDir,
    /// A file outside the tree that escapes would hit.
    outside: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"original").unwrap();
    Fixture {
        _dir: dir,
        outside,
        root,
    }
}

fn apply(root: &Path, layers: &[Vec<u8>]) -> Result<Unpacked, UnpackError> {
    let mut u = Unpacker::new(root);
    for l in layers {
        u.apply_layer(&l[..])?;
    }
    u.finish()
}

fn assert_outside_untouched(f: &Fixture) {
    assert_eq!(
        std::fs::read(f.outside.join("secret")).unwrap(),
        b"original"
    );
    assert_eq!(
        std::fs::read_dir(&f.outside).unwrap().count(),
        1,
        "nothing created outside"
    );
}

#[test]
fn files_dirs_links_and_modes_are_applied() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/tool", b"#!/bin/sh\n", 0o4755)
        .symlink("bin/alias", "tool")
        .hardlink("bin/tool2", "bin/tool")
        .dir("etc", 0o700)
        .file("etc/conf", b"x=1", 0o600)
        .entry(ignis_testkit::Entry::Fifo {
            path: "run.fifo".into(),
        })
        .build();
    apply(&f.root, &[layer]).unwrap();
    let tool = std::fs::metadata(f.root.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(
        std::fs::read_link(f.root.join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        std::fs::metadata(f.root.join("bin/tool2")).unwrap().ino(),
        tool.ino()
    );
    assert_eq!(
        std::fs::metadata(f.root.join("etc")).unwrap().mode() & 0o7777,
        0o700
    );
    assert!(std::fs::symlink_metadata(f.root.join("run.fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    assert_eq!(
        std::fs::metadata(f.root.join("etc/conf")).unwrap().mtime(),
        1_700_000_000
    );
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn ownership_is_applied_or_kept_as_fixup() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .owner(1000, 1001)
        .file("home", b"x", 0o640)
        .build();
    let out = apply(&f.root, &[layer]).unwrap();
    let m = std::fs::metadata(f.root.join("home")).unwrap();
    if rustix::process::geteuid().is_root() {
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
        assert!(out.fixups.is_empty());
    } else {
        assert_eq!(
            out.fixups[Path::new("home")],
            Fixup {
                uid: 1000,
                gid: 1001,
                mode: 0o100640
            }
        );
    }
}

#[test]
fn unprivileged_unpack_keeps_ownership_and_special_modes_as_fixups() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .owner(0, 0)
        .file("su", b"x", 0o4755)
        .owner(33, 33)
        .dir("www", 0o750)
        .build();
    let mut u = Unpacker::with_privilege(&f.root, false);
    u.apply_layer(&layer[..]).unwrap();
    let out = u.finish().unwrap();
    assert_eq!(
        out.fixups[Path::new("su")],
        Fixup {
            uid: 0,
            gid: 0,
            mode: 0o104755
        }
    );
    assert_eq!(
        out.fixups[Path::new("www")],
        Fixup {
            uid: 33,
            gid: 33,
            mode: 0o040750
        }
    );
}

#[test]
fn whiteout_removes_a_lower_file() {
    let f = fixture();
    let lower = LayerBuilder::new()
        .file("a", b"1", 0o644)
        .file("b", b"2", 0o644)
        .build();
    let upper = LayerBuilder::new().whiteout("a").build();
    let out = apply(&f.root, &[lower, upper]).unwrap();
    assert!(!f.root.join("a").exists());
    assert!(
        !f.root.join(".wh.a").exists(),
        "whiteout markers are never materialized"
    );
    assert!(f.root.join("b").exists());
    assert_eq!(out.stats.whiteouts, 1);
}

#[test]
fn whiteout_removes_a_lower_directory_tree() {
    let f = fixture();
    let lower = LayerBuilder::new()
        .dir("d", 0o555)
        .dir("d/e", 0o555)
        .file("d/e/f", b"1", 0o444)
        .build();
    let upper = LayerBuilder::new().whiteout("d").build();
    apply(&f.root, &[lower, upper]).unwrap();
    assert!(!f.root.join("d").exists());
}

#[test]
fn opaque_whiteout_hides_lower_entries_but_keeps_its_own_layer() {
    let f = fixture();
    let lower = LayerBuilder::new()
        .dir("d", 0o755)
        .file("d/old", b"1", 0o644)
        .dir("d/sub", 0o755)
        .file("d/sub/old", b"1", 0o644)
        .file("keep", b"1", 0o644)
        .build();
    // The marker comes after one of this layer's entries and before another.
    let upper = LayerBuilder::new()
        .file("d/sub/new", b"2", 0o644)
        .opaque("d")
        .file("d/new", b"2", 0o644)
        .build();
    apply(&f.root, &[lower, upper]).unwrap();
    assert!(!f.root.join("d/old").exists());
    assert!(
        !f.root.join("d/sub/old").exists(),
        "lower content under a kept dir is hidden too"
    );
    assert!(f.root.join("d/sub/new").exists());
    assert!(f.root.join("d/new").exists());
    assert!(f.root.join("keep").exists());
}

#[test]
fn a_later_layer_replaces_a_dir_with_a_file_and_back() {
    let f = fixture();
    let l1 = LayerBuilder::new()
        .dir("x", 0o755)
        .file("x/y", b"1", 0o644)
        .build();
    let l2 = LayerBuilder::new().file("x", b"file now", 0o644).build();
    let l3 = LayerBuilder::new().dir("x", 0o755).build();
    apply(&f.root, &[l1, l2.clone()]).unwrap();
    assert_eq!(std::fs::read(f.root.join("x")).unwrap(), b"file now");
    let g = fixture();
    apply(&g.root, &[l2, l3]).unwrap();
    assert!(g.root.join("x").is_dir());
}

#[test]
fn absolute_path_is_refused() {
    let f = fixture();
    let target = f.outside.join("secret");
    let layer = LayerBuilder::new()
        .file(target.to_str().unwrap(), b"pwned", 0o644)
        .build();
    let err = apply(&f.root, &[layer]).unwrap_err();
    assert!(matches!(err, UnpackError::AbsolutePath { .. }), "{err}");
    assert_outside_untouched(&f);
}

#[test]
fn dotdot_path_is_refused() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .file("../outside/secret", b"pwned", 0o644)
        .build();
    let err = apply(&f.root, &[layer]).unwrap_err();
    assert!(matches!(err, UnpackError::DotDot { .. }), "{err}");
    assert!(err.to_string().contains("../outside/secret"));
    assert_outside_untouched(&f);
}

#[test]
fn symlink_then_write_through_in_one_layer_is_refused() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .symlink("evil", f.outside.to_str().unwrap())
        .file("evil/secret", b"pwned", 0o644)
        .build();
    let err = apply(&f.root, &[layer]).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    assert_outside_untouched(&f);
}

#[test]
fn symlink_in_lower_layer_then_write_through_is_refused() {
    let f = fixture();
    let lower = LayerBuilder::new().symlink("evil", "../outside").build();
    let upper = LayerBuilder::new()
        .file("evil/new", b"pwned", 0o644)
        .build();
    let err = apply(&f.root, &[lower, upper]).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    assert_outside_untouched(&f);
}

#[test]
fn file_over_existing_symlink_replaces_the_link_not_its_target() {
    let f = fixture();
    let lower = LayerBuilder::new()
        .symlink("link", f.outside.join("secret").to_str().unwrap())
        .build();
    let upper = LayerBuilder::new().file("link", b"inside", 0o644).build();
    apply(&f.root, &[lower, upper]).unwrap();
    assert_eq!(std::fs::read(f.root.join("link")).unwrap(), b"inside");
    assert!(!std::fs::symlink_metadata(f.root.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_outside_untouched(&f);
}

#[test]
fn hardlink_out_of_the_tree_is_refused() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .hardlink("stolen", "../outside/secret")
        .build();
    let err = apply(&f.root, &[layer]).unwrap_err();
    assert!(matches!(err, UnpackError::BadHardlink { .. }), "{err}");
    let abs = LayerBuilder::new()
        .hardlink("stolen", f.outside.join("secret").to_str().unwrap())
        .build();
    let err = apply(&f.root, &[abs]).unwrap_err();
    assert!(matches!(err, UnpackError::BadHardlink { .. }), "{err}");
    assert!(!f.root.join("stolen").exists());
}

#[test]
fn hardlink_through_a_symlink_is_refused() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .symlink("out", f.outside.to_str().unwrap())
        .hardlink("stolen", "out/secret")
        .build();
    let err = apply(&f.root, &[layer]).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::BadHardlink {
                why: "goes through a symlink",
                ..
            }
        ),
        "{err}"
    );
    assert!(!f.root.join("stolen").exists());
}

#[test]
fn device_node_outside_dev_is_refused_and_under_dev_skipped() {
    let f = fixture();
    let bad = LayerBuilder::new()
        .entry(ignis_testkit::Entry::Char {
            path: "tmp/mem".into(),
            major: 1,
            minor: 1,
        })
        .build();
    let err = apply(&f.root, &[bad]).unwrap_err();
    assert!(matches!(err, UnpackError::DeviceNode { .. }), "{err}");
    assert!(!f.root.join("tmp/mem").exists());

    let g = fixture();
    let ok = LayerBuilder::new()
        .dir("dev", 0o755)
        .entry(ignis_testkit::Entry::Char {
            path: "dev/null".into(),
            major: 1,
            minor: 3,
        })
        .build();
    let out = apply(&g.root, &[ok]).unwrap();
    assert_eq!(out.stats.skipped_devices, 1);
    assert!(!g.root.join("dev/null").exists());
}

#[test]
fn entry_under_a_regular_file_is_refused() {
    let f = fixture();
    let layer = LayerBuilder::new()
        .file("f", b"1", 0o644)
        .file("f/x", b"2", 0o644)
        .build();
    let err = apply(&f.root, &[layer]).unwrap_err();
    assert!(matches!(err, UnpackError::NotADirectory { .. }), "{err}");
}

#[test]
fn whiteout_names_cannot_escape() {
    let f = fixture();
    let layer = LayerBuilder::new().file(".wh..", b"", 0o644).build();
    assert!(matches!(
        apply(&f.root, &[layer]).unwrap_err(),
        UnpackError::BadName { .. }
    ));
    let layer = LayerBuilder::new()
        .file("../outside/.wh.secret", b"", 0o644)
        .build();
    assert!(matches!(
        apply(&f.root, &[layer]).unwrap_err(),
        UnpackError::DotDot { .. }
    ));
    assert_outside_untouched(&f);
}

#[test]
fn read_only_dirs_do_not_block_later_layers() {
    let f = fixture();
    let l1 = LayerBuilder::new()
        .dir("ro", 0o555)
        .file("ro/a", b"1", 0o444)
        .build();
    let l2 = LayerBuilder::new()
        .file("ro/a", b"2", 0o444)
        .file("ro/b", b"3", 0o444)
        .build();
    apply(&f.root, &[l1, l2]).unwrap();
    assert_eq!(std::fs::read(f.root.join("ro/a")).unwrap(), b"2");
    assert_eq!(
        std::fs::metadata(f.root.join("ro")).unwrap().mode() & 0o777,
        0o555
    );
}

fn limited(root: &Path, limits: Limits, layer: &[u8]) -> Result<Unpacked, UnpackError> {
    let mut u = Unpacker::new(root).with_limits(limits);
    u.apply_layer(layer)?;
    u.finish()
}

/// A tar bomb (many files, or more bytes than allowed), absurd nesting:
/// refused with the limit named, before the disk fills.
#[test]
fn tar_bombs_deep_nesting_and_size_are_bounded() {
    let small = Limits {
        max_bytes: 1 << 20,
        max_entries: 100,
        max_depth: 16,
    };
    let f = fixture();
    let mut b = LayerBuilder::new();
    for i in 0..200 {
        b = b.file(&format!("f{i}"), b"x", 0o644);
    }
    let err = limited(&f.root, small, &b.build()).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { limit: 100 }),
        "{err}"
    );
    assert!(err.to_string().contains("IGNIS_MAX_IMAGE_FILES"), "{err}");

    let f = fixture();
    let big = vec![0u8; 2 << 20];
    let err = limited(
        &f.root,
        small,
        &LayerBuilder::new().file("big", &big, 0o644).build(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(!f.root.join("big").exists(), "refused before writing");

    let f = fixture();
    let deep = (0..20)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    let err = limited(
        &f.root,
        small,
        &LayerBuilder::new()
            .file(&format!("{deep}/x"), b"x", 0o644)
            .build(),
    )
    .unwrap_err();
    assert!(
        matches!(err, UnpackError::TooDeep { limit: 16, .. }),
        "{err}"
    );
}

/// A GNU sparse entry declaring a 1 TiB file with 512 bytes of data counts
/// as 1 TiB: refused, nothing written.
#[test]
fn a_huge_sparse_file_counts_its_full_length() {
    let f = fixture();
    let mut header = tar::Header::new_gnu();
    header.set_path("sparse").unwrap();
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(512);
    let h = header.as_gnu_mut().unwrap();
    // One data block of 512 bytes at offset 0, real size 1 TiB.
    let real: u64 = 1 << 40;
    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{v:0width$o}", width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    }
    octal(&mut h.sparse[0].offset, 0);
    octal(&mut h.sparse[0].numbytes, 512);
    // The trailing hole: an empty block at the real size (as GNU tar
    // writes it), offset in base-256.
    h.sparse[1].offset = [0; 12];
    h.sparse[1].offset[0] = 0x80;
    h.sparse[1].offset[4..].copy_from_slice(&real.to_be_bytes());
    octal(&mut h.sparse[1].numbytes, 0);
    // 1 TiB needs GNU's base-256 form (0x80, then big-endian).
    h.realsize = [0; 12];
    h.realsize[0] = 0x80;
    h.realsize[4..].copy_from_slice(&real.to_be_bytes());
    header.set_cksum();
    let mut tarball = header.as_bytes().to_vec();
    tarball.extend_from_slice(&[7u8; 512]);
    tarball.extend_from_slice(&[0u8; 1024]);
    let err = limited(&f.root, Limits::default(), &tarball).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { .. }),
        "{err}: {:?}",
        std::error::Error::source(&err)
    );
    assert!(!f.root.join("sparse").exists());
}
