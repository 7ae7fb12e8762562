//! The local pages, kept in `local_pages.json` (small: a message per alarm, step and person
//! while the hub is away), written atomically whenever they change.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Pages done with (sent, failed, cancelled) are kept this long, so their keys still stop a
/// second message for the same step.
const KEEP_MS: i64 = 24 * 3_600_000;

/// One message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Idempotency key: edge, episode, step, person.
    pub key: String,
    /// The episode.
    pub alert: String,
    /// The chain step.
    pub step: u32,
    /// Person id.
    pub person: String,
    /// Their phone.
    pub phone: String,
    /// The text.
    pub body: String,
    /// When queued (ms, edge clock).
    pub queued_at: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before (ms).
    pub next_attempt: i64,
    /// Where it stands.
    pub state: PageState,
}

/// A message's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PageState {
    /// Waiting for an attempt.
    Pending,
    /// An attempt is in flight (pending again after a restart).
    Sending,
    /// Accepted by the provider.
    Sent {
        /// The provider's id.
        sid: String,
        /// When (ms).
        at: i64,
    },
    /// Given up.
    Failed {
        /// The last error.
        error: String,
    },
    /// Not sent: its alarm was answered or is over.
    Cancelled,
}

/// The pages, and whether they changed since the last save.
pub struct Pages {
    path: PathBuf,
    pages: Vec<Page>,
    dirty: bool,
}

impl Pages {
    /// The pages saved at `path`; an attempt in flight when the edge stopped is due again.
    pub fn load(path: PathBuf) -> Self {
        let mut pages: Vec<Page> = crate::state_file::load_or_default(
            &path,
            "local pages unreadable: a message sent before may be sent again",
        );
        for p in &mut pages {
            if p.state == PageState::Sending {
                p.state = PageState::Pending;
            }
        }
        Self {
            path,
            pages,
            dirty: false,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pages.iter().any(|p| p.key == key)
    }

    pub fn push(&mut self, page: Page) {
        self.pages.push(page);
        self.dirty = true;
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Page> {
        self.pages.iter_mut().find(|p| p.key == key)
    }

    /// Marks a change made through [`Pages::get_mut`].
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Messages waiting for an attempt.
    pub fn pending(&self) -> usize {
        self.pages
            .iter()
            .filter(|p| matches!(p.state, PageState::Pending | PageState::Sending))
            .count()
    }

    /// Cancels the waiting messages `answered` picks; how many.
    pub fn cancel_where(&mut self, answered: impl Fn(&Page) -> bool) -> u64 {
        let mut n = 0;
        for p in &mut self.pages {
            if p.state == PageState::Pending && answered(p) {
                p.state = PageState::Cancelled;
                n += 1;
            }
        }
        self.dirty |= n > 0;
        n
    }

    /// Up to `room` messages due at `now`, marked in flight.
    pub fn due(&mut self, now: i64, room: usize) -> Vec<Page> {
        let mut out = Vec::new();
        for p in &mut self.pages {
            if out.len() >= room {
                break;
            }
            if p.state == PageState::Pending && p.next_attempt <= now {
                p.state = PageState::Sending;
                out.push(p.clone());
            }
        }
        self.dirty |= !out.is_empty();
        out
    }

    /// Forgets messages done with for a day whose alarm is no longer open (while it is, its
    /// keys stop a second text for a step already sent).
    pub fn prune(&mut self, now: i64, open: impl Fn(&str) -> bool) {
        let before = self.pages.len();
        self.pages.retain(|p| {
            matches!(p.state, PageState::Pending | PageState::Sending)
                || now - p.queued_at < KEEP_MS
                || open(&p.alert)
        });
        self.dirty |= self.pages.len() != before;
    }

    /// Writes the pages if they changed (logged if the disk refuses: the messages are still
    /// sent, but a restart could send one again).
    pub async fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let path = self.path.clone();
        let Ok(bytes) = serde_json::to_vec_pretty(&self.pages) else {
            return;
        };
        let saved =
            tokio::task::spawn_blocking(move || wardlink_io::fs::write_atomic(&path, &bytes)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::error!("local pages not saved: after a restart a message could be sent twice");
            self.dirty = true;
        }
    }
}
