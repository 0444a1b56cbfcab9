//! Image operations: pull, import, list, inspect, remove.

mod commit;
mod import;
mod inspect;
mod list;
mod pull;
pub(crate) use pull::pull_error;
mod remove;

pub use remove::RemoveOutcome;

use ignis_api::ImageRecord;
use ignis_state::ObjectRow;

use crate::{Error, ErrorKind};

pub(crate) const KIND: &str = "image";

/// Parses a stored image row, filling in its current names.
pub(crate) fn parse(row: &ObjectRow) -> Result<ImageRecord, Error> {
    let mut rec: ImageRecord = serde_json::from_str(&row.record).map_err(|e| {
        Error::with_source(
            ErrorKind::Internal,
            format!("image record {} is unreadable", row.id),
            e,
        )
    })?;
    rec.names = row.names.clone();
    Ok(rec)
}

/// Normalizes an image name the way Docker does, or `None` when it is not a
/// valid reference (it may still be an ID prefix).
pub(crate) fn normalize(name: &str) -> Option<String> {
    ignis_image::pull::normalize(name).ok()
}
