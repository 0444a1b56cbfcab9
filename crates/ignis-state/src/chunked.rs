//! `sha256-chunked`: the content digest of VM-sized blobs (snapshot
//! memory, disks, device state), whose cost follows the data they hold,
//! not their apparent size.
//!
//! ```text
//! digest = sha256( "ignis sha256-chunked v1 1MiB\n"
//!                  || for each 1 MiB chunk, in order:
//!                       0x00                      the chunk is all zeros
//!                     | 0x01 || sha256(chunk)     otherwise
//!                  || u64 little-endian: the content's length )
//! ```
//!
//! The last chunk may be short. A hole reads as zeros, so a sparse file
//! and its dense copy have the same digest; chunks that lie in holes are
//! never read, and zero chunks are never hashed. Data chunks are hashed on
//! every core. Like sha256, the digest names exactly one content: a
//! collision needs one in SHA-256.

use std::io::Read;
use std::os::unix::fs::FileExt;

use sha2::{Digest as _, Sha256};

/// The algorithm's name in a digest (`sha256-chunked:<hex>`).
pub const ALGORITHM: &str = "sha256-chunked";
/// The chunk size.
pub const CHUNK: usize = 1 << 20;
const DOMAIN: &[u8] = b"ignis sha256-chunked v1 1MiB\n";

/// One chunk's contribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Zero,
    Data([u8; 32]),
}

fn chunk_of(data: &[u8]) -> Chunk {
    if is_zero(data) {
        Chunk::Zero
    } else {
        Chunk::Data(Sha256::digest(data).into())
    }
}

pub(crate) fn is_zero(data: &[u8]) -> bool {
    // 64-byte blocks OR-ed together: the compiler vectorises the fold.
    let blocks = data.chunks_exact(64);
    let rest = blocks.remainder();
    blocks
        .into_iter()
        .all(|b| b.iter().fold(0u8, |acc, x| acc | x) == 0)
        && rest.iter().all(|x| *x == 0)
}

fn finish(chunks: &[Chunk], len: u64) -> String {
    let mut outer = Sha256::new();
    outer.update(DOMAIN);
    for c in chunks {
        match c {
            Chunk::Zero => outer.update([0u8]),
            Chunk::Data(h) => {
                outer.update([1u8]);
                outer.update(h);
            }
        }
    }
    outer.update(len.to_le_bytes());
    format!("{ALGORITHM}:{}", hex::encode(outer.finalize()))
}

/// A streaming hasher (for content arriving as a stream: imports, pulls).
#[derive(Debug, Default)]
pub struct Hasher {
    chunks: Vec<Chunk>,
    buf: Vec<u8>,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let take = (CHUNK - self.buf.len()).min(data.len());
            if self.buf.is_empty() && take == CHUNK {
                self.chunks.push(chunk_of(&data[..CHUNK]));
            } else {
                self.buf.extend_from_slice(&data[..take]);
                if self.buf.len() == CHUNK {
                    self.chunks.push(chunk_of(&self.buf));
                    self.buf.clear();
                }
            }
            data = &data[take..];
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The byte ranges of the complete chunks seen so far that are zeros.
    pub fn zero_ranges(&self) -> Vec<(u64, u64)> {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == Chunk::Zero)
            .map(|(i, _)| (i as u64 * CHUNK as u64, CHUNK as u64))
            .collect()
    }

    pub fn finalize(mut self) -> String {
        if !self.buf.is_empty() {
            self.chunks.push(chunk_of(&self.buf));
        }
        finish(&self.chunks, self.len)
    }
}

/// What [`digest_file`] found: the digest, the length, and the byte ranges
/// of chunks that are zeros but occupy disk blocks (a caller may punch
/// them out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub digest: String,
    pub len: u64,
    pub zero_data: Vec<(u64, u64)>,
}

