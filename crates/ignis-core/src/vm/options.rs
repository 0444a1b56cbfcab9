//! What a new VM should be: [`VmSettings`] as given (strings, as flags and
//! manifests carry them), layered with Ignite's precedence (environment
//! defaults < manifest < flags), parsed once into typed [`CreateOptions`].
//! The CLI (`run`, `create --config`), `apply` and the daemon all go
//! through [`VmSettings::parse`]; its errors name the field, and each front
//! end says it its own way (`--memory`, `spec.memory`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ignis_api::manifest::VmManifest;
use ignis_api::{BackendRequest, NetworkMode, RestartPolicy};

use crate::{Error, ErrorKind};

/// An input field of a VM's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Image,
    Name,
    Cpus,
    Memory,
    DiskSize,
    Kernel,
    Env,
    CopyFiles,
    Backend,
    Network,
    Ip,
    Ip6,
    Mac,
    Ports,
    Ssh,
    Restart,
    Dns,
    DnsSearch,
    AddHost,
    Volumes,
    VolumeSize,
    StopTimeout,
    UserData,
    MetaData,
}

impl Field {
    /// Its name in the API and in manifests (`spec.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Name => "name",
            Self::Cpus => "cpus",
            Self::Memory => "memory",
            Self::DiskSize => "diskSize",
            Self::Kernel => "kernel",
            Self::Env => "env",
            Self::CopyFiles => "copyFiles",
            Self::Backend => "backend",
            Self::Network => "network.mode",
            Self::Ip => "network.ip",
            Self::Ip6 => "network.ip6",
            Self::Mac => "network.mac",
            Self::Ports => "network.ports",
            Self::Ssh => "ssh",
            Self::Restart => "restart",
            Self::Dns => "network.dns",
            Self::DnsSearch => "network.dnsSearch",
            Self::AddHost => "network.addHosts",
            Self::Volumes => "volumes",
            Self::VolumeSize => "volumeSize",
            Self::StopTimeout => "stopTimeout",
            Self::UserData => "userData",
            Self::MetaData => "metaData",
        }
    }
}

impl Field {
    /// Every field, for [`Field::from_name`].
    pub const ALL: &'static [Field] = &[
        Self::Image,
        Self::Name,
        Self::Cpus,
        Self::Memory,
        Self::DiskSize,
        Self::Kernel,
        Self::Env,
        Self::CopyFiles,
        Self::Backend,
        Self::Network,
        Self::Ip,
        Self::Ip6,
        Self::Mac,
        Self::Ports,
        Self::Ssh,
        Self::Restart,
        Self::Dns,
        Self::DnsSearch,
        Self::AddHost,
        Self::Volumes,
        Self::VolumeSize,
        Self::StopTimeout,
        Self::UserData,
        Self::MetaData,
    ];

    /// The field named `name` in the API (what a daemon's problem carries).
    pub fn from_name(name: &str) -> Option<Field> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }
}

fn invalid(field: Field, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Invalid, message).about(field)
}

/// `--ssh`: a generated key pair, or this public key (a line or a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKey {
    Generate,
    Given(String),
}

/// A file copied into the VM at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFile {
    pub host: PathBuf,
    pub vm: String,
}

/// What `vm_create` takes: typed and validated as far as that needs no
/// state (image, kernel and snapshot are resolved by create).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub image: String,
    pub name: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size: Option<u64>,
    pub kernel: Option<String>,
    pub kernel_args: Option<String>,
    /// `KEY=VALUE`, checked.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub copy_files: Vec<CopyFile>,
    /// Replaces the image's Cmd (Docker semantics; Entrypoint is kept).
    pub command: Vec<String>,
    pub backend: BackendRequest,
    pub auto_remove: bool,
    pub restart: RestartPolicy,
    /// Seconds a stop waits by default (none: [`DEFAULT_STOP_TIMEOUT`]).
    pub stop_timeout: Option<u32>,
    /// Checked `--dns` addresses, `--dns-search`, `--add-host NAME:IP`.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub add_hosts: Vec<String>,
    pub network: NetworkMode,
    /// A fixed address on the bridge.
    pub ip: Option<Ipv4Addr>,
    /// A fixed IPv6 address on the bridge (IPv6 on).
    pub ip6: Option<std::net::Ipv6Addr>,
    /// A fixed MAC (six hex bytes, checked).
    pub mac: Option<String>,
    pub ports: Vec<ignis_net::PortMapping>,
    /// Mode `cni`: the first NIC's CNI network (`None`: the first conflist
    /// of the configuration directory, as libcni picks a default).
    pub cni: Option<String>,
    /// Mode `macvtap`: the first NIC's host interface and address.
    pub macvtap: Option<Macvtap>,
    /// The NICs after the first, in order.
    pub extra_nics: Vec<NicRequest>,
    /// Where the CNI plugins and conflists are (`None`: the defaults).
    pub cni_dirs: CniDirs,
    pub ssh: Option<SshKey>,
    /// `-v`: volumes to mount, in order.
    pub volumes: Vec<VolumeRequest>,
    /// `--volume-size`: bytes of a volume made on first use.
    pub volume_size: Option<u64>,
    /// cloud-init user-data and meta-data (checked: text, at most
    /// [`MAX_SEED_FILE`], meta-data a YAML mapping).
    pub user_data: Option<String>,
    pub meta_data: Option<String>,
    /// A fork: resume this snapshot (its resources, command, disk and
    /// memory) instead of booting; the options above that it fixes are
    /// ignored.
    pub from_snapshot: Option<String>,
}

/// What backs a `-v` volume, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// `-v /path`: a volume made for this VM (removed by `rm -v`).
    Anonymous,
    /// `-v NAME:/path`: a named volume, made on first use.
    Named(String),
    /// `-v /dev/sdb:/path`, `-v ./disk.ext4:/path`: a host block device
    /// or disk image file.
    Host(PathBuf),
}

