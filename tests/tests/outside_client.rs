//! Another MQTT implementation (Eclipse Mosquitto's `mosquitto_pub`, installed by `.ci/run`)
//! publishing the contract payload, over MQTT 3.1.1 and MQTT 5, produces the contract
//! WebSocket messages.

use std::net::SocketAddr;
use std::process::Command;

use wardlink_tests::{Dashboard, Hub, free_port, is};

/// The contract's example payload, stamped `ts`.
fn payload(ts: &str) -> String {
    format!(
        r#"{{"ts":"{ts}","hr":72,"spo2":97,"rr":16,"temp":36.8,"sbp":120,"dbp":80,"o2":false,"acvpu":"A"}}"#
    )
}

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
    // An hour ago, on a whole second plus 250 ms, as in the contract's example.
    let hour_ago = (i64::try_from(wardlink_tests::unix_now())? - 3600) * 1000;
    let ts = wardlink_shared::time::format_rfc3339(hour_ago + 250);
    let later = wardlink_shared::time::format_rfc3339(hour_ago + 1250);
    let first = payload(&ts);

    let out = mosquitto_pub(
        edge.running.mqtt_addr,
        "mqttv311",
        "mon-7",
        &password,
        "bed-07",
        &first,
    );
    assert!(out.status.success(), "{out:?}");
    let v = dash.until(|v| is(v, "vitals", "bed-07")).await?;
    assert_eq!(v["ward"], "ward-a");
    assert_eq!(v["ts"], ts.as_str());
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
        &first,
    );
    assert!(out.status.success(), "{out:?}");

    // A later reading over MQTT 5.
    let v5 = SocketAddr::from(([127, 0, 0, 1], v5_port));
    let out = mosquitto_pub(v5, "mqttv5", "mon-7", &password, "bed-07", &payload(&later));
    assert!(out.status.success(), "{out:?}");
    let v = dash.until(|v| is(v, "vitals", "bed-07")).await?;
    assert!(v["seq"].as_u64() > Some(first_seq));
    assert_eq!(v["ts"], later.as_str(), "the repeat was stored again");

    // Wrong password: refused, nothing published.
    let out = mosquitto_pub(
        edge.running.mqtt_addr,
        "mqttv311",
        "mon-7",
        "guess",
        "bed-07",
        &first,
    );
    assert!(!out.status.success());
    Ok(())
}
