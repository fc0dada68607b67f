//! The `airlock` command: run the server, administer the data directory, and try content
//! inspection offline.
//!
//! Administrative commands act directly on the data directory (SQLite allows them to run
//! beside a live server); whoever can read the directory already holds its secrets, so they
//! act as the platform operator. The configuration is read exactly as `serve` reads it, so
//! both agree on where the data is and which server key protects it.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks on stdout and stderr"
)]

mod bench;
mod bench_gateway;
mod bench_keys;
mod cli;
mod duration;
mod export;
mod inspect;
mod keys;
mod mcp_stdio;
mod scenarios;

use std::process::ExitCode;

/// Runs the command line and maps the outcome to an exit code: 0 on success, 1 on a failed
/// command, 2 on a configuration problem (for `airlock inspect`, a profile, key or mapping it
/// cannot use), 3 when `airlock inspect` blocked or flagged the text.
#[must_use]
pub fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(config) = error.downcast_ref::<airlock_server::ConfigError>() {
                eprintln!("airlock: {config}");
                return ExitCode::from(2);
            }
            if let Some(status) = error.downcast_ref::<inspect::StatusError>() {
                eprintln!("airlock: {status}");
                return ExitCode::from(status.code());
            }
            eprintln!("airlock: {error:#}");
            ExitCode::FAILURE
        }
    }
}
