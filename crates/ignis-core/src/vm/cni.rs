//! A VM's CNI attachments. Made at create (the address the network's IPAM
//! gives is the VM's for its life, as a bridge lease is), checked (CNI
//! CHECK) before each start, deleted (CNI DEL) once at rm. Everything DEL
//! needs is in `<root>/cni/<id>.json`, written before ADD and removed only
//! after DEL succeeded, so `system prune` finishes what a crash left.
//!
//! Published ports of a VM without a bridge NIC go to its first CNI NIC's
//! network: the plugins there with the `portMappings` capability (the
//! standard `portmap`) get them as `runtimeConfig.portMappings`, the list
//! kept in the record for CHECK and DEL. With a bridge NIC, ports stay the
//! bridge's.

use std::path::PathBuf;

use ignis_api::{NetworkMode, NicSpec};
use ignis_net::cni::{self, Attachment};
use ignis_net::PortMapping;

use super::options::{CniDirs, Field};
use crate::{Error, ErrorKind, Ignis};

const DIR: &str = "cni";

fn cni_error(e: cni::CniError) -> Error {
    let kind = match &e {
        cni::CniError::NoNetwork { .. }
        | cni::CniError::NoConfig(_)
        | cni::CniError::BadConfig { .. } => ErrorKind::Invalid,
        cni::CniError::NoPlugin { .. } | cni::CniError::Read(..) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    Error::wrap(kind, e).about(Field::Network)
}

/// The index of the NIC whose CNI network serves the published ports: the
/// first CNI NIC, when no NIC is on the bridge (which serves them then).
pub(crate) fn ports_nic(modes: impl IntoIterator<Item = NetworkMode>) -> Option<usize> {
    let modes: Vec<NetworkMode> = modes.into_iter().collect();
    if modes.contains(&NetworkMode::Bridge) {
        return None;
    }
    modes.iter().position(|m| *m == NetworkMode::Cni)
}

/// A published port as `runtimeConfig.portMappings` has it: no host
/// address and `0.0.0.0` are both every host address of both families (as
/// on the bridge), so no `hostIP`.
fn port_entry(p: &PortMapping) -> cni::PortMapEntry {
    cni::PortMapEntry {
        host_port: p.host_port,
        container_port: p.vm_port,
        protocol: p.proto.as_str().to_string(),
        host_ip: p
            .host_ip
            .filter(|ip| *ip != std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
            .map(|ip| ip.to_string()),
    }
}

fn conf_dir(dirs: &CniDirs) -> PathBuf {
    dirs.conf
        .clone()
        .unwrap_or_else(|| PathBuf::from(cni::DEFAULT_CONF_DIR))
}

/// Ports the `portmap` plugin cannot publish, refused before anything is
/// made: on `[::1]` (the kernel does not route IPv6 loopback traffic
/// elsewhere, and portmap relays nothing).
fn ports_portmap_can_serve(ports: &[PortMapping]) -> Result<(), Error> {
    if let Some(p) = ports
        .iter()
        .find(|p| p.host_ip.is_some_and(|i| i.is_ipv6() && i.is_loopback()))
    {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("{p}: a CNI network's portmap plugin cannot publish on [::1] (IPv6 loopback traffic is never forwarded); publish on [::], 127.0.0.1 or a host address"),
        )
        .about(Field::Ports));
    }
    Ok(())
}

