//! A KEK in an environment variable, for secret stores that inject variables (Kubernetes
//! secrets, systemd credentials, CI). The variable is read once, at connect; errors name
//! the variable and never show its value.

use secrecy::ExposeSecret;

use super::{ConnectOptions, LocalKek};
use crate::VaultError;

/// Reads the KEK from `variable`: a base64 256-bit key, as a key file holds it.
pub(super) fn connect(variable: &str, options: &ConnectOptions) -> Result<LocalKek, VaultError> {
    let value = options
        .var(variable)
        .ok_or_else(|| VaultError::Config(format!("environment variable `{variable}` is not set")))?;
    LocalKek::from_base64("env", value.expose_secret(), &format!("environment variable `{variable}`"))
}
