//! The per-VM supervisor: a library function ([`Ignis::vm_supervise`]),
//! run by the thin `ignis-supervisor` launcher that `start` spawns. It
//! owns the VMM child, writes the serial console to `console.log`, serves
//! `attach.sock`, `agent.sock` and `control.sock`, records the run in the
//! VM's status (through the state machine's transitions), tells the
//! process that started it what happened (a pipe), and cleans up. It
//! outlives the CLI that started it; its VMM dies with it (a watcher
//! forked at its start kills the VMM when it dies, `ignis_vmm::reaper`),
//! so a killed supervisor never leaves a VM running unmanaged.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use ignis_api::{Health, Started};
use ignis_guest_config::{parse_report, Report};

use super::console::{serve_attach, Attached, Console};
use super::exit::{classify, Intent, Seen};
use super::{boot_id, process_start};
use crate::timing::Timeline;
use crate::{Error, ErrorKind, Ignis};

/// Held by the supervisor of a VM for its whole life (released by the
/// kernel when it dies).
pub(crate) const SUPERVISOR_LOCK: &str = "supervisor";

/// The supervisor's own runtime files in the VM's directory (the VMM's are
/// its driver's), removed when the VM stops.
pub(crate) const RUNTIME_FILES: &[&str] = &[
    "attach.sock",
    "initrd.img",
    super::control::SOCKET,
    super::AGENT_SOCKET,
];

/// How the launcher hands a VM to [`Ignis::vm_supervise`].
#[derive(Default)]
pub struct SuperviseOptions {
    /// The timeline of the command that started the VM (same clock).
    pub timeline: Timeline,
    /// When that command spawned the supervisor (`spawn` phase).
    pub spawned_ns: Option<u64>,
    /// Where to tell the starter that the status changed.
    pub notify: Option<std::fs::File>,
    /// The VMM's watcher, forked at the launcher's start while it was
    /// small; forked late (a full copy of the supervisor) when absent.
    pub watcher: Option<ignis_vmm::reaper::Watcher>,
}

/// The starter's end of the notification pipe: a line per status change
/// ("running", "ready", "health"); the starter re-reads the record. End
/// of file (the supervisor exited) is the last word.
pub(crate) struct Notifier(std::sync::Mutex<Option<std::fs::File>>);

impl Notifier {
    fn send(&self, what: &str) {
        let mut w = self.0.lock().expect("notify mutex");
        if let Some(f) = w.as_mut() {
            // The starter may be gone (its CLI was interrupted): stop telling.
            if writeln!(f, "{what}").is_err() {
                *w = None;
            }
        }
    }
}

/// Returns the heap's free memory to the kernel (glibc keeps it).
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn ms_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the control socket may do to the running VMM.
struct VmmHandle {
    pid: u32,
    ended: std::sync::atomic::AtomicBool,
    /// Asks the guest to shut down: through its agent when it answers,
    /// else the VMM's own button (Ctrl-Alt-Del, ACPI power button); false
    /// when it should be asked again until the VM ends.
    shutdown: Box<dyn Fn() -> bool + Send + Sync>,
}

