use crate::engine::Engine;

use crate::cli::{ListFormat, SystemCmd};
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
    }
    Ok(())
}
