//! The device's durable update state: for each plugin name ever updated,
//! which version is active, which one came before it, the highest version
//! ever installed (anti-rollback), and whether the active one is on trial.
//!
//! The host writes it atomically (a new copy, synced, renamed over the old
//! one), so after a crash at any point it is either the state before a step
//! or the state after it. The transitions are pure functions here; what a
//! step does to files (keep a bundle, delete one) follows from their result.
//!
//! A plugin from the plugin directory (shipped with the firmware) has no
//! entry until it is first updated; its version then becomes `previous`
//! with [`Source::Factory`], so a rollback can go back to it.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::msgpack::{MsgpackError, Reader, Writer, DEFAULT_MAX_DEPTH};

use super::policy::max_version;

/// Where a version's module lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The plugin directory (shipped with the device).
    Factory,
    /// A verified bundle kept by the update store, by the module's sha256.
    Bundle([u8; 32]),
}

/// One installed version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub version: String,
    pub source: Source,
}

/// One plugin's update state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginState {
    /// `None`: removed (stays removed across restarts, even if the plugin
    /// directory has it).
    pub active: Option<Slot>,
    pub previous: Option<Slot>,
    /// The highest version ever installed (anti-rollback).
    pub highest: String,
    /// The active version has not proven itself yet (see `trial`).
    pub trial: bool,
}

impl PluginState {
    /// How `_plugins` reports this state.
    pub fn note(&self) -> crate::machine::UpdateNote {
        crate::machine::UpdateNote {
            trial: self.trial,
            previous: self.previous.as_ref().map(|s| s.version.clone()),
            highest: self.highest.clone(),
        }
    }
}

/// Every updated plugin, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateState {
    pub plugins: BTreeMap<String, PluginState>,
}

impl UpdateState {
    /// The highest version ever installed under `name`.
    pub fn highest(&self, name: &str) -> Option<&str> {
        self.plugins.get(name).map(|p| p.highest.as_str())
    }

    /// `name` switches to `new`, on trial; what was active (`current`, from
    /// the state or the plugin directory) becomes the previous version.
    /// Returns the bundle no longer referenced (the old previous), if any.
    pub fn switch(&mut self, name: &str, new: Slot, current: Option<Slot>) -> Option<Source> {
        let highest = match self.plugins.get(name) {
            Some(p) => max_version(&p.highest, &new.version).to_string(),
            None => new.version.clone(),
        };
        let entry = self.plugins.entry(name.into()).or_insert(PluginState {
            active: None,
            previous: None,
            highest: highest.clone(),
            trial: false,
        });
        let current = current.filter(|c| c.source != new.source);
        let dropped = core::mem::replace(&mut entry.previous, current).map(|s| s.source);
        entry.active = Some(new);
        entry.highest = highest;
        entry.trial = true;
        dropped.filter(|d| !self.references(d))
    }

    /// The active version of `name` proved itself.
    pub fn confirm(&mut self, name: &str) {
        if let Some(p) = self.plugins.get_mut(name) {
            p.trial = false;
        }
    }

    /// Back to the previous version: returns it and the source no longer
    /// referenced, or `None` when there is no previous version.
    pub fn roll_back(&mut self, name: &str) -> Option<(Slot, Option<Source>)> {
        let p = self.plugins.get_mut(name)?;
        let previous = p.previous.take()?;
        let dropped = p.active.replace(previous.clone()).map(|s| s.source);
        p.trial = false;
        Some((previous, dropped.filter(|d| !self.references(d))))
    }

    /// `name` is removed; returns the sources no longer referenced.
    pub fn remove(&mut self, name: &str, highest_if_new: &str) -> Vec<Source> {
        let entry = self.plugins.entry(name.into()).or_insert(PluginState {
            active: None,
            previous: None,
            highest: highest_if_new.into(),
            trial: false,
        });
        let dropped: Vec<Source> = [entry.active.take(), entry.previous.take()]
            .into_iter()
            .flatten()
            .map(|s| s.source)
            .collect();
        entry.trial = false;
        dropped
            .into_iter()
            .filter(|d| !self.references(d))
            .collect()
    }