impl super::control::Handler for VmmHandle {
    fn shutdown(&self) -> bool {
        (self.shutdown)()
    }
    fn kill(&self) {
        if let Some(p) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Ignis {
    /// Records what the agent mux observes (readiness, health) in the VM's
    /// status until the console ends.
    fn record_agent_events(
        &self,
        id: &str,
        events: std::sync::mpsc::Receiver<super::agent_mux::AgentEvent>,
        done: &std::sync::atomic::AtomicBool,
        timeline: &Timeline,
        launch_ns: u64,
        notify: &Notifier,
    ) {
        use super::agent_mux::AgentEvent;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok(ev) = events.recv_timeout(std::time::Duration::from_millis(100)) else {
                continue;
            };
            let r = self.update_status(id, |s| {
                let r = match &ev {
                    AgentEvent::Ready(d) => {
                        timeline.record_since("agent-ready", launch_ns);
                        crate::timing::merge(&mut s.timings, &timeline.phases());
                        s.health(
                            Health::Healthy,
                            Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        )
                    }
                    AgentEvent::Healthy => s.health(Health::Healthy, None),
                    AgentEvent::Unhealthy(why) => {
                        tracing::warn!(vm = id, why, "agent unhealthy");
                        s.health(Health::Unhealthy, None)
                    }
                };
                // The VM ended meanwhile: its exit stands.
                if let Err(e) = r {
                    tracing::debug!(vm = id, error = %e, "agent event after the end");
                }
            });
            match r {
                Err(e) => tracing::warn!(vm = id, error = %e, "cannot record the agent's health"),
                Ok(_) => notify.send("health"),
            }
        }
    }

    /// Records that the VM ended (or never ran) with `code` and `reason`.
    /// `by_user`: it ended by `ignis stop` or `ignis kill`.
    fn record_exit(
        &self,
        id: &str,
        code: Option<i32>,
        reason: &str,
        by_user: bool,
        timeline: &Timeline,
    ) {
        let r = self.update_status(id, |s| {
            crate::timing::merge(&mut s.timings, &timeline.phases());
            s.stopped_by_user = by_user;
            // Already settled (a reconcile after a host reboot): it stands.
            let _ = s.exited(crate::now(), code, reason.to_string());
        });
        if let Err(e) = r {
            tracing::warn!(vm = id, error = %e, "cannot record the VM's exit");
        }
    }

    /// Runs the supervisor for VM `id` until its VMM exits and its
    /// restart policy does not start it again. One per VM: a second one (a
    /// start racing another) leaves at once, changing nothing.
    pub fn vm_supervise(&self, id: &str, opts: SuperviseOptions) -> Result<(), Error> {
        let SuperviseOptions {
            timeline,
            spawned_ns,
            notify,
            watcher,
        } = opts;
        if let Some(at) = spawned_ns {
            timeline.record_since("spawn", at);
        }
        let notify = Notifier(std::sync::Mutex::new(notify));
        let Some(_only_supervisor) = self
            .store
            .try_object_lock(SUPERVISOR_LOCK, id)
            .map_err(|e| Error::internal("lock the VM", e))?
        else {
            tracing::info!(vm = id, "another supervisor runs this VM");
            if let Some(w) = watcher {
                w.dismiss();
            }
            return Ok(());
        };
        let dir = self.vm_dir(id);
        // What outlives one run of the VMM (a restart keeps them): the
        // control socket, the attach socket and its clients.
        let control_state = Arc::new(super::control::State::default());
        let current = Arc::new(Current::default());
        let attached = Arc::new(Attached::default());
        let (_, placeholder) = std::io::pipe().map_err(|e| Error::internal("create a pipe", e))?;
        let input = Arc::new(std::sync::Mutex::new(placeholder));
        let mut served = false;
        let mut watcher = watcher;
        let mut timeline = timeline;
        let mut backoff = Backoff::default();
        let result = loop {
            let Some(rec) = self.load_vm(id)? else {
                break Err(Error::new(ErrorKind::NotFound, format!("no VM {id}")));
            };
            if !served {
                served = true;
                if let Err(e) = super::control::serve(&dir, control_state.clone(), current.clone())
                {
                    tracing::warn!(vm = id, error = %e, "cannot serve control.sock; stop and kill fall back to signals");
                }
                if let Err(e) =
                    serve_attach(&dir.join("attach.sock"), attached.clone(), input.clone())
                {
                    tracing::warn!(vm = id, error = %e, "cannot serve attach.sock; ignis attach will not work");
                }
            }
            let run = Run {
                notify: &notify,
                control: &control_state,
                current: &current,
                attached: &attached,
                input: &input,
            };
            let end = match self.run_vmm(id, &rec, &timeline, watcher.take(), &run) {
                Ok(end) => end,
                Err(e) => break Err(e),
            };
            let again = control_state.intent() == Intent::None
                && (end.reboot
                    || rec
                        .spec
                        .restart
                        .restarts(end.code, rec.status.restart_count));
            if !again {
                break Ok(rec);
            }
            let delay = backoff.next(end.ran);
            tracing::info!(vm = id, reboot = end.reboot, ?delay, "restarting the VM");
            self.update_status(id, |s| {
                let _ = s.set_restarting(true);
            })?;
            notify.send("restarting");
            if !control_state.wait_request(delay) {
                // Stopped (or killed) while waiting: it stays down.
                self.update_status(id, |s| {
                    let _ = s.set_restarting(false);
                    s.stopped_by_user = true;
                })?;
                break Ok(rec);
            }
            let mut refused = None;
            match self.update_status(id, |s| refused = s.begin_restart().err())? {
                None => break Err(Error::new(ErrorKind::NotFound, format!("no VM {id}"))),
                Some(_) if refused.is_some() => {
                    tracing::info!(vm = id, "the VM changed meanwhile; not restarting");
                    break Ok(rec);
                }
                Some(_) => {}
            }
            timeline = Timeline::new();
        };
        // Attached clients see the end of the stream; whoever asked for
        // the stop or kill learns it is over.
        current.finish();
        attached.close_all();
        for f in KEPT_FILES {
            let _ = std::fs::remove_file(dir.join(f));
        }
        control_state.ended();
        let rec = result?;
        if rec.spec.auto_remove {
            // As Docker's --rm: its anonymous volumes go too.
            self.vm_remove_with(id, true, true)?;
        }
        Ok(())
    }

    /// One run of the VM's VMM, from its boot setup to its recorded exit
    /// and released host resources (but the sockets the supervisor keeps).
    fn run_vmm(
        &self,
        id: &str,
        rec: &ignis_api::VmRecord,
        timeline: &Timeline,
        watcher: Option<ignis_vmm::reaper::Watcher>,
        run: &Run<'_>,
    ) -> Result<RunEnd, Error> {
        let Run {
            notify,
            control: control_state,
            current,
            attached,
            input,
        } = *run;
        let prepare = timeline.phase("prepare");
        let dir = self.vm_dir(id);
        let fail = |reason: String| {
            self.record_exit(id, None, &reason, false, timeline);
            Error::new(ErrorKind::Internal, reason)
        };
        let driver = super::driver(rec.spec.backend).map_err(|e| fail(e.to_string()))?;
        let caps = driver.capabilities(rec.spec.accel);
        prepare.end();
        let phase = timeline.phase("initramfs");
        let mut spec = self
            .boot_spec(rec, driver.as_ref())
            .map_err(|e| fail(format!("boot setup failed: {e}")))?;
        phase.end();
        let phase = timeline.phase("confine");
        let (confine, confinement) = self.vmm_confinement(rec, driver.as_ref());
        spec.confine = confine;
        phase.end();
        // From here on a failure releases what was set up for the VMM.
        let fail = |reason: String| {
            self.release_run_resources(rec);
            fail(reason)
        };
        let (reader, writer) =
            std::io::pipe().map_err(|e| fail(format!("cannot create the console pipe: {e}")))?;
        let (input_r, input_w) =
            std::io::pipe().map_err(|e| fail(format!("cannot create the console pipe: {e}")))?;
        *input.lock().expect("input mutex") = input_w;
        let phase = timeline.phase("network");
        self.prepare_network(rec)
            .map_err(|e| fail(format!("network setup failed: {e}")))?;
        // The host resolves only on loopback: a relay on the gateway for
        // this run (dropped with it).
        let dns = super::boot::dns_plan(rec);
        let _dns_relay = match (dns.forward_to.is_empty(), dns.nameservers.first()) {
            (false, Some(gw)) => {
                match ignis_net::dns::Forwarder::start((*gw, 53).into(), dns.forward_to.clone()) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(vm = id, error = %e, "cannot relay DNS on the gateway; the guest has no DNS (use --dns)");
                        None
                    }
                }
            }
            _ => None,
        };
        // `-p [::1]:...`: relayed here while the VM runs (no DNAT for it).
        let _loopback6 = self.loopback6_proxies(rec);
        phase.end();
        // Firecracker's own metrics, read from their FIFO while it runs.
        let _vmm_metrics = (rec.spec.backend == ignis_api::BackendKind::Firecracker)
            .then(|| ignis_vmm::firecracker::metrics::Collector::start(&dir))
            .and_then(|r| {
                r.map_err(|e| {
                    tracing::warn!(vm = id, error = %e, "cannot collect Firecracker's metrics");
                })
                .ok()
            });
        let restored = spec.restore.is_some();
        let started = Instant::now();
        let launch_ns = crate::timing::now_ns();
        let phase = timeline.phase(if restored { "load" } else { "vmm-spawn" });
        let mut child = match driver.launch(&spec, input_r.into(), writer.into()) {
            Ok(c) => c,
            Err(e) => {
                if let Some(w) = watcher {
                    w.dismiss();
                }
                return Err(fail(format!("cannot start {}: {e}", rec.spec.backend)));
            }
        };
        phase.end();
        // Into its cgroup, in the background: the migration waits for an
        // RCU grace period while the guest boots (see ignis_vmm::cgroup).
        let cgroup_join = spec.confine.cgroup.clone().map(|cg| {
            let pid = child.id();
            std::thread::spawn(move || cg.add(pid))
        });
        // The VMM dies with this supervisor even once it dropped its
        // credentials (which clears its own parent-death signal).
        let armed = match watcher {
            Some(w) => w.arm(child.id()),
            None => ignis_vmm::reaper::spawn(child.id()),
        };
        let mut reaper = match armed {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(vm = id, error = %e, "cannot fork the VMM's watcher");
                None
            }
        };
        crate::fault::point("supervise:vmm-started");
        let phase = timeline.phase("attach-network");
        if let Err(e) = self.attach_network(rec) {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(r) = reaper.take() {
                r.dismiss();
            }
            return Err(fail(format!("network setup failed: {e}")));
        }
        phase.end();
        // A clone of a guest without the agent (the Firecracker test
        // guest) has none either.
        let has_agent = caps.agent.is_some()
            && !(restored && rec.spec.snapshot.as_ref().is_some_and(|o| !o.agent));
        let handle = Arc::new(VmmHandle {
            pid: child.id(),
            ended: std::sync::atomic::AtomicBool::new(false),
            shutdown: {
                let (root, rec, dir) = (self.root().to_path_buf(), rec.clone(), dir.clone());
                let control = driver.control(&dir);
                let control = std::sync::Mutex::new(control);
                // A system image's init may not listen yet (systemd
                // starting: signals to PID 1 before its handlers, the power
                // button before logind): ask again until it goes.
                let again = rec.spec.mode == ignis_api::RunMode::System;
                Box::new(move || {
                    // Through the agent first (sync, then the workload's
                    // or the image init's stop signal).
                    let by_agent = has_agent && super::agent::shutdown_at(&root, &rec).is_ok();
                    if !by_agent {
                        if let Err(e) = control.lock().expect("control").shutdown() {
                            tracing::debug!(error = %e, "graceful shutdown request failed; the stop will kill");
                        }
                    }
                    !again
                })
            },
        });
        current.set(Some(handle.clone()));
        // A stop that came while this run was being set up.
        match control_state.intent() {
            Intent::None => {}
            Intent::Stop => {
                use super::control::Handler;
                handle.shutdown();
            }
            Intent::Kill => {
                use super::control::Handler;
                handle.kill();
            }
        }
        let me = std::process::id();
        let phase_running = crate::timing::now_ns();
        self.update_status(id, |s| {
            let _ = s.started(Started {
                supervisor_pid: me,
                supervisor_start: process_start(me),
                vmm_pid: child.id(),
                boot_id: boot_id(),
                started_at: crate::now(),
                agent: has_agent,
                // A resumed snapshot is already running its workload.
                ready_ms: restored.then(|| ms_since(started)),
                confinement: confinement.clone(),
            });
            timeline.record_since("vmm-running", phase_running);
            if restored {
                timeline.record_since("guest-ready", launch_ns);
            }
            crate::timing::merge(&mut s.timings, &timeline.phases());
        })?;
        notify.send("running");
        let (events_tx, events) = std::sync::mpsc::channel();
        let mux = if has_agent {
            let (d, vm_dir) = (super::driver(rec.spec.backend)?, dir.clone());
            match super::agent_mux::Mux::start(move || d.connect_agent(&vm_dir), &dir, events_tx) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(vm = id, error = %e, "cannot serve agent.sock; exec/cp will not work");
                    None
                }
            }
        } else {
            None
        };
        // Setup is over: give back what it took (a supervisor stays
        // resident for the VM's whole life).
        self.store.db().shrink_memory();
        trim_heap();
        let console_done = std::sync::atomic::AtomicBool::new(false);
        tracing::info!(
            vm = id,
            backend = %rec.spec.backend,
            pid = child.id(),
            "VMM started"
        );

        let mut console = Console::open(&dir.join("console.log"))
            .map_err(|e| Error::internal("open console.log", e))?;
        let mut reader = reader;
        let mut chunk = vec![0u8; 16 << 10];
        let mut partial: Vec<u8> = Vec::new();
        let mut seen = Seen::default();
        std::thread::scope(|scope| -> Result<(), Error> {
            let console_done = &console_done;
            scope.spawn(move || {
                self.record_agent_events(id, events, console_done, timeline, launch_ns, notify)
            });
            let result = (|| -> Result<(), Error> {
                loop {
                    let n = match std::io::Read::read(&mut reader, &mut chunk) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    let bytes = &chunk[..n];
                    // Serial consoles end lines with \r\n; the log keeps \n.
                    let cleaned: Vec<u8> = bytes.iter().copied().filter(|b| *b != b'\r').collect();
                    console.write(&cleaned);
                    attached.broadcast(bytes);
                    partial.extend_from_slice(&cleaned);
                    while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=pos).collect();
                        let line = String::from_utf8_lossy(&line);
                        seen.kernel_line(&line);
                        match parse_report(&line) {
                            Some(Report::Ready { agent }) => {
                                let ms = ms_since(started);
                                timeline.record_since("guest-ready", launch_ns);
                                self.update_status(id, |s| {
                                    // A guest without ignis-init has no agent to wait for.
                                    let _ = s.ready(ms, agent);
                                    crate::timing::merge(&mut s.timings, &timeline.phases());
                                })?;
                                notify.send("ready");
                            }
                            Some(Report::Exit(code)) => seen.report = Some(code),
                            Some(Report::Error(m)) => seen.init_error = Some(m),
                            None => {}
                        }
                    }
                    // Bound the line buffer (a guest printing without newlines).
                    if partial.len() > 64 << 10 {
                        partial.clear();
                    }
                }
                Ok(())
            })();
            console_done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        })?;
        if let Some(m) = &mux {
            m.stop();
        }
        if let Some(h) = cgroup_join {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(vm = id, error = %e, "the VMM could not be moved into its cgroup")
                }
                Err(_) => tracing::warn!(vm = id, "the cgroup thread panicked"),
            }
        }
        let status = child
            .wait()
            .map_err(|e| Error::internal("wait for the VMM", e))?;
        handle
            .ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        current.set(None);
        if let Some(r) = reaper {
            r.dismiss();
        }
        use std::os::unix::process::ExitStatusExt;
        seen.signal = status.signal();
        seen.success = status.success();
        seen.code = status.code();
        let intent = control_state.intent();
        let (code, reason) = classify(&seen, intent, &rec.name);
        self.record_exit(id, code, &reason, intent != Intent::None, timeline);
        tracing::info!(vm = id, ?code, reason, "VM exited");
        self.release_run_resources(rec);
        Ok(RunEnd {
            code,
            reboot: super::exit::rebooted(&seen, intent),
            ran: started.elapsed(),
        })
    }
}

