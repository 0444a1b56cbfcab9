//! From stored layer blobs to the read-only ext4 image disk.

use std::path::Path;

use ignis_api::LayerInfo;
use ignis_state::{DigestError, Store};

use crate::ext4::{DiskBuilder, DiskError, DiskInfo, DiskOptions};
use crate::fetched::Fetched;
use crate::layer::{decompress, HashingReader};
use crate::progress::Progress;
use crate::unpack::{UnpackError, UnpackStats, Unpacker};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the image config lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("layer {index} ({digest}) unpacks to {actual}, but the image config says {expected}; the layer is corrupted")]
    DiffId {
        index: usize,
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read layer {digest}")]
    Blob {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("cannot decompress layer {digest}")]
    Decompress {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unpack layer {index} ({digest})")]
    Unpack {
        index: usize,
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("cannot build the image disk")]
    Disk(#[from] DiskError),
}

/// Unpacks every layer of `image` into `tree` (an empty private directory),
/// verifying diff IDs, then builds the disk at `out`.
pub fn build_disk(
    store: &Store,
    image: &Fetched,
    tree: &Path,
    out: &Path,
    builder: &dyn DiskBuilder,
    progress: &Progress,
) -> Result<(DiskInfo, Vec<LayerInfo>, UnpackStats), BuildError> {
    let diff_ids = &image.config.rootfs.diff_ids;
    if diff_ids.len() != image.layers.len() {
        return Err(BuildError::LayerCount {
            diff_ids: diff_ids.len(),
            layers: image.layers.len(),
        });
    }
    let mut unpacker = Unpacker::new(tree);
    let mut infos = Vec::new();
    for (index, (layer, expected)) in image.layers.iter().zip(diff_ids).enumerate() {
        let bar = progress.bar(
            &format!("unpack {}", ignis_api::short_id(&layer.digest)),
            layer.size,
        );
        let file = store
            .blobs()
            .open(&layer.digest)
            .map_err(|source| BuildError::Blob {
                digest: layer.digest.clone(),
                source,
            })?;
        let counted = bar.wrap_read(file);
        let plain = decompress(counted).map_err(|source| BuildError::Decompress {
            digest: layer.digest.clone(),
            source,
        })?;
        let mut hashing = HashingReader::new(plain);
        unpacker
            .apply_layer(&mut hashing)
            .map_err(|source| BuildError::Unpack {
                index,
                digest: layer.digest.clone(),
                source,
            })?;
        let (actual, _) = hashing.finish().map_err(|source| BuildError::Decompress {
            digest: layer.digest.clone(),
            source,
        })?;
        bar.finish();
        if &actual != expected {
            return Err(BuildError::DiffId {
                index,
                digest: layer.digest.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        infos.push(LayerInfo {
            digest: layer.digest.clone(),
            diff_id: actual,
            media_type: layer.media_type.clone(),
            size: layer.size,
        });
    }
    let unpacked = unpacker.finish().map_err(|source| BuildError::Unpack {
        index: image.layers.len(),
        digest: String::new(),
        source,
    })?;
    let spinner = progress.spinner("build ext4 image disk");
    let hex = image.config_digest.trim_start_matches("sha256:");
    let opts = DiskOptions {
        label: "ignis-image".to_string(),
        uuid: format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ),
    };
    let info = builder.build(tree, &unpacked.fixups, out, &opts)?;
    spinner.finish();
    Ok((info, infos, unpacked.stats))
}
