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
//!
//! `--scenario durable` is different: there is no baseline (it has no store). For every
//! run it starts Switchboard once per store of `--stores` — `memory`, `sqlite://` a file
//! in the temporary folder, `postgres://…?options[search_path]=bench_<pid>` (a schema it
//! creates and drops with `psql`) — each store emptied before its server starts, and runs
//! the durable scenario against a durable room and an ordinary room on that same server.
//! The ordinary room is the reference: the table gives, per store, the medians of both and
//! the durable/ordinary ratio of acked publishes per second. `all` does not include it.

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
    /// idle, fanout and echo against Switchboard and the baseline.
    All,
    /// Acked publishes to durable vs ordinary rooms, per store (Switchboard only).
    Durable,
}

/// A store `--scenario durable` runs Switchboard on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Memory,
    Sqlite,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
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
    /// durable: publisher connections.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// durable: publishes each publisher keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// durable: the stores to run Switchboard on.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memory,sqlite,postgres"
    )]
    pub stores: Vec<StoreKind>,
    /// durable: the PostgreSQL database (a schema `bench_<pid>` is made in it with psql).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub postgres: String,
    /// fanout, echo and durable: seconds of load per run.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// fanout, echo and durable: payload size in bytes.
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
    /// Publishing to a durable room (`true`) or an ordinary one.
    Durable(bool),
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Echo => "echo",
            Scenario::Durable(_) => "durable",
        }
    }

    /// The figure shown in progress lines.
    fn headline(self) -> &'static str {
        match self {
            Scenario::Idle => "server_kib_per_conn",
            Scenario::Fanout => "delivered_per_sec",
            Scenario::Echo => "round_trips_per_sec",
            Scenario::Durable(_) => "acked_per_sec",
        }
    }

    fn selected(choice: ScenarioChoice) -> Vec<Scenario> {
        match choice {
            ScenarioChoice::Fanout => vec![Scenario::Fanout],
            ScenarioChoice::Idle => vec![Scenario::Idle],
            ScenarioChoice::Echo => vec![Scenario::Echo],
            ScenarioChoice::All => vec![Scenario::Idle, Scenario::Fanout, Scenario::Echo],
            // Run by `run_durable`, which pairs each with the other on the same server.
            ScenarioChoice::Durable => vec![Scenario::Durable(true), Scenario::Durable(false)],
        }
    }
}

/// The two rooms of the durable scenario, in the order run `run` measures them (the order
/// alternates so neither always goes first on a fresh server).
fn durable_order(run: usize) -> [Scenario; 2] {
    if run.is_multiple_of(2) {
        [Scenario::Durable(true), Scenario::Durable(false)]
    } else {
        [Scenario::Durable(false), Scenario::Durable(true)]
    }
}

