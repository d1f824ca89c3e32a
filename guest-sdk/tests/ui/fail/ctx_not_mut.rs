use relay_guest::prelude::*;

#[command(name = "get")]
fn get(_ctx: &Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
