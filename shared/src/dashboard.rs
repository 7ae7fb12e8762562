//! Hub → dashboard messages and dashboard → hub client messages (JSON over WebSocket).
//!
//! Server messages are one JSON object each with `"type"` and a hub-wide increasing `"seq"`.
//! The hub serialises an event once, when it is stored; live delivery and replay send the same
//! text.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::alarm::{AlarmEvent, AlertState, Priority};
use crate::ids::{EdgeId, PatientId, WardId};
use crate::news2::{News2, Risk};
use crate::time::{Millis, format_rfc3339, parse_rfc3339};
use crate::vitals::{Reading, Vitals};

/// Whether an edge is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeState {
    /// Connected.
    Online,
    /// Silent for longer than the configured limit.
    Offline,
}

/// An event as dashboards see it (without its `seq`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerEvent {
    /// A reading.
    Vitals {
        /// Patient id.
        patient: PatientId,
        /// Ward of the edge that sent it.
        ward: WardId,
        /// RFC 3339 measurement time.
        ts: String,
        /// The values present in the reading.
        #[serde(serialize_with = "present_fields")]
        values: Vitals,
        /// NEWS2 aggregate score, once computable.
        #[serde(skip_serializing_if = "Option::is_none")]
        news2: Option<u8>,
        /// NEWS2 per parameter, the SpO2 scale and the clinical risk band.
        #[serde(skip_serializing_if = "Option::is_none")]
        news2_detail: Option<News2Detail>,
    },
    /// An alarm state change.
    Alert {
        /// Episode id.
        id: String,
        /// Patient id.
        patient: PatientId,
        /// Ward.
        ward: WardId,
        /// Priority.
        priority: Priority,
        /// State.
        state: AlertState,
        /// Condition, e.g. `hr_high`.
        kind: String,
        /// Summary.
        message: String,
        /// Values that caused it.
        #[serde(serialize_with = "present_fields")]
        values: Vitals,
        /// RFC 3339 time of the state change.
        ts: String,
        /// Who acknowledged, when `state` is `acknowledged`.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Present and true while the patient's alarms are silenced.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        silenced: bool,
        /// The episode's version: grows with every worsening; an `ack` names the one seen.
        /// 0 for an edge that does not number them.
        version: u32,
        /// The condition's measure now (the vital sign's value, the NEWS2 total).
        #[serde(skip_serializing_if = "Option::is_none")]
        current: Option<f32>,
        /// The worst measure of the episode so far.
        #[serde(skip_serializing_if = "Option::is_none")]
        worst: Option<f32>,
        /// Present and true when only the values and text changed (no raise, worsening or
        /// change of state): show it, announce nothing.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        update: bool,
    },
    /// A clinician silenced a patient's alarms.
    Silence {
        /// Patient id.
        patient: PatientId,
        /// Ward.
        ward: WardId,
        /// RFC 3339 end of the silence.
        until: String,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// An edge came or went.
    Edge {
        /// Edge id.
        edge: EdgeId,
        /// Its ward.
        ward: WardId,
        /// Online or offline.
        state: EdgeState,
    },
}

impl ServerEvent {
    /// The event for a reading from `ward`.
    pub fn vitals(ward: &WardId, reading: &Reading, news2: Option<News2>) -> Self {
        ServerEvent::Vitals {
            patient: reading.patient.clone(),
            ward: ward.clone(),
            ts: format_rfc3339(reading.ts),
            values: reading.vitals,
            news2: news2.map(|n| n.total),
            news2_detail: news2.map(|score| News2Detail {
                risk: score.risk(),
                score,
            }),
        }
    }

    /// The event for an alarm event from `ward`.
    pub fn alert(ward: &WardId, a: &AlarmEvent, by: Option<String>) -> Self {
        ServerEvent::Alert {
            id: a.id.clone(),
            patient: a.patient.clone(),
            ward: ward.clone(),
            priority: a.priority,
            state: a.state,
            kind: a.kind.clone(),
            message: a.message.clone(),
            values: a.values,
            ts: format_rfc3339(a.ts),
            by,
            silenced: a.silenced,
            version: a.version,
            current: a.current,
            worst: a.worst,
            update: a.update,
        }
    }

    /// The ward this event belongs to; access is decided on it.
    pub fn ward(&self) -> &WardId {
        match self {
            ServerEvent::Vitals { ward, .. }
            | ServerEvent::Alert { ward, .. }
            | ServerEvent::Edge { ward, .. }
            | ServerEvent::Silence { ward, .. } => ward,
        }
    }

