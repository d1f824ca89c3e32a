//! Step 4 of the data path: command name -> handler.
//!
//! The registry mirrors the seed SDK's Command API: [`Registry::listen`]
//! registers a native handler (errors: duplicate listener, validation) and
//! [`Registry::off`] removes one (returns whether it existed, safe when
//! absent). Plugins enter with [`Registry::install`], which claims every
//! command the plugin's `describe` lists, all or nothing: a conflict with a
//! command owned by someone else leaves the registry untouched. Installing a
//! plugin under a name already present replaces it atomically (the new
//! artifact is fully loaded and described before the swap; callers never see
//! a half-installed plugin), which is what over-the-air updates build on.
//!
//! The registry also answers the two access questions the host asks before a
//! command runs: does anyone handle this name (`unknown_command`), and may
//! this role call it (`not_permitted`).
//!
//! Names starting with `_` are reserved for the host's built-in commands
//! (status query, plugin list/install); no plugin or listener may claim them.

use alloc::{
    boxed::Box,
    collections::BTreeMap,
    string::{String, ToString},
    vec::Vec,
};

use crate::engine::{Plugin, PluginError};
use crate::name::{validate_name, NameError};
use crate::plugin::{CallOutcome, CommandSpec, HandlerResult, Invocation, PluginInfo, Role};
use crate::status::Code;

/// Prefix of the host's reserved command names.
pub const RESERVED_PREFIX: char = '_';

/// True for names only the host itself may handle.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// A handler written in Rust and linked into the host (the seed SDK's
/// `listen(name, callback)`). Closures `FnMut(&Invocation) -> HandlerResult`
/// implement it.
pub trait NativeHandler: Send {
    fn call(&mut self, cmd: &Invocation) -> HandlerResult;
}

impl<F> NativeHandler for F
where
    F: FnMut(&Invocation) -> HandlerResult + Send,
{
    fn call(&mut self, cmd: &Invocation) -> HandlerResult {
        self(cmd)
    }
}

/// Why `listen` or `install` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// The seed SDK's `DuplicateListenerError`.
    #[error("command {command:?} already has a listener ({owner})")]
    Duplicate { command: String, owner: String },
    /// The seed SDK's `ValidationError`.
    #[error("invalid command name: {0}")]
    Validation(#[from] NameError),
    #[error("command name {0:?} is reserved for the host (names starting with '_')")]
    Reserved(String),
    #[error("a listener must allow at least one role")]
    NoRoles,
}

/// Why a command could not be dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("no handler for command {0:?}")]
    UnknownCommand(String),
    #[error("role {role} may not call {command:?}")]
    NotPermitted { command: String, role: Role },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl DispatchError {
    /// Status code (see `docs/protocol.md`).
    pub fn code(&self) -> Code {
        match self {
            DispatchError::UnknownCommand(_) => Code::UnknownCommand,
            DispatchError::NotPermitted { .. } => Code::NotPermitted,
            DispatchError::Plugin(e) => e.code(),
        }
    }
}

/// Who answers a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Native,
    Plugin(String),
}

impl core::fmt::Display for Owner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Owner::Native => f.write_str("a native listener"),
            Owner::Plugin(p) => write!(f, "plugin {p:?}"),
        }
    }
}

struct Route {
    owner: Owner,
    spec: CommandSpec,
    native: Option<Box<dyn NativeHandler>>,
}

/// Command routes plus the plugins that own them.
#[derive(Default)]
pub struct Registry {
    routes: BTreeMap<String, Route>,
    plugins: BTreeMap<String, Box<dyn Plugin>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a native handler callable by every role.
    pub fn listen(
        &mut self,
        name: &str,
        handler: impl NativeHandler + 'static,
    ) -> Result<(), ListenError> {
        let spec = CommandSpec {
            name: name.into(),
            roles: Role::ALL.to_vec(),
            budget_ms: None,
        };
        self.listen_with(spec, handler)
    }

    /// Registers a native handler with explicit roles and budget.
    pub fn listen_with(
        &mut self,
        spec: CommandSpec,
        handler: impl NativeHandler + 'static,
    ) -> Result<(), ListenError> {
        check_claim(&spec)?;
        if let Some(route) = self.routes.get(&spec.name) {
            return Err(ListenError::Duplicate {
                command: spec.name.clone(),
                owner: route.owner.to_string(),
            });
        }
        self.routes.insert(
            spec.name.clone(),
            Route {
                owner: Owner::Native,
                spec,
                native: Some(Box::new(handler)),
            },
        );
        Ok(())
    }

    /// Removes the route of `name` (native listener or one plugin command).
    /// Returns whether something was removed; safe when absent.
    pub fn off(&mut self, name: &str) -> bool {
        self.routes.remove(name).is_some()
    }

