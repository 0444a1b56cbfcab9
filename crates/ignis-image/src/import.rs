//! `ignis image import FILE|DIR`: `docker save` tarballs (classic and the
//! OCI-style layout Docker 25+ writes) and OCI image layouts, as a directory
//! or a tar (optionally gzip-compressed).
//!
//! Every blob is written to the store and verified: files under
//! `blobs/sha256/<hex>` must hash to their name, configs are stored by
//! their hash, and layer contents are later checked against the config's
//! `diff_ids` when unpacked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use ignis_state::{DigestError, Store};
use sha2::Digest as _;

use crate::fetched::{Fetched, LayerRef};
use crate::oci::{self, ConfigFile, DockerSaveEntry, Index, Manifest, MAX_JSON};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a docker-save archive nor an OCI image layout (no manifest.json or index.json)")]
    UnknownFormat { path: String },
    #[error("archive member {member} is missing")]
    Missing { member: String },
    #[error("archive member {member} is corrupted")]
    Corrupted {
        member: String,
        #[source]
        source: DigestError,
    },
    #[error("archive member {member} is not valid JSON of the expected shape")]
    BadJson {
        member: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("archive member {member} is larger than {max} bytes, too large for a JSON document")]
    TooLarge { member: String, max: u64 },
    #[error("the OCI index lists no linux/amd64 image")]
    NoPlatform,
    #[error("the archive holds no image")]
    Empty,
    #[error("blob store")]
    Store(#[from] DigestError),
}

/// A member already committed to the blob store.
#[derive(Debug, Clone)]
struct Member {
    digest: Option<String>,
    size: u64,
    small: Option<Vec<u8>>,
}

enum Source {
    Dir(PathBuf),
    Tar(HashMap<String, Member>),
}

struct Archive<'s> {
    store: &'s Store,
    src: Source,
}

fn norm(path: &str) -> String {
    let mut p = path.trim_start_matches("./").to_string();
    while p.contains("//") {
        p = p.replace("//", "/");
    }
    p
}

fn expected_digest(member: &str) -> Option<String> {
    member
        .strip_prefix("blobs/sha256/")
        .map(|h| format!("sha256:{h}"))
}

