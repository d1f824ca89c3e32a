use relay_guest::prelude::*;

#[command(name = "get")]
fn get(_ctx: &mut Ctx) -> Result<(), Error> {
    Ok(())
}

#[command(name = "get")]
fn get_again(_ctx: &mut Ctx) -> Result<(), Error> {
    Ok(())
}

relay_guest::plugin!(name = "counter", commands = [get, get_again]);

fn main() {}
