//! Boot artifacts of one VM: the per-kernel base initramfs (cached), the
//! per-VM initrd (base + config), the kernel command line, the VmSpec.

use std::path::{Path, PathBuf};

use ignis_api::Accel;
use ignis_api::{RunMode, VmRecord};
use ignis_guest_config::{CopyFile, GuestConfig, Mode};
use ignis_vmm::{DiskSpec, VmSpec};

use crate::{Error, ErrorKind, Ignis};

/// Where the static guest init is: `$IGNIS_INIT`, next to the ignis binary,
/// or in the build tree (`scripts/build-guest.sh` puts it there).
pub fn find_init() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("IGNIS_INIT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| Error::internal("find the ignis binary", e))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    // The static build (scripts/build-guest.sh) first: a plain `cargo build`
    // also leaves a dynamically linked ignis-init next to ignis, which
    // cannot run in the initramfs.
    let candidates = [
        dir.join("../x86_64-unknown-linux-gnu/release/ignis-init"),
        dir.join("../../x86_64-unknown-linux-gnu/release/ignis-init"),
        dir.join("ignis-init"),
        PathBuf::from("/usr/local/lib/ignis/ignis-init"),
        PathBuf::from("/usr/lib/ignis/ignis-init"),
    ];
    // The ELF and program headers are at the front: read only those.
    let is_static = |p: &PathBuf| {
        let mut head = Vec::with_capacity(64 << 10);
        std::fs::File::open(p)
            .and_then(|f| {
                std::io::Read::read_to_end(&mut std::io::Read::take(f, 64 << 10), &mut head)
            })
            .is_ok_and(|_| ignis_boot::initramfs::is_static_elf(&head))
    };
    candidates.into_iter().find(is_static).ok_or_else(|| {
        Error::new(
            ErrorKind::Unavailable,
            "the guest init (ignis-init) was not found; build it with scripts/build-guest.sh or set IGNIS_INIT",
        )
    })
}

/// The kernel command line: what every VM needs, what its VMM's devices
/// need (the driver's), then the user's.
pub(crate) fn cmdline(driver: &dyn ignis_vmm::Driver, accel: Accel, extra: Option<&str>) -> String {
    let mut c: Vec<String> = [
        "console=ttyS0",
        "reboot=k",
        "panic=-1",
        "quiet",
        "loglevel=3",
    ]
    .map(String::from)
    .to_vec();
    c.extend(driver.kernel_args(accel));
    if let Some(e) = extra {
        c.push(e.to_string());
    }
    c.join(" ")
}