/// The supervisor's sockets, kept from one run of the VMM to the next
/// (removed when the supervisor ends).
const KEPT_FILES: &[&str] = &["attach.sock", super::control::SOCKET];

impl Ignis {
    /// Releases what one run of the VMM held, but the sockets the
    /// supervisor keeps across restarts.
    fn release_run_resources(&self, rec: &ignis_api::VmRecord) {
        self.release_host_resources_but(rec, KEPT_FILES);
    }
}

/// What the loop of [`Ignis::vm_supervise`] shares with each run.
#[derive(Clone, Copy)]
struct Run<'a> {
    notify: &'a Notifier,
    control: &'a Arc<super::control::State>,
    current: &'a Arc<Current>,
    attached: &'a Arc<Attached>,
    input: &'a Arc<std::sync::Mutex<std::io::PipeWriter>>,
}

/// How one run ended.
struct RunEnd {
    code: Option<i32>,
    /// The guest rebooted (a restart whatever the policy).
    reboot: bool,
    ran: std::time::Duration,
}

/// The VMM of the current run, if one runs: what `control.sock` acts on.
#[derive(Default)]
struct Current {
    vmm: std::sync::Mutex<Option<Arc<VmmHandle>>>,
    /// The supervisor is done: no run will come.
    finished: std::sync::atomic::AtomicBool,
}

