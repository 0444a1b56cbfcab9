//! QEMU `microvm` backend: virtio-mmio devices (discovered through ACPI),
//! serial console on stdio, QMP on a unix socket. KVM where it works,
//! otherwise TCG (with `tsc_early_khz=` on the kernel command line, added
//! by the caller, or TSC calibration hangs at random).

mod qmp;

pub use qmp::QmpClient;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Accel, Backend, BackendKind, Control, VmSpec, VmmError};

pub const BINARY: &str = "qemu-system-x86_64";

/// TCG's translated-code cache in MiB (QEMU's default is 1 GiB, which the
/// VM's memory cgroup would have to allow for).
pub const TCG_TB_MIB: u32 = 128;

#[derive(Debug, Clone)]
pub struct QemuBackend {
    binary: PathBuf,
}

impl QemuBackend {
    pub fn new(binary: PathBuf) -> Self {
        Self { binary }
    }

    /// The full argument list for `spec` (kept separate for tests and for
    /// the benchmark's "raw VMM" baseline).
    pub fn args(spec: &VmSpec) -> Vec<String> {
        let accel = match spec.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        };
        let cpu = match spec.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        // The ELF vmlinux boots through PVH, skipping the bzImage decompressor
        // (seconds under TCG).
        let kernel = &spec.vmlinux;
        // Guest RAM is a file: shared (tmpfs) while the VM runs, so a
        // snapshot is device state + a copy of the file; a restored clone
        // maps the snapshot's file privately (copy-on-write, shared pages).
        let memory = match &spec.restore {
            Some(r) => format!(
                "memory-backend-file,id=mem,size={}M,mem-path={},share=off",
                spec.memory_mib,
                r.memory.display()
            ),
            None => format!(
                "memory-backend-file,id=mem,size={}M,mem-path={},share=on",
                spec.memory_mib,
                memory_path(&spec.dir).display()
            ),
        };
        let accel = match spec.accel {
            Accel::Kvm => accel.to_string(),
            Accel::Tcg => format!("{accel},tb-size={TCG_TB_MIB}"),
        };
        let mut a: Vec<String> = vec![
            "-M".into(),
            "microvm,acpi=on,pcie=off,rtc=on,memory-backend=mem".into(),
            "-accel".into(),
            accel,
            "-object".into(),
            memory,
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-m".into(),
            format!("{}M", spec.memory_mib),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-no-reboot".into(),
            "-display".into(),
            "none".into(),
            "-chardev".into(),
            "stdio,id=con,signal=off".into(),
            "-serial".into(),
            "chardev:con".into(),
            "-kernel".into(),
            kernel.display().to_string(),
            "-initrd".into(),
            spec.initrd.display().to_string(),
            "-append".into(),
            spec.cmdline.clone(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp_path(&spec.dir).display()),
        ];
        // The agent's channel: a virtio-serial port named `ignis.agent`
        // on a unix socket the supervisor connects to (no vhost-vsock
        // needed on the host).
        a.extend([
            "-device".into(),
            "virtio-serial-device,max_ports=2".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                spec.dir.join(crate::AGENT_VMM_SOCKET).display()
            ),
            "-device".into(),
            format!(
                "virtserialport,chardev=agent,name={}",
                ignis_agent_proto::SERIAL_PORT_NAME
            ),
        ]);
        if let Some(n) = &spec.net {
            a.push("-netdev".into());
            a.push(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                n.tap
            ));
            a.push("-device".into());
            a.push(format!("virtio-net-device,netdev=n0,mac={}", n.mac));
        }
        if spec.restore.is_some() {
            a.extend(["-incoming".into(), "defer".into()]);
        }
        if spec.confine.sandbox {
            // seccomp: no exec, no obsolete or resource-control syscalls.
            // Not elevateprivileges=deny: it also forbids the setuid that
            // -runas makes, and after -runas there is nothing to elevate to.
            a.extend([
                "-sandbox".into(),
                "on,obsolete=deny,spawn=deny,resourcecontrol=deny".into(),
            ]);
        }
        if let Some((uid, gid)) = spec.confine.user {
            // Drops to uid:gid once its files, TAP and sockets are open.
            a.extend(["-runas".into(), format!("{uid}:{gid}")]);
        }
        for (i, d) in spec.disks.iter().enumerate() {
            a.push("-drive".into());
            a.push(format!(
                "id=d{i},file={},format=raw,if=none,cache=none,aio=threads{}",
                d.path.display(),
                if d.read_only { ",readonly=on" } else { "" }
            ));
            a.push("-device".into());
            a.push(format!("virtio-blk-device,drive=d{i}"));
        }
        a
    }
}

