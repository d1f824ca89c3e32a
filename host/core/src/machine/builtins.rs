//! The host's own commands, under names starting with `_` that no plugin or
//! listener can claim (`relay_core::registry::is_reserved`).
//!
//! | name | payload | reply |
//! |------|---------|-------|
//! | `_status` | `{"id": "<request id>"}` | the last known status of that request as a status map (the same keys as a status message), or `nil` if the id is unknown or forgotten |
//! | `_plugins` | none | `[{"name", "version", "commands": [{"name", "roles", "budget_ms"}], "update"?: {"state": "trial" \| "confirmed", "previous": "<version>" \| nil, "highest": "<version>"}}]`; `update` only for a plugin updated over the air |
//! | `_install`, `_rollback`, `_remove` | see [`crate::ota`] | plugin updates |
//!
//! The update commands change the device, so they are **queued** like any
//! command (journaled, in FIFO order with the others, run on the handler
//! thread by the host's installer): "install v2, then run deploy" keeps its
//! order. Only their role is checked here, at arrival.
//!
//! `_status` and `_plugins` are read-only queries and are answered **at arrival**, by the
//! machine, without entering the FIFO or the journal: a status query must not
//! wait behind the very command it asks about, and re-answering a redelivered
//! query is correct (the answer may have changed). Their final status is
//! `succeeded` with the reply (attempt 1), or `failed` /
//! `invalid_argument` for a malformed `_status` payload. An unknown reserved
//! name or a role that may not call a built-in is `rejected` through the
//! scheduler like any refused command (journaled, deduped).
//!
//! Access: **admin only** by default. `_status` returns replies of other
//! roles' RPCs and `_plugins` maps the device's attack surface; a fleet that
//! wants wider access can grant it with [`BuiltinAccess`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::envelope::Envelope;
use crate::msgpack::{Reader, Writer, DEFAULT_MAX_DEPTH};
use crate::plugin::{PluginInfo, Role};
use crate::scheduler::Scheduler;
use crate::status::{Code, State, Status};

/// Reserved name of the status query.
pub const STATUS: &str = "_status";
/// Reserved name of the plugin list.
pub const PLUGINS: &str = "_plugins";

/// Which roles may call the built-ins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinAccess {
    pub status: Vec<Role>,
    pub plugins: Vec<Role>,
    /// `_install`, `_rollback`, `_remove`.
    pub updates: Vec<Role>,
}

impl Default for BuiltinAccess {
    fn default() -> Self {
        BuiltinAccess {
            status: vec![Role::Admin],
            plugins: vec![Role::Admin],
            updates: vec![Role::Admin],
        }
    }
}

/// What the machine does with a reserved-name command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuiltinAnswer {
    /// Publish this final status (not journaled).
    Publish(Status),
    /// Refuse it through the scheduler (journaled like any rejection).
    Reject { code: Code, message: String },
    /// Accept it into the FIFO like any command (an update).
    Queue,
}

/// Answers the reserved-name command `env` sent with `role`.
pub fn answer(
    env: &Envelope,
    role: Role,
    access: &BuiltinAccess,
    scheduler: &Scheduler,
    plugins: impl FnOnce() -> Vec<Listed>,
    now: u64,
) -> BuiltinAnswer {
    let allowed = match env.name.as_str() {
        STATUS => &access.status,
        PLUGINS => &access.plugins,
        name if crate::ota::is_update_command(name) => &access.updates,
        other => {
            return BuiltinAnswer::Reject {
                code: Code::UnknownCommand,
                message: format!(
                    "no built-in command {other:?} (names starting with '_' are reserved)"
                ),
            }
        }
    };
    if !allowed.contains(&role) {
        return BuiltinAnswer::Reject {
            code: Code::NotPermitted,
            message: format!("role {role} may not call {:?}", env.name),
        };
    }
    if crate::ota::is_update_command(&env.name) {
        return BuiltinAnswer::Queue;
    }
    let done = |reply: Vec<u8>| {
        BuiltinAnswer::Publish(
            Status::new(&env.id, &env.name, State::Succeeded, 1, now).with_reply(Some(reply)),
        )
    };
    match env.name.as_str() {
        STATUS => match requested_id(&env.payload) {
            Ok(id) => done(
                scheduler
                    .status_of(&id)
                    .map_or_else(|| vec![0xc0], |s| s.to_msgpack()),
            ),
            Err(message) => BuiltinAnswer::Publish(
                Status::new(&env.id, &env.name, State::Failed, 1, now)
                    .with_code(Code::InvalidArgument, message),
            ),
        },
        _ => done(plugin_list(&plugins())),
    }
}

/// The `id` field of a `_status` payload.
fn requested_id(payload: &[u8]) -> Result<String, String> {
    const USAGE: &str = "expected a payload {\"id\": \"<request id>\"}";
    // The envelope decoder already bounded the payload's depth and size.
    let mut reader = Reader::new(payload);
    let entries = reader.read_map_len().map_err(|_| USAGE.to_string())?;
    for _ in 0..entries {
        let key = reader
            .read_key(DEFAULT_MAX_DEPTH)
            .map_err(|_| USAGE.to_string())?;
        if key == Some(b"id".as_slice()) {
            return reader
                .read_str()
                .map(str::to_string)
                .map_err(|_| USAGE.to_string());
        }
        reader
            .skip(DEFAULT_MAX_DEPTH)
            .map_err(|_| USAGE.to_string())?;
    }
    Err(USAGE.to_string())
}

/// One plugin as `_plugins` lists it: its own description and, once it was
/// updated over the air, where its update stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub info: PluginInfo,
    pub update: Option<UpdateNote>,
}

