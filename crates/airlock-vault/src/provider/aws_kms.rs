//! A KEK in AWS KMS, or a KMS-compatible server at another endpoint. The key never leaves
//! KMS, which wraps and unwraps DEKs (`TrentService.Encrypt` and `.Decrypt` of the JSON
//! protocol) with the DEK's owner and version as the encryption context.
//!
//! Credentials are the standard `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//! `AWS_SESSION_TOKEN`, read at connect. Every refusal fails closed as
//! [`VaultError::Unavailable`] with KMS's error type and message (a disabled or deleted key,
//! a denied or expired credential); only a ciphertext the key cannot open under this context
//! is [`VaultError::Decrypt`].
//!
//! Requests are signed with Signature Version 4, written here (one HMAC chain over a
//! canonical request, checked against AWS's published test vectors) rather than taken from
//! the `aws-sigv4` crate, which would bring 19 crates into this one's tree: the Smithy
//! runtime types, and second copies of `http` and `http-body`.

use std::collections::BTreeMap;
use std::path::Path;

use airlock_crypto::{hmac_sha256, sha256, to_hex};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::HeaderValue;
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, ConnectOptions, KekProvider, WrapContext, clip, describe_send_error, http_client, plain_var,
};
use crate::VaultError;

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A KMS key, reached with signed requests.
pub struct AwsKms {
    id: String,
    key_id: String,
    region: String,
    url: Url,
    /// The `Host` header, as signed.
    host: String,
    credentials: Credentials,
    client: reqwest::Client,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsKms({} in {})", self.id, self.region)
    }
}

/// An access key and its secret, with a session token for temporary credentials.
struct Credentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl AwsKms {
    /// Checks the configuration and reads the region (`region`, else `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`) and the credentials; `AWS_CA_BUNDLE` names a PEM bundle for an
    /// endpoint with a private CA. Nothing is sent yet.
    pub(super) fn connect(
        key_id: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Self, VaultError> {
        let key_id = key_id.trim();
        if key_id.is_empty() {
            return Err(config("`key_id` is empty".to_owned()));
        }
        let region = region
            .map(str::trim)
            .filter(|region| !region.is_empty())
            .map(str::to_owned)
            .or_else(|| plain_var(options, "AWS_REGION"))
            .or_else(|| plain_var(options, "AWS_DEFAULT_REGION"))
            .ok_or_else(|| {
                config("no region: set `region`, `AWS_REGION` or `AWS_DEFAULT_REGION`".to_owned())
            })?;
        if !region.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
            return Err(config(format!("`{region}` is not a region name")));
        }
        let endpoint = match endpoint.map(str::trim) {
            Some(endpoint) => endpoint.to_owned(),
            None if region.starts_with("cn-") => format!("https://kms.{region}.amazonaws.com.cn"),
            None => format!("https://kms.{region}.amazonaws.com"),
        };
        let url = Url::parse(&endpoint)
            .ok()
            .filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.username().is_empty()
                    && url.password().is_none()
                    && url.query().is_none()
                    && url.fragment().is_none()
            })
            .ok_or_else(|| {
                config(format!("`endpoint` `{endpoint}` is not an http(s) URL without credentials"))
            })?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(config(format!("`endpoint` `{endpoint}` names no host"))),
        };
        let ca_file = plain_var(options, "AWS_CA_BUNDLE");
        Ok(Self {
            id: format!("aws-kms:{key_id}"),
            key_id: key_id.to_owned(),
            region,
            url,
            host,
            credentials: Credentials::from_environment(options)?,
            client: http_client(ca_file.as_deref().map(Path::new))?,
        })
    }

    /// Sends one signed KMS request and reads its answer.
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &str,
        body: &impl Serialize,
        decrypting: bool,
    ) -> Result<T, VaultError> {
        let unavailable = |reason: String| VaultError::Unavailable { kek: self.id.clone(), reason };
        let payload = serde_json::to_vec(body)
            .map_err(|err| unavailable(format!("cannot encode the request: {err}")))?;
        let target = format!("TrentService.{operation}");
        let date_time = amz_date(time::OffsetDateTime::now_utc());
        let mut headers = vec![
            ("content-type", CONTENT_TYPE),
            ("host", self.host.as_str()),
            ("x-amz-date", date_time.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token", token.expose_secret()));
        }
        let scope = Scope { date_time: &date_time, region: &self.region, service: "kms" };
        let request = Request {
            method: "POST",
            path: self.url.path(),
            query: "",
            headers: &headers,
            payload: &payload,
        };
        let authorization = authorization(&self.credentials, &scope, &request);
        headers.push(("authorization", authorization.as_str()));
        let mut sending = self.client.post(self.url.clone());
        for (name, value) in headers {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| unavailable(format!("the `{name}` header is not a valid header value")))?;
            value.set_sensitive(matches!(name, "authorization" | "x-amz-security-token"));
            sending = sending.header(name, value);
        }
        let response =
            sending.body(payload).send().await.map_err(|err| unavailable(describe_send_error(&err)))?;
        let status = response.status();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|err| unavailable(describe_send_error(&err)))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| {
                unavailable(format!("unexpected answer to {operation} (HTTP {status}): not KMS's JSON"))
            });
        }
        Err(refused(&self.id, status, error_type.as_deref(), &body, decrypting))
    }
}