impl<'s> Archive<'s> {
    fn open(store: &'s Store, path: &Path) -> Result<Self, ImportError> {
        let read = |source| ImportError::Read {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.is_dir() {
            return Ok(Self {
                store,
                src: Source::Dir(path.to_path_buf()),
            });
        }
        let file = std::fs::File::open(path).map_err(read)?;
        let mut buf = BufReader::with_capacity(1 << 20, file);
        let gz = buf.fill_buf().map_err(read)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(buf))
        } else {
            Box::new(buf)
        };
        let mut members = HashMap::new();
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(read)? {
            let mut entry = entry.map_err(read)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = norm(&String::from_utf8_lossy(&entry.path_bytes()));
            let size = entry.size();
            let expected = expected_digest(&name);
            if expected.is_none() && size <= MAX_JSON {
                // Small loose files (manifest.json, index.json, configs of
                // the classic format) stay in memory until referenced.
                let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                entry.read_to_end(&mut data).map_err(read)?;
                members.insert(
                    name,
                    Member {
                        digest: None,
                        size,
                        small: Some(data),
                    },
                );
                continue;
            }
            let mut w = store.blobs().writer().map_err(read)?;
            let mut small = (size <= MAX_JSON).then(Vec::new);
            let mut chunk = vec![0u8; 1 << 20];
            loop {
                let n = entry.read(&mut chunk).map_err(read)?;
                if n == 0 {
                    break;
                }
                w.write_all(&chunk[..n]).map_err(read)?;
                if let Some(s) = small.as_mut() {
                    s.extend_from_slice(&chunk[..n]);
                }
            }
            let (digest, size) =
                w.commit(expected.as_deref())
                    .map_err(|source| ImportError::Corrupted {
                        member: name.clone(),
                        source,
                    })?;
            members.insert(
                name,
                Member {
                    digest: Some(digest),
                    size,
                    small,
                },
            );
        }
        Ok(Self {
            store,
            src: Source::Tar(members),
        })
    }

    fn read_json_bytes(&self, member: &str) -> Result<Vec<u8>, ImportError> {
        let member = norm(member);
        match &self.src {
            Source::Dir(dir) => {
                let path = dir.join(&member);
                let meta = std::fs::metadata(&path).map_err(|_| ImportError::Missing {
                    member: member.clone(),
                })?;
                if meta.len() > MAX_JSON {
                    return Err(ImportError::TooLarge {
                        member,
                        max: MAX_JSON,
                    });
                }
                std::fs::read(&path).map_err(|source| ImportError::Read {
                    path: member,
                    source,
                })
            }
            Source::Tar(m) => {
                let found = m.get(&member).ok_or_else(|| ImportError::Missing {
                    member: member.clone(),
                })?;
                found.small.clone().ok_or(ImportError::TooLarge {
                    member,
                    max: MAX_JSON,
                })
            }
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        member: &str,
    ) -> Result<(T, Vec<u8>), ImportError> {
        let bytes = self.read_json_bytes(member)?;
        let v = serde_json::from_slice(&bytes).map_err(|source| ImportError::BadJson {
            member: member.to_string(),
            source,
        })?;
        Ok((v, bytes))
    }

    /// Makes sure `member` is in the blob store and returns its digest.
    fn commit(&self, member: &str) -> Result<(String, u64), ImportError> {
        let member = norm(member);
        let expected = expected_digest(&member);
        match &self.src {
            Source::Dir(dir) => {
                let path = dir.join(&member);
                let mut f = std::fs::File::open(&path).map_err(|_| ImportError::Missing {
                    member: member.clone(),
                })?;
                let read = |source| ImportError::Read {
                    path: path.display().to_string(),
                    source,
                };
                let mut w = self.store.blobs().writer().map_err(read)?;
                std::io::copy(&mut f, &mut w).map_err(read)?;
                w.commit(expected.as_deref())
                    .map_err(|source| ImportError::Corrupted { member, source })
            }
            Source::Tar(m) => {
                let found = m.get(&member).ok_or_else(|| ImportError::Missing {
                    member: member.clone(),
                })?;
                match (&found.digest, &found.small) {
                    (Some(d), _) => Ok((d.clone(), found.size)),
                    (None, Some(data)) => {
                        let d = self.store.blobs().put(data, expected.as_deref())?;
                        Ok((d, found.size))
                    }
                    (None, None) => Err(ImportError::Missing { member }),
                }
            }
        }
    }

    fn has(&self, member: &str) -> bool {
        match &self.src {
            Source::Dir(dir) => dir.join(member).is_file(),
            Source::Tar(m) => m.contains_key(member),
        }
    }
}

/// Imports every image in the archive at `path` into the blob store.
/// The caller holds the store's operation guard.
pub fn import_archive(store: &Store, path: &Path) -> Result<Vec<Fetched>, ImportError> {
    let archive = Archive::open(store, path)?;
    let source = format!("file:{}", path.display());
    let images = if archive.has("manifest.json") {
        import_docker(&archive, &source)?
    } else if archive.has("index.json") {
        import_oci(&archive, &source, &layout_name(path))?
    } else {
        return Err(ImportError::UnknownFormat {
            path: path.display().to_string(),
        });
    };
    if images.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(images)
}

