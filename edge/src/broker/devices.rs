//! The device registry: which devices may connect, bound to which patient, with which password.
//!
//! Stored as `devices.json` in the data directory, written atomically (temporary file, fsync,
//! rename) by `wardlink-edge device add`, and re-read by the running edge whenever the file
//! changes, so a new device can connect within seconds without a restart. Passwords are stored
//! only as Argon2id PHC strings ([`super::kdf`]: the parameters, and why).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use wardlink_shared::{DeviceId, PatientId};

use super::kdf;

/// A registry problem.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Reading or writing the file failed.
    #[error("device registry {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid registry.
    #[error("device registry {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The device id is reserved for the edge's own links.
    #[error("device ids starting with {0:?} are reserved")]
    Reserved(&'static str),
    /// The registry holds as many devices as the broker admits.
    #[error(
        "the edge admits at most {0} devices (mqtt.max_devices); remove one or raise the limit"
    )]
    Full(usize),
    /// The same device twice in one batch.
    #[error("device {0} is listed twice")]
    Duplicate(DeviceId),
    /// Hashing failed.
    #[error("cannot hash password: {0}")]
    Hash(String),
}

/// One registered device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// MQTT username and client id.
    pub id: DeviceId,
    /// The patient this device measures.
    pub patient: PatientId,
    /// Argon2id PHC string of the password.
    pub password_hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    devices: Vec<DeviceEntry>,
}

/// Adds (or re-keys) a device and returns its new password. Used by `device add`.
///
/// `capacity` is `mqtt.max_devices`: the registry never holds more devices than the broker
/// admits at once, so an authenticated connection can never be turned away by rumqttd's
/// router (which would corrupt its state; see [`super`]).
pub fn add_device(
    path: &Path,
    id: DeviceId,
    patient: PatientId,
    capacity: usize,
) -> Result<String, RegistryError> {
    if id.as_str().starts_with(super::RESERVED_PREFIX) {
        return Err(RegistryError::Reserved(super::RESERVED_PREFIX));
    }
    let mut file = read_file(path)?.unwrap_or_default();
    let known = file.devices.iter().any(|d| d.id == id);
    if !known && file.devices.len() >= capacity {
        return Err(RegistryError::Full(capacity));
    }
    let (password, password_hash) = new_credentials()?;
    file.devices.retain(|d| d.id != id);
    file.devices.push(DeviceEntry {
        id,
        patient,
        password_hash,
    });
    write_file(path, &file)?;
    Ok(password)
}

/// Adds (or re-keys) many devices with one write of the registry, hashing on every core;
/// returns their new passwords in order. For provisioning a ward (and the load generator):
/// [`add_device`] once per device rewrites the file each time.
pub fn add_devices(
    path: &Path,
    devices: &[(DeviceId, PatientId)],
    capacity: usize,
) -> Result<Vec<String>, RegistryError> {
    if devices
        .iter()
        .any(|(id, _)| id.as_str().starts_with(super::RESERVED_PREFIX))
    {
        return Err(RegistryError::Reserved(super::RESERVED_PREFIX));
    }
    let mut ids = std::collections::HashSet::with_capacity(devices.len());
    if let Some((id, _)) = devices.iter().find(|(id, _)| !ids.insert(id)) {
        return Err(RegistryError::Duplicate(id.clone()));
    }
    let mut file = read_file(path)?.unwrap_or_default();
    file.devices.retain(|d| !ids.contains(&d.id));
    if file.devices.len() + devices.len() > capacity {
        return Err(RegistryError::Full(capacity));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = devices.len().div_ceil(threads).max(1);
    let credentials: Vec<Result<Vec<(String, String)>, RegistryError>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = devices
                .chunks(chunk)
                .map(|part| scope.spawn(|| part.iter().map(|_| new_credentials()).collect()))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(RegistryError::Hash("hashing thread panicked".into()))
                    })
                })
                .collect()
        });
    let mut passwords = Vec::with_capacity(devices.len());
    let mut pairs = devices.iter();
    for part in credentials {
        for (password, password_hash) in part? {
            let Some((id, patient)) = pairs.next() else {
                break;
            };
            file.devices.push(DeviceEntry {
                id: id.clone(),
                patient: patient.clone(),
                password_hash,
            });
            passwords.push(password);
        }
    }
    write_file(path, &file)?;
    Ok(passwords)
}

/// Verifies `pass` against a hash no password matches, made with [`kdf::hasher`]'s parameters
/// (those of every hash the edge writes), so that an unknown device costs what a wrong
/// password costs.
fn decoy(pass: &str) {
    static DECOY: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| kdf::new_credentials().ok().map(|(_, hash)| hash));
    if let Some(hash) = DECOY.as_deref() {
        let _ = kdf::verify(pass.as_bytes(), hash);
    }
}

/// A new password and its Argon2id PHC string.
fn new_credentials() -> Result<(String, String), RegistryError> {
    kdf::new_credentials().map_err(RegistryError::Hash)
}

