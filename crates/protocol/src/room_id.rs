//! Room ids: 1–128 characters of `[A-Za-z0-9_:.-]` (PROTOCOL §7).

/// The longest room id accepted.
pub const MAX_ROOM_ID_LEN: usize = 128;

/// True when `id` is a well-formed room id.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ROOM_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(is_valid("general"));
        assert!(is_valid("a:b.c-d_e9"));
        assert!(is_valid(&"x".repeat(128)));
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert!(!is_valid(""));
        assert!(!is_valid(&"x".repeat(129)));
        assert!(!is_valid("has space"));
        assert!(!is_valid("slash/room"));
        assert!(!is_valid("é"));
    }
}
