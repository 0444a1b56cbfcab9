//! Boot artifacts: every ignis VM boots its kernel with an initramfs made of
//! two concatenated cpio archives (the kernel unpacks them in order):
//!
//! 1. per kernel, cached: the static `ignis-init` as `/init`, the kernel
//!    modules the guest needs (with their dependencies, in load order) and
//!    `/ignis/modules`;
//! 2. per VM, tiny: `/ignis/config.json` and files to copy into the guest.

pub mod cpio;
pub mod initramfs;
pub mod modules;
