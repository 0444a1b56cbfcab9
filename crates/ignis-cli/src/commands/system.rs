use ignis_core::Ignis;

use crate::cli::{ListFormat, SystemCmd};
use crate::output;

pub fn run(ignis: &Ignis, cmd: SystemCmd) -> anyhow::Result<()> {
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
                        "Removed {} blobs, {} disks, {} temp entries. Total reclaimed space: {}",
                        report.blobs_removed,
                        report.disks_removed,
                        report.temp_removed,
                        output::size(report.bytes_freed)
                    );
                }
            }
        }
    }
    Ok(())
}
