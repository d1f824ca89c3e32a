use relay_guest::prelude::*;

#[command(name = "get")]
fn get(_ctx: &mut Ctx) -> Result<(), Error> {
    Ok(())
}

relay_guest::plugin!(name = "my counter", commands = [get]);

fn main() {}
