//! `[local_notify]` in `edge.toml`: paging from the ward itself while the hub is unreachable.
//!
//! ```toml
//! [local_notify]
//! hub_unreachable_after_s = 60     # the hub must be unreachable this long first
//! dashboard_url = "http://wardlink-edge.ward-7.lan:8090/"   # the ward view, in texts
//!
//! [local_notify.sms]               # a gateway on the hospital LAN: same kinds as the hub's
//! provider = "webhook"             # or "twilio"
//! url = "http://sms-gateway.lan/api/send"
//! auth_token_file = "gateway.token"
//!
//! [[local_notify.people]]
//! id = "cn-7"
//! name = "Charge nurse, ward 7"
//! phone = "+441632960001"
//! role = "charge_nurse"
//!
//! [[local_notify.steps]]           # in order of after_s
//! after_s = 0                      # after the alarm was raised, unacknowledged
//! to = ["cn-7"]
//! priorities = ["high"]            # empty: every priority (kinds likewise)
//! ```

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use wardlink_shared::alarm::Priority;
use wardlink_shared::notify::{PersonConfig, SmsConfig, is_e164};

/// `[local_notify]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalNotifySection {
    /// Seconds the hub must have been unreachable before the edge pages.
    #[serde(default = "default_unreachable_s")]
    pub hub_unreachable_after_s: u64,
    /// A link to the ward view put in texts (empty: none).
    #[serde(default)]
    pub dashboard_url: String,
    /// The provider on the hospital LAN.
    pub sms: SmsConfig,
    /// Who may be paged.
    #[serde(default)]
    pub people: Vec<PersonConfig>,
    /// The chain.
    #[serde(default)]
    pub steps: Vec<LocalStep>,
}

fn default_unreachable_s() -> u64 {
    60
}

/// `[[local_notify.steps]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStep {
    /// Seconds after the alarm was raised (and not acknowledged).
    pub after_s: u64,
    /// People.
    pub to: Vec<String>,
    /// Priorities; empty: all.
    #[serde(default)]
    pub priorities: Vec<Priority>,
    /// Alarm kinds (`hr_high`, `news2`, …); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
}

impl LocalStep {
    /// Whether this step concerns an alarm of `priority` and `kind`.
    pub fn covers(&self, priority: Priority, kind: &str) -> bool {
        (self.priorities.is_empty() || self.priorities.contains(&priority))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
    }
}

impl LocalNotifySection {
    /// Checks the values; the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: String, why: &str| Err((key, why.to_owned()));
        if !(1..=86_400).contains(&self.hub_unreachable_after_s) {
            return bad(
                "local_notify.hub_unreachable_after_s".into(),
                "must be between 1 and 86400",
            );
        }
        let mut ids = HashSet::new();
        for (i, p) in self.people.iter().enumerate() {
            if p.id.is_empty() || !ids.insert(p.id.as_str()) {
                return bad(format!("local_notify.people[{i}].id"), "empty or repeated");
            }
            if !is_e164(&p.phone) {
                return bad(
                    format!("local_notify.people[{i}].phone"),
                    "not an E.164 number (+ and 8 to 15 digits)",
                );
            }
        }
        let mut last = 0;
        for (i, s) in self.steps.iter().enumerate() {
            let key = format!("local_notify.steps[{i}]");
            if s.to.is_empty() {
                return bad(format!("{key}.to"), "names nobody");
            }
            if let Some(id) = s.to.iter().find(|id| !ids.contains(id.as_str())) {
                return Err((
                    format!("{key}.to"),
                    format!("no person {id:?} in local_notify.people"),
                ));
            }
            if s.after_s > 86_400 || s.after_s < last {
                return bad(
                    format!("{key}.after_s"),
                    "at most 86400, and steps in order of after_s",
                );
            }
            last = s.after_s;
        }
        if self.sms.url.is_empty() {
            return bad("local_notify.sms.url".into(), "must not be empty");
        }
        if !(1..=60_000).contains(&self.sms.timeout_ms) {
            return bad(
                "local_notify.sms.timeout_ms".into(),
                "must be between 1 and 60000",
            );
        }
        Ok(())
    }

    /// The person with id `id`.
    pub fn person(&self, id: &str) -> Option<&PersonConfig> {
        self.people.iter().find(|p| p.id == id)
    }
}
