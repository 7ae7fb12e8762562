//! The ward view in a real headless Chromium with the hub stopped: the nurse opens the page the
//! edge serves, sees it is the ward view with the hub unreachable, sees a new alarm and
//! acknowledges it; when the hub is back, its dashboards show the alarm acknowledged by her.

use std::net::SocketAddr;
use std::time::Duration;

use wardlink_cloud::token::Role;
use wardlink_shared::alarm::Priority;
use wardlink_tests::browser::{Browser, artefacts};
use wardlink_tests::{Dashboard, Hub, PATIENCE, http_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_hub_stopped_a_nurse_answers_an_alarm_on_the_ward_view() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
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
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while http_request(
        ward,
        "/api/wards/ward-a/history",
        &[("authorization", &auth)],
    )
    .await?
    .0 != 200
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the edge never got the hub's keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut device = edge.device("mon-1", "bed-01").await?;
    device
        .publish(
            r#"{"hr":88,"spo2":96,"rr":16,"temp":37.1,"sbp":118,"dbp":76,"o2":false,"acvpu":"A"}"#,
        )
        .await?;

    // The hub goes away.
    let (dir, config) = hub.stop().await;
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

    // A new alarm, seen and acknowledged on the ward view.
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

    // The hub is back: the page says so, and the hub's dashboards show who acknowledged.
    let hub = Hub::resume(dir, config).await?;
    page.wait_for(r#"document.getElementById("view").dataset.hub === "reachable""#)
        .await?;
    let mut central = Dashboard::connect(&hub.ws_url("since=0"), &hub.nurse("ward-a")).await?;
    let acked = central
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    assert_eq!(acked["by"], "nurse-ann");
    Ok(())
}
