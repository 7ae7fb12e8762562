//! Notifications: routing alarms to people by ward, priority, kind and shift; escalation
//! chains stopped by an acknowledgement; SMS through a persisted outbox.
//!
//! - [`plan`]: `[notify]` in `cloud.toml`, validated at startup.
//! - [`engine`]: the decisions, pure and in virtual time (the escalation timeline is tested
//!   there).
//! - This module: the task that feeds the engine from the hub's event bus (catching up from
//!   the store when it lags, and resuming open chains after a restart), stores each decision
//!   with its audit entries in one transaction, and wakes the sender.
//! - [`sms`]: the sender, retrying with backoff under a per-message idempotency key.

pub mod engine;
pub mod plan;
pub mod sms;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use wardlink_shared::WardId;
use wardlink_shared::alarm::{AlertState, Priority};

use crate::audit::{Entry, Pseudonymiser};
use crate::bus::{Bus, Event};
use crate::metrics::HubMetrics;
use crate::store::{NotifyBatch, Store};
use engine::{Alarm, Decisions, Engine};
use plan::Plan;

/// Who is watching which ward: live nurse and doctor dashboard sessions, by ward.
#[derive(Debug, Default)]
pub struct Watchers {
    wards: Mutex<HashMap<WardId, usize>>,
}

/// A session's presence; it leaves when dropped.
pub struct Watching {
    watchers: Arc<Watchers>,
    wards: Vec<WardId>,
}

impl Watchers {
    /// Registers a session that sees `wards`.
    pub fn watch(self: &Arc<Self>, wards: Vec<WardId>) -> Watching {
        let mut map = self.lock();
        for w in &wards {
            *map.entry(w.clone()).or_default() += 1;
        }
        drop(map);
        Watching {
            watchers: self.clone(),
            wards,
        }
    }

    /// Whether a live session can see `ward`.
    pub fn watched(&self, ward: &str) -> bool {
        self.lock()
            .iter()
            .any(|(w, n)| w.as_str() == ward && *n > 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WardId, usize>> {
        self.wards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut map = self.watchers.lock();
        for w in &self.wards {
            if let Some(n) = map.get_mut(w) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(w);
                }
            }
        }
    }
}

/// The notifier task's parts.
pub struct Notifier {
    /// The validated plan.
    pub plan: Arc<Plan>,
    /// The store.
    pub store: Store,
    /// The bus it follows.
    pub bus: Bus,
    /// Dashboard presence.
    pub watchers: Arc<Watchers>,
    /// Patient pseudonyms (SMS texts and audit entries).
    pub pseudonyms: Arc<Pseudonymiser>,
    /// Metrics.
    pub metrics: Arc<HubMetrics>,
    /// Wakes the SMS sender.
    pub wake: Arc<tokio::sync::Notify>,
}