impl Ignis {
    /// The cached per-kernel initramfs (init + modules), built on first use.
    /// Keyed by the kernel and the init binary's identity (path, inode,
    /// size, mtime), so a rebuilt init gets a new one without the init
    /// being read or hashed on every start.
    fn base_initramfs(&self, kernel_id: &str) -> Result<PathBuf, Error> {
        use std::os::unix::fs::MetadataExt;
        let init_path = find_init()?;
        let meta =
            std::fs::metadata(&init_path).map_err(|e| Error::internal("read the guest init", e))?;
        let key = ignis_image::import::sha256(
            format!(
                "{kernel_id}\0{}\0{}\0{}\0{}.{}",
                init_path.display(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec()
            )
            .as_bytes(),
        );
        let path = self
            .store
            .disks_dir()
            .join(format!("initramfs-{}.cpio", &key[7..31]));
        // Owned by the kernel's record: only `kernel rm` removes it.
        if path.is_file() {
            return Ok(path);
        }
        let init =
            std::fs::read(&init_path).map_err(|e| Error::internal("read the guest init", e))?;
        let _guard = self.operation_guard()?;
        let _lock = self
            .store
            .object_lock("initramfs", &key)
            .map_err(|e| Error::internal("lock the initramfs", e))?;
        if path.is_file() {
            return Ok(path);
        }
        let kernel = self.kernel_inspect(kernel_id)?;
        let blobs = self.store.blobs();
        let open = |d: String| {
            move || -> std::io::Result<std::fs::File> {
                blobs
                    .open(&d)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }
        };
        let opener = kernel.modules_digest.clone().map(open);
        let data = ignis_boot::initramfs::base(
            &init,
            &init_path.display().to_string(),
            opener
                .as_ref()
                .map(|f| f as &dyn Fn() -> std::io::Result<std::fs::File>),
        )
        .map_err(|e| {
            let kind = match e {
                ignis_boot::initramfs::InitramfsError::InitNotStatic { .. } => {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Internal,
            };
            Error::with_source(kind, "cannot build the initramfs", e)
        })?;
        ignis_state::write_atomic(&path, &data)
            .map_err(|e| Error::internal("write the initramfs", e))?;
        self.store
            .db()
            .tx(|tx| tx.add_file(&path.display().to_string(), crate::kernel::KIND, &kernel.id))?;
        Ok(path)
    }

    /// Writes `vms/<id>/initrd.img` and returns what the backend boots.
    pub(crate) fn boot_spec(
        &self,
        rec: &VmRecord,
        driver: &dyn ignis_vmm::Driver,
    ) -> Result<VmSpec, Error> {
        let accel = rec.spec.accel;
        let dir = self.vm_dir(&rec.id);
        let kernel = self.kernel_inspect(&rec.kernel_id)?;
        let image = self.image_inspect(&rec.image_id)?;
        let initrd = dir.join("initrd.img");
        let mut files = Vec::new();
        let mut copies = Vec::new();
        // A directory is copied file by file (its regular files, at their
        // paths under the destination).
        let mut sources = Vec::new();
        for c in &rec.spec.copy_files {
            copy_sources(Path::new(&c.host), &c.vm, &mut sources).map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!("cannot read --copy-files source {}", c.host),
                    e,
                )
            })?;
        }
        for (i, (host, vm)) in sources.into_iter().enumerate() {
            let data = std::fs::read(&host).map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!("cannot read --copy-files source {}", host.display()),
                    e,
                )
            })?;
            let mode = std::fs::metadata(&host)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o644);
            files.push((format!("{i}"), data));
            copies.push(CopyFile {
                source: format!("/ignis/files/{i}"),
                dest: vm,
                mode,
            });
        }
        let dns = dns_plan(rec);
        let cfg = GuestConfig {
            mode: match rec.spec.mode {
                RunMode::App => Mode::App,
                RunMode::System => Mode::System,
            },
            hostname: rec.name.clone(),
            argv: rec.spec.command.clone(),
            env: rec.spec.env.clone(),
            workdir: rec.spec.workdir.clone(),
            user: rec.spec.user.clone(),
            image_disk: "LABEL=ignis-image".into(),
            data_disk: "LABEL=ignis-data".into(),
            nameservers: dns.nameservers.iter().map(ToString::to_string).collect(),
            search: dns.search.clone(),
            hosts: rec
                .spec
                .network
                .add_hosts
                .iter()
                .filter_map(|h| {
                    let (name, ip) = ignis_net::dns::parse_add_host(h).ok()?;
                    let ip = match ip.as_str() {
                        "host-gateway" => rec.spec.network.gateway.clone()?,
                        _ => ip,
                    };
                    Some((ip, name))
                })
                .collect(),
            files: copies,
            network: match (
                &rec.spec.network.ip,
                rec.spec.network.prefix,
                &rec.spec.network.gateway,
            ) {
                (Some(ip), Some(prefix), Some(gw)) => Some(ignis_guest_config::GuestNet {
                    ip: ip.clone(),
                    prefix,
                    gateway: gw.clone(),
                    // One NIC is eth0; among several, found by MAC.
                    mac: if rec.spec.network.interfaces.is_empty() {
                        None
                    } else {
                        rec.spec.network.mac.clone()
                    },
                    ip6: rec.spec.network.ip6.clone(),
                    prefix6: rec.spec.network.prefix6.unwrap_or(64),
                    gateway6: rec.spec.network.gateway6.clone(),
                }),
                _ => None,
            },
            // The first NIC is `network` when it has an address and a
            // gateway; otherwise (a macvtap left to the guest, or a network
            // without a router) it is configured as the others are.
            interfaces: rec
                .spec
                .network
                .nics()
                .iter()
                .skip(usize::from(
                    rec.spec.network.ip.is_some()
                        && rec.spec.network.prefix.is_some()
                        && rec.spec.network.gateway.is_some(),
                ))
                .filter_map(|n| {
                    Some(ignis_guest_config::GuestNic {
                        mac: n.mac.clone()?,
                        ip: n.ip.clone(),
                        prefix: n.prefix.unwrap_or(0),
                        ip6: n.ip6.clone(),
                        prefix6: n.prefix6.unwrap_or(64),
                        gateway6: n.gateway6.clone(),
                    })
                })
                .collect(),
            volumes: rec
                .spec
                .volumes
                .iter()
                .enumerate()
                .map(|(i, v)| ignis_guest_config::GuestVolume {
                    serial: volume_serial(i),
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            seed: rec.spec.has_seed(),
        };
        let vm_part = ignis_boot::initramfs::vm_part(&cfg, &files)
            .map_err(|e| Error::internal("build the VM's initramfs", e))?;
        let fake = !driver.capabilities(accel).initramfs;
        // The VM's initrd: the cached base (reflinked or copied in the
        // kernel), then the VM's own small archive appended (Linux unpacks
        // concatenated cpio archives in order).
        let base = if fake {
            None
        } else {
            Some(self.base_initramfs(&kernel.id)?)
        };
        let restoring = rec.spec.snapshot.is_some() && rec.status.restore_pending;
        // A resumed snapshot has its initramfs in its memory already: no
        // per-VM one (QEMU still opens a file to load at reset, before the
        // snapshot replaces its RAM: the cached base).
        let initrd = match (&base, restoring) {
            (Some(b), true) => b.clone(),
            _ => initrd,
        };
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&initrd);
            if let Some(base) = &base {
                ignis_state::fsutil::clone_or_copy(base, &initrd)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&initrd)?;
            std::io::Write::write_all(&mut f, &vm_part)
        };
        if !restoring || base.is_none() {
            write().map_err(|e| Error::internal("write the VM's initrd", e))?;
        }
        // cloud-init's NoCloud seed, rewritten at every boot (a fork's
        // record has its own ID, name and NICs): the last disk.
        let seed = if rec.spec.has_seed() {
            Some(
                super::seed::write_seed(&dir, rec, &dns)
                    .map_err(|e| Error::internal("write the cloud-init seed", e))?,
            )
        } else {
            None
        };
        let blob = |d: &str| {
            self.store
                .blobs()
                .path(d)
                .map_err(|e| Error::internal("locate a kernel blob", e))
        };
        Ok(VmSpec {
            id: rec.id.clone(),
            dir: dir.clone(),
            vmlinux: blob(&kernel.vmlinux_digest)?,
            initrd,
            cmdline: cmdline(driver, accel, rec.spec.kernel_args.as_deref()),
            vcpus: rec.spec.cpus,
            memory_mib: rec.spec.memory_mib,
            disks: [
                DiskSpec {
                    path: PathBuf::from(&image.disk_path),
                    read_only: true,
                    serial: None,
                },
                DiskSpec {
                    path: dir.join("data.ext4"),
                    read_only: false,
                    serial: None,
                },
            ]
            .into_iter()
            .chain(rec.spec.volumes.iter().enumerate().map(|(i, v)| DiskSpec {
                path: PathBuf::from(&v.path),
                read_only: v.read_only,
                serial: Some(volume_serial(i)),
            }))
            .chain(seed.map(|path| DiskSpec {
                path,
                read_only: true,
                serial: Some(super::seed::SEED_SERIAL.into()),
            }))
            .collect(),
            accel,
            net: nets(rec, &dir),
            netns: rec
                .spec
                .network
                .uses_cni()
                .then(|| ignis_net::cni::netns_path(&rec.id)),
            // A fork that has not run yet resumes its snapshot.
            restore: match (&rec.spec.snapshot, rec.status.restore_pending) {
                (Some(o), true) => Some(ignis_vmm::RestoreSpec {
                    state: blob(&o.state)?,
                    memory: blob(&o.memory)?,
                }),
                _ => None,
            },
            confine: Default::default(),
        })
    }
}

