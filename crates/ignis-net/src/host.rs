//! Host side effects: bridge and TAP via netlink (rtnetlink), the ruleset
//! via `nft -j` (the nftables crate). Behind [`NetHost`] so the core's
//! network logic is tested with a fake.

use std::net::Ipv4Addr;
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
}

/// What networking needs from the host.
pub trait NetHost: Send + Sync {
    /// Creates (or checks) the bridge with the gateway address, up, with
    /// forwarding enabled.
    fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError>;
    /// Waits for the VMM's TAP and enslaves it to the bridge, up.
    fn attach_tap(&self, tap: &str, bridge: &str, timeout: Duration) -> Result<(), NetError>;
    /// Deletes a link if it exists.
    fn delete_link(&self, name: &str) -> Result<(), NetError>;
    /// Replaces the ignis table with `ruleset` (nft JSON).
    fn apply_rules(&self, ruleset: &serde_json::Value) -> Result<(), NetError>;
    /// Removes the bridge and the ignis table if the bridge exists (no VM
    /// needs them); returns whether there was anything to remove.
    fn teardown(&self, bridge: &str) -> Result<bool, NetError>;
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

    fn teardown(&self, bridge: &str) -> Result<bool, NetError> {
        let exists = rt()?.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            Ok::<_, NetError>(link_index(&handle, bridge).await?.is_some())
        })?;
        if !exists {
            return Ok(false);
        }
        self.delete_link(bridge)?;
        let payload = serde_json::json!({"nftables": [{"delete": {"table": {"family": "ip", "name": crate::TABLE}}}]});
        // The table may already be gone; that is the goal.
        let _ = self.apply_rules(&payload);
        Ok(true)
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
