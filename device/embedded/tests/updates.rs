//! Plugin updates on a microcontroller, through the device loop: signed
//! bundles sent in chunks as `_install` commands are staged and verified on
//! a simulated NOR flash, switched in, tried and confirmed or rolled back;
//! `_rollback` and `_remove` work; the state survives a reset; a bad
//! signature, a non-admin and a downgrade are refused. A device built
//! without an update partition refuses update commands with a message.

#[path = "../../../host/tests/ota_support/mod.rs"]
#[allow(dead_code)]
mod ota_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use ota_support::plugin_wat::{plugin_module, Behaviour};
use ota_support::{bundle, key};
use relay_core::envelope::Envelope;
use relay_core::host_env::{FixedClock, HostEnv, MemKv, NullLogger};
use relay_core::limits::Limits;
use relay_core::machine::MachineOptions;
use relay_core::msgpack::Writer;
use relay_core::ota::chunk;
use relay_core::ota::verify::TrustedKeys;
use relay_core::plugin::{Invocation, Role};
use relay_core::registry::Registry;
use relay_core::status::{Code, State, Status};
use relay_embedded::scenario::Recorder;
use relay_embedded::updates::{Layout, UpdateOptions, Updater, UPDATE_EVENT};
use relay_embedded::{Device, UPDATES_UNSUPPORTED};
use relay_flash::ram::RamFlash;
use relay_flash::FlashLog;

type Ram = RamFlash<4, 4096>;
const JOURNAL: u32 = 64 * 1024;
const LAYOUT: Layout = Layout {
    base: 0,
    regions: 3,
    region_bytes: 16 * 1024,
};
const CMDS: &[&str] = &["blink", "self-test"];
const NOW: u64 = 1_000;
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// One flash shared by the device and the test, so a reset can reopen it.
type Shared = relay_flash::shared::Shared<Ram>;

fn factory() -> &'static [u8] {
    Box::leak(plugin_module("leds", "1.0.0", CMDS, Behaviour::Echo).into_boxed_slice())
}

fn env(info: &relay_core::plugin::PluginInfo) -> HostEnv {
    HostEnv::new(
        info.name.clone(),
        Box::new(MemKv::default()),
        Box::new(FixedClock(NOW)),
        Box::new(NullLogger),
        &Limits::default(),
    )
}

struct Rig {
    device: Device<FlashLog<Shared>, Recorder>,
    link: Recorder,
    seq: u32,
    now: u64,
}

/// A device with `leds` 1.0.0 in its firmware, its journal and update
/// partition on `journal` and `updates` (as a reset finds them).
fn boot(journal: &Shared, updates: &Shared) -> Rig {
    let limits = Limits::default();
    let leds = factory();
    let mut registry =
        relay_embedded::plugins::registry(&[leds], &limits, || FixedClock(NOW), || NullLogger)
            .expect("the firmware's plugins load");
    let mut trust = TrustedKeys::new();
    trust.trust(key(1).verifying_key().as_bytes()).unwrap();
    let options = UpdateOptions {
        trust,
        max_bundle_bytes: 40_000,
        trial_commands: 3,
        host_version: "0.1.0",
    };
    let engine = relay_embedded::plugins::engine();
    let updater = Updater::open(
        updates.clone(),
        LAYOUT,
        options,
        Box::new(engine),
        limits,
        Box::new(env),
        BTreeMap::from([("leds".to_string(), leds)]),
        &mut registry,
    )
    .expect("the update partition opens");
    let log = FlashLog::open(journal.clone(), 0, JOURNAL, 4096).unwrap();
    let (device, _) = Device::open(
        log,
        registry,
        relay_embedded::policy(),
        MachineOptions::default(),
        NOW,
    )
    .unwrap();
    Rig {
        device: device.with_updates(Box::new(updater)),
        link: Recorder::default(),
        seq: 0,
        now: NOW,
    }
}

