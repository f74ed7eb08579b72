//! Validation of the ids that appear on the wire: room, sku, user, req and ref.
//!
//! docs/protocol.md: 1 to 64 characters of `A-Z a-z 0-9 _ - . :`. Every id is checked at the
//! edge (REST path, WebSocket frame, JWT claim) so the rest of the hub can trust it, and so an
//! id can never contain the separator used in composite keys ([`KEY_SEPARATOR`]).

/// Longest id the protocol allows.
pub const MAX_ID_LEN: usize = 64;

/// Separator of composite in-memory keys such as `user` + `req`; never valid inside an id.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// Why an id was refused, worded for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// No characters.
    #[error("is empty")]
    Empty,
    /// More than [`MAX_ID_LEN`] characters.
    #[error("is longer than 64 characters")]
    TooLong,
    /// A character outside the grammar.
    #[error("has a character outside A-Z a-z 0-9 _ - . :")]
    BadChar,
}

/// Checks one id against the protocol's grammar.
pub fn check(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if id.bytes().all(is_id_byte) {
        Ok(())
    } else {
        Err(IdError::BadChar)
    }
}

/// Whether `b` is one of the grammar's characters, `A-Z a-z 0-9 _ - . :`; for fields that take
/// the same characters with another length bound (a payment's `payment_id`).
pub fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

/// Checks an id and words the error with the field's name, e.g. `sku has a character ...`.
pub fn check_named(field: &str, id: &str) -> Result<(), String> {
    check(id).map_err(|e| format!("{field} {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar_and_refuses_the_rest() {
        assert_eq!(check("A-z_0.9:x"), Ok(()));
        assert_eq!(check(&"a".repeat(64)), Ok(()));
        assert_eq!(check(""), Err(IdError::Empty));
        assert_eq!(check(&"a".repeat(65)), Err(IdError::TooLong));
        for bad in ["a b", "a/b", "中", "a\u{1f}b", "a\"", "a\n"] {
            assert_eq!(check(bad), Err(IdError::BadChar), "{bad:?}");
        }
    }
}
