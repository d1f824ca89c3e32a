//! `relay send --hub URL` and `relay status --hub URL`: the same commands,
//! through the hub's HTTP API instead of straight over MQTT. The hub stores
//! the request before answering, picks the role topic from the user's grant
//! (so `--role` does not apply), and answers status queries from its own
//! record, also while the device is offline.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use relay_client::hub::{HubClient, HubError, HubRequest, HubSubmit};

/// Where the hub is.
#[derive(Debug, Clone, Default, Args)]
pub struct HubTarget {
    /// Go through this hub (`http://host:8080`) instead of straight to the broker.
    #[arg(long, env = "RELAY_HUB")]
    pub hub: Option<String>,
    /// The hub user's token (see `relay hub token`).
    #[arg(long, env = "RELAY_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl HubTarget {
    pub fn client(&self) -> Option<HubClient> {
        self.hub
            .as_ref()
            .map(|url| HubClient::new(url.clone(), self.token.clone()))
    }
}

/// What `send` asks of the hub.
pub struct HubSend<'a> {
    pub device: &'a str,
    pub submit: HubSubmit,
    /// Wait until final, at most this long.
    pub wait: Option<Duration>,
    pub json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn line(r: &HubRequest) -> String {
    let mut text = format!("{} {}", r.id, r.state);
    if let Some(code) = &r.code {
        text += &format!(" [{code}]");
    }
    if let Some(message) = &r.message {
        text += &format!(" {message}");
    }
    if let Some(reply) = &r.reply {
        text += &format!(" reply={reply}");
    }
    text
}

fn print(r: &HubRequest, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    } else {
        writeln!(out, "{}", line(r))?;
    }
    out.flush()?;
    Ok(())
}

/// Submits through the hub; the final state when waiting.
pub fn send(hub: &HubClient, send: HubSend<'_>) -> Result<Option<String>> {
    runtime()?.block_on(async {
        let stored = hub
            .submit_and_wait(send.device, &send.submit, send.wait)
            .await
            .context("submitting to the hub")?;
        match send.wait {
            None => {
                if send.json {
                    print(&stored, true)?;
                } else {
                    println!("{}", stored.id);
                }
                Ok(None)
            }
            Some(_) => {
                print(&stored, send.json)?;
                if !stored.is_final() {
                    anyhow::bail!(
                        "{} is still {} at the hub; ask later with `relay status --hub ... -d {} {}`",
                        stored.id,
                        stored.state,
                        send.device,
                        stored.id
                    );
                }
                Ok(Some(stored.state))
            }
        }
    })
}

/// The hub's record of a request; `Ok(None)` if it has none.
pub fn status(hub: &HubClient, device: &str, id: &str, json: bool) -> Result<Option<()>> {
    runtime()?.block_on(async {
        match hub.get(device, id, None).await {
            Ok(request) => {
                print(&request, json)?;
                if !json {
                    for step in request.history.iter().flatten() {
                        println!(
                            "  {} {}{}",
                            step["at"],
                            step["state"].as_str().unwrap_or("?"),
                            step["code"]
                                .as_str()
                                .map(|c| format!(" [{c}]"))
                                .unwrap_or_default()
                        );
                    }
                }
                Ok(Some(()))
            }
            Err(HubError::Api { code, .. }) if code == "not_found" => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
}
