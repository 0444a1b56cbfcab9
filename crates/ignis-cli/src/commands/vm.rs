use std::io::Write;
use std::time::Duration;

use ignis_api::{short_id, VmRecord, VmState};
use ignis_core::vm::VmSettings;

use crate::engine::Engine;

use crate::cli::{Command, CreateArgs, ListFormat, WaitFor};
use crate::output;

/// Create settings with Ignite's precedence: environment defaults < the
/// `--config` manifest < flags given on the command line; parsed by the
/// core's one conversion (the same `apply` and the daemon use), here or in
/// the daemon.
fn create_settings(a: CreateArgs, auto_remove: bool) -> anyhow::Result<VmSettings> {
    let manifest = match &a.config {
        None => VmSettings::default(),
        Some(path) => {
            let mut vms: Vec<_> = ignis_core::manifest::read_config(path)?
                .into_iter()
                .filter_map(|m| match m {
                    ignis_api::manifest::Manifest::Vm(v) => Some(v),
                    _ => None,
                })
                .collect();
            if vms.len() != 1 {
                return Err(ignis_core::Error::new(
                    ignis_core::ErrorKind::Invalid,
                    format!(
                        "--config {}: want exactly one VM manifest, found {}",
                        path.display(),
                        vms.len()
                    ),
                )
                .into());
            }
            VmSettings::from_manifest(&vms.remove(0))
        }
    };
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut networks = a.network;
    match a.network_plugin.as_deref() {
        None => {}
        Some("cni") => networks.insert(0, "cni".into()),
        Some("docker-bridge" | "bridge") => networks.insert(0, "bridge".into()),
        Some(other) => {
            return Err(ignis_core::Error::new(
                ignis_core::ErrorKind::Invalid,
                format!("--network-plugin {other}: want cni or docker-bridge"),
            )
            .into())
        }
    }
    let network = (!networks.is_empty()).then(|| networks.remove(0));
    let user_data = a
        .user_data
        .as_deref()
        .map(|p| seed_file(ignis_core::vm::Field::UserData, p))
        .transpose()?;
    let meta_data = a
        .meta_data
        .as_deref()
        .map(|p| seed_file(ignis_core::vm::Field::MetaData, p))
        .transpose()?;
    let flags = VmSettings {
        image: a.image,
        name: a.name,
        labels,
        cpus: a.cpus,
        memory: a.memory,
        disk_size: a.size,
        kernel: a.kernel,
        kernel_args: a.kernel_args,
        env: a.env,
        copy_files: a.copy_files,
        command: a.command,
        backend: a.backend,
        network,
        networks,
        cni_conf_dir: a.cni_conf_dir,
        cni_bin_dir: a.cni_bin_dir,
        ip: a.ip,
        ip6: a.ip6,
        mac: a.mac,
        ports: a.publish,
        ssh: a.ssh,
        auto_remove,
        restart: a.restart,
        stop_timeout: a.stop_timeout,
        dns: a.dns,
        dns_search: a.dns_search,
        add_hosts: a.add_host,
        volumes: a.volume,
        volume_size: a.volume_size,
        user_data,
        meta_data,
    };
    Ok(VmSettings::from_environment()
        .overlay(manifest)
        .overlay(flags))
}

/// `--user-data FILE`, `--meta-data FILE`: the file's text, read here
/// (a daemon gets the content, as a manifest carries it); a missing,
/// oversized or binary file is refused naming the flag.
fn seed_file(field: ignis_core::vm::Field, path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let bad = |m: String| ignis_core::Error::new(ignis_core::ErrorKind::Invalid, m).about(field);
    let f = std::fs::File::open(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let max = ignis_core::vm::MAX_SEED_FILE;
    let mut data = Vec::new();
    // One byte more than allowed tells an oversized file without reading
    // all of it.
    f.take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if data.len() > max {
        return Err(bad(format!("{} is larger than 1 MiB", path.display())).into());
    }
    let text = String::from_utf8(data)
        .map_err(|_| bad(format!("{} is not text (not UTF-8)", path.display())))?;
    ignis_core::vm::check_seed_file(field, &text)
        .map_err(|e| bad(format!("{}: {}", path.display(), e.message)))?;
    Ok(text)
}

fn status_text(v: &VmRecord) -> String {
    let restarts = match v.status.restart_count {
        0 => String::new(),
        n => format!(" (restarts: {n})"),
    };
    match v.state() {
        // Between two runs: its supervisor starts it again.
        VmState::Exited if v.status.restarting => format!(
            "Restarting ({}) {}{restarts}",
            v.status
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into()),
            v.status.finished_at.map(output::ago).unwrap_or_default()
        ),
        VmState::Created => "Created".into(),
        VmState::Running => match v.status.started_at {
            Some(t) => {
                format!(
                    "Up {}{}",
                    output::ago(t).trim_end_matches(" ago"),
                    match (v.status.paused, v.status.health) {
                        (true, _) => " (Paused)".to_string(),
                        (false, Some(h)) => format!(" ({})", h.as_str()),
                        (false, None) => String::new(),
                    },
                ) + &restarts
            }
            None => "Starting".into(),
        },
        VmState::Exited => format!(
            "Exited ({}) {}",
            v.status
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into()),
            v.status.finished_at.map(output::ago).unwrap_or_default()
        ),
    }
}

