//! The edge↔hub protocol: versioned postcard frames with a length prefix.
//!
//! A frame on the wire is a 4-byte big-endian length followed by that many bytes of postcard.
//! The first frame on a connection's control stream is [`Frame::Hello`]; its layout (variant 0,
//! version first) never changes, so any future hub can read the version and answer with a clear
//! [`Frame::Error`]. New frame kinds are only ever appended to the enum.

use serde::{Deserialize, Serialize};

use crate::alarm::AlarmEvent;
use crate::ids::{EdgeId, PatientId, WardId};
use crate::news2::News2;
use crate::vitals::Reading;

mod legacy;
pub use legacy::AlarmV2;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest edge protocol a hub still serves. Version 1 edges get no [`Frame::Tokens`] and
/// send no ward-view records; edges before version 3 send [`RecordBody::Alarm`] (episodes
/// without versions) and get [`EdgeCommand::Acknowledge`] without a version.
pub const OLDEST_EDGE_PROTOCOL: u16 = 1;

/// ALPN identifier of the protocol on QUIC.
pub const ALPN: &[u8] = b"wardlink/1";

/// Largest frame body accepted, in bytes. Larger length prefixes are refused before any
/// allocation, so a peer cannot make the other side reserve memory it then never fills.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The two lanes. Alarms overtake telemetry: they have their own stream and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Alarm events: small, urgent, never evicted.
    Alarms,
    /// Vital-sign readings: bulky, may be evicted oldest-first under a disk budget.
    Telemetry,
}

impl Lane {
    /// Both lanes, alarms first.
    pub const ALL: [Lane; 2] = [Lane::Alarms, Lane::Telemetry];

    /// A stable small number for storage keys.
    pub fn index(self) -> u8 {
        match self {
            Lane::Alarms => 0,
            Lane::Telemetry => 1,
        }
    }

    /// The inverse of [`Lane::index`].
    pub fn from_index(i: u8) -> Option<Lane> {
        match i {
            0 => Some(Lane::Alarms),
            1 => Some(Lane::Telemetry),
            _ => None,
        }
    }

    /// Every lane's metric label, in [`Lane::ALL`]'s order.
    pub const LABELS: [&'static str; 2] = [Lane::Alarms.label(), Lane::Telemetry.label()];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Lane::Alarms => "alarms",
            Lane::Telemetry => "telemetry",
        }
    }
}

/// What a record carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Postcard numbers variants by position: new ones go last, never between (an older peer's
// `Gap` must stay a `Gap`).
pub enum RecordBody {
    /// A validated reading and the patient's NEWS2 at that moment (telemetry lane).
    Vitals {
        /// The reading.
        reading: Reading,
        /// NEWS2, when every parameter was fresh.
        news2: Option<News2>,
    },
    /// An alarm event of an edge of protocol 1 or 2 (alarm lane): no version, no measures.
    /// Edges of protocol 3 send [`RecordBody::Episode`].
    Alarm(AlarmV2),
    /// A record the edge stored but could not read back (a damaged outbox). It keeps its place
    /// in the lane so the sequence stays contiguous; the hub counts it.
    Unreadable {
        /// The lane of its slot.
        lane: Lane,
        /// What went wrong.
        reason: String,
    },
    /// No record with a seq between `after` and this record's seq (both exclusive) will ever
    /// be sent. The edge writes one when it starts a new boot epoch (records it had forwarded
    /// but not committed before a crash may or may not have arrived; their seqs are never
    /// reused) and when it evicts telemetry for its disk budget (`evicted` records).
    Gap {
        /// The lane of its slot.
        lane: Lane,
        /// The seq this record follows.
        after: u64,
        /// Records discarded (evicted oldest-first under the disk budget); 0 for a new epoch.
        evicted: u64,
    },
    /// A clinician acknowledged an episode on the edge's ward view (alarm lane; protocol 2).
    /// The edge applied it at once; the hub records it as a dashboard acknowledgement.
    Acknowledged {
        /// Episode id.
        alert: String,
        /// Who (the token's `sub`, checked at the edge).
        by: String,
        /// When (edge time, ms since the epoch).
        ts: i64,
    },
    /// A clinician silenced a patient's alarms on the edge's ward view (alarm lane; protocol
    /// 2).
    Silenced {
        /// Whose alarms.
        patient: PatientId,
        /// Start (edge time, ms since the epoch).
        from: i64,
        /// End (edge time, ms since the epoch).
        until: i64,
        /// Who.
        by: String,
        /// Why (audited).
        reason: String,
    },
    /// Someone used the edge's ward view (a session opened, a history read): the hub writes it
    /// into its audit log, the patient pseudonymised (alarm lane; protocol 2).
    Access {
        /// Who (the token's `sub`).
        actor: String,
        /// What (`ws_open`, `history_read`, …).
        action: String,
        /// Whose data, if one patient's.
        patient: Option<PatientId>,
        /// Particulars (no patient identifiers).
        detail: String,
        /// When (edge time, ms since the epoch).
        ts: i64,
    },
    /// The edge texted someone through its local provider while the hub was unreachable
    /// (alarm lane; protocol 2): the hub audits it and does not text that phone about those
    /// alarms again.
    Paged {
        /// The message's idempotency key (stable across the edge's restarts).
        key: String,
        /// The episodes it was about.
        alerts: Vec<String>,
        /// Who (the edge's person id).
        person: String,
        /// Their phone.
        phone: String,
        /// The edge's chain step.
        step: u32,
        /// When the provider accepted it (edge time, ms since the epoch).
        ts: i64,
    },
    /// The episodes open at the edge when it started (alarm lane; protocol 2), after taking up
    /// its saved state: the hub closes any other episode of this edge it still holds open (one
    /// whose raise reached the hub but not the edge's disk before a crash, or one of a state
    /// that could not be read), so none stays open for ever.
    EpisodesOpen {
        /// Episode ids.
        alerts: Vec<String>,
        /// When (edge time, ms since the epoch).
        ts: i64,
    },
    /// An alarm event with its episode's version, current and worst measure, and whether it
    /// is only an update of the values (alarm lane; protocol 3).
    Episode(AlarmEvent),
}

