//! The naming and role rules the macros enforce at compile time.
//!
//! They mirror the host's checks (`relay_core::name`, `validate_info`) so a
//! plugin that builds also loads.

/// The seed naming rule for plugin and command names: `[A-Za-z0-9_-]{1,64}`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.len() > 64 {
        return Err(format!(
            "name is {} bytes long; at most 64 are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "name `{name}` contains {bad:?}; only A-Z, a-z, 0-9, `_` and `-` are allowed"
        ));
    }
    Ok(())
}

/// The roles of the world's `role` enum, as written in `roles(..)`.
pub const ROLES: [&str; 3] = ["admin", "primary", "secondary"];

/// The world's variant name (`Role::Admin`...) of a role written in `roles(..)`.
pub fn role_variant(role: &str) -> Option<&'static str> {
    match role {
        "admin" => Some("Admin"),
        "primary" => Some("Primary"),
        "secondary" => Some("Secondary"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seed_alphabet() {
        assert_eq!(check_name("get-config_2"), Ok(()));
        assert_eq!(check_name(&"x".repeat(64)), Ok(()));
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters_with_a_reason() {
        assert_eq!(check_name(""), Err("name must not be empty".into()));
        assert!(check_name(&"x".repeat(65))
            .unwrap_err()
            .contains("at most 64"));
        let err = check_name("re boot").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        assert!(check_name("dé").is_err());
        assert!(check_name("a.b").is_err());
    }

    #[test]
    fn knows_exactly_the_three_roles() {
        for role in ROLES {
            assert!(role_variant(role).is_some());
        }
        assert_eq!(role_variant("root"), None);
        assert_eq!(role_variant("Admin"), None);
    }
}
