//! Progress bars on a terminal, nothing otherwise (Docker's convention:
//! scripts and CI logs get no carriage-return noise).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars drawn on stderr when `enabled` (the CLI passes "stderr is a TTY
    /// and not --quiet").
    pub fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub fn hidden() -> Self {
        Self { multi: None }
    }

    pub fn bar(&self, msg: &str, total: u64) -> ProgressBar {
        let Some(m) = &self.multi else {
            return ProgressBar::hidden();
        };
        let pb = m.add(ProgressBar::new(total));
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:<24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        pb.set_message(msg.to_string());
        pb
    }

    pub fn spinner(&self, msg: &str) -> ProgressBar {
        let Some(m) = &self.multi else {
            return ProgressBar::hidden();
        };
        let pb = m.add(ProgressBar::new_spinner());
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }
}
