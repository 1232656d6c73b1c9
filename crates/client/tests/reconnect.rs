//! The client against a real server: reconnects through cut links, half-open links and a
//! server restart, with zero loss and no duplicates; backoff and Retry-After; typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, WAIT, is_connected, offsets, start, until};
use serde_json::json;
use switchboard_client::backoff::backoff_ceiling;
use switchboard_client::{Client, ClientError, ClientOptions, Encoding, ErrorCode, Event, Status};
use switchboard_hub::RoomSpec;

fn fast() -> ClientOptions {
    ClientOptions {
        retry_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        ping_interval: Duration::from_millis(300),
        liveness_timeout: Duration::from_millis(1500),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_offset_once_in_order_across_cuts() {
    let (srv, hub) = start("memory", "").await;
    let proxy = Proxy::start(srv.addr).await;
    let (client, mut events) = Client::connect(&proxy.url(), fast()).await.unwrap();
    client.join("r").await.unwrap();
    const N: u64 = 120;
    let cutter = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(90)).await;
                proxy.cut();
            }
        })
    };
    for i in 1..=N {
        hub.publish("r", json!({ "n": i }), &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    cutter.await.unwrap();
    let seen = until(
        &mut events,
        |e| matches!(e, Event::Message(m) if m.offset == N),
    )
    .await;
    assert_eq!(offsets(&seen, "r"), (1..=N).collect::<Vec<_>>());
    let reconnects = seen
        .iter()
        .filter(|e| matches!(e, Event::Status(Status::Reconnecting { .. })))
        .count();
    assert!(reconnects >= 1, "the link was never cut: {seen:#?}");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::RecoveryIncomplete { .. })),
        "history covered every outage"
    );
    drop(client);
    srv.stop().await;
}

#[tokio::test]
async fn requests_made_while_disconnected_are_sent_after_the_reconnect() {
    let (srv, _hub) = start("memory", "").await;
    let proxy = Proxy::start(srv.addr).await;
    let mut opts = fast();
    opts.retry_delay = Duration::from_millis(1500);
    opts.max_delay = Duration::from_millis(1500);
    opts.queue_limit = 3;
    let (client, mut events) = Client::connect(&proxy.url(), opts).await.unwrap();
    client.join("q").await.unwrap();
    // The server stays out of reach until the requests are in: nothing can leave the
    // queue early, whatever delay the jittered backoff picks.
    proxy.refuse(true);
    proxy.cut();
    until(&mut events, |e| {
        matches!(e, Event::Status(Status::Reconnecting { .. }))
    })
    .await;
    let mut pubs = tokio::task::JoinSet::new();
    for i in 0..4 {
        let c = client.clone();
        pubs.spawn(async move { c.publish("q", json!(i)).await });
    }
    // Three fit in the queue and wait for the server; whichever came fourth is refused
    // at once.
    match tokio::time::timeout(WAIT, pubs.join_next()).await {
        Ok(Some(Ok(Err(ClientError::QueueFull { limit: 3 })))) => {}
        other => panic!("expected QueueFull first, got {other:?}"),
    }
    proxy.refuse(false);
    client.retry_now();
    let mut acked = Vec::new();
    while let Some(p) = tokio::time::timeout(WAIT, pubs.join_next()).await.unwrap() {
        acked.push(p.unwrap().unwrap());
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        [1, 2, 3],
        "queued publishes went out after the rejoin"
    );
    let seen = until(
        &mut events,
        |e| matches!(e, Event::Message(m) if m.offset == 3),
    )
    .await;
    assert_eq!(offsets(&seen, "q"), [1, 2, 3]);
    srv.stop().await;
}

