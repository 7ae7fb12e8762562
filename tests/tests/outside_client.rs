//! Another MQTT implementation (Eclipse Mosquitto's `mosquitto_pub`, installed by `.ci/run`)
//! publishing the contract payload, over MQTT 3.1.1 and MQTT 5, produces the contract
//! WebSocket messages.

use std::net::SocketAddr;
use std::process::Command;

use wardlink_tests::{Dashboard, Hub, free_port, is};

const PAYLOAD: &str = r#"{"ts":"2026-11-26T12:00:00.250Z","hr":72,"spo2":97,"rr":16,"temp":36.8,"sbp":120,"dbp":80,"o2":false,"acvpu":"A"}"#;

#[allow(clippy::expect_used)]
fn mosquitto_pub(
    addr: SocketAddr,
    version: &str,
    device: &str,
    password: &str,
    patient: &str,
    payload: &str,
) -> std::process::Output {
    Command::new("mosquitto_pub")
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-V",
            version,
        ])
        .args(["-i", device, "-u", device, "-P", password, "-q", "1"])
        .args(["-t", &format!("patients/{patient}/vitals"), "-m", payload])
        .output()
        .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_over_mqtt_311_and_5() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let v5_port = free_port();
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
            c.mqtt.listen_v5 = Some(SocketAddr::from(([127, 0, 0, 1], v5_port)))
        })
        .await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let password = edge.register("mon-7", "bed-07")?;

    let out = mosquitto_pub(
        edge.running.mqtt_addr,
        "mqttv311",
        "mon-7",
        &password,
        "bed-07",
        PAYLOAD,
    );
    assert!(out.status.success(), "{out:?}");
    let v = dash.until(|v| is(v, "vitals", "bed-07")).await?;
    assert_eq!(v["ward"], "ward-a");
    assert_eq!(v["ts"], "2026-11-26T12:00:00.250Z");
    let values = v["values"].as_object().expect("values");
    for (k, want) in [
        ("hr", 72.0),
        ("spo2", 97.0),
        ("rr", 16.0),
        ("sbp", 120.0),
        ("dbp", 80.0),
    ] {
        assert_eq!(values[k].as_f64(), Some(want), "{k}");
    }
    assert!((values["temp"].as_f64().unwrap_or(0.0) - 36.8).abs() < 1e-4);
    assert_eq!(values["o2"], false);
    assert_eq!(values["acvpu"], "A");
    // All seven NEWS2 parameters are present and normal.
    assert_eq!(v["news2"], 0);
    assert_eq!(v["news2_detail"]["risk"], "low");
    let first_seq = v["seq"].as_u64().expect("seq");

    // The same payload again is the same reading (same patient, same `ts`): acknowledged
    // (mosquitto_pub exits 0 only after its PUBACK) and stored once.
    let out = mosquitto_pub(
        edge.running.mqtt_addr,
        "mqttv311",
        "mon-7",
        &password,
        "bed-07",
        PAYLOAD,
    );
    assert!(out.status.success(), "{out:?}");

    // A later reading over MQTT 5.
    let v5 = SocketAddr::from(([127, 0, 0, 1], v5_port));
    let later = PAYLOAD.replace("12:00:00.250Z", "12:00:01.250Z");
    let out = mosquitto_pub(v5, "mqttv5", "mon-7", &password, "bed-07", &later);
    assert!(out.status.success(), "{out:?}");
    let v = dash.until(|v| is(v, "vitals", "bed-07")).await?;
    assert!(v["seq"].as_u64() > Some(first_seq));
    assert_eq!(
        v["ts"], "2026-11-26T12:00:01.250Z",
        "the repeat was stored again"
    );

    // Wrong password: refused, nothing published.
    let out = mosquitto_pub(
        edge.running.mqtt_addr,
        "mqttv311",
        "mon-7",
        "guess",
        "bed-07",
        PAYLOAD,
    );
    assert!(!out.status.success());
    Ok(())
}
