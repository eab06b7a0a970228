//! Basic credentials for the proxy, taken from its URL (`http://USER:PASSWORD@...`),
//! and the rules that keep the password out of everything printed.

use std::fmt;

/// What stands for the password wherever the proxy is printed.
const HIDDEN: &str = "***";

/// A user and password for the proxy (RFC 7617 Basic), decoded from the URL.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Credentials {
    /// The user as written in the URL (still percent-encoded), followed by `:***`
    /// when a password was given: the form every message shows.
    shown: String,
    /// `USER:PASSWORD`, percent-decoded: what Basic encodes.
    pair: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Credentials").field(&self.shown).finish()
    }
}

impl Credentials {
    /// Reads the userinfo of a URL, `USER[:PASSWORD]`, each percent-encoded. `None`
    /// when it is empty, holds spaces or control characters, has a `%` not followed
    /// by two hex digits, or has a user that decodes to one with `:` (which Basic
    /// cannot carry).
    pub(super) fn parse(userinfo: &str) -> Option<Credentials> {
        if userinfo.is_empty() || userinfo.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return None;
        }
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        let mut pair = percent_decode(user)?;
        if pair.contains(&b':') {
            return None;
        }
        pair.push(b':');
        pair.extend(percent_decode(password.unwrap_or_default())?);
        let shown = match password {
            Some(_) => format!("{user}:{HIDDEN}"),
            None => user.to_string(),
        };
        Some(Credentials { shown, pair })
    }

    /// The value of the `Proxy-Authorization` header.
    pub(super) fn authorization(&self) -> String {
        format!("Basic {}", base64(&self.pair))
    }

    /// The user, and `:***` when a password was given.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }
}

/// `url` with whatever lies between the first `:` of its userinfo and the last `@`
/// replaced by `***`, for messages about a URL that did not parse. Works on any
/// string, so a malformed URL still never shows its password.
pub(super) fn redact(url: &str) -> String {
    let start = split_scheme(url).map_or(0, |(scheme, _)| scheme.len() + 3);
    let Some(at) = url[start..].rfind('@').map(|i| start + i) else {
        return url.to_string();
    };
    match url[start..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:{HIDDEN}{}", &url[..start], &url[at..]),
        None => url.to_string(),
    }
}

/// Splits `SCHEME://REST` when SCHEME is one (a letter, then letters, digits, `+`, `-`
/// or `.`; RFC 3986, section 3.1), so text with `://` further on is not taken for one.
pub(super) fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// Decodes `%XX` escapes; `None` when a `%` is not followed by two hex digits.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(bytes.next()?)?;
            let lo = hex_value(bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Standard base64 with padding (RFC 4648, section 4).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = byte(0) << 16 | byte(1) << 8 | byte(2);
        // A chunk of n bytes fills n + 1 of the four characters; `=` pads the rest.
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (group >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn the_rfc_7617_example_gives_its_header() {
        let c = Credentials::parse("Aladdin:open%20sesame").unwrap();
        assert_eq!(c.authorization(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(c.shown(), "Aladdin:***");
        assert_eq!(format!("{c:?}"), "Credentials(\"Aladdin:***\")");
    }

    #[test]
    fn userinfo_is_percent_decoded_and_checked() {
        let pair = |s: &str| Credentials::parse(s).map(|c| c.pair);
        assert_eq!(pair("u:p").unwrap(), b"u:p");
        assert_eq!(pair("u").unwrap(), b"u:");
        assert_eq!(pair("u:").unwrap(), b"u:");
        assert_eq!(pair(":token").unwrap(), b":token");
        assert_eq!(pair("me%40corp:p%3Aw%25d%2f").unwrap(), b"me@corp:p:w%d/");
        assert_eq!(pair("u:a:b@c").unwrap(), b"u:a:b@c");
        assert_eq!(pair("j%C3%BCrgen:x").unwrap(), "jürgen:x".as_bytes());
        assert_eq!(Credentials::parse("u%3Ax:p"), None, "a colon in the user");
        assert_eq!(Credentials::parse("u:50%off"), None, "a bare %");
        assert_eq!(Credentials::parse("u:p%4"), None, "a cut escape");
        assert_eq!(Credentials::parse(""), None);
        assert_eq!(Credentials::parse("u:p w"), None);
        assert_eq!(Credentials::parse("u:p\nw"), None);
    }

    #[test]
    fn redaction_hides_the_password_of_any_string() {
        assert_eq!(redact("http://u:pw@p:3128"), "http://u:***@p:3128");
        assert_eq!(redact("http://u:p@w@p:x"), "http://u:***@p:x");
        assert_eq!(redact("u:pw@p"), "u:***@p");
        assert_eq!(redact("http://u@p"), "http://u@p");
        assert_eq!(redact("http://p:3128"), "http://p:3128");
        assert_eq!(redact("http:u:pw@p"), "http:***@p");
        assert_eq!(redact("a:pw@x://y"), "a:***@x://y");
        assert_eq!(split_scheme("https://p"), Some(("https", "p")));
        assert_eq!(split_scheme("u:pw@x://y"), None);
        assert_eq!(split_scheme("://p"), None);
    }

    /// Percent-encodes every byte outside a few safe ones.
    fn encode(s: &[u8]) -> String {
        s.iter()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' => char::from(*b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    proptest::proptest! {
        /// Any user (without `:`) and password survive encoding and decoding, and
        /// neither the shown form nor `Debug` carries the password.
        #[test]
        fn encoded_credentials_decode_to_themselves(
            user in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            password in proptest::collection::vec(proptest::num::u8::ANY, 1..40),
        ) {
            let user: Vec<u8> = user.into_iter().filter(|b| *b != b':').collect();
            let userinfo = format!("{}:{}", encode(&user), encode(&password));
            let c = Credentials::parse(&userinfo).unwrap();
            let mut expected = user.clone();
            expected.push(b':');
            expected.extend_from_slice(&password);
            proptest::prop_assert_eq!(&c.pair, &expected);
            proptest::prop_assert_eq!(c.shown(), format!("{}:***", encode(&user)));
            let debug = format!("{c:?}");
            let written = format!(":{}", encode(&password));
            proptest::prop_assert!(!debug.contains(&written), "{}", debug);
        }

        /// base64 output has the right length and alphabet, padding only at the end.
        #[test]
        fn base64_is_well_formed(input in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let out = base64(&input);
            proptest::prop_assert_eq!(out.len(), input.len().div_ceil(3) * 4);
            let body = out.trim_end_matches('=');
            proptest::prop_assert!(out.len() - body.len() <= 2);
            proptest::prop_assert!(body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        }
    }
}
