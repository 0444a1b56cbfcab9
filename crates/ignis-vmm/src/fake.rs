//! A fake VMM for tests of the supervisor, CLI and state handling: a shell
//! script that speaks the guest init's console protocol. The kernel command
//! line decides what it does: `ignis.fake=exit:N` prints ready, then exits
//! the "workload" with N; anything else runs until shut down (Control) or
//! killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Backend, BackendKind, Control, VmSpec, VmmError};

pub struct FakeBackend;

const SCRIPT: &str = r#"
dir="$1"; mode="$2"
echo $$ > "$dir/fake.pid"
echo "fake kernel booting"
echo "IGNIS-INIT ready"
case "$mode" in
  exit:*) sleep 0.2; echo "workload output"; echo "IGNIS-INIT exit ${mode#exit:}"; exit 0 ;;
  cat) while read -r line; do echo "echo: $line"; [ "$line" = quit ] && break; done; echo "IGNIS-INIT exit 0"; exit 0 ;;
esac
trap 'echo "IGNIS-INIT exit 130"; exit 0' INT TERM
while [ ! -e "$dir/shutdown" ]; do sleep 0.05; done
echo "IGNIS-INIT exit 0"
"#;

impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fake
    }

    fn launch(&self, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError> {
        let mode = spec
            .cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ignis.fake="))
            .unwrap_or("run")
            .to_string();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("fake-vmm")
            .arg(&spec.dir)
            .arg(mode)
            .stdin(input)
            .stdout(console)
            .stderr(Stdio::null());
        crate::spawn_vmm(cmd, &spec.confine)
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
            .map_err(|_| VmmError::Protocol("bad fake.pid".into()))?;
        let pid = rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| VmmError::Protocol("pid 0".into()))?;
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
