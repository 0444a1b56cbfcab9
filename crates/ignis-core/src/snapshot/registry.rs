//! `ignis snapshot push|pull`: a snapshot as an OCI artifact
//! (artifactType `application/vnd.ignis.snapshot.v1`; config = the
//! snapshot record; layers = state, memory, disk), every blob verified by
//! digest on the way in.

use ignis_api::SnapshotRecord;
use ignis_image::pull::{pull_artifact, push_artifact, BlobDesc, OciRegistry};

use crate::{Error, ErrorKind, Ignis};

pub const ARTIFACT_TYPE: &str = "application/vnd.ignis.snapshot.v1";
const CONFIG_TYPE: &str = "application/vnd.ignis.snapshot.config.v1+json";
const LAYER_TYPES: [&str; 3] = [
    "application/vnd.ignis.snapshot.state.v1",
    "application/vnd.ignis.snapshot.memory.v1",
    "application/vnd.ignis.snapshot.disk.v1",
];

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("start the async runtime", e))
}

impl Ignis {
    /// Pushes a snapshot to `reference`; returns the manifest digest.
    pub fn snapshot_push(&self, query: &str, reference: &str) -> Result<String, Error> {
        let snap = self.snapshot_inspect(query)?;
        self.snapshot_verify(&snap)?;
        let config = serde_json::to_vec(&snap).expect("json");
        let mut blobs = Vec::new();
        for (b, media) in [&snap.state, &snap.memory, &snap.disk]
            .into_iter()
            .zip(LAYER_TYPES)
        {
            let path = self
                .store
                .blobs()
                .path(&b.digest)
                .map_err(|e| Error::internal("locate a blob", e))?;
            // A registry names layers by their bytes' sha256; the record
            // (the artifact's config) keeps the store's names.
            let digest = match ignis_state::parse_digest(&b.digest) {
                Ok((ignis_state::Algorithm::Sha256, _)) => b.digest.clone(),
                _ => self
                    .store
                    .blobs()
                    .digest_as(&b.digest, ignis_state::Algorithm::Sha256)
                    .map_err(|e| Error::internal("hash a blob for the registry", e))?,
            };
            blobs.push((
                path,
                BlobDesc {
                    digest,
                    media_type: media.to_string(),
                    size: b.size,
                },
            ));
        }
        runtime()?
            .block_on(push_artifact(
                &self.insecure,
                reference,
                ARTIFACT_TYPE,
                (&config, CONFIG_TYPE),
                &blobs,
            ))
            .map_err(crate::image::pull_error)
    }

    /// Pulls a snapshot pushed by `snapshot push`.
    pub fn snapshot_pull(&self, reference: &str) -> Result<SnapshotRecord, Error> {
        let _guard = self.operation_guard()?;
        let registry = OciRegistry::new(&self.insecure);
        let a = runtime()?
            .block_on(pull_artifact(
                &self.store,
                &registry,
                reference,
                &self.progress(),
            ))
            .map_err(crate::image::pull_error)?;
        let invalid = |m: String| Error::new(ErrorKind::Invalid, m);
        let config = self
            .store
            .blobs()
            .read(&a.config_digest)
            .map_err(|e| Error::internal("read the snapshot config", e))?;
        let snap: SnapshotRecord = serde_json::from_slice(&config)
            .map_err(|e| invalid(format!("{reference} is not an ignis snapshot: {e}")))?;
        let want = [&snap.state, &snap.memory, &snap.disk];
        if want.len() != a.layers.len() {
            return Err(invalid(format!(
                "{reference}: the manifest's layers do not match the snapshot record"
            )));
        }
        // Each layer arrived verified by its sha256; the record names it
        // by the store's digest: check that too, then store it under it.
        for (b, layer) in want.into_iter().zip(&a.layers) {
            if b.digest != layer.digest {
                self.store
                    .blobs()
                    .alias(&layer.digest, &b.digest)
                    .map_err(|e| {
                        Error::with_source(
                            ErrorKind::Invalid,
                            format!("{reference}: a layer does not match the snapshot record"),
                            e,
                        )
                    })?;
            }
            self.store
                .seal_blob(&b.digest)
                .map_err(|e| Error::internal("seal a snapshot blob", e))?;
        }
        self.register_snapshot(&snap)?;
        Ok(snap)
    }
}
