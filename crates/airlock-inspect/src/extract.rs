//! Candidate values for provenance: the emails, domains and URLs, IBANs and account numbers,
//! phone numbers and wallets in a text, normalised so that the same value written two ways
//! compares equal. The flow rules record where each first appeared and compare a proposed
//! action's arguments with them.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde::Serialize;

use crate::detect::Detector;
use crate::kind::{Builtin, Kind};

/// A value found in a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// What it is: one of `email`, `domain`, `url`, `iban`, `bank_account`, `phone`,
    /// `payment_card`, `crypto_wallet`, `ip_address`.
    pub kind: Builtin,
    /// The normalised value: e-mail addresses, domains and URL hosts in lower case, phone
    /// numbers as `+` and digits (or digits only without a country code), IBANs and account
    /// numbers without separators.
    pub value: String,
    /// Byte offset of the value as written.
    pub start: usize,
    /// Byte offset one past its end.
    pub end: usize,
}

impl Serialize for Builtin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

const EXTRACTED: &[Builtin] = &[
    Builtin::Email,
    Builtin::Url,
    Builtin::Domain,
    Builtin::Iban,
    Builtin::BankAccount,
    Builtin::Phone,
    Builtin::PaymentCard,
    Builtin::CryptoWallet,
    Builtin::IpAddress,
];

static EXTRACTOR: LazyLock<Option<Detector>> = LazyLock::new(|| {
    let kinds: HashSet<Builtin> = EXTRACTED.iter().copied().collect();
    Detector::new(&kinds, &[], &[], &[]).ok()
});

/// Every candidate value in `text`, in order. An e-mail address also yields its domain, and
/// a URL its host, as separate candidates.
pub fn extract(text: &str) -> Vec<Candidate> {
    let Some(detector) = EXTRACTOR.as_ref() else { return Vec::new() };
    let mut out = Vec::new();
    for finding in detector.detect(text) {
        let Kind::Builtin(kind) = finding.kind else { continue };
        let raw = finding.value(text);
        let (start, end) = (finding.start, finding.end);
        match kind {
            Builtin::Email => {
                out.push(Candidate { kind, value: raw.to_lowercase(), start, end });
                if let Some((_, domain)) = raw.rsplit_once('@') {
                    let at = end - domain.len();
                    out.push(Candidate {
                        kind: Builtin::Domain,
                        value: domain.to_lowercase(),
                        start: at,
                        end,
                    });
                }
            }
            Builtin::Url => {
                out.push(Candidate { kind, value: normalise_url(raw), start, end });
                if let Some((offset, host)) = url_host(raw) {
                    out.push(Candidate {
                        kind: Builtin::Domain,
                        value: host.to_lowercase(),
                        start: start + offset,
                        end: start + offset + host.len(),
                    });
                }
            }
            Builtin::Domain => out.push(Candidate { kind, value: raw.to_lowercase(), start, end }),
            Builtin::Phone => {
                let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
                let value = if raw.starts_with('+') {
                    format!("+{digits}")
                } else if let Some(rest) = digits.strip_prefix("00") {
                    format!("+{rest}")
                } else {
                    digits
                };
                out.push(Candidate { kind, value, start, end });
            }
            Builtin::Iban | Builtin::BankAccount | Builtin::PaymentCard => {
                let value: String = raw
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .map(|c| c.to_ascii_uppercase())
                    .collect();
                out.push(Candidate { kind, value, start, end });
            }
            _ => out.push(Candidate { kind, value: raw.to_owned(), start, end }),
        }
    }
    out
}

/// The host of a URL and its offset in it.
fn url_host(url: &str) -> Option<(usize, &str)> {
    let offset = url.find("://").map_or(0, |i| i + 3);
    let rest = url.get(offset..)?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo_len, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (user.len() + 1, host),
        None => (0, authority),
    };
    let host = host_port.split(':').next()?;
    (!host.is_empty()).then_some((offset + userinfo_len, host))
}

fn normalise_url(url: &str) -> String {
    match url_host(url) {
        Some((offset, host)) => {
            let mut out = url.get(..offset).unwrap_or_default().to_ascii_lowercase();
            out.push_str(&host.to_lowercase());
            out.push_str(url.get(offset + host.len()..).unwrap_or_default());
            out
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String)> {
        extract(text).into_iter().map(|c| (c.kind.name().to_owned(), c.value)).collect()
    }

    #[test]
    fn extracts_and_normalises() {
        let got = values(
            "Pay DE89 3704 0044 0532 0130 00, mail Ana.Lopez@Example.COM, see https://Pay.Example.net/x?a=1 \
             or call +44 20 7123 4567.",
        );
        let want = [
            ("iban", "DE89370400440532013000"),
            ("email", "ana.lopez@example.com"),
            ("domain", "example.com"),
            ("url", "https://pay.example.net/x?a=1"),
            ("domain", "pay.example.net"),
            ("phone", "+442071234567"),
        ];
        let want: Vec<(String, String)> =
            want.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn account_numbers_need_context() {
        assert!(values("order 12345678 shipped").is_empty());
        assert_eq!(
            values("account number 12345678"),
            vec![("bank_account".to_owned(), "12345678".to_owned())]
        );
    }
}
