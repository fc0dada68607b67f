//! OAuth 2.0 access tokens for the cloud providers (Azure Key Vault, Google Cloud KMS): a cache
//! that fetches a token once for all callers and replaces it shortly before it expires or when
//! the service refuses it, and the reading of token endpoints' answers.
//!
//! Tokens are bearer credentials: they are held as `SecretString`s, sent as sensitive header
//! values, and never put in an error. Token endpoints' own error text (RFC 6749 §5.2
//! `error` and `error_description`) is, and says nothing secret.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::clip;
use crate::VaultError;

/// A token as a token endpoint handed it out.
pub(super) struct Fresh {
    pub token: SecretString,
    /// How long it stays valid, when the endpoint said.
    pub lifetime: Option<Duration>,
}

/// How long a token the endpoint gave no lifetime for is used (a refusal replaces it sooner).
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(300);

/// How long before its expiry a token is replaced, at most: Azure's SDKs refresh five minutes
/// ahead. A short-lived token is replaced halfway through its life.
const MOST_AHEAD: Duration = Duration::from_secs(300);

/// One provider's current token.
#[derive(Default)]
pub(super) struct TokenCache {
    // Held while a token is fetched, so concurrent callers wait for that fetch instead of each
    // asking the token endpoint (which IMDS and the metadata server rate-limit).
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<(SecretString, Instant)>,
    /// When the last fetch failed, and why.
    failed: Option<(Instant, String)>,
}

impl TokenCache {
    /// The cached token, or a new one from `fetch` when there is none or it is due for
    /// replacement. Callers that waited for a fetch that failed get its error rather than
    /// queueing another wait on an endpoint that is down.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<SecretString, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fresh, String>>,
    {
        let asked = Instant::now();
        let mut state = self.state.lock().await;
        if let Some((token, replace_at)) = &state.token
            && Instant::now() < *replace_at
        {
            return Ok(token.clone());
        }
        if let Some((failed_at, reason)) = &state.failed
            && *failed_at >= asked
        {
            return Err(reason.clone());
        }
        match fetch().await {
            Ok(fresh) => {
                let lifetime = fresh.lifetime.unwrap_or(UNKNOWN_LIFETIME);
                let replace_at = Instant::now() + lifetime - (lifetime / 2).min(MOST_AHEAD);
                state.token = Some((fresh.token.clone(), replace_at));
                state.failed = None;
                Ok(fresh.token)
            }
            Err(reason) => {
                state.token = None;
                state.failed = Some((Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }

    /// Drops `refused`, a token the service answered 401 to, so that the next [`TokenCache::get`]
    /// fetches another. A token another caller has already replaced it with is kept.
    pub async fn forget(&self, refused: &SecretString) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|(token, _)| token.expose_secret() == refused.expose_secret()) {
            state.token = None;
        }
    }
}

/// `Authorization: Bearer <token>`, marked sensitive so that it is never logged.
pub(super) fn bearer(token: &SecretString) -> Result<HeaderValue, String> {
    let value = SecretString::from(format!("Bearer {}", token.expose_secret()));
    let mut header = HeaderValue::from_str(value.expose_secret())
        .map_err(|_| "the access token is not a valid header value".to_owned())?;
    header.set_sensitive(true);
    Ok(header)
}

/// A token endpoint's answer: Microsoft Entra ID's and Google's metadata server's give
/// `expires_in` as a number, Azure's IMDS as a string, and App Service only `expires_on`
/// (seconds since the epoch, as a string).
#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    expires_on: Option<Value>,
}

/// Reads a successful token endpoint's answer.
pub(super) fn read_answer(body: &[u8]) -> Result<Fresh, String> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| "unexpected answer: not a token endpoint's JSON".to_owned())?;
    let token = answer
        .access_token
        .map(SecretString::from)
        .filter(|token| !token.expose_secret().trim().is_empty())
        .ok_or_else(|| "unexpected answer: no `access_token`".to_owned())?;
    let lifetime =
        match (answer.expires_in.as_ref().and_then(seconds), answer.expires_on.as_ref().and_then(seconds)) {
            // Relative, so immune to a skewed clock.
            (Some(expires_in), _) => Some(Duration::from_secs(expires_in)),
            (None, Some(expires_on)) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                Some(Duration::from_secs(expires_on.saturating_sub(now)))
            }
            (None, None) => None,
        };
    Ok(Fresh { token, lifetime })
}

/// A count of seconds, as a JSON number or a string of digits.
fn seconds(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// What a token endpoint that refused said: RFC 6749's `error` and `error_description`, else
/// its text if short, else the status's reason; then the status.
pub(super) fn refusal(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        error: Option<Value>,
        error_description: Option<String>,
    }
    let said = match serde_json::from_slice::<Refusal>(body) {
        Ok(Refusal { error: Some(Value::String(error)), error_description: Some(description) }) => {
            format!("{error}: {}", clip(&description))
        }
        Ok(Refusal { error: Some(Value::String(error)), error_description: None }) => error,
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if !text.is_empty() && text.len() <= 300 && !text.starts_with('<') {
                clip(text)
            } else {
                status.canonical_reason().unwrap_or("no reason given").to_owned()
            }
        }
    };
    format!("{said} (HTTP {})", status.as_u16())
}

