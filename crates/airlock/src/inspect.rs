//! `airlock inspect`: content inspection on standard input, for trying a redaction profile
//! before enabling it and for scripts. No server, configuration or data directory is involved.
//!
//! `redact` never writes an original value anywhere but the `--mapping-out` file (owner-only);
//! `restore` streams, so its memory use does not grow with the input; `scan` reports injection
//! markers and prints the sanitised text.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use airlock_inspect::extract::{Candidate, extract};
use airlock_inspect::injection::{MarkerFinding, Scanner};
use airlock_inspect::{
    Kind, Mode, Profile, ProfileSpec, Redacted, RestoreMode, StreamRestorer, TokenEntry, Tokenizer,
};
use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use serde::Serialize;

/// The most `redact` and `scan` read from standard input: they hold the whole text.
const MAX_INPUT: usize = 64 * 1024 * 1024;

/// How much `restore` reads at a time.
const CHUNK: usize = 8 * 1024;

/// The length of a tokenization key in bytes.
const KEY_LEN: usize = 32;

#[derive(Debug, Subcommand)]
pub(crate) enum InspectCommand {
    /// Redact standard input with a profile and print the result.
    ///
    /// Exits 3 when the profile blocks the text (after printing it and naming the kinds),
    /// 2 when the profile or key file cannot be used.
    Redact(RedactArgs),
    /// Put the values of a `redact --mapping-out` file back into standard input, streaming.
    Restore(RestoreArgs),
    /// Score standard input for prompt-injection markers and print it sanitised.
    ///
    /// Exits 3 with `--fail-on-flag` when the text is flagged.
    Scan(ScanArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RedactArgs {
    /// `standard`, `aggressive`, `off`, or a `.json` or `.toml` file holding a profile
    /// (`{"mode": "standard", "kinds": {"payment_card": "block"}, "patterns": [..]}`).
    #[arg(long, default_value = "standard")]
    profile: String,
    /// A file holding the 32-byte tokenization key in base64, owner-only. Without it a random
    /// key is used, so tokens differ between runs.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Write the tokens and their original values here (JSON, owner-only), for `restore`.
    #[arg(long)]
    mapping_out: Option<PathBuf>,
    /// Print a JSON report (text, findings, counts, blocked) instead of the text; it never
    /// holds an original value.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The token mapping written by `redact --mapping-out`.
    #[arg(long)]
    mapping: PathBuf,
    /// Escape values for the inside of a JSON string, so a JSON document stays valid.
    #[arg(long)]
    json_string: bool,
    /// Say on standard error how many tokens were restored.
    #[arg(long)]
    verbose: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Print a JSON report (score, findings, sanitised text, candidate values) instead of the
    /// sanitised text.
    #[arg(long)]
    json: bool,
    /// Exit with status 3 when the text is flagged.
    #[arg(long)]
    fail_on_flag: bool,
}

/// An `inspect` outcome that ends the command with its own exit status; [`crate::main`]
/// prints it and exits with [`StatusError::code`].
#[derive(Debug)]
pub(crate) enum StatusError {
    /// A profile, key file or mapping that cannot be used (status 2, like a usage error).
    Usage(String),
    /// The profile blocks the text; the names of the kinds that did (status 3).
    Blocked(Vec<String>),
    /// `scan --fail-on-flag` flagged the text (status 3).
    Flagged(String),
}

impl StatusError {
    /// The process exit status.
    pub(crate) fn code(&self) -> u8 {
        match self {
            StatusError::Usage(_) => 2,
            StatusError::Blocked(_) | StatusError::Flagged(_) => 3,
        }
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Usage(message) => f.write_str(message),
            StatusError::Blocked(kinds) => {
                write!(f, "the profile blocks this text: it contains {}", kinds.join(", "))
            }
            StatusError::Flagged(summary) => f.write_str(summary),
        }
    }
}

impl std::error::Error for StatusError {}

/// Runs an `inspect` command.
pub(crate) fn run(command: &InspectCommand) -> anyhow::Result<()> {
    let result = match command {
        InspectCommand::Redact(args) => redact(args),
        InspectCommand::Restore(args) => restore(args),
        InspectCommand::Scan(args) => scan(args),
    };
    // A reader that stops early (`| head`) is not a failure of the command.
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The JSON report of `redact --json`: offsets, kinds and tokens, never original values.
#[derive(Serialize)]
struct RedactReport<'a> {
    text: &'a str,
    findings: &'a [Redacted],
    counts: BTreeMap<String, u64>,
    blocked: bool,
    blocking_kinds: &'a [Kind],
}

fn redact(args: &RedactArgs) -> anyhow::Result<()> {
    let profile = Profile::compile(load_profile(&args.profile)?)
        .map_err(|e| StatusError::Usage(format!("profile `{}`: {e}", args.profile)))?;
    let tokenizer = Tokenizer::new(match &args.key_file {
        Some(path) => read_key(path)?,
        None => {
            eprintln!("airlock: no `--key-file`, so tokens use a random key and will differ between runs");
            SecretSlice::from(airlock_crypto::random_array::<KEY_LEN>().to_vec())
        }
    });
    let text = read_stdin()?;
    let redaction = profile.redact(&text, &tokenizer);
    if let Some(path) = &args.mapping_out {
        write_mapping(path, &redaction.tokens)?;
    }
    let blocking_kinds = redaction.blocking_kinds();
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = RedactReport {
            text: &redaction.text,
            findings: &redaction.findings,
            counts: redaction.counts(),
            blocked: redaction.blocked(),
            blocking_kinds: &blocking_kinds,
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(redaction.text.as_bytes())?;
    }
    out.flush()?;
    if blocking_kinds.is_empty() {
        Ok(())
    } else {
        Err(StatusError::Blocked(blocking_kinds.iter().map(|k| k.name().to_owned()).collect()).into())
    }
}

/// A mode name, or else a profile file.
fn load_profile(profile: &str) -> Result<ProfileSpec, StatusError> {
    let mode = match profile {
        "standard" => Mode::Standard,
        "aggressive" => Mode::Aggressive,
        "off" => Mode::Off,
        path => return read_profile_file(Path::new(path)),
    };
    Ok(ProfileSpec::of(mode))
}

fn read_profile_file(path: &Path) -> Result<ProfileSpec, StatusError> {
    let shown = path.display();
    let usage = |why: String| StatusError::Usage(format!("profile `{shown}`: {why}"));
    let parse: fn(&str) -> Result<ProfileSpec, String> = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => |text| serde_json::from_str(text).map_err(|e| e.to_string()),
        Some("toml") => |text| toml::from_str(text).map_err(|e| e.to_string()),
        _ => {
            return Err(usage(
                "expected `standard`, `aggressive`, `off`, or a `.json` or `.toml` profile file".to_owned(),
            ));
        }
    };
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read it: {e}")))?;
    parse(&text).map_err(|e| usage(e.trim_end().to_owned()))
}

