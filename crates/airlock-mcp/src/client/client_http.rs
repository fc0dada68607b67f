//! The HTTP client for streamable-HTTP tool servers: rmcp's reqwest (0.13) with Airlock's TLS
//! stack, rustls with the ring provider and the Mozilla roots compiled in, and no redirects
//! (a redirect could carry the credential to another origin).

use std::sync::Arc;

use super::McpClientError;

/// A client for one session.
pub(super) fn http_client() -> Result<reqwest13::Client, McpClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| McpClientError::Connect(format!("tls configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest13::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest13::redirect::Policy::none())
        .build()
        .map_err(|e| McpClientError::Connect(format!("http client: {e}")))
}