fn import_docker(archive: &Archive<'_>, source: &str) -> Result<Vec<Fetched>, ImportError> {
    let (entries, _) = archive.json::<Vec<DockerSaveEntry>>("manifest.json")?;
    let mut out = Vec::new();
    for entry in entries {
        let (config, config_bytes) = archive.json::<ConfigFile>(&entry.config)?;
        let config_digest = archive.store.blobs().put(&config_bytes, None)?;
        let mut layers = Vec::new();
        for l in &entry.layers {
            let (digest, size) = archive.commit(l)?;
            layers.push(LayerRef {
                digest,
                media_type: oci::MT_OCI_LAYER.to_string(),
                size,
            });
        }
        // docker save has no registry manifest; write the OCI manifest that
        // describes these blobs so the image has one like pulled images do.
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MT_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_bytes.len()},
            "layers": layers.iter().map(|l| serde_json::json!(
                {"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
        let manifest_digest = archive.store.blobs().put(&manifest_bytes, None)?;
        let mut blobs = vec![manifest_digest.clone(), config_digest.clone()];
        blobs.extend(layers.iter().map(|l| l.digest.clone()));
        out.push(Fetched {
            manifest_digest,
            config_digest,
            config,
            layers,
            blobs,
            names: entry.repo_tags.unwrap_or_default(),
            source: source.to_string(),
        });
    }
    Ok(out)
}

fn blob_member(digest: &str) -> Result<String, ImportError> {
    let hex = ignis_state::digest_hex(digest)?;
    Ok(format!("blobs/sha256/{hex}"))
}

/// The name of the image an OCI layout holds when its
/// `org.opencontainers.image.ref.name` is a bare tag: the layout's own
/// (directory or file) name, lowercased, under `localhost/`, as podman
/// names what has no registry.
fn layout_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".tar.gz", ".tgz", ".tar"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .unwrap_or(&file);
    let clean: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    format!(
        "localhost/{}",
        if clean.is_empty() { "image" } else { clean }
    )
}

/// A ref.name that is only a tag (`latest`, `1.2`): the OCI image spec
/// allows it, and skopeo and podman read it as the tag of the layout.
fn bare_tag(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', ':', '@'])
}

fn import_oci(
    archive: &Archive<'_>,
    source: &str,
    layout: &str,
) -> Result<Vec<Fetched>, ImportError> {
    let (index, _) = archive.json::<Index>("index.json")?;
    let mut out = Vec::new();
    for desc in &index.manifests {
        let mut names = Vec::new();
        if let Some(n) = desc.annotations.get("io.containerd.image.name") {
            names.push(n.clone());
        } else if let Some(n) = desc.annotations.get("org.opencontainers.image.ref.name") {
            if bare_tag(n) {
                let named = format!("{layout}:{n}");
                tracing::warn!(
                    "{source}: org.opencontainers.image.ref.name '{n}' is a bare tag; naming the image {named} (name it yourself with -t)"
                );
                names.push(named);
            } else {
                names.push(n.clone());
            }
        }
        let mut desc = desc.clone();
        // Follow nested indexes down to one platform's manifest.
        let manifest = loop {
            let member = blob_member(&desc.digest)?;
            let (value, _) = archive.json::<serde_json::Value>(&member)?;
            if oci::is_index(
                Some(desc.media_type.as_str()).filter(|m| !m.is_empty()),
                &value,
            ) {
                let idx: Index =
                    serde_json::from_value(value).map_err(|source| ImportError::BadJson {
                        member: member.clone(),
                        source,
                    })?;
                desc = oci::pick_platform(&idx.manifests)
                    .ok_or(ImportError::NoPlatform)?
                    .clone();
                continue;
            }
            archive.commit(&member)?;
            let m: Manifest = serde_json::from_value(value)
                .map_err(|source| ImportError::BadJson { member, source })?;
            break m;
        };
        let config_member = blob_member(&manifest.config.digest)?;
        let (config, _) = archive.json::<ConfigFile>(&config_member)?;
        let (config_digest, _) = archive.commit(&config_member)?;
        let mut layers = Vec::new();
        for l in &manifest.layers {
            let (digest, size) = archive.commit(&blob_member(&l.digest)?)?;
            layers.push(LayerRef {
                digest,
                media_type: l.media_type.clone(),
                size,
            });
        }
        let mut blobs = vec![desc.digest.clone(), config_digest.clone()];
        blobs.extend(layers.iter().map(|l| l.digest.clone()));
        out.push(Fetched {
            manifest_digest: desc.digest.clone(),
            config_digest,
            config,
            layers,
            blobs,
            names,
            source: source.to_string(),
        });
    }
    Ok(out)
}

/// sha256 of bytes as `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
