//! What carrying out an update command is, wherever bundles are kept: the
//! replies, the `_update` events, the role check, which slot runs a plugin
//! now, whether a new version's commands are free, and its self-test. The
//! Linux host's installer (files) and the microcontroller's (flash) both
//! build on it, so a device answers the CLI and the hub alike whatever it is.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::state::{Slot, Source, UpdateState};
use super::Refusal;
use crate::msgpack::Writer;
use crate::plugin::{Event, Invocation, PluginInfo, Role};
use crate::registry::{Owner, Registry};
use crate::scheduler::AttemptResult;
use crate::status::Code;

/// The event a device publishes when a version on trial is confirmed
/// (`{"plugin", "action": "confirmed", "version"}`) or rolled back
/// (`{"plugin", "action": "rolled_back", "from", "to", "reason"}`).
pub const UPDATE_EVENT: &str = "_update";

/// `Some(rejection)` unless `cmd` comes from an admin.
pub fn refuse_unless_admin(cmd: &Invocation) -> Option<AttemptResult> {
    (cmd.role != Role::Admin).then(|| AttemptResult::Rejected {
        code: Code::NotPermitted,
        message: format!("role {} may not call {:?}", cmd.role, cmd.name),
    })
}

/// The rejection of a name that is no update command.
pub fn unknown_command(name: &str) -> AttemptResult {
    AttemptResult::Rejected {
        code: Code::UnknownCommand,
        message: format!("no update command {name:?}"),
    }
}

/// An update command's result as an attempt: a reply, or the refusal's
/// code, message and whether a retry may help.
pub fn attempt(result: Result<Vec<u8>, Refusal>) -> AttemptResult {
    match result {
        Ok(reply) => AttemptResult::Succeeded { reply: Some(reply) },
        Err(refusal) => AttemptResult::Failed {
            code: refusal.code(),
            message: refusal.to_string(),
            retryable: refusal.is_retryable(),
        },
    }
}

/// A msgpack map of string fields (empty values left out).
pub fn reply(fields: &[(&str, &str)]) -> Vec<u8> {
    let present: Vec<_> = fields.iter().filter(|(_, v)| !v.is_empty()).collect();
    let mut w = Writer::new();
    w.map_len(present.len() as u32);
    for (k, v) in present {
        w.str(k).str(v);
    }
    w.into_vec()
}

/// The reply to a chunk that did not complete its bundle.
pub fn received(have: u64, total: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.map_len(2)
        .str("received")
        .uint(have)
        .str("total")
        .uint(total);
    w.into_vec()
}

/// What runs now under `name`: the state's active slot, or the version the
/// device shipped with, loaded in the registry.
pub fn current_slot(state: &UpdateState, name: &str, registry: &Registry) -> Option<Slot> {
    if let Some(p) = state.plugins.get(name) {
        return p.active.clone();
    }
    registry.plugin(name).map(|p| Slot {
        version: p.info().version.clone(),
        source: Source::Factory,
    })
}