#[tokio::test]
async fn a_durable_room_recovers_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/sb.db", dir.path().display());
    let (srv, hub) = start(&store, "").await;
    hub.create_room(RoomSpec {
        id: Some("d".into()),
        durable: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    let proxy = Proxy::start(srv.addr).await;
    let (client, mut events) = Client::connect(&proxy.url(), fast()).await.unwrap();
    let joined = client.join("d").await.unwrap();
    for i in 1..=5 {
        hub.publish("d", json!(i), &[]).await.unwrap();
    }
    let mut seen = until(
        &mut events,
        |e| matches!(e, Event::Message(m) if m.offset == 5),
    )
    .await;
    // Graceful shutdown: the server sends closed{retry_after_ms} and the client obeys it.
    srv.stop().await;
    drop(hub);
    seen.extend(
        until(&mut events, |e| {
            matches!(e, Event::Status(Status::Reconnecting { .. }))
        })
        .await,
    );
    let delay = seen.iter().rev().find_map(|e| match e {
        Event::Status(Status::Reconnecting { delay, .. }) => Some(*delay),
        _ => None,
    });
    assert!(
        delay.unwrap() >= Duration::from_millis(1000),
        "retry_after_ms obeyed: {delay:?}"
    );
    let (srv2, hub2) = start(&store, "").await;
    proxy.retarget(srv2.addr);
    for i in 6..=10 {
        hub2.publish("d", json!(i), &[]).await.unwrap();
    }
    seen.extend(
        until(
            &mut events,
            |e| matches!(e, Event::Message(m) if m.offset == 10),
        )
        .await,
    );
    for i in 11..=12 {
        hub2.publish("d", json!(i), &[]).await.unwrap();
    }
    seen.extend(
        until(
            &mut events,
            |e| matches!(e, Event::Message(m) if m.offset == 12),
        )
        .await,
    );
    assert_eq!(offsets(&seen, "d"), (1..=12).collect::<Vec<_>>());
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::RecoveryIncomplete { .. }))
    );
    assert_eq!(
        client.position("d").unwrap().epoch,
        joined.epoch,
        "same epoch after restart"
    );
    client.close().await;
    srv2.stop().await;
}

#[tokio::test]
async fn a_lost_room_history_is_reported_not_hidden() {
    let (srv, hub) = start("memory", "").await;
    let proxy = Proxy::start(srv.addr).await;
    let (client, mut events) = Client::connect(&proxy.url(), fast()).await.unwrap();
    client.join("m").await.unwrap();
    hub.publish("m", json!(1), &[]).await.unwrap();
    until(&mut events, |e| matches!(e, Event::Message(_))).await;
    // A new server process with a memory store: the room comes back with a new epoch.
    srv.stop().await;
    let (srv2, hub2) = start("memory", "").await;
    proxy.retarget(srv2.addr);
    let seen = until(&mut events, |e| {
        matches!(e, Event::RecoveryIncomplete { .. })
    })
    .await;
    let Some(Event::RecoveryIncomplete {
        room,
        since,
        previous_epoch,
        epoch,
        ..
    }) = seen.last()
    else {
        unreachable!()
    };
    assert_eq!((room.as_str(), *since), ("m", 1));
    assert_ne!(previous_epoch, epoch);
    hub2.publish("m", json!("new"), &[]).await.unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Message(_))).await;
    let Some(Event::Message(m)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(
        (m.offset, &m.data),
        (1, &json!("new")),
        "new epoch, numbering restarts"
    );
    srv2.stop().await;
}

#[tokio::test]
async fn a_silent_half_open_link_is_detected_within_the_liveness_timeout() {
    let (srv, _hub) = start("memory", "").await;
    let proxy = Proxy::start(srv.addr).await;
    let opts = ClientOptions {
        ping_interval: Duration::from_millis(200),
        liveness_timeout: Duration::from_millis(800),
        retry_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let (client, mut events) = Client::connect(&proxy.url(), opts).await.unwrap();
    client.join("h").await.unwrap();
    let silenced = Instant::now();
    proxy.silence();
    until(&mut events, |e| {
        matches!(e, Event::Status(Status::Disconnected { .. }))
    })
    .await;
    let took = silenced.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "detected too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "detected too late: {took:?}"
    );
    // New links pass again: it reconnects and is back in its room.
    until(&mut events, is_connected).await;
    until(&mut events, |e| {
        matches!(
            e,
            Event::Server(switchboard_client::ServerMessage::Joined { .. })
        )
    })
    .await;
    assert_eq!(client.rooms(), ["h"]);
    srv.stop().await;
}

