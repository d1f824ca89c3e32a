//! The networked emulated device, end to end (`cargo xtask qemu`, after the
//! scripted run): `relay-qemu-net` in QEMU with a virtio-net card on user
//! networking, a real Mosquitto on a free loopback port, and the `relay`
//! CLI as the app. It checks what a user of the device would:
//!
//! 1. a command runs on the device's wasmi plugin and its reply comes back;
//! 2. a command failing transiently is retried (5 s later) and succeeds;
//! 3. a role the command does not allow is rejected with its code;
//! 4. a command sent twice with one id runs once, and the built-in queries
//!    (`relay status`, `relay plugin list`) answer;
//! 5. a power cut (QEMU killed) while a command waits for its retry: the
//!    journal, in a host file through semihosting, replays at the restart,
//!    the command succeeds at its next attempts, and a redelivered id still
//!    gets its recorded status;
//! 6. a command sent while the device is off waits in the broker's
//!    persistent session and runs when the device is back;
//! 7. plugin updates over the air (`qemu_ota.rs`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

pub(super) const DEVICE: &str = "qemu-net";
/// From connecting to the first status; generous for a loaded CI machine.
const WAIT: &str = "60s";
const CONNECT_LIMIT: Duration = Duration::from_secs(90);

/// A child process killed when this goes out of scope.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The device in QEMU and the lines it printed.
pub(super) struct Emulated {
    _qemu: Running,
    lines: Receiver<String>,
    pub(super) log: Vec<String>,
}

/// What the device boots with: its program, the broker, and its flash (the
/// journal and the update partition, host files that outlive QEMU).
pub(super) struct Boot {
    pub(super) elf: PathBuf,
    pub(super) port: u16,
    pub(super) journal: PathBuf,
    pub(super) updates: PathBuf,
    /// The public key (hex) update bundles must be signed with.
    pub(super) trust: String,
}

impl Boot {
    pub(super) fn start(&self) -> Result<Emulated> {
        Emulated::start(self)
    }
}

impl Emulated {
    fn start(boot: &Boot) -> Result<Emulated> {
        let (elf, port, journal) = (&boot.elf, boot.port, &boot.journal);
        let mut cmd = super::qemu::virt_machine();
        cmd.args(["-semihosting-config", "enable=on,target=native"])
            .args([
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-device,netdev=net0",
            ])
            .arg("-append")
            .arg(format!(
                "broker=10.0.2.2:{port} device={DEVICE} journal={} updates={} trust={}",
                journal.display(),
                boot.updates.display(),
                boot.trust
            ))
            .arg("-kernel")
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        eprintln!("xtask: running {cmd:?}");
        let mut child = cmd
            .spawn()
            .context("starting the networked emulated device")?;
        let stdout = child.stdout.take().context("its stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut device = Emulated {
            _qemu: Running(child),
            lines,
            log: Vec::new(),
        };
        device.wait_for("relay: connected")?;
        Ok(device)
    }

    pub(super) fn wait_for(&mut self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + CONNECT_LIMIT;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        bail!(
            "the emulated device never printed {needle:?}; its output:\n{}",
            self.log.join("\n")
        )
    }
}

