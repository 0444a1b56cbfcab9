use std::io::{Read, Write};

/// Writes a kernel's module tree as a zstd-compressed tar with paths
/// `lib/modules/<version>/...`, whatever prefix the source used
/// (`./lib/modules`, `usr/lib/modules`).
pub struct ModulesTar<W: Write> {
    builder: tar::Builder<zstd::Encoder<'static, W>>,
    versions: Vec<String>,
    entries: u64,
}

/// For `[./][usr/]lib/modules/<ver>[/rest]`, returns `(ver, "lib/modules/<ver>[/rest]")`.
pub fn modules_path(path: &str) -> Option<(String, String)> {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    let p = p.strip_prefix("usr/").unwrap_or(p);
    let rest = p.strip_prefix("lib/modules/")?;
    let ver = rest.split('/').next().filter(|v| !v.is_empty())?;
    if rest.split('/').any(|c| c == "..") {
        return None;
    }
    Some((
        ver.to_string(),
        format!("lib/modules/{}", rest.trim_end_matches('/')),
    ))
}

impl<W: Write> ModulesTar<W> {
    pub fn new(sink: W) -> std::io::Result<Self> {
        let enc = zstd::Encoder::new(sink, 3)?;
        Ok(Self {
            builder: tar::Builder::new(enc),
            versions: Vec::new(),
            entries: 0,
        })
    }

    /// Copies one tar entry if it is part of a module tree; returns whether it was.
    pub fn offer<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> std::io::Result<bool> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some((ver, path)) = modules_path(&raw) else {
            return Ok(false);
        };
        if !self.versions.contains(&ver) {
            self.versions.push(ver);
        }
        let mut h = entry.header().clone();
        match h.entry_type() {
            tar::EntryType::Directory | tar::EntryType::Regular => {
                self.builder.append_data(&mut h, &path, entry)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.builder.append_link(&mut h, &path, target)?;
            }
            _ => return Ok(false),
        }
        self.entries += 1;
        Ok(true)
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Kernel releases seen (`lib/modules/<ver>`).
    pub fn versions(&self) -> &[String] {
        &self.versions
    }

    pub fn finish(self) -> std::io::Result<W> {
        self.builder.into_inner()?.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_are_normalized() {
        assert_eq!(
            modules_path("./lib/modules/6.1.0-27-amd64/kernel/virtio.ko"),
            Some((
                "6.1.0-27-amd64".into(),
                "lib/modules/6.1.0-27-amd64/kernel/virtio.ko".into()
            ))
        );
        assert_eq!(
            modules_path("usr/lib/modules/6.1/").unwrap().1,
            "lib/modules/6.1"
        );
        assert_eq!(modules_path("boot/vmlinuz"), None);
        assert_eq!(modules_path("lib/modules/"), None);
        assert_eq!(modules_path("lib/modules/6.1/../../etc/x"), None);
    }
}
