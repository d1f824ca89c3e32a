//! The hub's web page in a real browser: headless Chromium (Debian's
//! `chromium`, driven over the DevTools protocol by `support/cdp.rs`)
//! against a `relay hub serve` child process, a real Mosquitto and a
//! `relay run` device with the `echo` plugin.
//!
//! The test does what a person does: opens the page, is refused with a
//! wrong token and sees the error, enters the right one, sees the device
//! online, selects it and sees its plugins, sends `echo` through the form,
//! and sees the request end `succeeded` with its reply, through the live
//! event stream (the page reads the request list only when the stream
//! says something changed). Then it starts a rollout of a bundle the device
//! does not trust and sees the page follow it to its end, with the device's
//! refusal code. Then it saves a screenshot to
//! `target/test-artifacts/hub-page.png` (`docs/img/hub-page.png` is one).
//!
//! A missing `chromium` fails the test (CI installs it); it is never
//! skipped. Every wait is bounded by `cdp::LIMIT`.

#[path = "support/cdp.rs"]
mod cdp;
#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/hub.rs"]
mod hub;
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cdp::{Chromium, Page};
use host_process::{HostConfig, HostProcess};
use hub::{HubProcess, ADMIN};
use serde_json::{json, Value as Json};
use support::Mosquitto;

const DEVICE: &str = "web-dev";

/// A JS string literal for `text`.
fn js(text: &str) -> String {
    Json::from(text).to_string()
}

