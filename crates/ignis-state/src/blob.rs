use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsutil::fsync_dir;

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("'{0}' is not a sha256 digest (want sha256:<64 hex digits>)")]
    Invalid(String),
    #[error("content does not match its digest: expected {expected}, got {actual}; the blob was not stored")]
    Mismatch { expected: String, actual: String },
    #[error("blob {digest} is missing from the store")]
    Missing { digest: String },
    #[error("blob store I/O")]
    Io(#[from] std::io::Error),
}

/// Validates `sha256:<64 lowercase hex>` (an OCI digest) and returns the
/// hex part.
pub fn digest_hex(digest: &str) -> Result<&str, DigestError> {
    match parse_digest(digest)? {
        (Algorithm::Sha256, hex) => Ok(hex),
        _ => Err(DigestError::Invalid(digest.to_string())),
    }
}

/// How a blob is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// sha256 of the bytes (OCI): images, kernels, manifests.
    Sha256,
    /// `sha256-chunked` (see [`crate::chunked`]): VM-sized blobs
    /// (snapshot memory, disk, state), costing what they hold.
    Chunked,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Chunked => crate::chunked::ALGORITHM,
        }
    }
}

/// Validates `<algorithm>:<64 lowercase hex>` for a known algorithm.
pub fn parse_digest(digest: &str) -> Result<(Algorithm, &str), DigestError> {
    let invalid = || DigestError::Invalid(digest.to_string());
    let (algo, hex) = digest.split_once(':').ok_or_else(invalid)?;
    let algo = match algo {
        "sha256" => Algorithm::Sha256,
        a if a == crate::chunked::ALGORITHM => Algorithm::Chunked,
        _ => return Err(invalid()),
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid());
    }
    Ok((algo, hex))
}

