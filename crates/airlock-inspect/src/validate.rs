//! Checksum and structure validators that PII and secret detectors run after a regex has found a
//! candidate: check digits, issuer ranges, registry lengths and address encodings.
//!
//! Every function is pure and total: it never panics, whatever the input, and answers `false`
//! (or `None`) for anything it does not recognise. A number made of one repeated digit is a
//! placeholder, never an identifier, and every validator of a numeric identifier rejects it.

use std::iter;
use std::net::{Ipv4Addr, Ipv6Addr};

use airlock_crypto::sha256;

/// The ASCII digits of `s`, in order, as values `0..=9`; every other character is skipped.
#[must_use]
pub fn digits(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect()
}

/// Whether the digits of `s` (other characters skipped) pass the Luhn check. At least two
/// digits are required: a single `0` would pass trivially.
#[must_use]
pub fn luhn(s: &str) -> bool {
    let ds = digits(s);
    if ds.len() < 2 {
        return false;
    }
    // Summed modulo 10 as it goes, so no input length can overflow the total.
    let total = ds.iter().rev().enumerate().fold(0u8, |acc, (position, &digit)| {
        let value = if position % 2 == 1 {
            let doubled = digit * 2;
            if doubled > 9 { doubled - 9 } else { doubled }
        } else {
            digit
        };
        (acc + value) % 10
    });
    total == 0
}

/// A payment card network, as told by a card number's issuer identification number (IIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardIssuer {
    /// Visa: prefix 4; 13, 16 or 19 digits.
    Visa,
    /// Mastercard: prefixes 51–55 and 2221–2720; 16 digits.
    Mastercard,
    /// American Express: prefixes 34 and 37; 15 digits.
    Amex,
    /// Discover: prefixes 6011, 644–649, 65 and 622126–622925; 16 to 19 digits.
    Discover,
    /// JCB: prefixes 3528–3589; 16 to 19 digits.
    Jcb,
    /// Diners Club: prefixes 300–305, 3095, 36 and 38–39; 14 to 19 digits.
    DinersClub,
    /// UnionPay: prefix 62 outside Discover's co-branded range; 16 to 19 digits.
    UnionPay,
    /// Maestro: prefixes 50, 56–58, and any 6 not claimed above; 12 to 19 digits.
    Maestro,
}

/// The network that issues card numbers with the digits of `s` (other characters skipped), if
/// both the prefix and the number of digits fit one. The prefix alone decides the network; a
/// length that network does not use gives `None` rather than a guess at another.
#[must_use]
pub fn card_issuer(s: &str) -> Option<CardIssuer> {
    let ds = digits(s);
    let length = ds.len();
    if !(12..=19).contains(&length) {
        return None;
    }
    // At most six digits, so at most 999_999: no overflow.
    let prefix = |width: usize| ds.iter().take(width).fold(0u32, |acc, &digit| acc * 10 + u32::from(digit));
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));

    // Order matters where ranges overlap: Discover's co-branded 622126–622925 sits inside
    // UnionPay's 62, and Maestro takes only the 6s nobody else claims.
    let (issuer, lengths): (CardIssuer, &[usize]) = if p1 == 4 {
        (CardIssuer::Visa, &[13, 16, 19])
    } else if p2 == 34 || p2 == 37 {
        (CardIssuer::Amex, &[15])
    } else if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        (CardIssuer::Mastercard, &[16])
    } else if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622_126..=622_925).contains(&p6) {
        (CardIssuer::Discover, &[16, 17, 18, 19])
    } else if (3528..=3589).contains(&p4) {
        (CardIssuer::Jcb, &[16, 17, 18, 19])
    } else if (300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39 {
        (CardIssuer::DinersClub, &[14, 15, 16, 17, 18, 19])
    } else if p2 == 62 {
        (CardIssuer::UnionPay, &[16, 17, 18, 19])
    } else if p2 == 50 || (56..=58).contains(&p2) || p1 == 6 {
        (CardIssuer::Maestro, &[12, 13, 14, 15, 16, 17, 18, 19])
    } else {
        return None;
    };
    lengths.contains(&length).then_some(issuer)
}

/// Whether `s` is a plausible payment card number: 12 to 19 digits, optionally grouped by
/// spaces or by dashes (one kind throughout, single separators only), from a known issuer at a
/// length it uses, passing Luhn, and not one repeated digit.
#[must_use]
pub fn payment_card(s: &str) -> bool {
    if split_digit_groups(s, &[' ', '-']).is_none() {
        return false;
    }
    let ds = digits(s);
    (12..=19).contains(&ds.len()) && !all_same(&ds) && card_issuer(s).is_some() && luhn(s)
}

/// IBAN lengths by country code, from the SWIFT IBAN registry (ISO 13616) as published in 2024.
/// New countries join a few times a year; one missing here only makes its IBANs undetected.
/// Territories that use another country's code (the Channel Islands use `GB`, the French
/// overseas departments `FR`) have no entry of their own.
#[rustfmt::skip]
const IBAN_LENGTHS: &[([u8; 2], usize)] = &[
    (*b"AD", 24), (*b"AE", 23), (*b"AL", 28), (*b"AT", 20), (*b"AZ", 28), (*b"BA", 20),
    (*b"BE", 16), (*b"BG", 22), (*b"BH", 22), (*b"BI", 27), (*b"BR", 29), (*b"BY", 28),
    (*b"CH", 21), (*b"CR", 22), (*b"CY", 28), (*b"CZ", 24), (*b"DE", 22), (*b"DJ", 27),
    (*b"DK", 18), (*b"DO", 28), (*b"EE", 20), (*b"EG", 29), (*b"ES", 24), (*b"FI", 18),
    (*b"FK", 18), (*b"FO", 18), (*b"FR", 27), (*b"GB", 22), (*b"GE", 22), (*b"GI", 23),
    (*b"GL", 18), (*b"GR", 27), (*b"GT", 28), (*b"HN", 28), (*b"HR", 21), (*b"HU", 28),
    (*b"IE", 22), (*b"IL", 23), (*b"IQ", 23), (*b"IS", 26), (*b"IT", 27), (*b"JO", 30),
    (*b"KW", 30), (*b"KZ", 20), (*b"LB", 28), (*b"LC", 32), (*b"LI", 21), (*b"LT", 20),
    (*b"LU", 20), (*b"LV", 21), (*b"LY", 25), (*b"MC", 27), (*b"MD", 24), (*b"ME", 22),
    (*b"MK", 19), (*b"MN", 20), (*b"MR", 27), (*b"MT", 31), (*b"MU", 30), (*b"NI", 28),
    (*b"NL", 18), (*b"NO", 15), (*b"OM", 23), (*b"PK", 24), (*b"PL", 28), (*b"PS", 29),
    (*b"PT", 25), (*b"QA", 29), (*b"RO", 24), (*b"RS", 22), (*b"RU", 33), (*b"SA", 24),
    (*b"SC", 31), (*b"SD", 18), (*b"SE", 24), (*b"SI", 19), (*b"SK", 24), (*b"SM", 27),
    (*b"SO", 23), (*b"ST", 25), (*b"SV", 28), (*b"TL", 23), (*b"TN", 24), (*b"TR", 26),
    (*b"UA", 29), (*b"VA", 22), (*b"VG", 24), (*b"XK", 20), (*b"YE", 30),
];

