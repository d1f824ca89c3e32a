//! What a fleet run found and what it cost: the checks of the hub's record
//! ([`Verdict`]), the devices' own counts, and the time, memory and CPU of
//! the processes involved. Printed as text, or as JSON with `--json`.

use std::fmt;
use std::sync::atomic::AtomicU64;

use serde::Serialize;
use serde_json::Value as Json;

use crate::device::Ledger;
use crate::procstat::ProcStats;

/// One fleet run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub devices: usize,
    pub requests: usize,
    pub concurrency: usize,
    /// Connecting and subscribing every device (before the clock starts).
    pub connect_s: f64,
    /// First submit to last submit answered.
    pub submit_s: f64,
    /// First submit to every request final at the hub.
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    /// Requests the hub never accepted (each with why).
    pub submit_errors: Vec<String>,
    pub verdict: Verdict,
    pub device: DeviceCounts,
    /// The hub's process over the run (CPU from first submit to all final).
    pub hub: Option<ProcUse>,
    /// This process (the devices and the HTTP clients).
    pub fleet: ProcUse,
    /// The broker's process, when this run started it.
    pub broker: Option<ProcUse>,
    /// Which program served the hub, when this run started it.
    pub hub_binary: Option<String>,
}

impl Report {
    /// Nothing lost, nothing run twice, order kept, every submit accepted.
    pub fn ok(&self) -> bool {
        let v = &self.verdict;
        self.submit_errors.is_empty()
            && v.succeeded == self.requests as u64
            && v.failed + v.not_final + v.missing + v.unexpected + v.out_of_order == 0
            && self.device.reruns == 0
            && self.device.runs == self.requests as u64
    }
}

/// The devices' own counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DeviceCounts {
    pub envelopes: u64,
    pub runs: u64,
    /// Runs of an id that had run before: must be 0.
    pub reruns: u64,
    /// Resends answered with the remembered final status.
    pub duplicates: u64,
    pub refused: u64,
    pub subscribes: u64,
    pub disconnects: u64,
}

impl DeviceCounts {
    pub fn of(ledger: &Ledger) -> Self {
        let get = |c: &AtomicU64| Ledger::get(c);
        DeviceCounts {
            envelopes: get(&ledger.envelopes),
            runs: get(&ledger.runs),
            reruns: get(&ledger.reruns),
            duplicates: get(&ledger.duplicates),
            refused: get(&ledger.refused),
            subscribes: get(&ledger.connects),
            disconnects: get(&ledger.disconnects),
        }
    }
}

/// What a process used between two readings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcUse {
    pub pid: u32,
    /// CPU time (user + system) between the readings, seconds.
    pub cpu_s: f64,
    pub user_s: f64,
    pub system_s: f64,
    /// Peak resident memory since the process started (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident memory at the second reading, MiB.
    pub rss_mib: f64,
}

impl ProcUse {
    pub fn between(before: ProcStats, after: ProcStats) -> Self {
        let secs =
            |a: std::time::Duration, b: std::time::Duration| b.saturating_sub(a).as_secs_f64();
        ProcUse {
            pid: after.pid,
            cpu_s: secs(before.cpu(), after.cpu()),
            user_s: secs(before.user, after.user),
            system_s: secs(before.system, after.system),
            peak_rss_mib: after.peak_rss_kib as f64 / 1024.0,
            rss_mib: after.rss_kib as f64 / 1024.0,
        }
    }
}