/// Runs the end-to-end checks; `relay` is the CLI binary.
pub(super) fn qemu_net(elf: &Path, relay: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("relay-qemu-net-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let result = checks(elf, relay, &dir);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn checks(elf: &Path, relay: &Path, dir: &Path) -> Result<()> {
    let port = free_port()?;
    let _broker = mosquitto(dir, port)?;
    let app = App {
        relay: relay.to_path_buf(),
        port,
    };
    // The device's flash, erased, in files that outlive QEMU: a 64 KiB
    // journal and the update partition (three 64 KiB bundle regions and
    // the state's two sectors).
    let journal = dir.join("journal.bin");
    fs::write(&journal, vec![0xffu8; 64 * 1024])?;
    let updates = dir.join("updates.bin");
    fs::write(&updates, vec![0xffu8; 3 * 64 * 1024 + 2 * 4096])?;
    let keys = super::qemu_ota::Keys::new(&app, dir)?;
    let boot = Boot {
        elf: elf.to_path_buf(),
        port,
        journal: journal.clone(),
        updates,
        trust: keys.public.clone(),
    };
    let mut device = boot.start()?;
    println!("ok - the networked emulated device connects to Mosquitto on the host");

    let payload = json!({"hello": "qemu"});
    let last = app.send("echo", &payload, &[])?;
    ensure!(
        last["status"] == "succeeded" && last["reply"] == payload,
        "echo: {last}"
    );
    ensure!(
        last["plugin"]
            .as_str()
            .is_some_and(|p| p.starts_with("echo@")),
        "the status names the plugin that ran it: {last}"
    );
    println!("ok - echo runs on the device's wasmi plugin and replies over MQTT");

    let config = json!({"version": "1.2.3", "replicas": 2, "timeout_s": 30, "fail_times": 1});
    let last = app.send("deploy", &config, &[])?;
    ensure!(
        last["status"] == "succeeded" && last["attempt"] == 2,
        "deploy failing once: {last}"
    );
    println!("ok - a command failing transiently is retried and succeeds at attempt 2");

    let last = app.send("deploy", &config, &["--role", "secondary"])?;
    ensure!(
        last["status"] == "rejected" && last["code"] == "not_permitted",
        "deploy as secondary: {last}"
    );
    println!("ok - a role the command does not allow is rejected (not_permitted)");

    let payload = json!({"once": true});
    let first = app.send("echo", &payload, &["--id", "qemu-net-dedupe-1"])?;
    let again = app.send("echo", &payload, &["--id", "qemu-net-dedupe-1"])?;
    ensure!(
        first["status"] == "succeeded" && again == first,
        "a redelivered id must get its recorded status, not a new run:\n{first}\n{again}"
    );
    println!("ok - a command sent twice with one id runs once (the same final status twice)");

    let status = app.query(&["status"], &["qemu-net-dedupe-1"])?;
    ensure!(
        status["status"] == "succeeded" && status["id"] == "qemu-net-dedupe-1",
        "relay status of a finished command: {status}"
    );
    let listed = app.query(&["plugin", "list"], &[])?;
    let names: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        names.contains(&"echo") && names.contains(&"deploy"),
        "relay plugin list: {listed}"
    );
    println!("ok - the built-in queries answer: relay status and relay plugin list");

    // Power cut while a command waits for its retry: QEMU is killed, the
    // journal file is what the flash held, and the restarted device goes on.
    let config = json!({"version": "2.0.0", "replicas": 1, "timeout_s": 30, "fail_times": 2});
    let mut waiting = app.spawn_send("deploy", &config)?;
    let statuses = lines_of(&mut waiting)?;
    wait_for_line(&statuses, "\"retrying\"")?;
    drop(device);
    device = boot.start()?;
    ensure!(
        device
            .log
            .iter()
            .any(|l| l.contains("journal replayed") && !l.contains("(0 records)")),
        "the restarted device did not replay its journal:\n{}",
        device.log.join("\n")
    );
    let last = last_status(waiting, &statuses, Duration::from_secs(120))?;
    ensure!(
        last["status"] == "succeeded" && last["attempt"] == 3,
        "deploy across a power cut: {last}"
    );
    println!("ok - QEMU killed during a retry wait: the journal replays and the command succeeds at attempt 3");
    let replayed = app.send(
        "echo",
        &json!({"once": true}),
        &["--id", "qemu-net-dedupe-1"],
    )?;
    ensure!(
        replayed == first,
        "after the power cut a redelivered id must get its recorded status:\n{first}\n{replayed}"
    );
    println!("ok - after the power cut a redelivered id still gets its recorded status");

    drop(device);
    let payload = json!({"sent": "while off"});
    let mut waiting = app.spawn_send("echo", &payload)?;
    let mut first = String::new();
    BufReader::new(waiting.0.stdout.as_mut().context("relay send's stdout")?)
        .read_line(&mut first)?;
    ensure!(first.contains("\"id\""), "relay send did not send: {first}");
    device = boot.start()?;
    let output = wait_output(waiting, Duration::from_secs(120))?;
    let last = last_json(&output)?;
    ensure!(
        last["status"] == "succeeded" && last["reply"] == payload,
        "echo sent while the device was off: {last}\n{}",
        device.log.join("\n")
    );
    println!("ok - a command sent while the device was off runs when it is back");
    super::qemu_ota::checks(&app, &boot, &keys, device, dir)
}

