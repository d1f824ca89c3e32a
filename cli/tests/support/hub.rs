//! A `relay hub serve` child process for the hub tests (its own SQLite file
//! in a temp dir, a free loopback port, a users file with one admin and one
//! user limited to other devices), and a minimal HTTP/1.1 client so the
//! tests speak to it exactly as an app would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value as Json;

use crate::support::{free_port, wait_for_port};

/// The admin's token (the users file keeps its hash).
pub const ADMIN: &str = "admin-token-for-tests-0123456789abcdef";
/// A user who holds `secondary` on `other-*` devices only.
pub const OUTSIDER: &str = "outsider-token-for-tests-0123456789abcd";

pub struct HubProcess {
    pub port: u16,
    dir: tempfile::TempDir,
    broker_port: u16,
    /// `None`: SQLite in the temp dir.
    database: Option<String>,
    /// Added to `relay hub serve`'s arguments.
    extra: Vec<String>,
    child: Option<Child>,
}

fn sha256_hex(text: &str) -> String {
    relay_hub::users::token_hash(text)
}

impl HubProcess {
    pub fn start(broker_port: u16) -> Result<HubProcess> {
        Self::start_with(broker_port, None, &[])
    }

    /// One of several instances on the database at `url` (`--instance`).
    pub fn start_instance(
        broker_port: u16,
        url: &str,
        instance: &str,
        lease_ms: u64,
    ) -> Result<HubProcess> {
        let lease = lease_ms.to_string();
        Self::start_with(
            broker_port,
            Some(url),
            &["--instance", instance, "--lease-ms", &lease],
        )
    }

    fn start_with(broker_port: u16, database: Option<&str>, extra: &[&str]) -> Result<HubProcess> {
        let dir = tempfile::Builder::new().prefix("relay-hub-").tempdir()?;
        let users = format!(
            "[[user]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\ngrants = [{{ devices = \"*\", role = \"admin\" }}]\n\n\
             [[user]]\nname = \"outsider\"\ntoken_sha256 = \"{}\"\ngrants = [{{ devices = \"other-*\", role = \"secondary\" }}]\n",
            sha256_hex(ADMIN),
            sha256_hex(OUTSIDER)
        );
        std::fs::write(dir.path().join("users.toml"), users)?;
        let mut hub = HubProcess {
            port: free_port(),
            dir,
            broker_port,
            database: database.map(str::to_owned),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        hub.spawn()?;
        Ok(hub)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("hub.db")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    pub fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hub.log"))?;
        let database = self
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.db_path().display()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
        command.args(["hub", "serve", "--db", &database]);
        if self.extra.is_empty() {
            command.args(["--client-id", "relay-hub-test"]);
        }
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--users")
            .arg(self.dir.path().join("users.toml"))
            .arg("--broker")
            .arg(format!("mqtt://127.0.0.1:{}", self.broker_port))
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning relay hub serve")?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20))
            .map_err(|e| anyhow!("{e}; hub log:\n{}", self.log()))
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One HTTP call; `(status, body as JSON)`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, Json)> {
        http(self.port, method, path, token, body)
    }

    /// A call as the admin that must answer `expected`.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&Json>,
        expected: u16,
    ) -> Result<Json> {
        let text = body.map(|b| b.to_string());
        let (status, json) = self.call(method, path, Some(ADMIN), text.as_deref())?;
        anyhow::ensure!(
            status == expected,
            "{method} {path}: {status} (expected {expected}): {json}"
        );
        Ok(json)
    }
}

impl HubProcess {
    /// Polls (bounded) until `device`'s `succeeded` count reaches `n`.
    pub fn wait_succeeded(&self, device: &str, n: u64, limit: Duration) -> Result<Json> {
        let started = std::time::Instant::now();
        loop {
            let path = format!("/v1/devices/{device}/requests?limit=1");
            let list = self.admin("GET", &path, None, 200)?;
            let done = list["counts"]["succeeded"].as_u64().unwrap_or(0);
            if done >= n {
                return Ok(list);
            }
            if started.elapsed() > limit {
                anyhow::bail!(
                    "{done} of {n} succeeded after {limit:?}: {}\nhub log:\n{}",
                    list["counts"],
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `(id, reply)` of the device's requests, in submission order.
    pub fn replies_in_order(&self, device: &str, n: usize) -> Result<Vec<(String, Json)>> {
        let mut all = Vec::new();
        let mut offset = 0;
        while all.len() < n {
            let path = format!("/v1/devices/{device}/requests?limit=1000&offset={offset}");
            let page = self.admin("GET", &path, None, 200)?;
            let requests = page["requests"].as_array().cloned().unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            offset += requests.len();
            for r in requests {
                let id = r["id"].as_str().unwrap_or("").to_owned();
                all.push((id, r["reply"].clone()));
            }
        }
        all.reverse(); // the list is newest first
        Ok(all)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, Json)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let json = if body.trim().is_empty() {
        Json::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Json::String(body.to_owned()))
    };
    Ok((status, json))
}
