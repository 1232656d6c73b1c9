//! Memory and CPU time of a process, read from `/proc` (Linux only).
//!
//! The benchmark measures the server from the outside: resident memory (`VmRSS` in
//! `/proc/PID/status`) for the per-connection cost, and user + system CPU time
//! (`utime`, `stime` in `/proc/PID/stat`, all threads) for the cost of each delivered
//! message. The same readings of the bench process itself show whether the load
//! generator, rather than the server, was the bottleneck.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::task::JoinHandle;

use crate::report::Report;

/// A process to read: another one by pid, or this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Pid(u32),
    Myself,
}

impl Proc {
    fn path(&self, file: &str) -> String {
        match self {
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
            Proc::Myself => format!("/proc/self/{file}"),
        }
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let path = self.path("status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_vm_rss_kib(&status).ok_or_else(|| anyhow!("no VmRSS line in {path}"))
    }

    /// User + system CPU time of all threads, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let path = self.path("stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let ticks = parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("cannot parse {path}"))?;
        Ok(ticks as f64 / clock_ticks_per_sec())
    }
}

/// `VmRSS:    1234 kB` → 1234.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted
/// from the last `)`: state is the first field after it, utime the 12th, stime the 13th.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every common Linux build).
fn clock_ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU time spent by the server (when known) and by the bench over a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsage {
    pub wall_s: f64,
    pub server_s: Option<f64>,
    pub bench_s: f64,
}

impl CpuUsage {
    /// Adds the CPU figures to a report: server CPU time and `work` per server
    /// CPU-second (when the server was measured), bench CPU time and utilisation.
    pub fn add_to(&self, report: &mut Report, work: u64, key: &str, label: &str, unit: &str) {
        if let Some(server_s) = self.server_s {
            let per_cpu_s = if server_s > 0.0 {
                work as f64 / server_s
            } else {
                0.0
            };
            report
                .push("server_cpu_s", "server CPU time", "s", server_s)
                .push(key, label, unit, per_cpu_s);
        }
        report
            .push("bench_cpu_s", "bench CPU time", "s", self.bench_s)
            .push(
                "bench_cpu_util",
                "bench CPU use (1 = one core)",
                "cores",
                self.bench_s / self.wall_s.max(1e-9),
            );
    }
}

/// Starts measuring CPU time of the server and of this process.
pub struct CpuWindow {
    server: Option<Proc>,
    server_start: Option<f64>,
    bench_start: f64,
    wall_start: Instant,
}

impl CpuWindow {
    pub fn start(server_pid: Option<u32>) -> Result<Self> {
        let server = server_pid.map(Proc::Pid);
        Ok(Self {
            server_start: server.map(|p| p.cpu_seconds()).transpose()?,
            server,
            bench_start: Proc::Myself.cpu_seconds()?,
            wall_start: Instant::now(),
        })
    }

    pub fn finish(&self) -> Result<CpuUsage> {
        let server_s = match (self.server, self.server_start) {
            (Some(p), Some(start)) => Some(
                p.cpu_seconds()
                    .context("server process gone before the end of the run")?
                    - start,
            ),
            _ => None,
        };
        Ok(CpuUsage {
            wall_s: self.wall_start.elapsed().as_secs_f64(),
            server_s,
            bench_s: Proc::Myself.cpu_seconds()? - self.bench_start,
        })
    }
}

/// Samples a process's RSS in the background and keeps the maximum.
pub struct RssSampler {
    max_kib: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RssSampler {
    /// Samples `proc` every `every` until [`RssSampler::stop`] (or drop).
    pub fn start(proc: Proc, every: Duration) -> Self {
        let max_kib = Arc::new(AtomicU64::new(proc.rss_kib().unwrap_or(0)));
        let max = Arc::clone(&max_kib);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                // A failed read means the process is gone; the run reports that itself.
                if let Ok(kib) = proc.rss_kib() {
                    max.fetch_max(kib, Ordering::Relaxed);
                }
            }
        });
        Self { max_kib, task }
    }

    /// Stops sampling; returns the largest RSS seen, in KiB.
    pub fn stop(self) -> u64 {
        self.task.abort();
        self.max_kib.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_status() {
        let status = "Name:\tswitchboard\nVmPeak:\t  9000 kB\nVmRSS:\t  12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        // Fields 14 (utime) = 250 and 15 (stime) = 50; the name has spaces and parens.
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 \
                    20 0 3 0 1000 100000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_can_be_read() -> Result<()> {
        assert!(Proc::Myself.rss_kib()? > 0);
        assert!(Proc::Myself.cpu_seconds()? >= 0.0);
        Ok(())
    }
}
