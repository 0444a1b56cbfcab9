//! `ignis`: thin glue from clap to the service layer. Each command lives in
//! `commands/`, output formatting in `output.rs`.

mod cli;
mod commands;
mod engine;
mod output;

use std::io::IsTerminal;

use ignis_core::{ErrorKind, Ignis, Options};

/// Exit codes (documented in the README).
mod exit {
    pub const FAILED: i32 = 1;
    pub const NOT_FOUND: i32 = 3;
    pub const CONFLICT: i32 = 4;
    pub const UNAVAILABLE: i32 = 5;
    pub const RUN_FAILED: i32 = 125;
}

/// Dies quietly on a closed pipe (`ignis ps | head -1`), as Unix tools do,
/// instead of the Rust runtime's default of ignoring SIGPIPE and panicking
/// in println!.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL before any thread
    // exists; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    output::started_ns();
    default_sigpipe();
    let cli = cli::parse();
    let filter = std::env::var("IGNIS_LOG").unwrap_or_else(|_| cli.log_level.clone());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match cli.log_format {
        // JSON lines carry their time: collectors order and join them.
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
        // The daemon's text lines are timed; a command's are not (its
        // output is read by people, right away).
        cli::LogFormat::Text if matches!(cli.command, cli::Command::Daemon(_)) => logs.init(),
        cli::LogFormat::Text => logs.without_time().init(),
    }
    // The VM supervisors this process starts log the same way.
    if cli.log_format == cli::LogFormat::Json {
        std::env::set_var("IGNIS_LOG_FORMAT", "json");
    }
    // Docker's convention: `run` and `exec` keep 1..124 for the workload's own exit
    // codes and reports its own failures as 125.
    let is_run = matches!(cli.command, cli::Command::Run(_) | cli::Command::Exec(_));
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) if is_run => {
            report(&e);
            exit::RUN_FAILED
        }
        Err(e) => report(&e),
    };
    std::process::exit(code);
}

fn run(cli: cli::Cli) -> anyhow::Result<i32> {
    match cli.command {
        cli::Command::Version { output } => return commands::system::version(output).map(|()| 0),
        cli::Command::Completion { shell } => {
            clap_complete::generate(shell, &mut cli::command(), "ignis", &mut std::io::stdout());
            return Ok(0);
        }
        cli::Command::System(cli::SystemCmd::Man { dir }) => {
            return commands::system::man(&dir).map(|()| 0)
        }
        _ => {}
    }
    if let cli::Command::Fleet(c) = cli.command {
        // Reads a repository: no state root, no daemon.
        return commands::fleet::run(c).map(|()| 0);
    }
    if let Some(host) = &cli.host {
        if let cli::Command::Daemon(_) = cli.command {
            anyhow::bail!("--host talks to a daemon; `ignis daemon` runs one (drop --host)");
        }
        let remote =
            engine::Remote::new(host, !cli.no_progress && std::io::stderr().is_terminal())?;
        return commands::dispatch(&remote, cli.command);
    }
    let (daemon, command) = match cli.command {
        cli::Command::Daemon(a) => (Some(a), None),
        other => (None, Some(other)),
    };
    // Bad --node/--node-label: refused before the state root is touched.
    let identity = daemon
        .as_ref()
        .map(|a| commands::fleet::node_identity(a.node.clone(), &a.node_label))
        .transpose()?;
    let ignis = Ignis::open(Options {
        root: cli.root.clone(),
        progress: !cli.no_progress && std::io::stderr().is_terminal(),
        insecure_registries: cli.insecure_registry.clone(),
        subnet: Some(cli.subnet.clone()),
        subnet6: cli.subnet6.clone(),
    })?;
    if let Some(a) = daemon {
        let (node, labels) = identity.expect("checked with the daemon's flags");
        let socket = a
            .socket
            .clone()
            .unwrap_or_else(|| cli.root.join("daemon.sock"));
        ignis_daemon::run(
            ignis,
            ignis_daemon::DaemonOptions {
                socket,
                socket_group: a.socket_group,
                listen: a.listen,
                token: a.token,
                manifests: a.manifests,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                gitops: a.gitops.map(|url| ignis_daemon::GitOptions {
                    // Named after the URL without its credentials.
                    cache: cli.root.join("gitops").join(
                        ignis_daemon::redact_url(&url)
                            .chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                            .collect::<String>(),
                    ),
                    url,
                    branch: a.branch,
                    path: a.path,
                    write_status: a.write_status,
                    ssh_key: a.ssh_key,
                }),
                interval: std::time::Duration::from_secs(a.interval.max(1)),
                node: ignis_daemon::NodeOptions {
                    name: node,
                    labels,
                    heartbeat: std::time::Duration::from_secs(a.heartbeat.max(1)),
                    root: cli.root.clone(),
                },
            },
        )?;
        return Ok(0);
    }
    match command {
        Some(c) => commands::dispatch(&engine::Local(ignis), c),
        None => Ok(0),
    }
}

/// The flag that sets a settings field (the core names fields, the CLI
/// names flags).
fn flag(f: ignis_core::vm::Field) -> &'static str {
    use ignis_core::vm::Field;
    match f {
        Field::Image => "IMAGE",
        Field::Name => "--name",
        Field::Cpus => "--cpus",
        Field::Memory => "--memory",
        Field::DiskSize => "--size",
        Field::Kernel => "--kernel",
        Field::Env => "-e",
        Field::CopyFiles => "--copy-files",
        Field::Backend => "--backend",
        Field::Network => "--network",
        Field::Ip => "--ip",
        Field::Ip6 => "--ip6",
        Field::Mac => "--mac",
        Field::Ports => "-p",
        Field::Ssh => "--ssh",
        Field::Restart => "--restart",
        Field::Dns => "--dns",
        Field::DnsSearch => "--dns-search",
        Field::AddHost => "--add-host",
        Field::Volumes => "--volume",
        Field::VolumeSize => "--volume-size",
        Field::StopTimeout => "--stop-timeout",
        Field::UserData => "--user-data",
        Field::MetaData => "--meta-data",
    }
}

/// Prints the error and its causes, each once, and maps it to an exit
/// code.
fn report(e: &anyhow::Error) -> i32 {
    let core = e.downcast_ref::<ignis_core::Error>();
    let head = match core {
        Some(c) => match c.field {
            Some(f) => format!("{}: {}", flag(f), c.message),
            None => c.message.clone(),
        },
        None => e.to_string(),
    };
    let mut msg = format!("ignis: {head}");
    for cause in e.chain().skip(1) {
        msg.push_str(&format!(": {cause}"));
    }
    eprintln!("{msg}");
    match core.map(|e| e.kind) {
        Some(ErrorKind::NotFound | ErrorKind::Ambiguous) => exit::NOT_FOUND,
        Some(ErrorKind::Conflict) => exit::CONFLICT,
        Some(ErrorKind::Unavailable) => exit::UNAVAILABLE,
        _ => exit::FAILED,
    }
}
