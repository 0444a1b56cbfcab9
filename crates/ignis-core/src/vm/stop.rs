use std::time::{Duration, Instant};

use ignis_api::{RunState, VmRecord, VmState};

use super::control::{ControlError, Request};
use crate::{Error, ErrorKind, Ignis};

/// How long after a kill the VM's end may take to be recorded.
const KILL_GRACE: Duration = Duration::from_secs(10);

impl Ignis {
    /// Waits (polling the record) until the VM is no longer running; only
    /// for a supervisor that does not serve `control.sock` (one started by
    /// an older ignis).
    fn wait_exited(&self, id: &str, timeout: Duration) -> Result<Option<VmRecord>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(rec) = self.load_vm(id)? else {
                return Ok(None);
            };
            let rec = self.reconcile(rec)?;
            if rec.state() != VmState::Running || Instant::now() > deadline {
                return Ok(Some(rec));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_vmm(&self, rec: &VmRecord) {
        if let Some(pid) = rec
            .status
            .vmm_pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// Asks the VM's supervisor (`control.sock`) to stop or kill it and
    /// waits until it ended; a supervisor that does not answer (gone, or
    /// from an older ignis) gets the VMM asked directly and its record
    /// watched instead.
    fn end_vm(&self, rec: &VmRecord, req: Request) -> Result<VmRecord, Error> {
        let dir = self.vm_dir(&rec.id);
        let wait = match req {
            Request::Stop { timeout_ms } => Duration::from_millis(timeout_ms) + KILL_GRACE,
            Request::Kill {} => KILL_GRACE,
        };
        match super::control::request(&dir, req, wait) {
            // The supervisor answers once everything is released; its own
            // exit follows at once, and a caller told "stopped" must not
            // still see it (a stop followed by a remove or a start).
            Ok(()) => wait_process_gone(rec.status.supervisor_pid, rec.status.supervisor_start),
            Err(ControlError::Unreachable { .. }) => {
                if let Request::Stop { timeout_ms } = req {
                    if let Err(e) = super::driver(rec.spec.backend)?.control(&dir).shutdown() {
                        tracing::debug!(vm = %rec.id, error = %e, "graceful shutdown request failed; will kill");
                    }
                    let r = self.wait_exited(&rec.id, Duration::from_millis(timeout_ms))?;
                    if r.as_ref().is_some_and(|r| r.state() != VmState::Running) {
                        return r.ok_or_else(gone);
                    }
                }
                self.kill_vmm(rec);
                return self.wait_exited(&rec.id, KILL_GRACE)?.ok_or_else(gone);
            }
            Err(e) => {
                tracing::warn!(vm = %rec.id, error = %e, "the supervisor did not confirm the end; killing the VMM");
                self.kill_vmm(rec);
            }
        }
        match self.load_vm(&rec.id)? {
            Some(r) => self.reconcile(r),
            // A VM run with --rm removes itself once it ended: what it
            // was, ended.
            None if rec.spec.auto_remove => {
                let mut last = rec.clone();
                let _ = last
                    .status
                    .exited(crate::now(), None, "removed (--rm)".into());
                Ok(last)
            }
            None => Err(gone()),
        }
    }

    /// A VM between two runs (its supervisor waits to restart it): the
    /// supervisor is told, and it stays down.
    pub(crate) fn cancel_restart(&self, rec: &VmRecord, req: Request) -> Result<VmRecord, Error> {
        let dir = self.vm_dir(&rec.id);
        match super::control::request(&dir, req, KILL_GRACE) {
            Ok(()) => wait_process_gone(rec.status.supervisor_pid, rec.status.supervisor_start),
            Err(e) => tracing::debug!(vm = %rec.id, error = %e, "no supervisor to tell"),
        }
        let rec = self.load_vm(&rec.id)?.ok_or_else(gone)?;
        // Its supervisor went without a word (killed): nothing restarts it.
        if rec.status.restarting {
            return Ok(self
                .update_status(&rec.id, |s| {
                    let _ = s.set_restarting(false);
                })?
                .unwrap_or(rec));
        }
        self.reconcile(rec)
    }

    /// `ignis stop [--time T]`: asks the guest to shut down (through its
    /// agent: sync, stop the workload or the image's init, unmount, power
    /// off; without an agent: Ctrl-Alt-Del on Firecracker, the ACPI power
    /// button on QEMU), killed after `timeout` (none: the VM's
    /// `--stop-timeout`, else 10 s). The VM's supervisor does it and
    /// answers once the VM ended.
    pub fn vm_stop(&self, query: &str, timeout: Option<Duration>) -> Result<VmRecord, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        let timeout = timeout.unwrap_or_else(|| {
            Duration::from_secs(
                rec.spec
                    .stop_timeout
                    .unwrap_or(super::DEFAULT_STOP_TIMEOUT)
                    .into(),
            )
        });
        let state = rec.run_state();
        if rec.status.restarting {
            return self.cancel_restart(&rec, Request::Stop { timeout_ms: 0 });
        }
        if !state.can_stop() {
            return Ok(rec);
        }
        if state == RunState::Paused {
            // A frozen guest cannot shut down: thaw it first.
            self.vm_pause(&rec.id, false)?;
        }
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.end_vm(&rec, Request::Stop { timeout_ms })
    }

    /// `ignis pause` / `ignis unpause`: freezes or thaws the vCPUs through
    /// the VMM (Firecracker `PATCH /vm`, QEMU `stop`/`cont`).
    pub fn vm_pause(&self, query: &str, pause: bool) -> Result<VmRecord, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        let state = rec.run_state();
        if !state.can_stop() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("VM {} is not running", rec.name),
            ));
        }
        if (state == RunState::Paused) == pause {
            return Ok(rec);
        }
        let control = super::driver(rec.spec.backend)?.control(&self.vm_dir(&rec.id));
        let res = if pause {
            control.pause()
        } else {
            control.resume()
        };
        res.map_err(|e| {
            Error::with_source(
                ErrorKind::Internal,
                format!(
                    "cannot {} VM {}",
                    if pause { "pause" } else { "unpause" },
                    rec.name
                ),
                e,
            )
        })?;
        let mut refused = None;
        let rec = self
            .update_status(&rec.id, |s| {
                let r = if pause { s.pause() } else { s.unpause() };
                refused = r.err();
            })?
            .ok_or_else(gone)?;
        match refused {
            // It ended meanwhile.
            Some(e) => Err(Error::wrap(ErrorKind::Conflict, e)),
            None => Ok(rec),
        }
    }

    /// `ignis kill`: stops the VMM at once.
    pub fn vm_kill(&self, query: &str) -> Result<VmRecord, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        if rec.status.restarting {
            return self.cancel_restart(&rec, Request::Kill {});
        }
        if !rec.run_state().can_kill() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("VM {} is not running", rec.name),
            ));
        }
        self.end_vm(&rec, Request::Kill {})
    }
}

/// Waits (bounded) until process `pid`, started at `start`, is gone.
fn wait_process_gone(pid: Option<u32>, start: Option<u64>) {
    let Some(pid) = pid else { return };
    let deadline = Instant::now() + KILL_GRACE;
    while start.is_some() && super::process_start(pid) == start && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn gone() -> Error {
    Error::new(
        ErrorKind::NotFound,
        "the VM was removed while it was ending",
    )
}
