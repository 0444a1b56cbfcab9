//! Typed VM state: which VMM, which acceleration, the agent's health, and
//! the run state machine with its guards (as youki's container status:
//! every transition checks one). Serialized exactly as the strings and
//! flags the records always held (`"backend": "qemu"`, `"state":
//! "running"`, `"paused": true`), so state written by earlier releases
//! loads unchanged.
//!
//! ```text
//!             start                 ready/agent
//!   Created ─────────> Running ───────────────> Running
//!     ^  (restorePending: resume     |   ^ unpause
//!     |   a snapshot instead)   pause v   |
//!     |                            Paused
//!     |  start again                  |
//!   Exited <──────────────────────────┴──── (VMM ended: exit code, reason)
//! ```

use serde::{Deserialize, Serialize};

use crate::VmStatus;

/// Which VMM runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Firecracker,
    Qemu,
    /// The test fake (a script speaking the guest init's console
    /// protocol): only builds with the `fake-vmm` feature run it.
    Fake,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firecracker => "firecracker",
            Self::Qemu => "qemu",
            Self::Fake => "fake",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend name that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl std::fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown backend '{}' (want auto, firecracker or qemu)",
            self.0
        )
    }
}

impl std::error::Error for UnknownBackend {}

impl std::str::FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "firecracker" => Ok(Self::Firecracker),
            "qemu" => Ok(Self::Qemu),
            "fake" => Ok(Self::Fake),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// What the user asked for: a backend, or `auto` (the host decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendRequest {
    #[default]
    Auto,
    Kind(BackendKind),
}

impl std::str::FromStr for BackendRequest {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "auto" => Ok(Self::Auto),
            other => other.parse().map(Self::Kind),
        }
    }
}

/// The network a VM is on (the record's `network.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// An address on the ignis bridge, NAT out, published ports.
    #[default]
    Bridge,
    None,
    /// A CNI network (`cni:NAME`): the plugins of its conflist attach the
    /// VM in a network namespace of its own; its IPAM picks the address.
    Cni,
    /// A macvtap on a host interface (`macvtap:eth1`): the VM on that
    /// interface's L2 segment with a MAC of its own (QEMU only).
    Macvtap,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::None => "none",
            Self::Cni => "cni",
            Self::Macvtap => "macvtap",
        }
    }
}

/// How the VMM executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The guest agent, as the supervisor sees it (absent without an agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not connected yet.
    Starting,
    /// Answers.
    Healthy,
    /// Stopped answering.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// Docker's container states, as VMs have them (the record's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Recorded, disk made, never started (or restarted after exit).
    Created,
    /// Its supervisor and VMM are running.
    Running,
    /// Its VMM ended; `exitCode` and `reason` tell how.
    Exited,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// The run state machine's states: [`VmState`] with the flags folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Never started, or reset for a start; `restore` resumes a snapshot.
    Created {
        restore: bool,
    },
    Running,
    /// Running, vCPUs frozen (`ignis pause`).
    Paused,
    Exited,
}

impl RunState {
    pub fn can_start(self) -> bool {
        matches!(self, Self::Created { .. } | Self::Exited)
    }
    pub fn can_stop(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
    pub fn can_kill(self) -> bool {
        self.can_stop()
    }
    pub fn can_pause(self) -> bool {
        self == Self::Running
    }
    pub fn can_unpause(self) -> bool {
        self == Self::Paused
    }
    /// A snapshot needs the guest running (not frozen by `pause`).
    pub fn can_snapshot(self) -> bool {
        self == Self::Running
    }
    /// Removing a running VM needs `--force` (it is killed first).
    pub fn can_remove(self, force: bool) -> bool {
        force || !self.can_stop()
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created { .. } => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Exited => "exited",
        })
    }
}

/// A transition its guard refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: RunState,
    pub action: &'static str,
}

impl std::fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot {} a VM that is {}", self.action, self.from)
    }
}

impl std::error::Error for IllegalTransition {}

/// What the supervisor knows once the VMM runs.
#[derive(Debug, Clone, Default)]
pub struct Started {
    pub supervisor_pid: u32,
    pub supervisor_start: Option<u64>,
    pub vmm_pid: u32,
    pub boot_id: Option<String>,
    pub started_at: i64,
    pub agent: bool,
    /// A resumed snapshot runs its workload already: ready at once.
    pub ready_ms: Option<u64>,
    pub confinement: Option<crate::Confinement>,
}

impl VmStatus {
    /// The state machine's view of this status.
    pub fn run_state(&self) -> RunState {
        match self.state.unwrap_or(VmState::Created) {
            VmState::Created => RunState::Created {
                restore: self.restore_pending,
            },
            VmState::Running if self.paused => RunState::Paused,
            VmState::Running => RunState::Running,
            VmState::Exited => RunState::Exited,
        }
    }

