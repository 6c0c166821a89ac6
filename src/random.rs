//! The app's one source of randomness: `fastrand`'s per-thread generator, seeded from the OS. What
//! needs it: tokens that tell writers and invocations apart (collisions, not secrecy, matter: a
//! 128-bit token never collides in practice), and the jitter that spreads retries. (The
//! `table_storage` crate draws its `$batch` boundaries from the same generator itself.)

/// 32 hex digits (128 random bits).
pub(crate) fn token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// 64 random bits.
pub(crate) fn bits() -> u64 {
    fastrand::u64(..)
}

/// A number in `[0, 1)`, for jitter.
pub(crate) fn unit() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_digits_and_differ() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!((0.0..1.0).contains(&unit()));
    }
}
