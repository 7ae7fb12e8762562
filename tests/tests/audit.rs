//! The audit log: dashboard sessions, alarm state changes, acknowledgements, silences and
//! settings are recorded with who and when, patients only by pseudonym; the `auditor` role
//! exports it as NDJSON, and `wardlink-cloud audit verify` finds any edit, deletion or
//! reordering in an export.

use std::time::Duration;

use serde_json::Value;
use wardlink_cloud::token::Role;
use wardlink_tests::process::binary;
use wardlink_tests::{Dashboard, Hub, http_request, put_settings};

/// A patient id that must never appear in the audit log.
const CANARY: &str = "canary-7731";

async fn export(hub: &Hub, token: &str, query: &str) -> anyhow::Result<(u16, String)> {
    let auth = format!("Bearer {token}");
    http_request(
        hub.running.http_addr,
        &format!("/api/audit{query}"),
        &[("authorization", &auth)],
    )
    .await
}

fn entries(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn verify(text: &str) -> anyhow::Result<(bool, String)> {
    verify_anchored(text, &[])
}

fn verify_anchored(text: &str, anchors: &[&str]) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("audit.ndjson");
    std::fs::write(&file, text)?;
    let out = std::process::Command::new(binary("wardlink-cloud")?)
        .args(["audit", "verify"])
        .arg(&file)
        .args(anchors.iter().flat_map(|a| ["--anchor", a]))
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_audited_pseudonymised_and_tamper_evident() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |cfg| {
            cfg.alarms.hr.delay_s = 0;
            cfg.alarms.hr.extreme_confirm_s = 0;
        })
        .await?;
    let mut device = edge.device("mon-1", CANARY).await?;
    let nurse = hub.nurse("ward-a");
    let mut dash = Dashboard::connect(&hub.ws_url(""), &nurse).await?;

    device.publish(r#"{"hr":200}"#).await?;
    let alert = dash
        .until(|v| v["type"] == "alert" && v["state"] == "raised")
        .await?;
    let id = alert["id"].as_str().unwrap_or_default().to_owned();
    dash.send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    dash.until(|v| v["type"] == "alert" && v["state"] == "acknowledged")
        .await?;
    dash.send(&format!(
        r#"{{"type":"silence","patient":"{CANARY}","minutes":5,"reason":"turning the patient"}}"#
    ))
    .await?;
    dash.until(|v| v["type"] == "silence").await?;
    let doctor = hub.token(
        "dr-who",
        Role::Doctor,
        &["ward-a"],
        Duration::from_secs(600),
    );
    let (status, _) = put_settings(
        hub.running.http_addr,
        &doctor,
        CANARY,
        r#"{"spo2_scale":2}"#,
    )
    .await?;
    assert_eq!(status, 202);
    dash.close().await;

    // Only auditors read it.
    let auditor = hub.token("aud", Role::Auditor, &[], Duration::from_secs(600));
    assert_eq!(export(&hub, &nurse, "").await?.0, 403);
    assert_eq!(
        http_request(hub.running.http_addr, "/api/audit", &[])
            .await?
            .0,
        401
    );
    assert_eq!(export(&hub, &auditor, "?from=yesterday").await?.0, 400);

    // The session's end is written once it has closed.
    let deadline = tokio::time::Instant::now() + wardlink_tests::PATIENCE;
    let body = loop {
        let (status, body) = export(&hub, &auditor, "").await?;
        assert_eq!(status, 200);
        if entries(&body).iter().any(|e| e["action"] == "ws_close") {
            break body;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no ws_close:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = entries(&body);
    let actions: Vec<&str> = log.iter().filter_map(|e| e["action"].as_str()).collect();
    for want in [
        "ws_open",
        "alarm_raised",
        "alarm_acknowledged",
        "silence",
        "settings",
        "ws_close",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let ack = log
        .iter()
        .find(|e| e["action"] == "alarm_acknowledged")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ack["actor"], "nurse");
    assert_eq!(ack["subject"], id.as_str());
    let raised = log
        .iter()
        .find(|e| e["action"] == "alarm_raised")
        .cloned()
        .unwrap_or_default();
    assert_eq!(raised["actor"], "edge:edge-a");
    // One patient, one pseudonym, never the id.
    let pseudonym = raised["patient"].as_str().unwrap_or_default();
    assert!(pseudonym.starts_with("v1:"), "{raised}");
    assert_eq!(ack["patient"], pseudonym);
    assert!(
        !body.contains(CANARY),
        "the raw patient id is in the audit log"
    );

    // The export verifies; an edit, a deletion and a reordering are each found.
    let (intact, out) = verify(&body)?;
    assert!(intact, "{out}");
    assert!(out.contains("chain intact"), "{out}");
    let lines: Vec<&str> = body.lines().collect();
    let modified = body.replacen("\"nurse\"", "\"someone\"", 1);
    let mut deleted = lines.clone();
    deleted.remove(1);
    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    for (what, text) in [
        ("modified", modified),
        ("deleted", deleted.join("\n")),
        ("reordered", reordered.join("\n")),
    ] {
        let (ok, out) = verify(&text)?;
        assert!(!ok, "a {what} export verified: {out}");
        assert!(out.contains("entry"), "{what}: {out}");
    }

    // Cutting entries off the end leaves a chain that verifies on its own; an anchor taken
    // from the hub beforehand finds the cut.
    let (status, head) = export(&hub, &auditor, "/head").await?;
    assert_eq!(status, 200, "{head}");
    let head: Value = serde_json::from_str(&head)?;
    let anchor = format!(
        "{}:{}",
        head["seq"].as_u64().unwrap_or_default(),
        head["hash"].as_str().unwrap_or_default()
    );
    let (status, full) = export(&hub, &auditor, "").await?;
    assert_eq!(status, 200);
    let (ok, out) = verify_anchored(&full, &[&anchor])?;
    assert!(ok, "{anchor}: {out}");
    let lines: Vec<&str> = full.lines().collect();
    let cut = lines[..lines.len() - 2].join("\n");
    let (ok, out) = verify(&cut)?;
    assert!(ok, "a prefix of the log is a valid chain: {out}");
    let (ok, out) = verify_anchored(&cut, &[&anchor])?;
    assert!(!ok, "a truncated export verified against its anchor: {out}");
    assert!(out.contains("cut off"), "{out}");
    // A nurse may not read the head.
    let (status, _) = export(&hub, &hub.nurse("ward-a"), "/head").await?;
    assert_eq!(status, 403);
    Ok(())
}
