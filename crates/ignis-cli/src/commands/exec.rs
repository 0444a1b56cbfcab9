//! `ignis exec` and `ignis cp`: sessions with the VM's guest agent.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use crate::engine::Engine;
use ignis_agent_proto::client::Outcome;
use ignis_agent_proto::{ExecRequest, NetConfig, Request};

use crate::cli::ExecArgs;

fn winsize() -> (u16, u16) {
    rustix::termios::tcgetwinsize(rustix::stdio::stdout())
        .map(|w| (w.ws_row, w.ws_col))
        .unwrap_or((0, 0))
}

/// Runs the command; its exit code is ours (as `docker exec`).
pub fn exec(ignis: &dyn Engine, a: ExecArgs) -> anyhow::Result<i32> {
    let (_rec, client) = ignis.vm_agent(&a.vm)?;
    let (rows, cols) = if a.tty { winsize() } else { (0, 0) };
    let session = client.open(&Request::Exec(ExecRequest {
        argv: a.command.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        rows,
        cols,
        stdin: a.interactive,
    }))?;
    let input = session.input();
    // Signals: with a TTY in raw mode, ^C travels as a byte; otherwise
    // they are forwarded to the command. Window changes resize the PTY.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGQUIT,
        signal_hook::consts::SIGWINCH,
    ])?;
    let sig_input = input.clone();
    let tty = a.tty;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == signal_hook::consts::SIGWINCH {
                if tty {
                    let (r, c) = winsize();
                    sig_input.resize(r, c);
                }
            } else {
                sig_input.signal(sig);
            }
        }
    });
    let _raw = if a.tty && std::io::stdin().is_terminal() {
        super::attach::RawMode::enable()
    } else {
        None
    };
    if a.interactive {
        let input = input.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !input.write(&buf[..n]) {
                            return;
                        }
                    }
                }
            }
            input.close();
        });
    }
    let outcome = session.wait_output(std::io::stdout().lock(), std::io::stderr().lock());
    drop(_raw);
    let _ = std::io::stdout().flush();
    if let Outcome::Failed(e) = &outcome {
        eprintln!("ignis: {}", e.message);
    }
    Ok(outcome.code())
}

/// The SSH options of `ignis ssh` (also printed by the benchmark).
pub fn ssh_args(plan: &ignis_core::vm::SshPlan, user: &str, command: &[String]) -> Vec<String> {
    let mut a = vec![];
    if let Some(id) = &plan.identity {
        a.extend([
            "-i".to_string(),
            id.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    if let Some(p) = &plan.proxy_command {
        a.extend(["-o".to_string(), format!("ProxyCommand={p}")]);
    }
    for o in [
        format!("UserKnownHostsFile={}", plan.known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "LogLevel=ERROR".into(),
    ] {
        a.extend(["-o".to_string(), o]);
    }
    a.push(format!("{user}@{}", plan.ip));
    if !command.is_empty() {
        a.push("--".into());
        a.extend(command.iter().cloned());
    }
    a
}

/// Replaces this process with the system `ssh` (so the terminal, signals
/// and exit code are ssh's own). Over `--host` the session's key files are
/// temporary: ssh runs as a child (this process catching the terminal's
/// SIGINT/SIGQUIT meanwhile, as `system(3)` ignores them), its exit code is ours,
/// and the files are removed once it ends.
pub fn ssh(ignis: &dyn Engine, user: &str, vm: &str, command: &[String]) -> anyhow::Result<i32> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let plan = ignis.vm_ssh(vm)?;
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(ssh_args(&plan, user, command));
    let missing = |err: std::io::Error| -> anyhow::Error {
        ignis_core::Error::new(
            ignis_core::ErrorKind::Unavailable,
            format!("cannot run ssh: {err} (apt-get install openssh-client)"),
        )
        .into()
    };
    let Some(dir) = plan.temporary.clone() else {
        return Err(missing(cmd.exec()));
    };
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(dir);
    // Caught (not ignored: an exec'd child gets default dispositions back)
    // so the terminal's Ctrl-C ends ssh, not us before the cleanup.
    let caught = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGQUIT] {
        let _ = signal_hook::flag::register(sig, caught.clone());
    }
    let status = cmd.status();
    let status = status.map_err(missing)?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// `NAME:PATH` → (NAME, PATH). Like Docker, a local path containing a colon
/// must be written `./a:b`.
fn vm_path(arg: &str) -> Option<(&str, &str)> {
    let (vm, path) = arg.split_once(':')?;
    (!vm.is_empty() && !vm.contains('/')).then_some((vm, path))
}

pub fn cp(ignis: &dyn Engine, src: &str, dest: &str, follow_link: bool) -> anyhow::Result<()> {
    use ignis_core::vm::agent::{copy_from, copy_to};
    match (vm_path(src), vm_path(dest)) {
        (None, Some((vm, path))) => {
            // A missing source is reported before the VM is asked.
            match follow_link {
                true => std::fs::metadata(src),
                false => std::fs::symlink_metadata(src),
            }
            .map_err(|e| {
                ignis_core::Error::with_source(
                    ignis_core::ErrorKind::NotFound,
                    format!("cannot copy {src}"),
                    e,
                )
            })?;
            let (rec, client) = ignis.vm_agent(vm)?;
            Ok(copy_to(
                &client,
                &rec.name,
                Path::new(src),
                path,
                follow_link,
            )?)
        }
        (Some((vm, path)), None) => {
            let (rec, client) = ignis.vm_agent(vm)?;
            Ok(copy_from(
                &client,
                &rec.name,
                path,
                Path::new(dest),
                follow_link,
            )?)
        }
        (Some(_), Some(_)) => Err(ignis_core::Error::new(
            ignis_core::ErrorKind::Invalid,
            "copying between two VMs is not supported; copy through the host",
        )
        .into()),
        (None, None) => Err(ignis_core::Error::new(
            ignis_core::ErrorKind::Invalid,
            "one side must be VM:PATH (write a local path with a colon as ./a:b)",
        )
        .into()),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn configure(
    ignis: &dyn Engine,
    vm: &str,
    hostname: Option<String>,
    ip: Option<String>,
    gateway: Option<String>,
    mac: Option<String>,
    entropy: Option<String>,
    sync_clock: bool,
) -> anyhow::Result<()> {
    let clock_ns = sync_clock.then(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX)
    });
    let (rec, client) = ignis.vm_agent(vm)?;
    Ok(ignis_core::vm::agent::configure(
        &client,
        &rec.name,
        NetConfig {
            hostname,
            ip,
            gateway,
            mac,
            ip6: None,
            gateway6: None,
            entropy,
            clock_ns,
        },
    )?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn vm_paths_follow_dockers_rule() {
        assert_eq!(
            super::vm_path("web:/etc/hosts"),
            Some(("web", "/etc/hosts"))
        );
        assert_eq!(super::vm_path("./a:b"), None);
        assert_eq!(super::vm_path("/tmp/x"), None);
        assert_eq!(super::vm_path(":x"), None);
    }
}
