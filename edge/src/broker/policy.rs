//! What a device may do, decided without I/O: it publishes only to its own patient's topics and
//! subscribes only to filters that cannot match another patient's.
//!
//! So the topic of every reading the gate accepts is proof of the publisher's binding, and no
//! device can read another patient's data.

use wardlink_shared::PatientId;

use wardlink_shared::mqtt::{self as packet, PacketError};

/// The topics below `patients/{patient}/` that a device may publish on.
pub const DEVICE_TOPICS: [&str; 2] = ["vitals", "status"];

/// Distinct MQTT 5 topic aliases one connection may bind (a device has two topics).
pub const MAX_ALIASES: u16 = 16;

/// Which of its topics a device published on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `patients/{own}/vitals`: a reading.
    Vitals,
    /// `patients/{own}/status`: device status, for local subscribers only.
    Status,
}

/// What the gate does with a device's packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A publish on one of its topics.
    Publish(Topic),
    /// A publish anywhere else: the connection is closed.
    RefusePublish,
    /// A subscription inside its patient's topics: relayed to rumqttd.
    Subscribe,
    /// A subscription reaching beyond: answered with failure codes, never relayed.
    RefuseSubscribe,
}

/// What one connection may do, and the MQTT 5 topic aliases it bound.
#[derive(Debug)]
pub struct Policy {
    patient: PatientId,
    /// Alias → topic, for the aliases this connection bound (always its own topics).
    aliases: Vec<(u16, Topic)>,
}

impl Policy {
    /// The policy of a device bound to `patient`.
    pub fn new(patient: PatientId) -> Self {
        Self {
            patient,
            aliases: Vec::new(),
        }
    }

    /// The patient this connection is bound to.
    pub fn patient(&self) -> &PatientId {
        &self.patient
    }

    /// Judges a PUBLISH: its topic, or the alias standing for one this connection bound.
    pub fn publish(&mut self, p: &packet::Publish<'_>) -> Result<Verdict, PacketError> {
        if p.topic.is_empty() {
            let bound = p
                .alias
                .and_then(|a| self.aliases.iter().find(|(b, _)| *b == a));
            return Ok(bound.map_or(Verdict::RefusePublish, |(_, t)| Verdict::Publish(*t)));
        }
        let Some(topic) = own_topic(p.topic, &self.patient) else {
            return Ok(Verdict::RefusePublish);
        };
        if let Some(alias) = p.alias {
            if alias == 0 || alias > MAX_ALIASES {
                return Err(PacketError::Unexpected("topic alias beyond the maximum"));
            }
            self.aliases.retain(|(a, _)| *a != alias);
            self.aliases.push((alias, topic));
        }
        Ok(Verdict::Publish(topic))
    }

    /// Judges a SUBSCRIBE: every filter must stay inside the patient's topics.
    pub fn subscribe(&self, s: &packet::Subscribe<'_>) -> Verdict {
        if s.filters.iter().all(|f| own_filter(f, &self.patient)) {
            Verdict::Subscribe
        } else {
            Verdict::RefuseSubscribe
        }
    }
}

/// Which of `patient`'s topics `topic` is: `patients/{patient}/vitals` or `…/status`. An
/// allow-list, not a prefix: every topic a device can create costs the broker memory.
pub fn own_topic(topic: &str, patient: &PatientId) -> Option<Topic> {
    match below_patient(topic, patient)? {
        "vitals" => Some(Topic::Vitals),
        "status" => Some(Topic::Status),
        _ => None,
    }
}

/// A filter that can only match topics of `patient`: one of its topics, `+` or `#` below it.
pub fn own_filter(filter: &str, patient: &PatientId) -> bool {
    below_patient(filter, patient)
        .is_some_and(|rest| rest == "+" || rest == "#" || DEVICE_TOPICS.contains(&rest))
}

fn below_patient<'a>(topic: &'a str, patient: &PatientId) -> Option<&'a str> {
    topic
        .strip_prefix("patients/")?
        .strip_prefix(patient.as_str())?
        .strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(id: &str) -> PatientId {
        PatientId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn topics_and_filters_are_confined_to_the_patient() {
        let p = patient("p1");
        assert_eq!(own_topic("patients/p1/vitals", &p), Some(Topic::Vitals));
        assert_eq!(own_topic("patients/p1/status", &p), Some(Topic::Status));
        for bad in [
            "patients/p1",
            "patients/p1/status/battery",
            "patients/p1/anything",
            "patients/p2/vitals",
            "patients/p10/vitals",
            "patients/p1x",
            "patients/+/vitals",
            "patients/#",
            "#",
            "+/p1/vitals",
            "$share/g/patients/p1/vitals",
            "$SYS/broker",
            "/patients/p1/vitals",
            "",
        ] {
            assert_eq!(own_topic(bad, &p), None, "{bad}");
        }
        for ok in ["patients/p1/#", "patients/p1/+", "patients/p1/vitals"] {
            assert!(own_filter(ok, &p), "{ok}");
        }
        for bad in [
            "#",
            "patients/+/vitals",
            "patients/p1#",
            "patients/#",
            "+/+/+",
        ] {
            assert!(!own_filter(bad, &p), "{bad}");
        }
    }

    fn publish(topic: &str, alias: Option<u16>) -> packet::Publish<'_> {
        packet::Publish {
            topic,
            qos: 1,
            id: 1,
            alias,
            payload: b"{}",
        }
    }

    #[test]
    fn an_alias_stands_only_for_a_topic_this_connection_bound() {
        let mut policy = Policy::new(patient("p1"));
        assert_eq!(
            policy.publish(&publish("", Some(3))),
            Ok(Verdict::RefusePublish)
        );
        assert_eq!(
            policy.publish(&publish("patients/p1/status", Some(3))),
            Ok(Verdict::Publish(Topic::Status))
        );
        assert_eq!(
            policy.publish(&publish("", Some(3))),
            Ok(Verdict::Publish(Topic::Status))
        );
        // Rebinding the alias to the other topic.
        assert_eq!(
            policy.publish(&publish("patients/p1/vitals", Some(3))),
            Ok(Verdict::Publish(Topic::Vitals))
        );
        assert_eq!(
            policy.publish(&publish("", Some(3))),
            Ok(Verdict::Publish(Topic::Vitals))
        );
        // An alias never binds a foreign topic, and a foreign topic never passes.
        assert_eq!(
            policy.publish(&publish("patients/p2/vitals", Some(4))),
            Ok(Verdict::RefusePublish)
        );
        assert_eq!(
            policy.publish(&publish("", Some(4))),
            Ok(Verdict::RefusePublish)
        );
        assert!(
            policy
                .publish(&publish("patients/p1/vitals", Some(MAX_ALIASES + 1)))
                .is_err()
        );
    }
}