    fn guard(&self, ok: bool, action: &'static str) -> Result<(), IllegalTransition> {
        if ok {
            Ok(())
        } else {
            Err(IllegalTransition {
                from: self.run_state(),
                action,
            })
        }
    }

    /// A start begins: everything of the previous run goes, but a pending
    /// restore stays pending.
    pub fn begin_start(&mut self) -> Result<(), IllegalTransition> {
        self.guard(self.run_state().can_start(), "start")?;
        *self = VmStatus {
            state: Some(VmState::Created),
            restore_pending: self.restore_pending,
            ..Default::default()
        };
        Ok(())
    }

    /// The VMM runs (the supervisor says so). Keeps the start's timings.
    /// A pending restore is done: a later start boots (the disk moved on
    /// from the snapshot's).
    pub fn started(&mut self, s: Started) -> Result<(), IllegalTransition> {
        self.guard(matches!(self.run_state(), RunState::Created { .. }), "run")?;
        let timings = std::mem::take(&mut self.timings);
        *self = VmStatus {
            state: Some(VmState::Running),
            supervisor_pid: Some(s.supervisor_pid),
            supervisor_start: s.supervisor_start,
            vmm_pid: Some(s.vmm_pid),
            boot_id: s.boot_id,
            started_at: Some(s.started_at),
            health: s.agent.then_some(Health::Starting),
            ready_ms: s.ready_ms,
            confinement: s.confinement,
            timings,
            restart_count: self.restart_count,
            ..Default::default()
        };
        Ok(())
    }

    /// The VM ended on its own and its supervisor will start it again
    /// (after a back-off); `false`: it will not after all (a stop came).
    pub fn set_restarting(&mut self, on: bool) -> Result<(), IllegalTransition> {
        self.guard(self.run_state() == RunState::Exited, "restart")?;
        self.restarting = on;
        Ok(())
    }

    /// The supervisor starts the VM again: a restart, counted; the last
    /// run's details go.
    pub fn begin_restart(&mut self) -> Result<(), IllegalTransition> {
        self.guard(
            self.run_state() == RunState::Exited && self.restarting,
            "restart",
        )?;
        *self = VmStatus {
            state: Some(VmState::Created),
            restart_count: self.restart_count.saturating_add(1),
            ..Default::default()
        };
        Ok(())
    }

    /// The guest init reported ready after `ms`; `agent` says whether an
    /// agent will greet (without one there is no health to wait for).
    pub fn ready(&mut self, ms: u64, agent: bool) -> Result<(), IllegalTransition> {
        self.guard(self.state == Some(VmState::Running), "mark ready")?;
        self.ready_ms = Some(ms);
        if !agent && self.health == Some(Health::Starting) {
            self.health = None;
        }
        Ok(())
    }

    /// The agent's health changed (its first greeting after `first_ms`).
    pub fn health(&mut self, h: Health, first_ms: Option<u64>) -> Result<(), IllegalTransition> {
        self.guard(self.state == Some(VmState::Running), "record the health of")?;
        self.health = Some(h);
        if let Some(ms) = first_ms {
            self.agent_ms = Some(ms);
        }
        Ok(())
    }

    pub fn pause(&mut self) -> Result<(), IllegalTransition> {
        self.guard(self.run_state().can_pause(), "pause")?;
        self.paused = true;
        Ok(())
    }

    pub fn unpause(&mut self) -> Result<(), IllegalTransition> {
        self.guard(self.run_state().can_unpause(), "unpause")?;
        self.paused = false;
        Ok(())
    }

