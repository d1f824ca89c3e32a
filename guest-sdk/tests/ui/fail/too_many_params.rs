use relay_guest::prelude::*;

#[command(name = "add")]
fn add(_ctx: &mut Ctx, _a: i64, _b: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
