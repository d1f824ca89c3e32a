use relay_guest::prelude::*;

struct Stored;

#[command(name = "deploy")]
fn deploy(_ctx: &mut Ctx) -> Result<Stored, Error> {
    Ok(Stored)
}

fn main() {}
