//! Hub users: who may do what, read from a TOML users file.
//!
//! ```toml
//! [[user]]
//! name = "ops"
//! token_sha256 = "9f86d0…"          # `relay hub token` prints a token and this line
//! grants = [{ devices = "*", role = "admin" }]
//!
//! [[user]]
//! name = "kiosk"
//! token_sha256 = "…"
//! grants = [{ devices = "lobby-*", role = "secondary" }]
//! ```
//!
//! Tokens are 256 random bits, so the file keeps their SHA-256 (a slow
//! password hash adds nothing against guessing a 256-bit secret, and would
//! cost every request). A user holds a role per device pattern (`*` matches
//! any run of characters); the highest matching role is the topic the hub
//! publishes on, so a user can never send as a role they do not hold.

use std::collections::HashMap;
use std::path::Path;

use relay_core::plugin::Role;
use sha2::{Digest, Sha256};

/// A users file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("users file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    token_sha256: String,
    #[serde(default)]
    grants: Vec<GrantEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    devices: String,
    role: String,
}

/// A role on the devices matching a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub devices: String,
    pub role: Role,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub grants: Vec<Grant>,
}

impl User {
    /// The highest role this user holds on `device`.
    pub fn role_for(&self, device: &str) -> Option<Role> {
        self.grants
            .iter()
            .filter(|g| matches_pattern(&g.devices, device))
            .map(|g| g.role)
            .min_by_key(|role| rank(*role))
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Admin => 0,
        Role::Primary => 1,
        Role::Secondary => 2,
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn matches_pattern(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| matches_pattern(rest, &tail[i..]))
        }
    }
}

/// Everyone the hub knows, by token hash.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_hash: HashMap<String, User>,
    /// No authentication: every caller is an admin of every device
    /// (`relay hub --insecure-no-auth`, for local development only).
    open: bool,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Users::parse(&text).map_err(|message| UsersError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Users, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for entry in file.user {
            let hash = entry.token_sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "user {:?}: token_sha256 must be 64 hex digits (see `relay hub token`)",
                    entry.name
                ));
            }
            let mut grants = Vec::new();
            for g in entry.grants {
                let role = Role::parse(&g.role).ok_or_else(|| {
                    format!(
                        "user {:?}: unknown role {:?} (admin, primary or secondary)",
                        entry.name, g.role
                    )
                })?;
                grants.push(Grant {
                    devices: g.devices,
                    role,
                });
            }
            let user = User {
                name: entry.name,
                grants,
            };
            if let Some(other) = by_hash.insert(hash, user) {
                return Err(format!(
                    "user {:?} has the same token as another",
                    other.name
                ));
            }
        }
        Ok(Users {
            by_hash,
            open: false,
        })
    }

    /// Everyone is an admin of everything (development only).
    pub fn open_access() -> Users {
        Users {
            by_hash: HashMap::new(),
            open: true,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The user holding `token`, if any.
    pub fn authenticate(&self, token: Option<&str>) -> Option<User> {
        if self.open {
            return Some(User {
                name: "anonymous".into(),
                grants: vec![Grant {
                    devices: "*".into(),
                    role: Role::Admin,
                }],
            });
        }
        self.by_hash.get(&token_hash(token?)).cloned()
    }
}

/// The hex SHA-256 of a token, as the users file keeps it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh token (256 random bits, hex) and its hash.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = token_hash(&token);
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_roles_and_patterns() {
        let (token, hash) = new_token();
        let users = Users::parse(&format!(
            r#"[[user]]
name = "kiosk"
token_sha256 = "{hash}"
grants = [{{ devices = "lobby-*", role = "secondary" }}, {{ devices = "lobby-1", role = "primary" }}]"#
        ))
        .unwrap();
        let user = users.authenticate(Some(&token)).expect("known");
        assert_eq!(user.role_for("lobby-7"), Some(Role::Secondary));
        assert_eq!(user.role_for("lobby-1"), Some(Role::Primary));
        assert_eq!(user.role_for("office-1"), None);
        assert!(users.authenticate(Some("wrong")).is_none());
        assert!(users.authenticate(None).is_none());
        assert!(matches_pattern("*", "anything"));
        assert!(matches_pattern("a*b*c", "aXXbYc"));
        assert!(!matches_pattern("a*b", "ab-c"));
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        let bad_role = r#"[[user]]
name = "x"
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
grants = [{ devices = "*", role = "root" }]"#;
        assert!(Users::parse(bad_role)
            .unwrap_err()
            .contains("unknown role \"root\""));
        let bad_hash = "[[user]]\nname = \"x\"\ntoken_sha256 = \"abc\"";
        assert!(Users::parse(bad_hash)
            .unwrap_err()
            .contains("64 hex digits"));
    }
}
