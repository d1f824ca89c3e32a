//! A whole device on the in-memory link, for the update tests: the link
//! plays the broker, the journal and the update store are files in a
//! tempdir (what `relay run` does, minus MQTT).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use relay_core::engine::EngineKind;
use relay_core::envelope::Envelope;
use relay_core::msgpack::Writer;
use relay_core::ota;
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use relay_host::runtime::config::Config;
use relay_host::runtime::start::prepare_device;
use relay_host::runtime::RuntimeHandle;
use relay_host::transport::fake::Published;
use relay_host::transport::{FakeRemote, FakeTransport, Outbound};

use super::ota_support::plugin_wat::{plugin_module, Behaviour};
use super::ota_support::{bundle, key, public_hex};

pub const LIMIT: Duration = Duration::from_secs(60);
pub const CMDS: &[&str] = &["blink", "self-test"];

pub struct Device {
    pub handle: RuntimeHandle,
    pub remote: FakeRemote,
    seq: u64,
}

pub fn config(dir: &Path, engine: EngineKind, extra: &str) -> Config {
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
pub fn device_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let module = plugin_module("leds", "1.0.0", CMDS, Behaviour::Echo);
    std::fs::write(dir.path().join("plugins/leds.wasm"), module).unwrap();
    dir
}

impl Device {
    pub fn start(config: &Config) -> Device {
        let prepared = prepare_device(config).expect("device starts");
        let (transport, remote) = FakeTransport::new("dev-1").unwrap();
        let handle = prepared.prepared.start(Arc::new(transport)).unwrap();
        Device {
            handle,
            remote,
            seq: 0,
        }
    }

    pub async fn stop(self) {
        self.handle.shutdown().await.expect("clean stop");
    }

    /// Ids stay unique across restarts (the device dedupes by id).
    pub fn send(&mut self, name: &str, payload: Vec<u8>) -> String {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        self.seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("c{}", self.seq);
        let env = Envelope::new(id.clone(), name, relay_host::runtime::clock::unix_ms())
            .with_payload(payload);
        self.remote.send_command(Role::Admin, env.to_msgpack());
        id
    }

    pub async fn next_published(&self) -> Published {
        tokio::time::timeout(LIMIT, self.remote.next_published())
            .await
            .expect("a message within the limit")
            .expect("link open")
    }

    /// Final statuses until `id`'s (events collected on the side).
    pub async fn finals_until(&self, id: &str, events: &mut Vec<Published>) -> Vec<Status> {
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

    pub async fn run(&mut self, name: &str, payload: Vec<u8>) -> Status {
        let id = self.send(name, payload);
        self.finals_until(&id, &mut Vec::new()).await.pop().unwrap()
    }

    /// Sends `bundle` in chunks of `chunk` bytes; the last chunk's status.
    pub async fn install(&mut self, bundle: &[u8], chunk: usize) -> Status {
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

    pub fn send_install(&mut self, bundle: &[u8], chunk: usize) -> Vec<String> {
        ota::chunk::payloads(bundle, chunk)
            .into_iter()
            .map(|payload| self.send(ota::INSTALL, payload))
            .collect()
    }

    pub async fn plugins(&mut self) -> serde_json::Value {
        let s = self.run("_plugins", Vec::new()).await;
        rmp_serde::from_slice(&s.reply.unwrap()).unwrap()
    }

    pub async fn version_of(&mut self, plugin: &str) -> Option<String> {
        let list = self.plugins().await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == plugin)
            .map(|p| p["version"].as_str().unwrap().to_string())
    }
}

pub fn chunk_payload(transfer: &str, offset: u64, total: u64, data: &[u8]) -> Vec<u8> {
    ota::chunk::encode(transfer, offset, total, data)
}

pub fn name_payload(name: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.map_len(1).str("name").str(name);
    w.into_vec()
}

pub fn leds(version: &str, behaviour: Behaviour, k: &SigningKey) -> Vec<u8> {
    bundle("leds", version, CMDS, behaviour, k)
}

pub fn engines() -> [EngineKind; 2] {
    [EngineKind::Wasmtime, EngineKind::Wasmi]
}
