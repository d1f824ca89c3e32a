//! `relay plugin push | list | rollback | remove --hub URL`: the same update
//! commands submitted through the hub, which stores each one before it
//! answers and forwards them in order when the device is online. Chunk ids
//! derive from the bundle's hash, so pushing the same bundle again after an
//! interruption submits the same requests (the hub recognises them).

use std::time::Duration;

use anyhow::{Context, Result};
use relay_client::hub::{HubClient, HubRequest, HubSubmit};
use serde_json::Value;

use crate::send::EXIT_NOT_SUCCEEDED;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Submits the chunk payloads in order and waits for the last one.
pub fn push(
    hub: &HubClient,
    device: &str,
    transfer: &str,
    chunks: &[Vec<u8>],
    timeout: Duration,
) -> Result<HubRequest> {
    runtime()?.block_on(async {
        let mut last = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut submit = HubSubmit::command(relay_core::ota::INSTALL).with_msgpack(chunk);
            submit.id = Some(format!("push-{}-{i}", &transfer[..16]));
            let stored = hub
                .submit(device, &submit)
                .await
                .with_context(|| format!("submitting chunk {} of {}", i + 1, chunks.len()))?;
            eprint!("\r{}/{} chunks stored at the hub", i + 1, chunks.len());
            last = Some(stored.id);
        }
        eprintln!();
        let id = last.context("no chunk")?;
        final_of(hub, device, &id, timeout).await
    })
}

/// Submits one update command and waits for its final state.
pub fn one(
    hub: &HubClient,
    device: &str,
    name: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<HubRequest> {
    runtime()?.block_on(async {
        let submit = HubSubmit::command(name).with_msgpack(payload);
        let stored = hub
            .submit(device, &submit)
            .await
            .context("submitting to the hub")?;
        final_of(hub, device, &stored.id, timeout).await
    })
}

async fn final_of(
    hub: &HubClient,
    device: &str,
    id: &str,
    timeout: Duration,
) -> Result<HubRequest> {
    let request = hub.get(device, id, Some(timeout)).await?;
    if !request.is_final() {
        anyhow::bail!(
            "{id} is still {} at the hub after {timeout:?}; the device runs it when it is online \
             (follow it with `relay status --hub ... -d {device} {id}`)",
            request.state
        );
    }
    Ok(request)
}

/// Prints the outcome; exits 3 when the device refused.
pub fn report(request: &HubRequest, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(request)?);
    } else if request.state == "succeeded" {
        println!(
            "{}",
            request
                .reply
                .as_ref()
                .map_or_else(|| "done".into(), Value::to_string)
        );
    } else {
        eprintln!(
            "{} {}: {}",
            request.state,
            request.code.as_deref().unwrap_or(""),
            request.message.as_deref().unwrap_or("")
        );
    }
    if request.state != "succeeded" {
        std::process::exit(EXIT_NOT_SUCCEEDED);
    }
    Ok(())
}
