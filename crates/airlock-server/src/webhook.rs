//! Announcing new approval requests to a configured URL.
//!
//! The body is JSON; `airlock-timestamp` carries the Unix time and `airlock-signature` is
//! `v1=` followed by the hex HMAC-SHA256, under the configured secret, of
//! `<timestamp>.<body>`. A receiver recomputes it and rejects old timestamps, so a captured
//! notification can be neither forged nor replayed later. Delivery is best effort and never
//! delays or fails the request that caused it; failures are logged.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Computes the signature header value for `body` sent at `timestamp`.
#[must_use]
pub fn signature(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let mac = airlock_crypto::hmac_sha256(
        secret.expose_secret().as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    let hex = mac.to_hex();
    format!("v1={hex}")
}

/// Sends `event` to `url` in the background.
pub fn announce(client: reqwest::Client, url: String, secret: SecretString, event: Value) {
    tokio::spawn(async move {
        let body = event.to_string().into_bytes();
        let timestamp = airlock_types::Timestamp::now().as_millis() / 1000;
        let sent = client
            .post(&url)
            .timeout(Duration::from_secs(5))
            .header("content-type", "application/json")
            .header("airlock-timestamp", timestamp.to_string())
            .header("airlock-signature", signature(&secret, timestamp, &body))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::warn!(
                status = response.status().as_u16(),
                "approval webhook refused the notification"
            ),
            Err(error) => {
                tracing::warn!(error = %error.without_url(), "approval webhook could not be reached")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let secret = SecretString::from("a webhook secret of at least 32 bytes!".to_owned());
        let a = signature(&secret, 1_795_000_000, b"{\"a\":1}");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64);
        assert_ne!(a, signature(&secret, 1_795_000_001, b"{\"a\":1}"));
        assert_ne!(a, signature(&secret, 1_795_000_000, b"{\"a\":2}"));
        let other = SecretString::from("another webhook secret of 32+ bytes!!".to_owned());
        assert_ne!(a, signature(&other, 1_795_000_000, b"{\"a\":1}"));
    }
}