/// Rotates the stores by one per run, so each is first (on a quiet machine) as often.
fn store_order(stores: &[StoreKind], run: usize) -> Vec<StoreKind> {
    let mut order = stores.to_vec();
    if !order.is_empty() {
        let shift = run % order.len();
        order.rotate_left(shift);
    }
    order
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
# The baseline has no presence. A room of N subscribers that fills up would otherwise
# send N² presence_join events before the first publish; the fan-out figures measure
# room messages only.
presence_events_max_members = 0

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
        match server {
            Server::Switchboard => self.start_switchboard("memory").await,
            Server::Baseline => {
                let args: Vec<String> = vec![
                    "baseline-server".into(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--queue-size".into(),
                    self.args.queue_size.to_string(),
                ];
                let cmd = command(&self.exe, &args, self.server_cpu());
                RunningServer::start(cmd, server.name(), self.args.verbose).await
            }
        }
    }

    /// Switchboard on the store `--store URL`.
    async fn start_switchboard(&self, store: &str) -> Result<RunningServer> {
        let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
        args.extend(["--store".into(), store.to_owned(), "--config".into()]);
        args.push(self.config.display().to_string());
        args.extend(self.args.server_args.iter().cloned());
        let cmd = command(&self.args.server_bin, &args, self.server_cpu());
        RunningServer::start(cmd, Server::Switchboard.name(), self.args.verbose).await
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
                add("--ramp-per-sec", a.ramp_per_sec.to_string());
            }
            Scenario::Fanout => {
                add("--url", format!("ws://{addr}/ws"));
                add("--subscribers", a.subscribers.to_string());
                add("--rate", a.rate.to_string());
                add("--stall", a.stall.to_string());
                add("--duration-secs", a.duration_secs.to_string());
                add("--payload-bytes", a.payload_bytes.to_string());
                add("--ramp-per-sec", a.ramp_per_sec.to_string());
            }
            Scenario::Echo => {
                add("--url", format!("ws://{addr}/echo"));
                add("--connections", a.echo_connections.to_string());
                add("--duration-secs", a.duration_secs.to_string());
                add("--payload-bytes", a.payload_bytes.to_string());
                add("--ramp-per-sec", a.ramp_per_sec.to_string());
            }
            Scenario::Durable(durable) => {
                add("--url", format!("ws://{addr}/ws"));
                add("--api", format!("http://{addr}"));
                add("--publishers", a.publishers.to_string());
                add("--in-flight", a.in_flight.to_string());
                add("--duration-secs", a.duration_secs.to_string());
                add("--payload-bytes", a.payload_bytes.to_string());
                let room = if durable {
                    "bench-durable"
                } else {
                    "bench-ordinary"
                };
                add("--room", room.into());
                add("--durable", durable.to_string());
            }
        }
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
            Scenario::Durable(_) => a.publishers,
        };
        let opening = connections as f64 / a.ramp_per_sec.max(1.0);
        let load = match scenario {
            Scenario::Idle => 2.0,
            // settle, straggler window, stall probe
            Scenario::Fanout => a.duration_secs + 1.0 + 5.0 + 6.0,
            Scenario::Echo => a.duration_secs + 5.0,
            // last acks, REST calls
            Scenario::Durable(_) => a.duration_secs + 12.0 + 20.0,
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

/// The medians of one figure over two sets of runs, and their ratio.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct Pair {
    key: String,
    label: String,
    unit: String,
    a: Option<f64>,
    b: Option<f64>,
    /// a / b
    ratio: Option<f64>,
}

/// Medians per figure of two sets of runs, in the order figures first appear.
fn pair_medians(a: &[&Report], b: &[&Report]) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = Vec::new();
    for metric in a.iter().chain(b).flat_map(|r| &r.metrics) {
        if pairs.iter().any(|p| p.key == metric.key) {
            continue;
        }
        let median_of = |reports: &[&Report]| {
            let values: Vec<f64> = reports.iter().filter_map(|r| r.get(&metric.key)).collect();
            stats::median(&values)
        };
        let (ma, mb) = (median_of(a), median_of(b));
        let ratio = match (ma, mb) {
            (Some(x), Some(y)) if y != 0.0 => Some(x / y),
            _ => None,
        };
        pairs.push(Pair {
            key: metric.key.clone(),
            label: metric.label.clone(),
            unit: metric.unit.clone(),
            a: ma,
            b: mb,
            ratio,
        });
    }
    pairs
}

