//! Over-the-air plugin updates on a whole device (issue 11), on both
//! engines, with the in-memory link playing the broker and the journal and
//! update store on files in a tempdir: what `relay run` does, minus MQTT.
//!
//! Asserted: every kind of bad bundle is refused with its own code and the
//! active module is unchanged after it; an update in the middle of a stream
//! of commands loses, duplicates and reorders none, and every final status
//! names the version that ran it; a version that traps on trial or fails its
//! self-test is rolled back by itself and reported; rollback and remove
//! work and last across restarts; a re-sent install is recognised.

#[path = "ota_support/mod.rs"]
mod ota_support;

use ota_support::plugin_wat::{plugin_module, Behaviour};
use ota_support::{bundle, key, manifest};
use relay_core::engine::wasmi::WasmiEngine;
use relay_core::engine::Engine;
use relay_core::envelope::Envelope;
use relay_core::host_env::HostEnv;
use relay_core::limits::Limits;
use relay_core::ota::{self, sign_bundle};
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use relay_host::transport::Outbound;

#[path = "ota_support/device.rs"]
mod device;

use device::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_bundle_is_refused_with_its_code_and_changes_nothing() {
    for engine in engines() {
        let dir = device_dir();
        let revoked = format!("revoked_keys = [\"{}\"]\n", key3_id());
        let config = config(dir.path(), engine, &revoked);
        let mut dev = Device::start(&config);
        let good = leds("1.1.0", Behaviour::Echo, &key(1));
        let s = dev.install(&good, 1000).await;
        assert_eq!(s.status, State::Succeeded, "{engine}: {s:?}");
        let active_module = std::fs::read_dir(dir.path().join("data/updates/modules"))
            .unwrap()
            .count();

        let mut tampered = leds("1.2.0", Behaviour::Echo, &key(1));
        *tampered.last_mut().unwrap() ^= 0x55;
        let mut truncated = leds("1.2.0", Behaviour::Echo, &key(1));
        truncated.truncate(truncated.len() - 10);
        let other = plugin_module("other", "1.2.0", &["blink"], Behaviour::Echo);
        let mix = sign_bundle(manifest("leds", "1.2.0", CMDS), &other, &key(1));
        let conflict = bundle("other", "1.0.0", &["blink"], Behaviour::Echo, &key(1));
        let mut world = manifest("leds", "1.2.0", CMDS);
        world.world = "relay:plugin@9.0.0".into();
        let world = sign_bundle(
            world,
            &plugin_module("leds", "1.2.0", CMDS, Behaviour::Echo),
            &key(1),
        );
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("bundle_hash_mismatch", tampered),
            (
                "bundle_unsigned",
                plugin_module("leds", "1.2.0", CMDS, Behaviour::Echo),
            ),
            (
                "bundle_unknown_key",
                leds("1.2.0", Behaviour::Echo, &key(2)),
            ),
            (
                "bundle_revoked_key",
                leds("1.2.0", Behaviour::Echo, &key(3)),
            ),
            ("bundle_truncated", truncated),
            ("bundle_downgrade", leds("1.0.5", Behaviour::Echo, &key(1))),
            // The active version again, with other bytes: not newer.
            ("bundle_downgrade", leds("1.1.0", Behaviour::Traps, &key(1))),
            ("bundle_manifest_mismatch", mix),
            ("bundle_conflict", conflict),
            ("bundle_unsupported_world", world),
        ];
        for (code, bad) in cases {
            let s = dev.install(&bad, 700).await;
            assert_eq!(
                (s.status, s.code.as_ref().map(|c| c.as_str().to_string())),
                (State::Failed, Some(code.to_string())),
                "{engine}: {s:?}"
            );
            assert_eq!(dev.version_of("leds").await.as_deref(), Some("1.1.0"));
            let run = dev.run("blink", vec![0xc3]).await;
            assert_eq!(run.plugin.as_deref(), Some("leds@1.1.0"), "{engine}");
            assert_eq!(run.reply, Some(vec![0xc3]));
        }
        // Over the size limit: refused at the first chunk, by what it announces.
        let id = dev.send(
            ota::INSTALL,
            chunk_payload(&"ab".repeat(32), 0, 300_000, b"x"),
        );
        let s = dev.finals_until(&id, &mut Vec::new()).await.pop().unwrap();
        assert_eq!(s.code.unwrap().as_str(), "bundle_too_large");
        // Not admin: refused at arrival.
        let env = Envelope::new("c-role", ota::INSTALL, 1).with_payload(chunk_payload(
            &ota::chunk::transfer_id(&good),
            0,
            good.len() as u64,
            &good,
        ));
        dev.remote.send_command(Role::Primary, env.to_msgpack());
        let s = dev
            .finals_until("c-role", &mut Vec::new())
            .await
            .pop()
            .unwrap();
        assert_eq!(
            (s.status, s.code.unwrap().as_str()),
            (State::Rejected, "not_permitted")
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/updates/modules"))
                .unwrap()
                .count(),
            active_module,
            "{engine}: no refused module was kept"
        );
        dev.stop().await;
    }
}

