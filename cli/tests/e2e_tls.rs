//! TLS end to end: Mosquitto with a TLS listener that requires a client
//! certificate (`cli/tests/mosquitto-tls.conf`), a `relay run` child
//! process configured with `[broker.tls]`, and an app (`relay_client`)
//! with its own certificate. A test CA, the broker's certificate (SAN
//! `IP:127.0.0.1`) and client certificates are made per test with the
//! `openssl` command line (installed by `.ci/run`).
//!
//! - `device_and_app_talk_over_mutual_tls`: a command goes out and its
//!   `succeeded` status with the echoed reply comes back, both links on TLS.
//! - `wrong_ca_or_no_certificate_is_a_clear_error`: an app that trusts
//!   another CA, or brings no client certificate, is refused with an error
//!   saying so, not a hang.

#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use relay_client::{Client, ClientError, ClientOptions, CommandRequest};
use relay_core::status::State;
use relay_host::transport::TlsFiles;

use host_process::{HostConfig, HostProcess};
use support::Mosquitto;

const TEMPLATE: &str = include_str!("mosquitto-tls.conf");
const LIMIT: Duration = Duration::from_secs(60);

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (apt-get install openssl)")?;
    if !output.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A CA (`<ca>.pem/.key`) in `dir`.
fn make_ca(dir: &Path, ca: &str) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    )
}

/// `<name>.pem/.key` signed by `ca`, for a server (SAN 127.0.0.1) or a client.
fn make_leaf(dir: &Path, ca: &str, name: &str, server: bool) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    )?;
    let ext = if server {
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    } else {
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    };
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

/// The test PKI: `ca` (the broker's and everyone's), `server`, `device`,
/// `app`, and `rogue-ca` with nothing signed by it.
fn pki() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("relay-tls-").tempdir()?;
    make_ca(dir.path(), "ca")?;
    make_ca(dir.path(), "rogue-ca")?;
    make_leaf(dir.path(), "ca", "server", true)?;
    make_leaf(dir.path(), "ca", "device", false)?;
    make_leaf(dir.path(), "ca", "app", false)?;
    Ok(dir)
}

fn files(dir: &Path, ca: &str, client: Option<&str>) -> TlsFiles {
    let path = |name: String| -> PathBuf { dir.join(name) };
    TlsFiles {
        ca: Some(path(format!("{ca}.pem"))),
        client_cert: client.map(|c| path(format!("{c}.pem"))),
        client_key: client.map(|c| path(format!("{c}.key"))),
    }
}

fn broker(pki: &Path) -> Result<Mosquitto> {
    let certs = pki.to_str().context("temp dir is not UTF-8")?;
    Mosquitto::start_with(TEMPLATE, &[("CERTS", certs)])
}

fn app_options(port: u16, tls: TlsFiles) -> ClientOptions {
    ClientOptions {
        tls: Some(tls),
        connect_timeout: Duration::from_secs(10),
        ..ClientOptions::new(support::HOST, port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_and_app_talk_over_mutual_tls() -> Result<()> {
    let pki = pki()?;
    let mosquitto = broker(pki.path())?;
    let device_tls = files(pki.path(), "ca", Some("device"));
    let mut config = HostConfig::new("tls-dev", mosquitto.port(), &["echo"]);
    config.extra_toml = format!(
        "[broker.tls]\nca = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
        device_tls.ca.as_ref().unwrap(),
        device_tls.client_cert.as_ref().unwrap(),
        device_tls.client_key.as_ref().unwrap(),
    );
    let mut host = HostProcess::start(config)?;
    host.wait_ready_async(LIMIT).await.with_context(|| {
        format!(
            "host log:\n{}\nbroker log:\n{}",
            host.log_tail(40),
            mosquitto.log()
        )
    })?;

    let app = Client::connect(app_options(
        mosquitto.port(),
        files(pki.path(), "ca", Some("app")),
    ))
    .await?;
    let id = app
        .send(
            "tls-dev",
            CommandRequest::new("echo").json(serde_json::json!({"over": "tls"})),
        )
        .await?;
    let statuses = app.wait(&id, LIMIT).await?;
    let last = statuses.last().context("no status")?;
    assert_eq!(last.status, State::Succeeded, "{statuses:?}");
    let reply: serde_json::Value =
        rmp_serde::from_slice(last.reply.as_deref().unwrap_or_default())?;
    assert_eq!(reply, serde_json::json!({"over": "tls"}));
    app.close().await;
    host.terminate()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_or_no_certificate_is_a_clear_error() -> Result<()> {
    let pki = pki()?;
    let mosquitto = broker(pki.path())?;
    let short = |tls| ClientOptions {
        connect_timeout: Duration::from_secs(3),
        ..app_options(mosquitto.port(), tls)
    };

    // The app does not trust the broker's certificate.
    let error = Client::connect(short(files(pki.path(), "rogue-ca", Some("app"))))
        .await
        .expect_err("a broker signed by another CA is refused");
    let text = error.to_string();
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // The broker requires a client certificate the app does not have.
    let error = Client::connect(short(files(pki.path(), "ca", None)))
        .await
        .expect_err("no client certificate, no connection");
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );

    // Plain TCP to a TLS listener is not mistaken for a broker either.
    let plain = ClientOptions {
        connect_timeout: Duration::from_secs(3),
        ..ClientOptions::new(support::HOST, mosquitto.port())
    };
    assert!(Client::connect(plain).await.is_err());
    Ok(())
}
