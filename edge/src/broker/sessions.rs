//! The gate's sessions: which connection each device has now (a new one takes over, as MQTT
//! requires), and the persistent sessions devices asked for, kept in `sessions.json` so that
//! they outlive an edge restart.
//!
//! A persistent session matters most for what a device has not seen acknowledged: MQTT clients
//! re-send it only when the CONNACK says the session is present (rumqttc and MQTT 5 clients
//! discard it otherwise). So the session is written to disk before the CONNACK that first
//! grants it, and an edge that crashed still answers "session present" afterwards.
//!
//! A session belongs to a device *and* its patient: when the registry binds the device to
//! another patient, its open connection is ended and its stored session (subscriptions
//! included) is dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use wardlink_shared::{DeviceId, PatientId};

use super::DeviceRegistry;

/// A session stored for a device that asked for one to persist.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    patient: PatientId,
    /// Its subscriptions, restored in rumqttd when it reconnects.
    filters: Vec<String>,
}

#[derive(Debug)]
struct Live {
    id: u64,
    patient: PatientId,
    kick: CancellationToken,
    /// Subscriptions of a session that does not persist.
    filters: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<DeviceId, Live>,
    stored: BTreeMap<DeviceId, Stored>,
}

impl Inner {
    fn subscribers(&self) -> usize {
        let live = self.live.values().filter(|l| !l.filters.is_empty());
        let stored = self.stored.values().filter(|s| !s.filters.is_empty());
        live.count() + stored.count()
    }
}

/// Every device's session.
#[derive(Debug)]
pub struct Sessions {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Serialises writes of the file (each writes the latest state).
    saving: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    subscribers: AtomicUsize,
}

/// What a connecting device finds.
#[derive(Debug)]
pub struct Opened {
    /// This connection's id among the device's connections.
    pub id: u64,
    /// Cancelled when the connection must end (taken over, device rebound, edge stopping).
    pub kick: CancellationToken,
    /// The CONNACK's "session present".
    pub present: bool,
    /// The stored session's subscriptions, to restore.
    pub filters: Vec<String>,
    /// The device had subscriptions in a session that ends now: rumqttd must forget them.
    pub wipe: bool,
}

/// A session could not be written to disk.
#[derive(Debug, thiserror::Error)]
#[error("sessions file {path}: {source}")]
pub struct SessionsError {
    path: String,
    source: std::io::Error,
}

