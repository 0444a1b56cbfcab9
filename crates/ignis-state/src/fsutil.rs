use std::io::Write;
use std::path::Path;

/// fsyncs a directory so that a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `data` to `path` atomically: temp file in the same directory,
/// fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

/// Removes a directory tree, making read-only directories writable first
/// (unpacked image trees contain 0555 directories).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

/// The data extents `(offset, len)` of a file (SEEK_DATA/SEEK_HOLE), so
/// sparse files (VM disks, guest RAM files) are read without their holes.
pub fn data_extents(f: &std::fs::File) -> std::io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let len = f.metadata()?.len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let end = seek(f, SeekFrom::Hole(start)).map_err(std::io::Error::from)?;
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

/// Copies `src` to `dst` keeping holes (a reflink where the filesystem
/// has one), and calls `each` with every byte range of the content in
/// order, holes as zeros (for hashing while copying).
pub fn copy_sparse(src: &Path, dst: &Path, mut each: impl FnMut(&[u8])) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut from = std::fs::File::open(src)?;
    let len = from.metadata()?.len();
    let mut to = std::fs::File::create(dst)?;
    to.set_len(len)?;
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let feed_zeros = |mut n: u64, each: &mut dyn FnMut(&[u8])| {
        while n > 0 {
            let k = usize::try_from(n.min(zeros.len() as u64)).unwrap_or(zeros.len());
            each(&zeros[..k]);
            n -= k as u64;
        }
    };
    for (start, elen) in data_extents(&from)? {
        feed_zeros(start - pos, &mut each);
        from.seek(SeekFrom::Start(start))?;
        to.seek(SeekFrom::Start(start))?;
        let mut left = elen;
        while left > 0 {
            let k = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            from.read_exact(&mut buf[..k])?;
            // Zero pages inside an extent stay holes in the copy too.
            if crate::chunked::is_zero(&buf[..k]) {
                to.seek(SeekFrom::Current(k as i64))?;
            } else {
                to.write_all(&buf[..k])?;
            }
            each(&buf[..k]);
            left -= k as u64;
        }
        pos = start + elen;
    }
    feed_zeros(len - pos, &mut each);
    to.sync_all()?;
    Ok(len)
}

/// Copies `src` to `dst` as a reflink (shared extents, copy-on-write) where
/// the filesystem can (btrfs, XFS), otherwise by copying its data extents
/// only (holes stay holes), in the kernel. Costs what the file holds, not
/// its apparent size. Not fsynced: callers that need durability sync.
/// Returns whether it was a reflink.
pub fn clone_or_copy(src: &Path, dst: &Path) -> std::io::Result<bool> {
    let from = std::fs::File::open(src)?;
    let to = std::fs::File::create(dst)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(true);
    }
    copy_extents(&from, &to)?;
    Ok(false)
}

/// Copies the data extents of `from` into `to` (same offsets) with
/// copy_file_range, and gives `to` the length of `from`.
pub fn copy_extents(from: &std::fs::File, to: &std::fs::File) -> std::io::Result<u64> {
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let mut copied = 0;
    // Set once the kernel refuses (across filesystems, e.g. a VM's RAM on
    // tmpfs into the state root): every further extent goes through one
    // buffer, without asking again.
    let mut buffer: Option<Vec<u8>> = None;
    for (start, elen) in data_extents(from)? {
        let end = start + elen;
        let mut off = start;
        while off < end {
            if let Some(buf) = buffer.as_mut() {
                copy_range(from, to, off, end - off, buf)?;
                copied += end - off;
                break;
            }
            let want = usize::try_from(end - off)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let (mut off_in, mut off_out) = (off, off);
            match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want)
            {
                Ok(0) => break, // the source shrank under us
                Ok(n) => {
                    off += n as u64;
                    copied += n as u64;
                }
                Err(rustix::io::Errno::INTR) => {}
                // Across filesystems (tmpfs to ext4), or where the kernel
                // cannot: through a buffer from now on.
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP,
                ) => buffer = Some(vec![0u8; COPY_CHUNK]),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(copied)
}

/// The buffer of a user-space copy.
const COPY_CHUNK: usize = 1 << 20;
/// Zero runs of at least this size stay holes in a user-space copy.
const ZERO_PAGE: usize = 4096;

/// Copies `len` bytes at `off` through `buf`; whole zero pages are not
/// written (the target was sized with `set_len`, so they read as zeros):
/// a VM's RAM is mostly zero pages that tmpfs still counts as data.
fn copy_range(
    from: &std::fs::File,
    to: &std::fs::File,
    mut off: u64,
    len: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = off + len;
    while off < end {
        let k = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = &mut buf[..k];
        from.read_exact_at(chunk, off)?;
        // Write the runs of non-zero pages.
        let mut run: Option<usize> = None;
        let mut at = 0;
        while at < k {
            let page = &chunk[at..(at + ZERO_PAGE).min(k)];
            let zero = crate::chunked::is_zero(page);
            match (zero, run) {
                (false, None) => run = Some(at),
                (true, Some(r)) => {
                    to.write_all_at(&chunk[r..at], off + r as u64)?;
                    run = None;
                }
                _ => {}
            }
            at += page.len();
        }
        if let Some(r) = run {
            to.write_all_at(&chunk[r..k], off + r as u64)?;
        }
        off += k as u64;
    }
    Ok(())
}

#[cfg(test)]
mod sparse_tests {
    use super::*;

    #[test]
    fn copies_across_filesystems_skip_zero_pages() {
        // A VM's RAM on tmpfs: data extents full of zero pages, copied into
        // a directory on another filesystem (copy_file_range refuses).
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let src = shm.path().join("ram");
        let mut data = vec![0u8; 8 << 20];
        data[5 << 20..(5 << 20) + 3].copy_from_slice(b"abc");
        data[(8 << 20) - 1] = 9;
        std::fs::write(&src, &data).unwrap();
        let dst = disk.path().join("copy");
        let copied = copy_extents(
            &std::fs::File::open(&src).unwrap(),
            &std::fs::File::create(&dst).unwrap(),
        )
        .unwrap();
        assert_eq!(copied, 8 << 20, "the source is all data");
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&dst).unwrap().blocks();
        assert!(
            blocks * 512 <= 64 << 10,
            "zero pages were written: {blocks} blocks"
        );
    }

    #[test]
    fn sparse_copies_keep_holes_and_content() {
        use std::io::{Seek, SeekFrom, Write};
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        f.seek(SeekFrom::Start(60 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let dst = d.path().join("dst");
        let mut seen = 0u64;
        let mut sum = 0u64;
        copy_sparse(&src, &dst, |b| {
            seen += b.len() as u64;
            sum += b.iter().map(|x| u64::from(*x)).sum::<u64>();
        })
        .unwrap();
        assert_eq!(seen, 64 << 20);
        assert_eq!(
            sum,
            7 * 5000 + b"tail".iter().map(|x| u64::from(*x)).sum::<u64>()
        );
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&dst).unwrap().blocks();
        assert!(
            blocks * 512 < 4 << 20,
            "the copy is not sparse: {blocks} blocks"
        );
        // The in-kernel extent copy: same bytes, holes kept, cost = data.
        let dst2 = d.path().join("dst2");
        clone_or_copy(&src, &dst2).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst2).unwrap());
        let blocks2 = std::fs::metadata(&dst2).unwrap().blocks();
        assert!(blocks2 * 512 < 4 << 20, "not sparse: {blocks2} blocks");
    }
}
