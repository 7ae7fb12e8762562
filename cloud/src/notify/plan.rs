//! `[notify]` in `cloud.toml`: who is told about which alarm, when, and through which SMS
//! provider; validated once at startup into a [`Plan`].
//!
//! ```toml
//! [notify]
//! timezone = "Europe/London"        # rosters are in the hospital's local time
//! dashboard_url = "https://wardlink.example/"
//! repeat_interval_s = 300           # a recipient hears about one patient at most this often
//! rate_limit = 10                   # SMS per recipient ...
//! rate_window_s = 3600              # ... per this window
//!
//! [notify.departments]              # optional: ward -> department, for routes by department
//! ward-7 = "cardiology"
//!
//! [[notify.people]]
//! id = "cn-7"
//! name = "Charge nurse, ward 7"
//! phone = "+441632960001"
//! role = "charge_nurse"
//!
//! [[notify.rosters]]                # on-call by shift
//! name = "doctors"
//! [[notify.rosters.shifts]]
//! days = ["mon", "tue", "wed", "thu", "fri"]
//! start = "07:00"
//! end = "19:00"                     # an end at or before the start runs past midnight
//! people = ["dr-day"]
//!
//! [[notify.routes]]                 # the first route that matches an alarm is used
//! name = "ward-7-high"
//! wards = ["ward-7"]                # empty: every ward (departments likewise)
//! priorities = ["high"]             # empty: every priority (kinds likewise)
//! steps = [
//!   { after_s = 30, to = ["cn-7"] },
//!   { after_s = 90, rosters = ["doctors"] },
//! ]
//! technical = ["it-7"]              # told when the ward's edge stays offline
//! edge_offline_after_s = 120
//!
//! [notify.sms]
//! provider = "twilio"               # or "webhook"
//! url = "https://api.twilio.com"
//! account_sid = "AC..."
//! auth_token_file = "twilio.token"
//! from = "+441632960000"
//! ```

use std::collections::{HashMap, HashSet};

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use wardlink_shared::alarm::Priority;
pub use wardlink_shared::notify::{PersonConfig, SmsConfig, SmsProvider, is_e164};

/// `[notify]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// IANA time zone of the hospital.
    pub timezone: String,
    /// Link at the end of every SMS.
    pub dashboard_url: String,
    /// While alarms stay unacknowledged, one recipient hears about one patient at most this
    /// often (seconds); also the interval of reminders after the last step.
    pub repeat_interval_s: u64,
    /// SMS per recipient per `rate_window_s`, at most.
    pub rate_limit: u32,
    /// The rate limit's window (seconds).
    pub rate_window_s: u64,
    /// Ward → department.
    pub departments: HashMap<String, String>,
    /// Everyone who can be notified.
    pub people: Vec<PersonConfig>,
    /// On-call rosters.
    pub rosters: Vec<RosterConfig>,
    /// Routing rules, first match wins.
    pub routes: Vec<RouteConfig>,
    /// The SMS provider; required when any route exists.
    pub sms: Option<SmsConfig>,
}

impl Default for NotifySection {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            dashboard_url: String::new(),
            repeat_interval_s: 300,
            rate_limit: 10,
            rate_window_s: 3600,
            departments: HashMap::new(),
            people: Vec::new(),
            rosters: Vec::new(),
            routes: Vec::new(),
            sms: None,
        }
    }
}

/// `[[notify.rosters]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterConfig {
    /// Name used by steps.
    pub name: String,
    /// Shifts; several may overlap.
    pub shifts: Vec<ShiftConfig>,
}

/// `[[notify.rosters.shifts]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    /// Days the shift starts on: `mon` … `sun`.
    pub days: Vec<String>,
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM`; at or before `start`, the shift ends the next day.
    pub end: String,
    /// Who is on call.
    pub people: Vec<String>,
}

/// `[[notify.routes]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name (audit log, errors).
    pub name: String,
    /// Wards it covers; empty: all.
    #[serde(default)]
    pub wards: Vec<String>,
    /// Departments it covers (see `departments`); empty: all.
    #[serde(default)]
    pub departments: Vec<String>,
    /// Priorities; empty: all.
    #[serde(default)]
    pub priorities: Vec<Priority>,
    /// Alarm kinds (`hr_high`, `news2`, …); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The escalation chain.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// Technical contacts for the ward's edge.
    #[serde(default)]
    pub technical: Vec<String>,
    /// The edge must stay offline this long before `technical` is told (seconds).
    #[serde(default = "default_edge_offline_after_s")]
    pub edge_offline_after_s: u64,
}

