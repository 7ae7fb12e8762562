//! The gate must never read a packet differently from the broker behind it: that is how a
//! SUBSCRIBE the gate read as one harmless filter once reached rumqttd as `#`. This checks the
//! gate's parser (`wardlink_shared::mqtt`) against an implementation nobody here wrote,
//! rumqttc's codec (MQTT 3.1.1 and 5), as an oracle: on packets rumqttc writes, and on those
//! packets mutated (bytes flipped, cut, lengths changed), wherever both parsers accept a
//! packet they must agree on its length and on every field the gate acts on.
//!
//! The same comparison runs under `cargo fuzz` (`fuzz/fuzz_targets/mqtt_oracle.rs`) on inputs
//! libFuzzer finds; this test keeps a deterministic share of it in every run.

mod oracle;

use bytes::BytesMut;
use oracle::{MAX, Tally, compare};
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::{QoS, v4::Packet as V4};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{self, Packet as V5};
use wardlink_shared::mqtt::{LEVEL_V4, LEVEL_V5};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    fn qos(&mut self) -> QoS {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][self.below(3)]
    }

    fn qos5(&mut self) -> QoS5 {
        [QoS5::AtMostOnce, QoS5::AtLeastOnce, QoS5::ExactlyOnce][self.below(3)]
    }

    fn pkid(&mut self) -> u16 {
        1 + self.below(65_000) as u16
    }
}

/// Pieces of topics and filters, the awkward ones included.
const LEVELS: [&str; 10] = [
    "patients", "p1", "vitals", "+", "#", "$SYS", "", "a\u{0}b", "é", "status",
];

fn topic(rng: &mut Rng) -> String {
    let n = 1 + rng.below(4);
    (0..n)
        .map(|_| rng.pick(&LEVELS))
        .collect::<Vec<_>>()
        .join("/")
}

fn v4_packet(rng: &mut Rng) -> Vec<u8> {
    let packet = match rng.below(5) {
        0 => {
            let mut c = v4::Connect::new(rng.pick(&["mon-1", "", "a/b", "wardlink-x"]));
            c.keep_alive = rng.below(3) as u16 * 30;
            c.clean_session = rng.below(2) == 0;
            if rng.below(2) == 0 {
                c.set_login(rng.pick(&["mon-1", "u"]), rng.pick(&["pw", ""]));
            }
            if rng.below(2) == 0 {
                c.last_will = Some(v4::LastWill::new(topic(rng), "gone", rng.qos(), false));
            }
            V4::Connect(c)
        }
        1 | 2 => {
            let mut p = v4::Publish::new(topic(rng), rng.qos(), vec![b'x'; rng.below(40)]);
            p.pkid = if p.qos == QoS::AtMostOnce {
                0
            } else {
                rng.pkid()
            };
            V4::Publish(p)
        }
        3 => {
            let filters = (0..1 + rng.below(3))
                .map(|_| v4::SubscribeFilter::new(topic(rng), rng.qos()))
                .collect::<Vec<_>>();
            let mut s = v4::Subscribe::new_many(filters);
            s.pkid = rng.pkid();
            V4::Subscribe(s)
        }
        _ => V4::PubRel(v4::PubRel::new(rng.pkid())),
    };
    let mut out = BytesMut::new();
    let _ = packet.write(&mut out, MAX);
    out.to_vec()
}

fn v5_packet(rng: &mut Rng) -> Vec<u8> {
    let packet = match rng.below(4) {
        0 => {
            let props = (rng.below(2) == 0).then(|| v5::ConnectProperties {
                session_expiry_interval: Some(rng.below(100) as u32),
                receive_maximum: Some(10),
                max_packet_size: None,
                topic_alias_max: Some(5),
                request_response_info: None,
                request_problem_info: None,
                user_properties: vec![("k".into(), "v".into())],
                authentication_method: None,
                authentication_data: None,
            });
            let connect = v5::Connect {
                keep_alive: 60,
                client_id: rng.pick(&["mon-1", "", "a/b"]).into(),
                clean_start: rng.below(2) == 0,
                properties: props,
            };
            let login = (rng.below(2) == 0).then(|| v5::Login::new("mon-1", "pw"));
            let will = (rng.below(2) == 0)
                .then(|| v5::LastWill::new(topic(rng), "gone", rng.qos5(), false, None));
            V5::Connect(connect, will, login)
        }
        1 | 2 => {
            let props = (rng.below(2) == 0).then(|| v5::PublishProperties {
                payload_format_indicator: Some(1),
                topic_alias: Some(1 + rng.below(20) as u16),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            });
            let mut p = v5::Publish::new(topic(rng), rng.qos5(), vec![b'y'; rng.below(40)], props);
            p.pkid = if p.qos == QoS5::AtMostOnce {
                0
            } else {
                rng.pkid()
            };
            V5::Publish(p)
        }
        _ => {
            let filters = (0..1 + rng.below(3))
                .map(|_| v5::Filter::new(topic(rng), rng.qos5()))
                .collect::<Vec<_>>();
            let mut s = v5::Subscribe::new_many(filters, None);
            s.pkid = rng.pkid();
            V5::Subscribe(s)
        }
    };
    let mut out = BytesMut::new();
    let _ = packet.write(&mut out, Some(MAX as u32));
    out.to_vec()
}

fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes[i] ^= 1 << rng.below(8),
            1 => bytes[i] = rng.next() as u8,
            2 => bytes.truncate(i.max(1)),
            _ => bytes.insert(i, rng.next() as u8),
        }
    }
    bytes
}

#[test]
fn the_gate_and_rumqttc_read_every_packet_alike() {
    let rounds: usize = std::env::var("WARDLINK_ORACLE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (level, make) in [
        (LEVEL_V4, v4_packet as fn(&mut Rng) -> Vec<u8>),
        (LEVEL_V5, v5_packet),
    ] {
        let mut tally = Tally::default();
        for _ in 0..rounds {
            let valid = make(&mut rng);
            compare(level, &valid, &mut tally);
            let mutated = mutate(&mut rng, valid);
            compare(level, &mutated, &mut tally);
        }
        eprintln!("level {level}: {tally:?}");
        assert!(
            tally.both > rounds / 2,
            "level {level}: too few packets both read: {tally:?}"
        );
    }
}
