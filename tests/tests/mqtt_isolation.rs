//! Device identity and topic isolation at the edge's MQTT gate (issue 5), attacked the way
//! Mosquitto's ACL tests attack a broker: wrong and unknown credentials, a will aimed at another
//! patient, publishing into another patient's topic, subscribing to `#` or to another patient,
//! over MQTT 3.1.1 and 5, and TLS with untrusted certificates. Every attempt is refused with a
//! clear answer and counted, and a well-behaved device on the same edge keeps delivering.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Packet, QoS, SubscribeFilter, SubscribeReasonCode,
};
use wardlink_tests::{Dashboard, Device, Edge, Hub, PATIENCE, is, metric, stamped, unix_now};

/// A raw MQTT 3.1.1 client whose every event the test reads itself.
fn client(addr: SocketAddr, id: &str, user: &str, pass: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_credentials(user, pass);
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// Polls until the CONNACK (or a refusal) arrives.
async fn connack(events: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        match tokio::time::timeout(PATIENCE, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => panic!("no CONNACK within {PATIENCE:?}"),
        }
    }
}

/// Connects with `opts`; returns the refusal code, or `Success`.
async fn try_connect(opts: MqttOptions) -> ConnectReturnCode {
    let (_client, mut events) = AsyncClient::new(opts, 16);
    match connack(&mut events).await {
        Ok(()) => ConnectReturnCode::Success,
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(e) => panic!("connection failed without a CONNACK: {e}"),
    }
}

/// Polls until the next packet of interest: a SUBACK's codes, a PUBLISH's topic, or the end
/// of the connection.
#[derive(Debug, PartialEq)]
enum Seen {
    SubAck(Vec<SubscribeReasonCode>),
    Publish(String),
    Closed,
}

async fn next_seen(events: &mut EventLoop) -> Seen {
    loop {
        match tokio::time::timeout(PATIENCE, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(s)))) => return Seen::SubAck(s.return_codes),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                return Seen::Publish(p.topic);
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Seen::Closed,
            Err(_) => panic!("nothing within {PATIENCE:?}"),
        }
    }
}

/// A `vitals` message of `patient` with heart rate `hr`.
fn reading(v: &serde_json::Value, patient: &str, hr: u32) -> bool {
    is(v, "vitals", patient) && v["values"]["hr"].as_f64() == Some(f64::from(hr))
}

/// The witness: a well-behaved device whose reading must reach the dashboard after every
/// attack.
struct Witness {
    device: Device,
    dash: Dashboard,
    hr: u32,
}

impl Witness {
    async fn delivers(&mut self) -> anyhow::Result<()> {
        self.hr += 1;
        let ts = i64::try_from(unix_now())? * 1000 + i64::from(self.hr);
        self.device.publish(&stamped(self.hr, ts)).await?;
        let hr = self.hr;
        self.dash.until(|v| reading(v, "bed-w", hr)).await?;
        Ok(())
    }
}

