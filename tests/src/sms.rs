//! A local SMS provider speaking Twilio's Messages API
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`, `From`, `Body`,
//! HTTP basic auth, a JSON answer with the message `sid`), for tests of the hub's SMS path.
//!
//! It records every request, honours the `Idempotency-Key` header (a repeated key gets the
//! first answer again and is not delivered twice), and can be told to fail: 500s, or holding
//! the answer past the client's timeout after accepting the message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// The charge nurse's phone in [`FakeSms::hub_notify`].
pub const CHARGE_NURSE: &str = "+15550000001";
/// The doctor's phone in [`FakeSms::hub_notify`].
pub const DOCTOR: &str = "+15550000002";

/// How the provider answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 201 with a sid.
    Accept,
    /// 500, nothing delivered.
    Fail,
    /// 400 (e.g. an invalid number): a permanent refusal.
    Reject,
    /// Delivers, then answers only after this long (past the hub's timeout).
    Slow(Duration),
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Account SID from the path.
    pub account: String,
    /// `Authorization` header.
    pub authorization: String,
    /// `Idempotency-Key` header.
    pub key: String,
    /// `To`.
    pub to: String,
    /// `From`.
    pub from: String,
    /// `Body`.
    pub body: String,
}

#[derive(Default)]
struct Inner {
    mode: Option<Mode>,
    requests: Vec<Request>,
    /// Delivered messages by idempotency key, in order, with their sid.
    delivered: Vec<(String, String, Request)>,
}

/// The running fake provider.
#[derive(Clone)]
pub struct FakeSms {
    /// Its address.
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

#[derive(serde::Deserialize)]
struct MessageForm {
    #[serde(rename = "To")]
    to: String,
    #[serde(rename = "From")]
    from: String,
    #[serde(rename = "Body")]
    body: String,
}

impl FakeSms {
    /// Starts on an ephemeral loopback port, accepting.
    pub async fn start() -> anyhow::Result<FakeSms> {
        let inner = Arc::new(Mutex::new(Inner {
            mode: Some(Mode::Accept),
            ..Inner::default()
        }));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(messages),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeSms { addr, inner })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes how it answers from now on.
    pub fn set(&self, mode: Mode) {
        self.lock().mode = Some(mode);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Messages delivered (each idempotency key once), in order.
    pub fn delivered(&self) -> Vec<Request> {
        self.lock()
            .delivered
            .iter()
            .map(|(_, _, r)| r.clone())
            .collect()
    }

    /// A hub's `[notify]` for ward-a's high alarms through this provider: the charge nurse
    /// ([`CHARGE_NURSE`]) after `first` s, the doctor ([`DOCTOR`]) after `second` s (the
    /// provider's token is the hub file `sms.token`).
    pub fn hub_notify(&self, first: u64, second: u64) -> String {
        format!(
            r#"[notify]
timezone = "Europe/London"
dashboard_url = "https://wl.example/"
repeat_interval_s = 3600
[[notify.people]]
id = "cn"
name = "Charge nurse A"
phone = "{CHARGE_NURSE}"
role = "charge_nurse"
[[notify.people]]
id = "dr"
name = "Doctor on call"
phone = "{DOCTOR}"
role = "doctor"
[[notify.routes]]
name = "ward-a-high"
wards = ["ward-a"]
priorities = ["high"]
steps = [{{ after_s = {first}, to = ["cn"] }}, {{ after_s = {second}, to = ["dr"] }}]
{}"#,
            self.config()
        )
    }

    /// An edge's `[local_notify]` paging `phone` (person `cn`) through this provider as the
    /// ward's gateway, `after_s` after an alarm is raised, once the hub has been unreachable
    /// for a second. `token` is the gateway's auth token file.
    pub fn local_notify(
        &self,
        token: std::path::PathBuf,
        phone: &str,
        after_s: u64,
        dashboard_url: &str,
    ) -> wardlink_edge::paging::LocalNotifySection {
        use wardlink_shared::notify::{PersonConfig, SmsConfig, SmsProvider};
        wardlink_edge::paging::LocalNotifySection {
            hub_unreachable_after_s: 1,
            dashboard_url: dashboard_url.into(),
            sms: SmsConfig {
                provider: SmsProvider::Twilio,
                url: format!("http://{}", self.addr),
                account_sid: Some("ACward".into()),
                auth_token_file: Some(token),
                from: Some("+15005550007".into()),
                timeout_ms: 300,
                give_up_after_s: 900,
            },
            people: vec![PersonConfig {
                id: "cn".into(),
                name: "Charge nurse A".into(),
                phone: phone.into(),
                role: "charge_nurse".into(),
            }],
            steps: vec![wardlink_edge::paging::LocalStep {
                after_s,
                to: vec!["cn".into()],
                priorities: Vec::new(),
                kinds: Vec::new(),
            }],
        }
    }

    /// The `[notify.sms]` section pointing at this provider.
    pub fn config(&self) -> String {
        format!(
            "[notify.sms]\nprovider = \"twilio\"\nurl = \"http://{}\"\naccount_sid = \"ACtest\"\n\
             auth_token_file = \"sms.token\"\nfrom = \"+15005550006\"\ntimeout_ms = 300\n",
            self.addr
        )
    }
}

async fn messages(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<MessageForm>,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let request = Request {
        account,
        authorization: header("authorization"),
        key: header("idempotency-key"),
        to: form.to,
        from: form.from,
        body: form.body,
    };
    let (mode, sid) = {
        let mut g = inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.requests.push(request.clone());
        let mode = g.mode.unwrap_or(Mode::Accept);
        let existing = g
            .delivered
            .iter()
            .find(|(k, _, _)| !k.is_empty() && *k == request.key)
            .map(|(_, sid, _)| sid.clone());
        let sid = match (mode, existing) {
            (Mode::Fail | Mode::Reject, _) => None,
            (_, Some(sid)) => Some(sid),
            (_, None) => {
                let sid = format!("SM{:032x}", g.delivered.len() + 1);
                g.delivered
                    .push((request.key.clone(), sid.clone(), request.clone()));
                Some(sid)
            }
        };
        (mode, sid)
    };
    let Some(sid) = sid else {
        if mode == Mode::Reject {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({
                    "code": 21211,
                    "message": "The 'To' number is not a valid phone number."
                })),
            )
                .into_response();
        }
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"code": 20500, "message": "Internal Server Error"})),
        )
            .into_response();
    };
    if let Mode::Slow(d) = mode {
        tokio::time::sleep(d).await;
    }
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "sid": sid,
            "status": "queued",
            "to": request.to,
            "from": request.from,
            "body": request.body,
        })),
    )
        .into_response()
}

/// The delivered messages grouped by recipient.
pub fn by_recipient(delivered: &[Request]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in delivered {
        out.entry(r.to.clone()).or_default().push(r.body.clone());
    }
    out
}
