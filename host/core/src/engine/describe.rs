//! What `describe` may answer, checked the same way on both engines: the
//! bounds an engine applies while lifting the answer, before anything is
//! copied out of the guest (so a plugin listing 500,000 commands costs a
//! length check, not 500,000 allocations), and the validation of the lifted
//! [`PluginInfo`]. Every message names the field: "describe: command 3:
//! role 1 is not a role".

use alloc::{collections::BTreeSet, format, string::String};

use crate::engine::PluginError;
use crate::name::{validate_name, NameError, MAX_NAME_LEN};
use crate::plugin::PluginInfo;

/// Most commands one plugin may serve.
pub const MAX_COMMANDS: usize = 256;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 64;
/// Most roles one command may list (there are three).
pub const MAX_ROLES: usize = 3;

/// A field of the answer, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    PluginName,
    Version,
    /// The name of command `n` (0-based).
    CommandName(usize),
    /// The roles of command `n`.
    Roles(usize),
}

impl core::fmt::Display for Field {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Field::PluginName => f.write_str("plugin name"),
            Field::Version => f.write_str("version"),
            Field::CommandName(i) => write!(f, "command {i}: name"),
            Field::Roles(i) => write!(f, "command {i}: roles"),
        }
    }
}

fn describe(msg: String) -> PluginError {
    PluginError::Describe(msg)
}

/// The command list's length, before any command is lifted.
pub fn check_command_count(count: usize) -> Result<(), PluginError> {
    if count > MAX_COMMANDS {
        return Err(describe(format!(
            "{count} commands, the limit is {MAX_COMMANDS}"
        )));
    }
    Ok(())
}

/// A string's or list's length, before it is copied.
pub fn check_len(field: Field, len: usize) -> Result<(), PluginError> {
    let limit = match field {
        Field::PluginName | Field::CommandName(_) => MAX_NAME_LEN,
        Field::Version => MAX_VERSION_LEN,
        Field::Roles(_) => MAX_ROLES,
    };
    if len > limit {
        let unit = if matches!(field, Field::Roles(_)) {
            "entries"
        } else {
            "bytes"
        };
        return Err(describe(format!(
            "{field} has {len} {unit}, the limit is {limit}"
        )));
    }
    Ok(())
}

/// A string that is not UTF-8.
pub fn not_utf8(field: Field) -> PluginError {
    describe(format!("{field} is not UTF-8"))
}

/// Role `j` of command `i` is no role.
pub fn bad_role(command: usize, role: usize) -> PluginError {
    describe(format!(
        "command {command}: role {role} is not a role (admin, primary, secondary)"
    ))
}

/// Checks what `describe` returned: valid names, a semver version, no command
/// listed twice, at least one role per command. Shared by both engines.
pub fn validate_info(info: &PluginInfo) -> Result<(), PluginError> {
    let bad = |what: String, e: NameError| describe(format!("{what}: {e}"));
    check_command_count(info.commands.len())?;
    validate_name(&info.name).map_err(|e| bad("plugin name".into(), e))?;
    if !is_semver(&info.version) {
        return Err(describe(format!(
            "version {:?} is not semver (MAJOR.MINOR.PATCH)",
            info.version
        )));
    }
    let mut seen = BTreeSet::new();
    for (i, c) in info.commands.iter().enumerate() {
        validate_name(&c.name).map_err(|e| bad(format!("command {i}: name"), e))?;
        if !seen.insert(c.name.as_str()) {
            return Err(describe(format!(
                "command {i}: {:?} is listed twice",
                c.name
            )));
        }
        if c.roles.is_empty() {
            return Err(describe(format!(
                "command {i}: {:?} allows no role",
                c.name
            )));
        }
        check_len(Field::Roles(i), c.roles.len())?;
    }
    Ok(())
}

/// `MAJOR.MINOR.PATCH` with optional `-pre` / `+build` suffixes.
pub fn is_semver(v: &str) -> bool {
    let core_end = v.find(['-', '+']).unwrap_or(v.len());
    let (core, rest) = v.split_at(core_end);
    let parts: alloc::vec::Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p.len() == 1 || !p.starts_with('0'))
    };
    parts.len() == 3
        && parts.iter().all(numeric)
        && (rest.is_empty()
            || rest.len() > 1
                && rest[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{CommandSpec, Role};
    use alloc::{format, vec};

    fn info() -> PluginInfo {
        PluginInfo {
            name: "echo".into(),
            version: "1.0.0".into(),
            commands: vec![CommandSpec {
                name: "echo".into(),
                roles: vec![Role::Admin],
                budget_ms: None,
            }],
        }
    }

    #[test]
    fn semver() {
        for ok in ["0.1.0", "1.2.3", "10.0.0-rc.1", "1.0.0+build.5"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in ["", "1", "1.2", "01.2.3", "a.b.c", "1.2.3-", "1.2.3.4"] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    #[test]
    fn bounded_and_named() {
        let mut i = info();
        i.commands = (0..=MAX_COMMANDS)
            .map(|n| CommandSpec {
                name: format!("c{n}"),
                roles: vec![Role::Admin],
                budget_ms: None,
            })
            .collect();
        assert_eq!(
            validate_info(&i),
            Err(PluginError::Describe(
                "257 commands, the limit is 256".into()
            ))
        );
        i.commands.truncate(MAX_COMMANDS);
        assert_eq!(validate_info(&i), Ok(()));
        i.commands[3].name = "c2".into();
        assert_eq!(
            validate_info(&i),
            Err(PluginError::Describe(
                "command 3: \"c2\" is listed twice".into()
            ))
        );
        assert_eq!(
            check_len(Field::CommandName(2), 65),
            Err(PluginError::Describe(
                "command 2: name has 65 bytes, the limit is 64".into()
            ))
        );
        assert_eq!(
            bad_role(3, 1),
            PluginError::Describe(
                "command 3: role 1 is not a role (admin, primary, secondary)".into()
            )
        );
    }

    #[test]
    fn describe_validation() {
        assert_eq!(validate_info(&info()), Ok(()));
        let mut i = info();
        i.name = "bad name".into();
        assert!(matches!(validate_info(&i), Err(PluginError::Describe(_))));
        let mut i = info();
        i.commands.push(i.commands[0].clone());
        assert!(matches!(validate_info(&i), Err(PluginError::Describe(_))));
        let mut i = info();
        i.commands[0].roles.clear();
        assert!(matches!(validate_info(&i), Err(PluginError::Describe(_))));
    }
}
