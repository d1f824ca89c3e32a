//! What a verified bundle must also satisfy to be installed: the world, the
//! host version, anti-rollback, and agreement between the signed manifest
//! and the module's own `describe()`.
//!
//! Anti-rollback compares against the highest version *ever installed* for
//! the plugin's name (kept durably in [`super::state`]), not the active one:
//! after a rollback from 2.0.0 to 1.0.0, an attacker replaying the signed
//! 1.5.0 bundle is refused too. Only a manifest signed with
//! `allow_downgrade` passes, so a downgrade is a decision of the key holder.

use alloc::format;
use alloc::string::String;

use semver::Version;

use super::manifest::Manifest;
use super::Refusal;
use crate::plugin::PluginInfo;

/// Checks done on the manifest alone, before the module is loaded.
pub fn check_manifest(
    manifest: &Manifest,
    host_version: &str,
    highest: Option<&str>,
) -> Result<(), Refusal> {
    if manifest.world != super::WORLD {
        return Err(Refusal::UnsupportedWorld(manifest.world.clone()));
    }
    let version = parse(&manifest.version, "version")?;
    let needs = parse(&manifest.min_host, "min_host")?;
    let host = parse(host_version, "host version")?;
    if needs > host {
        return Err(Refusal::HostTooOld {
            needs: manifest.min_host.clone(),
            host: host_version.into(),
        });
    }
    if let Some(highest) = highest {
        let top = parse(highest, "highest installed version")?;
        if version <= top && !manifest.allow_downgrade {
            return Err(Refusal::Downgrade {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                highest: highest.into(),
            });
        }
    }
    Ok(())
}

/// The module's `describe()` must say what the signer signed: the same
/// name, version and command table. A module signed under another plugin's
/// name is refused here.
pub fn check_describe(manifest: &Manifest, info: &PluginInfo) -> Result<(), Refusal> {
    let mismatch = |what: String| Err(Refusal::ManifestMismatch(what));
    if info.name != manifest.name {
        return mismatch(format!(
            "the manifest names plugin {:?}, the module describes itself as {:?}",
            manifest.name, info.name
        ));
    }
    if info.version != manifest.version {
        return mismatch(format!(
            "the manifest says version {}, the module {}",
            manifest.version, info.version
        ));
    }
    if info.commands != manifest.commands {
        return mismatch("the module's commands or roles differ from the manifest's".into());
    }
    Ok(())
}

/// The higher of two versions (the first when either does not parse).
pub fn max_version<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(x), Ok(y)) if y > x => b,
        _ => a,
    }
}

fn parse(v: &str, what: &str) -> Result<Version, Refusal> {
    Version::parse(v).map_err(|e| Refusal::Malformed(format!("{what} {v:?} is not semver: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::manifest::sample;
    use super::*;

    #[test]
    fn world_host_and_anti_rollback() {
        let m = sample(); // 1.2.0, min_host 0.1.0
        assert_eq!(check_manifest(&m, "0.1.0", None), Ok(()));
        assert_eq!(check_manifest(&m, "0.1.0", Some("1.1.9")), Ok(()));
        for highest in ["1.2.0", "1.10.0", "2.0.0"] {
            assert!(matches!(
                check_manifest(&m, "0.1.0", Some(highest)),
                Err(Refusal::Downgrade { .. })
            ));
        }
        let mut down = m.clone();
        down.allow_downgrade = true;
        assert_eq!(check_manifest(&down, "0.1.0", Some("2.0.0")), Ok(()));

        let mut newer_host = m.clone();
        newer_host.min_host = "0.2.0".into();
        assert!(matches!(
            check_manifest(&newer_host, "0.1.0", None),
            Err(Refusal::HostTooOld { .. })
        ));
        let mut world = m.clone();
        world.world = "relay:plugin@9.0.0".into();
        assert!(matches!(
            check_manifest(&world, "0.1.0", None),
            Err(Refusal::UnsupportedWorld(_))
        ));
        assert_eq!(max_version("1.2.0", "1.10.0"), "1.10.0");
    }

    #[test]
    fn describe_must_match_the_manifest() {
        let m = sample();
        let mut info = PluginInfo {
            name: m.name.clone(),
            version: m.version.clone(),
            commands: m.commands.clone(),
        };
        assert_eq!(check_describe(&m, &info), Ok(()));
        info.name = "counter".into();
        assert!(matches!(
            check_describe(&m, &info),
            Err(Refusal::ManifestMismatch(_))
        ));
        info.name = m.name.clone();
        info.commands[0].roles.push(crate::plugin::Role::Secondary);
        assert!(check_describe(&m, &info).is_err());
    }
}