    /// The JSON text sent to dashboards, with `seq` inserted after `type`.
    pub fn to_json(&self, seq: u64) -> String {
        #[derive(Serialize)]
        struct WithSeq<'a> {
            seq: u64,
            #[serde(flatten)]
            event: &'a ServerEvent,
        }
        // Serialising these plain types into a String cannot fail: no maps with non-string
        // keys, no non-finite floats (readings are range-checked on the way in).
        serde_json::to_string(&WithSeq { seq, event: self }).unwrap_or_default()
    }
}

/// NEWS2 as dashboards see it: `{"total":5,"rr":2,…,"scale":1,"risk":"medium"}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct News2Detail {
    /// Aggregate and per-parameter scores.
    #[serde(flatten)]
    pub score: News2,
    /// The RCP clinical risk band.
    pub risk: Risk,
}

/// Serialises only the fields a reading carries.
fn present_fields<S: Serializer>(v: &Vitals, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(None)?;
    let nums = [
        ("hr", v.hr),
        ("spo2", v.spo2),
        ("rr", v.rr),
        ("temp", v.temp),
        ("sbp", v.sbp),
        ("dbp", v.dbp),
    ];
    for (k, val) in nums {
        if let Some(x) = val {
            m.serialize_entry(k, &x)?;
        }
    }
    if let Some(o2) = v.o2 {
        m.serialize_entry("o2", &o2)?;
    }
    if let Some(a) = v.acvpu {
        m.serialize_entry("acvpu", &a)?;
    }
    m.end()
}

/// Client messages a session may send per second, on average (acks and silences are rare).
const MESSAGES_PER_S: f64 = 10.0;
/// ... and in a burst.
const MESSAGE_BURST: f64 = 30.0;

/// A token bucket for one session's client messages (sans-IO: the caller passes the time).
#[derive(Debug)]
pub struct MessageBucket {
    tokens: f64,
    at: std::time::Instant,
}

impl MessageBucket {
    /// A full bucket at `now`.
    pub fn new(now: std::time::Instant) -> Self {
        Self {
            tokens: MESSAGE_BURST,
            at: now,
        }
    }

    /// Takes a token at `now`; false when the client is over its rate.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * MESSAGES_PER_S;
        self.tokens = (self.tokens + refill).min(MESSAGE_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a browser page from `origin` may open a session on a server reached as `host`: the
/// server's own origin (same host) or one of `allowed`. No `Origin` header: not a browser.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// Longest silence a dashboard may set.
pub const MAX_SILENCE_MINUTES: u32 = 60;
/// Longest silence reason kept.
pub const MAX_SILENCE_REASON_CHARS: usize = 200;

/// A silence's reason, trimmed, if the request is acceptable: 1–60 minutes, a reason of at
/// most 200 characters of plain text ([`crate::plain`]: it is stored, audited and shown on
/// every dashboard of the ward). Otherwise the message for the client.
pub fn check_silence(minutes: u32, reason: &str) -> Result<&str, &'static str> {
    let reason = reason.trim();
    if !(1..=MAX_SILENCE_MINUTES).contains(&minutes) {
        return Err("minutes must be between 1 and 60");
    }
    if reason.is_empty() || reason.chars().count() > MAX_SILENCE_REASON_CHARS {
        return Err("a silence needs a reason of at most 200 characters");
    }
    if !crate::plain::is_plain(reason) {
        return Err(
            "the reason must be plain text: no control characters, escape sequences or invisible formatting",
        );
    }
    Ok(reason)
}

/// The reply to an `ack` naming a version that a worsening has overtaken (not an event: no
/// `seq`): the page frees its button for the version it now shows.
pub fn stale_version_json(alert: &str, current: u32) -> String {
    serde_json::json!({
        "type": "error",
        "error": "stale_version",
        "message": "the alarm has worsened since; it stays unacknowledged until its current version is acknowledged",
        "alert": alert,
        "version": current,
    })
    .to_string()
}

/// The default range of a history request: the last 30 minutes.
const HISTORY_RANGE_MS: i64 = 30 * 60 * 1000;

/// A history request's range in ms since the epoch: `from` and `to` are RFC 3339, by default
/// the last 30 minutes before `now` and open-ended (an edge clock a little ahead is not cut
/// off). Otherwise the message for the client.
pub fn history_range(
    from: Option<&str>,
    to: Option<&str>,
    now: Millis,
) -> Result<(Millis, Millis), &'static str> {
    let parse = |v: Option<&str>, default: Millis| match v {
        None => Ok(default),
        Some(s) => parse_rfc3339(s).ok_or("from and to must be RFC 3339 times"),
    };
    let to = parse(to, Millis::MAX)?;
    let from = parse(from, now - HISTORY_RANGE_MS)?;
    if from > to {
        return Err("from is after to");
    }
    Ok((from, to))
}

