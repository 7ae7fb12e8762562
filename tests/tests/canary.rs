//! Canary: the system runs as deployed (the real binaries, their default log levels) with a
//! recognisable patient id through the whole path — readings, an alarm, an acknowledgement, a
//! silence, a settings change, an audit export — and the id appears in no log and not in the
//! audit log. (Dashboards, which clinicians use to find the patient, do show it.)

use std::time::Duration;

use wardlink_cloud::config::CloudConfig;
use wardlink_cloud::pki;
use wardlink_cloud::token::Role;
use wardlink_shared::{DeviceId, EdgeId, PatientId, WardId};
use wardlink_tests::process::{EdgeProcess, HubProcess};
use wardlink_tests::{
    Dashboard, Device, http_request, init_hub_dir, put_settings, sign_token, unix_now,
};

const CANARY: &str = "zz-canary-4711";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_patient_id_in_logs_or_audit() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let (_hub_dir, hub_toml) = init_hub_dir()?;
    let hub_config = CloudConfig::load_with_env(&hub_toml, &Default::default())?;
    let mut hub = HubProcess::start_logged(&hub_toml, Some(logs.path())).await?;

    let edge_dir = tempfile::tempdir()?;
    let edge_toml = pki::enroll(
        &hub_config,
        &EdgeId::new("edge-k")?,
        &WardId::new("ward-k")?,
        edge_dir.path(),
    )?;
    // Alarms at the first sample, so the test needs no waiting.
    let mut text = std::fs::read_to_string(&edge_toml)?;
    text.push_str(
        "\n[alarms.hr]\nlow = 40.0\nhigh = 130.0\ndelay_s = 0\nhysteresis = 5.0\n\
         priority = \"medium\"\nlow_extreme = 30.0\nhigh_extreme = 180.0\nextreme_confirm_s = 0\n",
    );
    std::fs::write(&edge_toml, text)?;
    let edge_config =
        wardlink_edge::config::EdgeConfig::load_with_env(&edge_toml, &Default::default())?;
    let password = wardlink_edge::broker::add_device(
        &edge_config.devices_path(),
        DeviceId::new("mon-k")?,
        PatientId::new(CANARY)?,
        edge_config.mqtt.max_devices,
    )?;
    let mut edge =
        EdgeProcess::start_logged(&edge_toml, &hub.quic.to_string(), Some(logs.path())).await?;

    let token = |user: &str, role: Role| {
        sign_token(
            &hub_config,
            user,
            role,
            &["ward-k"],
            unix_now(),
            Duration::from_secs(600),
        )
    };
    let nurse = token("nurse-k", Role::Nurse);
    let mut dash = Dashboard::connect(&hub.ws_url(""), &nurse).await?;
    let mut device = Device::connect(edge.mqtt, "mon-k", &password, CANARY).await?;
    device.publish(r#"{"hr":75,"spo2":97}"#).await?;
    device.publish(r#"{"hr":150,"spo2":97}"#).await?;
    let alert = dash
        .until(|v| v["type"] == "alert" && v["state"] == "raised")
        .await?;
    assert_eq!(alert["patient"], CANARY, "dashboards do show the patient");
    let id = alert["id"].as_str().unwrap_or_default().to_owned();
    dash.send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    dash.until(|v| v["type"] == "alert" && v["state"] == "acknowledged")
        .await?;
    dash.send(&format!(
        r#"{{"type":"silence","patient":"{CANARY}","minutes":5,"reason":"repositioning"}}"#
    ))
    .await?;
    dash.until(|v| v["type"] == "silence").await?;
    let doctor = token("dr-k", Role::Doctor);
    let (status, _) = put_settings(hub.http, &doctor, CANARY, r#"{"spo2_scale":2}"#).await?;
    assert_eq!(status, 202);
    // A bad payload, logged as a refusal.
    device.publish(r#"{"hr":"fast"}"#).await?;
    dash.close().await;
    let auditor = sign_token(
        &hub_config,
        "aud-k",
        Role::Auditor,
        &[],
        unix_now(),
        Duration::from_secs(600),
    );
    let (status, audit) = http_request(
        hub.http,
        "/api/audit",
        &[("authorization", &format!("Bearer {auditor}"))],
    )
    .await?;
    assert_eq!(status, 200);

    // Clean stops flush the logs.
    drop(device);
    assert!(edge.process.terminate()?.success());
    assert!(hub.process.terminate()?.success());
    let edge_log = std::fs::read_to_string(logs.path().join("wardlink-edge.log"))?;
    let hub_log = std::fs::read_to_string(logs.path().join("wardlink-cloud.log"))?;
    // The logs did record the actions (so an empty log cannot pass).
    assert!(hub_log.contains("alert acknowledged"), "{hub_log}");
    assert!(hub_log.contains("patient alarms silenced"), "{hub_log}");
    assert!(edge_log.contains("edge ready"), "{edge_log}");
    assert!(
        audit.contains("alarm_raised") && audit.contains("silence"),
        "{audit}"
    );
    for (what, text) in [
        ("edge log", &edge_log),
        ("hub log", &hub_log),
        ("audit log", &audit),
    ] {
        assert!(
            !text.contains(CANARY),
            "the patient id is in the {what}:\n{text}"
        );
    }
    Ok(())
}