/// Reads a tokenization key: base64 of 32 bytes, in a file only its owner can access.
fn read_key(path: &Path) -> Result<SecretSlice<u8>, StatusError> {
    let shown = path.display();
    let cannot = |e: std::io::Error| StatusError::Usage(format!("cannot read key file `{shown}`: {e}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map_err(cannot)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StatusError::Usage(format!(
                "key file `{shown}` is accessible to group or others (mode {:o}); `chmod 600` it",
                mode & 0o777
            )));
        }
    }
    let text = SecretString::from(std::fs::read_to_string(path).map_err(cannot)?);
    // The decoder's error could quote key material, so it is not shown.
    let bytes = STANDARD
        .decode(text.expose_secret().trim())
        .map_err(|_| StatusError::Usage(format!("key file `{shown}` does not hold standard base64")))?;
    if bytes.len() != KEY_LEN {
        return Err(StatusError::Usage(format!(
            "key file `{shown}` holds {} bytes; a tokenization key is {KEY_LEN} (`head -c 32 /dev/urandom | base64`)",
            bytes.len()
        )));
    }
    Ok(SecretSlice::from(bytes))
}

/// Writes `{"<token core>": "<value>"}`, readable only by its owner: the one place `redact`
/// writes original values.
fn write_mapping(path: &Path, tokens: &[TokenEntry]) -> anyhow::Result<()> {
    let shown = path.display();
    let mapping: BTreeMap<&str, &str> = tokens.iter().map(|t| (t.core.as_str(), t.value.as_str())).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot create `{shown}`"))?;
    // The mode above applies only to a new file; an existing one is narrowed before it holds
    // a value (not a pipe or device, whose mode is not ours to change).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let metadata = file.metadata().with_context(|| format!("cannot inspect `{shown}`"))?;
        if metadata.is_file() && metadata.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make `{shown}` owner-only"))?;
        }
    }
    serde_json::to_writer_pretty(&mut file, &mapping).with_context(|| format!("cannot write `{shown}`"))?;
    file.write_all(b"\n").with_context(|| format!("cannot write `{shown}`"))?;
    Ok(())
}

