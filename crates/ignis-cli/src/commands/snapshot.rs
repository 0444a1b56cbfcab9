//! `ignis snapshot`, `ignis fork`, `ignis restore`.

use crate::engine::Engine;
use ignis_core::snapshot::ForkOptions;

use crate::cli::{SnapshotArgs, SnapshotCmd};
use crate::output;

pub fn snapshot(ignis: &dyn Engine, a: SnapshotArgs) -> anyhow::Result<()> {
    let Some(cmd) = a.command else {
        let vm = a.vm.expect("clap requires VM without a subcommand");
        let timeline = ignis_core::timing::Timeline::starting_at(output::started_ns());
        let s = ignis.snapshot_create(&vm, a.name.as_deref(), &timeline)?;
        eprintln!(
            "snapshot {} of {}: memory {}, disk {}, VM paused {} ms",
            s.name,
            s.vm_name,
            output::size(s.memory.size),
            output::size(s.disk.size),
            s.pause_ms
        );
        println!("{}", s.id);
        if a.timings {
            output::phases(&s.timings);
        }
        return Ok(());
    };
    match cmd {
        SnapshotCmd::Ls { tree, list } => {
            if tree {
                for line in ignis.snapshot_tree()? {
                    let s = &line.snapshot;
                    println!(
                        "{}{} {} (of {}, {})",
                        "  ".repeat(line.depth),
                        if line.depth == 0 { "●" } else { "└─" },
                        s.name,
                        s.vm_name,
                        output::ago(s.created)
                    );
                    for f in &line.forks {
                        println!("{}   ↳ vm {f}", "  ".repeat(line.depth));
                    }
                }
                return Ok(());
            }
            let snaps = ignis.snapshot_list()?;
            let rows = snaps
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.name.clone(),
                        s.vm_name.clone(),
                        s.backend.to_string(),
                        output::size(s.memory.size),
                        output::size(s.disk.size),
                        format!("{} ms", s.pause_ms),
                        s.parent.clone().unwrap_or_else(|| "-".into()),
                        output::ago(s.created),
                    ]
                })
                .collect();
            let ids = snaps.iter().map(|s| s.id.clone()).collect();
            output::list(
                &list,
                &[
                    "SNAPSHOT ID",
                    "NAME",
                    "VM",
                    "BACKEND",
                    "MEMORY",
                    "DISK",
                    "PAUSE",
                    "PARENT",
                    "CREATED",
                ],
                rows,
                &snaps,
                ids,
            )?;
        }
        SnapshotCmd::Inspect {
            snapshot,
            output: fmt,
        } => output::inspect(fmt, &ignis.snapshot_inspect(&snapshot)?)?,
        SnapshotCmd::Rm { snapshots } => {
            let mut first_err = None;
            for q in snapshots {
                match ignis.snapshot_remove(&q) {
                    Ok(s) => println!("Deleted: {}", s.id),
                    Err(e) => {
                        eprintln!("ignis: {e}");
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e.into());
            }
        }
        SnapshotCmd::Export {
            snapshot,
            output: out,
        } => {
            let s = ignis.snapshot_export(&snapshot, &out)?;
            eprintln!("exported {} to {}", s.name, out.display());
        }
        SnapshotCmd::Push {
            snapshot,
            reference,
        } => {
            let digest = ignis.snapshot_push(&snapshot, &reference)?;
            println!("{digest}");
        }
        SnapshotCmd::Pull { reference } => {
            let s = ignis.snapshot_pull(&reference)?;
            eprintln!("pulled snapshot {}", s.name);
            println!("{}", s.id);
        }
        SnapshotCmd::Import { file } => {
            let s = ignis.snapshot_import(&file)?;
            println!("{}", s.id);
        }
    }
    Ok(())
}

pub fn fork(
    ignis: &dyn Engine,
    source: &str,
    count: u32,
    name_prefix: Option<String>,
    name: Option<String>,
    rm: bool,
    timings: bool,
) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let (snap, clones) = ignis.fork(
        source,
        &ForkOptions {
            count,
            name_prefix,
            name,
            auto_remove: rm,
        },
    )?;
    for c in &clones {
        println!("{}", c.id);
    }
    if timings {
        crate::output::timings(&clones);
    }
    eprintln!(
        "{} clone(s) of {} running after {} ms",
        clones.len(),
        snap.name,
        t.elapsed().as_millis()
    );
    Ok(())
}
