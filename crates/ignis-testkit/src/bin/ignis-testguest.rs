//! `ignis-testguest [--idle] OUT`: writes the tiny test guest (a static
//! ELF, no Linux: it prints the init's ready line, then a dot line every
//! 2^30 TSC cycles; with `--idle` it halts instead, costing no CPU) for
//! `ignis kernel import OUT --name testguest`. Used by benchmarks.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (idle, out) = match args.as_slice() {
        [flag, out] if flag == "--idle" => (true, out),
        [out] => (false, out),
        _ => anyhow::bail!("usage: ignis-testguest [--idle] OUT"),
    };
    let elf = if idle {
        ignis_testkit::testguest::elf_idle()
    } else {
        ignis_testkit::testguest::elf()
    };
    std::fs::write(out, elf)?;
    Ok(())
}
