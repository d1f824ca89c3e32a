use relay_guest::prelude::*;

#[command(name = "reboot", budget_ms = 0)]
fn reboot(_ctx: &mut Ctx) -> Result<(), Error> {
    Ok(())
}

relay_guest::plugin!(name = "system", commands = [reboot]);

fn main() {}
