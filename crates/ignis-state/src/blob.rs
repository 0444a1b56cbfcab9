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

/// Validates `sha256:<64 lowercase hex>` and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str, DigestError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| DigestError::Invalid(digest.to_string()))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(DigestError::Invalid(digest.to_string()));
    }
    Ok(hex)
}

/// Content-addressed blobs under `blobs/sha256/<hex>`. Blobs are immutable
/// once committed; whether one is still needed is recorded in the database
/// (`blob_refs`), and garbage collection removes the rest.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl BlobStore {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            dir: root.join("blobs/sha256"),
            tmp: root.join("tmp"),
        }
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf, DigestError> {
        Ok(self.dir.join(digest_hex(digest)?))
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

    /// Starts a new blob; bytes are hashed while written.
    pub fn writer(&self) -> std::io::Result<BlobWriter> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.tmp.join(format!("blob-{}-{seq}", std::process::id()));
        let file = std::fs::File::create(&tmp_path)?;
        Ok(BlobWriter {
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            hasher: Sha256::new(),
            size: 0,
            tmp_path,
            dir: self.dir.clone(),
        })
    }

    /// Stores a copy of the file at `src` (holes kept) and returns its
    /// digest and size. Committing content already stored is a no-op.
    pub fn put_file(&self, src: &Path) -> Result<(String, u64), DigestError> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.tmp.join(format!("blob-{}-{seq}", std::process::id()));
        let mut hasher = Sha256::new();
        let copied = crate::fsutil::copy_sparse(src, &tmp_path, |b| hasher.update(b));
        let size = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e.into());
            }
        };
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        let dest = self.dir.join(digest_hex(&digest)?);
        std::fs::rename(&tmp_path, &dest)?;
        fsync_dir(&self.dir)?;
        Ok((digest, size))
    }

    /// Stores `data` and returns its digest.
    pub fn put(&self, data: &[u8], expected: Option<&str>) -> Result<String, DigestError> {
        let mut w = self.writer()?;
        w.write_all(data)?;
        Ok(w.commit(expected)?.0)
    }

    /// Re-hashes a stored blob; a blob that no longer matches its name is
    /// reported as a mismatch.
    pub fn verify(&self, digest: &str) -> Result<(), DigestError> {
        let mut f = self.open(digest)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut f, &mut hasher)?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(DigestError::Mismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(())
    }

    /// Every committed blob with its size.
    pub fn list(&self) -> std::io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if digest_hex(&digest).is_ok() {
                out.push((digest, entry.metadata()?.len()));
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

/// A blob being written. Dropped without `commit`, it leaves nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<std::io::BufWriter<std::fs::File>>,
    hasher: Sha256,
    size: u64,
    tmp_path: PathBuf,
    dir: PathBuf,
}

impl BlobWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// Verifies the content against `expected` (when given), makes it
    /// durable and moves it into the store. Committing a blob that is
    /// already stored is a no-op that returns the same digest.
    pub fn commit(mut self, expected: Option<&str>) -> Result<(String, u64), DigestError> {
        let actual = self.digest();
        if let Some(expected) = expected {
            digest_hex(expected)?;
            if expected != actual {
                return Err(DigestError::Mismatch {
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        let file = self.file.take().expect("commit once");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let dest = self.dir.join(digest_hex(&actual)?);
        std::fs::rename(&self.tmp_path, &dest)?;
        fsync_dir(&self.dir)?;
        Ok((actual, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.hasher.update(&buf[..n]);
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
    fn malformed_digests_are_rejected() {
        let (_d, s) = store();
        for bad in [
            "",
            "sha256:",
            "md5:abc",
            "sha256:../../etc/passwd",
            &HELLO.to_uppercase(),
        ] {
            assert!(matches!(s.path(bad), Err(DigestError::Invalid(_))), "{bad}");
        }
    }
}
