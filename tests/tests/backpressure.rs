//! Acknowledged means durable, under pressure: devices publishing faster than the edge can
//! commit are slowed down (their acknowledgements wait, the gate stops reading them) and every
//! acknowledged reading arrives; a local MQTT subscriber gets its patient's readings, and one
//! that stops reading holds nobody back.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;
use wardlink_edge::broker::MAX_UNACKED;
use wardlink_tests::relay::Mode;
use wardlink_tests::resending::ResendingDevice;
use wardlink_tests::{
    Hub, PATIENCE, exactly_once, metric, stored_readings, unix_now, wait_for_metric_eq,
};

const DEVICES: usize = 3;
const EACH: i64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_faster_than_the_disk_are_slowed_and_lose_nothing() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    // The hub unreachable and the outbox throttled (8 records per 50 ms commit): the edge can
    // make about 160 readings a second durable, and the devices offer far more.
    let (relay, edge) = hub
        .edge_behind_relay("edge-o", "ward-o", |cfg| {
            cfg.outbox.max_batch = 8;
            cfg.outbox.commit_window_ms = 50;
        })
        .await?;
    let base = i64::try_from(unix_now())? * 1000 - 3_600_000;
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let id = format!("mon-{d}");
        let patient = format!("bed-{d}");
        let pw = edge.register(&id, &patient)?;
        devices.push(ResendingDevice::start(
            edge.running.mqtt_addr,
            &id,
            &pw,
            &patient,
            200,
        ));
    }
    let publishing = async {
        for i in 0..EACH {
            for device in &devices {
                device.publish(base + i).await;
            }
        }
    };
    // While they publish, what the edge holds in memory stays within the sessions'
    // acknowledgement windows: the devices wait, not the edge's memory.
    let mut most_held = 0;
    let sampling = async {
        loop {
            let text = edge.metrics().await?;
            let held = metric(&text, "wardlink_edge_outbox_held_records").unwrap_or(0);
            most_held = most_held.max(held);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        () = publishing => {}
        r = sampling => r?,
    }
    for device in &devices {
        device.settled().await?;
    }
    let bound = i64::try_from(DEVICES * MAX_UNACKED)?;
    assert!(
        most_held <= bound,
        "the edge held {most_held} readings, more than the {bound} its sessions may leave unacknowledged"
    );
    assert!(
        most_held > 0,
        "nothing was ever held: the outbox was not the bottleneck"
    );

    relay.set(Mode::Pass);
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    let last = metric(&hub.metrics().await?, "wardlink_hub_last_event_seq").unwrap_or(0);
    for (d, device) in devices.iter().enumerate() {
        let acked = device.acked();
        assert_eq!(acked.len(), EACH as usize, "device {d}");
        let at_hub = stored_readings(
            &hub.ws_url("since=0"),
            &hub.admin(),
            &format!("bed-{d}"),
            last,
        )
        .await?;
        exactly_once(&at_hub, acked.into_iter())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_its_readings_and_a_stalled_one_holds_nobody_back() -> anyhow::Result<()>
{
    const READINGS: i64 = 2_000;
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-s", "ward-s", |_| {}).await?;
    let addr = edge.running.mqtt_addr;
    let pw_pub = edge.register("mon-p", "bed-s")?;
    let pw_sub = edge.register("disp-s", "bed-s")?;
    let pw_stall = edge.register("disp-x", "bed-s")?;

    // A bedside display subscribed to its patient's readings.
    let mut opts = MqttOptions::new("disp-s", addr.ip().to_string(), addr.port());
    opts.set_credentials("disp-s", pw_sub.as_str());
    let (sub, mut events) = AsyncClient::new(opts, 16);
    sub.subscribe("patients/bed-s/vitals", QoS::AtLeastOnce)
        .await?;
    let subscribed = async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
                return Ok::<_, anyhow::Error>(());
            }
        }
    };
    tokio::time::timeout(PATIENCE, subscribed).await??;
    let received = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        while seen.len() < READINGS as usize {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await? {
                let v: serde_json::Value = serde_json::from_slice(&p.payload)?;
                if let Some(ts) = v["ts"]
                    .as_str()
                    .and_then(wardlink_shared::time::parse_rfc3339)
                {
                    seen.insert(ts);
                }
            }
        }
        Ok::<_, anyhow::Error>(seen)
    });

    // A display that subscribes, then never reads again.
    let mut stalled = raw_subscriber(addr, "disp-x", &pw_stall, "patients/bed-s/vitals").await?;

    let device = ResendingDevice::start(addr, "mon-p", &pw_pub, "bed-s", 100);
    let base = i64::try_from(unix_now())? * 1000 - 3_600_000;
    for i in 0..READINGS {
        device.publish(base + i).await;
    }
    device.settled().await?;
    assert_eq!(device.acked().len(), READINGS as usize);

    let seen = tokio::time::timeout(PATIENCE, received).await???;
    let want: BTreeSet<i64> = (0..READINGS).map(|i| base + i).collect();
    assert_eq!(seen, want, "the display missed readings");

    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    let last = metric(&hub.metrics().await?, "wardlink_hub_last_event_seq").unwrap_or(0);
    let at_hub = stored_readings(&hub.ws_url("since=0"), &hub.admin(), "bed-s", last).await?;
    exactly_once(&at_hub, want.into_iter())?;
    let _ = stalled.shutdown().await;
    Ok(())
}

/// An MQTT 3.1.1 client written by hand that subscribes to `filter` at QoS 1 and then never
/// reads its socket.
async fn raw_subscriber(
    addr: std::net::SocketAddr,
    id: &str,
    password: &str,
    filter: &str,
) -> anyhow::Result<tokio::net::TcpStream> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first, u8::try_from(body.len()).unwrap_or(0)];
        out.extend_from_slice(body);
        out
    }
    let mut connect = Vec::new();
    string(&mut connect, "MQTT");
    connect.extend_from_slice(&[4, 0xc2, 0, 60]);
    string(&mut connect, id);
    string(&mut connect, id);
    string(&mut connect, password);
    let mut subscribe = vec![0, 1];
    string(&mut subscribe, filter);
    subscribe.push(1);
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&packet(0x10, &connect)).await?;
    stream.write_all(&packet(0x82, &subscribe)).await?;
    Ok(stream)
}
