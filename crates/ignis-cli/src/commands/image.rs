use crate::engine::Engine;
use ignis_api::short_id;
use ignis_core::image::RemoveOutcome;

use crate::cli::ImageCmd;
use crate::output;

pub fn run(ignis: &dyn Engine, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Pull { reference } => {
            let img = ignis.image_pull(&reference)?;
            println!("{}", img.id);
        }
        ImageCmd::Import { path, name } => {
            for img in ignis.image_import(&path, name.as_deref())? {
                println!("{}", img.id);
            }
        }
        ImageCmd::Ls(opts) => {
            let images = ignis.image_list()?;
            let mut rows = Vec::new();
            for img in &images {
                let names = if img.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    img.names.clone()
                };
                for n in names {
                    rows.push(vec![
                        short_id(&img.id).to_string(),
                        n,
                        output::ago(img.created),
                        output::size(img.rootfs_size),
                    ]);
                }
            }
            let ids = images.iter().map(|i| short_id(&i.id).to_string()).collect();
            output::list(
                &opts,
                &["IMAGE ID", "NAME", "CREATED", "SIZE"],
                rows,
                &images,
                ids,
            )?;
        }
        ImageCmd::Inspect { image, output: fmt } => {
            output::inspect(fmt, &ignis.image_inspect(&image)?)?
        }
        ImageCmd::Rm { images, force } => {
            let mut first_err = None;
            for q in images {
                match ignis.image_remove(&q, force) {
                    Ok(RemoveOutcome::Untagged(n)) => println!("Untagged: {n}"),
                    Ok(RemoveOutcome::Dangling(id)) => {
                        println!("Untagged: {id} (in use; deleted once unused)")
                    }
                    Ok(RemoveOutcome::Deleted(id)) => println!("Deleted: {id}"),
                    // Docker's rmi goes on with the other arguments.
                    Err(e) if first_err.is_none() => first_err = Some(e),
                    Err(e) => eprintln!("ignis: {e}"),
                }
            }
            if let Some(e) = first_err {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
