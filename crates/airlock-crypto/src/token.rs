//! Bearer secrets: API keys and session tokens.
//!
//! A token reads `alk_<id>_<secret>` (API key) or `als_<id>_<secret>` (session): a type
//! prefix that secret scanners can recognise, the public id used to look the token up, and
//! 32 random bytes in base64url. Only a keyed hash of the whole token is stored; a presented
//! token is looked up by id and its hash compared in constant time.

use secrecy::{ExposeSecret, SecretString};

use crate::{Digest, KeyedHasher};

/// What a token authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An API key (`alk_`).
    ApiKey,
    /// A console session (`als_`).
    Session,
    /// A run's lease (`alr_`).
    Lease,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::ApiKey => "alk",
            TokenKind::Session => "als",
            TokenKind::Lease => "alr",
        }
    }

    fn domain(self) -> &'static str {
        match self {
            TokenKind::ApiKey => "api-key",
            TokenKind::Session => "session",
            TokenKind::Lease => "lease",
        }
    }
}

/// A presented token that is not of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the credential is not a well-formed Airlock token")]
pub struct TokenError;

const SECRET_BYTES: usize = 32;
const SECRET_CHARS: usize = 43; // base64url of 32 bytes, unpadded

/// A bearer token in full: public id plus secret.
pub struct SecretToken {
    kind: TokenKind,
    id: String,
    token: SecretString,
}

impl SecretToken {
    /// Mints a token for the record named `id` (the caller's generated, public identifier).
    #[must_use]
    pub fn generate(kind: TokenKind, id: &str) -> Self {
        let secret = crate::random_base64url(SECRET_BYTES);
        let token = format!("{}_{id}_{secret}", kind.prefix());
        Self { kind, id: id.to_owned(), token: SecretString::from(token) }
    }

    /// Splits a presented token into its id and secret, refusing anything malformed before
    /// any lookup happens. `id_valid` checks the id against the caller's id syntax.
    pub fn parse(
        kind: TokenKind,
        presented: &str,
        id_valid: impl Fn(&str) -> bool,
    ) -> Result<Self, TokenError> {
        let rest = presented
            .strip_prefix(kind.prefix())
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(TokenError)?;
        // The id contains exactly one `_` (`key_…`), and the secret may contain `_`, so the
        // split is by position: the secret is the final 43 characters after a separator.
        let split = rest.len().checked_sub(SECRET_CHARS + 1).ok_or(TokenError)?;
        let (id, sep_secret) = (rest.get(..split).ok_or(TokenError)?, rest.get(split..).ok_or(TokenError)?);
        let secret = sep_secret.strip_prefix('_').ok_or(TokenError)?;
        let secret_ok = secret.len() == SECRET_CHARS
            && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !secret_ok || !id_valid(id) {
            return Err(TokenError);
        }
        Ok(Self { kind, id: id.to_owned(), token: SecretString::from(presented.to_owned()) })
    }

    /// The public id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole token. Shown to its owner once, at creation; never stored or logged.
    #[must_use]
    pub fn expose(&self) -> &str {
        self.token.expose_secret()
    }

    /// The keyed hash stored in place of the token.
    #[must_use]
    pub fn hash(&self, hasher: &KeyedHasher) -> Digest {
        hasher.hash(self.kind.domain(), self.token.expose_secret().as_bytes())
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretToken({:?}, {}, ..)", self.kind, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_id(id: &str) -> bool {
        id.starts_with("key_") && id.len() == 36
    }

    const ID: &str = "key_0192f3a4b5c6d7e8f90a1b2c3d4e5f60";

    #[test]
    fn generated_tokens_parse_back() {
        for _ in 0..200 {
            let token = SecretToken::generate(TokenKind::ApiKey, ID);
            let parsed = SecretToken::parse(TokenKind::ApiKey, token.expose(), any_id).unwrap();
            assert_eq!(parsed.id(), ID);
            let hasher = KeyedHasher::new(vec![1u8; 32].into());
            assert!(parsed.hash(&hasher).ct_eq(&token.hash(&hasher)));
        }
    }

    #[test]
    fn a_session_token_is_not_an_api_key() {
        let token = SecretToken::generate(TokenKind::Session, ID);
        assert!(SecretToken::parse(TokenKind::ApiKey, token.expose(), any_id).is_err());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = SecretToken::generate(TokenKind::ApiKey, ID);
        let good = good.expose();
        let cases = [
            String::new(),
            "alk_".into(),
            "Bearer x".into(),
            format!("{good}x"),
            good[..good.len() - 1].to_string(),
            good.replacen("alk_", "alk-", 1),
            format!("{}!{}", &good[..good.len() - 1], ""),
            "alk_key_0192f3a4b5c6d7e8f90a1b2c3d4e5f60_ééééééééééééééééééééééééééééééééééééééééééé".into(),
        ];
        for case in cases {
            assert!(SecretToken::parse(TokenKind::ApiKey, &case, any_id).is_err(), "{case}");
        }
    }
}