/// `--tail N|all`, `--since T` (RFC 3339, Unix seconds, or a duration
/// before now: 10m, 1h30m, 45s), `-t`.
fn log_options(o: &crate::cli::LogsOpts) -> anyhow::Result<ignis_core::vm::LogOptions> {
    let invalid = |flag: &str, v: &str, want: &str| {
        ignis_core::Error::new(
            ignis_core::ErrorKind::Invalid,
            format!("{flag} {v}: want {want}"),
        )
    };
    let tail = match o.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| invalid("--tail", n, "a number of lines or all"))?,
        ),
    };
    let since_ns = match o.since.as_deref() {
        None => None,
        Some(t) => Some(since(t).ok_or_else(|| {
            invalid(
                "--since",
                t,
                "an RFC 3339 time (2026-01-02T15:04:05Z), Unix seconds, or a duration like 10m",
            )
        })?),
    };
    Ok(ignis_core::vm::LogOptions {
        tail,
        since_ns,
        timestamps: o.timestamps,
    })
}

/// `--since`'s forms as Unix nanoseconds (those of `ignis events`).
fn since(t: &str) -> Option<i64> {
    let now = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).ok()?;
    super::events::when_ns(t, now)
}

fn matches_filter(v: &VmRecord, filters: &[String]) -> anyhow::Result<bool> {
    for f in filters {
        let (k, val) = f.split_once('=').unwrap_or((f.as_str(), ""));
        let ok = match k {
            "name" => v.name.contains(val),
            "state" | "status" => v.state().as_str() == val,
            "health" => v.status.health.map(|h| h.as_str()) == Some(val),
            "image" => v.image == val || v.image_id.trim_start_matches("sha256:").starts_with(val),
            "id" => v.id.starts_with(val),
            "label" => {
                let (lk, lv) = val
                    .split_once('=')
                    .map(|(a, b)| (a, Some(b)))
                    .unwrap_or((val, None));
                v.spec
                    .labels
                    .get(lk)
                    .is_some_and(|x| lv.is_none_or(|lv| x == lv))
            }
            other => anyhow::bail!("unknown filter '{other}' (use name, state, image, id, label)"),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// As `docker run --rm`: returns once the VM is gone, not only ended, so
/// that the next command never sees it. Its supervisor removes it when the
/// VMM has exited; should the supervisor be gone (killed with the VM), the
/// VM is removed here after a grace period. A detach (Ctrl-P Ctrl-Q) leaves
/// a running VM, which is not waited for.
fn wait_removed(ignis: &dyn Engine, id: &str) {
    use ignis_core::ErrorKind;
    let grace = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ignis.vm_inspect(id) {
            Err(_) => return,
            Ok(v) if std::time::Instant::now() >= grace => {
                if v.state() == VmState::Running {
                    eprintln!("ignis: VM {id} still runs; not removed");
                    return;
                }
                if let Err(e) = ignis.vm_remove_with_volumes(id, true) {
                    if e.kind != ErrorKind::NotFound {
                        eprintln!("ignis: cannot remove VM {id}: {e}");
                    }
                }
                return;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Streams the workload's console output (between the init's ready and
/// exit reports) until the VM exits; returns the workload's exit code.
fn foreground(ignis: &dyn Engine, id: &str) -> anyhow::Result<i32> {
    let mut fg = Foreground {
        out: std::io::stdout().lock(),
        partial: Vec::new(),
        in_workload: false,
        blanks: 0,
        code: None,
    };
    ignis.vm_logs(id, true, &Default::default(), &mut fg)?;
    if !fg.partial.is_empty() {
        let rest = std::mem::take(&mut fg.partial);
        fg.line(&rest);
    }
    let _ = fg.out.flush();
    if let Some(c) = fg.code {
        return Ok(c);
    }
    match ignis.vm_inspect(id) {
        Ok(v) => {
            let reason = v.status.reason.unwrap_or_default();
            anyhow::bail!("VM {} ended without an exit status: {reason}", v.name)
        }
        Err(_) => anyhow::bail!("VM {id} ended without an exit status"),
    }
}

/// The console log, line by line: the workload's lines shown, the init's
/// reports kept out (and their exit code remembered).
struct Foreground<W: Write> {
    out: W,
    partial: Vec<u8>,
    in_workload: bool,
    /// The init writes an empty line before each report; empty lines are
    /// held back until they are known to be the workload's.
    blanks: usize,
    code: Option<i32>,
}

impl<W: Write> Foreground<W> {
    fn line(&mut self, line: &[u8]) {
        use ignis_guest_config::{parse_report, Report};
        match parse_report(&String::from_utf8_lossy(line)) {
            Some(Report::Ready { .. }) => self.in_workload = true,
            Some(Report::Exit(c)) => {
                self.code = Some(c);
                self.in_workload = false;
            }
            Some(Report::Error(m)) => eprintln!("ignis: guest init: {m}"),
            None if self.in_workload && (line == b"\n" || line == b"\r\n") => self.blanks += 1,
            None if self.in_workload => {
                for _ in 0..self.blanks {
                    let _ = self.out.write_all(b"\n");
                }
                self.blanks = 0;
                let _ = self.out.write_all(line);
            }
            None => {}
        }
        if !self.in_workload {
            self.blanks = 0;
        }
    }
}

impl<W: Write> Write for Foreground<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(b);
        while let Some(i) = self.partial.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(&line);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// How long `--wait system` waits for systemd once the agent answers.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(300);
/// How long systemd may stay unreachable ("offline") before `--wait
/// system` gives up on an image whose init is not systemd.
const OFFLINE_GRACE: Duration = Duration::from_secs(90);

/// `--wait system`: asks the guest (through its agent) until systemd says
/// the system is up: `running`, or `degraded` (up, some unit failed).
fn wait_system(ignis: &dyn Engine, rec: &VmRecord) -> anyhow::Result<()> {
    use ignis_agent_proto::{ExecRequest, Request};
    let start = std::time::Instant::now();
    let deadline = start + SYSTEM_TIMEOUT;
    let mut last;
    loop {
        let (_, client) = ignis.vm_agent(&rec.id)?;
        let argv = ["systemctl", "is-system-running"]
            .map(String::from)
            .to_vec();
        let mut out = Vec::new();
        if let Ok(s) = client.open(&Request::Exec(ExecRequest {
            argv,
            ..Default::default()
        })) {
            match s.wait_output(&mut out, std::io::sink()) {
                ignis_agent_proto::client::Outcome::Exited(_) => {}
                ignis_agent_proto::client::Outcome::Failed(e) => {
                    return Err(ignis_core::Error::new(
                        ignis_core::ErrorKind::Invalid,
                        format!(
                            "--wait system: VM {} cannot run systemctl ({}); is it a systemd image?",
                            rec.name, e.message
                        ),
                    )
                    .into())
                }
            }
        }
        last = String::from_utf8_lossy(&out).trim().to_string();
        match last.as_str() {
            "running" | "degraded" => return Ok(()),
            // Emergency mode, or on its way down: it will not come up.
            "stopping" | "maintenance" => break,
            // No manager to ask (yet): systemd is not PID 1 until the
            // guest init execs it, and answers once its private socket is
            // up, which takes a while under emulation. An image whose init
            // is not systemd stays offline.
            "offline" if start.elapsed() > OFFLINE_GRACE => break,
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(ignis_core::Error::new(
        ignis_core::ErrorKind::Internal,
        format!(
            "--wait system: systemd in VM {} is {last:?}, not running; see `ignis logs {}`",
            rec.name, rec.name
        ),
    )
    .into())
}

fn each(vms: Vec<String>, mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<i32> {
    let mut first = None;
    for v in vms {
        if let Err(e) = f(&v) {
            if first.is_none() {
                first = Some(e);
            } else {
                eprintln!("ignis: {e}");
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

pub fn run(ignis: &dyn Engine, cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Run(r) => {
            let timeline = ignis_core::timing::Timeline::starting_at(output::started_ns());
            let fg = !r.detach && (r.rm || r.interactive || r.tty);
            let vm = ignis.vm_create(&create_settings(r.create, r.rm)?, &timeline)?;
            if fg {
                ignis.vm_start(&vm.id, false, &timeline)?;
                let end = if r.interactive || r.tty {
                    super::attach::attach_until(ignis, &vm.id, r.tty)
                } else {
                    foreground(ignis, &vm.id).map(|c| (c, false))
                };
                if r.rm && !matches!(end, Ok((_, true))) {
                    wait_removed(ignis, &vm.id);
                }
                return end.map(|(code, _)| code);
            }
            let rec = ignis.vm_start(&vm.id, !r.no_wait, &timeline)?;
            if r.wait == Some(WaitFor::System) {
                wait_system(ignis, &rec)?;
            }
            println!("{}", vm.id);
            if r.timings {
                output::timings(std::slice::from_ref(&rec));
            }
        }
        Command::Create(a) => println!(
            "{}",
            ignis
                .vm_create(
                    &create_settings(a, false)?,
                    &ignis_core::timing::Timeline::new()
                )?
                .id
        ),
        Command::Start {
            vms,
            no_wait,
            wait,
            timings,
        } => {
            return each(vms, |v| {
                let timeline = ignis_core::timing::Timeline::new();
                let rec = ignis.vm_start(v, !no_wait, &timeline)?;
                if wait == Some(WaitFor::System) {
                    wait_system(ignis, &rec)?;
                }
                println!("{}", rec.id);
                if timings {
                    output::timings(std::slice::from_ref(&rec));
                }
                Ok(())
            })
        }
        Command::Stop { vms, time } => {
            return each(vms, |v| {
                let rec = ignis.vm_stop(v, time.map(Duration::from_secs))?;
                println!("{}", rec.id);
                Ok(())
            })
        }
        Command::Pause { vms } => {
            return each(vms, |v| {
                println!("{}", ignis.vm_pause(v, true)?.id);
                Ok(())
            })
        }
        Command::Unpause { vms } => {
            return each(vms, |v| {
                println!("{}", ignis.vm_pause(v, false)?.id);
                Ok(())
            })
        }
        Command::Kill { vms } => {
            return each(vms, |v| {
                println!("{}", ignis.vm_kill(v)?.id);
                Ok(())
            })
        }
        Command::Rm {
            vms,
            force,
            volumes,
        } => {
            return each(vms, |v| {
                let name = if volumes {
                    ignis.vm_remove_with_volumes(v, force)?
                } else {
                    ignis.vm_remove(v, force)?
                };
                println!("{name}");
                Ok(())
            })
        }
        Command::Ps { all, filter, list } => print_ps(ignis.vm_list(all)?, &filter, &list)?,
        Command::Attach { vm } => return super::attach::attach(ignis, &vm, true),
        Command::Stats {
            vms,
            no_stream,
            all,
            list,
        } => stats(ignis, vms, no_stream, all, &list)?,
        Command::Logs { vm, follow, opts } => ignis.vm_logs(
            &vm,
            follow,
            &log_options(&opts)?,
            &mut std::io::stdout().lock(),
        )?,
        Command::Inspect {
            vm,
            output: fmt,
            format,
        } => {
            let rec = ignis.vm_inspect(&vm)?;
            // Docker's inspect -f: a template over the record as -o json shows it.
            match format {
                Some(f) => println!("{}", output::template(&f, &serde_json::to_value(&rec)?)),
                None => output::inspect(fmt, &rec)?,
            }
        }
        Command::Info { output: fmt } => {
            let info = ignis.info()?;
            match fmt {
                ListFormat::Json => println!("{}", serde_json::to_string_pretty(&info)?),
                ListFormat::Table => {
                    println!("Version:        {}", info.version);
                    println!("Root:           {}", info.root);
                    println!("KVM:            {}", kvm_words(&info.host.kvm));
                    println!(
                        "Firecracker:    {}",
                        info.host
                            .firecracker
                            .as_ref()
                            .map(|(p, v)| format!("{v} ({})", p.display()))
                            .unwrap_or("not found".into())
                    );
                    println!(
                        "QEMU:           {}",
                        info.host
                            .qemu
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or("not found".into())
                    );
                    println!(
                        "Backend (auto): {} ({})",
                        info.backend.kind.map(|k| k.as_str()).unwrap_or("none"),
                        info.backend.reason
                    );
                    println!(
                        "Guest init:     {}",
                        info.guest_init
                            .unwrap_or("not found (scripts/build-guest.sh)".into())
                    );
                    println!(
                        "Default kernel: {}",
                        info.default_kernel.unwrap_or(
                            "none (ignis kernel import apt:linux-image-amd64 --default)".into()
                        )
                    );
                    println!(
                        "Images: {}  Kernels: {}  VMs: {} ({} running)",
                        info.images, info.kernels, info.vms, info.vms_running
                    );
                }
            }
        }
        Command::BootPlan { vm } => println!(
            "{}",
            serde_json::to_string_pretty(&ignis.vm_boot_plan(&vm)?)?
        ),
        Command::Image(_)
        | Command::Exec(_)
        | Command::Cp { .. }
        | Command::Ssh { .. }
        | Command::Snapshot(_)
        | Command::Daemon(_)
        | Command::Fleet(_)
        | Command::Apply { .. }
        | Command::Delete { .. }
        | Command::Get { .. }
        | Command::Fork { .. }
        | Command::Restore { .. }
        | Command::Configure { .. }
        | Command::Kernel(_)
        | Command::System(_)
        | Command::Network(_)
        | Command::Volume(_)
        | Command::Version { .. }
        | Command::Completion { .. }
        | Command::Events(_) => {
            unreachable!()
        }
    }
    Ok(0)
}

/// `stats`: two samples a second apart give the CPU rate; without
/// `--no-stream` it refreshes every second until interrupted.
fn stats(
    ignis: &dyn Engine,
    vms: Vec<String>,
    no_stream: bool,
    all: bool,
    list: &crate::cli::ListOpts,
) -> anyhow::Result<()> {
    let names = || -> anyhow::Result<Vec<String>> {
        if !vms.is_empty() {
            return Ok(vms.clone());
        }
        Ok(ignis.vm_list(all)?.into_iter().map(|v| v.id).collect())
    };
    let sample = |names: &[String]| -> anyhow::Result<Vec<ignis_api::VmStats>> {
        names
            .iter()
            .map(|n| ignis.vm_stats(n).map_err(Into::into))
            .collect()
    };
    let mut before = sample(&names()?)?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = sample(&names()?)?;
        let rows: Vec<StatsRow> = now
            .iter()
            .map(|s| StatsRow::new(s, before.iter().find(|b| b.id == s.id)))
            .collect();
        if !no_stream && list.format.is_none() && !matches!(list.output, ListFormat::Json) {
            // Redraw in place, as `docker stats` does.
            print!("\x1b[2J\x1b[H");
        }
        print_stats(&rows, list)?;
        let _ = std::io::stdout().flush();
        if no_stream {
            return Ok(());
        }
        before = now;
    }
}

/// A `stats` line: the sample with its CPU rate and the table's texts.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsRow {
    #[serde(flatten)]
    sample: ignis_api::VmStats,
    cpu_percent: f64,
    memory_percent: f64,
}

impl StatsRow {
    fn new(now: &ignis_api::VmStats, before: Option<&ignis_api::VmStats>) -> Self {
        let cpu_percent = match before {
            Some(b) if now.at_ns > b.at_ns && now.cpu_ns >= b.cpu_ns => {
                (now.cpu_ns - b.cpu_ns) as f64 * 100.0 / (now.at_ns - b.at_ns) as f64
            }
            _ => 0.0,
        };
        let memory_percent = match now.memory_limit_bytes {
            0 => 0.0,
            l => now.memory_bytes as f64 * 100.0 / l as f64,
        };
        Self {
            sample: now.clone(),
            cpu_percent: (cpu_percent * 100.0).round() / 100.0,
            memory_percent: (memory_percent * 100.0).round() / 100.0,
        }
    }
}

const STATS_HEADERS: [&str; 7] = [
    "VM ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
];

fn print_stats(rows: &[StatsRow], list: &crate::cli::ListOpts) -> anyhow::Result<()> {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let s = &r.sample;
            vec![
                s.id.clone(),
                s.name.clone(),
                format!("{:.2}%", r.cpu_percent),
                format!(
                    "{} / {}",
                    output::size(s.memory_bytes),
                    output::size(s.memory_limit_bytes)
                ),
                format!("{:.2}%", r.memory_percent),
                format!(
                    "{} / {}",
                    output::size(s.net_rx_bytes),
                    output::size(s.net_tx_bytes)
                ),
                format!(
                    "{} / {}",
                    output::size(s.block_read_bytes),
                    output::size(s.block_write_bytes)
                ),
            ]
        })
        .collect();
    let ids = rows.iter().map(|r| r.sample.id.clone()).collect();
    output::list(list, &STATS_HEADERS, table, rows, ids)
}

/// `ps` output (in-process or from the daemon: identical).
pub fn print_ps(
    all_vms: Vec<VmRecord>,
    filter: &[String],
    list: &crate::cli::ListOpts,
) -> anyhow::Result<()> {
    let mut vms = Vec::new();
    for v in all_vms {
        if matches_filter(&v, filter)? {
            vms.push(v);
        }
    }

    let rows = vms
        .iter()
        .map(|v| -> anyhow::Result<Vec<String>> {
            let f = vm_fields(v)?;
            let col = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            Ok(vec![
                v.id.clone(),
                v.image.clone(),
                col("Kernel"),
                col("Size"),
                col("Cpus"),
                col("Memory"),
                col("Created"),
                col("Status"),
                // Every NIC's address, eth0 first (Ignite's IPS column).
                col("IPs"),
                col("Ports"),
                v.name.clone(),
            ])
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ids = vms.iter().map(|v| v.id.clone()).collect();
    // Templates see what the table shows (`{{.Status}}` is `Up 5 minutes`),
    // the record's other fields as they are; -o json the records.
    let items = match &list.format {
        None => None,
        Some(_) => Some(
            vms.iter()
                .map(vm_fields)
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
    };
    output::list_with(list, &PS_HEADERS, rows, &vms, items.as_deref(), ids)?;
    Ok(())
}

const PS_HEADERS: [&str; 11] = [
    "VM ID", "IMAGE", "KERNEL", "SIZE", "CPUS", "MEMORY", "CREATED", "STATUS", "IPS", "PORTS",
    "NAME",
];

/// A VM's fields for `ps --format`: the record, with the fields the table
/// shows as it shows them (`Status` is `Up 5 minutes`, `Created` is `5
/// minutes ago`), and `State` (`running`).
fn vm_fields(v: &VmRecord) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(v)?;
    let columns = [
        ("Kernel", short_id(&v.kernel_id).to_string()),
        ("Size", output::size(v.spec.disk_size)),
        ("Cpus", v.spec.cpus.to_string()),
        ("Memory", format!("{}MiB", v.spec.memory_mib)),
        ("Created", output::ago(v.created)),
        ("Status", status_text(v)),
        ("State", v.state().as_str().to_string()),
        (
            "IPs",
            v.spec
                .network
                .nics()
                .iter()
                .flat_map(|n| [n.ip.clone(), n.ip6.clone()])
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "Ports",
            v.spec
                .network
                .ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    if let Some(o) = value.as_object_mut() {
        for (k, text) in columns {
            o.retain(|key, _| !key.eq_ignore_ascii_case(k));
            o.insert(k.to_string(), text.into());
        }
    }
    Ok(value)
}

/// The KVM line of `ignis info`, in words (`-o json` keeps the structure).
fn kvm_words(kvm: &ignis_vmm::detect::Kvm) -> String {
    use ignis_vmm::detect::Kvm;
    match kvm {
        Kvm::Usable(module) => format!("usable ({module})"),
        Kvm::Missing => "not available (no /dev/kvm): QEMU runs with TCG".into(),
        Kvm::NoAccess(why) => format!("not accessible ({why}): QEMU runs with TCG"),
        Kvm::CannotRunLinux(why) => {
            format!("cannot run Linux guests: {why}; QEMU runs them with TCG")
        }
    }
}

#[cfg(test)]
mod kvm_tests {
    #[test]
    fn the_kvm_line_is_words_not_json() {
        use ignis_vmm::detect::Kvm;
        for k in [
            Kvm::Usable("kvm_intel".into()),
            Kvm::Missing,
            Kvm::NoAccess("EACCES".into()),
            Kvm::CannotRunLinux("PVM".into()),
        ] {
            let w = super::kvm_words(&k);
            assert!(!w.contains('{') && !w.contains('"'), "{w}");
        }
        assert_eq!(
            super::kvm_words(&Kvm::Usable("kvm_amd".into())),
            "usable (kvm_amd)"
        );
    }
}