/// The virtio-blk serial of the `i`th volume's disk (at most 20 bytes).
fn volume_serial(i: usize) -> String {
    format!("ignis-vol{i}")
}

/// Each NIC's TAP and MAC: the bridge's TAP is named after the VM; a CNI
/// NIC's is `tapN` in the VM's namespace; a macvtap is its device node in
/// the VM's directory (made by `prepare_network`).
fn nets(rec: &VmRecord, dir: &Path) -> Vec<ignis_vmm::NetSpec> {
    rec.spec
        .network
        .nics()
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            Some(ignis_vmm::NetSpec {
                tap: match n.mode {
                    ignis_api::NetworkMode::Cni => ignis_net::cni::tap(i),
                    ignis_api::NetworkMode::Macvtap => ignis_net::macvtap::macvtap_name(&rec.id, i),
                    _ => ignis_net::tap_name(&rec.id),
                },
                mac: n.mac.clone()?,
                device: (n.mode == ignis_api::NetworkMode::Macvtap)
                    .then(|| super::network::macvtap_node(dir, i)),
            })
        })
        .collect()
}

/// The files of a `--copy-files HOST:VM`: `host` itself, or every regular
/// file under the directory `host` (in name order) at the same relative
/// path under `vm`.
fn copy_sources(
    host: &Path,
    vm: &str,
    out: &mut Vec<(std::path::PathBuf, String)>,
) -> std::io::Result<()> {
    if !std::fs::metadata(host)?.is_dir() {
        out.push((host.to_path_buf(), vm.to_string()));
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(host)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type()?;
        let dest = format!(
            "{}/{}",
            vm.trim_end_matches('/'),
            e.file_name().to_string_lossy()
        );
        if t.is_dir() || t.is_file() {
            copy_sources(&e.path(), &dest, out)?;
        }
    }
    Ok(())
}

/// The VM's DNS (`ignis_net::dns::plan`): `--dns`, else what the host's
/// resolvers let it reach, the bridge's gateway relaying as the last
/// resort. A VM without a network gets none (but its `--dns-search`).
pub(crate) fn dns_plan(rec: &VmRecord) -> ignis_net::dns::Plan {
    use ignis_net::dns::{plan, ResolvConf};
    let n = &rec.spec.network;
    let given: Vec<std::net::IpAddr> = n.dns.iter().filter_map(|d| d.parse().ok()).collect();
    if n.nics().is_empty() {
        return ignis_net::dns::Plan {
            search: n.dns_search.clone(),
            ..Default::default()
        };
    }
    let (host, upstream) = ResolvConf::host();
    let gateway = if n.mode == ignis_api::NetworkMode::Bridge {
        n.gateway.as_deref().and_then(|g| g.parse().ok())
    } else {
        None
    };
    plan(&given, &n.dns_search, &host, upstream.as_ref(), gateway)
}
