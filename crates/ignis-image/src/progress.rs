//! Progress bars on a terminal, nothing otherwise (Docker's convention:
//! scripts and CI logs get no carriage-return noise), or reported as
//! [`ProgressEvent`]s (the daemon streams them to a remote CLI, which
//! draws the same bars with [`Progress::show`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ignis_api::ProgressEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where reported progress goes.
pub type Sink = Box<dyn Fn(&ProgressEvent) + Send + Sync>;

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    report: Option<Arc<Reporter>>,
}

/// The bars of a reported operation, polled for their moves.
struct Reporter {
    sink: Sink,
    bars: Mutex<Vec<Watched>>,
    next: AtomicU64,
    polling: AtomicBool,
}

struct Watched {
    id: u64,
    status: String,
    total: Option<u64>,
    bar: ProgressBar,
    sent: Option<u64>,
}

/// How often reported bars are looked at.
const POLL: Duration = Duration::from_millis(100);

impl Reporter {
    /// Sends what moved since the last look; forgets finished bars.
    fn poll(&self) {
        let mut bars = self.bars.lock().expect("progress bars");
        bars.retain_mut(|w| {
            let current = w.bar.position();
            let done = w.bar.is_finished();
            if w.sent != Some(current) || done {
                w.sent = Some(current);
                (self.sink)(&ProgressEvent {
                    id: w.id,
                    status: w.status.clone(),
                    current,
                    total: w.total,
                    done,
                });
            }
            !done
        });
    }

    fn watch(self: &Arc<Self>, status: &str, total: Option<u64>) -> ProgressBar {
        let bar = ProgressBar::hidden();
        if let Some(t) = total {
            bar.set_length(t);
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        self.bars.lock().expect("progress bars").push(Watched {
            id,
            status: status.to_string(),
            total,
            bar: bar.clone(),
            sent: None,
        });
        self.poll();
        if !self.polling.swap(true, Ordering::SeqCst) {
            let weak: Weak<Self> = Arc::downgrade(self);
            std::thread::spawn(move || loop {
                std::thread::sleep(POLL);
                match weak.upgrade() {
                    Some(r) => r.poll(),
                    None => break,
                }
            });
        }
        bar
    }
}

fn bar_style(pb: &ProgressBar) {
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:<24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
}

impl Progress {
    /// Bars drawn on stderr when `enabled` (the CLI passes "stderr is a TTY
    /// and not --quiet").
    pub fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            report: None,
        }
    }

    pub fn hidden() -> Self {
        Self {
            multi: None,
            report: None,
        }
    }

    /// Progress reported to `sink` as bars move (polled; [`Progress::flush`]
    /// sends the last moves).
    pub fn reporting(sink: Sink) -> Self {
        Self {
            multi: None,
            report: Some(Arc::new(Reporter {
                sink,
                bars: Mutex::new(Vec::new()),
                next: AtomicU64::new(0),
                polling: AtomicBool::new(false),
            })),
        }
    }

    /// Sends what moved since the last report (before the operation's
    /// result, so no bar is left behind).
    pub fn flush(&self) {
        if let Some(r) = &self.report {
            r.poll();
        }
    }

    pub fn bar(&self, msg: &str, total: u64) -> ProgressBar {
        if let Some(r) = &self.report {
            return r.watch(msg, Some(total));
        }
        let Some(m) = &self.multi else {
            return ProgressBar::hidden();
        };
        let pb = m.add(ProgressBar::new(total));
        bar_style(&pb);
        pb.set_message(msg.to_string());
        pb
    }

    pub fn spinner(&self, msg: &str) -> ProgressBar {
        if let Some(r) = &self.report {
            return r.watch(msg, None);
        }
        let Some(m) = &self.multi else {
            return ProgressBar::hidden();
        };
        let pb = m.add(ProgressBar::new_spinner());
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }
}

/// Draws reported progress as [`Progress::new`] draws its own bars: the
/// remote CLI's face of a daemon's pull or import.
pub struct Shown {
    progress: Progress,
    bars: std::collections::HashMap<u64, ProgressBar>,
}

impl Progress {
    /// Draws [`ProgressEvent`]s on this terminal (nothing unless `enabled`).
    pub fn show(enabled: bool) -> Shown {
        Shown {
            progress: Self::new(enabled),
            bars: Default::default(),
        }
    }
}

impl Shown {
    pub fn event(&mut self, e: &ProgressEvent) {
        let p = &self.progress;
        let bar = self.bars.entry(e.id).or_insert_with(|| match e.total {
            Some(t) => p.bar(&e.status, t),
            None => p.spinner(&e.status),
        });
        bar.set_position(e.current);
        if e.done {
            bar.finish();
            self.bars.remove(&e.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_bars_send_their_moves_and_their_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = Progress::reporting(Box::new(move |e| s.lock().unwrap().push(e.clone())));
        let bar = p.bar("pull 0123456789ab", 100);
        bar.inc(40);
        p.flush();
        bar.inc(60);
        bar.finish();
        let spin = p.spinner("build ext4 image disk");
        spin.finish();
        p.flush();
        let seen = seen.lock().unwrap().clone();
        let ev = |id, status: &str, current, total, done| ProgressEvent {
            id,
            status: status.into(),
            current,
            total,
            done,
        };
        // The poller may add a line between; these come in this order.
        let want = [
            ev(0, "pull 0123456789ab", 0, Some(100), false),
            ev(0, "pull 0123456789ab", 40, Some(100), false),
            ev(0, "pull 0123456789ab", 100, Some(100), true),
            ev(1, "build ext4 image disk", 0, None, false),
            ev(1, "build ext4 image disk", 0, None, true),
        ];
        let mut it = seen.iter();
        for w in &want {
            assert!(it.any(|e| e == w), "{w:?} missing in order: {seen:?}");
        }
        assert_eq!(seen.last(), want.last());
    }
}