/// Medians per figure, in the order figures first appear.
fn summarize(scenario: &str, switchboard: &[&Report], baseline: &[&Report]) -> Vec<Row> {
    pair_medians(switchboard, baseline)
        .into_iter()
        .map(|p| Row {
            scenario: scenario.to_owned(),
            key: p.key,
            label: p.label,
            unit: p.unit,
            switchboard: p.a,
            baseline: p.b,
            ratio: p.ratio,
        })
        .collect()
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
    if args.scenario == ScenarioChoice::Durable && args.stores.is_empty() {
        bail!("--stores names no store");
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
    if args.scenario == ScenarioChoice::Durable {
        return run_durable(&plan, &dir.0, json).await;
    }

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

// -- durable: stores compared -----------------------------------------------------------

/// Time limit for one `psql` call.
const PSQL_LIMIT: Duration = Duration::from_secs(30);

/// Columns of the durable table: figure key and heading.
const DURABLE_COLUMNS: &[(&str, &str)] = &[
    ("acked_per_sec", "acked/s"),
    ("ack_p50_ms", "ack p50 ms"),
    ("ack_p99_ms", "ack p99 ms"),
    ("ack_max_ms", "ack max ms"),
    ("server_cpu_s", "server cpu s"),
    ("acked_per_server_cpu_s", "acked/server cpu-s"),
    ("store_append_mean_ms", "append mean ms"),
];

/// Figures that must stay 0 in a sound run; any other value is shown under the table.
const DURABLE_ZEROES: &[&str] = &[
    "publishers_failed",
    "errors",
    "unanswered",
    "duplicate_offsets",
];

/// `sqlite://` + an absolute path = `sqlite:///abs/path`.
fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A PostgreSQL URL whose connections use `schema` (sqlx's `options[search_path]`).
fn postgres_url(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

fn psql_command(database: &str, sql: &str) -> [String; 8] {
    [
        "-X".into(),
        "-q".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-d".into(),
        database.into(),
        "-c".into(),
        sql.into(),
    ]
}

/// Runs one SQL command with `psql` on `database`.
async fn psql(database: &str, sql: &str) -> Result<()> {
    let output = tokio::time::timeout(
        PSQL_LIMIT,
        Command::new("psql")
            .args(psql_command(database, sql))
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("psql took over {PSQL_LIMIT:?}"))?
    .context(
        "cannot run psql (the PostgreSQL client): install it, or leave postgres out of --stores",
    )?;
    if !output.status.success() {
        bail!(
            "psql -c {sql:?} on {database} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The stores of the durable comparison: an SQLite file in the temporary folder and a
/// PostgreSQL schema, both emptied before every server start. The schema is dropped at
/// the end.
struct DurableStores {
    sqlite: PathBuf,
    postgres: String,
    schema: String,
    schema_made: bool,
}

impl DurableStores {
    fn new(dir: &Path, postgres: &str) -> Self {
        Self {
            sqlite: dir.join("bench.db"),
            postgres: postgres.to_owned(),
            schema: format!("bench_{}", std::process::id()),
            schema_made: false,
        }
    }

    /// The `--store` URL of an empty store of this kind.
    async fn fresh(&mut self, kind: StoreKind) -> Result<String> {
        match kind {
            StoreKind::Memory => Ok("memory".into()),
            StoreKind::Sqlite => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = self.sqlite.clone().into_os_string();
                    file.push(suffix);
                    match std::fs::remove_file(&file) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(e).with_context(|| {
                                format!("cannot remove {}", PathBuf::from(file).display())
                            });
                        }
                        _ => {}
                    }
                }
                Ok(sqlite_url(&self.sqlite))
            }
            StoreKind::Postgres => {
                let s = &self.schema;
                self.schema_made = true;
                psql(
                    &self.postgres,
                    &format!("DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}"),
                )
                .await?;
                Ok(postgres_url(&self.postgres, s))
            }
        }
    }
}

impl Drop for DurableStores {
    fn drop(&mut self) {
        if self.schema_made {
            // Best effort, bounded by PGCONNECT_TIMEOUT.
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            let _ = std::process::Command::new("psql")
                .args(psql_command(&self.postgres, &sql))
                .env("PGCONNECT_TIMEOUT", "10")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One durable-scenario run: a store, a room kind and what the scenario reported.
#[derive(Debug, Serialize)]
struct DurableRun {
    run: usize,
    store: &'static str,
    durable: bool,
    report: Report,
}

/// The medians of one store: `a` is the durable room, `b` the ordinary one.
#[derive(Debug)]
struct DurableRow {
    store: &'static str,
    pairs: Vec<Pair>,
}

impl DurableRow {
    fn pair(&self, key: &str) -> Option<&Pair> {
        self.pairs.iter().find(|p| p.key == key)
    }
}

fn render_durable(rows: &[DurableRow], runs: usize, pinned: bool) -> String {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), report::format_value);
    let mut table = Vec::new();
    for row in rows {
        for durable in [false, true] {
            let mut line = vec![
                row.store.to_owned(),
                if durable { "durable" } else { "ordinary" }.to_owned(),
            ];
            for (key, _) in DURABLE_COLUMNS {
                let pair = row.pair(key);
                line.push(cell(pair.and_then(|p| if durable { p.a } else { p.b })));
            }
            let ratio = if durable {
                row.pair("acked_per_sec")
                    .and_then(|p| p.ratio)
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
            } else {
                String::new()
            };
            line.push(ratio);
            table.push(line);
        }
    }
    let mut header = vec!["store", "room"];
    header.extend(DURABLE_COLUMNS.iter().map(|(_, h)| *h));
    header.push("acked/s vs ordinary");
    format!(
        "Durable publish (acked) — medians of {runs} run(s){}\n{}",
        if pinned {
            ", servers on CPU 0, load on CPU 1"
        } else {
            ", not pinned"
        },
        report::render_rows(&header, &table)
    )
}

/// One line per run whose figures that must stay 0 did not.
fn durable_warnings(results: &[DurableRun]) -> String {
    let mut out = String::new();
    for r in results {
        for m in r
            .report
            .metrics
            .iter()
            .filter(|m| DURABLE_ZEROES.contains(&m.key.as_str()) && m.value != 0.0)
        {
            out.push_str(&format!(
                "warning: run {} on {}, {} room: {} = {}\n",
                r.run,
                r.store,
                if r.durable { "durable" } else { "ordinary" },
                m.label,
                report::format_value(m.value)
            ));
        }
    }
    out
}

/// `compare --scenario durable`: see the module documentation.
async fn run_durable(plan: &Plan<'_>, dir: &Path, json: bool) -> Result<()> {
    let args = plan.args;
    let mut kinds: Vec<StoreKind> = Vec::new();
    for &kind in &args.stores {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let mut stores = DurableStores::new(dir, &args.postgres);
    let mut results: Vec<DurableRun> = Vec::new();
    for run in 0..args.runs {
        for kind in store_order(&kinds, run) {
            let url = stores
                .fresh(kind)
                .await
                .with_context(|| format!("preparing the {} store", kind.name()))?;
            eprintln!(
                "== run {}/{} durable on {} ({})",
                run + 1,
                args.runs,
                kind.name(),
                crate_redact(&url)
            );
            let running = plan
                .start_switchboard(&url)
                .await
                .with_context(|| format!("starting switchboard on the {} store", kind.name()))?;
            for scenario in durable_order(run) {
                let durable = matches!(scenario, Scenario::Durable(true));
                let room = if durable { "durable" } else { "ordinary" };
                let report = match plan.run_scenario(scenario, &running).await {
                    Ok(report) => report,
                    Err(e) => {
                        running.stop().await;
                        return Err(e.context(format!(
                            "run {} of durable ({room} room) on {}",
                            run + 1,
                            kind.name()
                        )));
                    }
                };
                eprintln!(
                    "== durable on {} {room} room: acked/s = {}",
                    kind.name(),
                    report
                        .get(scenario.headline())
                        .map_or_else(|| "-".into(), report::format_value)
                );
                results.push(DurableRun {
                    run: run + 1,
                    store: kind.name(),
                    durable,
                    report,
                });
            }
            running.stop().await;
        }
    }

    let rows: Vec<DurableRow> = kinds
        .iter()
        .map(|kind| {
            let of = |durable: bool| -> Vec<&Report> {
                results
                    .iter()
                    .filter(|r| r.store == kind.name() && r.durable == durable)
                    .map(|r| &r.report)
                    .collect()
            };
            DurableRow {
                store: kind.name(),
                pairs: pair_medians(&of(true), &of(false)),
            }
        })
        .collect();
    let table = render_durable(&rows, args.runs, plan.pin) + &durable_warnings(&results);
    if json {
        eprintln!("{table}");
        let medians: Vec<serde_json::Value> = rows
            .iter()
            .flat_map(|row| {
                row.pairs.iter().map(|p| {
                    serde_json::json!({
                        "store": row.store, "key": p.key, "label": p.label, "unit": p.unit,
                        "durable": p.a, "ordinary": p.b, "ratio": p.ratio,
                    })
                })
            })
            .collect();
        let summary = serde_json::json!({
            "compare": {
                "scenario": "durable", "runs": args.runs, "pinned": plan.pin,
                "medians": medians, "results": results,
            }
        });
        println!("{summary}");
    } else {
        println!("{table}");
    }
    Ok(())
}

/// A store URL as printed in progress lines: any password replaced by `***`.
fn crate_redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
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
    #[test]
    fn durable_rooms_and_stores_alternate_between_runs() {
        assert_eq!(durable_order(0)[0], Scenario::Durable(true));
        assert_eq!(durable_order(1)[0], Scenario::Durable(false));
        let all = [StoreKind::Memory, StoreKind::Sqlite, StoreKind::Postgres];
        assert_eq!(store_order(&all, 0), all.to_vec());
        assert_eq!(
            store_order(&all, 1),
            vec![StoreKind::Sqlite, StoreKind::Postgres, StoreKind::Memory]
        );
        assert_eq!(store_order(&all, 3), all.to_vec());
        assert!(store_order(&[], 5).is_empty());
    }

    #[test]
    fn store_urls_for_the_durable_comparison() {
        assert_eq!(
            sqlite_url(Path::new("/tmp/switchboard-bench-1/bench.db")),
            "sqlite:///tmp/switchboard-bench-1/bench.db"
        );
        assert_eq!(
            postgres_url("postgres://postgres@127.0.0.1:5432/test", "bench_7"),
            "postgres://postgres@127.0.0.1:5432/test?options[search_path]=bench_7"
        );
        assert_eq!(
            postgres_url("postgres://u@h/db?sslmode=disable", "bench_7"),
            "postgres://u@h/db?sslmode=disable&options[search_path]=bench_7"
        );
        assert_eq!(
            crate_redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(crate_redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(crate_redact("memory"), "memory");
    }

    #[test]
    fn durable_table_shows_both_rooms_and_the_ratio() {
        let report = |acked: f64, errors: f64| {
            let mut r = Report::new("durable", "ws://x/ws");
            r.push("acked_per_sec", "acked publishes/s", "msg/s", acked)
                .push("errors", "error replies", "msgs", errors);
            r
        };
        let durable = [report(100.0, 0.0), report(300.0, 0.0), report(200.0, 2.0)];
        let ordinary = [report(1000.0, 0.0)];
        let row = DurableRow {
            store: "sqlite",
            pairs: pair_medians(
                &durable.iter().collect::<Vec<_>>(),
                &ordinary.iter().collect::<Vec<_>>(),
            ),
        };
        let acked = row.pair("acked_per_sec").cloned();
        assert_eq!(acked.as_ref().and_then(|p| p.a), Some(200.0));
        assert_eq!(acked.as_ref().and_then(|p| p.ratio), Some(0.2));
        let text = render_durable(&[row], 3, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("medians of 3 run(s)"), "{text}");
        assert!(
            lines[2].starts_with("sqlite") && lines[2].contains("ordinary"),
            "{text}"
        );
        assert!(
            lines[3].contains("durable") && lines[3].trim_end().ends_with("0.20"),
            "{text}"
        );

        // Every run whose errors are not 0 is named, whatever the median.
        let results: Vec<DurableRun> = durable
            .iter()
            .enumerate()
            .map(|(i, r)| DurableRun {
                run: i + 1,
                store: "sqlite",
                durable: true,
                report: r.clone(),
            })
            .collect();
        assert_eq!(
            durable_warnings(&results),
            "warning: run 3 on sqlite, durable room: error replies = 2\n"
        );
    }
}
