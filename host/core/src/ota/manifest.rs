//! The signed part of a bundle: what the module is, who may call what, and
//! under which conditions a device may install it.
//!
//! Encoded as a msgpack map with named keys (readable by any msgpack tool,
//! `relay plugin inspect` prints it). Decoding ignores unknown keys, so a
//! newer signer can add fields an older device skips; every known field is
//! required except `budget_ms`. The manifest is only decoded after its
//! signature verified, so its parser never sees bytes an attacker chose.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::msgpack::{MsgpackError, Reader, Writer, DEFAULT_MAX_DEPTH};
use crate::plugin::{CommandSpec, Role};

/// Version of the manifest's own layout.
pub const MANIFEST_FORMAT: u64 = 1;

/// See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The plugin's name, as its `describe()` reports it.
    pub name: String,
    /// Its semver version, as its `describe()` reports it.
    pub version: String,
    /// The WIT world it was built against (`relay:plugin@0.1.0`).
    pub world: String,
    /// sha256 of the module bytes.
    pub sha256: [u8; 32],
    /// Length of the module in bytes.
    pub size: u64,
    /// Its commands and their roles, as its `describe()` reports them.
    pub commands: Vec<CommandSpec>,
    /// The oldest host version that may install it (semver).
    pub min_host: String,
    /// The signing key's id (hex), repeated under the signature.
    pub key_id: String,
    /// The signer allows installing it over a higher version.
    pub allow_downgrade: bool,
    /// When it was signed (unix ms; informational).
    pub signed_at: u64,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.map_len(11);
        w.str("format").uint(MANIFEST_FORMAT);
        w.str("name").str(&self.name);
        w.str("version").str(&self.version);
        w.str("world").str(&self.world);
        w.str("sha256").bin(&self.sha256);
        w.str("size").uint(self.size);
        w.str("commands").array_len(self.commands.len() as u32);
        for c in &self.commands {
            w.map_len(3).str("name").str(&c.name);
            w.str("roles").array_len(c.roles.len() as u32);
            for r in &c.roles {
                w.str(r.as_str());
            }
            w.str("budget_ms").opt_uint(c.budget_ms.map(u64::from));
        }
        w.str("min_host").str(&self.min_host);
        w.str("key_id").str(&self.key_id);
        w.str("allow_downgrade").bool(self.allow_downgrade);
        w.str("signed_at").uint(self.signed_at);
        w.into_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        decode(bytes).map_err(|e| e.to_string())
    }

    /// `name@version`, as statuses and logs name a plugin version.
    pub fn label(&self) -> String {
        alloc::format!("{}@{}", self.name, self.version)
    }
}