fn read_mapping(path: &Path) -> Result<std::collections::HashMap<String, String>, StatusError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| StatusError::Usage(format!("cannot read mapping `{shown}`: {e}")))?;
    serde_json::from_str(&text).map_err(|e| {
        StatusError::Usage(format!("mapping `{shown}` is not a JSON object of token to value: {e}"))
    })
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let lookup = read_mapping(&args.mapping)?;
    let mode = if args.json_string { RestoreMode::JsonString } else { RestoreMode::Text };
    let mut restorer = StreamRestorer::new(mode);
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut buffer = [0u8; CHUNK];
    // Bytes read but not yet restored: at most the start of one UTF-8 character that the
    // read cut in two.
    let mut carry: Vec<u8> = Vec::with_capacity(CHUNK + 4);
    loop {
        let read = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read standard input"),
        };
        carry.extend_from_slice(buffer.get(..read).unwrap_or_default());
        let text = complete_utf8(&carry).context("standard input is not UTF-8")?;
        let (released, used) = (restorer.push(text, &lookup), text.len());
        carry.drain(..used);
        out.write_all(released.as_bytes())?;
        out.flush()?;
    }
    if !carry.is_empty() {
        bail!("standard input is not UTF-8: it ends inside a character");
    }
    out.write_all(restorer.finish(&lookup).as_bytes())?;
    out.flush()?;
    if args.verbose {
        eprintln!("airlock: restored {} tokens", restorer.restored());
    }
    Ok(())
}

/// The longest prefix of `bytes` that is whole UTF-8 characters when the rest is the start
/// of one; `None` when `bytes` holds something that is not UTF-8.
fn complete_utf8(bytes: &[u8]) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(bytes.get(..e.valid_up_to())?).ok(),
        Err(_) => None,
    }
}

/// The JSON report of `scan --json`.
#[derive(Serialize)]
struct ScanReport<'a> {
    score: f32,
    flagged: bool,
    findings: &'a [MarkerFinding],
    sanitized: &'a str,
    candidates: &'a [Candidate],
}

fn scan(args: &ScanArgs) -> anyhow::Result<()> {
    let text = read_stdin()?;
    let scanner = Scanner::new();
    let scan = scanner.scan(&text);
    let sanitized = scanner.sanitize(&text);
    let mut out = std::io::stdout().lock();
    if args.json {
        let candidates = extract(&text);
        let report = ScanReport {
            score: scan.score,
            flagged: scan.flagged,
            findings: &scan.findings,
            sanitized: &sanitized,
            candidates: &candidates,
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(sanitized.as_bytes())?;
    }
    out.flush()?;
    if !scan.flagged {
        return Ok(());
    }
    let mut rules: Vec<&str> = scan.findings.iter().map(|f| f.rule).collect();
    rules.dedup();
    let summary =
        format!("flagged as a likely prompt injection (score {:.2}; {})", scan.score, rules.join(", "));
    if args.fail_on_flag {
        return Err(StatusError::Flagged(summary).into());
    }
    if !args.json {
        eprintln!("airlock: {summary}");
    }
    Ok(())
}

/// All of standard input as text, refusing more than [`MAX_INPUT`] bytes.
fn read_stdin() -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    if bytes.len() > MAX_INPUT {
        bail!("standard input is larger than 64 MiB; inspect it in parts");
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "standard input is not UTF-8 (an invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_may_end_inside_a_character_but_not_on_a_bad_byte() {
        let text = "aé日";
        let bytes = text.as_bytes();
        // At every cut, the complete prefix ends on the last character boundary before it.
        for cut in 0..=bytes.len() {
            let prefix = bytes.get(..cut).unwrap_or_default();
            let expect = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            assert_eq!(complete_utf8(prefix), text.get(..expect), "cut {cut}");
        }
        assert_eq!(complete_utf8(b"ab\xffcd"), None);
        assert_eq!(complete_utf8(b"ab\xc3("), None);
    }

    #[test]
    fn mode_names_and_file_extensions_decide_how_a_profile_is_read() {
        assert_eq!(load_profile("aggressive").ok(), Some(ProfileSpec::of(Mode::Aggressive)));
        assert_eq!(load_profile("off").ok(), Some(ProfileSpec::of(Mode::Off)));
        let strict = load_profile("strict");
        assert!(
            matches!(&strict, Err(StatusError::Usage(m)) if m.contains("`.json` or `.toml`")),
            "{strict:?}"
        );
    }
}
