//! Edges are who their certificate says: other CAs are refused, and a Hello must match the
//! certificate and speak our protocol version.

use wardlink_shared::wire::{self, ErrorCode, Frame, FrameDecoder, PROTOCOL_VERSION};
use wardlink_shared::{EdgeId, WardId};
use wardlink_tests::{Hub, metric, wait_for_metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_from_another_ca_is_refused() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let stranger_ca = Hub::start().await?;
    // Enrolled by another hub's CA, pointed at ours.
    let (dir, mut cfg) = stranger_ca.enroll_edge("edge-x", "ward-a", |_| {})?;
    cfg.hub.addr = hub.running.quic_addr.to_string();
    let stranger = wardlink_tests::Edge::start(dir, cfg).await?;

    wait_for_metric(
        || hub.metrics(),
        "wardlink_hub_edges_refused_total{reason=\"handshake\"}",
        1,
    )
    .await?;
    wait_for_metric(
        || stranger.metrics(),
        "wardlink_edge_uplink_connect_failures_total",
        1,
    )
    .await?;
    let text = hub.metrics().await?;
    assert_eq!(metric(&text, "wardlink_hub_edges_connected"), Some(0));
    assert_eq!(
        metric(&text, "wardlink_hub_last_event_seq"),
        Some(0),
        "nothing stored"
    );

    // A properly enrolled edge on the same hub connects.
    let good = hub.edge("edge-a", "ward-a", |_| {}).await?;
    good.wait_online().await?;
    Ok(())
}

