//! The naming rule shared by command names, plugin names and ids of the seed
//! SDK: `[A-Za-z0-9_-]`, 1..=64 characters. Checked at every boundary (plugin
//! `describe`, `listen`, envelope decode) so a bad name is a validation error,
//! never a topic or storage key surprise.

use alloc::string::String;

/// Longest permitted name, in bytes (all permitted characters are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong { len: usize },
    #[error("name {name:?} contains {ch:?}; only A-Z a-z 0-9 - _ are allowed")]
    InvalidChar { name: String, ch: char },
}

/// Validates `name` against the seed rule.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::InvalidChar {
            name: name.into(),
            ch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seed_alphabet() {
        assert!(validate_name("reboot").is_ok());
        assert!(validate_name("update_firmware-2").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_name(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65 })
        );
        for bad in ["a b", "a/b", "a+b", "é", "a.b", "#", "x\0"] {
            assert!(
                matches!(validate_name(bad), Err(NameError::InvalidChar { .. })),
                "{bad}"
            );
        }
    }
}
