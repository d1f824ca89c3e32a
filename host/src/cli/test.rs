//! `relay test`: the desktop harness over a scenario file.

/// Arguments of `relay test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {}

pub fn run(_args: TestArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