/// The `relay` CLI against the test's broker.
pub(super) struct App {
    pub(super) relay: PathBuf,
    port: u16,
}

impl App {
    fn command(&self, name: &str, payload: &Value, extra: &[&str]) -> Command {
        let mut cmd = Command::new(&self.relay);
        cmd.args(["send", "--broker"])
            .arg(format!("mqtt://127.0.0.1:{}", self.port))
            .args(["-d", DEVICE, name])
            .arg(payload.to_string())
            .args(["--wait", "--timeout", WAIT, "--json"])
            .args(extra);
        cmd
    }

    /// Sends and waits: the final status (`relay send` exits non-zero
    /// when it is not `succeeded`, which some checks expect).
    pub(super) fn send(&self, name: &str, payload: &Value, extra: &[&str]) -> Result<Value> {
        let out = self
            .command(name, payload, extra)
            .output()
            .with_context(|| format!("running {}", self.relay.display()))?;
        let status = last_json(&String::from_utf8_lossy(&out.stdout))
            .ok()
            .filter(|v| v.get("status").is_some());
        status.with_context(|| {
            format!(
                "relay send {name} gave no final status ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `relay <command> ... --json <positional>` against the device: its
    /// one JSON answer.
    pub(super) fn query(&self, command: &[&str], positional: &[&str]) -> Result<Value> {
        let out = Command::new(&self.relay)
            .args(command)
            .arg("--broker")
            .arg(format!("mqtt://127.0.0.1:{}", self.port))
            .args(["-d", DEVICE, "--json", "--timeout", "30s"])
            .args(positional)
            .output()
            .with_context(|| format!("running {}", self.relay.display()))?;
        ensure!(
            out.status.success(),
            "relay {command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last_json(&String::from_utf8_lossy(&out.stdout))
    }

    fn spawn_send(&self, name: &str, payload: &Value) -> Result<Running> {
        let child = self
            .command(name, payload, &[])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.relay.display()))?;
        Ok(Running(child))
    }
}

/// The lines a running `relay send` prints, as they come.
fn lines_of(running: &mut Running) -> Result<Receiver<String>> {
    let stdout = running.0.stdout.take().context("relay send's stdout")?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn wait_for_line(lines: &Receiver<String>, needle: &str) -> Result<String> {
    let deadline = Instant::now() + CONNECT_LIMIT;
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(needle) => return Ok(line),
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    bail!("relay send never printed {needle:?}")
}

/// Waits for `running` to exit; the last status it printed on `lines`.
fn last_status(mut running: Running, lines: &Receiver<String>, limit: Duration) -> Result<Value> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        while let Ok(line) = lines.try_recv() {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                if value.get("status").is_some() {
                    last = Some(value);
                }
            }
        }
        if running.0.try_wait()?.is_some() {
            // The reader thread may still hold the last lines.
            for line in lines.iter() {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    if value.get("status").is_some() {
                        last = Some(value);
                    }
                }
            }
            return last.context("relay send printed no status");
        }
        ensure!(
            Instant::now() < deadline,
            "relay send did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_output(mut running: Running, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = running.0.try_wait()? {
            let mut out = String::new();
            std::io::Read::read_to_string(running.0.stdout.as_mut().context("stdout")?, &mut out)?;
            ensure!(status.success(), "relay send failed ({status}): {out}");
            return Ok(out);
        }
        ensure!(
            Instant::now() < deadline,
            "relay send did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last JSON line `relay send --json --wait` printed: the final status.
fn last_json(out: &str) -> Result<Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("no output")?;
    serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Mosquitto on `port` (loopback), with its config and log in `dir`.
fn mosquitto(dir: &Path, port: u16) -> Result<Running> {
    let conf = dir.join("mosquitto.conf");
    fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )?;
    let log = fs::File::create(dir.join("mosquitto.log"))?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting mosquitto (Debian: apt-get install -y mosquitto)")?;
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(running)
}