fn key3_id() -> String {
    relay_core::ota::bundle::hex(&relay_core::ota::key_id(&key(3).verifying_key()))
}

/// 1,000 commands with an update in the middle, then a bad update that
/// traps on trial: nothing lost, duplicated or reordered; each status names
/// the version that ran it; the bad version rolls back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_mid_stream_keeps_every_command_in_order() {
    for engine in engines() {
        let dir = device_dir();
        let mut dev = Device::start(&config(dir.path(), engine, ""));
        let mut ids = Vec::new();
        for i in 0..500u32 {
            ids.push(dev.send("blink", rmp_serde::to_vec(&i).unwrap()));
        }
        let install = dev.send_install(&leds("2.0.0", Behaviour::Echo, &key(1)), 4096);
        for i in 500..1000u32 {
            ids.push(dev.send("blink", rmp_serde::to_vec(&i).unwrap()));
        }
        let mut events = Vec::new();
        let finals = dev.finals_until(ids.last().unwrap(), &mut events).await;
        let blinks: Vec<&Status> = finals.iter().filter(|s| s.name == "blink").collect();
        let got: Vec<&str> = blinks.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            got,
            ids.iter().map(String::as_str).collect::<Vec<_>>(),
            "{engine}: order, none lost or twice"
        );
        for (i, s) in blinks.iter().enumerate() {
            assert_eq!(s.status, State::Succeeded);
            assert_eq!(s.reply, Some(rmp_serde::to_vec(&(i as u32)).unwrap()));
            let want = if i < 500 { "leds@1.0.0" } else { "leds@2.0.0" };
            assert_eq!(s.plugin.as_deref(), Some(want), "{engine}: command {i}");
        }
        let last_chunk = finals
            .iter()
            .find(|s| Some(&s.id) == install.last())
            .unwrap();
        assert_eq!(
            last_chunk.status,
            State::Succeeded,
            "{engine}: {last_chunk:?}"
        );
        // Queued behind 500 commands, the bundle was verified and loaded
        // before its turn, which only switched.
        assert_eq!(dev.handle.stats().installs_prepared_ahead, 1, "{engine}");

        // A version that traps: its first command traps, the host rolls
        // back, the retry runs on 2.0.0, and so do the commands after it.
        let s = dev
            .install(&leds("2.1.0", Behaviour::Traps, &key(1)), 4096)
            .await;
        assert_eq!(
            s.status,
            State::Succeeded,
            "{engine}: installs (self-test passes)"
        );
        let first = dev.send("blink", vec![0x01]);
        let second = dev.send("blink", vec![0x02]);
        let mut events = Vec::new();
        let mut statuses = Vec::new();
        loop {
            let p = dev.next_published().await;
            if p.to != Outbound::Status {
                events.push(p);
                continue;
            }
            let s = Status::from_msgpack(&p.payload).unwrap();
            let done = s.id == second && s.is_final();
            statuses.push(s);
            if done {
                break;
            }
        }
        let retrying = statuses
            .iter()
            .find(|s| s.id == first && s.status == State::Retrying)
            .expect("the trap is retried");
        assert_eq!(retrying.plugin.as_deref(), Some("leds@2.1.0"));
        for id in [&first, &second] {
            let f = statuses
                .iter()
                .find(|s| &s.id == id && s.is_final())
                .unwrap();
            assert_eq!(
                (f.status, f.plugin.as_deref()),
                (State::Succeeded, Some("leds@2.0.0")),
                "{engine}"
            );
        }
        let rollback = events
            .iter()
            .find(|e| e.topic.ends_with("/event/_update"))
            .expect("a rollback event");
        let v: serde_json::Value = rmp_serde::from_slice(&rollback.payload).unwrap();
        assert_eq!(
            (v["action"].as_str(), v["from"].as_str(), v["to"].as_str()),
            (Some("rolled_back"), Some("2.1.0"), Some("2.0.0"))
        );
        assert_eq!(dev.version_of("leds").await.as_deref(), Some("2.0.0"));
        // Anti-rollback remembers 2.1.0: the same bundle is now a downgrade.
        let s = dev
            .install(&leds("2.1.0", Behaviour::Traps, &key(1)), 4096)
            .await;
        assert_eq!(s.code.unwrap().as_str(), "bundle_downgrade");
        dev.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_self_test_rolls_back_before_any_command() {
    for engine in engines() {
        let dir = device_dir();
        let mut dev = Device::start(&config(dir.path(), engine, ""));
        let s = dev
            .install(&leds("1.1.0", Behaviour::FailsSelfTest, &key(1)), 100_000)
            .await;
        assert_eq!(
            (s.status, s.code.as_ref().unwrap().as_str()),
            (State::Failed, "self_test_failed"),
            "{engine}"
        );
        assert!(s.message.unwrap().contains("self-test failed"));
        let run = dev.run("blink", vec![0xc2]).await;
        assert_eq!(run.plugin.as_deref(), Some("leds@1.0.0"), "{engine}");
        dev.stop().await;
    }
}

