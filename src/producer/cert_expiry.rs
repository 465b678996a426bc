//! The expiry date (notAfter) of the certificate a checked site presented: what the
//! probe reports as `cert_expires_at`.
//!
//! A small DER walk rather than a full X.509 parser: this is the one field we read, and the
//! pure-Rust X.509 crates would add to a binary kept under 5 MB. It never panics on bad
//! input: a certificate it cannot read gives None.

/// notAfter of a DER certificate, from the `validity` field of its TBSCertificate.
///
/// A small DER walk rather than a full X.509 parser: this is the one field we read.
pub(crate) fn certificate_not_after(der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (cert, _) = der_item(der, 0x30)?;
    let (tbs, _) = der_item(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_skip(rest)?; // [0] version
    }
    rest = der_skip(rest)?; // serialNumber
    rest = der_skip(rest)?; // signature algorithm
    rest = der_skip(rest)?; // issuer
    let (validity, _) = der_item(rest, 0x30)?;
    let after_not_before = der_skip(validity)?;
    let tag = *after_not_before.first()?;
    let (time, _) = der_item(after_not_before, tag)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        // UTCTime YYMMDDHHMMSSZ: years 50..99 are 19xx (RFC 5280 4.1.2.5.1)
        0x17 if text.len() == 13 => {
            let yy: u32 = text[..2].parse().ok()?;
            format!("{}{}", if yy >= 50 { "19" } else { "20" }, text)
        }
        0x18 if text.len() == 15 => text.to_string(), // GeneralizedTime YYYYMMDDHHMMSSZ
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The content of the DER item at the start of `input` (which must have `tag`), and what follows.
fn der_item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

fn der_skip(input: &[u8]) -> Option<&[u8]> {
    der_item(input, *input.first()?).map(|(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_rejects_truncated_input() {
        assert_eq!(certificate_not_after(&[]), None);
        assert_eq!(certificate_not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(certificate_not_after(&[0x30, 0x03, 0x30, 0x01]), None);
    }
}