/// One `-v` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    pub source: VolumeSource,
    /// Absolute path in the guest.
    pub target: String,
    pub read_only: bool,
}

/// Smallest volume ignis makes (ext4 needs room for its journal).
pub const MIN_VOLUME_SIZE: u64 = 16 << 20;

/// Seconds a stop waits for the guest when neither the stop nor the VM
/// names a timeout (Docker's default).
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;
/// The longest stop timeout a VM may carry: a day.
pub const MAX_STOP_TIMEOUT: u32 = 86_400;

/// One `-v` value: `[SOURCE:]VM_PATH[:ro|rw]`. A SOURCE that starts with
/// `/` or `.` is a host path, otherwise a volume name.
pub fn parse_volume(s: &str) -> Result<VolumeRequest, Error> {
    let bad = |why: &str| invalid(Field::Volumes, format!("{s:?}: {why}"));
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, None),
        [a, b] if b.starts_with('/') => (Some(*a), *b, None),
        [t, m] => (None, *t, Some(*m)),
        [a, b, m] => (Some(*a), *b, Some(*m)),
        _ => return Err(bad("want [SOURCE:]VM_PATH[:ro|rw]")),
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => return Err(bad(&format!("unknown mode '{m}' (want ro or rw)"))),
    };
    if !target.starts_with('/') {
        return Err(bad("the VM path must be absolute"));
    }
    if target.trim_end_matches('/').is_empty() || target.split('/').any(|c| c == "..") {
        return Err(bad("the VM path cannot be / or contain '..'"));
    }
    let source = match source {
        None => VolumeSource::Anonymous,
        Some("") => return Err(bad("empty source")),
        Some(p) if p.starts_with('/') || p.starts_with('.') => VolumeSource::Host(p.into()),
        Some(n) if super::valid_name(n) => VolumeSource::Named(n.to_string()),
        Some(n) => {
            return Err(bad(&format!(
                "'{n}' is neither a path (start it with / or ./) nor a volume name (letters, digits, '_', '.', '-')"
            )))
        }
    };
    Ok(VolumeRequest {
        source,
        target: target.trim_end_matches('/').to_string(),
        read_only,
    })
}

/// One more NIC: its network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicRequest {
    pub mode: NetworkMode,
    pub cni: Option<String>,
    pub macvtap: Option<Macvtap>,
}

/// A macvtap NIC (`macvtap:LINK[,ip=A.B.C.D/N][,gateway=IP][,mac=MAC]`):
/// the host interface it sits on and what the guest is told. No address:
/// the link is only brought up (a cloud-init image's network-config asks
/// the segment's DHCP server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macvtap {
    pub link: String,
    pub ip: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<String>,
}

impl Macvtap {
    /// A recorded macvtap NIC as a request for a clone of it: the same
    /// interface and address, a MAC of its own.
    pub fn for_clone(n: &ignis_api::NicSpec) -> Option<Self> {
        Some(Self {
            link: n.link.clone()?,
            ip: n.ip.as_deref().and_then(|a| a.parse().ok()).zip(n.prefix),
            gateway: n.gateway.as_deref().and_then(|g| g.parse().ok()),
            mac: None,
        })
    }
}

fn valid_mac(m: &str) -> bool {
    m.split(':').count() == 6
        && m.split(':')
            .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok())
}

/// `LINK[,ip=CIDR][,gateway=IP][,mac=MAC]` of a `macvtap:` network (the
/// key=value options as Docker's `--network name=NET,ip=...`).
fn parse_macvtap(s: &str) -> Result<Macvtap, Error> {
    let mut parts = s.split(',');
    let link = parts.next().unwrap_or_default();
    // A Linux interface name: 1-15 bytes, no '/', ':' or whitespace.
    if link.is_empty()
        || link.len() > 15
        || link.contains(['/', ':'])
        || link.contains(char::is_whitespace)
        || link == "."
        || link == ".."
    {
        return Err(invalid(
            Field::Network,
            format!("macvtap:{s}: {link:?} is not a host interface name (like eth1)"),
        ));
    }
    let mut m = Macvtap {
        link: link.to_string(),
        ip: None,
        gateway: None,
        mac: None,
    };
    for kv in parts {
        let bad = |why: String| invalid(Field::Network, format!("macvtap:{s}: {why}"));
        match kv.split_once('=') {
            Some(("ip", v)) => {
                let (a, p) = v.split_once('/').ok_or_else(|| {
                    bad(format!(
                        "ip={v}: give the prefix length, like ip=192.168.1.50/24"
                    ))
                })?;
                let a: Ipv4Addr = a
                    .parse()
                    .map_err(|_| bad(format!("ip={v}: {a} is not an IPv4 address")))?;
                let p: u8 = p
                    .parse()
                    .ok()
                    .filter(|p| (1..=32).contains(p))
                    .ok_or_else(|| bad(format!("ip={v}: the prefix length must be 1-32")))?;
                m.ip = Some((a, p));
            }
            Some(("gateway", v)) => {
                m.gateway = Some(
                    v.parse()
                        .map_err(|_| bad(format!("gateway={v}: not an IPv4 address")))?,
                );
            }
            Some(("mac", v)) => {
                if !valid_mac(v) {
                    return Err(bad(format!(
                        "mac={v}: want six hex bytes like 02:00:00:aa:bb:cc"
                    )));
                }
                m.mac = Some(v.to_ascii_lowercase());
            }
            _ => {
                return Err(bad(format!(
                    "unknown option {kv:?}: want ip=A.B.C.D/N, gateway=A.B.C.D or mac=MAC"
                )))
            }
        }
    }
    if let (Some(g), None) = (m.gateway, m.ip) {
        return Err(invalid(
            Field::Network,
            format!("macvtap:{s}: gateway={g} needs an address (ip=A.B.C.D/N)"),
        ));
    }
    Ok(m)
}

