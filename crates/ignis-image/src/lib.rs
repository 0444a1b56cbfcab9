//! OCI images for ignis.
//!
//! ```text
//!  pull (registry) ─┐                    ┌─> unpack layers (whiteouts, path checks)
//!                   ├─> blobs verified ──┤
//!  import (file)  ──┘   in the store     └─> mkfs.ext4 -d  ─> read-only image disk
//! ```
//!
//! This crate fetches blobs and builds disks; recording images, names and
//! locks is the core library's job.

pub mod ext4;
mod fetched;
pub mod import;
pub mod layer;
pub mod oci;
pub mod progress;
pub mod pull;
pub mod rootfs;
pub mod unpack;

pub use fetched::{Fetched, LayerRef};
