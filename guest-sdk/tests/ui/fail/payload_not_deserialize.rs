use relay_guest::prelude::*;

struct Config {
    replicas: u32,
}

#[command(name = "deploy")]
fn deploy(_ctx: &mut Ctx, config: Config) -> Result<u32, Error> {
    Ok(config.replicas)
}

fn main() {}
