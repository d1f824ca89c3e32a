//! One fleet run against a hub: connect N simulated devices, submit M
//! requests through the hub's HTTP API, wait until the hub reports every
//! one final, then check what it recorded and measure what it cost.
//!
//! Request `j` goes to device `j mod N` as its request number `k = j div
//! N` (id `r<k>`, payload `{"seq": k}`). Each device's requests are
//! submitted by one worker, one after the other, so the hub's submission
//! order for a device is known; workers (`concurrency` of them) share the
//! devices, so the hub sees that many submits at once. The checks, from
//! the hub's own list of each device's requests (`GET
//! /v1/devices/{d}/requests`, oldest last):
//!
//! - **nothing lost**: every request is there and `succeeded`;
//! - **order kept**: request `k`'s reply is `{"count": k + 1, "echo":
//!   {"seq": k}}`: the device ran it as its (k+1)-th command;
//! - **none ran twice**: the devices' [`Ledger`] counts M runs and no rerun.
//!
//! Completion is a long poll (`?wait_ms`) on each device's last request,
//! `concurrency` at a time; every wait is bounded by `timeout`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_client::hub::{HubClient, HubError, HubSubmit};
use serde_json::{json, Value as Json};
use tokio::task::JoinSet;

use crate::device::{DeviceConfig, Ledger, SimDevice};
use crate::hub::HubAccess;
use crate::procstat;
use crate::FleetError;

pub use crate::report::{DeviceCounts, ProcUse, Report, Verdict};

/// The command name every fleet request carries.
pub const COMMAND: &str = "fleet";
/// How long one device may take to connect and subscribe.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// One HTTP call's bound (a long poll asks for less).
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Examples of each problem kept for the report.
const EXAMPLES: usize = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub devices: usize,
    pub requests: usize,
    pub hub: HubAccess,
    pub device: DeviceConfig,
    /// Device ids are `<device_prefix>-<n>`.
    pub device_prefix: String,
    /// HTTP calls at once (submits, then long polls, then reads).
    pub concurrency: usize,
    /// Devices connecting at once.
    pub connect_concurrency: usize,
    /// Bound on submitting and waiting, together.
    pub timeout: Duration,
    /// The hub's process, for its memory and CPU figures.
    pub hub_pid: Option<u32>,
    /// The broker's process, likewise.
    pub broker_pid: Option<u32>,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl RunOptions {
    fn device_id(&self, n: usize) -> String {
        format!("{}-{n:05}", self.device_prefix)
    }

    /// How many requests device `n` gets.
    fn count_for(&self, n: usize) -> usize {
        self.requests / self.devices + usize::from(n < self.requests % self.devices)
    }
}

/// A device prefix unique to this run (so a hub that kept earlier runs'
/// requests does not mix them in): `fleet-<base36 unix ms>`.
pub fn unique_prefix() -> String {
    let mut n = relay_client::unix_ms();
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
    }
    format!("fleet-{}", digits.iter().rev().collect::<String>())
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Progress {
    submitted: AtomicU64,
    devices_final: AtomicU64,
}

/// Runs the fleet; `Err` only when the run could not be carried out (a
/// device that cannot connect, a hub that does not answer in time). What
/// the hub got wrong is in the report.
pub async fn run(options: RunOptions) -> Result<Report, FleetError> {
    if options.devices == 0 || options.concurrency == 0 {
        return Err(FleetError::Setup(
            "--devices and --concurrency must be at least 1".into(),
        ));
    }
    let options = Arc::new(options);
    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    let devices = connect_all(&options, &ledger).await?;
    let connect = started.elapsed();
    say(
        &options,
        format!("{} devices connected in {connect:.1?}", devices.len()),
    );

    let hub_before = options.hub_pid.map(procstat::read).transpose()?;
    let broker_before = options.broker_pid.map(procstat::read).transpose()?;
    let me_before = procstat::read(std::process::id())?;
    let hub = HubClient::new(options.hub.url.clone(), Some(options.hub.token.clone()));
    let progress = Arc::new(Progress::default());
    let (stop_progress, progress_task) = spawn_progress(&options, &progress, &ledger);
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + options.timeout;
    let submit_errors = submit_all(&options, &hub, &progress, deadline).await;
    let submit = t0.elapsed();
    let waited = wait_all(&options, &hub, &progress, deadline).await;
    let elapsed = t0.elapsed();
    let hub_after = options.hub_pid.map(procstat::read).transpose()?;
    let broker_after = options.broker_pid.map(procstat::read).transpose()?;
    let me_after = procstat::read(std::process::id())?;
    let _ = stop_progress.send(());
    let _ = progress_task.await;
    waited?;
    say(
        &options,
        format!("all final after {elapsed:.1?}; reading them back"),
    );

    let verdict = verify_all(&options).await?;
    stop_all(devices).await;
    let counts = DeviceCounts::of(&ledger);
    Ok(Report {
        devices: options.devices,
        requests: options.requests,
        concurrency: options.concurrency,
        connect_s: connect.as_secs_f64(),
        submit_s: submit.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        requests_per_s: options.requests as f64 / elapsed.as_secs_f64(),
        submit_errors,
        verdict,
        device: counts,
        hub: hub_before
            .zip(hub_after)
            .map(|(a, b)| ProcUse::between(a, b)),
        fleet: ProcUse::between(me_before, me_after),
        broker: broker_before
            .zip(broker_after)
            .map(|(a, b)| ProcUse::between(a, b)),
        hub_binary: None,
    })
}

