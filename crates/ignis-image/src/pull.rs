//! `ignis image pull REF` from an OCI / Docker v2 registry.
//!
//! The registry is behind [`Registry`] so the pull logic (verification,
//! what gets stored) is tested against an in-memory fake; the real one is
//! [`OciRegistry`] on `oci-client`.

use std::future::Future;
use std::io::Write;

use futures_util::StreamExt;
use ignis_state::{DigestError, Store};

use crate::fetched::{Fetched, LayerRef};
use crate::oci::{ConfigFile, MAX_JSON};
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("'{reference}' is not a valid image reference")]
    BadReference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("registry request failed for {reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("blob {digest} from the registry does not match its digest; nothing was stored")]
    Corrupted {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("image config from the registry is not valid JSON")]
    BadConfig(#[source] serde_json::Error),
    #[error("image config is larger than {MAX_JSON} bytes")]
    ConfigTooLarge,
    #[error("blob {digest}: the registry sent more than the {size} bytes the manifest declares (an endless or oversized stream); nothing was stored")]
    Oversized { digest: String, size: u64 },
    #[error("registry stalled: no data for {0} s while pulling {1}")]
    Stalled(u64, String),
    #[error("cannot write to the blob store")]
    Io(#[source] std::io::Error),
    #[error("blob store")]
    Store(#[from] DigestError),
}

/// A descriptor as the pull logic needs it.
#[derive(Debug, Clone)]
pub struct BlobDesc {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// The manifest of one platform.
#[derive(Debug, Clone)]
pub struct PulledManifest {
    pub digest: String,
    pub raw: Vec<u8>,
    pub config: BlobDesc,
    pub layers: Vec<BlobDesc>,
}

/// What ignis needs from a registry.
pub trait Registry {
    /// Resolves `reference` (through an index, to linux/amd64) to a manifest.
    fn manifest(&self, reference: &str) -> impl Future<Output = Result<PulledManifest, PullError>>;
    /// Streams a blob into `sink`, calling `progress` with byte counts.
    fn blob(
        &self,
        reference: &str,
        desc: &BlobDesc,
        sink: &mut (dyn Write + Send),
        progress: &(dyn Fn(u64) + Sync),
    ) -> impl Future<Output = Result<(), PullError>>;
}

/// Normalizes a user reference the way Docker does
/// (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize(reference: &str) -> Result<String, PullError> {
    if let Some(n) = normalize_common(reference) {
        return Ok(n);
    }
    let r: oci_client::Reference = reference
        .parse()
        .map_err(|source| PullError::BadReference {
            reference: reference.to_string(),
            source,
        })?;
    Ok(r.whole())
}

/// The common shapes of a reference (`name`, `org/name:tag`,
/// `host[:port]/path:tag`), normalized without a regular expression;
/// `None` for anything else, which [`normalize`] hands to oci-client.
/// Hand-written because oci-client's parser compiles the distribution
/// grammar's regular expression on first use: about 70 ms, paid by every
/// CLI command that looks an image up by name (most of `ignis run`'s own
/// cost before this). Every accepted input normalizes exactly as oci-client
/// does (tested against it).
fn normalize_common(reference: &str) -> Option<String> {
    if reference.len() > 255 || reference.contains('@') {
        return None;
    }
    // The tag: after the last ':' that follows the last '/'.
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], Some(&reference[slash + i + 1..])),
        None => (reference, None),
    };
    if let Some(t) = tag {
        let mut chars = t.chars();
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if t.len() > 128
            || !chars.next().is_some_and(word)
            || !chars.all(|c| word(c) || c == '.' || c == '-')
        {
            return None;
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let domain = match parts.as_slice() {
        [first, _, ..] if first.contains(['.', ':']) || *first == "localhost" => {
            let d = parts.remove(0);
            let (host, port) = match d.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (d, None),
            };
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if !host.split('.').all(label_ok)
                || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
                || host == "index.docker.io"
            {
                return None;
            }
            d
        }
        _ => "docker.io",
    };
    // path-component: [a-z0-9]+ joined by '.', '_', '__' or runs of '-'.
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                x if x.is_ascii_lowercase() || x.is_ascii_digit() => i += 1,
                b'.' => {
                    if !b[i + 1].is_ascii_alphanumeric() {
                        return false;
                    }
                    i += 1;
                }
                b'_' => {
                    let n = if b[i + 1] == b'_' { 2 } else { 1 };
                    if !b[i + n].is_ascii_alphanumeric() {
                        return false;
                    }
                    i += n;
                }
                b'-' => i += 1,
                _ => return false,
            }
        }
        true
    };
    if parts.is_empty() || !parts.iter().all(|c| component_ok(c)) {
        return None;
    }
    let path = if domain == "docker.io" && parts.len() == 1 {
        format!("library/{}", parts[0])
    } else {
        parts.join("/")
    };
    Some(format!("{domain}/{path}:{}", tag.unwrap_or("latest")))
}

