use crate::engine::Engine;

use crate::cli::{ListFormat, VolumeCmd};
use crate::output;

/// As Docker: asks before removing (a line from standard input: `y`
/// goes ahead, anything else or none does not; `-f` skips the question).
fn confirm(all: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, Write};
    let what = if all {
        "all volumes not used by at least one VM"
    } else {
        "all anonymous volumes not used by at least one VM"
    };
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub fn run(ignis: &dyn Engine, cmd: VolumeCmd) -> anyhow::Result<i32> {
    match cmd {
        VolumeCmd::Create { name, size, label } => {
            let bytes = ignis_api::parse_size(&size, 1).map_err(|e| {
                ignis_core::Error::new(ignis_core::ErrorKind::Invalid, format!("--size: {e}"))
            })?;
            let labels = label
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let v = ignis.volume_create(name.as_deref(), bytes, &labels)?;
            println!("{}", v.name);
        }
        VolumeCmd::Ls(opts) => {
            let vols = ignis.volume_list()?;
            let rows = vols
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        output::size(v.size),
                        if v.anonymous { "anonymous" } else { "named" }.into(),
                        output::ago(v.created),
                        v.used_by.join(","),
                    ]
                })
                .collect();
            let ids = vols.iter().map(|v| v.name.clone()).collect();
            output::list(
                &opts,
                &["VOLUME NAME", "SIZE", "KIND", "CREATED", "USED BY"],
                rows,
                &vols,
                ids,
            )?;
        }
        VolumeCmd::Inspect {
            volume,
            output: fmt,
        } => output::inspect(fmt, &ignis.volume_inspect(&volume)?)?,
        VolumeCmd::Rm { volumes } => {
            let mut first = None;
            for q in volumes {
                match ignis.volume_remove(&q) {
                    Ok(v) => println!("{}", v.name),
                    Err(e) if first.is_none() => first = Some(e),
                    Err(e) => eprintln!("ignis: {e}"),
                }
            }
            if let Some(e) = first {
                return Err(e.into());
            }
        }
        VolumeCmd::Prune { all, force, output } => {
            if !force && !confirm(all)? {
                return Ok(0);
            }
            let report = ignis.volume_prune(all)?;
            match output {
                ListFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                ListFormat::Table => {
                    if !report.volumes_deleted.is_empty() {
                        println!("Deleted Volumes:");
                        for name in &report.volumes_deleted {
                            println!("{name}");
                        }
                        println!();
                    }
                    println!(
                        "Total reclaimed space: {}",
                        output::size(report.space_reclaimed)
                    );
                }
            }
        }
    }
    Ok(0)
}
