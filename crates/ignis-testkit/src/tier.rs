//! What a live test ran or skipped, recorded for `scripts/test.sh`, which
//! prints its tier table from these records (not from which tools are
//! installed). Each record is one line appended to the file named by
//! `IGNIS_TEST_RECORDS`:
//!
//! ```text
//! <tier>\t<test>\t<passed|failed|skipped>\t<reason>
//! ```
//!
//! A test calls [`skip`] (which also prints the `skipped: ...` line) or
//! holds the [`Ran`] guard from [`ran`] while it runs: dropped normally it
//! records `passed`, dropped by a panic `failed`.

use std::io::Write;

/// The tiers of the README, by the names the table prints.
pub const E2FS: &str = "e2fsprogs";
pub const REGISTRY: &str = "live registry";
pub const KERNEL: &str = "Debian kernel package";
pub const FIRECRACKER: &str = "(a) Firecracker + test guest";
pub const QEMU: &str = "(b) Linux guest on QEMU";
pub const NET: &str = "live networking";
/// The API checked against its OpenAPI document by schemathesis.
pub const CONFORMANCE: &str = "API conformance";
/// The root-only parts of the fake-VMM and core tests (bridge preflight).
pub const ROOT: &str = "root-only wiring";

/// The env var naming the records file.
pub const RECORDS_VAR: &str = "IGNIS_TEST_RECORDS";

/// The name of the running test (nextest runs one per process; the thread
/// name is the test's path under `cargo test`).
fn test_name() -> String {
    let t = std::thread::current();
    match t.name() {
        Some(n) if n != "main" => n.to_string(),
        _ => std::env::args().nth(1).unwrap_or_else(|| "?".into()),
    }
}

fn record(tier: &str, outcome: &str, reason: &str) {
    let Some(path) = std::env::var_os(RECORDS_VAR) else {
        return;
    };
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!(
        "{}\t{}\t{outcome}\t{}\n",
        clean(tier),
        clean(&test_name()),
        clean(reason)
    );
    // One write of a short line with O_APPEND: records of concurrent
    // tests never interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Records that this test skips `tier` and why, and prints the skip line.
pub fn skip(tier: &str, reason: &str) {
    eprintln!("skipped: {reason}");
    record(tier, "skipped", reason);
}

/// Records the outcome of a test of `tier` when dropped.
#[must_use = "the outcome is recorded when the guard is dropped"]
pub struct Ran {
    tier: String,
    note: String,
}

impl Ran {
    /// Adds a note to the record (e.g. which parts ran).
    pub fn note(&mut self, note: &str) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note);
    }
}

impl Drop for Ran {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "failed"
        } else {
            "passed"
        };
        record(&self.tier, outcome, &self.note);
    }
}

/// This test runs `tier`: hold the guard until the end of the test.
pub fn ran(tier: &str) -> Ran {
    Ran {
        tier: tier.to_string(),
        note: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_passed_failed_and_skipped_lines() {
        let dir = std::env::temp_dir().join(format!("ignis-tier-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("records");
        // The only test of this binary that sets the variable.
        std::env::set_var(RECORDS_VAR, &file);
        skip(QEMU, "qemu missing\tthere");
        {
            let mut g = ran(NET);
            g.note("part a");
        }
        let r = std::panic::catch_unwind(|| {
            let _g = ran(REGISTRY);
            panic!("boom");
        });
        assert!(r.is_err());
        std::env::remove_var(RECORDS_VAR);
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0][0], QEMU);
        assert_eq!(
            (lines[0][2], lines[0][3]),
            ("skipped", "qemu missing there")
        );
        assert_eq!((lines[1][2], lines[1][3]), ("passed", "part a"));
        assert_eq!(lines[2][2], "failed");
        assert!(
            lines[0][1].contains("records_passed_failed"),
            "{}",
            lines[0][1]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
