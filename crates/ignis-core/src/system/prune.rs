use ignis_api::PruneReport;

use crate::{Error, Ignis};

impl Ignis {
    /// `ignis system prune`: deletes dangling images (no name, no user),
    /// then collects every blob, disk and scratch file no record needs.
    /// Waits for running imports and pulls to finish first.
    pub fn system_prune(&self) -> Result<(PruneReport, Vec<String>), Error> {
        let removed = self.store.db().tx(|tx| {
            let mut removed = Vec::new();
            for row in tx.list_objects(crate::image::KIND)? {
                if row.names.is_empty() && tx.users_of(crate::image::KIND, &row.id)?.is_empty() {
                    tx.delete_object(crate::image::KIND, &row.id)?;
                    removed.push(row.id);
                }
            }
            Ok::<_, Error>(removed)
        })?;
        // What crashed commands and supervisors left on the host.
        let mut repaired = self.prune_host_resources()?;
        repaired += self.prune_orphan_volumes()?;
        self.prune_host_network()?;
        let report = self
            .store
            .gc(true)
            .map_err(|e| Error::internal("collect garbage", e))?
            .unwrap_or_default();
        let report = PruneReport {
            host_resources_released: repaired,
            ..report
        };
        Ok((report, removed))
    }

    /// Removes the anonymous volumes of creates that died before recording
    /// their VM. Under the garbage-collection lock taken exclusively: a
    /// create holds it shared from making its volumes to recording its VM,
    /// so none is in between meanwhile.
    fn prune_orphan_volumes(&self) -> Result<u64, Error> {
        let _lock = ignis_state::FileLock::exclusive(&self.store.root().join("locks/gc.lock"))
            .map_err(|e| Error::internal("take the garbage-collection lock", e))?;
        let mut n = 0;
        for v in self.orphan_volumes()? {
            self.volume_delete(&v)?;
            n += 1;
        }
        Ok(n)
    }

    /// The bridge and the nftables table are shared by every state root
    /// on the host: they go only when no VM of this root is on the bridge
    /// and the host says nobody else uses them (no port attached, no
    /// published-port rule). With `IGNIS_NETWORK=none` (this root does not
    /// network, e.g. the test suite) the host network is left alone.
    fn prune_host_network(&self) -> Result<(), Error> {
        if std::env::var("IGNIS_NETWORK").is_ok_and(|n| n == "none") {
            tracing::debug!("IGNIS_NETWORK=none: the host network is left alone");
            return Ok(());
        }
        // Prune is the repair tool: an unreadable VM record must not stop
        // it; such a VM is assumed to use the bridge.
        let rows = self.store.db().tx(|tx| tx.list_objects(crate::vm::KIND))?;
        let bridge_vms = rows
            .iter()
            .filter(|r| {
                crate::vm::parse(r)
                    .map(|v| v.spec.network.uses_bridge())
                    .unwrap_or(true)
            })
            .count();
        if bridge_vms > 0 {
            return Ok(());
        }
        match self.net.teardown(ignis_net::BRIDGE) {
            Ok(ignis_net::Teardown::Removed) => {
                tracing::info!("removed the unused bridge and its nftables table")
            }
            Ok(ignis_net::Teardown::Absent) => {}
            Ok(ignis_net::Teardown::InUse(what)) => {
                tracing::info!(%what, "the bridge is in use (another state root): kept")
            }
            Err(e) => tracing::warn!(error = %e, "cannot remove the unused bridge"),
        }
        Ok(())
    }
}
