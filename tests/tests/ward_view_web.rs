//! The ward view in a real headless Chromium with the hub stopped: the nurse opens the page the
//! edge serves, sees it is the ward view with the hub unreachable, sees a new alarm and
//! acknowledges it; another alarm nobody acknowledges is texted through the ward's own SMS
//! gateway (a local server speaking Twilio's API). When the hub is back, its dashboards show
//! the first alarm acknowledged by her, and the hub does not text the second one again.

use std::net::SocketAddr;
use std::time::Duration;

use wardlink_cloud::token::Role;
use wardlink_shared::alarm::Priority;
use wardlink_tests::browser::{Browser, artefacts};
use wardlink_tests::sms::FakeSms;
use wardlink_tests::{Dashboard, Hub, PATIENCE, http_request, metric, wait_for_metric_eq};

/// The charge nurse's phone, known to the hub's plan and to the edge's.
const CN: &str = "+15550000001";
/// The edge's chain waits this long: time for the nurse to acknowledge the first alarm.
const LOCAL_STEP_S: u64 = 5;

/// The hub's `[notify]`: ward-a's alarms text the charge nurse at once.
fn hub_notify(sms: &FakeSms) -> String {
    format!(
        r#"[notify]
repeat_interval_s = 3600
[[notify.people]]
id = "cn"
name = "Charge nurse A"
phone = "{CN}"
role = "charge_nurse"
[[notify.routes]]
name = "ward-a"
wards = ["ward-a"]
steps = [{{ after_s = 0, to = ["cn"] }}]
{}"#,
        sms.config()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_hub_stopped_a_nurse_answers_an_alarm_on_the_ward_view() -> anyhow::Result<()> {
    let hub_sms = FakeSms::start().await?;
    let gateway = FakeSms::start().await?;
    let hub = Hub::start_with(&hub_notify(&hub_sms), &[("sms.token", "hub-token\n")]).await?;
    let token_file = hub.dir.path().join("gateway.token");
    std::fs::write(&token_file, "gateway-token\n")?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
            c.local_notify = Some(gateway.local_notify(token_file, CN, LOCAL_STEP_S, ""));
            c.ward.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            c.hub.heartbeat_ms = 200;
            c.alarms.hr.delay_s = 0;
            c.alarms.hr.extreme_confirm_s = 0;
            c.alarms.hr.priority = Priority::High;
        })
        .await?;
    let ward = edge
        .running
        .ward_addr
        .ok_or_else(|| anyhow::anyhow!("no ward view"))?;
    let token = hub.token(
        "nurse-ann",
        Role::Nurse,
        &["ward-a"],
        Duration::from_secs(3600),
    );
    // The hub's keys reach the edge over the control stream.
    let auth = format!("Bearer {token}");
    let history = "/api/wards/ward-a/history";
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while http_request(ward, history, &[("authorization", &auth)])
        .await?
        .0
        != 200
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the edge never got the hub's keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut device = edge.device("mon-1", "bed-01").await?;
    // HR and SpO2 only: no NEWS2, so no NEWS2 alarm beside the two this test follows.
    device.publish(r#"{"hr":88,"spo2":96}"#).await?;
    let mut other = edge.device("mon-2", "bed-02").await?;
    other.publish(r#"{"hr":80,"spo2":97}"#).await?;

    // The hub goes away; after `hub_unreachable_after_s` the edge pages by itself.
    let (dir, config) = hub.stop().await;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_local_paging_active", 1).await?;
    let browser = Browser::launch().await?;
    let mut page = browser
        .page(&format!("http://{ward}/?token={token}"))
        .await?;
    page.wait_for(r#"document.getElementById("link").textContent === "Live""#)
        .await?;
    page.wait_for(r#"document.getElementById("view").dataset.hub === "unreachable""#)
        .await?;
    let said = page
        .eval(r#"document.getElementById("view").textContent"#)
        .await?;
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("Ward view (edge-a)") && s.contains("hub unreachable")),
        "{said}"
    );
    page.wait_for(r#"document.querySelector('[data-patient="bed-01"] [data-vital="hr"]')?.textContent === "88""#)
        .await?;

    // A new alarm, seen and acknowledged on the ward view within the edge's step: no text.
    device.publish(r#"{"hr":150}"#).await?;
    let id = page
        .wait_for(r##"[...document.querySelectorAll("#alarm-list li")].find(li => li.textContent.includes("hr_high"))?.dataset.alert"##)
        .await?;
    let id = id.as_str().unwrap_or_default().to_owned();
    page.screenshot(&artefacts().join("ward-view-alone.png"))
        .await?;
    page.eval(&format!(
        r#"document.querySelector('[data-ack="{id}"]').click()"#
    ))
    .await?;
    page.wait_for(&format!(
        r#"document.querySelector('[data-alert="{id}"] [data-role="by"]')?.textContent === "nurse-ann""#
    ))
    .await?;

    // Another alarm nobody acknowledges: texted once through the ward's gateway, after its step.
    other.publish(r#"{"hr":80,"spo2":80}"#).await?;
    other.publish(r#"{"hr":80,"spo2":79}"#).await?;
    let unanswered = page
        .wait_for(r##"[...document.querySelectorAll("#alarm-list li")].find(li => li.textContent.includes("spo2_low"))?.dataset.alert"##)
        .await?;
    let unanswered = unanswered.as_str().unwrap_or_default().to_owned();
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_local_sms_sent_total", 1).await?;
    let texts = gateway.delivered();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0].to, CN);
    assert!(texts[0].key.contains(&unanswered), "{texts:?}");
    assert!(
        !texts[0].body.contains("bed-0"),
        "a patient id in a text: {texts:?}"
    );
    assert!(
        hub_sms.requests().is_empty(),
        "the hub was down, yet texted"
    );

    // The hub is back: the page says so, and the hub's dashboards show who acknowledged.
    let hub = Hub::resume(dir, config).await?;
    page.wait_for(r#"document.getElementById("view").dataset.hub === "reachable""#)
        .await?;
    let mut central = Dashboard::connect(&hub.ws_url("since=0"), &hub.nurse("ward-a")).await?;
    let acked = central
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    assert_eq!(acked["by"], "nurse-ann");

    // The hub learned what the edge sent: it keeps the unanswered alarm's text, not sent.
    let admin = format!("Bearer {}", hub.admin());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, list) = http_request(
            hub.running.http_addr,
            "/api/notifications",
            &[("authorization", &admin)],
        )
        .await?;
        assert_eq!(status, 200, "{list}");
        let rows: serde_json::Value = serde_json::from_str(&list)?;
        let rows = rows.as_array().cloned().unwrap_or_default();
        let settled = |r: &serde_json::Value| r["state"] != "pending";
        let paged = rows.iter().any(|r| {
            r["state"] == "paged_by_edge"
                && r["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == unanswered.as_str()))
        });
        if paged && rows.iter().all(settled) {
            // Nothing the hub decided is still to be sent, and nothing was sent.
            assert!(
                rows.iter().all(|r| r["state"] != "sent"),
                "the hub texted: {list}"
            );
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the hub never took up the edge's page: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let texted = hub_sms.requests();
    assert!(
        texted.is_empty(),
        "the hub texted an alarm answered on the ward view or paged by the edge: {texted:?}"
    );
    // One text from the ward for the whole outage; the acknowledged alarm got none.
    assert_eq!(gateway.delivered().len(), 1);
    assert_eq!(
        metric(
            &edge.metrics().await?,
            "wardlink_edge_local_sms_failed_total"
        ),
        Some(0)
    );
    Ok(())
}
