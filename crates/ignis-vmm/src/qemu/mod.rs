//! QEMU `microvm` backend: virtio-mmio devices (discovered through ACPI),
//! serial console on stdio, QMP on a unix socket. KVM where it works,
//! otherwise TCG (with `tsc_early_khz=` on the kernel command line, added
//! by the caller, or TSC calibration hangs at random).

mod qmp;

pub use qmp::QmpClient;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Accel, BackendKind};
use crate::{
    AgentTransport, BootPlan, Capabilities, ConfineRequest, Confined, Control, Driver, HostError,
    VmSpec, VmmError,
};

pub const BINARY: &str = "qemu-system-x86_64";

/// TCG's translated-code cache in MiB (QEMU's default is 1 GiB, which the
/// VM's memory cgroup would have to allow for).
pub const TCG_TB_MIB: u32 = 128;

/// QEMU's end of the agent's virtio-serial port (a chardev socket).
pub const AGENT_VMM_SOCKET: &str = "agent.vmm.sock";
const QMP_SOCKET: &str = "qmp.sock";

/// The QEMU driver.
#[derive(Debug, Clone, Copy)]
pub struct QemuDriver;

fn binary() -> Result<PathBuf, VmmError> {
    crate::detect::find_in_path(BINARY).ok_or(VmmError::NotInstalled {
        binary: BINARY.to_string(),
        hint: "apt-get install qemu-system-x86",
    })
}

/// The host's TSC frequency in kHz (from /proc/cpuinfo's MHz).
fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    #[allow(clippy::cast_possible_truncation)] // a few million kHz, positive
    Some((mhz * 1000.0) as u64)
}

/// Every directory from `/` down to `dir` lets other users through
/// (o+x): QEMU, dropped to its own uid, must reach its files by path.
fn reachable_by_others(dir: &Path) -> Result<(), PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors() {
        let mode = std::fs::metadata(d)
            .map_err(|_| d.to_path_buf())?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(d.to_path_buf());
        }
    }
    Ok(())
}

impl Driver for QemuDriver {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn capabilities(&self, accel: Accel) -> Capabilities {
        Capabilities {
            max_vcpus: 64,
            even_vcpus: false,
            agent: Some(AgentTransport::VirtioSerial),
            overhead_mib: match accel {
                Accel::Tcg => 256 + u64::from(TCG_TB_MIB),
                Accel::Kvm => 128,
            },
            initramfs: true,
            host_tap_from_netns: true,
            tap_fd: true,
        }
    }

    fn host_check(&self, host: &crate::HostInfo, _linux: bool) -> Result<Accel, HostError> {
        if host.qemu.is_none() {
            return Err(HostError::new(
                "qemu-system-x86_64 not found: apt-get install qemu-system-x86",
            ));
        }
        Ok(if matches!(host.kvm, crate::detect::Kvm::Usable(_)) {
            Accel::Kvm
        } else {
            Accel::Tcg
        })
    }

    fn version(&self) -> Option<String> {
        crate::detect::binary_version(&binary().ok()?)
    }

    fn kernel_args(&self, accel: Accel) -> Vec<String> {
        match (accel, host_tsc_khz()) {
            // Under TCG the guest's TSC calibration hangs at random.
            (Accel::Tcg, Some(khz)) => vec![format!("tsc_early_khz={khz}")],
            _ => vec![],
        }
    }

    fn confine(&self, req: &ConfineRequest<'_>) -> Confined {
        let mut c = Confined {
            cgroup: true,
            ..Default::default()
        };
        c.confine.sandbox = true;
        c.sandbox.push("seccomp");
        // QEMU reopens the VM's disks by path when it resumes after a
        // snapshot or restore, as the dropped user: it must reach them,
        // and own the writable one.
        match reachable_by_others(req.dir) {
            Ok(()) => match std::os::unix::fs::chown(
                req.dir.join("data.ext4"),
                Some(req.uid),
                Some(req.uid),
            ) {
                Ok(()) => c.confine.user = Some((req.uid, req.uid)),
                Err(e) => c.warnings.push(format!(
                    "QEMU runs as root: cannot hand the writable disk to uid {}: {e}",
                    req.uid
                )),
            },
            Err(d) => c.warnings.push(format!(
                "QEMU runs as root: {} is not searchable by other users; make the state directory's parents world-searchable (chmod o+x) for -runas",
                d.display()
            )),
        }
        c
    }

