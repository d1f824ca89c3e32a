//! The command table and the world's two exports, `describe` and `handle`.
//!
//! Role in the data path: `#[command]` turns each handler into a
//! [`CommandDef`] constant and `plugin!` gathers them into a [`Plugin`]
//! static; the exported `describe` reports that table to the host at load,
//! and `handle` routes each delivery to its handler.
//!
//! The host already rejects unknown commands and roles a command does not
//! allow (`unknown_command` / `not_permitted`) before calling the plugin;
//! `handle` checks both again so a host bug cannot reach a handler with a
//! role it never granted (answered `permanent`).
//!
//! [`check_plugin`] is a `const fn`: `plugin!` evaluates it at compile time,
//! so a bad plugin name, an empty version or two commands sharing a name fail
//! the build instead of the load.

use crate::bindings::{Command, HandlerError};
use crate::host::Host;
use crate::{CommandSpec, Ctx, Error, PluginInfo, Role};

/// The type-erased entry point of one handler: decode, call, encode.
pub type RunFn = fn(&mut Ctx, &[u8]) -> Result<Option<Vec<u8>>, Error>;

/// One command as `#[command]` declares it.
#[derive(Clone, Copy)]
pub struct CommandDef {
    /// `[A-Za-z0-9_-]`, 1..=64 chars (checked by the macro).
    pub name: &'static str,
    /// Roles allowed to call it.
    pub roles: &'static [Role],
    /// Optional per-attempt time budget.
    pub budget_ms: Option<u32>,
    pub run: RunFn,
}

/// A plugin's identity and command table, as `plugin!` declares it.
#[derive(Clone, Copy)]
pub struct Plugin {
    pub name: &'static str,
    pub version: &'static str,
    pub commands: &'static [CommandDef],
}

impl Plugin {
    /// What `describe` reports to the host.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.into(),
            version: self.version.into(),
            commands: self
                .commands
                .iter()
                .map(|command| CommandSpec {
                    name: command.name.into(),
                    roles: command.roles.to_vec(),
                    budget_ms: command.budget_ms,
                })
                .collect(),
        }
    }

    /// The command called `name`, if the plugin has one.
    pub fn command(&self, name: &str) -> Option<&CommandDef> {
        self.commands.iter().find(|command| command.name == name)
    }

    /// Route one delivery (name and role from `ctx`) to its handler.
    pub fn handle(&self, ctx: &mut Ctx, payload: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let Some(command) = self.command(ctx.command()) else {
            return Err(Error::permanent(
                ["unknown command `", ctx.command(), "`"].concat(),
            ));
        };
        if !command.roles.contains(&ctx.role()) {
            return Err(Error::permanent(
                ["role not permitted for `", command.name, "`"].concat(),
            ));
        }
        (command.run)(ctx, payload)
    }
}

/// The world's `describe` export.
pub fn describe(plugin: &Plugin) -> PluginInfo {
    plugin.info()
}

/// The world's `handle` export.
pub fn handle(plugin: &Plugin, command: Command) -> Result<Option<Vec<u8>>, HandlerError> {
    let Command {
        id,
        name,
        payload,
        attempt,
        role,
    } = command;
    // `Host` is a unit struct on wasm32 and the `MockHost` elsewhere.
    #[allow(clippy::default_constructed_unit_structs)]
    let host = Host::default();
    let mut ctx = Ctx::new(id, name, attempt, role, host);
    plugin
        .handle(&mut ctx, &payload)
        .map_err(HandlerError::from)
}