/// The longest IBAN any country uses (ISO 13616).
const IBAN_MAX_LENGTH: usize = 34;

/// Whether `s` is a valid IBAN: a registered country code at exactly that country's length,
/// check digits 02–98, an alphanumeric BBAN, and the ISO 7064 MOD 97-10 check.
///
/// Written either without spaces or in the printed form, groups of four separated by single
/// spaces. Only uppercase is accepted: IBANs are printed in capitals, and accepting lowercase
/// would match far more ordinary text for almost no real IBAN. The per-country BBAN layout
/// (which positions are digits) is not checked; the check digits catch nearly all lookalikes.
#[must_use]
pub fn iban(s: &str) -> bool {
    // The longest IBAN plus a space after every group of four.
    if s.len() > IBAN_MAX_LENGTH + IBAN_MAX_LENGTH / 4 {
        return false;
    }
    let compact: Vec<u8> = if s.contains(' ') {
        let groups: Vec<&str> = s.split(' ').collect();
        let Some((last, full)) = groups.split_last() else {
            return false;
        };
        if !full.iter().all(|group| group.len() == 4) || !(1..=4).contains(&last.len()) {
            return false;
        }
        groups.concat().into_bytes()
    } else {
        s.as_bytes().to_vec()
    };
    if !compact.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return false;
    }
    let (Some(country), Some(check)) = (compact.first_chunk::<2>(), compact.get(2..4)) else {
        return false;
    };
    let registered = IBAN_LENGTHS.iter().any(|(code, length)| code == country && *length == compact.len());
    let check_digits_in_range = match check {
        [tens, units] if tens.is_ascii_digit() && units.is_ascii_digit() => {
            (2..=98).contains(&((tens - b'0') * 10 + (units - b'0')))
        }
        _ => false,
    };
    if !registered || !check_digits_in_range {
        return false;
    }
    // Move the country code and check digits to the end, read letters as 10..=35, and take the
    // whole as one decimal number modulo 97, folding a digit or two at a time so no big
    // integer is needed.
    let remainder = compact.iter().skip(4).chain(compact.iter().take(4)).fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            (acc * 10 + u32::from(b - b'0')) % 97
        } else {
            (acc * 100 + u32::from(b - b'A') + 10) % 97
        }
    });
    remainder == 1
}

/// Whether `s` is a plausible US Social Security number: nine digits written `123-45-6789`,
/// `123 45 6789` or `123456789`; area not 000, 666 or 900–999; group not 00; serial not 0000.
///
/// Also rejected: numbers SSA voided after they were printed in advertising (078-05-1120,
/// 219-09-9999), the textbook example 123-45-6789, and one repeated digit (111-11-1111).
/// Numbers issued before the 2011 randomisation could be checked against area/group tables;
/// that is deliberately not done, since those tables no longer describe new numbers.
#[must_use]
pub fn us_ssn(s: &str) -> bool {
    let Some(ds) = digit_groups(s, &['-', ' '], &[&[9], &[3, 2, 4]]) else {
        return false;
    };
    let Ok([a1, a2, a3, g1, g2, s1, s2, s3, s4]) = <[u8; 9]>::try_from(ds.as_slice()) else {
        return false;
    };
    let area = number(&[a1, a2, a3]);
    let group = number(&[g1, g2]);
    let serial = number(&[s1, s2, s3, s4]);
    let whole = number(&ds);
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && ![78_051_120, 219_099_999, 123_456_789].contains(&whole)
        && !all_same(&ds)
}

/// Whether `s` is a plausible US Individual Taxpayer Identification Number: nine digits in the
/// same layouts as an SSN, starting with 9, whose fourth and fifth digits are 50–65, 70–88,
/// 90–92 or 94–99 (the ranges the IRS assigns).
#[must_use]
pub fn us_itin(s: &str) -> bool {
    let Some(ds) = digit_groups(s, &['-', ' '], &[&[9], &[3, 2, 4]]) else {
        return false;
    };
    let Ok([9, _, _, g1, g2, _, _, _, _]) = <[u8; 9]>::try_from(ds.as_slice()) else {
        return false;
    };
    let group = number(&[g1, g2]);
    let assigned = matches!(group, 50..=65 | 70..=88 | 90..=92 | 94..=99);
    assigned && !all_same(&ds)
}

/// Whether `s` is a plausible US Employer Identification Number: `12-3456789` or nine plain
/// digits, whose two-digit prefix is one the IRS assigns to a campus or to online issuance
/// (01–06, 10–16, 20–27, 30–48, 50–68, 71–77, 80–88, 90–95, 98–99).
#[must_use]
pub fn us_ein(s: &str) -> bool {
    let Some(ds) = digit_groups(s, &['-'], &[&[9], &[2, 7]]) else {
        return false;
    };
    let prefix = ds.iter().take(2).fold(0u8, |acc, &digit| acc * 10 + digit);
    let assigned = matches!(
        prefix,
        1..=6 | 10..=16 | 20..=27 | 30..=48 | 50..=68 | 71..=77 | 80..=88 | 90..=95 | 98..=99
    );
    assigned && !all_same(&ds)
}

