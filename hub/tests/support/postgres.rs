//! A real Postgres server for a test: `initdb` + `pg_ctl` from Debian's
//! `postgresql` in a temp dir, on a free loopback port, as the `postgres`
//! user when run as root (initdb refuses root). Stopped when dropped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Postgres {
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
    pub fn start() -> Result<Postgres> {
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

    pub fn url(&self) -> String {
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
