//! Guest kernels.
//!
//! Firecracker boots an uncompressed x86_64 ELF `vmlinux`; distributions
//! ship a compressed bzImage (`vmlinuz`). [`bzimage::extract_vmlinux`] gets
//! the ELF out of a bzImage in Rust (what the kernel's
//! `scripts/extract-vmlinux` does with shell tools), [`elf::check`] refuses
//! anything that is not an x86_64 ELF executable, and [`deb`] reads a
//! Debian `linux-image-*` package directly (no dpkg needed), so ignis
//! provides its default kernel from the package registry alone.

pub mod bzimage;
pub mod deb;
pub mod elf;
mod modules;

pub use modules::ModulesTar;

/// The pieces of a kernel as found in a file, package or image.
#[derive(Debug, Default)]
pub struct KernelFiles {
    /// The ELF vmlinux.
    pub vmlinux: Vec<u8>,
    /// The bzImage it came from, when there was one.
    pub bzimage: Option<Vec<u8>>,
    /// Kernel release.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    #[error(transparent)]
    BzImage(#[from] bzimage::BzImageError),
    #[error("the file is neither an ELF vmlinux nor a bzImage (first bytes {head:02x?}); give an uncompressed vmlinux, a vmlinuz/bzImage or a linux-image .deb")]
    UnknownFormat { head: Vec<u8> },
}

/// Accepts an ELF vmlinux or a bzImage and returns the kernel files.
pub fn from_bytes(data: Vec<u8>) -> Result<KernelFiles, KernelError> {
    if data.starts_with(elf::MAGIC) {
        elf::check(&data)?;
        let version = elf::version(&data).unwrap_or_default();
        return Ok(KernelFiles {
            vmlinux: data,
            bzimage: None,
            version,
        });
    }
    if bzimage::is_bzimage(&data) {
        let vmlinux = bzimage::extract_vmlinux(&data)?;
        elf::check(&vmlinux)?;
        let version = bzimage::version(&data)
            .or_else(|| elf::version(&vmlinux))
            .unwrap_or_default();
        return Ok(KernelFiles {
            vmlinux,
            bzimage: Some(data),
            version,
        });
    }
    Err(KernelError::UnknownFormat {
        head: data.iter().take(8).copied().collect(),
    })
}
