//! The audit log: who did what, when, to which (pseudonymised) patient.
//!
//! Entries are appended by the store's writer in the same transaction as the action they
//! record, so an acknowledgement is never stored without its audit entry or the other way
//! round. Each entry carries the SHA-256 hash of the previous one (`prev`) and its own
//! (`hash`, over its JSON with `hash` empty): editing, deleting or reordering an entry breaks
//! the chain, which `wardlink-cloud audit verify` finds in an export. Cutting entries off the
//! end is not detectable from the log alone.
//!
//! Patients appear only as `v{version}:{HMAC-SHA256(key, id)}` (first 16 bytes, hex), with a
//! key kept outside the data directory (`[audit] hmac_key`), so an export reveals no patient id
//! and pseudonyms can be linked only with the key.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry, as stored and exported (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 1 without gaps.
    pub seq: u64,
    /// Hub time, RFC 3339.
    pub ts: String,
    /// Who: a user (`sub` of the token), or `edge:ID` for alarm state changes an edge raised.
    pub actor: String,
    /// What: `ws_open`, `ws_close`, `alarm_raised`, `alarm_escalated`, `alarm_acknowledged`,
    /// `alarm_resolved`, `silence`, `settings`.
    pub action: String,
    /// The ward concerned, if any.
    pub ward: Option<String>,
    /// The patient's pseudonym, if a patient is concerned.
    pub patient: Option<String>,
    /// What the action was on (an alarm episode id, a role), if anything.
    pub subject: Option<String>,
    /// Free detail without patient identity (an alarm's kind and priority, a silence's
    /// length and reason).
    pub detail: Option<String>,
    /// Hash of the previous entry.
    pub prev: String,
    /// SHA-256 of this entry's JSON with `hash` empty, hex.
    pub hash: String,
}

impl Entry {
    /// An unsealed entry by the notifier (no ward or patient: those are in the alarm's own
    /// entries), to be sealed by the store.
    pub fn notifier(action: &str, subject: Option<String>, detail: String) -> Entry {
        Entry {
            seq: 0,
            ts: String::new(),
            actor: "notifier".into(),
            action: action.into(),
            ward: None,
            patient: None,
            subject,
            detail: Some(detail),
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// The hash this entry must carry.
    pub fn digest(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.hash.clear();
        // A struct serialises in field order: the text is canonical.
        let text = serde_json::to_vec(&unsealed).unwrap_or_default();
        hex(ring::digest::digest(&ring::digest::SHA256, &text).as_ref())
    }

    /// Sets `seq` and `prev` from the entry before (none: the first) and seals the entry.
    pub fn seal(mut self, before: Option<(u64, &str)>) -> Entry {
        let (seq, prev) = before.map_or((1, GENESIS), |(s, h)| (s + 1, h));
        self.seq = seq;
        self.prev = prev.to_owned();
        self.hash = self.digest();
        self
    }
}

/// Builds patient pseudonyms.
pub struct Pseudonymiser {
    key: ring::hmac::Key,
    version: u32,
}

impl Pseudonymiser {
    /// A pseudonymiser with `key` (32 bytes or more), labelled `version`.
    pub fn new(key: &[u8], version: u32) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            version,
        }
    }

    /// `v{version}:{hex of the first 16 bytes of HMAC-SHA256(key, patient)}`.
    pub fn pseudonym(&self, patient: &str) -> String {
        let tag = ring::hmac::sign(&self.key, patient.as_bytes());
        format!("v{}:{}", self.version, hex(&tag.as_ref()[..16]))
    }

    /// Reads the key at `path`, creating a random one (readable by the owner only) if there
    /// is none.
    pub fn load_or_create(path: &Path, version: u32) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(key) if key.len() >= 32 => Ok(Self::new(&key, version)),
            Ok(_) => Err(std::io::Error::other(format!(
                "{}: an audit key must be at least 32 bytes",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::RngExt::random(&mut rand::rng());
                wardlink_io::fs::write_atomic(path, &key)?;
                #[cfg(unix)]
                std::fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )?;
                tracing::warn!(path = %path.display(), "created a new audit pseudonym key");
                Ok(Self::new(&key, version))
            }
            Err(e) => Err(e),
        }
    }
}

/// Why a log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// A line is not an entry.
    #[error("line {line}: not an audit entry: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// Parser message.
        reason: String,
    },
    /// An entry's content does not match its hash (it was edited).
    #[error("entry {seq} (line {line}): content does not match its hash")]
    Modified {
        /// Line.
        line: usize,
        /// Its seq.
        seq: u64,
    },
    /// An entry does not follow the one before it (one was deleted, inserted or moved).
    #[error(
        "entry {seq} (line {line}): does not follow entry {after} (deleted, inserted or reordered)"
    )]
    Unchained {
        /// Line.
        line: usize,
        /// Its seq.
        seq: u64,
        /// The seq of the entry before it in the file.
        after: u64,
    },
    /// An anchored entry is not in the export: the log was cut short, or the export does not
    /// cover the anchor's time.
    #[error("anchored entry {seq} is missing (the export ends at {last:?}): entries were cut off")]
    AnchorMissing {
        /// The anchor's seq.
        seq: u64,
        /// The export's last seq.
        last: Option<u64>,
    },
    /// An anchored entry has another hash: the log was rewritten from there on.
    #[error("entry {seq} does not match its anchor: the log was rewritten")]
    AnchorMismatch {
        /// The anchor's seq.
        seq: u64,
    },
}

