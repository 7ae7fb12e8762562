//! rumqttd's known hazards (DESIGN.md): illegal client ids, impostors of the ingest link, and
//! connections beyond the limit must not disturb good devices.

use wardlink_edge::broker::AuthRefusal;
use wardlink_tests::{Dashboard, Device, Hub, is, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_surplus_connections_leave_good_devices_working() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| c.mqtt.max_devices = 3)
        .await?;
    let mqtt = edge.running.mqtt_addr;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut good = edge.device("good-1", "bed-01").await?;
    good.publish(r#"{"hr":70}"#).await?;
    dash.until(|v| is(v, "vitals", "bed-01")).await?;

    // Illegal or reserved client ids, unknown devices, wrong passwords: all refused.
    let good_password = edge.register("good-2", "bed-02")?;
    let attempts: &[(&str, &str, &str)] = &[
        ("a/b", "a/b", "x"),
        ("#", "#", "x"),
        ("+", "+", "x"),
        ("$SYS", "$SYS", "x"),
        ("wardlink-ingest", "wardlink-ingest", "x"),
        ("nobody", "nobody", "x"),
        ("good-2", "good-2", "wrong"),
        ("good-2", "good-1", &good_password),
    ];
    for round in 0..3 {
        for (client, user, pass) in attempts {
            let r = Device::connect_as(mqtt, client, user, pass, "bed-99").await;
            assert!(r.is_err(), "round {round}: {client}/{user} was let in");
        }
    }

    // Surplus: the broker admits 3 devices and the registry holds no more (see broker/mod.rs:
    // a connection the router turns away would make rumqttd deaf). Devices registered under
    // a higher limit are refused at authentication, however often they retry with the same id
    // (the pattern behind rumqttd issue #1062).
    let fill = edge.register("fill-3", "bed-03")?;
    assert!(
        edge.register("extra-0", "bed-10").is_err(),
        "registry beyond max_devices"
    );
    let mut surplus = Vec::new();
    for i in 0..4 {
        let id = format!("extra-{i}");
        surplus.push((
            id.clone(),
            edge.register_with_capacity(&id, &format!("bed-1{i}"), 10)?,
        ));
    }
    let mut fitted = vec![
        Device::connect(mqtt, "good-2", &good_password, "bed-02").await?,
        Device::connect(mqtt, "fill-3", &fill, "bed-03").await?,
    ];
    for _round in 0..3 {
        for (id, pass) in &surplus {
            assert!(
                Device::connect(mqtt, id, pass, "bed-10").await.is_err(),
                "{id} exceeded the limit"
            );
        }
        // Session takeover by a registered device keeps its one slot.
        fitted.push(Device::connect(mqtt, "fill-3", &fill, "bed-03").await?);
    }

    // The good device still publishes end to end, and newcomers still get in.
    good.publish(r#"{"hr":71}"#).await?;
    let v = dash
        .until(|v| is(v, "vitals", "bed-01") && v["values"]["hr"] == 71.0)
        .await?;
    assert_eq!(v["ward"], "ward-a");
    let mut again = Device::connect(mqtt, "good-2", &good_password, "bed-02").await?;
    again.publish(r#"{"hr":72}"#).await?;
    dash.until(|v| is(v, "vitals", "bed-02")).await?;

    let text = edge.metrics().await?;
    let refused = |r: AuthRefusal| {
        metric(
            &text,
            &format!(
                "wardlink_edge_mqtt_auth_refused_total{{reason=\"{}\"}}",
                r.label()
            ),
        )
        .unwrap_or(0)
    };
    assert_eq!(refused(AuthRefusal::BadClientId), 15, "{text}");
    assert_eq!(refused(AuthRefusal::UnknownDevice), 3);
    assert_eq!(refused(AuthRefusal::BadPassword), 3);
    assert_eq!(refused(AuthRefusal::ClientIdMismatch), 3);
    assert_eq!(refused(AuthRefusal::OverCapacity), 12);
    Ok(())
}
