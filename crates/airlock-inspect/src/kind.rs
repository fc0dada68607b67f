//! What a finding is: the built-in kinds of personal data and secrets, and the tenant's own
//! named kinds. A kind has a stable snake_case name (used in profiles, reports and audit
//! counts) and an upper-case label (used inside tokens).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::InspectError;

macro_rules! builtin_kinds {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $label:literal, $secret:literal; )*) => {
        /// A kind of personal data or secret Airlock recognises out of the box.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Builtin {
            $( $(#[$doc])* $variant, )*
        }

        impl Builtin {
            /// Every built-in kind, in a stable order.
            pub const ALL: &'static [Builtin] = &[$(Builtin::$variant,)*];

            /// The stable snake_case name.
            pub const fn name(self) -> &'static str {
                match self { $(Builtin::$variant => $name,)* }
            }

            /// The upper-case label used inside tokens.
            pub const fn label(self) -> &'static str {
                match self { $(Builtin::$variant => $label,)* }
            }

            /// Whether the kind is a credential rather than personal data.
            pub const fn is_secret(self) -> bool {
                match self { $(Builtin::$variant => $secret,)* }
            }

            /// The kind with this name.
            pub fn from_name(name: &str) -> Option<Builtin> {
                match name { $($name => Some(Builtin::$variant),)* _ => None }
            }

            fn from_label(label: &str) -> Option<Builtin> {
                match label { $($label => Some(Builtin::$variant),)* _ => None }
            }
        }
    };
}

builtin_kinds! {
    /// An e-mail address.
    Email => "email", "EMAIL", false;
    /// A telephone number, international or in a common national format.
    Phone => "phone", "PHONE", false;
    /// A payment card number (issuer range and Luhn checked).
    PaymentCard => "payment_card", "CARD", false;
    /// An IBAN (per-country length and mod-97 checked).
    Iban => "iban", "IBAN", false;
    /// A bank account number, in context.
    BankAccount => "bank_account", "ACCOUNT", false;
    /// A US ABA routing number, in context (checksum checked).
    AbaRouting => "aba_routing", "ROUTING", false;
    /// A US social security number (invalid ranges excluded).
    UsSsn => "us_ssn", "SSN", false;
    /// A US employer identification number.
    UsEin => "us_ein", "EIN", false;
    /// A US individual taxpayer identification number.
    UsItin => "us_itin", "ITIN", false;
    /// A UK national insurance number.
    UkNino => "uk_nino", "NINO", false;
    /// A UK NHS number (mod-11 checked).
    UkNhs => "uk_nhs", "NHS", false;
    /// An Indian Aadhaar number (Verhoeff checked).
    InAadhaar => "in_aadhaar", "AADHAAR", false;
    /// An Indian permanent account number.
    InPan => "in_pan", "PAN", false;
    /// A passport number, in context.
    Passport => "passport", "PASSPORT", false;
    /// A date of birth, in context.
    DateOfBirth => "date_of_birth", "DOB", false;
    /// An IPv4 or IPv6 address.
    IpAddress => "ip_address", "IP", false;
    /// A MAC address.
    MacAddress => "mac_address", "MAC", false;
    /// A URL.
    Url => "url", "URL", false;
    /// A domain name.
    Domain => "domain", "DOMAIN", false;
    /// A cryptocurrency wallet address (Bitcoin checksums checked).
    CryptoWallet => "crypto_wallet", "WALLET", false;
    /// A person's name (dictionary and context rules; limited recall).
    PersonName => "person_name", "NAME", false;
    /// A postal address or postcode (context rules; limited recall).
    PostalAddress => "postal_address", "ADDRESS", false;
    /// An API key or access token recognised by its provider's format.
    ApiKey => "api_key", "APIKEY", true;
    /// A JSON Web Token.
    Jwt => "jwt", "JWT", true;
    /// A PEM private key block.
    PrivateKey => "private_key", "PRIVKEY", true;
    /// The password of a connection string or URL.
    ConnectionPassword => "connection_password", "DSNPASS", true;
    /// A password or high-entropy token in credential context (`password=`, `Bearer`, …).
    Credential => "credential", "CREDENTIAL", true;
}

/// A finding's kind: built in, or named by the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A built-in kind.
    Builtin(Builtin),
    /// A tenant-defined kind (a pattern or a dictionary).
    Custom(CustomName),
}

impl Kind {
    /// The stable snake_case name.
    pub fn name(&self) -> &str {
        match self {
            Kind::Builtin(b) => b.name(),
            Kind::Custom(c) => c.as_str(),
        }
    }

    /// The upper-case label used inside tokens.
    pub fn label(&self) -> String {
        match self {
            Kind::Builtin(b) => b.label().to_owned(),
            Kind::Custom(c) => c.as_str().to_ascii_uppercase(),
        }
    }

    /// Parses a kind name: a built-in name, or else a valid custom name.
    pub fn parse(name: &str) -> Result<Kind, InspectError> {
        match Builtin::from_name(name) {
            Some(b) => Ok(Kind::Builtin(b)),
            None => CustomName::parse(name).map(Kind::Custom),
        }
    }
}

impl From<Builtin> for Kind {
    fn from(b: Builtin) -> Self {
        Kind::Builtin(b)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Kind::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The name of a tenant-defined kind: 1–24 characters of lower-case ASCII letters, digits
/// and `_`, starting with a letter, and not the name of a built-in kind. Its token label is
/// the upper-case form, so names stay distinct inside tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomName(Arc<str>);

impl CustomName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 24;

    /// Checks a name.
    pub fn parse(name: &str) -> Result<CustomName, InspectError> {
        let bad = |why: &str| InspectError::Config(format!("kind name `{name}` {why}"));
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(bad("must be 1 to 24 characters"));
        }
        let mut chars = name.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_lowercase())
            || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(bad("must be lower-case letters, digits and `_`, starting with a letter"));
        }
        if Builtin::from_name(name).is_some() || Builtin::from_label(&name.to_ascii_uppercase()).is_some() {
            return Err(bad("is taken by a built-in kind"));
        }
        Ok(CustomName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(*b));
            assert_eq!(Builtin::from_label(b.label()), Some(*b));
        }
        assert_eq!(Kind::parse("email").ok(), Some(Kind::Builtin(Builtin::Email)));
        assert_eq!(Kind::parse("matter_id").map(|k| k.label()).ok(), Some("MATTER_ID".to_owned()));
    }

    #[test]
    fn custom_names_are_checked() {
        for bad in ["", "Matter", "9lives", "a-b", "card", "email", "x".repeat(25).as_str()] {
            assert!(CustomName::parse(bad).is_err(), "{bad}");
        }
    }
}
