//! `ignis-testguest OUT`: writes the tiny test guest (a static ELF, no
//! Linux: it prints the init's ready line, then a dot per busy loop) for
//! `ignis kernel import OUT --name testguest`. Used by benchmarks.

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: ignis-testguest OUT"))?;
    std::fs::write(&out, ignis_testkit::testguest::elf())?;
    Ok(())
}