/// The digest of a file, reading only its data extents, on up to `threads`
/// threads.
pub fn digest_file(f: &std::fs::File, threads: usize) -> std::io::Result<FileDigest> {
    let len = f.metadata()?.len();
    let n = usize::try_from(len.div_ceil(CHUNK as u64)).unwrap_or(usize::MAX);
    // Which chunks touch data (the others are holes: zeros, unread).
    let mut touched = vec![false; n];
    for (start, elen) in crate::fsutil::data_extents(f)? {
        let first = usize::try_from(start / CHUNK as u64).unwrap_or(usize::MAX);
        let last = usize::try_from((start + elen).div_ceil(CHUNK as u64)).unwrap_or(usize::MAX);
        for t in touched.iter_mut().take(last.min(n)).skip(first) {
            *t = true;
        }
    }
    let todo: Vec<usize> = (0..n).filter(|i| touched[*i]).collect();
    let threads = threads.clamp(1, 16).min(todo.len().max(1));
    let mut results: Vec<Chunk> = vec![Chunk::Zero; n];
    let per = todo.len().div_ceil(threads);
    let parts: Vec<std::io::Result<Vec<(usize, Chunk)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = todo
            .chunks(per.max(1))
            .map(|idx| {
                scope.spawn(move || {
                    let mut buf = vec![0u8; CHUNK];
                    let mut out = Vec::with_capacity(idx.len());
                    for &i in idx {
                        let off = i as u64 * CHUNK as u64;
                        let size = usize::try_from((len - off).min(CHUNK as u64)).unwrap_or(CHUNK);
                        f.read_exact_at(&mut buf[..size], off)?;
                        out.push((i, chunk_of(&buf[..size])));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("hash thread panicked")))
            })
            .collect()
    });
    for part in parts {
        for (i, c) in part? {
            results[i] = c;
        }
    }
    let zero_data = todo
        .iter()
        .filter(|i| results[**i] == Chunk::Zero)
        .map(|&i| {
            let off = i as u64 * CHUNK as u64;
            (off, (len - off).min(CHUNK as u64))
        })
        .collect();
    Ok(FileDigest {
        digest: finish(&results, len),
        len,
        zero_data,
    })
}

/// The digest of a stream (for verification of a stored blob read as a
/// stream, and for tests).
pub fn digest_reader(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

/// Removes the blocks of `ranges` from `f` (they read as zeros after):
/// what a VMM wrote as zeros costs no disk.
pub fn punch(f: &std::fs::File, ranges: &[(u64, u64)]) {
    for &(off, len) in ranges {
        let _ = rustix::fs::fallocate(
            f,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            off,
            len,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn sparse_file(dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("f");
        let mut f = std::fs::File::create(&p).unwrap();
        f.set_len(40 << 20).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        // A chunk of written zeros: data on disk, zero content.
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(&vec![0u8; 1 << 20]).unwrap();
        f.seek(SeekFrom::Start((40 << 20) - 3)).unwrap();
        f.write_all(b"end").unwrap();
        p
    }

    #[test]
    fn sparse_dense_and_streamed_agree_and_content_matters() {
        let d = tempfile::tempdir().unwrap();
        let p = sparse_file(d.path());
        let f = std::fs::File::open(&p).unwrap();
        let a = digest_file(&f, 2).unwrap();
        let one = digest_file(&f, 1).unwrap();
        assert_eq!(a.digest, one.digest);
        assert!(a.digest.starts_with("sha256-chunked:"));
        assert_eq!(a.len, 40 << 20);
        assert_eq!(a.zero_data, vec![(10 << 20, 1 << 20)]);
        // The same content streamed (as an import sees it), in odd pieces.
        let data = std::fs::read(&p).unwrap();
        let mut h = Hasher::new();
        for piece in data.chunks(777_777) {
            h.update(piece);
        }
        assert_eq!(h.finalize(), a.digest);
        assert_eq!(digest_reader(&data[..]).unwrap(), a.digest);
        // One byte differs: another digest; so does the length.
        let mut other = data.clone();
        other[3 << 20] = 8;
        assert_ne!(digest_reader(&other[..]).unwrap(), a.digest);
        assert_ne!(digest_reader(&data[..data.len() - 1]).unwrap(), a.digest);
        // Zero-length content.
        assert!(digest_reader(&b""[..])
            .unwrap()
            .starts_with("sha256-chunked:"));
        // Punched, the file reads the same and has the same digest.
        let w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        punch(&w, &a.zero_data);
        assert_eq!(std::fs::read(&p).unwrap(), data);
        let b = digest_file(&std::fs::File::open(&p).unwrap(), 2).unwrap();
        assert_eq!(b.digest, a.digest);
        assert!(b.zero_data.is_empty(), "punched: {:?}", b.zero_data);
    }
}