impl RecordBody {
    /// The lane this kind of record travels on.
    pub fn lane(&self) -> Lane {
        match self {
            RecordBody::Vitals { .. } => Lane::Telemetry,
            RecordBody::Alarm(_)
            | RecordBody::Episode(_)
            | RecordBody::Acknowledged { .. }
            | RecordBody::Silenced { .. }
            | RecordBody::Access { .. }
            | RecordBody::Paged { .. }
            | RecordBody::EpisodesOpen { .. } => Lane::Alarms,
            RecordBody::Unreadable { lane, .. } | RecordBody::Gap { lane, .. } => *lane,
        }
    }
}

/// One record of a lane. `seq` is assigned by the edge's outbox and increases along a lane of
/// a stream. Consecutive records have consecutive seqs, except that a [`RecordBody::Gap`]
/// names the seq it follows: a lane is a chain, and the hub refuses a record that does not
/// continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the lane.
    pub seq: u64,
    /// The content.
    pub body: RecordBody,
}

impl Record {
    /// Whether this record may follow `mark`, the last seq the hub stored of its lane and
    /// stream (0: none yet). A stream may start at any seq (the edge deletes what an earlier
    /// stream delivered); after that, the next seq, or a gap whose `after` the hub has reached.
    /// Records at or below `mark` are redeliveries, which the caller skips before asking.
    pub fn continues(&self, mark: u64) -> bool {
        mark == 0
            || self.seq == mark.saturating_add(1)
            || matches!(self.body, RecordBody::Gap { after, .. } if after <= mark && mark < self.seq)
    }
}

/// A decision taken at the hub that the edge must apply (the hub is the source of truth for
/// acknowledgements and silences). Commands are idempotent: applying one twice is harmless,
/// so the hub re-sends whatever the edge has not confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EdgeCommand {
    /// A clinician acknowledged an alarm episode.
    Acknowledge {
        /// Episode id.
        alert: String,
        /// Who acknowledged.
        by: String,
        /// When (hub time).
        ts: i64,
    },
    /// A clinician set a patient's own alarm settings (replacing earlier ones).
    PatientSettings {
        /// Whose.
        patient: PatientId,
        /// The settings.
        settings: crate::alarm::PatientSettings,
        /// Who.
        by: String,
    },
    /// A clinician silenced a patient's alarms.
    Silence {
        /// Whose alarms.
        patient: PatientId,
        /// Start (hub time, ms since the epoch).
        from: i64,
        /// End (hub time, ms since the epoch).
        until: i64,
        /// Who.
        by: String,
        /// Why (audited).
        reason: String,
    },
    /// A clinician acknowledged an alarm episode as of the version they saw (protocol 3;
    /// appended): an edge whose episode has worsened beyond it meanwhile leaves it
    /// unacknowledged.
    AcknowledgeVersion {
        /// Episode id.
        alert: String,
        /// The version acknowledged.
        version: u32,
        /// Who acknowledged.
        by: String,
        /// When (hub time).
        ts: i64,
    },
}