/// Whether `s` is a valid ABA routing transit number: nine plain digits, a Federal Reserve
/// prefix (00–12 banks, 21–32 thrifts, 61–72 electronic, 80 traveller's cheques), and the
/// 3-7-1 weighted checksum. `000000000` passes the checksum but is not a routing number.
#[must_use]
pub fn aba_routing(s: &str) -> bool {
    if s.len() != 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let ds = digits(s);
    let prefix = ds.iter().take(2).fold(0u8, |acc, &digit| acc * 10 + digit);
    let known_prefix = matches!(prefix, 0..=12 | 21..=32 | 61..=72 | 80);
    let weighted: u32 =
        ds.iter().zip([3, 7, 1].iter().cycle()).map(|(&digit, &weight)| u32::from(digit) * weight).sum();
    known_prefix && weighted.is_multiple_of(10) && !all_same(&ds)
}

/// Whether `s` is a valid NHS number (England, Wales and the Isle of Man): ten digits written
/// `943 476 5919`, `943-476-5919` or plain, whose last digit is the modulus 11 check of the
/// first nine (weights 10 down to 2). A number whose check would be 10 is never issued.
#[must_use]
pub fn uk_nhs(s: &str) -> bool {
    let Some(ds) = digit_groups(s, &[' ', '-'], &[&[10], &[3, 3, 4]]) else {
        return false;
    };
    let Some((&check, body)) = ds.split_last() else {
        return false;
    };
    let weighted: u32 =
        body.iter().zip((2..=10).rev()).map(|(&digit, weight)| u32::from(digit) * weight).sum();
    let expected = match 11 - weighted % 11 {
        11 => 0,
        10 => return false,
        value => value,
    };
    expected == u32::from(check) && !all_same(&ds)
}

/// Whether `s` is a valid UK National Insurance number, in any case: two prefix letters, six
/// digits and a suffix letter A–D, as `AB123456C`, `AB 12 34 56 C`, or with a space only after
/// the prefix and/or before the suffix.
///
/// HMRC never uses D, F, I, Q, U or V in either prefix letter, nor O as the second, and never
/// issues the prefixes BG, GB, KN, NK, NT, TN and ZZ. The suffix is required: without it six
/// digits and two letters match too much ordinary text.
#[must_use]
pub fn uk_nino(s: &str) -> bool {
    // The characters without spaces, and the positions (in that compact form) where a single
    // space stood.
    let mut compact = Vec::with_capacity(9);
    let mut breaks = Vec::with_capacity(4);
    for token in s.split(' ') {
        if token.is_empty() || compact.len() + token.len() > 9 {
            return false;
        }
        if !compact.is_empty() {
            breaks.push(compact.len());
        }
        compact.extend(token.bytes().map(|b| b.to_ascii_uppercase()));
    }
    let Ok([first, second, d1, d2, d3, d4, d5, d6, suffix]) = <[u8; 9]>::try_from(compact.as_slice()) else {
        return false;
    };
    // Pairs of digits are spaced only if the prefix is too.
    let layout = matches!(breaks.as_slice(), [] | [2] | [8] | [2, 8] | [2, 4, 6] | [2, 4, 6, 8]);
    let prefix_ok = first.is_ascii_uppercase()
        && second.is_ascii_uppercase()
        && !b"DFIQUV".contains(&first)
        && !b"DFIOQUV".contains(&second)
        && ![*b"BG", *b"GB", *b"KN", *b"NK", *b"NT", *b"TN", *b"ZZ"].contains(&[first, second]);
    let digits_ok = [d1, d2, d3, d4, d5, d6].iter().all(u8::is_ascii_digit);
    layout && prefix_ok && digits_ok && (b'A'..=b'D').contains(&suffix)
}

/// The dihedral group D5 multiplication table used by the Verhoeff check.
const VERHOEFF_MULTIPLY: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// The Verhoeff position permutations: row `i` applies to the `i`-th digit from the right,
/// modulo 8.
const VERHOEFF_PERMUTE: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 7, 6, 8, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Whether `ds` (digit values, check digit last) passes the Verhoeff check.
fn verhoeff(ds: &[u8]) -> bool {
    let state = ds.iter().rev().enumerate().try_fold(0u8, |state, (position, &digit)| {
        let permuted = VERHOEFF_PERMUTE.get(position % 8)?.get(usize::from(digit))?;
        VERHOEFF_MULTIPLY.get(usize::from(state))?.get(usize::from(*permuted)).copied()
    });
    state == Some(0)
}

/// Whether `s` is a valid Aadhaar number: twelve digits, plain or as three groups of four
/// separated by spaces or by dashes, the first 2–9, not one repeated digit, passing the
/// Verhoeff check that UIDAI uses for the last digit.
#[must_use]
pub fn aadhaar(s: &str) -> bool {
    let Some(ds) = digit_groups(s, &[' ', '-'], &[&[12], &[4, 4, 4]]) else {
        return false;
    };
    ds.first().is_some_and(|first| (2..=9).contains(first)) && !all_same(&ds) && verhoeff(&ds)
}

/// Whether `s` is a structurally valid Indian Permanent Account Number, `ABCPE1234F`: five
/// uppercase letters, four digits, one uppercase letter, where the fourth letter is a holder
/// type the Income Tax Department issues (A, B, C, F, G, H, J, L, P or T). PAN has no public
/// check digit, so this is a shape check only.
#[must_use]
pub fn in_pan(s: &str) -> bool {
    let Ok([l1, l2, l3, holder, l5, d1, d2, d3, d4, last]) = <[u8; 10]>::try_from(s.as_bytes()) else {
        return false;
    };
    [l1, l2, l3, holder, l5, last].iter().all(u8::is_ascii_uppercase)
        && [d1, d2, d3, d4].iter().all(u8::is_ascii_digit)
        && b"ABCFGHJLPT".contains(&holder)
}

