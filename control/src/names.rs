//! Host names of HTTP tunnels: checking a requested name and drawing random ones.
//!
//! A name is one DNS label (`NAME.DOMAIN`): 1–63 characters of `a-z`, `0-9` and `-`,
//! neither first nor last a `-`. Names are case-insensitive and kept lowercase.

use ring::rand::SystemRandom;

use crate::secrets::{SecretError, random_bytes};

/// Longest DNS label.
pub const MAX_NAME_LEN: usize = 63;
/// Length of a random name: 36^8 ≈ 2.8 · 10^12 names, so collisions are rare and a
/// name cannot be guessed by walking the space.
pub const RANDOM_NAME_LEN: usize = 8;

/// Names no tunnel may take by default (`--denied-names`), comma-separated. A tunnel
/// named `www`, `mail` or `autodiscover` under the server's domain could pass for the
/// operator's own service; `wpad`, `isatap`, `autoconfig` and `autodiscover` are
/// names that browsers, operating systems and mail clients look up on their own and
/// trust; `mta-sts` publishes a domain's mail policy; the others read as the
/// operator's infrastructure. (`_acme-challenge` and other names with `_` are never
/// valid labels.)
pub const DEFAULT_DENIED_NAMES: &str = "www,mail,smtp,imap,pop,pop3,ftp,webmail,autodiscover,autoconfig,wpad,isatap,mta-sts,ns,ns1,ns2,dns,admin,api,control,edge,login,auth,status";

/// A name that is not a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the name {0:?} is not a valid host name label; use 1 to 63 letters, digits or '-', not starting or ending with '-'"
)]
pub struct InvalidName(pub String);

/// True when `label` is a lowercase DNS label a tunnel may be named.
pub fn is_valid(label: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Checks `name` as a DNS label and returns it lowercase.
pub fn normalize(name: &str) -> Result<String, InvalidName> {
    let lower = name.to_ascii_lowercase();
    if is_valid(&lower) {
        Ok(lower)
    } else {
        Err(InvalidName(name.chars().take(80).collect()))
    }
}

/// A random name of [`RANDOM_NAME_LEN`] lowercase letters and digits, starting with a
/// letter so it never reads as a number.
pub fn random_name(rng: &SystemRandom) -> Result<String, SecretError> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut name = String::with_capacity(RANDOM_NAME_LEN);
    while name.len() < RANDOM_NAME_LEN {
        for b in random_bytes(rng, 16)? {
            let alphabet = if name.is_empty() { LETTERS } else { ALNUM };
            // Rejection sampling keeps every character equally likely.
            let span = 256 - 256 % alphabet.len();
            if usize::from(b) < span && name.len() < RANDOM_NAME_LEN {
                name.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels_and_lowercases() {
        assert_eq!(normalize("My-App2").unwrap(), "my-app2");
        assert_eq!(normalize("a").unwrap(), "a");
        assert!(normalize(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_label() {
        for bad in ["", "-a", "a-", "a.b", "a_b", "é", "a b", &"a".repeat(64)] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn random_names_are_valid_labels() {
        let rng = SystemRandom::new();
        for _ in 0..200 {
            let n = random_name(&rng).unwrap();
            assert_eq!(n.len(), RANDOM_NAME_LEN);
            assert_eq!(normalize(&n).unwrap(), n);
            assert!(n.as_bytes()[0].is_ascii_lowercase());
        }
    }
}
