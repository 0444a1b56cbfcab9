use crate::engine::Engine;

use crate::cli::{ListFormat, SystemCmd, VersionFormat};
use crate::output;

pub fn run(ignis: &dyn Engine, cmd: SystemCmd) -> anyhow::Result<()> {
    match cmd {
        SystemCmd::Prune { output: fmt } => {
            let (report, images) = ignis.system_prune()?;
            match fmt {
                ListFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"imagesDeleted": images, "report": report})
                    )?
                ),
                ListFormat::Table => {
                    for id in &images {
                        println!("Deleted image: {id}");
                    }
                    println!(
                        "Removed {} blobs, {} disks, {} temp entries, {} host resources. Total reclaimed space: {}",
                        report.blobs_removed,
                        report.disks_removed,
                        report.temp_removed,
                        report.host_resources_released,
                        output::size(report.bytes_freed)
                    );
                }
            }
        }
        SystemCmd::Check { output: fmt } => {
            let problems = ignis.system_check()?;
            match fmt {
                ListFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&problems)?)
                }
                ListFormat::Table if problems.is_empty() => println!("No problems found."),
                ListFormat::Table => {
                    for p in &problems {
                        println!("{:<18} {}  (fix: {})", p.kind, p.what, p.fix);
                    }
                }
            }
            if !problems.is_empty() {
                std::process::exit(1);
            }
        }
        SystemCmd::Man { .. } => unreachable!("handled before opening the state"),
        SystemCmd::SshProxy { vm } => ssh_proxy(ignis, &vm)?,
    }
    Ok(())
}

/// Joins stdin and stdout to the VM's sshd, unbuffered both ways (ssh
/// speaks binary packets: Rust's line-buffered stdout would sit on them).
/// Ends when sshd closes the connection, or when ssh closes our stdin (it
/// ended).
fn ssh_proxy(ignis: &dyn Engine, vm: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    let s = ignis.vm_ssh_connect(vm)?;
    let mut writer = s.writer;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer
                        .write_all(&buf[..n])
                        .and_then(|()| writer.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // ssh is done with us.
        std::process::exit(0);
    });
    let mut stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut reader = s.reader;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// `version [-o json|yaml|short]` (needs no state).
pub fn version(format: Option<VersionFormat>) -> anyhow::Result<()> {
    let v = VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    };
    match format {
        None => println!("ignis {}", v.version),
        Some(VersionFormat::Short) => println!("{}", v.version),
        Some(VersionFormat::Json) => println!("{}", serde_json::to_string_pretty(&v)?),
        Some(VersionFormat::Yaml) => print!("{}", serde_yaml::to_string(&v)?),
    }
    Ok(())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionInfo {
    version: &'static str,
    platform: String,
}

/// `system man DIR`: one roff page per command (`ignis.1`, `ignis-run.1`,
/// `ignis-image-ls.1`, ...), from the same definitions as `--help`.
pub fn man(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut cmd = crate::cli::command();
    cmd.build();
    write_pages(&cmd, "ignis", dir)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if cmd.is_hide_set() {
        return Ok(());
    }
    // Built from the root: each page is titled `ignis-image-ls` and so on.
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))?;
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
        }
    }
    Ok(())
}
