//! The validity period of an X.509 certificate, read from its DER with no X.509
//! parser: ACME certificates are renewed at a fraction of their lifetime, and this is
//! the only field the Edge needs from them.

use std::time::{Duration, SystemTime};

/// `notBefore` and `notAfter` of a DER X.509 certificate.
pub(super) fn validity(cert: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, certificate, _) = der(cert)?;
    let (_, mut tbs, _) = der(certificate)?;
    // version [0] (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..3 {
        tbs = der(tbs)?.2;
    }
    let (_, validity, _) = der(tbs)?;
    let (t1, before, rest) = der(validity)?;
    let (t2, after, _) = der(rest)?;
    Some((time(t1, before)?, time(t2, after)?))
}

/// One DER item: its tag, contents and what follows it.
fn der(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// An X.509 UTCTime (tag 0x17) or GeneralizedTime (0x18) in UTC (`...Z`).
fn time(tag: u8, value: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = s.get(..2)?.parse().ok()?;
            (if y < 50 { 2000 + y } else { 1900 + y }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2025, 3, 1);
        params.not_after = rcgen::date_time_ymd(2060, 2, 29);
        let cert = params.self_signed(&key).unwrap();
        let (before, after) = validity(cert.der()).unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(before), 1_740_787_200);
        assert_eq!(secs(after), 2_845_238_400);
    }
}
