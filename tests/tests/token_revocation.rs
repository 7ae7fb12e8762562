//! `wardlink-cloud revoke-token`: a running hub closes the revoked token's open sessions (1008)
//! and refuses it from then on (401), while other tokens keep working.

use wardlink_tests::process::binary;
use wardlink_tests::{Dashboard, Hub, refused_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_cut_off_and_refused() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let stolen = hub.nurse("ward-a");
    let other = hub.nurse("ward-a");
    let url = hub.ws_url("");
    let mut victim = Dashboard::connect(&url, &stolen).await?;
    let mut bystander = Dashboard::connect(&url, &other).await?;

    let out = std::process::Command::new(binary("wardlink-cloud")?)
        .arg("revoke-token")
        .arg(hub.dir.path())
        .args(["--token", &stolen])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));

    assert_eq!(victim.closed_with().await?, Some(1008));
    assert_eq!(
        refused_status(&Dashboard::connect(&url, &stolen).await),
        Some(401)
    );
    // Another token of the same user and ward is unaffected.
    assert!(Dashboard::connect(&url, &other).await.is_ok());
    bystander.send(r#"{"type":"ack","alert":"none"}"#).await?;
    let reply = bystander.until(|v| v["type"] == "error").await?;
    assert_eq!(reply["error"], "unknown_alert");

    // Not a token: a clear error, exit 64.
    let out = std::process::Command::new(binary("wardlink-cloud")?)
        .arg("revoke-token")
        .arg(hub.dir.path())
        .args(["--token", "not-a-token"])
        .output()?;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    Ok(())
}
