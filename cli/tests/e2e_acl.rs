//! The shipped broker ACL (`examples/mosquitto/acl`) against a real
//! Mosquitto, with the device and the apps logging in as different users.
//!
//! A device takes the role of a command from the topic level it arrived on
//! (`relay/<device>/cmd/<role>`), never from the payload, so the whole
//! security model rests on the broker's ACL: only the broker decides who may
//! publish as admin. These tests prove the ACL users copy enforces it. The
//! file is compiled in with `include_str!` (a change to it is tested here),
//! next to a password file made with `mosquitto_passwd`; the broker config is
//! `cli/tests/mosquitto-acl.conf`. The device is a `relay run` child process
//! logging in as `dev-1`; apps are the `relay` CLI (`-u`, `$RELAY_PASSWORD`)
//! and, for a rogue device, a bare rumqttc client.
//!
//! Loopback only. Protocol waits are a few seconds; only a host's start (it
//! loads wasm plugins, on a busy 2-core machine) gets a longer bound.

#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use host_process::{relay_binary, HostConfig, HostProcess};
use rumqttc::{ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};
use support::Mosquitto;

/// The ACL users copy, byte for byte.
const ACL: &str = include_str!("../../examples/mosquitto/acl");
const TEMPLATE: &str = include_str!("mosquitto-acl.conf");

/// The device under test.
const DEVICE: &str = "dev-1";

/// Every broker user and its (test-only) password: two devices, three app users.
const USERS: [(&str, &str); 5] = [
    ("dev-1", "dev-1-secret"),
    ("dev-2", "dev-2-secret"),
    ("ops-admin", "ops-admin-secret"),
    ("ops-primary", "ops-primary-secret"),
    ("viewer", "viewer-secret"),
];

/// Bound of a host's start (plugin loading), not of any protocol step.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Bound of one protocol step (connect, SUBACK, PUBACK, a command's run).
const STEP: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_secs(1);

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("no test user {user:?}"))
}

/// `mosquitto_passwd`: on `PATH`, else Debian's `/usr/bin`.
fn mosquitto_passwd() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/mosquitto_passwd");
    if debian.is_file() {
        debian
    } else {
        PathBuf::from("mosquitto_passwd")
    }
}

/// Mosquitto with the shipped ACL and a password file holding [`USERS`].
struct Broker {
    mosquitto: Mosquitto,
    /// Holds `acl` and `passwd`; lives as long as the broker.
    _auth: tempfile::TempDir,
}

