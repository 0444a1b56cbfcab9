use ignis_api::ImageRecord;
use ignis_image::pull::{pull, OciRegistry, PullError};
use ignis_image::Fetched;

use crate::{fault, Error, ErrorKind, Ignis};

impl Ignis {
    /// `ignis image pull REF`.
    pub fn image_pull(&self, reference: &str) -> Result<ImageRecord, Error> {
        let _guard = self.operation_guard()?;
        let fetched = self.pull_blobs(reference)?;
        fault::point("pull:blobs-stored");
        self.commit_image(fetched, &[])
    }

    /// Pulls an image's blobs into the store (verified), without recording
    /// an image. The caller holds the operation guard.
    pub(crate) fn pull_blobs(&self, reference: &str) -> Result<Fetched, Error> {
        let registry = OciRegistry::new(&self.insecure);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal("start the async runtime", e))?;
        rt.block_on(pull(&self.store, &registry, reference, &self.progress()))
            .map_err(pull_error)
    }
}

pub(crate) fn pull_error(e: PullError) -> Error {
    let kind = match &e {
        PullError::BadReference { .. } | PullError::Corrupted { .. } | PullError::BadConfig(_) => {
            ErrorKind::Invalid
        }
        PullError::ConfigTooLarge | PullError::Oversized { .. } => ErrorKind::Invalid,
        PullError::Stalled(..) => ErrorKind::Unavailable,
        PullError::Registry { .. } => ErrorKind::Unavailable,
        PullError::Io(_) | PullError::Store(_) => ErrorKind::Internal,
    };
    let msg = e.to_string();
    let local = |m: &str| m.contains("127.0.0.1") || m.contains("localhost") || m.contains("[::1]");
    let hint = if matches!(e, PullError::Registry { .. }) && msg.contains("https://") && local(&msg)
    {
        "; for a registry served over plain HTTP pass --insecure-registry HOST:PORT"
    } else {
        ""
    };
    Error::with_source(kind, format!("pull failed{hint}"), e)
}
