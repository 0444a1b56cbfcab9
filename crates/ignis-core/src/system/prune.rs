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
        let repaired = self.prune_host_resources()?;
        // No VM on the bridge: the bridge and the nftables table go too.
        // Prune is the repair tool: an unreadable VM record must not stop
        // it; such a VM is assumed to use the bridge.
        let rows = self
            .store
            .db()
            .read(|tx| tx.list_objects(crate::vm::KIND))?;
        let bridge_vms = rows
            .iter()
            .filter(|r| {
                crate::vm::parse(r)
                    .map(|v| v.spec.network.mode == ignis_api::NetworkMode::Bridge)
                    .unwrap_or(true)
            })
            .count();
        if bridge_vms == 0 {
            match self.net.teardown(ignis_net::BRIDGE) {
                Ok(true) => tracing::info!("removed the unused bridge and its nftables table"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove the unused bridge"),
            }
        }
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
}