/// Compile-time checks of a `plugin!` declaration (panics = build errors).
pub const fn check_plugin(plugin: &Plugin) {
    if !is_valid_name(plugin.name) {
        panic!("plugin! name must be 1..=64 characters of [A-Za-z0-9_-]");
    }
    if !is_semver(plugin.version) {
        panic!("plugin! version must be semver, e.g. \"1.2.0\"");
    }
    if plugin.commands.is_empty() {
        panic!("plugin! must list at least one command");
    }
    let mut i = 0;
    while i < plugin.commands.len() {
        let command = &plugin.commands[i];
        if !is_valid_name(command.name) {
            panic!("command name must be 1..=64 characters of [A-Za-z0-9_-]");
        }
        if command.roles.is_empty() {
            panic!("a command must allow at least one role");
        }
        let mut j = i + 1;
        while j < plugin.commands.len() {
            if str_eq(command.name, plugin.commands[j].name) {
                panic!("plugin! lists two commands with the same name");
            }
            j += 1;
        }
        i += 1;
    }
}

/// The seed naming rule: `[A-Za-z0-9_-]`, 1..=64 characters.
pub const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 64 {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// `MAJOR.MINOR.PATCH` (digits, no leading zeros) with an optional
/// `-pre`/`+build` tail of `[0-9A-Za-z.+-]`, as the host's `is_semver`.
pub const fn is_semver(version: &str) -> bool {
    let bytes = version.as_bytes();
    let mut i = 0;
    let mut part = 0;
    while part < 3 {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        // Empty parts and leading zeros are not semver (the host refuses them).
        if i == start || (i - start > 1 && bytes[start] == b'0') {
            return false;
        }
        part += 1;
        if part < 3 {
            if i >= bytes.len() || bytes[i] != b'.' {
                return false;
            }
            i += 1;
        }
    }
    if i == bytes.len() {
        return true;
    }
    if !(bytes[i] == b'-' || bytes[i] == b'+') || i + 1 == bytes.len() {
        return false;
    }
    i += 1;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+') {
            return false;
        }
        i += 1;
    }
    true
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ok(_: &mut Ctx, _: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(vec![0xc3]))
    }

    const PLUGIN: Plugin = Plugin {
        name: "demo",
        version: "0.1.0",
        commands: &[CommandDef {
            name: "ping",
            roles: &[Role::Admin],
            budget_ms: Some(5),
            run: ok,
        }],
    };
    const _: () = check_plugin(&PLUGIN);

    #[test]
    fn names_follow_the_seed_rule() {
        assert!(is_valid_name("get-config_2"));
        assert!(is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"a".repeat(65)));
        assert!(!is_valid_name("has space"));
        assert!(!is_valid_name("dé"));
        assert!(!is_valid_name("a/b"));
    }

    #[test]
    fn versions_are_semver() {
        for good in [
            "0.1.0",
            "1.2.3",
            "10.20.30-rc.1",
            "1.0.0+build.5",
            "1.0.0-alpha+001",
        ] {
            assert!(is_semver(good), "{good}");
        }
        for bad in [
            "", "1", "1.2", "1.2.x", "v1.2.3", "1.2.3-", "1.2.3 ", "1..3", "01.2.3", "1.02.3",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    #[test]
    fn describe_reports_the_table() {
        let info = describe(&PLUGIN);
        assert_eq!(info.name, "demo");
        assert_eq!(info.version, "0.1.0");
        assert_eq!(info.commands.len(), 1);
        assert_eq!(info.commands[0].name, "ping");
        assert_eq!(info.commands[0].roles, vec![Role::Admin]);
        assert_eq!(info.commands[0].budget_ms, Some(5));
    }

    #[test]
    fn handle_routes_by_name_and_rechecks_the_role() {
        let mut ctx = Ctx::for_test("ping", Role::Admin);
        assert_eq!(PLUGIN.handle(&mut ctx, &[]), Ok(Some(vec![0xc3])));

        let mut ctx = Ctx::for_test("ping", Role::Secondary);
        let err = PLUGIN.handle(&mut ctx, &[]).expect_err("role not granted");
        assert_eq!(err.kind(), ErrorKind::Permanent);

        let mut ctx = Ctx::for_test("pong", Role::Admin);
        let err = PLUGIN.handle(&mut ctx, &[]).expect_err("no such command");
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.message().contains("`pong`"));
    }
}