#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("manifest is not valid msgpack: {0}")]
    Msgpack(#[from] MsgpackError),
    #[error("manifest field `{0}` is missing or invalid")]
    Field(&'static str),
    #[error("manifest format {0} is not supported (this host reads format 1)")]
    Format(u64),
}

fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
    crate::msgpack::validate(bytes, DEFAULT_MAX_DEPTH)?;
    let mut r = Reader::new(bytes);
    let mut m = Manifest {
        name: String::new(),
        version: String::new(),
        world: String::new(),
        sha256: [0; 32],
        size: 0,
        commands: Vec::new(),
        min_host: String::new(),
        key_id: String::new(),
        allow_downgrade: false,
        signed_at: 0,
    };
    let mut seen = 0u32;
    let entries = r.read_map_len()?;
    for _ in 0..entries {
        let Some(key) = r.read_key(DEFAULT_MAX_DEPTH)? else {
            r.skip(DEFAULT_MAX_DEPTH)?;
            continue;
        };
        let f = |name: &'static str| move |_| DecodeError::Field(name);
        let bit = match key {
            b"format" => {
                let v = r.read_u64().map_err(f("format"))?;
                if v != MANIFEST_FORMAT {
                    return Err(DecodeError::Format(v));
                }
                1
            }
            b"name" => {
                m.name = r.read_str().map_err(f("name"))?.into();
                2
            }
            b"version" => {
                m.version = r.read_str().map_err(f("version"))?.into();
                4
            }
            b"world" => {
                m.world = r.read_str().map_err(f("world"))?.into();
                8
            }
            b"sha256" => {
                m.sha256 = r
                    .read_bin()
                    .map_err(f("sha256"))?
                    .try_into()
                    .map_err(|_| DecodeError::Field("sha256"))?;
                16
            }
            b"size" => {
                m.size = r.read_u64().map_err(f("size"))?;
                32
            }
            b"commands" => {
                m.commands = commands(&mut r)?;
                64
            }
            b"min_host" => {
                m.min_host = r.read_str().map_err(f("min_host"))?.into();
                128
            }
            b"key_id" => {
                m.key_id = r.read_str().map_err(f("key_id"))?.into();
                256
            }
            b"allow_downgrade" => {
                m.allow_downgrade = r.read_bool().map_err(f("allow_downgrade"))?;
                512
            }
            b"signed_at" => {
                m.signed_at = r.read_u64().map_err(f("signed_at"))?;
                1024
            }
            _ => {
                r.skip(DEFAULT_MAX_DEPTH)?;
                0
            }
        };
        seen |= bit;
    }
    const FIELDS: [&str; 11] = [
        "format",
        "name",
        "version",
        "world",
        "sha256",
        "size",
        "commands",
        "min_host",
        "key_id",
        "allow_downgrade",
        "signed_at",
    ];
    if let Some(missing) = (0..FIELDS.len()).find(|i| seen & (1 << i) == 0) {
        return Err(DecodeError::Field(FIELDS[missing]));
    }
    Ok(m)
}

fn commands(r: &mut Reader<'_>) -> Result<Vec<CommandSpec>, DecodeError> {
    let bad = |_| DecodeError::Field("commands");
    let n = r.read_array_len().map_err(bad)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let mut spec = CommandSpec {
            name: String::new(),
            roles: Vec::new(),
            budget_ms: None,
        };
        for _ in 0..r.read_map_len().map_err(bad)? {
            match r.read_key(DEFAULT_MAX_DEPTH)? {
                Some(b"name") => spec.name = r.read_str().map_err(bad)?.into(),
                Some(b"roles") => {
                    for _ in 0..r.read_array_len().map_err(bad)? {
                        let role = Role::parse(r.read_str().map_err(bad)?)
                            .ok_or(DecodeError::Field("commands"))?;
                        spec.roles.push(role);
                    }
                }
                Some(b"budget_ms") => {
                    if !r.read_nil().map_err(bad)? {
                        spec.budget_ms = Some(r.read_u32().map_err(bad)?);
                    }
                }
                _ => r.skip(DEFAULT_MAX_DEPTH)?,
            }
        }
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) fn sample() -> Manifest {
    Manifest {
        name: "echo".into(),
        version: "1.2.0".into(),
        world: super::WORLD.into(),
        sha256: [7; 32],
        size: 3,
        commands: alloc::vec![CommandSpec {
            name: "echo".into(),
            roles: alloc::vec![Role::Admin, Role::Primary],
            budget_ms: Some(50),
        }],
        min_host: "0.1.0".into(),
        key_id: "00112233aabbccdd".into(),
        allow_downgrade: false,
        signed_at: 1_700_000_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_as_plain_msgpack() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()), Ok(m.clone()));
        #[derive(serde::Deserialize)]
        struct Plain {
            name: String,
            commands: Vec<CommandSpec>,
        }
        let v: Plain = rmp_serde::from_slice(&m.encode()).unwrap();
        assert_eq!((v.name.as_str(), &v.commands), ("echo", &m.commands));
    }

    #[test]
    fn missing_fields_and_other_formats_are_refused() {
        let mut w = Writer::new();
        w.map_len(1).str("format").uint(1);
        assert!(Manifest::decode(&w.into_vec())
            .unwrap_err()
            .contains("name"));
        let mut w = Writer::new();
        w.map_len(1).str("format").uint(2);
        assert!(Manifest::decode(&w.into_vec())
            .unwrap_err()
            .contains("format 2"));
        assert!(Manifest::decode(&[0xc1]).is_err());
    }
}
