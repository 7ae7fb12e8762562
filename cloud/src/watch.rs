//! `wardlink-cloud watch`: a terminal feed of what a dashboard receives — alerts in colour,
//! vitals compactly — for the demo and for operators without a browser.

use std::io::{IsTerminal, Write as _};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Connects to `url` with `token` and prints every message until the server closes or
/// `shutdown` fires.
pub async fn run(
    url: &str,
    token: &str,
    vitals: bool,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut request = url.into_client_request().context("bad --url")?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).context("bad token")?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let colour = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = socket.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(line) = render(&v, vitals, colour) {
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                writeln!(out, "-- connection closed by hub {frame:?}")?;
                return Ok(());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        }
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

fn clock(ts: &str) -> &str {
    ts.get(11..23).unwrap_or(ts)
}

/// One line for one message.
pub fn render(v: &Value, vitals: bool, colour: bool) -> Option<String> {
    let paint = |code: &str, text: String| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text
        }
    };
    match s(v, "type") {
        "alert" => {
            let priority = s(v, "priority");
            let code = match priority {
                "high" => "1;41;97",
                "medium" => "1;43;30",
                _ => "1;46;30",
            };
            let by = v
                .get("by")
                .and_then(Value::as_str)
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            // `raised v2`: a worsening; `update v2`: new values of version 2, not news.
            let state = if v.get("update").and_then(Value::as_bool) == Some(true) {
                "update"
            } else {
                s(v, "state")
            };
            let state = match v.get("version").and_then(Value::as_u64) {
                Some(n) if n > 0 => format!("{state} v{n}"),
                _ => state.to_owned(),
            };
            Some(format!(
                "{} {} {:<15} {:<8} {:<10} {}{}",
                clock(s(v, "ts")),
                paint(code, format!(" {:<6} ", priority.to_uppercase())),
                state,
                s(v, "patient"),
                s(v, "kind"),
                s(v, "message"),
                by
            ))
        }
        "edge" => Some(paint(
            "1;35",
            format!(
                "-- edge {} (ward {}) is {}",
                s(v, "edge"),
                s(v, "ward"),
                s(v, "state")
            ),
        )),
        "vitals" if vitals => {
            let vals = v.get("values")?;
            let num = |k: &str| {
                vals.get(k)
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |x| format!("{x}"))
            };
            Some(paint(
                "2",
                format!(
                    "{}          vitals       {:<8} HR {:>4}  SpO2 {:>4}  RR {:>3}  T {:>5}  BP {}/{}  NEWS2 {}",
                    clock(s(v, "ts")),
                    s(v, "patient"),
                    num("hr"),
                    num("spo2"),
                    num("rr"),
                    num("temp"),
                    num("sbp"),
                    num("dbp"),
                    v.get("news2")
                        .and_then(Value::as_u64)
                        .map_or("-".into(), |n| n.to_string())
                ),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_line_says_its_version_and_whether_it_is_news() {
        let alert = |update: bool, version: u64| {
            serde_json::json!({"type": "alert", "ts": "2026-12-08T02:35:06.247Z", "priority": "high",
                "state": "raised", "patient": "bed-01", "kind": "news2", "message": "NEWS2 15",
                "version": version, "update": update})
        };
        let worse = render(&alert(false, 2), false, false).unwrap_or_default();
        assert!(worse.contains(" raised v2 "), "{worse}");
        let update = render(&alert(true, 2), false, false).unwrap_or_default();
        assert!(update.contains(" update v2 "), "{update}");
        assert!(update.starts_with("02:35:06.247  HIGH  "), "{update}");
    }
}