fn say(options: &RunOptions, line: String) {
    if options.progress {
        eprintln!("relay-fleet: {line}");
    }
}

/// Starts every device, `connect_concurrency` at a time, and waits until
/// each has subscribed.
async fn connect_all(
    options: &Arc<RunOptions>,
    ledger: &Arc<Ledger>,
) -> Result<Vec<SimDevice>, FleetError> {
    let mut devices = Vec::with_capacity(options.devices);
    let batch = options.connect_concurrency.max(1);
    for first in (0..options.devices).step_by(batch) {
        let mut started = Vec::with_capacity(batch);
        for n in first..(first + batch).min(options.devices) {
            started.push(SimDevice::start(
                &options.device,
                &options.device_id(n),
                ledger.clone(),
            )?);
        }
        for device in &mut started {
            device.wait_ready(CONNECT_LIMIT).await?;
        }
        devices.extend(started);
        if devices.len() % 1_000 < batch && devices.len() < options.devices {
            say(options, format!("{} devices connected", devices.len()));
        }
    }
    Ok(devices)
}

/// Stops every device cleanly, all at once, bounded.
async fn stop_all(devices: Vec<SimDevice>) {
    let mut stopping = JoinSet::new();
    for device in devices {
        stopping.spawn(device.stop(Duration::from_secs(5)));
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while stopping.join_next().await.is_some() {}
    })
    .await;
}

fn spawn_progress(
    options: &Arc<RunOptions>,
    progress: &Arc<Progress>,
    ledger: &Arc<Ledger>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (options, progress, ledger) = (options.clone(), progress.clone(), ledger.clone());
    let task = tokio::spawn(async move {
        let t0 = Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(2));
        every.tick().await;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = every.tick() => {}
            }
            say(
                &options,
                format!(
                    "{:6.1} s: submitted {}/{}, ran {}, devices final {}/{}",
                    t0.elapsed().as_secs_f64(),
                    progress.submitted.load(Ordering::Relaxed),
                    options.requests,
                    Ledger::get(&ledger.runs),
                    progress.devices_final.load(Ordering::Relaxed),
                    options.devices,
                ),
            );
        }
    });
    (stop, task)
}

/// Submits every request; the ones that could not be submitted.
async fn submit_all(
    options: &Arc<RunOptions>,
    hub: &HubClient,
    progress: &Arc<Progress>,
    deadline: tokio::time::Instant,
) -> Vec<String> {
    let workers = options.concurrency.min(options.devices);
    let mut tasks = JoinSet::new();
    for w in 0..workers {
        let (options, hub, progress) = (options.clone(), hub.clone(), progress.clone());
        tasks.spawn(async move {
            let mine: Vec<usize> = (w..options.devices).step_by(workers).collect();
            let rounds = mine
                .iter()
                .map(|&n| options.count_for(n))
                .max()
                .unwrap_or(0);
            let mut errors = Vec::new();
            for k in 0..rounds {
                for &n in mine.iter().filter(|&&n| k < options.count_for(n)) {
                    let device = options.device_id(n);
                    match submit_one(&hub, &device, k, deadline).await {
                        Ok(()) => {
                            progress.submitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.push(format!("{device}/r{k}: {e}")),
                    }
                }
            }
            errors
        });
    }
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        errors.extend(done.unwrap_or_else(|e| vec![format!("a submit worker failed: {e}")]));
    }
    errors
}