    /// True when a version of some plugin lives in `source`.
    pub fn references(&self, source: &Source) -> bool {
        matches!(source, Source::Factory)
            || self.plugins.values().any(|p| {
                [&p.active, &p.previous]
                    .into_iter()
                    .flatten()
                    .any(|s| &s.source == source)
            })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.map_len(2).str("format").uint(1);
        w.str("plugins").map_len(self.plugins.len() as u32);
        for (name, p) in &self.plugins {
            w.str(name).map_len(4);
            w.str("active");
            slot(&mut w, p.active.as_ref());
            w.str("previous");
            slot(&mut w, p.previous.as_ref());
            w.str("highest").str(&p.highest);
            w.str("trial").bool(p.trial);
        }
        w.into_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<UpdateState, MsgpackError> {
        crate::msgpack::validate(bytes, DEFAULT_MAX_DEPTH)?;
        let mut r = Reader::new(bytes);
        let mut state = UpdateState::default();
        for _ in 0..r.read_map_len()? {
            match r.read_key(DEFAULT_MAX_DEPTH)? {
                Some(b"plugins") => {
                    for _ in 0..r.read_map_len()? {
                        let name = r.read_str()?.to_string();
                        let mut p = PluginState {
                            active: None,
                            previous: None,
                            highest: String::new(),
                            trial: false,
                        };
                        for _ in 0..r.read_map_len()? {
                            match r.read_key(DEFAULT_MAX_DEPTH)? {
                                Some(b"active") => p.active = read_slot(&mut r)?,
                                Some(b"previous") => p.previous = read_slot(&mut r)?,
                                Some(b"highest") => p.highest = r.read_str()?.into(),
                                Some(b"trial") => p.trial = r.read_bool()?,
                                _ => r.skip(DEFAULT_MAX_DEPTH)?,
                            }
                        }
                        state.plugins.insert(name, p);
                    }
                }
                _ => r.skip(DEFAULT_MAX_DEPTH)?,
            }
        }
        Ok(state)
    }
}

fn slot(w: &mut Writer, s: Option<&Slot>) {
    match s {
        None => {
            w.nil();
        }
        Some(s) => {
            w.array_len(2).str(&s.version);
            match &s.source {
                Source::Factory => w.nil(),
                Source::Bundle(h) => w.bin(h),
            };
        }
    }
}

fn read_slot(r: &mut Reader<'_>) -> Result<Option<Slot>, MsgpackError> {
    if r.read_nil()? {
        return Ok(None);
    }
    let at = r.pos();
    if r.read_array_len()? != 2 {
        return Err(MsgpackError::WrongType {
            at,
            expected: "a [version, source] pair",
        });
    }
    let version = r.read_str()?.to_string();
    let at = r.pos();
    let source = if r.read_nil()? {
        Source::Factory
    } else {
        Source::Bundle(
            r.read_bin()?
                .try_into()
                .map_err(|_| MsgpackError::WrongType {
                    at,
                    expected: "a 32-byte module hash",
                })?,
        )
    };
    Ok(Some(Slot { version, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(v: &str, h: u8) -> Slot {
        Slot {
            version: v.into(),
            source: Source::Bundle([h; 32]),
        }
    }

    #[test]
    fn switch_rollback_remove_and_round_trip() {
        let mut s = UpdateState::default();
        let factory = Slot {
            version: "1.0.0".into(),
            source: Source::Factory,
        };
        assert_eq!(
            s.switch("echo", bundle("1.1.0", 1), Some(factory.clone())),
            None
        );
        let e = &s.plugins["echo"];
        assert_eq!((e.trial, e.highest.as_str()), (true, "1.1.0"));
        assert_eq!(e.previous, Some(factory.clone()));
        s.confirm("echo");
        // 1.2.0 replaces 1.1.0; the factory version is no longer kept.
        let dropped = s.switch("echo", bundle("1.2.0", 2), Some(bundle("1.1.0", 1)));
        assert_eq!(
            dropped, None,
            "the factory version stays in the plugin directory"
        );
        assert_eq!(UpdateState::decode(&s.encode()).unwrap(), s);
        // Roll back: 1.1.0 active, 1.2.0's bundle is free, highest stays.
        let (back, freed) = s.roll_back("echo").unwrap();
        assert_eq!(back, bundle("1.1.0", 1));
        assert_eq!(freed, Some(Source::Bundle([2; 32])));
        assert_eq!(s.highest("echo"), Some("1.2.0"));
        assert!(s.roll_back("echo").is_none(), "one step back only");
        // Remove: both gone, anti-rollback kept.
        assert_eq!(s.remove("echo", "0.0.0"), vec![Source::Bundle([1; 32])]);
        assert_eq!(s.plugins["echo"].active, None);
        assert_eq!(s.highest("echo"), Some("1.2.0"));
        assert_eq!(UpdateState::decode(&s.encode()).unwrap(), s);
    }
}
