//! Update commands on a microcontroller: the device loop has no staging
//! area for bundles yet, so `_install`, `_rollback` and `_remove` from an
//! admin are refused with a clear message (and journaled, deduped, acked
//! like any refusal), while ordinary commands around them still run.

use relay_core::envelope::Envelope;
use relay_core::machine::MachineOptions;
use relay_core::plugin::{Invocation, Role};
use relay_core::registry::Registry;
use relay_core::status::{Code, State};
use relay_embedded::scenario::Recorder;
use relay_embedded::{Device, UPDATES_UNSUPPORTED};
use relay_flash::ram::RamFlash;
use relay_flash::FlashLog;

#[test]
fn update_commands_are_refused_with_a_message_and_the_queue_goes_on() {
    let mut registry = Registry::new();
    registry
        .listen("echo", |cmd: &Invocation| Ok(Some(cmd.payload.clone())))
        .unwrap();
    let log = FlashLog::open(RamFlash::<4, 4096>::new(64 * 1024), 0, 64 * 1024, 4096).unwrap();
    let (mut device, _) = Device::<_, Recorder>::open(
        log,
        registry,
        relay_embedded::policy(),
        MachineOptions::default(),
        1_000,
    )
    .unwrap();
    let mut link = Recorder::default();
    let names = ["echo", "_install", "_rollback", "_remove", "echo"];
    for (n, name) in names.iter().enumerate() {
        let envelope = Envelope::new(format!("c{n}"), *name, 1_000).with_payload(vec![0xc0]);
        device
            .on_message(
                Ok(Role::Admin),
                &envelope.to_msgpack(),
                n as u32,
                1_000,
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