/// Install, restart, resend, roll back, remove: the state lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_remove_last_across_restarts() {
    for engine in engines() {
        let dir = device_dir();
        let config = config(dir.path(), engine, "");
        let v2 = leds("2.0.0", Behaviour::Echo, &key(1));
        let mut dev = Device::start(&config);
        assert_eq!(dev.install(&v2, 3000).await.status, State::Succeeded);
        // Three calls confirm it, which the device announces.
        let mut events = Vec::new();
        for _ in 0..3 {
            let id = dev.send("blink", vec![]);
            dev.finals_until(&id, &mut events).await;
        }
        let confirmed = events
            .iter()
            .find(|e| e.topic.ends_with("/event/_update"))
            .expect("a confirmation event");
        let v: serde_json::Value = rmp_serde::from_slice(&confirmed.payload).unwrap();
        assert_eq!(
            (v["action"].as_str(), v["version"].as_str()),
            (Some("confirmed"), Some("2.0.0"))
        );
        // `_plugins` says where the update stands.
        let list = dev.plugins().await;
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "leds")
            .unwrap();
        assert_eq!(
            entry["update"],
            serde_json::json!({"state": "confirmed", "previous": "1.0.0", "highest": "2.0.0"}),
            "{engine}"
        );
        dev.stop().await;

        let mut dev = Device::start(&config);
        assert_eq!(
            dev.version_of("leds").await.as_deref(),
            Some("2.0.0"),
            "{engine}"
        );
        // The same bundle again (a resend): recognised, not a downgrade.
        let s = dev.install(&v2, 3000).await;
        let reply: serde_json::Value = rmp_serde::from_slice(&s.reply.unwrap()).unwrap();
        assert_eq!(
            (reply["state"].as_str(), reply["already"].as_str()),
            (Some("confirmed"), Some("installed")),
            "{engine}"
        );
        let s = dev.run(ota::ROLLBACK, name_payload("leds")).await;
        assert_eq!(s.status, State::Succeeded, "{s:?}");
        assert_eq!(dev.version_of("leds").await.as_deref(), Some("1.0.0"));
        let s = dev.run(ota::ROLLBACK, name_payload("leds")).await;
        assert_eq!(s.code.unwrap().as_str(), "no_previous_version");
        dev.stop().await;

        let mut dev = Device::start(&config);
        assert_eq!(
            dev.version_of("leds").await.as_deref(),
            Some("1.0.0"),
            "{engine}"
        );
        let s = dev.run(ota::REMOVE, name_payload("leds")).await;
        assert_eq!(s.status, State::Succeeded);
        assert_eq!(
            dev.run("blink", vec![]).await.code.unwrap().as_str(),
            "unknown_command"
        );
        dev.stop().await;

        let mut dev = Device::start(&config);
        assert_eq!(
            dev.version_of("leds").await,
            None,
            "{engine}: removed stays removed"
        );
        assert_eq!(
            dev.run(ota::REMOVE, name_payload("leds"))
                .await
                .code
                .unwrap()
                .as_str(),
            "unknown_plugin"
        );
        // A newer version brings it back.
        assert_eq!(
            dev.install(&leds("3.0.0", Behaviour::Echo, &key(1)), 5000)
                .await
                .status,
            State::Succeeded
        );
        assert_eq!(
            dev.run("blink", vec![]).await.plugin.as_deref(),
            Some("leds@3.0.0")
        );
        dev.stop().await;
    }
}