/// Every command of `info` is free, or already owned by the same plugin.
pub fn check_claims(registry: &Registry, info: &PluginInfo) -> Result<(), Refusal> {
    for spec in &info.commands {
        if let Some((_, owner)) = registry.commands().find(|(c, _)| *c == spec.name) {
            if *owner != Owner::Plugin(info.name.clone()) {
                return Err(Refusal::Conflict {
                    command: spec.name.clone(),
                    owner: owner.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Runs plugin `name`'s `self-test` command (admin, empty payload) if it
/// lists one: why it failed, or `None`.
pub fn self_test(registry: &mut Registry, name: &str) -> Option<String> {
    let lists_it = registry
        .plugin(name)
        .is_some_and(|p| p.info().commands.iter().any(|c| c.name == super::SELF_TEST));
    if !lists_it {
        return None;
    }
    let test = Invocation {
        id: format!("_self-test-{name}"),
        name: super::SELF_TEST.into(),
        payload: Vec::new(),
        attempt: 1,
        role: Role::Admin,
    };
    match registry.plugin_mut(name).map(|p| p.handle(&test)) {
        Some(Ok(out)) => out
            .result
            .err()
            .map(|e| format!("{}: {}", e.kind.as_str(), e.message)),
        Some(Err(trap)) => Some(trap.to_string()),
        None => Some("the plugin is gone".into()),
    }
}

/// The reply to an install that switched to `version`, on trial.
pub fn switched(name: &str, version: &str, previous: Option<Slot>) -> Vec<u8> {
    let previous = previous.map(|c| c.version).unwrap_or_default();
    reply(&[
        ("plugin", name),
        ("version", version),
        ("previous", &previous),
        ("state", "trial"),
    ])
}

/// The reply to an install whose bundle is already the active version (a
/// redelivery, or a re-run after a crash).
pub fn already_installed(registry: &Registry, name: &str, on_trial: bool) -> Vec<u8> {
    let version = registry
        .plugin(name)
        .map(|p| p.info().version.clone())
        .unwrap_or_default();
    let state = if on_trial { "trial" } else { "confirmed" };
    reply(&[
        ("plugin", name),
        ("version", &version),
        ("state", state),
        ("already", "installed"),
    ])
}

/// `_update` for a version confirmed after its trial.
pub fn confirmed(plugin: &str, version: Option<&str>) -> Vec<Event> {
    let mut w = Writer::new();
    w.map_len(3).str("plugin").str(plugin);
    w.str("action").str("confirmed");
    w.str("version").opt_str(version);
    event(w)
}

/// `_update` for a version on trial rolled back after `result`.
pub fn rolled_back(
    plugin: &str,
    from: Option<&str>,
    to: &str,
    result: &AttemptResult,
) -> Vec<Event> {
    let reason = match result {
        AttemptResult::Failed { code, message, .. } => format!("{code}: {message}"),
        _ => String::new(),
    };
    let mut w = Writer::new();
    w.map_len(5).str("plugin").str(plugin);
    w.str("action").str("rolled_back");
    w.str("from").opt_str(from).str("to").str(to);
    w.str("reason").str(&reason);
    event(w)
}

fn event(w: Writer) -> Vec<Event> {
    vec![Event {
        name: UPDATE_EVENT.into(),
        payload: w.into_vec(),
    }]
}

/// The three update commands, as an installer carries them out (the Linux
/// host's on files, a microcontroller's on flash).
pub trait UpdateCommands {
    /// One `_install` chunk: its reply.
    fn install(&mut self, registry: &mut Registry, payload: &[u8]) -> Result<Vec<u8>, Refusal>;
    /// Back to the previous version: `(to, from)` versions.
    fn roll_back(
        &mut self,
        name: &str,
        registry: &mut Registry,
    ) -> Result<(String, String), Refusal>;
    /// Unloads `name` for good: its name back.
    fn remove(&mut self, name: &str, registry: &mut Registry) -> Result<String, Refusal>;
}

/// Carries out one update command with `installer`: the role check, the
/// payload's decoding, the reply.
pub fn run(
    installer: &mut impl UpdateCommands,
    registry: &mut Registry,
    cmd: &Invocation,
) -> AttemptResult {
    if let Some(refused) = refuse_unless_admin(cmd) {
        return refused;
    }
    let result = match cmd.name.as_str() {
        super::INSTALL => installer.install(registry, &cmd.payload),
        super::ROLLBACK => super::chunk::decode_name(&cmd.payload)
            .and_then(|name| installer.roll_back(&name, registry).map(|r| (name, r)))
            .map(|(name, (to, from))| {
                reply(&[
                    ("plugin", &name),
                    ("version", &to),
                    ("rolled_back_from", &from),
                ])
            }),
        super::REMOVE => super::chunk::decode_name(&cmd.payload)
            .and_then(|name| installer.remove(&name, registry))
            .map(|name| reply(&[("plugin", &name), ("state", "removed")])),
        other => return unknown_command(other),
    };
    attempt(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::Writer;

    /// Records what it was asked; refuses removals.
    #[derive(Default)]
    struct Fake(Vec<String>);

    impl UpdateCommands for Fake {
        fn install(&mut self, _: &mut Registry, payload: &[u8]) -> Result<Vec<u8>, Refusal> {
            self.0.push(format!("install {}", payload.len()));
            Ok(received(1, 2))
        }
        fn roll_back(&mut self, name: &str, _: &mut Registry) -> Result<(String, String), Refusal> {
            self.0.push(format!("roll back {name}"));
            Ok(("1.0.0".into(), "2.0.0".into()))
        }
        fn remove(&mut self, name: &str, _: &mut Registry) -> Result<String, Refusal> {
            Err(Refusal::NoSuchPlugin(name.into()))
        }
    }

    fn cmd(name: &str, payload: Vec<u8>, role: Role) -> Invocation {
        Invocation {
            id: "u1".into(),
            name: name.into(),
            payload,
            attempt: 1,
            role,
        }
    }

    fn named(name: &str) -> Vec<u8> {
        let mut w = Writer::new();
        w.map_len(1).str("name").str(name);
        w.into_vec()
    }

    #[test]
    fn commands_are_dispatched_checked_and_answered() {
        let (mut fake, mut registry) = (Fake::default(), Registry::new());
        let refused = run(
            &mut fake,
            &mut registry,
            &cmd(super::super::INSTALL, vec![1], Role::Primary),
        );
        assert!(matches!(
            refused,
            AttemptResult::Rejected {
                code: Code::NotPermitted,
                ..
            }
        ));
        assert!(fake.0.is_empty(), "nothing runs for a non-admin");
        let unknown = run(
            &mut fake,
            &mut registry,
            &cmd("_upgrade", vec![], Role::Admin),
        );
        assert!(matches!(
            unknown,
            AttemptResult::Rejected {
                code: Code::UnknownCommand,
                ..
            }
        ));
        let chunk = run(
            &mut fake,
            &mut registry,
            &cmd(super::super::INSTALL, vec![1, 2], Role::Admin),
        );
        assert_eq!(
            chunk,
            AttemptResult::Succeeded {
                reply: Some(received(1, 2))
            }
        );
        let back = run(
            &mut fake,
            &mut registry,
            &cmd(super::super::ROLLBACK, named("leds"), Role::Admin),
        );
        let expected = reply(&[
            ("plugin", "leds"),
            ("version", "1.0.0"),
            ("rolled_back_from", "2.0.0"),
        ]);
        assert_eq!(
            back,
            AttemptResult::Succeeded {
                reply: Some(expected)
            }
        );
        let gone = run(
            &mut fake,
            &mut registry,
            &cmd(super::super::REMOVE, named("leds"), Role::Admin),
        );
        assert!(
            matches!(
                gone,
                AttemptResult::Failed {
                    retryable: false,
                    ..
                }
            ),
            "{gone:?}"
        );
        let garbage = run(
            &mut fake,
            &mut registry,
            &cmd(super::super::ROLLBACK, vec![0xc1], Role::Admin),
        );
        assert!(
            matches!(garbage, AttemptResult::Failed { .. }),
            "{garbage:?}"
        );
        assert_eq!(fake.0, ["install 2", "roll back leds"]);
    }

    #[test]
    fn empty_fields_are_left_out_of_a_reply() {
        let switched = switched("leds", "2.0.0", None);
        assert_eq!(
            switched,
            reply(&[("plugin", "leds"), ("version", "2.0.0"), ("state", "trial")])
        );
    }
}
