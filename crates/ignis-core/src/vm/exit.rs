//! How a VM ended, decided from what the supervisor saw: the guest init's
//! report (an exit code, or an error), how the VMM process ended, and what
//! was asked of it (a stop, a kill). A pure function, tested here.

/// What was asked of the VM before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Intent {
    #[default]
    None,
    /// `ignis stop`: shut down, killed after its timeout.
    Stop,
    /// `ignis kill` / `rm -f`.
    Kill,
}

/// What the supervisor saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// `IGNIS-INIT exit N`.
    pub report: Option<i32>,
    /// `IGNIS-INIT error ...`.
    pub init_error: Option<String>,
    /// The VMM was killed by this signal.
    pub signal: Option<i32>,
    /// The VMM exited 0.
    pub success: bool,
    /// The VMM's exit code when it exited on its own.
    pub code: Option<i32>,
    /// The guest kernel said it restarts (`reboot: Restarting system`).
    pub restarting: bool,
    /// The guest kernel panicked (its first panic line).
    pub panic: Option<String>,
}

/// What the guest kernel prints when it restarts (`kernel_restart`; a
/// panic's emergency restart prints no such line).
const KERNEL_RESTART: &str = "reboot: Restarting system";
const KERNEL_PANIC: &str = "Kernel panic - not syncing: ";

impl Seen {
    /// Notes what a console line says of the guest kernel.
    pub fn kernel_line(&mut self, line: &str) {
        if line.contains(KERNEL_RESTART) {
            self.restarting = true;
        } else if let Some(at) = line.find(KERNEL_PANIC) {
            if self.panic.is_none() {
                self.panic = Some(line[at + KERNEL_PANIC.len()..].trim().to_string());
            }
        }
    }
}

/// Whether the guest rebooted itself (its init never reported an end; the
/// kernel restarted with nobody asking): a reboot restarts the VM.
pub(crate) fn rebooted(seen: &Seen, intent: Intent) -> bool {
    seen.restarting
        && seen.report.is_none()
        && seen.init_error.is_none()
        && seen.signal.is_none()
        && seen.panic.is_none()
        && intent == Intent::None
}

/// The exit code and the reason recorded for the VM (`inspect`, `ps`).
pub(crate) fn classify(seen: &Seen, intent: Intent, vm: &str) -> (Option<i32>, String) {
    match (seen.report, &seen.init_error, seen.signal) {
        (_, Some(m), _) => (
            seen.report.or(Some(ignis_guest_config::INIT_FAILED)),
            format!("guest init failed: {m}"),
        ),
        (Some(c), None, _) if intent == Intent::Stop => (Some(c), "stopped".into()),
        (Some(c), None, _) => (Some(c), "workload exited".into()),
        (None, None, Some(_)) if intent == Intent::Kill => (Some(137), "killed".into()),
        (None, None, Some(_)) if intent == Intent::Stop => {
            (Some(137), "stopped (killed after the timeout)".into())
        }
        (None, None, Some(sig)) => (Some(128 + sig), format!("VMM killed by signal {sig}")),
        (None, None, None) if seen.panic.is_some() && intent == Intent::None => (
            None,
            format!(
                "guest kernel panic: {}; see `ignis logs {vm}`",
                seen.panic.as_deref().unwrap_or_default()
            ),
        ),
        (None, None, None) if rebooted(seen, intent) => (Some(0), "guest rebooted".into()),
        // System images report no exit code: a clean VMM exit is the guest
        // powering off.
        (None, None, None) if seen.success && intent == Intent::Stop => (Some(0), "stopped".into()),
        (None, None, None) if seen.success => (Some(0), "guest powered off".into()),
        (None, None, None) => (
            seen.code,
            format!(
                "VMM exited ({}) without a report from the guest; see `ignis logs {vm}`",
                seen.code
                    .map(|c| format!("exit status: {c}"))
                    .unwrap_or_else(|| "no status".into())
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(report: Option<i32>, signal: Option<i32>, success: bool) -> Seen {
        Seen {
            report,
            signal,
            success,
            code: if success {
                Some(0)
            } else {
                signal.map_or(Some(1), |_| None)
            },
            ..Default::default()
        }
    }

    #[test]
    fn every_way_a_vm_ends() {
        let c = |s: &Seen, i| classify(s, i, "web");
        // The workload's own exit code, asked or not.
        assert_eq!(
            c(&seen(Some(3), None, true), Intent::None),
            (Some(3), "workload exited".into())
        );
        assert_eq!(
            c(&seen(Some(0), None, true), Intent::Stop),
            (Some(0), "stopped".into())
        );
        // Killed: by request, after a stop's timeout, or by someone else.
        assert_eq!(
            c(&seen(None, Some(9), false), Intent::Kill),
            (Some(137), "killed".into())
        );
        assert_eq!(
            c(&seen(None, Some(9), false), Intent::Stop).1,
            "stopped (killed after the timeout)"
        );
        assert_eq!(
            c(&seen(None, Some(15), false), Intent::None),
            (Some(143), "VMM killed by signal 15".into())
        );
        // A system image powering off (no report), asked or on its own.
        assert_eq!(
            c(&seen(None, None, true), Intent::Stop),
            (Some(0), "stopped".into())
        );
        assert_eq!(
            c(&seen(None, None, true), Intent::None),
            (Some(0), "guest powered off".into())
        );
        // The VMM failing without a word from the guest.
        let (code, why) = c(&seen(None, None, false), Intent::None);
        assert_eq!(code, Some(1));
        assert!(
            why.contains("without a report") && why.contains("ignis logs web"),
            "{why}"
        );
        // A reboot nobody asked for restarts; a panic is a crash.
        let mut r = seen(None, None, true);
        r.kernel_line("[   12.3] reboot: Restarting system\n");
        assert_eq!(c(&r, Intent::None), (Some(0), "guest rebooted".into()));
        assert!(rebooted(&r, Intent::None));
        assert!(!rebooted(&r, Intent::Stop), "a stop that reboots is a stop");
        assert_eq!(c(&r, Intent::Stop), (Some(0), "stopped".into()));
        let mut app = r.clone();
        app.report = Some(0);
        assert!(
            !rebooted(&app, Intent::None),
            "ignis-init powers off with a reset"
        );
        let mut p = seen(None, None, true);
        p.kernel_line("[    1.0] Kernel panic - not syncing: Attempted to kill init!");
        let (code, why) = c(&p, Intent::None);
        assert_eq!(code, None);
        assert!(
            why.starts_with("guest kernel panic: Attempted to kill init!"),
            "{why}"
        );
        assert!(!rebooted(&p, Intent::None));
        // The init's error wins, with its code or the init's own.
        let mut e = seen(None, None, true);
        e.init_error = Some("no /sbin/init".into());
        assert_eq!(
            c(&e, Intent::Stop),
            (
                Some(ignis_guest_config::INIT_FAILED),
                "guest init failed: no /sbin/init".into()
            )
        );
    }
}
