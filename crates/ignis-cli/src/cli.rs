use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// Docker-style microVMs on Firecracker and QEMU.
#[derive(Debug, Parser)]
#[command(name = "ignis", version)]
pub struct Cli {
    /// State directory.
    #[arg(long, global = true, env = "IGNIS_ROOT", default_value = ignis_core::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log filter (error, warn, info, debug, trace or a tracing filter); IGNIS_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    /// Log format: text, or json (one JSON object per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "IGNIS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// No progress bars (they appear only when stderr is a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Subnet of the bridge network.
    #[arg(
        long,
        global = true,
        env = "IGNIS_SUBNET",
        default_value = "10.61.0.0/16"
    )]
    pub subnet: String,
    /// IPv6 on the bridge network: `auto` (a ULA /64 derived from --subnet)
    /// or a prefix like fd00:1:2:3::/64; off (default): IPv4 only.
    #[arg(
        long,
        global = true,
        env = "IGNIS_SUBNET6",
        value_name = "auto|PREFIX|off"
    )]
    pub subnet6: Option<String>,
    /// Talk to an ignis daemon instead of the local state: unix:///PATH or tcp://HOST:PORT (with IGNIS_TOKEN).
    #[arg(long, global = true, env = "IGNIS_HOST")]
    pub host: Option<String>,
    /// Reach this registry (HOST:PORT) over plain HTTP. Repeatable.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: Option<SnapshotCmd>,
    /// The running VM to snapshot.
    #[arg(required = true)]
    pub vm: Option<String>,
    /// Name of the snapshot (default: VM-NAME-<id>).
    #[arg(long)]
    pub name: Option<String>,
    /// Print where the time went, phase by phase (also in `snapshot inspect`).
    #[arg(long)]
    pub timings: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// List snapshots (with --tree: their lineage and the VMs forked from them).
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        tree: bool,
        #[command(flatten)]
        list: ListOpts,
    },
    /// Show a snapshot's record.
    Inspect {
        snapshot: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
    },
    /// Remove snapshots (their blobs go once nothing else uses them).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Write a snapshot to one file (zstd tar of its manifest and blobs).
    Export {
        snapshot: String,
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Read a file written by `snapshot export` (every blob verified).
    Import { file: PathBuf },
    /// Push a snapshot to an OCI registry as an artifact.
    Push { snapshot: String, reference: String },
    /// Pull a snapshot pushed with `snapshot push` (every blob verified).
    Pull { reference: String },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// API unix socket (default: ROOT/daemon.sock, mode 0600).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Let this group (name or gid) use the unix socket too (mode 0660):
    /// like the docker group, its members can run VMs as root.
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Also serve the API on TCP, e.g. 127.0.0.1:7070 (needs --token).
    #[arg(long)]
    pub listen: Option<String>,
    /// Bearer token required from TCP clients.
    #[arg(long, env = "IGNIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve TCP over TLS with this certificate chain (PEM); clients use
    /// --host https://HOST:PORT with IGNIS_TLS_CA.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Reconcile the manifests in this directory (watched with inotify).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Reconcile the manifests of this Git repository (file://, git://, https://, ssh://).
    #[arg(long)]
    pub gitops: Option<String>,
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory of the repository with the manifests.
    #[arg(long, default_value = "")]
    pub path: String,
    /// Resync interval in seconds.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Commit the observed status to .ignis/status/ and push it.
    #[arg(long)]
    pub write_status: bool,
    /// SSH key for ssh:// repositories.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// This host's name in a fleet: manifests' spec.nodeName, its status
    /// directory .ignis/status/NODE/ and record .ignis/nodes/NODE.yaml
    /// (default: the hostname).
    #[arg(long, env = "IGNIS_NODE")]
    pub node: Option<String>,
    /// A label of this node, matched by manifests' spec.nodeSelector (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub node_label: Vec<String>,
    /// Seconds between refreshes of the node record (the heartbeat; never
    /// more often than --interval) with --write-status.
    #[arg(long, default_value_t = 60)]
    pub heartbeat: u64,
}