fn default_edge_offline_after_s() -> u64 {
    120
}

/// One step of a chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Seconds after the alarm was raised (unacknowledged).
    pub after_s: u64,
    /// People.
    #[serde(default)]
    pub to: Vec<String>,
    /// Rosters: whoever is on call at that moment.
    #[serde(default)]
    pub rosters: Vec<String>,
}

/// A validated plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The hospital's time zone.
    pub tz: TimeZone,
    /// Link in SMS texts.
    pub dashboard_url: String,
    /// Repeat interval (ms).
    pub repeat_ms: i64,
    /// SMS per recipient per window.
    pub rate_limit: u32,
    /// The window (ms).
    pub rate_window_ms: i64,
    people: HashMap<String, PersonConfig>,
    rosters: HashMap<String, Vec<Shift>>,
    departments: HashMap<String, String>,
    /// Routes in order.
    pub routes: Vec<Route>,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name.
    pub name: String,
    wards: Vec<String>,
    departments: Vec<String>,
    priorities: Vec<Priority>,
    kinds: Vec<String>,
    /// Steps, by increasing delay.
    pub steps: Vec<Step>,
    /// Technical contacts.
    pub technical: Vec<String>,
    /// Offline time before they are told (ms).
    pub edge_offline_after_ms: i64,
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Delay after the raise (ms).
    pub after_ms: i64,
    to: Vec<String>,
    rosters: Vec<String>,
}

#[derive(Debug, Clone)]
struct Shift {
    /// Monday = 0.
    days: [bool; 7],
    start: u16,
    end: u16,
    people: Vec<String>,
}

