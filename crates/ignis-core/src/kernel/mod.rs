//! Kernel operations: import (file, Debian package, apt, OCI image), list, remove.

mod import;
mod list;
mod remove;

use ignis_api::KernelRecord;
use ignis_state::ObjectRow;

use crate::{Error, ErrorKind};

pub(crate) const KIND: &str = "kernel";

/// The name `ignis run` uses when no `--kernel` is given.
pub const DEFAULT_NAME: &str = "default";

pub(crate) fn parse(row: &ObjectRow) -> Result<KernelRecord, Error> {
    let mut rec: KernelRecord = serde_json::from_str(&row.record).map_err(|e| {
        Error::with_source(
            ErrorKind::Internal,
            format!("kernel record {} is unreadable", row.id),
            e,
        )
    })?;
    rec.names = row.names.clone();
    Ok(rec)
}
