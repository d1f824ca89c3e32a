//! Every supported handler shape in one plugin, plus handlers in a module.
use relay_guest::prelude::*;

#[derive(Deserialize)]
struct Req {
    n: u32,
}

#[derive(Serialize)]
struct Resp {
    n: u32,
}

#[command(name = "typed", roles(admin, primary), budget_ms = 2000)]
fn typed(_ctx: &mut Ctx, req: Req) -> Result<Resp, Error> {
    Ok(Resp { n: req.n })
}

#[command(roles(all))]
fn no_payload(_ctx: &mut Ctx) -> Result<Resp, Error> {
    Ok(Resp { n: 0 })
}

#[command(name = "no-reply")]
fn no_reply(_ctx: &mut Ctx, _req: Req) -> Result<(), Error> {
    Ok(())
}

#[command(name = "nothing-at-all")]
fn nothing(_ctx: &mut Ctx) -> relay_guest::Result<()> {
    Ok(())
}

#[command(name = "raw", roles(secondary))]
fn raw(_ctx: &mut Ctx, payload: Raw) -> Result<Raw, Error> {
    Ok(payload)
}

mod handlers {
    use relay_guest::prelude::*;

    #[command(name = "nested")]
    pub fn nested(_ctx: &mut Ctx, value: Option<i64>) -> Result<Option<i64>, Error> {
        Ok(value)
    }
}

relay_guest::plugin!(
    name = "shapes",
    version = "1.2.3-rc.1",
    commands = [typed, no_payload, no_reply, nothing, raw, handlers::nested],
);

fn main() {
    let info = PLUGIN.info();
    assert_eq!(info.commands.len(), 6);
    assert_eq!(info.commands[1].name, "no_payload");
    assert_eq!(info.commands[1].roles, [Role::Admin, Role::Primary, Role::Secondary]);
    assert_eq!(info.commands[2].roles, [Role::Admin]);
}
