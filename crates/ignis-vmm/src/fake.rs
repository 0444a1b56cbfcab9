//! A fake VMM for tests of the supervisor, CLI and state handling: a shell
//! script that speaks the guest init's console protocol. The kernel command
//! line decides what it does: `ignis.fake=exit:N` prints ready, then exits
//! the "workload" with N; `reboot` reboots the guest once (the kernel's
//! restart line, no report), then runs; `deaf` ignores shutdown requests
//! and signals (a guest that hangs on its way down) until killed; anything
//! else runs until shut down (Control) or killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{
    Accel, BackendKind, BootPlan, Capabilities, ConfineRequest, Confined, Control, Driver,
    HostError, VmSpec, VmmError,
};

/// The fake driver: no agent, no confinement, no host requirements.
#[derive(Debug, Clone, Copy)]
pub struct FakeDriver;

const SCRIPT: &str = r#"
dir="$1"; mode="$2"
echo $$ > "$dir/fake.pid"
echo "fake kernel booting"
echo "IGNIS-INIT ready"
case "$mode" in
  exit:*) sleep 0.2; echo "workload output"; echo "IGNIS-INIT exit ${mode#exit:}"; exit 0 ;;
  reboot) if [ ! -e "$dir/fake.rebooted" ]; then : > "$dir/fake.rebooted"; echo "[    1.0] reboot: Restarting system"; exit 0; fi ;;
  deaf) trap '' INT TERM; while :; do sleep 0.05; done ;;
  cat) while read -r line; do echo "echo: $line"; [ "$line" = quit ] && break; done; echo "IGNIS-INIT exit 0"; exit 0 ;;
esac
trap 'echo "IGNIS-INIT exit 130"; exit 0' INT TERM
while [ ! -e "$dir/shutdown" ]; do sleep 0.05; done
echo "IGNIS-INIT exit 0"
"#;

fn mode(spec: &VmSpec) -> String {
    spec.cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ignis.fake="))
        .unwrap_or("run")
        .to_string()
}

impl Driver for FakeDriver {
    fn kind(&self) -> BackendKind {
        BackendKind::Fake
    }

    fn capabilities(&self, _accel: Accel) -> Capabilities {
        Capabilities {
            max_vcpus: 64,
            even_vcpus: false,
            agent: None,
            overhead_mib: 64,
            initramfs: false,
            host_tap_from_netns: true,
            tap_fd: true,
        }
    }

    fn host_check(&self, _host: &crate::HostInfo, _linux: bool) -> Result<Accel, HostError> {
        Ok(Accel::Tcg)
    }

    fn version(&self) -> Option<String> {
        Some("fake 1".into())
    }

    fn kernel_args(&self, _accel: Accel) -> Vec<String> {
        vec![]
    }

    /// A shell script is not confined: it gets neither a uid nor a cgroup.
    fn confine(&self, _req: &ConfineRequest<'_>) -> Confined {
        Confined::default()
    }

    fn launch(&self, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError> {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(self.boot_plan(spec).argv.iter().skip(1))
            .stdin(input)
            .stdout(console)
            .stderr(Stdio::null());
        crate::spawn_vmm(cmd)
    }

    fn control(&self, dir: &Path) -> Box<dyn Control> {
        Box::new(FakeControl::new(dir))
    }

    fn connect_agent(&self, _dir: &Path) -> Result<std::os::unix::net::UnixStream, VmmError> {
        Err(VmmError::NoAgent)
    }

    fn boot_plan(&self, spec: &VmSpec) -> BootPlan {
        BootPlan {
            backend: BackendKind::Fake,
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                SCRIPT.into(),
                "fake-vmm".into(),
                spec.dir.display().to_string(),
                mode(spec),
            ],
            firecracker_config: None,
        }
    }

    fn runtime_files(&self) -> &'static [&'static str] {
        &["fake.pid", "shutdown"]
    }

    fn leftovers(&self, _dir: &Path) -> Vec<crate::Leftover> {
        vec![]
    }

    fn release(&self, dir: &Path) {
        for f in self.runtime_files() {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
}

pub struct FakeControl {
    dir: PathBuf,
}

impl FakeControl {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn signal(&self, sig: rustix::process::Signal) -> Result<(), VmmError> {
        let pid: i32 = std::fs::read_to_string(self.dir.join("fake.pid"))?
            .trim()
            .parse()
            .map_err(|_| VmmError::FakePid)?;
        let pid = rustix::process::Pid::from_raw(pid).ok_or(VmmError::FakePid)?;
        rustix::process::kill_process(pid, sig).map_err(|e| VmmError::Io(e.into()))
    }
}

impl Control for FakeControl {
    fn shutdown(&self) -> Result<(), VmmError> {
        std::fs::write(self.dir.join("shutdown"), b"").map_err(VmmError::Io)
    }
    fn pause(&self) -> Result<(), VmmError> {
        self.signal(rustix::process::Signal::STOP)
    }
    fn resume(&self) -> Result<(), VmmError> {
        self.signal(rustix::process::Signal::CONT)
    }
    fn snapshot(&self, dir: &Path) -> Result<crate::SnapshotFiles, VmmError> {
        self.pause()?;
        std::fs::write(dir.join("vmstate"), b"fake state")?;
        std::fs::write(dir.join("memory"), b"fake memory")?;
        Ok(crate::SnapshotFiles {
            state: dir.join("vmstate"),
            memory: dir.join("memory"),
        })
    }
}