impl Current {
    fn set(&self, h: Option<Arc<VmmHandle>>) {
        *self.vmm.lock().expect("current mutex") = h;
    }
    fn get(&self) -> Option<Arc<VmmHandle>> {
        self.vmm.lock().expect("current mutex").clone()
    }
    fn finish(&self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl super::control::Handler for Current {
    fn shutdown(&self) -> bool {
        self.get().is_none_or(|h| h.shutdown())
    }
    fn kill(&self) {
        if let Some(h) = self.get() {
            h.kill();
        }
    }
    /// Between two runs nothing has ended yet: the supervisor sees the
    /// request and stays down.
    fn ended(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::SeqCst)
            || self.get().is_some_and(|h| h.ended())
    }
}

/// Docker's restart back-off: 100 ms, doubling up to a minute; back to
/// 100 ms after a run of ten seconds or more.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX: std::time::Duration = std::time::Duration::from_secs(60);
    const RESET_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

    fn next(&mut self, ran: std::time::Duration) -> std::time::Duration {
        if ran >= Self::RESET_AFTER {
            self.failures = 0;
        }
        let d = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_back_off_doubles_up_to_a_minute_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(5);
        let d: Vec<u64> = (0..4)
            .map(|_| u64::try_from(b.next(quick).as_millis()).unwrap())
            .collect();
        assert_eq!(d, [100, 200, 400, 800]);
        for _ in 0..20 {
            b.next(quick);
        }
        assert_eq!(b.next(quick), Duration::from_secs(60));
        assert_eq!(b.next(Duration::from_secs(10)), Duration::from_millis(100));
    }
}