fn config(what: String) -> VaultError {
    VaultError::Config(format!("aws_kms: {what}"))
}

impl Credentials {
    fn from_environment(options: &ConnectOptions) -> Result<Self, VaultError> {
        let access_key_id = plain_var(options, "AWS_ACCESS_KEY_ID");
        let secret = |name: &str| {
            options
                .var(name)
                .map(|value| SecretString::from(value.expose_secret().trim().to_owned()))
                .filter(|value| !value.expose_secret().is_empty())
        };
        let secret_access_key = secret("AWS_SECRET_ACCESS_KEY");
        let session_token = secret("AWS_SESSION_TOKEN");
        let (access_key_id, secret_access_key) = match (access_key_id, secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => (access_key_id, secret_access_key),
            (access_key_id, secret_access_key) => {
                let missing: Vec<&str> = [
                    access_key_id.is_none().then_some("`AWS_ACCESS_KEY_ID`"),
                    secret_access_key.is_none().then_some("`AWS_SECRET_ACCESS_KEY`"),
                ]
                .into_iter()
                .flatten()
                .collect();
                return Err(config(format!("no credentials: set {}", missing.join(" and "))));
            }
        };
        let printable = |value: &str| value.bytes().all(|byte| byte.is_ascii_graphic());
        if !printable(&access_key_id) {
            return Err(config("`AWS_ACCESS_KEY_ID` holds characters no access key has".to_owned()));
        }
        if session_token.as_ref().is_some_and(|token| !printable(token.expose_secret())) {
            return Err(config("`AWS_SESSION_TOKEN` holds characters no session token has".to_owned()));
        }
        Ok(Self { access_key_id, secret_access_key, session_token })
    }
}

/// The error a refused request becomes. KMS says what went wrong in `__type` and `message`
/// (its JSON protocol), or in the `x-amzn-errortype` header; some KMS-compatible servers
/// answer authentication failures in AWS's XML error format instead.
fn refused(
    kek: &str,
    status: StatusCode,
    error_type: Option<&str>,
    body: &[u8],
    decrypting: bool,
) -> VaultError {
    #[derive(Deserialize)]
    struct JsonRefusal {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let json = serde_json::from_slice::<JsonRefusal>(body).ok();
    let text = String::from_utf8_lossy(body);
    let kind = json
        .as_ref()
        .and_then(|refusal| refusal.kind.clone())
        .or_else(|| error_type.map(str::to_owned))
        .or_else(|| between(&text, "<Code>", "</Code>").map(str::to_owned));
    let message = json
        .and_then(|refusal| refusal.message)
        .or_else(|| between(&text, "<Message>", "</Message>").map(str::to_owned));
    // `com.amazonaws.kms#DisabledException`, or `DisabledException:http://...` in the header.
    let kind = kind.map(|kind| {
        let kind = kind.rsplit('#').next().unwrap_or_default();
        kind.split(':').next().unwrap_or_default().to_owned()
    });
    if decrypting && matches!(kind.as_deref(), Some("InvalidCiphertextException" | "IncorrectKeyException")) {
        return VaultError::Decrypt("the data key");
    }
    let said = match (kind, message) {
        (Some(kind), Some(message)) => format!("{kind}: {}", clip(&message)),
        (Some(kind), None) => kind,
        (None, _) => status.canonical_reason().unwrap_or("no reason given").to_owned(),
    };
    VaultError::Unavailable { kek: kek.to_owned(), reason: format!("{said} (HTTP {})", status.as_u16()) }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let rest = text.get(start..)?;
    rest.get(..rest.find(close)?)
}

/// The DEK's owner and version, as KMS binds them: an encryption context that must match
/// exactly at decryption.
#[derive(Serialize)]
struct EncryptionContext<'a> {
    airlock_owner: &'a str,
    airlock_dek_version: String,
}