impl From<PluginInfo> for Listed {
    fn from(info: PluginInfo) -> Self {
        Listed { info, update: None }
    }
}

/// The `update` entry of a plugin in `_plugins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateNote {
    /// On trial (not confirmed yet: a trap may still roll it back).
    pub trial: bool,
    /// The version a rollback returns to.
    pub previous: Option<String>,
    /// The highest version ever installed (a lower one is a downgrade).
    pub highest: String,
}

/// msgpack of the plugin list (named fields, as `rmp_serde::to_vec_named`
/// would write them).
fn plugin_list(plugins: &[Listed]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array_len(len_u32(plugins.len()));
    for Listed {
        info: plugin,
        update,
    } in plugins
    {
        w.map_len(if update.is_some() { 4 } else { 3 })
            .str("name")
            .str(&plugin.name)
            .str("version")
            .str(&plugin.version)
            .str("commands")
            .array_len(len_u32(plugin.commands.len()));
        for command in &plugin.commands {
            w.map_len(3)
                .str("name")
                .str(&command.name)
                .str("roles")
                .array_len(len_u32(command.roles.len()));
            for role in &command.roles {
                w.str(role.as_str());
            }
            w.str("budget_ms")
                .opt_uint(command.budget_ms.map(u64::from));
        }
        if let Some(note) = update {
            w.str("update").map_len(3).str("state");
            w.str(if note.trial { "trial" } else { "confirmed" })
                .str("previous");
            match &note.previous {
                Some(v) => w.str(v),
                None => w.nil(),
            };
            w.str("highest").str(&note.highest);
        }
    }
    w.into_vec()
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::CommandSpec;
    use crate::scheduler::Policy;

    fn env(name: &str, payload: Vec<u8>) -> Envelope {
        Envelope::new("q1", name, 1).with_payload(payload)
    }

    fn info() -> Vec<Listed> {
        vec![Listed::from(PluginInfo {
            name: "echo".into(),
            version: "1.0.0".into(),
            commands: vec![CommandSpec {
                name: "echo".into(),
                roles: vec![Role::Admin],
                budget_ms: None,
            }],
        })]
    }

    #[test]
    fn plugins_lists_names_versions_and_roles() {
        let s = Scheduler::new(Policy::default());
        let BuiltinAnswer::Publish(status) = answer(
            &env(PLUGINS, vec![]),
            Role::Admin,
            &BuiltinAccess::default(),
            &s,
            info,
            5,
        ) else {
            panic!("expected an answer");
        };
        assert_eq!(status.status, State::Succeeded);
        let v: serde_json::Value = rmp_serde::from_slice(&status.reply.unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"name": "echo", "version": "1.0.0",
                "commands": [{"name": "echo", "roles": ["admin"], "budget_ms": null}]}])
        );
    }

    #[test]
    fn an_updated_plugin_is_listed_with_its_update_state() {
        let s = Scheduler::new(Policy::default());
        let updated = || {
            let mut listed = info();
            listed[0].update = Some(UpdateNote {
                trial: true,
                previous: Some("0.9.0".into()),
                highest: "1.0.0".into(),
            });
            listed
        };
        let BuiltinAnswer::Publish(status) = answer(
            &env(PLUGINS, vec![]),
            Role::Admin,
            &BuiltinAccess::default(),
            &s,
            updated,
            5,
        ) else {
            panic!("expected an answer");
        };
        let v: serde_json::Value = rmp_serde::from_slice(&status.reply.unwrap()).unwrap();
        assert_eq!(
            v[0]["update"],
            serde_json::json!({"state": "trial", "previous": "0.9.0", "highest": "1.0.0"})
        );
    }

    #[test]
    fn status_answers_known_unknown_and_malformed() {
        let mut s = Scheduler::new(Policy::default());
        s.accept(Envelope::new("r1", "echo", 1), Role::Admin, 2);
        let payload = rmp_serde::to_vec_named(&serde_json::json!({"id": "r1"})).unwrap();
        let BuiltinAnswer::Publish(st) = answer(
            &env(STATUS, payload),
            Role::Admin,
            &Default::default(),
            &s,
            info,
            3,
        ) else {
            panic!()
        };
        let inner = Status::from_msgpack(&st.reply.unwrap()).unwrap();
        assert_eq!((inner.id.as_str(), inner.status), ("r1", State::Accepted));

        let payload = rmp_serde::to_vec_named(&serde_json::json!({"id": "nope"})).unwrap();
        let BuiltinAnswer::Publish(st) = answer(
            &env(STATUS, payload),
            Role::Admin,
            &Default::default(),
            &s,
            info,
            3,
        ) else {
            panic!()
        };
        assert_eq!(st.reply, Some(vec![0xc0]));

        let BuiltinAnswer::Publish(st) = answer(
            &env(STATUS, vec![0x01]),
            Role::Admin,
            &Default::default(),
            &s,
            info,
            3,
        ) else {
            panic!()
        };
        assert_eq!(
            (st.status, st.code),
            (State::Failed, Some(Code::InvalidArgument))
        );
    }

    #[test]
    fn access_and_unknown_names_are_rejections() {
        let s = Scheduler::new(Policy::default());
        let a = answer(
            &env(PLUGINS, vec![]),
            Role::Secondary,
            &Default::default(),
            &s,
            info,
            1,
        );
        assert!(matches!(
            a,
            BuiltinAnswer::Reject {
                code: Code::NotPermitted,
                ..
            }
        ));
        let a = answer(
            &env("_reboot", vec![]),
            Role::Admin,
            &Default::default(),
            &s,
            info,
            1,
        );
        assert!(matches!(
            a,
            BuiltinAnswer::Reject {
                code: Code::UnknownCommand,
                ..
            }
        ));
    }
}
