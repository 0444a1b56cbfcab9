//! Networking for ignis VMs (bridge mode).
//!
//! ```text
//!  VM eth0 (10.61.0.N, static, set by the init)
//!    └─ TAP ig-<id>  (created by the VMM, gone with it: never leaked)
//!        └─ bridge ignis0 (10.61.0.1/16, gateway)
//!            └─ nftables table `ip ignis`: masquerade out, DNAT for -p
//! ```
//! With IPv6 (`--subnet6`), the bridge also has `PREFIX::1` of a ULA
//! prefix, each VM one more address of it, and table `ip6 ignis` does the
//! same for IPv6 (NAT66 out, DNAT for `-p [::]:...`).
//! Leases and published ports live in the state DB (the truth); the
//! nftables table is rebuilt from it as a whole, in one atomic `nft -j`
//! batch, whenever it changes, so a crash never leaves half a ruleset.

pub mod cni;
pub mod dns;
#[cfg(any(test, feature = "fake"))]
mod fake;
mod host;
mod ipam;
mod ipam6;
pub mod macvtap;
mod netns;
mod nftgen;
mod ports;
pub mod proxy;
mod rules;

#[cfg(any(test, feature = "fake"))]
pub use fake::FakeNet;
pub use host::{ipv6_available, published_rules, LinuxNet, NetError, NetHost, Teardown};
pub use ipam::{mac_for, tap_name, IpamError, Subnet};
pub use ipam6::{Ipam6Error, Subnet6};
pub use ports::{parse_port, PortError, PortMapping, Proto};
pub use rules::{ruleset, Forward, TABLE};

/// The default bridge.
pub const BRIDGE: &str = "ignis0";
/// The default subnet.
pub const SUBNET: &str = "10.61.0.0/16";