fn read_file(path: &Path) -> Result<Option<RegistryFile>, RegistryError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                path: path.into(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn write_file(path: &Path, file: &RegistryFile) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.into(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| RegistryError::Corrupt {
        path: path.into(),
        reason: e.to_string(),
    })?;
    wardlink_io::fs::write_atomic(path, &bytes).map_err(io)
}

/// The running edge's view of the registry, reloaded when the file's mtime changes.
#[derive(Debug)]
pub struct DeviceRegistry {
    path: PathBuf,
    capacity: usize,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    mtime: Option<SystemTime>,
    /// Each device with its position in the file.
    devices: HashMap<DeviceId, (usize, DeviceEntry)>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// Client id breaks the id rule (e.g. contains `/`, `#`, `+`, `$`).
    BadClientId,
    /// Client id differs from the username.
    ClientIdMismatch,
    /// No such device.
    UnknownDevice,
    /// Wrong password.
    BadPassword,
    /// Registered beyond `mqtt.max_devices` (the file was written with a higher limit).
    OverCapacity,
}

impl AuthRefusal {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            AuthRefusal::BadClientId => "bad_client_id",
            AuthRefusal::ClientIdMismatch => "client_id_mismatch",
            AuthRefusal::UnknownDevice => "unknown_device",
            AuthRefusal::BadPassword => "bad_password",
            AuthRefusal::OverCapacity => "over_capacity",
        }
    }

    /// Every label.
    pub const LABELS: [&'static str; 5] = [
        "bad_client_id",
        "client_id_mismatch",
        "unknown_device",
        "bad_password",
        "over_capacity",
    ];
}

