//! What a process costs, read from `/proc`, and small statistics.

use std::time::{Duration, Instant};

/// One look at a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// CPU time used so far (user + system), in clock ticks.
    pub cpu_ticks: u64,
    /// Voluntary and involuntary context switches of every thread so far.
    pub switches: u64,
}

impl Sample {
    /// Reads `/proc/<pid>`; `None` when the process is gone.
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(Self {
            at: Instant::now(),
            rss_kib: field(&status, "VmRSS:")?,
            cpu_ticks: cpu_ticks(&stat)?,
            switches: thread_switches(pid),
        })
    }

    /// Several processes' samples taken together: memory, CPU and switches added up.
    pub fn sum(samples: &[Sample]) -> Self {
        Self {
            at: samples.last().map_or_else(Instant::now, |s| s.at),
            rss_kib: samples.iter().map(|s| s.rss_kib).sum(),
            cpu_ticks: samples.iter().map(|s| s.cpu_ticks).sum(),
            switches: samples.iter().map(|s| s.switches).sum(),
        }
    }

    /// A process tree: the CPU of the process whose command line holds `marker` (the first
    /// found), of its live children and of the children it has reaped (how a PostgreSQL
    /// cluster's postmaster and its backends are counted together). Memory is the first
    /// process's own: its children share its buffers, so a sum would count them many times.
    /// `None` when no process matches.
    pub fn of_tree(marker: &str) -> Option<Self> {
        let (root, stat) = find_process(marker)?;
        let mut ticks = cpu_ticks(&stat)? + reaped_ticks(&stat).unwrap_or(0);
        let rss_kib = Self::of(root)?.rss_kib;
        for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(child) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if parent_of(&child) == Some(root) {
                ticks += cpu_ticks(&child).unwrap_or(0);
            }
        }
        Some(Self {
            at: Instant::now(),
            rss_kib,
            cpu_ticks: ticks,
            switches: 0,
        })
    }

    /// CPU used between `earlier` and this sample, as a share of one core (1.0 = a core).
    pub fn cores_since(&self, earlier: &Sample) -> f64 {
        let ticks = self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64;
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        ticks / clock_ticks_per_second() / seconds.max(f64::MIN_POSITIVE)
    }

    /// CPU seconds used between `earlier` and this sample.
    pub fn cpu_seconds_since(&self, earlier: &Sample) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / clock_ticks_per_second()
    }
}

/// The kernel's clock ticks per second, in which `/proc/<pid>/stat` counts CPU time.
pub fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime: fields 14 and 15 of `stat`, counted after the command name in parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// cutime + cstime: the CPU of children this process has waited for (fields 16 and 17).
fn reaped_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let user: u64 = fields.get(13)?.parse().ok()?;
    let system: u64 = fields.get(14)?.parse().ok()?;
    Some(user + system)
}

/// The parent's pid (field 4).
fn parent_of(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The first process whose command line contains `marker`, with its `stat`.
fn find_process(marker: &str) -> Option<(u32, String)> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.contains(marker) || cmdline.contains("/bin/sh") {
                return None;
            }
            Some((
                pid,
                std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
            ))
        })
}

fn thread_switches(pid: u32) -> u64 {
    thread_switch_counts(pid).values().sum()
}

/// Voluntary and involuntary context switches of each live thread of `pid`, by thread id. A
/// thread that has ended is no longer listed, so a caller that must count short-lived threads
/// looks often and keeps what it saw.
pub fn thread_switch_counts(pid: u32) -> std::collections::BTreeMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return std::collections::BTreeMap::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let switches = field(&status, "voluntary_ctxt_switches:").unwrap_or(0)
                + field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
            Some((tid, switches))
        })
        .collect()
}

/// The `q` quantile (0.0 to 1.0) of sorted durations, by the nearest-rank method.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of some numbers.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Milliseconds, for printing.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
