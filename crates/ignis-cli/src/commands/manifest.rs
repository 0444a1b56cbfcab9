//! `ignis apply`, `ignis delete`, `ignis get`.

use std::path::PathBuf;

use crate::engine::Engine;
use ignis_core::manifest::{read_path, Action, Applied};

use crate::cli::{InspectFormat, ListFormat};
use crate::output;

fn read_all(files: &[PathBuf]) -> anyhow::Result<Vec<ignis_api::manifest::Manifest>> {
    // Every file is parsed and validated before anything is changed.
    let mut all = Vec::new();
    for f in files {
        all.extend(read_path(f)?);
    }
    Ok(all)
}

pub fn report(results: &[Applied], format: ListFormat) -> anyhow::Result<i32> {
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(results)?),
        ListFormat::Table => {
            for r in results {
                let what = format!("{}/{}", r.kind.to_ascii_lowercase(), r.name);
                match &r.action {
                    Action::Failed(why) => eprintln!("{what} failed: {why}"),
                    a => println!(
                        "{what} {}",
                        serde_json::to_value(a)?["action"].as_str().unwrap_or("?")
                    ),
                }
            }
        }
    }
    Ok(i32::from(
        results
            .iter()
            .any(|r| matches!(r.action, Action::Failed(_))),
    ))
}

pub fn apply(ignis: &dyn Engine, files: &[PathBuf], format: ListFormat) -> anyhow::Result<i32> {
    let manifests = read_all(files)?;
    report(&ignis.apply(&manifests)?, format)
}

pub fn delete(ignis: &dyn Engine, files: &[PathBuf]) -> anyhow::Result<i32> {
    let manifests = read_all(files)?;
    report(&ignis.delete_manifests(&manifests)?, ListFormat::Table)
}

pub fn get(
    ignis: &dyn Engine,
    kind: &str,
    name: &str,
    format: InspectFormat,
) -> anyhow::Result<()> {
    match kind.to_ascii_lowercase().as_str() {
        "vm" | "vms" => output::inspect(format, &ignis.vm_manifest(name)?),
        other => Err(ignis_core::Error::new(
            ignis_core::ErrorKind::Invalid,
            format!("get {other}: only `vm` has a manifest view (use `image inspect`, `kernel inspect`, `snapshot inspect`)"),
        )
        .into()),
    }
}