impl<'a> From<WrapContext<'a>> for EncryptionContext<'a> {
    fn from(at: WrapContext<'a>) -> Self {
        Self { airlock_owner: at.owner, airlock_dek_version: at.version.to_string() }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptRequest<'a> {
    key_id: &'a str,
    plaintext: &'a str,
    encryption_context: EncryptionContext<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Encrypted {
    ciphertext_blob: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptRequest<'a> {
    ciphertext_blob: &'a str,
    key_id: &'a str,
    encryption_context: EncryptionContext<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Decrypted {
    plaintext: String,
}

impl KekProvider for AwsKms {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        dek: &'a SecretBox<[u8; 32]>,
    ) -> BoxFuture<'a, Result<Vec<u8>, VaultError>> {
        Box::pin(async move {
            let plaintext = SecretString::from(STANDARD.encode(dek.expose_secret()));
            let request = EncryptRequest {
                key_id: &self.key_id,
                plaintext: plaintext.expose_secret(),
                encryption_context: at.into(),
            };
            let answer: Encrypted = self.call("Encrypt", &request, false).await?;
            STANDARD.decode(answer.ciphertext_blob).map_err(|_| VaultError::Unavailable {
                kek: self.id.clone(),
                reason: "unexpected answer to Encrypt: `CiphertextBlob` is not base64".to_owned(),
            })
        })
    }

    fn unwrap<'a>(
        &'a self,
        at: WrapContext<'a>,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<SecretBox<[u8; 32]>, VaultError>> {
        Box::pin(async move {
            let blob = STANDARD.encode(wrapped);
            // Naming the key makes KMS refuse a blob wrapped by any other key.
            let request = DecryptRequest {
                ciphertext_blob: &blob,
                key_id: &self.key_id,
                encryption_context: at.into(),
            };
            let answer: Decrypted = self.call("Decrypt", &request, true).await?;
            let plaintext = SecretString::from(answer.plaintext);
            let bytes = STANDARD
                .decode(plaintext.expose_secret())
                .map_err(|_| VaultError::Decrypt("the data key"))?;
            let key = <[u8; 32]>::try_from(bytes).map_err(|_| VaultError::Decrypt("the data key"))?;
            Ok(SecretBox::new(Box::new(key)))
        })
    }
}

// Signature Version 4: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html

/// What a signature covers of a request.
struct Request<'a> {
    method: &'a str,
    /// The URI path, already percent-encoded (KMS's is `/`).
    path: &'a str,
    /// The query, already in canonical form (KMS requests have none).
    query: &'a str,
    /// Every header to sign, `host` and `x-amz-date` among them; names in any case.
    headers: &'a [(&'a str, &'a str)],
    payload: &'a [u8],
}

/// When, where and for which service a signature holds.
struct Scope<'a> {
    /// `YYYYMMDD'T'HHMMSS'Z'`, as sent in `x-amz-date`.
    date_time: &'a str,
    region: &'a str,
    service: &'a str,
}

impl Scope<'_> {
    fn date(&self) -> &str {
        self.date_time.get(..8).unwrap_or(self.date_time)
    }

    fn credential_scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date(), self.region, self.service)
    }
}

/// `x-amz-date`'s format.
fn amz_date(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The canonical request, and the list of signed headers.
fn canonical_request(request: &Request<'_>) -> (String, String) {
    // Names lowercased and sorted; values trimmed, inner runs of spaces collapsed, and the
    // values of a repeated header joined by commas.
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers {
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.entry(name.to_ascii_lowercase()).or_default().push(value);
    }
    let canonical_headers: String =
        headers.iter().map(|(name, values)| format!("{name}:{}\n", values.join(","))).collect();
    let signed_headers = headers.keys().map(String::as_str).collect::<Vec<_>>().join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        request.query,
        sha256(request.payload).to_hex()
    );
    (canonical, signed_headers)
}

fn string_to_sign(scope: &Scope<'_>, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        scope.date_time,
        scope.credential_scope(),
        sha256(canonical_request.as_bytes()).to_hex()
    )
}

