//! Host side effects: bridge and TAP via netlink (rtnetlink), the ruleset
//! via `nft -j` (the nftables crate). Behind [`NetHost`] so the core's
//! network logic is tested with a fake.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("bridge networking needs CAP_NET_ADMIN (run as root) or --network none")]
    NotPermitted,
    #[error("nft not found: apt-get install nftables")]
    NftMissing,
    #[error("applying the ignis nftables table failed: {0}")]
    Nft(String),
    #[error("{name} exists and is not a bridge; ignis needs it for its bridge (pick another subnet/bridge or remove it)")]
    NotABridge { name: String },
    #[error("TAP {0} did not appear (the VMM did not create it)")]
    NoTap(String),
    #[error("cannot set {0}")]
    Sysctl(String),
    #[error("IPv6 on the bridge (--subnet6) is not possible on this host: {0}; run without --subnet6 (IPv4 only)")]
    Ipv6Unavailable(String),
    #[error("the host has no interface {0} (see ip link) for the macvtap")]
    NoLink(String),
    #[error("{cmd} failed: {stderr}")]
    Command { cmd: String, stderr: String },
}

/// What networking needs from the host.
pub trait NetHost: Send + Sync {
    /// Creates (or checks) the bridge with the gateway address, up, with
    /// forwarding enabled.
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError>;
    /// IPv6 on the bridge (made by [`NetHost::ensure_bridge`]): the gateway
    /// address (no duplicate address detection), IPv6 forwarding on.
    fn ensure_bridge6(&self, name: &str, gateway: Ipv6Addr, prefix: u8) -> Result<(), NetError>;
    /// Waits for the VMM's TAP and enslaves it to the bridge, up.
    fn attach_tap(&self, tap: &str, bridge: &str, timeout: Duration) -> Result<(), NetError>;
    /// Deletes a link if it exists.
    fn delete_link(&self, name: &str) -> Result<(), NetError>;
    /// Replaces the ignis table with `ruleset` (nft JSON).
    fn apply_rules(&self, ruleset: &serde_json::Value) -> Result<(), NetError>;
    /// Removes the bridge and the ignis table when nothing on the host
    /// uses them: the host's state is the truth, since every state root on
    /// the host shares them. In use means a port (a VM's TAP, of any root)
    /// is attached to the bridge, or the table forwards a published port.
    fn teardown(&self, bridge: &str) -> Result<Teardown, NetError>;
    /// Creates the network namespace `/run/netns/<ns>` (lo up), or keeps
    /// the one there.
    fn create_netns(&self, ns: &str) -> Result<(), NetError>;
    /// Deletes it if it exists (with everything left inside).
    fn delete_netns(&self, ns: &str) -> Result<(), NetError>;
    /// In `ns`: a persistent TAP `tap` owned by `owner` (uid, gid), joined
    /// to the plugins' interface `ifname` by tc redirects both ways.
    fn redirect_tap(
        &self,
        ns: &str,
        ifname: &str,
        tap: &str,
        owner: (u32, u32),
    ) -> Result<(), NetError>;
    /// Waits for `link` in `ns` (a VMM running there creates it) and
    /// moves it to this process's namespace.
    fn move_to_host(&self, ns: &str, link: &str, timeout: Duration) -> Result<(), NetError>;
    /// A macvtap `name` (bridge mode, MAC `mac`, up) on host interface
    /// `link` (one left by a crash is replaced), and `node` made its
    /// character device.
    fn create_macvtap(
        &self,
        name: &str,
        link: &str,
        mac: &str,
        node: &std::path::Path,
    ) -> Result<(), NetError>;
    /// Whether host interface `link` exists (checked before a VM on it is
    /// made).
    fn link_exists(&self, link: &str) -> Result<bool, NetError>;
}