impl Broker {
    fn start() -> Result<Broker> {
        let auth = tempfile::Builder::new().prefix("relay-acl-").tempdir()?;
        std::fs::write(auth.path().join("acl"), ACL)?;
        let passwd = auth.path().join("passwd");
        for (i, (user, pass)) in USERS.iter().enumerate() {
            let mut cmd = Command::new(mosquitto_passwd());
            if i == 0 {
                cmd.arg("-c");
            }
            let out = cmd
                .arg("-b")
                .arg(&passwd)
                .args([user, pass])
                .stdin(Stdio::null())
                .output()
                .context("running mosquitto_passwd (apt-get install mosquitto)")?;
            ensure!(
                out.status.success(),
                "mosquitto_passwd for {user} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir = auth.path().to_str().context("temp dir is not UTF-8")?;
        let mosquitto = Mosquitto::start_with(TEMPLATE, &[("AUTH", dir)])?;
        Ok(Broker {
            mosquitto,
            _auth: auth,
        })
    }

    fn port(&self) -> u16 {
        self.mosquitto.port()
    }

    fn log(&self) -> String {
        self.mosquitto.log()
    }

    /// Whether Mosquitto logged that its ACL refused a publish on `topic`
    /// (waiting at most [`STEP`]: it writes its log file buffered).
    fn denied_publish(&self, topic: &str) -> bool {
        let quoted = format!("'{topic}'");
        let started = Instant::now();
        loop {
            let logged = self
                .log()
                .lines()
                .any(|l| l.contains("Denied PUBLISH") && l.contains(&quoted));
            if logged || started.elapsed() > STEP {
                return logged;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `relay run` host for `device`, logging in as the user of the same name
/// (`[broker] username`/`password` in its relay.toml), ready once its
/// command subscription is granted.
fn device(broker: &Broker, device: &str, plugins: &[&str]) -> Result<HostProcess> {
    let mut host = HostProcess::prepare(HostConfig::new(device, broker.port(), plugins))?;
    let path = host.config_path();
    let toml = std::fs::read_to_string(&path)?;
    ensure!(toml.contains("[broker]\n"), "no [broker] table in:\n{toml}");
    let toml = toml.replacen(
        "[broker]\n",
        &format!(
            "[broker]\nusername = \"{device}\"\npassword = \"{}\"\n",
            password(device)
        ),
        1,
    );
    std::fs::write(&path, toml)?;
    host.spawn()?;
    host.wait_ready(READY_LIMIT)
        .with_context(|| format!("broker log:\n{}", broker.log()))?;
    Ok(host)
}

/// `relay <sub> --port P --connect-timeout 5s <args>`, logged in as `user`
/// (`-u` and `$RELAY_PASSWORD`, as a user would) or anonymously.
fn relay(port: u16, sub: &str, user: Option<(&str, &str)>, args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(relay_binary());
    cmd.arg(sub)
        .args(["--port", &port.to_string(), "--connect-timeout", "5s"]);
    for var in [
        "RELAY_BROKER",
        "RELAY_HOST",
        "RELAY_PORT",
        "RELAY_USERNAME",
        "RELAY_PASSWORD",
        "RELAY_PREFIX",
        "RELAY_TLS_CA",
        "RELAY_TLS_CERT",
        "RELAY_TLS_KEY",
    ] {
        cmd.env_remove(var);
    }
    if let Some((name, pass)) = user {
        cmd.args(["-u", name]).env("RELAY_PASSWORD", pass);
    }
    cmd.args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `relay {sub}`"))
}

/// `relay send -d dev-1 <args>` as the test user `user`.
fn send(broker: &Broker, user: &str, args: &[&str]) -> Result<Output> {
    let mut all = vec!["-d", DEVICE];
    all.extend_from_slice(args);
    relay(broker.port(), "send", Some((user, password(user))), &all)
}

/// `relay status -d dev-1 <id>` as `ops-admin` (`_status` is admin-only).
fn status(broker: &Broker, id: &str) -> Result<Output> {
    let user = "ops-admin";
    relay(
        broker.port(),
        "status",
        Some((user, password(user))),
        &["-d", DEVICE, id, "--timeout", "5s"],
    )
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The last JSON line of `relay send --json --wait`: the final status.
fn last_json(output: &Output) -> Result<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("no output")?;
    serde_json::from_str(line).with_context(|| format!("not JSON: {line:?}"))
}

/// Asserts the exit code, with everything the process printed on failure.
fn expect_exit(output: &Output, code: i32, what: &str, broker: &Broker) -> Result<()> {
    ensure!(
        output.status.code() == Some(code),
        "{what}: expected exit {code}\n{}\nbroker log:\n{}",
        describe(output),
        broker.log()
    );
    Ok(())
}

/// An `ops-admin` command on the admin topic reaches the device and succeeds, with `-u` and with `--broker mqtt://ops-admin@host:port`.
#[test]
fn admin_user_runs_admin_commands() -> Result<()> {
    let broker = Broker::start()?;
    let _device = device(&broker, DEVICE, &["echo"])?;

    let out = send(
        &broker,
        "ops-admin",
        &[
            "echo",
            r#"{"a":1}"#,
            "--role",
            "admin",
            "--wait",
            "--json",
            "--timeout",
            "5s",
        ],
    )?;
    expect_exit(&out, 0, "ops-admin echo as admin", &broker)?;
    let last = last_json(&out)?;
    ensure!(last["status"] == "succeeded", "{}", describe(&out));
    ensure!(last["reply"] == json!({"a": 1}), "{}", describe(&out));

    // The URL form of the README, the password still from the environment.
    let url = format!("mqtt://ops-admin@{}:{}", support::HOST, broker.port());
    let out = Command::new(relay_binary())
        .args(["send", "--broker", &url, "-d", DEVICE, "echo", r#"{"b":2}"#])
        .args(["--wait", "--timeout", "5s", "--connect-timeout", "5s"])
        .env_remove("RELAY_USERNAME")
        .env_remove("RELAY_PREFIX")
        .env("RELAY_PASSWORD", password("ops-admin"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?;
    expect_exit(&out, 0, "ops-admin echo via --broker URL", &broker)?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("succeeded"),
        "{}",
        describe(&out)
    );
    Ok(())
}

/// A secondary-only `viewer`'s publish on the admin topic is acknowledged but dropped by the broker: the device never hears of it, and `relay send --wait` points at the ACL.
#[test]
fn viewer_cannot_publish_admin_commands() -> Result<()> {
    let broker = Broker::start()?;
    let _device = device(&broker, DEVICE, &["echo"])?;

    // Control: the viewer is logged in and may use its own role, so what
    // follows is the ACL at work, not a failed login or a dead device.
    let out = send(
        &broker,
        "viewer",
        &[
            "echo",
            "{}",
            "--role",
            "secondary",
            "--wait",
            "--timeout",
            "5s",
        ],
    )?;
    expect_exit(&out, 0, "viewer echo as secondary", &broker)?;

    let id = "acl-viewer-as-admin";
    let out = send(
        &broker,
        "viewer",
        &[
            "echo",
            "{}",
            "--role",
            "admin",
            "--id",
            id,
            "--wait",
            "--timeout",
            "3s",
        ],
    )?;
    expect_exit(&out, 1, "viewer echo as admin", &broker)?;
    // The id is printed once the broker acknowledged the publish: MQTT 3.1.1
    // acks a publish its ACL refused.
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == id,
        "the broker should have acknowledged the publish\n{}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("may have refused")
            && stderr.contains("ACL")
            && stderr.contains("relay/dev-1/cmd/admin"),
        "relay send should point at the ACL and the topic\n{}",
        describe(&out)
    );

    // The device has no record of it (exit 4), asked by a user who may ask.
    let out = status(&broker, id)?;
    expect_exit(&out, 4, "relay status of the dropped command", &broker)?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("no record"),
        "{}",
        describe(&out)
    );
    ensure!(
        broker.denied_publish("relay/dev-1/cmd/admin"),
        "Mosquitto did not log the denied publish; log:\n{}",
        broker.log()
    );
    Ok(())
}

/// An admin-only command (`counter reset`) sent by `ops-primary` on the primary topic it may use is `rejected` with `not_permitted`, and does not run.
#[test]
fn primary_user_cannot_run_admin_only_commands() -> Result<()> {
    let broker = Broker::start()?;
    let _device = device(&broker, DEVICE, &["counter"])?;
    let primary = |args: &[&str]| -> Result<Output> {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--role", "primary", "--wait", "--json", "--timeout", "5s"]);
        send(&broker, "ops-primary", &all)
    };

    // Control: primary may increment (roles admin, primary).
    let out = primary(&["increment", r#"{"by":2}"#])?;
    expect_exit(&out, 0, "ops-primary increment", &broker)?;
    ensure!(
        last_json(&out)?["reply"] == json!({"value": 2}),
        "{}",
        describe(&out)
    );

    // `reset` is admin-only: the device refuses it, exit 3.
    let out = primary(&["reset"])?;
    expect_exit(&out, 3, "ops-primary reset", &broker)?;
    let last = last_json(&out)?;
    ensure!(
        last["status"] == "rejected" && last["code"] == "not_permitted",
        "{}",
        describe(&out)
    );

    // The counter is untouched (`get` is open to all roles).
    let out = primary(&["get"])?;
    expect_exit(&out, 0, "ops-primary get", &broker)?;
    ensure!(
        last_json(&out)?["reply"] == json!({"value": 2}),
        "{}",
        describe(&out)
    );
    Ok(())
}

/// What a bare MQTT client saw, collected by a thread polling its connection.
#[derive(Debug, Default)]
struct Seen {
    connack: Option<ConnectReturnCode>,
    subacks: Vec<Vec<SubscribeReasonCode>>,
    /// Topics of the publishes it received.
    publishes: Vec<String>,
    pubacks: usize,
    errors: Vec<String>,
}

/// A bare rumqttc client (sync API), polled by its own thread until dropped.
struct Spy {
    client: rumqttc::Client,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spy {
    fn connect(port: u16, user: &str) -> Result<Spy> {
        let mut options = MqttOptions::new(format!("relay-acl-spy-{user}"), support::HOST, port);
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(5))
            .set_credentials(user, password(user));
        let (client, mut connection) = rumqttc::Client::new(options, 16);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let event = match connection.recv_timeout(Duration::from_millis(100)) {
                        Err(_) => continue, // nothing within 100 ms
                        Ok(Err(e)) => {
                            seen.lock().unwrap().errors.push(e.to_string());
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                        Ok(Ok(event)) => event,
                    };
                    let mut seen = seen.lock().unwrap();
                    match event {
                        Event::Incoming(Packet::ConnAck(ack)) => seen.connack = Some(ack.code),
                        Event::Incoming(Packet::SubAck(ack)) => seen.subacks.push(ack.return_codes),
                        Event::Incoming(Packet::Publish(p)) => seen.publishes.push(p.topic),
                        Event::Incoming(Packet::PubAck(_)) => seen.pubacks += 1,
                        _ => {}
                    }
                }
            })
        };
        let spy = Spy {
            client,
            seen,
            stop,
            thread: Some(thread),
        };
        spy.wait_for("the CONNACK", |s| s.connack.is_some())?;
        let code = spy.seen.lock().unwrap().connack;
        ensure!(
            code == Some(ConnectReturnCode::Success),
            "{user} was refused: {code:?}"
        );
        Ok(spy)
    }

    /// Waits (at most [`STEP`]) until `done` holds for what was seen.
    fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < STEP {
            if done(&self.seen.lock().unwrap()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "no {what} within {STEP:?}; seen: {:?}",
            self.seen.lock().unwrap()
        )
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A minimal command envelope: `{id, name, sent_at}`.
fn envelope(id: &str, name: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, 3).expect("vec write");
    rmp::encode::write_str(&mut out, "id").expect("vec write");
    rmp::encode::write_str(&mut out, id).expect("vec write");
    rmp::encode::write_str(&mut out, "name").expect("vec write");
    rmp::encode::write_str(&mut out, name).expect("vec write");
    rmp::encode::write_str(&mut out, "sent_at").expect("vec write");
    rmp::encode::write_uint(&mut out, now).expect("vec write");
    out
}

/// Device `dev-2` can neither read dev-1's commands (it receives nothing while dev-1 runs one) nor publish a command to dev-1 (it never arrives).
#[test]
fn device_cannot_read_or_send_another_devices_commands() -> Result<()> {
    let broker = Broker::start()?;
    let _device = device(&broker, DEVICE, &["echo"])?;
    let spy = Spy::connect(broker.port(), "dev-2")?;

    // dev-2 asks for dev-1's commands and, as a control, for its own.
    spy.client
        .subscribe("relay/dev-1/cmd/+", QoS::AtLeastOnce)?;
    spy.wait_for("SUBACK of relay/dev-1/cmd/+", |s| s.subacks.len() == 1)?;
    spy.client
        .subscribe("relay/dev-2/cmd/+", QoS::AtLeastOnce)?;
    spy.wait_for("SUBACK of relay/dev-2/cmd/+", |s| s.subacks.len() == 2)?;
    let subacks = spy.seen.lock().unwrap().subacks.clone();
    ensure!(
        matches!(subacks[1][..], [SubscribeReasonCode::Success(_)]),
        "dev-2 may subscribe to its own commands: {subacks:?}"
    );
    // Mosquitto 2.0 grants the foreign subscription (SUBACK success) and
    // applies the `read` rules to each message on delivery; other brokers
    // refuse it (0x80). Either is fine: what counts is what gets delivered.
    eprintln!("SUBACK of relay/dev-1/cmd/+ for dev-2: {:?}", subacks[0]);

    // ops-admin sends dev-1 a command, which dev-1 runs...
    let out = send(
        &broker,
        "ops-admin",
        &[
            "echo",
            r#"{"for":"dev-1 only"}"#,
            "--wait",
            "--json",
            "--timeout",
            "5s",
        ],
    )?;
    expect_exit(&out, 0, "ops-admin echo to dev-1", &broker)?;
    ensure!(
        last_json(&out)?["status"] == "succeeded",
        "{}",
        describe(&out)
    );
    // ...and one to dev-2, which the spy must receive: its link works, so
    // silence about dev-1's command is the ACL's doing.
    let out = relay(
        broker.port(),
        "send",
        Some(("ops-admin", password("ops-admin"))),
        &["-d", "dev-2", "echo", "{}"],
    )?;
    expect_exit(&out, 0, "ops-admin echo to dev-2", &broker)?;
    spy.wait_for("command for dev-2", |s| {
        s.publishes.iter().any(|t| t == "relay/dev-2/cmd/admin")
    })?;
    std::thread::sleep(QUIET);
    let publishes = spy.seen.lock().unwrap().publishes.clone();
    ensure!(
        publishes.iter().all(|t| t.starts_with("relay/dev-2/")),
        "dev-2 received another device's messages: {publishes:?}"
    );

    // dev-2 publishes a command to dev-1: acknowledged (MQTT 3.1.1), dropped.
    let id = "acl-from-dev-2";
    spy.client.publish(
        "relay/dev-1/cmd/admin",
        QoS::AtLeastOnce,
        false,
        envelope(id, "echo"),
    )?;
    spy.wait_for("PUBACK", |s| s.pubacks >= 1)?;
    std::thread::sleep(QUIET);
    let out = status(&broker, id)?;
    expect_exit(&out, 4, "relay status of dev-2's command", &broker)?;
    ensure!(
        broker.denied_publish("relay/dev-1/cmd/admin"),
        "Mosquitto did not log the denied publish; log:\n{}",
        broker.log()
    );
    Ok(())
}

/// A wrong password, an unknown user or no login at all is refused at connect: `relay send` exits 1, says the broker refused the user name or password, and sends nothing.
#[test]
fn wrong_credentials_are_a_clear_error() -> Result<()> {
    let broker = Broker::start()?;
    let cases: [(&str, Option<(&str, &str)>); 3] = [
        ("wrong password", Some(("ops-admin", "not-the-password"))),
        ("unknown user", Some(("intruder", "whatever"))),
        ("no login", None),
    ];
    for (what, user) in cases {
        let out = relay(broker.port(), "send", user, &["-d", DEVICE, "echo", "{}"])?;
        expect_exit(&out, 1, what, &broker)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            stderr.contains("refused the user name or password"),
            "{what}: unclear error\n{}",
            describe(&out)
        );
        ensure!(
            out.stdout.is_empty(),
            "{what}: printed an id, so it sent something\n{}",
            describe(&out)
        );
    }
    Ok(())
}
