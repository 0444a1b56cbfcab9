//! PID 1 of an ignis VM (see `ignis-guest-config` for the contract).
//!
//! 1. mount /proc, /sys, /dev; load the modules listed in /ignis/modules
//! 2. mount the image disk read-only and the writable disk, join them as an
//!    overlay at /newroot; set hostname, /etc/hosts, resolv.conf; copy files
//! 3. app mode: run the workload chrooted in /newroot, reap every zombie,
//!    forward SIGTERM/SIGINT/SIGHUP, and when it exits kill the rest, unmount
//!    everything (clean ext4) and power off, reporting the exit code.
//!    system mode: move /newroot to / and exec /sbin/init.
//!
//! Any failure is reported on the console and powers the VM off: an ignis VM
//! never hangs in its initramfs.

mod mounts;
mod run;

use ignis_guest_config::{
    GuestConfig, Mode, CONFIG_PATH, INIT_FAILED, MARKER, MODULES_PATH, VFAT_MODULES_PATH,
};
use std::io::Write;

/// Why the VM could not boot; reported on the console with its causes.
#[derive(Debug, thiserror::Error)]
enum BootError {
    #[error(transparent)]
    Root(#[from] mounts::RootError),
    #[error("cannot read {CONFIG_PATH}")]
    ReadConfig(#[source] std::io::Error),
    #[error("bad {CONFIG_PATH}")]
    Config(#[source] serde_json::Error),
    #[error(transparent)]
    Net(#[from] ignis_agent::net::NetError),
    #[error(transparent)]
    Workload(#[from] run::WorkloadError),
}

fn main() {
    let code = match boot() {
        Ok(code) => code,
        Err(e) => {
            report(&format!("error {}", ignis_agent_proto::error_chain(&e)));
            INIT_FAILED
        }
    };
    report(&format!("exit {code}"));
    mounts::teardown();
    power_off();
}

/// Writes a report line to the console (our stdout is /dev/console).
pub fn report(what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{MARKER} {what}");
    let _ = out.flush();
}

fn boot() -> Result<i32, BootError> {
    // Ctrl-Alt-Del (Firecracker's SendCtrlAltDel) becomes SIGINT to us, which
    // is forwarded to the workload: a graceful stop.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);
    mounts::early()?;
    load_modules(MODULES_PATH);
    let cfg: GuestConfig =
        serde_json::from_slice(&std::fs::read(CONFIG_PATH).map_err(BootError::ReadConfig)?)
            .map_err(BootError::Config)?;
    // vfat only where a seed or a volume may need it (no cost otherwise).
    if cfg.seed || !cfg.volumes.is_empty() {
        load_modules(VFAT_MODULES_PATH);
    }
    mounts::root(&cfg)?;
    mounts::volumes(&cfg)?;
    mounts::configure(&cfg)?;
    // With several NICs, each is source-routed through its own table
    // (the first too); one NIC needs only the main table. `interfaces`
    // starts with NIC 0 when that one has no static `network`.
    let first = usize::from(cfg.network.is_some());
    let several = first + cfg.interfaces.len() > 1;
    if let Some(n) = &cfg.network {
        let table = several.then(|| ignis_agent::policy::table_for(0));
        ignis_agent::net::configure(n, table)?;
    }
    for (i, nic) in cfg.interfaces.iter().enumerate() {
        ignis_agent::net::configure_nic(nic, ignis_agent::policy::table_for(i + first))?;
    }
    match cfg.mode {
        Mode::App => Ok(run::workload(&cfg)?),
        Mode::System => Err(run::exec_system_init().into()),
    }
}

/// `module.param=value` words of the kernel command line for `module`, as
/// modprobe passes them (the kernel applies them only to built-in code):
/// how `virtio_mmio.device=...` reaches a modular virtio_mmio.
fn cmdline_params(cmdline: &str, module: &str) -> String {
    let prefix = format!("{module}.");
    cmdline
        .split_whitespace()
        .filter_map(|w| {
            w.replace('-', "_")
                .strip_prefix(&prefix)
                .map(str::to_string)
                .map(|_| w[prefix.len()..].to_string())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn load_modules(list_path: &str) {
    let Ok(list) = std::fs::read_to_string(list_path) else {
        return;
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for path in list.lines().filter(|l| !l.is_empty()) {
        let name = path
            .rsplit('/')
            .next()
            .unwrap_or(path)
            .trim_end_matches(".ko")
            .replace('-', "_");
        let params = std::ffi::CString::new(cmdline_params(&cmdline, &name)).unwrap_or_default();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("ignis-init: cannot open module {path}: {e}");
                continue;
            }
        };
        use std::os::fd::AsRawFd;
        // SAFETY: finit_module reads the module from a valid open fd and a
        // NUL-terminated parameter string; it touches no memory of ours.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                eprintln!("ignis-init: cannot load module {path}: {err}");
            }
        }
    }
}

fn power_off() -> ! {
    rustix::fs::sync();
    // A reset, not a power-off: Firecracker exits on the i8042 reset
    // (`reboot=k`) and QEMU runs with -no-reboot, so both end the VMM.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_params_come_from_the_command_line() {
        let c = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 quiet virtio_mmio.device=512@0xfeb00c00:11 ext4.x=1";
        assert_eq!(
            super::cmdline_params(c, "virtio_mmio"),
            "device=512@0xfeb00e00:12 device=512@0xfeb00c00:11"
        );
        assert_eq!(super::cmdline_params(c, "ext4"), "x=1");
        assert_eq!(super::cmdline_params(c, "overlay"), "");
    }

    /// The console report names each cause once, as the host shows it.
    #[test]
    fn reports_render_the_cause_chain_once() {
        use super::{mounts::RootError, run::WorkloadError, BootError};
        use ignis_agent::user::ResolveError;
        let render = |e: BootError| ignis_agent_proto::error_chain(&e);
        let e = BootError::from(RootError::Mount {
            src: "/dev/vda".into(),
            target: "/mnt/lower".into(),
            fstype: "ext4".into(),
            source: rustix::io::Errno::NOENT,
        });
        assert_eq!(
            render(e),
            format!(
                "mount /dev/vda on /mnt/lower (ext4): {}",
                rustix::io::Errno::NOENT
            )
        );
        let e = BootError::from(WorkloadError::Program(ResolveError::Program {
            program: "app".into(),
            path: "/bin".into(),
        }));
        assert_eq!(
            render(e),
            "executable 'app' not found (PATH=/bin) in the image"
        );
        let e = BootError::ReadConfig(std::io::Error::from_raw_os_error(2));
        assert_eq!(
            render(e),
            "cannot read /ignis/config.json: No such file or directory (os error 2)"
        );
    }
}