    fn launch(&self, spec: &VmSpec, input: Stdio, console: Stdio) -> Result<Child, VmmError> {
        let _ = std::fs::remove_file(qmp_path(&spec.dir));
        let _ = std::fs::remove_file(spec.dir.join(AGENT_VMM_SOCKET));
        // Macvtaps: their devices open here, handed down by number.
        let mut devices = Vec::new();
        let mut fds = Vec::new();
        for n in &spec.net {
            match &n.device {
                Some(path) => {
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(path)
                        .map_err(VmmError::file("open the macvtap device", path))?;
                    fds.push(Some(std::os::fd::AsRawFd::as_raw_fd(&f)));
                    devices.push(f);
                }
                None => fds.push(None),
            }
        }
        let mut cmd = Command::new(binary()?);
        cmd.args(args_with_fds(spec, &fds))
            .stdin(input)
            .stdout(console)
            .stderr(Stdio::inherit());
        if let Some(ns) = &spec.netns {
            // Its TAPs by name there (a TAP for the bridge is moved out
            // to the host once QEMU made it).
            crate::in_netns(&mut cmd, ns)?;
        }
        crate::inherit_fds(&mut cmd, fds.iter().flatten().copied().collect());
        let mut child = crate::spawn_vmm(cmd)?;
        // QEMU has its copies.
        drop(devices);
        if let Some(r) = &spec.restore {
            if let Err(e) = incoming(&qmp_path(&spec.dir), &mut child, &r.state) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        Ok(child)
    }

    fn control(&self, dir: &Path) -> Box<dyn Control> {
        Box::new(QemuControl::new(dir))
    }

    fn connect_agent(&self, dir: &Path) -> Result<std::os::unix::net::UnixStream, VmmError> {
        let path = dir.join(AGENT_VMM_SOCKET);
        std::os::unix::net::UnixStream::connect(&path).map_err(|source| VmmError::Connect {
            path: path.display().to_string(),
            source,
        })
    }

    fn boot_plan(&self, spec: &VmSpec) -> BootPlan {
        let mut argv = vec![BINARY.to_string()];
        argv.extend(args(spec));
        BootPlan {
            backend: BackendKind::Qemu,
            argv,
            firecracker_config: None,
        }
    }

    fn runtime_files(&self) -> &'static [&'static str] {
        &[QMP_SOCKET, AGENT_VMM_SOCKET]
    }

    fn leftovers(&self, dir: &Path) -> Vec<crate::Leftover> {
        let mem = memory_path(dir);
        if mem.exists() {
            vec![crate::Leftover {
                kind: "memory",
                path: mem,
            }]
        } else {
            vec![]
        }
    }

    fn release(&self, dir: &Path) {
        let _ = std::fs::remove_file(memory_path(dir));
        for f in self.runtime_files() {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
}

/// The full argument list for `spec` (kept separate for tests and for the
/// benchmark's "raw VMM" baseline). A macvtap NIC is shown taking
/// descriptor 3, 4, ... in order (the numbers [`QemuDriver`] hands down
/// differ).
pub fn args(spec: &VmSpec) -> Vec<String> {
    let mut next = 3;
    let fds: Vec<Option<i32>> = spec
        .net
        .iter()
        .map(|n| {
            n.device.as_ref().map(|_| {
                next += 1;
                next - 1
            })
        })
        .collect();
    args_with_fds(spec, &fds)
}

/// [`args`] with each NIC's descriptor (`None`: its TAP by name).
fn args_with_fds(spec: &VmSpec, fds: &[Option<i32>]) -> Vec<String> {
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
            spec.dir.join(AGENT_VMM_SOCKET).display()
        ),
        "-device".into(),
        format!(
            "virtserialport,chardev=agent,name={}",
            ignis_agent_proto::SERIAL_PORT_NAME
        ),
    ]);
    for (i, n) in spec.net.iter().enumerate() {
        a.push("-netdev".into());
        a.push(match fds.get(i).copied().flatten() {
            Some(fd) => format!("tap,id=n{i},fd={fd}"),
            None => format!("tap,id=n{i},ifname={},script=no,downscript=no", n.tap),
        });
        a.push("-device".into());
        a.push(format!("virtio-net-device,netdev=n{i},mac={}", n.mac));
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
            // A comma in an option value is written twice.
            d.path.display().to_string().replace(',', ",,"),
            if d.read_only { ",readonly=on" } else { "" }
        ));
        a.push("-device".into());
        a.push(match &d.serial {
            Some(s) => format!("virtio-blk-device,drive=d{i},serial={s}"),
            None => format!("virtio-blk-device,drive=d{i}"),
        });
    }
    a
}