/// An artifact's blobs pulled into the store (verified), config unparsed.
#[derive(Debug, Clone)]
pub struct FetchedArtifact {
    pub reference: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<LayerRef>,
}

/// Pulls any single-manifest artifact (an image, an ignis snapshot) into
/// the blob store, each blob verified against its digest.
pub async fn pull_artifact<R: Registry>(
    store: &Store,
    registry: &R,
    reference: &str,
    progress: &Progress,
) -> Result<FetchedArtifact, PullError> {
    let name = normalize(reference)?;
    let manifest = registry.manifest(&name).await?;
    let manifest_digest = store
        .blobs()
        .put(&manifest.raw, Some(&manifest.digest))
        .map_err(|source| PullError::Corrupted {
            digest: manifest.digest.clone(),
            source,
        })?;
    if manifest.config.size > MAX_JSON {
        return Err(PullError::ConfigTooLarge);
    }
    let config_digest =
        fetch_blob(store, registry, &name, &manifest.config, progress, false).await?;
    let mut layers = Vec::new();
    for desc in &manifest.layers {
        let digest = fetch_blob(store, registry, &name, desc, progress, true).await?;
        layers.push(LayerRef {
            digest,
            media_type: desc.media_type.clone(),
            size: desc.size,
        });
    }
    Ok(FetchedArtifact {
        reference: name,
        manifest_digest,
        config_digest,
        layers,
    })
}

/// Pushes an artifact: each blob file (streamed) and the config, each
/// skipped when the registry has it, then the manifest. Returns the manifest's digest.
pub async fn push_artifact(
    insecure: &[String],
    reference: &str,
    artifact_type: &str,
    config: (&[u8], &str),
    blobs: &[(std::path::PathBuf, BlobDesc)],
) -> Result<String, PullError> {
    use sha2::Digest as _;
    let r = OciRegistry::parse(&normalize(reference)?)?;
    let client = OciRegistry::new(insecure).client;
    let auth = docker_auth(r.resolve_registry());
    client
        .auth(&r, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| registry_err(reference, e))?;
    for (path, desc) in blobs {
        if client.blob_exists(&r, &desc.digest).await.unwrap_or(false) {
            continue;
        }
        let file = std::fs::File::open(path).map_err(PullError::Io)?;
        let stream = futures_util::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 4 << 20];
            match std::io::Read::read(&mut f, &mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(oci_client::errors::OciDistributionError::IoError(e)), f)),
            }
        });
        client
            .push_blob_stream(&r, stream, &desc.digest, Some(desc.size))
            .await
            .map_err(|e| registry_err(reference, e))?;
    }
    let config_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(config.0)));
    if !client
        .blob_exists(&r, &config_digest)
        .await
        .unwrap_or(false)
    {
        client
            .push_blob(&r, config.0.to_vec(), &config_digest)
            .await
            .map_err(|e| registry_err(reference, e))?;
    }
    let desc = |digest: &str, media: &str, size: u64| oci_client::manifest::OciDescriptor {
        media_type: media.to_string(),
        digest: digest.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let manifest = oci_client::manifest::OciImageManifest {
        schema_version: 2,
        media_type: Some(crate::oci::MT_OCI_MANIFEST.to_string()),
        artifact_type: Some(artifact_type.to_string()),
        config: desc(&config_digest, config.1, config.0.len() as u64),
        layers: blobs
            .iter()
            .map(|(_, d)| desc(&d.digest, &d.media_type, d.size))
            .collect(),
        ..Default::default()
    };
    let raw = serde_json::to_vec(&manifest).expect("json");
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)));
    client
        .push_manifest_raw(
            &r,
            raw,
            http::HeaderValue::from_static(crate::oci::MT_OCI_MANIFEST),
        )
        .await
        .map_err(|e| registry_err(reference, e))?;
    Ok(digest)
}

