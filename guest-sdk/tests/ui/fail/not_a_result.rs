use relay_guest::prelude::*;

#[command(name = "get")]
fn get(_ctx: &mut Ctx) -> i64 {
    0
}

fn main() {}
