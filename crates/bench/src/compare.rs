//! Compare mode: Switchboard against the baseline server, same machine, same run — the
//! headline numbers.
//!
//! On a shared 2-core machine absolute figures drift from one minute to the next, so a
//! number is only meaningful next to a reference measured under the same conditions.
//! For every run and scenario this mode starts a fresh Switchboard server (its binary,
//! `--store memory`, a config written for the scenario's sizes) and a fresh baseline
//! server (this binary's `baseline-server`), runs the scenario against each as a child
//! process of this binary (`--json`, read back as a [`Report`]), and stops the server.
//! Fresh processes keep one run's memory and connections from leaking into the next.
//! The order of the two alternates from run to run so neither always goes first (warm
//! caches, CPU frequency). After `--runs` runs it prints the median of every figure and
//! the Switchboard/baseline ratio: a median of 3 shrugs off one disturbed run, which a
//! mean does not.
//!
//! `--pin` puts the servers on CPU 0 and the load generator on CPU 1 with `taskset`, so
//! they do not compete for a core (skipped with a note when `taskset` or a second CPU
//! is missing). Every child is killed when it is no longer needed, on error and on
//! Ctrl-C (`kill_on_drop`); every wait has a time limit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::report::{self, Report};
use crate::stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioChoice {
    Fanout,
    Idle,
    Echo,
    All,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The switchboard server binary.
    #[arg(long)]
    pub server_bin: PathBuf,
    /// Which scenario(s) to run.
    #[arg(long, value_enum, default_value_t = ScenarioChoice::All)]
    pub scenario: ScenarioChoice,
    /// Runs per scenario and server; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Pin the servers to CPU 0 and the load generator to CPU 1 (taskset).
    #[arg(long)]
    pub pin: bool,
    /// idle: connections.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// idle: rooms to spread the connections over (0 = one room per 100 connections).
    #[arg(long, default_value_t = 0)]
    pub idle_rooms: usize,
    /// fanout: subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// fanout: publishes per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// fanout: subscribers that stop reading.
    #[arg(long, default_value_t = 0)]
    pub stall: usize,
    /// echo: connections.
    #[arg(long, default_value_t = 64)]
    pub echo_connections: usize,
    /// fanout and echo: seconds of load per run.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// fanout and echo: payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Outbound queue bound per connection, for both servers.
    #[arg(long, default_value_t = 1024)]
    pub queue_size: usize,
    /// New connections per second.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp_per_sec: f64,
    /// Extra argument for the switchboard server (repeatable), e.g. --server-arg=--log=info.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Show the servers' own output.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Idle,
    Fanout,
    Echo,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Echo => "echo",
        }
    }

    /// The figure shown in progress lines.
    fn headline(self) -> &'static str {
        match self {
            Scenario::Idle => "server_kib_per_conn",
            Scenario::Fanout => "delivered_per_sec",
            Scenario::Echo => "round_trips_per_sec",
        }
    }

    fn selected(choice: ScenarioChoice) -> Vec<Scenario> {
        match choice {
            ScenarioChoice::Fanout => vec![Scenario::Fanout],
            ScenarioChoice::Idle => vec![Scenario::Idle],
            ScenarioChoice::Echo => vec![Scenario::Echo],
            ScenarioChoice::All => vec![Scenario::Idle, Scenario::Fanout, Scenario::Echo],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Switchboard,
    Baseline,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Switchboard => "switchboard",
            Server::Baseline => "baseline",
        }
    }

    /// Alternate which server goes first from one run to the next.
    fn order(run: usize) -> [Server; 2] {
        if run.is_multiple_of(2) {
            [Server::Switchboard, Server::Baseline]
        } else {
            [Server::Baseline, Server::Switchboard]
        }
    }
}

/// Time limit for a server to print its listening line.
const READY_LIMIT: Duration = Duration::from_secs(15);
/// Lines of a server's output kept for error messages.
const TAIL_LINES: usize = 20;
/// Per-connection handshake limit passed to the scenarios (their default).
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
const CPU_SERVER: usize = 0;
const CPU_LOAD: usize = 1;

/// The Switchboard config for a comparison: limits large enough for the scenarios.
fn switchboard_config(queue_size: usize) -> String {
    format!(
        r#"# Written by switchboard-bench compare.
# Quiet logs: per-connection log lines would be measured as server cost.
log = "warn"

[[endpoint]]
path = "/ws"
mode = "protocol"
max_connections = 60000
room_max_connections = 60000
max_message_size = 65536
queue_size = {queue_size}

[[endpoint]]
path = "/echo"
mode = "echo"
max_connections = 60000
max_message_size = 65536
"#
    )
}

