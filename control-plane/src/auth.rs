//! Secrets: host tokens, operator tokens and the admin token are kept and compared only as
//! SHA-256 digests.

use sha2::{Digest, Sha256};

/// A SHA-256 digest of a token.
pub type TokenHash = [u8; 32];

/// Prefix of every host token, so a leaked one is recognisable in a scan.
pub const HOST_TOKEN_PREFIX: &str = "fnt_";

/// The digest of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests in constant time: every byte is looked at, whatever differs.
pub fn digests_equal(a: &TokenHash, b: &TokenHash) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// A new host token: the prefix and 32 random bytes in hex.
pub fn new_host_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{HOST_TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Prefix of every operator token.
pub const OPERATOR_TOKEN_PREFIX: &str = "fno_";

/// A new operator token: the prefix and 32 random bytes in hex.
pub fn new_operator_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{OPERATOR_TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
            out
        })
}

/// Parses lower- or upper-case hex of exactly 32 bytes.
pub fn parse_hash(text: &str) -> Option<TokenHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hash_round_trips() {
        let a = new_host_token().unwrap();
        let b = new_host_token().unwrap();
        assert!(a.starts_with("fnt_"));
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(a, b);
        let hash = hash_token(&a);
        assert_eq!(parse_hash(&hex(&hash)), Some(hash));
        assert!(digests_equal(&hash, &hash_token(&a)));
        assert!(!digests_equal(&hash, &hash_token(&b)));
        assert_eq!(parse_hash("zz"), None);
    }
}
