//! Comparing secrets (the notifications' client state, API keys) without leaking them through time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Constant-time comparison that does not even reveal the length: both sides are hashed first.
pub(crate) fn secrets_equal(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

/// A fingerprint of a secret that can be stored beside it without revealing it (the first 128 bits
/// of its SHA-256, hex): tells whether the secret changed since, and nothing else. Only for
/// secrets with entropy enough that guessing is hopeless (the client state is a GUID or longer).
pub(crate) fn fingerprint(secret: &[u8]) -> String {
    Sha256::digest(secret)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        assert!(!secrets_equal(b"", b"abc"));
    }
}
