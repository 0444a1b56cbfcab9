//! The host→guest boot contract.
//!
//! The per-VM initramfs holds `/ignis/config.json` ([`GuestConfig`]) and
//! `/ignis/modules` (module paths in load order). The init reports back on
//! the serial console with lines that start with [`MARKER`]:
//!
//! ```text
//! IGNIS-INIT ready                 the workload (or /sbin/init) was started
//! IGNIS-INIT ready agent           ... and the guest agent runs (ignis-init)
//! IGNIS-INIT exit <code>           the workload exited with <code>; powering off
//! IGNIS-INIT error <message>       the init failed; powering off with 125
//! ```

use serde::{Deserialize, Serialize};

pub const CONFIG_PATH: &str = "/ignis/config.json";
pub const MODULES_PATH: &str = "/ignis/modules";
/// The modules loaded only when needed: vfat (a cloud-init seed, vfat
/// volumes), in load order.
pub const VFAT_MODULES_PATH: &str = "/ignis/modules.vfat";
pub const MARKER: &str = "IGNIS-INIT";
/// Exit status the init reports when it cannot start the workload.
pub const INIT_FAILED: i32 = 125;

/// The routing table (and rule priority) of a VM's NIC number `index`
/// (0: the first) under source routing: 100, 101, ... (below the main
/// table's 254 and its rule's 32766). The guest init and the cloud-init
/// network-config use the same numbers.
pub fn nic_table(index: usize) -> u32 {
    100 + u32::try_from(index).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Run `argv` as the workload; power off when it exits.
    App,
    /// Exec the image's `/sbin/init` as PID 1.
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestConfig {
    pub mode: Mode,
    pub hostname: String,
    /// Workload command (app mode).
    #[serde(default)]
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as OCI `User`.
    #[serde(default)]
    pub user: Option<String>,
    /// Block device of the read-only image disk.
    pub image_disk: String,
    /// Block device of the writable disk (overlay upper layer).
    pub data_disk: String,
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// resolv.conf `search` domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// More /etc/hosts entries: `(ip, name)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<(String, String)>,
    /// Files to place in the guest: initramfs path → guest path, mode.
    #[serde(default)]
    pub files: Vec<CopyFile>,
    /// Static configuration of the first NIC (no DHCP wait), with the
    /// default route.
    #[serde(default)]
    pub network: Option<GuestNet>,
    /// The NICs after the first (all of them when the first has no static
    /// `network`): address and subnet route each. With
    /// several NICs, each one with a gateway also gets a routing table of
    /// its own and a rule `from <its address>` to it (source routing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<GuestNic>,
    /// Volumes to mount, in the order of their disks (after the image
    /// and writable disks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<GuestVolume>,
    /// A cloud-init NoCloud seed disk (vfat, label `cidata`) is attached:
    /// load vfat for the image's cloud-init to mount it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seed: bool,
}

/// A volume's disk and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestVolume {
    /// The disk's virtio-blk serial, where the VMM sets it (QEMU); else
    /// the disk is the volume's in device order after the image and
    /// writable disks (Firecracker attaches drives in order).
    pub serial: String,
    /// Absolute path in the guest.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestNet {
    pub ip: String,
    pub prefix: u8,
    pub gateway: String,
    /// The NIC's MAC: the interface is found by it (device order differs
    /// between VMMs); `None`: eth0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// IPv6: the address, its prefix length and (on the NIC that has
    /// it) the default route's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
}

/// A further NIC, found by its MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestNic {
    pub mac: String,
    /// No address: the link is only brought up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default)]
    pub prefix: u8,
    /// The gateway of the NIC's network: the default route of the NIC's
    /// own routing table (the main table's is the first NIC's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// IPv6: the address, its prefix length and (on the NIC that has
    /// it) the default route's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyFile {
    pub source: String,
    pub dest: String,
    pub mode: u32,
}

/// What a console line from the init says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Started; `agent`: the guest agent runs too (a guest that is not
    /// ignis-init, like the Firecracker test guest, has none).
    Ready {
        agent: bool,
    },
    Exit(i32),
    Error(String),
}

/// Parses one console line.
pub fn parse_report(line: &str) -> Option<Report> {
    let rest = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix(MARKER)?
        .strip_prefix(' ')?;
    if rest == "ready" {
        return Some(Report::Ready { agent: false });
    }
    if rest == "ready agent" {
        return Some(Report::Ready { agent: true });
    }
    if let Some(code) = rest.strip_prefix("exit ") {
        return code.trim().parse().ok().map(Report::Exit);
    }
    rest.strip_prefix("error ")
        .map(|m| Report::Error(m.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        assert_eq!(
            parse_report("IGNIS-INIT ready\r\n"),
            Some(Report::Ready { agent: false })
        );
        assert_eq!(
            parse_report("IGNIS-INIT ready agent\n"),
            Some(Report::Ready { agent: true })
        );
        assert_eq!(parse_report("IGNIS-INIT exit 3"), Some(Report::Exit(3)));
        assert_eq!(
            parse_report("IGNIS-INIT error no such file"),
            Some(Report::Error("no such file".into()))
        );
        assert_eq!(parse_report("hello IGNIS-INIT exit 3"), None);
        assert_eq!(parse_report("IGNIS-INIT exit x"), None);
    }
}