    /// The VMM ended (or never ran): the final word. A VM already exited
    /// keeps its first verdict (a reconcile may have settled it).
    pub fn exited(
        &mut self,
        at: i64,
        code: Option<i32>,
        reason: String,
    ) -> Result<(), IllegalTransition> {
        self.guard(self.run_state() != RunState::Exited, "end")?;
        self.state = Some(VmState::Exited);
        self.finished_at = Some(at);
        if code.is_some() {
            self.exit_code = code;
        }
        self.reason = Some(reason);
        self.vmm_pid = None;
        self.paused = false;
        self.health = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> VmStatus {
        let mut s = VmStatus::default();
        s.begin_start().unwrap();
        s.started(Started {
            vmm_pid: 7,
            agent: true,
            ..Default::default()
        })
        .unwrap();
        s
    }

    #[test]
    fn the_happy_path_and_its_flags() {
        let mut s = running();
        assert_eq!(s.run_state(), RunState::Running);
        assert_eq!(s.health, Some(Health::Starting));
        s.ready(12, true).unwrap();
        s.health(Health::Healthy, Some(30)).unwrap();
        assert_eq!((s.ready_ms, s.agent_ms), (Some(12), Some(30)));
        s.pause().unwrap();
        assert_eq!(s.run_state(), RunState::Paused);
        assert!(s.paused);
        s.unpause().unwrap();
        s.exited(5, Some(0), "stopped".into()).unwrap();
        assert_eq!(s.run_state(), RunState::Exited);
        assert_eq!((s.vmm_pid, s.health, s.paused), (None, None, false));
        s.begin_start().unwrap();
        assert_eq!(s.run_state(), RunState::Created { restore: false });
        assert_eq!(s.exit_code, None, "a new start forgets the last run");
    }

    #[test]
    fn a_restart_counts_and_keeps_counting_until_a_start() {
        let mut s = running();
        s.exited(5, Some(1), "workload exited".into()).unwrap();
        assert!(
            s.begin_restart().is_err(),
            "only when the supervisor restarts"
        );
        s.set_restarting(true).unwrap();
        s.begin_restart().unwrap();
        assert_eq!(s.run_state(), RunState::Created { restore: false });
        s.started(Started::default()).unwrap();
        assert_eq!((s.restart_count, s.restarting), (1, false));
        assert!(
            s.set_restarting(true).is_err(),
            "a running VM is not restarting"
        );
        s.exited(6, Some(1), "workload exited".into()).unwrap();
        s.set_restarting(true).unwrap();
        s.begin_restart().unwrap();
        assert_eq!(s.restart_count, 2);
        s.started(Started::default()).unwrap();
        s.exited(7, Some(0), "stopped".into()).unwrap();
        s.begin_start().unwrap();
        assert_eq!(s.restart_count, 0, "a start by the user begins a new count");
    }

    #[test]
    fn illegal_transitions_are_refused_and_change_nothing() {
        let mut created = VmStatus::default();
        for (what, r) in [
            ("pause", created.clone().pause()),
            ("unpause", created.clone().unpause()),
            ("ready", created.clone().ready(1, false)),
            ("health", created.clone().health(Health::Healthy, None)),
        ] {
            let e = r.unwrap_err();
            assert_eq!(e.from, RunState::Created { restore: false }, "{what}");
        }
        let mut r = running();
        let before = r.clone();
        assert_eq!(
            r.begin_start().unwrap_err().to_string(),
            "cannot start a VM that is running"
        );
        assert!(r.started(Started::default()).is_err());
        assert!(r.unpause().is_err());
        assert_eq!(r, before, "refused transitions change nothing");
        r.pause().unwrap();
        assert_eq!(
            r.pause().unwrap_err().to_string(),
            "cannot pause a VM that is paused"
        );
        let mut e = running();
        e.exited(1, Some(137), "killed".into()).unwrap();
        assert!(
            e.exited(2, Some(0), "again".into()).is_err(),
            "the first verdict stays"
        );
        assert_eq!(e.reason.as_deref(), Some("killed"));
        assert!(e.pause().is_err() && e.ready(1, true).is_err());
        created.begin_start().unwrap();
    }

    #[test]
    fn guards() {
        use RunState::*;
        let all = [Created { restore: true }, Running, Paused, Exited];
        let can = |f: fn(RunState) -> bool| all.iter().filter(|s| f(**s)).count();
        assert_eq!(can(RunState::can_start), 2);
        assert_eq!(can(RunState::can_stop), 2);
        assert_eq!(can(RunState::can_pause), 1);
        assert_eq!(can(RunState::can_snapshot), 1);
        assert!(!Paused.can_snapshot() && Running.can_snapshot());
        assert!(!Running.can_remove(false) && Running.can_remove(true) && Exited.can_remove(false));
    }

    #[test]
    fn restore_pending_survives_the_start_reset_and_ends_with_the_run() {
        let mut s = VmStatus {
            state: Some(VmState::Created),
            restore_pending: true,
            ..Default::default()
        };
        s.begin_start().unwrap();
        assert_eq!(s.run_state(), RunState::Created { restore: true });
        // A start that fails before the VMM runs leaves it pending.
        let mut failed = s.clone();
        failed.exited(2, None, "boot setup failed".into()).unwrap();
        assert!(failed.restore_pending);
        s.started(Started {
            started_at: 1,
            ..Default::default()
        })
        .unwrap();
        assert!(!s.restore_pending, "resumed once; later starts boot");
        s.exited(2, Some(0), "done".into()).unwrap();
        assert!(!s.restore_pending);
    }

    #[test]
    fn serialized_as_the_records_always_were() {
        assert_eq!(
            serde_json::to_string(&BackendKind::Qemu).unwrap(),
            "\"qemu\""
        );
        assert_eq!(serde_json::to_string(&Accel::Kvm).unwrap(), "\"kvm\"");
        assert_eq!(
            serde_json::to_string(&Health::Unhealthy).unwrap(),
            "\"unhealthy\""
        );
        assert_eq!(
            "firecracker".parse::<BackendKind>(),
            Ok(BackendKind::Firecracker)
        );
        assert_eq!("auto".parse::<BackendRequest>(), Ok(BackendRequest::Auto));
        assert!("xen".parse::<BackendRequest>().is_err());
    }
}
