//! Extracting the ELF vmlinux from an x86 bzImage.
//!
//! ```text
//! 0x000  real-mode boot sector
//! 0x1f1  u8   setup_sects    (0 means 4)
//! 0x202  "HdrS"              boot protocol magic
//! 0x206  u16  protocol version (payload fields need >= 2.08)
//! 0x20e  u16  kernel_version string offset - 0x200
//! 0x248  u32  payload_offset  } relative to the protected-mode code at
//! 0x24c  u32  payload_length  } (setup_sects + 1) * 512
//! ```
//! The payload is the compressed ELF vmlinux: gzip, xz (with the x86 BCJ
//! filter, which liblzma handles), lz4 (legacy framing) or zstd. The kernel
//! appends the uncompressed size as 4 bytes, which every decoder here stops
//! before. See Documentation/arch/x86/boot.rst in the kernel tree.

use std::io::Read;

/// The most a decompressed vmlinux may be (a large debug kernel is ~1 GiB).
const MAX_VMLINUX: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    #[error("bzImage is truncated (header says the payload ends at {end}, file has {len} bytes)")]
    Truncated { end: usize, len: usize },
    #[error("bzImage boot protocol {major}.{minor} is older than 2.08 and has no payload fields")]
    TooOld { major: u8, minor: u8 },
    #[error("bzImage payload uses {0} compression, which ignis does not read; use a kernel built with gzip, xz, lz4 or zstd, or give the uncompressed vmlinux")]
    Unsupported(&'static str),
    #[error("bzImage payload does not start with a known compression magic ({0:02x?})")]
    UnknownCompression(Vec<u8>),
    #[error("cannot decompress the bzImage payload ({algo})")]
    Decompress {
        algo: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("decompressed kernel exceeds {MAX_VMLINUX} bytes")]
    TooLarge,
}

pub fn is_bzimage(data: &[u8]) -> bool {
    data.len() > 0x250 && &data[0x202..0x206] == b"HdrS"
}

fn u16_at(d: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([d[off], d[off + 1]])
}

fn u32_at(d: &[u8], off: usize) -> usize {
    u32::from_le_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]) as usize
}

/// The compressed payload inside a bzImage.
pub fn payload(data: &[u8]) -> Result<&[u8], BzImageError> {
    let proto = u16_at(data, 0x206);
    let (major, minor) = ((proto >> 8) as u8, (proto & 0xff) as u8);
    if proto < 0x0208 {
        return Err(BzImageError::TooOld { major, minor });
    }
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(data, 0x248);
    let end = start + u32_at(data, 0x24c);
    if end > data.len() {
        return Err(BzImageError::Truncated {
            end,
            len: data.len(),
        });
    }
    Ok(&data[start..end])
}

/// The kernel release from the header's version string.
pub fn version(data: &[u8]) -> Option<String> {
    let off = usize::from(u16_at(data, 0x20e)) + 0x200;
    let s = data.get(off..off.checked_add(128)?.min(data.len()))?;
    let end = s.iter().position(|b| *b == b' ' || *b == 0)?;
    let v = std::str::from_utf8(&s[..end]).ok()?;
    (!v.is_empty()).then(|| v.to_string())
}

/// Decompresses the payload of a bzImage into the ELF vmlinux.
pub fn extract_vmlinux(data: &[u8]) -> Result<Vec<u8>, BzImageError> {
    let p = payload(data)?;
    let (algo, out) = if p.starts_with(&[0x1f, 0x8b]) {
        ("gzip", read_all(flate2::read::GzDecoder::new(p)))
    } else if p.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        ("xz", read_all(liblzma::read::XzDecoder::new(p)))
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (
            "zstd",
            zstd::stream::read::Decoder::with_buffer(p)
                .map(|d| d.single_frame())
                .and_then(read_all),
        )
    } else if p.starts_with(&LZ4_LEGACY_MAGIC) {
        ("lz4", lz4_legacy(p))
    } else if p.starts_with(b"BZh") {
        return Err(BzImageError::Unsupported("bzip2"));
    } else if p.starts_with(&[0x5d, 0x00, 0x00]) {
        return Err(BzImageError::Unsupported("lzma"));
    } else if p.starts_with(&[0x89, b'L', b'Z', b'O']) {
        return Err(BzImageError::Unsupported("lzo"));
    } else {
        return Err(BzImageError::UnknownCompression(
            p.iter().take(8).copied().collect(),
        ));
    };
    out.map_err(|source| BzImageError::Decompress { algo, source })
        .and_then(|v| {
            if v.len() as u64 > MAX_VMLINUX {
                Err(BzImageError::TooLarge)
            } else {
                Ok(v)
            }
        })
}