/// `--cni-conf-dir`, `--cni-bin-dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniDirs {
    pub conf: Option<PathBuf>,
    pub bin: Option<PathBuf>,
}

/// One `--network` value: `bridge`, `none`, `cni`, `cni:NAME` or
/// `macvtap:LINK[,OPTIONS]`.
pub fn parse_network(s: &str) -> Result<NicRequest, Error> {
    if let Some(rest) = s.strip_prefix("macvtap:") {
        return Ok(NicRequest {
            mode: NetworkMode::Macvtap,
            cni: None,
            macvtap: Some(parse_macvtap(rest)?),
        });
    }
    if s == "macvtap" {
        return Err(invalid(
            Field::Network,
            "macvtap needs the host interface to sit on: macvtap:eth1",
        ));
    }
    let (mode, cni) = match s {
        "" | "bridge" => (NetworkMode::Bridge, None),
        "none" => (NetworkMode::None, None),
        "cni" => (NetworkMode::Cni, None),
        other => match other.strip_prefix("cni:") {
            Some(name) if ignis_net::cni::valid_network_name(name) => {
                (NetworkMode::Cni, Some(name.to_string()))
            }
            Some(name) => {
                return Err(invalid(
                    Field::Network,
                    format!("{name:?} is not a CNI network name (letters, digits, '_', '.', '-')"),
                ))
            }
            None => {
                return Err(invalid(
                    Field::Network,
                    format!("{other}: want bridge, none, cni, cni:NAME or macvtap:LINK"),
                ))
            }
        },
    };
    Ok(NicRequest {
        mode,
        cni,
        macvtap: None,
    })
}

/// A VM's settings as given: every field optional, strings as flags and
/// manifests write them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSettings {
    pub image: Option<String>,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub cpus: Option<u32>,
    pub memory: Option<String>,
    pub disk_size: Option<String>,
    pub kernel: Option<String>,
    pub kernel_args: Option<String>,
    pub env: Vec<String>,
    pub copy_files: Vec<String>,
    pub command: Vec<String>,
    pub backend: Option<String>,
    pub network: Option<String>,
    pub ip: Option<String>,
    /// `--ip6`.
    pub ip6: Option<String>,
    pub mac: Option<String>,
    pub ports: Vec<String>,
    /// The NICs after the first (`--network` given again), as `network`.
    pub networks: Vec<String>,
    pub cni_conf_dir: Option<String>,
    pub cni_bin_dir: Option<String>,
    pub ssh: Option<String>,
    pub auto_remove: bool,
    /// `--restart`.
    pub restart: Option<String>,
    /// `--dns`, `--dns-search`, `--add-host NAME:IP`.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub add_hosts: Vec<String>,
    /// `-v` values.
    pub volumes: Vec<String>,
    pub volume_size: Option<String>,
    /// `--stop-timeout`, seconds.
    pub stop_timeout: Option<u32>,
    /// `--user-data`, `--meta-data`: the contents (the CLI reads the files).
    pub user_data: Option<String>,
    pub meta_data: Option<String>,
}

impl VmSettings {
    /// A manifest's VM as settings.
    pub fn from_manifest(m: &VmManifest) -> Self {
        let s = &m.spec;
        let mut net = s.network.clone().unwrap_or_default();
        let mut networks: Vec<String> = Vec::new();
        // `interfaces` lists every NIC; with `mode` set, the ones after it.
        if net.mode.is_none() && !net.interfaces.is_empty() {
            net.mode = Some(net.interfaces.remove(0).network);
        }
        networks.extend(net.interfaces.iter().map(|i| i.network.clone()));
        Self {
            image: (!s.image.is_empty()).then(|| s.image.clone()),
            name: (!m.metadata.name.is_empty()).then(|| m.metadata.name.clone()),
            labels: m.metadata.labels.clone(),
            cpus: s.cpus,
            memory: s.memory.clone(),
            disk_size: s.disk_size.clone(),
            kernel: s.kernel.clone(),
            kernel_args: s.kernel_args.clone(),
            env: s.env.clone(),
            copy_files: s.copy_files.clone(),
            command: s.command.clone(),
            backend: s.backend.clone(),
            network: net.mode,
            ip: net.ip,
            ip6: net.ip6,
            mac: net.mac,
            ports: net.ports,
            networks,
            cni_conf_dir: None,
            cni_bin_dir: None,
            ssh: s.ssh.clone(),
            auto_remove: false,
            restart: s.restart.clone(),
            dns: s
                .network
                .as_ref()
                .map(|n| n.dns.clone())
                .unwrap_or_default(),
            dns_search: s
                .network
                .as_ref()
                .map(|n| n.dns_search.clone())
                .unwrap_or_default(),
            add_hosts: s
                .network
                .as_ref()
                .map(|n| n.add_hosts.clone())
                .unwrap_or_default(),
            volumes: s.volumes.clone(),
            volume_size: s.volume_size.clone(),
            stop_timeout: s.stop_timeout,
            user_data: s.user_data.clone(),
            meta_data: s.meta_data.clone(),
        }
    }

    /// The defaults this host's environment sets (`IGNIS_BACKEND`,
    /// `IGNIS_NETWORK`).
    pub fn from_environment() -> Self {
        Self {
            backend: std::env::var("IGNIS_BACKEND").ok(),
            network: std::env::var("IGNIS_NETWORK").ok(),
            cni_conf_dir: std::env::var("IGNIS_CNI_CONF_DIR").ok(),
            cni_bin_dir: std::env::var("IGNIS_CNI_BIN_DIR").ok(),
            ..Default::default()
        }
    }