/// Connects with an enrolled edge's certificate and sends `hello`; returns the hub's answer.
async fn hello(hub: &Hub, hello: Frame) -> anyhow::Result<Frame> {
    let (_dir, cfg) = hub.enroll_edge("edge-a", "ward-a", |_| {})?;
    let client = wardlink_edge::uplink::client_config(&cfg.hub)?;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = endpoint
        .connect_with(client, hub.running.quic_addr, &cfg.hub.server_name)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&wire::encode(&hello)?).await?;
    let mut dec = FrameDecoder::new();
    loop {
        if let Some(f) = dec.next_frame()? {
            return Ok(f);
        }
        match recv.read_chunk(4096, true).await? {
            Some(c) => dec.push(&c.bytes),
            None => anyhow::bail!("hub closed without answering"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_must_match_certificate_and_version() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = EdgeId::new("edge-a")?;
    let ward = WardId::new("ward-a")?;

    let answer = hello(
        &hub,
        Frame::Hello {
            version: PROTOCOL_VERSION + 1,
            edge: edge.clone(),
            ward: ward.clone(),
            stream: 1,
        },
    )
    .await?;
    assert!(
        matches!(answer, Frame::Error { code: ErrorCode::UnsupportedVersion, ref message } if message.contains("version")),
        "{answer:?}"
    );

    let answer = hello(
        &hub,
        Frame::Hello {
            version: PROTOCOL_VERSION,
            edge: EdgeId::new("edge-b")?,
            ward: ward.clone(),
            stream: 1,
        },
    )
    .await?;
    assert!(
        matches!(
            answer,
            Frame::Error {
                code: ErrorCode::IdentityMismatch,
                ..
            }
        ),
        "{answer:?}"
    );

    let answer = hello(
        &hub,
        Frame::Hello {
            version: PROTOCOL_VERSION,
            edge: edge.clone(),
            ward: WardId::new("ward-b")?,
            stream: 1,
        },
    )
    .await?;
    assert!(
        matches!(
            answer,
            Frame::Error {
                code: ErrorCode::IdentityMismatch,
                ..
            }
        ),
        "{answer:?}"
    );

    let answer = hello(&hub, Frame::Ping { nonce: 1 }).await?;
    assert!(
        matches!(
            answer,
            Frame::Error {
                code: ErrorCode::BadFrame,
                ..
            }
        ),
        "{answer:?}"
    );

    let answer = hello(
        &hub,
        Frame::Hello {
            version: PROTOCOL_VERSION,
            edge,
            ward,
            stream: 1,
        },
    )
    .await?;
    assert!(
        matches!(
            answer,
            Frame::Welcome {
                version: PROTOCOL_VERSION,
                ..
            }
        ),
        "{answer:?}"
    );

    let text = hub.metrics().await?;
    assert_eq!(
        metric(
            &text,
            "wardlink_hub_edges_refused_total{reason=\"version\"}"
        ),
        Some(1)
    );
    assert_eq!(
        metric(
            &text,
            "wardlink_hub_edges_refused_total{reason=\"identity_mismatch\"}"
        ),
        Some(2)
    );
    assert_eq!(
        metric(
            &text,
            "wardlink_hub_edges_refused_total{reason=\"bad_frame\"}"
        ),
        Some(1)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_must_continue_their_lane() -> anyhow::Result<()> {
    use wardlink_shared::wire::{Lane, Record, RecordBody};
    use wardlink_shared::{PatientId, Reading, Vitals};

    let hub = Hub::start().await?;
    let (_dir, cfg) = hub.enroll_edge("edge-a", "ward-a", |_| {})?;
    let client = wardlink_edge::uplink::client_config(&cfg.hub)?;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = endpoint
        .connect_with(client, hub.running.quic_addr, &cfg.hub.server_name)?
        .await?;
    let (mut control, mut control_rx) = conn.open_bi().await?;
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        edge: EdgeId::new("edge-a")?,
        ward: WardId::new("ward-a")?,
        stream: 42,
    };
    control.write_all(&wire::encode(&hello)?).await?;
    let mut dec = FrameDecoder::new();
    let welcome = wardlink_io::frames::read_frame(&mut control_rx, &mut dec).await?;
    assert!(
        matches!(welcome, Some(Frame::Welcome { .. })),
        "{welcome:?}"
    );

    let (mut send, mut recv) = conn.open_bi().await?;
    let reading = |seq: u64| Record {
        seq,
        body: RecordBody::Vitals {
            reading: Reading {
                patient: PatientId::new("bed-01").expect("id"),
                // One reading per patient and timestamp: each record its own.
                ts: 1_795_694_400_000 + i64::try_from(seq).unwrap_or(0),
                vitals: Vitals {
                    hr: Some(70.0),
                    ..Vitals::default()
                },
            },
            news2: None,
        },
    };
    let mut dec = FrameDecoder::new();
    send.write_all(&wire::encode(&Frame::OpenLane {
        lane: Lane::Telemetry,
    })?)
    .await?;
    // A stream may start anywhere (earlier seqs were delivered under an older stream).
    send.write_all(&wire::encode(&Frame::Records {
        records: vec![reading(5), reading(6)],
    })?)
    .await?;
    let ack = wardlink_io::frames::read_frame(&mut recv, &mut dec).await?;
    assert_eq!(ack, Some(Frame::Ack { seq: 6 }));
    // Redelivery is acknowledged and ignored.
    send.write_all(&wire::encode(&Frame::Records {
        records: vec![reading(6)],
    })?)
    .await?;
    let ack = wardlink_io::frames::read_frame(&mut recv, &mut dec).await?;
    assert_eq!(ack, Some(Frame::Ack { seq: 6 }));
    // A gap is refused and nothing of it is stored.
    send.write_all(&wire::encode(&Frame::Records {
        records: vec![reading(8)],
    })?)
    .await?;
    let refused = wardlink_io::frames::read_frame(&mut recv, &mut dec).await?;
    assert!(
        matches!(refused, Some(Frame::Error { code: ErrorCode::BadFrame, ref message }) if message.contains("expected seq 7")),
        "{refused:?}"
    );
    let text = hub.metrics().await?;
    assert_eq!(
        metric(
            &text,
            "wardlink_hub_records_stored_total{lane=\"telemetry\"}"
        ),
        Some(2)
    );
    assert_eq!(
        metric(
            &text,
            "wardlink_hub_records_duplicate_total{lane=\"telemetry\"}"
        ),
        Some(1)
    );
    Ok(())
}
