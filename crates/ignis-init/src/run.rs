use std::os::unix::process::CommandExt;

use ignis_guest_config::GuestConfig;

use ignis_agent::user::ResolveError;

use crate::mounts::{switch_root, RootError, NEWROOT};

/// Why the workload (app mode) or the image's init (system mode) could not
/// be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("no command to run")]
    NoCommand,
    /// The program is not in the image (the message names it and `PATH`).
    #[error("{0} in the image")]
    Program(ResolveError),
    #[error(transparent)]
    User(ResolveError),
    #[error("cannot start {program}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pid out of range")]
    Pid,
    #[error(transparent)]
    SwitchRoot(#[from] RootError),
    #[error("cannot exec /sbin/init")]
    ExecInit(#[source] std::io::Error),
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn set_mask(how: libc::c_int) {
    let set = signal_set();
    // SAFETY: sigprocmask with a valid set pointer and a null old-set pointer.
    unsafe {
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

/// Runs the workload; returns its exit code (128+signal when killed).
pub fn workload(cfg: &GuestConfig) -> Result<i32, WorkloadError> {
    let argv0 = cfg.argv.first().ok_or(WorkloadError::NoCommand)?;
    let program = ignis_agent::user::resolve_program(NEWROOT, argv0, &cfg.env)
        .map_err(WorkloadError::Program)?;
    let (uid, gid) = match &cfg.user {
        Some(u) if !u.is_empty() => {
            let u = ignis_agent::user::resolve_user(NEWROOT, u).map_err(WorkloadError::User)?;
            (u.uid, u.gid)
        }
        _ => (0, 0),
    };
    let workdir = cfg
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&cfg.argv[1..]).env_clear();
    let mut has_path = false;
    for kv in &cfg.env {
        if let Some((k, v)) = kv.split_once('=') {
            has_path |= k == "PATH";
            cmd.env(k, v);
        }
    }
    if !has_path {
        cmd.env("PATH", ignis_agent::user::DEFAULT_PATH);
    }
    cmd.env("HOSTNAME", &cfg.hostname);
    cmd.arg0(argv0);
    // The agent is forked while we are still single-threaded.
    ignis_agent::spawn(ignis_agent::Context {
        chroot: Some(NEWROOT.to_string()),
        shutdown_signal: libc::SIGTERM,
        env: cfg.env.clone(),
        workdir: cfg.workdir.clone(),
    });
    set_mask(libc::SIG_BLOCK);
    watch_power_button();
    let wd = workdir.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (chroot, chdir, setsid, setgroups, setgid,
    // setuid, sigprocmask).
    unsafe {
        cmd.pre_exec(move || {
            let set = signal_set();
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::setsid();
            // The console becomes the workload's controlling terminal (job
            // control for shells on `ignis run -it`); harmless if it fails.
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            std::os::unix::fs::chroot(NEWROOT)?;
            std::env::set_current_dir(&wd)?;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|source| WorkloadError::Start { program, source })?;
    let main_pid = i32::try_from(child.id()).map_err(|_| WorkloadError::Pid)?;
    crate::report("ready agent");
    let code = supervise(main_pid);
    // The workload is gone: stop whatever it left behind.
    let _ = rustix::process::kill_current_process_group(rustix::process::Signal::TERM);
    // SAFETY: kill(-1) signals every process but us; no memory involved.
    unsafe {
        libc::kill(-1, libc::SIGTERM);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: as above.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
    }
    reap_all();
    Ok(code)
}

/// Waits for signals: reaps children, forwards termination signals to the
/// workload, returns its exit code.
fn supervise(main_pid: i32) -> i32 {
    let set = signal_set();
    loop {
        // Reap everything that has exited (orphans are re-parented to us).
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == main_pid {
                return if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    1
                };
            }
        }
        // SAFETY: sigwaitinfo with a valid set and a null info pointer.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        // A stop request (SIGTERM from the power-button watcher, SIGINT from
        // Ctrl-Alt-Del) is SIGTERM to the workload, as `docker stop`.
        let forward = match sig {
            libc::SIGTERM | libc::SIGINT => libc::SIGTERM,
            libc::SIGHUP => libc::SIGHUP,
            _ => 0,
        };
        if forward != 0 {
            // SAFETY: sending a signal to the workload's pid.
            unsafe {
                libc::kill(main_pid, forward);
            }
        }
    }
}

fn reap_all() {
    for _ in 0..100 {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: nothing left
        }
        if pid == 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// The signal that makes `init` power off: systemd takes SIGRTMIN+4,
/// busybox init SIGUSR2; others (sysvinit) get SIGINT, their Ctrl-Alt-Del.
fn poweroff_signal() -> i32 {
    let target = std::fs::read_link("/sbin/init")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if target.contains("systemd") {
        libc::SIGRTMIN() + 4
    } else if target.contains("busybox") {
        libc::SIGUSR2
    } else {
        libc::SIGINT
    }
}

/// System mode: a small process outlives our exec and turns the ACPI power
/// button (QEMU's graceful stop) into the image init's power-off signal, so
/// `ignis stop` shuts down any init cleanly, not only those that listen to
/// the button themselves.
fn spawn_power_watcher(sig: i32) {
    // SAFETY: we are single-threaded here (no watcher threads in system
    // mode), so fork is safe; the child only uses its own copies.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        return;
    }
    let Some(f) = find_power_button() else {
        std::process::exit(0)
    };
    use std::io::Read;
    let mut f = f;
    let mut ev = [0u8; 24];
    while f.read_exact(&mut ev).is_ok() {
        if is_power_press(&ev) {
            // SAFETY: signalling PID 1.
            unsafe {
                libc::kill(1, sig);
            }
        }
    }
    std::process::exit(0);
}

/// System mode: the image's init becomes PID 1. Returns only on failure.
pub fn exec_system_init() -> WorkloadError {
    if let Err(e) = switch_root() {
        return e.into();
    }
    let sig = poweroff_signal();
    spawn_power_watcher(sig);
    ignis_agent::spawn(ignis_agent::Context {
        chroot: None,
        shutdown_signal: sig,
        env: vec![],
        workdir: None,
    });
    crate::report("ready agent");
    WorkloadError::ExecInit(std::process::Command::new("/sbin/init").exec())
}

/// Watches the ACPI power button (QEMU's `system_powerdown`) and turns a
/// press into SIGTERM to ourselves, which the supervise loop forwards. The
/// device is opened before the workload starts, so a stop right after
/// "ready" is not lost. No button (Firecracker): nothing to watch.
fn watch_power_button() {
    if let Some(f) = find_power_button() {
        std::thread::spawn(move || read_button(f));
    }
}

/// Opens the ACPI power button's event device (waiting up to 1 s for it).
fn find_power_button() -> Option<std::fs::File> {
    for _ in 0..20 {
        let rd = std::fs::read_dir("/sys/class/input").ok()?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") {
                continue;
            }
            let dev_name =
                std::fs::read_to_string(e.path().join("device/name")).unwrap_or_default();
            if dev_name.trim() == "Power Button" {
                return std::fs::File::open(format!("/dev/input/{name}")).ok();
            }
        }
        if !std::path::Path::new("/sys/bus/acpi").exists() {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// A key-down of KEY_POWER in a `struct input_event` (x86_64: timeval 16
/// bytes, type u16, code u16, value i32).
fn is_power_press(ev: &[u8; 24]) -> bool {
    let kind = u16::from_le_bytes([ev[16], ev[17]]);
    let code = u16::from_le_bytes([ev[18], ev[19]]);
    let value = i32::from_le_bytes([ev[20], ev[21], ev[22], ev[23]]);
    kind == 1 && code == 116 && value == 1
}

fn read_button(mut f: std::fs::File) {
    use std::io::Read;
    let mut ev = [0u8; 24];
    while f.read_exact(&mut ev).is_ok() {
        if is_power_press(&ev) {
            // SAFETY: signalling our own process.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
        }
    }
}
