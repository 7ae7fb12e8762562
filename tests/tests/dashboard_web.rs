//! The web dashboard (issue 7) in a real headless Chromium, as a nurse would use it: a
//! deteriorating patient appears on the ward view and in the alarm list, the nurse clicks
//! Acknowledge, and another clinician's plain WebSocket client sees who acknowledged. Tokens
//! for one ward never render another; an expired token goes back to sign-in. The history
//! endpoint behind the patient view is tested over plain HTTP.

use std::time::Duration;

use serde_json::Value;
use wardlink_cloud::token::Role;
use wardlink_shared::alarm::Priority;
use wardlink_tests::browser::{Browser, artefacts};
use wardlink_tests::{Dashboard, Edge, Hub, http_request, stamped, unix_now};

async fn edge(hub: &Hub, id: &str, ward: &str) -> anyhow::Result<Edge> {
    hub.edge(id, ward, |c| {
        c.alarms.hr.delay_s = 0;
        c.alarms.hr.extreme_confirm_s = 0;
        c.alarms.hr.priority = Priority::High;
    })
    .await
}

/// A ward-A nurse's token for an hour.
fn nurse_ann(hub: &Hub) -> String {
    hub.token(
        "nurse-ann",
        Role::Nurse,
        &["ward-a"],
        Duration::from_secs(3600),
    )
}