/// The client for metadata endpoints (Azure's IMDS and App Service identity endpoint, Google's
/// metadata server): the shared client's bounds, and never a proxy, which would see the
/// requests and the tokens they return (and could not reach a link-local address anyway).
pub(super) fn metadata_client() -> Result<reqwest::Client, VaultError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| VaultError::Config(format!("cannot set up an HTTP client: {err}")))
}

/// `text` as the base URL of a service that will be sent credentials: one that may carry
/// them (see [`may_carry_credentials`]), with no user info, query or fragment. `field` names
/// the setting in the error.
pub(super) fn service_url(text: &str, field: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(text)
        .ok()
        .filter(|url| {
            may_carry_credentials(url)
                && url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none()
        })
        .ok_or_else(|| {
            format!(
                "`{field}` `{text}` is not an https URL without credentials (plain http only to this machine)"
            )
        })
}

/// Whether `url` may carry a credential: over HTTPS, or plain HTTP to this machine (for a
/// local proxy, an emulator or tests).
pub(super) fn may_carry_credentials(url: &reqwest::Url) -> bool {
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => true,
        ("http", Some(host)) => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn fresh(token: &str, lifetime: Option<u64>) -> Fresh {
        Fresh { token: SecretString::from(token.to_owned()), lifetime: lifetime.map(Duration::from_secs) }
    }

    #[tokio::test]
    async fn a_token_is_fetched_once_and_replaced_when_refused() {
        let cache = TokenCache::default();
        let first = cache.get(async || Ok(fresh("one", Some(3600)))).await.unwrap();
        assert_eq!(first.expose_secret(), "one");
        let again = cache.get(async || Err::<Fresh, _>("not called".to_owned())).await.unwrap();
        assert_eq!(again.expose_secret(), "one");
        // Forgetting a token that was already replaced keeps the replacement.
        cache.forget(&SecretString::from("zero".to_owned())).await;
        assert_eq!(cache.get(async || Err::<Fresh, _>("x".to_owned())).await.unwrap().expose_secret(), "one");
        cache.forget(&first).await;
        let second = cache.get(async || Ok(fresh("two", None))).await.unwrap();
        assert_eq!(second.expose_secret(), "two");
    }

    #[tokio::test]
    async fn a_token_is_replaced_halfway_through_a_short_life() {
        let cache = TokenCache::default();
        cache.get(async || Ok(fresh("short", Some(0)))).await.unwrap();
        let next = cache.get(async || Ok(fresh("next", Some(3600)))).await.unwrap();
        assert_eq!(next.expose_secret(), "next");
        let failed = cache.get(async || Err::<Fresh, _>("down".to_owned())).await;
        assert!(failed.is_ok(), "a valid token needs no fetch");
    }

    #[test]
    fn answers_give_lifetimes_as_numbers_strings_or_instants() {
        let entra = read_answer(br#"{"token_type":"Bearer","expires_in":3599,"access_token":"t"}"#).unwrap();
        assert_eq!(entra.lifetime, Some(Duration::from_secs(3599)));
        let imds = read_answer(br#"{"access_token":"t","expires_in":"86399","expires_on":"1"}"#).unwrap();
        assert_eq!(imds.lifetime, Some(Duration::from_secs(86399)));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let app_service = format!(r#"{{"access_token":"t","expires_on":"{}"}}"#, now + 600);
        let lifetime = read_answer(app_service.as_bytes()).unwrap().lifetime.unwrap();
        assert!((Duration::from_secs(590)..=Duration::from_secs(600)).contains(&lifetime), "{lifetime:?}");
        assert_eq!(read_answer(br#"{"access_token":"t"}"#).unwrap().lifetime, None);
        assert!(read_answer(br#"{"access_token":""}"#).is_err());
        assert!(read_answer(b"<html>").is_err());
    }

    #[test]
    fn refusals_read_as_one_line() {
        let entra = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1","error_codes":[7000215]}"#;
        assert_eq!(
            refusal(StatusCode::UNAUTHORIZED, entra),
            "invalid_client: AADSTS7000215: Invalid client secret provided. Trace ID: 1 (HTTP 401)"
        );
        assert_eq!(
            refusal(StatusCode::FORBIDDEN, b"Missing Metadata-Flavor:Google header.\n"),
            "Missing Metadata-Flavor:Google header. (HTTP 403)"
        );
        assert_eq!(refusal(StatusCode::BAD_GATEWAY, b"<html></html>"), "Bad Gateway (HTTP 502)");
    }

    #[test]
    fn credentials_go_over_https_or_to_this_machine() {
        for url in [
            "https://login.microsoftonline.com",
            "http://127.0.0.1:8080",
            "http://[::1]:1",
            "http://localhost:3",
        ] {
            assert!(may_carry_credentials(&url.parse().unwrap()), "{url}");
        }
        for url in ["http://login.microsoftonline.com", "http://10.0.0.1", "ftp://127.0.0.1"] {
            assert!(!may_carry_credentials(&url.parse().unwrap()), "{url}");
        }
    }
}
