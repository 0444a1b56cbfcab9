use ignis_api::{VmRecord, VmState};

use super::{boot_id, parse, process_start, KIND};
use crate::{Error, Ignis};

impl Ignis {
    /// Makes a "running" record tell the truth: if the host rebooted or the
    /// supervisor is gone (killed), the VM is recorded as exited with why.
    pub(crate) fn reconcile(&self, rec: VmRecord) -> Result<VmRecord, Error> {
        let supervisor_alive = || {
            rec.status.supervisor_pid.is_some_and(|pid| {
                process_start(pid).is_some() && process_start(pid) == rec.status.supervisor_start
            })
        };
        if rec.state() != VmState::Running {
            // A restart its supervisor will not do (it died meanwhile).
            if rec.status.restarting && !supervisor_alive() {
                let updated = self.update_status(&rec.id, |s| {
                    let _ = s.set_restarting(false);
                })?;
                return Ok(updated.unwrap_or(rec));
            }
            return Ok(rec);
        }
        let reason = if rec.status.boot_id.is_some() && rec.status.boot_id != boot_id() {
            Some("host rebooted while the VM was running".to_string())
        } else {
            match rec.status.supervisor_pid {
                Some(pid)
                    if process_start(pid).is_some()
                        && process_start(pid) == rec.status.supervisor_start =>
                {
                    None
                }
                Some(_) => Some("its supervisor died (killed?); the VMM went with it".to_string()),
                None => None, // starting: the supervisor has not written yet
            }
        };
        let Some(reason) = reason else { return Ok(rec) };
        // The VMM dies with its supervisor; make sure, if the pid is still ours.
        if let Some(pid) = rec.status.vmm_pid {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&rec.id) {
                if let Some(p) = i32::try_from(pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
        // Only the run this record was read for: another process may have
        // settled it and started the VM again meanwhile (the daemon after a
        // host reboot), and that run and its resources are not ours.
        let same_run = |s: &ignis_api::VmStatus| {
            s.state == Some(VmState::Running)
                && s.supervisor_pid == rec.status.supervisor_pid
                && s.supervisor_start == rec.status.supervisor_start
                && s.boot_id == rec.status.boot_id
        };
        let mut settled = false;
        let updated = self.update_status(&rec.id, |s| {
            if same_run(s) {
                s.state = Some(VmState::Exited);
                s.finished_at = Some(crate::now());
                s.reason = Some(reason.clone());
                s.vmm_pid = None;
                settled = true;
            }
        })?;
        if settled {
            self.release_host_resources(&rec);
        }
        Ok(updated.unwrap_or(rec))
    }

    /// `ignis ps [-a]`.
    pub fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        let mut out = Vec::new();
        for row in &rows {
            let rec = self.reconcile(parse(row)?)?;
            if all || rec.state() == VmState::Running {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// `ignis inspect VM`.
    pub fn vm_inspect(&self, query: &str) -> Result<VmRecord, Error> {
        let rec = self.find_vm(query)?;
        self.reconcile(rec)
    }
}