#[tokio::test]
async fn backoff_delays_stay_within_their_bounds_and_retries_are_capped() {
    // A port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let base = Duration::from_millis(40);
    let cap = Duration::from_millis(200);
    let opts = ClientOptions {
        retry_delay: base,
        max_delay: cap,
        max_retries: Some(6),
        ..Default::default()
    };
    let started = Instant::now();
    let err = Client::connect(&format!("ws://{addr}/ws"), opts.clone())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Closed { .. }), "{err}");
    let (_c, mut events) = Client::start(&format!("ws://{addr}/ws"), opts).unwrap();
    let seen = until(&mut events, |e| {
        matches!(e, Event::Status(Status::Failed { .. }))
    })
    .await;
    let delays: Vec<(u32, Duration)> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Status(Status::Reconnecting { attempt, delay }) => Some((*attempt, *delay)),
            _ => None,
        })
        .collect();
    assert_eq!(
        delays.iter().map(|d| d.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    for (attempt, delay) in &delays {
        assert!(
            *delay < backoff_ceiling(attempt - 1, base, cap),
            "{attempt}: {delay:?}"
        );
    }
    // Six waits of at most 40+80+160+200+200+200 ms.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_503_retry_after_is_obeyed() {
    let (srv, _hub) = start(
        "memory",
        "[[endpoint]]\npath = \"/ws\"\nmax_connections = 1\n",
    )
    .await;
    let url = format!("ws://{}/ws", srv.addr);
    let (_first, _e) = Client::connect(&url, fast()).await.unwrap();
    let (second, mut events) = Client::start(&url, fast()).unwrap();
    let seen = until(&mut events, |e| {
        matches!(e, Event::Status(Status::Reconnecting { .. }))
    })
    .await;
    let Some(Event::Status(Status::Reconnecting { delay, .. })) = seen.last() else {
        unreachable!()
    };
    assert_eq!(
        *delay,
        Duration::from_secs(5),
        "Retry-After: 5 instead of a 50 ms backoff"
    );
    assert!(seen.iter().any(|e| matches!(e, Event::Status(Status::Disconnected { reason, .. }) if reason.contains("503"))));
    second.close().await;
    srv.stop().await;
}

#[tokio::test]
async fn typed_requests_work_in_messagepack_and_errors_are_typed() {
    let (srv, _hub) = start("memory", "").await;
    let url = format!("ws://{}/ws", srv.addr);
    let dir = tempfile::tempdir().unwrap();
    let remember = dir.path().join("last");
    let opts = ClientOptions {
        encoding: Encoding::MsgPack,
        name: Some("mp".into()),
        remember: Some(remember.clone()),
        ..fast()
    };
    let (a, mut events) = Client::connect(&url, opts).await.unwrap();
    assert_eq!(
        switchboard_client::remember::load(&remember).as_deref(),
        Some(url.as_str()),
        "the server that worked is remembered"
    );
    let (b, _) = Client::connect(&url, fast()).await.unwrap();
    let err = a.publish("nowhere", json!(1)).await.unwrap_err();
    assert!(
        matches!(
            err.server_code(),
            Some(ErrorCode::InvalidRoom | ErrorCode::NotInRoom)
        ),
        "{err}"
    );
    let joined = a.join("t").await.unwrap();
    assert_eq!(joined.members.len(), 1);
    b.join("t").await.unwrap();
    assert_eq!(b.publish("t", json!({"x": 1})).await.unwrap(), 1);
    let seen = until(&mut events, |e| matches!(e, Event::Message(_))).await;
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Server(switchboard_client::ServerMessage::PresenceJoin { .. })
    )));
    assert_eq!(a.presence("t", None, None).await.unwrap().count, 2);
    assert_eq!(a.history("t", None, None).await.unwrap().messages.len(), 1);
    let id = b.connection_id().await.unwrap();
    a.direct(&id, json!("psst")).await.unwrap();
    a.set_meta(serde_json::Map::new()).await.unwrap();
    assert!(a.sync("t").await.unwrap().is_empty());
    a.trigger("t", "go", None, Some(a.server_now() + 100))
        .await
        .unwrap();
    let pong = a.ping().await.unwrap();
    assert!(pong.rtt_ms >= 0);
    // Same machine, same clock: the estimate is within a few ms.
    let skew =
        (a.server_now() - switchboard_client::clock::unix_ms(std::time::SystemTime::now())).abs();
    assert!(skew < 50, "offset {skew} ms");
    let at = a.server_now() + 1000;
    assert_eq!(a.to_server_time(a.to_local_time(at)), at);
    a.leave("t").await.unwrap();
    assert!(a.rooms().is_empty());
    a.close().await;
    assert!(matches!(
        a.publish("t", json!(1)).await,
        Err(ClientError::Closed { .. })
    ));
    srv.stop().await;
}