fn read_all(r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(MAX_VMLINUX + 1).read_to_end(&mut out)?;
    Ok(out)
}

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// LZ4 "legacy" framing as the kernel writes it (`lz4 -l`): the magic, then
/// blocks of `u32 LE compressed length` + data, each up to 8 MiB
/// uncompressed. lz4_flex reads only the modern frame format, so the framing
/// is walked here and each block handed to lz4_flex.
fn lz4_legacy(p: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut pos = 4;
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while pos + 4 <= p.len() {
        let len = u32_at(p, pos);
        if p[pos..pos + 4] == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        if pos + 4 + len > p.len() {
            // The kernel's appended size field: the end of the stream.
            break;
        }
        let n = lz4_flex::block::decompress_into(&p[pos + 4..pos + 4 + len], &mut block)
            .map_err(|e| bad(&format!("lz4 block at {pos}: {e}")))?;
        out.extend_from_slice(&block[..n]);
        if out.len() as u64 > MAX_VMLINUX {
            return Err(bad("too large"));
        }
        pos += 4 + len;
    }
    if out.is_empty() {
        return Err(bad("no lz4 blocks"));
    }
    Ok(out)
}

/// Builds a bzImage around `payload` (for tests).
pub fn test_bzimage(payload: &[u8], version: &str) -> Vec<u8> {
    let setup_sects = 1u8;
    let mut d = vec![0u8; (usize::from(setup_sects) + 1) * 512];
    d[0x1f1] = setup_sects;
    d[0x202..0x206].copy_from_slice(b"HdrS");
    d[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    // Version string right after the header fields, inside the setup area.
    let voff = 0x300usize;
    d[0x20e..0x210].copy_from_slice(&u16::try_from(voff - 0x200).expect("fits").to_le_bytes());
    let vs = format!("{version} (test@ignis) #1 SMP\0");
    d[voff..voff + vs.len()].copy_from_slice(vs.as_bytes());
    let pm_code = b"decompressor stub";
    d.extend_from_slice(pm_code);
    d[0x248..0x24c].copy_from_slice(&u32::try_from(pm_code.len()).expect("fits").to_le_bytes());
    d[0x24c..0x250].copy_from_slice(&u32::try_from(payload.len()).expect("fits").to_le_bytes());
    d.extend_from_slice(payload);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::test_elf;
    use std::io::Write;

    fn vmlinux() -> Vec<u8> {
        let mut body = b"Linux version 6.1.0-test (x) #1".to_vec();
        body.extend((0..200_000u32).map(|i| (i % 251) as u8));
        test_elf(&body)
    }

    fn with_size(mut v: Vec<u8>, n: usize) -> Vec<u8> {
        v.extend_from_slice(&u32::try_from(n).unwrap().to_le_bytes());
        v
    }

    fn roundtrip(payload: Vec<u8>, plain: &[u8]) {
        let bz = test_bzimage(&payload, "6.1.0-test");
        assert!(is_bzimage(&bz));
        assert_eq!(version(&bz).as_deref(), Some("6.1.0-test"));
        assert_eq!(extract_vmlinux(&bz).unwrap(), plain);
    }

    #[test]
    fn gzip_payload() {
        let v = vmlinux();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&v).unwrap();
        roundtrip(with_size(e.finish().unwrap(), v.len()), &v);
    }

    #[test]
    fn xz_payload_with_x86_bcj_filter() {
        let v = vmlinux();
        let mut filters = liblzma::stream::Filters::new();
        filters.x86();
        filters.lzma2(&liblzma::stream::LzmaOptions::new_preset(6).unwrap());
        let stream =
            liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
                .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(&v).unwrap();
        roundtrip(with_size(e.finish().unwrap(), v.len()), &v);
    }

    #[test]
    fn zstd_payload() {
        let v = vmlinux();
        roundtrip(
            with_size(zstd::encode_all(&v[..], 19).unwrap(), v.len()),
            &v,
        );
    }

    #[test]
    fn lz4_legacy_payload_with_several_blocks() {
        let mut v = vmlinux();
        v.extend(std::iter::repeat_n(7u8, LZ4_LEGACY_BLOCK + 1000));
        let mut p = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in v.chunks(LZ4_LEGACY_BLOCK) {
            let c = lz4_flex::block::compress(chunk);
            p.extend_from_slice(&u32::try_from(c.len()).unwrap().to_le_bytes());
            p.extend_from_slice(&c);
        }
        roundtrip(with_size(p, v.len()), &v);
    }

    #[test]
    fn unsupported_and_broken_payloads_are_clear_errors() {
        let bz = test_bzimage(b"BZh91AY&SY....", "x");
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(BzImageError::Unsupported("bzip2"))
        ));
        let bz = test_bzimage(b"\x00\x01\x02\x03garbage", "x");
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(BzImageError::UnknownCompression(_))
        ));
        let bz = test_bzimage(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3], "x");
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(BzImageError::Decompress { algo: "gzip", .. })
        ));
        let mut bz = test_bzimage(b"\x1f\x8bxx", "x");
        bz.truncate(bz.len() - 2);
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(BzImageError::Truncated { .. })
        ));
    }
}
