use std::collections::BTreeMap;
use std::io::Read;

use ignis_guest_config::{GuestConfig, CONFIG_PATH, MODULES_PATH, VFAT_MODULES_PATH};

use crate::cpio::CpioWriter;
use crate::modules::{depends, load_order, module_name, GUEST_MODULES, VFAT_MODULES};

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(
        "the guest init at {path} is not a static executable; build it with scripts/build-guest.sh"
    )]
    InitNotStatic { path: String },
    #[error("cannot read the kernel's module tree")]
    Modules(#[source] std::io::Error),
    #[error("cannot write the initramfs")]
    Write(#[source] std::io::Error),
}

/// True when `elf` has no program interpreter (PT_INTERP), i.e. it runs
/// without a dynamic loader in the initramfs.
pub fn is_static_elf(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return false;
    }
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let (Ok(phoff), phentsize, phnum) = (
        usize::try_from(u64_at(0x20)),
        usize::from(u16_at(0x36)),
        usize::from(u16_at(0x38)),
    ) else {
        return false;
    };
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= elf.len() && u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes")) != 3
    })
}

/// The per-kernel part: `/init`, the needed modules and their load order.
/// `open_modules` opens the kernel's zstd-compressed module tree (read
/// twice: once for dependencies, once for the chosen modules, so the whole
/// tree is never held in memory).
pub fn base<R: Read>(
    init: &[u8],
    init_path: &str,
    open_modules: Option<&dyn Fn() -> std::io::Result<R>>,
) -> Result<Vec<u8>, InitramfsError> {
    if !is_static_elf(init) {
        return Err(InitramfsError::InitNotStatic {
            path: init_path.to_string(),
        });
    }
    let mut w = CpioWriter::new(Vec::new());
    let wr = InitramfsError::Write;
    for d in [
        "dev",
        "proc",
        "sys",
        "mnt",
        "newroot",
        "ignis",
        "lib",
        "lib/modules",
    ] {
        w.dir(d, 0o755).map_err(wr)?;
    }
    w.file("init", 0o755, init).map_err(wr)?;
    let mut order = Vec::new();
    // Loaded on demand (after the always-loaded ones, which they may
    // depend on): see `VFAT_MODULES`.
    let mut vfat = Vec::new();
    if let Some(open) = open_modules {
        let me = InitramfsError::Modules;
        let mut all: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for_each_module(open().map_err(me)?, |path, bytes| {
            all.insert(module_name(path), (path.to_string(), depends(bytes)));
        })
        .map_err(me)?;
        order = load_order(&all, GUEST_MODULES);
        vfat = load_order(&all, VFAT_MODULES)
            .into_iter()
            .filter(|p| !order.contains(p))
            .collect();
        let wanted: std::collections::BTreeSet<&String> = order.iter().chain(&vfat).collect();
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for_each_module(open().map_err(me)?, |path, bytes| {
            if wanted.contains(&path.to_string()) {
                data.insert(path.to_string(), bytes.to_vec());
            }
        })
        .map_err(me)?;
        let mut dirs = std::collections::BTreeSet::new();
        for p in order.iter().chain(&vfat) {
            let mut acc = String::new();
            for comp in p.rsplit_once('/').map(|(d, _)| d).unwrap_or("").split('/') {
                acc = if acc.is_empty() {
                    comp.to_string()
                } else {
                    format!("{acc}/{comp}")
                };
                if acc != "lib" && acc != "lib/modules" && dirs.insert(acc.clone()) {
                    w.dir(&acc, 0o755).map_err(wr)?;
                }
            }
            w.file(p, 0o644, &data[p]).map_err(wr)?;
        }
    }
    let list: String = order.iter().map(|p| format!("/{p}\n")).collect();
    w.file(MODULES_PATH, 0o644, list.as_bytes()).map_err(wr)?;
    let list: String = vfat.iter().map(|p| format!("/{p}\n")).collect();
    w.file(VFAT_MODULES_PATH, 0o644, list.as_bytes())
        .map_err(wr)?;
    w.finish().map_err(wr)
}

fn for_each_module(tar: impl Read, mut f: impl FnMut(&str, &[u8])) -> std::io::Result<()> {
    let dec = zstd::stream::read::Decoder::new(tar)?;
    let mut archive = tar::Archive::new(dec);
    let mut bytes = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        if !path.ends_with(".ko") || !entry.header().entry_type().is_file() {
            continue;
        }
        bytes.clear();
        entry.read_to_end(&mut bytes)?;
        f(&path, &bytes);
    }
    Ok(())
}

/// The per-VM part: the guest config and files to copy (`(name, bytes)`
/// placed under `/ignis/files/`).
pub fn vm_part(cfg: &GuestConfig, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, InitramfsError> {
    let wr = InitramfsError::Write;
    let mut w = CpioWriter::new(Vec::new());
    w.dir("ignis/files", 0o700).map_err(wr)?;
    for (name, data) in files {
        w.file(&format!("ignis/files/{name}"), 0o600, data)
            .map_err(wr)?;
    }
    let json = serde_json::to_vec_pretty(cfg).expect("serializable");
    w.file(CONFIG_PATH, 0o600, &json).map_err(wr)?;
    w.finish().map_err(wr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_detection_reads_program_headers() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        // Test binaries are dynamically linked on glibc hosts.
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