/// A history answer, `{"from","to","seq","truncated","events"}`, around events already
/// rendered as dashboard JSON.
pub fn history_json<'a>(
    events: impl Iterator<Item = &'a str>,
    (from, to): (Millis, Millis),
    seq: u64,
    truncated: bool,
) -> String {
    let events = events.collect::<Vec<&str>>().join(",");
    format!(
        r#"{{"from":{},"to":{},"seq":{seq},"truncated":{truncated},"events":[{events}]}}"#,
        serde_json::json!(format_rfc3339(from)),
        serde_json::json!(format_rfc3339(to)),
    )
}

/// A message from a dashboard.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    /// Acknowledge an alarm episode.
    Ack {
        /// Episode id.
        alert: String,
        /// The version the clinician saw; absent: the current one (older clients).
        #[serde(default)]
        version: Option<u32>,
    },
    /// Silence a patient's alarms for a while.
    Silence {
        /// Patient id.
        patient: PatientId,
        /// Duration.
        minutes: u32,
        /// Why (audited).
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vitals::Acvpu;

    #[test]
    fn vitals_message_shape() {
        let reading = Reading {
            patient: PatientId::new("bed-1").unwrap(),
            ts: 1_795_694_400_250,
            vitals: Vitals {
                hr: Some(72.0),
                temp: Some(36.8),
                o2: Some(false),
                acvpu: Some(Acvpu::A),
                ..Vitals::default()
            },
        };
        let ward = WardId::new("icu").unwrap();
        let json = ServerEvent::vitals(&ward, &reading, None).to_json(7);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["type"], "vitals");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["patient"], "bed-1");
        assert_eq!(v["ward"], "icu");
        assert_eq!(v["ts"], "2026-11-26T12:00:00.250Z");
        assert_eq!(v["values"]["hr"], 72.0);
        assert_eq!(v["values"]["temp"].as_f64().unwrap() as f32, 36.8);
        assert_eq!(v["values"]["acvpu"], "A");
        assert!(v["values"].get("spo2").is_none());
        assert!(v.get("news2").is_none());

        let score = crate::news2::score(
            &crate::news2::Observations {
                rr: 22.0,
                spo2: 97.0,
                on_oxygen: false,
                sbp: 120.0,
                hr: 115.0,
                acvpu: Acvpu::A,
                temp: 38.5,
            },
            crate::news2::Spo2Scale::One,
        );
        let v: serde_json::Value =
            serde_json::from_str(&ServerEvent::vitals(&ward, &reading, Some(score)).to_json(8))
                .unwrap();
        assert_eq!(v["news2"], 5);
        assert_eq!(v["news2_detail"]["total"], 5);
        assert_eq!(v["news2_detail"]["rr"], 2);
        assert_eq!(v["news2_detail"]["hr"], 2);
        assert_eq!(v["news2_detail"]["temp"], 1);
        assert_eq!(v["news2_detail"]["scale"], 1);
        assert_eq!(v["news2_detail"]["risk"], "medium");
    }

    #[test]
    fn client_messages_parse() {
        let ack: ClientMessage = serde_json::from_str(r#"{"type":"ack","alert":"a-1"}"#).unwrap();
        assert_eq!(
            ack,
            ClientMessage::Ack {
                alert: "a-1".into(),
                version: None,
            }
        );
        let s: ClientMessage = serde_json::from_str(
            r#"{"type":"silence","patient":"bed-2","minutes":5,"reason":"repositioning"}"#,
        )
        .unwrap();
        assert!(matches!(s, ClientMessage::Silence { minutes: 5, .. }));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"drop"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientMessage>(
                r#"{"type":"silence","patient":"a/b","minutes":5,"reason":""}"#
            )
            .is_err()
        );
    }

    #[test]
    fn a_silence_reason_must_be_plain_text() {
        assert_eq!(
            check_silence(5, "  turning the patient "),
            Ok("turning the patient")
        );
        assert!(check_silence(0, "x").is_err());
        assert!(check_silence(5, "   ").is_err());
        for bad in ["nul\u{0}here", "\u{1b}[2Jwiped", "\u{202e}reversed"] {
            assert!(check_silence(5, bad).is_err(), "{bad:?}");
        }
    }
}