/// `listening on http://127.0.0.1:PORT` anywhere in a line → the address.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    const MARK: &str = "listening on http://";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let authority = rest
        .split(|c: char| c.is_whitespace() || c == '/' || c == '"')
        .next()?;
    if let Ok(addr) = authority.parse() {
        return Some(addr);
    }
    // A host name (e.g. localhost): keep the port, use loopback.
    let port: u16 = authority.rsplit_once(':')?.1.parse().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A server under test, killed when dropped.
struct RunningServer {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl RunningServer {
    async fn start(mut cmd: Command, what: &str, verbose: bool) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let pid = child.id().with_context(|| format!("{what} has no pid"))?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let (addr_tx, mut addr_rx) = mpsc::channel(2);
        if let Some(out) = child.stdout.take() {
            watch_output(out, what, verbose, Arc::clone(&tail), addr_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            watch_output(err, what, verbose, Arc::clone(&tail), addr_tx);
        }
        let tail_text = || {
            let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail.is_empty() {
                "(nothing)".to_owned()
            } else {
                tail.iter().cloned().collect::<Vec<_>>().join("\n")
            }
        };
        let addr = tokio::select! {
            Some(addr) = addr_rx.recv() => addr,
            status = child.wait() => bail!(
                "{what} exited ({}) before listening; its last output:\n{}",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                tail_text()
            ),
            () = tokio::time::sleep(READY_LIMIT) => bail!(
                "{what} printed no `listening on http://…` line within {READY_LIMIT:?}; its last output:\n{}",
                tail_text()
            ),
        };
        Ok(Self { child, pid, addr })
    }

    async fn stop(mut self) {
        // Nothing to keep: kill, and reap so no zombie is left behind.
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Reads a child's output line by line until it closes: finds the listening line,
/// keeps the last lines, and echoes them when `verbose`.
fn watch_output<R: AsyncRead + Unpin + Send + 'static>(
    output: R,
    what: &str,
    verbose: bool,
    tail: Arc<Mutex<VecDeque<String>>>,
    addr_tx: mpsc::Sender<SocketAddr>,
) {
    let what = what.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(output).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = parse_listening(&line) {
                let _ = addr_tx.try_send(addr);
            }
            if verbose {
                eprintln!("[{what}] {line}");
            }
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
}

/// A command, run on `cpu` through taskset when pinning.
fn command(program: &Path, args: &[String], cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpu.to_string()).arg(program).args(args);
            cmd
        }
        None => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    }
}

/// Whether pinning can be done here; prints why not when it cannot.
async fn pinning_available() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("note: only {cpus} CPU available, not pinning");
        return false;
    }
    let taskset = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if !matches!(taskset, Ok(s) if s.success()) {
        eprintln!("note: taskset not found, not pinning");
        return false;
    }
    true
}

/// Removes the temporary config folder when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the comparison needs to start servers and scenarios.
struct Plan<'a> {
    args: &'a Args,
    exe: PathBuf,
    config: PathBuf,
    pin: bool,
}