// Bitcoin addresses. Base58 decoding and the bech32 checksum are a few dozen lines each and
// fully specified by BIP-13/BIP-173/BIP-350; no well-kept crate is worth a dependency for them.

/// The Bitcoin base58 alphabet: no 0, O, I or l.
const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// The bech32 data alphabet; a character's position is its 5-bit value.
const BECH32_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// The checksum constant of the original bech32 (BIP-173), used by witness version 0.
const BECH32_CONST: u32 = 1;

/// The checksum constant of bech32m (BIP-350), used by witness versions 1 to 16.
const BECH32M_CONST: u32 = 0x2bc8_30a3;

/// Whether `s` is a valid Bitcoin mainnet address: legacy base58check P2PKH (`1…`) or P2SH
/// (`3…`), or a segwit address (`bc1…`) with a bech32 (witness v0) or bech32m (v1 and later)
/// checksum. Testnet and regtest addresses are not accepted.
#[must_use]
pub fn bitcoin_address(s: &str) -> bool {
    if s.get(..3).is_some_and(|start| start.eq_ignore_ascii_case("bc1")) {
        segwit_address(s)
    } else {
        base58check_address(s)
    }
}

/// A legacy address: 25 bytes once decoded, version 0x00 (P2PKH) or 0x05 (P2SH), then a
/// 20-byte hash, then the first four bytes of SHA-256(SHA-256(version and hash)).
fn base58check_address(s: &str) -> bool {
    // 25 bytes encode to 26..=35 characters; the bound also caps the quadratic decode.
    if !(26..=35).contains(&s.len()) {
        return false;
    }
    let Some(decoded) = base58_decode(s) else {
        return false;
    };
    let Ok(bytes) = <[u8; 25]>::try_from(decoded.as_slice()) else {
        return false;
    };
    let (Some(payload), Some(checksum)) = (bytes.first_chunk::<21>(), bytes.last_chunk::<4>()) else {
        return false;
    };
    let digest = sha256(sha256(payload).as_bytes());
    matches!(payload.first(), Some(0x00 | 0x05)) && digest.as_bytes().first_chunk::<4>() == Some(checksum)
}

/// Decodes base58 as a big-endian number, each leading `1` standing for one leading zero byte.
fn base58_decode(s: &str) -> Option<Vec<u8>> {
    // Little-endian while decoding, so carries run towards the end of the vector.
    let mut number: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.bytes() {
        let mut carry = u32::try_from(BASE58_ALPHABET.iter().position(|&a| a == c)?).ok()?;
        for byte in &mut number {
            carry += u32::from(*byte) * 58;
            let [low, ..] = carry.to_le_bytes();
            *byte = low;
            carry >>= 8;
        }
        while carry > 0 {
            let [low, ..] = carry.to_le_bytes();
            number.push(low);
            carry >>= 8;
        }
    }
    let leading_zeros = s.bytes().take_while(|&c| c == b'1').count();
    number.extend(iter::repeat_n(0, leading_zeros));
    number.reverse();
    Some(number)
}

/// A segwit address (BIP-173, BIP-350): human-readable part `bc`, separator `1`, data in the
/// bech32 alphabet ending in a six-character checksum, one case throughout, at most 90
/// characters. The first data character is the witness version (0–16); the rest is the
/// witness program in 5-bit groups, which must repack into 2–40 bytes (20 or 32 for v0) with
/// at most four zero padding bits.
fn segwit_address(s: &str) -> bool {
    if s.len() > 90 {
        return false;
    }
    let has_lower = s.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = s.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    let Some((hrp, data)) = lower.rsplit_once('1') else {
        return false;
    };
    if hrp != "bc" {
        return false;
    }
    let Some(values) = data
        .bytes()
        .map(|c| BECH32_CHARSET.iter().position(|&a| a == c).and_then(|v| u8::try_from(v).ok()))
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let Some(payload) = values.len().checked_sub(6).and_then(|end| values.get(..end)) else {
        return false;
    };
    let Some((&version, program)) = payload.split_first() else {
        return false;
    };
    let expected = match version {
        0 => BECH32_CONST,
        1..=16 => BECH32M_CONST,
        _ => return false,
    };
    let expanded_hrp = hrp.bytes().map(|b| b >> 5).chain(iter::once(0)).chain(hrp.bytes().map(|b| b & 31));
    if bech32_polymod(expanded_hrp.chain(values.iter().copied())) != expected {
        return false;
    }
    let Some(program) = five_to_eight_bits(program) else {
        return false;
    };
    match version {
        0 => program.len() == 20 || program.len() == 32,
        _ => (2..=40).contains(&program.len()),
    }
}

/// The bech32 checksum: the residue of a BCH code over GF(32), per BIP-173.
fn bech32_polymod(values: impl Iterator<Item = u8>) -> u32 {
    const GENERATOR: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];
    values.fold(1u32, |checksum, value| {
        let top = checksum >> 25;
        let shifted = ((checksum & 0x01ff_ffff) << 5) ^ u32::from(value);
        GENERATOR
            .iter()
            .enumerate()
            .filter(|(bit, _)| (top >> bit) & 1 == 1)
            .fold(shifted, |acc, (_, generator)| acc ^ generator)
    })
}

/// Repacks 5-bit groups into bytes, refusing more than four leftover bits or nonzero padding.
fn five_to_eight_bits(groups: &[u8]) -> Option<Vec<u8>> {
    let mut accumulator: u32 = 0;
    let mut bits: u32 = 0;
    let mut out = Vec::with_capacity(groups.len() * 5 / 8);
    for &group in groups {
        // Never more than 12 bits are live: up to 7 left over plus 5 new.
        accumulator = ((accumulator << 5) | u32::from(group)) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            let [byte, ..] = (accumulator >> bits).to_le_bytes();
            out.push(byte);
        }
    }
    let padding = accumulator & ((1 << bits) - 1);
    (bits < 5 && padding == 0).then_some(out)
}

