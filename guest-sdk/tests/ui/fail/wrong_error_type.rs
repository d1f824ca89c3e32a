use relay_guest::prelude::*;

#[command(name = "get")]
fn get(_ctx: &mut Ctx) -> Result<i64, String> {
    Ok(0)
}

fn main() {}