    /// Installs `plugin`, claiming all its commands, or replaces the loaded
    /// plugin of the same name atomically. Returns the replaced plugin.
    pub fn install(
        &mut self,
        plugin: Box<dyn Plugin>,
    ) -> Result<Option<Box<dyn Plugin>>, ListenError> {
        let info = plugin.info().clone();
        for spec in &info.commands {
            check_claim(spec)?;
            if let Some(route) = self.routes.get(&spec.name) {
                if route.owner != Owner::Plugin(info.name.clone()) {
                    return Err(ListenError::Duplicate {
                        command: spec.name.clone(),
                        owner: route.owner.to_string(),
                    });
                }
            }
        }
        // No conflict: swap. Drop the old plugin's routes, then add the new ones.
        let owner = Owner::Plugin(info.name.clone());
        self.routes.retain(|_, r| r.owner != owner);
        for spec in info.commands {
            self.routes.insert(
                spec.name.clone(),
                Route {
                    owner: owner.clone(),
                    spec,
                    native: None,
                },
            );
        }
        Ok(self.plugins.insert(info.name, plugin))
    }

    /// Unloads a plugin and all its routes.
    pub fn uninstall(&mut self, plugin: &str) -> Option<Box<dyn Plugin>> {
        let owner = Owner::Plugin(plugin.into());
        self.routes.retain(|_, r| r.owner != owner);
        self.plugins.remove(plugin)
    }

    /// The spec of `name` if `role` may call it.
    pub fn resolve(&self, name: &str, role: Role) -> Result<(&CommandSpec, &Owner), DispatchError> {
        let route = self
            .routes
            .get(name)
            .ok_or_else(|| DispatchError::UnknownCommand(name.into()))?;
        if !route.spec.allows(role) {
            return Err(DispatchError::NotPermitted {
                command: name.into(),
                role,
            });
        }
        Ok((&route.spec, &route.owner))
    }

    /// Checks access, then runs the command on its handler.
    pub fn dispatch(&mut self, cmd: &Invocation) -> Result<CallOutcome, DispatchError> {
        let owner = self.resolve(&cmd.name, cmd.role)?.1.clone();
        match owner {
            Owner::Native => {
                let route = self.routes.get_mut(&cmd.name).expect("resolved above");
                let handler = route
                    .native
                    .as_mut()
                    .expect("native routes carry a handler");
                Ok(CallOutcome {
                    result: handler.call(cmd),
                    events: Vec::new(),
                })
            }
            Owner::Plugin(p) => {
                let plugin = self
                    .plugins
                    .get_mut(&p)
                    .ok_or_else(|| DispatchError::UnknownCommand(cmd.name.clone()))?;
                Ok(plugin.handle(cmd)?)
            }
        }
    }

    /// The plugin and version a call of `name` by `role` would run on,
    /// `name@version` (statuses name it); `None` for a native handler or a
    /// call that would be refused.
    pub fn plugin_version_for(&self, name: &str, role: Role) -> Option<String> {
        match self.resolve(name, role) {
            Ok((_, Owner::Plugin(plugin))) => self
                .plugins
                .get(plugin)
                .map(|p| alloc::format!("{plugin}@{}", p.info().version)),
            _ => None,
        }
    }

    /// Loaded plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginInfo> {
        self.plugins.values().map(|p| p.info())
    }

    pub fn plugin(&self, name: &str) -> Option<&dyn Plugin> {
        self.plugins.get(name).map(|p| &**p)
    }

    pub fn plugin_mut(&mut self, name: &str) -> Option<&mut (dyn Plugin + 'static)> {
        self.plugins.get_mut(name).map(|p| &mut **p)
    }

    /// Names of every routed command, sorted.
    pub fn commands(&self) -> impl Iterator<Item = (&str, &Owner)> {
        self.routes.iter().map(|(n, r)| (n.as_str(), &r.owner))
    }
}