fn qmp_path(dir: &Path) -> PathBuf {
    dir.join(QMP_SOCKET)
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
fn incoming(socket: &Path, child: &mut Child, state: &Path) -> Result<(), VmmError> {
    let file =
        std::fs::File::open(state).map_err(VmmError::file("open the snapshot state", state))?;
    crate::wait_for_socket(socket, Some(child), std::time::Duration::from_secs(10))?;
    let mut qmp = QmpClient::connect(socket)?;
    use std::os::fd::AsFd;
    qmp.migrate_fd("migrate-incoming", file.as_fd(), true)?;
    // The snapshot was taken paused, so the loaded VM stays paused: wait
    // for the load, then continue it.
    qmp.wait_migration("migrate-incoming", "restoring the snapshot")?;
    qmp.execute("cont", None)?;
    Ok(())
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
        use std::os::fd::AsFd;
        qmp.migrate_fd("migrate", file.as_fd(), ignore_shared)?;
        qmp.wait_migration("migrate", "migration to file")
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
                    serial: None,
                },
                crate::DiskSpec {
                    path: "/d/data.ext4".into(),
                    read_only: false,
                    serial: None,
                },
                crate::DiskSpec {
                    path: "/v/a,b.ext4".into(),
                    read_only: true,
                    serial: Some("ignis-vol0".into()),
                },
            ],
            accel: Accel::Tcg,
            netns: None,
            net: vec![
                crate::NetSpec {
                    tap: "ig-x".into(),
                    mac: "02:00:00:00:00:01".into(),
                    device: None,
                },
                crate::NetSpec {
                    tap: "tap1".into(),
                    mac: "02:00:00:00:00:02".into(),
                    device: None,
                },
            ],
            restore: None,
            confine: Default::default(),
        };
        let a = args(&spec).join(" ");
        assert!(
            a.contains("-netdev tap,id=n0,ifname=ig-x,script=no,downscript=no"),
            "{a}"
        );
        assert!(a.contains("virtio-net-device,netdev=n0,mac=02:00:00:00:00:01"));
        assert!(a.contains("-netdev tap,id=n1,ifname=tap1,script=no,downscript=no"));
        // A macvtap is handed down as a descriptor.
        let mut mv = spec.clone();
        mv.net[1].device = Some("/x/macvtap1".into());
        let a = args(&mv).join(" ");
        assert!(a.contains("-netdev tap,id=n0,ifname=ig-x,script=no,downscript=no"));
        assert!(
            a.contains(
                "-netdev tap,id=n1,fd=3 -device virtio-net-device,netdev=n1,mac=02:00:00:00:00:02"
            ),
            "{a}"
        );
        assert!(a.contains("virtio-net-device,netdev=n1,mac=02:00:00:00:00:02"));
        assert!(a.contains("-M microvm,"), "{a}");
        assert!(a.contains("-accel tcg,tb-size=128"), "{a}");
        assert!(!a.contains("-sandbox") && !a.contains("-runas"), "{a}");
        let mut confined = spec.clone();
        confined.confine.sandbox = true;
        confined.confine.user = Some((1000123, 1000123));
        let c = args(&confined).join(" ");
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
        // A volume: its serial (how the guest finds it), a comma escaped.
        assert!(
            a.contains("id=d2,file=/v/a,,b.ext4,format=raw,if=none,cache=none,aio=threads,readonly=on -device virtio-blk-device,drive=d2,serial=ignis-vol0"),
            "{a}"
        );
        assert!(a.contains("virtio-blk-device,drive=d1 "), "{a}");
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
        let c = args(&clone).join(" ");
        assert!(c.contains("mem-path=/s/memory,share=off"), "{c}");
        assert!(c.contains("-incoming defer"), "{c}");
        assert!(
            a.contains("-chardev socket,id=agent,path=/run/ignis/x/agent.vmm.sock,server=on,wait=off -device virtserialport,chardev=agent,name=ignis.agent"),
            "{a}"
        );
    }
}