/// Whether `s` is an Ethereum address: `0x` followed by exactly 40 hex digits, in any case.
///
/// The EIP-55 mixed-case checksum is not verified: it needs Keccak-256, which the crypto seam
/// does not provide. So a mistyped checksummed address is still accepted; for detecting an
/// address in text that errs on the side of finding it.
#[must_use]
pub fn ethereum_address(s: &str) -> bool {
    s.strip_prefix("0x").is_some_and(|hex| hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Splits an optional CIDR suffix off `s`, answering whether the suffix (if any) is a prefix
/// length `0..=max` written without leading zeros.
fn split_cidr(s: &str, max: u8) -> Option<&str> {
    let Some((address, length)) = s.split_once('/') else {
        return Some(s);
    };
    let canonical = !length.is_empty()
        && length.len() <= 3
        && length.bytes().all(|b| b.is_ascii_digit())
        && (length == "0" || !length.starts_with('0'));
    let in_range = length.parse::<u8>().is_ok_and(|value| value <= max);
    (canonical && in_range).then_some(address)
}

/// Whether `s` is an IPv4 address in dotted-quad form, optionally with a `/0`–`/32` CIDR
/// suffix. Octets with leading zeros (`010.0.0.1`, which some parsers read as octal) are
/// rejected; the standard library's parser already refuses them, and a test pins that.
#[must_use]
pub fn ipv4(s: &str) -> bool {
    split_cidr(s, 32).is_some_and(|address| address.parse::<Ipv4Addr>().is_ok())
}

/// Whether `s` is an IPv6 address in any RFC 4291 text form, optionally with a `/0`–`/128`
/// CIDR suffix. A `%zone` scope identifier is rejected: it names an interface on one host and
/// is never part of an address that leaves it.
#[must_use]
pub fn ipv6(s: &str) -> bool {
    !s.contains('%') && split_cidr(s, 128).is_some_and(|address| address.parse::<Ipv6Addr>().is_ok())
}

/// Whether `s` is a MAC address: six pairs of hex digits separated throughout by `:` or by `-`
/// (`00:1a:2b:3c:4d:5e`), or three groups of four separated by `.` (Cisco, `001a.2b3c.4d5e`).
/// The all-zero address is rejected as a placeholder; broadcast `ff:ff:ff:ff:ff:ff` is a real
/// address and is accepted.
#[must_use]
pub fn mac_address(s: &str) -> bool {
    let well_formed = [(':', 6, 2), ('-', 6, 2), ('.', 3, 4)].iter().any(|&(separator, count, width)| {
        let groups: Vec<&str> = s.split(separator).collect();
        groups.len() == count
            && groups.iter().all(|group| group.len() == width && group.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    well_formed && s.bytes().any(|b| b.is_ascii_hexdigit() && b != b'0')
}

/// The Shannon entropy of the bytes of `s`, in bits per byte: 0 for the empty string or one
/// repeated byte, at most 8.
#[must_use]
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        if let Some(count) = counts.get_mut(usize::from(b)) {
            *count += 1;
        }
    }
    let length = s.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / length;
            -p * p.log2()
        })
        .sum()
}

/// Whether `s`, found where a credential is expected (after `api_key=`, in an `Authorization`
/// header), looks like a generated secret rather than a word, a date or a placeholder.
///
/// A heuristic, tuned to keep real keys (base64, base62, hex, base32) and drop the obvious
/// non-secrets; every condition must hold:
/// - at least 16 characters, all printable ASCII without whitespace: a token, not prose;
/// - Shannon entropy of at least 3.0 bits per character;
/// - at least one ASCII digit and at least three ASCII letters, which rules out plain words,
///   numbers, and timestamps, phone numbers and version strings whose only letters are
///   separators (`2024-01-15T10:30:00Z`);
/// - no run of five characters counting up or down by one (`12345`, `abcde`, `98765`);
/// - no run of lowercase letters covering half the string or more (`password12345678`,
///   `mysecretvalue2024`). Uppercase runs are allowed: base32 keys such as AWS key ids are
///   mostly capitals.
#[must_use]
pub fn looks_random(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() < 16 || !bytes.iter().all(u8::is_ascii_graphic) {
        return false;
    }
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let lowercase_run = longest_run(bytes, u8::is_ascii_lowercase);
    letters >= 3
        && has_digit
        && shannon_entropy(s) >= 3.0
        && !has_counting_run(bytes, 5)
        && lowercase_run * 2 < bytes.len()
}

/// The length of the longest run of consecutive bytes satisfying `predicate`.
fn longest_run(bytes: &[u8], predicate: impl Fn(&u8) -> bool) -> usize {
    bytes
        .iter()
        .fold((0, 0), |(current, longest), b| {
            let current = if predicate(b) { current + 1 } else { 0 };
            (current, longest.max(current))
        })
        .1
}

/// Whether `bytes` holds `length` or more consecutive bytes that each step up by one, or each
/// step down by one, from the last.
fn has_counting_run(bytes: &[u8], length: usize) -> bool {
    let mut run = 1;
    let mut step = 0i16;
    for pair in bytes.windows(2) {
        let [a, b] = pair else { continue };
        let difference = i16::from(*b) - i16::from(*a);
        if difference.abs() == 1 {
            run = if difference == step { run + 1 } else { 2 };
            step = difference;
        } else {
            run = 1;
            step = 0;
        }
        if run >= length {
            return true;
        }
    }
    false
}

/// The digits of `s` if it is a run of digits, or runs of digits joined by single separators of
/// one kind from `separators`, with group lengths matching one of `layouts` (a plain run is the
/// layout with one group).
fn digit_groups(s: &str, separators: &[char], layouts: &[&[usize]]) -> Option<Vec<u8>> {
    let lengths: Vec<usize> = split_digit_groups(s, separators)?.iter().map(|group| group.len()).collect();
    layouts.contains(&lengths.as_slice()).then(|| digits(s))
}

/// The groups of digits in `s`, if `s` is nonempty runs of ASCII digits joined by single
/// separators, all the same one of `separators`.
fn split_digit_groups<'a>(s: &'a str, separators: &[char]) -> Option<Vec<&'a str>> {
    let groups: Vec<&str> = match s.chars().find(|c| !c.is_ascii_digit()) {
        None => vec![s],
        Some(separator) if separators.contains(&separator) => s.split(separator).collect(),
        Some(_) => return None,
    };
    groups
        .iter()
        .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()))
        .then_some(groups)
}