/// The repository a fleet's daemons follow.
#[derive(Debug, Args)]
pub struct FleetRepo {
    /// The repository (as given to `ignis daemon --gitops`).
    #[arg(long)]
    pub repo: String,
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory of the manifests (as the daemons' --path); also limits
    /// the status shown to the daemons of that path.
    #[arg(long, default_value = "")]
    pub path: String,
    /// SSH key for ssh:// repositories.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// A node is STALE after missing this many heartbeats.
    #[arg(long, default_value_t = 3)]
    pub stale_after: u32,
}

#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Every VM of the fleet: its node, state, IP and the age of its status.
    Ps {
        #[command(flatten)]
        repo: FleetRepo,
        #[command(flatten)]
        list: ListOpts,
    },
    /// Every node: capacity, backends, KVM, version, heartbeat age (STALE when missed).
    Nodes {
        #[command(flatten)]
        repo: FleetRepo,
        #[command(flatten)]
        list: ListOpts,
    },
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the command.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Run the command on a pseudo-terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Set an environment variable (repeatable).
    #[arg(long, short = 'e', value_name = "KEY=VAL")]
    pub env: Vec<String>,
    /// Working directory in the VM.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// User (name, uid, name:group or uid:gid).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    pub vm: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start a VM (detached unless --rm, -i or -t).
    Run(RunArgs),
    /// Create a VM without starting it.
    Create(CreateArgs),
    /// Start VMs.
    Start {
        #[arg(required = true)]
        vms: Vec<String>,
        /// Return once the VMM runs, without waiting for the guest to report ready.
        #[arg(long)]
        no_wait: bool,
        /// What to wait for: agent (the guest init and agent are up, the
        /// default) or system (a system image's systemd reports running or
        /// degraded).
        #[arg(long, value_enum, conflicts_with = "no_wait")]
        wait: Option<WaitFor>,
        /// Print where the time went, phase by phase (also in `inspect`).
        #[arg(long)]
        timings: bool,
    },
    /// Stop VMs gracefully (killed after --time).
    Stop {
        #[arg(required = true)]
        vms: Vec<String>,
        /// Seconds to wait for a clean shutdown before killing (default:
        /// the VM's --stop-timeout, else 10).
        #[arg(long, short = 't', value_parser = clap::value_parser!(u64).range(..=86_400))]
        time: Option<u64>,
    },
    /// Pause VMs (freeze their vCPUs).
    Pause {
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Unpause VMs.
    Unpause {
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Kill VMs at once.
    Kill {
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Remove VMs.
    Rm {
        #[arg(required = true)]
        vms: Vec<String>,
        /// Kill running VMs first.
        #[arg(long, short = 'f')]
        force: bool,
        /// Also remove the VMs' anonymous volumes (named ones are kept).
        #[arg(long, short = 'v')]
        volumes: bool,
    },
    /// List VMs.
    Ps {
        /// Show all VMs, not only running ones.
        #[arg(long, short = 'a')]
        all: bool,
        /// Filter: name=, state=, image=, label=KEY[=VALUE] (repeatable).
        #[arg(long)]
        filter: Vec<String>,
        #[command(flatten)]
        list: ListOpts,
    },
    /// Run the API server and the reconcilers (manifest directory, GitOps); VMs outlive it.
    Daemon(DaemonArgs),
    /// The hosts running `ignis daemon --gitops` on one repository, as the repository shows them.
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Create or update what manifests describe (VM, Image, Kernel, Snapshot; YAML or JSON; Ignite v1alpha4 VMs too).
    Apply {
        /// A file, a directory, or - for stdin.
        #[arg(long, short = 'f', required = true)]
        file: Vec<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: ListFormat,
    },
    /// Remove what manifests describe (VMs, snapshots).
    Delete {
        #[arg(long, short = 'f', required = true)]
        file: Vec<PathBuf>,
    },
    /// Show a VM as a manifest with its status.
    Get {
        /// Only `vm` for now.
        kind: String,
        name: String,
        #[arg(long, short = 'o', value_enum, default_value_t = InspectFormat::Yaml)]
        output: InspectFormat,
    },
    /// Snapshot a running VM (`snapshot VM [--name N]`), or manage snapshots.
    Snapshot(SnapshotArgs),
    /// Clone a running VM or a snapshot into N running VMs (each with its own disk, address, MAC, hostname, RNG state).
    Fork {
        /// A snapshot, or a running VM (snapshotted first).
        source: String,
        /// Number of clones.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Clones are named PREFIX-1..PREFIX-N (default: the snapshot's name).
        #[arg(long)]
        name_prefix: Option<String>,
        /// Remove each clone when it stops.
        #[arg(long)]
        rm: bool,
        /// Print where the time went, phase by phase (also in `inspect`).
        #[arg(long)]
        timings: bool,
    },
    /// Start a new VM from a snapshot (a fork of one).
    Restore {
        snapshot: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        rm: bool,
        /// Print where the time went, phase by phase (also in `inspect`).
        #[arg(long)]
        timings: bool,
    },
    /// Run a command in a running VM (through its guest agent).
    Exec(ExecArgs),
    /// Copy files between a VM and the host: `cp SRC VM:DEST` or `cp VM:SRC DEST`.
    Cp {
        src: String,
        dest: String,
        /// Follow a symlink at SRC (copy what it points to).
        #[arg(long, short = 'L')]
        follow_link: bool,
    },
    /// Open an SSH session to a VM started with --ssh (host key pinned through the agent).
    Ssh {
        /// Remote user.
        #[arg(long, short = 'l', default_value = "root")]
        user: String,
        vm: String,
        /// Command to run instead of a login shell.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Internal: change a running VM's identity through its agent (fork-time hook).
    #[command(name = "__configure", hide = true)]
    Configure {
        vm: String,
        #[arg(long)]
        hostname: Option<String>,
        /// ADDR/PREFIX for eth0 (needs --gateway).
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        /// Hex bytes mixed into the guest's RNG, which is then reseeded.
        #[arg(long)]
        entropy: Option<String>,
        /// Step the guest's clock to the host's.
        #[arg(long)]
        sync_clock: bool,
    },
    /// Attach to a VM's serial console (detach with Ctrl-P Ctrl-Q).
    Attach { vm: String },
    /// Show a VM's serial console log.
    Logs {
        vm: String,
        /// Follow the log until the VM stops.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        opts: LogsOpts,
    },
    /// Show a VM's record (-f/--format: a template of its fields).
    Inspect {
        vm: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
        /// Go-template-like format, e.g. '{{.Status.State}} {{.Spec.Network.Ip}}'.
        #[arg(long, short = 'f')]
        format: Option<String>,
    },
    /// CPU, memory, network and block I/O of running VMs (all without arguments).
    Stats {
        vms: Vec<String>,
        /// Print one sample and exit (default: refresh every second).
        #[arg(long)]
        no_stream: bool,
        /// Include VMs that are not running.
        #[arg(long, short = 'a')]
        all: bool,
        #[command(flatten)]
        list: ListOpts,
    },
    /// Shell completions on stdout: `ignis completion bash > /etc/bash_completion.d/ignis`.
    Completion { shell: clap_complete::Shell },
    /// What this host can run and which backend ignis uses.
    Info {
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: ListFormat,
    },
    /// Internal: how the VM would be booted by hand (benchmarks, debugging).
    #[command(name = "__boot-plan", hide = true)]
    BootPlan { vm: String },

    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage kernels.
    #[command(subcommand)]
    Kernel(KernelCmd),
    /// System-wide operations.
    #[command(subcommand)]
    System(SystemCmd),
    /// Networks (the bridge network and its leases).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Volumes: ext4 disks in the state root that outlive VMs (`-v NAME:/path`).
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Print the version.
    Version {
        /// json, yaml, or short (the number alone).
        #[arg(long, short = 'o', value_enum)]
        output: Option<VersionFormat>,
    },
    /// Follow what happens to VMs (create, start, stop, exit, delete) and the daemon's reconcilers, as `docker events`.
    Events(EventsArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VersionFormat {
    Json,
    Yaml,
    Short,
}

/// Which lines of the console log `logs` shows, and how.
#[derive(Debug, Clone, Default, Args)]
pub struct LogsOpts {
    /// Only the last N lines (`all`: every line).
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<String>,
    /// Only lines written since T: RFC 3339 (2026-01-02T15:04:05Z), a Unix
    /// time, or a duration before now (10m, 1h30m, 45s).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Prefix each line with when it was written (RFC 3339, nanoseconds).
    #[arg(long, short = 't')]
    pub timestamps: bool,
}

/// Docker's and Ignite's shortcuts: `images` is `image ls`, `rmi` is
/// `image rm`, `kernels` is `kernel ls`, `rmk` is `kernel rm`.
const SHORTCUTS: &[(&str, &[&str])] = &[
    ("images", &["image", "ls"]),
    ("rmi", &["image", "rm"]),
    ("kernels", &["kernel", "ls"]),
    ("rmk", &["kernel", "rm"]),
];

/// Ignite's `vm` group: `ignis vm VERB` is `ignis VERB`, with `vm ls`
/// (`list`) for `ps` and `vm remove` for `rm`.
const VM_VERBS: &[&str] = &[
    "run", "create", "start", "stop", "pause", "unpause", "kill", "rm", "ps", "logs", "inspect",
    "attach", "exec", "cp", "ssh", "stats",
];

/// The whole command line: the derived commands plus the shortcuts and the
/// `vm` group (so help, completions and man pages show them).
pub fn command() -> clap::Command {
    let base = Cli::command();
    let mut cmd = base.clone();
    for (name, path) in SHORTCUTS {
        let target = path
            .iter()
            .try_fold(&base, |c, p| c.find_subcommand(p))
            .expect("shortcut targets exist");
        cmd = cmd.subcommand(
            clap::Command::new(*name)
                .about(format!("`{}`", path.join(" ")))
                .args(target.get_arguments().cloned()),
        );
    }
    let mut vm = clap::Command::new("vm")
        .about("VMs, as Ignite groups them: `vm ls` is `ps`, `vm rm` is `rm`, ...")
        .subcommand_required(true);
    for verb in VM_VERBS {
        let mut s = base.find_subcommand(verb).expect("vm verbs exist").clone();
        match *verb {
            "ps" => s = s.visible_alias("ls").alias("list"),
            "rm" => s = s.alias("remove"),
            _ => {}
        }
        vm = vm.subcommand(s);
    }
    cmd.subcommand(vm)
}

/// Parses the command line, shortcuts and `vm VERB` spelled out first.
pub fn parse() -> Cli {
    parse_from(std::env::args_os().collect())
}

pub fn parse_from(mut args: Vec<OsString>) -> Cli {
    let cmd = command();
    // Validates (and answers --help) with the shortcuts in place.
    let _ = cmd.clone().get_matches_from(args.clone());
    let valued: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    // The first word that is neither a flag nor a global flag's value.
    let word_at = |args: &[OsString], mut i: usize| {
        while i < args.len() {
            let a = args[i].to_string_lossy();
            if a == "--" {
                return None;
            }
            if !a.starts_with('-') {
                return Some(i);
            }
            i += if valued.iter().any(|v| *v == a) { 2 } else { 1 };
        }
        None
    };
    if let Some(i) = word_at(&args, 1) {
        let word = args[i].to_string_lossy().into_owned();
        if let Some((_, path)) = SHORTCUTS.iter().find(|(n, _)| *n == word) {
            args.splice(i..=i, path.iter().map(OsString::from));
        } else if word == "vm" {
            if let Some(j) = word_at(&args, i + 1) {
                let verb = match args[j].to_string_lossy().as_ref() {
                    "ls" | "list" => "ps".to_string(),
                    "remove" => "rm".to_string(),
                    v => v.to_string(),
                };
                args[j] = verb.into();
                args.remove(i);
            }
        }
    }
    let matches = Cli::command().get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only these: type=EVENT, object=vm, name=NAME (vm=NAME too); repeatable, a key given twice matches either.
    #[arg(long, short = 'f', value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Also the past events since this time (RFC 3339, Unix seconds, or an age such as 10m); the daemon keeps the last 1024.
    #[arg(long)]
    pub since: Option<String>,
    /// End at this time (same forms as --since; an age means before now).
    #[arg(long)]
    pub until: Option<String>,
    /// Output: one line per event, or one JSON object per line.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: ListFormat,
    /// Go-template-like line format, e.g. '{{.Time}} {{.Type}} {{.Name}}'.
    #[arg(long, conflicts_with = "output")]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Image name or ID (pulled when missing and it looks like a reference).
    #[arg(required_unless_present = "config")]
    pub image: Option<String>,
    /// A VM manifest (ours or Ignite's) with the VM's settings; flags given
    /// here override it, and it overrides IGNIS_BACKEND/IGNIS_NETWORK.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Command replacing the image's Cmd.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// vCPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory, e.g. 512MB, 1GB (a bare number is MiB).
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// Size of the writable disk, e.g. 4GB.
    #[arg(long)]
    pub size: Option<String>,
    /// Kernel name or ID (default: the kernel named "default").
    #[arg(long)]
    pub kernel: Option<String>,
    /// Extra kernel command line arguments.
    #[arg(long)]
    pub kernel_args: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long, short = 'l')]
    pub label: Vec<String>,
    /// Copy a host file into the VM: HOST_PATH:VM_PATH (repeatable).
    #[arg(long)]
    pub copy_files: Vec<String>,
    /// auto, firecracker or qemu.
    /// (default: IGNIS_BACKEND, else auto)
    #[arg(long)]
    pub backend: Option<String>,
    /// bridge (an address on ignis0, NAT out, -p), cni[:NAME] (a CNI
    /// network, its conflist from --cni-conf-dir),
    /// macvtap:LINK[,ip=A.B.C.D/N][,gateway=IP][,mac=MAC] (on the host
    /// interface LINK's segment, QEMU only) or none; repeat for several
    /// NICs (eth0 first).
    /// (default: IGNIS_NETWORK, else bridge)
    #[arg(long)]
    pub network: Vec<String>,
    /// Ignite's spelling: cni (the first conflist) or docker-bridge (bridge).
    #[arg(long, value_name = "PLUGIN")]
    pub network_plugin: Option<String>,
    /// Where CNI conflists are (default: IGNIS_CNI_CONF_DIR, else /etc/cni/net.d).
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<String>,
    /// Where the CNI plugins are (default: IGNIS_CNI_BIN_DIR, else /opt/cni/bin and /usr/lib/cni).
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Option<String>,
    /// Publish a port: [IP:]HOST_PORT:VM_PORT[/tcp|udp], an IPv6 IP in brackets ([::1]:8080:80) (repeatable).
    #[arg(long = "publish", short = 'p', visible_alias = "ports")]
    pub publish: Vec<String>,
    /// A fixed address on the bridge.
    #[arg(long)]
    pub ip: Option<String>,
    /// A fixed IPv6 address on the bridge (IPv6 on: --subnet6).
    #[arg(long)]
    pub ip6: Option<String>,
    /// A fixed MAC address.
    #[arg(long)]
    pub mac: Option<String>,
    /// Authorize SSH as root: a new ed25519 key pair for `ignis ssh`, or
    /// the given public key (file or `ssh-ed25519 AAAA...` line).
    #[arg(long, value_name = "PUBKEY", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    pub ssh: Option<String>,
    /// Restart policy when the VM ends on its own: no, on-failure[:N],
    /// always, unless-stopped (always/unless-stopped: also back after a
    /// host reboot, with `ignis daemon`). A guest reboot always restarts.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Seconds a stop without --time waits for the guest to shut down
    /// before killing it (default 10; GitOps and the daemon use it too).
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u32>,
    /// cloud-init user-data (text, at most 1 MiB), given to the guest on a
    /// NoCloud seed disk (label cidata) with meta-data and network-config;
    /// for images that run cloud-init.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// cloud-init meta-data (a YAML mapping, at most 1 MiB) merged over
    /// the seed's instance-id (the VM ID), local-hostname (its name) and
    /// public-keys (--ssh); attaches the seed too.
    #[arg(long, value_name = "FILE")]
    pub meta_data: Option<PathBuf>,
    /// A nameserver for the guest (repeatable; default: the host's, the
    /// upstream of a systemd-resolved stub, or a relay on the bridge).
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// A DNS search domain for the guest (repeatable).
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// An /etc/hosts line in the guest: NAME:IP (IP `host-gateway`: the
    /// bridge's gateway).
    #[arg(long, value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Mount a volume: [SOURCE:]VM_PATH[:ro|rw], SOURCE a volume name
    /// (made on first use), a disk image file (./data.ext4) or a block
    /// device (/dev/sdb); none: an anonymous volume (repeatable).
    #[arg(long = "volume", short = 'v', value_name = "[SOURCE:]VM_PATH[:ro]")]
    pub volume: Vec<String>,
    /// Size of volumes made on first use, e.g. 10GB (default 1GB).
    #[arg(long)]
    pub volume_size: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Run in the background and print the VM ID (the default without --rm/-i/-t).
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Remove the VM when it exits; runs in the foreground unless -d.
    #[arg(long)]
    pub rm: bool,
    /// Attach to the VM's serial console: its output here, stdin to it.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Put this terminal in raw mode while attached (with -i).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Return once the VMM runs, without waiting for the guest to report ready.
    #[arg(long)]
    pub no_wait: bool,
    /// What to wait for: agent (the guest init and agent are up, the
    /// default) or system (a system image's systemd reports running or
    /// degraded).
    #[arg(long, value_enum, conflicts_with = "no_wait")]
    pub wait: Option<WaitFor>,
    /// Print where the time went, phase by phase (also in `inspect`).
    #[arg(long)]
    pub timings: bool,
}

/// `run`/`start --wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    Agent,
    System,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum InspectFormat {
    #[default]
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ListOpts {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: ListFormat,
    /// Go-template-like row format, e.g. '{{.ID}} {{.Name}}'.
    #[arg(long, conflicts_with = "output")]
    pub format: Option<String>,
    /// Print IDs only (`ignis rm -f $(ignis ps -aq)`).
    #[arg(long = "quiet", short = 'q', short_alias = 'Q')]
    pub ids_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Pull an image from a registry.
    Pull {
        /// Reference, e.g. busybox, ghcr.io/acme/app:1.2, 127.0.0.1:5000/x@sha256:...
        reference: String,
    },
    /// Import a docker-save tarball or an OCI image layout (directory or tar).
    Import {
        path: PathBuf,
        /// Also name the imported image(s) this.
        #[arg(long, short = 't')]
        name: Option<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Show an image's record.
    Inspect {
        image: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
    },
    /// Remove images.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove even if named several times or used by a VM (then it is
        /// untagged now and deleted once unused).
        #[arg(long, short = 'f')]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KernelCmd {
    /// Import a kernel: a vmlinux/bzImage file, a linux-image .deb,
    /// apt:PACKAGE (e.g. apt:linux-image-amd64), or an OCI kernel image.
    Import {
        source: String,
        /// Name it (default: the release, or the image reference).
        #[arg(long)]
        name: Option<String>,
        /// Make it the kernel VMs use when none is given.
        #[arg(long)]
        default: bool,
    },
    /// List kernels.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Show a kernel's record.
    Inspect {
        kernel: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
    },
    /// Remove kernels.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        kernels: Vec<String>,
        #[arg(long, short = 'f')]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// List networks.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Show a network with its leases and published ports.
    Inspect {
        #[arg(default_value = "bridge")]
        network: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume (an empty ext4 disk, sparse).
    Create {
        /// Its name (default: 12 hex digits of its ID).
        name: Option<String>,
        /// Size, e.g. 10GB.
        #[arg(long, default_value = "1GB")]
        size: String,
        /// Label KEY=VALUE (repeatable).
        #[arg(long, short = 'l')]
        label: Vec<String>,
    },
    /// List volumes and the VMs that mount them.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Show a volume's record.
    Inspect {
        volume: String,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: InspectFormat,
    },
    /// Remove volumes (refused while a VM mounts one).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove the anonymous volumes no VM mounts (left by `rm` without
    /// -v); with -a, the unused named ones too.
    Prune {
        /// Named volumes no VM mounts too.
        #[arg(long, short = 'a')]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'f')]
        force: bool,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: ListFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Remove dangling images, every unreferenced blob, disk and temp file,
    /// and what crashed operations left on the host (cgroups, jails, TAPs,
    /// RAM files, lock files, supervisors of removed VMs).
    Prune {
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: ListFormat,
    },
    /// Report inconsistencies a crash can leave (exit 1 if any); `system
    /// prune` repairs them.
    Check {
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: ListFormat,
    },
    /// Write the man pages (ignis.1, ignis-run.1, ...) into DIR.
    Man { dir: PathBuf },
    /// Internal: the `ProxyCommand` of `ignis ssh` over `--host` (stdin and
    /// stdout joined to the VM's sshd through the daemon).
    #[command(name = "ssh-proxy", hide = true)]
    SshProxy { vm: String },
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