/// Pulls `reference` into the blob store. Every blob is verified against its
/// digest before it is committed; a mismatch stores nothing of that blob.
/// The caller holds the store's operation guard.
pub async fn pull<R: Registry>(
    store: &Store,
    registry: &R,
    reference: &str,
    progress: &Progress,
) -> Result<Fetched, PullError> {
    let a = pull_artifact(store, registry, reference, progress).await?;
    let config_bytes = store.blobs().read(&a.config_digest)?;
    let config: ConfigFile = serde_json::from_slice(&config_bytes).map_err(PullError::BadConfig)?;
    let mut blobs = vec![a.manifest_digest.clone(), a.config_digest.clone()];
    blobs.extend(a.layers.iter().map(|l| l.digest.clone()));
    Ok(Fetched {
        manifest_digest: a.manifest_digest,
        config_digest: a.config_digest,
        config,
        layers: a.layers,
        blobs,
        names: vec![a.reference.clone()],
        source: a.reference,
    })
}

async fn fetch_blob<R: Registry>(
    store: &Store,
    registry: &R,
    reference: &str,
    desc: &BlobDesc,
    progress: &Progress,
    show: bool,
) -> Result<String, PullError> {
    ignis_state::digest_hex(&desc.digest)?;
    if store.blobs().contains(&desc.digest) {
        return Ok(desc.digest.clone());
    }
    let bar = if show {
        progress.bar(
            &format!("pull {}", ignis_api::short_id(&desc.digest)),
            desc.size,
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let w = store.blobs().writer().map_err(PullError::Io)?;
    let inc = |n: u64| bar.inc(n);
    // Never more than the manifest declares: a hostile or broken registry
    // streaming forever must not fill the disk.
    let mut bounded = Bounded {
        inner: w,
        left: desc.size,
        over: false,
    };
    let r = registry.blob(reference, desc, &mut bounded, &inc).await;
    if bounded.over {
        return Err(PullError::Oversized {
            digest: desc.digest.clone(),
            size: desc.size,
        });
    }
    r?;
    bar.finish();
    let (digest, _) =
        bounded
            .inner
            .commit(Some(&desc.digest))
            .map_err(|source| PullError::Corrupted {
                digest: desc.digest.clone(),
                source,
            })?;
    Ok(digest)
}

/// A writer that refuses bytes past a limit.
struct Bounded<W> {
    inner: W,
    left: u64,
    over: bool,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.over = true;
            return Err(std::io::Error::other("more data than declared"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How long a blob download may go without data.
const STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// The real registry client.
pub struct OciRegistry {
    client: oci_client::Client,
}

impl OciRegistry {
    /// `insecure` lists registries (`host:port`) reached over plain HTTP.
    pub fn new(insecure: &[String]) -> Self {
        let config = oci_client::client::ClientConfig {
            protocol: if insecure.is_empty() {
                oci_client::client::ClientProtocol::Https
            } else {
                oci_client::client::ClientProtocol::HttpsExcept(insecure.to_vec())
            },
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            ..Default::default()
        };
        Self {
            client: oci_client::Client::new(config),
        }
    }

    fn parse(reference: &str) -> Result<oci_client::Reference, PullError> {
        reference.parse().map_err(|source| PullError::BadReference {
            reference: reference.to_string(),
            source,
        })
    }
}

/// Credentials for a registry from `~/.docker/config.json` (or
/// `$DOCKER_CONFIG`), including credential helpers; anonymous otherwise.
pub fn docker_auth(registry: &str) -> oci_client::secrets::RegistryAuth {
    use docker_credential::DockerCredential;
    let server = if registry == "docker.io" || registry == "index.docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    match docker_credential::get_credential(&server) {
        Ok(DockerCredential::UsernamePassword(u, p)) => {
            oci_client::secrets::RegistryAuth::Basic(u, p)
        }
        Ok(DockerCredential::IdentityToken(t)) => oci_client::secrets::RegistryAuth::Bearer(t),
        Err(_) => oci_client::secrets::RegistryAuth::Anonymous,
    }
}

fn registry_err(reference: &str, e: impl std::fmt::Display) -> PullError {
    PullError::Registry {
        reference: reference.to_string(),
        message: e.to_string(),
    }
}

impl Registry for OciRegistry {
    async fn manifest(&self, reference: &str) -> Result<PulledManifest, PullError> {
        let r = Self::parse(reference)?;
        let auth = docker_auth(r.resolve_registry());
        let (m, digest) = self
            .client
            .pull_image_manifest(&r, &auth)
            .await
            .map_err(|e| registry_err(reference, e))?;
        // Fetch the manifest bytes by digest so what is stored hashes to it.
        let by_digest = r.clone_with_digest(digest.clone());
        let (raw, _) = self
            .client
            .pull_manifest_raw(
                &by_digest,
                &auth,
                &[crate::oci::MT_OCI_MANIFEST, crate::oci::MT_DOCKER_MANIFEST],
            )
            .await
            .map_err(|e| registry_err(reference, e))?;
        let desc = |d: &oci_client::manifest::OciDescriptor| BlobDesc {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            size: u64::try_from(d.size).unwrap_or(0),
        };
        Ok(PulledManifest {
            digest,
            raw: raw.to_vec(),
            config: desc(&m.config),
            layers: m.layers.iter().map(desc).collect(),
        })
    }

    async fn blob(
        &self,
        reference: &str,
        desc: &BlobDesc,
        sink: &mut (dyn Write + Send),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), PullError> {
        let r = Self::parse(reference)?;
        let layer = oci_client::manifest::OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: i64::try_from(desc.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&r, &layer)
            .await
            .map_err(|e| registry_err(reference, e))?;
        loop {
            let next = tokio::time::timeout(STALL, stream.next())
                .await
                .map_err(|_| PullError::Stalled(STALL.as_secs(), desc.digest.clone()))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| registry_err(reference, e))?;
            sink.write_all(&chunk).map_err(PullError::Io)?;
            progress(chunk.len() as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory registry serving one image, optionally lying about a blob.
    struct FakeRegistry {
        manifest: PulledManifest,
        blobs: HashMap<String, Vec<u8>>,
        endless: bool,
    }

    impl FakeRegistry {
        fn new(tamper_layer: bool) -> Self {
            let spec = ignis_testkit::ImageSpec {
                layers: vec![ignis_testkit::LayerBuilder::new()
                    .file("f", b"data", 0o644)
                    .build()],
                gzip: true,
                ..Default::default()
            };
            let files = ignis_testkit::OciWriter::oci_files(&spec);
            let mut blobs: HashMap<String, Vec<u8>> = files
                .iter()
                .filter_map(|(p, d)| {
                    p.strip_prefix("blobs/sha256/")
                        .map(|h| (format!("sha256:{h}"), d.clone()))
                })
                .collect();
            let index: crate::oci::Index =
                serde_json::from_slice(&files.iter().find(|(p, _)| p == "index.json").unwrap().1)
                    .unwrap();
            let mdigest = index.manifests[0].digest.clone();
            let raw = blobs[&mdigest].clone();
            let m: crate::oci::Manifest = serde_json::from_slice(&raw).unwrap();
            let desc = |d: &crate::oci::Descriptor| BlobDesc {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                size: u64::try_from(d.size).unwrap(),
            };
            if tamper_layer {
                let l = blobs.get_mut(&m.layers[0].digest).unwrap();
                l[10] ^= 1;
            }
            Self {
                manifest: PulledManifest {
                    digest: mdigest,
                    raw,
                    config: desc(&m.config),
                    layers: m.layers.iter().map(desc).collect(),
                },
                blobs,
                endless: false,
            }
        }
    }

    impl Registry for FakeRegistry {
        async fn manifest(&self, _reference: &str) -> Result<PulledManifest, PullError> {
            Ok(self.manifest.clone())
        }
        async fn blob(
            &self,
            _reference: &str,
            desc: &BlobDesc,
            sink: &mut (dyn Write + Send),
            progress: &(dyn Fn(u64) + Sync),
        ) -> Result<(), PullError> {
            let data = &self.blobs[&desc.digest];
            if self.endless {
                // A registry that never stops: the declared blob, then zeros.
                sink.write_all(data).map_err(PullError::Io)?;
                loop {
                    sink.write_all(&[0u8; 4096]).map_err(PullError::Io)?;
                }
            }
            sink.write_all(data).map_err(PullError::Io)?;
            progress(data.len() as u64);
            Ok(())
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn pull_stores_every_blob_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reg = FakeRegistry::new(false);
        let f = block_on(pull(&store, &reg, "example.com/a:1", &Progress::hidden())).unwrap();
        assert_eq!(f.names, ["example.com/a:1"]);
        assert_eq!(f.blobs.len(), 3);
        for b in &f.blobs {
            store.blobs().verify(b).unwrap();
        }
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reg = FakeRegistry::new(true);
        let err = block_on(pull(&store, &reg, "example.com/a:1", &Progress::hidden())).unwrap_err();
        assert!(matches!(err, PullError::Corrupted { .. }), "{err}");
        let layer = &reg.manifest.layers[0].digest;
        assert!(!store.blobs().contains(layer));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn an_endless_blob_stream_is_cut_at_the_declared_size_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut reg = FakeRegistry::new(false);
        reg.endless = true;
        let err = block_on(pull(&store, &reg, "example.com/a:1", &Progress::hidden())).unwrap_err();
        assert!(matches!(err, PullError::Oversized { .. }), "{err}");
        assert!(err.to_string().contains("more than"), "{err}");
        // The oversized blob is not stored, and no partial file is left
        // (blobs stored before it are collected by `system prune`).
        for l in &reg.manifest.layers {
            assert!(!store.blobs().contains(&l.digest));
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn the_fast_normalizer_agrees_with_oci_client() {
        let slow = |r: &str| {
            r.parse::<oci_client::Reference>()
                .map(|r| r.whole())
                .map_err(drop)
        };
        let cases = [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "acme/app:1.2",
            "ghcr.io/acme/app:1.2",
            "ghcr.io/acme/team/app",
            "localhost/app:1",
            "localhost:5000/app:v1.0-rc_1",
            "127.0.0.1:5000/acme/app:1",
            "registry.example/snaps/web:1",
            "bench/app:1",
            "a__b/c-d/e.f:g",
            "a--b",
            "UPPER/Case",
            "app:",
            ":tag",
            "app:-x",
            "a/-b",
            "a_/b",
            "a._b",
            "host-/x",
            "-host.io/x",
            "host.io:/x",
            "index.docker.io/library/busybox",
            "docker.io/busybox",
            "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "a//b",
            "/a",
            "a/",
            "",
        ];
        for c in cases {
            // Refused by the fast path (None): oci-client decides.
            if let Some(fast) = normalize_common(c) {
                assert_eq!(Ok(fast), slow(c), "{c}");
            }
        }
        // The common shapes take the fast path.
        for c in [
            "busybox",
            "acme/app:1.2",
            "127.0.0.1:5000/acme/app:1",
            "bench/app:1",
        ] {
            assert!(normalize_common(c).is_some(), "{c}");
        }
    }

    #[test]
    fn references_are_normalized_like_docker() {
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize("ghcr.io/acme/app:1.2").unwrap(),
            "ghcr.io/acme/app:1.2"
        );
        assert!(matches!(
            normalize("UPPER/Case"),
            Err(PullError::BadReference { .. })
        ));
    }
}
