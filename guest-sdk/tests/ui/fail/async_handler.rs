use relay_guest::prelude::*;

#[command(name = "get")]
async fn get(_ctx: &mut Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
