//! Progress of a pull or import over the API: with `Accept:
//! application/x-ndjson` the daemon answers one JSON object per line, each
//! a [`ProgressEvent`] as bars move (Docker's JSON progress), then one
//! [`ProgressEnd`]: the operation's result or its problem.

use serde::{Deserialize, Serialize};

/// The media type of a progress stream.
pub const NDJSON: &str = "application/x-ndjson";

/// One bar (or spinner) of the operation, as it moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressEvent {
    /// This bar's number within the operation.
    pub id: u64,
    /// What it shows (`pull 0123456789ab`, `unpack ...`, `build ext4 image
    /// disk`).
    pub status: String,
    /// Bytes done.
    pub current: u64,
    /// Bytes in all (absent: a spinner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The bar finished.
    #[serde(default)]
    pub done: bool,
}

/// The last line of a progress stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProgressEnd<T> {
    /// What the operation returns without a progress stream.
    Result(T),
    /// Its problem details (RFC 9457), as the plain reply would carry them.
    Problem(serde_json::Value),
}

/// A line of a progress stream: a bar's move or the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProgressLine<T> {
    End(ProgressEnd<T>),
    Event(ProgressEvent),
}
