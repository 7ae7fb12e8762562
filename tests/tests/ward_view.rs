//! The ward view: the edge serves the dashboard contract on its own listener, checks the hub's
//! tokens with the keys the hub sent it, and keeps working when the hub is gone. An
//! acknowledgement taken there applies at the edge at once and reaches the hub, with who, when
//! the hub is back.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use wardlink_cloud::token::Role;
use wardlink_tests::{Dashboard, Hub, PATIENCE, http_request, refused_status, unix_now};

fn history(
    ward: SocketAddr,
    token: &str,
) -> impl std::future::Future<Output = anyhow::Result<(u16, String)>> {
    let auth = format!("Bearer {token}");
    async move {
        http_request(
            ward,
            "/api/wards/ward-a/history",
            &[("authorization", &auth)],
        )
        .await
    }
}

/// Waits until the ward view answers `token` with `status` (the hub's keys and revocations
/// reach the edge over the control stream).
async fn until_status(ward: SocketAddr, token: &str, status: u16) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (got, body) = history(ward, token).await?;
        if got == status {
            return Ok(body);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the ward view answered {got}, not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ward_view_checks_the_hubs_tokens_and_works_without_the_hub() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
            c.ward.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            c.hub.heartbeat_ms = 200;
        })
        .await?;
    let ward = edge
        .running
        .ward_addr
        .ok_or_else(|| anyhow::anyhow!("no ward view"))?;
    let ws = format!("ws://{ward}/ws");
    let hour = Duration::from_secs(3600);
    let ann = hub.token("ann", Role::Nurse, &["ward-a"], hour);
    until_status(ward, &ann, 200).await?;

    // Refused exactly as at the hub: no token, a forged one, another ward, an auditor.
    let other_hub = Hub::start().await?;
    let forged = other_hub.token("ann", Role::Nurse, &["ward-a"], hour);
    assert_eq!(
        http_request(ward, "/api/wards/ward-a/history", &[])
            .await?
            .0,
        401
    );
    assert_eq!(history(ward, &forged).await?.0, 401);
    let eve = hub.token("eve", Role::Nurse, &["ward-b"], hour);
    assert_eq!(history(ward, &eve).await?.0, 403);
    assert_eq!(
        refused_status(&Dashboard::connect(&ws, &eve).await),
        Some(403)
    );
    assert_eq!(
        refused_status(&Dashboard::connect(&ws, &forged).await),
        Some(401)
    );
    let auditor = hub.token("aud", Role::Auditor, &[], hour);
    assert_eq!(history(ward, &auditor).await?.0, 403);
    // A token revoked at the hub while the link is up is refused at the ward view too.
    let bob = hub.token("bob", Role::Nurse, &["ward-a"], hour);
    until_status(ward, &bob, 200).await?;
    let (jti, exp) = wardlink_cloud::token::peek(&bob).ok_or_else(|| anyhow::anyhow!("jti"))?;
    wardlink_cloud::revocation::revoke_token(&hub.config, &jti, exp, unix_now())?;
    until_status(ward, &bob, 401).await?;

    // A live session: told the hub is reachable; sees a new alarm and acknowledges it.
    let mut nurse = Dashboard::connect(&ws, &ann).await?;
    let link = nurse.until(|v| v["type"] == "link").await?;
    assert_eq!(
        (link["view"].as_str(), link["hub"].as_str()),
        (Some("ward"), Some("reachable"))
    );
    let mut monitor = edge.device("mon-1", "bed-01").await?;
    monitor.publish(r#"{"hr":38}"#).await?;
    monitor.publish(r#"{"hr":25}"#).await?;
    let raised = nurse
        .until(|v| v["type"] == "alert" && v["state"] == "raised")
        .await?;
    assert_eq!(raised["ward"], "ward-a");

    // The hub goes away: the ward view says so, and keeps raising and answering alarms.
    let (dir, config) = hub.stop().await;
    let link = nurse
        .until(|v| v["type"] == "link" && v["hub"] == "unreachable")
        .await?;
    assert_eq!(link["edge"], "edge-a");
    monitor.publish(r#"{"spo2":80}"#).await?;
    monitor.publish(r#"{"spo2":79}"#).await?;
    let offline = nurse
        .until(|v| v["type"] == "alert" && v["kind"] == "spo2_low" && v["state"] == "raised")
        .await?;
    let id = offline["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(offline["version"], 1);
    // A worsening overtakes the version on the nurse's screen: her click on version 1 is
    // refused, and audited at the hub once it is back.
    monitor.publish(r#"{"spo2":74}"#).await?;
    nurse
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["version"] == 2)
        .await?;
    nurse
        .send(&format!(r#"{{"type":"ack","alert":"{id}","version":1}}"#))
        .await?;
    let stale = tokio::time::timeout(PATIENCE, nurse.until(|v| v["type"] == "error"))
        .await
        .map_err(|_| anyhow::anyhow!("no refusal of a stale acknowledgement"))??;
    assert_eq!(stale["error"], "stale_version", "{stale}");
    // As the hub answers: the page frees the episode's button for the version now shown.
    assert_eq!(
        (stale["alert"].as_str(), stale["version"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    // Without a version (an older client), the acknowledgement covers the current one.
    nurse
        .send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    let acked = nurse
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    assert_eq!(acked["by"], "ann");
    nurse
        .send(r#"{"type":"ack","alert":"no-such-alert"}"#)
        .await?;
    assert_eq!(
        nurse.until(|v| v["type"] == "error").await?["error"],
        "unknown_alert"
    );
    // A resuming session gets what it missed, from the edge's own seqs.
    let since = raised["seq"].as_u64().unwrap_or(0);
    let mut again = Dashboard::connect(&format!("{ws}?since={since}"), &ann).await?;
    again
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;

    // The hub comes back: its dashboards show the alarm acknowledged by the ward view's user.
    let hub = Hub::resume(dir, config).await?;
    let mut central = Dashboard::connect(&hub.ws_url("since=0"), &ann).await?;
    let seen = central
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    assert_eq!(seen["by"], "ann");
    nurse
        .until(|v| v["type"] == "link" && v["hub"] == "reachable")
        .await?;
    let _: Value = serde_json::from_str(&until_status(ward, &ann, 200).await?)?;

    // Every use of the ward view is in the hub's audit log, with who and from which edge; the
    // acknowledgement under the nurse's name; the patient only by pseudonym.
    let auditor = hub.token("aud", Role::Auditor, &[], hour);
    let auth = format!("Bearer {auditor}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, log) = http_request(
            hub.running.http_addr,
            "/api/audit",
            &[("authorization", &auth)],
        )
        .await?;
        assert_eq!(status, 200, "{log}");
        let entries: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let by_ann = |action: &str| {
            entries.iter().any(|e| {
                e["actor"] == "ann" && e["action"] == action && e["subject"] == "edge:edge-a"
            })
        };
        let acked = entries
            .iter()
            .any(|e| e["actor"] == "ann" && e.to_string().contains("acknowledged"));
        if by_ann("ws_open") && by_ann("history_read") && by_ann("ack_stale") && acked {
            assert!(!log.contains("bed-01"), "a raw patient id in the audit log");
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "ward view use missing from the audit log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
