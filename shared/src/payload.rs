//! Device payloads: the MQTT topic and the contract JSON payload, decoded and validated into a
//! [`Reading`].
//!
//! Everything here handles untrusted bytes. Nothing panics; every refusal has a
//! [`RejectReason`] whose [`RejectReason::label`] is the metric label it is counted under.

use serde::Deserialize;

use crate::ids::PatientId;
use crate::time::{Millis, parse_rfc3339};
use crate::vitals::{Acvpu, Quality, Reading, VitalSign, Vitals};

/// Largest payload accepted, in bytes. The contract payload is under 200 bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// How far a device clock may run ahead of the edge before its timestamp is refused.
pub const MAX_CLOCK_AHEAD_MS: Millis = 5 * 60 * 1000;

/// How old a reading may be by default (24 h): a device buffering through an outage of its own
/// stays within it; a clock reset to 1970 does not.
pub const DEFAULT_MAX_AGE_MS: Millis = 24 * 60 * 60 * 1000;

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    /// The topic is not `patients/{patient_id}/vitals` with a valid id.
    #[error("topic is not patients/{{patient_id}}/vitals")]
    BadTopic,
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload exceeds {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge,
    /// The payload is not the contract's JSON object.
    #[error("payload is not valid JSON for a reading: {0}")]
    Malformed(String),
    /// The payload carries no vital sign.
    #[error("payload carries no vital sign")]
    NoVitals,
    /// `ts` is not RFC 3339.
    #[error("ts is not an RFC 3339 timestamp")]
    BadTimestamp,
    /// `ts` lies too far in the future.
    #[error("ts is more than 5 minutes ahead of the edge clock")]
    TimestampInFuture,
    /// `ts` is older than the edge accepts (`mqtt.max_reading_age_s`).
    #[error("ts is older than the edge accepts")]
    TimestampTooOld,
    /// A value is not physiologically possible.
    #[error("{field}={value} is outside the possible range {min}..={max}")]
    Impossible {
        /// The contract field name.
        field: &'static str,
        /// The value received.
        value: f64,
        /// Smallest possible value.
        min: f64,
        /// Largest possible value.
        max: f64,
    },
    /// Diastolic pressure at or above systolic.
    #[error("dbp must be below sbp")]
    DiastolicAboveSystolic,
}

impl RejectReason {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::BadTopic => "bad_topic",
            RejectReason::TooLarge => "too_large",
            RejectReason::Malformed(_) => "malformed",
            RejectReason::NoVitals => "no_vitals",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::TimestampInFuture => "timestamp_in_future",
            RejectReason::TimestampTooOld => "timestamp_too_old",
            RejectReason::Impossible { .. } => "impossible_value",
            RejectReason::DiastolicAboveSystolic => "dbp_above_sbp",
        }
    }

    /// Every label, so metrics can show zeroes before the first refusal.
    pub const LABELS: [&'static str; 9] = [
        "bad_topic",
        "too_large",
        "malformed",
        "no_vitals",
        "bad_timestamp",
        "timestamp_in_future",
        "timestamp_too_old",
        "impossible_value",
        "dbp_above_sbp",
    ];
}

/// Extracts the patient from `patients/{patient_id}/vitals`.
pub fn patient_from_topic(topic: &str) -> Result<PatientId, RejectReason> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("patients"), Some(id), Some("vitals"), None) => {
            PatientId::new(id).map_err(|_| RejectReason::BadTopic)
        }
        _ => Err(RejectReason::BadTopic),
    }
}

/// Physiologically possible ranges: values outside them are device faults, not patients.
/// They are deliberately wide (a heart rate of 300 is possible, 400 is not).
fn possible_range(sign: VitalSign) -> (f64, f64) {
    match sign {
        VitalSign::Hr => (0.0, 350.0),
        VitalSign::Spo2 => (0.0, 100.0),
        VitalSign::Rr => (0.0, 150.0),
        VitalSign::Temp => (15.0, 46.0),
        VitalSign::Sbp => (10.0, 350.0),
        VitalSign::Dbp => (5.0, 250.0),
    }
}

/// The wire shape of the contract payload. Numbers are read as `f64` so that huge or
/// fractional values are range-checked rather than failing to parse obscurely.
#[derive(Deserialize)]
struct JsonReading {
    ts: Option<String>,
    hr: Option<f64>,
    spo2: Option<f64>,
    rr: Option<f64>,
    temp: Option<f64>,
    sbp: Option<f64>,
    dbp: Option<f64>,
    o2: Option<bool>,
    acvpu: Option<Acvpu>,
    /// The device's signal quality, 0–100.
    sq: Option<f64>,
    /// Perfusion index, %.
    pi: Option<f64>,
    /// ECG leads off.
    leads_off: Option<bool>,
}

