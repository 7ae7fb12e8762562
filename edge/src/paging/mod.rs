//! Local paging: while the hub is unreachable, the edge texts the ward's people itself, through
//! a provider on the hospital LAN (`[local_notify]`), for alarms nobody acknowledged on the ward
//! view within their step.
//!
//! - **When.** Only once the hub has been unreachable for `hub_unreachable_after_s`, and only for
//!   steps that fell due after the hub became unreachable (those due before were the hub's).
//!   An acknowledgement on the ward view, a silence, or the end of the alarm stops the chain;
//!   a message still waiting for its provider is then dropped, not sent.
//! - **Exactly once.** Every message has an idempotency key made of the edge, the episode, the
//!   step and the person, sent to the provider with every attempt and kept with the message in
//!   `local_pages.json`: a restart or a retry never texts twice for one step.
//! - **The hub learns.** Each message the provider accepted becomes a `Paged` record on the
//!   alarm lane: the hub audits it and does not text that phone about those alarms again.
//! - **Faults.** Attempts run beside the alarm engine and the outbox, never in their way: up to
//!   [`PARALLEL`] at once, each bounded by the provider's `timeout_ms`; 5xx, 429, timeouts and
//!   refused connections are retried with backoff (1 s doubling, at most 60 s) until
//!   `give_up_after_s`; everything is counted.

mod config;
mod pages;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wardlink_io::sms::{SendError, SmsClient};
use wardlink_shared::alarm::{AlarmEvent, Priority};
use wardlink_shared::metrics::{Counter, Gauge, Registry};
use wardlink_shared::wire::RecordBody;
use wardlink_shared::{EdgeId, WardId};

pub use config::{LocalNotifySection, LocalStep};
use pages::{Page, PageState, Pages};

use crate::outbox::Outbox;
use crate::ward::Feed;
use crate::ward::feed::Episode;

/// Most attempts in flight at once.
const PARALLEL: usize = 4;
/// How often the open alarms and the hub's reachability are looked at.
const TICK: Duration = Duration::from_millis(500);
/// Longest wait between attempts at one message.
const MAX_BACKOFF_MS: i64 = 60_000;

/// What local paging counts.
#[derive(Debug)]
pub struct PagingMetrics {
    /// Messages the provider accepted.
    pub sent: Arc<Counter>,
    /// Attempts that failed and will be retried.
    pub retries: Arc<Counter>,
    /// Messages given up.
    pub failed: Arc<Counter>,
    /// Messages dropped before sending: their alarm was acknowledged, silenced or over.
    pub cancelled: Arc<Counter>,
    /// Messages waiting for an attempt.
    pub pending: Arc<Gauge>,
    /// 1 while the edge pages itself (the hub unreachable long enough).
    pub active: Arc<Gauge>,
}

impl PagingMetrics {
    /// Registers local paging's metrics on `r`.
    pub fn register(r: &Registry) -> Self {
        Self {
            sent: r.counter(
                "wardlink_edge_local_sms_sent_total",
                "SMS the edge's local provider accepted while the hub was unreachable.",
            ),
            retries: r.counter(
                "wardlink_edge_local_sms_retries_total",
                "Local SMS attempts that failed and are retried.",
            ),
            failed: r.counter(
                "wardlink_edge_local_sms_failed_total",
                "Local SMS given up (logged at ERROR).",
            ),
            cancelled: r.counter(
                "wardlink_edge_local_sms_cancelled_total",
                "Local SMS dropped before sending: the alarm was acknowledged, silenced or over.",
            ),
            pending: r.gauge(
                "wardlink_edge_local_sms_pending",
                "Local SMS waiting for an attempt.",
            ),
            active: r.gauge(
                "wardlink_edge_local_paging_active",
                "1 while the edge pages itself because the hub is unreachable.",
            ),
        }
    }
}

/// The paging task's parts.
pub struct Paging {
    /// The configuration.
    pub config: LocalNotifySection,
    /// The provider.
    pub client: SmsClient,
    /// This edge and its ward (texts, keys).
    pub edge: EdgeId,
    /// Its ward.
    pub ward: WardId,
    /// The open alarms and their acknowledgements.
    pub feed: Feed,
    /// Whether the hub is reachable (the uplink's gauge).
    pub uplink: Arc<Gauge>,
    /// Where `Paged` records go.
    pub outbox: Outbox,
    /// `local_pages.json`.
    pub path: PathBuf,
    /// How long a silence covers a high-priority alarm (`silence.max_high_s`), as the engine.
    pub max_high_s: u32,
    /// Counts.
    pub metrics: Arc<PagingMetrics>,
}

/// One attempt's result: the message's key and what the provider said.
type Attempt = (String, Result<String, SendError>);

