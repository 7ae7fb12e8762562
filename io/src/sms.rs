//! Sending one SMS through the configured provider (the hub's `[notify.sms]`, an edge's
//! `[local_notify.sms]`):
//!
//! - **Twilio** (or a compatible API): `POST {url}/2010-04-01/Accounts/{sid}/Messages.json`,
//!   form-encoded `To`, `From`, `Body`, HTTP basic auth (account SID, auth token); the answer is
//!   JSON with the message `sid`.
//! - **Webhook**: `POST {url}` with JSON `{"to","body","alerts","idempotency_key"}` and an
//!   optional bearer token; any 2xx is success (an `id` or `sid` in a JSON answer is kept).
//!
//! Every request carries the caller's `Idempotency-Key` header: every attempt at one message
//! uses the same key, so a provider that honours it never sends twice when an answer was lost.
//! 5xx, 429, timeouts and connection errors are worth retrying; other 4xx are not.

use std::time::Duration;

use wardlink_shared::notify::{SmsConfig, SmsProvider};

/// A provider's answer that is not a success.
#[derive(Debug, Clone)]
pub struct SendError {
    /// Whether another attempt may succeed.
    pub retry: bool,
    /// What happened.
    pub message: String,
}

/// An HTTP client for one provider.
#[derive(Clone)]
pub struct SmsClient {
    config: SmsConfig,
    token: Option<String>,
    client: reqwest::Client,
}

impl SmsClient {
    /// Builds the HTTP client and reads the token file.
    pub fn new(config: &SmsConfig) -> Result<Self, String> {
        let token = match &config.auth_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            config: config.clone(),
            token,
            client,
        })
    }

    /// The provider's configuration.
    pub fn config(&self) -> &SmsConfig {
        &self.config
    }

    /// Sends `body` to `to` about `alerts`, under idempotency `key`; the provider's message id.
    pub async fn send(
        &self,
        key: &str,
        to: &str,
        body: &str,
        alerts: &[String],
    ) -> Result<String, SendError> {
        let request = match self.config.provider {
            SmsProvider::Twilio => {
                let sid = self.config.account_sid.clone().unwrap_or_default();
                let url = format!(
                    "{}/2010-04-01/Accounts/{sid}/Messages.json",
                    self.config.url.trim_end_matches('/')
                );
                let from = self.config.from.clone().unwrap_or_default();
                self.client
                    .post(url)
                    .basic_auth(sid, self.token.clone())
                    .form(&[("To", to), ("From", from.as_str()), ("Body", body)])
            }
            SmsProvider::Webhook => {
                let mut r = self.client.post(&self.config.url).json(&serde_json::json!({
                    "to": to,
                    "body": body,
                    "alerts": alerts,
                    "idempotency_key": key,
                }));
                if let Some(token) = &self.token {
                    r = r.bearer_auth(token);
                }
                r
            }
        };
        let answer = request
            .header("Idempotency-Key", key)
            .send()
            .await
            .map_err(|e| SendError {
                retry: true,
                message: if e.is_timeout() {
                    "timed out".into()
                } else {
                    format!("request failed: {e}")
                },
            })?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if status.is_success() {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let sid = json["sid"]
                .as_str()
                .or_else(|| json["id"].as_str())
                .unwrap_or("accepted")
                .to_owned();
            return Ok(sid);
        }
        let retry = status.is_server_error() || status.as_u16() == 429;
        let detail: String = body.chars().take(200).collect();
        Err(SendError {
            retry,
            message: format!("provider answered {status}: {detail}"),
        })
    }
}