fn page_url(hub: &Hub, token: &str) -> String {
    format!("http://{}/?token={token}", hub.running.http_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurse_sees_the_alarm_and_acknowledges_it_for_everyone() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = edge(&hub, "edge-a", "ward-a").await?;
    let mut colleague = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut calm = edge.device("mon-2", "bed-02").await?;
    calm.publish(
        r#"{"hr":72,"spo2":97,"rr":14,"temp":36.9,"sbp":122,"dbp":78,"o2":false,"acvpu":"A"}"#,
    )
    .await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    device
        .publish(
            r#"{"hr":88,"spo2":96,"rr":16,"temp":37.1,"sbp":118,"dbp":76,"o2":false,"acvpu":"A"}"#,
        )
        .await?;

    // Both readings are stored before the page opens: they come from history, not live.
    // (In publishing order: one edge keeps it.)
    colleague
        .until(|v| wardlink_tests::is(v, "vitals", "bed-02"))
        .await?;
    colleague
        .until(|v| wardlink_tests::is(v, "vitals", "bed-01"))
        .await?;
    let browser = Browser::launch().await?;
    let mut page = browser.page(&page_url(&hub, &nurse_ann(&hub))).await?;
    page.viewport(1280, 900).await?;
    // First paint from history, then live.
    page.wait_for(r#"document.querySelector('[data-patient="bed-02"] [data-vital="hr"]')?.textContent === "72""#)
        .await?;
    page.wait_for(r#"document.getElementById("link").textContent === "Live""#)
        .await?;
    // The token left the address bar.
    assert_eq!(page.eval("location.search").await?, "");

    // The patient deteriorates: the tile and the alarm list show it, and it sorts first.
    device
        .publish(
            r#"{"hr":150,"spo2":91,"rr":24,"temp":38.4,"sbp":96,"dbp":60,"o2":false,"acvpu":"A"}"#,
        )
        .await?;
    page.wait_for(r#"document.querySelector('[data-patient="bed-01"] [data-vital="hr"]')?.textContent === "150""#)
        .await?;
    page.wait_for(
        r#"document.querySelector('[data-patient="bed-01"]').classList.contains("alarm-high")"#,
    )
    .await?;
    let first = page
        .eval(r##"document.querySelector("#tiles .tile").dataset.patient"##)
        .await?;
    assert_eq!(first, "bed-01");
    let id = page
        .wait_for(r##"[...document.querySelectorAll("#alarm-list li")].find(li => li.textContent.includes("hr_high") && li.textContent.includes("bed-01"))?.dataset.alert"##)
        .await?;
    let id = id.as_str().unwrap_or_default().to_owned();
    let news = page
        .eval(r#"document.querySelector('[data-patient="bed-01"] .news').dataset.news"#)
        .await?;
    assert!(
        news.as_str().and_then(|n| n.parse::<u32>().ok()) >= Some(7),
        "NEWS2 {news}"
    );
    page.screenshot(&artefacts().join("ward-view.png")).await?;
    // A tablet in portrait: the same page, reflowed.
    page.viewport(768, 1024).await?;
    page.screenshot(&artefacts().join("ward-view-tablet.png"))
        .await?;
    page.viewport(1280, 900).await?;

    // Acknowledge in the browser; a colleague's plain client learns who did.
    page.eval(&format!(
        r#"document.querySelector('[data-ack="{id}"]').click()"#
    ))
    .await?;
    let ack = colleague
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    assert_eq!(ack["by"], "nurse-ann");
    page.wait_for(&format!(
        r#"document.querySelector('[data-alert="{id}"] [data-role="by"]')?.textContent === "nurse-ann""#
    ))
    .await?;

    // The ward's edge is shown online.
    page.wait_for(
        r#"document.querySelector('[data-edge="edge-a"]')?.textContent.includes("online")"#,
    )
    .await?;

    // A network blip: the hub goes away, the page says so, a reading arrives meanwhile, and
    // once the hub is back the page resumes from its last event and shows it.
    drop(colleague);
    let (dir, config) = hub.stop().await;
    page.wait_for(r#"document.getElementById("link").textContent.startsWith("Disconnected")"#)
        .await?;
    device.publish(r#"{"hr":151}"#).await?;
    let _hub = Hub::restart(dir, config).await?;
    page.wait_for(r#"document.querySelector('[data-patient="bed-01"] [data-vital="hr"]')?.textContent === "151""#)
        .await?;
    page.wait_for(r#"document.getElementById("link").textContent === "Live""#)
        .await?;

    // The patient view loads the history with the alarm episode marked.
    page.eval(r#"document.querySelector('[data-patient="bed-01"]').click()"#)
        .await?;
    page.wait_for(r#"document.querySelector('[data-chart="hr"] polyline')?.getAttribute("points").split(" ").length >= 2"#)
        .await?;
    page.wait_for(r#"document.querySelectorAll('[data-chart="hr"] rect.episode').length >= 1"#)
        .await?;
    page.screenshot(&artefacts().join("patient-view.png"))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wards_token_never_renders_another_and_expiry_returns_to_sign_in() -> anyhow::Result<()>
{
    let hub = Hub::start().await?;
    let a = edge(&hub, "edge-a", "ward-a").await?;
    let b = edge(&hub, "edge-b", "ward-b").await?;
    let mut other = b.device("mon-b", "bed-b1").await?;
    other.publish(r#"{"hr":140}"#).await?;
    let browser = Browser::launch().await?;
    let mut page = browser.page(&page_url(&hub, &nurse_ann(&hub))).await?;
    page.wait_for(r#"document.getElementById("link").textContent === "Live""#)
        .await?;
    // Ward B publishes again; an admin sees its seq; once the page has passed that seq (with
    // a later ward A reading), B's reading would have been rendered had it been sent.
    let mut admin = Dashboard::connect(&hub.ws_url(""), &hub.admin()).await?;
    other.publish(r#"{"hr":141}"#).await?;
    let b_seq = admin
        .until(|v| {
            v["type"] == "vitals"
                && v["ward"] == "ward-b"
                && v["values"]["hr"].as_f64() == Some(141.0)
        })
        .await?["seq"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let mut mine = a.device("mon-a", "bed-a1").await?;
    mine.publish(r#"{"hr":80}"#).await?;
    page.wait_for(r#"document.querySelector('[data-patient="bed-a1"]')"#)
        .await?;
    page.wait_for(&format!("Number(document.body.dataset.seq) > {b_seq}"))
        .await?;
    let leaked = page
        .eval(r#"document.body.innerText.includes("bed-b1") || !!document.querySelector('[data-patient="bed-b1"]')"#)
        .await?;
    assert_eq!(
        leaked, false,
        "ward B's patient rendered for a ward A token"
    );

    // A token that has expired goes straight to sign-in, and is forgotten.
    let iat = unix_now() - 7200;
    let expired = hub.token_at(
        "nurse-ann",
        Role::Nurse,
        &["ward-a"],
        iat,
        Duration::from_secs(60),
    );
    let mut page = browser.page(&page_url(&hub, &expired)).await?;
    page.wait_for(r#"!document.getElementById("signin").hidden"#)
        .await?;
    let message = page
        .eval(r#"document.getElementById("signin-message").textContent"#)
        .await?;
    assert!(
        message.as_str().unwrap_or_default().contains("expired"),
        "{message}"
    );
    assert_eq!(
        page.eval(r#"sessionStorage.getItem("wardlink.token")"#)
            .await?,
        Value::Null
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_by_patient_and_time_range() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let a = edge(&hub, "edge-a", "ward-a").await?;
    let _b = edge(&hub, "edge-b", "ward-b").await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut device = a.device("mon-1", "bed-1").await?;
    let now = i64::try_from(unix_now())? * 1000;
    let minutes = |m: i64| now - m * 60_000;
    for (m, hr) in [(50, 71), (20, 72), (5, 73)] {
        device.publish(&stamped(hr, minutes(m))).await?;
    }
    dash.until(|v| v["type"] == "vitals" && v["values"]["hr"].as_f64() == Some(73.0))
        .await?;
    let iso = |ms: i64| wardlink_shared::time::format_rfc3339(ms);
    let get = |token: String, path: String| {
        let addr = hub.running.http_addr;
        async move {
            let auth = format!("Bearer {token}");
            http_request(addr, &path, &[("authorization", &auth)]).await
        }
    };
    let nurse = hub.nurse("ward-a");

    // The last 30 minutes (the default), and an explicit range.
    let (status, body) = get(nurse.clone(), "/api/patients/bed-1/history".into()).await?;
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body)?;
    let hrs: Vec<f64> = h["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "vitals")
        .filter_map(|e| e["values"]["hr"].as_f64())
        .collect();
    assert_eq!(hrs, vec![72.0, 73.0]);
    assert!(h["seq"].as_u64() >= Some(3), "{body}");
    let (_, body) = get(
        nurse.clone(),
        format!(
            "/api/patients/bed-1/history?from={}&to={}",
            iso(minutes(60)),
            iso(minutes(30))
        ),
    )
    .await?;
    let h: Value = serde_json::from_str(&body)?;
    assert_eq!(h["events"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(h["events"][0]["values"]["hr"].as_f64(), Some(71.0));
    // An empty range.
    let (status, body) = get(
        nurse.clone(),
        format!(
            "/api/patients/bed-1/history?from={}&to={}",
            iso(minutes(600)),
            iso(minutes(590))
        ),
    )
    .await?;
    assert_eq!(status, 200);
    let h: Value = serde_json::from_str(&body)?;
    assert_eq!(h["events"], serde_json::json!([]));
    // The ward view's first paint.
    let (status, body) = get(nurse.clone(), "/api/wards/ward-a/history".into()).await?;
    assert_eq!(status, 200);
    assert!(body.contains("bed-1"));

    // Authorisation: the same as the WebSocket.
    for (token, path, want) in [
        // Another ward's patient is as unknown as a patient that never existed.
        (hub.nurse("ward-b"), "/api/patients/bed-1/history", 404),
        (hub.nurse("ward-b"), "/api/wards/ward-a/history", 403),
        (
            hub.token("aud", Role::Auditor, &[], Duration::from_secs(60)),
            "/api/patients/bed-1/history",
            403,
        ),
        ("not-a-token".into(), "/api/patients/bed-1/history", 401),
        (nurse.clone(), "/api/patients/nobody/history", 404),
        (
            nurse.clone(),
            "/api/patients/bed-1/history?from=yesterday",
            400,
        ),
    ] {
        let (status, body) = get(token, path.into()).await?;
        assert_eq!(status, want, "{path}: {body}");
    }
    // Each read is audited, the patient by pseudonym.
    let auditor = hub.token("aud", Role::Auditor, &[], Duration::from_secs(60));
    let (_, log) = get(auditor, "/api/audit".into()).await?;
    assert!(log.contains("history_read"));
    assert!(!log.contains("bed-1"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_patients_render_and_update_in_place() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = edge(&hub, "edge-a", "ward-a").await?;
    let browser = Browser::launch().await?;
    let mut page = browser.page(&page_url(&hub, &nurse_ann(&hub))).await?;
    page.viewport(1920, 1080).await?;
    page.wait_for(r#"document.getElementById("link").textContent === "Live""#)
        .await?;
    let mut devices = Vec::new();
    for i in 0..40 {
        devices.push(
            edge.device(&format!("mon-{i}"), &format!("bed-{i:02}"))
                .await?,
        );
    }
    for round in 0..3u32 {
        if round == 1 {
            // Mark every tile's node: updates must keep the same nodes (no re-render).
            page.wait_for(r##"document.querySelectorAll("#tiles .tile").length === 40"##)
                .await?;
            page.eval(
                r##"document.querySelectorAll("#tiles .tile").forEach(t => t.wardlinkMark = 1)"##,
            )
            .await?;
        }
        for (i, d) in devices.iter_mut().enumerate() {
            let hr = 60 + u32::try_from(i)? + round;
            d.publish_nowait(&format!(r#"{{"hr":{hr},"spo2":97,"rr":14}}"#))
                .await?;
        }
    }
    // Every tile shows its last value: 40 tiles, each updated in place three times.
    page.wait_for(
        r##"document.querySelectorAll("#tiles .tile").length === 40 &&
           [...document.querySelectorAll("#tiles .tile")].every(t =>
             t.querySelector('[data-vital="hr"]').textContent ===
             String(62 + Number(t.dataset.patient.slice(4))) && t.wardlinkMark === 1)"##,
    )
    .await?;
    page.screenshot(&artefacts().join("ward-view-40.png"))
        .await?;
    Ok(())
}

/// Issue 16: a worsening rewrites the alarm list's item in place (the same element, the new
/// text and version, the tile's text too); the Acknowledge button sends the version on screen,
/// so a click on a version a worsening overtook is refused and the button can be pressed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worsening_rewrites_the_alarm_list_in_place() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = edge(&hub, "edge-a", "ward-a").await?;
    let mut colleague = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let browser = Browser::launch().await?;
    let mut page = browser.page(&page_url(&hub, &nurse_ann(&hub))).await?;
    page.wait_for(r#"document.getElementById("link").textContent === "Live""#)
        .await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    device.publish(r#"{"hr":150}"#).await?;
    let item = r##"document.querySelector("#alarm-list li")"##;
    let id = page
        .wait_for(&format!(
            r#"{item}?.textContent.includes("HR high: 150 /min > 130") && {item}.dataset.alert"#
        ))
        .await?;
    let id = id.as_str().unwrap_or_default().to_owned();
    assert_eq!(page.eval(&format!("{item}.dataset.version")).await?, "1");
    // Mark the element: an item rebuilt instead of rewritten would lose the mark.
    page.eval(&format!(r#"{item}.dataset.mark = "first""#))
        .await?;

    device.publish(r#"{"hr":172}"#).await?;
    page.wait_for(&format!(
        r#"{item}.querySelector(".msg").textContent === "HR high: 172 /min > 130""#
    ))
    .await?;
    assert_eq!(page.eval(&format!("{item}.dataset.mark")).await?, "first");
    assert_eq!(page.eval(&format!("{item}.dataset.version")).await?, "2");
    assert_eq!(
        page.eval(r##"document.querySelectorAll("#alarm-list li").length"##)
            .await?,
        1
    );
    page.wait_for(r#"document.querySelector('[data-patient="bed-01"] [data-role="alarm-text"]').textContent === "HR high: 172 /min > 130""#)
        .await?;
    page.screenshot(&artefacts().join("alarm-worsened.png"))
        .await?;

    // A click on what the screen showed before the worsening (version 1) is refused.
    page.eval(&format!(
        r#"{item}.dataset.version = "1"; document.querySelector('[data-ack="{id}"]').click()"#
    ))
    .await?;
    page.wait_for(r#"document.getElementById("toast").textContent.includes("worsened")"#)
        .await?;
    page.wait_for(&format!(
        r#"document.querySelector('[data-ack="{id}"]').disabled === false"#
    ))
    .await?;
    // The current version is acknowledged; everyone sees it.
    page.eval(&format!(
        r#"{item}.dataset.version = "2"; document.querySelector('[data-ack="{id}"]').click()"#
    ))
    .await?;
    let acked = colleague
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    assert_eq!(
        (acked["by"].as_str(), acked["version"].as_u64()),
        (Some("nurse-ann"), Some(2))
    );
    Ok(())
}
