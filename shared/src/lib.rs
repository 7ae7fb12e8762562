//! Wardlink's sans-IO core: domain types, device payload codecs, the alarm rules, the edge↔hub
//! wire frames and the dashboard messages.
//!
//! Nothing in this crate opens a socket, spawns a task or reads a clock: every function that
//! depends on time takes `now` as an argument, so the clinical logic is tested deterministically.

pub mod alarm;
pub mod config;
pub mod dashboard;
pub mod ids;
pub mod metrics;
pub mod mqtt;
pub mod news2;
pub mod notify;
pub mod payload;
pub mod plain;
pub mod time;
pub mod token;
pub mod vitals;
pub mod web;
pub mod wire;

pub use ids::{DeviceId, EdgeId, IdError, PatientId, WardId};
pub use vitals::{Acvpu, Reading, Vitals};