    /// These settings as a VM manifest (what the CLI sends a daemon), the
    /// inverse of [`VmSettings::from_manifest`]; `auto_remove` has no
    /// manifest field and travels on its own. Every field is named here, so
    /// a new one cannot be forgotten.
    pub fn to_manifest(&self) -> VmManifest {
        let VmSettings {
            image,
            name,
            labels,
            cpus,
            memory,
            disk_size,
            kernel,
            kernel_args,
            env,
            copy_files,
            command,
            backend,
            network,
            ip,
            ip6,
            mac,
            ports,
            networks,
            // Directories on the host that runs the VM: a daemon uses its
            // own (IGNIS_CNI_CONF_DIR, IGNIS_CNI_BIN_DIR).
            cni_conf_dir: _,
            cni_bin_dir: _,
            ssh,
            auto_remove: _,
            restart,
            dns,
            dns_search,
            add_hosts,
            volumes,
            volume_size,
            stop_timeout,
            user_data,
            meta_data,
        } = self.clone();
        let net = ignis_api::manifest::ManifestNetwork {
            mode: network,
            ports,
            ip,
            ip6,
            mac,
            interfaces: networks
                .into_iter()
                .map(|network| ignis_api::manifest::ManifestInterface { network })
                .collect(),
            dns,
            dns_search,
            add_hosts,
        };
        VmManifest {
            api_version: ignis_api::manifest::API_VERSION.into(),
            kind: "VM".into(),
            metadata: ignis_api::manifest::Metadata {
                name: name.unwrap_or_default(),
                labels,
                annotations: Default::default(),
            },
            spec: ignis_api::manifest::VmManifestSpec {
                image: image.unwrap_or_default(),
                kernel,
                kernel_args,
                cpus,
                memory,
                disk_size,
                command,
                env,
                backend,
                network: (net != Default::default()).then_some(net),
                ssh,
                copy_files,
                restart,
                volumes,
                volume_size,
                stop_timeout,
                user_data,
                meta_data,
                running: true,
                // Placement is the fleet's, not a VM setting: a VM created
                // through the API runs on the daemon asked.
                node_name: None,
                node_selector: Default::default(),
                replicas: None,
            },
            status: None,
        }
    }

    /// `top` over `self`: a value `top` sets wins; lists (env, files,
    /// ports) and labels add up, `self`'s first; a command replaces.
    pub fn overlay(self, top: VmSettings) -> Self {
        let mut labels = self.labels;
        labels.extend(top.labels);
        let join = |a: Vec<String>, b: Vec<String>| a.into_iter().chain(b).collect();
        Self {
            image: top.image.or(self.image),
            name: top.name.or(self.name),
            labels,
            cpus: top.cpus.or(self.cpus),
            memory: top.memory.or(self.memory),
            disk_size: top.disk_size.or(self.disk_size),
            kernel: top.kernel.or(self.kernel),
            kernel_args: top.kernel_args.or(self.kernel_args),
            env: join(self.env, top.env),
            copy_files: join(self.copy_files, top.copy_files),
            command: if top.command.is_empty() {
                self.command
            } else {
                top.command
            },
            backend: top.backend.or(self.backend),
            network: top.network.clone().or(self.network),
            ip: top.ip.or(self.ip),
            ip6: top.ip6.or(self.ip6),
            mac: top.mac.or(self.mac),
            ports: join(self.ports, top.ports),
            // Several NICs are one choice: the layer that names the first
            // NIC names the others too.
            networks: if top.network.is_some() {
                top.networks
            } else {
                self.networks
            },
            cni_conf_dir: top.cni_conf_dir.or(self.cni_conf_dir),
            cni_bin_dir: top.cni_bin_dir.or(self.cni_bin_dir),
            ssh: top.ssh.or(self.ssh),
            auto_remove: top.auto_remove || self.auto_remove,
            restart: top.restart.or(self.restart),
            dns: join(self.dns, top.dns),
            dns_search: join(self.dns_search, top.dns_search),
            add_hosts: join(self.add_hosts, top.add_hosts),
            volumes: join(self.volumes, top.volumes),
            volume_size: top.volume_size.or(self.volume_size),
            stop_timeout: top.stop_timeout.or(self.stop_timeout),
            user_data: top.user_data.or(self.user_data),
            meta_data: top.meta_data.or(self.meta_data),
        }
    }