/// The `Authorization` header for `request`.
fn authorization(credentials: &Credentials, scope: &Scope<'_>, request: &Request<'_>) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let secret = SecretString::from(format!("AWS4{}", credentials.secret_access_key.expose_secret()));
    let key = [scope.date(), scope.region, scope.service, "aws4_request"]
        .iter()
        .fold(secret.expose_secret().as_bytes().to_vec(), |key, part| {
            hmac_sha256(&key, &[part.as_bytes()]).as_bytes().to_vec()
        });
    let signature = hmac_sha256(&key, &[string_to_sign(scope, &canonical).as_bytes()]);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={}",
        credentials.access_key_id,
        scope.credential_scope(),
        to_hex(signature.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // AWS's Signature Version 4 test suite (aws-sig-v4-test-suite): every case signs with
    // these credentials, at this time, for this scope.
    fn suite_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned()),
            session_token: None,
        }
    }

    const SUITE_SCOPE: Scope<'static> =
        Scope { date_time: "20150830T123600Z", region: "us-east-1", service: "service" };

    fn check(request: &Request<'_>, canonical: &str, to_sign: &str, signature: &str) {
        let (built, _) = canonical_request(request);
        assert_eq!(built, canonical);
        assert_eq!(string_to_sign(&SUITE_SCOPE, &built), to_sign);
        let (_, signed_headers) = canonical_request(request);
        assert_eq!(
            authorization(&suite_credentials(), &SUITE_SCOPE, request),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders={signed_headers}, Signature={signature}"
            )
        );
    }

    #[test]
    fn sigv4_test_suite_post_vanilla() {
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
            payload: b"",
        };
        check(
            &request,
            "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        );
    }

    #[test]
    fn sigv4_test_suite_post_x_www_form_urlencoded() {
        // A body and a content type, as KMS requests have.
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            payload: b"Param1=value1",
        };
        check(
            &request,
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        );
    }

    #[test]
    fn header_values_are_trimmed_and_repeated_headers_joined() {
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[("My-Header1", "  a   b  "), ("my-header1", "c"), ("Host", "h")],
            payload: b"",
        };
        let (canonical, signed) = canonical_request(&request);
        assert!(canonical.contains("\nhost:h\nmy-header1:a b,c\n\n"), "{canonical}");
        assert_eq!(signed, "host;my-header1");
    }

    #[test]
    fn amz_date_is_utc_and_fixed_width() {
        let at = time::OffsetDateTime::from_unix_timestamp(1_440_938_160).unwrap();
        assert_eq!(amz_date(at), "20150830T123600Z");
        assert_eq!(amz_date(at.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap())), "20150830T123600Z");
    }

    #[test]
    fn refusals_fail_closed_and_only_ciphertext_refusals_are_decrypt_errors() {
        let refuse = |body: &str, decrypting| {
            refused("aws-kms:k", StatusCode::BAD_REQUEST, None, body.as_bytes(), decrypting)
        };
        // The documented JSON error bodies of Decrypt.
        for kind in [
            "DisabledException",
            "KMSInvalidStateException",
            "NotFoundException",
            "KeyUnavailableException",
            "AccessDeniedException",
            "com.amazonaws.kms#DisabledException",
        ] {
            let body = format!(
                r#"{{"__type":"{kind}","message":"arn:aws:kms:us-east-1:111122223333:key/k is disabled."}}"#
            );
            match refuse(&body, true) {
                VaultError::Unavailable { kek, reason } => {
                    assert_eq!(kek, "aws-kms:k");
                    assert!(reason.starts_with(kind.rsplit('#').next().unwrap()), "{reason}");
                    assert!(reason.ends_with("is disabled. (HTTP 400)"), "{reason}");
                }
                other => panic!("{kind}: {other:?}"),
            }
        }
        for kind in ["InvalidCiphertextException", "IncorrectKeyException"] {
            let body = format!(r#"{{"__type":"{kind}"}}"#);
            assert!(matches!(refuse(&body, true), VaultError::Decrypt(_)), "{kind}");
            assert!(matches!(refuse(&body, false), VaultError::Unavailable { .. }), "{kind}");
        }
        // Other ways of saying it: the header, AWS's XML, nothing at all.
        let header = refused(
            "aws-kms:k",
            StatusCode::BAD_REQUEST,
            Some("UnrecognizedClientException:http://internal.amazon.com/coral/"),
            b"",
            true,
        );
        assert!(
            matches!(header, VaultError::Unavailable { reason, .. } if reason == "UnrecognizedClientException (HTTP 400)")
        );
        let xml = "<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>Check your key.</Message>\
                   </Error></Errors></ErrorResponse>";
        let xml = refused("aws-kms:k", StatusCode::FORBIDDEN, None, xml.as_bytes(), true);
        assert!(
            matches!(xml, VaultError::Unavailable { reason, .. } if reason == "SignatureDoesNotMatch: Check your key. (HTTP 403)")
        );
        let bare = refused("aws-kms:k", StatusCode::SERVICE_UNAVAILABLE, None, b"<html>", true);
        assert!(
            matches!(bare, VaultError::Unavailable { reason, .. } if reason == "Service Unavailable (HTTP 503)")
        );
    }
}
