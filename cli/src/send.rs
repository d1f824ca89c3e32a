//! `relay send`: publish one command to a device, print its id, and with
//! `--wait` follow its status transitions to the final one. Thin: argument
//! parsing and printing; the work is in [`relay_client`].

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use relay_client::json::parse_json_payload;
use relay_client::{Client, CommandRequest, Payload};
use relay_core::msgpack::{validate, DEFAULT_MAX_DEPTH};
use relay_core::plugin::Role;
use relay_core::status::State;

use crate::connect::ConnectArgs;
use crate::render::{status_json, status_line};
use crate::time::{parse_duration, short_duration};

/// Exit code when the command ended `failed`, `rejected` or `expired`.
pub const EXIT_NOT_SUCCEEDED: i32 = 3;

/// How a payload read from a file or stdin is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadFormat {
    /// JSON text, encoded to msgpack with the `$bin`/`$ext` markers of `docs/scenarios.md`.
    Json,
    /// Exactly one msgpack value, sent as is.
    Msgpack,
}

/// Send a command to a device and print its request id.
#[derive(Debug, Args)]
#[command(after_help = "\
Payload: JSON text ('{\"delay_ms\": 10}'), @FILE (JSON, or msgpack for *.msgpack / *.mpk
or --format msgpack), or - for stdin. Binary values are {\"$bin\": \"<hex>\"}.

Exit status: 0 sent (with --wait: succeeded); 1 error (bad input, broker unreachable,
no final status in time); 2 usage error; 3 the command ended failed, rejected or
expired (with --wait).

With --hub URL (or $RELAY_HUB) the request goes through the hub, which stores it
until the device has run it, even if the device is offline or has never connected;
the hub picks the role from your grant (--role does not apply), --ttl is the TTL,
and for --rpc the deadline (default: --timeout).

Examples:
  relay send -d dev-1 echo '{\"hello\": \"world\"}' --wait
  relay send --hub http://127.0.0.1:8080 --token $TOKEN -d dev-1 echo '{\"hi\": 1}' --wait
  relay send -d dev-1 deploy @deploy.json --ttl 10m --broker mqtts://ops@broker:8883
  cat payload.msgpack | relay send -d dev-1 echo - --format msgpack --rpc --json")]
pub struct SendArgs {
    /// Device id (letters, digits, `-`, `_`).
    #[arg(long, short)]
    pub device: String,
    /// Command name (letters, digits, `-`, `_`; 1 to 64 characters).
    pub name: String,
    /// Payload: JSON text, @FILE, or - (stdin); sent as msgpack. Omit for none.
    #[arg(value_name = "PAYLOAD")]
    pub payload: Option<String>,
    /// Encoding of a payload from @FILE or stdin [default: json; msgpack for *.msgpack, *.mpk].
    #[arg(long, value_enum)]
    pub format: Option<PayloadFormat>,
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
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub via: crate::hub_client::HubTarget,
}

pub fn run(args: SendArgs) -> Result<()> {
    // Validate everything local before touching the network.
    let payload = match &args.payload {
        Some(arg) => Payload::Msgpack(read_payload(arg, args.format, &mut std::io::stdin())?),
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
    if let Some(hub) = args.via.client() {
        return send_via_hub(&hub, &args, &request);
    }

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

/// `--hub`: the hub stores the request and picks the role topic.
fn send_via_hub(
    hub: &relay_client::hub::HubClient,
    args: &SendArgs,
    request: &CommandRequest,
) -> Result<()> {
    let payload = match &request.payload {
        Payload::Msgpack(bytes) => bytes.clone(),
        _ => Vec::new(),
    };
    let mut submit =
        relay_client::hub::HubSubmit::command(args.name.clone()).with_msgpack(&payload);
    submit.id = args.id.clone();
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if args.rpc {
        submit.kind = Some("rpc".into());
        submit.deadline_ms = Some(millis(args.ttl.unwrap_or(args.timeout)));
    } else {
        submit.ttl_ms = args.ttl.map(millis);
    }
    let send = crate::hub_client::HubSend {
        device: &args.device,
        submit,
        wait: args.wait.then_some(args.timeout),
        json: args.json_output,
    };
    match crate::hub_client::send(hub, send)? {
        Some(state) if state != "succeeded" => std::process::exit(EXIT_NOT_SUCCEEDED),
        _ => Ok(()),
    }
}

/// Returns the final state when waiting.
async fn send(args: &SendArgs, request: CommandRequest) -> Result<Option<State>> {
    let client = Client::connect(args.connect.options()?).await?;
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
    let mut seen_any = false;
    let result = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status = match client.next_status(&id, left).await {
            Ok(s) => s,
            Err(relay_client::ClientError::Timeout { .. }) => {
                break Err(no_final_status(args, &id, seen_any));
            }
            Err(e) => break Err(e.into()),
        };
        seen_any = true;
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

/// Why `--wait` ended without a final status, with what to check. No
/// status at all means the command never reached the device: it is offline,
/// or the broker dropped the publish (MQTT 3.1.1 cannot tell a client that
/// its ACL refused a publish: the broker still acknowledges it).
fn no_final_status(args: &SendArgs, id: &str, seen_any: bool) -> anyhow::Error {
    let waited = short_duration(args.timeout);
    if seen_any {
        return anyhow!(
            "no final status for {id} within {waited}: the device accepted it and is still \
             working on it (ask later with `relay status -d {} {id}`)",
            args.device
        );
    }
    let topic = format!("{}/{}/cmd/{}", args.connect.prefix, args.device, args.role);
    anyhow!(
        "no status for {id} within {waited}: is device {device:?} running and connected to \
         {broker}? If it is, the broker may have refused this publish: check that your user may \
         write to {topic} (the broker's ACL; MQTT 3.1.1 acknowledges a refused publish \
         without saying so). The command stays queued if the device is only offline.",
        device = args.device,
        broker = args.connect.describe(),
    )
}

/// The payload argument as msgpack: JSON text, `@file`, or `-` for stdin.
pub fn read_payload(
    arg: &str,
    format: Option<PayloadFormat>,
    stdin: &mut dyn Read,
) -> Result<Vec<u8>> {
    let (bytes, format) = if arg == "-" {
        let mut bytes = Vec::new();
        stdin
            .read_to_end(&mut bytes)
            .context("reading the payload from stdin")?;
        (bytes, format.unwrap_or(PayloadFormat::Json))
    } else if let Some(path) = arg.strip_prefix('@') {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading the payload from {path}"))?;
        let by_name = match Path::new(path).extension().and_then(|e| e.to_str()) {
            Some("msgpack" | "mpk") => PayloadFormat::Msgpack,
            _ => PayloadFormat::Json,
        };
        (bytes, format.unwrap_or(by_name))
    } else {
        if format == Some(PayloadFormat::Msgpack) {
            bail!("--format msgpack needs the payload from @FILE or - (stdin)");
        }
        (arg.as_bytes().to_vec(), PayloadFormat::Json)
    };
    match format {
        PayloadFormat::Json => {
            let text = std::str::from_utf8(&bytes).context("the JSON payload is not UTF-8")?;
            parse_json_payload(text).map_err(|e| anyhow!(e))
        }
        PayloadFormat::Msgpack => {
            validate(&bytes, DEFAULT_MAX_DEPTH)
                .map_err(|e| anyhow!("the msgpack payload is not one valid value: {e}"))?;
            Ok(bytes)
        }
    }
}

/// `admin`, `primary` or `secondary`.
pub fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}; expected admin, primary or secondary"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(parse_role("secondary"), Ok(Role::Secondary));
        assert!(parse_role("root")
            .unwrap_err()
            .contains("admin, primary or secondary"));
    }

    #[test]
    fn payloads_come_from_text_files_or_stdin() {
        let none: &mut dyn Read = &mut std::io::empty();
        assert_eq!(
            read_payload("{\"a\": 1}", None, none).unwrap(),
            [0x81, 0xa1, b'a', 1]
        );
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("p.json");
        std::fs::write(&json, "[true]").unwrap();
        let arg = format!("@{}", json.display());
        assert_eq!(read_payload(&arg, None, none).unwrap(), [0x91, 0xc3]);
        let raw = dir.path().join("p.msgpack");
        std::fs::write(&raw, [0x92, 0x01, 0x02]).unwrap();
        let arg = format!("@{}", raw.display());
        assert_eq!(read_payload(&arg, None, none).unwrap(), [0x92, 0x01, 0x02]);
        let mut stdin: &[u8] = &[0xc4, 0x01, 0xff];
        assert_eq!(
            read_payload("-", Some(PayloadFormat::Msgpack), &mut stdin).unwrap(),
            [0xc4, 0x01, 0xff]
        );
        let mut stdin: &[u8] = b"{\"$bin\": \"ff\"}";
        assert_eq!(
            read_payload("-", None, &mut stdin).unwrap(),
            [0xc4, 0x01, 0xff]
        );
    }

    #[test]
    fn bad_payloads_say_why() {
        let none: &mut dyn Read = &mut std::io::empty();
        let err = |arg: &str, f| {
            read_payload(arg, f, &mut std::io::empty())
                .unwrap_err()
                .to_string()
        };
        assert!(err("{oops", None).contains("line 1"));
        assert!(err("@/nonexistent/p.json", None).contains("/nonexistent/p.json"));
        assert!(err("[1]", Some(PayloadFormat::Msgpack)).contains("@FILE"));
        let mut truncated: &[u8] = &[0x92, 0x01];
        let e = read_payload("-", Some(PayloadFormat::Msgpack), &mut truncated).unwrap_err();
        assert!(e.to_string().contains("not one valid value"), "{e}");
        let _ = none;
    }
}