impl Rig {
    /// Sends one command; its last status (none while commands before it
    /// wait for a retry).
    fn send_queued(&mut self, name: &str, payload: Vec<u8>, role: Role) -> Option<Status> {
        self.seq += 1;
        // Ids unique across resets (the journal remembers finished ones).
        let id = format!("c{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let envelope = Envelope::new(id.clone(), name, self.now).with_payload(payload);
        let now = self.now;
        self.device
            .on_message(
                Ok(role),
                &envelope.to_msgpack(),
                self.seq,
                now,
                &mut self.link,
            )
            .unwrap();
        self.device.tick(now, &mut self.link).unwrap();
        self.link.last(&id).cloned()
    }

    /// Sends one command; its last status.
    fn send_any(&mut self, name: &str, payload: Vec<u8>, role: Role) -> Status {
        self.send_queued(name, payload, role).expect("a status")
    }

    /// Lets `ms` pass; the device does what falls due.
    fn wait(&mut self, ms: u64) {
        self.now += ms;
        self.device.tick(self.now, &mut self.link).unwrap();
    }

    /// Sends one command; its final status.
    fn send(&mut self, name: &str, payload: Vec<u8>, role: Role) -> Status {
        let id = self.send_any(name, payload, role).id;
        self.link
            .last(&id)
            .filter(|s| s.is_final())
            .cloned()
            .unwrap_or_else(|| {
                let seen: Vec<_> = self.link.statuses.iter().filter(|s| s.id == id).collect();
                panic!("no final status for {name}: {seen:?}")
            })
    }

    /// Sends a bundle in 700-byte chunks; the last chunk's status.
    fn install(&mut self, bundle: &[u8]) -> Status {
        let mut last = None;
        for payload in chunk::payloads(bundle, 700) {
            let status = self.send("_install", payload, Role::Admin);
            assert_ne!(status.status, State::Failed, "{status:?}");
            last = Some(status);
        }
        last.unwrap()
    }

    fn blink(&mut self) -> Status {
        self.send("blink", vec![0x01], Role::Primary)
    }

    fn version(&mut self) -> Option<String> {
        self.device
            .registry()
            .plugin("leds")
            .map(|p| p.info().version.clone())
    }

    fn update_events(&self) -> usize {
        self.link
            .events
            .iter()
            .filter(|e| *e == UPDATE_EVENT)
            .count()
    }
}

fn name_payload(name: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.map_len(1).str("name").str(name);
    w.into_vec()
}

fn flash(len: u32) -> Shared {
    Shared::new(Ram::new(len as usize))
}

#[test]
fn install_trial_rollback_remove_and_a_reset() {
    let journal = flash(JOURNAL);
    let updates = flash(LAYOUT.bytes::<Shared>());
    let mut rig = boot(&journal, &updates);
    assert_eq!(rig.version().as_deref(), Some("1.0.0"));

    // 2.0.0 installs, passes its self-test, and is confirmed after 3 calls.
    let v2 = bundle("leds", "2.0.0", CMDS, Behaviour::Echo, &key(1));
    let done = rig.install(&v2);
    assert_eq!(done.status, State::Succeeded, "{done:?}");
    assert_eq!(rig.version().as_deref(), Some("2.0.0"));
    for _ in 0..3 {
        assert_eq!(rig.blink().status, State::Succeeded);
    }
    assert_eq!(rig.update_events(), 1, "confirmed");
    // The same install again (a redelivery of its last chunk) changes nothing.
    let again = rig.send(
        "_install",
        chunk::payloads(&v2, 700).pop().unwrap(),
        Role::Admin,
    );
    assert_eq!(again.status, State::Succeeded);

    // 3.0.0 passes its self-test but traps on its first call: rolled
    // back, and the call's retry runs on 2.0.0.
    let v3 = bundle("leds", "3.0.0", CMDS, Behaviour::Traps, &key(1));
    assert_eq!(rig.install(&v3).status, State::Succeeded);
    assert_eq!(rig.version().as_deref(), Some("3.0.0"));
    let trapped = rig.send_any("blink", vec![0x01], Role::Primary);
    assert_eq!(trapped.status, State::Retrying, "{trapped:?}");
    assert_eq!(trapped.plugin.as_deref(), Some("leds@3.0.0"));
    assert_eq!(rig.version().as_deref(), Some("2.0.0"));
    assert_eq!(rig.update_events(), 2, "rolled back");
    rig.wait(5_000);
    let retried = rig.link.last(&trapped.id).cloned().unwrap();
    assert_eq!(retried.status, State::Succeeded, "{retried:?}");
    assert_eq!(retried.plugin.as_deref(), Some("leds@2.0.0"));

    // 4.0.0 fails its self-test: refused, 2.0.0 stays.
    let v4 = bundle("leds", "4.0.0", CMDS, Behaviour::FailsSelfTest, &key(1));
    let last = chunk::payloads(&v4, 700);
    let (final_chunk, head) = last.split_last().unwrap();
    for p in head {
        rig.send("_install", p.clone(), Role::Admin);
    }
    let refused = rig.send("_install", final_chunk.clone(), Role::Admin);
    assert_eq!(refused.status, State::Failed);
    assert_eq!(rig.version().as_deref(), Some("2.0.0"));

    // Refusals: a key the device does not trust, a non-admin, a downgrade.
    let foreign = bundle("leds", "5.0.0", CMDS, Behaviour::Echo, &key(2));
    let payloads = chunk::payloads(&foreign, 100_000);
    let status = rig.send("_install", payloads[0].clone(), Role::Admin);
    assert_eq!(status.status, State::Failed);
    assert!(
        status.message.unwrap_or_default().contains("key"),
        "untrusted key"
    );
    let status = rig.send("_install", payloads[0].clone(), Role::Primary);
    assert_eq!(
        (status.status, status.code),
        (State::Rejected, Some(Code::NotPermitted))
    );
    let old = bundle("leds", "1.5.0", CMDS, Behaviour::Echo, &key(1));
    let status = rig.send(
        "_install",
        chunk::payloads(&old, 100_000)[0].clone(),
        Role::Admin,
    );
    assert_eq!(
        status.status,
        State::Failed,
        "below the highest version installed"
    );

    // A reset: the confirmed 2.0.0 comes back from flash.
    drop(rig);
    let mut rig = boot(&journal, &updates);
    assert_eq!(rig.version().as_deref(), Some("2.0.0"));
    assert_eq!(rig.blink().status, State::Succeeded);

    // 6.0.0 on trial across a reset, then rolled back to 2.0.0 (from its
    // region), and no further.
    let v6 = bundle("leds", "6.0.0", CMDS, Behaviour::Echo, &key(1));
    assert_eq!(rig.install(&v6).status, State::Succeeded);
    drop(rig);
    let mut rig = boot(&journal, &updates);
    assert_eq!(rig.version().as_deref(), Some("6.0.0"));
    let back = rig.send("_rollback", name_payload("leds"), Role::Admin);
    assert_eq!(back.status, State::Succeeded, "{back:?}");
    assert_eq!(rig.version().as_deref(), Some("2.0.0"));
    let none = rig.send("_rollback", name_payload("leds"), Role::Admin);
    assert_eq!(none.status, State::Failed, "{none:?}");

    // Removed, and still removed after a reset.
    let gone = rig.send("_remove", name_payload("leds"), Role::Admin);
    assert_eq!(gone.status, State::Succeeded, "{gone:?}");
    assert_eq!(rig.version(), None);
    drop(rig);
    let mut rig = boot(&journal, &updates);
    assert_eq!(rig.version(), None);
    assert_eq!(rig.blink().status, State::Rejected);
}

#[test]
fn a_reset_in_the_middle_of_a_transfer_resumes_it() {
    let journal = flash(JOURNAL);
    let updates = flash(LAYOUT.bytes::<Shared>());
    let mut rig = boot(&journal, &updates);
    let v2 = bundle("leds", "2.0.0", CMDS, Behaviour::Echo, &key(1));
    let payloads = chunk::payloads(&v2, 500);
    let half = payloads.len() / 2;
    for p in &payloads[..half] {
        assert_eq!(
            rig.send("_install", p.clone(), Role::Admin).status,
            State::Succeeded
        );
    }
    drop(rig);
    let mut rig = boot(&journal, &updates);
    for p in &payloads[half..] {
        assert_eq!(
            rig.send("_install", p.clone(), Role::Admin).status,
            State::Succeeded
        );
    }
    assert_eq!(rig.version().as_deref(), Some("2.0.0"));
    // Back to the version the firmware carries.
    let back = rig.send("_rollback", name_payload("leds"), Role::Admin);
    assert_eq!(back.status, State::Succeeded, "{back:?}");
    assert_eq!(rig.version().as_deref(), Some("1.0.0"));
}

#[test]
fn without_an_update_partition_update_commands_are_refused() {
    let mut registry = Registry::new();
    registry
        .listen("echo", |cmd: &Invocation| Ok(Some(cmd.payload.clone())))
        .unwrap();
    let log = FlashLog::open(Ram::new(JOURNAL as usize), 0, JOURNAL, 4096).unwrap();
    let (mut device, _) = Device::<_, Recorder>::open(
        log,
        registry,
        relay_embedded::policy(),
        MachineOptions::default(),
        NOW,
    )
    .unwrap();
    let mut link = Recorder::default();
    let names = ["echo", "_install", "_rollback", "_remove", "echo"];
    for (n, name) in names.iter().enumerate() {
        let envelope = Envelope::new(format!("c{n}"), *name, NOW).with_payload(vec![0xc0]);
        device
            .on_message(
                Ok(Role::Admin),
                &envelope.to_msgpack(),
                n as u32,
                NOW,
                &mut link,
            )
            .unwrap();
    }
    device.tick(2_000, &mut link).unwrap();
    assert_eq!(link.acks.len(), names.len());
    let by_id = |id: &str| link.last(id).filter(|s| s.is_final()).cloned();
    for id in ["c0", "c4"] {
        assert_eq!(by_id(id).map(|s| s.status), Some(State::Succeeded), "{id}");
    }
    for id in ["c1", "c2", "c3"] {
        let status = by_id(id).unwrap_or_else(|| panic!("no final status for {id}"));
        assert_eq!(status.status, State::Rejected, "{id}");
        assert_eq!(status.code, Some(Code::UnknownCommand), "{id}");
        assert_eq!(status.message.as_deref(), Some(UPDATES_UNSUPPORTED), "{id}");
    }
}

#[test]
fn a_power_cut_at_every_flash_operation_of_an_install_leaves_a_runnable_version() {
    let v2 = bundle("leds", "2.0.0", CMDS, Behaviour::Echo, &key(1));
    // The flash operations of an uncut install.
    let journal = flash(JOURNAL);
    let updates = flash(LAYOUT.bytes::<Shared>());
    let mut rig = boot(&journal, &updates);
    let before = updates.with(|f| f.ops());
    rig.install(&v2);
    let ops = updates.with(|f| f.ops()) - before;
    assert!(ops >= 10, "{ops} flash operations");
    drop(rig);
    for cut in 1..=ops {
        let journal = flash(JOURNAL);
        let updates = flash(LAYOUT.bytes::<Shared>());
        let mut rig = boot(&journal, &updates);
        updates.with(|f| f.cut_after(cut));
        for payload in chunk::payloads(&v2, 700) {
            rig.send_queued("_install", payload, Role::Admin);
        }
        drop(rig);
        updates.with(|f| f.power_on());
        let mut rig = boot(&journal, &updates);
        let version = rig.version();
        assert!(
            matches!(version.as_deref(), Some("1.0.0" | "2.0.0")),
            "cut {cut}: {version:?} after the reboot"
        );
        // The journal's chunks that failed in the cut run again.
        for _ in 0..6 {
            rig.wait(5_000);
        }
        assert_eq!(
            rig.blink().status,
            State::Succeeded,
            "cut {cut}: a version runs"
        );
        // The operator pushes again: it completes.
        let done = rig.install(&v2);
        assert_eq!(done.status, State::Succeeded, "cut {cut}: {done:?}");
        assert_eq!(rig.version().as_deref(), Some("2.0.0"), "cut {cut}");
    }
}