impl Sessions {
    /// The sessions stored at `path` (none if it does not exist; an unreadable file is logged
    /// and set aside: devices then start clean sessions).
    pub fn load(path: PathBuf) -> Self {
        let stored: BTreeMap<DeviceId, Stored> = crate::state_file::load_or_default(
            &path,
            "sessions file unreadable; devices start new sessions",
        );
        let inner = Inner {
            live: HashMap::new(),
            stored,
        };
        let subscribers = AtomicUsize::new(inner.subscribers());
        Self {
            path,
            inner: Mutex::new(inner),
            saving: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            subscribers,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Devices that subscribe (connected or with a stored session): while there are none,
    /// readings need not be published into rumqttd.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    fn changed(&self, inner: &Inner) {
        self.subscribers
            .store(inner.subscribers(), Ordering::Relaxed);
    }

    /// Registers a connection of `device` (bound to `patient`): ends its previous connection
    /// and resolves its stored session. `clean` discards a stored session (3.1.1 clean
    /// session, 5 Clean Start); `persistent` keeps the session after this connection (3.1.1
    /// without clean session, 5 with a session expiry). A session granted now is on disk
    /// before this returns.
    pub async fn open(
        &self,
        device: &DeviceId,
        patient: &PatientId,
        clean: bool,
        persistent: bool,
    ) -> Result<Opened, SessionsError> {
        let kick = CancellationToken::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (present, filters, wipe, save) = {
            let mut g = self.lock();
            let live = Live {
                id,
                patient: patient.clone(),
                kick: kick.clone(),
                filters: Vec::new(),
            };
            if let Some(previous) = g.live.insert(device.clone(), live) {
                previous.kick.cancel();
            }
            let (present, filters, wipe, mut save) = match g.stored.get(device) {
                Some(s) if !clean && s.patient == *patient => {
                    (true, s.filters.clone(), false, false)
                }
                Some(_) => {
                    let wipe = g
                        .stored
                        .remove(device)
                        .is_some_and(|s| !s.filters.is_empty());
                    (false, Vec::new(), wipe, true)
                }
                None => (false, Vec::new(), false, false),
            };
            if present && !persistent {
                // Resumed for this connection only (MQTT 5 without a session expiry): its
                // subscriptions live with the connection from now on.
                if let (Some(s), Some(l)) = (g.stored.remove(device), g.live.get_mut(device)) {
                    l.filters = s.filters;
                }
                save = true;
            }
            if persistent && !present {
                let stored = Stored {
                    patient: patient.clone(),
                    filters: Vec::new(),
                };
                g.stored.insert(device.clone(), stored);
                save = true;
            }
            self.changed(&g);
            (present, filters, wipe, save)
        };
        if save {
            self.save().await?;
        }
        Ok(Opened {
            id,
            kick,
            present,
            filters,
            wipe,
        })
    }

    /// Connection `id` of `device` subscribed to `filters` (already checked); a persistent
    /// session keeps them on disk.
    pub async fn subscribed(
        &self,
        device: &DeviceId,
        id: u64,
        filters: &[&str],
    ) -> Result<(), SessionsError> {
        let save = {
            let mut g = self.lock();
            let Inner { live, stored } = &mut *g;
            let Some(l) = live.get_mut(device).filter(|l| l.id == id) else {
                return Ok(());
            };
            let list = match stored.get_mut(device) {
                Some(s) => &mut s.filters,
                None => &mut l.filters,
            };
            let before = list.len();
            for f in filters {
                if !list.iter().any(|x| x == f) {
                    list.push((*f).to_owned());
                }
            }
            let grew = list.len() != before;
            let save = grew && stored.contains_key(device);
            self.changed(&g);
            save
        };
        if save {
            self.save().await?;
        }
        Ok(())
    }

    /// Connection `id` of `device` ended.
    pub fn closed(&self, device: &DeviceId, id: u64) {
        let mut g = self.lock();
        if g.live.get(device).is_some_and(|l| l.id == id) {
            g.live.remove(device);
            self.changed(&g);
        }
    }

    /// Applies the registry as it is now: ends the connections of devices bound to another
    /// patient (or removed), and drops their stored sessions. Returns the devices whose
    /// subscriptions rumqttd must forget.
    pub async fn apply(&self, registry: &DeviceRegistry) -> Result<Vec<DeviceId>, SessionsError> {
        let (wipe, save) = {
            let mut g = self.lock();
            let bound = |d: &DeviceId, p: &PatientId| registry.patient_of(d).as_ref() == Some(p);
            let mut wipe = Vec::new();
            let rebound: Vec<DeviceId> = g
                .live
                .iter()
                .filter(|(d, l)| !bound(d, &l.patient))
                .map(|(d, _)| d.clone())
                .collect();
            for d in rebound {
                if let Some(l) = g.live.remove(&d) {
                    tracing::warn!(device = %d, "device bound to another patient or removed; its connection is closed");
                    l.kick.cancel();
                    if !l.filters.is_empty() {
                        wipe.push(d);
                    }
                }
            }
            let stale: Vec<DeviceId> = g
                .stored
                .iter()
                .filter(|(d, s)| !bound(d, &s.patient))
                .map(|(d, _)| d.clone())
                .collect();
            for d in &stale {
                if g.stored.remove(d).is_some_and(|s| !s.filters.is_empty()) {
                    wipe.push(d.clone());
                }
            }
            self.changed(&g);
            (wipe, !stale.is_empty())
        };
        if save {
            self.save().await?;
        }
        Ok(wipe)
    }

    /// Writes the stored sessions (atomically; each writer writes the latest state).
    async fn save(&self) -> Result<(), SessionsError> {
        let _turn = self.saving.lock().await;
        let bytes = serde_json::to_vec(&self.lock().stored).map_err(|e| SessionsError {
            path: self.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        let path = self.path.clone();
        let written =
            tokio::task::spawn_blocking(move || wardlink_io::fs::write_atomic(&path, &bytes))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
        written.map_err(|source| SessionsError {
            path: self.path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn patient(s: &str) -> PatientId {
        PatientId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_persistent_session_outlives_a_restart_and_a_takeover_ends_the_old_connection()
    -> Result<(), SessionsError> {
        let dir = tempfile::tempdir().map_err(|source| SessionsError {
            path: String::new(),
            source,
        })?;
        let path = dir.path().join("sessions.json");
        let sessions = Sessions::load(path.clone());
        let (dev, bed) = (id("mon-1"), patient("bed-1"));
        let first = sessions.open(&dev, &bed, false, true).await?;
        assert!(!first.present);
        sessions
            .subscribed(&dev, first.id, &["patients/bed-1/#"])
            .await?;
        assert_eq!(sessions.subscribers(), 1);
        let second = sessions.open(&dev, &bed, false, true).await?;
        assert!(first.kick.is_cancelled(), "taken over");
        assert!(second.present && !second.kick.is_cancelled());
        sessions.closed(&dev, first.id);
        sessions.closed(&dev, second.id);

        let restarted = Sessions::load(path);
        assert_eq!(restarted.subscribers(), 1);
        let again = restarted.open(&dev, &bed, false, true).await?;
        assert!(again.present);
        assert_eq!(again.filters, vec!["patients/bed-1/#".to_owned()]);
        // The same device now measuring another patient: a clean start, and rumqttd must
        // forget what the old session subscribed to.
        let moved = restarted.open(&dev, &patient("bed-9"), false, true).await?;
        assert!(!moved.present && moved.filters.is_empty() && moved.wipe);
        // MQTT 5 Clean Start with a session expiry: a new session, kept afterwards.
        let fresh = restarted.open(&dev, &patient("bed-9"), true, true).await?;
        assert!(!fresh.present);
        assert!(
            restarted
                .open(&dev, &patient("bed-9"), false, true)
                .await?
                .present
        );
        // A clean session (3.1.1) removes a stored one.
        let clean = restarted.open(&dev, &patient("bed-9"), true, false).await?;
        assert!(!clean.present);
        assert!(
            !restarted
                .open(&dev, &patient("bed-9"), false, false)
                .await?
                .present
        );
        assert_eq!(restarted.subscribers(), 0);
        Ok(())
    }
}