/// Content-addressed blobs under `blobs/<algorithm>/<hex>`. Blobs are
/// immutable once committed; whether one is still needed is recorded in
/// the database (`blob_refs`), and garbage collection removes the rest.
#[derive(Debug)]
pub struct BlobStore {
    /// `blobs/`
    root: PathBuf,
    tmp: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl BlobStore {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.join("blobs"),
            tmp: root.join("tmp"),
        }
    }

    fn dir(&self, algo: Algorithm) -> PathBuf {
        self.root.join(algo.name())
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf, DigestError> {
        let (algo, hex) = parse_digest(digest)?;
        Ok(self.dir(algo).join(hex))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    pub fn open(&self, digest: &str) -> Result<std::fs::File, DigestError> {
        let path = self.path(digest)?;
        std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DigestError::Missing {
                digest: digest.to_string(),
            },
            _ => DigestError::Io(e),
        })
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>, DigestError> {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut self.open(digest)?, &mut data)?;
        Ok(data)
    }

    /// Starts a new sha256 blob; bytes are hashed while written.
    pub fn writer(&self) -> std::io::Result<BlobWriter> {
        self.writer_for(Algorithm::Sha256)
    }

    /// Starts a new blob named by `algo`; bytes are hashed while written
    /// (a `sha256-chunked` blob keeps its zero chunks as holes).
    pub fn writer_for(&self, algo: Algorithm) -> std::io::Result<BlobWriter> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.tmp.join(format!("blob-{}-{seq}", std::process::id()));
        let file = std::fs::File::create(&tmp_path)?;
        Ok(BlobWriter {
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            hasher: match algo {
                Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
                Algorithm::Chunked => Hasher::Chunked(crate::chunked::Hasher::new()),
            },
            size: 0,
            tmp_path,
            dir: self.dir(algo),
        })
    }

    /// Takes the file at `src` (same filesystem: moved, not copied) into
    /// the store as a `sha256-chunked` blob: hashed on every core reading
    /// only its data, its zero chunks punched out. Returns the digest and
    /// size. Content already stored: `src` is removed.
    pub fn adopt(&self, src: &Path) -> Result<(String, u64), DigestError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(src)?;
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let d = crate::chunked::digest_file(&f, threads)?;
        crate::chunked::punch(&f, &d.zero_data);
        // The store's, read-only: a VMM (running as its own user) wrote it.
        if rustix::process::geteuid().is_root() {
            rustix::fs::fchown(
                &f,
                Some(rustix::process::Uid::ROOT),
                Some(rustix::process::Gid::ROOT),
            )
            .map_err(std::io::Error::from)?;
        }
        rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(0o444))
            .map_err(std::io::Error::from)?;
        drop(f);
        let dir = self.dir(Algorithm::Chunked);
        let dest = dir.join(parse_digest(&d.digest)?.1);
        match std::fs::rename(src, &dest) {
            Ok(()) => {}
            // Another filesystem: copy its data (holes kept), then drop it.
            Err(e) if e.raw_os_error() == Some(18) => {
                let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
                let tmp = self.tmp.join(format!("blob-{}-{seq}", std::process::id()));
                let copied = crate::fsutil::clone_or_copy(src, &tmp)
                    .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &dest));
                if let Err(e) = copied {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
                let _ = std::fs::remove_file(src);
            }
            Err(e) => return Err(e.into()),
        }
        fsync_dir(&dir)?;
        Ok((d.digest, d.len))
    }

    /// Stores `data` and returns its digest.
    pub fn put(&self, data: &[u8], expected: Option<&str>) -> Result<String, DigestError> {
        let mut w = self.writer()?;
        w.write_all(data)?;
        Ok(w.commit(expected)?.0)
    }

    /// The digest of a stored blob's content under `algo` (a blob named by
    /// one algorithm, hashed by the other: `sha256` for a registry, the
    /// chunked one for the store).
    pub fn digest_as(&self, digest: &str, algo: Algorithm) -> Result<String, DigestError> {
        let mut f = self.open(digest)?;
        Ok(match algo {
            Algorithm::Sha256 => {
                let mut hasher = Sha256::new();
                std::io::copy(&mut f, &mut hasher)?;
                format!("sha256:{}", hex::encode(hasher.finalize()))
            }
            Algorithm::Chunked => {
                let threads = std::thread::available_parallelism().map_or(1, usize::from);
                crate::chunked::digest_file(&f, threads)?.digest
            }
        })
    }

    /// Stores blob `from`'s content also under `to` (another algorithm's
    /// name for it), after checking that it is that: a hard link, no copy.
    pub fn alias(&self, from: &str, to: &str) -> Result<(), DigestError> {
        let (algo, hex) = parse_digest(to)?;
        let actual = self.digest_as(from, algo)?;
        if actual != to {
            return Err(DigestError::Mismatch {
                expected: to.to_string(),
                actual,
            });
        }
        match std::fs::hard_link(self.path(from)?, self.dir(algo).join(hex)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Re-hashes a stored blob; a blob that no longer matches its name is
    /// reported as a mismatch.
    pub fn verify(&self, digest: &str) -> Result<(), DigestError> {
        let actual = self.digest_as(digest, parse_digest(digest)?.0)?;
        if actual != digest {
            return Err(DigestError::Mismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(())
    }

    /// Every committed blob with its size (on disk: holes do not count).
    pub fn list(&self) -> std::io::Result<Vec<(String, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        for algo in [Algorithm::Sha256, Algorithm::Chunked] {
            let entries = match std::fs::read_dir(self.dir(algo)) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let digest = format!("{}:{name}", algo.name());
                if parse_digest(&digest).is_ok() {
                    let m = entry.metadata()?;
                    out.push((digest, m.len().min(m.blocks() * 512)));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn remove(&self, digest: &str) -> Result<(), DigestError> {
        match std::fs::remove_file(self.path(digest)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
enum Hasher {
    Sha256(Sha256),
    Chunked(crate::chunked::Hasher),
}

/// A blob being written. Dropped without `commit`, it leaves nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<std::io::BufWriter<std::fs::File>>,
    hasher: Hasher,
    size: u64,
    tmp_path: PathBuf,
    dir: PathBuf,
}

impl BlobWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies the content against `expected` (when given), makes it
    /// durable and moves it into the store. Committing a blob that is
    /// already stored is a no-op that returns the same digest.
    pub fn commit(mut self, expected: Option<&str>) -> Result<(String, u64), DigestError> {
        let file = self.file.take().expect("commit once");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        let hasher = std::mem::replace(&mut self.hasher, Hasher::Sha256(Sha256::new()));
        let actual = match hasher {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Chunked(h) => {
                // Zero chunks cost no disk.
                crate::chunked::punch(&file, &h.zero_ranges());
                h.finalize()
            }
        };
        if let Some(expected) = expected {
            let refused = match parse_digest(expected) {
                Err(e) => Some(e),
                Ok(_) if expected != actual => Some(DigestError::Mismatch {
                    expected: expected.to_string(),
                    actual: actual.clone(),
                }),
                Ok(_) => None,
            };
            if let Some(e) = refused {
                drop(file);
                let _ = std::fs::remove_file(&self.tmp_path);
                return Err(e);
            }
        }
        file.sync_all()?;
        drop(file);
        let dest = self.dir.join(parse_digest(&actual)?.1);
        std::fs::rename(&self.tmp_path, &dest)?;
        fsync_dir(&self.dir)?;
        Ok((actual, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(&buf[..n]),
            Hasher::Chunked(h) => h.update(&buf[..n]),
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256-chunked")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let s = BlobStore::new(dir.path());
        (dir, s)
    }

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn put_stores_by_content_and_is_idempotent() {
        let (_d, s) = store();
        assert_eq!(s.put(b"hello", None).unwrap(), HELLO);
        assert_eq!(s.put(b"hello", Some(HELLO)).unwrap(), HELLO);
        assert_eq!(s.list().unwrap(), vec![(HELLO.to_string(), 5)]);
        assert_eq!(s.read(HELLO).unwrap(), b"hello");
    }

    #[test]
    fn corrupted_blob_is_refused_and_not_stored() {
        let (d, s) = store();
        let err = s.put(b"hellO", Some(HELLO)).unwrap_err();
        assert!(matches!(err, DigestError::Mismatch { .. }), "{err}");
        assert!(s.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(d.path().join("tmp")).unwrap().count(),
            0,
            "temp file left"
        );
    }

    #[test]
    fn verify_detects_bit_rot() {
        let (_d, s) = store();
        s.put(b"hello", None).unwrap();
        std::fs::write(s.path(HELLO).unwrap(), b"jello").unwrap();
        assert!(matches!(s.verify(HELLO), Err(DigestError::Mismatch { .. })));
    }

    #[test]
    fn chunked_blobs_are_adopted_written_and_verified() {
        let (d, s) = store();
        let mut data = vec![0u8; 3 << 20];
        data[(1 << 20) + 5] = 9;
        let src = d.path().join("tmp/memory");
        std::fs::write(&src, &data).unwrap();
        let (digest, size) = s.adopt(&src).unwrap();
        assert!(digest.starts_with("sha256-chunked:"), "{digest}");
        assert_eq!(size, 3 << 20);
        assert!(!src.exists(), "moved into the store");
        let path = s.path(&digest).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(&path).unwrap().blocks() * 512 <= 1 << 20,
            "zero chunks punched"
        );
        s.verify(&digest).unwrap();
        // The same content streamed in: the same name, verified on commit.
        let mut w = s.writer_for(Algorithm::Chunked).unwrap();
        w.write_all(&data).unwrap();
        assert_eq!(w.commit(Some(&digest)).unwrap().0, digest);
        let mut w = s.writer_for(Algorithm::Chunked).unwrap();
        w.write_all(&data[1..]).unwrap();
        assert!(matches!(
            w.commit(Some(&digest)),
            Err(DigestError::Mismatch { .. })
        ));
        // Tampered with: verify says so.
        std::fs::write(&path, &data[..100]).unwrap();
        assert!(matches!(
            s.verify(&digest),
            Err(DigestError::Mismatch { .. })
        ));
        assert!(s.list().unwrap().iter().any(|(d, _)| *d == digest));
    }

    #[test]
    fn malformed_digests_are_rejected() {
        let (_d, s) = store();
        for bad in [
            "",
            "sha256:",
            "sha256-chunked:",
            "md5:abc",
            "sha256:../../etc/passwd",
            &HELLO.to_uppercase(),
        ] {
            assert!(matches!(s.path(bad), Err(DigestError::Invalid(_))), "{bad}");
        }
    }
}