impl Ignis {
    /// Before anything is made for a VM with published ports and no bridge
    /// NIC: the first CNI NIC's network (`network`: its name, `None` the
    /// default) must have a plugin with the `portMappings` capability, and
    /// the ports must be ones portmap can publish.
    pub(crate) fn cni_ports_preflight(
        &self,
        network: Option<&str>,
        ports: &[PortMapping],
        dirs: &CniDirs,
    ) -> Result<(), Error> {
        if ports.is_empty() {
            return Ok(());
        }
        ports_portmap_can_serve(ports)?;
        let config = cni::load(&conf_dir(dirs), network).map_err(cni_error)?;
        if !config.has_capability(cni::PORT_MAPPINGS) {
            let p = ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "published ports ({p}) need a plugin with the portMappings capability on the CNI network {}, and it has none: add the portmap plugin to its conflist ({{\"type\": \"portmap\", \"capabilities\": {{\"portMappings\": true}}}}), or put the VM on the bridge network too",
                    config.name
                ),
            )
            .about(Field::Ports));
        }
        Ok(())
    }

    fn cni_file(&self, id: &str) -> PathBuf {
        self.root().join(DIR).join(format!("{id}.json"))
    }

    fn cni_save(&self, id: &str, atts: &[Attachment]) -> Result<(), Error> {
        let path = self.cni_file(id);
        let dir = self.root().join(DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal("create the CNI attachment directory", e))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(atts).expect("json"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::internal("record the VM's CNI attachments", e))
    }

    fn cni_load(&self, id: &str) -> Option<Vec<Attachment>> {
        let bytes = std::fs::read(self.cni_file(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// ADD for each CNI NIC of a new VM: its namespace, the plugins' chain,
    /// a TAP joined to what they made; fills in each NIC's address, gateway
    /// and MAC (the plugins' interface's). On failure nothing is left.
    pub(crate) fn cni_attach(
        &self,
        id: &str,
        nics: &mut [NicSpec],
        ports: &[PortMapping],
        dirs: &CniDirs,
    ) -> Result<(), Error> {
        if !nics.iter().any(|n| n.mode == NetworkMode::Cni) {
            return Ok(());
        }
        let ports_at = if ports.is_empty() {
            None
        } else {
            ports_nic(nics.iter().map(|n| n.mode))
        };
        if !rustix::process::geteuid().is_root() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "CNI networking needs root (network namespaces, TAPs); run as root or use the network none",
            )
            .about(Field::Network));
        }
        let conf_dir = conf_dir(dirs);
        let bin_dirs = cni::exec::bin_dirs(dirs.bin.as_deref());
        if bin_dirs.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "no CNI plugins in /opt/cni/bin or /usr/lib/cni: apt-get install containernetworking-plugins (or give --cni-bin-dir)",
            )
            .about(Field::Network));
        }
        // Every configuration read before anything changes.
        let mut atts = Vec::new();
        for (i, nic) in nics.iter_mut().enumerate() {
            if nic.mode != NetworkMode::Cni {
                continue;
            }
            let port_mappings = if ports_at == Some(i) {
                self.cni_ports_preflight(nic.cni.as_deref(), ports, dirs)?;
                ports.iter().map(port_entry).collect()
            } else {
                vec![]
            };
            let config = cni::load(&conf_dir, nic.cni.as_deref()).map_err(cni_error)?;
            nic.cni = Some(config.name.clone());
            atts.push((
                i,
                Attachment {
                    container_id: id.to_string(),
                    netns: cni::netns_path(id),
                    ifname: cni::ifname(i),
                    config,
                    bin_dirs: bin_dirs.clone(),
                    result: None,
                    port_mappings,
                },
            ));
        }
        let saved: Vec<Attachment> = atts.iter().map(|(_, a)| a.clone()).collect();
        self.cni_save(id, &saved)?;
        let result = self
            .cni_add_all(id, nics, &mut atts)
            .and_then(|()| match ports_at {
                Some(i) => ports_have_an_address(&nics[i], ports),
                None => Ok(()),
            });
        if let Err(e) = result {
            self.cni_detach(id);
            return Err(e);
        }
        Ok(())
    }

    fn cni_add_all(
        &self,
        id: &str,
        nics: &mut [NicSpec],
        atts: &mut [(usize, Attachment)],
    ) -> Result<(), Error> {
        let ns = cni::netns_name(id);
        self.net
            .create_netns(&ns)
            .map_err(|e| Error::wrap(ErrorKind::Internal, e))?;
        let uid = super::vmm_uid(id);
        for k in 0..atts.len() {
            let (i, att) = &mut atts[k];
            let i = *i;
            let r = att.add();
            // The result is what DEL gets: on disk at once.
            let all: Vec<Attachment> = atts_clone(atts);
            self.cni_save(id, &all)?;
            let r = r.map_err(cni_error)?;
            let (iface, ip) = r.for_interface(&cni::ifname(i)).ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!(
                        "the CNI network {} made no interface {} in the VM's namespace",
                        atts[k].1.config.name,
                        cni::ifname(i)
                    ),
                )
            })?;
            let nic = &mut nics[i];
            nic.mac = Some(iface.mac.to_ascii_lowercase());
            if let Some((addr, prefix, gw)) = ip.v4 {
                nic.ip = Some(addr.to_string());
                nic.prefix = Some(prefix);
                nic.gateway = gw.map(|g| g.to_string());
            }
            if let Some((addr, prefix, gw)) = ip.v6 {
                nic.ip6 = Some(addr.to_string());
                nic.prefix6 = Some(prefix);
                nic.gateway6 = gw.map(|g| g.to_string());
            }
            self.net
                .redirect_tap(&ns, &cni::ifname(i), &cni::tap(i), (uid, uid))
                .map_err(|e| Error::wrap(ErrorKind::Internal, e))?;
        }
        Ok(())
    }

    /// CNI CHECK of a VM's attachments (before it starts).
    pub(crate) fn cni_check(&self, id: &str) -> Result<(), Error> {
        let Some(atts) = self.cni_load(id) else {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("VM {id} is on a CNI network but has no attachment record"),
            ));
        };
        if !cni::netns_path(id).exists() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the VM's network namespace {} is gone (the host rebooted?); remove and recreate the VM",
                    cni::netns_name(id)
                ),
            ));
        }
        for a in &atts {
            a.check().map_err(|e| Error::wrap(ErrorKind::Internal, e))?;
        }
        Ok(())
    }

    /// CNI DEL of every attachment of `id`, its namespace deleted, its
    /// record removed once DEL succeeded (kept otherwise, for prune).
    /// Returns whether there was anything to release.
    pub(crate) fn cni_detach(&self, id: &str) -> bool {
        let path = self.cni_file(id);
        let atts = self.cni_load(id);
        let had = atts.is_some() || cni::netns_path(id).exists();
        let mut ok = true;
        for a in atts.iter().flatten().rev() {
            if let Err(e) = a.del() {
                tracing::warn!(vm = %id, network = %a.config.name, error = %e, "CNI DEL failed");
                ok = false;
            }
        }
        if let Err(e) = self.net.delete_netns(&cni::netns_name(id)) {
            tracing::warn!(vm = %id, error = %e, "cannot delete the VM's network namespace");
            ok = false;
        }
        if ok {
            let _ = std::fs::remove_file(&path);
        }
        had
    }

    /// IDs with a CNI attachment record (for prune: those without a VM).
    pub(crate) fn cni_attached(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root().join(DIR)) else {
            return vec![];
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect()
    }
}

/// A port on a host address of one family needs the VM's address of that
/// family: portmap forwards only within a family, and would publish
/// nothing.
fn ports_have_an_address(nic: &NicSpec, ports: &[PortMapping]) -> Result<(), Error> {
    let network = nic.cni.as_deref().unwrap_or_default();
    for p in ports {
        let (has, family) = match p.host_ip {
            Some(std::net::IpAddr::V6(_)) => (nic.ip6.is_some(), "IPv6"),
            Some(ip) if !ip.is_unspecified() => (nic.ip.is_some(), "IPv4"),
            _ => (nic.ip.is_some() || nic.ip6.is_some(), "IP"),
        };
        if !has {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("{p}: the VM got no {family} address on the CNI network {network} (its IPAM gave none), and portmap forwards a host address only to the VM's address of the same family; publish on a host address of the other family or give the network an {family} range"),
            )
            .about(Field::Ports));
        }
    }
    Ok(())
}

fn atts_clone(atts: &[(usize, Attachment)]) -> Vec<Attachment> {
    atts.iter().map(|(_, a)| a.clone()).collect()
}
