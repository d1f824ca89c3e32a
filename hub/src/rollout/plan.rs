//! A rollout's decisions, sans-IO: which device starts next (the rate),
//! which one ran out of time, and when the rollout stops (the abort
//! criteria, or every device done). Time is passed in; the driver reads the
//! store, asks [`decide`], and carries the decisions out.
//!
//! The semantics follow AWS IoT Jobs' rollouts:
//! - **rate**: at most `rate_per_min` devices start per minute, spread
//!   evenly (one every `60_000 / rate` ms, the first at once);
//! - **abort**: once at least `min_executed` devices have a result, the
//!   rollout aborts as soon as the failed share (failed and timed out)
//!   reaches `abort_failed_percent`; devices not started are cancelled,
//!   the running ones may still finish;
//! - **per-device timeout**: a device without a result `device_timeout_ms`
//!   after its start counts as timed out (a failure).

/// A rollout's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub rate_per_min: u64,
    pub abort_failed_percent: u64,
    pub min_executed: u64,
    pub device_timeout_ms: u64,
    pub started_at: u64,
}

/// Where one device of a rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pending,
    Running { since: u64 },
    Succeeded,
    Failed { code: String },
    TimedOut,
    Cancelled,
}

impl Target {
    pub fn as_str(&self) -> &'static str {
        match self {
            Target::Pending => "pending",
            Target::Running { .. } => "running",
            Target::Succeeded => "succeeded",
            Target::Failed { .. } => "failed",
            Target::TimedOut => "timed_out",
            Target::Cancelled => "cancelled",
        }
    }

    /// Has a result (counts as executed).
    pub fn is_executed(&self) -> bool {
        matches!(
            self,
            Target::Succeeded | Target::Failed { .. } | Target::TimedOut
        )
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, Target::Failed { .. } | Target::TimedOut)
    }
}

/// One thing the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the bundle to target `index`.
    Start(usize),
    /// Target `index` ran out of time.
    TimeOut(usize),
    /// Stop: cancel every pending target.
    Abort { reason: String },
    /// Every target has a result.
    Complete,
}

/// What to do at `now` given the targets' states (in rollout order).
pub fn decide(plan: &Plan, targets: &[Target], now: u64) -> Vec<Decision> {
    let mut out = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if let Target::Running { since } = t {
            if now.saturating_sub(*since) >= plan.device_timeout_ms {
                out.push(Decision::TimeOut(i));
            }
        }
    }
    let expired: Vec<usize> = out
        .iter()
        .filter_map(|d| match d {
            Decision::TimeOut(i) => Some(*i),
            _ => None,
        })
        .collect();
    let timed_out = |i: usize| expired.contains(&i);
    let executed = targets
        .iter()
        .enumerate()
        .filter(|(i, t)| t.is_executed() || timed_out(*i))
        .count() as u64;
    let failed = targets
        .iter()
        .enumerate()
        .filter(|(i, t)| t.is_failure() || timed_out(*i))
        .count() as u64;
    if executed >= plan.min_executed.max(1)
        && failed * 100 >= plan.abort_failed_percent * executed
        && failed > 0
    {
        out.push(Decision::Abort {
            reason: format!(
                "{failed} of {executed} devices failed ({}%), at or above the abort threshold of {}%",
                failed * 100 / executed,
                plan.abort_failed_percent
            ),
        });
        return out;
    }
    let started = targets
        .iter()
        .filter(|t| !matches!(t, Target::Pending | Target::Cancelled))
        .count() as u64;
    let allowed = allowed_by(plan, now);
    let mut room = allowed.saturating_sub(started);
    for (i, t) in targets.iter().enumerate() {
        if room == 0 {
            break;
        }
        if *t == Target::Pending {
            out.push(Decision::Start(i));
            room -= 1;
        }
    }
    let open = targets
        .iter()
        .enumerate()
        .any(|(i, t)| matches!(t, Target::Pending | Target::Running { .. }) && !timed_out(i));
    if !open {
        out.push(Decision::Complete);
    }
    out
}

/// How many devices may have started by `now`.
fn allowed_by(plan: &Plan, now: u64) -> u64 {
    let rate = plan.rate_per_min.max(1);
    let elapsed = now.saturating_sub(plan.started_at);
    1 + elapsed.saturating_mul(rate) / 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            rate_per_min: 60,
            abort_failed_percent: 30,
            min_executed: 4,
            device_timeout_ms: 10_000,
            started_at: 0,
        }
    }

    fn starts(d: &[Decision]) -> Vec<usize> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Start(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn devices_start_at_the_rate() {
        let mut t = vec![Target::Pending; 5];
        assert_eq!(starts(&decide(&plan(), &t, 0)), [0]);
        t[0] = Target::Running { since: 0 };
        assert!(starts(&decide(&plan(), &t, 999)).is_empty());
        assert_eq!(starts(&decide(&plan(), &t, 2_000)), [1, 2]);
    }

    #[test]
    fn failures_abort_once_enough_ran_and_timeouts_count() {
        let mut t = vec![Target::Pending; 10];
        t[0] = Target::Failed {
            code: "self_test_failed".into(),
        };
        t[1] = Target::Succeeded;
        t[2] = Target::Succeeded;
        // 1 of 3 executed: under min_executed, no abort.
        assert!(!decide(&plan(), &t, 3_000)
            .iter()
            .any(|d| matches!(d, Decision::Abort { .. })));
        t[3] = Target::Running { since: 0 };
        // At 10 s device 3 times out: 2 of 4 failed (50%) -> abort, nothing starts.
        let d = decide(&plan(), &t, 10_000);
        assert!(d.contains(&Decision::TimeOut(3)));
        assert!(matches!(d.last(), Some(Decision::Abort { .. })));
        assert!(starts(&d).is_empty());
    }

    #[test]
    fn completes_when_every_device_has_a_result() {
        let t = vec![
            Target::Succeeded,
            Target::Failed { code: "x".into() },
            Target::Succeeded,
        ];
        let p = Plan {
            min_executed: 10,
            ..plan()
        };
        assert_eq!(decide(&p, &t, 50), vec![Decision::Complete]);
    }
}
