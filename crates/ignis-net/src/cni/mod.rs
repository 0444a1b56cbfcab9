//! CNI: running the standard plugins (Debian's `containernetworking-plugins`)
//! for a VM, as a container runtime does.
//!
//! ```text
//!  netns ignis-<id> (one per VM, /run/netns)
//!    eth0 (the plugins' end: a veth of the `bridge` plugin, say)
//!      ⇅ tc ingress redirect both ways (as tc-redirect-tap)
//!    tap0 (the VM's NIC; the VM takes eth0's MAC and the IPAM address)
//! ```
//!
//! Hand-written, the caller's side of the protocol (exec a plugin with the
//! `CNI_*` environment and the network configuration on stdin, read a
//! result or an error object from stdout): the Rust CNI crates (`cni-plugin`,
//! `rscni`) are for writing plugins, and `rust-cni` is an untested 0.1
//! wrapper that also brings its own netns handling. The part ignis needs is
//! small: [`conf`] (find and parse a conflist), [`exec`] (ADD, CHECK and DEL
//! over a conflist's plugin chain) and [`result`] (the spec's result type).

pub mod conf;
pub mod exec;
pub mod result;

pub use conf::{load, NetworkConfig};
pub use exec::{Attachment, Command, PortMapEntry, PORT_MAPPINGS};
pub use result::{Addresses, CniResult, IpConfig};

use std::path::PathBuf;

/// Where Debian's `containernetworking-plugins` and the upstream tarball put
/// the plugins.
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];
/// Where conflists live.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// A CNI network name: what a conflist's `name` may be.
pub fn valid_network_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The network namespace of a VM (under `/run/netns`).
pub fn netns_name(vm_id: &str) -> String {
    format!("ignis-{vm_id}")
}

/// Its path.
pub fn netns_path(vm_id: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns_name(vm_id))
}

/// The interface the plugins create for NIC `index` inside the namespace.
pub fn ifname(index: usize) -> String {
    format!("eth{index}")
}

/// The VM's TAP for NIC `index`, inside the namespace.
pub fn tap(index: usize) -> String {
    format!("tap{index}")
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network {name:?} in {dir} (a *.conflist or *.conf whose \"name\" is it)")]
    NoNetwork { name: String, dir: PathBuf },
    #[error("no CNI network configuration in {0}")]
    NoConfig(PathBuf),
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{path} is not a CNI network configuration: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    NoPlugin { plugin: String, dirs: String },
    #[error("cannot run CNI plugin {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
    },
    #[error("CNI plugin {plugin} {command} returned no valid result: {reason}")]
    BadResult {
        plugin: String,
        command: &'static str,
        reason: String,
    },
}