impl Paging {
    /// Runs until `shutdown` (attempts in flight are abandoned; their messages stay pending
    /// and are sent again, under the same key, after a restart).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut pages = Pages::load(self.path.clone());
        let mut raised: HashMap<String, Instant> = HashMap::new();
        let mut down_since: Option<Instant> = None;
        let mut flying: JoinSet<Attempt> = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                Some(done) = flying.join_next() => {
                    if let Ok((key, result)) = done {
                        self.settle(&mut pages, &key, result).await;
                    }
                }
            }
            let now = Instant::now();
            let wall = crate::clock::now_ms();
            down_since = match (self.uplink.get() > 0, down_since) {
                (true, _) => None,
                (false, since) => Some(since.unwrap_or(now)),
            };
            let open: Vec<Episode> = self
                .feed
                .episodes()
                .into_iter()
                .filter(|e| e.acknowledged_by.is_none() && !self.silenced(e, wall))
                .collect();
            raised.retain(|id, _| self.feed.is_open(id));
            for e in &open {
                raised.entry(e.alarm.id.clone()).or_insert(now);
            }
            let unreachable = Duration::from_secs(self.config.hub_unreachable_after_s);
            let paging = down_since.filter(|since| now.duration_since(*since) >= unreachable);
            self.metrics.active.set(i64::from(paging.is_some()));
            if let Some(since) = paging {
                for e in &open {
                    let at = raised.get(&e.alarm.id).copied().unwrap_or(now);
                    self.queue(&mut pages, &e.alarm, at, (now, since), wall);
                }
            }
            // What waits is dropped once its alarm is answered, or once the hub is back (its
            // chain takes over; texting beside it would repeat it).
            let n = pages
                .cancel_where(|p| paging.is_none() || !open.iter().any(|e| e.alarm.id == p.alert));
            self.metrics.cancelled.add(n);
            self.start_due(&mut pages, &mut flying, wall);
            pages.prune(wall, |alert| self.feed.is_open(alert));
            pages.save().await;
            self.metrics
                .pending
                .set(i64::try_from(pages.pending()).unwrap_or(i64::MAX));
        }
    }

    /// Queues the messages `alarm`'s chain has due at `now`, for steps that fell due after
    /// the hub became unreachable (`since`).
    fn queue(
        &self,
        pages: &mut Pages,
        alarm: &AlarmEvent,
        raised: Instant,
        (now, since): (Instant, Instant),
        wall: i64,
    ) {
        for (i, step) in self.config.steps.iter().enumerate() {
            let due = raised + Duration::from_secs(step.after_s);
            if due > now || due < since || !step.covers(alarm.priority, &alarm.kind) {
                continue;
            }
            for id in &step.to {
                let Some(person) = self.config.person(id) else {
                    continue;
                };
                let key = format!("wardlink-{}-page-{}-{i}-{id}", self.edge, alarm.id);
                if pages.contains(&key) {
                    continue;
                }
                tracing::warn!(alert = %alarm.id, person = %id, step = i, "hub unreachable: paging locally");
                pages.push(Page {
                    key,
                    alert: alarm.id.clone(),
                    step: u32::try_from(i).unwrap_or(u32::MAX),
                    person: id.clone(),
                    phone: person.phone.clone(),
                    body: self.text(alarm),
                    queued_at: wall,
                    attempts: 0,
                    next_attempt: wall,
                    state: PageState::Pending,
                });
            }
        }
    }

    /// The text: ward, priority and what happened; never the patient's id.
    fn text(&self, alarm: &AlarmEvent) -> String {
        let priority = format!("{:?}", alarm.priority).to_uppercase();
        let short: String = alarm
            .id
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut text = format!(
            "Wardlink {priority} {}: {} (hub unreachable; answer on the ward view) ref {short}",
            self.ward, alarm.message
        );
        if !self.config.dashboard_url.is_empty() {
            text.push(' ');
            text.push_str(&self.config.dashboard_url);
        }
        text.chars().take(320).collect()
    }

    /// Whether `e`'s patient is silenced at `now` for this alarm, as the engine judges it: a
    /// silence covers a high-priority physiological alarm only for its first `max_high_s`.
    fn silenced(&self, e: &Episode, now: i64) -> bool {
        match e.silence {
            Some((from, until)) if from <= now && now < until => {
                let technical = e.alarm.kind == "signal_lost";
                e.alarm.priority != Priority::High
                    || technical
                    || now - from < i64::from(self.max_high_s) * 1000
            }
            _ => false,
        }
    }

    /// Starts attempts at the messages due, up to [`PARALLEL`] in flight.
    fn start_due(&self, pages: &mut Pages, flying: &mut JoinSet<Attempt>, wall: i64) {
        for page in pages.due(wall, PARALLEL.saturating_sub(flying.len())) {
            let client = self.client.clone();
            flying.spawn(async move {
                let alerts = [page.alert.clone()];
                let result = client
                    .send(&page.key, &page.phone, &page.body, &alerts)
                    .await;
                (page.key, result)
            });
        }
    }

    /// Records what an attempt came to; a message the provider accepted goes to the hub.
    async fn settle(&self, pages: &mut Pages, key: &str, result: Result<String, SendError>) {
        let wall = crate::clock::now_ms();
        let give_up = i64::try_from(self.client.config().give_up_after_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let Some(page) = pages.get_mut(key) else {
            return;
        };
        page.attempts += 1;
        match result {
            Ok(sid) => {
                page.state = PageState::Sent { sid, at: wall };
                self.metrics.sent.inc();
                tracing::info!(alert = %page.alert, person = %page.person, "local SMS sent");
                let record = RecordBody::Paged {
                    key: page.key.clone(),
                    alerts: vec![page.alert.clone()],
                    person: page.person.clone(),
                    phone: page.phone.clone(),
                    step: page.step,
                    ts: wall,
                };
                if self.outbox.append(vec![record]).await.is_err() {
                    tracing::warn!("edge stopping: the hub will not learn of a local SMS");
                }
            }
            Err(e) if e.retry && wall - page.queued_at < give_up => {
                let backoff = (1000i64 << page.attempts.min(6)).min(MAX_BACKOFF_MS);
                page.next_attempt = wall + backoff;
                page.state = PageState::Pending;
                self.metrics.retries.inc();
                tracing::warn!(alert = %page.alert, error = %e.message, "local SMS failed; retrying");
            }
            Err(e) => {
                tracing::error!(alert = %page.alert, person = %page.person, error = %e.message, "local SMS given up");
                page.state = PageState::Failed { error: e.message };
                self.metrics.failed.inc();
            }
        }
        pages.touch();
    }
}
