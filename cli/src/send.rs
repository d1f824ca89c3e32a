//! `relay send`: publish one command to a device, print its id, and with
//! `--wait` follow its status transitions to the final one. Thin: argument
//! parsing and printing; the work is in [`crate::client`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use relay_core::plugin::Role;
use relay_core::status::{State, Status};

use relay_client::json::{msgpack_to_json, parse_json_payload};
use relay_client::{Client, ClientOptions, CommandRequest, Payload};
use relay_client::TlsFiles;

/// Exit code when the command ended `failed`, `rejected` or `expired`.
pub const EXIT_NOT_SUCCEEDED: i32 = 3;

/// How to reach the broker; shared by `send` and `watch`.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// MQTT broker host.
    #[arg(long, env = "RELAY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// MQTT broker port.
    #[arg(long, env = "RELAY_PORT", default_value_t = 1883)]
    pub port: u16,
    /// Topic prefix; must match the device's (`<prefix>/<device>/cmd/<role>`).
    #[arg(long, env = "RELAY_PREFIX", default_value = "relay")]
    pub prefix: String,
    /// Give up connecting after this long (e.g. `5s`, `500ms`).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// Connect with TLS, trusting this CA (PEM).
    #[arg(long, env = "RELAY_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Connect with TLS using the system's root certificates.
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls: bool,
    /// TLS client certificate (PEM), for brokers that require one.
    #[arg(long, env = "RELAY_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS client key (PEM).
    #[arg(long, env = "RELAY_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl BrokerArgs {
    pub fn options(&self) -> ClientOptions {
        let tls =
            (self.tls || self.tls_ca.is_some() || self.tls_cert.is_some()).then(|| TlsFiles {
                ca: self.tls_ca.clone(),
                client_cert: self.tls_cert.clone(),
                client_key: self.tls_key.clone(),
            });
        ClientOptions {
            prefix: self.prefix.clone(),
            connect_timeout: self.connect_timeout,
            tls,
            ..ClientOptions::new(self.host.clone(), self.port)
        }
    }
}

/// Send a command to a device and print its request id.
///
/// Exit status: 0 sent (with --wait: succeeded); 1 error (bad input, broker
/// unreachable, no final status in time); 2 usage error; 3 the command ended
/// failed, rejected or expired (with --wait).
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Device id (letters, digits, `-`, `_`).
    #[arg(long, short)]
    pub device: String,
    /// Command name (letters, digits, `-`, `_`; 1 to 64 characters).
    pub name: String,
    /// Payload as JSON (sent as msgpack), e.g. '{"delay_ms": 10}'. Omit for none.
    #[arg(value_name = "JSON")]
    pub payload: Option<String>,
    /// Role to send as: admin, primary or secondary (the topic level; the broker's ACL decides who may).
    #[arg(long, short, default_value = "admin", value_parser = parse_role)]
    pub role: Role,
    /// Send as an RPC: a reply is expected and the device never retries it.
    #[arg(long)]
    pub rpc: bool,
    /// Expire the command if it has not started this long after sending (e.g. `30s`, `5m`).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Use this request id instead of a generated one (1 to 64 printable ASCII characters, no spaces).
    #[arg(long)]
    pub id: Option<String>,
    /// Wait for the final status, printing every transition.
    #[arg(long, short)]
    pub wait: bool,
    /// With --wait: give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
    /// Print JSON lines instead of text: first `{"id", "device", "name"}`, then one object per status.
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

pub fn run(args: SendArgs) -> Result<()> {
    // Validate everything local before touching the network.
    let payload = match &args.payload {
        Some(text) => Payload::Msgpack(parse_json_payload(text).map_err(|e| anyhow!(e))?),
        None => Payload::None,
    };
    let mut request = CommandRequest::new(args.name.clone())
        .role(args.role)
        .rpc(args.rpc);
    request.payload = payload;
    request.ttl = args.ttl;
    request.id = args.id.clone();
    relay_client::build_envelope(&request, relay_client::unix_ms())?;
    relay_client::topics::validate_device(&args.device)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let final_state = runtime.block_on(send(&args, request))?;
    match final_state {
        Some(state) if state != State::Succeeded => {
            let _ = std::io::stdout().flush();
            std::process::exit(EXIT_NOT_SUCCEEDED)
        }
        _ => Ok(()),
    }
}

/// Returns the final state when waiting.
async fn send(args: &SendArgs, request: CommandRequest) -> Result<Option<State>> {
    let client = Client::connect(args.broker.options()).await?;
    let id = client
        .send(&args.device, request)
        .await
        .context("sending the command")?;
    let mut out = std::io::stdout().lock();
    if args.json_output {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "id": id, "device": args.device, "name": args.name })
        )?;
    } else {
        writeln!(out, "{id}")?;
    }
    out.flush()?;
    drop(out);
    if !args.wait {
        client.close().await;
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let result = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status = match client.next_status(&id, left).await {
            Ok(s) => s,
            Err(relay_client::ClientError::Timeout { .. }) => {
                break Err(anyhow!(
                    "no final status for {id} within {:?} (is the device running?)",
                    args.timeout
                ))
            }
            Err(e) => break Err(e.into()),
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            if args.json_output {
                status_json(&status).to_string()
            } else {
                status_line(&status)
            }
        )?;
        out.flush()?;
        if status.is_final() {
            break Ok(Some(status.status));
        }
    };
    client.close().await;
    result
}

/// One status as a JSON object; the reply decoded from msgpack.
pub fn status_json(status: &Status) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": status.id,
        "name": status.name,
        "status": status.status.as_str(),
        "attempt": status.attempt,
        "at": status.at,
    });
    if let Some(code) = &status.code {
        v["code"] = code.as_str().into();
    }
    if let Some(message) = &status.message {
        v["message"] = message.as_str().into();
    }
    if let Some(reply) = &status.reply {
        v["reply"] = msgpack_to_json(reply);
    }
    if let Some(next) = status.next_attempt_at {
        v["next_attempt_at"] = next.into();
    }
    v
}

/// One status as a line of text: `succeeded attempt=1 reply={"ok":true}`.
pub fn status_line(status: &Status) -> String {
    let mut line = format!("{} attempt={}", status.status, status.attempt);
    if let Some(code) = &status.code {
        line.push_str(&format!(" code={code}"));
    }
    if let Some(next) = status.next_attempt_at {
        line.push_str(&format!(" next_attempt_at={next}"));
    }
    if let Some(reply) = &status.reply {
        let shown = msgpack_to_json(reply).to_string();
        line.push_str(&format!(" reply={shown}"));
    }
    if let Some(message) = &status.message {
        line.push_str(&format!(" message={message:?}"));
    }
    line
}

/// `admin`, `primary` or `secondary`.
pub fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}; expected admin, primary or secondary"))
}

/// `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}; use e.g. 500ms, 30s, 5m, 1h"))?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("invalid duration unit in {s:?}; use ms, s, m or h")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::status::Code;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "-1s", "10d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles() {
        assert_eq!(parse_role("secondary"), Ok(Role::Secondary));
        assert!(parse_role("root")
            .unwrap_err()
            .contains("admin, primary or secondary"));
    }

    #[test]
    fn status_rendering() {
        let s =
            Status::new("id1", "echo", State::Failed, 5, 7).with_code(Code::HandlerError, "boom");
        assert_eq!(
            status_line(&s),
            "failed attempt=5 code=handler_error message=\"boom\""
        );
        let json = status_json(&s);
        assert_eq!(json["code"], "handler_error");
        assert_eq!(json["attempt"], 5);
    }
}