fn qmp_path(dir: &Path) -> PathBuf {
    dir.join("qmp.sock")
}

/// The running VM's RAM file on tmpfs (no writeback of guest memory to
/// disk), named after the VM's directory (its ID).
pub fn memory_path(dir: &Path) -> PathBuf {
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    PathBuf::from("/dev/shm").join(format!("ignis-{id}.mem"))
}

/// Loads a snapshot into a QEMU started with `-incoming defer` and waits
/// until the guest runs again.
fn incoming(socket: &Path, state: &Path) -> Result<(), VmmError> {
    let file = std::fs::File::open(state)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut qmp = loop {
        match QmpClient::connect(socket) {
            Ok(q) => break q,
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    };
    qmp.execute(
        "migrate-set-capabilities",
        Some(
            serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
        ),
    )?;
    // The state file goes in as a descriptor: the sandboxed QEMU may
    // neither spawn `cat` nor open host files after dropping privileges.
    use std::os::fd::AsFd;
    qmp.send_fd("snapshot-in", file.as_fd())?;
    qmp.execute(
        "migrate-incoming",
        Some(serde_json::json!({"uri": "fd:snapshot-in"})),
    )?;
    // The snapshot was taken paused, so the loaded VM stays paused: wait
    // for the load, then continue it.
    for _ in 0..30000 {
        let st = qmp.execute("query-migrate", None)?;
        match st["status"].as_str() {
            Some("completed") => {
                qmp.execute("cont", None)?;
                return Ok(());
            }
            Some("failed" | "cancelled") => {
                return Err(VmmError::Qmp {
                    command: "migrate-incoming".into(),
                    class: "MigrationFailed".into(),
                    desc: st["error-desc"]
                        .as_str()
                        .unwrap_or("the snapshot could not be loaded")
                        .to_string(),
                })
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
    Err(VmmError::Protocol(
        "restoring the snapshot took over 60 s".into(),
    ))
}

impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn launch(&self, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError> {
        let _ = std::fs::remove_file(qmp_path(&spec.dir));
        let _ = std::fs::remove_file(spec.dir.join(crate::AGENT_VMM_SOCKET));
        let mut cmd = Command::new(&self.binary);
        cmd.args(Self::args(spec))
            .stdin(input)
            .stdout(console)
            .stderr(Stdio::inherit());
        let mut child = crate::spawn_vmm(cmd, &spec.confine)?;
        if let Some(r) = &spec.restore {
            if let Err(e) = incoming(&qmp_path(&spec.dir), &r.state) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        Ok(child)
    }
}

/// QMP control of a running QEMU.
pub struct QemuControl {
    socket: PathBuf,
}

impl QemuControl {
    pub fn new(dir: &Path) -> Self {
        Self {
            socket: qmp_path(dir),
        }
    }

    fn run(&self, command: &str) -> Result<serde_json::Value, VmmError> {
        QmpClient::connect(&self.socket)?.execute(command, None)
    }
}

impl Control for QemuControl {
    /// The ACPI power button: the ignis init turns it into SIGTERM for the
    /// workload; systemd-logind powers off on it. (Debian's kernel has no
    /// virtio-mmio command-line devices, so microvm runs with ACPI, and with
    /// ACPI its i8042 does not probe: no Ctrl-Alt-Del here.)
    fn shutdown(&self) -> Result<(), VmmError> {
        self.run("system_powerdown").map(drop)
    }
    fn pause(&self) -> Result<(), VmmError> {
        self.run("stop").map(drop)
    }
    fn resume(&self) -> Result<(), VmmError> {
        self.run("cont").map(drop)
    }
    /// Migration of the device state to a file (QEMU 7.2 has no `file:`
    /// URI: the host opens it and passes the descriptor) with `x-ignore-shared`
    /// (guest RAM is the shared memory file, not in the stream), then a
    /// sparse copy of that file; the VM stays paused.
    fn snapshot(&self, dir: &Path) -> Result<crate::SnapshotFiles, VmmError> {
        self.migrate(dir, true)?;
        Ok(crate::SnapshotFiles {
            state: dir.join("vmstate"),
            memory: memory_path(self.socket.parent().unwrap_or(Path::new("."))),
        })
    }
}

impl QemuControl {
    fn migrate(&self, dir: &Path, ignore_shared: bool) -> Result<(), VmmError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("vmstate"))?;
        let mut qmp = QmpClient::connect(&self.socket)?;
        qmp.execute("stop", None)?;
        qmp.execute(
            "migrate-set-capabilities",
            Some(serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": ignore_shared}]})),
        )?;
        use std::os::fd::AsFd;
        qmp.send_fd("snapshot-out", file.as_fd())?;
        qmp.execute(
            "migrate",
            Some(serde_json::json!({"uri": "fd:snapshot-out"})),
        )?;
        for _ in 0..30000 {
            let st = qmp.execute("query-migrate", None)?;
            match st["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    return Err(VmmError::Qmp {
                        command: "migrate".into(),
                        class: "MigrationFailed".into(),
                        desc: st["error-desc"].as_str().unwrap_or("unknown").to_string(),
                    })
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
        Err(VmmError::Protocol(
            "migration to file did not complete within 60 s".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_describe_a_microvm_with_readonly_and_writable_disks() {
        let spec = VmSpec {
            id: "x".into(),
            dir: "/run/ignis/x".into(),
            vmlinux: "/k/vmlinux".into(),
            initrd: "/k/initrd".into(),
            cmdline: "console=ttyS0".into(),
            vcpus: 2,
            memory_mib: 512,
            disks: vec![
                crate::DiskSpec {
                    path: "/d/image.ext4".into(),
                    read_only: true,
                },
                crate::DiskSpec {
                    path: "/d/data.ext4".into(),
                    read_only: false,
                },
            ],
            accel: Accel::Tcg,
            net: Some(crate::NetSpec {
                tap: "ig-x".into(),
                mac: "02:00:00:00:00:01".into(),
            }),
            restore: None,
            confine: Default::default(),
        };
        let a = QemuBackend::args(&spec).join(" ");
        assert!(
            a.contains("-netdev tap,id=n0,ifname=ig-x,script=no,downscript=no"),
            "{a}"
        );
        assert!(a.contains("virtio-net-device,netdev=n0,mac=02:00:00:00:00:01"));
        assert!(a.contains("-M microvm,"), "{a}");
        assert!(a.contains("-accel tcg,tb-size=128"), "{a}");
        assert!(!a.contains("-sandbox") && !a.contains("-runas"), "{a}");
        let mut confined = spec.clone();
        confined.confine.sandbox = true;
        confined.confine.user = Some((1000123, 1000123));
        let c = QemuBackend::args(&confined).join(" ");
        assert!(
            c.contains("-sandbox on,obsolete=deny,spawn=deny,resourcecontrol=deny"),
            "{c}"
        );
        assert!(c.contains("-runas 1000123:1000123"), "{c}");
        assert!(a.contains("-kernel /k/vmlinux"));
        assert!(a.contains("-smp 2 -m 512M"));
        assert!(
            a.contains("file=/d/image.ext4,format=raw,if=none,cache=none,aio=threads,readonly=on")
        );
        assert!(a.contains("file=/d/data.ext4,format=raw,if=none,cache=none,aio=threads -device"));
        assert!(a.contains("-qmp unix:/run/ignis/x/qmp.sock,server=on,wait=off"));
        assert!(a.contains("-no-reboot"));
        // RAM is a shared file on tmpfs while running...
        assert!(
            a.contains(
                "memory-backend-file,id=mem,size=512M,mem-path=/dev/shm/ignis-x.mem,share=on"
            ),
            "{a}"
        );
        assert!(a.contains("memory-backend=mem"));
        assert!(!a.contains("-incoming"));
        // ...and a clone maps the snapshot's memory privately, state incoming.
        let mut clone = spec.clone();
        clone.restore = Some(crate::RestoreSpec {
            state: "/s/vmstate".into(),
            memory: "/s/memory".into(),
        });
        let c = QemuBackend::args(&clone).join(" ");
        assert!(c.contains("mem-path=/s/memory,share=off"), "{c}");
        assert!(c.contains("-incoming defer"), "{c}");
        assert!(
            a.contains("-chardev socket,id=agent,path=/run/ignis/x/agent.vmm.sock,server=on,wait=off -device virtserialport,chardev=agent,name=ignis.agent"),
            "{a}"
        );
    }
}
