//! The store's one code path on Postgres: a real server started by the test
//! (`initdb` + `pg_ctl` in a temp dir, on a free loopback port, as the
//! `postgres` user when run as root since initdb refuses root), then the
//! same operations the SQLite tests run: idempotent submit, statuses and
//! history, cancel and expiry, concurrent submits through group commit,
//! and everything still there after a reopen.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_core::envelope::Kind;
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use relay_hub::store::{ListFilter, Store, Submitted};
use relay_hub::submit::NewRequest;
use relay_hub::HubState;

struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs a Postgres tool, as `postgres` when we are root.
fn tool(bin: &Path, name: &str, args: &[&str]) -> Result<()> {
    let program = bin.join(name);
    let mut command = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let out = command
        .args(args)
        .output()
        .with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        bail!(
            "{name} {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Postgres {
    fn start() -> Result<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("Postgres is not installed (Debian: apt-get install postgresql)")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .context("no initdb under /usr/lib/postgresql")?;
        let dir = tempfile::Builder::new().prefix("relay-pg-").tempdir()?;
        if as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            anyhow::ensure!(status.success(), "chown failed");
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = dir.path().join("data");
        let data = data.to_str().context("utf-8 path")?;
        tool(
            &bin,
            "initdb",
            &["-D", data, "-U", "relay", "--auth=trust", "-E", "UTF8"],
        )?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=on",
            dir.path().display()
        );
        let log = dir.path().join("pg.log");
        tool(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data,
                "-l",
                log.to_str().context("utf-8")?,
                "-o",
                &options,
                "-w",
                "start",
            ],
        )?;
        let pg = Postgres { dir, bin, port };
        tool(
            &pg.bin,
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "relay",
                "hub",
            ],
        )?;
        Ok(pg)
    }

    fn url(&self) -> String {
        format!("postgres://relay@127.0.0.1:{}/hub", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = tool(
            &self.bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"],
        );
    }
}

fn request(id: &str, payload: &[u8]) -> NewRequest {
    NewRequest {
        device: "d1".into(),
        id: id.into(),
        name: "echo".into(),
        kind: Kind::Command,
        role: Role::Primary,
        payload: payload.to_vec(),
        submitted_by: "alice".into(),
        submitted_at: 1_000,
        expires_at: 10_000,
        deadline_at: None,
    }
}

fn status(id: &str, state: State, attempt: u32, at: u64) -> Status {
    Status {
        id: id.into(),
        name: "echo".into(),
        status: state,
        attempt,
        code: None,
        message: None,
        reply: (state == State::Succeeded).then(|| vec![0xa2, b'o', b'k']),
        next_attempt_at: None,
        at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_the_same_on_postgres() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    let store = Store::open(&pg.url()).await?;
    assert_eq!(store.submit(request("r1", &[1])).await?, Submitted::Created);
    assert_eq!(
        store.submit(request("r1", &[1])).await?,
        Submitted::Duplicate
    );
    assert_eq!(
        store.submit(request("r1", &[2])).await?,
        Submitted::Conflict
    );
    store.sent("d1", "r1", 1_100).await?;
    for (state, attempt, at) in [
        (State::Accepted, 0, 1_200),
        (State::Running, 1, 1_300),
        (State::Succeeded, 1, 1_400),
        (State::Succeeded, 1, 1_400),
    ] {
        store
            .status("d1", status("r1", state, attempt, at), at)
            .await?;
    }
    store.submit(request("c", &[])).await?;
    assert!(store.finish("d1", "c", HubState::Cancelled, 1_500).await?);
    store.submit(request("e", &[])).await?;
    assert!(store.finish("d1", "e", HubState::Expired, 10_000).await?);
    store.flush().await?;
    let r1 = store.get("d1", "r1").await?.expect("stored");
    assert_eq!(r1.state, HubState::Succeeded);
    assert_eq!(r1.reply, Some(serde_json::json!("ok")));
    assert_eq!(r1.history.as_ref().map(Vec::len), Some(5));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.submit(request(&format!("m{i:04}"), &[])).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await??, Submitted::Created);
    }
    println!(
        "500 concurrent durable submits on Postgres: {:?}",
        started.elapsed()
    );
    store.presence("d1", true, (5, 2), 7).await?;
    drop(store);
    let store = Store::open(&pg.url()).await?;
    assert_eq!(store.open_requests().await?.len(), 500);
    let cancelled = store
        .list(
            "d1",
            &ListFilter {
                state: Some(HubState::Cancelled),
                ..ListFilter::default()
            },
        )
        .await?;
    assert_eq!(cancelled.len(), 1);
    let devices = store.devices().await?;
    assert_eq!((devices[0].online, devices[0].session), (true, 2));
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
