use relay_guest::prelude::*;

#[command(name = "get")]
fn get() -> Result<(), Error> {
    Ok(())
}

fn main() {}