/// The checks of what the hub recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub succeeded: u64,
    /// Final, but not `succeeded`.
    pub failed: u64,
    pub not_final: u64,
    /// Submitted, but not in the hub's list.
    pub missing: u64,
    /// In the hub's list, but never submitted.
    pub unexpected: u64,
    /// Listed out of submission order, or run out of it (reply `count`).
    pub out_of_order: u64,
    /// The first few problems, described.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Checks `device`'s requests as the hub lists them (oldest first)
    /// against the `expected` submitted (`r0`, `r1`, ...).
    pub fn check(&mut self, device: &str, expected: usize, listed: &[Json], examples: usize) {
        let note = |problems: &mut Vec<String>, text: String| {
            if problems.len() < examples {
                problems.push(format!("{device}: {text}"));
            }
        };
        if listed.len() < expected {
            self.missing += (expected - listed.len()) as u64;
            let text = format!("{} of {expected} requests listed", listed.len());
            note(&mut self.problems, text);
        }
        if listed.len() > expected {
            self.unexpected += (listed.len() - expected) as u64;
            let text = format!("{} requests listed, {expected} submitted", listed.len());
            note(&mut self.problems, text);
        }
        for (k, request) in listed.iter().enumerate() {
            let id = request["id"].as_str().unwrap_or("?");
            if id != format!("r{k}") {
                self.out_of_order += 1;
                note(&mut self.problems, format!("r{k} listed as {id}"));
                continue;
            }
            let state = request["state"].as_str().unwrap_or("?");
            match state {
                "succeeded" => {
                    self.succeeded += 1;
                    let reply = &request["reply"];
                    let (count, seq) = (reply["count"].as_u64(), reply["echo"]["seq"].as_u64());
                    if count != Some(k as u64 + 1) || seq != Some(k as u64) {
                        self.out_of_order += 1;
                        let text = format!(
                            "{id} ran as command {count:?} (expected {}), reply {reply}",
                            k + 1
                        );
                        note(&mut self.problems, text);
                    }
                }
                "failed" | "rejected" | "expired" | "cancelled" | "timed_out" => {
                    self.failed += 1;
                    let text = format!("{id} ended {state}: {}", request["message"]);
                    note(&mut self.problems, text);
                }
                _ => {
                    self.not_final += 1;
                    note(&mut self.problems, format!("{id} is still {state}"));
                }
            }
        }
    }

    pub fn merge(&mut self, other: Verdict, examples: usize) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.not_final += other.not_final;
        self.missing += other.missing;
        self.unexpected += other.unexpected;
        self.out_of_order += other.out_of_order;
        let room = examples.saturating_sub(self.problems.len());
        self.problems.extend(other.problems.into_iter().take(room));
    }
}

fn proc_line(f: &mut fmt::Formatter<'_>, name: &str, p: &ProcUse) -> fmt::Result {
    writeln!(
        f,
        "{name} (pid {}): CPU {:.1} s (user {:.1}, system {:.1}), peak RSS {:.0} MiB, RSS at the end {:.0} MiB",
        p.pid, p.cpu_s, p.user_s, p.system_s, p.peak_rss_mib, p.rss_mib
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verdict;
        let d = &self.device;
        writeln!(
            f,
            "{} devices, {} requests through the hub ({} at once): {}",
            self.devices,
            self.requests,
            self.concurrency,
            if self.ok() { "OK" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "time: {:.1} s to all final ({:.0} requests/s); submits took {:.1} s; connecting the devices took {:.1} s before that",
            self.elapsed_s, self.requests_per_s, self.submit_s, self.connect_s
        )?;
        writeln!(
            f,
            "hub's record: {} succeeded, {} failed, {} not final, {} missing, {} unexpected, {} out of order; {} submits refused",
            v.succeeded, v.failed, v.not_final, v.missing, v.unexpected, v.out_of_order, self.submit_errors.len()
        )?;
        writeln!(
            f,
            "devices: {} envelopes, {} runs, {} ran twice, {} duplicates answered from memory, {} refused, {} subscribes, {} connection losses",
            d.envelopes, d.runs, d.reruns, d.duplicates, d.refused, d.subscribes, d.disconnects
        )?;
        if let Some(binary) = &self.hub_binary {
            writeln!(f, "hub: {binary}")?;
        }
        if let Some(hub) = &self.hub {
            proc_line(f, "hub process", hub)?;
        }
        if let Some(broker) = &self.broker {
            proc_line(f, "broker process", broker)?;
        }
        proc_line(f, "fleet process", &self.fleet)?;
        for problem in v.problems.iter().chain(self.submit_errors.iter().take(20)) {
            writeln!(f, "  problem: {problem}")?;
        }
        Ok(())
    }
}