impl Plan<'_> {
    fn server_cpu(&self) -> Option<usize> {
        self.pin.then_some(CPU_SERVER)
    }

    async fn start_server(&self, server: Server) -> Result<RunningServer> {
        let listen = ["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        let cmd = match server {
            Server::Switchboard => {
                let mut args = listen.to_vec();
                args.extend(["--store".into(), "memory".into(), "--config".into()]);
                args.push(self.config.display().to_string());
                args.extend(self.args.server_args.iter().cloned());
                command(&self.args.server_bin, &args, self.server_cpu())
            }
            Server::Baseline => {
                let mut args = vec!["baseline-server".to_owned()];
                args.extend(listen);
                args.extend(["--queue-size".into(), self.args.queue_size.to_string()]);
                command(&self.exe, &args, self.server_cpu())
            }
        };
        RunningServer::start(cmd, server.name(), self.args.verbose).await
    }

    /// The scenario's command line against a server at `addr` with process `pid`.
    fn scenario_args(&self, scenario: Scenario, addr: SocketAddr, pid: u32) -> Vec<String> {
        let a = self.args;
        let mut v: Vec<String> = vec![scenario.name().into()];
        let mut add = |k: &str, val: String| {
            v.push(k.into());
            v.push(val);
        };
        match scenario {
            Scenario::Idle => {
                let rooms = if a.idle_rooms == 0 {
                    a.connections.div_ceil(100)
                } else {
                    a.idle_rooms
                };
                add("--url", format!("ws://{addr}/ws"));
                add("--connections", a.connections.to_string());
                add("--rooms", rooms.to_string());
            }
            Scenario::Fanout => {
                add("--url", format!("ws://{addr}/ws"));
                add("--subscribers", a.subscribers.to_string());
                add("--rate", a.rate.to_string());
                add("--stall", a.stall.to_string());
                add("--duration-secs", a.duration_secs.to_string());
                add("--payload-bytes", a.payload_bytes.to_string());
            }
            Scenario::Echo => {
                add("--url", format!("ws://{addr}/echo"));
                add("--connections", a.echo_connections.to_string());
                add("--duration-secs", a.duration_secs.to_string());
                add("--payload-bytes", a.payload_bytes.to_string());
            }
        }
        add("--ramp-per-sec", a.ramp_per_sec.to_string());
        add("--server-pid", pid.to_string());
        v.push("--json".into());
        v
    }

    /// Generous upper bound on a scenario's running time.
    fn scenario_limit(&self, scenario: Scenario) -> Duration {
        let a = self.args;
        let connections = match scenario {
            Scenario::Idle => a.connections,
            Scenario::Fanout => a.subscribers + a.stall + 1,
            Scenario::Echo => a.echo_connections,
        };
        let opening = connections as f64 / a.ramp_per_sec.max(1.0);
        let load = match scenario {
            Scenario::Idle => 2.0,
            // settle, straggler window, stall probe
            Scenario::Fanout => a.duration_secs + 1.0 + 5.0 + 6.0,
            Scenario::Echo => a.duration_secs + 5.0,
        };
        Duration::from_secs_f64(opening + load + 30.0) + 2 * CONNECT_LIMIT
    }

    async fn run_scenario(&self, scenario: Scenario, server: &RunningServer) -> Result<Report> {
        let args = self.scenario_args(scenario, server.addr, server.pid);
        let mut cmd = command(&self.exe, &args, self.pin.then_some(CPU_LOAD));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {} scenario", scenario.name()))?;
        let limit = self.scenario_limit(scenario);
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("{} scenario still running after {limit:?}", scenario.name()))?
            .context("scenario output")?;
        if !output.status.success() {
            bail!("{} scenario failed ({})", scenario.name(), output.status);
        }
        Report::from_output(&String::from_utf8_lossy(&output.stdout))
    }
}

/// One scenario run against one server.
#[derive(Debug, Serialize)]
struct RunReport {
    run: usize,
    server: &'static str,
    report: Report,
}

/// The medians of one figure over the runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct Row {
    scenario: String,
    key: String,
    label: String,
    unit: String,
    switchboard: Option<f64>,
    baseline: Option<f64>,
    ratio: Option<f64>,
}

/// Medians per figure, in the order figures first appear.
fn summarize(scenario: &str, switchboard: &[&Report], baseline: &[&Report]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for metric in switchboard.iter().chain(baseline).flat_map(|r| &r.metrics) {
        if rows.iter().any(|row| row.key == metric.key) {
            continue;
        }
        let median_of = |reports: &[&Report]| {
            let values: Vec<f64> = reports.iter().filter_map(|r| r.get(&metric.key)).collect();
            stats::median(&values)
        };
        let sb = median_of(switchboard);
        let base = median_of(baseline);
        let ratio = match (sb, base) {
            (Some(s), Some(b)) if b != 0.0 => Some(s / b),
            _ => None,
        };
        rows.push(Row {
            scenario: scenario.to_owned(),
            key: metric.key.clone(),
            label: metric.label.clone(),
            unit: metric.unit.clone(),
            switchboard: sb,
            baseline: base,
            ratio,
        });
    }
    rows
}

fn render(rows: &[Row], runs: usize, pinned: bool) -> String {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), report::format_value);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.scenario.clone(),
                r.label.clone(),
                r.unit.clone(),
                cell(r.switchboard),
                cell(r.baseline),
                r.ratio
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
            ]
        })
        .collect();
    format!(
        "Switchboard vs baseline — medians of {runs} run(s){}\n{}",
        if pinned {
            ", servers on CPU 0, load on CPU 1"
        } else {
            ", not pinned"
        },
        report::render_rows(
            &[
                "scenario",
                "figure",
                "unit",
                "switchboard",
                "baseline",
                "sb/base"
            ],
            &table
        )
    )
}

