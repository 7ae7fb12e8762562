//! The comparison of the gate's MQTT parser with rumqttc's codec, shared by the test
//! `mqtt_oracle.rs` and the fuzz target `fuzz/fuzz_targets/mqtt_oracle.rs`.

use bytes::BytesMut;
use rumqttc::mqttbytes::{QoS, v4::Packet as V4};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::Packet as V5;
use wardlink_shared::mqtt::{self, LEVEL_V5};

/// Largest packet either parser is asked to read.
pub const MAX: usize = 1 << 16;

/// What a parser made of a packet: the fields the gate acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Connect {
        client_id: String,
        will_topic: Option<String>,
        login: Option<(String, String)>,
        keep_alive: u16,
        clean: bool,
        session_expiry: u32,
    },
    Publish {
        topic: Vec<u8>,
        qos: u8,
        id: u16,
        payload: Vec<u8>,
    },
    Subscribe {
        id: u16,
        filters: Vec<String>,
    },
}

fn q4(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn q5(q: QoS5) -> u8 {
    match q {
        QoS5::AtMostOnce => 0,
        QoS5::AtLeastOnce => 1,
        QoS5::ExactlyOnce => 2,
    }
}

/// The gate's reading of the first packet of `bytes`, and its length.
pub fn gate(level: u8, bytes: &[u8]) -> Option<(usize, Read)> {
    let len = mqtt::frame(bytes, MAX).ok()??;
    let p = &bytes[..len];
    let read = match mqtt::kind(p) {
        mqtt::CONNECT => {
            // Other protocol levels are read, then refused by the gate.
            let c = mqtt::parse_connect(p).ok().filter(|c| c.level == level)?;
            // rumqttc reads a user name without a password as an empty password.
            // rumqttc reads a missing user name or password as empty, and both empty as no
            // login (the gate refuses a CONNECT whose user name is not its client id).
            let login = match (c.username, c.password) {
                (None, None) => None,
                (u, pw) => Some((
                    u.unwrap_or_default(),
                    String::from_utf8(pw.unwrap_or_default()).ok()?,
                )),
            }
            .filter(|(u, p)| !(u.is_empty() && p.is_empty()));
            Read::Connect {
                client_id: c.client_id,
                will_topic: c.will_topic,
                login,
                keep_alive: c.keep_alive,
                clean: c.clean,
                session_expiry: c.session_expiry,
            }
        }
        mqtt::PUBLISH => {
            let x = mqtt::parse_publish(p, level).ok()?;
            Read::Publish {
                topic: x.topic.as_bytes().to_vec(),
                qos: x.qos,
                id: x.id,
                payload: x.payload.to_vec(),
            }
        }
        mqtt::SUBSCRIBE => {
            let x = mqtt::parse_subscribe(p, level).ok()?;
            Read::Subscribe {
                id: x.id,
                filters: x.filters.iter().map(|f| (*f).to_owned()).collect(),
            }
        }
        _ => return None,
    };
    Some((len, read))
}

/// rumqttc's reading of the first packet of `bytes`, and how many bytes it took.
pub fn oracle(level: u8, bytes: &[u8]) -> Option<(usize, Read)> {
    let mut stream = BytesMut::from(bytes);
    let read = if level == LEVEL_V5 {
        match V5::read(&mut stream, Some(MAX as u32)).ok()? {
            V5::Connect(c, will, login) => Read::Connect {
                client_id: c.client_id,
                will_topic: will.map(|w| String::from_utf8_lossy(&w.topic).into_owned()),
                login: login.map(|l| (l.username, l.password)),
                keep_alive: c.keep_alive,
                clean: c.clean_start,
                session_expiry: c
                    .properties
                    .and_then(|p| p.session_expiry_interval)
                    .unwrap_or(0),
            },
            V5::Publish(x) => Read::Publish {
                topic: x.topic.to_vec(),
                qos: q5(x.qos),
                id: x.pkid,
                payload: x.payload.to_vec(),
            },
            V5::Subscribe(x) => Read::Subscribe {
                id: x.pkid,
                filters: x.filters.into_iter().map(|f| f.path).collect(),
            },
            _ => return None,
        }
    } else {
        match V4::read(&mut stream, MAX).ok()? {
            V4::Connect(c) => Read::Connect {
                client_id: c.client_id,
                will_topic: c.last_will.map(|w| w.topic),
                login: c.login.map(|l| (l.username, l.password)),
                keep_alive: c.keep_alive,
                clean: c.clean_session,
                session_expiry: 0,
            },
            V4::Publish(x) => Read::Publish {
                topic: x.topic.into_bytes(),
                qos: q4(x.qos),
                id: x.pkid,
                payload: x.payload.to_vec(),
            },
            V4::Subscribe(x) => Read::Subscribe {
                id: x.pkid,
                filters: x.filters.into_iter().map(|f| f.path).collect(),
            },
            _ => return None,
        }
    };
    Some((bytes.len() - stream.len(), read))
}

/// How often each parser accepted.
#[derive(Default, Debug)]
pub struct Tally {
    /// Both accepted (and agreed).
    pub both: usize,
    /// Only the gate accepted.
    pub gate_only: usize,
    /// Only rumqttc accepted.
    pub oracle_only: usize,
}

/// Compares the two readings of `bytes`; panics (with the input) on a disagreement.
pub fn compare(level: u8, bytes: &[u8], tally: &mut Tally) {
    match (gate(level, bytes), oracle(level, bytes)) {
        (Some(g), Some(o)) => {
            assert_eq!(g, o, "level {level} read differently: {bytes:02x?}");
            tally.both += 1;
        }
        (Some(g), None) => {
            if std::env::var("WARDLINK_ORACLE_SHOW").is_ok() {
                eprintln!("gate only, level {level}: {g:?} {bytes:02x?}");
            }
            tally.gate_only += 1;
        }
        (None, Some(_)) => tally.oracle_only += 1,
        (None, None) => {}
    }
}