/// Polls the hub (bounded) until it lists `device` online.
fn wait_online(hub: &HubProcess, device: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let list = hub.admin("GET", "/v1/devices", None, 200)?;
        let online = list["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["device"] == device && d["online"] == true);
        if online {
            return Ok(());
        }
        if started.elapsed() > cdp::LIMIT {
            bail!(
                "the hub did not see {device} online within {:?}: {list}",
                cdp::LIMIT
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn enter_token(page: &mut Page, token: &str) -> Result<()> {
    page.eval(&format!(
        "document.getElementById('token').value = {}; \
         document.getElementById('token-form').requestSubmit(); true",
        js(token)
    ))?;
    Ok(())
}

fn drive(page: &mut Page, hub: &HubProcess) -> Result<()> {
    page.navigate(&format!("http://127.0.0.1:{}/", hub.port))?;
    let title = page.eval("document.title")?;
    ensure!(title == "Relay hub", "title {title}");

    // A wrong token: the hub's 401 is shown with its code.
    enter_token(page, "not-a-token")?;
    page.wait_for(
        "the refusal of a wrong token",
        "document.getElementById('error').dataset.code === 'unauthorized' && \
         document.getElementById('error').innerText",
    )?;

    // The right one: the device is listed online, seen a moment ago.
    enter_token(page, ADMIN)?;
    let row = format!("#devices tr[data-device={}]", js(DEVICE));
    let text = page.wait_for(
        "the device listed online",
        &format!(
            "(() => {{ const r = document.querySelector({}); \
             return r && r.dataset.online === 'true' && r.innerText; }})()",
            js(&row)
        ),
    )?;
    let text = text.as_str().unwrap_or_default();
    ensure!(text.contains("online"), "device row: {text:?}");
    ensure!(
        text.contains("just now") || text.contains(" s ago"),
        "the last-seen time is relative: {text:?}"
    );
    let stored = page.eval("localStorage.getItem('relay-hub-token')")?;
    ensure!(
        stored == ADMIN,
        "the token is kept in localStorage: {stored}"
    );
    ensure!(
        page.eval("document.getElementById('error').classList.contains('shown')")? == false,
        "a good token clears the error"
    );

    // Select it: the plugins come from the device (`_plugins`), and the
    // event stream opens.
    page.eval(&format!(
        "document.querySelector({}).click(); true",
        js(&row)
    ))?;
    let plugins = page.wait_for(
        "the device's plugins",
        "document.getElementById('plugins').dataset.state === 'loaded' && \
         document.getElementById('plugins').innerText",
    )?;
    let plugins = plugins.as_str().unwrap_or_default();
    ensure!(plugins.contains("echo"), "plugins: {plugins:?}");
    page.wait_for(
        "the live stream to open",
        "document.getElementById('live').dataset.state === 'open'",
    )?;
    let events_before = live_events(page)?;

    // Send `echo` through the form.
    page.eval(
        "document.getElementById('cmd-name').value = 'echo'; \
         document.getElementById('cmd-kind').value = 'command'; \
         document.getElementById('cmd-payload').value = '{\"hello\": \"from the web page\"}'; \
         document.getElementById('cmd-send').click(); true",
    )?;
    let id = page.wait_for(
        "the new request to be shown",
        "document.getElementById('send-result').dataset.id",
    )?;
    let id = id.as_str().context("request id")?.to_owned();
    let row = format!("#requests tr[data-id={}]", js(&id));
    page.wait_for(
        "its final status in the list",
        &format!(
            "(() => {{ const r = document.querySelector({}); return r && \
             r.querySelector('[data-field=state]').innerText.trim() === 'succeeded'; }})()",
            js(&row)
        ),
    )?;
    let result = page.wait_for(
        "its final status and reply under the form",
        "document.getElementById('send-result').dataset.state === 'succeeded' && \
         document.getElementById('send-detail') && \
         document.getElementById('send-result').innerText",
    )?;
    // `succeeded` reached the page as a `state` event, not only by a read.
    page.wait_for(
        "the `succeeded` event on the stream",
        "document.getElementById('send-result').dataset.live === 'succeeded'",
    )?;
    let result = result.as_str().unwrap_or_default();
    ensure!(
        result.contains(&id)
            && result.contains("succeeded")
            && result.contains("from the web page"),
        "send result: {result:?}"
    );
    // queued, sent, accepted, running, succeeded came as events.
    let events = live_events(page)? - events_before;
    ensure!(events >= 3, "only {events} state events reached the page");
    ensure!(
        page.eval("document.getElementById('error').classList.contains('shown')")? == false,
        "no error shown: {}",
        page.eval("document.getElementById('error').innerText")?
    );

    // The page showed what the hub holds.
    let view = hub.admin(
        "GET",
        &format!("/v1/devices/{DEVICE}/requests/{id}"),
        None,
        200,
    )?;
    ensure!(view["state"] == "succeeded", "{view}");
    ensure!(
        view["reply"] == json!({"hello": "from the web page"}),
        "{view}"
    );
    follow_a_rollout(page, hub)
}

/// A rollout of a bundle the device does not trust: the page lists it,
/// follows it to its end, and shows the device's refusal code.
fn follow_a_rollout(page: &mut Page, hub: &HubProcess) -> Result<()> {
    use base64::Engine as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let manifest = relay_core::ota::Manifest {
        name: "echo".into(),
        version: "9.9.9".into(),
        world: relay_core::ota::WORLD.into(),
        sha256: [0; 32],
        size: 0,
        commands: Vec::new(),
        min_host: "0.1.0".into(),
        key_id: String::new(),
        allow_downgrade: false,
        signed_at: 1,
    };
    let bundle = relay_core::ota::sign_bundle(manifest, b"\0asm\x01\0\0\0", &key);
    let body = json!({
        "bundle_base64": base64::engine::general_purpose::STANDARD.encode(&bundle),
        "devices": [DEVICE],
        "rate_per_min": 60,
        "abort_failed_percent": 100,
        "min_executed": 1,
    });
    let created = hub.admin("POST", "/v1/rollouts", Some(&body), 201)?;
    let id = created["id"].as_str().context("rollout id")?.to_string();
    page.eval("document.getElementById('rollouts-refresh').click(); true")?;
    let row = format!("#rollouts tr[data-rollout={}]", js(&id));
    page.wait_for(
        "the rollout listed, ended, with its one device failed",
        &format!(
            "(() => {{ const r = document.querySelector({}); return r && \
             r.dataset.state !== 'running' && r.dataset.failed === '1' && \
             r.innerText.includes('echo@9.9.9'); }})()",
            js(&row)
        ),
    )?;
    page.eval(&format!(
        "document.querySelector({}).click(); true",
        js(&row)
    ))?;
    let device = page.wait_for(
        "the device's refusal in the rollout's detail",
        &format!(
            "(() => {{ const r = document.querySelector('#rollout-devices tr[data-device={}]'); \
             return r && r.dataset.state === 'failed' && r.innerText; }})()",
            DEVICE
        ),
    )?;
    let device = device.as_str().unwrap_or_default();
    ensure!(
        device.contains("bundle_unknown_key"),
        "rollout device row: {device:?}"
    );
    Ok(())
}

fn live_events(page: &mut Page) -> Result<u64> {
    let n = page.eval("Number(document.getElementById('live').dataset.events)")?;
    n.as_u64().context("data-events")
}

#[test]
fn the_page_shows_a_device_and_follows_a_command_it_sent_to_succeeded() -> Result<()> {
    // Before anything else: no browser is a failure with a clear message.
    cdp::find_chromium()?;
    let broker = Mosquitto::start()?;
    let hub = HubProcess::start(broker.port())?;
    let host = HostProcess::start(HostConfig::new(DEVICE, broker.port(), &["echo"]))?;
    wait_online(&hub, DEVICE)?;

    let chromium = Chromium::start()?;
    let mut page = chromium.page()?;
    if let Err(e) = drive(&mut page, &hub) {
        let shot = page
            .screenshot_png(1280)
            .and_then(|png| cdp::save_artifact("hub-page-failed.png", &png));
        bail!(
            "{e:#}\nscreenshot: {shot:?}\nhub log:\n{}\nhost log:\n{}\nchromium log:\n{}",
            hub.log(),
            host.log_tail(40),
            chromium.log()
        );
    }

    let png = page.screenshot_png(1280)?;
    let path = cdp::save_artifact("hub-page.png", &png)?;
    let (width, height) = cdp::png_size(&png)?;
    println!(
        "screenshot: {} ({width}x{height}, {} bytes)",
        path.display(),
        png.len()
    );
    ensure!(
        width == 1280 && height >= 600,
        "screenshot is {width}x{height}"
    );
    // A blank page of this size compresses to a few KiB; text and tables
    // take tens.
    ensure!(png.len() > 20_000, "screenshot is only {} bytes", png.len());
    // The same page on a phone-sized viewport (one column, tables scroll).
    let narrow = page.screenshot_png(420)?;
    ensure!(cdp::png_size(&narrow)?.0 == 420, "narrow screenshot");
    cdp::save_artifact("hub-page-narrow.png", &narrow)?;
    drop(host);
    Ok(())
}
