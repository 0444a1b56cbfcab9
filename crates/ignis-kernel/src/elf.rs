//! The ELF checks ignis needs: is this an x86_64 executable, and which
//! kernel release is it. The first 20 header bytes answer the first; a scan
//! for the `Linux version ` banner answers the second (an ELF crate would
//! add a dependency for 20 bytes of header).

pub const MAGIC: &[u8] = b"\x7fELF";

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("kernel is not an ELF file; Firecracker needs an uncompressed vmlinux")]
    NotElf,
    #[error("kernel is a 32-bit ELF; ignis boots x86_64 kernels only")]
    Not64Bit,
    #[error("kernel ELF is for machine {0:#x}, not x86_64 (0x3e)")]
    WrongMachine(u16),
    #[error("ELF file is not an executable (type {0}); is this a module or object file?")]
    NotExecutable(u16),
}

pub fn check(data: &[u8]) -> Result<(), ElfError> {
    if data.len() < 64 || !data.starts_with(MAGIC) {
        return Err(ElfError::NotElf);
    }
    if data[4] != 2 {
        return Err(ElfError::Not64Bit);
    }
    let e_type = u16::from_le_bytes([data[0x10], data[0x11]]);
    let machine = u16::from_le_bytes([data[0x12], data[0x13]]);
    if data[5] != 1 || machine != 0x3e {
        return Err(ElfError::WrongMachine(machine));
    }
    if e_type != 2 {
        return Err(ElfError::NotExecutable(e_type));
    }
    Ok(())
}

/// The release from the `Linux version X.Y.Z-...` banner, if present.
pub fn version(data: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let pos = data.windows(BANNER.len()).position(|w| w == BANNER)?;
    let rest = &data[pos + BANNER.len()..];
    let end = rest
        .iter()
        .position(|b| *b == b' ' || *b == 0 || *b == b'\n')?;
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    (!v.is_empty() && v.len() < 128).then(|| v.to_string())
}

/// A minimal valid x86_64 ELF executable header followed by `body`.
pub fn test_elf(body: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(MAGIC);
    h[4] = 2;
    h[5] = 1;
    h[6] = 1;
    h[0x10] = 2;
    h[0x12] = 0x3e;
    h.extend_from_slice(body);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_x86_64_executables_only() {
        let good = test_elf(b"Linux version 6.1.0-27-amd64 (debian) #1");
        check(&good).unwrap();
        assert_eq!(version(&good).as_deref(), Some("6.1.0-27-amd64"));
        assert!(matches!(check(b"MZ not elf at all, a PE file......................................................"), Err(ElfError::NotElf)));
        let mut arm = good.clone();
        arm[0x12] = 0xb7;
        assert!(matches!(check(&arm), Err(ElfError::WrongMachine(0xb7))));
        let mut obj = good.clone();
        obj[0x10] = 1;
        assert!(matches!(check(&obj), Err(ElfError::NotExecutable(1))));
        let mut x32 = good;
        x32[4] = 1;
        assert!(matches!(check(&x32), Err(ElfError::Not64Bit)));
    }
}
