//! `ignis-supervisor`: the thin launcher of one VM's supervisor
//! ([`ignis_core::Ignis::vm_supervise`]). `ignis start`/`run` (and the
//! daemon, and any program linking ignis-core) spawn it; it is not for
//! people to run.
//!
//!   ignis-supervisor --root DIR --vm ID [--subnet CIDR] [--subnet6 CIDR|off] [--origin NS]
//!                    [--phases JSON] [--spawned NS] [--notify-fd N]
//!
//! A supervisor lives as long as its VM, once per VM: it stays small. Its
//! VMM's watcher is forked first, before anything else is allocated, and
//! glibc keeps one malloc arena (a supervisor's threads mostly sleep).

use std::os::fd::FromRawFd;
use std::path::PathBuf;

use ignis_core::vm::SuperviseOptions;
use ignis_core::{Ignis, Options};

struct Args {
    root: PathBuf,
    vm: String,
    subnet: Option<String>,
    subnet6: Option<String>,
    origin: Option<u64>,
    spawned: Option<u64>,
    phases: Vec<ignis_api::PhaseTiming>,
    notify_fd: Option<i32>,
}

/// Why the command line was refused (the starter built it: a bug there).
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    #[error("{0} needs a value")]
    NoValue(String),
    #[error("{0}: not a number")]
    NotANumber(String),
    #[error("--phases")]
    Phases(#[source] serde_json::Error),
    #[error("{0}: not a descriptor")]
    NotADescriptor(String),
    #[error("unknown argument {0}")]
    Unknown(String),
    #[error("{0} is required")]
    Required(&'static str),
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, ArgsError> {
    let (mut root, mut vm) = (None, None);
    let mut a = Args {
        root: PathBuf::new(),
        vm: String::new(),
        subnet: None,
        subnet6: None,
        origin: None,
        spawned: None,
        phases: Vec::new(),
        notify_fd: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| ArgsError::NoValue(flag.clone()));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| ArgsError::NotANumber(flag.clone()))
        };
        match flag.as_str() {
            "--root" => root = Some(PathBuf::from(value()?)),
            "--vm" => vm = Some(value()?),
            "--subnet" => a.subnet = Some(value()?),
            "--subnet6" => a.subnet6 = Some(value()?),
            "--origin" => a.origin = Some(number(value()?)?),
            "--spawned" => a.spawned = Some(number(value()?)?),
            "--phases" => a.phases = serde_json::from_str(&value()?).map_err(ArgsError::Phases)?,
            "--notify-fd" => {
                a.notify_fd = Some(
                    value()?
                        .parse()
                        .map_err(|_| ArgsError::NotADescriptor(flag.clone()))?,
                )
            }
            other => return Err(ArgsError::Unknown(other.into())),
        }
    }
    a.root = root.ok_or(ArgsError::Required("--root"))?;
    a.vm = vm.ok_or(ArgsError::Required("--vm"))?;
    Ok(a)
}

/// One malloc arena for every thread, set before any thread exists.
#[allow(unsafe_code)]
fn small_malloc() {
    // SAFETY: mallopt only sets a glibc tunable; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The notification pipe, made close-on-exec so the VMM never holds it.
#[allow(unsafe_code)]
fn notify_file(fd: i32) -> Option<std::fs::File> {
    // SAFETY: fcntl on a descriptor number; invalid ones fail (EBADF).
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: the descriptor is open (fcntl succeeded) and ours alone: the
    // starter passed it for this purpose.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn main() {
    small_malloc();
    let watcher = ignis_vmm::reaper::Watcher::fork();
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ignis-supervisor: {:#}", anyhow::Error::from(e));
            std::process::exit(2);
        }
    };
    let filter = std::env::var("IGNIS_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    // As the `ignis` that started it (`--log-format`, passed down in the
    // environment).
    if std::env::var("IGNIS_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot fork the VMM's watcher now; forking it later");
            None
        }
    };
    let timeline = match args.origin {
        Some(o) => ignis_core::timing::Timeline::starting_at(o),
        None => ignis_core::timing::Timeline::new(),
    };
    // The starter's phases so far (create, disk, ...): recorded with ours.
    timeline.extend(args.phases);
    let opts = SuperviseOptions {
        timeline,
        spawned_ns: args.spawned,
        notify: args.notify_fd.and_then(notify_file),
        watcher,
    };
    let result = Ignis::open(Options {
        root: args.root,
        progress: false,
        insecure_registries: vec![],
        subnet: args.subnet,
        subnet6: args.subnet6,
    })
    .and_then(|ignis| ignis.vm_supervise(&args.vm, opts));
    if let Err(e) = result {
        tracing::error!(vm = args.vm, error = %e, "supervisor failed");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let a = parse(
            [
                "--root",
                "/r",
                "--vm",
                "abc",
                "--origin",
                "5",
                "--notify-fd",
                "3",
            ]
            .map(String::from)
            .into_iter(),
        )
        .unwrap();
        assert_eq!(
            (a.root, a.vm.as_str(), a.origin, a.notify_fd),
            (PathBuf::from("/r"), "abc", Some(5), Some(3))
        );
        let err = |args: &[&str]| parse(args.iter().map(|a| a.to_string())).err().unwrap();
        assert!(matches!(err(&["--vm", "x"]), ArgsError::Required("--root")));
        assert!(matches!(
            err(&["--root", "/r", "--vm"]),
            ArgsError::NoValue(f) if f == "--vm"
        ));
        let e = anyhow::Error::from(err(&["--root", "/r", "--vm", "x", "--phases", "{"]));
        assert!(
            format!("{e:#}").starts_with("--phases: invalid type"),
            "{e:#}"
        );
        assert_eq!(
            err(&["--root", "/r", "--vm", "x", "--bogus"]).to_string(),
            "unknown argument --bogus"
        );
    }
}