/// Whether this host can give the bridge IPv6: the kernel has it and it
/// is not disabled for new interfaces (the bridge would be made with it
/// off); the reason when not.
pub fn ipv6_available() -> Result<(), String> {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Err("the kernel has no IPv6 (booted with ipv6.disable=1?)".into());
    }
    for scope in ["all", "default"] {
        let v = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"))
            .unwrap_or_default();
        if v.trim() == "1" {
            return Err(format!(
                "IPv6 is disabled (sysctl net.ipv6.conf.{scope}.disable_ipv6=1)"
            ));
        }
    }
    Ok(())
}

/// What [`NetHost::teardown`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// The bridge and the table were removed.
    Removed,
    /// There was no bridge.
    Absent,
    /// Left in place: what still uses them.
    InUse(String),
}

/// How many rules of an `nft -j list table` answer forward a published
/// port (DNAT): each belongs to a VM of some state root.
pub fn published_rules(listing: &serde_json::Value) -> usize {
    listing["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("rule"))
                .filter(|r| {
                    r["expr"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|x| x.get("dnat").is_some()))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The ignis tables' published-port rules on this host (0 without a
/// table).
fn table_published_rules() -> Result<usize, NetError> {
    Ok(family_published_rules("ip")? + family_published_rules("ip6")?)
}

fn family_published_rules(family: &str) -> Result<usize, NetError> {
    let out = match std::process::Command::new("nft")
        .args(["-j", "list", "table", family, crate::TABLE])
        .output()
    {
        Ok(o) => o,
        // No nft: nobody made the table.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(NetError::Nft(e.to_string())),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(0);
        }
        if err.contains("Operation not permitted") {
            return Err(NetError::NotPermitted);
        }
        return Err(NetError::Nft(err.trim().to_string()));
    }
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| NetError::Nft(format!("nft -j output: {e}")))?;
    Ok(published_rules(&listing))
}

/// The real host: netlink and nft.
pub struct LinuxNet;

fn rt() -> Result<tokio::runtime::Runtime, NetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetError::Netlink(e.to_string()))
}

/// errno values the kernel returns (negated) in netlink error messages.
const EPERM: i32 = 1;
const EACCES: i32 = 13;

/// A netlink failure, by the errno the kernel answered with.
fn nl_err(e: rtnetlink::Error) -> NetError {
    match &e {
        rtnetlink::Error::NetlinkError(m) if matches!(-m.raw_code(), EPERM | EACCES) => {
            NetError::NotPermitted
        }
        _ => NetError::Netlink(e.to_string()),
    }
}

/// A failure to apply a ruleset with `nft`, by its I/O error kind.
fn nft_err(e: nftables::helper::NftablesError) -> NetError {
    use nftables::helper::NftablesError;
    match &e {
        NftablesError::NftExecution { inner, .. } => match inner.kind() {
            std::io::ErrorKind::NotFound => NetError::NftMissing,
            std::io::ErrorKind::PermissionDenied => NetError::NotPermitted,
            _ => NetError::Nft(e.to_string()),
        },
        _ => NetError::Nft(e.to_string()),
    }
}

async fn link_index(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<(u32, bool)>, NetError> {
    use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => {
            let is_bridge = msg.attributes.iter().any(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
                _ => false,
            });
            Ok(Some((msg.header.index, is_bridge)))
        }
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None), // ENODEV
        Err(e) => Err(nl_err(e)),
    }
}