async fn setup() -> anyhow::Result<(Hub, Edge, Witness)> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-i", "ward-i", |_| {}).await?;
    let dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-i")).await?;
    let device = edge.device("mon-w", "bed-w").await?;
    let mut witness = Witness {
        device,
        dash,
        hr: 60,
    };
    witness.delivers().await?;
    Ok((hub, edge, witness))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_wills_are_checked() -> anyhow::Result<()> {
    let (_hub, edge, mut witness) = setup().await?;
    let addr = edge.running.mqtt_addr;
    let pw = edge.register("mon-a", "bed-a")?;

    let cases = [
        (
            "wrong password",
            client(addr, "mon-a", "mon-a", "0123456789abcdef0123456789abcdef"),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "unknown device (same answer: existence is not revealed)",
            client(addr, "mon-x", "mon-x", &pw),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "another device's name as user",
            client(addr, "mon-a", "mon-w", &pw),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "a client id the broker would choke on",
            client(addr, "mon/a", "mon/a", &pw),
            ConnectReturnCode::BadClientId,
        ),
        (
            "the edge's own reserved id",
            client(addr, "wardlink-ingest", "wardlink-ingest", &pw),
            ConnectReturnCode::BadClientId,
        ),
    ];
    for (what, opts, want) in cases {
        assert_eq!(try_connect(opts).await, want, "{what}");
        witness.delivers().await?;
    }

    // A will addressed to another patient would publish into their record on disconnect.
    let mut opts = client(addr, "mon-a", "mon-a", &pw);
    opts.set_last_will(LastWill::new(
        "patients/bed-w/vitals",
        r#"{"hr":20}"#,
        QoS::AtLeastOnce,
        false,
    ));
    assert_eq!(try_connect(opts).await, ConnectReturnCode::NotAuthorized);
    // One addressed to its own patient is fine.
    let mut opts = client(addr, "mon-a", "mon-a", &pw);
    opts.set_last_will(LastWill::new(
        "patients/bed-a/status",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    assert_eq!(try_connect(opts).await, ConnectReturnCode::Success);
    witness.delivers().await?;

    let text = edge.metrics().await?;
    for (series, want) in [
        (
            r#"wardlink_edge_mqtt_auth_refused_total{reason="bad_password"}"#,
            1,
        ),
        (
            r#"wardlink_edge_mqtt_auth_refused_total{reason="unknown_device"}"#,
            1,
        ),
        (
            r#"wardlink_edge_mqtt_auth_refused_total{reason="client_id_mismatch"}"#,
            1,
        ),
        (
            r#"wardlink_edge_mqtt_auth_refused_total{reason="bad_client_id"}"#,
            2,
        ),
        (
            r#"wardlink_edge_mqtt_connections_refused_total{reason="will_topic"}"#,
            1,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series}\n{text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_can_neither_read_nor_write_another_patient() -> anyhow::Result<()> {
    let (_hub, edge, mut witness) = setup().await?;
    let addr = edge.running.mqtt_addr;
    let pw = edge.register("mon-a", "bed-a")?;
    let (a, mut a_events) = AsyncClient::new(client(addr, "mon-a", "mon-a", &pw), 64);
    connack(&mut a_events).await?;

    // Reading: every filter that reaches beyond bed-a is refused, alone or in company.
    let refused: [&[&str]; 6] = [
        &["#"],
        &["patients/+/vitals"],
        &["patients/bed-w/vitals"],
        &["patients/#"],
        &["$share/g/patients/bed-a/vitals"],
        &["patients/bed-a/vitals", "patients/bed-w/vitals"],
    ];
    for filters in refused {
        a.subscribe_many(
            filters
                .iter()
                .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)),
        )
        .await?;
        assert_eq!(
            next_seen(&mut a_events).await,
            Seen::SubAck(vec![SubscribeReasonCode::Failure; filters.len()]),
            "{filters:?}"
        );
    }
    a.subscribe("patients/bed-a/#", QoS::AtLeastOnce).await?;
    assert_eq!(
        next_seen(&mut a_events).await,
        Seen::SubAck(vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])
    );
    // The witness publishes first; mon-a's first delivery is still its own reading: the
    // refused subscriptions never reached the broker.
    witness.delivers().await?;
    a.publish(
        "patients/bed-a/vitals",
        QoS::AtLeastOnce,
        false,
        r#"{"hr":77}"#,
    )
    .await?;
    assert_eq!(
        next_seen(&mut a_events).await,
        Seen::Publish("patients/bed-a/vitals".into())
    );

    // Writing into another patient's record closes the connection (3.1.1 has no refusal
    // code for a publish) and the reading never reaches the broker.
    a.publish(
        "patients/bed-w/vitals",
        QoS::AtLeastOnce,
        false,
        r#"{"hr":171}"#,
    )
    .await?;
    assert_eq!(next_seen(&mut a_events).await, Seen::Closed);
    witness.delivers().await?;
    assert!(
        !witness.dash.seen.iter().any(|v| reading(v, "bed-w", 171)),
        "the forged reading reached the dashboard"
    );
    let text = edge.metrics().await?;
    for (series, want) in [
        (r#"wardlink_edge_mqtt_denied_total{action="subscribe"}"#, 6),
        (r#"wardlink_edge_mqtt_denied_total{action="publish"}"#, 1),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series}\n{text}");
    }

    // The device is not banned: it reconnects and delivers its own readings.
    let mut a = Device::connect(addr, "mon-a", &pw, "bed-a").await?;
    a.publish(r#"{"hr":78}"#).await?;
    witness.dash.until(|v| reading(v, "bed-a", 78)).await?;
    Ok(())
}

#[allow(clippy::expect_used)]
fn mosquitto(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .expect("mosquitto-clients is installed (apt-get install mosquitto-clients)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_refusals_carry_reason_codes() -> anyhow::Result<()> {
    let (_hub, edge, mut witness) = setup().await?;
    let addr = edge.running.mqtt_addr;
    let port = addr.port().to_string();
    let pw = edge.register("mon-a", "bed-a")?;
    let base = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-i",
        "mon-a",
        "-u",
        "mon-a",
    ];

    let out = mosquitto(
        "mosquitto_pub",
        &[
            &base[..],
            &["-P", "wrong", "-t", "patients/bed-a/vitals", "-m", "{}"],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Bad User Name or Password"),
        "{}",
        text(&out)
    );

    let out = mosquitto(
        "mosquitto_pub",
        &[
            &base[..],
            &[
                "-P",
                &pw,
                "-q",
                "1",
                "-t",
                "patients/bed-w/vitals",
                "-m",
                r#"{"hr":171}"#,
            ],
        ]
        .concat(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    witness.delivers().await?;

    let out = mosquitto(
        "mosquitto_sub",
        &[&base[..], &["-P", &pw, "-t", "#", "-C", "1", "-W", "10"]].concat(),
    );
    // (mosquitto_sub reports the refusal and exits, with status 0.)
    assert!(
        text(&out).contains("All subscription requests were denied"),
        "{}",
        text(&out)
    );
    witness.delivers().await?;
    assert!(!witness.dash.seen.iter().any(|v| reading(v, "bed-w", 171)));

    // Its own patient, over MQTT 5 on the same port as 3.1.1.
    let out = mosquitto(
        "mosquitto_pub",
        &[
            &base[..],
            &[
                "-P",
                &pw,
                "-q",
                "1",
                "-t",
                "patients/bed-a/vitals",
                "-m",
                r#"{"hr":79}"#,
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    witness.dash.until(|v| reading(v, "bed-a", 79)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_trusts_the_hub_ca_only() -> anyhow::Result<()> {
    let (hub, edge, mut witness) = setup().await?;
    let tls = edge
        .running
        .mqtt_tls_addr
        .expect("enroll configures a TLS listener");
    let port = tls.port().to_string();
    let pw = edge.register("mon-a", "bed-a")?;
    let ca = edge.dir.path().join("ca.pem");
    // Another hospital's CA, and an edge certificate it issued.
    let other = Hub::start().await?;
    let (other_edge, _) = other.enroll_edge("edge-o", "ward-o", |_| {})?;
    let other_ca = other_edge.path().join("ca.pem");
    let path = |p: &Path| p.display().to_string();

    let publish = |extra: &[&str], hr: u32| {
        let payload = format!(r#"{{"hr":{hr}}}"#);
        let args = [
            &["-h", "localhost", "-p", &port, "-i", "mon-a", "-u", "mon-a"][..],
            &["-P", &pw, "-q", "1", "-t", "patients/bed-a/vitals"],
            &["-m", &payload],
            extra,
        ]
        .concat();
        mosquitto("mosquitto_pub", &args)
    };

    // Trusting the hub's CA: delivered.
    let out = publish(&["--cafile", &path(&ca)], 81);
    assert!(out.status.success(), "{}", text(&out));
    witness.dash.until(|v| reading(v, "bed-a", 81)).await?;

    // Trusting another CA: the device refuses the edge.
    let out = publish(&["--cafile", &path(&other_ca)], 82);
    assert!(!out.status.success(), "{}", text(&out));
    witness.delivers().await?;

    // A client certificate from another CA: the edge refuses the device.
    let out = publish(
        &[
            "--cafile",
            &path(&ca),
            "--cert",
            &path(&other_edge.path().join("edge.pem")),
            "--key",
            &path(&other_edge.path().join("edge.key")),
        ],
        83,
    );
    assert!(!out.status.success(), "{}", text(&out));
    witness.delivers().await?;

    // Plain MQTT on the TLS port gets nowhere.
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "mon-a",
            "-u",
            "mon-a",
            "-P",
            &pw,
            "-t",
            "patients/bed-a/vitals",
            "-m",
            r#"{"hr":84}"#,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    witness.delivers().await?;
    assert!(
        !witness.dash.seen.iter().any(|v| is(v, "vitals", "bed-a")
            && [82, 83, 84].into_iter().any(|hr| reading(v, "bed-a", hr))),
        "a refused reading arrived"
    );
    let text = edge.metrics().await?;
    let handshakes = metric(
        &text,
        r#"wardlink_edge_mqtt_connections_refused_total{reason="tls_handshake"}"#,
    );
    assert!(handshakes >= Some(3), "{text}");
    drop(hub);
    Ok(())
}

/// An MQTT packet: `first` byte, remaining length, body.
fn raw_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = u8::try_from(n & 0x7f).unwrap_or(0);
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn raw_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(s);
}

/// Reads one MQTT packet: its first byte and body.
async fn raw_read(stream: &mut tokio::net::TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let first = stream.read_u8().await?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = stream.read_u8().await?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok((first, body))
}

/// rumqttd 0.20 miscounts the length of a SUBSCRIBE's subscription identifiers, so two of
/// them shift where it thinks the filters start: bytes the gate read as the tail of one
/// harmless filter became a second filter, `#`, for rumqttd (found in review). The gate now
/// relays only a SUBSCRIBE it has re-encoded, and checks every filter it relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_that_rumqttd_would_misread_is_refused() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (_hub, edge, mut witness) = setup().await?;
    let pw = edge.register("mon-a", "bed-a")?;
    let mut connect = Vec::new();
    raw_string(&mut connect, b"MQTT");
    connect.extend_from_slice(&[5, 0xc2, 0, 60, 0]);
    raw_string(&mut connect, b"mon-a");
    raw_string(&mut connect, b"mon-a");
    raw_string(&mut connect, pw.as_bytes());
    let connect = raw_packet(0x10, &connect);
    let open = || async {
        let mut stream = tokio::net::TcpStream::connect(edge.running.mqtt_addr).await?;
        stream.write_all(&connect).await?;
        let (first, body) = raw_read(&mut stream).await?;
        anyhow::ensure!(first == 0x20 && body.get(1) == Some(&0), "CONNACK {body:?}");
        anyhow::Ok(stream)
    };
    let mut stream = open().await?;

    for filter in [
        // Parsed by rumqttd as a 256-byte filter, then `#`.
        [
            &b"patients/bed-a/"[..],
            &[b'a'; 241],
            &[0x00, 0x00, 0x01, b'#'],
        ]
        .concat(),
        // The same with printable bytes only.
        [&b"patients/bed-a/"[..], &[b'a'; 241], b"(  #"].concat(),
    ] {
        let mut sub = 1u16.to_be_bytes().to_vec();
        sub.extend_from_slice(&[0x06, 0x0b, 0x01, 0x0b, 0x01, 0x01, 0x00]);
        raw_string(&mut sub, &filter);
        sub.push(0);
        stream.write_all(&raw_packet(0x82, &sub)).await?;
        // Refused: a SUBACK with failure codes, or the connection closed as malformed.
        match raw_read(&mut stream).await {
            Ok((first, body)) => {
                assert_eq!(first, 0x90, "{body:?}");
                assert!(body.iter().skip(3).all(|c| *c >= 0x80), "granted: {body:?}");
            }
            Err(_) => stream = open().await?,
        }
    }
    // The witness publishes, then the attacker subscribes to and publishes on its own topic:
    // the first PUBLISH it receives is its own.
    witness.delivers().await?;
    let mut sub = 2u16.to_be_bytes().to_vec();
    sub.push(0);
    raw_string(&mut sub, b"patients/bed-a/vitals");
    sub.push(0);
    stream.write_all(&raw_packet(0x82, &sub)).await?;
    let (first, body) = raw_read(&mut stream).await?;
    assert_eq!((first, body.last()), (0x90, Some(&0)), "{body:?}");
    let mut publish = Vec::new();
    raw_string(&mut publish, b"patients/bed-a/vitals");
    publish.push(0);
    publish.extend_from_slice(br#"{"hr":75}"#);
    stream.write_all(&raw_packet(0x30, &publish)).await?;
    let (first, body) = raw_read(&mut stream).await?;
    assert_eq!(first >> 4, 3, "{body:?}");
    assert!(
        body.windows(21).any(|w| w == b"patients/bed-a/vitals"),
        "the attacker received another patient's reading: {body:?}"
    );
    Ok(())
}

/// A device publishing faster than `mqtt.max_publish_rate` is slowed down by backpressure,
/// not refused: every reading it sent arrives, and the throttling is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_is_slowed_not_dropped() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-i", "ward-i", |c| {
            c.mqtt.max_publish_rate = 100;
            c.mqtt.max_publish_burst = 10;
        })
        .await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-i")).await?;
    let mut device = edge.device("mon-f", "bed-f").await?;
    let start = i64::try_from(unix_now())? * 1000;
    for i in 0..100 {
        device.publish_nowait(&stamped(70, start + i)).await?;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 100 {
        let v = dash.until(|v| is(v, "vitals", "bed-f")).await?;
        if let Some(ts) = v["ts"].as_str() {
            seen.insert(ts.to_owned());
        }
    }
    wardlink_tests::wait_for_metric(|| edge.metrics(), "wardlink_edge_mqtt_throttled_total", 1)
        .await?;
    Ok(())
}
