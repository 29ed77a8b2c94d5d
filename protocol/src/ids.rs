//! Validated identifiers. Every id that becomes part of a storage key, a NATS subject or a path goes
//! through [`SafeId`], so a hostile request can never traverse directories or inject subjects.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest id we accept; keeps keys and subjects short.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("id must start with a letter or digit")]
    BadStart,
    #[error("id may contain only ASCII letters, digits, '_' and '-' (found {0:?})")]
    BadChar(char),
}

/// An id made only of `[A-Za-z0-9_-]`, starting with a letter or digit, at most 64 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SafeId(String);

impl SafeId {
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let first = s.chars().next().ok_or(IdError::Empty)?;
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if !first.is_ascii_alphanumeric() {
            return Err(IdError::BadStart);
        }
        if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(IdError::BadChar(bad));
        }
        Ok(Self(s))
    }

    /// A fresh random id with a readable prefix, e.g. `rec_7f3k2...`.
    pub fn random(prefix: &str) -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        let tail: String = (0..16).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        Self::parse(format!("{prefix}_{tail}")).expect("generated ids are valid")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SafeId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<SafeId> for String {
    fn from(id: SafeId) -> String {
        id.0
    }
}

/// Documented as the string it is on the wire, with the rule [`SafeId::parse`] checks.
impl utoipa::PartialSchema for SafeId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(SAFE_ID_PATTERN))
            .max_length(Some(MAX_ID_LEN))
            .description(Some("ASCII letters, digits, '_' and '-', starting with a letter or digit"))
            .into()
    }
}

impl utoipa::ToSchema for SafeId {}

/// What [`SafeId::parse`] accepts, as a regular expression (for the API's document).
pub const SAFE_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";

impl fmt::Display for SafeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SafeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for SafeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert!(SafeId::parse("rec_abc-123").is_ok());
        assert!(SafeId::parse("A").is_ok());
    }

    #[test]
    fn rejects_traversal_and_control_characters() {
        assert_eq!(SafeId::parse("../etc"), Err(IdError::BadStart));
        assert_eq!(SafeId::parse("a/../b"), Err(IdError::BadChar('/')));
        assert_eq!(SafeId::parse("a\nb"), Err(IdError::BadChar('\n')));
        assert_eq!(SafeId::parse("a.b"), Err(IdError::BadChar('.')));
        assert_eq!(SafeId::parse(""), Err(IdError::Empty));
        assert_eq!(SafeId::parse("x".repeat(65)), Err(IdError::TooLong));
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = SafeId::random("rec");
        let b = SafeId::random("rec");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("rec_"));
    }

    #[test]
    fn deserialization_validates() {
        let bad: Result<SafeId, _> = serde_json::from_str("\"../x\"");
        assert!(bad.is_err());
    }
}