/// Whether `ds` is one digit repeated (false for an empty slice).
fn all_same(ds: &[u8]) -> bool {
    ds.first().is_some_and(|first| ds.iter().all(|digit| digit == first))
}

/// The decimal value of digit values `ds`; callers pass at most nine digits, so it fits.
fn number(ds: &[u8]) -> u32 {
    ds.iter().fold(0u32, |acc, &digit| acc * 10 + u32::from(digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_skips_everything_but_ascii_digits() {
        assert_eq!(digits("4111-1111 x٣9"), vec![4, 1, 1, 1, 1, 1, 1, 1, 9]);
        assert!(digits("").is_empty());
    }

    #[test]
    fn luhn_known_answers() {
        assert!(luhn("79927398713"));
        assert!(luhn("4111 1111 1111 1111"));
        assert!(!luhn("79927398710"));
        assert!(!luhn("0"), "a single digit is too short to check");
        assert!(!luhn(""));
    }

    #[test]
    fn luhn_does_not_overflow_on_long_input() {
        // A million nines sum to 9,000,000 (every doubled 9 counts as 9): valid. One fewer
        // leaves 8,999,991: invalid.
        assert!(luhn(&"9".repeat(1_000_000)));
        assert!(!luhn(&"9".repeat(999_999)));
    }

    #[test]
    fn card_issuers_from_public_test_numbers() {
        let cases = [
            ("4111111111111111", CardIssuer::Visa),
            ("4222222222222", CardIssuer::Visa),
            ("5555555555554444", CardIssuer::Mastercard),
            ("2223003122003222", CardIssuer::Mastercard),
            ("378282246310005", CardIssuer::Amex),
            ("6011111111111117", CardIssuer::Discover),
            ("6221260000000000", CardIssuer::Discover),
            ("3530111333300000", CardIssuer::Jcb),
            ("30569309025904", CardIssuer::DinersClub),
            ("36227206271667", CardIssuer::DinersClub),
            ("6200000000000005", CardIssuer::UnionPay),
            ("5018000000000009", CardIssuer::Maestro),
            ("6759649826438453", CardIssuer::Maestro),
        ];
        for (number, issuer) in cases {
            assert_eq!(card_issuer(number), Some(issuer), "{number}");
            assert!(payment_card(number), "{number}");
        }
    }

    #[test]
    fn card_issuer_rejects_unknown_prefixes_and_lengths() {
        assert_eq!(card_issuer("9111111111111111"), None);
        assert_eq!(card_issuer("5911111111111111"), None, "59 belongs to no network");
        assert_eq!(card_issuer("41111111111111"), None, "Visa never uses 14 digits");
        assert_eq!(card_issuer("37828224631000"), None, "Amex is always 15 digits");
        assert_eq!(card_issuer("55555555555544445"), None, "Mastercard is always 16 digits");
        assert_eq!(card_issuer("411111111"), None);
        assert_eq!(card_issuer(""), None);
    }

    #[test]
    fn payment_card_accepts_consistent_separators() {
        assert!(payment_card("4111 1111 1111 1111"));
        assert!(payment_card("4111-1111-1111-1111"));
        assert!(payment_card("3782 822463 10005"));
    }

    #[test]
    fn payment_card_rejects_lookalikes() {
        assert!(!payment_card("4111111111111112"), "one digit changed");
        assert!(!payment_card("4111 1111-1111 1111"), "mixed separators");
        assert!(!payment_card("4111  1111 1111 1111"), "doubled separator");
        assert!(!payment_card(" 4111 1111 1111 1111"), "leading separator");
        assert!(!payment_card("4111.1111.1111.1111"), "dots are not card separators");
        assert!(!payment_card("0000 0000 0000 0000"), "repeated digit, no issuer");
        assert!(!payment_card("411111111111111111111"), "too long");
        assert!(!payment_card(""));
    }

    #[test]
    fn iban_accepts_registry_examples() {
        for valid in [
            "GB82WEST12345698765432",
            "DE89370400440532013000",
            "NL91ABNA0417164300",
            "FR1420041010050500013M02606",
            "BE68539007547034",
            "CH9300762011623852957",
            "AT611904300234573201",
            "NO9386011117947",
            "ES9121000418450200051332",
            "IT60X0542811101000000123456",
            "GB82 WEST 1234 5698 7654 32",
            "FR14 2004 1010 0505 0001 3M02 606",
        ] {
            assert!(iban(valid), "{valid}");
        }
    }

    #[test]
    fn iban_rejects_lookalikes() {
        assert!(!iban("GB82WEST12345698765433"), "one digit changed");
        assert!(!iban("GB28WEST12345698765432"), "check digits transposed");
        assert!(!iban("GB82WEST1234569876543"), "one character short");
        assert!(!iban("NL91ABNA04171643001"), "one character long");
        assert!(!iban("XX82WEST12345698765432"), "unknown country");
        assert!(!iban("gb82west12345698765432"), "lowercase");
        assert!(!iban("GB82 WEST 12345698765432"), "irregular grouping");
        assert!(!iban("GB82  WEST 1234 5698 7654 32"), "doubled space");
        assert!(!iban("GB82-WEST-1234-5698-7654-32"), "dashes");
        assert!(!iban("GB8"));
        assert!(!iban(""));
    }

    #[test]
    fn iban_rejects_check_digits_outside_02_to_98() {
        // 00, 01 and 99 are congruent to 97, 98 and 02 modulo 97, so they pass the bare mod-97
        // test; only the range check stops them. Find German account numbers whose check
        // digits are 97, 98 and 02 and swap in the aliases.
        let with_check = |check: u32, account: u32| format!("DE{check:02}370400440532{account:06}");
        for (real, alias) in [(97, 0), (98, 1), (2, 99)] {
            let account = (0..1_000_000).find(|&account| iban(&with_check(real, account))).unwrap();
            assert!(!iban(&with_check(alias, account)), "{}", with_check(alias, account));
        }
    }

    #[test]
    fn us_ssn_known_answers() {
        assert!(us_ssn("536-90-4399"));
        assert!(us_ssn("536 90 4399"));
        assert!(us_ssn("536904399"));
        assert!(!us_ssn("536-90 4399"), "mixed separators");
        assert!(!us_ssn("5369-0-4399"), "wrong grouping");
        assert!(!us_ssn("000-12-3456"), "area 000");
        assert!(!us_ssn("666-12-3456"), "area 666");
        assert!(!us_ssn("900-12-3456"), "area 9xx is ITIN space");
        assert!(!us_ssn("536-00-4399"), "group 00");
        assert!(!us_ssn("536-90-0000"), "serial 0000");
        assert!(!us_ssn("078-05-1120"), "Woolworth wallet card");
        assert!(!us_ssn("219-09-9999"), "advertised number");
        assert!(!us_ssn("123-45-6789"), "textbook example");
        assert!(!us_ssn("111-11-1111"), "repeated digit");
        assert!(!us_ssn("536-90-439"), "too short");
        assert!(!us_ssn(""));
    }

    #[test]
    fn us_itin_known_answers() {
        assert!(us_itin("912-70-1234"));
        assert!(us_itin("900 50 0000"));
        assert!(us_itin("999941234"));
        assert!(!us_itin("912-69-1234"), "group 69 is not assigned");
        assert!(!us_itin("912-93-1234"), "group 93 is not assigned");
        assert!(!us_itin("812-70-1234"), "must start with 9");
        assert!(!us_itin("999-99-9999"), "repeated digit");
    }

    #[test]
    fn us_ein_known_answers() {
        assert!(us_ein("12-3456789"));
        assert!(us_ein("983456789"));
        assert!(!us_ein("07-3456789"), "07 is not a campus prefix");
        assert!(!us_ein("89-3456789"), "89 is not a campus prefix");
        assert!(!us_ein("00-3456789"));
        assert!(!us_ein("12 3456789"), "EINs are written with a dash");
        assert!(!us_ein("123-456789"), "wrong grouping");
        assert!(!us_ein("11-1111111"), "repeated digit");
    }

    #[test]
    fn aba_routing_known_answers() {
        assert!(aba_routing("021000021"));
        assert!(aba_routing("011000015"));
        assert!(!aba_routing("021000022"), "one digit changed");
        assert!(!aba_routing("000000000"), "all zeros");
        assert!(!aba_routing("131000022"), "prefix 13 is not assigned");
        assert!(!aba_routing("02100002"), "too short");
        assert!(!aba_routing("021-000-021"), "routing numbers are written plain");
    }

    #[test]
    fn uk_nhs_known_answers() {
        assert!(uk_nhs("9434765919"));
        assert!(uk_nhs("943 476 5919"));
        assert!(uk_nhs("943-476-5919"));
        assert!(!uk_nhs("9434765918"), "one digit changed");
        assert!(!uk_nhs("943 476-5919"), "mixed separators");
        assert!(!uk_nhs("94347659190"), "too long");
        assert!(!uk_nhs("1111111111"), "repeated digit, though its check digit fits");
    }

    #[test]
    fn uk_nhs_rejects_check_digit_ten() {
        // 100000001x: weighted sum 10 + 2 = 12, remainder 1, check 10, which is never issued.
        for last in 0..=9 {
            assert!(!uk_nhs(&format!("100000001{last}")));
        }
    }

    #[test]
    fn uk_nino_known_answers() {
        for valid in ["AB123456C", "ab123456c", "AB 12 34 56 C", "AB123456 C", "AB 123456 C", "AB 12 34 56C"]
        {
            assert!(uk_nino(valid), "{valid}");
        }
        for invalid in [
            "QQ123456C",    // Q is never a prefix letter (HMRC's own placeholder)
            "DA123456C",    // D first
            "AO123456C",    // O second
            "GB123456A",    // unissued prefix
            "ZZ123456A",    // unissued prefix
            "AB123456E",    // suffix beyond D
            "AB123456",     // suffix required
            "AB12345C",     // five digits
            "AB 1234 56 C", // uneven pairs
            "AB12 34 56 C", // pairs spaced but prefix not
            "AB  123456C",  // doubled space
            " AB123456C",   // leading space
            "AB123456CD",   // too long
        ] {
            assert!(!uk_nino(invalid), "{invalid}");
        }
    }

    #[test]
    fn aadhaar_known_answers() {
        assert!(verhoeff(&digits("2363")), "the Verhoeff textbook example");
        assert!(aadhaar("234123412346"));
        assert!(aadhaar("2341 2341 2346"));
        assert!(aadhaar("2341-2341-2346"));
        assert!(!aadhaar("234123412347"), "one digit changed");
        assert!(!aadhaar("243123412346"), "adjacent digits swapped");
        assert!(!aadhaar("2341 2341-2346"), "mixed separators");
        assert!(!aadhaar("23412341234"), "too short");
        assert!(!aadhaar("134123412346"), "first digit 1");
        assert!(!aadhaar("2341 23412346"), "irregular grouping");
    }

    #[test]
    fn aadhaar_rejects_repeated_digits_even_if_verhoeff_passes() {
        for digit in 2..=9 {
            assert!(!aadhaar(&digit.to_string().repeat(12)));
        }
    }

    #[test]
    fn in_pan_known_answers() {
        assert!(in_pan("ABCPE1234F"));
        assert!(in_pan("AAACT1234A"));
        assert!(!in_pan("ABCDE1234F"), "D is not a holder type");
        assert!(!in_pan("abcpe1234f"), "lowercase");
        assert!(!in_pan("ABCPE12345"), "last must be a letter");
        assert!(!in_pan("ABCPE1234"), "too short");
        assert!(!in_pan("ABCPÉ1234"), "non-ASCII");
    }

    #[test]
    fn bitcoin_legacy_addresses() {
        assert!(bitcoin_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"));
        assert!(bitcoin_address("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"));
        assert!(bitcoin_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"), "the genesis address");
        assert!(!bitcoin_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"), "one character changed");
        assert!(!bitcoin_address("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLY"), "case changed");
        assert!(!bitcoin_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN"), "truncated");
        assert!(!bitcoin_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNV0"), "0 is not base58");
        assert!(!bitcoin_address("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"), "testnet version byte");
        assert!(!bitcoin_address(""));
    }

    #[test]
    fn bitcoin_segwit_addresses() {
        for valid in [
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297",
            // BIP-350 valid vectors for mainnet.
            "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
            "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3",
            "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
            "BC1SW50QGDZ25J",
            "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs",
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        ] {
            assert!(bitcoin_address(valid), "{valid}");
        }
    }

    #[test]
    fn bitcoin_segwit_lookalikes() {
        for invalid in [
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdp", // checksum character changed
            "bc1qAr0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", // mixed case
            "tb1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", // testnet
            // BIP-350 invalid vectors.
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", // bech32 for v1
            "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL", // bad checksum
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",                     // bech32m for v0
            "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4", // bad character
            "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R", // version 17
            "bc1pw5dgrnzv",                                                   // 1-byte program
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav", // 41 bytes
            "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",                           // 16-byte v0 program
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf", // 5 padding bits
            "bc1gmk9yu",                                                      // empty data
            "bc1",
        ] {
            assert!(!bitcoin_address(invalid), "{invalid}");
        }
    }

    #[test]
    fn ethereum_address_known_answers() {
        assert!(ethereum_address("0x52908400098527886E0F7030069857D2E4169EE7"));
        assert!(ethereum_address("0x52908400098527886e0f7030069857d2e4169ee7"));
        assert!(!ethereum_address("0x52908400098527886E0F7030069857D2E4169EE"), "39 digits");
        assert!(!ethereum_address("0x52908400098527886E0F7030069857D2E4169EE77"), "41 digits");
        assert!(!ethereum_address("0x52908400098527886E0F7030069857D2E4169EEG"), "not hex");
        assert!(!ethereum_address("52908400098527886E0F7030069857D2E4169EE7"), "no prefix");
        assert!(!ethereum_address("0X52908400098527886E0F7030069857D2E4169EE7"), "capital X");
    }

    #[test]
    fn ipv4_known_answers() {
        for valid in ["192.168.0.1", "0.0.0.0", "255.255.255.255", "10.0.0.0/8", "0.0.0.0/0", "1.2.3.4/32"] {
            assert!(ipv4(valid), "{valid}");
        }
        for invalid in [
            "192.168.01.1",
            "010.0.0.1",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/",
            "10.0.0.0/8/8",
            "1.2.3.4 ",
            "::1",
            "",
        ] {
            assert!(!ipv4(invalid), "{invalid}");
        }
    }

    #[test]
    fn ipv6_known_answers() {
        for valid in ["::1", "::", "2001:db8::1", "2001:db8::/32", "fe80::1/128", "::ffff:192.0.2.1"] {
            assert!(ipv6(valid), "{valid}");
        }
        for invalid in
            ["fe80::1%eth0", "fe80::1%1", "2001:db8::/129", "2001:db8::/032", "2001:db8:::1", "1.2.3.4", ""]
        {
            assert!(!ipv6(invalid), "{invalid}");
        }
    }

    #[test]
    fn mac_address_known_answers() {
        for valid in ["00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e", "001a.2b3c.4d5e", "ff:ff:ff:ff:ff:ff"] {
            assert!(mac_address(valid), "{valid}");
        }
        for invalid in [
            "00:1A-2B:3C:4D:5E",
            "00:00:00:00:00:00",
            "0000.0000.0000",
            "001A2B3C4D5E",
            "00:1A:2B:3C:4D",
            "0:1A:2B:3C:4D:5E",
            "00:1A:2B:3C:4D:5G",
            "001a.2b3c.4d5",
            "",
        ] {
            assert!(!mac_address(invalid), "{invalid}");
        }
    }

    #[test]
    fn shannon_entropy_known_answers() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("ab") - 1.0).abs() < 1e-12);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-12);
        assert!((shannon_entropy("0123456789abcdef") - 4.0).abs() < 1e-12);
    }

    #[test]
    fn looks_random_keeps_generated_secrets() {
        for secret in [
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "x7Gq9LmP2vR8tK4w",
            "3f786850e387550fdab836ed7e6dc881de23001b",
            "ghp_R4nd0mT0k3nV4lu3Xy9Zq8Wp7Lm6Kj5",
        ] {
            assert!(looks_random(secret), "{secret}");
        }
    }

    #[test]
    fn looks_random_drops_words_dates_and_placeholders() {
        for not_secret in [
            "short1A",                    // too short
            "abcdefghijklmnopqrstuvwxyz", // letters only
            "12345678901234567890",       // digits only
            "2024-01-15T10:30:00Z",       // timestamp
            "password12345678",           // word plus counting digits
            "mysecretvalue2024",          // mostly a lowercase word
            "aaaaaaaaaaaaaaaa1b",         // low entropy
            "x7Gq9LmP 2vR8tK4w",          // whitespace
            "x7Gq9LmP2vR8tK4wé",          // non-ASCII
        ] {
            assert!(!looks_random(not_secret), "{not_secret}");
        }
    }

    #[test]
    fn validators_never_panic_on_odd_input() {
        let odd = ["", " ", "-", "1", "é", "€€€€€€€€€€€€€€€€", "bc1é", "0x", "/", "%", "1 1", "::/", "ab"];
        for s in odd {
            let _ = (
                digits(s),
                luhn(s),
                card_issuer(s),
                payment_card(s),
                iban(s),
                us_ssn(s),
                us_itin(s),
                us_ein(s),
                aba_routing(s),
                uk_nhs(s),
                uk_nino(s),
                aadhaar(s),
                in_pan(s),
                bitcoin_address(s),
                ethereum_address(s),
                ipv4(s),
                ipv6(s),
                mac_address(s),
                shannon_entropy(s),
                looks_random(s),
            );
        }
    }
}
