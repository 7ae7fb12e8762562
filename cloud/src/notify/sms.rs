//! The SMS sender: takes pending messages from the store's outbox, sends each through the
//! configured provider, and records every attempt (with an audit entry).
//!
//! - **Twilio** (or a compatible API): `POST {url}/2010-04-01/Accounts/{sid}/Messages.json`,
//!   form-encoded `To`, `From`, `Body`, HTTP basic auth (account SID, auth token); the answer is
//!   JSON with the message `sid`.
//! - **Webhook**: `POST {url}` with JSON `{"to","body","alerts","idempotency_key"}` and an
//!   optional bearer token; any 2xx is success (an `id` or `sid` in a JSON answer is kept).
//!
//! Every attempt at one message carries the same `Idempotency-Key` header
//! (`wardlink-{store nonce}-sms-{id}`), so a provider that honours it never sends twice when an
//! answer was lost (a timeout after the provider accepted). Before each attempt the message's
//! alarms are looked up: if every one was acknowledged or resolved meanwhile, it is cancelled,
//! not sent. 5xx, 429, timeouts and connection errors
//! are retried with exponential backoff (1 s doubling, at most 60 s) until `give_up_after_s`
//! after queuing; other 4xx answers fail at once. A failure for good is counted
//! (`wardlink_hub_sms_failed_total`), logged at ERROR and audited.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::now_ms;
use crate::audit::Entry;
use crate::metrics::HubMetrics;
use wardlink_io::sms::{SendError, SmsClient};
use wardlink_shared::alarm::AlertState;
use wardlink_shared::notify::SmsConfig;

use crate::store::{SmsOutcome, SmsRow, Store};

/// Most attempts in flight at once.
const PARALLEL: usize = 4;
/// Longest wait between attempts at one message.
const MAX_BACKOFF_MS: i64 = 60_000;
/// How often pending messages are looked at when nothing wakes the sender.
const POLL: Duration = Duration::from_millis(500);

/// The configured provider, for this hub's messages.
#[derive(Clone)]
pub struct Provider {
    client: SmsClient,
    /// Distinguishes this store's message ids from any other's (a store restored from a
    /// backup or created anew reuses ids; a provider remembering keys must not take a new
    /// message for an old one).
    nonce: String,
}

impl Provider {
    /// Builds the HTTP client and reads the token file. `nonce` is the store's own random
    /// identity (see [`Provider::nonce`]).
    pub fn new(config: &SmsConfig, nonce: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: SmsClient::new(config).map_err(anyhow::Error::msg)?,
            nonce: nonce.to_owned(),
        })
    }

    async fn send(&self, id: u64, row: &SmsRow) -> Result<String, SendError> {
        let key = format!("wardlink-{}-sms-{id}", self.nonce);
        self.client
            .send(&key, &row.phone, &row.body, &row.alerts)
            .await
    }
}