/// A decoded reading with what the payload said besides the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The reading.
    pub reading: Reading,
    /// The device stamped it (`ts` present): only a stamped reading can be recognised when a
    /// device sends it again.
    pub stamped: bool,
    /// The signal quality the device reported.
    pub quality: Quality,
}

/// Decodes the contract JSON payload published on `topic` and received at `now`, refusing
/// readings older than [`DEFAULT_MAX_AGE_MS`].
pub fn decode_json(topic: &str, payload: &[u8], now: Millis) -> Result<Reading, RejectReason> {
    decode_json_stamped(topic, payload, now, DEFAULT_MAX_AGE_MS).map(|d| d.reading)
}

/// As [`decode_json`] with readings older than `max_age` ms refused, with whether the device
/// stamped the reading and the signal quality it reported.
pub fn decode_json_stamped(
    topic: &str,
    payload: &[u8],
    now: Millis,
    max_age: Millis,
) -> Result<Decoded, RejectReason> {
    let patient = patient_from_topic(topic)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(RejectReason::TooLarge);
    }
    let raw: JsonReading = serde_json::from_slice(payload).map_err(|e| {
        // serde_json's message names line and column, never echoes the payload.
        RejectReason::Malformed(e.to_string())
    })?;
    let ts = match raw.ts.as_deref() {
        None => now,
        Some(s) => parse_rfc3339(s).ok_or(RejectReason::BadTimestamp)?,
    };
    if ts > now.saturating_add(MAX_CLOCK_AHEAD_MS) {
        return Err(RejectReason::TimestampInFuture);
    }
    if ts < now.saturating_sub(max_age) {
        return Err(RejectReason::TimestampTooOld);
    }
    let percent = |field: &'static str, value: Option<f64>| match value {
        Some(v) if !(0.0..=100.0).contains(&v) => Err(RejectReason::Impossible {
            field,
            value: v,
            min: 0.0,
            max: 100.0,
        }),
        // Within 0–100, exactly or nearly representable.
        #[allow(clippy::cast_possible_truncation)]
        v => Ok(v.map(|v| v as f32)),
    };
    let quality = Quality {
        sq: percent("sq", raw.sq)?,
        pi: percent("pi", raw.pi)?,
        leads_off: raw.leads_off,
    };
    let vitals = Vitals {
        hr: checked(VitalSign::Hr, raw.hr)?,
        spo2: checked(VitalSign::Spo2, raw.spo2)?,
        rr: checked(VitalSign::Rr, raw.rr)?,
        temp: checked(VitalSign::Temp, raw.temp)?,
        sbp: checked(VitalSign::Sbp, raw.sbp)?,
        dbp: checked(VitalSign::Dbp, raw.dbp)?,
        o2: raw.o2,
        acvpu: raw.acvpu,
    };
    if let (Some(s), Some(d)) = (vitals.sbp, vitals.dbp)
        && d >= s
    {
        return Err(RejectReason::DiastolicAboveSystolic);
    }
    // `o2` alone says nothing about the patient's state.
    let only_o2 = Vitals { o2: None, ..vitals }.is_empty();
    if only_o2 {
        return Err(RejectReason::NoVitals);
    }
    Ok(Decoded {
        reading: Reading {
            patient,
            ts,
            vitals,
        },
        stamped: raw.ts.is_some(),
        quality,
    })
}

