//! New passwords and their SCRAM-SHA-256 verifiers.

use crate::redacted::SecretString;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Length of generated passwords: 32 characters of 62 is about 190 bits.
pub const LENGTH: usize = 32;

/// The operating system's random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed: {0}")]
pub struct RandomError(String);

/// Random bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, RandomError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| RandomError(e.to_string()))?;
    Ok(buf)
}

/// A new password from the OS CSPRNG: letters and digits only, so it needs
/// no escaping in a connection string, a shell or JSON. Rejection sampling
/// keeps every character equally likely.
pub fn generate() -> Result<SecretString, RandomError> {
    let limit = 256 - (256 % ALPHABET.len()); // 248: bytes at or above are redrawn
    let mut out = String::with_capacity(LENGTH);
    while out.len() < LENGTH {
        for b in random_bytes(LENGTH)? {
            if (b as usize) < limit && out.len() < LENGTH {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(SecretString::new(out))
}

/// A random token for a Secrets Manager version (ClientRequestToken: 32 hex characters).
pub fn version_token() -> Result<String, RandomError> {
    Ok(random_bytes(16)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (random salt,
/// 4096 iterations), computed here so the plaintext is never sent.
pub fn scram_verifier(password: &SecretString) -> String {
    postgres_protocol::password::scram_sha_256(password.expose().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn passwords_are_long_alphanumeric_and_distinct() {
        let many: Vec<String> = (0..200)
            .map(|_| generate().unwrap().expose().to_string())
            .collect();
        assert!(
            many.iter()
                .all(|p| p.len() == LENGTH && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        );
        assert_eq!(many.iter().collect::<HashSet<_>>().len(), many.len());
        // Every character class shows up across the sample.
        let joined = many.concat();
        assert!(joined.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(joined.bytes().any(|b| b.is_ascii_lowercase()));
        assert!(joined.bytes().any(|b| b.is_ascii_digit()));
    }

    #[test]
    fn verifier_is_scram_and_hides_the_password() {
        let p = SecretString::new("correct horse battery staple");
        let v = scram_verifier(&p);
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("horse"));
        assert_ne!(v, scram_verifier(&p), "salted: two verifiers differ");
    }

    #[test]
    fn tokens_are_32_hex() {
        let t = version_token().unwrap();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