pub async fn run(args: &Args, json: bool) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !args.server_bin.exists() {
        bail!("server binary {} not found", args.server_bin.display());
    }
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let dir =
        TempDir(std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)
        .with_context(|| format!("cannot create {}", dir.0.display()))?;
    let config = dir.0.join("switchboard.toml");
    std::fs::write(&config, switchboard_config(args.queue_size))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let pin = args.pin && pinning_available().await;
    let plan = Plan {
        args,
        exe,
        config,
        pin,
    };

    let scenarios = Scenario::selected(args.scenario);
    let mut results: Vec<(Scenario, RunReport)> = Vec::new();
    for run in 0..args.runs {
        for &scenario in &scenarios {
            for server in Server::order(run) {
                eprintln!(
                    "== run {}/{} {} against {}",
                    run + 1,
                    args.runs,
                    scenario.name(),
                    server.name()
                );
                let running = plan.start_server(server).await?;
                let outcome = plan.run_scenario(scenario, &running).await;
                running.stop().await;
                let report = outcome.with_context(|| {
                    format!(
                        "run {} of {} against {}",
                        run + 1,
                        scenario.name(),
                        server.name()
                    )
                })?;
                let headline = scenario.headline();
                eprintln!(
                    "== {} {}: {} = {}",
                    scenario.name(),
                    server.name(),
                    headline,
                    report
                        .get(headline)
                        .map_or_else(|| "-".into(), report::format_value)
                );
                results.push((
                    scenario,
                    RunReport {
                        run: run + 1,
                        server: server.name(),
                        report,
                    },
                ));
            }
        }
    }

    let mut rows = Vec::new();
    for &scenario in &scenarios {
        let of = |server: Server| -> Vec<&Report> {
            results
                .iter()
                .filter(|(s, r)| *s == scenario && r.server == server.name())
                .map(|(_, r)| &r.report)
                .collect()
        };
        rows.extend(summarize(
            scenario.name(),
            &of(Server::Switchboard),
            &of(Server::Baseline),
        ));
    }
    let table = render(&rows, args.runs, pin);
    if json {
        eprintln!("{table}");
        let runs: Vec<&RunReport> = results.iter().map(|(_, r)| r).collect();
        let summary = serde_json::json!({
            "compare": { "runs": args.runs, "pinned": pin, "medians": rows, "results": runs }
        });
        println!("{summary}");
    } else {
        println!("{table}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_found_in_log_output() {
        let addr = |s: &str| s.parse::<SocketAddr>().ok();
        assert_eq!(
            parse_listening("listening on http://127.0.0.1:40123"),
            addr("127.0.0.1:40123")
        );
        assert_eq!(
            parse_listening(
                r#"2026-01-01T00:00:00Z INFO switchboard: listening on http://127.0.0.1:8080/ ready"#
            ),
            addr("127.0.0.1:8080")
        );
        assert_eq!(
            parse_listening(r#"{"msg":"listening on http://[::1]:9000","level":"info"}"#),
            addr("[::1]:9000")
        );
        assert_eq!(
            parse_listening("listening on http://localhost:7000"),
            addr("127.0.0.1:7000")
        );
        assert_eq!(parse_listening("starting up"), None);
    }

    #[test]
    fn medians_and_ratios_per_figure() {
        let report = |v: f64| {
            let mut r = Report::new("fanout", "ws://x/ws");
            r.push("delivered_per_sec", "delivered msgs/s", "msg/s", v);
            r
        };
        let sb = [report(90.0), report(100.0), report(300.0)];
        let base = [report(200.0), report(150.0), report(100.0)];
        let rows = summarize(
            "fanout",
            &sb.iter().collect::<Vec<_>>(),
            &base.iter().collect::<Vec<_>>(),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].switchboard, Some(100.0));
        assert_eq!(rows[0].baseline, Some(150.0));
        let ratio = rows[0].ratio.unwrap_or(f64::NAN);
        assert!((ratio - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn runs_alternate_which_server_goes_first() {
        assert_eq!(Server::order(0)[0], Server::Switchboard);
        assert_eq!(Server::order(1)[0], Server::Baseline);
        assert_eq!(Server::order(2)[0], Server::Switchboard);
    }

    #[test]
    fn config_declares_both_endpoints() -> Result<()> {
        let text = switchboard_config(2048);
        assert!(text.contains("path = \"/ws\"") && text.contains("mode = \"protocol\""));
        assert!(text.contains("path = \"/echo\"") && text.contains("mode = \"echo\""));
        assert!(text.contains("queue_size = 2048"));
        let parsed: toml::Value = toml::from_str(&text)?;
        let endpoints = parsed
            .get("endpoint")
            .and_then(toml::Value::as_array)
            .context("no [[endpoint]] tables")?;
        assert_eq!(endpoints.len(), 2);
        let ws = &endpoints[0];
        assert_eq!(ws.get("path").and_then(toml::Value::as_str), Some("/ws"));
        assert_eq!(
            ws.get("queue_size").and_then(toml::Value::as_integer),
            Some(2048)
        );
        assert_eq!(
            ws.get("room_max_connections")
                .and_then(toml::Value::as_integer),
            Some(60000)
        );
        Ok(())
    }
}
