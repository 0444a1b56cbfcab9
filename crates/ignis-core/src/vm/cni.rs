//! A VM's CNI attachments. Made at create (the address the network's IPAM
//! gives is the VM's for its life, as a bridge lease is), checked (CNI
//! CHECK) before each start, deleted (CNI DEL) once at rm. Everything DEL
//! needs is in `<root>/cni/<id>.json`, written before ADD and removed only
//! after DEL succeeded, so `system prune` finishes what a crash left.

use std::path::PathBuf;

use ignis_api::{NetworkMode, NicSpec};
use ignis_net::cni::{self, Attachment};

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

impl Ignis {
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
        dirs: &CniDirs,
    ) -> Result<(), Error> {
        if !nics.iter().any(|n| n.mode == NetworkMode::Cni) {
            return Ok(());
        }
        if !rustix::process::geteuid().is_root() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "CNI networking needs root (network namespaces, TAPs); run as root or use the network none",
            )
            .about(Field::Network));
        }
        let conf_dir = dirs
            .conf
            .clone()
            .unwrap_or_else(|| PathBuf::from(cni::DEFAULT_CONF_DIR));
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
                },
            ));
        }
        let saved: Vec<Attachment> = atts.iter().map(|(_, a)| a.clone()).collect();
        self.cni_save(id, &saved)?;
        let result = self.cni_add_all(id, nics, &mut atts);
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
            if let Some((addr, prefix, gw)) = ip {
                nic.ip = Some(addr.to_string());
                nic.prefix = Some(prefix);
                nic.gateway = gw.map(|g| g.to_string());
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

fn atts_clone(atts: &[(usize, Attachment)]) -> Vec<Attachment> {
    atts.iter().map(|(_, a)| a.clone()).collect()
}