/// The sender task's parts.
pub struct Sender {
    /// The provider.
    pub provider: Provider,
    /// The store with the outbox.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<HubMetrics>,
    /// Woken when messages are queued.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Sender {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut inflight = std::collections::HashSet::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        loop {
            while let Ok(id) = done_rx.try_recv() {
                inflight.remove(&id);
            }
            let now = now_ms();
            match self.store.sms_pending().await {
                Ok(rows) => {
                    self.metrics
                        .sms_pending
                        .set(i64::try_from(rows.len()).unwrap_or(i64::MAX));
                    for (id, row) in rows {
                        if row.next_attempt > now || inflight.contains(&id) {
                            continue;
                        }
                        let Ok(permit) = gate.clone().acquire_owned().await else {
                            return;
                        };
                        inflight.insert(id);
                        let provider = self.provider.clone();
                        let store = self.store.clone();
                        let metrics = self.metrics.clone();
                        let done = done_tx.clone();
                        let give_up = i64::try_from(self.provider.client.config().give_up_after_s)
                            .unwrap_or(i64::MAX / 1000)
                            .saturating_mul(1000);
                        tokio::spawn(async move {
                            attempt(&provider, &store, &metrics, id, &row, give_up).await;
                            drop(permit);
                            let _ = done.send(id);
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "SMS outbox unreadable"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                Some(id) = done_rx.recv() => { inflight.remove(&id); }
            }
        }
    }
}

/// Whether every alarm of `row` is over (acknowledged or resolved). An edge notice (no
/// alarm) never is.
async fn alarms_over(store: &Store, row: &SmsRow) -> bool {
    if row.alerts.is_empty() {
        return false;
    }
    for alert in &row.alerts {
        match store.alert(alert.clone()).await {
            Ok(Some(a))
                if matches!(
                    a.event.state,
                    AlertState::Acknowledged | AlertState::Resolved
                ) => {}
            // Still raised, unknown, or unreadable: send.
            _ => return false,
        }
    }
    true
}

async fn attempt(
    provider: &Provider,
    store: &Store,
    metrics: &HubMetrics,
    id: u64,
    row: &SmsRow,
    give_up_ms: i64,
) {
    if matches!(store.paged_by_edge(row.clone()).await, Ok(true)) {
        metrics.sms_cancelled.inc();
        let detail = format!("to {}: the ward's edge texted this already", row.person);
        record(store, id, SmsOutcome::Cancelled, "sms_cancelled", detail).await;
        return;
    }
    if alarms_over(store, row).await {
        metrics.sms_cancelled.inc();
        record(
            store,
            id,
            SmsOutcome::Cancelled,
            "sms_cancelled",
            format!(
                "to {}: its alarms were acknowledged or resolved first",
                row.person
            ),
        )
        .await;
        return;
    }
    metrics.sms_attempts.inc();
    let result = provider.send(id, row).await;
    let now = now_ms();
    let (outcome, action, detail) = match result {
        Ok(sid) => (
            SmsOutcome::Sent(sid.clone()),
            "sms_sent",
            format!(
                "to {}, provider id {sid}, attempt {}",
                row.person,
                row.attempts + 1
            ),
        ),
        Err(e) if e.retry && now - row.queued_at < give_up_ms => {
            let backoff = (1000i64 << row.attempts.min(6)).min(MAX_BACKOFF_MS);
            (
                SmsOutcome::Retry {
                    at: now + backoff,
                    error: e.message.clone(),
                },
                "sms_attempt_failed",
                format!(
                    "to {}, attempt {}: {}",
                    row.person,
                    row.attempts + 1,
                    e.message
                ),
            )
        }
        Err(e) => (
            SmsOutcome::Failed(e.message.clone()),
            "sms_failed",
            format!(
                "to {}, after {} attempts: {}",
                row.person,
                row.attempts + 1,
                e.message
            ),
        ),
    };
    match &outcome {
        SmsOutcome::Sent(_) => metrics.sms_sent.inc(),
        SmsOutcome::Retry { .. } => metrics.sms_retries.inc(),
        SmsOutcome::Cancelled => metrics.sms_cancelled.inc(),
        SmsOutcome::Failed(error) => {
            metrics.sms_failed.inc();
            tracing::error!(sms = id, person = %row.person, error = %error, "SMS failed for good");
        }
    }
    record(store, id, outcome, action, detail).await;
}

/// Stores an attempt's outcome. It is retried until it is stored: the message stays out of
/// the pending scan meanwhile, so an SMS the provider accepted is never sent again because
/// its outcome could not be written.
async fn record(store: &Store, id: u64, outcome: SmsOutcome, action: &str, detail: String) {
    let entry = Entry::notifier(action, Some(format!("sms-{id}")), detail);
    let mut wait = Duration::from_millis(100);
    loop {
        match store.sms_outcome(id, outcome.clone(), entry.clone()).await {
            Ok(Ok(_)) | Err(_) => return,
            Ok(Err(e)) => {
                tracing::error!(sms = id, error = %e, "SMS outcome not recorded; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
