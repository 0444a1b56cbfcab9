//! Where the time of a start goes: phases on one clock shared by every
//! process that takes part (the CLI or daemon that creates and starts the
//! VM, the supervisor that boots it), recorded in the VM's status
//! (`inspect`, `--timings`) and emitted as tracing spans.
//!
//! The clock is CLOCK_MONOTONIC: the same for all processes of the host, so
//! the supervisor continues the timeline of the command that started it
//! from the origin it is handed.

use std::sync::Mutex;

use ignis_api::PhaseTiming;

/// Nanoseconds on the host's monotonic clock.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// The phases of one command, relative to its origin.
#[derive(Debug)]
pub struct Timeline {
    origin_ns: u64,
    phases: Mutex<Vec<PhaseTiming>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// A timeline that starts now.
    pub fn new() -> Self {
        Self::starting_at(now_ns())
    }

    /// A timeline that started at `origin_ns` (another process's origin).
    pub fn starting_at(origin_ns: u64) -> Self {
        Self {
            origin_ns,
            phases: Mutex::new(Vec::new()),
        }
    }

    pub fn origin_ns(&self) -> u64 {
        self.origin_ns
    }

    /// Starts a phase; it ends when the guard is dropped (or
    /// [`Phase::end`]ed). A tracing span of the same name covers it.
    pub fn phase(&self, name: &'static str) -> Phase<'_> {
        Phase {
            timeline: self,
            name,
            start_ns: now_ns(),
            span: tracing::debug_span!("phase", name).entered(),
            done: false,
        }
    }

    /// Runs `f` as the phase `name`.
    pub fn time<T>(&self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let _p = self.phase(name);
        f()
    }

    /// Records a phase that began at `start_ns` and ends now.
    pub fn record_since(&self, name: &str, start_ns: u64) {
        self.record(name, start_ns, now_ns());
    }

    /// Records a phase from `start_ns` to `end_ns`.
    pub fn record(&self, name: &str, start_ns: u64, end_ns: u64) {
        let at_us = start_ns.saturating_sub(self.origin_ns) / 1000;
        let took_us = end_ns.saturating_sub(start_ns) / 1000;
        tracing::debug!(phase = name, at_us, took_us, "phase done");
        self.phases
            .lock()
            .expect("timeline mutex")
            .push(PhaseTiming {
                phase: name.to_string(),
                at_us,
                took_us,
            });
    }

    /// The phases recorded so far, in the order they ended.
    pub fn phases(&self) -> Vec<PhaseTiming> {
        self.phases.lock().expect("timeline mutex").clone()
    }

    /// Appends `phases` recorded by another process on the same clock.
    pub fn extend(&self, phases: impl IntoIterator<Item = PhaseTiming>) {
        self.phases.lock().expect("timeline mutex").extend(phases);
    }
}

/// A phase in progress.
pub struct Phase<'a> {
    timeline: &'a Timeline,
    name: &'static str,
    start_ns: u64,
    span: tracing::span::EnteredSpan,
    done: bool,
}

impl Phase<'_> {
    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.timeline.record_since(self.name, self.start_ns);
        }
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        self.finish();
        let _ = &self.span;
    }
}

/// Merges `new` into `into`: a phase recorded again replaces its earlier
/// value; the result is ordered by start.
pub fn merge(into: &mut Vec<PhaseTiming>, new: &[PhaseTiming]) {
    for p in new {
        into.retain(|q| q.phase != p.phase);
        into.push(p.clone());
    }
    into.sort_by_key(|p| (p.at_us, std::cmp::Reverse(p.took_us)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_relative_to_the_origin_and_merge_by_name() {
        let origin = now_ns();
        let t = Timeline::starting_at(origin - 5_000_000);
        {
            let _p = t.phase("disk");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        t.record("spawn", origin, origin + 3_000_000);
        let phases = t.phases();
        assert_eq!(phases[0].phase, "disk");
        assert!(phases[0].at_us >= 5_000, "{phases:?}");
        assert!(phases[0].took_us >= 2_000, "{phases:?}");
        assert_eq!(phases[1].at_us, 5_000);
        assert_eq!(phases[1].took_us, 3_000);
        let mut all = vec![PhaseTiming {
            phase: "spawn".into(),
            at_us: 1,
            took_us: 1,
        }];
        merge(&mut all, &phases);
        assert_eq!(all.len(), 2, "spawn replaced: {all:?}");
        assert_eq!(all[0].phase, "spawn");
        assert_eq!(all[0].at_us, 5_000);
    }
}
