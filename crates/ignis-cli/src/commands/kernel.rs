use crate::engine::Engine;
use ignis_api::short_id;

use crate::cli::KernelCmd;
use crate::output;

pub fn run(ignis: &dyn Engine, cmd: KernelCmd) -> anyhow::Result<()> {
    match cmd {
        KernelCmd::Import {
            source,
            name,
            default,
        } => {
            let k = ignis.kernel_import(&source, name.as_deref(), default)?;
            println!("{}", k.id);
        }
        KernelCmd::Ls(opts) => {
            let kernels = ignis.kernel_list()?;
            let rows = kernels
                .iter()
                .map(|k| {
                    vec![
                        short_id(&k.id).to_string(),
                        if k.names.is_empty() {
                            "<none>".to_string()
                        } else {
                            k.names.join(",")
                        },
                        k.version.clone(),
                        if k.modules_digest.is_some() {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        output::ago(k.created),
                        output::size(k.vmlinux_size),
                    ]
                })
                .collect();
            let ids = kernels
                .iter()
                .map(|k| short_id(&k.id).to_string())
                .collect();
            output::list(
                &opts,
                &["KERNEL ID", "NAME", "VERSION", "MODULES", "CREATED", "SIZE"],
                rows,
                &kernels,
                ids,
            )?;
        }
        KernelCmd::Inspect {
            kernel,
            output: fmt,
        } => output::inspect(fmt, &ignis.kernel_inspect(&kernel)?)?,
        KernelCmd::Rm { kernels, force } => {
            let mut first_err = None;
            for q in kernels {
                match ignis.kernel_remove(&q, force) {
                    Ok(id) => println!("Deleted: {id}"),
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
