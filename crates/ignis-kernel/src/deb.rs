//! Reading kernels out of tar streams: Debian `linux-image-*` packages (an
//! `ar` archive whose `data.tar.{xz,zst,gz}` holds `boot/vmlinuz-<ver>` and
//! `lib/modules/<ver>`) and Ignite-style kernel image layers
//! (`boot/vmlinux`, `lib/modules/<ver>`).

use std::io::{Read, Write};
use std::path::Path;

use crate::{from_bytes, KernelError, KernelFiles, ModulesTar};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Debian package (no data.tar member)")]
    NotDeb { path: String },
    #[error("no kernel found: expected boot/vmlinux, boot/vmlinuz-* or boot/bzImage in {what}")]
    NoKernel { what: String },
    #[error("the kernel in {what} is not usable")]
    Kernel {
        what: String,
        #[source]
        source: KernelError,
    },
}

/// The largest kernel file read into memory.
const MAX_KERNEL_FILE: u64 = 512 << 20;

fn is_kernel_path(path: &str) -> bool {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    let Some(name) = p.strip_prefix("boot/") else {
        return false;
    };
    name == "vmlinux"
        || name == "bzImage"
        || name.starts_with("vmlinux-")
        || name.starts_with("vmlinuz")
}

/// Collects a kernel from one or more tar streams (later ones win).
pub struct KernelScan<W: Write> {
    kernel: Option<(String, Vec<u8>)>,
    modules: Option<ModulesTar<W>>,
}

impl<W: Write> KernelScan<W> {
    /// `modules_sink` receives the module tree (zstd tar) if there is one.
    pub fn new(modules_sink: W) -> std::io::Result<Self> {
        Ok(Self {
            kernel: None,
            modules: Some(ModulesTar::new(modules_sink)?),
        })
    }

    pub fn scan_tar(&mut self, reader: impl Read) -> std::io::Result<()> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if entry.header().entry_type().is_file() && is_kernel_path(&path) {
                if entry.size() > MAX_KERNEL_FILE {
                    continue;
                }
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                // Prefer an ELF vmlinux over a compressed one in the same tree.
                let is_elf = data.starts_with(crate::elf::MAGIC);
                let have_elf = self
                    .kernel
                    .as_ref()
                    .is_some_and(|(_, d)| d.starts_with(crate::elf::MAGIC));
                if is_elf || !have_elf {
                    self.kernel = Some((path, data));
                }
                continue;
            }
            if let Some(m) = self.modules.as_mut() {
                m.offer(&mut entry)?;
            }
        }
        Ok(())
    }

    /// Returns the kernel and, when modules were found, the sink and the
    /// number of module-tree entries.
    pub fn finish(mut self, what: &str) -> Result<(KernelFiles, W, u64), DebError> {
        let read = |source| DebError::Read {
            path: what.to_string(),
            source,
        };
        let modules = self.modules.take().expect("once");
        let count = modules.entries();
        let mod_version = modules.versions().first().cloned();
        let sink = modules.finish().map_err(read)?;
        let (_, data) = self.kernel.ok_or_else(|| DebError::NoKernel {
            what: what.to_string(),
        })?;
        let mut files = from_bytes(data).map_err(|source| DebError::Kernel {
            what: what.to_string(),
            source,
        })?;
        if let Some(v) = mod_version {
            files.version = v;
        }
        Ok((files, sink, count))
    }
}

/// Reads a Debian kernel package.
pub fn read_deb<W: Write>(path: &Path, modules_sink: W) -> Result<(KernelFiles, W, u64), DebError> {
    let what = path.display().to_string();
    let read = |source| DebError::Read {
        path: what.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(file));
    let mut scan = KernelScan::new(modules_sink).map_err(read)?;
    let mut found = false;
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(read)?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let reader: Box<dyn Read> = match name.as_str() {
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(entry)),
            "data.tar.zst" => Box::new(zstd::stream::read::Decoder::new(entry).map_err(read)?),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar" => Box::new(entry),
            _ => continue,
        };
        found = true;
        scan.scan_tar(reader).map_err(read)?;
        break;
    }
    if !found {
        return Err(DebError::NotDeb { path: what });
    }
    scan.finish(&what)
}

pub fn is_deb(head: &[u8]) -> bool {
    head.starts_with(b"!<arch>\ndebian-binary")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::test_bzimage;
    use crate::elf::test_elf;

    fn data_tar() -> Vec<u8> {
        let vmlinux = test_elf(b"Linux version 6.1.0-9-amd64 (x)");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vmlinux).unwrap();
        let bz = test_bzimage(&gz.finish().unwrap(), "6.1.0-9-amd64");
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("./boot/vmlinuz-6.1.0-9-amd64", &bz);
        add("./boot/config-6.1.0-9-amd64", b"CONFIG_X=y");
        add(
            "./lib/modules/6.1.0-9-amd64/kernel/drivers/virtio.ko",
            b"\x7fELF module",
        );
        add("./usr/share/doc/x", b"doc");
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_a_debian_kernel_package() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("linux-image.deb");
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data_tar()).unwrap();
        let data = xz.finish().unwrap();
        let mut a = ar::Builder::new(std::fs::File::create(&deb).unwrap());
        a.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        a.append(&ar::Header::new(b"control.tar.xz".to_vec(), 0), &b""[..])
            .unwrap();
        a.append(
            &ar::Header::new(b"data.tar.xz".to_vec(), data.len() as u64),
            &data[..],
        )
        .unwrap();
        drop(a);
        assert!(is_deb(&std::fs::read(&deb).unwrap()[..21]));

        let (files, modules, count) = read_deb(&deb, Vec::new()).unwrap();
        assert_eq!(files.version, "6.1.0-9-amd64");
        assert!(files.bzimage.is_some());
        crate::elf::check(&files.vmlinux).unwrap();
        assert_eq!(count, 1);
        let plain = zstd::decode_all(&modules[..]).unwrap();
        let mut t = tar::Archive::new(&plain[..]);
        let names: Vec<String> = t
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["lib/modules/6.1.0-9-amd64/kernel/drivers/virtio.ko"]
        );
    }

    #[test]
    fn a_tree_without_a_kernel_is_a_clear_error() {
        let mut scan = KernelScan::new(Vec::new()).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        b.append_data(&mut h, "etc/x", &b"x"[..]).unwrap();
        scan.scan_tar(&b.into_inner().unwrap()[..]).unwrap();
        assert!(matches!(
            scan.finish("image"),
            Err(DebError::NoKernel { .. })
        ));
    }
}
