//! `ignis-mkimage ROOTFS OUT_LAYOUT [NAME] [CMD...]`: writes an OCI image
//! layout whose single layer is ROOTFS. Used by the demo and benchmarks to
//! make images on a machine without Docker.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        anyhow::bail!("usage: ignis-mkimage ROOTFS OUT_LAYOUT [NAME] [CMD...]");
    }
    let name = args.get(2).cloned().unwrap_or_else(|| "latest".to_string());
    let cmd: Vec<String> = args.iter().skip(3).cloned().collect();
    ignis_testkit::OciWriter::layout_from_dir(args[0].as_ref(), args[1].as_ref(), &name, &cmd)
}
