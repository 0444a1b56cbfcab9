//! Builders for test inputs: layer tarballs with exactly the bytes a test
//! wants (including the malicious ones a normal tar writer refuses to
//! produce), OCI image layouts and `docker save` archives.

pub mod ext4;
mod layer;
mod layout;
pub mod testguest;
pub mod tier;
pub mod wait;

pub use layer::{Entry, LayerBuilder};
pub use layout::{ImageSpec, OciWriter};

use sha2::Digest as _;

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