fn checked(sign: VitalSign, value: Option<f64>) -> Result<Option<f32>, RejectReason> {
    let Some(v) = value else { return Ok(None) };
    let (min, max) = possible_range(sign);
    // A value too small for an f32 would read as 0 (asystole, apnoea): a garbage number, not
    // a patient.
    #[allow(clippy::cast_possible_truncation)]
    let vanishes = v != 0.0 && (v.is_subnormal() || (v as f32).abs() < f32::MIN_POSITIVE);
    if !v.is_finite() || v < min || v > max || vanishes {
        return Err(RejectReason::Impossible {
            field: sign.name(),
            value: v,
            min,
            max,
        });
    }
    // Within the range above every value is exactly or nearly representable as f32.
    #[allow(clippy::cast_possible_truncation)]
    Ok(Some(v as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_795_694_400_000;
    const TOPIC: &str = "patients/bed-07/vitals";

    #[test]
    fn contract_example_decodes() {
        let p = br#"{"ts":"2026-11-26T12:00:00.250Z","hr":72,"spo2":97,"rr":16,"temp":36.8,"sbp":120,"dbp":80,"o2":false,"acvpu":"A"}"#;
        let r = decode_json(TOPIC, p, NOW).unwrap();
        assert_eq!(r.patient.as_str(), "bed-07");
        assert_eq!(r.ts, NOW + 250);
        assert_eq!(r.vitals.hr, Some(72.0));
        assert_eq!(r.vitals.temp, Some(36.8));
        assert_eq!(r.vitals.acvpu, Some(Acvpu::A));
        assert_eq!(r.vitals.o2, Some(false));
    }

    #[test]
    fn signal_quality_is_read() {
        let d = decode_json_stamped(
            TOPIC,
            br#"{"spo2":84,"hr":120,"sq":35,"pi":0.2,"leads_off":true}"#,
            NOW,
            DEFAULT_MAX_AGE_MS,
        )
        .unwrap();
        assert_eq!(
            d.quality,
            Quality {
                sq: Some(35.0),
                pi: Some(0.2),
                leads_off: Some(true)
            }
        );
        assert!(!d.stamped);
        let plain = decode_json_stamped(TOPIC, br#"{"hr":80}"#, NOW, DEFAULT_MAX_AGE_MS).unwrap();
        assert!(plain.quality.is_unknown());
    }

    #[test]
    fn missing_ts_takes_receive_time() {
        let r = decode_json(TOPIC, br#"{"hr":80}"#, NOW).unwrap();
        assert_eq!(r.ts, NOW);
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("patients/a/b/vitals", br#"{"hr":80}"#, "bad_topic"),
            ("patients/+/vitals", br#"{"hr":80}"#, "bad_topic"),
            ("patients/x/other", br#"{"hr":80}"#, "bad_topic"),
            (TOPIC, b"", "malformed"),
            (TOPIC, b"\xff\xfe", "malformed"),
            (TOPIC, b"[1,2]", "malformed"),
            (TOPIC, br#"{"hr":"fast"}"#, "malformed"),
            (TOPIC, br#"{"acvpu":"Z"}"#, "malformed"),
            (TOPIC, br#"{}"#, "no_vitals"),
            (TOPIC, br#"{"o2":true}"#, "no_vitals"),
            (TOPIC, br#"{"hr":80,"ts":"noon"}"#, "bad_timestamp"),
            (
                TOPIC,
                br#"{"hr":80,"ts":"2027-01-01T00:00:00Z"}"#,
                "timestamp_in_future",
            ),
            (
                TOPIC,
                br#"{"hr":80,"ts":"1970-01-01T00:00:00Z"}"#,
                "timestamp_too_old",
            ),
            (
                TOPIC,
                br#"{"hr":80,"ts":"2026-11-25T11:59:59Z"}"#,
                "timestamp_too_old",
            ),
            (TOPIC, br#"{"hr":80,"sq":101}"#, "impossible_value"),
            (TOPIC, br#"{"hr":80,"sq":-0.5}"#, "impossible_value"),
            (TOPIC, br#"{"spo2":97,"pi":120}"#, "impossible_value"),
            (TOPIC, br#"{"hr":80,"leads_off":"yes"}"#, "malformed"),
            (TOPIC, br#"{"hr":5e-324}"#, "impossible_value"),
            (TOPIC, br#"{"rr":1e-40}"#, "impossible_value"),
            (TOPIC, br#"{"hr":-1}"#, "impossible_value"),
            (TOPIC, br#"{"hr":1e300}"#, "impossible_value"),
            (TOPIC, br#"{"spo2":101}"#, "impossible_value"),
            (TOPIC, br#"{"temp":80}"#, "impossible_value"),
            (TOPIC, br#"{"sbp":80,"dbp":90}"#, "dbp_above_sbp"),
        ];
        for (topic, payload, label) in cases {
            let err = decode_json(topic, payload, NOW).unwrap_err();
            assert_eq!(
                err.label(),
                *label,
                "{topic} {:?}",
                String::from_utf8_lossy(payload)
            );
            assert!(RejectReason::LABELS.contains(label));
        }
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            decode_json(TOPIC, &big, NOW).unwrap_err(),
            RejectReason::TooLarge
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = decode_json(TOPIC, br#"{"hr":80,"battery":40}"#, NOW).unwrap();
        assert_eq!(r.vitals.hr, Some(80.0));
    }
}
