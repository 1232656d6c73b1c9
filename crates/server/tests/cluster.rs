//! Cluster mode end to end: several `switchboard` processes against a private
//! `redis-server` started by the test, driven by tokio-tungstenite clients and plain
//! HTTP. Skipped (with a note) when `redis-server` is not installed; `scripts/test`
//! installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client and what it received while waiting for something else.
struct Client {
    ws: Ws,
    backlog: std::collections::VecDeque<Value>,
    /// The connection id from `welcome`.
    id: String,
}

const WAIT: Duration = Duration::from_secs(10);

/// Heartbeats fast enough for a test: a dead node is noticed within about 2 s.
const CLUSTER_TOML: &str = "[cluster]\nheartbeat_ms = 300\nnode_ttl_ms = 1500\n";

// ---- processes --------------------------------------------------------------------

struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_available() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Redis {
    async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    async fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server");
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if redis.ping().await {
                return redis;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ping(&self) -> bool {
        self.command("PING\r\n").await.starts_with("+PONG")
    }

    /// One inline command, its raw reply.
    async fn command(&self, line: &str) -> String {
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return String::new();
        };
        if s.write_all(line.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            _ => String::new(),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn stop(mut self) -> u16 {
        self.child.kill().await.unwrap();
        self.port
    }
}

struct Node {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(redis: &Redis, id: &str) -> Node {
        Node::start_with(redis, id, "").await
    }

    /// A node whose configuration file adds `extra` to the cluster settings.
    async fn start_with(redis: &Redis, id: &str, extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("switchboard.toml");
        std::fs::write(&config, format!("{CLUSTER_TOML}{extra}")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
            .args(["--redis", &redis.url(), "--node-id", id])
            .arg("--config")
            .arg(&config)
            .env("SWITCHBOARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    return rest.trim().parse::<SocketAddr>().unwrap();
                }
            }
            panic!("node {id} exited before listening");
        })
        .await
        .expect("node did not start");
        // Keep draining its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            addr,
            child,
            _dir: dir,
        }
    }

    async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

// ---- clients ----------------------------------------------------------------------