/// Hub wall-clock time, ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Notifier {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.plan.routes.is_empty() {
            return;
        }
        let mut rx = self.bus.subscribe();
        let mut cursor = self.bus.latest();
        let mut engine = Engine::new(self.plan.clone());
        self.resume(&mut engine).await;
        // A decision the store could not take yet, retried before any other.
        let mut unstored: Option<(NotifyBatch, Vec<Entry>)> = None;
        loop {
            let deadline = engine.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep => {}
                received = rx.recv() => match received {
                    Ok(event) => {
                        if event.seq > cursor {
                            cursor = event.seq;
                            self.feed(&mut engine, &event);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        match self.catch_up(&mut engine, cursor, &shutdown).await {
                            Some(c) => cursor = c,
                            None => return,
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
            }
            let now = now_ms();
            if let Some((batch, audits)) = unstored.take() {
                unstored = self.store_batch(batch, audits).await;
                if unstored.is_some() {
                    // The store is failing: wait before the next try.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            }
            if engine.has_changes() || engine.next_deadline().is_some_and(|d| d <= now) {
                let decisions = engine.due(now);
                let (batch, audits) = self.decisions(decisions, now);
                unstored = self.store_batch(batch, audits).await;
            }
            self.metrics
                .escalations_open
                .set(i64::try_from(engine.open_chains()).unwrap_or(i64::MAX));
        }
    }

    /// Resumes the chains stored before a restart, and starts one for every alarm still
    /// raised that has none (raised while the notifier was not running, or whose decision
    /// was never stored).
    async fn resume(&self, engine: &mut Engine) {
        let mut chained = std::collections::HashSet::new();
        match self.store.chains().await {
            Ok(chains) => {
                for (progress, row) in chains {
                    chained.insert(row.event.id.clone());
                    let alarm = self.alarm_of(&row.ward, &row.event);
                    engine.resume(alarm, progress);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read escalation chains"),
        }
        match self.store.active_alerts().await {
            Ok(rows) => {
                for row in rows.into_iter().filter(|r| !chained.contains(&r.event.id)) {
                    let mut alarm = self.alarm_of(&row.ward, &row.event);
                    alarm.state = AlertState::Raised;
                    // Dashboards reconnect after a restart: the usual delays apply.
                    engine.alarm(alarm, row.event.ts, true);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read active alarms"),
        }
        if engine.open_chains() > 0 {
            tracing::info!(chains = engine.open_chains(), "escalation chains resumed");
        }
    }

    /// Reads what the bus dropped from the store, retrying until it can (an event skipped
    /// here could be the acknowledgement that stops a chain). `None` at shutdown.
    async fn catch_up(
        &self,
        engine: &mut Engine,
        mut cursor: u64,
        shutdown: &CancellationToken,
    ) -> Option<u64> {
        loop {
            match self.store.events_after(cursor, 1024).await {
                Ok(events) if events.is_empty() => return Some(cursor),
                Ok(events) => {
                    for e in events {
                        cursor = e.seq;
                        self.feed(engine, &e);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "notifier cannot catch up from the store; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    fn alarm_of(&self, ward: &WardId, e: &wardlink_shared::alarm::AlarmEvent) -> Alarm {
        Alarm {
            id: e.id.clone(),
            patient: e.patient.to_string(),
            patient_label: self.pseudonyms.pseudonym(e.patient.as_str()),
            ward: ward.to_string(),
            priority: e.priority,
            kind: e.kind.clone(),
            state: e.state,
            message: e.message.clone(),
            silenced: e.silenced,
        }
    }

    fn feed(&self, engine: &mut Engine, event: &Event) {
        let Ok(v) = serde_json::from_str::<Value>(&event.json) else {
            return;
        };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        match v["type"].as_str() {
            Some("alert") => {
                let (Ok(priority), Ok(state)) = (
                    serde_json::from_value::<Priority>(v["priority"].clone()),
                    serde_json::from_value::<AlertState>(v["state"].clone()),
                ) else {
                    return;
                };
                let patient = text("patient");
                let alarm = Alarm {
                    id: text("id"),
                    patient_label: self.pseudonyms.pseudonym(&patient),
                    patient,
                    ward: text("ward"),
                    priority,
                    kind: text("kind"),
                    state,
                    message: text("message"),
                    silenced: v["silenced"].as_bool().unwrap_or(false),
                };
                if v["update"].as_bool() == Some(true) {
                    // New values and text for a chain that runs; never the start of one.
                    engine.update(alarm);
                    return;
                }
                let watched = self.watchers.watched(&alarm.ward);
                engine.alarm(alarm, now_ms(), watched);
            }
            Some("silence") => engine.silence(&text("patient")),
            Some("edge") => match v["state"].as_str() {
                Some("offline") => engine.edge_offline(&text("edge"), &text("ward"), now_ms()),
                Some("online") => engine.edge_online(&text("edge")),
                _ => {}
            },
            _ => {}
        }
    }

    /// The batch and audit entries of a decision.
    fn decisions(&self, d: Decisions, now: i64) -> (NotifyBatch, Vec<Entry>) {
        let mut audits = Vec::new();
        let entry = Entry::notifier;
        let role = |person: &str| {
            self.plan
                .person(person)
                .map_or_else(String::new, |p| p.role.clone())
        };
        for s in &d.sms {
            audits.push(entry(
                "sms_queued",
                None,
                format!(
                    "to {} ({}), {}, alarms {}",
                    s.person,
                    role(&s.person),
                    s.reason,
                    s.alerts.join(" ")
                ),
            ));
        }
        for s in &d.suppressed {
            self.metrics.notifications_suppressed.with(s.why).inc();
            audits.push(entry(
                "notification_suppressed",
                None,
                format!(
                    "to {} ({}): {}, alarms {}",
                    s.person,
                    role(&s.person),
                    s.why,
                    s.alerts.join(" ")
                ),
            ));
        }
        let batch = NotifyBatch {
            sms: d
                .sms
                .into_iter()
                .map(|s| crate::store::SmsRow {
                    person: s.person,
                    phone: s.phone,
                    body: s.body,
                    alerts: s.alerts,
                    reason: s.reason,
                    queued_at: now,
                    attempts: 0,
                    next_attempt: now,
                    state: crate::store::SmsState::Pending,
                })
                .collect(),
            progress: d.progress,
            escalated: d.escalated,
        };
        (batch, audits)
    }

    /// Stores a decision; gives it back if the store failed (to be retried).
    async fn store_batch(
        &self,
        batch: NotifyBatch,
        audits: Vec<Entry>,
    ) -> Option<(NotifyBatch, Vec<Entry>)> {
        let queued = batch.sms.len();
        match self.store.notify(batch.clone(), audits.clone()).await {
            Ok(Ok(_)) => {
                if queued > 0 {
                    self.metrics
                        .sms_queued
                        .add(u64::try_from(queued).unwrap_or(0));
                    self.wake.notify_one();
                }
                None
            }
            Ok(Err(e)) => {
                self.metrics.notify_errors.inc();
                tracing::error!(error = %e, sms = queued, "notification decision not stored; retrying");
                Some((batch, audits))
            }
            Err(_) => None,
        }
    }
}
