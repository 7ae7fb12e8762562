//! Hostile dashboard clients (OWASP WebSocket cheat sheet): a page from a foreign origin, a
//! flood of messages, a 1 MiB frame, binary garbage. Each is refused or cut off with a clear
//! code, and a legitimate dashboard keeps receiving every event meanwhile.

use tokio_tungstenite::tungstenite::Message;
use wardlink_tests::{Dashboard, Hub, is, refused_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_cut_off_and_others_carry_on() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-a", "ward-a", |_| {}).await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    let token = hub.nurse("ward-a");
    let url = hub.ws_url("");

    // Origin: a foreign page is refused before the upgrade; the hub's own origin is not.
    let foreign =
        Dashboard::connect_with(&url, &token, &[("origin", "https://evil.example")]).await;
    assert_eq!(refused_status(&foreign), Some(403));
    let own = format!("http://{}", hub.running.http_addr);
    let mut legit = Dashboard::connect_with(&url, &token, &[("origin", own.as_str())]).await?;

    // A flood over the message rate is closed with 1008.
    let mut flooder = Dashboard::connect(&url, &token).await?;
    for _ in 0..200 {
        if flooder
            .send_raw(Message::Text(r#"{"type":"ack","alert":"x"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(flooder.closed_with().await?, Some(1008));

    // A 1 MiB frame ends that connection.
    let mut big = Dashboard::connect(&url, &token).await?;
    let _ = big
        .send_raw(Message::Text("x".repeat(1 << 20).into()))
        .await;
    assert!(big.closed_with().await?.is_none_or(|code| code != 1000));

    // Binary garbage gets an error reply; the session stays.
    let mut garbage = Dashboard::connect(&url, &token).await?;
    garbage
        .send_raw(Message::Binary(vec![0xff, 0x00, 0x13].into()))
        .await?;
    let reply = garbage.until(|v| v["type"] == "error").await?;
    assert_eq!(reply["error"], "binary");

    // The legitimate dashboard received every event throughout.
    for hr in 60..70 {
        device.publish(&format!(r#"{{"hr":{hr}}}"#)).await?;
    }
    for hr in 60..70 {
        let v = legit.until(|v| is(v, "vitals", "bed-01")).await?;
        assert_eq!(v["values"]["hr"], f64::from(hr));
    }
    let text = hub.metrics().await?;
    assert!(
        wardlink_tests::metric(
            &text,
            "wardlink_hub_ws_client_errors_total{reason=\"rate_limit\"}"
        ) == Some(1),
        "{text}"
    );
    Ok(())
}
