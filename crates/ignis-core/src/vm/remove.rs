use super::KIND;
use crate::{Error, ErrorKind, Ignis};

impl Ignis {
    /// `ignis rm [-f]`: a running VM is refused unless forced (then killed).
    /// Returns the removed VM's name.
    pub fn vm_remove(&self, query: &str, force: bool) -> Result<String, Error> {
        self.vm_remove_with(query, force, false)
    }

    /// [`Ignis::vm_remove`]; with `volumes` (`rm -v`), the VM's anonymous
    /// volumes go too (named ones never do).
    pub fn vm_remove_with(&self, query: &str, force: bool, volumes: bool) -> Result<String, Error> {
        let mut rec = self.reconcile(self.find_vm(query)?)?;
        if rec.status.restarting && force {
            rec = self.cancel_restart(&rec, super::control::Request::Kill {})?;
        }
        let state = rec.run_state();
        if !state.can_remove(force) || rec.status.restarting {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("VM {} is running; stop it first or use rm -f", rec.name),
            ));
        }
        if state.can_kill() {
            match self.vm_kill(&rec.id) {
                Ok(_) => {}
                // It ended and removed itself (--rm) meanwhile: done.
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(rec.name),
                Err(e) => return Err(e),
            }
        }
        // Host resources first: a crash after this leaves a record whose
        // VM holds nothing, never resources no record names.
        self.release_host_resources(&rec);
        // CNI DEL, once: the attachment record goes when it succeeded.
        self.cni_detach(&rec.id);
        crate::fault::point("rm:resources-released");
        // Without -v its anonymous volumes stay, dangling; with -v they
        // go below (a crash before leaves them naming a VM that is gone:
        // prune's to remove).
        self.store.db().tx(|tx| {
            tx.delete_object(KIND, &rec.id)?;
            if !volumes {
                crate::volume::release_anonymous(tx, &rec)?;
            }
            Ok::<_, Error>(())
        })?;
        crate::fault::point("rm:record-deleted");
        if volumes {
            self.volumes_remove_anonymous(&rec);
        }
        // The lease and ports went with the record; only ports have rules.
        // (A VM without a bridge NIC had its ports from portmap: DEL above.)
        if !rec.spec.network.ports.is_empty() && rec.spec.network.uses_bridge() {
            if let Err(e) = self.apply_network_rules() {
                tracing::warn!(vm = %rec.id, error = %e, "cannot update the nftables table");
            }
        }
        let dir = self.vm_dir(&rec.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove the VM directory; prune will");
            }
        }
        self.store
            .remove_object_lock(super::supervise::SUPERVISOR_LOCK, &rec.id);
        Ok(rec.name)
    }
}