    /// Parses and checks everything that needs no state.
    pub fn parse(self) -> Result<CreateOptions, Error> {
        let image = self.image.filter(|i| !i.is_empty()).ok_or_else(|| {
            invalid(
                Field::Image,
                "no image given (name one, or spec.image in the manifest)",
            )
        })?;
        let size = |field: Field, v: Option<String>, unit: u64| {
            v.map(|x| {
                ignis_api::parse_size(&x, unit)
                    .map_err(|e| Error::wrap(ErrorKind::Invalid, e).about(field))
            })
            .transpose()
        };
        let memory_mib = size(Field::Memory, self.memory, 1 << 20)?
            .map(|b| u32::try_from(b >> 20).unwrap_or(u32::MAX));
        if let Some(m) = memory_mib {
            if !(64..=(1 << 20)).contains(&m) {
                return Err(invalid(
                    Field::Memory,
                    format!("{m}MiB is out of range (64MiB to 1TiB)"),
                ));
            }
        }
        let disk_size = size(Field::DiskSize, self.disk_size, 1)?;
        let volume_size = size(Field::VolumeSize, self.volume_size, 1)?;
        if let Some(v) = volume_size {
            if v < MIN_VOLUME_SIZE {
                return Err(invalid(
                    Field::VolumeSize,
                    format!("{v} bytes is too small for a volume (at least 16MB)"),
                ));
            }
            if v > crate::volume::MAX_VOLUME_SIZE {
                return Err(invalid(
                    Field::VolumeSize,
                    format!("{v} bytes is too large for a volume (at most 8TB)"),
                ));
            }
        }
        let mut volumes: Vec<VolumeRequest> = Vec::new();
        for v in &self.volumes {
            let req = parse_volume(v)?;
            if volumes.iter().any(|o| o.target == req.target) {
                return Err(invalid(
                    Field::Volumes,
                    format!("{v:?}: two volumes are mounted at {}", req.target),
                ));
            }
            volumes.push(req);
        }
        if let Some(d) = disk_size {
            if d < (32 << 20) {
                return Err(invalid(
                    Field::DiskSize,
                    format!("{d} bytes is too small for the writable disk (at least 32MB)"),
                ));
            }
        }
        for kv in &self.env {
            if !kv.contains('=') || kv.starts_with('=') {
                return Err(invalid(Field::Env, format!("{kv}: want KEY=VALUE")));
            }
        }
        let mut copy_files = Vec::new();
        for c in &self.copy_files {
            let Some((host, vm)) = c.split_once(':') else {
                return Err(invalid(
                    Field::CopyFiles,
                    format!("{c}: want HOST_PATH:VM_PATH"),
                ));
            };
            if !vm.starts_with('/') {
                return Err(invalid(
                    Field::CopyFiles,
                    format!("{c}: the VM path must be absolute"),
                ));
            }
            copy_files.push(CopyFile {
                host: host.into(),
                vm: vm.to_string(),
            });
        }
        let backend: BackendRequest = self.backend.as_deref().unwrap_or("auto").parse().map_err(
            |e: ignis_api::state::UnknownBackend| invalid(Field::Backend, e.to_string()),
        )?;
        // `none` among several contributes no NIC.
        let mut nics = Vec::new();
        for n in std::iter::once(self.network.as_deref().unwrap_or("bridge"))
            .chain(self.networks.iter().map(String::as_str))
        {
            let nic = parse_network(n)?;
            if nic.mode != NetworkMode::None {
                nics.push(nic);
            }
        }
        if nics
            .iter()
            .filter(|n| n.mode == NetworkMode::Bridge)
            .count()
            > 1
        {
            return Err(invalid(
                Field::Network,
                "a VM has at most one NIC on the bridge network",
            ));
        }
        let mut nics = nics.into_iter();
        let (network, cni, macvtap) = match nics.next() {
            Some(first) => (first.mode, first.cni, first.macvtap),
            None => (NetworkMode::None, None, None),
        };
        let extra_nics: Vec<NicRequest> = nics.collect();
        let mut ports = Vec::new();
        for p in &self.ports {
            ports.push(
                ignis_net::parse_port(p)
                    .map_err(|e| Error::wrap(ErrorKind::Invalid, e).about(Field::Ports))?,
            );
        }
        let ip = match &self.ip {
            Some(ip) => Some(
                ip.parse()
                    .map_err(|_| invalid(Field::Ip, format!("{ip} is not an IPv4 address")))?,
            ),
            None => None,
        };
        let ip6 = match &self.ip6 {
            Some(ip) => Some(
                ip.parse()
                    .map_err(|_| invalid(Field::Ip6, format!("{ip} is not an IPv6 address")))?,
            ),
            None => None,
        };
        if let Some(m) = &self.mac {
            if !valid_mac(m) {
                return Err(invalid(
                    Field::Mac,
                    format!("{m}: want six hex bytes like 02:00:00:aa:bb:cc"),
                ));
            }
        }
        let on_bridge = network == NetworkMode::Bridge
            || extra_nics.iter().any(|n| n.mode == NetworkMode::Bridge);
        // Without a bridge NIC, a CNI network's portmap serves them.
        let on_cni =
            network == NetworkMode::Cni || extra_nics.iter().any(|n| n.mode == NetworkMode::Cni);
        if !on_bridge && !on_cni && !ports.is_empty() {
            return Err(invalid(
                Field::Ports,
                "published ports need the bridge network or a CNI network with the portmap plugin",
            ));
        }
        if network == NetworkMode::Macvtap && self.mac.is_some() {
            return Err(invalid(
                Field::Mac,
                "give a macvtap NIC's MAC in its network: --network macvtap:eth1,mac=02:00:00:aa:bb:cc",
            ));
        }
        if network == NetworkMode::Cni && self.mac.is_some() {
            return Err(invalid(
                Field::Mac,
                "a CNI NIC has the MAC of the interface its plugins made",
            ));
        }
        if network != NetworkMode::Bridge && ip.is_some() {
            return Err(invalid(
                Field::Ip,
                "a fixed address needs the bridge network",
            ));
        }
        if !on_bridge && ip6.is_some() {
            return Err(invalid(
                Field::Ip6,
                "a fixed IPv6 address needs the bridge network",
            ));
        }
        let restart: RestartPolicy = self
            .restart
            .as_deref()
            .unwrap_or("no")
            .parse()
            .map_err(|e: ignis_api::BadRestartPolicy| invalid(Field::Restart, e.to_string()))?;
        let mut dns = Vec::new();
        for d in &self.dns {
            let ip: std::net::IpAddr = d
                .parse()
                .map_err(|_| invalid(Field::Dns, format!("{d} is not an IP address")))?;
            dns.push(ip.to_string());
        }
        for d in &self.dns_search {
            if d.is_empty() || d.contains(char::is_whitespace) {
                return Err(invalid(
                    Field::DnsSearch,
                    format!("{d:?} is not a search domain"),
                ));
            }
        }
        for h in &self.add_hosts {
            ignis_net::dns::parse_add_host(h).map_err(|e| invalid(Field::AddHost, e))?;
        }
        if let Some(t) = self.stop_timeout {
            if t > MAX_STOP_TIMEOUT {
                return Err(invalid(
                    Field::StopTimeout,
                    format!("{t} seconds: at most {MAX_STOP_TIMEOUT} (a day)"),
                ));
            }
        }
        if let Some(u) = &self.user_data {
            check_seed_file(Field::UserData, u)?;
        }
        if let Some(m) = &self.meta_data {
            check_seed_file(Field::MetaData, m)?;
            crate::vm::seed::parse_meta_data(m).map_err(|e| invalid(Field::MetaData, e))?;
        }
        if self.auto_remove && !restart.is_no() {
            return Err(invalid(
                Field::Restart,
                "cannot be combined with removing the VM when it exits (a removed VM cannot restart)",
            ));
        }
        if let Some(n) = &self.name {
            if !super::valid_name(n) {
                return Err(invalid(
                    Field::Name,
                    format!("invalid name '{n}': use letters, digits, '_', '.', '-', starting with a letter or digit"),
                ));
            }
        }
        Ok(CreateOptions {
            image,
            name: self.name,
            cpus: self.cpus,
            memory_mib,
            disk_size,
            kernel: self.kernel,
            kernel_args: self.kernel_args,
            env: self.env,
            labels: self.labels,
            copy_files,
            command: self.command,
            backend,
            auto_remove: self.auto_remove,
            restart,
            stop_timeout: self.stop_timeout,
            dns,
            dns_search: self.dns_search,
            add_hosts: self.add_hosts,
            network,
            ip,
            ip6,
            mac: self.mac,
            ports,
            cni,
            macvtap,
            extra_nics,
            cni_dirs: CniDirs {
                conf: self.cni_conf_dir.map(PathBuf::from),
                bin: self.cni_bin_dir.map(PathBuf::from),
            },
            ssh: self.ssh.map(|s| {
                if s.is_empty() {
                    SshKey::Generate
                } else {
                    SshKey::Given(s)
                }
            }),
            from_snapshot: None,
            volumes,
            volume_size,
            user_data: self.user_data,
            meta_data: self.meta_data,
        })
    }
}