/// A chain head recorded outside the hub (from the hub's log or `GET /api/audit/head`): the
/// entry `seq` had hash `hash`. An export checked against it must reach that entry and agree
/// on its hash, so entries cut off the end of the log since the anchor are detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The entry's seq.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    /// `SEQ:HASH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: an anchor is SEQ:HASH"))?;
        let seq = seq
            .parse()
            .map_err(|_| format!("{seq:?}: the anchor's seq must be a number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hash:?}: the anchor's hash must be 64 hex digits"));
        }
        Ok(Anchor {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// [`verify`], and each anchor's entry is in the export with the anchored hash.
pub fn verify_anchored(text: &str, anchors: &[Anchor]) -> Result<usize, Broken> {
    let n = verify(text)?;
    for anchor in anchors {
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .find(|e| e.seq == anchor.seq);
        match found {
            Some(e) if e.hash == anchor.hash => {}
            Some(_) => return Err(Broken::AnchorMismatch { seq: anchor.seq }),
            None => {
                return Err(Broken::AnchorMissing {
                    seq: anchor.seq,
                    last: text
                        .lines()
                        .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
                        .map(|e| e.seq)
                        .next_back(),
                });
            }
        }
    }
    Ok(n)
}

/// Checks an NDJSON export: every entry's hash, and that each follows the one before. An export
/// may start anywhere in the log (a time filter): its first entry is taken as given. Returns
/// the number of entries.
pub fn verify(text: &str) -> Result<usize, Broken> {
    let mut before: Option<(u64, String)> = None;
    let mut n = 0;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_no = i + 1;
        let entry: Entry = serde_json::from_str(line).map_err(|e| Broken::Malformed {
            line: line_no,
            reason: e.to_string(),
        })?;
        if entry.digest() != entry.hash {
            return Err(Broken::Modified {
                line: line_no,
                seq: entry.seq,
            });
        }
        if let Some((seq, hash)) = &before
            && (entry.seq != seq + 1 || entry.prev != *hash)
        {
            return Err(Broken::Unchained {
                line: line_no,
                seq: entry.seq,
                after: *seq,
            });
        }
        if before.is_none() && entry.seq == 1 && entry.prev != GENESIS {
            return Err(Broken::Unchained {
                line: line_no,
                seq: 1,
                after: 0,
            });
        }
        before = Some((entry.seq, entry.hash));
        n += 1;
    }
    Ok(n)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64) -> Vec<String> {
        let p = Pseudonymiser::new(&[7u8; 32], 1);
        let mut before: Option<(u64, String)> = None;
        let mut lines = Vec::new();
        for i in 0..n {
            let e = Entry {
                seq: 0,
                ts: format!("2026-11-26T12:00:0{i}.000Z"),
                actor: "ann".into(),
                action: "alarm_acknowledged".into(),
                ward: Some("ward-a".into()),
                patient: Some(p.pseudonym("bed-01")),
                subject: Some(format!("edge-a-{i}")),
                detail: None,
                prev: String::new(),
                hash: String::new(),
            }
            .seal(before.as_ref().map(|(s, h)| (*s, h.as_str())));
            before = Some((e.seq, e.hash.clone()));
            lines.push(serde_json::to_string(&e).unwrap());
        }
        lines
    }

    #[test]
    fn an_intact_log_verifies_and_any_tampering_is_found() {
        let lines = log(5);
        assert_eq!(verify(&lines.join("\n")), Ok(5));
        // An export from the middle verifies too.
        assert_eq!(verify(&lines[2..].join("\n")), Ok(3));

        let mut modified = lines.clone();
        modified[2] = modified[2].replace("\"ann\"", "\"bob\"");
        assert!(matches!(
            verify(&modified.join("\n")),
            Err(Broken::Modified { seq: 3, .. })
        ));

        let mut deleted = lines.clone();
        deleted.remove(2);
        assert!(matches!(
            verify(&deleted.join("\n")),
            Err(Broken::Unchained {
                seq: 4,
                after: 2,
                ..
            })
        ));

        let mut reordered = lines.clone();
        reordered.swap(1, 2);
        assert!(matches!(
            verify(&reordered.join("\n")),
            Err(Broken::Unchained { .. })
        ));

        // Rewriting a record and re-sealing it still breaks the link to the next one.
        let mut forged: Vec<Entry> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        forged[1].actor = "mallory".into();
        forged[1].hash = forged[1].digest();
        let text: Vec<String> = forged
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert!(matches!(
            verify(&text.join("\n")),
            Err(Broken::Unchained { seq: 3, .. })
        ));

        assert!(matches!(
            verify("{not json"),
            Err(Broken::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_versioned() {
        let a = Pseudonymiser::new(&[1u8; 32], 1);
        let b = Pseudonymiser::new(&[2u8; 32], 2);
        assert_eq!(a.pseudonym("bed-01"), a.pseudonym("bed-01"));
        assert_ne!(a.pseudonym("bed-01"), a.pseudonym("bed-02"));
        assert_ne!(a.pseudonym("bed-01")[3..], b.pseudonym("bed-01")[3..]);
        assert!(a.pseudonym("bed-01").starts_with("v1:"));
        assert!(b.pseudonym("bed-01").starts_with("v2:"));
        assert!(!a.pseudonym("bed-01").contains("bed"));
        assert_eq!(a.pseudonym("bed-01").len(), 3 + 32);
    }
}
