//! Validated identifier newtypes: patients, devices, edges and wards.
//!
//! Every id that crosses a trust boundary (an MQTT topic, a certificate, a token, a config file)
//! is parsed into one of these, so code behind the boundary never sees an unchecked string.
//! The contract's rule for all of them is `[A-Za-z0-9_-]{1,64}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted anywhere.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("id is empty")]
    Empty,
    /// The string is longer than [`MAX_ID_LEN`] bytes.
    #[error("id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    /// The string contains a character outside `[A-Za-z0-9_-]`.
    #[error("id may only contain A-Z a-z 0-9 _ -")]
    BadCharacter,
}

/// Checks the contract's id rule, `[A-Za-z0-9_-]{1,64}`.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_id(&s)?;
                Ok(Self(s))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A patient as named by the bedside topic `patients/{patient_id}/vitals`.
    PatientId
);
id_type!(
    /// A device's MQTT identity (its username and client id).
    DeviceId
);
id_type!(
    /// A ward edge box, named by the CN of its enrolled certificate.
    EdgeId
);
id_type!(
    /// A ward: the unit of dashboard access.
    WardId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_rule() {
        let cases: &[(&str, Result<(), IdError>)] = &[
            ("bed-01", Ok(())),
            ("A_z-09", Ok(())),
            ("", Err(IdError::Empty)),
            ("a/b", Err(IdError::BadCharacter)),
            ("#", Err(IdError::BadCharacter)),
            ("+", Err(IdError::BadCharacter)),
            ("$SYS", Err(IdError::BadCharacter)),
            ("bé", Err(IdError::BadCharacter)),
            ("sp ace", Err(IdError::BadCharacter)),
        ];
        for (input, expected) in cases {
            assert_eq!(&validate_id(input), expected, "{input:?}");
        }
        assert_eq!(validate_id(&"x".repeat(64)), Ok(()));
        assert_eq!(validate_id(&"x".repeat(65)), Err(IdError::TooLong));
    }

    #[test]
    fn serde_validates() {
        let ok: PatientId = serde_json::from_str("\"p-1\"").unwrap();
        assert_eq!(ok.as_str(), "p-1");
        assert!(serde_json::from_str::<PatientId>("\"p/1\"").is_err());
    }
}
