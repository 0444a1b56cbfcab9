use crate::oci::ConfigFile;

/// A layer blob as referenced by a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// An image whose manifest, config and layer blobs are all committed in the
/// blob store (verified by digest), not yet unpacked or recorded.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub manifest_digest: String,
    pub config_digest: String,
    pub config: ConfigFile,
    pub layers: Vec<LayerRef>,
    /// Every blob this image needs kept (manifest, config, layers).
    pub blobs: Vec<String>,
    /// References that name it (from the pull or the archive's tags).
    pub names: Vec<String>,
    /// Human description of where it came from.
    pub source: String,
}