impl NetHost for LinuxNet {
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        rt()?.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            let index = match link_index(&handle, name).await? {
                Some((_, false)) => {
                    return Err(NetError::NotABridge {
                        name: name.to_string(),
                    })
                }
                Some((i, true)) => i,
                None => {
                    match handle
                        .link()
                        .add(rtnetlink::LinkBridge::new(name).build())
                        .execute()
                        .await
                    {
                        Ok(()) => {}
                        // A concurrent ignis made it first.
                        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => {}
                        Err(e) => return Err(nl_err(e)),
                    }
                    link_index(&handle, name)
                        .await?
                        .ok_or_else(|| NetError::Netlink(format!("{name} vanished")))?
                        .0
                }
            };
            match handle
                .address()
                .add(index, gateway.into(), prefix)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => {} // EEXIST
                Err(e) => return Err(nl_err(e)),
            }
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(nl_err)?;
            Ok::<_, NetError>(())
        })?;
        for (path, what) in [
            ("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward"),
            (
                &*format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
                "route_localnet",
            ),
        ] {
            std::fs::write(path, "1").map_err(|e| NetError::Sysctl(format!("{what}: {e}")))?;
        }
        Ok(())
    }

    fn ensure_bridge6(&self, name: &str, gateway: Ipv6Addr, prefix: u8) -> Result<(), NetError> {
        ipv6_available().map_err(NetError::Ipv6Unavailable)?;
        let conf = format!("/proc/sys/net/ipv6/conf/{name}");
        let disabled = std::fs::read_to_string(format!("{conf}/disable_ipv6"))
            .map_err(|e| NetError::Ipv6Unavailable(format!("{conf}/disable_ipv6: {e}")))?;
        if disabled.trim() != "0" {
            return Err(NetError::Ipv6Unavailable(format!(
                "IPv6 is disabled on {name} (sysctl net.ipv6.conf.{name}.disable_ipv6=1, from net.ipv6.conf.default.disable_ipv6)"
            )));
        }
        // The gateway is ours alone: usable at once, not after DAD.
        std::fs::write(format!("{conf}/accept_dad"), "0")
            .map_err(|e| NetError::Sysctl(format!("net.ipv6.conf.{name}.accept_dad: {e}")))?;
        rt()?.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            let (index, _) = link_index(&handle, name)
                .await?
                .ok_or_else(|| NetError::Netlink(format!("bridge {name} missing")))?;
            match handle
                .address()
                .add(index, gateway.into(), prefix)
                .execute()
                .await
            {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => Ok(()), // EEXIST
                Err(e) => Err(nl_err(e)),
            }
        })?;
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
            .map_err(|e| NetError::Sysctl(format!("net.ipv6.conf.all.forwarding: {e}")))
    }

    fn attach_tap(&self, tap: &str, bridge: &str, timeout: Duration) -> Result<(), NetError> {
        rt()?.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            let (bridge_index, _) = link_index(&handle, bridge)
                .await?
                .ok_or_else(|| NetError::Netlink(format!("bridge {bridge} missing")))?;
            let deadline = Instant::now() + timeout;
            let tap_index = loop {
                if let Some((i, _)) = link_index(&handle, tap).await? {
                    break i;
                }
                if Instant::now() > deadline {
                    return Err(NetError::NoTap(tap.to_string()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            handle
                .link()
                .set(
                    rtnetlink::LinkUnspec::new_with_index(tap_index)
                        .controller(bridge_index)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(nl_err)
        })
    }

    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        rt()?.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            if let Some((index, _)) = link_index(&handle, name).await? {
                match handle.link().del(index).execute().await {
                    Ok(()) => {}
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => {}
                    Err(e) => return Err(nl_err(e)),
                }
            }
            Ok(())
        })
    }

    fn teardown(&self, bridge: &str) -> Result<Teardown, NetError> {
        let ports = rt()?.block_on(async {
            use rtnetlink::packet_route::link::LinkAttribute;
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            let Some((index, _)) = link_index(&handle, bridge).await? else {
                return Ok::<_, NetError>(None);
            };
            let mut ports = Vec::new();
            let mut links = handle.link().get().execute();
            while let Some(msg) = links.try_next().await.map_err(nl_err)? {
                let attrs = &msg.attributes;
                if attrs
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Controller(i) if *i == index))
                {
                    ports.extend(attrs.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    }));
                }
            }
            Ok(Some(ports))
        })?;
        let Some(ports) = ports else {
            return Ok(Teardown::Absent);
        };
        if !ports.is_empty() {
            return Ok(Teardown::InUse(format!(
                "attached to {bridge}: {}",
                ports.join(", ")
            )));
        }
        let published = table_published_rules()?;
        if published > 0 {
            return Ok(Teardown::InUse(format!(
                "{published} published-port rules in the {} tables",
                crate::TABLE
            )));
        }
        self.delete_link(bridge)?;
        for family in ["ip", "ip6"] {
            let payload = serde_json::json!({"nftables": [{"delete": {"table": {"family": family, "name": crate::TABLE}}}]});
            // The table may already be gone (or never was); that is the goal.
            let _ = self.apply_rules(&payload);
        }
        Ok(Teardown::Removed)
    }

    fn create_netns(&self, ns: &str) -> Result<(), NetError> {
        crate::netns::create(ns)
    }

    fn create_macvtap(
        &self,
        name: &str,
        link: &str,
        mac: &str,
        node: &std::path::Path,
    ) -> Result<(), NetError> {
        use rtnetlink::packet_route::link::MacVtapMode;
        let address = crate::macvtap::mac_bytes(mac)
            .ok_or_else(|| NetError::Netlink(format!("bad MAC {mac}")))?;
        rt()?.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            let (parent, _) = link_index(&handle, link)
                .await?
                .ok_or_else(|| NetError::NoLink(link.to_string()))?;
            if let Some((stale, _)) = link_index(&handle, name).await? {
                handle.link().del(stale).execute().await.map_err(nl_err)?;
            }
            handle
                .link()
                .add(
                    rtnetlink::LinkMacVtap::new(name, parent, MacVtapMode::Bridge)
                        .address(address)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(nl_err)
        })?;
        if let Err(e) = crate::macvtap::make_node(name, node) {
            let _ = self.delete_link(name);
            return Err(e);
        }
        Ok(())
    }

    fn link_exists(&self, link: &str) -> Result<bool, NetError> {
        rt()?.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            Ok(link_index(&handle, link).await?.is_some())
        })
    }

    fn delete_netns(&self, ns: &str) -> Result<(), NetError> {
        crate::netns::delete(ns)
    }

    fn redirect_tap(
        &self,
        ns: &str,
        ifname: &str,
        tap: &str,
        owner: (u32, u32),
    ) -> Result<(), NetError> {
        crate::netns::redirect_tap(ns, ifname, tap, owner)
    }

    fn move_to_host(&self, ns: &str, link: &str, timeout: Duration) -> Result<(), NetError> {
        crate::netns::move_to_host(ns, link, timeout)
    }

    fn apply_rules(&self, ruleset: &serde_json::Value) -> Result<(), NetError> {
        let payload = ruleset.to_string();
        if crate::nftgen::unchanged(&payload) {
            return Ok(());
        }
        let args: [&str; 0] = [];
        nftables::helper::apply_ruleset_raw(&payload, None::<&str>, args)
            .map(|_| crate::nftgen::record(&payload))
            .map_err(nft_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_rules_counts_only_dnat_rules() {
        let subnet: crate::Subnet = "10.61.0.0/16".parse().unwrap();
        let fw = [crate::Forward {
            mapping: crate::parse_port("8080:80").unwrap(),
            vm_ip: "10.61.0.2".parse().unwrap(),
        }];
        // `nft -j list table` answers with the objects our batch added.
        let listing = |r: serde_json::Value| {
            let items: Vec<serde_json::Value> = r["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c.get("add").cloned())
                .collect();
            serde_json::json!({ "nftables": items })
        };
        let with = listing(crate::ruleset("ignis0", subnet, None, &fw));
        assert_eq!(published_rules(&with), 2, "prerouting + output");
        let base = listing(crate::ruleset("ignis0", subnet, None, &[]));
        assert_eq!(published_rules(&base), 0);
        assert_eq!(published_rules(&serde_json::json!({})), 0);
    }
}