/// The largest user-data or meta-data ignis puts on a seed disk.
pub const MAX_SEED_FILE: usize = 1 << 20;

/// user-data and meta-data are text (UTF-8 without NUL bytes: the CLI
/// reads the file as bytes and says the same) of at most 1 MiB.
pub fn check_seed_file(field: Field, content: &str) -> Result<(), Error> {
    if content.len() > MAX_SEED_FILE {
        return Err(invalid(
            field,
            format!("{} bytes is too large (at most 1 MiB)", content.len()),
        ));
    }
    if content.contains('\0') {
        return Err(invalid(
            field,
            "not text: it contains NUL bytes (compressed or binary cloud-init data is not supported)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_values_parse_as_docker_writes_them() {
        let v = |s: &str| parse_volume(s).unwrap();
        assert_eq!(
            v("/scratch"),
            VolumeRequest {
                source: VolumeSource::Anonymous,
                target: "/scratch".into(),
                read_only: false
            }
        );
        assert!(v("/scratch:ro").read_only);
        assert_eq!(
            v("db:/var/lib/db/").source,
            VolumeSource::Named("db".into())
        );
        assert_eq!(v("db:/var/lib/db/").target, "/var/lib/db");
        assert_eq!(
            v("./data.ext4:/data:ro"),
            VolumeRequest {
                source: VolumeSource::Host("./data.ext4".into()),
                target: "/data".into(),
                read_only: true
            }
        );
        assert_eq!(
            v("/dev/sdb:/b:rw").source,
            VolumeSource::Host("/dev/sdb".into())
        );
        for bad in [
            "a:b:c:d",
            "db:data",
            "data",
            "db:/d:rx",
            ":/d",
            "db:/",
            "db:/a/../b",
            "a b:/d",
        ] {
            let e = parse_volume(bad).unwrap_err();
            assert_eq!(e.field, Some(Field::Volumes), "{bad}");
            assert_eq!(e.kind, ErrorKind::Invalid, "{bad}");
        }
    }

    fn base() -> VmSettings {
        VmSettings {
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    #[test]
    fn settings_survive_the_trip_through_a_manifest() {
        let s = VmSettings {
            image: Some("app:1".into()),
            name: Some("web".into()),
            labels: [("team".to_string(), "a".to_string())].into(),
            cpus: Some(2),
            memory: Some("256MB".into()),
            disk_size: Some("2GB".into()),
            kernel: Some("k".into()),
            kernel_args: Some("quiet".into()),
            env: vec!["A=1".into()],
            copy_files: vec!["/etc/hosts:/etc/h".into()],
            command: vec!["sleep".into(), "1".into()],
            backend: Some("qemu".into()),
            network: Some("bridge".into()),
            ip: Some("10.61.0.9".into()),
            ip6: Some("fd00::9".into()),
            mac: Some("02:00:00:00:00:09".into()),
            ports: vec!["8080:80".into()],
            networks: vec!["cni:backend".into()],
            cni_conf_dir: None,
            cni_bin_dir: None,
            ssh: Some(String::new()),
            auto_remove: false,
            restart: Some("on-failure:3".into()),
            dns: vec!["10.0.0.2".into()],
            dns_search: vec!["corp.example".into()],
            add_hosts: vec!["db:10.0.0.5".into()],
            volumes: vec!["db:/var/lib/db".into(), "/dev/sdb:/b:ro".into()],
            volume_size: Some("2GB".into()),
            stop_timeout: Some(30),
            user_data: Some("#cloud-config\nhostname: h\n".into()),
            meta_data: Some("zone: east\n".into()),
        };
        assert_eq!(VmSettings::from_manifest(&s.to_manifest()), s);
        // Nothing set: no network section, no name.
        let m = base().to_manifest();
        assert_eq!(m.spec.network, None);
        assert_eq!(m.metadata.name, "");
    }

    #[test]
    fn precedence_is_environment_then_manifest_then_flags() {
        let env = VmSettings {
            backend: Some("qemu".into()),
            network: Some("none".into()),
            ..Default::default()
        };
        let manifest = VmSettings {
            image: Some("app:1".into()),
            memory: Some("256MB".into()),
            network: Some("bridge".into()),
            env: vec!["A=1".into()],
            ports: vec!["8080:80".into()],
            labels: [("team".to_string(), "a".to_string())].into(),
            command: vec!["sleep".into(), "1".into()],
            ..Default::default()
        };
        let flags = VmSettings {
            memory: Some("512MB".into()),
            env: vec!["B=2".into()],
            labels: [("team".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        let o = env.overlay(manifest).overlay(flags).parse().unwrap();
        assert_eq!(o.image, "app:1");
        assert_eq!(o.memory_mib, Some(512), "flags win");
        assert_eq!(
            o.backend,
            BackendRequest::Kind(ignis_api::BackendKind::Qemu),
            "environment default kept"
        );
        assert_eq!(
            o.network,
            NetworkMode::Bridge,
            "the manifest beats the environment"
        );
        assert_eq!(o.env, ["A=1", "B=2"], "lists add up");
        assert_eq!(o.ports.len(), 1);
        assert_eq!(o.labels["team"], "b");
        assert_eq!(
            o.command,
            ["sleep", "1"],
            "no command given: the manifest's"
        );
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let bad = |s: VmSettings| s.parse().unwrap_err();
        let cases = [
            (
                VmSettings {
                    image: None,
                    ..base()
                },
                Field::Image,
            ),
            (
                VmSettings {
                    restart: Some("sometimes".into()),
                    ..base()
                },
                Field::Restart,
            ),
            (
                VmSettings {
                    restart: Some("always".into()),
                    auto_remove: true,
                    ..base()
                },
                Field::Restart,
            ),
            (
                VmSettings {
                    dns: vec!["resolver.example".into()],
                    ..base()
                },
                Field::Dns,
            ),
            (
                VmSettings {
                    dns_search: vec!["a b".into()],
                    ..base()
                },
                Field::DnsSearch,
            ),
            (
                VmSettings {
                    add_hosts: vec!["db=10.0.0.1".into()],
                    ..base()
                },
                Field::AddHost,
            ),
            (
                VmSettings {
                    memory: Some("lots".into()),
                    ..base()
                },
                Field::Memory,
            ),
            (
                VmSettings {
                    memory: Some("16MB".into()),
                    ..base()
                },
                Field::Memory,
            ),
            (
                VmSettings {
                    disk_size: Some("1MB".into()),
                    ..base()
                },
                Field::DiskSize,
            ),
            (
                VmSettings {
                    env: vec!["=x".into()],
                    ..base()
                },
                Field::Env,
            ),
            (
                VmSettings {
                    copy_files: vec!["a".into()],
                    ..base()
                },
                Field::CopyFiles,
            ),
            (
                VmSettings {
                    copy_files: vec!["a:rel".into()],
                    ..base()
                },
                Field::CopyFiles,
            ),
            (
                VmSettings {
                    backend: Some("xen".into()),
                    ..base()
                },
                Field::Backend,
            ),
            (
                VmSettings {
                    network: Some("host".into()),
                    ..base()
                },
                Field::Network,
            ),
            (
                VmSettings {
                    ports: vec!["x".into()],
                    ..base()
                },
                Field::Ports,
            ),
            (
                VmSettings {
                    ip: Some("10.0.0".into()),
                    ..base()
                },
                Field::Ip,
            ),
            (
                VmSettings {
                    mac: Some("02:00".into()),
                    ..base()
                },
                Field::Mac,
            ),
            (
                VmSettings {
                    name: Some("-x".into()),
                    ..base()
                },
                Field::Name,
            ),
            (
                VmSettings {
                    network: Some("none".into()),
                    ports: vec!["80:80".into()],
                    ..base()
                },
                Field::Ports,
            ),
        ];
        for (s, field) in cases {
            let e = bad(s.clone());
            assert_eq!(e.field, Some(field), "{s:?}: {e}");
            assert_eq!(e.kind, ErrorKind::Invalid);
            assert!(
                !e.message.contains("--"),
                "core names no flag: {}",
                e.message
            );
        }
        assert_eq!(
            bad(VmSettings {
                memory: Some("16MB".into()),
                ..base()
            })
            .to_string(),
            "memory: 16MiB is out of range (64MiB to 1TiB)"
        );
    }

    #[test]
    fn ssh_and_defaults() {
        let o = VmSettings {
            ssh: Some(String::new()),
            ..base()
        }
        .parse()
        .unwrap();
        assert_eq!(o.ssh, Some(SshKey::Generate));
        assert_eq!(o.backend, BackendRequest::Auto);
        assert_eq!(o.network, NetworkMode::Bridge);
        let o = VmSettings {
            ssh: Some("ssh-ed25519 AAA x".into()),
            ..base()
        }
        .parse()
        .unwrap();
        assert_eq!(o.ssh, Some(SshKey::Given("ssh-ed25519 AAA x".into())));
    }

    #[test]
    fn several_nics_cni_and_their_rules() {
        let bad = |s: VmSettings| s.parse().unwrap_err();
        let o = VmSettings {
            network: Some("bridge".into()),
            networks: vec!["none".into(), "cni:backend".into(), "cni".into()],
            ports: vec!["8080:80".into()],
            ..base()
        }
        .parse()
        .unwrap();
        assert_eq!((o.network, o.cni.clone()), (NetworkMode::Bridge, None));
        assert_eq!(
            o.extra_nics,
            [
                NicRequest {
                    mode: NetworkMode::Cni,
                    cni: Some("backend".into()),
                    macvtap: None,
                },
                NicRequest {
                    mode: NetworkMode::Cni,
                    cni: None,
                    macvtap: None,
                }
            ]
        );
        // `none` first: the next NIC is eth0; ports need a bridge NIC
        // somewhere.
        let o = VmSettings {
            network: Some("none".into()),
            networks: vec!["cni:a".into(), "bridge".into()],
            ports: vec!["8080:80".into()],
            ..base()
        }
        .parse()
        .unwrap();
        assert_eq!((o.network, o.cni.as_deref()), (NetworkMode::Cni, Some("a")));
        assert_eq!(o.extra_nics[0].mode, NetworkMode::Bridge);
        let e = bad(VmSettings {
            network: Some("bridge".into()),
            networks: vec!["bridge".into()],
            ..base()
        });
        assert_eq!(
            e.to_string(),
            "network.mode: a VM has at most one NIC on the bridge network"
        );
        // Ports on a CNI network only: its portmap plugin's (checked at
        // create, with the conflist); with no NIC at all: refused.
        let o = VmSettings {
            network: Some("cni:a".into()),
            ports: vec!["8080:80".into()],
            ..base()
        }
        .parse()
        .unwrap();
        assert_eq!(o.ports.len(), 1);
        assert_eq!(
            bad(VmSettings {
                network: Some("none".into()),
                ports: vec!["8080:80".into()],
                ..base()
            })
            .to_string(),
            "network.ports: published ports need the bridge network or a CNI network with the portmap plugin"
        );
        for (s, field) in [
            (
                VmSettings {
                    network: Some("cni:a".into()),
                    mac: Some("02:00:00:00:00:01".into()),
                    ..base()
                },
                Field::Mac,
            ),
            (
                VmSettings {
                    network: Some("cni:a".into()),
                    ip: Some("10.0.0.2".into()),
                    ..base()
                },
                Field::Ip,
            ),
            (
                VmSettings {
                    network: Some("cni:../x".into()),
                    ..base()
                },
                Field::Network,
            ),
            (
                VmSettings {
                    network: Some("macvlan".into()),
                    ..base()
                },
                Field::Network,
            ),
        ] {
            assert_eq!(bad(s).field, Some(field));
        }
    }

    #[test]
    fn manifest_interfaces_are_the_nics_and_flags_replace_them() {
        let m: VmManifest = serde_yaml::from_str(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: a}\nspec:\n  image: busybox\n  network:\n    interfaces: [{network: bridge}, {network: \"cni:backend\"}]\n",
        )
        .unwrap();
        let s = VmSettings::from_manifest(&m);
        assert_eq!(s.network.as_deref(), Some("bridge"));
        assert_eq!(s.networks, ["cni:backend"]);
        let flags = VmSettings {
            network: Some("cni:other".into()),
            ..Default::default()
        };
        let o = s.clone().overlay(flags).parse().unwrap();
        assert_eq!(
            (o.network, o.cni.as_deref()),
            (NetworkMode::Cni, Some("other"))
        );
        assert!(o.extra_nics.is_empty());
        let o = s.parse().unwrap();
        assert_eq!(o.extra_nics.len(), 1);
    }

    #[test]
    fn macvtap_networks_parse_with_docker_style_options() {
        let n = parse_network("macvtap:eth1").unwrap();
        assert_eq!(n.mode, NetworkMode::Macvtap);
        assert_eq!(
            n.macvtap,
            Some(Macvtap {
                link: "eth1".into(),
                ip: None,
                gateway: None,
                mac: None
            })
        );
        let n = parse_network(
            "macvtap:enp3s0,ip=192.168.1.50/24,gateway=192.168.1.1,mac=02:AA:00:00:00:01",
        )
        .unwrap()
        .macvtap
        .unwrap();
        assert_eq!(n.ip, Some(("192.168.1.50".parse().unwrap(), 24)));
        assert_eq!(n.gateway, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(n.mac.as_deref(), Some("02:aa:00:00:00:01"));
        for (bad, says) in [
            ("macvtap", "macvtap:eth1"),
            ("macvtap:", "not a host interface name"),
            ("macvtap:a/b", "not a host interface name"),
            ("macvtap:averyveryverylongname", "not a host interface name"),
            ("macvtap:eth1,ip=10.0.0.5", "prefix length"),
            ("macvtap:eth1,ip=10.0.0.5/33", "1-32"),
            ("macvtap:eth1,ip=10.0.0/24", "not an IPv4 address"),
            ("macvtap:eth1,gateway=10.0.0.1", "needs an address"),
            ("macvtap:eth1,mac=02:00", "six hex bytes"),
            ("macvtap:eth1,mtu=9000", "unknown option"),
        ] {
            let e = parse_network(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        // On the command line: the first NIC or another; --mac and --ip
        // belong to the bridge.
        let o = VmSettings {
            image: Some("busybox".into()),
            network: Some("bridge".into()),
            networks: vec!["macvtap:eth1,ip=10.9.0.2/24".into()],
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(o.extra_nics[0].mode, NetworkMode::Macvtap);
        assert!(o.macvtap.is_none());
        let e = VmSettings {
            image: Some("busybox".into()),
            network: Some("macvtap:eth1".into()),
            mac: Some("02:00:00:00:00:01".into()),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert!(e.to_string().contains("macvtap:eth1,mac="), "{e}");
        let e = VmSettings {
            image: Some("busybox".into()),
            network: Some("macvtap:eth1".into()),
            ip: Some("10.61.0.9".into()),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert!(e.to_string().contains("bridge"), "{e}");
    }
}
