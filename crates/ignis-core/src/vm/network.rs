//! Host side of a VM's network: the bridge, its TAP, the nftables table
//! rebuilt from the leases and ports in the DB.

use std::time::Duration;

use ignis_api::{NetworkMode, VmRecord};

use crate::{Error, ErrorKind, Ignis};

/// The character device node of macvtap NIC `index` in the VM's directory.
pub(crate) fn macvtap_node(dir: &std::path::Path, index: usize) -> std::path::PathBuf {
    dir.join(format!("macvtap{index}"))
}

fn net_error(e: ignis_net::NetError) -> Error {
    let kind = match e {
        ignis_net::NetError::NoLink(_) => ErrorKind::Unavailable,
        ignis_net::NetError::NotPermitted
        | ignis_net::NetError::NftMissing
        | ignis_net::NetError::Ipv6Unavailable(_) => ErrorKind::Unavailable,
        ignis_net::NetError::NotABridge { .. } => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    };
    Error::wrap(kind, e)
}

impl Ignis {
    /// Rebuilds the ignis nftables table from every published port.
    pub(crate) fn apply_network_rules(&self) -> Result<(), Error> {
        let rows = self.store.db().tx(|tx| tx.forwards())?;
        let mut forwards = Vec::new();
        for ignis_state::ForwardRow {
            host_ip,
            host_port,
            proto,
            vm_port,
            vm_ip,
        } in rows
        {
            let spec = if host_ip == "0.0.0.0" {
                format!("{host_port}:{vm_port}/{proto}")
            } else if host_ip.contains(':') {
                format!("[{host_ip}]:{host_port}:{vm_port}/{proto}")
            } else {
                format!("{host_ip}:{host_port}:{vm_port}/{proto}")
            };
            let (Ok(mapping), Ok(vm_ip)) = (ignis_net::parse_port(&spec), vm_ip.parse()) else {
                continue;
            };
            forwards.push(ignis_net::Forward { mapping, vm_ip });
        }
        let subnet = self.subnet;
        self.net
            .apply_rules(&ignis_net::ruleset(
                ignis_net::BRIDGE,
                subnet,
                self.subnet6,
                &forwards,
            ))
            .map_err(net_error)
    }

    /// Before the VMM starts: CNI attachments checked, macvtaps made,
    /// bridge up, rules in place.
    pub(crate) fn prepare_network(&self, rec: &VmRecord) -> Result<(), Error> {
        if rec.spec.network.uses_cni() {
            self.cni_check(&rec.id)?;
        }
        self.make_macvtaps(rec)?;
        if let Err(e) = self.prepare_bridge(rec) {
            self.remove_macvtaps(rec);
            return Err(e);
        }
        Ok(())
    }

    /// Each macvtap NIC's link on its host interface and device node; on
    /// failure none is left.
    fn make_macvtaps(&self, rec: &VmRecord) -> Result<(), Error> {
        let dir = self.vm_dir(&rec.id);
        for (i, n) in rec.spec.network.nics().iter().enumerate() {
            if n.mode != NetworkMode::Macvtap {
                continue;
            }
            let (Some(link), Some(mac)) = (&n.link, &n.mac) else {
                continue;
            };
            let name = ignis_net::macvtap::macvtap_name(&rec.id, i);
            if let Err(e) = self
                .net
                .create_macvtap(&name, link, mac, &macvtap_node(&dir, i))
            {
                self.remove_macvtaps(rec);
                return Err(net_error(e).about(super::options::Field::Network));
            }
        }
        Ok(())
    }

    /// Deletes the VM's macvtaps and their device nodes (the links outlive
    /// the VMM: its descriptor going does not remove them).
    pub(crate) fn remove_macvtaps(&self, rec: &VmRecord) {
        let dir = self.vm_dir(&rec.id);
        for (i, n) in rec.spec.network.nics().iter().enumerate() {
            if n.mode != NetworkMode::Macvtap {
                continue;
            }
            let name = ignis_net::macvtap::macvtap_name(&rec.id, i);
            if let Err(e) = self.net.delete_link(&name) {
                tracing::warn!(vm = %rec.id, error = %e, "cannot delete macvtap {name}");
            }
            let _ = std::fs::remove_file(macvtap_node(&dir, i));
        }
    }

    fn prepare_bridge(&self, rec: &VmRecord) -> Result<(), Error> {
        if !rec.spec.network.uses_bridge() {
            return Ok(());
        }
        let subnet = self.subnet;
        self.net
            .ensure_bridge(ignis_net::BRIDGE, subnet.gateway(), subnet.prefix)
            .map_err(net_error)?;
        if let Some(s6) = self.subnet6 {
            self.net
                .ensure_bridge6(ignis_net::BRIDGE, s6.gateway(), s6.prefix)
                .map_err(net_error)?;
        }
        self.apply_network_rules()
    }

    /// After the VMM started: its TAP joins the bridge (moved out of the
    /// VM's namespace first when the VMM runs there).
    pub(crate) fn attach_network(&self, rec: &VmRecord) -> Result<(), Error> {
        if !rec.spec.network.uses_bridge() {
            return Ok(());
        }
        if rec.spec.network.uses_cni() {
            self.net
                .move_to_host(
                    &ignis_net::cni::netns_name(&rec.id),
                    &ignis_net::tap_name(&rec.id),
                    Duration::from_secs(10),
                )
                .map_err(net_error)?;
        }
        self.net
            .attach_tap(
                &ignis_net::tap_name(&rec.id),
                ignis_net::BRIDGE,
                Duration::from_secs(10),
            )
            .map_err(net_error)
    }

    /// Relays of the VM's TCP ports published on `[::1]` to its IPv6
    /// address (dropped when the run ends); one that cannot listen is
    /// logged and skipped, as the DNS relay.
    pub(crate) fn loopback6_proxies(&self, rec: &VmRecord) -> Vec<ignis_net::proxy::TcpProxy> {
        let n = &rec.spec.network;
        let Some(ip6) = n
            .ip6
            .as_deref()
            .and_then(|i| i.parse::<std::net::Ipv6Addr>().ok())
        else {
            return Vec::new();
        };
        n.ports
            .iter()
            .filter(|p| p.proto == "tcp")
            .filter_map(|p| {
                let host: std::net::Ipv6Addr = p.host_ip.as_deref()?.parse().ok()?;
                if !host.is_loopback() {
                    return None;
                }
                let listen = std::net::SocketAddr::from((host, p.host_port));
                let target = std::net::SocketAddr::from((ip6, p.vm_port));
                match ignis_net::proxy::TcpProxy::start(listen, target) {
                    Ok(proxy) => Some(proxy),
                    Err(e) => {
                        tracing::warn!(vm = %rec.id, port = %p, error = %e, "cannot publish on [::1]");
                        None
                    }
                }
            })
            .collect()
    }

    /// After the VMM ended: the TAP normally went with it; make sure. The
    /// macvtaps do not go by themselves.
    pub(crate) fn release_network(&self, rec: &VmRecord) {
        self.remove_macvtaps(rec);
        if rec.spec.network.uses_bridge() {
            if let Err(e) = self.net.delete_link(&ignis_net::tap_name(&rec.id)) {
                tracing::warn!(vm = %rec.id, error = %e, "cannot delete the TAP");
            }
        }
    }
}