async fn connect(node: &Node, client_id: &str) -> Client {
    let url = format!("ws://{}/ws?client_id={client_id}", node.addr);
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    let mut c = Client {
        ws,
        backlog: Default::default(),
        id: String::new(),
    };
    let welcome = until(&mut c, "welcome").await;
    c.id = welcome["connection_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    c
}

async fn next_json(c: &mut Client) -> Value {
    if let Some(v) = c.backlog.pop_front() {
        return v;
    }
    loop {
        let m = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("timed out")
            .expect("ended")
            .expect("error");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn until(ws: &mut Client, ty: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

async fn send(c: &mut Client, v: Value) {
    c.ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn join(ws: &mut Client, room: &str, since: Option<Value>) -> Value {
    let mut req = json!({"type":"join","room":room,"id":"j"});
    if let Some(s) = since {
        req["since"] = s;
    }
    send(ws, req).await;
    until(ws, "joined").await
}

async fn publish(c: &mut Client, room: &str, data: Value) -> u64 {
    send(
        c,
        json!({"type":"publish","room":room,"data":data,"id":"p"}),
    )
    .await;
    let mut other = Vec::new();
    let offset = loop {
        let v = next_json(c).await;
        if v["id"] == "p" {
            assert_eq!(v["type"], "ack", "publish refused: {v}");
            break v["offset"].as_u64().unwrap();
        }
        other.push(v);
    };
    // Keep what came meanwhile, in order, ahead of anything not read yet.
    for v in other.into_iter().rev() {
        c.backlog.push_front(v);
    }
    offset
}

/// The next `n` room messages' offsets and data.
async fn messages(ws: &mut Client, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = next_json(ws).await;
        if v["type"] == "message" {
            out.push((v["offset"].as_u64().unwrap(), v["data"].clone()));
        }
    }
    out
}

/// A plain HTTP/1.1 request; returns status and JSON body (Null when empty).
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let text = exchange(addr, &req).await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The `/metrics` page (plain text, not JSON).
async fn metrics_text(addr: SocketAddr) -> String {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, &req).await
}

/// Sends one HTTP request (with `Connection: close`) and reads the whole answer.
async fn exchange(addr: SocketAddr, req: &str) -> String {
    let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

/// Polls `f` until it is true, at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! need_redis {
    () => {
        if !redis_available() {
            eprintln!("redis-server not installed: cluster test skipped");
            return;
        }
    };
}

// ---- tests ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_order_and_recovery_crosses_nodes() {
    need_redis!();
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1").await;
    let n2 = Node::start(&redis, "n2").await;
    let n3 = Node::start(&redis, "n3").await;
    let mut a = connect(&n1, "a").await;
    let mut b = connect(&n2, "b").await;
    let mut c = connect(&n3, "c").await;
    for ws in [&mut a, &mut b, &mut c] {
        let j = join(ws, "lobby", None).await;
        assert_eq!(j["offset"], 0);
    }
    // Publishers on two nodes, interleaved.
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(publish(&mut a, "lobby", json!({"from":"a","i":i})).await);
        acked.push(publish(&mut b, "lobby", json!({"from":"b","i":i})).await);
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=20).collect::<Vec<_>>(),
        "offsets are unique and dense"
    );
    let seen_c = messages(&mut c, 20).await;
    let offsets: Vec<u64> = seen_c.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    // Same order, same offsets on every node.
    let seen_a = messages(&mut a, 20).await;
    let seen_b = messages(&mut b, 20).await;
    assert_eq!(seen_a, seen_c);
    assert_eq!(seen_b, seen_c);

    // c leaves at offset 20; 5 more messages; c comes back on another node.
    let epoch = join(&mut connect(&n3, "probe").await, "lobby", None).await["epoch"].clone();
    drop(c);
    for i in 0..5 {
        publish(&mut a, "lobby", json!({"late":i})).await;
    }
    // An ack means Redis numbered the message; a node has it once its members do.
    assert_eq!(messages(&mut a, 5).await.last().unwrap().0, 25);
    assert_eq!(messages(&mut b, 5).await.last().unwrap().0, 25);
    let mut c2 = connect(&n1, "c").await;
    let j = join(&mut c2, "lobby", Some(json!({"offset":20,"epoch":epoch}))).await;
    assert_eq!(j["recovered_complete"], true, "{j}");
    let rec: Vec<u64> = j["recovered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(rec, vec![21, 22, 23, 24, 25]);
    // A node that never had the room serves its history too.
    let mut d = connect(&n2, "d").await;
    send(
        &mut d,
        json!({"type":"join","room":"lobby","since":{"offset":23,"epoch":epoch}}),
    )
    .await;
    let j = until(&mut d, "joined").await;
    assert_eq!(j["offset"], 25);
    assert_eq!(j["recovered"].as_array().unwrap().len(), 2);
    let (status, body) = http(n3.addr, "GET", "/api/rooms/lobby/history?since=24", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["offset"], 25);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directs_presence_and_rest_work_from_any_node() {
    need_redis!();
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1").await;
    let n2 = Node::start(&redis, "n2").await;
    let mut a = connect(&n1, "alice").await;
    join(&mut a, "room", None).await;
    let mut b = connect(&n2, "bob").await;
    let j = join(&mut b, "room", None).await;
    let members: Vec<&str> = j["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(j["members_count"], 2, "{j}");
    assert!(
        members.contains(&"alice") && members.contains(&"bob"),
        "{j}"
    );
    let pj = until(&mut a, "presence_join").await;
    assert_eq!(pj["member"]["client_id"], "bob");
    let b_id = pj["member"]["connection_id"].as_str().unwrap().to_owned();

    send(&mut a, json!({"type":"presence","room":"room","id":"q"})).await;
    let p = until(&mut a, "presence").await;
    assert_eq!(p["count"], 2, "{p}");

    // WebSocket direct, by client id and by connection id, across nodes.
    send(
        &mut a,
        json!({"type":"direct","to":"bob","data":"hi","id":"d1"}),
    )
    .await;
    let ack = until(&mut a, "ack").await;
    assert_eq!(ack["id"], "d1");
    let d = until(&mut b, "direct").await;
    assert_eq!(
        (d["from"].as_str(), d["data"].as_str()),
        (Some("alice"), Some("hi"))
    );
    send(
        &mut a,
        json!({"type":"direct","to":b_id,"data":"again","id":"d2"}),
    )
    .await;
    assert_eq!(until(&mut b, "direct").await["data"], "again");
    send(
        &mut a,
        json!({"type":"direct","to":"nobody","data":1,"id":"d3"}),
    )
    .await;
    let e = until(&mut a, "error").await;
    assert_eq!(e["code"], "NOT_FOUND");

    // REST on node 1 about a connection on node 2.
    let (s, list) = http(n1.addr, "GET", "/api/connections", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["count"], 2, "cluster-wide list: {list}");
    let (s, one) = http(n1.addr, "GET", &format!("/api/connections/{b_id}"), None).await;
    assert_eq!(
        (s, one["connection"]["client_id"].as_str()),
        (200, Some("bob"))
    );
    let (s, _) = http(
        n1.addr,
        "POST",
        &format!("/api/connections/{b_id}/messages"),
        Some(json!({"data":"from rest"})),
    )
    .await;
    assert_eq!(s, 200);
    let d = until(&mut b, "direct").await;
    assert_eq!(
        (d["from"].as_str(), d["data"].as_str()),
        (Some("server"), Some("from rest"))
    );
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/rooms/side/join",
        Some(json!({"connection_id": b_id})),
    )
    .await;
    // No node has the room: node 2 refuses and node 1 reports its answer.
    assert_eq!(s, 404, "join of an unknown room");
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/broadcast",
        Some(json!({"data":"all"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(until(&mut b, "event").await["data"], "all");
    let (s, _) = http(n1.addr, "DELETE", "/api/rooms/room", None).await;
    assert_eq!(s, 204);
    assert_eq!(until(&mut b, "closed").await["room"], "room");
    let (s, _) = http(n1.addr, "DELETE", &format!("/api/connections/{b_id}"), None).await;
    assert_eq!(s, 204);
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match b.ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1000));
    let (s, _) = http(n1.addr, "DELETE", "/api/connections/nope", None).await;
    assert_eq!(s, 404);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_presence_everywhere() {
    need_redis!();
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1").await;
    let mut n2 = Node::start(&redis, "n2").await;
    let n3 = Node::start(&redis, "n3").await;
    let mut a = connect(&n1, "a").await;
    let mut c = connect(&n3, "c").await;
    join(&mut a, "watch", None).await;
    join(&mut c, "watch", None).await;
    until(&mut a, "presence_join").await;
    let mut b = connect(&n2, "b").await;
    join(&mut b, "watch", None).await;
    assert_eq!(
        until(&mut a, "presence_join").await["member"]["client_id"],
        "b"
    );
    assert_eq!(
        until(&mut c, "presence_join").await["member"]["client_id"],
        "b"
    );
    n2.kill9().await;
    let started = std::time::Instant::now();
    // node_ttl 1.5 s + heartbeat 0.3 s: well within the wait.
    let left = until(&mut a, "presence_leave").await;
    assert_eq!(left["member"]["client_id"], "b");
    assert_eq!(
        until(&mut c, "presence_leave").await["member"]["client_id"],
        "b"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    send(&mut a, json!({"type":"presence","room":"watch","id":"q"})).await;
    assert_eq!(until(&mut a, "presence").await["count"], 2);
    let (_, list) = http(n1.addr, "GET", "/api/connections", None).await;
    assert_eq!(
        list["count"], 2,
        "the dead node's connections are gone: {list}"
    );
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_traffic_reports_the_hole() {
    need_redis!();
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1").await;
    let n2 = Node::start(&redis, "n2").await;
    let mut a = connect(&n1, "a").await;
    let mut b = connect(&n2, "b").await;
    let j = join(&mut a, "live", None).await;
    join(&mut b, "live", None).await;
    let epoch = j["epoch"].clone();
    for i in 0..5 {
        publish(&mut a, "live", json!(i)).await;
    }
    assert_eq!(messages(&mut b, 5).await.last().unwrap().0, 5);

    let port = redis.stop().await;
    eventually(WAIT, "node 1 reports not ready", || async {
        http(n1.addr, "GET", "/readyz", None).await.0 == 503
    })
    .await;
    assert!(
        metrics_text(n1.addr)
            .await
            .contains("switchboard_cluster_ready 0"),
        "the metric follows readiness"
    );
    // Each node keeps serving its own members. Offset 5 was acked to node 1 by Redis;
    // if Redis went away before it came back through node 1, a hears of it as a gap.
    let o = publish(&mut a, "live", json!("alone")).await;
    assert_eq!(o, 6);
    let mut seen = Vec::new();
    loop {
        let v = next_json(&mut a).await;
        match v["type"].as_str() {
            Some("message") => {
                seen.push(v["offset"].as_u64().unwrap());
                if v["data"] == "alone" {
                    break;
                }
            }
            Some("gap") => {
                assert_eq!(
                    (v["from_offset"].as_u64(), v["to_offset"].as_u64()),
                    (Some(5), Some(5))
                );
                seen.push(5);
            }
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [1, 2, 3, 4, 5, 6],
        "every offset once, as a message or a gap"
    );
    let o = publish(&mut b, "live", json!("alone too")).await;
    assert_eq!(o, 6, "node 2 numbers on from what its members saw");
    assert_eq!(messages(&mut b, 1).await[0], (6, json!("alone too")));

    let redis = Redis::start_on(port).await;
    for n in [&n1, &n2] {
        eventually(Duration::from_secs(20), "ready again", || async {
            http(n.addr, "GET", "/readyz", None).await.0 == 200
        })
        .await;
    }
    assert!(
        metrics_text(n1.addr)
            .await
            .contains("switchboard_cluster_ready 1")
    );
    // What each node served alone reaches the other node's members, once.
    let shared = messages(&mut b, 1).await;
    assert_eq!(
        shared[0].1,
        json!("alone"),
        "node 1's message reached node 2"
    );
    assert!(shared[0].0 > 6, "numbered in the new epoch: {shared:?}");
    let shared = messages(&mut a, 1).await;
    assert_eq!(
        shared[0].1,
        json!("alone too"),
        "node 2's message reached node 1"
    );
    // Traffic crosses nodes again, offsets above anything seen on either node.
    let o = publish(&mut a, "live", json!("back")).await;
    assert!(o > 6, "offset {o}");
    for c in [&mut a, &mut b] {
        let m = messages(c, 1).await;
        assert_eq!(m[0], (o, json!("back")), "no duplicate before it");
    }
    // Whoever recovers across the outage learns of the hole.
    let mut late = connect(&n2, "late").await;
    let j = join(&mut late, "live", Some(json!({"offset":5,"epoch":epoch}))).await;
    assert_eq!(j["recovered_complete"], false, "{j}");
    assert_ne!(j["epoch"], epoch);
    drop(redis);
}

/// The value of parameter `name` in a `state` reply to `sync`.
async fn param_value(c: &mut Client, room: &str, name: &str) -> Value {
    send(c, json!({"type":"sync","room":room,"id":"s"})).await;
    let state = until(c, "state").await;
    state["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["value"].clone())
        .unwrap_or_else(|| panic!("no `{name}` in {state}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_and_triggers_reach_members_on_every_node() {
    need_redis!();
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1").await;
    let n2 = Node::start(&redis, "n2").await;
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/rooms",
        Some(json!({"id":"stage","params":[{"name":"gain","value":0.5,"min":0,"max":1}]})),
    )
    .await;
    assert_eq!(s, 201);
    let mut a = connect(&n1, "a").await;
    join(&mut a, "stage", None).await;
    send(
        &mut a,
        json!({"type":"param","room":"stage","param":"gain","value":0.8,"id":"v"}),
    )
    .await;
    assert_eq!(until(&mut a, "ack").await["id"], "v");

    // n2 starts serving the room (defined on n1 only) and takes its values from Redis.
    let mut b = connect(&n2, "b").await;
    join(&mut b, "stage", None).await;
    assert_eq!(param_value(&mut b, "stage", "gain").await, 0.8);

    // A set on n1 (client, then REST) reaches the member on n2 as `update`.
    send(
        &mut a,
        json!({"type":"param","room":"stage","param":"gain","value":0.6,"at":7}),
    )
    .await;
    let u = until(&mut b, "update").await;
    assert_eq!(
        (&u["room"], &u["param"], &u["value"], &u["at"], &u["from"]),
        (
            &json!("stage"),
            &json!("gain"),
            &json!(0.6),
            &json!(7),
            &json!("a")
        )
    );
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/rooms/stage/params",
        Some(json!({"name":"gain","value":0.3})),
    )
    .await;
    assert_eq!(s, 200);
    let u = until(&mut b, "update").await;
    assert_eq!((&u["value"], &u["from"]), (&json!(0.3), &json!("server")));

    // A late joiner on n2 (already serving the room) sees the latest value.
    let mut c = connect(&n2, "c").await;
    join(&mut c, "stage", None).await;
    assert_eq!(param_value(&mut c, "stage", "gain").await, 0.3);

    // A trigger on n2 reaches the member on n1.
    send(
        &mut b,
        json!({"type":"trigger","room":"stage","name":"drop","data":{"n":1},"at":9}),
    )
    .await;
    let t = until(&mut a, "trigger").await;
    assert_eq!(
        (&t["room"], &t["name"], &t["data"], &t["at"], &t["from"]),
        (
            &json!("stage"),
            &json!("drop"),
            &json!({"n":1}),
            &json!(9),
            &json!("b")
        )
    );
    assert_eq!(until(&mut c, "trigger").await["name"], "drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_created_through_one_node_are_rooms_of_every_node() {
    need_redis!();
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1").await;
    let n2 = Node::start(&redis, "n2").await;
    let (s, made) = http(
        n1.addr,
        "POST",
        "/api/rooms",
        Some(json!({"id":"locked","code":"2468","max_connections":1,"name":"Locked"})),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    // Another node knows it: listed, described, and a second creation conflicts.
    let (s, list) = http(n2.addr, "GET", "/api/rooms", None).await;
    assert_eq!(s, 200);
    assert!(
        list["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "locked"),
        "{list}"
    );
    let (s, one) = http(n2.addr, "GET", "/api/rooms/locked", None).await;
    assert_eq!((s, one["room"]["name"].as_str()), (200, Some("Locked")));
    let (s, _) = http(n2.addr, "POST", "/api/rooms", Some(json!({"id":"locked"}))).await;
    assert_eq!(s, 409);

    // Its code is asked for on the other node too.
    let mut b = connect(&n2, "bob").await;
    send(&mut b, json!({"type":"join","room":"locked","id":"j1"})).await;
    assert_eq!(until(&mut b, "error").await["code"], "INVALID_ROOM");
    send(
        &mut b,
        json!({"type":"join","room":"locked","code":"2468","id":"j2"}),
    )
    .await;
    let joined = until(&mut b, "joined").await;
    assert_eq!(joined["room"], "locked");
    let (s, one) = http(n1.addr, "GET", "/api/rooms/locked", None).await;
    assert_eq!((s, one["room"]["members_count"].as_u64()), (200, Some(1)));
    let (s, p) = http(n1.addr, "GET", "/api/rooms/locked/presence", None).await;
    assert_eq!((s, p["count"].as_u64()), (200, Some(1)), "{p}");

    // A REST join on node 1 of a connection on node 2 gets node 2's refusal: full.
    let mut c = connect(&n2, "carol").await;
    let welcome_id = c.id.clone();
    assert!(!welcome_id.is_empty());
    let (s, e) = http(
        n1.addr,
        "POST",
        "/api/rooms/locked/join",
        Some(json!({"connection_id": welcome_id})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("ROOM_FULL")),
        "{e}"
    );
    drop(c.ws.close(None).await);

    // Two joins at the same moment on two nodes into a room with one place: the
    // cluster-wide count decides, exactly one gets in.
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/rooms",
        Some(json!({"id":"duo","max_connections":1})),
    )
    .await;
    assert_eq!(s, 201);
    let mut x = connect(&n1, "x").await;
    let mut y = connect(&n2, "y").await;
    send(&mut x, json!({"type":"join","room":"duo","id":"jx"})).await;
    send(&mut y, json!({"type":"join","room":"duo","id":"jy"})).await;
    let mut outcomes = Vec::new();
    for c in [&mut x, &mut y] {
        let v = loop {
            let v = next_json(c).await;
            if v["type"] == "joined" || v["type"] == "error" {
                break v;
            }
        };
        outcomes.push(if v["type"] == "joined" {
            "joined".to_owned()
        } else {
            v["code"].as_str().unwrap_or_default().to_owned()
        });
    }
    outcomes.sort();
    assert_eq!(outcomes, ["ROOM_FULL", "joined"]);

    // Closed through node 2; gone on node 1.
    let (s, _) = http(n2.addr, "DELETE", "/api/rooms/locked", None).await;
    assert_eq!(s, 204);
    assert_eq!(until(&mut b, "closed").await["room"], "locked");
    eventually(WAIT, "node 1 closed its copy", || async {
        http(n1.addr, "GET", "/api/rooms/locked", None).await.0 == 404
    })
    .await;
    let (s, _) = http(n1.addr, "DELETE", "/api/rooms/locked", None).await;
    assert_eq!(s, 404);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_set_during_a_redis_outage_reaches_every_node_after_it() {
    need_redis!();
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1").await;
    let n2 = Node::start(&redis, "n2").await;
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/rooms",
        Some(json!({"id":"mix","params":[{"name":"gain","value":0.5}]})),
    )
    .await;
    assert_eq!(s, 201);
    let mut a = connect(&n1, "a").await;
    let mut b = connect(&n2, "b").await;
    join(&mut a, "mix", None).await;
    join(&mut b, "mix", None).await;
    assert_eq!(param_value(&mut b, "mix", "gain").await, 0.5);

    let port = redis.stop().await;
    eventually(WAIT, "node 1 reports not ready", || async {
        http(n1.addr, "GET", "/readyz", None).await.0 == 503
    })
    .await;
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/rooms/mix/params",
        Some(json!({"name":"gain","value":0.9})),
    )
    .await;
    assert_eq!(s, 200, "served by node 1 alone");
    assert_eq!(until(&mut a, "update").await["value"], 0.9);

    // Redis comes back empty: node 1 shares the value again, node 2's member is told.
    let redis = Redis::start_on(port).await;
    let update = until(&mut b, "update").await;
    assert_eq!(
        (update["param"].as_str(), update["value"].as_f64()),
        (Some("gain"), Some(0.9))
    );
    assert_eq!(param_value(&mut b, "mix", "gain").await, 0.9);
    // The room's definition is back too: a third node knows it.
    let n3 = Node::start(&redis, "n3").await;
    eventually(
        Duration::from_secs(20),
        "definition shared again",
        || async { http(n3.addr, "GET", "/api/rooms/mix", None).await.0 == 200 },
    )
    .await;
    drop(redis);
}

/// A node whose pub/sub inbox overflows (here: an inbox of one message against a burst)
/// drops messages rather than buffering without bound, and still delivers every offset
/// once, in order, by fetching what it dropped from the room's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_falls_behind_drops_then_recovers_every_message() {
    need_redis!();
    use switchboard_hub::{Broker, ConnectInfo, EndpointRules, Hub, HubConfig, Outgoing, RoomSpec};
    use switchboard_redis::{ClusterConfig, RedisBroker};
    let redis = Redis::start().await;
    let node = |id: &str| {
        Hub::new(HubConfig {
            node_id: id.into(),
            ..HubConfig::default()
        })
    };
    let (h1, h2) = (node("p1"), node("p2"));
    let config = |id: &str, inbox: usize| ClusterConfig {
        node_id: id.into(),
        inbox,
        ..ClusterConfig::default()
    };
    RedisBroker::start(&h1, &redis.url(), config("p1", 1024))
        .await
        .unwrap();
    let slow = RedisBroker::start(&h2, &redis.url(), config("p2", 1))
        .await
        .unwrap();
    h1.create_room(RoomSpec {
        id: Some("burst".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut rules = EndpointRules::new("/ws");
    rules.queue_size = 100_000;
    let member = h2.connect(
        ConnectInfo {
            client_id: Some("m".into()),
            ..Default::default()
        },
        std::sync::Arc::new(rules),
        None,
    );
    h2.handle_frame(&member, br#"{"type":"join","room":"burst"}"#)
        .await;
    // Fewer than the stream keeps (`stream_len`, 1000): everything dropped can be
    // fetched back, so any `gap` would be a bug.
    const N: u64 = 600;
    let publisher = tokio::spawn(async move {
        let sends = (0..N).map(|i| h1.publish("burst", json!(i), &[]));
        for r in futures_util::future::join_all(sends).await {
            r.unwrap();
        }
        h1
    });
    let mut offsets = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while offsets.len() < N as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {N} delivered",
            offsets.len()
        );
        let mut out = Vec::new();
        member
            .queue()
            .drain_into(&mut out, switchboard_protocol::Encoding::Json);
        for o in out {
            if let Outgoing::Text(b) = o {
                let v: Value = serde_json::from_slice(&b).unwrap();
                assert_ne!(v["type"], "gap", "nothing should be lost: {v}");
                if v["type"] == "message" {
                    offsets.push(v["offset"].as_u64().unwrap());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _h1 = publisher.await.unwrap();
    assert_eq!(offsets, (1..=N).collect::<Vec<_>>(), "once each, in order");
    assert!(
        slow.dropped_messages() > 0,
        "the one-message inbox overflowed"
    );
    drop(redis);
}

/// A webhook receiver: answers 200 to every POST and hands the JSON bodies over.
async fn webhook_receiver() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + len]) {
                        let _ = tx.send(v);
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (addr, rx)
}

/// The next lifecycle event, as `(event, client_id, node_id)`.
async fn next_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
) -> (String, String, String) {
    let v = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a lifecycle event in time")
        .unwrap();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    (s("event"), s("client_id"), s("node_id"))
}

/// Lifecycle events a node has delivered, from its metrics.
async fn delivered(addr: SocketAddr) -> u64 {
    metrics_text(addr)
        .await
        .lines()
        .find(|l| {
            l.starts_with("switchboard_webhook_lifecycle_events_total{outcome=\"delivered\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_webhooks_count_rooms_and_members_on_every_node() {
    need_redis!();
    let redis = Redis::start().await;
    let (hook, mut events) = webhook_receiver().await;
    let extra = format!(
        "[webhooks]\nurl = \"http://{hook}/events\"\nevents = [\"room_occupied\", \"room_vacated\", \"member_joined\", \"member_left\"]\n"
    );
    let n1 = Node::start_with(&redis, "n1", &extra).await;
    let mut n2 = Node::start_with(&redis, "n2", &extra).await;
    let mut a1 = connect(&n1, "alice").await;
    let mut b = connect(&n2, "bob").await;
    let mut a2 = connect(&n2, "alice").await;
    join(&mut a1, "hooked", None).await;
    join(&mut b, "hooked", None).await;
    join(&mut a2, "hooked", None).await; // alice's second connection: no event
    for c in [&mut a1, &mut b, &mut a2] {
        send(c, json!({"type":"leave","room":"hooked","id":"l"})).await;
        until(c, "left").await;
    }
    // Every change is acknowledged, so every event is queued: 2 on node 1, 4 on node 2.
    eventually(WAIT, "events delivered", || async {
        delivered(n1.addr).await == 2 && delivered(n2.addr).await == 4
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next_event(&mut events).await);
    }
    got.sort();
    let want = |e: &str, c: &str, n: &str| (e.to_owned(), c.to_owned(), n.to_owned());
    assert_eq!(
        got,
        vec![
            want("member_joined", "alice", "n1"),
            want("member_joined", "bob", "n2"),
            want("member_left", "alice", "n2"),
            want("member_left", "bob", "n2"),
            want("room_occupied", "alice", "n1"),
            want("room_vacated", "alice", "n2"),
        ],
        "one event per cluster-wide change, from the node that made it"
    );

    // A node dies with the last member: the node that reaps it reports the leave.
    let mut c = connect(&n2, "carol").await;
    join(&mut c, "hooked", None).await;
    let mut got = vec![next_event(&mut events).await, next_event(&mut events).await];
    got.sort();
    assert_eq!(
        got,
        vec![
            want("member_joined", "carol", "n2"),
            want("room_occupied", "carol", "n2")
        ]
    );
    n2.kill9().await;
    let mut got = vec![next_event(&mut events).await, next_event(&mut events).await];
    got.sort();
    assert_eq!(
        got,
        vec![
            want("member_left", "carol", "n1"),
            want("room_vacated", "carol", "n1")
        ]
    );
    drop(redis);
}