/// An install prepared ahead of its turn gets the plugin's kv as it is at
/// the switch: the version it replaces kept writing it until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_loaded_ahead_sees_the_kv_written_until_its_switch() {
    let counter = relay_host::bundled::plugin("counter").unwrap_or_else(|e| panic!("{e}"));
    let module = std::fs::read(&counter).unwrap();
    let info = WasmiEngine::default()
        .load(&module, &Limits::default(), &mut |_| {
            HostEnv::detached(&Limits::default())
        })
        .unwrap()
        .info()
        .clone();
    // The same module again as an update (the version is not newer).
    let mut signed = manifest(&info.name, &info.version, &[]);
    signed.commands = info.commands.clone();
    signed.allow_downgrade = true;
    let update = sign_bundle(signed, &module, &key(1));
    for engine in engines() {
        let dir = device_dir();
        std::fs::copy(&counter, dir.path().join("plugins/counter.wasm")).unwrap();
        let mut dev = Device::start(&config(dir.path(), engine, ""));
        let increment = || rmp_serde::to_vec_named(&serde_json::json!({})).unwrap();
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(dev.send("increment", increment()));
        }
        let install = dev.send_install(&update, 16 * 1024);
        for _ in 0..50 {
            ids.push(dev.send("increment", increment()));
        }
        let finals = dev.finals_until(ids.last().unwrap(), &mut Vec::new()).await;
        let values: Vec<i64> = finals
            .iter()
            .filter(|s| s.name == "increment")
            .map(|s| {
                assert_eq!(s.status, State::Succeeded, "{engine}: {s:?}");
                let v: serde_json::Value =
                    rmp_serde::from_slice(s.reply.as_ref().unwrap()).unwrap();
                v["value"].as_i64().unwrap()
            })
            .collect();
        assert_eq!(
            values,
            (1..=250).collect::<Vec<i64>>(),
            "{engine}: the count goes on"
        );
        let last = finals
            .iter()
            .find(|s| Some(&s.id) == install.last())
            .unwrap();
        assert_eq!(last.status, State::Succeeded, "{engine}: {last:?}");
        assert_eq!(dev.handle.stats().installs_prepared_ahead, 1, "{engine}");
        dev.stop().await;
    }
}