fn check_claim(spec: &CommandSpec) -> Result<(), ListenError> {
    validate_name(&spec.name)?;
    if is_reserved(&spec.name) {
        return Err(ListenError::Reserved(spec.name.clone()));
    }
    if spec.roles.is_empty() {
        return Err(ListenError::NoRoles);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_env::HostEnv;
    use crate::limits::Limits;
    use crate::plugin::{ErrorKind, HandlerError};
    use alloc::vec;

    /// A fake plugin: replies with its version so a replace is observable.
    struct Fake {
        info: PluginInfo,
        env: HostEnv,
    }

    impl Plugin for Fake {
        fn info(&self) -> &PluginInfo {
            &self.info
        }
        fn handle(&mut self, _cmd: &Invocation) -> Result<CallOutcome, PluginError> {
            Ok(CallOutcome {
                result: Ok(Some(self.info.version.as_bytes().to_vec())),
                events: vec![],
            })
        }
        fn env(&self) -> &HostEnv {
            &self.env
        }
        fn env_mut(&mut self) -> &mut HostEnv {
            &mut self.env
        }
    }

    fn fake(name: &str, version: &str, cmds: &[(&str, &[Role])]) -> Box<dyn Plugin> {
        Box::new(Fake {
            info: PluginInfo {
                name: name.into(),
                version: version.into(),
                commands: cmds
                    .iter()
                    .map(|(c, r)| CommandSpec {
                        name: (*c).into(),
                        roles: r.to_vec(),
                        budget_ms: None,
                    })
                    .collect(),
            },
            env: HostEnv::detached(&Limits::default()),
        })
    }

    fn inv(name: &str, role: Role) -> Invocation {
        Invocation {
            id: "1".into(),
            name: name.into(),
            payload: vec![],
            attempt: 1,
            role,
        }
    }

    #[test]
    fn listen_and_off_follow_the_seed_api() {
        let mut r = Registry::new();
        r.listen("reboot", |_: &Invocation| Ok(None)).unwrap();
        assert!(matches!(
            r.listen("reboot", |_: &Invocation| Ok(None)),
            Err(ListenError::Duplicate { .. })
        ));
        assert!(matches!(
            r.listen("bad name", |_: &Invocation| Ok(None)),
            Err(ListenError::Validation(_))
        ));
        assert!(matches!(
            r.listen("_status", |_: &Invocation| Ok(None)),
            Err(ListenError::Reserved(_))
        ));
        assert!(r.off("reboot"));
        assert!(!r.off("reboot"), "off is safe when absent");
        assert!(!r.off("never-registered"));
        assert!(matches!(
            r.dispatch(&inv("reboot", Role::Admin)),
            Err(DispatchError::UnknownCommand(_))
        ));
    }

    #[test]
    fn native_handler_runs_and_reports_errors() {
        let mut r = Registry::new();
        r.listen("fail", |_: &Invocation| {
            Err(HandlerError {
                kind: ErrorKind::Transient,
                message: "busy".into(),
            })
        })
        .unwrap();
        let out = r.dispatch(&inv("fail", Role::Secondary)).unwrap();
        assert_eq!(out.result.unwrap_err().kind, ErrorKind::Transient);
    }

    #[test]
    fn roles_are_enforced() {
        let mut r = Registry::new();
        assert!(r
            .install(fake("system", "1.0.0", &[("reboot", &[Role::Admin])]))
            .is_ok());
        assert!(r.dispatch(&inv("reboot", Role::Admin)).is_ok());
        let err = r.dispatch(&inv("reboot", Role::Secondary)).unwrap_err();
        assert_eq!(err.code(), "not_permitted");
        assert_eq!(
            r.dispatch(&inv("nope", Role::Admin)).unwrap_err().code(),
            "unknown_command"
        );
    }

    #[test]
    fn install_is_all_or_nothing_and_replaces_atomically() {
        let mut r = Registry::new();
        r.listen("b", |_: &Invocation| Ok(None)).unwrap();
        // Conflict on "b": nothing of the plugin is installed.
        let err = r.install(fake("p", "1.0.0", &[("a", &Role::ALL), ("b", &Role::ALL)]));
        assert!(matches!(err, Err(ListenError::Duplicate { .. })));
        assert!(r.resolve("a", Role::Admin).is_err());

        assert!(r
            .install(fake("p", "1.0.0", &[("a", &Role::ALL), ("c", &Role::ALL)]))
            .is_ok());
        let reply = r.dispatch(&inv("a", Role::Admin)).unwrap().result.unwrap();
        assert_eq!(reply.as_deref(), Some(&b"1.0.0"[..]));

        // Version 2 drops "c" and adds "d": the swap replaces the whole table.
        let Ok(Some(old)) = r.install(fake("p", "2.0.0", &[("a", &Role::ALL), ("d", &Role::ALL)]))
        else {
            panic!("replace failed");
        };
        assert_eq!(old.info().version, "1.0.0");
        let reply = r.dispatch(&inv("a", Role::Admin)).unwrap().result.unwrap();
        assert_eq!(reply.as_deref(), Some(&b"2.0.0"[..]));
        assert!(r.resolve("c", Role::Admin).is_err());
        assert!(r.resolve("d", Role::Admin).is_ok());

        // Two plugins may not claim one command.
        assert!(matches!(
            r.install(fake("q", "1.0.0", &[("a", &Role::ALL)])),
            Err(ListenError::Duplicate { .. })
        ));
        assert!(r.uninstall("p").is_some());
        assert!(r.resolve("a", Role::Admin).is_err());
        assert_eq!(r.plugins().count(), 0);
    }
}