impl DeviceRegistry {
    /// A registry backed by `path` (which need not exist yet) that admits the first
    /// `capacity` devices of the file.
    pub fn new(path: PathBuf, capacity: usize) -> Self {
        // Makes the decoy hash now, so that not even the first unknown device is answered
        // faster than a wrong password.
        decoy("");
        Self {
            path,
            capacity,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Looks a device up, reloading the file first if it changed; returns its position in
    /// the file too.
    pub fn lookup(&self, id: &DeviceId) -> Result<Option<(usize, DeviceEntry)>, RegistryError> {
        self.refresh()?;
        Ok(self.cache().devices.get(id).cloned())
    }

    /// The patient each device is bound to, as last loaded (no file access): for applying a
    /// changed registry to the sessions that are open.
    pub fn patient_of(&self, id: &DeviceId) -> Option<PatientId> {
        self.cache().devices.get(id).map(|(_, d)| d.patient.clone())
    }

    /// Reloads the file if it changed; returns its modification time (the registry's version).
    pub fn refresh(&self) -> Result<Option<SystemTime>, RegistryError> {
        let mtime = match std::fs::metadata(&self.path) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(RegistryError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut cache = self.cache();
        if cache.mtime != mtime || mtime.is_none() {
            let file = read_file(&self.path)?.unwrap_or_default();
            cache.devices = file
                .devices
                .into_iter()
                .enumerate()
                .map(|(i, d)| (d.id.clone(), (i, d)))
                .collect();
            cache.mtime = mtime;
        }
        Ok(mtime)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks an MQTT CONNECT. Blocking (Argon2 takes tens of milliseconds): call it from a
    /// blocking thread.
    ///
    /// The client id must be the device id: this keeps ids free of the characters that upset
    /// rumqttd's router, and bounds the connection table by the number of devices.
    pub fn authenticate(
        &self,
        client_id: &str,
        user: &str,
        pass: &str,
    ) -> Result<DeviceEntry, AuthRefusal> {
        let id = DeviceId::new(client_id).map_err(|_| AuthRefusal::BadClientId)?;
        if user != client_id {
            return Err(AuthRefusal::ClientIdMismatch);
        }
        let entry = match self.lookup(&id) {
            Ok(Some((position, _))) if position >= self.capacity => {
                return Err(AuthRefusal::OverCapacity);
            }
            Ok(Some((_, e))) => e,
            Ok(None) => {
                // The same work as for a wrong password, so that the time of the answer does
                // not tell which device ids exist.
                decoy(pass);
                return Err(AuthRefusal::UnknownDevice);
            }
            Err(e) => {
                tracing::error!(error = %e, "device registry unreadable; refusing connections");
                decoy(pass);
                return Err(AuthRefusal::UnknownDevice);
            }
        };
        if !kdf::verify(pass.as_bytes(), &entry.password_hash) {
            return Err(AuthRefusal::BadPassword);
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.json");
        let reg = DeviceRegistry::new(path.clone(), 2);
        let dev = DeviceId::new("mon-1").unwrap();
        assert_eq!(
            reg.authenticate("mon-1", "mon-1", "x").unwrap_err(),
            AuthRefusal::UnknownDevice
        );
        let pw = add_device(&path, dev.clone(), PatientId::new("bed-1").unwrap(), 2).unwrap();
        assert_eq!(pw.len(), 32);
        let entry = reg.authenticate("mon-1", "mon-1", &pw).unwrap();
        assert_eq!(entry.patient.as_str(), "bed-1");
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&pw));

        let cases = [
            (("a/b", "a/b", pw.as_str()), AuthRefusal::BadClientId),
            (("#", "#", pw.as_str()), AuthRefusal::BadClientId),
            (
                ("mon-1", "mon-2", pw.as_str()),
                AuthRefusal::ClientIdMismatch,
            ),
            (("mon-1", "mon-1", "wrong"), AuthRefusal::BadPassword),
        ];
        for ((c, u, p), want) in cases {
            assert_eq!(reg.authenticate(c, u, p).unwrap_err(), want);
        }

        // Re-keying replaces the old password.
        let pw2 = add_device(&path, dev, PatientId::new("bed-1").unwrap(), 2).unwrap();
        // mtime granularity may hide a same-instant rewrite from the cache: force a reload.
        let reg = DeviceRegistry::new(path.clone(), 2);
        assert!(reg.authenticate("mon-1", "mon-1", &pw2).is_ok());
        assert_eq!(
            reg.authenticate("mon-1", "mon-1", &pw).unwrap_err(),
            AuthRefusal::BadPassword
        );

        // Capacity: a new device beyond it cannot be added; one added under a higher limit
        // is refused at connect.
        let p = PatientId::new("bed-2").unwrap();
        add_device(&path, DeviceId::new("mon-2").unwrap(), p.clone(), 2).unwrap();
        assert!(matches!(
            add_device(&path, DeviceId::new("mon-3").unwrap(), p.clone(), 2),
            Err(RegistryError::Full(2))
        ));
        let pw3 = add_device(&path, DeviceId::new("mon-3").unwrap(), p, 3).unwrap();
        let reg = DeviceRegistry::new(path, 2);
        assert_eq!(
            reg.authenticate("mon-3", "mon-3", &pw3).unwrap_err(),
            AuthRefusal::OverCapacity
        );
    }

    #[test]
    fn add_many_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.json");
        let one = add_device(
            &path,
            DeviceId::new("mon-0").unwrap(),
            PatientId::new("bed-0").unwrap(),
            4,
        )
        .unwrap();
        let batch: Vec<_> = (1..4)
            .map(|i| {
                (
                    DeviceId::new(format!("mon-{i}")).unwrap(),
                    PatientId::new(format!("bed-{i}")).unwrap(),
                )
            })
            .collect();
        let passwords = add_devices(&path, &batch, 4).unwrap();
        assert_eq!(passwords.len(), 3);
        let reg = DeviceRegistry::new(path.clone(), 4);
        for (i, pw) in passwords.iter().enumerate() {
            let id = format!("mon-{}", i + 1);
            let entry = reg.authenticate(&id, &id, pw).unwrap();
            assert_eq!(entry.patient.as_str(), format!("bed-{}", i + 1));
        }
        assert!(reg.authenticate("mon-0", "mon-0", &one).is_ok());
        // Re-keying counts once; a fifth device does not fit; reserved ids are refused.
        assert!(add_devices(&path, &batch[..1], 4).is_ok());
        let extra = [(
            DeviceId::new("mon-9").unwrap(),
            PatientId::new("bed-9").unwrap(),
        )];
        assert!(matches!(
            add_devices(&path, &extra, 4),
            Err(RegistryError::Full(4))
        ));
        let twice = [batch[0].clone(), batch[0].clone()];
        assert!(matches!(
            add_devices(&path, &twice, 4),
            Err(RegistryError::Duplicate(_))
        ));
    }

    #[test]
    fn new_hashes_are_light_and_old_ones_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.json");
        let id = DeviceId::new("mon-1").unwrap();
        let pw = add_device(&path, id.clone(), PatientId::new("bed-1").unwrap(), 2).unwrap();
        let reg = DeviceRegistry::new(path.clone(), 2);
        let (_, entry) = reg.lookup(&id).unwrap().unwrap();
        assert!(
            entry.password_hash.contains("m=1024,t=2,p=1"),
            "{}",
            entry.password_hash
        );
        assert!(reg.authenticate("mon-1", "mon-1", &pw).is_ok());

        // A registry written with Argon2's defaults (19 MiB) keeps working.
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let legacy = argon2::Argon2::default()
            .hash_password(b"legacy-secret", &salt)
            .unwrap()
            .to_string();
        assert!(legacy.contains("m=19456"));
        let file = RegistryFile {
            devices: vec![DeviceEntry {
                id: DeviceId::new("mon-2").unwrap(),
                patient: PatientId::new("bed-2").unwrap(),
                password_hash: legacy,
            }],
        };
        write_file(&path, &file).unwrap();
        let reg = DeviceRegistry::new(path, 2);
        assert!(reg.authenticate("mon-2", "mon-2", "legacy-secret").is_ok());
        assert_eq!(
            reg.authenticate("mon-2", "mon-2", "wrong").unwrap_err(),
            AuthRefusal::BadPassword
        );
    }
}
