//! The I/O glue both programs share, kept out of the sans-IO `wardlink-shared`: frames over
//! QUIC streams, PEM credentials, configuration files, termination signals and SMS providers.

pub mod config;
pub mod frames;
pub mod fs;
pub mod pem;
pub mod signal;
pub mod sms;
