//! Boot persistence: the VMs whose restart policy (`always`,
//! `unless-stopped`) brings them back once the host rebooted under them.
//! `ignis daemon` runs it at start-up (a host's systemd starts the daemon
//! at boot). A VM counts as "under an older boot" when its record names a
//! boot ID that is not this boot's; starting it records this one, so a
//! second run (a daemon restart) starts nothing again.

use ignis_api::{VmRecord, VmState};

use super::{boot_id, parse, KIND};
use crate::{Error, Ignis};

/// A VM started after a host reboot: its name and how its start went.
pub type AfterBoot = (String, Result<VmRecord, Error>);

impl Ignis {
    /// Starts every VM that ran under an older boot of the host and whose
    /// restart policy wants it back (`unless-stopped`: unless its last run
    /// ended by `ignis stop`/`kill`). Returns each one tried with how its
    /// start went; none waits for its guest to be ready.
    pub fn vm_start_after_boot(&self) -> Result<Vec<AfterBoot>, Error> {
        let now = boot_id();
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        let mut out = Vec::new();
        for row in &rows {
            let rec = parse(row)?;
            if rec.status.boot_id.is_none() || rec.status.boot_id == now {
                continue;
            }
            if !rec
                .spec
                .restart
                .after_host_reboot(rec.status.stopped_by_user)
            {
                continue;
            }
            // Running under the old boot: recorded as exited by the reboot.
            let rec = self.reconcile(rec)?;
            if rec.state() != VmState::Exited {
                continue;
            }
            tracing::info!(vm = %rec.name, policy = %rec.spec.restart, "starting after a host reboot");
            let r = self.vm_start(&rec.id, false);
            if let Err(e) = &r {
                tracing::warn!(vm = %rec.name, error = %e, "cannot start after the host reboot");
            }
            out.push((rec.name, r));
        }
        Ok(out)
    }
}