/// Why a peer refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The Hello named a protocol version this hub does not speak.
    UnsupportedVersion,
    /// The Hello's edge id or ward differ from the client certificate.
    IdentityMismatch,
    /// A frame was malformed, too large, or out of order.
    BadFrame,
    /// The peer failed internally; try again later.
    Internal,
}

/// Every message between edge and hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Edge → hub, first frame of the control stream.
    Hello {
        /// [`PROTOCOL_VERSION`] of the edge.
        version: u16,
        /// Must equal the certificate's CN.
        edge: EdgeId,
        /// Must equal the certificate's ward.
        ward: WardId,
        /// The edge's outbox stream: random, chosen when the outbox is created (or replaced).
        /// Seqs count within a stream, so an edge whose disk was replaced starts a new stream
        /// instead of colliding with what the hub already stored.
        stream: u64,
    },
    /// Hub → edge, answer to a good Hello: the highest seq the hub has stored per lane of the
    /// Hello's stream.
    Welcome {
        /// Hub's protocol version.
        version: u16,
        /// `(lane, seq)`: everything up to `seq` is stored; 0 means nothing yet.
        stored: Vec<(Lane, u64)>,
    },
    /// Either way: a refusal; the sender closes after it.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Edge → hub, first frame of a lane stream.
    OpenLane {
        /// Which lane this stream carries.
        lane: Lane,
    },
    /// Edge → hub: records of the stream's lane, in seq order.
    Records {
        /// The records.
        records: Vec<Record>,
    },
    /// Hub → edge: every record of the lane up to `seq` is durably stored.
    Ack {
        /// Highest contiguous stored seq.
        seq: u64,
    },
    /// Keep-alive probe.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Keep-alive answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Hub → edge on the control stream: a command, numbered per edge from 1.
    Command {
        /// Position in the edge's command sequence.
        seq: u64,
        /// What to apply.
        command: EdgeCommand,
    },
    /// Edge → hub on the control stream: every command up to `seq` is applied.
    CommandAck {
        /// Highest applied command.
        seq: u64,
    },
    /// Hub → edge on the control stream (protocol 2): what the edge needs to check dashboard
    /// tokens on its ward view. Sent after the Welcome and again whenever it changes.
    Tokens(TokenKeys),
}

/// The hub's token issuer, audience, public keys and revoked token ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKeys {
    /// The tokens' `iss`.
    pub issuer: String,
    /// The tokens' `aud`.
    pub audience: String,
    /// (key id, Ed25519 public key in PEM): the current key and those of a rollover.
    pub keys: Vec<(String, String)>,
    /// (token id, expiry in seconds since the epoch) of tokens revoked and not yet expired.
    pub revoked: Vec<(String, u64)>,
}

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The length prefix exceeds [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES} byte limit")]
    TooLarge(usize),
    /// The body is not a valid frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes a frame with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(frame, std::mem::take(&mut buf))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    // len <= MAX_FRAME_BYTES < u32::MAX, checked above.
    let prefix = u32::try_from(len).map_err(|_| WireError::TooLarge(len))?;
    buf[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// Reads a length prefix, refusing lengths over the limit.
pub fn body_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body (without the prefix).
pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
    Ok(postcard::from_bytes(body)?)
}

