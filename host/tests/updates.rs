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

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ota_support::plugin_wat::{plugin_module, Behaviour};
use ota_support::{bundle, key, manifest, public_hex};
use relay_core::engine::EngineKind;
use relay_core::envelope::Envelope;
use relay_core::msgpack::Writer;
use relay_core::ota::{self, sign_bundle};
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use relay_host::runtime::config::Config;
use relay_host::runtime::start::prepare_device;
use relay_host::runtime::RuntimeHandle;
use relay_host::transport::fake::Published;
use relay_host::transport::{FakeRemote, FakeTransport, Outbound};

const LIMIT: Duration = Duration::from_secs(60);
const CMDS: &[&str] = &["blink", "self-test"];

struct Device {
    handle: RuntimeHandle,
    remote: FakeRemote,
    seq: u64,
}

fn config(dir: &Path, engine: EngineKind, extra: &str) -> Config {
    let text = format!(
        "device = \"dev-1\"\nengine = \"{}\"\nplugin_dir = \"{}\"\ndata_dir = \"{}\"\n\
         [updates]\ntrusted_keys = [\"{}\", \"{}\"]\nmax_bundle_bytes = 200000\n{extra}",
        engine.as_str(),
        dir.join("plugins").display(),
        dir.join("data").display(),
        public_hex(&key(1)),
        public_hex(&key(3)),
    );
    Config::parse(&text).expect("test config")
}

/// A device dir whose plugin directory holds `leds` 1.0.0.
fn device_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let module = plugin_module("leds", "1.0.0", CMDS, Behaviour::Echo);
    std::fs::write(dir.path().join("plugins/leds.wasm"), module).unwrap();
    dir
}

impl Device {
    fn start(config: &Config) -> Device {
        let prepared = prepare_device(config).expect("device starts");
        let (transport, remote) = FakeTransport::new("dev-1").unwrap();
        let handle = prepared.prepared.start(Arc::new(transport)).unwrap();
        Device {
            handle,
            remote,
            seq: 0,
        }
    }

    async fn stop(self) {
        self.handle.shutdown().await.expect("clean stop");
    }

    /// Ids stay unique across restarts (the device dedupes by id).
    fn send(&mut self, name: &str, payload: Vec<u8>) -> String {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        self.seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("c{}", self.seq);
        let env = Envelope::new(id.clone(), name, relay_host::runtime::clock::unix_ms())
            .with_payload(payload);
        self.remote.send_command(Role::Admin, env.to_msgpack());
        id
    }

    async fn next_published(&self) -> Published {
        tokio::time::timeout(LIMIT, self.remote.next_published())
            .await
            .expect("a message within the limit")
            .expect("link open")
    }

    /// Final statuses until `id`'s (events collected on the side).
    async fn finals_until(&self, id: &str, events: &mut Vec<Published>) -> Vec<Status> {
        let mut finals = Vec::new();
        loop {
            let p = self.next_published().await;
            if p.to != Outbound::Status {
                events.push(p);
                continue;
            }
            let s = Status::from_msgpack(&p.payload).unwrap();
            if s.is_final() {
                let done = s.id == id;
                finals.push(s);
                if done {
                    return finals;
                }
            }
        }
    }

    async fn run(&mut self, name: &str, payload: Vec<u8>) -> Status {
        let id = self.send(name, payload);
        self.finals_until(&id, &mut Vec::new()).await.pop().unwrap()
    }

    /// Sends `bundle` in chunks of `chunk` bytes; the last chunk's status.
    async fn install(&mut self, bundle: &[u8], chunk: usize) -> Status {
        let ids = self.send_install(bundle, chunk);
        let finals = self
            .finals_until(ids.last().unwrap(), &mut Vec::new())
            .await;
        for s in &finals[..finals.len() - 1] {
            if ids.contains(&s.id) {
                assert_eq!(s.status, State::Succeeded, "chunk {s:?}");
            }
        }
        finals.last().unwrap().clone()
    }

    fn send_install(&mut self, bundle: &[u8], chunk: usize) -> Vec<String> {
        ota::chunk::payloads(bundle, chunk)
            .into_iter()
            .map(|payload| self.send(ota::INSTALL, payload))
            .collect()
    }

    async fn plugins(&mut self) -> serde_json::Value {
        let s = self.run("_plugins", Vec::new()).await;
        rmp_serde::from_slice(&s.reply.unwrap()).unwrap()
    }

    async fn version_of(&mut self, plugin: &str) -> Option<String> {
        let list = self.plugins().await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == plugin)
            .map(|p| p["version"].as_str().unwrap().to_string())
    }
}

fn chunk_payload(transfer: &str, offset: u64, total: u64, data: &[u8]) -> Vec<u8> {
    ota::chunk::encode(transfer, offset, total, data)
}

fn name_payload(name: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.map_len(1).str("name").str(name);
    w.into_vec()
}

fn leds(version: &str, behaviour: Behaviour, k: &SigningKey) -> Vec<u8> {
    bundle("leds", version, CMDS, behaviour, k)
}

fn engines() -> [EngineKind; 2] {
    [EngineKind::Wasmtime, EngineKind::Wasmi]
}

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