/// One submit, retried with the same id (the hub answers a retry of a
/// stored request with 200) while the hub is unreachable or busy.
async fn submit_one(
    hub: &HubClient,
    device: &str,
    k: usize,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let submit = HubSubmit {
        id: Some(format!("r{k}")),
        payload: Some(json!({ "seq": k })),
        ..HubSubmit::command(COMMAND)
    };
    let mut delay = Duration::from_millis(50);
    for _ in 0..6 {
        if tokio::time::Instant::now() >= deadline {
            return Err("the run's timeout passed".into());
        }
        match tokio::time::timeout(CALL_LIMIT, hub.submit(device, &submit)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(HubError::Api {
                status, message, ..
            })) if status < 500 => return Err(format!("{status}: {message}")),
            Ok(Err(e)) => tracing::debug!(%device, k, error = %e, "fleet: submit retried"),
            Err(_) => tracing::debug!(%device, k, "fleet: submit timed out, retried"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    Err("no answer after 6 attempts".into())
}

/// Waits until each device's last request is final at the hub.
async fn wait_all(
    options: &Arc<RunOptions>,
    hub: &HubClient,
    progress: &Arc<Progress>,
    deadline: tokio::time::Instant,
) -> Result<(), FleetError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..options.concurrency.min(options.devices) {
        let (options, hub, progress, next) =
            (options.clone(), hub.clone(), progress.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= options.devices {
                    return Ok(());
                }
                let count = options.count_for(n);
                if count > 0 {
                    wait_final(&hub, &options.device_id(n), count - 1, deadline).await?;
                }
                progress.devices_final.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let done = done.unwrap_or_else(|e| Err(FleetError::Setup(format!("a waiter failed: {e}"))));
        if result.is_ok() {
            result = done;
        }
    }
    result
}

async fn wait_final(
    hub: &HubClient,
    device: &str,
    k: usize,
    deadline: tokio::time::Instant,
) -> Result<(), FleetError> {
    let id = format!("r{k}");
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(FleetError::Timeout {
                what: format!("request {device}/{id} final at the hub"),
                limit: CALL_LIMIT,
            });
        }
        let wait = left.min(Duration::from_secs(10));
        match tokio::time::timeout(wait + CALL_LIMIT, hub.get(device, &id, Some(wait))).await {
            Ok(Ok(request)) if request.is_final() => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(%device, %id, error = %e, "fleet: wait retried");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {}
        }
    }
}

/// Reads every device's requests back and checks them.
async fn verify_all(options: &Arc<RunOptions>) -> Result<Verdict, FleetError> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..options.concurrency.min(options.devices) {
        let (options, http, next) = (options.clone(), http.clone(), next.clone());
        tasks.spawn(async move {
            let mut verdict = Verdict::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= options.devices {
                    return Ok::<_, FleetError>(verdict);
                }
                let device = options.device_id(n);
                let listed = list(&http, &options.hub, &device).await?;
                verdict.check(&device, options.count_for(n), &listed, EXAMPLES);
            }
        });
    }
    let mut total = Verdict::default();
    while let Some(done) = tasks.join_next().await {
        let verdict =
            done.unwrap_or_else(|e| Err(FleetError::Setup(format!("a checker failed: {e}"))))?;
        total.merge(verdict, EXAMPLES);
    }
    Ok(total)
}

/// Every request of `device` at the hub, oldest first.
async fn list(
    http: &reqwest::Client,
    hub: &HubAccess,
    device: &str,
) -> Result<Vec<Json>, FleetError> {
    const PAGE: usize = 1_000;
    let url = format!("{}/v1/devices/{device}/requests", hub.url);
    let mut all = Vec::new();
    for page in 0.. {
        let offset = (page * PAGE).to_string();
        let call = http
            .get(&url)
            .bearer_auth(&hub.token)
            .query(&[("limit", PAGE.to_string().as_str()), ("offset", &offset)])
            .timeout(CALL_LIMIT)
            .send();
        let response = call.await.map_err(|source| FleetError::Http {
            url: url.clone(),
            source,
        })?;
        let status = response.status();
        let body: Json = response.json().await.map_err(|source| FleetError::Http {
            url: url.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(FleetError::Api {
                what: format!("the list of {device}'s requests"),
                status: status.as_u16(),
                body: body.to_string(),
            });
        }
        let requests = body["requests"].as_array().cloned().unwrap_or_default();
        let last = requests.len() < PAGE;
        all.extend(requests);
        if last {
            break;
        }
    }
    all.reverse();
    Ok(all)
}