/// Reassembles frames from a byte stream, whatever the chunking (sans-IO: the caller reads
/// the socket and pushes what it got).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if the buffer holds one. An oversized length prefix is an
    /// error as soon as the prefix arrives, before its body is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = body_len(*prefix)?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        frame.map(Some)
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Splits `records` into chunks whose encoded frames stay under the limit.
/// `max_records` caps a frame's record count.
pub fn chunk_records(records: Vec<Record>, max_records: usize) -> Vec<Vec<Record>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0usize;
    for r in records {
        let r_size = postcard::experimental::serialized_size(&r).unwrap_or(MAX_FRAME_BYTES);
        if !current.is_empty()
            && (current.len() >= max_records || size + r_size > MAX_FRAME_BYTES - 64)
        {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += r_size;
        current.push(r);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::{AlertState, Priority};
    use crate::ids::PatientId;
    use crate::vitals::{Acvpu, Vitals};

    fn sample_records() -> Vec<Record> {
        let patient = PatientId::new("bed-3").unwrap();
        let vitals = Vitals {
            hr: Some(181.0),
            spo2: Some(93.5),
            acvpu: Some(Acvpu::V),
            o2: Some(true),
            ..Vitals::default()
        };
        vec![
            Record {
                seq: 1,
                body: RecordBody::Vitals {
                    reading: Reading {
                        patient: patient.clone(),
                        ts: 1_795_694_400_250,
                        vitals,
                    },
                    news2: None,
                },
            },
            Record {
                seq: 2,
                body: RecordBody::Alarm(AlarmV2 {
                    id: "e-0".into(),
                    patient: patient.clone(),
                    kind: "hr_high".into(),
                    priority: Priority::High,
                    state: AlertState::Raised,
                    message: "HR high".into(),
                    values: vitals,
                    ts: 1_795_694_400_250,
                    silenced: false,
                }),
            },
            Record {
                seq: 8,
                body: RecordBody::Episode(AlarmEvent {
                    id: "e-1".into(),
                    patient,
                    kind: "hr_high".into(),
                    priority: Priority::High,
                    state: AlertState::Raised,
                    message: "HR high: 181 /min > 130 (worst 190 /min)".into(),
                    values: vitals,
                    ts: 1_795_694_400_250,
                    silenced: false,
                    version: 2,
                    current: Some(181.0),
                    worst: Some(190.0),
                    update: true,
                }),
            },
            Record {
                seq: 3,
                body: RecordBody::Acknowledged {
                    alert: "e-1".into(),
                    by: "ann".into(),
                    ts: 1_795_694_401_000,
                },
            },
            Record {
                seq: 4,
                body: RecordBody::Silenced {
                    patient: PatientId::new("bed-3").unwrap(),
                    from: 1_795_694_401_000,
                    until: 1_795_694_461_000,
                    by: "ann".into(),
                    reason: "turning the patient".into(),
                },
            },
            Record {
                seq: 5,
                body: RecordBody::Access {
                    actor: "ann".into(),
                    action: "history_read".into(),
                    patient: Some(PatientId::new("bed-3").unwrap()),
                    detail: "ward view of edge-a".into(),
                    ts: 1_795_694_401_000,
                },
            },
            Record {
                seq: 6,
                body: RecordBody::Paged {
                    key: "wardlink-edge-a-page-e-1-0-cn-7".into(),
                    alerts: vec!["e-1".into()],
                    person: "cn-7".into(),
                    phone: "+441632960001".into(),
                    step: 0,
                    ts: 1_795_694_402_000,
                },
            },
            Record {
                seq: 7,
                body: RecordBody::EpisodesOpen {
                    alerts: vec!["e-1".into()],
                    ts: 1_795_694_403_000,
                },
            },
        ]
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                edge: EdgeId::new("edge-a").unwrap(),
                ward: WardId::new("ward-a").unwrap(),
                stream: u64::MAX,
            },
            Frame::Welcome {
                version: 1,
                stored: vec![(Lane::Alarms, 3), (Lane::Telemetry, u64::MAX)],
            },
            Frame::Records {
                records: sample_records(),
            },
            Frame::Ack { seq: 42 },
            Frame::Tokens(TokenKeys {
                issuer: "wardlink-hub".into(),
                audience: "wardlink-dashboard".into(),
                keys: vec![("k1".into(), "-----BEGIN PUBLIC KEY-----".into())],
                revoked: vec![("abc".into(), 1_900_000_000)],
            }),
            Frame::Error {
                code: ErrorCode::BadFrame,
                message: "x".into(),
            },
        ];
        for f in frames {
            let bytes = encode(&f).unwrap();
            let len = body_len(bytes[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(decode(&bytes[4..]).unwrap(), f);
        }
    }

    #[test]
    fn a_lane_is_a_chain() {
        let at = |seq| Record {
            seq,
            body: RecordBody::Unreadable {
                lane: Lane::Telemetry,
                reason: String::new(),
            },
        };
        let gap = |seq, after| Record {
            seq,
            body: RecordBody::Gap {
                lane: Lane::Telemetry,
                after,
                evicted: 0,
            },
        };
        assert!(at(7).continues(0), "a stream starts anywhere");
        assert!(at(8).continues(7));
        assert!(!at(9).continues(7), "a skipped seq is a gap");
        assert!(gap(1 << 40, 7).continues(7));
        // Records the edge forwarded before a crash reached the hub beyond the gap's `after`.
        assert!(gap(1 << 40, 5).continues(7));
        assert!(!gap(1 << 40, 8).continues(7), "the hub lacks seq 8");
    }

    #[test]
    fn hello_layout_is_frozen() {
        // Variant 0, then the version as a varint: a hub of any version can read it.
        let bytes = encode(&Frame::Hello {
            version: 1,
            edge: EdgeId::new("e").unwrap(),
            ward: WardId::new("w").unwrap(),
            stream: 7,
        })
        .unwrap();
        assert_eq!(&bytes[4..], &[0, 1, 1, b'e', 1, b'w', 7]);
    }

    #[test]
    fn oversized_and_garbage_are_errors() {
        assert!(matches!(
            body_len(u32::MAX.to_be_bytes()),
            Err(WireError::TooLarge(_))
        ));
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[]).is_err());
        // A Hello with an id that breaks the id rule is refused by decoding.
        assert!(decode(&[0, 1, 3, b'a', b'/', b'b', 1, b'w']).is_err());
    }

    #[test]
    fn decoder_handles_any_chunking() {
        let frames = vec![
            Frame::Ack { seq: 1 },
            Frame::Records {
                records: sample_records(),
            },
            Frame::Ping { nonce: 9 },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
        for chunk in [1, 2, 3, 7, bytes.len()] {
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames, "chunk size {chunk}");
            assert_eq!(d.pending(), 0);
        }
        let mut d = FrameDecoder::new();
        d.push(&u32::MAX.to_be_bytes());
        assert!(d.next_frame().is_err());
    }

    /// Older peers decode variants by position: the numbers of those they know never move.
    #[test]
    fn variant_numbers_never_move() {
        let tag = |b: RecordBody| postcard::to_allocvec(&b).unwrap()[0];
        let lane = Lane::Alarms;
        assert_eq!(
            tag(RecordBody::Unreadable {
                lane,
                reason: String::new()
            }),
            2
        );
        assert_eq!(
            tag(RecordBody::Gap {
                lane,
                after: 1,
                evicted: 0
            }),
            3
        );
        let acked = RecordBody::Acknowledged {
            alert: String::new(),
            by: String::new(),
            ts: 0,
        };
        assert_eq!(tag(acked), 4);
        assert_eq!(
            tag(RecordBody::EpisodesOpen {
                alerts: Vec::new(),
                ts: 0
            }),
            8
        );
        assert_eq!(
            tag(RecordBody::Episode(
                AlarmV2 {
                    id: String::new(),
                    patient: PatientId::new("p").unwrap(),
                    kind: String::new(),
                    priority: Priority::Low,
                    state: AlertState::Raised,
                    message: String::new(),
                    values: Vitals::default(),
                    ts: 0,
                    silenced: false,
                }
                .into()
            )),
            9
        );
        let command = |c: EdgeCommand| postcard::to_allocvec(&c).unwrap()[0];
        assert_eq!(
            command(EdgeCommand::AcknowledgeVersion {
                alert: String::new(),
                version: 1,
                by: String::new(),
                ts: 0
            }),
            3
        );
        // A protocol-2 alarm event decodes as one of version 0.
        let old = AlarmV2 {
            id: "e-9".into(),
            patient: PatientId::new("p").unwrap(),
            kind: "news2".into(),
            priority: Priority::High,
            state: AlertState::Raised,
            message: "NEWS2 8".into(),
            values: Vitals::default(),
            ts: 5,
            silenced: false,
        };
        let bytes = postcard::to_allocvec(&RecordBody::Alarm(old.clone())).unwrap();
        let Ok(RecordBody::Alarm(back)) = postcard::from_bytes::<RecordBody>(&bytes) else {
            panic!("a protocol-2 alarm must decode");
        };
        let event = AlarmEvent::from(back);
        assert_eq!((event.version, event.message.as_str()), (0, "NEWS2 8"));
        let tokens = postcard::to_allocvec(&Frame::Tokens(TokenKeys::default())).unwrap();
        assert_eq!(tokens[0], 10);
        let ack = postcard::to_allocvec(&Frame::CommandAck { seq: 1 }).unwrap();
        assert_eq!(ack[0], 9);
    }

    #[test]
    fn chunks_respect_count() {
        let mut records = Vec::new();
        for _ in 0..5 {
            records.extend(sample_records());
        }
        records.truncate(10);
        let chunks = chunk_records(records, 4);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
    }
}