/// A `[notify]` problem: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// Dotted key, e.g. `notify.routes[0].steps[1].to`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError {
        key: key.into(),
        reason: reason.into(),
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minutes(key: &str, hhmm: &str) -> Result<u16, PlanError> {
    let bad = || err(key, format!("{hhmm:?} is not a time HH:MM"));
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl NotifySection {
    /// Checks everything and compiles the plan.
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let tz = TimeZone::get(&self.timezone).map_err(|e| {
            err(
                "notify.timezone",
                format!("{:?} is not a known time zone: {e}", self.timezone),
            )
        })?;
        if self.repeat_interval_s == 0 {
            return Err(err("notify.repeat_interval_s", "must be at least 1"));
        }
        if self.rate_limit == 0 || self.rate_window_s == 0 {
            return Err(err(
                "notify.rate_limit",
                "rate_limit and rate_window_s must be at least 1",
            ));
        }
        let mut people = HashMap::new();
        for (i, p) in self.people.iter().enumerate() {
            let key = format!("notify.people[{i}]");
            if p.id.is_empty() {
                return Err(err(format!("{key}.id"), "must not be empty"));
            }
            if !is_e164(&p.phone) {
                return Err(err(
                    format!("{key}.phone"),
                    format!(
                        "{:?} is not an E.164 number (+ and 8 to 15 digits)",
                        p.phone
                    ),
                ));
            }
            if people.insert(p.id.clone(), p.clone()).is_some() {
                return Err(err(
                    format!("{key}.id"),
                    format!("{:?} appears twice", p.id),
                ));
            }
        }
        let known = |key: &str, ids: &[String]| -> Result<(), PlanError> {
            match ids.iter().find(|id| !people.contains_key(*id)) {
                Some(id) => Err(err(key, format!("no person {id:?} in notify.people"))),
                None => Ok(()),
            }
        };
        let mut rosters = HashMap::new();
        for (i, r) in self.rosters.iter().enumerate() {
            let mut shifts = Vec::new();
            for (j, s) in r.shifts.iter().enumerate() {
                let key = format!("notify.rosters[{i}].shifts[{j}]");
                let mut days = [false; 7];
                for d in &s.days {
                    let idx = DAYS.iter().position(|x| x == d).ok_or_else(|| {
                        err(
                            format!("{key}.days"),
                            format!("{d:?} is not one of {DAYS:?}"),
                        )
                    })?;
                    days[idx] = true;
                }
                known(&format!("{key}.people"), &s.people)?;
                shifts.push(Shift {
                    days,
                    start: minutes(&format!("{key}.start"), &s.start)?,
                    end: minutes(&format!("{key}.end"), &s.end)?,
                    people: s.people.clone(),
                });
            }
            if rosters.insert(r.name.clone(), shifts).is_some() {
                return Err(err(
                    format!("notify.rosters[{i}].name"),
                    format!("{:?} appears twice", r.name),
                ));
            }
        }
        let mut routes = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("notify.routes[{i}]");
            let mut steps = Vec::new();
            let mut last = 0;
            for (j, s) in r.steps.iter().enumerate() {
                let key = format!("{key}.steps[{j}]");
                if s.to.is_empty() && s.rosters.is_empty() {
                    return Err(err(key, "names nobody (set to or rosters)"));
                }
                if s.after_s > 86_400 {
                    return Err(err(format!("{key}.after_s"), "at most 86400 (a day)"));
                }
                if s.after_s < last {
                    return Err(err(
                        format!("{key}.after_s"),
                        "steps must come in order of after_s",
                    ));
                }
                last = s.after_s;
                known(&format!("{key}.to"), &s.to)?;
                if let Some(name) = s.rosters.iter().find(|n| !rosters.contains_key(*n)) {
                    return Err(err(
                        format!("{key}.rosters"),
                        format!("no roster {name:?} in notify.rosters"),
                    ));
                }
                steps.push(Step {
                    after_ms: secs_ms(s.after_s),
                    to: s.to.clone(),
                    rosters: s.rosters.clone(),
                });
            }
            known(&format!("{key}.technical"), &r.technical)?;
            if steps.is_empty() && r.technical.is_empty() {
                return Err(err(key, "has neither steps nor technical contacts"));
            }
            routes.push(Route {
                name: r.name.clone(),
                wards: r.wards.clone(),
                departments: r.departments.clone(),
                priorities: r.priorities.clone(),
                kinds: r.kinds.clone(),
                steps,
                technical: r.technical.clone(),
                edge_offline_after_ms: secs_ms(r.edge_offline_after_s),
            });
        }
        if !routes.is_empty() {
            let Some(sms) = &self.sms else {
                return Err(err("notify.sms", "routes need an SMS provider"));
            };
            if sms.provider == SmsProvider::Twilio
                && (sms.account_sid.is_none()
                    || sms.from.is_none()
                    || sms.auth_token_file.is_none())
            {
                return Err(err(
                    "notify.sms",
                    "the twilio provider needs account_sid, from and auth_token_file",
                ));
            }
            if !(100..=60_000).contains(&sms.timeout_ms) {
                return Err(err(
                    "notify.sms.timeout_ms",
                    "must be between 100 and 60000",
                ));
            }
            if !(sms.url.starts_with("https://") || sms.url.starts_with("http://")) {
                return Err(err("notify.sms.url", "must be an http(s) URL"));
            }
        }
        if self.dashboard_url.len() > 80 {
            return Err(err(
                "notify.dashboard_url",
                "at most 80 characters: it goes into every SMS",
            ));
        }
        let names: HashSet<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        if names.len() != self.routes.len() {
            return Err(err("notify.routes", "route names must be unique"));
        }
        Ok(Plan {
            tz,
            dashboard_url: self.dashboard_url.clone(),
            repeat_ms: secs_ms(self.repeat_interval_s),
            rate_limit: self.rate_limit,
            rate_window_ms: secs_ms(self.rate_window_s),
            people,
            rosters,
            departments: self.departments.clone(),
            routes,
        })
    }
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Plan {
    /// The plan of a hub without `[notify]`: nobody is notified.
    pub fn empty() -> Plan {
        NotifySection::default()
            .plan()
            .unwrap_or_else(|_| unreachable!("the default [notify] is valid"))
    }

    /// The first route for an alarm.
    pub fn route(&self, ward: &str, priority: Priority, kind: &str) -> Option<usize> {
        let department = self.departments.get(ward);
        self.routes.iter().position(|r| {
            (r.wards.is_empty() || r.wards.iter().any(|w| w == ward))
                && (r.departments.is_empty()
                    || department.is_some_and(|d| r.departments.contains(d)))
                && (r.priorities.is_empty() || r.priorities.contains(&priority))
                && (r.kinds.is_empty() || r.kinds.iter().any(|k| k == kind))
        })
    }

    /// The first route with technical contacts for a ward.
    pub fn technical_route(&self, ward: &str) -> Option<&Route> {
        let department = self.departments.get(ward);
        self.routes.iter().find(|r| {
            !r.technical.is_empty()
                && (r.wards.is_empty() || r.wards.iter().any(|w| w == ward))
                && (r.departments.is_empty()
                    || department.is_some_and(|d| r.departments.contains(d)))
        })
    }

    /// A person.
    pub fn person(&self, id: &str) -> Option<&PersonConfig> {
        self.people.get(id)
    }

    /// Who a step reaches at `at` (ms since the epoch): its people, and whoever its rosters
    /// have on call then, each once, in order.
    pub fn recipients(&self, step: &Step, at: i64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |id: &String| {
            if !out.contains(id) {
                out.push(id.clone());
            }
        };
        step.to.iter().for_each(&mut add);
        for name in &step.rosters {
            for id in self.on_call(name, at) {
                add(&id);
            }
        }
        out
    }

    /// Who roster `name` has on call at `at`.
    pub fn on_call(&self, name: &str, at: i64) -> Vec<String> {
        let Some(shifts) = self.rosters.get(name) else {
            return Vec::new();
        };
        let Ok(ts) = jiff::Timestamp::from_millisecond(at) else {
            return Vec::new();
        };
        let local = ts.to_zoned(self.tz.clone());
        let day = usize::from(local.weekday().to_monday_zero_offset().unsigned_abs());
        let yesterday = (day + 6) % 7;
        let minute = u16::try_from(local.hour()).unwrap_or(0) * 60
            + u16::try_from(local.minute()).unwrap_or(0);
        let mut out = Vec::new();
        for s in shifts {
            let on = if s.start < s.end {
                s.days[day] && (s.start..s.end).contains(&minute)
            } else {
                (s.days[day] && minute >= s.start) || (s.days[yesterday] && minute < s.end)
            };
            if on {
                out.extend(s.people.iter().cloned());
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn section(toml_text: &str) -> NotifySection {
        #[derive(Deserialize)]
        struct Wrap {
            notify: NotifySection,
        }
        toml::from_str::<Wrap>(toml_text).unwrap().notify
    }

    /// A plan shared by these tests and the engine's.
    pub(crate) const BASE: &str = r#"
[notify]
timezone = "Europe/London"
dashboard_url = "https://wl.example/"
repeat_interval_s = 300
rate_limit = 5
rate_window_s = 3600
[[notify.people]]
id = "cn"
name = "Charge nurse"
phone = "+441632960001"
role = "charge_nurse"
[[notify.people]]
id = "dr-day"
name = "Day doctor"
phone = "+441632960002"
role = "doctor"
[[notify.people]]
id = "dr-night"
name = "Night doctor"
phone = "+441632960003"
role = "doctor"
[[notify.people]]
id = "it"
name = "Ward IT"
phone = "+441632960009"
role = "technician"
[[notify.rosters]]
name = "doctors"
[[notify.rosters.shifts]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "07:00"
end = "19:00"
people = ["dr-day"]
[[notify.rosters.shifts]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "19:00"
end = "07:00"
people = ["dr-night"]
[[notify.routes]]
name = "high"
wards = ["ward-7"]
priorities = ["high"]
steps = [{ after_s = 30, to = ["cn"] }, { after_s = 90, rosters = ["doctors"] }]
technical = ["it"]
edge_offline_after_s = 120
[notify.sms]
provider = "webhook"
url = "http://127.0.0.1:1/sms"
"#;

    fn at(local: &str, tz: &str) -> i64 {
        let zoned: jiff::Zoned = format!("{local}[{tz}]").parse().unwrap();
        zoned.timestamp().as_millisecond()
    }

    #[test]
    fn rosters_change_at_local_shift_boundaries_across_dst() {
        let plan = section(BASE).plan().unwrap();
        let doctors = |local: &str| plan.on_call("doctors", at(local, "Europe/London"));
        assert_eq!(doctors("2026-11-26T06:59:59"), vec!["dr-night"]);
        assert_eq!(doctors("2026-11-26T07:00:00"), vec!["dr-day"]);
        assert_eq!(doctors("2026-11-26T18:59:00"), vec!["dr-day"]);
        assert_eq!(doctors("2026-11-26T19:00:00"), vec!["dr-night"]);
        assert_eq!(doctors("2026-11-27T00:30:00"), vec!["dr-night"]);
        // Summer time (UTC+1): 07:00 local is 06:00 UTC.
        assert_eq!(doctors("2026-07-01T07:00:00"), vec!["dr-day"]);
        assert_eq!(
            plan.on_call("doctors", at("2026-07-01T06:30:00", "UTC")),
            vec!["dr-day"],
            "06:30 UTC is 07:30 in London in July"
        );
        assert_eq!(
            plan.on_call("doctors", at("2026-11-26T06:30:00", "UTC")),
            vec!["dr-night"],
            "06:30 UTC is 06:30 in London in November"
        );
    }

    #[test]
    fn a_night_shift_belongs_to_the_day_it_starts() {
        let text = BASE.replace(
            r#"days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "19:00""#,
            r#"days = ["fri"]
start = "19:00""#,
        );
        let plan = section(&text).plan().unwrap();
        // 2026-11-27 is a Friday.
        let doctors = |local: &str| plan.on_call("doctors", at(local, "Europe/London"));
        assert_eq!(doctors("2026-11-27T20:00:00"), vec!["dr-night"]);
        assert_eq!(doctors("2026-11-28T03:00:00"), vec!["dr-night"]);
        assert!(doctors("2026-11-28T20:00:00").is_empty());
        assert!(doctors("2026-11-27T03:00:00").is_empty());
    }

    #[test]
    fn routes_match_in_order() {
        let plan = section(BASE).plan().unwrap();
        assert_eq!(plan.route("ward-7", Priority::High, "hr_high"), Some(0));
        assert_eq!(plan.route("ward-7", Priority::Medium, "hr_high"), None);
        assert_eq!(plan.route("ward-8", Priority::High, "hr_high"), None);
        let step = &plan.routes[0].steps[1];
        assert_eq!(
            plan.recipients(step, at("2026-11-26T12:00:00", "Europe/London")),
            vec!["dr-day"]
        );
    }

    #[test]
    fn invalid_plans_name_the_key() {
        let cases = [
            (
                BASE.replace("Europe/London", "Mars/Olympus"),
                "notify.timezone",
            ),
            (
                BASE.replace("+441632960002", "0800 DOCTOR"),
                "notify.people[1].phone",
            ),
            (
                BASE.replace(r#"to = ["cn"]"#, r#"to = ["nobody"]"#),
                "notify.routes[0].steps[0].to",
            ),
            (
                BASE.replace(r#"rosters = ["doctors"]"#, r#"rosters = ["vets"]"#),
                "notify.routes[0].steps[1].rosters",
            ),
            (
                BASE.replace("after_s = 90", "after_s = 10"),
                "notify.routes[0].steps[1].after_s",
            ),
            (
                BASE.replace(r#"start = "07:00""#, r#"start = "7am""#),
                "notify.rosters[0].shifts[0].start",
            ),
            (
                BASE.replace(r#""sun"]"#, r#""sunday"]"#),
                "notify.rosters[0].shifts[0].days",
            ),
            (
                BASE.replace(
                    "[notify.sms]\nprovider = \"webhook\"\nurl = \"http://127.0.0.1:1/sms\"\n",
                    "",
                ),
                "notify.sms",
            ),
            (
                BASE.replace("provider = \"webhook\"", "provider = \"twilio\""),
                "notify.sms",
            ),
        ];
        for (text, key) in cases {
            let e = section(&text).plan().unwrap_err();
            assert_eq!(e.key, key, "{e:?}");
        }
        assert!(NotifySection::default().plan().is_ok());
    }
}
