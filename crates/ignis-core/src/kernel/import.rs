use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use ignis_api::{KernelRecord, KernelSource};
use ignis_image::layer::decompress;
use ignis_kernel::deb::{is_deb, read_deb, DebError, KernelScan};
use ignis_kernel::KernelFiles;
use ignis_state::BlobWriter;

use super::{parse, DEFAULT_NAME, KIND};
use crate::{fault, Error, ErrorKind, Ignis};

/// Largest plain kernel file read into memory.
const MAX_KERNEL: u64 = 512 << 20;

impl Ignis {
    /// `ignis kernel import SOURCE [--name N] [--default]` where SOURCE is
    /// a file (ELF vmlinux, bzImage, linux-image .deb), `apt:PACKAGE`
    /// (downloaded with apt-get, e.g. `apt:linux-image-amd64`), or an OCI
    /// image reference in Ignite's kernel layout.
    pub fn kernel_import(
        &self,
        source: &str,
        name: Option<&str>,
        default: bool,
    ) -> Result<KernelRecord, Error> {
        let _guard = self.operation_guard()?;
        let modules = self
            .store
            .blobs()
            .writer()
            .map_err(|e| Error::internal("create a blob", e))?;
        let (files, modules, count, src) = if let Some(pkg) = source.strip_prefix("apt:") {
            let scratch = self
                .store
                .scratch("apt")
                .map_err(|e| Error::internal("create scratch space", e))?;
            let deb = apt_download(pkg, scratch.path())?;
            let (f, m, c) = read_deb(&deb, modules).map_err(deb_error)?;
            (f, m, c, KernelSource::File(format!("apt:{pkg}")))
        } else if Path::new(source).exists() {
            let (f, m, c) = from_file(Path::new(source), modules)?;
            (f, m, c, KernelSource::File(source.to_string()))
        } else if looks_like_path(source) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("kernel file {source} does not exist"),
            ));
        } else {
            let (f, m, c) = self.kernel_from_image(source, modules)?;
            (
                f,
                m,
                c,
                KernelSource::Image(
                    ignis_image::pull::normalize(source).unwrap_or(source.to_string()),
                ),
            )
        };
        fault::point("kernel:files-read");

        let blobs = self.store.blobs();
        let store_err = |e| Error::internal("store the kernel", e);
        let vmlinux_digest = blobs.put(&files.vmlinux, None).map_err(store_err)?;
        let bzimage_digest = match &files.bzimage {
            Some(b) => Some(blobs.put(b, None).map_err(store_err)?),
            None => None,
        };
        let (modules_digest, modules_size) = if count > 0 {
            let (d, s) = modules.commit(None).map_err(store_err)?;
            (Some(d), s)
        } else {
            (None, 0)
        };
        let id = vmlinux_digest.clone();
        let mut names = Vec::new();
        match (name, &src) {
            (Some(n), _) => names.push(n.to_string()),
            (None, KernelSource::Image(r)) => names.push(r.clone()),
            (None, KernelSource::File(_)) if !files.version.is_empty() => {
                names.push(files.version.clone())
            }
            (None, KernelSource::File(f)) => names.push(
                Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        }
        if default {
            names.push(DEFAULT_NAME.to_string());
        }
        let record = KernelRecord {
            id: id.clone(),
            names: vec![],
            version: files.version.clone(),
            source: src,
            created: crate::now(),
            vmlinux_digest: vmlinux_digest.clone(),
            vmlinux_size: files.vmlinux.len() as u64,
            bzimage_digest: bzimage_digest.clone(),
            modules_digest: modules_digest.clone(),
            modules_size,
        };
        let json = serde_json::to_string(&record).expect("serializable");
        self.store.db().tx(|tx| {
            tx.insert_object(KIND, &id, record.created, &json)?;
            for d in [
                Some(&vmlinux_digest),
                bzimage_digest.as_ref(),
                modules_digest.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                tx.add_blob_ref(d, KIND, &id)?;
            }
            for n in &names {
                tx.set_name(KIND, n, &id)?;
            }
            Ok::<_, Error>(())
        })?;
        let row = self
            .store
            .db()
            .read(|tx| tx.get_object(KIND, &id))?
            .expect("just inserted");
        parse(&row)
    }

    fn kernel_from_image(
        &self,
        reference: &str,
        modules: BlobWriter,
    ) -> Result<(KernelFiles, BlobWriter, u64), Error> {
        let fetched = self.pull_blobs(reference)?;
        let mut scan = KernelScan::new(modules).map_err(|e| Error::internal("create a blob", e))?;
        for layer in &fetched.layers {
            let file = self
                .store
                .blobs()
                .open(&layer.digest)
                .map_err(|e| Error::internal("read a layer", e))?;
            let reader = decompress(file).map_err(|e| Error::internal("decompress a layer", e))?;
            scan.scan_tar(reader).map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!("cannot read layer {} of {reference}", layer.digest),
                    e,
                )
            })?;
        }
        scan.finish(reference).map_err(deb_error)
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s.ends_with(".deb")
}

fn from_file(path: &Path, modules: BlobWriter) -> Result<(KernelFiles, BlobWriter, u64), Error> {
    let read_err = |e| {
        Error::with_source(
            ErrorKind::Invalid,
            format!("cannot read {}", path.display()),
            e,
        )
    };
    let mut f = std::fs::File::open(path).map_err(read_err)?;
    let mut head = [0u8; 21];
    let n = f.read(&mut head).map_err(read_err)?;
    if is_deb(&head[..n]) {
        return read_deb(path, modules).map_err(deb_error);
    }
    let meta = f.metadata().map_err(read_err)?;
    if meta.len() > MAX_KERNEL {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!(
                "{} is larger than {MAX_KERNEL} bytes; not a kernel",
                path.display()
            ),
        ));
    }
    let data = std::fs::read(path).map_err(read_err)?;
    let files = ignis_kernel::from_bytes(data)
        .map_err(|e| Error::with_source(ErrorKind::Invalid, path.display().to_string(), e))?;
    Ok((files, modules, 0))
}

fn deb_error(e: DebError) -> Error {
    let kind = match &e {
        DebError::Read { .. } => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    };
    Error::wrap(kind, e)
}

/// Downloads a Debian package with apt-get; a metapackage such as
/// `linux-image-amd64` is resolved to the versioned package it depends on.
fn apt_download(pkg: &str, dir: &Path) -> Result<PathBuf, Error> {
    if !pkg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.+:".contains(&b))
    {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("'{pkg}' is not a Debian package name"),
        ));
    }
    let unavailable = |what: &str, e: std::io::Error| {
        Error::with_source(
            ErrorKind::Unavailable,
            format!("cannot run {what}; apt:PACKAGE needs a Debian host"),
            e,
        )
    };
    let deps = Command::new("apt-cache")
        .args(["depends", pkg])
        .output()
        .map_err(|e| unavailable("apt-cache", e))?;
    let resolved = String::from_utf8_lossy(&deps.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| {
            d.starts_with("linux-image-") && d.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .map(str::to_string)
        .unwrap_or_else(|| pkg.to_string());
    let out = Command::new("apt-get")
        .args(["download", &resolved])
        .current_dir(dir)
        .output()
        .map_err(|e| unavailable("apt-get", e))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "apt-get download {resolved} failed: {}; run apt-get update first",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    std::fs::read_dir(dir)
        .map_err(|e| Error::internal("list the download directory", e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("apt-get download {resolved} produced no .deb"),
            )
        })
}
