//! Who is told about alarms, and through which SMS provider: the configuration types the hub's
//! `[notify]` and an edge's `[local_notify]` share.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A person who may be texted (`[[notify.people]]`, `[[local_notify.people]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// Id used by steps and rosters.
    pub id: String,
    /// Name (for the audit log and operators; never sent in an SMS).
    pub name: String,
    /// E.164 phone number.
    pub phone: String,
    /// Role, e.g. `charge_nurse`, `doctor`, `technician`.
    pub role: String,
}

/// An SMS provider (`[notify.sms]`, `[local_notify.sms]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// `twilio` (the Messages API) or `webhook` (a JSON POST).
    pub provider: SmsProvider,
    /// Base URL (Twilio: `https://api.twilio.com`) or, for `webhook`, the full URL.
    pub url: String,
    /// Twilio account SID (the basic-auth user).
    #[serde(default)]
    pub account_sid: Option<String>,
    /// File holding the auth token (Twilio) or bearer token (webhook); kept out of the
    /// config file.
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    /// Sender number.
    #[serde(default)]
    pub from: Option<String>,
    /// One attempt's timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A message still not accepted this long after it was queued has failed for good.
    #[serde(default = "default_give_up_after_s")]
    pub give_up_after_s: u64,
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_give_up_after_s() -> u64 {
    900
}

/// SMS provider kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsProvider {
    /// Twilio's Messages API (or a compatible one).
    Twilio,
    /// A generic JSON webhook.
    Webhook,
}

/// Whether `phone` is an E.164 number: `+` and 8 to 15 digits.
pub fn is_e164(phone: &str) -> bool {
    phone
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}
