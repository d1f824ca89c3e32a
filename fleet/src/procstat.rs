//! What a process costs, read from `/proc` (Linux): peak and current
//! resident memory (`VmHWM`, `VmRSS` in `/proc/<pid>/status`) and CPU time
//! (`utime + stime` in `/proc/<pid>/stat`). The fleet reports them for the
//! hub (and the broker) it drove, since a fleet figure means little without
//! what it took. Also the open-file limit: 10,000 devices are 10,000
//! sockets in this process and as many in the broker.

use std::time::Duration;

use serde::Serialize;

use crate::FleetError;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcStats {
    pub pid: u32,
    /// Peak resident set since the process started, KiB.
    pub peak_rss_kib: u64,
    /// Resident set now, KiB.
    pub rss_kib: u64,
    pub user: Duration,
    pub system: Duration,
}

impl ProcStats {
    /// User + system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

/// Reads `pid`'s memory and CPU figures.
pub fn read(pid: u32) -> Result<ProcStats, FleetError> {
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path).map_err(FleetError::io(status_path))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat_path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&stat_path).map_err(FleetError::io(stat_path.clone()))?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted from the last ')'. utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |field: usize| -> Result<u64, FleetError> {
        fields
            .get(field - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| FleetError::Setup(format!("{stat_path}: no field {field}")))
    };
    let per_second = clock_ticks_per_second();
    let time = |t: u64| Duration::from_secs_f64(t as f64 / per_second as f64);
    Ok(ProcStats {
        pid,
        peak_rss_kib: kib("VmHWM:"),
        rss_kib: kib("VmRSS:"),
        user: time(ticks(14)?),
        system: time(ticks(15)?),
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Raises this process's soft open-file limit to its hard limit (children
/// started afterwards inherit it) and checks that `needed` descriptors fit.
/// Returns the new soft limit.
pub fn raise_open_files(needed: u64) -> Result<u64, FleetError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(FleetError::io("getrlimit(RLIMIT_NOFILE)")(
            std::io::Error::last_os_error(),
        ));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    let soft = limit.rlim_cur;
    if soft < needed {
        return Err(FleetError::Setup(format!(
            "{needed} open files are needed (one socket per device, in this process and in the \
             broker) but the limit is {soft} (hard limit {}): raise it, e.g. `ulimit -n {needed}` \
             as root or `nofile` in /etc/security/limits.conf",
            limit.rlim_max
        )));
    }
    Ok(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).unwrap();
        assert!(me.peak_rss_kib >= me.rss_kib && me.rss_kib > 0, "{me:?}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(read(std::process::id()).unwrap().cpu() > Duration::ZERO);
    }

    #[test]
    fn the_limit_covers_a_small_need() {
        assert!(raise_open_files(64).unwrap() >= 64);
        assert!(raise_open_files(u64::MAX).is_err());
    }
}
