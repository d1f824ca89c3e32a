wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use relay::plugin::types::{CommandSpec, Role};

struct Echo;

impl Guest for Echo {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "echo".into(),
            version: "0.1.0".into(),
            commands: vec![CommandSpec { name: "echo".into(), roles: vec![Role::Admin, Role::Primary, Role::Secondary], budget_ms: None }],
        }
    }
    fn handle(cmd: Command) -> Result<Option<Vec<u8>>, HandlerError> {
        Ok(Some(cmd.payload))
    }
}

export!(Echo);
