//! A device's identity, all the way through (issue 14): rebinding a device to another patient
//! ends what it had (its open connection, its persistent session and subscriptions), and a
//! flood of idle connections cannot lock registered devices out.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use wardlink_tests::{Dashboard, Hub, PATIENCE, is};

fn options(addr: SocketAddr, id: &str, pass: &str, persistent: bool) -> MqttOptions {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_credentials(id, pass);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(!persistent);
    opts
}

/// Polls until the CONNACK; returns its "session present".
async fn connack(events: &mut EventLoop) -> Result<bool, ConnectionError> {
    loop {
        match tokio::time::timeout(PATIENCE, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(c)))) => return Ok(c.session_present),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => panic!("no CONNACK within {PATIENCE:?}"),
        }
    }
}

/// Publishes a QoS 1 reading and polls until its PUBACK.
async fn publish(
    client: &AsyncClient,
    events: &mut EventLoop,
    topic: &str,
    payload: &str,
) -> anyhow::Result<()> {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await?;
    loop {
        match tokio::time::timeout(PATIENCE, events.poll()).await? {
            Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(e) => anyhow::bail!("no PUBACK: {e}"),
        }
    }
}

/// Polls until the next PUBLISH (its topic) or SUBACK (""), or the end of the connection.
async fn next(events: &mut EventLoop) -> Option<String> {
    loop {
        match tokio::time::timeout(PATIENCE, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return Some(p.topic),
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => return Some(String::new()),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => panic!("nothing within {PATIENCE:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_a_device_closes_its_open_connection() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-r", "ward-r", |_| {}).await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-r")).await?;
    let addr = edge.running.mqtt_addr;
    let pw = edge.register("mon-r", "bed-09")?;
    let (client, mut events) = AsyncClient::new(options(addr, "mon-r", &pw, false), 16);
    connack(&mut events).await?;
    publish(
        &client,
        &mut events,
        "patients/bed-09/vitals",
        r#"{"hr":61}"#,
    )
    .await?;
    dash.until(|v| is(v, "vitals", "bed-09")).await?;

    // The monitor moves to bed-01: the open connection ends within a second or so, before the
    // device can write another reading into bed-09's record.
    let new_pw = edge.register("mon-r", "bed-01")?;
    assert_eq!(next(&mut events).await, None, "the connection stayed open");
    drop(client);

    let (client, mut events) = AsyncClient::new(options(addr, "mon-r", &new_pw, false), 16);
    connack(&mut events).await?;
    publish(
        &client,
        &mut events,
        "patients/bed-01/vitals",
        r#"{"hr":62}"#,
    )
    .await?;
    let v = dash.until(|v| v["type"] == "vitals").await?;
    assert!(is(&v, "vitals", "bed-01"), "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_drops_a_persistent_session_and_its_subscriptions() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-p", "ward-p", |_| {}).await?;
    let addr = edge.running.mqtt_addr;
    let pw = edge.register("disp-p", "bed-09")?;
    let witness_pw = edge.register("mon-w", "bed-09")?;

    // A bedside display with a persistent session subscribes to bed-09, then goes away.
    let (client, mut events) = AsyncClient::new(options(addr, "disp-p", &pw, true), 16);
    assert!(!connack(&mut events).await?, "a first session is new");
    client
        .subscribe("patients/bed-09/#", QoS::AtLeastOnce)
        .await?;
    assert_eq!(next(&mut events).await.as_deref(), Some(""), "SUBACK");
    client.disconnect().await?;
    while events.poll().await.is_ok() {}
    drop(client);

    // Its session is kept while it is away ...
    let (client, mut events) = AsyncClient::new(options(addr, "disp-p", &pw, true), 16);
    assert!(connack(&mut events).await?, "the session is present");
    client.disconnect().await?;
    while events.poll().await.is_ok() {}
    drop(client);

    // ... until it is bound to bed-01: then it starts afresh, and bed-09's readings no longer
    // reach it.
    let new_pw = edge.register("disp-p", "bed-01")?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (client, mut events) = loop {
        let (client, mut events) = AsyncClient::new(options(addr, "disp-p", &new_pw, true), 16);
        // The first attempts may meet the registry before the edge re-read it.
        if let Ok(present) = connack(&mut events).await {
            assert!(!present, "the rebound device found its old session");
            break (client, events);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    client
        .subscribe("patients/bed-01/#", QoS::AtLeastOnce)
        .await?;
    assert_eq!(next(&mut events).await.as_deref(), Some(""), "SUBACK");
    let (witness, mut witness_events) =
        AsyncClient::new(options(addr, "mon-w", &witness_pw, false), 16);
    connack(&mut witness_events).await?;
    publish(
        &witness,
        &mut witness_events,
        "patients/bed-09/vitals",
        r#"{"hr":90}"#,
    )
    .await?;
    // Its own patient's reading comes through; bed-09's, published first, never does.
    client
        .publish(
            "patients/bed-01/vitals",
            QoS::AtLeastOnce,
            false,
            r#"{"hr":70}"#,
        )
        .await?;
    assert_eq!(
        next(&mut events).await.as_deref(),
        Some("patients/bed-01/vitals")
    );
    Ok(())
}

/// Keeps `n` connections from `from` open to `addr` that never send a byte, opening a new one
/// whenever one is closed, until `stop`. `open` counts those open.
async fn flood(
    addr: SocketAddr,
    from: std::net::Ipv4Addr,
    n: usize,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (open, stop) = (open.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                    return;
                };
                if socket.bind(SocketAddr::from((from, 0))).is_err() {
                    return;
                }
                let Ok(mut stream) = socket.connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                open.fetch_add(1, Ordering::Relaxed);
                let mut byte = [0u8; 1];
                tokio::select! {
                    _ = stream.read(&mut byte) => {}
                    () = stop.cancelled() => {}
                }
                open.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_admission_pool_still_lets_a_device_back_in() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hub = Hub::start().await?;
    // A long pre-authentication deadline, so the flood's idle connections are not simply
    // timed out: the pool itself must make room.
    let edge = hub
        .edge("edge-f", "ward-f", |c| c.mqtt.connect_timeout_ms = 60_000)
        .await?;
    let addr = edge.running.mqtt_addr;
    let pw = edge.register("mon-f", "bed-f")?;

    // Four addresses, 64 idle connections each: every pending slot of the gate.
    let open = std::sync::Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut flooders = tokio::task::JoinSet::new();
    for last in 2..=5 {
        let from = std::net::Ipv4Addr::new(127, 0, 0, last);
        flooders.spawn(flood(addr, from, 64, open.clone(), stop.clone()));
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while open.load(Ordering::Relaxed) < 256 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the flood never filled the pool ({} open)",
            open.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The device, from its own address, gets in.
    let started = std::time::Instant::now();
    let (_client, mut events) = AsyncClient::new(options(addr, "mon-f", &pw, false), 16);
    connack(&mut events).await?;
    eprintln!(
        "device admitted in {:.1} ms while {} idle connections flooded the gate",
        started.elapsed().as_secs_f64() * 1000.0,
        open.load(Ordering::Relaxed)
    );
    let text = edge.metrics().await?;
    assert!(
        wardlink_tests::metric(
            &text,
            "wardlink_edge_mqtt_connections_refused_total{reason=\"evicted\"}"
        )
        .unwrap_or(0)
            >= 1,
        "no flood connection was evicted:\n{text}"
    );
    stop.cancel();
    while flooders.join_next().await.is_some() {}
    Ok(())
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_are_the_owners_only() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-m", "ward-m", |_| {}).await?;
    let pw = edge.register("mon-m", "bed-m")?;
    let (client, mut events) =
        AsyncClient::new(options(edge.running.mqtt_addr, "mon-m", &pw, true), 16);
    connack(&mut events).await?;
    publish(
        &client,
        &mut events,
        "patients/bed-m/vitals",
        r#"{"hr":70}"#,
    )
    .await?;
    let data = &edge.config.edge.data_dir;
    let mode = |p: &std::path::Path| -> anyhow::Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };
    assert_eq!(mode(data)?, 0o700, "{}", data.display());
    for file in ["devices.json", "outbox.redb", "sessions.json"] {
        assert_eq!(mode(&data.join(file))?, 0o600, "{file}");
    }
    Ok(())
}
